//! Bodies of the `events` routes: appends and transactions in, their results, pages of
//! events and the head out.

pub use crate::append::{AppendRequest, AppendResult, Transaction, TransactionResult};
pub use crate::event::RecordedEvent;
pub use crate::read::EventCounts;
use serde::{Deserialize, Serialize};

/// A page of `GET /v1/streams/{aggregate_id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPage {
    /// The events, in version order (descending when reading backward).
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; null when there is no more.
    pub next_from_version: Option<u64>,
}

/// A page of `GET /v1/events` (the server writes it as it reads, in this shape).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsPage {
    /// The events, in global order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; null when this page reached the head.
    pub next_after_position: Option<u64>,
}

/// The body of `GET /v1/head`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last committed position (0 for none).
    pub position: u64,
}
