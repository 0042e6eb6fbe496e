//! The balances-by-owner read model, in its own SQLite file, kept exactly once by
//! `annal::read_model::sqlite`: each event's rows and position are committed together
//! and an event at or below that position is skipped, so a crash anywhere (kill -9
//! included) leaves nothing missed or counted twice (docs/subscriptions.md).

use crate::{AccountEvent, BankAccount};
use annal::projection::{HandlerError, ProjectionHandle, ProjectionOptions};
use annal::read_model::sqlite::{self, SqliteModel, SqliteReadModel, rusqlite};
use annal::{RecordedEvent, Store};
use rusqlite::{Connection, Transaction};
use std::{path::Path, sync::Arc};

/// Balances by owner: `accounts (id, owner, balance)`, summed by owner when read.
#[derive(Debug)]
pub struct BalancesByOwner;

impl SqliteReadModel<BankAccount> for BalancesByOwner {
    const SCHEMA: &'static str = "CREATE TABLE IF NOT EXISTS accounts
        (id TEXT PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)";

    fn apply(&mut self, tx: &Transaction, e: &RecordedEvent, event: AccountEvent) -> Applied {
        let id = &e.aggregate_id;
        let delta = match event {
            AccountEvent::Opened { owner } => {
                tx.execute("INSERT INTO accounts VALUES (?1, ?2, 0)", (id, owner))?;
                return Ok(());
            }
            AccountEvent::Deposited { amount } => i64::from(amount),
            AccountEvent::Withdrawn { amount } => -i64::from(amount),
        };
        let sql = "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1";
        tx.execute(sql, (id, delta))?;
        Ok(())
    }
}

type Applied = Result<(), HandlerError>;

/// The running read model; `stop()` hands back its database.
pub type Running = ProjectionHandle<SqliteModel<BankAccount, BalancesByOwner>>;

/// Runs the read model in the file at `path` as the projection `balances-by-owner`.
pub fn spawn(store: Arc<dyn Store>, path: &Path) -> rusqlite::Result<Running> {
    let options = ProjectionOptions::new("balances-by-owner");
    sqlite::spawn(store, path, BalancesByOwner, options)
}

/// The total balance of `owner`'s accounts in the read model's database `db`.
pub fn balance(db: &Connection, owner: &str) -> rusqlite::Result<i64> {
    let sql = "SELECT coalesce(sum(balance), 0) FROM accounts WHERE owner = ?1";
    db.query_row(sql, [owner], |r| r.get(0))
}
