//! The [`Aggregate`] trait: an entity whose state is a fold of its events, with command
//! handling that decides new events from the current state.
//!
//! An aggregate's events are a serde enum, adjacently tagged so that each variant's name
//! is the stored `event_type` and its content the stored `data`:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! #[serde(tag = "event_type", content = "data")]
//! enum CounterEvent {
//!     Incremented { by: u32 },
//!     Reset {},
//! }
//! ```
//!
//! [`encode`] and [`decode`] translate between that enum and stored events; decoding an
//! event type the enum does not know is an error naming it, never a silent skip.

use crate::event::RawJson;
use crate::upcast::Upcasters;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The events of an aggregate: a serde enum with `#[serde(tag = "event_type", content = "data")]`.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The schema version written for events of `event_type` (default 1). The repository
    /// writes the higher of this and what its upcasters imply
    /// ([`Upcasters::current_version`]), so registering an upcaster from the old version
    /// in [`Aggregate::upcasters`] is enough when a type's data changes shape.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// The members of `event_type`'s data that are personal data (docs/privacy.md):
    /// the repository stores them as the event's personal part, sealed with the keys
    /// of [`DomainEvent::subjects`]. Default: none. Once a subject is forgotten they
    /// are absent on load and the data has `"$erased": true` instead, so declare them
    /// `Option` or `#[serde(default)]`.
    fn personal_fields(event_type: &str) -> &'static [&'static str] {
        let _ = event_type;
        &[]
    }

    /// The data subjects this event's personal fields are about. Default: the
    /// aggregate itself (`aggregate_id`).
    fn subjects(&self, aggregate_id: &str) -> Vec<String> {
        vec![aggregate_id.to_owned()]
    }
}

/// An event-sourced entity.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The stored aggregate_type of its events, e.g. `Family`.
    const TYPE: &'static str;
    /// Names the state's serialised shape in snapshots. Change it whenever the state's
    /// fields change: snapshots with another tag are then ignored, not misread.
    const SNAPSHOT_TAG: &'static str;
    /// Its events.
    type Event: DomainEvent;
    /// What it can be asked to do.
    type Command: Clone + Send + Sync;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The upcasters its stored events go through on every read (default: none):
    /// [`Repository::new`](crate::Repository::new), typed projections started from the
    /// aggregate (`annal::read_model`) and `annal::testing` use them, and new events are
    /// written at the version they lead to ([`DomainEvent::schema_version`]).
    fn upcasters() -> Upcasters {
        Upcasters::new()
    }

    /// Folds one event into the state. Must not fail: events are facts.
    fn apply(&mut self, event: &Self::Event);

    /// Decides the events a command produces from the current state (none is fine), or
    /// refuses it.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// Why an event could not be turned into stored form or back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The stored type is not a variant of the aggregate's event enum.
    #[error("unknown event type '{event_type}': the aggregate's event enum has no such variant")]
    UnknownEventType {
        /// The stored type.
        event_type: String,
    },
    /// The stored data does not fit the variant.
    #[error("event type '{event_type}': data does not match the event enum: {reason}")]
    BadData {
        /// The stored type.
        event_type: String,
        /// serde's reason.
        reason: String,
    },
    /// The enum does not serialise as `{"event_type": …, "data": …}`.
    #[error(
        "the event enum must be adjacently tagged with #[serde(tag = \"event_type\", content = \"data\")]: {0}"
    )]
    Shape(String),
}

