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
//! causation ids. Each workload answers (events, seconds).

use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::event::RawJson;
use crate::read::{Direction, Filter, stream_all};
use crate::store::Store;
use futures_util::TryStreamExt;
use std::time::Instant;
use uuid::Uuid;

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
    let mut versions = vec![0u64; 1000];
    let t = Instant::now();
    for i in 0..appends {
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
    (appends, t.elapsed().as_secs_f64())
}

/// Runs writers numbered `first..first + writers`, `each` single-event appends apiece,
/// each over its own ten aggregates; returns when all are done.
pub async fn writers<S: Store + Clone + 'static>(s: &S, first: u64, writers: u64, each: u64) {
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
}

/// W2: `count` concurrent writers, `each` single-event appends apiece.
pub async fn concurrent_writers<S: Store + Clone + 'static>(
    s: &S,
    count: u64,
    each: u64,
) -> (u64, f64) {
    let t = Instant::now();
    writers(s, 0, count, each).await;
    (count * each, t.elapsed().as_secs_f64())
}

/// W3: `appends` appends of 100 events by one writer (1,000,000 events for 10,000).
pub async fn batches<S: Store + ?Sized>(s: &S, appends: u64) -> (u64, f64) {
    let t = Instant::now();
    for i in 0..appends {
        let events = (0..100).map(|k| payment(i * 100 + k)).collect();
        s.append(request(
            &format!("family_{}", i % 1000),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .expect("append");
    }
    (appends * 100, t.elapsed().as_secs_f64())
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
    assert_eq!(n, 100_000, "family_big holds 10,000 events");
    (n, t.elapsed().as_secs_f64())
}
