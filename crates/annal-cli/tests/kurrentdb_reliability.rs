//! The gRPC endpoint's reliability, driven by the official Rust KurrentDB client and by
//! raw HTTP/2: unknown methods, malformed protobuf bodies, calls counted in the
//! Prometheus metrics, and clients that vanish mid catch-up.

mod common;

use common::kurrent::{
    any, connect, event, next_events, read_stream, start, stream, until_caught_up,
};
use kurrentdb::{EventData, ReadStreamOptions, SubscribeToAllOptions};
use serde_json::json;
use std::time::Duration;

/// A gRPC call over a raw HTTP/2 (h2c) connection of its own with a raw message: the
/// HTTP status and the `grpc-status` / `grpc-message` the server ends with (from the
/// headers of a trailers-only answer, else from the trailers).
async fn raw_grpc(port: u16, path: &str, message: &[u8]) -> (u16, Option<String>, String) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = h2.send_request(request, false).expect("send");
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(message);
    send.send_data(bytes::Bytes::from(body), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("an answer within 5 s")
        .expect("response");
    let status = response.status().as_u16();
    let pick = |h: &http::HeaderMap| {
        (
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            h.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (mut grpc_status, mut grpc_message) = pick(response.headers());
    if grpc_status.is_none() {
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
            .await
            .expect("trailers within 5 s")
            .expect("trailers");
        (grpc_status, grpc_message) = trailers.as_ref().map(pick).unwrap_or_default();
    }
    driver.abort();
    (status, grpc_status, grpc_message)
}

#[tokio::test]
async fn an_unknown_grpc_method_or_service_is_unimplemented() {
    let a = start();
    for path in [
        "/event_store.client.streams.Streams/NoSuchMethod",
        "/event_store.client.nothing.Nothing/Read",
    ] {
        let (status, grpc_status, message) = raw_grpc(a.served.port, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(grpc_status.as_deref(), Some("12"), "{path}: {message}");
    }
    // Counted under one `other` label, whatever the paths were.
    let m = metrics(a.served.port).await;
    let other = metric_value(
        &m,
        "annal_grpc_requests_total",
        &["method=\"other\"", "code=\"12\""],
    );
    assert_eq!(other, Some(2.0), "{m}");
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn grpc_calls_are_counted_and_timed_in_the_prometheus_metrics() {
    let a = start();
    let s = stream("order");
    for n in 0..3 {
        a.client
            .append_to_stream(s.as_str(), &any(), event("A", n))
            .await
            .expect("append");
    }
    let missing = read_stream(&a.client, &stream("none"), &ReadStreamOptions::default()).await;
    assert!(missing.is_err());
    let m = metrics(a.served.port).await;
    let appends = metric_value(
        &m,
        "annal_grpc_requests_total",
        &["method=\"Streams/Append\"", "code=\"streamed\""],
    );
    assert_eq!(appends, Some(3.0), "{m}");
    assert!(
        metric_value(
            &m,
            "annal_grpc_requests_total",
            &["method=\"Streams/Read\""]
        )
        .is_some(),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("annal_grpc_request_seconds") && l.contains("Streams/Append")),
        "{m}"
    );
}

#[tokio::test]
async fn a_malformed_protobuf_body_is_invalid_argument_and_the_server_keeps_serving() {
    let a = start();
    // Field 1 declared length-delimited with a length running past the end; then bytes
    // that are no valid tag at all.
    let garbage: [&[u8]; 3] = [&[0x0a, 0x7f, 0x01], &[0xff, 0xff, 0xff, 0xff], &[0x0a]];
    for method in ["Read", "Append", "Delete", "Tombstone", "BatchAppend"] {
        for body in garbage {
            let path = format!("/event_store.client.streams.Streams/{method}");
            let (status, grpc_status, message) = raw_grpc(a.served.port, &path, body).await;
            assert_eq!(status, 200, "{method} {body:?}");
            let code = grpc_status.unwrap_or_else(|| panic!("{method} {body:?}: no grpc-status"));
            // INVALID_ARGUMENT (docs/kurrentdb.md): the client sent bad input.
            assert_eq!(code, "3", "{method} {body:?}: {message}");
        }
    }
    let s = stream("order");
    let r = a
        .client
        .append_to_stream(s.as_str(), &any(), event("A", 0))
        .await
        .expect("the server still answers");
    assert_eq!(r.next_expected_version, 0);
}

/// The resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

#[tokio::test]
async fn clients_that_vanish_mid_catch_up_free_their_server_tasks() {
    let a = start();
    // 3,000 events of 20 KiB: a catch-up that stalls on its first page holds ~10 MiB
    // (a 500-event page plus a full channel) for as long as its task lives.
    let big = "x".repeat(20 * 1024);
    for n in 0..30 {
        let events: Vec<EventData> = (0..100)
            .map(|k| EventData::json("Big", &json!({"n": n * 100 + k, "pad": big})).expect("json"))
            .collect();
        a.client
            .append_to_stream(stream("big").as_str(), &any(), events)
            .await
            .expect("append");
    }
    let pid = a.served.pid();
    let abandon = |rounds: usize| async move {
        for _ in 0..rounds {
            // A connection of its own, dropped whole: the client vanishes.
            let client = connect(a.served.port);
            let mut sub = client
                .subscribe_to_all(&SubscribeToAllOptions::default())
                .await;
            next_events(&mut sub, 1).await;
            drop(sub);
            drop(client);
        }
    };
    abandon(5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(pid);
    abandon(40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mib(pid);
    assert!(
        after < before + 150,
        "40 abandoned catch-ups would hold ~400 MiB if their tasks lived: RSS {before} -> {after} MiB"
    );
    // And the server still serves a full catch-up.
    let mut sub = a
        .client
        .subscribe_to_all(&SubscribeToAllOptions::default())
        .await;
    let caught_up = until_caught_up(&mut sub).await;
    assert_eq!(
        caught_up.iter().filter(|e| e.event_type == "Big").count(),
        3_000
    );
}
