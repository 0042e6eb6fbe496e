//! Reads never show a commit that is not yet durable: while the WAL's fdatasync for a
//! group is held, the group is committed in SQLite (another connection sees its row),
//! yet every read of the store shows the log as it was before it; once the sync ends,
//! the append is answered and reads show it.

use crate::SqliteStore;
use annal_core::Store;
use annal_core::append::ExpectedVersion;
use annal_core::read::{Direction, Filter};
use annal_core::testkit::fixtures::{payment, req};
use std::time::{Duration, Instant};

/// Rows in the store file's `events`, as a plain SQLite connection sees them.
fn rows_in_file(store: &SqliteStore) -> i64 {
    let c = rusqlite::Connection::open(store.path()).expect("open the file");
    c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the held sync lock is the slow disk the reads run beside"
)]
async fn a_committed_group_stays_hidden_from_reads_until_its_sync_ends() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.db")).expect("open");
    store
        .append(req(
            "Family",
            "f1",
            ExpectedVersion::NoStream,
            vec![payment(0)],
        ))
        .await
        .expect("first append");

    let held = store.inner.durability.hold_syncs();
    let mut second = payment(1);
    let second_id = annal_core::Uuid::now_v7();
    second.event_id = Some(second_id);
    let appending = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .append(req("Family", "f1", ExpectedVersion::Exact(1), vec![second]))
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows_in_file(&store) < 2 {
        assert!(
            Instant::now() < deadline,
            "the second append never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!appending.is_finished(), "answered before its sync");

    let all = store
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read all");
    assert_eq!(all.len(), 1, "read_all shows only the durable event");
    assert_eq!(store.head(&[]).await.expect("head"), 1);
    assert_eq!(store.head(&["Family".into()]).await.expect("head"), 1);
    let newest = store
        .read_aggregate("f1", Direction::Backward, None, 1)
        .await
        .expect("read backward");
    assert_eq!(
        newest
            .iter()
            .map(|e| e.aggregate_version)
            .collect::<Vec<_>>(),
        [1]
    );
    assert!(store.event(second_id).await.expect("event").is_none());
    let record = store
        .stream("f1")
        .await
        .expect("stream")
        .expect("f1 exists");
    assert_eq!(
        record.version, 1,
        "the stream's record as durable events show it"
    );

    drop(held);
    let answered = appending.await.expect("task").expect("second append");
    assert_eq!(answered.aggregate_version, 2);
    assert_eq!(
        store
            .read_all(0, 100, &Filter::default())
            .await
            .expect("read")
            .len(),
        2
    );
    assert_eq!(
        store
            .stream("f1")
            .await
            .expect("stream")
            .expect("f1")
            .version,
        2
    );
    assert!(store.event(second_id).await.expect("event").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the held sync lock is the slow disk the reads run beside"
)]
async fn another_writers_events_stay_visible_while_this_stores_group_syncs() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let here = SqliteStore::open(&path).expect("open");
    here.append(req(
        "Family",
        "f1",
        ExpectedVersion::NoStream,
        vec![payment(0)],
    ))
    .await
    .expect("this store's first append");
    // A second writer on the same file (as another process is): its event, durable
    // by its own sync, is seen here.
    let other = SqliteStore::open(&path).expect("open again");
    other
        .append(req(
            "Family",
            "f2",
            ExpectedVersion::NoStream,
            vec![payment(0)],
        ))
        .await
        .expect("the other writer's append");
    assert_eq!(here.head(&[]).await.expect("head"), 2);

    let held = here.inner.durability.hold_syncs();
    let appending = tokio::spawn({
        let here = here.clone();
        async move {
            here.append(req(
                "Family",
                "f1",
                ExpectedVersion::Exact(1),
                vec![payment(1)],
            ))
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows_in_file(&here) < 3 {
        assert!(Instant::now() < deadline, "the append never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        here.head(&[]).await.expect("head"),
        2,
        "what was visible stays visible; only this store's unsynced group is hidden"
    );
    let all = here
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read");
    assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2]);

    drop(held);
    appending.await.expect("task").expect("append");
    assert_eq!(here.head(&[]).await.expect("head"), 3);
}
