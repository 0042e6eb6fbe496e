//! Bearer tokens end to end over real HTTP: roles (read, write, admin) and aggregate
//! type limits guard every route; health stays open; the actor of an append defaults to
//! the token's name.

mod common;

use annal_server::Config;
use common::{Server, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const READ: &str = "read-read-read-read";
/// A write token limited to the `Invoice` aggregate type.
const LIMITED: &str = "write-write-write-write";
const ADMIN: &str = "admin-admin-admin-admin";

/// A server with three tokens: `auditor` (read), `billing` (write, `Invoice` only) and
/// `ops` (admin).
async fn guarded() -> Server {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "auditor", "token": "read-read-read-read", "role": "read"},
            {"name": "billing", "token": "write-write-write-write", "role": "write", "aggregate_types": ["Invoice"]},
            {"name": "ops", "token": "admin-admin-admin-admin", "role": "admin"}
        ]}"#,
    )
    .expect("tokens");
    start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await
}

/// Sends a request with an optional bearer token and JSON body: the status and the JSON
/// answer (`null` when there is none).
async fn send(
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = Client::new().request(method, url);
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

fn invoice() -> Value {
    json!({"aggregate_type": "Invoice", "events": [{"event_type": "InvoiceIssued", "data": {}}]})
}

fn fam() -> Value {
    json!({"aggregate_type": "Family", "events": [{"event_type": "FamilyEnrolled", "data": {}}]})
}

/// Appends `inv-1` (by `billing`, position 1) and `fam-1` (by `ops`, position 2).
async fn seed(b: &str) {
    let (st, r) = send(
        Method::POST,
        format!("{b}/v1/streams/inv-1"),
        Some(LIMITED),
        Some(invoice()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let (st, r) = send(
        Method::POST,
        format!("{b}/v1/streams/fam-1"),
        Some(ADMIN),
        Some(fam()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_without_a_token() {
    let s = guarded().await;
    assert_eq!(
        send(Method::GET, format!("{}/health/live", s.base), None, None)
            .await
            .0,
        StatusCode::OK,
        "health is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_is_an_unauthorized_problem() {
    let s = guarded().await;
    let (st, p) = send(Method::GET, format!("{}/v1/head", s.base), None, None).await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_unauthorized() {
    let s = guarded().await;
    assert_eq!(
        send(
            Method::GET,
            format!("{}/v1/head", s.base),
            Some("wrong-wrong-wrong-wrong"),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_cannot_append() {
    let s = guarded().await;
    assert_eq!(
        send(
            Method::POST,
            format!("{}/v1/streams/inv-1", s.base),
            Some(READ),
            Some(invoice())
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_of_an_append_defaults_to_the_token_name() {
    let s = guarded().await;
    let (st, r) = send(
        Method::POST,
        format!("{}/v1/streams/inv-1", s.base),
        Some(LIMITED),
        Some(invoice()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(
        r["events"][0]["user_id"], "billing",
        "the actor defaults to the token's name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_aggregate_types_cannot_append_another_type() {
    let s = guarded().await;
    let (st, p) = send(
        Method::POST,
        format!("{}/v1/streams/fam-1", s.base),
        Some(LIMITED),
        Some(fam()),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_appends_any_aggregate_type() {
    let s = guarded().await;
    assert_eq!(
        send(
            Method::POST,
            format!("{}/v1/streams/fam-1", s.base),
            Some(ADMIN),
            Some(fam())
        )
        .await
        .0,
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_token_reads_only_its_aggregate_types_from_the_log() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    let (_, r) = send(Method::GET, format!("{b}/v1/events"), Some(LIMITED), None).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_token_cannot_read_a_stream_of_another_type() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/streams/fam-1"),
            Some(LIMITED),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_token_cannot_filter_the_log_by_another_type() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    assert_eq!(
        send(
            Method::GET,
            format!("{b}/v1/events?aggregate_type=Family"),
            Some(LIMITED),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_needs_a_token_that_sees_every_aggregate_type() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    assert_eq!(
        send(Method::GET, format!("{b}/v1/verify"), Some(LIMITED), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Method::GET, format!("{b}/v1/verify"), Some(READ), None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_the_head() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    let (_, r) = send(Method::GET, format!("{b}/v1/head"), Some(READ), None).await;
    assert_eq!(r["position"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_aggregate_types_may_not_use_checkpoints() {
    let s = guarded().await;
    let b = &s.base;
    for (method, url) in [
        (Method::GET, format!("{b}/v1/checkpoints")),
        (Method::GET, format!("{b}/v1/checkpoints/payroll")),
        (Method::PUT, format!("{b}/v1/checkpoints/payroll")),
    ] {
        let body = (method == Method::PUT).then(|| json!({"position": 1}));
        let (st, _) = send(method, url.clone(), Some(LIMITED), body).await;
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "a type-limited token may not use checkpoints: {url}"
        );
    }
    let (st, _) = send(
        Method::POST,
        format!("{b}/v1/transactions"),
        Some(LIMITED),
        Some(json!({"appends": [], "checkpoint": {"name": "payroll", "position": 1}})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_moves_a_checkpoint() {
    let s = guarded().await;
    seed(&s.base).await;
    let (st, _) = send(
        Method::PUT,
        format!("{}/v1/checkpoints/payroll", s.base),
        Some(ADMIN),
        Some(json!({"position": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[test]
fn an_empty_aggregate_types_list_is_refused_not_read_as_all() {
    let empty = annal_server::Tokens::parse(
        r#"{"tokens": [{"name": "none", "token": "none-none-none-none", "role": "read", "aggregate_types": []}]}"#,
    );
    assert!(
        empty.is_err(),
        "an empty aggregate_types list is refused, not read as 'all'"
    );
}
