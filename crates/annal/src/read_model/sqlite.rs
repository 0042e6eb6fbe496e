//! A read model in a SQLite database of its own: implement [`SqliteReadModel`], run it
//! with [`spawn`]. Invariants: see [`super`].
//!
//! ```no_run
//! # use annal::{Aggregate, DomainEvent, RecordedEvent, projection::*};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, Serialize, Deserialize)]
//! # #[serde(tag = "event_type", content = "data")]
//! # enum Tally { Counted { by: i64 } }
//! # impl DomainEvent for Tally {}
//! # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! # struct Counter;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "Counter";
//! #     const SNAPSHOT_TAG: &'static str = "counter-v1";
//! #     type Event = Tally;
//! #     type Command = ();
//! #     type Error = std::convert::Infallible;
//! #     fn apply(&mut self, _: &Tally) {}
//! #     fn handle(&self, _: ()) -> Result<Vec<Tally>, Self::Error> { Ok(vec![]) }
//! # }
//! use annal::read_model::sqlite::{self, SqliteReadModel, rusqlite::Transaction};
//!
//! /// Totals by counter.
//! struct Totals;
//!
//! impl SqliteReadModel<Counter> for Totals {
//!     const SCHEMA: &'static str =
//!         "CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, total INTEGER NOT NULL)";
//!     fn apply(&mut self, tx: &Transaction, e: &RecordedEvent, Tally::Counted { by }: Tally)
//!         -> Result<(), HandlerError> {
//!         tx.execute(
//!             "INSERT INTO totals VALUES (?1, ?2)
//!              ON CONFLICT (id) DO UPDATE SET total = total + excluded.total",
//!             (&e.aggregate_id, by),
//!         )?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo(store: std::sync::Arc<dyn annal::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let options = ProjectionOptions::new("totals");
//! let running = sqlite::spawn(store, "totals.db".as_ref(), Totals, options)?;
//! let totals = running.stop().await?;           // the model and its database, handed back
//! let visits: i64 = totals.db().query_row("SELECT total FROM totals WHERE id = 'visits'", [], |r| r.get(0))?;
//! # Ok(()) }
//! ```

use super::POSITIONS_TABLE;
use crate::projection::{HandlerError, ProjectionHandle, ProjectionOptions, TypedHandler};
use crate::{Aggregate, AppendRequest, RecordedEvent, Store, async_trait};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

/// The SQLite client annal uses, for writing read models without a dependency of your own.
pub use rusqlite;

/// What a read model in SQLite does with each event of aggregate type `A`.
pub trait SqliteReadModel<A: Aggregate>: Send + 'static {
    /// Its tables: SQL run at every open, so `CREATE TABLE IF NOT EXISTS …`.
    const SCHEMA: &'static str;

    /// Writes what one event changes, in `tx` (do not commit it: its position is written
    /// in the same transaction, then it commits). `typed` is the event upcast and
    /// decoded; an error rolls everything back and fails the event.
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        typed: A::Event,
    ) -> Result<(), HandlerError>;
}

/// A [`SqliteReadModel`] with its database: the projection handler that [`spawn`] runs,
/// handed back by [`ProjectionHandle::stop`].
pub struct SqliteModel<A, M> {
    db: Connection,
    name: String,
    model: M,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, M> std::fmt::Debug for SqliteModel<A, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteModel")
            .field("name", &self.name)
            .field("db", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate, M: SqliteReadModel<A>> SqliteModel<A, M> {
    /// Opens (creating) the database at `path` for the read model `name`: its schema,
    /// and its row in `annal_read_models`. The file is put in WAL mode, so connections
    /// of your own can read it while the projection writes.
    pub fn open(path: &Path, name: &str, model: M) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(M::SCHEMA)?;
        db.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE}
             (name TEXT PRIMARY KEY, position INTEGER NOT NULL)"
        ))?;
        db.execute(
            &format!("INSERT INTO {POSITIONS_TABLE} VALUES (?1, 0) ON CONFLICT DO NOTHING"),
            [name],
        )?;
        Ok(Self {
            db,
            name: name.to_owned(),
            model,
            aggregate: PhantomData,
        })
    }
}

impl<A, M> SqliteModel<A, M> {
    /// The position of the last event applied (0: none).
    pub fn position(&self) -> rusqlite::Result<u64> {
        position(&self.db, &self.name)
    }

    /// The database, for queries.
    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// The read model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

/// The position `name` has applied, read in `db` (0: none).
fn position(db: &Connection, name: &str) -> rusqlite::Result<u64> {
    let sql = format!("SELECT position FROM {POSITIONS_TABLE} WHERE name = ?1");
    let p: Option<u64> = db.query_row(&sql, [name], |r| r.get(0)).optional()?;
    Ok(p.unwrap_or(0))
}

#[async_trait]
impl<A: Aggregate, M: SqliteReadModel<A>> TypedHandler<A> for SqliteModel<A, M> {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
        typed: A::Event,
    ) -> Result<Vec<AppendRequest>, HandlerError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if position(&tx, &self.name)? >= event.position {
            return Ok(Vec::new());
        }
        self.model.apply(&tx, event, typed)?;
        tx.execute(
            &format!("UPDATE {POSITIONS_TABLE} SET position = ?2 WHERE name = ?1"),
            (&self.name, event.position),
        )?;
        tx.commit()?;
        Ok(Vec::new())
    }
}

/// Opens the read model's database at `path` and runs `model` as the typed projection
/// `options.name` over `store`, events decoded after the aggregate's upcasters
/// ([`Aggregate::upcasters`]).
pub fn spawn<A, M>(
    store: Arc<dyn Store>,
    path: &Path,
    model: M,
    options: ProjectionOptions,
) -> rusqlite::Result<ProjectionHandle<SqliteModel<A, M>>>
where
    A: Aggregate,
    M: SqliteReadModel<A>,
{
    let model = SqliteModel::open(path, &options.name, model)?;
    Ok(crate::projection::spawn_typed::<A, _, _>(
        store,
        A::upcasters(),
        model,
        options,
    ))
}
