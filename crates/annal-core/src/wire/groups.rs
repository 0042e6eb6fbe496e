//! Bodies of the `groups` routes: partition leases and membership heartbeats.

pub use crate::lease::Lease;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/groups/{group}/leases/{partition}/acquire`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The member taking the lease.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub owner: String,
    /// How long it lasts unless renewed, in milliseconds (1 to 3,600,000).
    pub ttl_ms: u64,
}

/// Body of `POST /v1/groups/{group}/leases/{partition}/renew` and `…/release`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldBody {
    /// The member holding the lease.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// For a renewal: how long it lasts from now, in milliseconds (1 to 3,600,000).
    /// A release sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Body of `PUT /v1/groups/{group}/members/{member}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// How long the member counts as alive, in milliseconds (0: it leaves).
    pub ttl_ms: u64,
}

/// The body of `GET /v1/groups/{group}/leases`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    /// The unexpired leases, by partition.
    pub leases: Vec<Lease>,
}

/// The body of `PUT /v1/groups/{group}/members/{member}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The live members, by name.
    pub members: Vec<String>,
}
