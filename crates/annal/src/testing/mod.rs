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
//!
//! An aggregate's rules, tested without a store:
//!
//! ```
//! use annal::testing::AggregateTest;
//! use annal::{Aggregate, DomainEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! #[serde(tag = "event_type", content = "data")]
//! enum Ticket { Sold { seat: u32 } }
//! impl DomainEvent for Ticket {}
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("seat {0} is taken")]
//! struct Taken(u32);
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Show { taken: Vec<u32> }
//!
//! impl Aggregate for Show {
//!     const TYPE: &'static str = "Show";
//!     const SNAPSHOT_TAG: &'static str = "show-v1";
//!     type Event = Ticket;
//!     type Command = u32; // sell this seat
//!     type Error = Taken;
//!     fn apply(&mut self, Ticket::Sold { seat }: &Ticket) {
//!         self.taken.push(*seat);
//!     }
//!     fn handle(&self, seat: u32) -> Result<Vec<Ticket>, Taken> {
//!         if self.taken.contains(&seat) {
//!             return Err(Taken(seat));
//!         }
//!         Ok(vec![Ticket::Sold { seat }])
//!     }
//! }
//!
//! let show = AggregateTest::<Show>::given([Ticket::Sold { seat: 1 }])
//!     .when(2)
//!     .then([Ticket::Sold { seat: 2 }]);
//! assert_eq!(show.taken, [1, 2]);
//! AggregateTest::<Show>::given([Ticket::Sold { seat: 1 }])
//!     .when(1)
//!     .then_error(Taken(1));
//! ```

mod aggregate;
mod projection;
mod store;

pub use aggregate::{AggregateTest, Decided};
pub use projection::{ProjectError, project};
pub use store::{RecordError, TestStore, TestStoreError};
