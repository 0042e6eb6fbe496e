//! Workloads W1–W4 of issue 6 over HTTP on loopback: [`HttpStore`] clients against an
//! annal server on a fresh SQLite store, each run three times; prints every run and
//! the median in events/s.
//!
//! First it prints `fdatasync: N/s in DIR`, the disk's fdatasync rate probed once for
//! 2 s where the store files go; the durable writes (W1, W2-16, W2-64, W3) are also
//! printed as a multiple of it (`0.93× fdatasync`), every run and every median: W1 (one
//! event per request) near 1× at best, W2 above it (group commit), W3 far above
//! (100-event appends). A ratio that drops is a regression whatever the disk.
//!
//! - W1: one client, one event per append (expected version checked);
//! - W2: 16 and 64 concurrent clients, one event per append, each on its own aggregates;
//! - W3: one client, 100-event appends (1,000,000 events, then read by W4);
//! - W4: read everything, paged (`GET /v1/events`, limit 10,000) and over SSE
//!   (`GET /v1/subscribe`).
//!
//! `cargo bench -p annal-client --bench http_workloads` (all), or name some: `-- W2 W4`.
//! The server runs in this process on the same tokio runtime, unless
//! `ANNAL_BENCH_SERVER=path/to/annal` names a binary: then each store gets its own
//! `annal serve` child process, and its resident memory (VmRSS) is reported idle and
//! at its peak under W2. `ANNAL_BENCH_DIR` chooses where the store files go,
//! `ANNAL_BENCH_RUNS` the number of runs; sizes for short runs: `ANNAL_BENCH_W1_APPENDS`
//! (2,000), `ANNAL_BENCH_W2_EVENTS` (32,000 over all clients), `ANNAL_BENCH_W3_APPENDS`
//! (10,000 appends of 100 events).

use annal_client::HttpStore;
use annal_core::testkit::workloads::{
    batches, bench_dir, concurrent_writers, env_u64, figure, median, one_writer,
    print_fdatasync_rate, rate, read_everything,
};
use annal_core::{Filter, Store};
use annal_server::Config;
use annal_sqlite::SqliteStore;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Runs per workload (`ANNAL_BENCH_RUNS` overrides, for profiling).
const RUNS: u64 = 3;
const W1_APPENDS: u64 = 2_000;
const W2_EVENTS: u64 = 32_000;
const W3_APPENDS: u64 = 10_000;
const PAGE: usize = 10_000;

/// A server on one store file: in this process, or an `annal serve` child.
enum Server {
    InProcess { _stop: oneshot::Sender<()> },
    Child { child: std::process::Child },
}

impl Server {
    async fn start(path: &Path, binary: Option<&PathBuf>) -> (Server, HttpStore) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let server = match binary {
            None => {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let store = Arc::new(SqliteStore::open(path).expect("open"));
                let (tx, rx) = oneshot::channel::<()>();
                tokio::spawn(annal_server::serve(
                    listener,
                    store,
                    Config::default(),
                    async move {
                        let _ = rx.await;
                    },
                ));
                Server::InProcess { _stop: tx }
            }
            Some(bin) => {
                drop(listener);
                let child = std::process::Command::new(bin)
                    .arg("serve")
                    .arg("--store")
                    .arg(format!("sqlite:{}", path.display()))
                    .arg("--listen")
                    .arg(addr.to_string())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start annal serve");
                Server::Child { child }
            }
        };
        let client = HttpStore::connect(&base).expect("client");
        let t = Instant::now();
        while client.ready().await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "the server starts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (server, client)
    }

    /// The child's resident memory in KiB (None in process).
    fn rss_kib(&self) -> Option<u64> {
        let Server::Child { child } = self else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    async fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Child { child } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// W1: one client, one event per append, 1,000 aggregates, expected version checked.
async fn w1(s: &HttpStore) -> (u64, f64) {
    one_writer(s, env_u64("ANNAL_BENCH_W1_APPENDS", W1_APPENDS)).await
}

/// W2: `clients` concurrent clients (one connection each), one event per append.
async fn w2(s: &HttpStore, clients: u64) -> (u64, f64) {
    let events = env_u64("ANNAL_BENCH_W2_EVENTS", W2_EVENTS);
    concurrent_writers(s, clients, (events / clients).max(1)).await
}

/// W3: one client, 100 events per append.
async fn w3(s: &HttpStore) -> (u64, f64) {
    batches(s, env_u64("ANNAL_BENCH_W3_APPENDS", W3_APPENDS)).await
}

/// W4, paged: every event through `GET /v1/events?limit=10000`, the next page fetched
/// while this one is counted.
async fn w4_paged(s: &HttpStore) -> (u64, f64) {
    read_everything(s, PAGE).await
}

/// W4, SSE: every event through `GET /v1/subscribe`, until the head.
async fn w4_sse(s: &HttpStore) -> (u64, f64) {
    let head = s.head(&[]).await.expect("head");
    let t = Instant::now();
    let mut sub = std::pin::pin!(s.subscribe(0, &Filter::default()));
    let mut n = 0u64;
    while let Some(e) = sub.next().await {
        let e = e.expect("event");
        n += 1;
        if e.position >= head {
            break;
        }
    }
    (n, t.elapsed().as_secs_f64())
}

/// Samples the server's RSS every 20 ms until `stop`; returns the peak in KiB.
fn sample_peak(server: &Server, stop: &AtomicBool) -> impl std::future::Future<Output = u64> {
    let pid_rss = move || server.rss_kib().unwrap_or(0);
    async move {
        let mut peak = pid_rss();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            peak = peak.max(pid_rss());
        }
        peak
    }
}

