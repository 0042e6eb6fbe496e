//! Streams deleted the KurrentDB way (soft delete, tombstone) are honoured by the HTTP
//! routes: the deletion is recorded in the log, and reads and appends hide or refuse
//! what KurrentDB would.

use annal_core::streams::{self, Deletion};
use annal_core::{ExpectedVersion, Store};
use annal_server::Config;
use annal_sqlite::SqliteStore;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

async fn start() -> (String, Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let served: Arc<dyn Store> = store.clone();
    tokio::spawn(annal_server::serve(
        listener,
        served,
        Config::default(),
        std::future::pending(),
    ));
    (base, store, dir)
}

async fn append(c: &Client, base: &str, id: &str, expected: Value) -> (StatusCode, Value) {
    let res = c
        .post(format!("{base}/v1/streams/{id}"))
        .json(
            &json!({"aggregate_type": "order", "expected_version": expected,
                      "events": [{"event_type": "Placed", "data": {}}]}),
        )
        .send()
        .await
        .expect("append");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

async fn read(c: &Client, base: &str, id: &str) -> (StatusCode, Value) {
    let res = c
        .get(format!("{base}/v1/streams/{id}"))
        .send()
        .await
        .expect("read");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

#[tokio::test]
async fn a_soft_deleted_aggregate_reads_as_not_found_until_written_again() {
    let (base, store, _dir) = start().await;
    let c = Client::new();
    for v in ["no_stream", "1"] {
        assert_eq!(
            append(&c, &base, "order-1", json!(v)).await.0,
            StatusCode::CREATED
        );
    }
    let deletion = streams::delete(
        store.as_ref(),
        "order-1",
        ExpectedVersion::Exact(2),
        Deletion::Soft,
        &annal_core::Actor::authenticated("ops"),
    )
    .await
    .expect("delete");
    assert_eq!(deletion.aggregate_id, "$$order-1");
    assert_eq!(deletion.user_id, "ops");
    assert_eq!(deletion.principal.as_deref(), Some("ops"));
    assert_eq!(read(&c, &base, "order-1").await.0, StatusCode::NOT_FOUND);
    let (status, _) = append(&c, &base, "order-1", json!("exists")).await;
    assert_eq!(status, StatusCode::GONE, "exists on a deleted stream fails");
    let (status, body) = append(&c, &base, "order-1", json!("no_stream")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["aggregate_version"], 3, "versions continue");
    let (status, body) = read(&c, &base, "order-1").await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<u64> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["aggregate_version"].as_u64())
        .collect();
    assert_eq!(versions, [3], "only the new event shows");
    // The log keeps everything: the old events and the deletion.
    let all = store
        .read_all(0, 100, &annal_core::Filter::default())
        .await
        .expect("read all");
    assert_eq!(
        all.len(),
        5,
        "2 events, the deletion, the new event, its $tb update"
    );
}

#[tokio::test]
async fn a_tombstoned_aggregate_refuses_reads_and_appends_with_410() {
    let (base, store, _dir) = start().await;
    let c = Client::new();
    assert_eq!(
        append(&c, &base, "order-2", json!("any")).await.0,
        StatusCode::CREATED
    );
    streams::delete(
        store.as_ref(),
        "order-2",
        ExpectedVersion::Any,
        Deletion::Tombstone,
        &annal_core::Actor::default(),
    )
    .await
    .expect("tombstone");
    let (status, body) = read(&c, &base, "order-2").await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["type"], "stream_deleted");
    for expected in [json!("any"), json!("no_stream"), json!(2)] {
        let (status, body) = append(&c, &base, "order-2", expected).await;
        assert_eq!(status, StatusCode::GONE, "{body}");
    }
    let res = c
        .post(format!("{base}/v1/transactions"))
        .json(
            &json!({"appends": [{"aggregate_type": "order", "aggregate_id": "order-2",
                       "events": [{"event_type": "Placed", "data": {}}]}]}),
        )
        .send()
        .await
        .expect("transact");
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(
        store.head(&[]).await.expect("head"),
        2,
        "nothing written after the tombstone"
    );
}

#[tokio::test]
async fn an_http_append_without_an_aggregate_type_is_refused_not_derived() {
    let (base, store, _dir) = start().await;
    let res = Client::new()
        .post(format!("{base}/v1/streams/order-3"))
        .json(&json!({"aggregate_type": "", "events": [{"event_type": "Placed", "data": {}}]}))
        .send()
        .await
        .expect("append");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["field"], "aggregate_type");
    assert_eq!(store.head(&[]).await.expect("head"), 0);
}
