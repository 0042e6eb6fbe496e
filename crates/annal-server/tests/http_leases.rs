//! Group leases and members end to end over real HTTP: only a token without aggregate
//! type limits may use them; a held lease is a `lease_conflict` for others; the lease's
//! token fences checkpoint writes; renew, list, join and release; bad input is a 400
//! naming the field, never a 500.

mod common;

use annal_server::Config;
use common::{Server, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// An admin token limited to the `Invoice` aggregate type.
const LIMITED: &str = "write-write-write-write";
/// An admin token without limits (leases and checkpoints need admin).
const WORKER: &str = "write2-write2-write2-write2";

async fn guarded() -> Server {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "billing", "token": "write-write-write-write", "role": "admin", "aggregate_types": ["Invoice"]},
            {"name": "worker", "token": "write2-write2-write2-write2", "role": "admin"}
        ]}"#,
    )
    .expect("tokens");
    start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await
}

/// Sends a request with a bearer token and an optional JSON body: the status and the
/// JSON answer (`null` when there is none).
async fn call(
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = Client::new().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("request");
    let status = r.status();
    (status, r.json::<Value>().await.unwrap_or(Value::Null))
}

fn acquire_url(b: &str) -> String {
    format!("{b}/v1/groups/billing/leases/3/acquire")
}

/// Owner `a` takes partition 3 of group `billing` for 5 s: the lease's token.
async fn acquired(b: &str) -> u64 {
    let (st, lease) = call(
        Method::POST,
        acquire_url(b),
        WORKER,
        Some(json!({"owner": "a", "ttl_ms": 5000})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{lease}");
    assert_eq!(
        (lease["owner"].as_str(), lease["partition"].as_u64()),
        (Some("a"), Some(3))
    );
    lease["token"].as_u64().expect("token")
}

#[tokio::test]
async fn a_token_limited_to_aggregate_types_cannot_take_a_lease() {
    let s = guarded().await;
    let (st, _) = call(
        Method::POST,
        acquire_url(&s.base),
        LIMITED,
        Some(json!({"owner": "a", "ttl_ms": 5000})),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a token limited to aggregate types cannot"
    );
}

#[tokio::test]
async fn a_free_lease_is_acquired_with_its_owner_partition_and_token() {
    let s = guarded().await;
    acquired(&s.base).await;
}

#[tokio::test]
async fn acquiring_a_held_lease_is_a_lease_conflict_naming_group_and_partition() {
    let s = guarded().await;
    acquired(&s.base).await;
    let (st, p) = call(
        Method::POST,
        acquire_url(&s.base),
        WORKER,
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
}

#[tokio::test]
async fn a_checkpoint_fenced_by_a_stale_lease_token_is_a_lease_conflict() {
    let s = guarded().await;
    let token = acquired(&s.base).await;
    let (st, p) = call(
        Method::PUT,
        format!("{}/v1/checkpoints/billing.p3of4", s.base),
        WORKER,
        Some(json!({"position": 0, "lease": {"group": "billing", "partition": 3, "owner": "a", "token": token + 1}})),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::CONFLICT, Some("lease_conflict")),
        "a stale fence"
    );
}

#[tokio::test]
async fn a_checkpoint_fenced_by_the_holders_lease_token_moves() {
    let s = guarded().await;
    let token = acquired(&s.base).await;
    let (st, _) = call(
        Method::PUT,
        format!("{}/v1/checkpoints/billing.p3of4", s.base),
        WORKER,
        Some(json!({"position": 0, "lease": {"group": "billing", "partition": 3, "owner": "a", "token": token}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the holder's fence");
}

#[tokio::test]
async fn renewing_a_held_lease_keeps_its_token() {
    let s = guarded().await;
    let token = acquired(&s.base).await;
    let (st, r) = call(
        Method::POST,
        format!("{}/v1/groups/billing/leases/3/renew", s.base),
        WORKER,
        Some(json!({"owner": "a", "token": token, "ttl_ms": 5000})),
    )
    .await;
    assert_eq!((st, r["token"].as_u64()), (StatusCode::OK, Some(token)));
}

#[tokio::test]
async fn a_group_lists_its_held_leases() {
    let s = guarded().await;
    acquired(&s.base).await;
    let (st, r) = call(
        Method::GET,
        format!("{}/v1/groups/billing/leases", s.base),
        WORKER,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["leases"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn joining_a_group_answers_its_members() {
    let s = guarded().await;
    let (st, r) = call(
        Method::PUT,
        format!("{}/v1/groups/billing/members/a", s.base),
        WORKER,
        Some(json!({"ttl_ms": 5000})),
    )
    .await;
    assert_eq!((st, r["members"].clone()), (StatusCode::OK, json!(["a"])));
}

#[tokio::test]
async fn releasing_a_held_lease_answers_no_content_and_a_second_release_is_a_lease_conflict() {
    let s = guarded().await;
    let token = acquired(&s.base).await;
    let release = format!("{}/v1/groups/billing/leases/3/release", s.base);
    let (st, _) = call(
        Method::POST,
        release.clone(),
        WORKER,
        Some(json!({"owner": "a", "token": token})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, p) = call(
        Method::POST,
        release,
        WORKER,
        Some(json!({"owner": "a", "token": token})),
    )
    .await;
    assert_eq!(
        (st, p["type"].as_str()),
        (StatusCode::CONFLICT, Some("lease_conflict"))
    );
}

#[tokio::test]
async fn bad_lease_input_is_a_bad_request_naming_the_field() {
    let s = guarded().await;
    let b = &s.base;
    let acquire = acquire_url(b);
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
        let (st, p) = call(method, url.clone(), WORKER, Some(body)).await;
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
