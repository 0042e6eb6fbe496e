//! Workloads W1–W5 of the foundation issue on the embedded store, in process, each run
//! three times on fresh stores; prints every run and the median in events/s.
//!
//! `cargo bench -p annal-sqlite --bench workloads` (all), or name some: `-- W1 W4`.
//! `ANNAL_BENCH_DIR` chooses where the store files go (default: the system temp dir),
//! so the figures are of that disk's fsync.

use annal_core::read::stream_all;
use annal_core::{
    AppendRequest, Direction, ExpectedVersion, Filter, NewEvent, RawJson, Store, Uuid,
};
use annal_sqlite::SqliteStore;
use futures_util::TryStreamExt;
use std::time::Instant;

const RUNS: usize = 3;

fn payment(i: u64) -> NewEvent {
    let data = format!(
        r#"{{"family_id":"family_{}","amount":{},"date":"2024-10-20","method":"credit_card"}}"#,
        i % 1000,
        400 + i % 100
    );
    let mut e = NewEvent::raw("PaymentReceived", RawJson::parse(data).expect("json"));
    e.event_version = Some(2);
    e.user_id = Some("sarah".into());
    e.correlation_id = Some(format!("payment_{i}"));
    e.causation_id = Some(Uuid::now_v7().to_string());
    e
}

fn request(agg: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    let mut r = AppendRequest::new("Family", agg, expected);
    r.events = events;
    r
}

struct Bench {
    dir: tempfile::TempDir,
    n: usize,
}

impl Bench {
    fn store(&mut self) -> SqliteStore {
        self.n += 1;
        SqliteStore::open(self.dir.path().join(format!("bench-{}.db", self.n))).expect("open")
    }
}

/// W1: one writer, one event per append, expected version checked, 1,000 aggregates.
async fn w1(b: &mut Bench) -> (u64, f64) {
    let s = b.store();
    const N: u64 = 8_000;
    let mut versions = vec![0u64; 1000];
    let t = Instant::now();
    for i in 0..N {
        let a = (i % 1000) as usize;
        s.append(request(
            &format!("family_{a}"),
            ExpectedVersion::Exact(versions[a]),
            vec![payment(i)],
        ))
        .await
        .expect("append");
        versions[a] += 1;
    }
    (N, t.elapsed().as_secs_f64())
}

/// W2: sixteen concurrent writers, one event per append, each on its own aggregates.
async fn w2(b: &mut Bench) -> (u64, f64) {
    let s = b.store();
    const WRITERS: u64 = 16;
    const EACH: u64 = 4_000;
    let t = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut versions = [0u64; 10];
                for i in 0..EACH {
                    let a = (i % 10) as usize;
                    s.append(request(
                        &format!("writer_{w}_family_{a}"),
                        ExpectedVersion::Exact(versions[a]),
                        vec![payment(i)],
                    ))
                    .await
                    .expect("append");
                    versions[a] += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (WRITERS * EACH, t.elapsed().as_secs_f64())
}

/// W3: one writer, 100 events per append; leaves 1,000,000 events for W4.
async fn w3(s: &SqliteStore) -> (u64, f64) {
    const APPENDS: u64 = 10_000;
    let t = Instant::now();
    for i in 0..APPENDS {
        let events = (0..100).map(|k| payment(i * 100 + k)).collect();
        s.append(request(
            &format!("family_{}", i % 1000),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .expect("append");
    }
    (APPENDS * 100, t.elapsed().as_secs_f64())
}

/// W4: read every event in order from position 1.
async fn w4(s: &SqliteStore) -> (u64, f64) {
    let t = Instant::now();
    let f = Filter::default();
    let n = stream_all(s, 0, &f, 4096)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .expect("read");
    (n, t.elapsed().as_secs_f64())
}

/// W5: read one aggregate of 10,000 events (ten times).
async fn w5(s: &SqliteStore) -> (u64, f64) {
    for i in 0..100 {
        let events = (0..100).map(|k| payment(i * 100 + k)).collect();
        s.append(request("family_big", ExpectedVersion::Any, events))
            .await
            .expect("append");
    }
    let t = Instant::now();
    let mut n = 0u64;
    for _ in 0..10 {
        let mut from = 1;
        loop {
            let page = s
                .read_aggregate("family_big", Direction::Forward, Some(from), 4096)
                .await
                .expect("read");
            n += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == 4096 => from = last.aggregate_version + 1,
                _ => break,
            }
        }
    }
    assert_eq!(n, 100_000);
    (n, t.elapsed().as_secs_f64())
}

fn rate((n, secs): (u64, f64)) -> f64 {
    n as f64 / secs
}

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('W'))
        .collect();
    let on = |w: &str| wanted.is_empty() || wanted.iter().any(|x| x == w);
    let base = std::env::var_os("ANNAL_BENCH_DIR").map(std::path::PathBuf::from);
    let mut results: Vec<(&str, Vec<f64>)> = ["W1", "W2", "W3", "W4", "W5"]
        .iter()
        .map(|w| (*w, Vec::new()))
        .collect();
    for run in 1..=RUNS {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        }
        .expect("bench dir");
        let mut b = Bench { dir, n: 0 };
        let mut record = |i: usize, r: (u64, f64)| {
            println!(
                "run {run} {}: {:>12.0} events/s ({} events in {:.2} s)",
                results[i].0,
                rate(r),
                r.0,
                r.1
            );
            results[i].1.push(rate(r));
        };
        if on("W1") {
            record(0, w1(&mut b).await);
        }
        if on("W2") {
            record(1, w2(&mut b).await);
        }
        if on("W3") || on("W4") || on("W5") {
            let s = b.store();
            let r3 = w3(&s).await;
            if on("W3") {
                record(2, r3);
            }
            if on("W4") {
                record(3, w4(&s).await);
            }
            if on("W5") {
                record(4, w5(&s).await);
            }
        }
    }
    println!("median of {RUNS} runs:");
    for (w, mut rates) in results {
        if rates.is_empty() {
            continue;
        }
        rates.sort_by(f64::total_cmp);
        println!("{w}: {:>12.0} events/s", rates[rates.len() / 2]);
    }
}
