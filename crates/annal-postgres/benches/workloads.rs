//! Workloads W1–W5 of the foundation issue on PostgreSQL (mirroring
//! annal-sqlite/benches/workloads.rs), plus W2p: W2's 16 writers split over 4 processes
//! (this binary re-run as children; `ANNAL_BENCH_W2P_PROCESSES` for another count). Each run uses fresh schemas, dropped afterwards;
//! three runs (`ANNAL_BENCH_RUNS`), every run printed, then the medians in events/s.
//!
//! First it prints `fdatasync: N/s in DIR`: the disk's fdatasync rate, probed once for
//! 2 s in `ANNAL_BENCH_DIR` (default: the system temp dir). The bench expects the
//! server on this machine, its data directory on local disk too, so the probe's disk
//! stands in for the server's: point `ANNAL_BENCH_DIR` at a directory on the data
//! directory's disk when the two differ.
//! The durable writes (W1, W2, W2p, W3) are also printed as a multiple of that rate
//! (`0.93× fdatasync`): W1 (one event per commit) near 1× at best, W2 and W3 above it
//! (group commit, 100-event batches); a ratio that drops is a regression whatever the
//! disk. W4 and W5 are reads, in events/s only.
//!
//! `cargo bench -p annal-postgres --bench workloads` (all), or name some: `-- W1 W2p`.
//! Sizes for short runs: `ANNAL_BENCH_W1_APPENDS` (8,000), `ANNAL_BENCH_W2_EACH` (4,000
//! for each of 16 writers), `ANNAL_BENCH_W3_APPENDS` (10,000 appends of 100 events).
//! The server: `ANNAL_BENCH_POSTGRES_URL`, else `ANNAL_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`.

use annal_core::testkit::workloads::{
    batches, concurrent_writers, env_u64, fdatasync_rate, figure, median, one_writer, rate,
    read_everything, read_one_aggregate, writers,
};
use annal_postgres::PgStore;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

const RUNS: u64 = 3;
const W2_WRITERS: u64 = 16;
const W2_EACH: u64 = 4_000;

/// W2's appends per writer (`ANNAL_BENCH_W2_EACH`, for short runs; children inherit it).
fn w2_each() -> u64 {
    env_u64("ANNAL_BENCH_W2_EACH", W2_EACH)
}
const W2P_PROCESSES: u64 = 4;

/// W2p's processes (`ANNAL_BENCH_W2P_PROCESSES`, 1 to 16; the 16 writers are split as
/// evenly as they go: 3 processes run 6, 5 and 5).
fn w2p_processes() -> u64 {
    env_u64("ANNAL_BENCH_W2P_PROCESSES", W2P_PROCESSES).clamp(1, W2_WRITERS)
}

