//! annal-core: the rules of an annal event store, with no I/O library in sight.
//!
//! This crate owns the event model ([`RecordedEvent`], [`NewEvent`]), the append and
//! transaction requests with their validation ([`AppendRequest`], [`Transaction`]), read
//! filters, snapshots, checkpoints, the hash chain ([`chain`]), typed errors ([`Error`]),
//! the HTTP contract's bodies ([`wire`]) and the backend-agnostic [`Store`] trait. Storage
//! backends (`annal-sqlite`, `annal-postgres`) translate the trait into one database;
//! `annal-server` translates it into HTTP and `annal-grpc` into KurrentDB's gRPC. On top of the trait, and so on every backend: [`subscription`]s (history then
//! live), the [`projection`] runner (durable, checkpointed), [`trigger`]s and consumer
//! [`group`]s. With the `testkit` feature it also ships the conformance suite every backend runs.
//!
//! Invariants every backend keeps, and the conformance suite checks:
//! - global positions are 1-based, contiguous and in commit order;
//! - aggregate versions are 1-based and contiguous per aggregate, checked optimistically;
//! - an append or transaction is atomic, durable once acknowledged, and an error writes nothing;
//! - `data` and `metadata` are returned byte for byte as written;
//! - each event's `hash` chains it to its predecessor (see [`chain`]).

pub mod access;
pub mod aggregate;
pub mod append;
pub mod audit;
pub mod budget;
pub mod chain;
pub mod checkpoint;
pub mod cluster;
pub mod commit;
pub mod digest;
pub mod error;
pub mod event;
pub mod failures;
pub mod group;
pub mod import;
pub mod job;
pub mod lease;
#[cfg(feature = "openapi")]
mod openapi;
pub mod privacy;
pub mod projection;
pub mod read;
pub mod repository;
pub mod snapshot;
pub mod store;
pub mod stored;
pub mod stream_record;
pub mod streams;
pub mod subscription;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trigger;
pub mod upcast;
pub mod wire;

pub use aggregate::{Aggregate, CodecError, DomainEvent};
pub use append::{
    Actor, AppendRequest, AppendResult, ExpectedVersion, Limits, NewEvent, ProposedAppend,
    ProposedEvent, ProposedTransaction, Transaction, TransactionResult,
};
pub use audit::{AuditEntry, Compensation};
pub use chain::{Hash, ParseHashError, VerifyReport};
pub use checkpoint::{Checkpoint, CheckpointStatus, CheckpointWrite};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use event::{ParseTimestampError, RawJson, RecordedEvent, Timestamp};
pub use lease::{Lease, LeaseFence};
pub use read::{Direction, EventCounts, Filter};
pub use repository::{
    CommandContext, ConflictRetry, Executed, Loaded, Repository, RepositoryError, SnapshotPolicy,
    StateView, StateViewError,
};
pub use snapshot::Snapshot;
pub use store::{AggregateInfo, Store};
pub use stream_record::StreamRecord;
pub use subscription::{Start, Subscription, SubscriptionOptions, subscribe};
pub use upcast::{StepError, Upcast, Upcasters};
pub use uuid::Uuid;
