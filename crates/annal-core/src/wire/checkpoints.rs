//! Bodies of the `checkpoints` routes: a [`CheckpointWrite`] in, a [`Checkpoint`] or a
//! [`CheckpointList`] out.

pub use crate::checkpoint::{Checkpoint, CheckpointWrite};
use serde::{Deserialize, Serialize};

/// The body of `GET /v1/checkpoints`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointList {
    /// Every checkpoint, by name.
    pub checkpoints: Vec<Checkpoint>,
}
