//! Subscription figures, three runs each, medians printed:
//! - catch-up: events/s delivered from position 1 over a log of `ANNAL_BENCH_EVENTS`
//!   (default 1,000,000) events, through a bare [`subscribe`] and through the projection
//!   runner (checkpointing as it goes);
//! - live latency: 16 writers appending one event at a time for 3 s while a projection
//!   runner handles them (on PostgreSQL through a second store, woken by NOTIFY); commit (the writer's acknowledgement) → handler, p50 and p99
//!   (0 when the handler saw the event before the writer got its answer), and
//!   append call → handler.
//!
//! `cargo bench -p annal --bench subscriptions` (the embedded store, in
//! `ANNAL_BENCH_DIR` or the temp dir); with `ANNAL_BENCH_POSTGRES_URL` set, also on
//! that PostgreSQL server (a fresh schema, dropped at the end).

use annal::projection::{self, Handler, HandlerError, ProjectionOptions};
use annal::subscription::{Start, SubscriptionOptions, subscribe};
use annal::{AppendRequest, ExpectedVersion, NewEvent, RawJson, RecordedEvent, Store};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // The nearest rank, p in 0..=1 of the sorted samples (found, not cast).
    let last = sorted.len() - 1;
    let rank = (last as f64 * p).round();
    let i = (0..=last).find(|&k| k as f64 >= rank).unwrap_or(last);
    sorted[i]
}

async fn fill(store: &dyn Store, n: usize) {
    let mut i = 0;
    while i < n {
        let k = 5000.min(n - i);
        let mut r = AppendRequest::new(
            "Family",
            format!("family_{}", (i / k) % 1000),
            ExpectedVersion::Any,
        );
        r.events = (0..k)
            .map(|j| {
                let data = format!(
                    r#"{{"amount":{},"date":"2024-10-20","method":"card"}}"#,
                    400 + (i + j) % 100
                );
                NewEvent::raw("PaymentReceived", RawJson::parse(data).expect("json"))
            })
            .collect();
        store.append(r).await.expect("fill");
        i += k;
    }
}

struct Count(u64);

#[async_trait]
impl Handler for Count {
    async fn handle(&mut self, _e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        self.0 += 1;
        Ok(Vec::new())
    }
}

async fn catch_up(store: Arc<dyn Store>, label: &str) {
    let head = store.head(&[]).await.expect("head");
    let mut bare = Vec::new();
    let mut runner = Vec::new();
    for run in 0..RUNS {
        let t = Instant::now();
        let mut sub = subscribe(
            store.clone(),
            SubscriptionOptions::from(Start::Beginning).page_size(5000),
        )
        .await
        .expect("subscribe");
        let mut n = 0u64;
        while sub.position() < head {
            let b = sub.next_batch().await.expect("batch");
            n += b.events.len() as u64;
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        bare.push(rate);

        let t = Instant::now();
        let mut options = ProjectionOptions::new(format!("bench-{run}"));
        options.subscription = SubscriptionOptions::default().page_size(5000);
        let p = projection::spawn(store.clone(), Count(0), options);
        p.wait_until(|p| p.position >= head).await;
        let rate2 = head as f64 / t.elapsed().as_secs_f64();
        let handled = p.stop().await.expect("stop").0;
        assert_eq!(handled, head);
        runner.push(rate2);
        println!(
            "{label} catch-up run {}: subscribe {rate:.0} events/s, projection runner {rate2:.0} events/s ({n} events)",
            run + 1
        );
    }
    println!(
        "{label} catch-up median over {head} events: subscribe {:.0} events/s, projection runner {:.0} events/s",
        median(bare),
        median(runner)
    );
}

type Times = Arc<Mutex<HashMap<u64, Instant>>>;

struct Stamp {
    seen: Times,
}

#[async_trait]
impl Handler for Stamp {
    async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        let now = Instant::now();
        self.seen.lock().expect("lock").insert(e.position, now);
        Ok(Vec::new())
    }
}

