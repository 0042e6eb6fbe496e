//! The mapping between KurrentDB's event model and annal's (docs/kurrentdb.md).
//!
//! Invariants: what a gRPC client writes it reads back byte for byte (data, custom
//! metadata, content type); JSON data with JSON custom metadata is stored as plain annal
//! data and metadata, readable as such over HTTP; anything else (binary data, a content
//! type other than `application/json`, custom metadata that is not a JSON object) is kept
//! in an envelope: annal metadata `{"$grpc":{"contentType":..,"dataEncoding":"base64"?,
//! "customMetadata":<JSON>?|"customMetadataBase64":".."?}}`, with binary data stored as a
//! base64 JSON string. `$correlationId`/`$causationId` in custom metadata become annal's
//! correlation_id/causation_id; events written over HTTP show theirs in custom metadata.
//!
//! Event ids are unique per stream in KurrentDB and across the log in annal. An event a
//! gRPC client appends to stream `s` with id `c` is stored with the annal event_id
//! [`stored_event_id`]`(s, c)` (UUIDv5 in [`EVENT_ID_NAMESPACE`]), and `c` is kept as the
//! first member of its annal metadata, `{"$eventId":"<c>",…}` ([`CLIENT_ID_KEY`]). Every
//! gRPC answer shows `c` ([`client_event_id`]); the member is shown only when the stored
//! event_id is the one derived from the stream and `c`, so metadata written over HTTP
//! cannot pass for it, and an event without it (written over HTTP, or before the mapping)
//! shows its annal event_id. Custom metadata holding a `$eventId` key goes in the
//! envelope, so the first member is never the client's own.

use crate::pb::event_store::client::streams::read_resp::{ReadEvent, read_event};
use crate::pb::event_store::client::{StreamIdentifier, Uuid as PbUuid, uuid};
use annal_core::{ExpectedVersion, NewEvent, RawJson, RecordedEvent, Uuid};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use tonic::Status;

const JSON: &str = "application/json";
const ENVELOPE_KEY: &str = "$grpc";

/// The namespace of the UUIDv5 event ids annal stores for events appended over gRPC.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0xbac8c9b5_d741_492f_8481_f8c804a03bb2);

/// The annal metadata key holding the event id a gRPC client gave (its first member).
pub const CLIENT_ID_KEY: &str = "$eventId";

/// How stored metadata starts when it holds a client's event id.
const CLIENT_ID_PREFIX: &str = "{\"$eventId\":\"";

/// A hyphenated UUID's length in characters.
const UUID_TEXT_LEN: usize = 36;

/// The annal event_id of the event a gRPC client appends to `stream` with id
/// `client_id`: UUIDv5 in [`EVENT_ID_NAMESPACE`] of the stream name's UTF-8 bytes
/// followed by the client id's 16 bytes (unambiguous: the id has a fixed length).
pub fn stored_event_id(stream: &str, client_id: Uuid) -> Uuid {
    let mut name = Vec::with_capacity(stream.len() + 16);
    name.extend_from_slice(stream.as_bytes());
    name.extend_from_slice(client_id.as_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// A stored event's metadata without the client id it records, and that id: `None`
/// (and the metadata as stored) unless the metadata starts with the client id member and
/// the event_id is the one derived from the event's stream and that id.
fn split_client_id(e: &RecordedEvent) -> (Option<Uuid>, Cow<'_, str>) {
    let meta = e.metadata.get();
    let split = || {
        let rest = meta.strip_prefix(CLIENT_ID_PREFIX)?;
        let id = Uuid::try_parse(rest.get(..UUID_TEXT_LEN)?).ok()?;
        let after = rest.get(UUID_TEXT_LEN..)?.strip_prefix('"')?;
        if stored_event_id(&e.aggregate_id, id) != e.event_id {
            return None;
        }
        let others = if after == "}" {
            Cow::Borrowed("{}")
        } else {
            Cow::Owned(format!("{{{}", after.strip_prefix(',')?))
        };
        Some((id, others))
    };
    match split() {
        Some((id, others)) => (Some(id), others),
        None => (None, Cow::Borrowed(meta)),
    }
}

/// The event id gRPC clients see for a stored event: the id its writer gave over gRPC,
/// or its annal event_id.
pub fn client_event_id(e: &RecordedEvent) -> Uuid {
    split_client_id(e).0.unwrap_or(e.event_id)
}

/// `metadata` (a JSON object's text) with the client id member put first.
fn with_client_id(client_id: Uuid, metadata: &RawJson) -> Result<RawJson, Status> {
    let mut text = String::with_capacity(metadata.get().len() + 52);
    text.push_str(CLIENT_ID_PREFIX);
    text.push_str(&client_id.hyphenated().to_string());
    text.push('"');
    match metadata.get().strip_prefix('{') {
        Some("}") => text.push('}'),
        Some(members) => {
            text.push(',');
            text.push_str(members);
        }
        None => {
            return Err(Status::internal(
                "the stored metadata of a gRPC event is not a JSON object",
            ));
        }
    }
    RawJson::parse(text).map_err(|e| Status::internal(format!("recording the event id: {e}")))
}

/// A KurrentDB UUID message as a UUID.
pub fn uuid_from_pb(id: Option<&PbUuid>) -> Result<Option<Uuid>, Status> {
    let Some(value) = id.and_then(|i| i.value.as_ref()) else {
        return Ok(None);
    };
    match value {
        uuid::Value::String(s) if s.is_empty() => Ok(None),
        uuid::Value::String(s) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("event id '{s}' is not a UUID: {e}"))),
        // The two halves are the UUID's bytes, read as signed (Java's long).
        uuid::Value::Structured(st) => Ok(Some(Uuid::from_u64_pair(
            u64::from_be_bytes(st.most_significant_bits.to_be_bytes()),
            u64::from_be_bytes(st.least_significant_bits.to_be_bytes()),
        ))),
    }
}

