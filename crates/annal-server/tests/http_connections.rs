//! Connections are bounded: silent and slow clients are dropped after the header-read
//! timeout, stalled request bodies fail after the body-read timeout, and past the
//! connection cap a reserve still answers `/health/*`.

mod common;

use annal_server::{Config, HEALTH_RESERVE};
use common::start;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// A plain HTTP/1.1 GET on a fresh connection: the status line's code.
async fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.ok()?;
    let answer = closed_within(&mut tcp, Duration::from_secs(5)).await?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1)?.parse().ok()
}

fn quick_timeouts() -> Config {
    Config {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let server = start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    let answer = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert_eq!(answer, Some(Vec::new()), "closed without a word");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let server = start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    tcp.write_all(b"GET /v1/head HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .is_some(),
        "a slowloris head must not hold the connection"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_timeout() {
    let server = start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("closed once idle");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_stalled_request_body_fails_after_the_body_read_timeout_and_writes_nothing() {
    let server = start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /v1/streams/family_1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"aggregate_type\":",
    )
    .await
    .expect("write");
    let answer = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    assert!((400..500).contains(&status), "a 4xx, got: {text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert_eq!(
        get_status(&addr(&server.base), "/v1/streams/family_1").await,
        Some(404),
        "nothing was written"
    );
}

#[tokio::test]
async fn past_the_connection_cap_health_still_answers_and_the_rest_get_503() {
    let config = Config {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(20),
        ..Config::default()
    };
    let server = start(config).await;
    let addr = addr(&server.base);
    // Two clients that hold their connections with a head they never finish.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        tcp.write_all(b"GET /v1/head HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_status(&addr, "/health/live").await, Some(200));
    assert_eq!(get_status(&addr, "/health/ready").await, Some(200));
    assert_eq!(get_status(&addr, "/v1/head").await, Some(503));
    // Fill the reserve too: the next connection is closed at once.
    for _ in 0..HEALTH_RESERVE {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        tcp.write_all(b"GET /health/live HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(&addr).await.expect("connect");
    assert_eq!(
        closed_within(&mut refused, Duration::from_secs(2)).await,
        Some(Vec::new()),
        "closed at once, past the reserve"
    );
    // Slots come back when their connections end.
    drop(holders);
    let mut freed = false;
    for _ in 0..50 {
        if get_status(&addr, "/v1/head").await == Some(200) {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slots were not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_subscription_is_disconnected_after_the_send_timeout() {
    let server = start(Config {
        send_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    // About 8 MB of history: more than the socket buffers hold.
    let http = reqwest::Client::new();
    let data = serde_json::Value::String("x".repeat(100_000));
    for i in 0..8 {
        let events: Vec<_> = (0..10)
            .map(|_| serde_json::json!({"event_type": "Scanned", "data": data}))
            .collect();
        let r = http
            .post(format!("{}/v1/streams/doc-{i}", server.base))
            .json(&serde_json::json!({"aggregate_type": "Doc", "events": events}))
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), 201);
    }
    let mut tcp = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    tcp.write_all(b"GET /v1/subscribe?after_position=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Never read for a while: the server's writes stall, then it gives up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rest = closed_within(&mut tcp, Duration::from_secs(10)).await;
    let rest = rest.expect("the server closed the connection");
    assert!(
        rest.len() < 8_000_000,
        "the stream was cut off, not finished: {} bytes",
        rest.len()
    );
    // A caught-up subscriber with nothing to receive is not cut off: the clock runs
    // only while the server waits to send.
    let live = http
        .get(format!("{}/v1/subscribe?after_position=80", server.base))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(live.status(), 200);
    let mut body = live.bytes_stream();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        use futures_util::StreamExt as _;
        match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
            Err(_) | Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("an idle subscription ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_connection_cap_counts_the_connections_of_every_listener() {
    let dir = tempfile::tempdir().expect("dir");
    let store = std::sync::Arc::new(
        annal_sqlite::SqliteStore::open(dir.path().join("s.db")).expect("open"),
    );
    let (one, two) = (
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let (first, second) = (
        one.local_addr().expect("addr").to_string(),
        two.local_addr().expect("addr").to_string(),
    );
    let config = Config {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(20),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(annal_server::serve_on(
        vec![one, two],
        store,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    // Both listeners serve.
    assert_eq!(get_status(&first, "/v1/head").await, Some(200));
    assert_eq!(get_status(&second, "/v1/head").await, Some(200));
    // One connection held on the first takes the only slot: the second answers 503.
    let mut holder = TcpStream::connect(&first).await.expect("connect");
    holder
        .write_all(b"GET /v1/head HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_status(&second, "/v1/head").await, Some(503));
    assert_eq!(get_status(&second, "/health/live").await, Some(200));
    drop(holder);
    let _ = stop.send(());
    done.await.expect("join").expect("served");
}
