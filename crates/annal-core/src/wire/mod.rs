//! The HTTP API's request and response bodies, written once (docs/http.md).
//!
//! The server's handlers serialise these, its OpenAPI document derives its schemas from
//! them (feature `openapi`), and the client parses them. Bodies that are core types
//! already (an append request, a recorded event, a checkpoint…) are re-exported here, so
//! this module lists every body of the API by area, one submodule per OpenAPI tag, plus
//! the [`Problem`] document of every error.
//!
//! Invariant: the JSON of each type is what the server has always sent: member names,
//! absent optional members omitted (or `null` where the route always wrote one), numbers
//! as numbers; event payloads stay verbatim ([`crate::RawJson`]).

pub mod audit;
pub mod checkpoints;
pub mod cluster;
pub mod console;
pub mod events;
pub mod groups;
pub mod operations;
pub mod problem;
pub mod snapshots;
pub mod subjects;

pub use audit::{Digest, VerifyReport};
pub use checkpoints::{Checkpoint, CheckpointList, CheckpointWrite};
pub use cluster::{Cluster, ClusterNode};
pub use console::{
    AggregateState, HeadSample, LastVerify, Overview, PersistentGroup, PersistentGroups, Whoami,
};
pub use events::{
    AppendRequest, AppendResult, EventCounts, EventsPage, Head, RecordedEvent, StreamPage,
    Transaction, TransactionResult,
};
pub use groups::{AcquireBody, HeartbeatBody, HeldBody, Lease, LeaseList, MemberList};
pub use operations::Health;
pub use problem::Problem;
pub use snapshots::{Snapshot, SnapshotBody};
pub use subjects::{ForgetBody, Forgotten, SubjectInfo, SubjectList};