/// A UUID as a KurrentDB UUID message, in the form the reader asked for.
pub fn uuid_to_pb(id: Uuid, structured: bool) -> PbUuid {
    let value = if structured {
        let (high, low) = id.as_u64_pair();
        uuid::Value::Structured(uuid::Structured {
            most_significant_bits: i64::from_be_bytes(high.to_be_bytes()),
            least_significant_bits: i64::from_be_bytes(low.to_be_bytes()),
        })
    } else {
        uuid::Value::String(id.to_string())
    };
    PbUuid { value: Some(value) }
}

/// A stream name from its identifier (UTF-8, 1–255 bytes).
pub fn stream_name(id: Option<&StreamIdentifier>) -> Result<String, Status> {
    let bytes = id.map(|i| i.stream_name.as_slice()).unwrap_or_default();
    let name = std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))?;
    annal_core::append::check_name("stream name", name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(name.to_owned())
}

/// A stream identifier for a name.
pub fn stream_id(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    }
}

/// The JSON text of `bytes` when they are exactly one JSON value with nothing around it.
fn exact_json(bytes: &[u8]) -> Option<RawJson> {
    let text = std::str::from_utf8(bytes).ok()?;
    let raw = RawJson::parse(text).ok()?;
    (raw.get().len() == text.len()).then_some(raw)
}

