//! HTTP and gRPC over one `annal serve`: an event appended by the official Rust
//! KurrentDB client reads back over the HTTP API with its fields mapped (its event_id
//! derived from the stream and the client's id, which its metadata names), and the other
//! way round.

mod common;

use common::kurrent::{event, expecting, read_stream, revisions, start, stream, types};
use kurrentdb::{EventData, ReadStreamOptions, StreamState};
use serde_json::json;
use uuid::Uuid;

/// The event_id annal stores for an event a gRPC client appends to `stream` with id `id`
/// (docs/kurrentdb.md): UUIDv5 of the stream name's bytes and then the id's.
fn stored_id(stream: &str, id: Uuid) -> Uuid {
    let namespace = Uuid::parse_str("bac8c9b5-d741-492f-8481-f8c804a03bb2").expect("uuid");
    let mut name = stream.as_bytes().to_vec();
    name.extend_from_slice(id.as_bytes());
    Uuid::new_v5(&namespace, &name)
}

/// The events of `stream` over HTTP.
async fn http_events(port: u16, stream: &str) -> Vec<serde_json::Value> {
    let url = format!("http://127.0.0.1:{port}/v1/streams/{stream}");
    let resp = reqwest::get(&url).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    body["events"].as_array().expect("events").clone()
}

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
    assert_eq!(events[1]["event_id"], stored_id(&s, id).to_string());
    assert_eq!(
        events[1]["metadata"],
        json!({"$eventId": id, "$correlationId": correlation, "$causationId": causation}),
        "the client's id comes first in the metadata"
    );
    assert_eq!(events[1]["aggregate_version"], 2);
    assert_eq!(events[1]["data"], json!({"amount": 10}));
    assert_eq!(events[1]["correlation_id"], correlation.as_str());
    assert_eq!(events[1]["causation_id"], causation.as_str());
}

#[tokio::test]
async fn the_same_ids_in_two_streams_are_two_events_over_http_each_naming_the_clients_id() {
    let a = start();
    let (first, second) = (stream("order"), stream("order"));
    let id = Uuid::new_v4();
    for s in [&first, &second] {
        a.client
            .append_to_stream(
                s.as_str(),
                &expecting(StreamState::NoStream),
                event("OrderPlaced", 1).id(id),
            )
            .await
            .expect("append");
    }
    let mut stored = Vec::new();
    for s in [&first, &second] {
        let events = http_events(a.served.port, s).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event_id"], stored_id(s, id).to_string());
        assert_eq!(events[0]["metadata"], json!({"$eventId": id}));
        assert_eq!(events[0]["data"], json!({"n": 1}));
        stored.push(events[0]["event_id"].clone());
    }
    assert_ne!(stored[0], stored[1], "two events in annal's log");
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
