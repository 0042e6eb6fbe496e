//! The balances-by-owner read model, in its own SQLite file, kept exactly once: a typed
//! projection (at least once: after a crash it resumes after its checkpoint in annal,
//! which may lag) whose handler writes each event's rows and position in one
//! transaction and skips events at or below that position (docs/subscriptions.md,
//! "Read models in your own database"). A crash anywhere leaves rows and position
//! agreeing: nothing missed or counted twice.

use crate::{AccountEvent, BankAccount, upcasters};
use annal::projection::{self, HandlerError, ProjectionHandle, ProjectionOptions, TypedHandler};
use annal::{RecordedEvent, Store, async_trait};
use rusqlite::TransactionBehavior::Immediate;
use rusqlite::{Connection, OptionalExtension, Params, params, types::FromSql};
use std::path::Path;
use std::sync::Arc;

/// The read model's database: `balances (owner, balance)` and the position applied.
#[derive(Debug)]
pub struct BalancesByOwner {
    db: Connection,
}

impl BalancesByOwner {
    /// Opens (creating) the read model at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS owners (account TEXT PRIMARY KEY, owner TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS balances (owner TEXT PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL);",
        )?;
        Ok(Self { db })
    }

    /// The position of the last event applied (0: none).
    pub fn position(&self) -> rusqlite::Result<u64> {
        self.number("SELECT position FROM applied", [])
    }

    /// The total balance of `owner`'s accounts.
    pub fn balance(&self, owner: &str) -> rusqlite::Result<i64> {
        self.number("SELECT balance FROM balances WHERE owner = ?1", [owner])
    }

    fn number<T: FromSql + Default>(&self, sql: &str, p: impl Params) -> rusqlite::Result<T> {
        let n = self.db.query_row(sql, p, |r| r.get(0)).optional()?;
        Ok(n.unwrap_or_default())
    }
}

#[async_trait]
impl TypedHandler<BankAccount> for BalancesByOwner {
    /// Applies one event (typed, upcast) and its position, in one transaction; an event
    /// at or below the position applied is skipped (applied before a crash, or by
    /// another consumer still running when this one started).
    async fn handle(&mut self, e: &RecordedEvent, event: AccountEvent) -> HandlerResult {
        let tx = self.db.transaction_with_behavior(Immediate)?;
        let applied = tx.query_row("SELECT position FROM applied", [], |r| r.get(0));
        if applied.optional()?.is_some_and(|p: u64| p >= e.position) {
            return Ok(Vec::new());
        }
        let account = &e.aggregate_id;
        if let AccountEvent::Opened { owner } = &event {
            tx.execute("INSERT INTO owners VALUES (?1, ?2)", [account, owner])?;
        }
        let delta = match event {
            AccountEvent::Opened { .. } => 0,
            AccountEvent::Deposited { amount } => i64::from(amount),
            AccountEvent::Withdrawn { amount } => -i64::from(amount),
        };
        tx.execute(
            "INSERT INTO balances SELECT owner, ?2 FROM owners WHERE account = ?1
             ON CONFLICT (owner) DO UPDATE SET balance = balance + excluded.balance",
            params![account, delta],
        )?;
        tx.execute(
            "INSERT INTO applied VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET position = ?1",
            [e.position],
        )?;
        tx.commit()?;
        Ok(Vec::new())
    }
}

type HandlerResult = Result<Vec<annal::AppendRequest>, HandlerError>;

/// Runs the read model at `path` as the projection `balances-by-owner`. No `reset`: a
/// rebuild replays into rows that hold everything already, and the position check skips
/// it all (delete the file to start again).
pub fn spawn(store: Arc<dyn Store>, path: &Path) -> rusqlite::Result<Running> {
    let model = BalancesByOwner::open(path)?;
    let options = ProjectionOptions::new("balances-by-owner");
    Ok(projection::spawn_typed::<BankAccount, _, _>(
        store,
        upcasters(),
        model,
        options,
    ))
}

/// The running read model.
pub type Running = ProjectionHandle<BalancesByOwner>;