/// A proposed KurrentDB event for `stream` as an annal event: with the client's id, its
/// event_id is [`stored_event_id`] and its metadata records the client's id first.
pub fn new_event(
    stream: &str,
    id: Option<&PbUuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: &[u8],
    data: &[u8],
) -> Result<NewEvent, Status> {
    let event_type = metadata
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::invalid_argument("an event needs a 'type' in its metadata"))?;
    let content_type = metadata
        .get("content-type")
        .map_or("application/octet-stream", String::as_str);
    let json_data = if content_type == JSON {
        exact_json(data)
    } else {
        None
    };
    let custom_json = exact_json(custom_metadata);
    // What the metadata conventions ($correlationId, $personal) read: any JSON object,
    // whitespace around it too (a trailing newline must not leave personal data in the
    // clear); it is kept as annal's metadata only when it is exact JSON.
    let custom_object =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(custom_metadata).ok();
    if custom_object.is_none() && names_personal_data(custom_metadata) {
        // Read as opaque bytes, the named members would be stored in the clear.
        return Err(Status::invalid_argument(
            "custom metadata names $personal or $subjects but is not one JSON object: send \
             it as a JSON object (docs/privacy.md)",
        ));
    }
    let plain_custom = custom_metadata.is_empty()
        || (custom_json.is_some()
            && custom_object.as_ref().is_some_and(|o| {
                !o.is_empty() && !o.contains_key(ENVELOPE_KEY) && !o.contains_key(CLIENT_ID_KEY)
            }));
    let (data, annal_metadata) = match (json_data, plain_custom) {
        (Some(d), true) => (d, custom_json.unwrap_or_else(RawJson::empty_object)),
        (d, _) => {
            let mut env = String::from("{\"$grpc\":{\"contentType\":");
            env.push_str(&json_string(content_type));
            let data = match d {
                Some(d) => d,
                None => {
                    env.push_str(",\"dataEncoding\":\"base64\"");
                    raw_string(&B64.encode(data))?
                }
            };
            match (&custom_json, custom_metadata.is_empty()) {
                (_, true) => {}
                (Some(c), false) => {
                    env.push_str(",\"customMetadata\":");
                    env.push_str(c.get());
                }
                (None, false) => {
                    env.push_str(",\"customMetadataBase64\":");
                    env.push_str(&json_string(&B64.encode(custom_metadata)));
                }
            }
            env.push_str("}}");
            let meta = RawJson::parse(env)
                .map_err(|e| Status::internal(format!("building the metadata envelope: {e}")))?;
            (data, meta)
        }
    };
    let client_id = uuid_from_pb(id)?;
    let annal_metadata = match client_id {
        Some(c) => with_client_id(c, &annal_metadata)?,
        None => annal_metadata,
    };
    let mut event = NewEvent::raw(event_type.clone(), data).with_metadata(annal_metadata);
    event.event_id = client_id.map(|c| stored_event_id(stream, c));
    if let Some(obj) = &custom_object {
        let text = |k: &str| {
            obj.get(k)
                .and_then(|v| v.as_str())
                .filter(|s| annal_core::append::check_name(k, s).is_ok())
                .map(str::to_owned)
        };
        event.correlation_id = text("$correlationId");
        event.causation_id = text("$causationId");
        mark_personal(&mut event, obj)?;
    }
    Ok(event)
}

/// Whether metadata that is not one JSON object still begins with one (after a UTF-8
/// byte order mark, if any) that names `$personal` or `$subjects`: a BOM, a trailing
/// NUL or a second document must not leave personal data in the clear.
fn names_personal_data(custom_metadata: &[u8]) -> bool {
    let bytes = custom_metadata
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(custom_metadata);
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<serde_json::Map<String, serde_json::Value>>()
        .next()
        .and_then(Result::ok)
        .is_some_and(|o| o.contains_key("$personal") || o.contains_key("$subjects"))
}

/// The metadata convention for personal data over gRPC (docs/privacy.md): custom
/// metadata `"$personal": ["field", …]` names the members of the JSON data that are
/// personal, and `"$subjects": ["family_123", …]` whom they are about. The store seals
/// those members as the event's personal part; reads merge them back into the data.
fn mark_personal(
    event: &mut NewEvent,
    meta: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Status> {
    let (fields, subjects) = (meta.get("$personal"), meta.get("$subjects"));
    if fields.is_none() && subjects.is_none() {
        return Ok(());
    }
    let strings = |v: Option<&serde_json::Value>, key: &str| -> Result<Vec<String>, Status> {
        v.and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "custom metadata {key} must be an array of strings (with both $personal and $subjects: docs/privacy.md)"
                ))
            })
    };
    let fields = strings(fields, "$personal")?;
    let subjects = strings(subjects, "$subjects")?;
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    let (data, personal) = annal_core::aggregate::split_personal(event.data.clone(), &names)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if personal.is_none() && !(fields.is_empty() && subjects.is_empty()) {
        let object = event
            .data
            .to_value::<serde_json::Map<String, serde_json::Value>>()
            .is_ok();
        return Err(Status::invalid_argument(if !object {
            "custom metadata $personal names members of the event's data, which must then \
             be a JSON object (content type application/json, nothing around it)"
                .to_owned()
        } else if fields.is_empty() {
            "custom metadata $personal is empty: name the data's personal members, or send \
             neither $personal nor $subjects (docs/privacy.md)"
                .to_owned()
        } else {
            format!(
                "custom metadata $personal names no member of the event's data ({})",
                fields.join(", ")
            )
        }));
    }
    event.data = data;
    event.personal = personal;
    event.subjects = subjects;
    Ok(())
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn raw_string(s: &str) -> Result<RawJson, Status> {
    RawJson::parse(json_string(s)).map_err(|e| Status::internal(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "$grpc", borrow)]
    grpc: Inner<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Inner<'a> {
    content_type: String,
    #[serde(default)]
    data_encoding: Option<String>,
    #[serde(default, borrow)]
    custom_metadata: Option<&'a RawValue>,
    #[serde(default)]
    custom_metadata_base64: Option<String>,
}

