//! Bodies of the routes the audit console reads besides the log itself: who the caller
//! is (`GET /v1/whoami`), the server's overview (`GET /v1/overview`) and an aggregate's
//! state at a version (`GET /v1/streams/{aggregate_id}/state`), and the persistent
//! subscriptions (`GET /v1/persistent-subscriptions`).

use crate::{Timestamp, VerifyReport};
use serde::{Deserialize, Serialize};

/// The body of `GET /v1/whoami`: the caller as the server sees it, so that a client
/// shows only what the token may do.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The token's name; `null` with auth off.
    pub name: Option<String>,
    /// `read`, `write` or `admin` (with auth off: `admin`).
    pub role: String,
    /// The aggregate types the token is limited to; `null`: all of them.
    pub aggregate_types: Option<Vec<String>>,
    /// Whether auth is on.
    pub auth: bool,
}

/// The last chain check a server ran, and when.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerify {
    /// When the check finished.
    pub at: Timestamp,
    /// Whether it was the deep check.
    pub deep: bool,
    /// What it found.
    pub report: VerifyReport,
}

/// The body of `GET /v1/overview`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    /// The last committed position.
    pub head: u64,
    /// The backend's name (`sqlite`, `postgres`), if the host told the server.
    pub backend: Option<String>,
    /// The store's size in bytes, where the server can see its files (`null` for a
    /// database server).
    pub store_bytes: Option<u64>,
    /// The nodes serving this store, as `host:port` (the live nodes of its cluster).
    pub nodes: Vec<String>,
    /// This server's version.
    pub version: String,
    /// The last chain check this server process ran (`null`: none since it started).
    pub last_verify: Option<LastVerify>,
    /// Why the store cannot write, if its last commit failed.
    pub write_failure: Option<String>,
    /// The head as the server sampled it (every few seconds, for the last minutes,
    /// oldest first): the rate of appends over time, without waiting for a client to
    /// sample it.
    #[serde(default)]
    pub head_history: Vec<HeadSample>,
}

/// The head at a moment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSample {
    /// When it was read.
    pub at: Timestamp,
    /// The last committed position then.
    pub position: u64,
}

/// The body of `GET /v1/persistent-subscriptions`: every persistent subscription
/// (KurrentDB's server-side consumer groups, docs/kurrentdb.md) and how far it is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentGroups {
    /// The groups, by source then name.
    pub groups: Vec<PersistentGroup>,
}

/// One persistent subscription group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentGroup {
    /// What it reads: a stream (an aggregate id), or `$all`.
    pub source: String,
    /// The group's name.
    pub group: String,
    /// `live` (dispatching in this server, with or without consumers) or `idle` (no
    /// consumer has joined since the server started).
    pub status: String,
    /// Consumers connected now.
    pub consumers: u64,
    /// How far every event is settled: a stream version, or for `$all` a log position
    /// (`null`: nothing yet).
    pub checkpoint: Option<u64>,
    /// The source's last version (a stream) or the head (`$all`).
    pub source_head: u64,
    /// Events of the source after the checkpoint (for `$all`, positions: a group with a
    /// filter may want fewer of them).
    pub lag: u64,
    /// Events delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Events parked (given up on) and not replayed since.
    pub parked: u64,
    /// The consumer strategy (`RoundRobin`, `DispatchToSingle`, `Pinned`).
    pub strategy: String,
}

/// The body of `GET /v1/streams/{aggregate_id}/state`: an aggregate's state at a
/// version, as the server's registered state function for its type folds it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    /// The aggregate.
    pub aggregate_id: String,
    /// Its type.
    pub aggregate_type: String,
    /// The version the state is at.
    pub version: u64,
    /// The state, as the aggregate serialises it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub state: serde_json::Value,
}
