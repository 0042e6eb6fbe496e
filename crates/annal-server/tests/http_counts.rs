//! The filters and routes the audit console's browse and audit views lean on: the
//! aggregate id prefix and principal filters of `GET /v1/events`, counts by event type
//! (`GET /v1/events/counts`) honouring a token's types, typed 400s on bad filters, the
//! persistent subscriptions (`GET /v1/persistent-subscriptions`) for an unlimited
//! token only, and the head history the overview carries. On SQLite and PostgreSQL.

mod common;

use annal_server::Config;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const OPS: &str = "ops-ops-ops-ops-ops-ops-1";
const BILLING: &str = "billing-billing-billing-1";
const LIMITED: &str = "limited-limited-limited-1";

fn config() -> Config {
    let tokens = annal_server::Tokens::parse(
        &json!({"tokens": [
            {"name": "ops", "token": OPS, "role": "admin", "may_act_for": ["*"]},
            {"name": "billing", "token": BILLING, "role": "write", "may_act_for": ["*"]},
            {"name": "invoices", "token": LIMITED, "role": "read", "aggregate_types": ["Invoice"]},
        ]})
        .to_string(),
    )
    .expect("tokens");
    Config {
        tokens: Some(tokens),
        ..Config::default()
    }
}

async fn call(base: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let res = Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.expect("JSON"))
}

async fn append(base: &str, token: &str, kind: &str, id: &str, user: &str, types: &[&str]) {
    let events: Vec<Value> = types
        .iter()
        .map(|t| json!({"event_type": t, "data": {}}))
        .collect();
    let res = Client::new()
        .post(format!("{base}/v1/streams/{id}"))
        .bearer_auth(token)
        .json(&json!({"aggregate_type": kind, "user_id": user, "events": events}))
        .send()
        .await
        .expect("append");
    assert_eq!(res.status(), StatusCode::CREATED);
}

fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["aggregate_id"].as_str().expect("id").to_owned())
        .collect()
}

async fn filters_counts_and_refusals(base: &str) {
    append(
        base,
        OPS,
        "Family",
        "family_123",
        "sarah",
        &["FamilyEnrolled", "ChildAdded"],
    )
    .await;
    append(
        base,
        BILLING,
        "Family",
        "family_456",
        "billing-job",
        &["PaymentDue", "PaymentOverdue"],
    )
    .await;
    append(
        base,
        BILLING,
        "Invoice",
        "family_1-invoice",
        "billing-job",
        &["InvoiceIssued"],
    )
    .await;
    append(
        base,
        OPS,
        "Family",
        "family_1234",
        "sarah",
        &["FamilyEnrolled"],
    )
    .await;

    let (status, page) = call(base, "/v1/events?aggregate_id_prefix=family_123", OPS).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), ["family_123", "family_123", "family_1234"]);
    let (_, page) = call(
        base,
        "/v1/events?aggregate_id_prefix=family_1&aggregate_type=Invoice",
        OPS,
    )
    .await;
    assert_eq!(ids(&page), ["family_1-invoice"]);
    let (_, page) = call(base, "/v1/events?principal=billing", OPS).await;
    assert_eq!(ids(&page), ["family_456", "family_456", "family_1-invoice"]);
    let (_, page) = call(base, "/v1/events?principal=ops,nobody&user_id=sarah", OPS).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3));

    let (status, counts) = call(base, "/v1/events/counts?principal=billing", OPS).await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(
        counts,
        json!({"up_to_position": 6, "total": 3,
               "counts": {"InvoiceIssued": 1, "PaymentDue": 1, "PaymentOverdue": 1}})
    );
    let (_, counts) = call(
        base,
        "/v1/events/counts?user_id=sarah&up_to_position=2",
        OPS,
    )
    .await;
    assert_eq!(
        counts,
        json!({"up_to_position": 2, "total": 2, "counts": {"ChildAdded": 1, "FamilyEnrolled": 1}})
    );
    // A token limited to Invoice counts only Invoice events, and may not ask for more.
    let (_, counts) = call(base, "/v1/events/counts", LIMITED).await;
    assert_eq!(counts["counts"], json!({"InvoiceIssued": 1}), "{counts}");
    let (status, problem) = call(base, "/v1/events/counts?aggregate_type=Family", LIMITED).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    let long = "x".repeat(256);
    for (path, field) in [
        (
            "/v1/events?aggregate_id_prefix=a%01b",
            "aggregate_id_prefix",
        ),
        (
            &format!("/v1/events?aggregate_id_prefix={long}") as &str,
            "aggregate_id_prefix",
        ),
        ("/v1/events?principal=a%0Ab", "principal"),
        (
            "/v1/events/counts?aggregate_id_prefix=%7F",
            "aggregate_id_prefix",
        ),
        ("/v1/events/counts?since=yesterday", "since"),
    ] {
        let (status, problem) = call(base, path, OPS).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert_eq!(problem["type"], "invalid_request", "{path}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(field)),
            "{path}: {problem}"
        );
    }
    let (status, problem) = call(base, "/v1/events/counts?limit=10", OPS).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, problem) = call(base, "/v1/events/counts?up_to_position=-1", OPS).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    // No group defined: an empty list, for an unlimited token only.
    let (status, groups) = call(base, "/v1/persistent-subscriptions", OPS).await;
    assert_eq!((status, groups), (StatusCode::OK, json!({"groups": []})));
    let (status, _) = call(base, "/v1/persistent-subscriptions", LIMITED).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_principal_and_counts_on_sqlite() {
    let s = common::start(config()).await;
    filters_counts_and_refusals(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_principal_and_counts_on_postgres() {
    if let Some(s) = common::start_on_postgres(config()).await {
        filters_counts_and_refusals(&s.base).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_carries_the_heads_the_server_sampled() {
    let s = common::start(config()).await;
    append(&s.base, OPS, "Family", "f-1", "sarah", &["FamilyEnrolled"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let (status, overview) = call(&s.base, "/v1/overview", OPS).await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let history = overview["head_history"].as_array().expect("head_history");
    assert!(
        history.len() >= 2,
        "a sample at start and one 2 s later: {overview}"
    );
    let last = history.last().expect("a sample");
    assert_eq!(last["position"], 1, "{overview}");
    assert!(last["at"].as_str().is_some_and(|t| t.ends_with('Z')));
}
