//! Least privilege over HTTP: every route, tried with a read, a write and an admin
//! token. A call below its least role is `403 forbidden`; from it up, it is never 401
//! or 403 (it may still be 404 or 409: only the rights are under test). The
//! expectations are written out here, not derived from annal's table.

mod common;

use annal_server::Config;
use common::start;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Least {
    Read,
    Write,
    Admin,
}

const ROLES: [(&str, &str, Least); 3] = [
    ("reader", "reader-reader-reader", Least::Read),
    ("writer", "writer-writer-writer", Least::Write),
    ("admin", "admin-admin-admin-admin", Least::Admin),
];

fn append(event_type: &str) -> Value {
    json!({"aggregate_type": "Order", "events": [{"event_type": event_type, "data": {}}]})
}

/// Every route and body worth telling apart, with the least role it needs. `{r}`
/// stands for the caller's name, so each works on aggregates of its own.
fn cases() -> Vec<(Method, &'static str, Option<Value>, Least)> {
    use Least::{Admin, Read, Write};
    let uuid = "01932c07-8e5c-7a3e-9b6f-3f1d2c4b5a69";
    vec![
        (Method::GET, "/v1/streams/seed-1", None, Read),
        (
            Method::GET,
            "/v1/streams/seed-1/snapshots/latest?tag=t",
            None,
            Read,
        ),
        (Method::GET, "/v1/events", None, Read),
        (
            Method::GET,
            Box::leak(format!("/v1/events/{uuid}").into_boxed_str()),
            None,
            Read,
        ),
        (Method::GET, "/v1/head", None, Read),
        (Method::GET, "/v1/checkpoints", None, Read),
        (Method::GET, "/v1/checkpoints/p", None, Read),
        (Method::GET, "/v1/groups/g/leases", None, Read),
        (Method::GET, "/v1/verify", None, Read),
        (Method::GET, "/v1/digest", None, Read),
        (Method::GET, "/v1/whoami", None, Read),
        (Method::GET, "/v1/overview", None, Read),
        (Method::GET, "/v1/cluster", None, Read),
        (Method::GET, "/v1/streams/seed-1/state", None, Read),
        (Method::GET, "/console/", None, Read),
        (Method::GET, "/console/app.js", None, Read),
        (Method::GET, "/metrics", None, Read),
        (Method::GET, "/v1/subscribe?after_position=0", None, Read),
        (
            Method::POST,
            "/v1/streams/order-{r}",
            Some(append("Placed")),
            Write,
        ),
        (
            Method::POST,
            "/v1/transactions",
            Some(
                json!({"appends": [{"aggregate_id": "tx-{r}", "aggregate_type": "Order",
                "events": [{"event_type": "Placed", "data": {}}]}]}),
            ),
            Write,
        ),
        (
            Method::PUT,
            "/v1/streams/order-{r}/snapshots/1",
            Some(json!({"tag": "t", "state": {}})),
            Write,
        ),
        (Method::GET, "/v1/verify?deep=true", None, Admin),
        (Method::GET, "/v1/subjects", None, Admin),
        (Method::GET, "/v1/subjects/family-{r}", None, Admin),
        (Method::GET, "/v1/subjects/family-{r}/events", None, Admin),
        (
            Method::POST,
            "/v1/subjects/family-{r}/forget",
            Some(json!({"reason": "erasure request"})),
            Admin,
        ),
        (
            Method::POST,
            "/v1/streams/sys-{r}",
            Some(append("$custom")),
            Admin,
        ),
        (
            Method::POST,
            "/v1/streams/$persistentSubscriptionConfig-{r}",
            Some(append("Ordinary")),
            Admin,
        ),
        (
            Method::POST,
            "/v1/streams/$$order-{r}",
            Some(json!({"aggregate_type": "$metadata",
                "events": [{"event_type": "$metadata", "data": {"$maxCount": 5}}]})),
            Admin,
        ),
        (
            Method::POST,
            "/v1/transactions",
            Some(json!({"appends": [], "checkpoint": {"name": "p-{r}", "position": 0}})),
            Admin,
        ),
        (
            Method::PUT,
            "/v1/checkpoints/p-{r}",
            Some(json!({"position": 0})),
            Admin,
        ),
        (
            Method::POST,
            "/v1/groups/g/leases/0/acquire",
            Some(json!({"owner": "{r}", "ttl_ms": 1000})),
            Admin,
        ),
        (
            Method::POST,
            "/v1/groups/g/leases/0/renew",
            Some(json!({"owner": "{r}", "token": 1, "ttl_ms": 1000})),
            Admin,
        ),
        (
            Method::POST,
            "/v1/groups/g/leases/0/release",
            Some(json!({"owner": "{r}", "token": 1})),
            Admin,
        ),
        (
            Method::PUT,
            "/v1/groups/g/members/{r}",
            Some(json!({"ttl_ms": 1000})),
            Admin,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_allowed_from_its_least_role_up_and_forbidden_below_it() {
    let tokens: Vec<Value> = ROLES
        .iter()
        .map(|(name, secret, least)| {
            let role = format!("{least:?}").to_lowercase();
            json!({"name": name, "token": secret, "role": role})
        })
        .collect();
    let tokens =
        annal_server::Tokens::parse(&json!({ "tokens": tokens }).to_string()).expect("tokens");
    let s = start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await;
    let http = Client::new();
    let seeded = http
        .post(format!("{}/v1/streams/seed-1", s.base))
        .bearer_auth(ROLES[2].1)
        .json(&append("Placed"))
        .send()
        .await
        .expect("seed");
    assert_eq!(seeded.status(), StatusCode::CREATED);
    for (name, secret, role) in ROLES {
        for (method, path, body, least) in cases() {
            let path = path.replace("{r}", name);
            let mut r = http
                .request(method.clone(), format!("{}{path}", s.base))
                .bearer_auth(secret);
            if let Some(body) = &body {
                r = r.body(body.to_string().replace("{r}", name));
                r = r.header("content-type", "application/json");
            }
            // Only the status: the body of a subscription never ends.
            let status = r.send().await.expect("request").status();
            let what = format!("{name} ({role:?}): {method} {path} (needs {least:?})");
            if role < least {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{what}: {status}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_head_only_to_a_token_that_sees_everything() {
    let tokens = annal_server::Tokens::parse(
        r#"{"tokens": [
            {"name": "auditor", "token": "read-read-read-read", "role": "read"},
            {"name": "billing", "token": "limited-limited-limited", "role": "read", "aggregate_types": ["Invoice"]}
        ]}"#,
    )
    .expect("tokens");
    let s = start(Config {
        tokens: Some(tokens),
        ..Config::default()
    })
    .await;
    let http = Client::new();
    let ready = |token: Option<&'static str>| {
        let mut r = http.get(format!("{}/health/ready", s.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.expect("ready");
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.expect("json")
        }
    };
    assert_eq!(ready(None).await, json!({"status": "ready"}));
    assert_eq!(
        ready(Some("not-a-token-at-all")).await,
        json!({"status": "ready"})
    );
    assert_eq!(
        ready(Some("limited-limited-limited")).await,
        json!({"status": "ready"})
    );
    assert_eq!(
        ready(Some("read-read-read-read")).await,
        json!({"status": "ready", "head": 0})
    );
    let metrics = |token: &'static str| {
        http.get(format!("{}/metrics", s.base))
            .bearer_auth(token)
            .send()
    };
    let limited = metrics("limited-limited-limited").await.expect("metrics");
    assert_eq!(limited.status(), StatusCode::FORBIDDEN);
    let full = metrics("read-read-read-read").await.expect("metrics");
    assert_eq!(full.status(), StatusCode::OK);
    let anonymous = http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
