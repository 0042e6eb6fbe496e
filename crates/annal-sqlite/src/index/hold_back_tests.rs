//! The writer waits for an indexer that fell too far behind, and never for long.

use crate::SqliteStore;
use crate::index;
use annal_core::testkit::fixtures::{ev, req};
use annal_core::{ExpectedVersion, Store};
use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

async fn append(store: &SqliteStore, id: &str, n: usize) {
    let events = (0..n)
        .map(|i| ev("Placed", &format!("{{\"i\":{i}}}")))
        .collect();
    store
        .append(req("Order", id, ExpectedVersion::NoStream, events))
        .await
        .expect("append");
}

async fn indexed_to(store: &SqliteStore, position: u64) {
    let start = Instant::now();
    while store.indexed_up_to() != Some(position) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the index never reached {position}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A store whose writer is held back past 5 events of lag, with 10 events indexed and
/// 10 more appended while `lock` keeps the indexer from writing its next batch.
async fn behind(path: &Path) -> (SqliteStore, Connection) {
    let store = SqliteStore::open(path).expect("open");
    store.inner.durability.nudge().set_most_lag(5);
    append(&store, "order-1", 10).await;
    indexed_to(&store, 10).await;
    let lock = Connection::open(index::path_of(path)).expect("index file");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("the index file's write lock");
    append(&store, "order-2", 10).await;
    (store, lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_while_the_indexer_is_too_far_behind_and_goes_on_when_it_moves() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let (store, lock) = behind(&path).await;
    // A hold far longer than the wake-up takes, so the two cannot be mistaken.
    store
        .inner
        .durability
        .nudge()
        .set_most_hold(Duration::from_secs(10));
    let store = std::sync::Arc::new(store);
    let start = Instant::now();
    let held = tokio::spawn({
        let store = store.clone();
        async move { append(&store, "order-3", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "the append did not wait for the indexer"
    );
    lock.execute_batch("ROLLBACK").expect("let the indexer go");
    held.await.expect("append");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the append waited out its longest hold ({:?}) instead of going on when the \
         indexer moved",
        start.elapsed()
    );
    indexed_to(&store, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexer_that_cannot_move_slows_appends_but_never_stops_them() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let (store, lock) = behind(&path).await;
    let start = Instant::now();
    append(&store, "order-3", 1).await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "no wait: {waited:?}");
    assert!(waited < Duration::from_secs(3), "held too long: {waited:?}");
    lock.execute_batch("ROLLBACK").expect("let the indexer go");
    indexed_to(&store, 21).await;
}
