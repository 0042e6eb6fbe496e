//! examples/bank's balances by owner, kept in PostgreSQL instead of SQLite: the same
//! read model on `annal::read_model::postgres`. Each event's rows and position commit in
//! one transaction, and the position row is locked (`SELECT … FOR UPDATE`) before an
//! event at or below it is skipped, so a consumer killed anywhere (kill -9 included),
//! or an old one still running beside a new one, neither misses nor counts twice
//! (docs/subscriptions.md, "Read models in your own database").

use annal::projection::{HandlerError, ProjectionHandle, ProjectionOptions};
use annal::read_model::postgres::{self, PostgresModel, PostgresReadModel, tokio_postgres};
use annal::{RecordedEvent, Store, async_trait};
use annal_example_bank::{AccountEvent, BankAccount};
use std::sync::Arc;
use tokio_postgres::{Client, Transaction};

/// Balances by owner: `accounts (id, owner, balance)` in the connection's
/// `search_path`, summed by owner when read.
#[derive(Debug)]
pub struct BalancesByOwner;

#[async_trait]
impl PostgresReadModel<BankAccount> for BalancesByOwner {
    const SCHEMA: &'static str = "CREATE TABLE IF NOT EXISTS accounts
        (id TEXT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL)";

    async fn apply(
        &mut self,
        tx: &Transaction<'_>,
        e: &RecordedEvent,
        event: AccountEvent,
    ) -> Result<(), HandlerError> {
        let id = &e.aggregate_id;
        let delta = match event {
            AccountEvent::Opened { owner } => {
                let sql = "INSERT INTO accounts VALUES ($1, $2, 0)";
                tx.execute(sql, &[id, &owner]).await?;
                return Ok(());
            }
            AccountEvent::Deposited { amount } => i64::from(amount),
            AccountEvent::Withdrawn { amount } => -i64::from(amount),
        };
        let sql = "UPDATE accounts SET balance = balance + $2 WHERE id = $1";
        tx.execute(sql, &[id, &delta]).await?;
        Ok(())
    }
}

/// The running read model; `stop()` hands back its connection.
pub type Running = ProjectionHandle<PostgresModel<BankAccount, BalancesByOwner>>;

/// Runs the read model on `client` as the projection `balances-by-owner`.
pub async fn spawn(
    store: Arc<dyn Store>,
    client: Client,
) -> Result<Running, tokio_postgres::Error> {
    let options = ProjectionOptions::new("balances-by-owner");
    postgres::spawn(store, client, BalancesByOwner, options).await
}

/// The total balance of `owner`'s accounts in the read model `client` sees.
pub async fn balance(client: &Client, owner: &str) -> Result<i64, tokio_postgres::Error> {
    let sql = "SELECT coalesce(sum(balance), 0)::BIGINT FROM accounts WHERE owner = $1";
    Ok(client.query_one(sql, &[&owner]).await?.get(0))
}