/// Runs `work` while sampling the server's memory; returns its result and the peak.
async fn measured<F: std::future::Future<Output = (u64, f64)>>(
    server: &Server,
    work: F,
) -> ((u64, f64), u64) {
    let stop = AtomicBool::new(false);
    let sampler = sample_peak(server, &stop);
    let work = async {
        let r = work.await;
        stop.store(true, Ordering::Relaxed);
        r
    };
    tokio::join!(work, sampler)
}

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('W'))
        .collect();
    let on = |w: &str| wanted.is_empty() || wanted.iter().any(|x| x == w);
    let binary = std::env::var_os("ANNAL_BENCH_SERVER").map(PathBuf::from);
    let names = ["W1", "W2-16", "W2-64", "W3", "W4-paged", "W4-sse"];
    // The durable writes, printed also as a multiple of the fdatasync rate.
    let durable = [true, true, true, true, false, false];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut memory: Vec<String> = Vec::new();
    let runs = env_u64("ANNAL_BENCH_RUNS", RUNS);
    let fsync = print_fdatasync_rate();
    let figure =
        |i: usize, events_per_sec: f64| figure(events_per_sec, durable[i].then_some(fsync));
    for run in 1..=runs {
        let dir = bench_dir();
        let mut record = |i: usize, r: (u64, f64)| {
            println!(
                "run {run} {:<9} {:>34} ({} events in {:.2} s)",
                names[i],
                figure(i, rate(r)),
                r.0,
                r.1
            );
            results[i].push(rate(r));
        };
        if on("W1") {
            let (server, s) = Server::start(&dir.path().join("w1.db"), binary.as_ref()).await;
            record(0, w1(&s).await);
            server.stop().await;
        }
        if on("W2") {
            for (i, clients) in [(1, 16u64), (2, 64)] {
                let path = dir.path().join(format!("w2-{clients}.db"));
                let (server, s) = Server::start(&path, binary.as_ref()).await;
                let idle = server.rss_kib();
                let (r, peak) = measured(&server, w2(&s, clients)).await;
                record(i, r);
                if let Some(idle) = idle {
                    memory.push(format!(
                        "run {run} W2-{clients}: server RSS idle {} MiB, peak under load {} MiB",
                        idle / 1024,
                        peak / 1024
                    ));
                }
                server.stop().await;
            }
        }
        if on("W3") || on("W4") {
            let (server, s) = Server::start(&dir.path().join("w3.db"), binary.as_ref()).await;
            let r3 = w3(&s).await;
            if on("W3") {
                record(3, r3);
            }
            if on("W4") {
                let (r, peak_paged) = measured(&server, w4_paged(&s)).await;
                record(4, r);
                let (r, peak_sse) = measured(&server, w4_sse(&s)).await;
                record(5, r);
                if let Some(idle) = server.rss_kib() {
                    memory.push(format!(
                        "run {run} W4 on {} events: server RSS after {} MiB, peak paged {} MiB, peak SSE {} MiB",
                        r3.0,
                        idle / 1024,
                        peak_paged / 1024,
                        peak_sse / 1024
                    ));
                }
            }
            server.stop().await;
        }
    }
    println!("median of {runs} runs (fdatasync {fsync:.0}/s):");
    for (i, (name, rates)) in names.iter().zip(results).enumerate() {
        if !rates.is_empty() {
            println!("{name:<9} {:>34}", figure(i, median(rates)));
        }
    }
    for line in memory {
        println!("{line}");
    }
}
