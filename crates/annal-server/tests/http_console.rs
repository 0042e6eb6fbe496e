//! The audit console's side of the server: its files are open and locked to this
//! origin, `GET /v1/whoami` tells a token what it is, `GET /v1/overview` keeps the last
//! verify and needs an unlimited token, and `GET /v1/streams/{id}/state` folds with the
//! state function registered for the aggregate's type (or says, as a 404, it has none).

mod common;

use annal_core::{Aggregate, AppendRequest, ExpectedVersion, NewEvent, Repository};
use annal_server::{Config, StateViews};
use annal_sqlite::SqliteStore;
use common::start;
use reqwest::{Client, StatusCode, redirect};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

const READER: &str = "reader-reader-reader-1";
const LIMITED: &str = "limited-limited-limited";

fn tokens() -> annal_server::Tokens {
    annal_server::Tokens::parse(
        &json!({"tokens": [
            {"name": "reader", "token": READER, "role": "read"},
            {"name": "invoices", "token": LIMITED, "role": "read", "aggregate_types": ["Invoice"]},
        ]})
        .to_string(),
    )
    .expect("tokens")
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_and_only_from_this_origin() {
    let s = start(Config {
        tokens: Some(tokens()),
        ..Config::default()
    })
    .await;
    let http = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    let root = http.get(format!("{}/", s.base)).send().await.expect("/");
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/console/");
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let res = http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .expect(path);
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers();
        assert!(
            h["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}"
        );
        let policy = h["content-security-policy"].to_str().expect("a policy");
        assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    }
    let (status, problem) = get(&s.base, "/console/..%2FCargo.toml", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = get(&s.base, "/console/secret.js", None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = get(&s.base, "/v1/whoami", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the data still needs a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_a_token_its_role_and_types() {
    let s = start(Config {
        tokens: Some(tokens()),
        ..Config::default()
    })
    .await;
    let (status, me) = get(&s.base, "/v1/whoami", Some(LIMITED)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"name": "invoices", "role": "read", "aggregate_types": ["Invoice"], "auth": true})
    );
    let open = start(Config::default()).await;
    let (_, me) = get(&open.base, "/v1/whoami", None).await;
    assert_eq!(
        me,
        json!({"name": null, "role": "admin", "aggregate_types": null, "auth": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_keeps_the_last_verify_and_needs_an_unlimited_token() {
    let s = start(Config {
        tokens: Some(tokens()),
        ..Config::default()
    })
    .await;
    let (status, first) = get(&s.base, "/v1/overview", Some(READER)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["head"], 0);
    assert_eq!(first["last_verify"], Value::Null);
    let (status, _) = get(&s.base, "/v1/verify", Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = get(&s.base, "/v1/overview", Some(READER)).await;
    assert_eq!(after["last_verify"]["report"]["ok"], true, "{after}");
    assert_eq!(after["last_verify"]["deep"], false);
    let (status, problem) = get(&s.base, "/v1/overview", Some(LIMITED)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
}

/// A counter: the smallest aggregate with a state to show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum Counted {
    Incremented { by: u64 },
}

impl annal_core::DomainEvent for Counted {}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    const SNAPSHOT_TAG: &'static str = "counter-v1";
    type Event = Counted;
    type Command = ();
    type Error = std::convert::Infallible;
    fn apply(&mut self, event: &Counted) {
        let Counted::Incremented { by } = event;
        self.count += by;
    }
    fn handle(&self, (): ()) -> Result<Vec<Counted>, Self::Error> {
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_folded_by_the_registered_function_and_not_found_without_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn annal_core::Store> =
        Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let counters = Repository::<Counter>::new(store.clone());
    let s = common::serve(
        store.clone(),
        Config {
            states: StateViews::default().with(Arc::new(counters)),
            ..Config::default()
        },
    )
    .await;
    for (kind, id, event) in [
        ("Counter", "c-1", json!({"by": 2})),
        ("Counter", "c-1", json!({"by": 3})),
        ("Counter", "c-1", json!({"by": 5})),
        ("Invoice", "i-1", json!({"amount": 1})),
    ] {
        let t = if kind == "Counter" {
            "Incremented"
        } else {
            "InvoiceIssued"
        };
        store
            .append(
                AppendRequest::new(kind, id, ExpectedVersion::Any)
                    .event(NewEvent::new(t, &event).expect("event")),
            )
            .await
            .expect("append");
    }
    let (status, at2) = get(&s.base, "/v1/streams/c-1/state?version=2", None).await;
    assert_eq!(status, StatusCode::OK, "{at2}");
    assert_eq!(
        at2,
        json!({"aggregate_id": "c-1", "aggregate_type": "Counter", "version": 2, "state": {"count": 5}})
    );
    let (_, now) = get(&s.base, "/v1/streams/c-1/state", None).await;
    assert_eq!(now["state"]["count"], 10);
    let (_, before) = get(&s.base, "/v1/streams/c-1/state?version=0", None).await;
    assert_eq!(before["state"]["count"], 0);
    for (path, status, kind) in [
        ("/v1/streams/c-1/state?version=4", 400, "invalid_request"),
        ("/v1/streams/c-1/state?version=x", 400, "invalid_request"),
        ("/v1/streams/nobody/state", 404, "not_found"),
        ("/v1/streams/i-1/state", 404, "not_found"),
    ] {
        let (got, problem) = get(&s.base, path, None).await;
        assert_eq!(
            (got.as_u16(), problem["type"].as_str()),
            (status, Some(kind)),
            "{path}: {problem}"
        );
    }
}
