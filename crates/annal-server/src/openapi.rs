//! The OpenAPI 3 document, generated from the handlers' annotations and the core
//! types' schemas, served at `GET /openapi.json`.

use crate::routes;
use annal_core::checkpoint::{CheckpointStatus, CheckpointWrite};
use annal_core::{
    AppendRequest, AppendResult, Checkpoint, Direction, ExpectedVersion, Hash, Lease, LeaseFence,
    NewEvent, RawJson, RecordedEvent, Snapshot, Timestamp, Transaction, TransactionResult,
    VerifyReport,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// Stable: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id,
    /// checkpoint_conflict, lease_conflict, invalid_request, too_large, not_found,
    /// storage_error, corrupt, unavailable.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for people.
    pub detail: String,
    /// For invalid_request and too_large: the field, as a path into the request.
    pub field: Option<String>,
}

/// A page of `GET /v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPageDoc {
    /// The events, in global order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; null when this page reached the head.
    pub next_after_position: Option<u64>,
}

/// A page of `GET /v1/streams/{aggregate_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPageDoc {
    /// The events, in version order (descending when reading backward).
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; null when there is no more.
    pub next_from_version: Option<u64>,
}

/// `GET /v1/head`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeadDoc {
    /// The last committed position (0 for none).
    pub position: u64,
}

/// Health.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc {
    /// `live` or `ready`.
    pub status: String,
    /// The head position (readiness only).
    pub head: Option<u64>,
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "annal",
        description = "An event store: append, read, subscribe, verify. See API.md."
    ),
    paths(
        routes::append,
        routes::transact,
        routes::read_stream,
        routes::read_events,
        routes::read_event,
        routes::head,
        routes::list_checkpoints,
        routes::get_checkpoint,
        routes::put_checkpoint,
        routes::list_leases,
        routes::acquire_lease,
        routes::renew_lease,
        routes::release_lease,
        routes::heartbeat,
        routes::put_snapshot,
        routes::latest_snapshot,
        routes::subscribe,
        routes::verify,
        routes::live,
        routes::ready,
        routes::metrics,
        routes::openapi,
    ),
    components(schemas(
        RawJson,
        Timestamp,
        Hash,
        ExpectedVersion,
        Direction,
        RecordedEvent,
        NewEvent,
        AppendRequest,
        AppendResult,
        Transaction,
        TransactionResult,
        Checkpoint,
        CheckpointStatus,
        CheckpointWrite,
        Lease,
        LeaseFence,
        routes::AcquireBody,
        routes::HeldBody,
        routes::HeartbeatBody,
        routes::LeaseList,
        routes::MemberList,
        Snapshot,
        VerifyReport,
        routes::SnapshotBody,
        routes::CheckpointList,
        ProblemDoc,
        EventsPageDoc,
        StreamPageDoc,
        HeadDoc,
        StatusDoc,
    ))
)]
pub struct ApiDoc;
