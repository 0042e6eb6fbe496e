//! A stream's record: what every backend keeps, one row per stream, about the stream's
//! present state, so that an append is checked without reading events.
//!
//! Invariants, kept by [`crate::commit`] and by each backend's migration:
//! - a stream's record is written by the same commit as the events that change it, so
//!   it always equals what its events say;
//! - `version` is the stream's last aggregate_version (0: no events yet); the record of
//!   a stream that has only metadata has no `aggregate_type` and version 0;
//! - `tombstoned` is set by a [`TOMBSTONE_EVENT_TYPE`] event and never cleared;
//! - `metadata_version` and `metadata` follow the stream's metadata stream `$$<id>`:
//!   the version of its last event, and that event's data when it is a
//!   [`METADATA_EVENT_TYPE`] event (otherwise none).

use crate::append::ExpectedVersion;
use crate::event::{RawJson, RecordedEvent};
use crate::store::AggregateInfo;
use crate::streams::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE, TRUNCATE_ALL};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stream's present state, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Its aggregate_type (`None`: it has no event yet).
    pub aggregate_type: Option<String>,
    /// Its last event's aggregate_version (0: none), a tombstone included.
    pub version: u64,
    /// Whether a tombstone ended it.
    pub tombstoned: bool,
    /// Its metadata stream's version (0: no metadata).
    pub metadata_version: u64,
    /// Its metadata: the data of the metadata stream's last event, if that is a
    /// `$metadata` event.
    pub metadata: Option<RawJson>,
}

impl StreamRecord {
    /// `$tb` (truncate before) of its metadata, if set to a number.
    pub fn truncate_before(&self) -> Option<u64> {
        let meta = self.metadata.as_ref()?;
        meta.to_value::<serde_json::Map<String, Value>>()
            .ok()?
            .get("$tb")?
            .as_u64()
    }

    /// Whether it was soft-deleted and not written since.
    pub fn soft_deleted(&self) -> bool {
        self.version > 0 && self.truncate_before().is_some_and(|tb| tb >= TRUNCATE_ALL)
    }

    /// Whether a writer's expectation holds, the way KurrentDB checks it: a
    /// soft-deleted stream accepts `no_stream` and its last version, and refuses
    /// `exists`.
    pub fn allows(&self, expected: ExpectedVersion) -> bool {
        match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => {
                self.version == 0 || self.soft_deleted()
            }
            ExpectedVersion::Exists => self.version > 0 && !self.soft_deleted(),
            ExpectedVersion::Exact(n) => n == self.version,
        }
    }

    /// The stream as an aggregate: its type and version, if it has events.
    pub fn aggregate_info(self) -> Option<AggregateInfo> {
        let aggregate_type = self.aggregate_type.filter(|_| self.version > 0)?;
        Some(AggregateInfo {
            aggregate_type,
            version: self.version,
        })
    }

    /// The record after `event`, an event of this stream.
    pub fn note_event(&mut self, event: &RecordedEvent) {
        self.aggregate_type = Some(event.aggregate_type.clone());
        self.version = event.aggregate_version;
        if event.event_type == TOMBSTONE_EVENT_TYPE {
            self.tombstoned = true;
        }
    }

    /// The record after `event`, an event of this stream's metadata stream.
    pub fn note_metadata_event(&mut self, event: &RecordedEvent) {
        self.metadata_version = event.aggregate_version;
        self.metadata = (event.event_type == METADATA_EVENT_TYPE).then(|| event.data.clone());
    }
}

/// The stream whose metadata stream `stream` is (`$$x` → `x`), if it is one.
pub fn metadata_base(stream: &str) -> Option<&str> {
    stream.strip_prefix("$$")
}

/// How a deep verify checks stream records against the log, in SQL both backends speak:
/// with `events` and `streams` the (qualified) table names and `most` the most rows
/// each query answers. The first query answers `(aggregate_id, last version, recorded
/// version or NULL)` for streams whose record disagrees with their events or is missing;
/// the second `(aggregate_id, recorded version)` for records naming an event that is not
/// stored. [`disagreement`] and [`missing_event`] word the findings.
pub fn check_queries(events: &str, streams: &str, most: i64) -> [String; 2] {
    [
        format!(
            "SELECT m.aggregate_id, m.v, s.version
             FROM (SELECT aggregate_id, max(aggregate_version) AS v FROM {events}
                   GROUP BY aggregate_id) m
             LEFT JOIN {streams} s ON s.aggregate_id = m.aggregate_id
             WHERE s.aggregate_id IS NULL OR s.version <> m.v
             LIMIT {most}"
        ),
        format!(
            "SELECT s.aggregate_id, s.version FROM {streams} s
             WHERE s.version > 0 AND NOT EXISTS (
                 SELECT 1 FROM {events} e
                 WHERE e.aggregate_id = s.aggregate_id AND e.aggregate_version = s.version)
             LIMIT {most}"
        ),
    ]
}

/// A finding of the first [`check_queries`] query.
pub fn disagreement(aggregate_id: &str, last: i64, recorded: Option<i64>) -> String {
    match recorded {
        None => {
            format!("stream {aggregate_id} has events up to version {last} but no stream record")
        }
        Some(v) => format!(
            "stream {aggregate_id}'s record says version {v}, its events end at version {last}"
        ),
    }
}

/// A finding of the second [`check_queries`] query.
pub fn missing_event(aggregate_id: &str, recorded: i64) -> String {
    format!("stream {aggregate_id}'s record says version {recorded}, but no such event is stored")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::{AppendRequest, Limits, NewEvent};
    use crate::chain::Hash;
    use crate::event::Timestamp;

    fn event(stream: &str, event_type: &str, version: u64, data: &str) -> RecordedEvent {
        let p = AppendRequest::new("T", stream, ExpectedVersion::Any)
            .event(NewEvent::raw(
                event_type,
                RawJson::parse(data).expect("json"),
            ))
            .prepare(&Limits::default())
            .expect("valid");
        p.events[0].record(1, "T", stream, version, Timestamp::MIN, &Hash::ZERO)
    }

    #[test]
    fn a_tombstone_marks_the_record_and_keeps_counting_versions() {
        let mut r = StreamRecord::default();
        r.note_event(&event("s", "E", 1, "{}"));
        r.note_event(&event("s", TOMBSTONE_EVENT_TYPE, 2, "{}"));
        assert!(r.tombstoned);
        assert_eq!(r.version, 2);
        assert_eq!(r.aggregate_type.as_deref(), Some("T"));
    }

    #[test]
    fn metadata_with_truncate_all_soft_deletes_a_stream_that_has_events() {
        let mut r = StreamRecord::default();
        let deletion = format!("{{\"$tb\":{TRUNCATE_ALL}}}");
        r.note_metadata_event(&event("$$s", METADATA_EVENT_TYPE, 1, &deletion));
        assert!(!r.soft_deleted(), "no events: nothing to delete");
        r.note_event(&event("s", "E", 1, "{}"));
        assert!(r.soft_deleted());
        assert!(r.allows(ExpectedVersion::NoStream));
        assert!(r.allows(ExpectedVersion::Exact(1)));
        assert!(!r.allows(ExpectedVersion::Exists));
        assert_eq!(r.metadata_version, 1);
        r.note_metadata_event(&event("$$s", "Other", 2, "{}"));
        assert_eq!(r.metadata, None, "only a $metadata event is metadata");
        assert!(!r.soft_deleted());
    }

    #[test]
    fn only_double_dollar_streams_have_a_base() {
        assert_eq!(metadata_base("$$order-1"), Some("order-1"));
        assert_eq!(metadata_base("$order"), None);
    }
}
