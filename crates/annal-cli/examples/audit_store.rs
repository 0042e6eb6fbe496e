//! Builds a large store for timing the audit console (docs/console.md, "Measured"): the
//! seed's co-op story, then `N` more events (default 10,000,000) of a `Member`
//! aggregate type with the co-op's event names, five users, a correlation id per
//! aggregate, all authenticated as principal `loader`. Written in-process through the
//! library, in transactions of 1,000 events (100 aggregates × 10), four in flight so
//! the writer groups them.
//!
//! `cargo run --release -p annal-cli --example audit_store -- /tmp/audit/annal.db 10000000`

use annal::sqlite::SqliteStore;
use annal::{AppendRequest, ExpectedVersion, NewEvent, RawJson, Store, Transaction};
use std::sync::Arc;
use std::time::Instant;

const TYPES: [&str; 5] = [
    "FamilyEnrolled",
    "ChildAdded",
    "PaymentDue",
    "PaymentReceived",
    "PaymentOverdue",
];
const USERS: [&str; 5] = ["sarah", "billing-job", "portal-access", "admin", "teacher"];
const PER_AGGREGATE: u64 = 10;
const PER_TRANSACTION: u64 = 1_000;
const IN_FLIGHT: u64 = 4;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: audit_store PATH [EVENTS]")?;
    let total: u64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    let store = Arc::new(SqliteStore::open(&path)?);
    if store.head(&[]).await? == 0 {
        annal_example_coop::story::tell(store.clone(), &mut std::io::sink()).await?;
    }
    let start = Instant::now();
    let transactions = total / PER_TRANSACTION;
    let mut next = 0u64;
    let mut done = 0u64;
    let mut running = tokio::task::JoinSet::new();
    while next < transactions || !running.is_empty() {
        while next < transactions && (running.len() as u64) < IN_FLIGHT {
            let store = store.clone();
            let t = next;
            running.spawn(async move {
                store.transact(transaction(t)?).await?;
                Ok::<(), Failure>(())
            });
            next += 1;
        }
        if let Some(finished) = running.join_next().await {
            finished??;
            done += 1;
            if done % 1_000 == 0 {
                let written = done * PER_TRANSACTION;
                let secs = start.elapsed().as_secs_f64();
                eprintln!("{written} events, {:.0}/s", written as f64 / secs);
            }
        }
    }
    eprintln!(
        "{} events in {:.1} s; head {}",
        transactions * PER_TRANSACTION,
        start.elapsed().as_secs_f64(),
        store.head(&[]).await?
    );
    Ok(())
}

/// Transaction `t`: aggregates `member_{t*100}..` with ten events each.
fn transaction(t: u64) -> Result<Transaction, Failure> {
    let aggregates = PER_TRANSACTION / PER_AGGREGATE;
    let mut appends = Vec::with_capacity(aggregates as usize);
    for a in 0..aggregates {
        let id = t * aggregates + a;
        let user = USERS[(id % 5) as usize];
        let mut request = AppendRequest::new(
            "Member",
            format!("member_{id:08}"),
            ExpectedVersion::NoStream,
        )
        .by(user)
        .correlated(format!("member_run_{id}"))
        .authenticated_as("loader");
        for v in 0..PER_AGGREGATE {
            let data = RawJson::parse(format!(
                r#"{{"member":{id},"step":{v},"amount":{}}}"#,
                400 + v
            ))?;
            request = request.event(NewEvent::raw(TYPES[(v % 5) as usize], data));
        }
        appends.push(request);
    }
    Ok(Transaction {
        appends,
        checkpoint: None,
    })
}
