//! HTTP and gRPC over one `annal serve`: an event appended by the official Rust
//! KurrentDB client reads back over the HTTP API with its fields mapped, and the other
//! way round.

mod common;

use common::kurrent::{event, expecting, read_stream, revisions, start, stream, types};
use kurrentdb::{EventData, ReadStreamOptions, StreamState};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn an_event_appended_over_grpc_reads_back_over_http() {
    let a = start();
    let s = stream("order");
    let correlation = Uuid::new_v4().to_string();
    let causation = Uuid::new_v4().to_string();
    let id = Uuid::new_v4();
    a.client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::NoStream),
            vec![
                event("OrderPlaced", 1),
                EventData::json("OrderPaid", &json!({"amount": 10}))
                    .expect("json")
                    .id(id)
                    .metadata_as_json(
                        &json!({"$correlationId": correlation, "$causationId": causation}),
                    )
                    .expect("json"),
            ],
        )
        .await
        .expect("append");
    let url = format!("http://127.0.0.1:{}/v1/streams/{s}", a.served.port);
    let resp = reqwest::get(&url).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["event_type"], "OrderPlaced");
    assert_eq!(events[0]["aggregate_type"], "order");
    assert_eq!(events[0]["aggregate_id"], s.as_str());
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[1]["event_id"], id.to_string());
    assert_eq!(events[1]["aggregate_version"], 2);
    assert_eq!(events[1]["data"], json!({"amount": 10}));
    assert_eq!(events[1]["correlation_id"], correlation.as_str());
    assert_eq!(events[1]["causation_id"], causation.as_str());
}

#[tokio::test]
async fn an_event_appended_over_http_reads_back_over_grpc() {
    let a = start();
    let s = stream("order");
    let url = format!("http://127.0.0.1:{}/v1/streams/{s}", a.served.port);
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({
            "aggregate_type": "order",
            "expected_version": "no_stream",
            "events": [
                {"event_type": "OrderPlaced", "data": {"total": 3}},
                {"event_type": "OrderShipped", "data": {"carrier": "x"}},
            ],
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.expect("json");
    let http_ids: Vec<String> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect();
    let got = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(
        got.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        http_ids
    );
    assert_eq!(types(&got), ["OrderPlaced", "OrderShipped"]);
    assert_eq!(revisions(&got), [0, 1]);
    assert_eq!(
        got[0].as_json::<serde_json::Value>().expect("json"),
        json!({"total": 3})
    );
    assert!(got[0].is_json);
    // And gRPC continues the stream HTTP started.
    let r = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(1)),
            event("C", 2),
        )
        .await
        .expect("append");
    assert_eq!(r.next_expected_version, 2);
}
