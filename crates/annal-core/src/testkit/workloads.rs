//! The benchmark workloads of the foundation issue, written once for every backend and
//! transport (each bench binary opens its own stores and prints its own report):
//!
//! - W1 [`one_writer`]: one writer, one event per append, expected version checked, over
//!   1,000 aggregates;
//! - W2 [`concurrent_writers`]: concurrent writers, one event per append, each on its own
//!   aggregates (versions checked);
//! - W3 [`batches`]: one writer, 100 events per append (over 1,000 aggregates);
//! - W4 [`read_everything`]: every event in order from position 1, paged;
//! - W5 [`read_one_aggregate`]: an aggregate of 10,000 events, read ten times.
//!
//! Events are shaped like the seed's PaymentReceived (v2) with user, correlation and
//! causation ids ([`payment`]; [`payment_with_random_ids`] for random UUIDs in both, the
//! shape of the scale runs). Each workload answers (events, seconds). The `*_on`
//! variants take the aggregate names and the event shape, so one store can hold several
//! runs; [`preload`] fills a store fast, for workloads on a large log.
//!
//! A durable write costs at least one fdatasync, so its figure means little without the
//! disk's: [`fdatasync_rate`] measures the disk under a directory, and [`vs_fdatasync`]
//! prints a figure next to it ("1234 events/s (0.95× fdatasync)"). Every bench that
//! times durable writes probes once per run of the binary, where its stores live: a
//! change that adds a sync per commit shows as a ratio that halves, whatever the disk.

use crate::append::{AppendRequest, ExpectedVersion, NewEvent, Transaction};
use crate::event::RawJson;
use crate::read::{Direction, Filter, stream_all};
use crate::store::Store;
use futures_util::{StreamExt, TryStreamExt};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long [`fdatasync_rate`] writes and syncs.
pub const FDATASYNC_PROBE: Duration = Duration::from_secs(2);

/// Bytes written before each sync by [`fdatasync_rate`] (about one small commit).
pub const FDATASYNC_PROBE_BYTES: usize = 256;

