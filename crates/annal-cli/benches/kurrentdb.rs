//! The workloads of `annal-client`'s `http_workloads` bench, over the KurrentDB gRPC
//! protocol through the official Rust client (`kurrentdb`), against a release
//! `annal serve` child on a fresh SQLite store per workload; three runs each, every run
//! and the medians printed in events/s:
//!
//! - W1: one client, one event per `Append`, expected revision checked, 1,000 streams;
//! - W2-16: 16 clients (a connection each), one event per `Append`, each on its own ten
//!   streams, revisions checked;
//! - B1 / B16: the same as W1 / W2-16 through `BatchAppend` (one event per request);
//! - W3: one client, 100 events per `Append` (300,000 events);
//! - W4-read: every event of W3's store through one `$all` read;
//! - W4-sub: a `$all` catch-up subscription from the start until caught up;
//! - P1: a persistent subscription (consumer group) to one stream of 100,000 events from
//!   its start, one consumer with 500 slots acknowledging every 50 events, until all are
//!   delivered and acknowledged.
//!
//! First it prints `fdatasync: N/s in DIR`, the disk's fdatasync rate probed once for
//! 2 s where the store files go; the durable writes (W1, W2-16, B1, B16, W3) are also
//! printed as a multiple of it (`0.93× fdatasync`), every run and every median: W1 and
//! B1 (one event per request) near 1× at best, W2-16 and B16 above it (group commit),
//! W3 far above (100-event appends). A ratio that drops is a regression whatever the
//! disk. Reads and P1 are in events/s only.
//!
//! Events are shaped like the HTTP bench's PaymentReceived (JSON data, `$correlationId` /
//! `$causationId` metadata). Build the server first: `cargo build --release -p annal`;
//! `ANNAL_BENCH_SERVER` names another binary, `ANNAL_BENCH_DIR` where stores go,
//! `ANNAL_BENCH_RUNS` the number of runs; sizes for short runs: `ANNAL_BENCH_W1_APPENDS`
//! (2,000), `ANNAL_BENCH_W2_EVENTS` (32,000 over all clients), `ANNAL_BENCH_W3_APPENDS`
//! (3,000 appends of 100 events). `cargo bench -p annal-cli --bench kurrentdb` (all) or name
//! some: `-- W1 B16 W4 P1`.

