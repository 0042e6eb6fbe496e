//! What the HTTP end-to-end test files share: a server on 127.0.0.1 over the embedded
//! store (or a fresh schema of the test PostgreSQL), JSON helpers, and the seed data
//! most route tests start from. Each test starts its own server, so tests never share
//! state.
#![allow(dead_code)] // each test file uses its own subset

use annal_server::Config;
use annal_sqlite::SqliteStore;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A running server; its store's directory or schema lives as long as it does.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<PgSchema>,
    /// Sending on it starts a graceful shutdown.
    pub stop: Option<oneshot::Sender<()>>,
    /// The server task; ends when the shutdown is complete.
    pub done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A server over a fresh embedded (SQLite) store.
pub async fn start(config: Config) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let mut s = serve(store, config).await;
    s._dir = Some(dir);
    s
}

/// A server over a fresh embedded store opened with the test key-encryption key, so it
/// takes personal data.
pub async fn start_with_kek(config: Config) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let options = annal_sqlite::Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..annal_sqlite::Options::default()
    };
    let store = Arc::new(SqliteStore::open_with(dir.path().join("s.db"), options).expect("open"));
    let mut s = serve(store, config).await;
    s._dir = Some(dir);
    s
}

/// [`start_with_kek`] on a fresh schema of the test PostgreSQL; `None` (with a notice)
/// when ANNAL_TEST_POSTGRES_URL is not set. Fails when it is set but unreachable.
pub async fn start_with_kek_on_postgres(config: Config) -> Option<Server> {
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!(
            "notice: ANNAL_TEST_POSTGRES_URL is not set; skipping the PostgreSQL end-to-end test"
        );
        return None;
    };
    let name = format!("annal_http_{}", uuid_like());
    let sep = if base.contains('?') { '&' } else { '?' };
    let pg =
        annal_postgres::PgConfig::from_url(&format!("{base}{sep}schema={name}")).expect("test URL");
    let options = annal_postgres::Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..annal_postgres::Options::default()
    };
    let store: Arc<dyn annal_core::Store> = Arc::new(
        annal_postgres::PgStore::connect_with(pg, options)
            .await
            .unwrap_or_else(|e| panic!("the test PostgreSQL is unreachable: {e}")),
    );
    let mut s = serve(store, config).await;
    s._schema = Some(PgSchema { base, name });
    Some(s)
}

/// A fresh schema on the test PostgreSQL, dropped afterwards.
struct PgSchema {
    base: String,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Best effort, on its own thread: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A server over a fresh schema of the test PostgreSQL; `None` (with a notice) when
/// ANNAL_TEST_POSTGRES_URL is not set. Fails when it is set but unreachable.
pub async fn start_on_postgres(config: Config) -> Option<Server> {
    let Ok(base) = std::env::var("ANNAL_TEST_POSTGRES_URL") else {
        eprintln!(
            "notice: ANNAL_TEST_POSTGRES_URL is not set; skipping the PostgreSQL end-to-end test"
        );
        return None;
    };
    let name = format!("annal_http_{}", uuid_like());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store: Arc<dyn annal_core::Store> = Arc::new(
        annal_postgres::PgStore::connect(&format!("{base}{sep}schema={name}"))
            .await
            .unwrap_or_else(|e| panic!("the test PostgreSQL is unreachable: {e}")),
    );
    let mut s = serve(store, config).await;
    s._schema = Some(PgSchema { base, name });
    Some(s)
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// A server over `store` (which the caller may also use directly).
pub async fn serve(store: Arc<dyn annal_core::Store>, config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(annal_server::serve(listener, store, config, async move {
        let _ = rx.await;
    }));
    Server {
        base,
        _dir: None,
        _schema: None,
        stop: Some(tx),
        done,
    }
}

/// Declares a test that runs `$check(base)` on the embedded store and its twin that
/// runs it on the test PostgreSQL (skipped when ANNAL_TEST_POSTGRES_URL is not set).
#[macro_export]
macro_rules! on_both_stores {
    ($sqlite:ident, $postgres:ident, $check:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let s = common::start(annal_server::Config::default()).await;
            $check(&s.base).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if let Some(s) = common::start_on_postgres(annal_server::Config::default()).await {
                $check(&s.base).await;
            }
        }
    };
}

/// An append request for a `Family` stream by `sarah`.
pub fn family(expected: Value, events: Value) -> Value {
    json!({"aggregate_type": "Family", "expected_version": expected, "user_id": "sarah", "events": events})
}

/// POSTs `body` as JSON: the status and the JSON answer.
pub async fn post(c: &Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let r = c.post(url).json(body).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.expect("JSON body"))
}

/// GETs `url`: the status and the JSON answer.
pub async fn get(c: &Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.expect("JSON body"))
}

/// Appends `FamilyEnrolled` and `ChildAdded` (correlation `enrollment_abc123`) to a new
/// stream `family_123` at positions 1 and 2: the append's answer.
pub async fn seed_family(c: &Client, b: &str) -> Value {
    let (st, r) = post(c, &format!("{b}/v1/streams/family_123"), &family(json!("no_stream"), json!([
        {"event_type": "FamilyEnrolled", "data": {"family_name": "Martinez Family"}},
        {"event_type": "ChildAdded", "correlation_id": "enrollment_abc123", "data": {"child_name": "Sofia"}}
    ]))).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    r
}

/// After [`seed_family`]: a transaction appending `PaymentReceived` to `family_123` and
/// `InvoicePaid` to a new `inv-1` (positions 3 and 4), and moving the new checkpoint
/// `payments-projection` to 3: the transaction's answer.
pub async fn seed_transaction(c: &Client, b: &str) -> Value {
    let (st, r) = post(c, &format!("{b}/v1/transactions"), &json!({
        "appends": [
            {"aggregate_type": "Family", "aggregate_id": "family_123", "expected_version": 2, "events": [{"event_type": "PaymentReceived", "data": {"amount": 450}}]},
            {"aggregate_type": "Invoice", "aggregate_id": "inv-1", "expected_version": "no_stream", "events": [{"event_type": "InvoicePaid", "data": {}}]}
        ],
        "checkpoint": {"name": "payments-projection", "position": 3, "expected_position": null}
    })).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    r
}
