//! annal: an event store. This facade is the one crate a Rust application depends on:
//! the core model and [`Store`] trait, plus the backends enabled by features
//! (`sqlite` and `postgres`, both on by default), and [`open`] / [`connect`] to open a
//! store from its URL (`sqlite:PATH` or `postgres://…`).
//!
//! More by feature: `client` adds [`client::HttpStore`] (the Store trait against a
//! remote `annal serve`), `state-command` adds [`state_command`] (a ready-made `state`
//! command for an application's binary), `testing` adds [`testing`] (given/when/then for
//! aggregates, a real store in a temporary folder, projections run over events). With
//! `sqlite` or `postgres`, [`read_model`] keeps read models in a database of your own
//! exactly once. The `annal` command and its server live in the `annal-cli` crate; this
//! crate never pulls in a server stack.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use annal::{AppendRequest, ExpectedVersion, NewEvent, Store};
//! let store = annal::open(&"sqlite:./annal-data/annal.db".parse()?)?;
//! let request = AppendRequest::new("Family", "family_123", ExpectedVersion::NoStream)
//!     .by("sarah")
//!     .event(NewEvent::new("FamilyEnrolled", &serde_json::json!({"family_name": "Martinez Family"}))?);
//! let result = store.append(request).await?;
//! println!("stored at position {}", result.first_position);
//! # Ok(()) }
//! ```
//!
//! Aggregates take commands through a [`Repository`], which decides, appends with
//! optimistic concurrency (deciding again after a conflict) and loads any past version
//! (docs/aggregates.md has snapshots, upcasting and commands across aggregates;
//! `annal::testing`, feature `testing`, tests an aggregate without a store):
//!
//! ```
//! use annal::{Aggregate, CommandContext, DomainEvent, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! #[serde(tag = "event_type", content = "data")]
//! enum Tally { Counted { by: u64 } }
//! impl DomainEvent for Tally {}
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Counter { total: u64 }
//!
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "Counter";
//!     const SNAPSHOT_TAG: &'static str = "counter-v1";
//!     type Event = Tally;
//!     type Command = u64; // count this many
//!     type Error = std::convert::Infallible;
//!     fn apply(&mut self, Tally::Counted { by }: &Tally) {
//!         self.total += by;
//!     }
//!     fn handle(&self, by: u64) -> Result<Vec<Tally>, Self::Error> {
//!         Ok(vec![Tally::Counted { by }])
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite:{}", dir.path().join("annal.db").display());
//! let store = annal::open(&url.parse()?)?;
//! let counters = Repository::<Counter>::new(store);
//! let by_sarah = CommandContext::by("sarah");
//! counters.execute("visits", 2, &by_sarah).await?;
//! let now = counters.execute("visits", 3, &by_sarah).await?;
//! assert_eq!((now.state.total, now.version), (5, 2));
//! let then = counters.load_at_version("visits", 1).await?;
//! assert_eq!(then.state.total, 2);
//! # Ok(()) }
//! ```

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod read_model;
#[cfg(feature = "state-command")]
pub mod state_command;
#[cfg(feature = "testing")]
pub mod testing;

/// The README's Rust example, compiled by the doc tests so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

/// The Store API against a remote `annal serve` ([`client::HttpStore`]).
#[cfg(feature = "client")]
pub use annal_client as client;
pub mod url;

pub use annal_core::*;
#[cfg(feature = "postgres")]
pub use annal_postgres as postgres;
#[cfg(feature = "sqlite")]
pub use annal_sqlite as sqlite;
/// The attribute that projection [`Handler`](projection::Handler)s and other async traits
/// of annal are implemented with, so a crate using annal needs no dependency of its own.
pub use async_trait::async_trait;
pub use url::{
    ConnectOptions, OpenError, StoreUrl, connect, connect_with, connect_with_options, open,
    open_with,
};
