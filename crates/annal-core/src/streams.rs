//! Streams: an aggregate seen as a KurrentDB-style stream, with soft deletion,
//! tombstones and stream metadata, over any [`Store`].
//!
//! The log never forgets: deleting a stream *records* the deletion (who, when) as an event,
//! and reads through this module hide what KurrentDB would hide. The gRPC endpoint and the
//! HTTP stream routes both go through here, so the two protocols agree.
//!
//! - The metadata of stream `s` is the data of the last `$metadata` event of the stream
//!   `$$s` (aggregate_type `$metadata`).
//! - Soft delete appends a `$metadata` event to `$$s` whose `$tb` (truncate before) is
//!   [`TRUNCATE_ALL`]: every event of `s` is hidden from stream reads. Writing to `s`
//!   again is allowed (expecting no stream, any, or its last version) and continues its
//!   versions; that append also rewrites `$tb` to the first new revision, in the same
//!   transaction, so only the new events are visible.
//! - Reads of a metadata stream `$$s` show only its last event (KurrentDB's metadata
//!   streams have `$maxCount` 1); its versions go on counting every event.
//! - `exists` on a soft-deleted stream not written since fails with
//!   [`Error::StreamDeleted`], as KurrentDB's "is deleted".
//! - A tombstone appends a `$streamDeleted` event to `s` itself: from then on every read,
//!   append and deletion of `s`, and every read and deletion of `$$s`, fails with
//!   [`Error::StreamDeleted`]. `$$s` still takes appends (setting the metadata), as
//!   KurrentDB's metadata streams do.
//! - Every append ([`Store::append`], [`Store::transact`]) is checked against these
//!   rules by the store's writer, inside the commit, against the stream's record
//!   ([`StreamRecord`]; see [`crate::commit`]): no read comes before an append, and a
//!   tombstone or deletion racing with it is either before it (and checked) or after.
//!
//! Versions here are annal's aggregate_versions (1-based); KurrentDB's revision is the
//! version minus one. Global reads (`read_all`) show everything, deletion events included:
//! they are system events (types starting with `$`).

use crate::append::{Actor, AppendRequest, ExpectedVersion, NewEvent};
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent};
use crate::read::Direction;
use crate::store::Store;
use crate::stream_record::{StreamRecord, metadata_base};
use serde_json::{Map, Value};

/// The event type of a stream's metadata, appended to `$$<stream>`.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The aggregate_type of metadata streams (`$$<stream>`).
pub const METADATA_AGGREGATE_TYPE: &str = "$metadata";
/// The event type of a tombstone, appended to the stream itself.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";
/// `$tb` of a soft-deleted stream: every event existing at deletion is hidden.
pub const TRUNCATE_ALL: u64 = i64::MAX as u64;
/// How often a deletion is retried when the stream moves under it.
const RETRIES: usize = 16;

/// The metadata stream of `stream`: `$$<stream>`.
pub fn metadata_stream(stream: &str) -> String {
    format!("$${stream}")
}

/// A stream's category (KurrentDB's convention): the part before the first `-`, or the
/// whole name; `$metadata` for metadata streams.
pub fn category(stream: &str) -> &str {
    if stream.starts_with("$$") {
        return METADATA_AGGREGATE_TYPE;
    }
    match stream.split_once('-') {
        Some((head, _)) if !head.is_empty() => head,
        _ => stream,
    }
}

/// What a stream is now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamState {
    /// Its aggregate_type (`None`: it has never had an event).
    pub aggregate_type: Option<String>,
    /// Its stored version (0: no events), the tombstone included.
    pub version: u64,
    /// Whether it is tombstoned.
    pub tombstoned: bool,
    /// Its metadata stream's version (0: no metadata).
    pub metadata_version: u64,
    /// Its metadata (the last `$metadata` event's data), if it is a JSON object.
    pub metadata: Option<Map<String, Value>>,
}

impl StreamState {
    /// The first version reads show (1-based): `$tb` and `$maxCount` applied.
    pub fn first_visible(&self) -> u64 {
        let mut first = 1;
        if let Some(meta) = &self.metadata {
            if let Some(tb) = meta.get("$tb").and_then(Value::as_u64) {
                first = if tb >= TRUNCATE_ALL {
                    self.version.saturating_add(1)
                } else {
                    tb.saturating_add(1)
                };
            }
            if let Some(max) = meta.get("$maxCount").and_then(Value::as_u64) {
                first = first.max(self.version.saturating_sub(max).saturating_add(1));
            }
        }
        first
    }