/// The disk's fdatasync rate under `dir`, in syncs per second: appends
/// [`FDATASYNC_PROBE_BYTES`] bytes to a new file in `dir` and calls
/// [`File::sync_data`](std::fs::File::sync_data) after each, for [`FDATASYNC_PROBE`]
/// (2 s); then removes the file.
///
/// The file grows with each write, like a log (SQLite's WAL, a PostgreSQL WAL segment
/// being filled), so each sync also makes the new length durable. One writer, one sync at
/// a time: the figure is the ceiling of a store that syncs once per commit with one
/// commit in flight. Blocks the calling thread for the whole probe (call it before the
/// workloads, not inside them).
pub fn fdatasync_rate(dir: &Path) -> std::io::Result<f64> {
    let path = dir.join(format!(".annal-fdatasync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let probed = sync_loop(&mut file);
    drop(file);
    let removed = std::fs::remove_file(&path);
    let rate = probed?;
    removed?;
    Ok(rate)
}

/// The probe proper: write and sync until [`FDATASYNC_PROBE`] has passed.
fn sync_loop(file: &mut std::fs::File) -> std::io::Result<f64> {
    // The file's creation is made durable first, so it is not counted as a sync.
    file.sync_all()?;
    let block = [0x5a_u8; FDATASYNC_PROBE_BYTES];
    let t = Instant::now();
    let mut syncs = 0u64;
    while t.elapsed() < FDATASYNC_PROBE {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    Ok(syncs as f64 / t.elapsed().as_secs_f64())
}

/// A durable-write figure next to the disk's: "N events/s (X.XX× fdatasync)", where
/// X is `events_per_sec / fdatasyncs_per_sec` (from [`fdatasync_rate`]). One event per
/// commit with one commit in flight stays near or under 1×; well over 1× means several
/// events shared a sync (batches, group commit).
pub fn vs_fdatasync(events_per_sec: f64, fdatasyncs_per_sec: f64) -> String {
    format!(
        "{events_per_sec:.0} events/s ({:.2}× fdatasync)",
        fdatasync_ratio(events_per_sec, fdatasyncs_per_sec)
    )
}

/// `events_per_sec / fdatasyncs_per_sec` (0 when the probe measured nothing).
pub fn fdatasync_ratio(events_per_sec: f64, fdatasyncs_per_sec: f64) -> f64 {
    if fdatasyncs_per_sec > 0.0 {
        events_per_sec / fdatasyncs_per_sec
    } else {
        0.0
    }
}

/// Where a bench's stores go: `ANNAL_BENCH_DIR`, else the system temp dir.
pub fn bench_base() -> PathBuf {
    std::env::var_os("ANNAL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A fresh directory under [`bench_base`], removed on drop.
pub fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(bench_base()).expect("bench dir")
}

/// Probes the fdatasync rate where the bench's stores go ([`fdatasync_rate`] in a
/// [`bench_dir`]) and prints it, as every bench's first line.
pub fn print_fdatasync_rate() -> f64 {
    let fsync = fdatasync_rate(bench_dir().path()).expect("fdatasync probe");
    println!(
        "fdatasync: {fsync:.0}/s in {} (256-byte appends to one file, 2 s; the store files' disk)",
        bench_base().display()
    );
    fsync
}

/// A workload's figure: with the fdatasync rate (a durable write) [`vs_fdatasync`],
/// without it (a read) plain events/s.
pub fn figure(events_per_sec: f64, fdatasyncs_per_sec: Option<f64>) -> String {
    match fdatasyncs_per_sec {
        Some(f) => vs_fdatasync(events_per_sec, f),
        None => format!("{events_per_sec:.0} events/s"),
    }
}

/// A bench setting from the environment: `name` parsed as a number, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

/// The `i`-th PaymentReceived of a workload.
pub fn payment(i: u64) -> NewEvent {
    let data = format!(
        r#"{{"family_id":"family_{}","amount":{},"date":"2024-10-20","method":"credit_card"}}"#,
        i % 1000,
        400 + i % 100
    );
    let mut e = NewEvent::raw(
        "PaymentReceived",
        RawJson::parse(data).expect("workload JSON"),
    );
    e.event_version = Some(2);
    e.user_id = Some("sarah".into());
    e.correlation_id = Some(format!("payment_{i}"));
    e.causation_id = Some(Uuid::now_v7().to_string());
    e
}

/// The `i`-th PaymentReceived with all of its data personal: `data` is `{}` and the
/// payment's members are the personal part about the family (the privacy benches'
/// shape: encryption on every byte of payload).
pub fn payment_personal(i: u64) -> NewEvent {
    let mut e = payment(i);
    e.personal = Some(std::mem::replace(&mut e.data, RawJson::empty_object()));
    e.subjects = vec![format!("family_{}", i % 1000)];
    e
}

/// The `i`-th PaymentReceived with random UUIDs (version 4 layout) as its correlation
/// and causation ids: the same data, but ids that land all over their indexes, as a
/// busy store's do (the scale runs' shape).
pub fn payment_with_random_ids(i: u64) -> NewEvent {
    let mut e = payment(i);
    e.correlation_id = Some(random_uuid().to_string());
    e.causation_id = Some(random_uuid().to_string());
    e
}

/// A random UUID (version 4 layout, from `fastrand`; not for secrets).
pub fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// An append of `events` to the Family `aggregate_id`.
pub fn request(
    aggregate_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    let mut r = AppendRequest::new("Family", aggregate_id, expected);
    r.events = events;
    r
}

/// Events per second.
pub fn rate((events, secs): (u64, f64)) -> f64 {
    events as f64 / secs
}

/// The median of some rates.
pub fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// W1: `appends` single-event appends by one writer over 1,000 aggregates.
pub async fn one_writer<S: Store + ?Sized>(s: &S, appends: u64) -> (u64, f64) {
    one_writer_on(s, appends, "family", payment).await
}

/// W1 over the aggregates `{family}_0` to `{family}_999` (new to the store), with
/// `event(i)` as the `i`-th event.
pub async fn one_writer_on<S: Store + ?Sized>(
    s: &S,
    appends: u64,
    family: &str,
    event: fn(u64) -> NewEvent,
) -> (u64, f64) {
    let mut versions = vec![0u64; 1000];
    let t = Instant::now();
    for i in 0..appends {
        let a = (i % 1000) as usize;
        s.append(request(
            &format!("{family}_{a}"),
            ExpectedVersion::Exact(versions[a]),
            vec![event(i)],
        ))
        .await
        .expect("append");
        versions[a] += 1;
    }
    (appends, t.elapsed().as_secs_f64())
}

/// Runs writers numbered `first..first + writers`, `each` single-event appends apiece,
/// each over its own ten aggregates; returns when all are done.
pub async fn writers<S: Store + Clone + 'static>(s: &S, first: u64, writers: u64, each: u64) {
    writers_on(s, first, writers, each, payment).await;
}

/// [`writers`] with `event(i)` as each writer's `i`-th event.
pub async fn writers_on<S: Store + Clone + 'static>(
    s: &S,
    first: u64,
    writers: u64,
    each: u64,
    event: fn(u64) -> NewEvent,
) {
    let tasks: Vec<_> = (first..first + writers)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut versions = [0u64; 10];
                for i in 0..each {
                    let a = (i % 10) as usize;
                    s.append(request(
                        &format!("writer_{w}_family_{a}"),
                        ExpectedVersion::Exact(versions[a]),
                        vec![event(i)],
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
}

/// W2: `count` concurrent writers, `each` single-event appends apiece.
pub async fn concurrent_writers<S: Store + Clone + 'static>(
    s: &S,
    count: u64,
    each: u64,
) -> (u64, f64) {
    concurrent_writers_on(s, count, each, payment).await
}

/// W2 with `event(i)` as each writer's `i`-th event.
pub async fn concurrent_writers_on<S: Store + Clone + 'static>(
    s: &S,
    count: u64,
    each: u64,
    event: fn(u64) -> NewEvent,
) -> (u64, f64) {
    let t = Instant::now();
    writers_on(s, 0, count, each, event).await;
    (count * each, t.elapsed().as_secs_f64())
}

/// W3: `appends` appends of 100 events by one writer (1,000,000 events for 10,000).
pub async fn batches<S: Store + ?Sized>(s: &S, appends: u64) -> (u64, f64) {
    batches_on(s, appends, "family", payment).await
}

/// W3 over the aggregates `{family}_0` to `{family}_999`, with `event(i)` as the `i`-th
/// event.
pub async fn batches_on<S: Store + ?Sized>(
    s: &S,
    appends: u64,
    family: &str,
    event: fn(u64) -> NewEvent,
) -> (u64, f64) {
    let t = Instant::now();
    for i in 0..appends {
        let events = (0..100).map(|k| event(i * 100 + k)).collect();
        s.append(request(
            &format!("{family}_{}", i % 1000),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .expect("append");
    }
    (appends * 100, t.elapsed().as_secs_f64())
}

/// Waits until a store that indexes behind its writer has indexed its whole log (at
/// once for one that indexes in each commit); answers how long that took. The benches
/// wait before W4, so that the indexer's catching up with W3 is not timed as reads.
/// Panics after a minute: an index that stalls must not hang a bench.
pub async fn index_caught_up<S: Store + ?Sized>(s: &S) -> std::time::Duration {
    let t = Instant::now();
    let head = s.head(&[]).await.expect("head");
    while let Some(at) = s.indexed_up_to().filter(|at| *at < head) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "the index is still at {at} of {head} after a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    t.elapsed()
}

/// W4: every event in order from position 1, `page` at a time.
pub async fn read_everything<S: Store + ?Sized>(s: &S, page: usize) -> (u64, f64) {
    let t = Instant::now();
    let f = Filter::default();
    let n = stream_all(s, 0, &f, page)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .expect("read");
    (n, t.elapsed().as_secs_f64())
}

/// W5: writes `family_big` (10,000 events), then reads it whole ten times.
pub async fn read_one_aggregate<S: Store + ?Sized>(s: &S) -> (u64, f64) {
    read_one_aggregate_on(s, "family_big", payment).await
}

/// W5 on the aggregate `aggregate_id` (new to the store), written with `event(i)` as
/// the `i`-th event; only the reads are timed.
pub async fn read_one_aggregate_on<S: Store + ?Sized>(
    s: &S,
    aggregate_id: &str,
    event: fn(u64) -> NewEvent,
) -> (u64, f64) {
    for i in 0..100 {
        let events = (0..100).map(|k| event(i * 100 + k)).collect();
        s.append(request(aggregate_id, ExpectedVersion::Any, events))
            .await
            .expect("append");
    }
    let t = Instant::now();
    let mut n = 0u64;
    for _ in 0..10 {
        let mut from = 1;
        loop {
            let page = s
                .read_aggregate(aggregate_id, Direction::Forward, Some(from), 4096)
                .await
                .expect("read");
            n += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == 4096 => from = last.aggregate_version + 1,
                _ => break,
            }
        }
    }
    assert_eq!(n, 100_000, "{aggregate_id} holds 10,000 events");
    (n, t.elapsed().as_secs_f64())
}

/// Events per commit of [`preload`] (the default batch limit).
pub const PRELOAD_COMMIT: u64 = 10_000;

/// Fills a store with `events` events, fast: transactions of [`PRELOAD_COMMIT`] events
/// (100 appends of 100 events, each to a new aggregate `{family}_{n}`), two in flight so
/// the next one is built while the last commits. `event(i)` is the `i`-th event.
/// Answers (events, seconds).
pub async fn preload<S: Store + ?Sized>(
    s: &S,
    events: u64,
    family: &str,
    event: fn(u64) -> NewEvent,
) -> (u64, f64) {
    let t = Instant::now();
    let step = usize::try_from(PRELOAD_COMMIT).expect("10 000 is a usize");
    futures_util::stream::iter((0..events).step_by(step))
        .map(|first| async move {
            let last = (first + PRELOAD_COMMIT).min(events);
            let appends = (first..last)
                .step_by(100)
                .map(|a| {
                    request(
                        &format!("{family}_{}", a / 100),
                        ExpectedVersion::NoStream,
                        (a..(a + 100).min(last)).map(event).collect(),
                    )
                })
                .collect();
            s.transact(Transaction {
                appends,
                checkpoint: None,
            })
            .await
            .map(|_| ())
        })
        .buffered(2)
        .try_collect::<()>()
        .await
        .expect("preload");
    (events, t.elapsed().as_secs_f64())
}
