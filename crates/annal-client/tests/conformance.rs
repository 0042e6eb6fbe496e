//! The whole conformance suite through [`HttpStore`] against a live `annal_server` (real
//! HTTP on 127.0.0.1) on the embedded SQLite store, one file and one server per test.

use annal_client::HttpStore;
use annal_core::testkit::Harness;
use annal_server::Config;
use annal_sqlite::SqliteStore;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A server running in this process.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.done)
            .await
            .expect("server task")
            .expect("server ends cleanly");
    }
}

async fn start(path: &Path) -> (Running, HttpStore) {
    let store = Arc::new(SqliteStore::open(path).expect("open store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(annal_server::serve(
        listener,
        store,
        Config::default(),
        async move {
            let _ = rx.await;
        },
    ));
    let client = HttpStore::connect(&base).expect("client");
    (
        Running {
            stop: Some(tx),
            done,
        },
        client,
    )
}

struct Live {
    // Declared first so the server stops before the directory is removed.
    server: Option<Running>,
    store: HttpStore,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn fresh() -> Live {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let (server, store) = start(&path).await;
    Live {
        server: Some(server),
        store,
        path,
        _dir: dir,
    }
}

#[async_trait]
impl Harness for Live {
    type Store = HttpStore;

    fn store(&self) -> &HttpStore {
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
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let (server, store) = start(&self.path).await;
        self.server = Some(server);
        self.store = store;
    }
}

annal_core::conformance_suite!(fresh);

mod subscriptions {
    use super::fresh;
    annal_core::subscription_suite!(fresh);
}