/// What a reader gets of an event's payload.
struct Payload {
    content_type: String,
    data: Vec<u8>,
    custom_metadata: Vec<u8>,
}

/// `meta` is the event's metadata without its client id ([`split_client_id`]).
fn payload(e: &RecordedEvent, meta: &str) -> Payload {
    if meta.starts_with("{\"$grpc\"") {
        if let Ok(env) = serde_json::from_str::<Envelope<'_>>(meta) {
            let inner = env.grpc;
            let data = match inner.data_encoding.as_deref() {
                Some("base64") => e
                    .data
                    .to_value::<String>()
                    .ok()
                    .and_then(|s| B64.decode(s).ok())
                    .unwrap_or_else(|| e.data.get().as_bytes().to_vec()),
                _ => e.payload().get().as_bytes().to_vec(),
            };
            let custom_metadata = match (inner.custom_metadata, inner.custom_metadata_base64) {
                (Some(raw), _) => raw.get().as_bytes().to_vec(),
                (None, Some(b)) => B64.decode(b).unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            return Payload {
                content_type: inner.content_type,
                data,
                custom_metadata,
            };
        }
    }
    Payload {
        content_type: JSON.to_owned(),
        // Personal members (or the erasure marker) merged in, as the library decodes.
        data: e.payload().get().as_bytes().to_vec(),
        custom_metadata: plain_custom_metadata(e, meta),
    }
}

