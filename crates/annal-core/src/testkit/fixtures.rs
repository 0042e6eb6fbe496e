//! What the conformance cases share: building events and append requests, reading the
//! whole log, seeding aggregates, and the waits of the subscription cases (bounded by
//! [`PATIENCE`], so a broken backend fails a test instead of hanging it).
//!
//! Panics (via `expect`) are the failures: this is test code.

use crate::append::ExpectedVersion::Any;
use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::event::{RawJson, RecordedEvent};
use crate::projection::{self, ProjectionOptions, Retry};
use crate::read::{Filter, stream_all};
use crate::store::Store;
use futures_util::TryStreamExt;
use std::time::Duration;

/// An event of `event_type` with JSON text `data`.
pub fn ev(event_type: &str, data: &str) -> NewEvent {
    NewEvent::raw(event_type, RawJson::parse(data).expect("test data is JSON"))
}

/// An append request.
pub fn req(
    aggregate_type: &str,
    aggregate_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    let mut r = AppendRequest::new(aggregate_type, aggregate_id, expected);
    r.events = events;
    r
}

/// Every event of the store, in order.
pub async fn all<S: Store + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    stream_all(store, 0, &Filter::default(), 500)
        .try_collect()
        .await
        .expect("reading the whole log")
}

/// The `i`th of a family's payments: a `PaymentReceived` event whose amount is `400 + i`.
pub fn payment(i: usize) -> NewEvent {
    ev(
        "PaymentReceived",
        &format!(
            r#"{{"amount": {}, "date": "2024-10-20", "method": "credit_card"}}"#,
            400 + i
        ),
    )
}

/// Appends `n` payments to the `Family` aggregate `id`.
pub async fn seed_family<S: Store>(s: &S, id: &str, n: usize) {
    s.append(req("Family", id, Any, (0..n).map(payment).collect()))
        .await
        .expect("seeding an aggregate");
}

/// How long a subscription case waits for something before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Appends `n` events, `per_append` at a time, to aggregates `{prefix}-0..aggregates`.
pub async fn fill<S: Store + ?Sized>(
    s: &S,
    prefix: &str,
    aggregates: usize,
    n: usize,
    per_append: usize,
) {
    let mut i = 0;
    while i < n {
        let k = per_append.min(n - i);
        let events = (0..k)
            .map(|j| ev("Tick", &format!(r#"{{"i":{}}}"#, i + j)))
            .collect();
        let agg = format!("{prefix}-{}", (i / per_append) % aggregates.max(1));
        s.append(req("Clock", &agg, ExpectedVersion::Any, events))
            .await
            .expect("append");
        i += k;
    }
}

/// The positions of `events`, in their order.
pub fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Projection options that checkpoint and retry quickly, so a case runs in milliseconds.
pub fn fast(name: &str) -> ProjectionOptions {
    ProjectionOptions::new(name)
        .checkpoint(1000, Duration::from_millis(10))
        .retry(Retry {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        })
}

/// Waits (at most [`PATIENCE`]) until the projection's progress satisfies `done`; fails
/// the test, naming `what`, if it times out or the projection ends first.
pub async fn wait_for<H>(
    p: &projection::ProjectionHandle<H>,
    what: &str,
    done: impl FnMut(&projection::Progress) -> bool,
) {
    let reached = tokio::time::timeout(PATIENCE, p.wait_until(done))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", p.progress()));
    assert!(reached, "the projection ended before {what}");
}