    /// Whether the stream was soft-deleted and not written since.
    pub fn soft_deleted(&self) -> bool {
        self.version > 0
            && self
                .metadata
                .as_ref()
                .and_then(|m| m.get("$tb"))
                .and_then(Value::as_u64)
                .is_some_and(|tb| tb >= TRUNCATE_ALL)
    }

    /// Whether reads show any event.
    pub fn has_visible_events(&self) -> bool {
        !self.tombstoned && self.version > 0 && self.first_visible() <= self.version
    }

    fn wrong_version(&self, stream: &str, expected: ExpectedVersion) -> Error {
        Error::WrongExpectedVersion {
            aggregate_id: stream.to_owned(),
            expected,
            actual: self.version,
        }
    }
}

/// Reads a stream's state from the store's stream records ([`Store::stream`]): the
/// stream's own and, for a metadata stream, its base stream's (whose tombstone ends it).
pub async fn state<S: Store + ?Sized>(store: &S, stream: &str) -> Result<StreamState> {
    let rec = store.stream(stream).await?.unwrap_or_default();
    let mut st = StreamState {
        aggregate_type: rec.aggregate_type,
        version: rec.version,
        tombstoned: rec.tombstoned,
        metadata_version: rec.metadata_version,
        metadata: rec
            .metadata
            .and_then(|m| m.to_value::<Map<String, Value>>().ok()),
    };
    if let Some(base) = metadata_base(stream) {
        // Only a metadata stream's last event is visible, as in KurrentDB (whose
        // metadata streams have `$maxCount` 1): reading one forwards gives the metadata.
        st.metadata = Some(Map::from_iter([("$maxCount".to_owned(), Value::from(1))]));
        // A tombstoned stream's metadata goes with it.
        st.tombstoned |= store.stream(base).await?.is_some_and(|b| b.tombstoned);
    }
    Ok(st)
}

/// A stream's record worked out from its events: the last event of the stream and of
/// its metadata stream. What [`Store::stream`] answers for a store that keeps no
/// records.
pub async fn record_from_events<S: Store + ?Sized>(
    store: &S,
    stream: &str,
) -> Result<Option<StreamRecord>> {
    let mut rec = StreamRecord::default();
    let last = store
        .read_aggregate(stream, Direction::Backward, None, 1)
        .await?;
    if let Some(e) = last.first() {
        rec.note_event(e);
        // A tombstone is the stream's last event, unless it is read past.
        rec.tombstoned = e.event_type == TOMBSTONE_EVENT_TYPE;
    }
    let meta = store
        .read_aggregate(&metadata_stream(stream), Direction::Backward, None, 1)
        .await?;
    if let Some(m) = meta.first() {
        rec.note_metadata_event(m);
    }
    Ok((rec != StreamRecord::default()).then_some(rec))
}

fn deleted(stream: &str) -> Error {
    Error::StreamDeleted {
        aggregate_id: stream.to_owned(),
    }
}

/// `meta` (a stream's metadata, if any) with `$tb` (truncate before) set to `tb`.
pub fn with_truncate_before(meta: Option<Map<String, Value>>, tb: u64) -> Result<RawJson> {
    let mut meta = meta.unwrap_or_default();
    meta.insert("$tb".to_owned(), Value::from(tb));
    RawJson::from_value(&meta).map_err(|e| Error::Corrupt(format!("stream metadata: {e}")))
}

/// How a deletion is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Hide the events; the stream may be written again.
    Soft,
    /// Hide the events and refuse every later operation.
    Tombstone,
}

