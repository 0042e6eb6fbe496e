//! The whole conformance suite and the subscription suite (subscriptions, projections,
//! triggers, consumer groups) against the embedded SQLite store, one file per test.

use annal_core::Store;
use annal_core::testkit::{Harness, streams};
use annal_sqlite::SqliteStore;
use async_trait::async_trait;

struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: SqliteStore,
}

async fn fresh() -> Sqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = SqliteStore::open(&path).expect("open store");
    Sqlite {
        _dir: dir,
        path,
        store,
    }
}

#[async_trait]
impl Harness for Sqlite {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn tamper_data(&self, position: u64, data: &str) {
        let conn = rusqlite::Connection::open(&self.path).expect("open behind the store's back");
        conn.execute_batch("DROP TRIGGER events_are_immutable")
            .expect("drop guard");
        let n = conn
            .execute(
                "UPDATE events SET data = ?1 WHERE position = ?2",
                rusqlite::params![data, position as i64],
            )
            .expect("edit");
        assert_eq!(n, 1);
    }

    async fn reopen(&mut self) {
        self.store = SqliteStore::open(&self.path).expect("reopen");
    }
}

annal_core::conformance_suite!(fresh);
annal_core::subscription_suite!(fresh);
annal_core::stream_suite!(fresh);

/// A version 2 file (no stream records, the old event indexes) is migrated when opened:
/// each stream's record is rebuilt from its events, equal to the one the writer kept,
/// and the stream rules hold on it at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_file_gets_the_stream_records_the_writer_would_have_kept() {
    let Sqlite { _dir, path, store } = fresh().await;
    let names = streams::populate_streams(&store).await;
    let kept = streams::records(&store, &names).await;
    let head = store.head(&[]).await.expect("head");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    conn.execute_batch(
        "DROP TABLE streams;
         DROP INDEX events_by_correlation_id;
         DROP INDEX events_by_causation_id;
         CREATE INDEX events_by_correlation_id ON events (correlation_id, position);
         CREATE INDEX events_by_causation_id   ON events (causation_id, position);
         CREATE INDEX events_by_recorded_at    ON events (recorded_at);
         DELETE FROM schema_version WHERE version > 2;",
    )
    .expect("back to version 2");
    drop(conn);
    let store = SqliteStore::open(&path).expect("migrate");
    assert_eq!(store.head(&[]).await.expect("head"), head);
    streams::check_migrated(&store, &names, kept).await;
}
