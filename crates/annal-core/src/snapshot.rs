//! Snapshots: an aggregate's state at a version, cached so a load need not replay from
//! version 1. Snapshots are not events: they have no position and no place in the chain.
//!
//! Invariant: a snapshot names the state's shape with a `tag`; a reader asks for one tag
//! and never sees a snapshot of another shape. One snapshot per (aggregate, version, tag):
//! saving again replaces it.

use crate::event::{RawJson, Timestamp};
use serde::{Deserialize, Serialize};

/// A cached state of an aggregate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate.
    pub aggregate_id: String,
    /// Its type (filled in by the store from the aggregate).
    pub aggregate_type: String,
    /// The last version applied to `state`.
    pub aggregate_version: u64,
    /// The state's shape, e.g. `family-v2`.
    pub tag: String,
    /// The state, verbatim JSON.
    pub state: RawJson,
    /// When it was saved.
    pub created_at: Timestamp,
}
