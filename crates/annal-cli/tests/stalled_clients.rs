//! Clients that stop reading cost the server a bounded amount of memory, per client and
//! in all (docs/security.md):
//! - 30 sockets that ask for a 100 MB history (SSE subscriptions and streamed pages)
//!   and never read grow `annal serve`'s resident memory by less than 400 MiB. The bound
//!   is loose, since resident memory moves with the allocator and the machine's load;
//!   a page of 1,000 events per client, as before the byte budget, would hold gigabytes.
//! - 30 gRPC readers that stop hold, under `--read-ahead-mib 1`, the cap and about one
//!   event each, as `annal_read_ahead_bytes` counts it.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

/// Events of the history and the bytes of each one's data.
const EVENTS: usize = 1000;
const EVENT_BYTES: usize = 100_000;
/// Stalled clients.
const CLIENTS: usize = 30;
/// The most the server's RSS may grow for all of them together (a loose guard).
const BOUND_MIB: u64 = 400;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Appends the history: [`EVENTS`] events of [`EVENT_BYTES`].
async fn history(http: &reqwest::Client, base: &str) {
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
}

/// [`CLIENTS`] sockets that ask for the whole history and never read.
fn stall(port: u16) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        let path = if i % 2 == 0 {
            "/v1/subscribe?after_position=0"
        } else {
            "/v1/events?limit=10000"
        };
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        sockets.push(tcp);
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_leave_the_servers_memory_within_its_bound() {
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", served.port);
    let http = reqwest::Client::new();
    history(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(served.pid());
    let sockets = stall(served.port);
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(served.pid()));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("{CLIENTS} stalled clients grew the server by {grown_mib} MiB");
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

/// The read-ahead held for the stalled clients, as `/metrics` reports it.
async fn read_ahead(http: &reqwest::Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("annal_read_ahead_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("annal_read_ahead_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_servers_read_ahead_cap_each_stalled_reader_holds_about_one_event() {
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(dir.path(), &["--read-ahead-mib", "1"]);
    let base = format!("http://127.0.0.1:{}", served.port);
    let http = reqwest::Client::new();
    history(&http, &base).await;
    // gRPC `$all` reads, each on its own connection, that take one event and stop: each
    // call's task holds the page it is sending.
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let client = common::kurrent::connect(served.port);
        let mut read = client
            .read_all(&kurrentdb::ReadAllOptions::default())
            .await
            .expect("read $all");
        read.next().await.expect("first").expect("an event");
        readers.push((client, read));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = read_ahead(&http, &base).await;
    eprintln!("{CLIENTS} stalled gRPC readers hold {held} bytes of read-ahead");
    // The cap, a page (up to 512 KiB, about 5 events) for the few readers that started
    // before it was reached, and one event for each of the rest. Without the cap each
    // reader holds a whole page: 30 × 5 × 100 KB, about 15 MB.
    let event = EVENT_BYTES + 1024;
    let bound = (1024 * 1024 + 4 * 6 * event + CLIENTS * event) as f64;
    assert!(
        held > 0.0 && held <= bound,
        "{CLIENTS} stalled readers hold {held} bytes of read-ahead (bound {bound})"
    );
    drop(readers);
}
