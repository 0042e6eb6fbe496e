//! Read models in a database of your own, kept exactly once: [`sqlite`] (feature
//! `sqlite`) and [`postgres`] (feature `postgres`).
//!
//! You write what one event changes (a [`sqlite::SqliteReadModel`] or a
//! [`postgres::PostgresReadModel`]: a schema and an `apply`); the wrapper runs it as a
//! typed projection ([`crate::projection::spawn_typed`]) and keeps the position it has
//! applied in a table of the read model's own database, `annal_read_models (name,
//! position)`, one row per projection name.
//!
//! Invariants:
//! - each event's rows and its position are written in one transaction of the read
//!   model's database: a crash anywhere (kill -9 included) leaves them agreeing;
//! - the position is read inside that transaction, under the database's write lock
//!   (SQLite `BEGIN IMMEDIATE`; PostgreSQL `SELECT … FOR UPDATE` on the position row),
//!   and an event at or below it is skipped: the runner's at-least-once delivery (it
//!   resumes after its checkpoint in annal, which may lag) becomes exactly once, also
//!   while an old consumer is still running beside a new one;
//! - a failing `apply` rolls back its transaction and fails the event, which the runner
//!   retries and then faults or skips as the projection's
//!   [`FailurePolicy`](crate::projection::FailurePolicy) says; nothing is half-applied.
//!
//! There is no `reset`: a rebuild replays into rows that already hold everything, and the
//! position check skips it all. To start again, drop the read model's tables (and its
//! `annal_read_models` row).
//!
//! docs/subscriptions.md ("Read models in your own database") has the pattern; the
//! bank example (`examples/bank`, `examples/bank-postgres`) uses both.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The table holding each read model's position (created in the read model's database).
pub const POSITIONS_TABLE: &str = "annal_read_models";
