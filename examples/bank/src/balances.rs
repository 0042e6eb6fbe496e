//! The balances-by-owner read model, in its own SQLite file, kept exactly once: each
//! event's rows and the position applied are written in one transaction, and the
//! consumer resumes after that position (docs/subscriptions.md, "Read models in your
//! own database"). A crash anywhere leaves the two agreeing: nothing missed or counted
//! twice, even when a new consumer starts before the old one has stopped.

use crate::{AccountEvent, BankError, accounts};
use annal::{Filter, RecordedEvent, Start, Store, SubscriptionOptions, subscribe};
use rusqlite::{
    Connection, OptionalExtension, Params, TransactionBehavior, params, types::FromSql,
};
use std::path::{Path, PathBuf};
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

    /// Applies one event (typed, upcast) and its position, in one transaction; an event
    /// at or below the position applied is skipped (another consumer, still running
    /// when this one started, applied it).
    pub fn apply(&mut self, e: &RecordedEvent, event: &AccountEvent) -> rusqlite::Result<()> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied = tx.query_row("SELECT position FROM applied", [], |r| r.get(0));
        if applied.optional()?.is_some_and(|p: u64| p >= e.position) {
            return Ok(());
        }
        let delta = match event {
            AccountEvent::Opened { owner } => {
                tx.execute(
                    "INSERT INTO owners VALUES (?1, ?2)",
                    [&e.aggregate_id, owner],
                )?;
                0
            }
            AccountEvent::Deposited { amount } => i64::from(*amount),
            AccountEvent::Withdrawn { amount } => -i64::from(*amount),
        };
        tx.execute(
            "INSERT INTO balances SELECT owner, ?2 FROM owners WHERE account = ?1
             ON CONFLICT (owner) DO UPDATE SET balance = balance + excluded.balance",
            params![e.aggregate_id, delta],
        )?;
        tx.execute(
            "INSERT INTO applied VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET position = ?1",
            [e.position],
        )?;
        tx.commit()
    }
}

/// Keeps the read model at `path` up to date, for ever (until the store fails).
pub async fn run(store: Arc<dyn Store>, path: PathBuf) -> Result<(), BankError> {
    let mut model = BalancesByOwner::open(&path)?;
    let accounts = accounts(store.clone());
    let filter = Filter {
        aggregate_types: vec!["BankAccount".into()],
        ..Filter::default()
    };
    let options = SubscriptionOptions::from(Start::After(model.position()?)).filter(filter);
    let mut events = subscribe(store, options).await?;
    loop {
        let e = events.next().await?;
        model.apply(&e, &accounts.decode(&e)?)?;
    }
}
