//! The OpenAPI 3 document, generated from the handlers' annotations and the schemas of
//! [`annal_core::wire`], served at `GET /openapi.json`.

use crate::routes;
use annal_core::checkpoint::CheckpointStatus;
use annal_core::cluster::Role;
use annal_core::wire::{
    AcquireBody, AggregateState, AppendRequest, AppendResult, Checkpoint, CheckpointList,
    CheckpointWrite, Digest, EventCounts, EventsPage, Head, HeadSample, Health, HeartbeatBody,
    HeldBody, LastVerify, Lease, LeaseList, MemberList, Overview, PersistentGroup,
    PersistentGroups, Problem, RecordedEvent, Snapshot, SnapshotBody, StreamPage, Transaction,
    TransactionResult, VerifyReport, Whoami,
};
use annal_core::wire::{Cluster, ClusterNode};
use annal_core::wire::{ForgetBody, Forgotten, SubjectInfo, SubjectList};
use annal_core::{Direction, ExpectedVersion, Hash, LeaseFence, NewEvent, RawJson, Timestamp};
use utoipa::OpenApi;

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "annal",
        description = "An event store: append, read, subscribe, verify. The contract: docs/api.md in the repository; every route: docs/http.md."
    ),
    paths(
        routes::append,
        routes::transact,
        routes::read_stream,
        routes::read_events,
        routes::count_events,
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
        routes::list_subjects,
        routes::get_subject,
        routes::subject_events,
        routes::forget_subject,
        routes::subscribe,
        routes::verify,
        routes::digest,
        routes::whoami,
        routes::cluster,
        routes::overview,
        routes::persistent_subscriptions,
        routes::aggregate_state,
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
        AcquireBody,
        HeldBody,
        HeartbeatBody,
        LeaseList,
        MemberList,
        Snapshot,
        VerifyReport,
        Digest,
        LastVerify,
        AggregateState,
        Overview,
        HeadSample,
        PersistentGroup,
        PersistentGroups,
        Whoami,
        Cluster,
        ClusterNode,
        annal_core::cluster::ReadStoreStatus,
        Role,
        SnapshotBody,
        CheckpointList,
        Problem,
        EventsPage,
        EventCounts,
        StreamPage,
        Head,
        Health,
        ForgetBody,
        Forgotten,
        SubjectInfo,
        SubjectList,
    ))
)]
pub struct ApiDoc;
