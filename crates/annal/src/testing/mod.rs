//! Test helpers for applications built on annal (feature `testing`; add it to your
//! dev-dependencies: `annal = { …, features = ["testing"] }`).
//!
//! - [`AggregateTest`]: given events, when a command, then the events it decides or the
//!   error it refuses with. No store involved: it runs the aggregate's own `apply` and
//!   `handle`, and checks that every event survives its stored form (encode, decode).
//! - [`TestStore`]: a real embedded store in a private temporary folder (on a RAM disk
//!   where the system has one), deleted when it drops. It is the SQLite backend itself,
//!   so it keeps every rule the backends keep (it runs the same conformance suite), not
//!   a stand-in that could pass tests production would fail.
//! - [`project`]: runs a projection handler over a list of events, as the runner
//!   would, and collects the appends it returns.

mod aggregate;
mod projection;
mod store;

pub use aggregate::{AggregateTest, Decided};
pub use projection::{ProjectError, project};
pub use store::{RecordError, TestStore, TestStoreError};
