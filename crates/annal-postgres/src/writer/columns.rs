//! The group's writes as column arrays, one array per column, so each table takes the
//! whole group in one `INSERT … SELECT FROM unnest(…)` (one round trip, one plan).
//!
//! Invariant: every array of one struct has one entry per row, in the same order.

use crate::rows::{clamp, jsonb_can_hold};
use annal_core::{Checkpoint, RecordedEvent, Snapshot, StreamRecord, Uuid};

/// The group's events as column arrays, for one `INSERT … SELECT FROM unnest(…)`.
pub(super) struct EventColumns<'a> {
    pub(super) position: Vec<i64>,
    pub(super) event_id: Vec<Uuid>,
    pub(super) event_type: Vec<&'a str>,
    pub(super) event_version: Vec<i64>,
    pub(super) aggregate_type: Vec<&'a str>,
    pub(super) aggregate_id: Vec<&'a str>,
    pub(super) aggregate_version: Vec<i64>,
    pub(super) recorded_at: Vec<i64>,
    pub(super) user_id: Vec<&'a str>,
    pub(super) correlation_id: Vec<Option<&'a str>>,
    pub(super) causation_id: Vec<Option<&'a str>>,
    pub(super) data: Vec<&'a str>,
    pub(super) metadata: Vec<&'a str>,
    pub(super) hash: Vec<String>,
    pub(super) data_ok: Vec<bool>,
    pub(super) metadata_ok: Vec<bool>,
    pub(super) principal: Vec<Option<&'a str>>,
    pub(super) sealed: Vec<Option<&'a str>>,
}

impl<'a> From<&'a Vec<RecordedEvent>> for EventColumns<'a> {
    fn from(events: &'a Vec<RecordedEvent>) -> Self {
        let n = events.len();
        let mut c = EventColumns {
            position: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            event_version: Vec::with_capacity(n),
            aggregate_type: Vec::with_capacity(n),
            aggregate_id: Vec::with_capacity(n),
            aggregate_version: Vec::with_capacity(n),
            recorded_at: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            correlation_id: Vec::with_capacity(n),
            causation_id: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            data_ok: Vec::with_capacity(n),
            metadata_ok: Vec::with_capacity(n),
            principal: Vec::with_capacity(n),
            sealed: Vec::with_capacity(n),
        };
        for e in events {
            c.position.push(clamp(e.position));
            c.event_id.push(e.event_id);
            c.event_type.push(&e.event_type);
            c.event_version.push(i64::from(e.event_version));
            c.aggregate_type.push(&e.aggregate_type);
            c.aggregate_id.push(&e.aggregate_id);
            c.aggregate_version.push(clamp(e.aggregate_version));
            c.recorded_at.push(e.recorded_at.as_micros());
            c.user_id.push(&e.user_id);
            c.correlation_id.push(e.correlation_id.as_deref());
            c.causation_id.push(e.causation_id.as_deref());
            c.data.push(e.data.get());
            c.metadata.push(e.metadata.get());
            c.hash.push(e.hash.to_hex());
            c.data_ok.push(jsonb_can_hold(e.data.get()));
            c.metadata_ok.push(jsonb_can_hold(e.metadata.get()));
            c.principal.push(e.principal.as_deref());
            c.sealed.push(e.sealed.as_ref().map(|s| s.get()));
        }
        c
    }
}

/// The group's stream records as column arrays.
pub(super) struct StreamColumns<'a> {
    pub(super) aggregate_id: Vec<&'a str>,
    pub(super) aggregate_type: Vec<Option<&'a str>>,
    pub(super) version: Vec<i64>,
    pub(super) tombstoned: Vec<bool>,
    pub(super) truncate_before: Vec<Option<i64>>,
    pub(super) metadata_version: Vec<i64>,
    pub(super) metadata: Vec<Option<&'a str>>,
}

impl<'a> From<&'a Vec<(String, StreamRecord)>> for StreamColumns<'a> {
    fn from(records: &'a Vec<(String, StreamRecord)>) -> Self {
        let n = records.len();
        let mut c = StreamColumns {
            aggregate_id: Vec::with_capacity(n),
            aggregate_type: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            tombstoned: Vec::with_capacity(n),
            truncate_before: Vec::with_capacity(n),
            metadata_version: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for (id, r) in records {
            c.aggregate_id.push(id);
            c.aggregate_type.push(r.aggregate_type.as_deref());
            c.version.push(clamp(r.version));
            c.tombstoned.push(r.tombstoned);
            c.truncate_before.push(r.truncate_before().map(clamp));
            c.metadata_version.push(clamp(r.metadata_version));
            c.metadata.push(r.metadata.as_ref().map(|m| m.get()));
        }
        c
    }
}

pub(super) struct CheckpointColumns<'a> {
    pub(super) name: Vec<&'a str>,
    pub(super) position: Vec<i64>,
    pub(super) status: Vec<&'static str>,
    pub(super) error_count: Vec<i64>,
    pub(super) last_error: Vec<Option<&'a str>>,
    pub(super) updated_at: Vec<i64>,
    pub(super) source: Vec<Option<&'a str>>,
}

impl<'a, I: Iterator<Item = &'a Checkpoint>> From<I> for CheckpointColumns<'a> {
    fn from(cps: I) -> Self {
        let mut c = CheckpointColumns {
            name: Vec::new(),
            position: Vec::new(),
            status: Vec::new(),
            error_count: Vec::new(),
            last_error: Vec::new(),
            updated_at: Vec::new(),
            source: Vec::new(),
        };
        for cp in cps {
            c.name.push(&cp.name);
            c.position.push(clamp(cp.position));
            c.status.push(cp.status.as_str());
            c.error_count.push(clamp(cp.error_count));
            c.last_error.push(cp.last_error.as_deref());
            c.updated_at.push(cp.updated_at.as_micros());
            c.source.push(cp.source.as_deref());
        }
        c
    }
}

pub(super) struct SnapshotColumns<'a> {
    pub(super) aggregate_id: Vec<&'a str>,
    pub(super) aggregate_type: Vec<&'a str>,
    pub(super) version: Vec<i64>,
    pub(super) tag: Vec<&'a str>,
    pub(super) state: Vec<&'a str>,
    pub(super) state_ok: Vec<bool>,
    pub(super) created_at: Vec<i64>,
}

impl<'a, I: Iterator<Item = &'a Snapshot>> From<I> for SnapshotColumns<'a> {
    fn from(snaps: I) -> Self {
        let mut c = SnapshotColumns {
            aggregate_id: Vec::new(),
            aggregate_type: Vec::new(),
            version: Vec::new(),
            tag: Vec::new(),
            state: Vec::new(),
            state_ok: Vec::new(),
            created_at: Vec::new(),
        };
        for s in snaps {
            c.aggregate_id.push(&s.aggregate_id);
            c.aggregate_type.push(&s.aggregate_type);
            c.version.push(clamp(s.aggregate_version));
            c.tag.push(&s.tag);
            c.state.push(s.state.get());
            c.state_ok.push(jsonb_can_hold(s.state.get()));
            c.created_at.push(s.created_at.as_micros());
        }
        c
    }
}
