//! What only a real PostgreSQL shows: NOTIFY reaching other connections, lost
//! connections, an unreachable server, TLS, JSON operators, concurrent schema creation.
//! Skipped (with a notice) when `ANNAL_TEST_POSTGRES_URL` is not set.

mod common;

use annal_core::{AppendRequest, Error, ExpectedVersion, NewEvent, RawJson, Store, Uuid};
use annal_postgres::{OpenError, PgStore};
use std::time::{Duration, Instant};

fn append(agg: &str, data: &str) -> AppendRequest {
    AppendRequest::new("Family", agg, ExpectedVersion::Any)
        .event(NewEvent::raw("Noted", RawJson::parse(data).expect("json")))
}

async fn until_listening(store: &PgStore) {
    let start = Instant::now();
    while !store.is_listening() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the listening connection comes up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_another_connection_wakes_within_milliseconds_of_a_commit() {
    if !common::available() {
        return;
    }
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard(schema.clone());
    let url = common::store_url(&schema);
    let writer = PgStore::connect(&url).await.expect("open");
    // A second store has its own pool and listening connection: as another process would.
    let reader = PgStore::connect(&url).await.expect("open");
    until_listening(&reader).await;
    let waiter = tokio::spawn(async move {
        let got = reader.wait_for_head(0, Duration::from_secs(30)).await;
        (got, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.append(append("f", "{}")).await.expect("append");
    let acked = Instant::now();
    let (got, woke) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("task");
    assert_eq!(got.expect("wait"), 1);
    // While listening, waiters poll only every 500 ms: waking this fast is NOTIFY's doing.
    let lag = woke.saturating_duration_since(acked);
    assert!(
        lag < Duration::from_millis(150),
        "woke {lag:?} after the commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_gives_a_storage_error_then_the_store_reconnects() {
    if !common::available() {
        return;
    }
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard(schema.clone());
    let app = schema.clone();
    let url = common::with_param(&common::store_url(&schema), "application_name", &app);
    let store = PgStore::connect(&url).await.expect("open");
    store.append(append("f", "{}")).await.expect("append");
    until_listening(&store).await;

    // Kill every connection of the store, as a server restart or a network cut would.
    let admin = common::admin().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(
        killed >= 2,
        "the pool's and the listener's connections ({killed})"
    );

    // The same append, retried with the same event_id until it goes through: each try
    // answers at once, with success or a storage error, and it is stored once.
    let id = Uuid::now_v7();
    let request = AppendRequest::new("Family", "g", ExpectedVersion::Any)
        .event(NewEvent::raw("Noted", RawJson::parse("{}").expect("json")).with_id(id));
    let mut outcome = None;
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(15), store.append(request.clone()))
            .await
            .expect("an answer, not a hang");
        match r {
            Ok(r) => {
                outcome = Some(r);
                break;
            }
            Err(e @ Error::Storage(_)) => {
                assert!(e.to_string().contains("PostgreSQL"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("a lost connection must be a storage error: {other}"),
        }
    }
    let result = outcome.expect("the pool reconnected");
    assert_eq!(result.first_position, 2);
    let again = store.append(request).await.expect("retry");
    assert_eq!(again, result, "a retry is answered from the store");
    assert_eq!(store.head(&[]).await.expect("head"), 2);
    // The listener reconnects too, and reads the head it may have missed.
    until_listening(&store).await;
    assert_eq!(
        store
            .wait_for_head(1, Duration::from_secs(5))
            .await
            .expect("wait"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    if !common::available() {
        return;
    }
    let start = Instant::now();
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/test?connect_timeout=3")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, OpenError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_keep_their_exact_text_and_are_queryable_as_jsonb() {
    if !common::available() {
        return;
    }
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard(schema.clone());
    let store = PgStore::connect(&common::store_url(&schema))
        .await
        .expect("open");
    let text = r#"{"family_name": "Martinez Family",  "amount": 450.00, "z": 1, "a": [1e2]}"#;
    // jsonb cannot hold \u0000: the exact text is kept, the jsonb copy is NULL, and the
    // appends committed beside it are not disturbed.
    let nul = r#"{"note": "a\u0000b"}"#;
    let (a, b) = tokio::join!(
        store.append(append("f", text)),
        store.append(append("g", nul))
    );
    a.expect("append");
    b.expect("append with a NUL escape");
    let events = annal_core::testkit::fixtures::all(&store).await;
    let by_agg = |id: &str| {
        events
            .iter()
            .find(|e| e.aggregate_id == id)
            .expect("stored")
            .data
            .get()
            .to_owned()
    };
    assert_eq!(by_agg("f"), text);
    assert_eq!(by_agg("g"), nul);
    let admin = common::admin().await;
    let row = admin
        .query_one(
            &format!(
                "SELECT data_json->>'family_name', (data_json->>'amount')::numeric = 450,
                        (SELECT data_json IS NULL FROM \"{schema}\".events WHERE aggregate_id = 'g')
                 FROM \"{schema}\".events WHERE aggregate_id = 'f'"
            ),
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "Martinez Family");
    assert!(row.get::<_, bool>(1));
    assert!(
        row.get::<_, bool>(2),
        "no jsonb copy for a payload jsonb refuses"
    );
    let edit = admin
        .execute(
            &format!("UPDATE \"{schema}\".events SET data = '{{}}' WHERE aggregate_id = 'f'"),
            &[],
        )
        .await;
    assert!(edit.is_err(), "the guard trigger refuses edits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_new_schema_together_create_it_once() {
    if !common::available() {
        return;
    }
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard(schema.clone());
    let url = common::store_url(&schema);
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.expect("task").expect("open"));
    }
    for (i, s) in stores.iter().enumerate() {
        s.append(append(&format!("f{i}"), "{}"))
            .await
            .expect("append");
    }
    assert_eq!(stores[0].head(&[]).await.expect("head"), 6);
    assert!(stores[5].verify(None, None).await.expect("verify").ok);
}

/// The machine's server uses Debian's snakeoil certificate (CN and SAN `localhost`).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

async fn server_has_tls() -> bool {
    let admin = common::admin().await;
    let on: String = admin
        .query_one("SHOW ssl", &[])
        .await
        .expect("show ssl")
        .get(0);
    on == "on" && std::path::Path::new(SNAKEOIL).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_when_required_and_a_wrong_certificate_is_refused() {
    if !common::available() {
        return;
    }
    if !server_has_tls().await {
        eprintln!("notice: the test server has no TLS (ssl=off): skipping");
        return;
    }
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard(schema.clone());
    let app = format!("{schema}_tls");
    let url = common::with_param(
        &common::with_param(&common::store_url(&schema), "sslmode", "require"),
        "application_name",
        &app,
    );
    let store = PgStore::connect(&url).await.expect("open over TLS");
    store.append(append("f", "{}")).await.expect("append");
    let admin = common::admin().await;
    let encrypted: bool = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "every connection of the store uses TLS");

    // verify-full checks the certificate against the CA file and the host name: the
    // snakeoil certificate names localhost, not 127.0.0.1.
    let strict = common::with_param(
        &common::with_param(&common::store_url(&schema), "sslmode", "verify-full"),
        "sslrootcert",
        SNAKEOIL,
    );
    let err = PgStore::connect(&strict)
        .await
        .expect_err("the certificate does not name 127.0.0.1");
    assert!(matches!(err, OpenError::Connect { .. }), "{err}");
    let by_name = strict.replacen("127.0.0.1", "localhost", 1);
    if by_name != strict {
        let store = PgStore::connect(&by_name)
            .await
            .expect("verify-full with the right CA and host name");
        assert_eq!(store.head(&[]).await.expect("head"), 1);
    }
}
