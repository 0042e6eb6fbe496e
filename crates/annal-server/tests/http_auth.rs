//! Bearer tokens end to end over real HTTP: roles (read, write, admin) and aggregate
//! type limits guard every route; health stays open; the actor of an append defaults to
//! the token's name, may be another user only where the token allows, and the token's
//! name is recorded as the principal whatever the actor.

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
/// `ops` (admin, may act for any user).
async fn guarded() -> Server {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "auditor", "token": "read-read-read-read", "role": "read"},
            {"name": "billing", "token": "write-write-write-write", "role": "write", "aggregate_types": ["Invoice"]},
            {"name": "ops", "token": "admin-admin-admin-admin", "role": "admin", "may_act_for": ["*"]}
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
    assert_eq!(r["events"][0]["principal"], "billing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_claiming_another_user_is_refused_and_nothing_is_written() {
    let s = guarded().await;
    let mut claims = invoice();
    claims["user_id"] = json!("admin");
    let mut event_claims = invoice();
    event_claims["events"][0]["user_id"] = json!("admin");
    let transaction = json!({"appends": [
        {"aggregate_id": "inv-2", "aggregate_type": "Invoice", "user_id": "admin",
         "events": [{"event_type": "InvoiceIssued", "data": {}}]}
    ]});
    for (path, body, field) in [
        ("/v1/streams/inv-1", claims, "user_id"),
        ("/v1/streams/inv-1", event_claims, "events[0].user_id"),
        ("/v1/transactions", transaction, "appends[0].user_id"),
    ] {
        let (st, p) = send(
            Method::POST,
            format!("{}{path}", s.base),
            Some(LIMITED),
            Some(body),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{p}");
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field) && detail.contains("may not act for user 'admin'"),
            "{p}"
        );
    }
    let (_, head) = send(
        Method::GET,
        format!("{}/v1/head", s.base),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(head["position"], 0, "nothing was written: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_act_for_others_records_the_user_and_its_own_name() {
    let s = guarded().await;
    let mut body = fam();
    body["user_id"] = json!("sarah");
    let (st, r) = send(
        Method::POST,
        format!("{}/v1/streams/fam-1", s.base),
        Some(ADMIN),
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let (_, page) = send(
        Method::GET,
        format!("{}/v1/streams/fam-1", s.base),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(page["events"][0]["user_id"], "sarah");
    assert_eq!(page["events"][0]["principal"], "ops");
    let (_, report) = send(
        Method::GET,
        format!("{}/v1/verify", s.base),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(report["ok"], true, "the principal is chained: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_in_a_request_body_is_refused() {
    let s = guarded().await;
    let mut body = fam();
    body["principal"] = json!("someone-else");
    let (st, p) = send(
        Method::POST,
        format!("{}/v1/streams/fam-1", s.base),
        Some(ADMIN),
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{p}");
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
async fn a_limited_token_meets_another_types_aggregate_as_if_it_did_not_exist() {
    let s = guarded().await;
    let b = &s.base;
    seed(b).await;
    let hidden = send(
        Method::GET,
        format!("{b}/v1/streams/fam-1"),
        Some(LIMITED),
        None,
    )
    .await;
    let missing = send(
        Method::GET,
        format!("{b}/v1/streams/fam-9"),
        Some(LIMITED),
        None,
    )
    .await;
    assert_eq!(hidden.0, StatusCode::NOT_FOUND, "{}", hidden.1);
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.1["detail"].as_str().map(|d| d.replace("fam-1", "X")),
        missing.1["detail"]
            .as_str()
            .map(|d| d.replace("fam-9", "X")),
        "the same answer as for a missing aggregate"
    );
    let (_, page) = send(
        Method::GET,
        format!("{b}/v1/streams/fam-1"),
        Some(ADMIN),
        None,
    )
    .await;
    let id = page["events"][0]["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let by_id = send(
        Method::GET,
        format!("{b}/v1/events/{id}"),
        Some(LIMITED),
        None,
    )
    .await;
    assert_eq!(by_id.0, StatusCode::NOT_FOUND, "{}", by_id.1);

    // Conflicts with it do not name its type, nor which aggregate holds an event id.
    let (st, p) = send(
        Method::POST,
        format!("{b}/v1/streams/fam-1"),
        Some(LIMITED),
        Some(invoice()),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "aggregate_type_mismatch");
    assert!(!p.to_string().contains("Family"), "{p}");
    let mut reused = invoice();
    reused["events"][0]["event_id"] = json!(id);
    let (st, p) = send(
        Method::POST,
        format!("{b}/v1/streams/inv-7"),
        Some(LIMITED),
        Some(reused),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "duplicate_event_id");
    assert!(
        !p.to_string().contains("fam-1") && !p.to_string().contains("Family"),
        "{p}"
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