/// Custom metadata of an event stored plainly: its annal metadata, with annal's
/// correlation_id/causation_id added as `$correlationId`/`$causationId` when missing.
/// `meta` is its metadata without its client id.
fn plain_custom_metadata(e: &RecordedEvent, meta: &str) -> Vec<u8> {
    let missing = |id: &Option<String>, key: &str| id.is_some() && !meta.contains(key);
    if !missing(&e.correlation_id, "\"$correlationId\"")
        && !missing(&e.causation_id, "\"$causationId\"")
    {
        return if meta == "{}" {
            Vec::new()
        } else {
            meta.as_bytes().to_vec()
        };
    }
    let mut obj = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(meta)
        .unwrap_or_default();
    for (key, id) in [
        ("$correlationId", &e.correlation_id),
        ("$causationId", &e.causation_id),
    ] {
        if let Some(id) = id {
            obj.entry(key.to_owned())
                .or_insert_with(|| serde_json::Value::from(id.as_str()));
        }
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// KurrentDB's number for an expectation in error messages.
pub fn expected_number(e: ExpectedVersion) -> i64 {
    match e {
        ExpectedVersion::Any => -2,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => -1,
        ExpectedVersion::Exists => -4,
        ExpectedVersion::Exact(v) => v as i64 - 1,
    }
}

/// An annal stream version as a KurrentDB revision (`-1`: no stream).
pub fn revision_of(version: u64) -> i64 {
    version as i64 - 1
}

/// 100-ns ticks since the Unix epoch, KurrentDB's `created`.
pub fn ticks(micros: i64) -> i64 {
    micros.saturating_mul(10)
}

/// An annal event as a KurrentDB `ReadEvent`.
pub fn read_event(e: &RecordedEvent, structured_ids: bool) -> ReadEvent {
    let (client_id, meta) = split_client_id(e);
    let p = payload(e, &meta);
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), e.event_type.clone());
    metadata.insert("content-type".to_owned(), p.content_type);
    metadata.insert(
        "created".to_owned(),
        ticks(e.recorded_at.as_micros()).to_string(),
    );
    ReadEvent {
        event: Some(read_event::RecordedEvent {
            id: Some(uuid_to_pb(client_id.unwrap_or(e.event_id), structured_ids)),
            stream_identifier: Some(stream_id(&e.aggregate_id)),
            stream_revision: e.aggregate_version.saturating_sub(1),
            prepare_position: e.position,
            commit_position: e.position,
            metadata,
            custom_metadata: p.custom_metadata,
            data: p.data,
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(e.position)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::{Hash, Timestamp};

    fn recorded(new: NewEvent) -> RecordedEvent {
        RecordedEvent {
            position: 7,
            event_id: new.event_id.unwrap_or_else(Uuid::now_v7),
            event_type: new.event_type,
            event_version: 1,
            aggregate_type: "order".into(),
            aggregate_id: "order-1".into(),
            aggregate_version: 3,
            recorded_at: Timestamp::from_micros(1_700_000_000_000_000),
            user_id: "system".into(),
            correlation_id: new.correlation_id,
            causation_id: new.causation_id,
            principal: None,
            data: new.data,
            metadata: new.metadata.unwrap_or_else(RawJson::empty_object),
            sealed: None,
            subjects: Vec::new(),
            personal: None,
            hash: Hash::ZERO,
        }
    }

    fn meta(ct: &str) -> HashMap<String, String> {
        HashMap::from([
            ("type".to_owned(), "Placed".to_owned()),
            ("content-type".to_owned(), ct.to_owned()),
        ])
    }

    /// Appends to `order-1` without an id and with one; both read back byte for byte,
    /// the second with the client's id. Returns the first.
    fn round_trip(ct: &str, custom: &[u8], data: &[u8]) -> (NewEvent, ReadEvent) {
        let client_id = Uuid::now_v7();
        let mut out = None;
        for id in [None, Some(client_id)] {
            let pb = id.map(|i| uuid_to_pb(i, false));
            let new = new_event("order-1", pb.as_ref(), &meta(ct), custom, data).expect("valid");
            let stored = recorded(new.clone());
            let read = read_event(&stored, false);
            let ev = read.event.as_ref().expect("event");
            assert_eq!(ev.data, data, "data comes back byte for byte");
            assert_eq!(ev.custom_metadata, custom, "custom metadata comes back");
            assert_eq!(ev.metadata["content-type"], ct);
            assert_eq!(ev.stream_revision, 2);
            if let Some(c) = id {
                assert_eq!(new.event_id, Some(stored_event_id("order-1", c)));
                assert_eq!(uuid_from_pb(ev.id.as_ref()).ok(), Some(Some(c)));
                assert_eq!(client_event_id(&stored), c);
                let shown = stored
                    .metadata
                    .to_value::<serde_json::Map<String, serde_json::Value>>()
                    .expect("stored metadata is a JSON object");
                assert_eq!(shown[CLIENT_ID_KEY], c.to_string(), "HTTP readers see it");
            } else {
                assert_eq!(new.event_id, None, "the store picks one");
                assert_eq!(client_event_id(&stored), stored.event_id);
                out = Some((new, read));
            }
        }
        out.expect("the append without an id")
    }

    #[test]
    fn json_with_json_metadata_is_stored_plainly() {
        let (new, _) = round_trip(
            JSON,
            br#"{"$correlationId":"c-1","$causationId":"e-0","k":1}"#,
            br#"{"a": 1}"#,
        );
        assert_eq!(new.data.get(), r#"{"a": 1}"#);
        assert_eq!(
            new.metadata.as_ref().map(RawJson::get),
            Some(r#"{"$correlationId":"c-1","$causationId":"e-0","k":1}"#)
        );
        assert_eq!(new.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(new.causation_id.as_deref(), Some("e-0"));
    }

    #[test]
    fn empty_custom_metadata_stays_empty() {
        let (new, _) = round_trip(JSON, b"", b"[1,2]");
        assert_eq!(new.metadata.as_ref().map(RawJson::get), Some("{}"));
    }

    #[test]
    fn binary_and_odd_payloads_round_trip_through_the_envelope() {
        round_trip("application/octet-stream", b"", &[0, 159, 146, 150, 255]);
        round_trip("application/octet-stream", b"\x01\x02", b"{\"json\":true}");
        round_trip(JSON, b"{}", b"{}");
        round_trip(JSON, b"not json", b"1");
        round_trip(JSON, b"", b" {\"padded\": true} ");
        round_trip(JSON, br#"{"$grpc":1}"#, b"{}");
        round_trip("text/plain", b"[1]", b"hello");
    }

    #[test]
    fn http_events_show_correlation_in_custom_metadata() {
        let mut new = NewEvent::raw("Placed", RawJson::empty_object());
        new.correlation_id = Some("c-9".into());
        let read = read_event(&recorded(new), false);
        let ev = read.event.expect("event");
        assert_eq!(ev.custom_metadata, br#"{"$correlationId":"c-9"}"#);
        assert_eq!(ev.metadata["created"], "17000000000000000");
    }

    #[test]
    fn the_stored_event_id_is_derived_from_the_stream_and_the_client_id() {
        let c = Uuid::now_v7();
        let a = stored_event_id("order-1", c);
        assert_eq!(a, stored_event_id("order-1", c), "the same every time");
        assert_ne!(
            a,
            stored_event_id("order-2", c),
            "another stream, another event"
        );
        assert_ne!(a, stored_event_id("order-1", Uuid::now_v7()));
        assert_ne!(a, c);
        assert_eq!(a.get_version_num(), 5);
        let mut name = b"s".to_vec();
        name.extend([0u8; 16]);
        assert_eq!(
            stored_event_id("s", Uuid::nil()),
            Uuid::new_v5(&EVENT_ID_NAMESPACE, &name),
            "the stream name's bytes, then the id's 16 bytes"
        );
    }

    #[test]
    fn the_client_id_is_the_first_member_of_the_stored_metadata() {
        let c = Uuid::now_v7();
        let pb = uuid_to_pb(c, true);
        let stored = |custom: &[u8], ct: &str, data: &[u8]| {
            new_event("order-1", Some(&pb), &meta(ct), custom, data)
                .expect("valid")
                .metadata
                .expect("metadata")
                .get()
                .to_owned()
        };
        assert_eq!(stored(b"", JSON, b"{}"), format!(r#"{{"$eventId":"{c}"}}"#));
        assert_eq!(
            stored(br#"{ "k": 1 }"#, JSON, b"{}"),
            format!(r#"{{"$eventId":"{c}", "k": 1 }}"#)
        );
        assert_eq!(
            stored(b"", "text/plain", b"hi"),
            format!(
                r#"{{"$eventId":"{c}","$grpc":{{"contentType":"text/plain","dataEncoding":"base64"}}}}"#
            )
        );
    }

    #[test]
    fn custom_metadata_holding_an_event_id_key_goes_in_the_envelope() {
        let (new, _) = round_trip(JSON, br#"{"$eventId":"mine","k":1}"#, b"{}");
        assert!(
            new.metadata
                .as_ref()
                .is_some_and(|m| m.get().starts_with(r#"{"$grpc""#))
        );
        round_trip(
            JSON,
            br#"{"$eventId":"00000000-0000-0000-0000-000000000000"}"#,
            b"{}",
        );
    }

    #[test]
    fn metadata_naming_an_id_the_event_id_is_not_derived_from_is_custom_metadata() {
        let c = Uuid::now_v7();
        let custom = format!(r#"{{"$eventId":"{c}","k":1}}"#);
        let mut new = NewEvent::raw("Placed", RawJson::empty_object())
            .with_metadata(RawJson::parse(custom.clone()).expect("json"));
        new.event_id = Some(Uuid::now_v7());
        let stored = recorded(new);
        assert_eq!(client_event_id(&stored), stored.event_id);
        let ev = read_event(&stored, false).event.expect("event");
        assert_eq!(
            uuid_from_pb(ev.id.as_ref()).ok(),
            Some(Some(stored.event_id))
        );
        assert_eq!(ev.custom_metadata, custom.as_bytes());
        // Written over HTTP the way a gRPC append stores it, it reads as one.
        let mut new = NewEvent::raw("Placed", RawJson::empty_object())
            .with_metadata(RawJson::parse(custom).expect("json"));
        new.event_id = Some(stored_event_id("order-1", c));
        let ev = read_event(&recorded(new), false).event.expect("event");
        assert_eq!(uuid_from_pb(ev.id.as_ref()).ok(), Some(Some(c)));
        assert_eq!(ev.custom_metadata, br#"{"k":1}"#);
    }

    #[test]
    fn structured_ids_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(
            uuid_from_pb(Some(&uuid_to_pb(id, true))).ok(),
            Some(Some(id))
        );
        assert_eq!(
            uuid_from_pb(Some(&uuid_to_pb(id, false))).ok(),
            Some(Some(id))
        );
    }

    #[test]
    fn personal_fields_named_in_custom_metadata_are_sealed_apart_and_merged_on_read() {
        let custom = br#"{"$personal":["child_name"],"$subjects":["family_123"]}"#;
        let data = br#"{"age":8,"child_name":"Sofia"}"#;
        let new = new_event("family_123", None, &meta(JSON), custom, data).expect("valid");
        assert_eq!(new.data.get(), r#"{"age":8}"#);
        assert_eq!(
            new.personal.as_ref().map(RawJson::get),
            Some(r#"{"child_name":"Sofia"}"#)
        );
        assert_eq!(new.subjects, ["family_123"]);
        let mut stored = recorded(new.clone());
        stored.personal = new.personal.clone();
        let read = read_event(&stored, false);
        let ev = read.event.expect("event");
        assert_eq!(ev.data, br#"{"age":8,"child_name":"Sofia"}"#);
        stored.personal = Some(RawJson::parse(annal_core::privacy::ERASED).expect("json"));
        let erased = read_event(&stored, false).event.expect("event");
        assert_eq!(erased.data, br#"{"age":8,"$erased":true}"#);
        let half = br#"{"$personal":["child_name"]}"#;
        assert!(new_event("family_123", None, &meta(JSON), half, data).is_err());
    }

    #[test]
    fn personal_fields_are_sealed_whatever_whitespace_surrounds_the_custom_metadata() {
        let custom = b"{\"$personal\":[\"child_name\"],\"$subjects\":[\"family_123\"]}\n";
        let data =
            br#"{"age":8,"child_name":"Sofia","fee":1.50,"id":123456789012345678901234567890}"#;
        let new = new_event("family_123", None, &meta(JSON), custom, data).expect("valid");
        assert_eq!(
            new.personal.as_ref().map(RawJson::get),
            Some(r#"{"child_name":"Sofia"}"#)
        );
        assert_eq!(new.subjects, ["family_123"]);
        // The other members keep their text and order; the metadata its bytes.
        assert_eq!(
            new.data.get(),
            r#"{"age":8,"fee":1.50,"id":123456789012345678901234567890}"#
        );
        let mut stored = recorded(new.clone());
        stored.personal = new.personal.clone();
        let ev = read_event(&stored, false).event.expect("event");
        assert_eq!(ev.custom_metadata, custom);
    }

    #[test]
    fn a_personal_convention_that_seals_nothing_says_why() {
        let custom = br#"{"$personal":["child_nme"],"$subjects":["family_123"]}"#;
        let data = br#"{"child_name":"Sofia"}"#;
        let why = new_event("f", None, &meta(JSON), custom, data).expect_err("typo");
        assert_eq!(why.code(), tonic::Code::InvalidArgument);
        assert!(why.message().contains("child_nme"), "{}", why.message());
        let why = new_event("f", None, &meta("application/octet-stream"), custom, data)
            .expect_err("not JSON");
        assert!(why.message().contains("JSON object"), "{}", why.message());
        // Not one object, but beginning with one that names them: after a BOM; escaped
        // names before a NUL.
        let bom = &b"\xEF\xBB\xBF{\"$personal\":[\"child_name\"],\"$subjects\":[\"f\"]}"[..];
        let nul = &b"{\"\\u0024personal\":[\"child_name\"],\"$subjects\":[\"f\"]}\0"[..];
        for custom in [bom, nul] {
            let why = new_event("f", None, &meta(JSON), custom, data).expect_err("not one object");
            assert!(
                why.message().contains("not one JSON object"),
                "{}",
                why.message()
            );
        }
        // Metadata that is no object naming them is opaque metadata, as ever.
        let opaque = br#"["$personal"]"#;
        assert!(new_event("f", None, &meta(JSON), opaque, data).is_ok());
        let empty = br#"{"$personal":[],"$subjects":["family_123"]}"#;
        let why = new_event("f", None, &meta(JSON), empty, data).expect_err("empty");
        assert!(why.message().contains("is empty"), "{}", why.message());
    }
}