/// Splits an event into its stored type, schema version and data.
pub fn encode<E: DomainEvent>(event: &E) -> Result<(String, u32, RawJson), CodecError> {
    let value = serde_json::to_value(event).map_err(|e| CodecError::Shape(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(CodecError::Shape(format!("it serialised as {value}")));
    };
    let event_type = match map.remove("event_type") {
        Some(Value::String(t)) => t,
        other => {
            return Err(CodecError::Shape(format!(
                "no string event_type field (found {other:?})"
            )));
        }
    };
    let data = map
        .remove("data")
        .unwrap_or_else(|| Value::Object(Default::default()));
    let data = RawJson::from_value(&data).map_err(|e| CodecError::Shape(e.to_string()))?;
    let version = E::schema_version(&event_type);
    Ok((event_type, version, data))
}

/// Moves the members `fields` of an encoded event's data into its personal part:
/// `(data, None)` when the data has none of them (or is not an object). Each member
/// keeps its value's text exactly as written, and both parts keep the data's order of
/// members (numbers are not re-read: `1.50` stays `1.50`, a 30-digit integer stays
/// whole); the members are joined without whitespace between them, their names written
/// as plain JSON strings.
pub fn split_personal(
    data: RawJson,
    fields: &[&str],
) -> Result<(RawJson, Option<RawJson>), CodecError> {
    if fields.is_empty() {
        return Ok((data, None));
    }
    let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(data.get()) else {
        return Ok((data, None));
    };
    let (personal, rest): (Vec<_>, Vec<_>) = members
        .into_iter()
        .partition(|(name, _)| fields.contains(&name.as_str()));
    if personal.is_empty() {
        return Ok((data, None));
    }
    let shape = |e: serde_json::Error| CodecError::Shape(e.to_string());
    Ok((
        RawJson::parse(object(&rest).map_err(shape)?).map_err(shape)?,
        Some(RawJson::parse(object(&personal).map_err(shape)?).map_err(shape)?),
    ))
}

/// A JSON object's members in their order, each value as its text.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = m.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The JSON object of `members`, their values' text as it is.
fn object(members: &[(String, &serde_json::value::RawValue)]) -> Result<String, serde_json::Error> {
    let mut out = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(name)?);
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

/// Rebuilds an event from its stored type and data.
pub fn decode<E: DomainEvent>(event_type: &str, data: &RawJson) -> Result<E, CodecError> {
    let tag = serde_json::to_string(event_type).map_err(|e| CodecError::Shape(e.to_string()))?;
    let text = format!(r#"{{"event_type":{tag},"data":{}}}"#, data.get());
    match serde_json::from_str(&text) {
        Ok(e) => Ok(e),
        Err(e) => {
            let reason = e.to_string();
            if reason.contains("unknown variant") {
                return Err(CodecError::UnknownEventType {
                    event_type: event_type.to_owned(),
                });
            }
            // Unit variants carry no data: accept the `{}` stored for them.
            if matches!(data.get(), "{}" | "null")
                && let Ok(e) = serde_json::from_str(&format!(r#"{{"event_type":{tag}}}"#))
            {
                return Ok(e);
            }
            Err(CodecError::BadData {
                event_type: event_type.to_owned(),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "event_type", content = "data")]
    enum Ev {
        Incremented { by: u32 },
        Reset,
    }

    impl DomainEvent for Ev {
        fn schema_version(t: &str) -> u32 {
            if t == "Incremented" { 2 } else { 1 }
        }
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let (t, v, data) = encode(&Ev::Incremented { by: 3 }).expect("encode");
        assert_eq!(
            (t.as_str(), v, data.get()),
            ("Incremented", 2, r#"{"by":3}"#)
        );
        assert_eq!(
            decode::<Ev>(&t, &data).expect("decode"),
            Ev::Incremented { by: 3 }
        );
        let (t, v, data) = encode(&Ev::Reset).expect("encode");
        assert_eq!((t.as_str(), v, data.get()), ("Reset", 1, "{}"));
        assert_eq!(decode::<Ev>(&t, &data).expect("decode"), Ev::Reset);
    }

    #[test]
    fn unknown_types_and_bad_data_are_errors_naming_the_type() {
        let e = decode::<Ev>("Exploded", &RawJson::empty_object()).expect_err("unknown");
        assert_eq!(
            e,
            CodecError::UnknownEventType {
                event_type: "Exploded".into()
            }
        );
        let e = decode::<Ev>(
            "Incremented",
            &RawJson::parse(r#"{"by":"x"}"#).expect("json"),
        )
        .expect_err("bad data");
        assert!(
            matches!(e, CodecError::BadData { ref event_type, .. } if event_type == "Incremented")
        );
    }

    #[test]
    fn named_personal_fields_are_split_from_the_data_and_decode_merged_back() {
        let data = RawJson::parse(r#"{"by":3,"who":"Sofia"}"#).expect("json");
        let (rest, personal) = split_personal(data.clone(), &["who"]).expect("split");
        assert_eq!(rest.get(), r#"{"by":3}"#);
        assert_eq!(
            personal.as_ref().map(RawJson::get),
            Some(r#"{"who":"Sofia"}"#)
        );
        let merged = crate::privacy::merge(&rest, personal.as_ref().expect("personal"));
        assert_eq!(
            decode::<Ev>("Incremented", &merged),
            Ok(Ev::Incremented { by: 3 })
        );
        let erased = crate::privacy::merge(
            &rest,
            &RawJson::parse(crate::privacy::ERASED).expect("json"),
        );
        assert_eq!(
            decode::<Ev>("Incremented", &erased),
            Ok(Ev::Incremented { by: 3 })
        );
        let (same, none) = split_personal(data.clone(), &["absent"]).expect("split");
        assert_eq!((same, none), (data, None));
    }

    #[test]
    fn a_split_keeps_each_value_as_written_and_the_members_order() {
        let data = RawJson::parse(
            r#"{ "z": 1.50, "big": 123456789012345678901234567890, "who": {"n": 1e3 },
                "a": [1, 2] }"#,
        )
        .expect("json");
        let (rest, personal) = split_personal(data, &["who", "big"]).expect("split");
        assert_eq!(rest.get(), r#"{"z":1.50,"a":[1, 2]}"#);
        assert_eq!(
            personal.as_ref().map(RawJson::get),
            Some(r#"{"big":123456789012345678901234567890,"who":{"n": 1e3 }}"#)
        );
    }
}
