//! The cost of personal data (docs/privacy.md): W1–W5 on the embedded store with events
//! whose data is entirely personal (sealed with the family's key) against the same
//! events in the clear, alternating the two in every run on fresh stores, both opened
//! with a key-encryption key. Prints every run, then the medians (of
//! `ANNAL_BENCH_RUNS`, default 3) and personal/plain for each workload.
//!
//! `cargo bench -p annal-sqlite --bench privacy`; sizes as for `--bench workloads`:
//! `ANNAL_BENCH_W1_APPENDS` (8,000), `ANNAL_BENCH_W2_EACH` (4,000 for each of 16
//! writers), `ANNAL_BENCH_W3_APPENDS` (10,000 appends of 100 events; W4 and W5 read
//! that store; `ANNAL_BENCH_W4_READS` reads each shape's store whole that many times, in
//! turn with the other shape's, 1 by default, and W4 is their median),
//! `ANNAL_BENCH_DIR`; `ANNAL_BENCH_SHAPE=plain` or `personal` runs that shape
//! alone (for a profile of one shape).
//!
//! Each run does W1 and W2 of both shapes (each store closed after its workload), then
//! W3 of each (the first shape's W3 store stays open, idle, during the second's W3),
//! then W4 reading the two W3 stores in turn and W5 on each. A personal store's first
//! W4 read finds no data keys kept for reads yet and reads their rows, as any first
//! read does; later reads use the kept keys.

use annal_core::NewEvent;
use annal_core::privacy::Keyring;
use annal_core::testkit::workloads::{
    batches_on, bench_dir, concurrent_writers_on, env_u64, index_caught_up, median, one_writer_on,
    payment, payment_personal, print_fdatasync_rate, rate, read_everything, read_one_aggregate_on,
};
use annal_sqlite::{Options, SqliteStore};

const W2_WRITERS: u64 = 16;

/// A shape of events: its name and the maker of its `i`-th event.
type Shape = (&'static str, fn(u64) -> NewEvent);
const NAMES: [&str; 5] = ["W1", "W2", "W3", "W4", "W5"];

fn open(dir: &std::path::Path, n: usize) -> SqliteStore {
    let options = Options {
        keyring: Some(Keyring::from_bytes([7; 32])),
        ..Options::default()
    };
    SqliteStore::open_with(dir.join(format!("bench-{n}.db")), options).expect("open")
}

/// W1 and W2 with `event` as the events' shape: events/s of each (their stores are
/// closed before this returns).
async fn small_writes(
    dir: &std::path::Path,
    n: &mut usize,
    event: fn(u64) -> NewEvent,
    (w1, w2): (u64, u64),
) -> Vec<f64> {
    let mut next = || {
        *n += 1;
        open(dir, *n)
    };
    let r1 = rate(one_writer_on(&next(), w1, "family", event).await);
    let r2 = rate(concurrent_writers_on(&next(), W2_WRITERS, w2, event).await);
    vec![r1, r2]
}

/// W3 with `event` as the events' shape: events/s, and its store once its index has
/// caught up (W4 and W5 read it).
async fn batch_writes(
    dir: &std::path::Path,
    n: &mut usize,
    event: fn(u64) -> NewEvent,
    w3: u64,
) -> (f64, SqliteStore) {
    *n += 1;
    let s = open(dir, *n);
    let r3 = rate(batches_on(&s, w3, "family", event).await);
    let behind = index_caught_up(&s).await;
    println!(
        "  the index caught up {:.0} ms after W3",
        behind.as_secs_f64() * 1000.0
    );
    (r3, s)
}

#[tokio::main]
async fn main() {
    let runs = env_u64("ANNAL_BENCH_RUNS", 3);
    let reads = env_u64("ANNAL_BENCH_W4_READS", 1).max(1);
    let sizes = (
        env_u64("ANNAL_BENCH_W1_APPENDS", 8_000),
        env_u64("ANNAL_BENCH_W2_EACH", 4_000),
        env_u64("ANNAL_BENCH_W3_APPENDS", 10_000),
    );
    let fsync = print_fdatasync_rate();
    let mut plain: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let mut personal: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let only = std::env::var("ANNAL_BENCH_SHAPE").ok();
    if let Some(o) = &only {
        assert!(
            o == "plain" || o == "personal",
            "ANNAL_BENCH_SHAPE is plain or personal, not {o:?}"
        );
    }
    for run in 1..=runs {
        let dir = bench_dir();
        let mut n = 0;
        // Alternate which goes first, so neither always meets a warmer disk.
        let order: [Shape; 2] = if run % 2 == 1 {
            [("plain", payment), ("personal", payment_personal)]
        } else {
            [("personal", payment_personal), ("plain", payment)]
        };
        let order: Vec<Shape> = order
            .into_iter()
            .filter(|(shape, _)| only.as_deref().is_none_or(|o| o == *shape))
            .collect();
        // W1 and W2 of both shapes before either W3 store exists; then W3 of each.
        let mut small = Vec::new();
        for (_, event) in &order {
            small.push(small_writes(dir.path(), &mut n, *event, (sizes.0, sizes.1)).await);
        }
        let mut done = Vec::new();
        for ((shape, event), mut rates) in order.into_iter().zip(small) {
            let (r3, store) = batch_writes(dir.path(), &mut n, event, sizes.2).await;
            rates.push(r3);
            done.push((shape, event, rates, store, Vec::new()));
        }
        // W4 reads each shape's store in turn, `reads` times, so that both shapes meet
        // the machine in the same state; W4 is each one's median.
        for k in 0..reads {
            for i in 0..done.len() {
                let j = if k % 2 == 0 { i } else { done.len() - 1 - i };
                if let Some((_, _, _, store, r4)) = done.get_mut(j) {
                    r4.push(rate(read_everything(store, 4096).await));
                }
            }
        }
        for (shape, event, mut rates, store, r4) in done {
            rates.push(median(r4));
            rates.push(rate(
                read_one_aggregate_on(&store, "family_big", event).await,
            ));
            for (i, r) in rates.iter().enumerate() {
                println!("run {run} {shape:<8} {}: {r:>10.0} events/s", NAMES[i]);
                match shape {
                    "plain" => plain[i].push(*r),
                    _ => personal[i].push(*r),
                }
            }
        }
    }
    if plain[0].is_empty() || personal[0].is_empty() {
        let (shape, rates) = if plain[0].is_empty() {
            ("personal", &personal)
        } else {
            ("plain", &plain)
        };
        println!("median of {runs} runs (fdatasync {fsync:.0}/s), {shape} alone:");
        for (i, r) in rates.iter().enumerate() {
            println!("{}: {:>10.0} events/s", NAMES[i], median(r.clone()));
        }
        return;
    }
    println!("median of {runs} runs (fdatasync {fsync:.0}/s): plain, personal, personal/plain");
    for i in 0..5 {
        let (p, q) = (median(plain[i].clone()), median(personal[i].clone()));
        println!(
            "{}: {p:>10.0} {q:>10.0} events/s  {:.2}× ({:+.1}%)",
            NAMES[i],
            q / p,
            (q / p - 1.0) * 100.0
        );
    }
}
