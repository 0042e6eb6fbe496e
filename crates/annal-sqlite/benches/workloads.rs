//! Workloads W1–W5 of the foundation issue on the embedded store, in process, each run
//! three times on fresh stores; prints every run and the median in events/s.
//!
//! `cargo bench -p annal-sqlite --bench workloads` (all), or name some: `-- W1 W4`.
//! `ANNAL_BENCH_DIR` chooses where the store files go (default: the system temp dir),
//! so the figures are of that disk's fsync.

use annal_core::testkit::workloads::{
    batches, concurrent_writers, median, one_writer, rate, read_everything, read_one_aggregate,
};
use annal_sqlite::SqliteStore;

const RUNS: usize = 3;

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
            record(0, one_writer(&b.store(), 8_000).await);
        }
        if on("W2") {
            record(1, concurrent_writers(&b.store(), 16, 4_000).await);
        }
        if on("W3") || on("W4") || on("W5") {
            let s = b.store();
            let r3 = batches(&s, 10_000).await;
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
    println!("median of {RUNS} runs:");
    for (w, rates) in results {
        if !rates.is_empty() {
            println!("{w}: {:>12.0} events/s", median(rates));
        }
    }
}