/// Deletes a stream (module docs), checking `expected` like an append does. A soft
/// delete of a stream that never existed is refused whatever `expected` says (as
/// KurrentDB does); a tombstone of one passes `any` and `no_stream`, and reserves the
/// name. The deletion event is recorded for `by`. Returns it as recorded.
pub async fn delete<S: Store + ?Sized>(
    store: &S,
    stream: &str,
    expected: ExpectedVersion,
    how: Deletion,
    by: &Actor,
) -> Result<RecordedEvent> {
    for _ in 0..RETRIES {
        let st = state(store, stream).await?;
        if st.tombstoned {
            return Err(deleted(stream));
        }
        if expected == ExpectedVersion::Exists && st.soft_deleted() {
            return Err(deleted(stream));
        }
        if matches!(how, Deletion::Soft) && st.version == 0 {
            // KurrentDB refuses to delete a stream that never existed, whatever was
            // expected: "actual -1", which its clients report as not found.
            return Err(st.wrong_version(stream, expected));
        }
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => st.version == 0,
            ExpectedVersion::Exists => st.version > 0,
            ExpectedVersion::Exact(n) => n == st.version,
        };
        if !ok {
            return Err(st.wrong_version(stream, expected));
        }
        let mut request = match how {
            Deletion::Soft => AppendRequest::new(
                METADATA_AGGREGATE_TYPE,
                metadata_stream(stream),
                ExpectedVersion::Exact(st.metadata_version),
            )
            .event(NewEvent::raw(
                METADATA_EVENT_TYPE,
                with_truncate_before(st.metadata.clone(), TRUNCATE_ALL)?,
            )),
            Deletion::Tombstone => AppendRequest::new(
                st.aggregate_type
                    .clone()
                    .unwrap_or_else(|| category(stream).to_owned()),
                stream,
                ExpectedVersion::Exact(st.version),
            )
            .event(NewEvent::raw(TOMBSTONE_EVENT_TYPE, RawJson::empty_object())),
        };
        by.stamp(&mut request);
        match store.append(request).await {
            Ok(mut r) => {
                return r
                    .events
                    .pop()
                    .ok_or_else(|| Error::Corrupt("an append returned no event".into()));
            }
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Storage(
        format!("stream '{stream}' kept changing during {RETRIES} attempts to delete it").into(),
    ))
}

/// What a stream read found.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRead {
    /// The visible events asked for (maybe none).
    Events(Vec<RecordedEvent>),
    /// The stream has no visible event (never written, or deleted).
    NotFound,
}

/// Reads up to `limit` visible events of a stream, like [`Store::read_aggregate`], hiding
/// what deletion, `$tb` and `$maxCount` hide; a tombstoned stream is
/// [`Error::StreamDeleted`].
pub async fn read<S: Store + ?Sized>(
    store: &S,
    stream: &str,
    direction: Direction,
    from_version: Option<u64>,
    limit: usize,
) -> Result<StreamRead> {
    let st = state(store, stream).await?;
    read_with(store, &st, stream, direction, from_version, limit).await
}

/// [`read`] with a state already read.
pub async fn read_with<S: Store + ?Sized>(
    store: &S,
    st: &StreamState,
    stream: &str,
    direction: Direction,
    from_version: Option<u64>,
    limit: usize,
) -> Result<StreamRead> {
    if st.tombstoned {
        return Err(deleted(stream));
    }
    if !st.has_visible_events() {
        return Ok(StreamRead::NotFound);
    }
    let first = st.first_visible();
    let events = match direction {
        Direction::Forward => {
            let from = from_version.unwrap_or(1).max(first);
            store
                .read_aggregate(stream, Direction::Forward, Some(from), limit)
                .await?
        }
        Direction::Backward => {
            let from = from_version.unwrap_or(st.version).min(st.version);
            if from < first {
                Vec::new()
            } else {
                let mut events = store
                    .read_aggregate(stream, Direction::Backward, Some(from), limit)
                    .await?;
                events.retain(|e| e.aggregate_version >= first);
                events
            }
        }
    };
    Ok(StreamRead::Events(
        events
            .into_iter()
            .filter(|e| e.event_type != TOMBSTONE_EVENT_TYPE)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        assert_eq!(category("order-123-4"), "order");
        assert_eq!(category("order"), "order");
        assert_eq!(category("-x"), "-x");
        assert_eq!(category("$$order-1"), METADATA_AGGREGATE_TYPE);
    }

    #[test]
    fn soft_deleted_stream_hides_everything_until_rewritten() {
        let mut meta = Map::new();
        meta.insert("$tb".into(), Value::from(TRUNCATE_ALL));
        let st = StreamState {
            aggregate_type: Some("order".into()),
            version: 3,
            tombstoned: false,
            metadata_version: 1,
            metadata: Some(meta),
        };
        assert!(st.soft_deleted());
        assert!(!st.has_visible_events());
    }

    #[test]
    fn max_count_hides_older_events() {
        let mut meta = Map::new();
        meta.insert("$maxCount".into(), Value::from(2));
        let st = StreamState {
            version: 5,
            metadata: Some(meta),
            ..StreamState::default()
        };
        assert_eq!(st.first_visible(), 4);
    }
}
