//! The whole conformance suite and the subscription suite (subscriptions, projections,
//! triggers, consumer groups) against the embedded SQLite store, one file per test.

use annal_core::testkit::Harness;
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
