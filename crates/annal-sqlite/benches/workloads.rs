//! Workloads W1–W5 of the foundation issue on the embedded store, in process, each run
//! three times (`ANNAL_BENCH_RUNS`) on fresh stores, and the SCALE run on a large store.
//!
//! Prints, in order:
//! - `fdatasync: N/s in DIR`: the disk's fdatasync rate, probed once for 2 s in the
//!   directory the store files go to (`testkit::workloads::fdatasync_rate`);
//! - every run (`run 1 W1 ...`) and then the median of each workload, in events/s; the
//!   durable writes (W1, W2, W3) also as a multiple of that rate (`0.93× fdatasync`):
//!   W1 (one event per commit) should stay near 1×, W2 and W3 far above it (group commit,
//!   100-event batches). A ratio that drops is a regression whatever the disk.
//!
//! `cargo bench -p annal-sqlite --bench workloads` (W1–W5), or name some: `-- W1 W4`.
//!
//! SCALE (only when named: `-- SCALE`, alone or with some W's): preloads one store with
//! `ANNAL_BENCH_SCALE_EVENTS` (default 10,000,000) PaymentReceived events whose
//! correlation and causation ids are random UUIDs, in commits of 10,000 events (100
//! aggregates of 100 events each), and prints the load rate and the store's size per
//! event (the pages its store file and index file use). Then, each run, W1, W3 and W5 with the
//! same event shape on that loaded store (new aggregates each run, so it grows by W3's
//! 1,000,000 events and
//! some more every run) and on fresh empty stores: each in events/s, W1 and W3 also as
//! × fdatasync (W5 is a read), and loaded/empty; then the medians, and the loaded
//! store's bytes per event at the end. Needs about 700 bytes of disk per event (7 GB).
//!
//! Settings: `ANNAL_BENCH_DIR` where the store files go (default: the system temp dir;
//! the figures are of that disk's fsync), `ANNAL_BENCH_RUNS` (3), sizes for short runs:
//! `ANNAL_BENCH_W1_APPENDS` (8,000), `ANNAL_BENCH_W2_EACH` (4,000 for each of 16
//! writers), `ANNAL_BENCH_W3_APPENDS` (10,000 appends of 100 events; W4 and W5 read
//! that store), `ANNAL_BENCH_SCALE_EVENTS` (10,000,000).

use annal_core::Store;
use annal_core::testkit::workloads::{
    PRELOAD_COMMIT, batches, batches_on, bench_dir, concurrent_writers, env_u64, figure, median,
    one_writer, one_writer_on, payment_with_random_ids, preload, print_fdatasync_rate, rate,
    read_everything, read_one_aggregate, read_one_aggregate_on, vs_fdatasync,
};
use annal_sqlite::SqliteStore;
use std::path::Path;

const RUNS: u64 = 3;
const W2_WRITERS: u64 = 16;

/// Workload sizes (from the environment, for short runs).
struct Sizes {
    w1_appends: u64,
    w2_each: u64,
    w3_appends: u64,
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

/// The store's size and its bytes per event: the pages its store file and its index file
/// use (as SQLite counts them, the WAL's latest pages included, free pages not), and
/// the files on disk (each with its `-wal`).
fn size_per_event(path: &Path, events: u64) -> String {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let on_disk = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let used = |p: &Path| -> u64 {
        rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(
                    "SELECT (SELECT page_count FROM pragma_page_count()) - \
                            (SELECT freelist_count FROM pragma_freelist_count()), \
                            (SELECT page_size FROM pragma_page_size())",
                    [],
                    |r| Ok(r.get::<_, i64>(0)? * r.get::<_, i64>(1)?),
                )
            })
            .map_or(0, |b| u64::try_from(b).unwrap_or(0))
    };
    let (main, index) = (used(path), used(&with("-index")));
    let disk = on_disk(path) + on_disk(&with("-wal"));
    let index_disk = on_disk(&with("-index")) + on_disk(&with("-index-wal"));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per = |b: u64| b as f64 / events.max(1) as f64;
    format!(
        "{:.1} MiB in use (store file {:.1} MiB = {:.0} bytes/event, index file {:.1} MiB = \
         {:.0} bytes/event) for {events} events = {:.0} bytes/event; on disk with the WALs \
         {:.1} MiB + {:.1} MiB",
        mib(main + index),
        mib(main),
        per(main),
        mib(index),
        per(index),
        per(main + index),
        mib(disk),
        mib(index_disk),
    )
}

/// W1–W5, `runs` times on fresh stores.
async fn workloads(fsync: f64, runs: u64, sizes: &Sizes, on: &dyn Fn(&str) -> bool) {
    // (name, durable, rates)
    let mut results: Vec<(&str, bool, Vec<f64>)> = [
        ("W1", true),
        ("W2", true),
        ("W3", true),
        ("W4", false),
        ("W5", false),
    ]
    .iter()
    .map(|(w, durable)| (*w, *durable, Vec::new()))
    .collect();
    for run in 1..=runs {
        let mut b = Bench {
            dir: bench_dir(),
            n: 0,
        };
        let mut record = |i: usize, r: (u64, f64)| {
            let (name, durable, rates) = &mut results[i];
            println!(
                "run {run} {name}: {:>34} ({} events in {:.2} s)",
                figure(rate(r), durable.then_some(fsync)),
                r.0,
                r.1
            );
            rates.push(rate(r));
        };
        if on("W1") {
            record(0, one_writer(&b.store(), sizes.w1_appends).await);
        }
        if on("W2") {
            record(
                1,
                concurrent_writers(&b.store(), W2_WRITERS, sizes.w2_each).await,
            );
        }
        if on("W3") || on("W4") || on("W5") {
            let s = b.store();
            let r3 = batches(&s, sizes.w3_appends).await;
            if on("W3") {
                record(2, r3);
            }
            if on("W4") {
                record(3, read_everything(&s, 4096).await);
            }
            if on("W5") {
                record(4, read_one_aggregate(&s).await);
            }
        }
    }
    println!("median of {runs} runs (fdatasync {fsync:.0}/s):");
    for (w, durable, rates) in results {
        if !rates.is_empty() {
            println!(
                "{w}: {:>34}",
                figure(median(rates), durable.then_some(fsync))
            );
        }
    }
}

