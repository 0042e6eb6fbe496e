//! Loading an aggregate of 100,000 events on the embedded store, without snapshots and
//! with a snapshot every 100 events (the worst case: 99 events after the last one), and
//! executing one command on it. Three runs (`ANNAL_BENCH_RUNS`); prints each and the
//! medians.
//!
//! The bench writes, so it first prints `fdatasync: N/s in DIR`, the disk's fdatasync
//! rate probed once for 2 s where the store goes (`ANNAL_BENCH_DIR`, default the system
//! temp dir); the durable writes are also printed as a multiple of it: the fill
//! (1,000-event appends, in events/s) and the one command (a load, then a one-event
//! append; as commands/s, one over its time).
//!
//! `cargo bench -p annal --bench aggregate_load`

use annal::sqlite::SqliteStore;
use annal::{
    Aggregate, AppendRequest, CommandContext, DomainEvent, ExpectedVersion, NewEvent, Repository,
    SnapshotPolicy, Store,
};
use annal_core::testkit::workloads::{bench_dir, env_u64, print_fdatasync_rate, vs_fdatasync};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    payments: u64,
    last_date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum AccountEvent {
    PaymentReceived {
        amount: i64,
        date: String,
        method: String,
    },
}

impl DomainEvent for AccountEvent {}

#[derive(Debug, Clone)]
struct Pay(i64);

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    const SNAPSHOT_TAG: &'static str = "account-v1";
    type Event = AccountEvent;
    type Command = Pay;
    type Error = std::convert::Infallible;

    fn apply(&mut self, e: &AccountEvent) {
        let AccountEvent::PaymentReceived { amount, date, .. } = e;
        self.balance += amount;
        self.payments += 1;
        self.last_date.clone_from(date);
    }

    fn handle(&self, Pay(amount): Pay) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![AccountEvent::PaymentReceived {
            amount,
            date: "2024-10-20".into(),
            method: "card".into(),
        }])
    }
}

const EVENTS: u64 = 100_099;

/// Writes the aggregate; answers its rate in events/s.
async fn fill(store: &Arc<dyn Store>) -> f64 {
    let t = Instant::now();
    let mut written = 0;
    while written < EVENTS {
        let n = (EVENTS - written).min(1000);
        let mut r = AppendRequest::new("Account", "acct-1", ExpectedVersion::Exact(written));
        for i in 0..n {
            r = r.event(
                NewEvent::new(
                    "PaymentReceived",
                    &serde_json::json!({"amount": 450 + (written + i) % 7, "date": "2024-10-20", "method": "card"}),
                )
                .expect("event"),
            );
        }
        store.append(r).await.expect("append");
        written += n;
    }
    EVENTS as f64 / t.elapsed().as_secs_f64()
}

/// A command's time in ms as commands/s, next to the fdatasync rate.
fn commands(ms: f64, fsync: f64) -> String {
    vs_fdatasync(1000.0 / ms, fsync).replace("events/s", "commands/s")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn time_loads(repo: &Repository<Account>, n: usize) -> f64 {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let loaded = repo.load("acct-1").await.expect("load");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(loaded.version >= EVENTS);
    }
    median(times)
}

#[tokio::main]
async fn main() {
    let fsync = print_fdatasync_rate();
    let runs = env_u64("ANNAL_BENCH_RUNS", 3);
    let (mut plain, mut snap, mut exec_plain, mut exec_snap) = (vec![], vec![], vec![], vec![]);
    let mut fills = vec![];
    for run in 1..=runs {
        let dir = bench_dir();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("agg.db")).expect("open"));
        let filled = fill(&store).await;
        let without = Repository::<Account>::new(store.clone());
        let p = time_loads(&without, 5).await;
        let t = Instant::now();
        without
            .execute("acct-1", Pay(1), &CommandContext::default())
            .await
            .expect("execute");
        let ep = t.elapsed().as_secs_f64() * 1000.0;

        // The policy's latest snapshot: at 100,000, with 99 (then 100) events after it.
        let state = without
            .load_at_version("acct-1", 100_000)
            .await
            .expect("state")
            .state;
        let json = annal::RawJson::from_value(&state).expect("json");
        store
            .save_snapshot("acct-1", 100_000, Account::SNAPSHOT_TAG, json)
            .await
            .expect("snapshot");
        let with =
            Repository::<Account>::new(store.clone()).with_snapshots(SnapshotPolicy::ReadOnly);
        let s = time_loads(&with, 200).await;
        let t = Instant::now();
        with.execute("acct-1", Pay(1), &CommandContext::default())
            .await
            .expect("execute");
        let es = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "run {run}: fill {}; load without snapshots {p:.1} ms, with a snapshot every 100 \
             {s:.3} ms; one command {ep:.1} ms without ({}), {es:.3} ms with ({})",
            vs_fdatasync(filled, fsync),
            commands(ep, fsync),
            commands(es, fsync)
        );
        fills.push(filled);
        plain.push(p);
        snap.push(s);
        exec_plain.push(ep);
        exec_snap.push(es);
    }
    let (ep, es) = (median(exec_plain), median(exec_snap));
    println!(
        "median of {runs} (fdatasync {fsync:.0}/s): fill {}; load of {EVENTS} events without snapshots {:.1} ms ({:.0} events/s replayed); with snapshots {:.3} ms; command {ep:.1} ms ({}) / {es:.3} ms ({})",
        vs_fdatasync(median(fills), fsync),
        median(plain.clone()),
        EVENTS as f64 / (median(plain) / 1000.0),
        median(snap),
        commands(ep, fsync),
        commands(es, fsync)
    );
}