async fn live(store: Arc<dyn Store>, reader: Arc<dyn Store>, label: &str) {
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut c50s = Vec::new();
    let mut c99s = Vec::new();
    for run in 0..RUNS {
        let seen: Times = Arc::default();
        let mut options = ProjectionOptions::new(format!("live-{run}"));
        options.subscription.start = Start::End;
        // Start where the log is now: only the live events.
        let head = store.head(&[]).await.expect("head");
        store
            .put_checkpoint(annal::CheckpointWrite::new(format!("live-{run}"), head))
            .await
            .expect("checkpoint");
        let p = projection::spawn(reader.clone(), Stamp { seen: seen.clone() }, options);
        p.wait_until(|p| p.position >= head).await;
        let acked: Times = Arc::default();
        let called: Times = Arc::default();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut writers = Vec::new();
        for w in 0..16 {
            let (store, acked, called) = (store.clone(), acked.clone(), called.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let r = AppendRequest::new("Family", format!("live_{w}"), ExpectedVersion::Any)
                        .event(NewEvent::raw(
                            "PaymentReceived",
                            RawJson::parse(format!(r#"{{"i":{i}}}"#)).expect("json"),
                        ));
                    let t0 = Instant::now();
                    let out = store.append(r).await.expect("append");
                    let t1 = Instant::now();
                    acked.lock().expect("lock").insert(out.first_position, t1);
                    called.lock().expect("lock").insert(out.first_position, t0);
                    i += 1;
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        let last = store.head(&[]).await.expect("head");
        p.wait_until(|p| p.position >= last).await;
        p.stop().await.expect("stop");
        let seen = seen.lock().expect("lock");
        let acked = acked.lock().expect("lock");
        let called = called.lock().expect("lock");
        let mut from_commit: Vec<Duration> = acked
            .iter()
            .filter_map(|(pos, t)| seen.get(pos).map(|s| s.saturating_duration_since(*t)))
            .collect();
        let mut from_call: Vec<Duration> = called
            .iter()
            .filter_map(|(pos, t)| seen.get(pos).map(|s| s.saturating_duration_since(*t)))
            .collect();
        from_commit.sort();
        from_call.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (p50, p99) = (
            ms(percentile(&from_commit, 0.5)),
            ms(percentile(&from_commit, 0.99)),
        );
        let (c50, c99) = (
            ms(percentile(&from_call, 0.5)),
            ms(percentile(&from_call, 0.99)),
        );
        println!(
            "{label} live run {}: {} events from 16 writers; commit→handler p50 {p50:.3} ms p99 {p99:.3} ms; append call→handler p50 {c50:.3} ms p99 {c99:.3} ms",
            run + 1,
            from_commit.len()
        );
        p50s.push(p50);
        p99s.push(p99);
        c50s.push(c50);
        c99s.push(c99);
    }
    println!(
        "{label} live median: commit→handler p50 {:.3} ms p99 {:.3} ms; append call→handler p50 {:.3} ms p99 {:.3} ms",
        median(p50s),
        median(p99s),
        median(c50s),
        median(c99s)
    );
}

fn events() -> usize {
    std::env::var("ANNAL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = match std::env::var_os("ANNAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("dir");
    let n = events();
    let store: Arc<dyn Store> =
        Arc::new(annal::sqlite::SqliteStore::open(dir.path().join("annal.db")).expect("open"));
    let t = Instant::now();
    fill(&*store, n).await;
    println!(
        "sqlite: filled {n} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    catch_up(store.clone(), "sqlite").await;
    live(store.clone(), store, "sqlite").await;

    if let Ok(url) = std::env::var("ANNAL_BENCH_POSTGRES_URL") {
        let schema = format!("annal_bench_{:016x}", fastrand::u64(..));
        let sep = if url.contains('?') { '&' } else { '?' };
        let store_url = format!("{url}{sep}schema={schema}");
        let store: Arc<dyn Store> = Arc::new(
            annal::postgres::PgStore::connect(&store_url)
                .await
                .expect("connect to ANNAL_BENCH_POSTGRES_URL"),
        );
        let t = Instant::now();
        fill(&*store, n).await;
        println!(
            "postgres: filled {n} events in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        catch_up(store.clone(), "postgres").await;
        // The runner on its own connection pool: woken by LISTEN/NOTIFY, as another
        // process would be, not by the writers' in-process signal.
        let reader: Arc<dyn Store> = Arc::new(
            annal::postgres::PgStore::connect(&store_url)
                .await
                .expect("second connection"),
        );
        live(store, reader, "postgres").await;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to drop the schema");
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}