/// SCALE: W1, W3 and W5 on a store preloaded with many events and on empty stores.
async fn scale(fsync: f64, runs: u64, sizes: &Sizes) {
    let events = env_u64("ANNAL_BENCH_SCALE_EVENTS", 10_000_000);
    let dir = bench_dir();
    let loaded_path = dir.path().join("loaded.db");
    let loaded = SqliteStore::open(&loaded_path).expect("open");
    println!(
        "SCALE: preloading {events} events (random UUID correlation/causation ids, \
         {PRELOAD_COMMIT} per commit)"
    );
    let r = preload(&loaded, events, "loaded_family", payment_with_random_ids).await;
    println!(
        "SCALE preload: {} ({} events in {:.1} s)",
        vs_fdatasync(rate(r), fsync),
        r.0,
        r.1
    );
    println!(
        "SCALE loaded store: {}",
        size_per_event(&loaded_path, events)
    );
    // (name, durable, loaded rates, empty rates)
    let mut results: Vec<(&str, bool, Vec<f64>, Vec<f64>)> =
        [("W1", true), ("W3", true), ("W5", false)]
            .iter()
            .map(|(w, durable)| (*w, *durable, Vec::new(), Vec::new()))
            .collect();
    let event = payment_with_random_ids;
    for run in 1..=runs {
        let family = format!("run{run}_family");
        let mut empty_n = 0;
        let mut empty = || {
            empty_n += 1;
            let path = dir.path().join(format!("empty-{run}-{empty_n}.db"));
            (SqliteStore::open(&path).expect("open"), path)
        };
        let mut pair = Vec::with_capacity(3);
        // W1
        let l = one_writer_on(&loaded, sizes.w1_appends, &family, event).await;
        let (s, _) = empty();
        let e = one_writer_on(&s, sizes.w1_appends, "family", event).await;
        pair.push((l, e));
        // W3
        let l = batches_on(&loaded, sizes.w3_appends, &family, event).await;
        let (s, path) = empty();
        let e = batches_on(&s, sizes.w3_appends, "family", event).await;
        let empty_size = size_per_event(&path, s.head(&[]).await.expect("head"));
        pair.push((l, e));
        // W5
        let l = read_one_aggregate_on(&loaded, &format!("{family}_big"), event).await;
        let (s, _) = empty();
        let e = read_one_aggregate_on(&s, "family_big", event).await;
        pair.push((l, e));
        for ((name, durable, ls, es), (l, e)) in results.iter_mut().zip(pair) {
            let f = durable.then_some(fsync);
            println!(
                "run {run} {name} loaded: {:>34} ({} events in {:.2} s)",
                figure(rate(l), f),
                l.0,
                l.1
            );
            println!(
                "run {run} {name} empty:  {:>34} ({} events in {:.2} s); loaded/empty {:.2}",
                figure(rate(e), f),
                e.0,
                e.1,
                rate(l) / rate(e)
            );
            ls.push(rate(l));
            es.push(rate(e));
        }
        println!("run {run} W3 empty store: {empty_size}");
    }
    println!("SCALE median of {runs} runs, on {events} preloaded events (fdatasync {fsync:.0}/s):");
    for (w, durable, ls, es) in results {
        let (l, e) = (median(ls), median(es));
        let f = durable.then_some(fsync);
        println!(
            "{w} loaded: {:>34} | empty: {:>34} | loaded/empty {:.2}",
            figure(l, f),
            figure(e, f),
            l / e
        );
    }
    let head = loaded.head(&[]).await.expect("head");
    println!(
        "SCALE loaded store at the end: {}",
        size_per_event(&loaded_path, head)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let with_scale = args.iter().any(|a| a == "SCALE");
    let wanted: Vec<&String> = args.iter().filter(|a| a.starts_with('W')).collect();
    let on = |w: &str| (wanted.is_empty() && !with_scale) || wanted.iter().any(|x| *x == w);
    let runs = env_u64("ANNAL_BENCH_RUNS", RUNS);
    let sizes = Sizes {
        w1_appends: env_u64("ANNAL_BENCH_W1_APPENDS", 8_000),
        w2_each: env_u64("ANNAL_BENCH_W2_EACH", 4_000),
        w3_appends: env_u64("ANNAL_BENCH_W3_APPENDS", 10_000),
    };
    let fsync = print_fdatasync_rate();
    if ["W1", "W2", "W3", "W4", "W5"].iter().any(|w| on(w)) {
        workloads(fsync, runs, &sizes, &on).await;
    }
    if with_scale {
        scale(fsync, runs, &sizes).await;
    }
}