fn server() -> String {
    std::env::var("ANNAL_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("ANNAL_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_schema(schema: &str) -> String {
    let base = server();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// Fresh schemas for one run, dropped when it ends.
struct Bench {
    schemas: Vec<String>,
}

impl Bench {
    fn schema(&mut self) -> String {
        let s = format!("annal_bench_{:016x}", fastrand::u64(..));
        self.schemas.push(s.clone());
        s
    }

    async fn store(&mut self) -> PgStore {
        let schema = self.schema();
        PgStore::connect(&with_schema(&schema))
            .await
            .expect("open a store on the bench server")
    }

    async fn cleanup(&mut self) {
        let (c, conn) = tokio_postgres::connect(&server(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        for s in self.schemas.drain(..) {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                .await
                .expect("drop schema");
        }
    }
}

/// W1: one writer, one event per append, expected version checked, 1,000 aggregates.
async fn w1(b: &mut Bench) -> (u64, f64) {
    one_writer(&b.store().await, env_u64("ANNAL_BENCH_W1_APPENDS", 8_000)).await
}

/// W2: sixteen concurrent writers, one event per append, each on its own aggregates.
async fn w2(b: &mut Bench) -> (u64, f64) {
    concurrent_writers(&b.store().await, W2_WRITERS, w2_each()).await
}

/// W2p: W2's sixteen writers split over four processes (`ANNAL_BENCH_W2P_PROCESSES`) on
/// one store.
async fn w2p(b: &mut Bench) -> (u64, f64) {
    let schema = b.schema();
    let url = with_schema(&schema);
    // Create the schema once, before the children race to open it.
    drop(PgStore::connect(&url).await.expect("open"));
    let processes = w2p_processes();
    let exe = std::env::current_exe().expect("own path");
    let mut children: Vec<_> = (0..processes)
        .map(|p| {
            // Writers [first, first + count) of the sixteen.
            let first = p * W2_WRITERS / processes;
            let count = (p + 1) * W2_WRITERS / processes - first;
            Command::new(&exe)
                .args(["child", &url, &first.to_string(), &count.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a child")
        })
        .collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("stdout")).lines())
        .collect();
    for o in &mut outs {
        assert_eq!(
            o.next().expect("ready").expect("read"),
            "ready",
            "child connected"
        );
    }
    let t = Instant::now();
    for c in &mut children {
        writeln!(c.stdin.as_mut().expect("stdin"), "go").expect("go");
    }
    for o in &mut outs {
        assert_eq!(o.next().expect("done").expect("read"), "done");
    }
    let secs = t.elapsed().as_secs_f64();
    for mut c in children {
        assert!(c.wait().expect("child exits").success());
    }
    (W2_WRITERS * w2_each(), secs)
}

/// A W2p child: connect, say ready, wait for go, run its writers, say done.
async fn child(url: &str, first: u64, count: u64) {
    let s = PgStore::connect(url).await.expect("child opens the store");
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    writers(&s, first, count, w2_each()).await;
    println!("done");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let n = |i: usize| args[i].parse::<u64>().expect("a number");
        child(&args[1], n(2), n(3)).await;
        return;
    }
    let wanted: Vec<&String> = args.iter().filter(|a| a.starts_with('W')).collect();
    let on = |w: &str| wanted.is_empty() || wanted.iter().any(|x| *x == w);
    let runs = env_u64("ANNAL_BENCH_RUNS", RUNS);
    let fsync = {
        // The probe's file is named after this process and removed afterwards.
        let dir = std::env::var_os("ANNAL_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let f = fdatasync_rate(&dir).expect("fdatasync probe");
        println!(
            "fdatasync: {f:.0}/s in {} (256-byte appends to one file, 2 s; a temp dir on \
             local disk, as PostgreSQL's data directory is: the server runs on this machine)",
            dir.display()
        );
        f
    };
    // (name, durable, rates)
    let mut results: Vec<(&str, bool, Vec<f64>)> = [
        ("W1", true),
        ("W2", true),
        ("W2p", true),
        ("W3", true),
        ("W4", false),
        ("W5", false),
    ]
    .iter()
    .map(|(w, durable)| (*w, *durable, Vec::new()))
    .collect();
    for run in 1..=runs {
        let mut b = Bench {
            schemas: Vec::new(),
        };
        let mut record = |i: usize, r: (u64, f64)| {
            let (name, durable, rates) = &mut results[i];
            println!(
                "run {run} {:<4} {:>34} ({} events in {:.2} s)",
                format!("{name}:"),
                figure(rate(r), durable.then_some(fsync)),
                r.0,
                r.1
            );
            rates.push(rate(r));
        };
        if on("W1") {
            record(0, w1(&mut b).await);
        }
        if on("W2") {
            record(1, w2(&mut b).await);
        }
        if on("W2p") {
            record(2, w2p(&mut b).await);
        }
        if on("W3") || on("W4") || on("W5") {
            let s = b.store().await;
            let r3 = batches(&s, env_u64("ANNAL_BENCH_W3_APPENDS", 10_000)).await;
            if on("W3") {
                record(3, r3);
            }
            if on("W4") {
                record(4, read_everything(&s, 4096).await);
            }
            if on("W5") {
                record(5, read_one_aggregate(&s).await);
            }
        }
        b.cleanup().await;
    }
    println!("median of {runs} runs (fdatasync {fsync:.0}/s):");
    for (w, durable, rates) in results {
        if !rates.is_empty() {
            println!(
                "{:<4} {:>34}",
                format!("{w}:"),
                figure(median(rates), durable.then_some(fsync))
            );
        }
    }
}
