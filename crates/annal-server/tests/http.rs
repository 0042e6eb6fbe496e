//! End to end over real HTTP: a server on 127.0.0.1 on the embedded store, driven with
//! reqwest. Routes and shapes as API.md says; errors as problem documents that write
//! nothing; concurrent appenders and a live SSE subscriber; streaming; shutdown.

use annal_server::Config;
use annal_sqlite::SqliteStore;
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

struct Server {
    base: String,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<PgSchema>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let mut s = serve(store, config).await;
    s._dir = Some(dir);
    s
}

/// A fresh schema on the test PostgreSQL, dropped afterwards; `None` (with a notice)
/// when ANNAL_TEST_POSTGRES_URL is not set. Fails when it is set but unreachable.
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

async fn start_on_postgres(config: Config) -> Option<Server> {
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

async fn serve(store: Arc<dyn annal_core::Store>, config: Config) -> Server {
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

fn family(expected: Value, events: Value) -> Value {
    json!({"aggregate_type": "Family", "expected_version": expected, "user_id": "sarah", "events": events})
}

async fn post(c: &Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let r = c.post(url).json(body).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.expect("JSON body"))
}

async fn get(c: &Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_api_says() {
    let s = start(Config::default()).await;
    check_every_route(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_api_says_on_postgres() {
    if let Some(s) = start_on_postgres(Config::default()).await {
        check_every_route(&s.base).await;
    }
}

async fn check_every_route(b: &str) {
    let c = Client::new();
    let (st, r) = post(&c, &format!("{b}/v1/streams/family_123"), &family(json!("no_stream"), json!([
        {"event_type": "FamilyEnrolled", "data": {"family_name": "Martinez Family"}},
        {"event_type": "ChildAdded", "correlation_id": "enrollment_abc123", "data": {"child_name": "Sofia"}}
    ]))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        (
            r["aggregate_version"].as_u64(),
            r["first_position"].as_u64(),
            r["last_position"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    let first_id = r["events"][0]["event_id"].as_str().expect("id").to_owned();

    let (st, r) = get(
        &c,
        &format!("{b}/v1/streams/family_123?from_version=1&limit=1"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (
            r["events"].as_array().map(Vec::len),
            r["next_from_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let (_, r) = get(&c, &format!("{b}/v1/streams/family_123?direction=backward")).await;
    let versions: Vec<_> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["aggregate_version"].as_u64())
        .collect();
    assert_eq!(versions, [Some(2), Some(1)]);
    assert!(r["next_from_version"].is_null());
    let (st, r) = get(&c, &format!("{b}/v1/streams/nobody")).await;
    assert_eq!(
        (st, r["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (_, r) = get(&c, &format!("{b}/v1/events?after_position=0&limit=1")).await;
    assert_eq!(
        (
            r["events"].as_array().map(Vec::len),
            r["next_after_position"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let (_, r) = get(&c, &format!("{b}/v1/events?after_position=1")).await;
    assert!(
        r["next_after_position"].is_null(),
        "the page reached the head"
    );
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?event_type=ChildAdded,Nothing&correlation_id=enrollment_abc123"),
    )
    .await;
    assert_eq!(r["events"][0]["position"].as_u64(), Some(2));
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?since=2000-01-01&until=2000-01-02"),
    )
    .await;
    assert_eq!(r["events"].as_array().map(Vec::len), Some(0));

    let (st, r) = get(&c, &format!("{b}/v1/events/{first_id}")).await;
    assert_eq!((st, r["position"].as_u64()), (StatusCode::OK, Some(1)));
    let (st, _) = get(
        &c,
        &format!("{b}/v1/events/01932c07-8e5c-7a3e-9b6f-3f1d2c4b5a69"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, r) = get(&c, &format!("{b}/v1/events/not-a-uuid")).await;
    assert_eq!(
        (st, r["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );

    assert_eq!(
        get(&c, &format!("{b}/v1/head")).await.1,
        json!({"position": 2})
    );
    assert_eq!(
        get(&c, &format!("{b}/v1/head?aggregate_type=Invoice"))
            .await
            .1,
        json!({"position": 0})
    );

    let (st, r) = post(&c, &format!("{b}/v1/transactions"), &json!({
        "appends": [
            {"aggregate_type": "Family", "aggregate_id": "family_123", "expected_version": 2, "events": [{"event_type": "PaymentReceived", "data": {"amount": 450}}]},
            {"aggregate_type": "Invoice", "aggregate_id": "inv-1", "expected_version": "no_stream", "events": [{"event_type": "InvoicePaid", "data": {}}]}
        ],
        "checkpoint": {"name": "payments-projection", "position": 3, "expected_position": null}
    })).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(r["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["checkpoint"]["position"].as_u64(), Some(3));

    let (st, r) = get(&c, &format!("{b}/v1/checkpoints/payments-projection")).await;
    assert_eq!(
        (st, r["status"].as_str(), r["error_count"].as_u64()),
        (StatusCode::OK, Some("running"), Some(0))
    );
    let r = c
        .put(format!("{b}/v1/checkpoints/payments-projection"))
        .json(&json!({"position": 4, "expected_position": 3, "status": "stopped"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .put(format!("{b}/v1/checkpoints/payments-projection"))
        .json(&json!({"position": 4, "expected_position": 3}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p: Value = r.json().await.expect("problem");
    assert_eq!(
        (
            p["type"].as_str(),
            p["expected_position"].as_u64(),
            p["actual_position"].as_u64()
        ),
        (Some("checkpoint_conflict"), Some(3), Some(4))
    );
    assert_eq!(
        get(&c, &format!("{b}/v1/checkpoints/nobody")).await.0,
        StatusCode::NOT_FOUND
    );

    let r = c
        .put(format!("{b}/v1/streams/family_123/snapshots/2"))
        .json(&json!({"tag": "family-v2", "state": {"n": 2}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let (st, r) = get(
        &c,
        &format!("{b}/v1/streams/family_123/snapshots/latest?tag=family-v2"),
    )
    .await;
    assert_eq!(
        (st, r["aggregate_version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    assert_eq!(
        get(
            &c,
            &format!("{b}/v1/streams/family_123/snapshots/latest?tag=other")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let r = c
        .put(format!("{b}/v1/streams/family_123/snapshots/99"))
        .json(&json!({"tag": "t", "state": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .put(format!("{b}/v1/streams/nobody/snapshots/1"))
        .json(&json!({"tag": "t", "state": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    assert_eq!(
        get(&c, &format!("{b}/v1/verify")).await.1,
        json!({"ok": true, "checked": 4})
    );
    assert_eq!(get(&c, &format!("{b}/health/live")).await.0, StatusCode::OK);
    assert_eq!(
        get(&c, &format!("{b}/health/ready")).await.0,
        StatusCode::OK
    );
    let metrics = c
        .get(format!("{b}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("annal_http_requests_total"), "{metrics}");
    assert!(metrics.contains("annal_events_appended_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_documents_and_write_nothing() {
    let s = start(Config {
        max_body_bytes: 4096,
        ..Config::default()
    })
    .await;
    let c = Client::new();
    let b = &s.base;
    let ok = family(
        json!("no_stream"),
        json!([{"event_type": "FamilyEnrolled", "data": {}}]),
    );
    assert_eq!(
        post(&c, &format!("{b}/v1/streams/f"), &ok).await.0,
        StatusCode::CREATED
    );
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (ok.clone(), StatusCode::CONFLICT, "wrong_expected_version"),
        (
            family(json!("sometimes"), json!([{"event_type": "E", "data": {}}])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            family(json!("any"), json!([])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            family(json!("any"), json!([{"event_type": "", "data": {}}])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            family(
                json!("any"),
                json!([{"event_type": "E", "data": {}, "metadata": [1]}]),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            family(json!("any"), json!([{"event_type": "E"}])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"aggregate_type": "Invoice", "events": [{"event_type": "E", "data": {}}]}),
            StatusCode::CONFLICT,
            "aggregate_type_mismatch",
        ),
        (
            json!({"aggregate_type": "Family", "aggregate_id": "g", "events": [{"event_type": "E", "data": {}}]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            family(
                json!("any"),
                json!([{"event_type": "E", "data": "x".repeat(5000)}]),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (body, status, kind) in cases {
        let r = c
            .post(format!("{b}/v1/streams/f"))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.expect("problem");
        assert_eq!(p["type"].as_str(), Some(kind), "{p}");
        assert_eq!(p["status"].as_u64(), Some(u64::from(status.as_u16())));
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let r = c
        .post(format!("{b}/v1/streams/f"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(format!("{b}/v1/streams/f"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for q in [
        "limit=0",
        "limit=10001",
        "limit=x",
        "since=yesterday",
        "after_position=-1",
        "typo=1",
    ] {
        let (st, p) = get(&c, &format!("{b}/v1/events?{q}")).await;
        assert_eq!(
            (st, p["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{q}: {p}"
        );
    }
    let (st, _) = get(&c, &format!("{b}/v1/streams/f?direction=sideways")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for url in [
        "/v1/streams/a%00b",
        "/v1/events?user_id=%00",
        "/v1/checkpoints/%01",
        "/v1/head?aggregate_type=%01",
    ] {
        let (st, p) = get(&c, &format!("{b}{url}")).await;
        assert_eq!(
            (st, p["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{url}"
        );
    }
    assert_eq!(
        get(&c, &format!("{b}/v1/head")).await.1,
        json!({"position": 1}),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_comes_back_byte_for_byte_on_every_route() {
    let s = start(Config::default()).await;
    let c = Client::new();
    let b = &s.base;
    let data = r#"{"z": 1.50, "a" :[1e3, {"é":"\u00e9"}]}"#;
    let body = format!(
        r#"{{"aggregate_type":"T","events":[{{"event_type":"E","metadata":{{ "k" :1}},"data":{data}}}]}}"#
    );
    let r = c
        .post(format!("{b}/v1/streams/t-1"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.expect("text");
    let id = serde_json::from_str::<Value>(&created).expect("json")["events"][0]["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for url in [
        format!("{b}/v1/streams/t-1"),
        format!("{b}/v1/events"),
        format!("{b}/v1/events/{id}"),
    ] {
        let text = c
            .get(&url)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(text.contains(&format!(r#""data":{data}"#)), "{url}: {text}");
        assert!(text.contains(r#""metadata":{ "k" :1}"#), "{url}: {text}");
    }
    assert!(created.contains(&format!(r#""data":{data}"#)), "{created}");
}

async fn sse_positions(url: String, want: usize) -> Vec<u64> {
    let r = Client::new().get(url).send().await.expect("subscribe");
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut seen = Vec::new();
    while seen.len() < want {
        let chunk = stream
            .next()
            .await
            .expect("the stream stays open")
            .expect("bytes");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let frame: String = buf.drain(..i + 2).collect();
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(str::trim);
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(str::trim);
            if let (Some(id), Some(data)) = (id, data) {
                let e: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(
                    e["position"].as_u64().map(|p| p.to_string()).as_deref(),
                    Some(id)
                );
                seen.push(e["position"].as_u64().expect("position"));
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_appenders_and_a_live_subscriber_see_every_event_once_in_order() {
    let s = start(Config::default()).await;
    check_appenders_and_subscriber(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_appenders_and_a_live_subscriber_on_postgres() {
    if let Some(s) = start_on_postgres(Config::default()).await {
        check_appenders_and_subscriber(&s.base).await;
    }
}

async fn check_appenders_and_subscriber(base: &str) {
    const CLIENTS: u64 = 32;
    const EACH: u64 = 20;
    let b = base.to_owned();
    let c = Client::new();
    assert_eq!(
        post(
            &c,
            &format!("{b}/v1/streams/seed"),
            &family(json!("any"), json!([{"event_type": "Seeded", "data": {}}]))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let total = (1 + CLIENTS * EACH) as usize;
    let subscriber = tokio::spawn(sse_positions(
        format!("{b}/v1/subscribe?after_position=0"),
        total,
    ));
    let filtered = tokio::spawn(sse_positions(
        format!("{b}/v1/subscribe?event_type=Tick&after_position=0"),
        (CLIENTS * EACH) as usize,
    ));
    let mut acked = HashSet::new();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (c, b) = (c.clone(), b.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..EACH {
                    let body = family(
                        json!(i),
                        json!([{"event_type": "Tick", "data": {"w": w, "i": i}}]),
                    );
                    let (st, r) = post(&c, &format!("{b}/v1/streams/writer-{w}"), &body).await;
                    assert_eq!(st, StatusCode::CREATED, "{r}");
                    mine.push(r["first_position"].as_u64().expect("position"));
                }
                mine
            })
        })
        .collect();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), subscriber)
        .await
        .expect("subscriber finishes")
        .expect("task");
    assert_eq!(
        seen,
        (1..=total as u64).collect::<Vec<_>>(),
        "every position once, in order"
    );
    let ticks = tokio::time::timeout(Duration::from_secs(30), filtered)
        .await
        .expect("filtered finishes")
        .expect("task");
    assert_eq!(
        ticks.iter().copied().collect::<HashSet<_>>(),
        acked,
        "exactly the acknowledged appends"
    );
    assert!(ticks.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_stream_and_say_where_the_next_starts() {
    let s = start(Config::default()).await;
    let c = Client::new();
    let b = &s.base;
    for k in 0..5 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"event_type": "E", "data": {"k": k, "i": i}}))
            .collect();
        assert_eq!(
            post(
                &c,
                &format!("{b}/v1/streams/big"),
                &family(json!("any"), json!(events))
            )
            .await
            .0,
            StatusCode::CREATED
        );
    }
    let (_, r) = get(&c, &format!("{b}/v1/events?limit=2500")).await;
    let events = r["events"].as_array().expect("events");
    assert_eq!(events.len(), 2500);
    assert_eq!(events[2499]["position"].as_u64(), Some(2500));
    assert_eq!(r["next_after_position"].as_u64(), Some(2500));
    let (_, r) = get(
        &c,
        &format!("{b}/v1/events?after_position=2500&limit=10000"),
    )
    .await;
    assert_eq!(r["events"].as_array().map(Vec::len), Some(2500));
    assert!(r["next_after_position"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions_and_returns() {
    let mut s = start(Config::default()).await;
    let r = Client::new()
        .get(format!("{}/v1/subscribe", s.base))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = s.stop.take().expect("stop").send(());
    let served = tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .expect("the server stops")
        .expect("task");
    assert!(served.is_ok());
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_roles_and_aggregate_types_guard_every_route() {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "auditor", "token": "read-read-read-read", "role": "read"},
            {"name": "billing", "token": "write-write-write-write", "role": "write", "aggregate_types": ["Invoice"]},
            {"name": "ops", "token": "admin-admin-admin-admin", "role": "admin"}
        ]}"#,
    )
    .expect("tokens");
    let s = start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await;
    let c = Client::new();
    let b = &s.base;
    let send =
        |method: reqwest::Method, url: String, token: Option<&'static str>, body: Option<Value>| {
            let c = c.clone();
            async move {
                let mut r = c.request(method, url);
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                if let Some(body) = body {
                    r = r.json(&body);
                }
                let r = r.send().await.expect("request");
                let status = r.status();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
    use reqwest::Method;
    let invoice = json!({"aggregate_type": "Invoice", "events": [{"event_type": "InvoiceIssued", "data": {}}]});
    let fam = json!({"aggregate_type": "Family", "events": [{"event_type": "FamilyEnrolled", "data": {}}]});
    assert_eq!(
        send(Method::GET, format!("{b}/health/live"), None, None)
            .await
            .0,
        StatusCode::OK,
        "health is open"
    );
    let (st, p) = send(Method::GET, format!("{b}/v1/head"), None, None).await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/head"),
            Some("wrong-wrong-wrong-wrong"),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            Method::POST,
            format!("{b}/v1/streams/inv-1"),
            Some("read-read-read-read"),
            Some(invoice.clone())
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (st, r) = send(
        Method::POST,
        format!("{b}/v1/streams/inv-1"),
        Some("write-write-write-write"),
        Some(invoice),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(
        r["events"][0]["user_id"], "billing",
        "the actor defaults to the token's name"
    );
    let (st, p) = send(
        Method::POST,
        format!("{b}/v1/streams/fam-1"),
        Some("write-write-write-write"),
        Some(fam.clone()),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        send(
            Method::POST,
            format!("{b}/v1/streams/fam-1"),
            Some("admin-admin-admin-admin"),
            Some(fam)
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (_, r) = send(
        Method::GET,
        format!("{b}/v1/events"),
        Some("write-write-write-write"),
        None,
    )
    .await;
    let types: Vec<_> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["aggregate_type"].clone())
        .collect();
    assert_eq!(
        types,
        [json!("Invoice")],
        "a limited token reads only its aggregate types"
    );
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/streams/fam-1"),
            Some("write-write-write-write"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/events?aggregate_type=Family"),
            Some("write-write-write-write"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/verify"),
            Some("write-write-write-write"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/verify"),
            Some("read-read-read-read"),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (_, r) = send(
        Method::GET,
        format!("{b}/v1/head"),
        Some("read-read-read-read"),
        None,
    )
    .await;
    assert_eq!(r["position"], 2);
    for (method, url) in [
        (Method::GET, format!("{b}/v1/checkpoints")),
        (Method::GET, format!("{b}/v1/checkpoints/payroll")),
        (Method::PUT, format!("{b}/v1/checkpoints/payroll")),
    ] {
        let body = (method == Method::PUT).then(|| json!({"position": 1}));
        let (st, _) = send(method, url.clone(), Some("write-write-write-write"), body).await;
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "a type-limited token may not use checkpoints: {url}"
        );
    }
    let (st, _) = send(
        Method::POST,
        format!("{b}/v1/transactions"),
        Some("write-write-write-write"),
        Some(json!({"appends": [], "checkpoint": {"name": "payroll", "position": 1}})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = send(
        Method::PUT,
        format!("{b}/v1/checkpoints/payroll"),
        Some("admin-admin-admin-admin"),
        Some(json!({"position": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let empty = annal_server::Tokens::parse(
        r#"{"tokens": [{"name": "none", "token": "none-none-none-none", "role": "read", "aggregate_types": []}]}"#,
    );
    assert!(
        empty.is_err(),
        "an empty aggregate_types list is refused, not read as 'all'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_api_with_http2_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls = annal_server::server_config(&annal_server::TlsFiles {
        cert: cert.clone(),
        key,
    })
    .expect("tls config");
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(annal_server::serve_tls(
        listener,
        store,
        Config::default(),
        tls,
        async move {
            let _ = rx.await;
        },
    ));
    let url = format!("https://127.0.0.1:{port}");
    let curl = |args: Vec<String>| {
        let cert = cert.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-s", "--cacert"])
                .arg(&cert)
                .args(args)
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let body =
        r#"{"aggregate_type":"Family","events":[{"event_type":"FamilyEnrolled","data":{"x": 1}}]}"#;
    let created = curl(vec![
        "-w".into(),
        "\n%{http_code} %{http_version}".into(),
        "--http2".into(),
        "-H".into(),
        "content-type: application/json".into(),
        "-d".into(),
        body.into(),
        format!("{url}/v1/streams/f-1"),
    ])
    .await
    .expect("task");
    assert!(
        created.ends_with("201 2"),
        "an append over HTTP/2 with TLS: {created}"
    );
    assert!(created.contains(r#""data":{"x": 1}"#));
    let plain = curl(vec![
        "-w".into(),
        "%{http_code}".into(),
        "-o".into(),
        "/dev/null".into(),
        format!("http://127.0.0.1:{port}/health/live"),
    ])
    .await
    .expect("task");
    assert_ne!(plain, "200", "plain HTTP is not served on the TLS port");
    let _ = tx.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("stops")
        .expect("task");
    assert!(stopped.is_ok());
}

#[tokio::test]
async fn group_lease_routes_need_an_unlimited_token_and_answer_problems_for_conflicts_and_bad_input()
 {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "billing", "token": "write-write-write-write", "role": "write", "aggregate_types": ["Invoice"]},
            {"name": "worker", "token": "write2-write2-write2-write2", "role": "write"}
        ]}"#,
    )
    .expect("tokens");
    let s = start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await;
    let c = Client::new();
    let b = &s.base;
    let call = |method: reqwest::Method, url: String, token: &'static str, body: Option<Value>| {
        let c = c.clone();
        async move {
            let mut r = c.request(method, url).bearer_auth(token);
            if let Some(body) = body {
                r = r.json(&body);
            }
            let r = r.send().await.expect("request");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    let limited = "write-write-write-write";
    let worker = "write2-write2-write2-write2";
    let acquire = format!("{b}/v1/groups/billing/leases/3/acquire");
    let (st, _) = call(
        Method::POST,
        acquire.clone(),
        limited,
        Some(json!({"owner": "a", "ttl_ms": 5000})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a token limited to aggregate types cannot"
    );
    let (st, lease) = call(
        Method::POST,
        acquire.clone(),
        worker,
        Some(json!({"owner": "a", "ttl_ms": 5000})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{lease}");
    assert_eq!(
        (lease["owner"].as_str(), lease["partition"].as_u64()),
        (Some("a"), Some(3))
    );
    let token = lease["token"].as_u64().expect("token");
    let (st, p) = call(
        Method::POST,
        acquire.clone(),
        worker,
        Some(json!({"owner": "b", "ttl_ms": 5000})),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::CONFLICT, Some("lease_conflict"))
    );
    assert_eq!(
        (p["group"].as_str(), p["partition"].as_u64()),
        (Some("billing"), Some(3))
    );
    let (st, p) = call(
        Method::PUT,
        format!("{b}/v1/checkpoints/billing.p3of4"),
        worker,
        Some(json!({"position": 0, "lease": {"group": "billing", "partition": 3, "owner": "a", "token": token + 1}})),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::CONFLICT, Some("lease_conflict")),
        "a stale fence"
    );
    let (st, _) = call(
        Method::PUT,
        format!("{b}/v1/checkpoints/billing.p3of4"),
        worker,
        Some(json!({"position": 0, "lease": {"group": "billing", "partition": 3, "owner": "a", "token": token}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the holder's fence");
    let (st, r) = call(
        Method::POST,
        format!("{b}/v1/groups/billing/leases/3/renew"),
        worker,
        Some(json!({"owner": "a", "token": token, "ttl_ms": 5000})),
    )
    .await;
    assert_eq!((st, r["token"].as_u64()), (StatusCode::OK, Some(token)));
    let (st, r) = call(
        Method::GET,
        format!("{b}/v1/groups/billing/leases"),
        worker,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["leases"].as_array().map(Vec::len), Some(1));
    let (st, r) = call(
        Method::PUT,
        format!("{b}/v1/groups/billing/members/a"),
        worker,
        Some(json!({"ttl_ms": 5000})),
    )
    .await;
    assert_eq!((st, r["members"].clone()), (StatusCode::OK, json!(["a"])));
    let release = format!("{b}/v1/groups/billing/leases/3/release");
    let (st, _) = call(
        Method::POST,
        release.clone(),
        worker,
        Some(json!({"owner": "a", "token": token})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, p) = call(
        Method::POST,
        release,
        worker,
        Some(json!({"owner": "a", "token": token})),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::CONFLICT, Some("lease_conflict"))
    );
    // Bad input: 400 problems naming the field, never 500.
    for (method, url, body, field) in [
        (
            Method::POST,
            acquire.clone(),
            json!({"owner": "a", "ttl_ms": 0}),
            "ttl_ms",
        ),
        (
            Method::POST,
            acquire.clone(),
            json!({"owner": "", "ttl_ms": 10}),
            "owner",
        ),
        (Method::POST, acquire.clone(), json!({"owner": "a"}), "body"),
        (
            Method::POST,
            acquire,
            json!({"owner": "a", "ttl_ms": 10_000_000}),
            "ttl_ms",
        ),
        (
            Method::POST,
            format!("{b}/v1/groups/billing/leases/minus-one/acquire"),
            json!({"owner": "a", "ttl_ms": 10}),
            "path",
        ),
        (
            Method::POST,
            format!("{b}/v1/groups/billing/leases/3/renew"),
            json!({"owner": "a", "token": 1}),
            "ttl_ms",
        ),
    ] {
        let (st, p) = call(method, url.clone(), worker, Some(body)).await;
        assert_eq!(
            (st, p["type"].as_str(), p["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                Some(field)
            ),
            "{url}: {p}"
        );
    }
}
