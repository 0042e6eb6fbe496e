//! Bodies of the `snapshots` routes: a [`SnapshotBody`] in, a [`Snapshot`] out.

use crate::event::RawJson;
pub use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};

/// Body of `PUT /v1/streams/{aggregate_id}/snapshots/{version}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    /// The state's shape, e.g. `family-v2`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub tag: String,
    /// The state.
    pub state: RawJson,
}