use annal_core::testkit::workloads::{
    bench_dir, env_u64, figure, median, print_fdatasync_rate, rate,
};
use kurrentdb::{
    AppendToStreamOptions, BatchAppendOptions, Client, ClientSettings, EventData,
    PersistentSubscriptionOptions, ReadAllOptions, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscribeToPersistentSubscriptionOptions, SubscriptionEvent,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

const RUNS: u64 = 3;
const W1_APPENDS: u64 = 2_000;
const W2_EVENTS: u64 = 32_000;
const W3_APPENDS: u64 = 3_000;
const P1_EVENTS: u64 = 100_000;

/// An `annal serve` child on one store file, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    async fn start(binary: &Path, store: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(binary)
            .arg("serve")
            .arg("--store")
            .arg(format!("sqlite:{}", store.display()))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start annal serve");
        let server = Server { child, port };
        let t = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(t.elapsed() < Duration::from_secs(20), "the server starts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// A client with a connection of its own.
    fn client(&self) -> Client {
        let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{}?tls=false", self.port)
            .parse()
            .expect("connection string");
        Client::new(settings).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `i`-th PaymentReceived.
fn payment(i: u64) -> EventData {
    let data = serde_json::json!({
        "family_id": format!("family_{}", i % 1000),
        "amount": 400 + i % 100,
        "date": "2024-10-20",
        "method": "credit_card",
    });
    EventData::json("PaymentReceived", &data)
        .expect("json")
        .metadata_as_json(&serde_json::json!({
            "$correlationId": format!("payment_{i}"),
            "$causationId": Uuid::now_v7().to_string(),
        }))
        .expect("json")
}

/// The expected state of a stream with `written` events.
fn at(written: u64) -> StreamState {
    match written {
        0 => StreamState::NoStream,
        n => StreamState::StreamRevision(n - 1),
    }
}

/// W1: one client, single-event appends over 1,000 streams, revisions checked.
async fn w1(s: &Server) -> (u64, f64) {
    let client = s.client();
    let appends = env_u64("ANNAL_BENCH_W1_APPENDS", W1_APPENDS);
    let mut written = vec![0u64; 1000];
    let t = Instant::now();
    for i in 0..appends {
        let a = (i % 1000) as usize;
        client
            .append_to_stream(
                format!("family_{a}"),
                &AppendToStreamOptions::default().stream_state(at(written[a])),
                payment(i),
            )
            .await
            .expect("append");
        written[a] += 1;
    }
    (appends, t.elapsed().as_secs_f64())
}

/// W2: `clients` clients with a connection each, single-event appends, each on its own
/// ten streams; with `batch`, through BatchAppend.
async fn w2(s: &Server, clients: u64, batch: bool) -> (u64, f64) {
    let each = (env_u64("ANNAL_BENCH_W2_EVENTS", W2_EVENTS) / clients).max(1);
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let client = s.client();
            tokio::spawn(async move {
                let batcher = if batch {
                    Some(
                        client
                            .batch_append(&BatchAppendOptions::default())
                            .await
                            .expect("batch append"),
                    )
                } else {
                    None
                };
                let mut written = [0u64; 10];
                for i in 0..each {
                    let a = (i % 10) as usize;
                    let name = format!("writer_{w}_family_{a}");
                    match &batcher {
                        Some(b) => {
                            b.append_to_stream(&name, at(written[a]), vec![payment(i)])
                                .await
                                .expect("batch append");
                        }
                        None => {
                            client
                                .append_to_stream(
                                    name,
                                    &AppendToStreamOptions::default().stream_state(at(written[a])),
                                    payment(i),
                                )
                                .await
                                .expect("append");
                        }
                    }
                    written[a] += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    (clients * each, t.elapsed().as_secs_f64())
}

/// W3: one client, 100-event appends over 1,000 streams.
async fn w3(s: &Server) -> (u64, f64) {
    let client = s.client();
    let appends = env_u64("ANNAL_BENCH_W3_APPENDS", W3_APPENDS);
    let t = Instant::now();
    for i in 0..appends {
        let events: Vec<EventData> = (0..100).map(|k| payment(i * 100 + k)).collect();
        client
            .append_to_stream(
                format!("family_{}", i % 1000),
                &AppendToStreamOptions::default(),
                events,
            )
            .await
            .expect("append");
    }
    (appends * 100, t.elapsed().as_secs_f64())
}

/// W4, read: every event through one `$all` read.
async fn w4_read(s: &Server) -> (u64, f64) {
    let client = s.client();
    let t = Instant::now();
    let mut read = client
        .read_all(&ReadAllOptions::default())
        .await
        .expect("read $all");
    let mut n = 0u64;
    while read.next().await.expect("event").is_some() {
        n += 1;
    }
    (n, t.elapsed().as_secs_f64())
}

/// W4, subscription: a `$all` catch-up from the start until caught up.
async fn w4_sub(s: &Server) -> (u64, f64) {
    let client = s.client();
    let t = Instant::now();
    let mut sub = client
        .subscribe_to_all(&SubscribeToAllOptions::default())
        .await;
    let mut n = 0u64;
    loop {
        match sub.next_subscription_event().await.expect("subscription") {
            SubscriptionEvent::EventAppeared(_) => n += 1,
            SubscriptionEvent::CaughtUp(_) => break,
            _ => {}
        }
    }
    (n, t.elapsed().as_secs_f64())
}

/// P1: a consumer group on one stream, from its start, acking in batches of 50.
async fn p1(s: &Server) -> (u64, f64) {
    let client = s.client();
    let stream = "ledger-p1";
    for chunk in 0..P1_EVENTS / 100 {
        let events: Vec<EventData> = (chunk * 100..(chunk + 1) * 100).map(payment).collect();
        client
            .append_to_stream(stream, &AppendToStreamOptions::default(), events)
            .await
            .expect("append");
    }
    client
        .create_persistent_subscription(
            stream,
            "bench",
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
        )
        .await
        .expect("create group");
    let t = Instant::now();
    let mut sub = client
        .subscribe_to_persistent_subscription(
            stream,
            "bench",
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(500),
        )
        .await
        .expect("subscribe");
    let mut pending = Vec::with_capacity(50);
    for _ in 0..P1_EVENTS {
        let e = sub.next().await.expect("event");
        pending.push(e.get_original_event().id);
        if pending.len() == 50 {
            sub.ack_ids(std::mem::take(&mut pending))
                .await
                .expect("ack");
        }
    }
    sub.ack_ids(pending).await.expect("ack");
    (P1_EVENTS, t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('W') || a.starts_with('B') || a.starts_with('P'))
        .collect();
    let on = |w: &str| wanted.is_empty() || wanted.iter().any(|x| x == w);
    let binary = std::env::var_os("ANNAL_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/annal")
        });
    assert!(
        binary.exists(),
        "no server at {}: cargo build --release -p annal (or set ANNAL_BENCH_SERVER)",
        binary.display()
    );
    let runs = env_u64("ANNAL_BENCH_RUNS", RUNS);
    let names = ["W1", "W2-16", "B1", "B16", "W3", "W4-read", "W4-sub", "P1"];
    // The durable writes, printed also as a multiple of the fdatasync rate.
    let durable = [true, true, true, true, true, false, false, false];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let fsync = print_fdatasync_rate();
    let figure =
        |i: usize, events_per_sec: f64| figure(events_per_sec, durable[i].then_some(fsync));
    for run in 1..=runs {
        let dir = bench_dir();
        let mut record = |i: usize, r: (u64, f64)| {
            println!(
                "run {run} {:<8} {:>34} ({} events in {:.2} s)",
                names[i],
                figure(i, rate(r)),
                r.0,
                r.1
            );
            results[i].push(rate(r));
        };
        let store = |name: &str| dir.path().join(format!("{name}.db"));
        if on("W1") {
            let s = Server::start(&binary, &store("w1")).await;
            record(0, w1(&s).await);
        }
        if on("W2") {
            let s = Server::start(&binary, &store("w2")).await;
            record(1, w2(&s, 16, false).await);
        }
        if on("B1") {
            let s = Server::start(&binary, &store("b1")).await;
            record(2, w2(&s, 1, true).await);
        }
        if on("B16") {
            let s = Server::start(&binary, &store("b16")).await;
            record(3, w2(&s, 16, true).await);
        }
        if on("W3") || on("W4") {
            let s = Server::start(&binary, &store("w3")).await;
            let r3 = w3(&s).await;
            if on("W3") {
                record(4, r3);
            }
            if on("W4") {
                record(5, w4_read(&s).await);
                record(6, w4_sub(&s).await);
            }
        }
        if on("P1") {
            let s = Server::start(&binary, &store("p1")).await;
            record(7, p1(&s).await);
        }
    }
    println!("median of {runs} runs (fdatasync {fsync:.0}/s):");
    for (i, (name, rates)) in names.iter().zip(results).enumerate() {
        if !rates.is_empty() {
            println!("{name:<8} {:>34}", figure(i, median(rates)));
        }
    }
}
