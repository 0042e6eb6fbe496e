//! Clients that stop reading cost the server a bounded amount of memory: 30 sockets
//! that ask for a 30 MB history (SSE subscriptions and streamed pages) and never read
//! leave `annal serve`'s resident memory within a bound (docs/security.md). Measured on
//! a debug build: about 64 MiB of growth with pages cut at 512 KiB, 210 MiB with pages
//! of up to 1,000 events (the bound is 120 MiB).

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

/// Events of the history and the bytes of each one's data.
const EVENTS: usize = 300;
const EVENT_BYTES: usize = 100_000;
/// Stalled clients.
const CLIENTS: usize = 30;
/// The most the server's RSS may grow for all of them together.
const BOUND_MIB: u64 = 120;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_leave_the_servers_memory_within_its_bound() {
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", served.port);
    let http = reqwest::Client::new();
    let data = serde_json::Value::String("x".repeat(EVENT_BYTES));
    for batch in 0..EVENTS / 10 {
        let events: Vec<_> = (0..10)
            .map(|_| serde_json::json!({"event_type": "Scanned", "data": data}))
            .collect();
        let r = http
            .post(format!("{base}/v1/streams/doc-{batch}"))
            .json(&serde_json::json!({"aggregate_type": "Doc", "events": events}))
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(served.pid());

    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        let path = if i % 2 == 0 {
            "/v1/subscribe?after_position=0"
        } else {
            "/v1/events?limit=10000"
        };
        let mut tcp = TcpStream::connect(("127.0.0.1", served.port)).expect("connect");
        // A small receive buffer, never read: the server's writes stall at once.
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        sockets.push(tcp);
    }
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(served.pid()));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("{CLIENTS} stalled clients: RSS {before} KiB before, peak {peak} KiB");
    assert!(
        grown_mib < BOUND_MIB,
        "{CLIENTS} stalled clients grew the server by {grown_mib} MiB (bound {BOUND_MIB} MiB; \
         the history is {} MB)",
        EVENTS * EVENT_BYTES / 1_000_000
    );
    // The server still answers everyone else.
    let head = http
        .get(format!("{base}/v1/head"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    drop(sockets);
}
