//! The subscription suite (subscriptions, projections, triggers, consumer groups)
//! against the embedded SQLite store, one file per test.

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

    async fn tamper_data(&self, _position: u64, _data: &str) {
        unreachable!("the subscription suite does not tamper")
    }

    async fn reopen(&mut self) {
        self.store = SqliteStore::open(&self.path).expect("reopen");
    }
}

annal_core::subscription_suite!(fresh);
