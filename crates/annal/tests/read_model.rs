//! A read model kept in the application's own database, exactly once (docs/subscriptions.md,
//! "Read models in your own database"): the position it has applied is stored in the
//! same transaction as its rows, and it subscribes from that position, so a consumer
//! cut off anywhere neither misses nor double-counts an event. Here the consumer's task
//! is aborted at random moments, again and again, and it yields between writing the
//! balance and the position, so a cut lands inside that window too: only the
//! transaction keeps the two together.

use annal::sqlite::SqliteStore;
use annal::{
    AppendRequest, ExpectedVersion, NewEvent, RecordedEvent, Start, Store, SubscriptionOptions,
    subscribe,
};
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The read model: balances by account, and the position applied so far.
fn open_read_model(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL);",
    )?;
    Ok(db)
}

fn applied_position(db: &Connection) -> rusqlite::Result<u64> {
    let p: Option<i64> = db
        .query_row("SELECT position FROM applied WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(p.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
}

/// Applies one event: its rows and the position, in one transaction.
async fn apply(db: &mut Connection, e: &RecordedEvent) -> Result<(), Box<dyn std::error::Error>> {
    let amount = e.data.to_value::<serde_json::Value>()?["amount"]
        .as_i64()
        .ok_or("no amount")?;
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO balances (account, balance) VALUES (?1, ?2)
         ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
        rusqlite::params![e.aggregate_id, amount],
    )?;
    // A crash may come between the two writes: without the transaction, the balance
    // would be counted again after the restart.
    tokio::task::yield_now().await;
    tx.execute(
        "INSERT INTO applied (id, position) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET position = excluded.position",
        [i64::try_from(e.position)?],
    )?;
    tx.commit()?;
    Ok(())
}

/// The consumer: from the read model's own position, for ever.
async fn consume(store: Arc<SqliteStore>, path: std::path::PathBuf) {
    let mut db = open_read_model(&path).expect("read model");
    let from = applied_position(&db).expect("position");
    let mut events = subscribe(store, SubscriptionOptions::from(Start::After(from)))
        .await
        .expect("subscribe");
    loop {
        let e = events.next().await.expect("next event");
        apply(&mut db, &e).await.expect("apply");
    }
}

#[tokio::test]
async fn a_read_model_in_its_own_database_counts_each_event_once_across_crashes() {
    // The consumer holds a SQLite transaction across an await: it runs on this thread.
    tokio::task::LocalSet::new().run_until(crashes()).await;
}

async fn crashes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).expect("store"));
    let mut total = 0i64;
    for i in 0..600i64 {
        let amount = i % 7 + 1;
        total += amount;
        store
            .append(
                AppendRequest::new("Account", format!("acct-{}", i % 5), ExpectedVersion::Any)
                    .event(
                        NewEvent::new("Deposited", &serde_json::json!({"amount": amount}))
                            .expect("event"),
                    ),
            )
            .await
            .expect("append");
    }
    let read_model = dir.path().join("read-model.db");
    // Cut the consumer off at random moments, as a crash would.
    for _ in 0..8 {
        let run = tokio::task::spawn_local(consume(store.clone(), read_model.clone()));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(5..40))).await;
        run.abort();
        let _ = run.await;
    }
    let run = tokio::task::spawn_local(consume(store.clone(), read_model.clone()));
    let db = open_read_model(&read_model).expect("read model");
    let head = store.head(&[]).await.expect("head");
    for _ in 0..500 {
        if applied_position(&db).expect("position") == head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    assert_eq!(applied_position(&db).expect("position"), head, "caught up");
    let sum: i64 = db
        .query_row("SELECT sum(balance) FROM balances", [], |r| r.get(0))
        .expect("sum");
    assert_eq!(sum, total, "every deposit counted exactly once");
}
