//! Bodies of the `operations` routes: health.

use serde::{Deserialize, Serialize};

/// The body of `GET /health/live` and `GET /health/ready`. Members in alphabetical
/// order, as the server has always written them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The head position (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
    /// `live` or `ready`.
    pub status: String,
}

impl Health {
    /// The answer of `GET /health/live`.
    pub fn live() -> Self {
        Self {
            head: None,
            status: "live".to_owned(),
        }
    }

    /// The answer of `GET /health/ready`: the store answers, with this head.
    pub fn ready(head: u64) -> Self {
        Self {
            head: Some(head),
            status: "ready".to_owned(),
        }
    }
}
