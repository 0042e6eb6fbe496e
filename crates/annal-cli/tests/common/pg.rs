//! PostgreSQL for the `annal` command's tests: the server named by
//! `ANNAL_TEST_POSTGRES_URL` (the test is skipped, with a notice, when it is not set; it
//! fails when it is set and unreachable), and a schema of the test's own, dropped when
//! the test ends.

/// The test server's URL, or `None` (with a notice) when none is configured.
pub fn server_url() -> Option<String> {
    match std::env::var("ANNAL_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("notice: ANNAL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL test");
            None
        }
    }
}

/// A schema of its own on the server at `base`; dropped with the value.
pub struct TestSchema {
    base: String,
    name: String,
    /// The store URL naming the schema.
    pub url: String,
}

impl TestSchema {
    pub fn new(base: &str) -> Self {
        let name = format!("annal_test_{:016x}", fastrand::u64(..));
        let sep = if base.contains('?') { '&' } else { '?' };
        Self {
            url: format!("{base}{sep}schema={name}"),
            base: base.to_owned(),
            name,
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.name.clone());
        // On a thread of its own: the test's runtime may be the caller.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        });
        let _ = done.join();
    }
}
