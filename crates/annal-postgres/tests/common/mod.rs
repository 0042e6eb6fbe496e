//! Shared by the PostgreSQL tests: the server URL from `ANNAL_TEST_POSTGRES_URL`, a fresh
//! schema per test (random name, dropped at the end), and a direct connection for
//! editing tables behind the store's back.
//!
//! Unset `ANNAL_TEST_POSTGRES_URL`: every test prints a notice and passes without
//! running. Set: the tests run, and fail if the server cannot be reached.

#![allow(dead_code)]

use std::sync::Once;

/// The variable naming the test server.
pub const URL_VAR: &str = "ANNAL_TEST_POSTGRES_URL";

/// The test server's URL, or `None` (with a notice on stderr) when it is not configured.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                eprintln!(
                    "notice: {URL_VAR} is not set: skipping the PostgreSQL tests \
                     (e.g. {URL_VAR}=postgres://postgres@127.0.0.1:5432/test)"
                )
            });
            None
        }
    }
}

/// Whether the PostgreSQL tests run (false: skip, after a notice).
pub fn available() -> bool {
    server_url().is_some()
}

/// A fresh schema name: `annal_test_` and 16 random hex digits.
pub fn fresh_schema() -> String {
    format!("annal_test_{:016x}", fastrand::u64(..))
}

/// `url` with `param=value` added to its query.
pub fn with_param(url: &str, param: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}={value}")
}

/// The store URL of `schema` on the test server.
pub fn store_url(schema: &str) -> String {
    let url = server_url().expect("the PostgreSQL tests are configured");
    with_param(&url, "schema", schema)
}

/// A plain connection to the test server (for edits behind the store's back).
pub async fn admin() -> tokio_postgres::Client {
    let url = server_url().expect("the PostgreSQL tests are configured");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}={url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Drops a test schema, from any context (it runs on its own thread and runtime).
pub fn drop_schema(schema: &str) {
    let schema = schema.to_owned();
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = admin().await;
            let _ = c.batch_execute("SET lock_timeout = '10s'").await;
            if let Err(e) = c
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
            {
                eprintln!("could not drop test schema {schema}: {e}");
            }
        });
    });
    let _ = done.join();
}

/// Drops its schema when the test ends.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        drop_schema(&self.0);
    }
}
