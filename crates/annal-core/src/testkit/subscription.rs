//! Conformance cases of subscriptions ([`crate::subscription`]): history then live
//! without gap or duplicate, filters, the total order under concurrent writers, and a
//! consumer that does not read never slowing writers down.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{PATIENCE, all, ev, fill, positions, req};
use crate::append::ExpectedVersion;
use crate::read::Filter;
use crate::store::Store;
use crate::subscription::{Start, SubscriptionOptions, subscribe};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// History then live through one read by position: every event once, in order, no gap
/// at the switch, whether the start is the beginning, the end or a position.
pub async fn a_subscription_delivers_history_then_live_without_gap_or_duplicate<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 5, 2500, 7).await;
    let mut from_start = subscribe(
        s.clone(),
        SubscriptionOptions::from(Start::Beginning).page_size(300),
    )
    .await
    .expect("subscribe");
    let mut from_end = subscribe(s.clone(), SubscriptionOptions::from(Start::End))
        .await
        .expect("subscribe");
    let mut from_1000 = subscribe(s.clone(), SubscriptionOptions::from(Start::After(1000)))
        .await
        .expect("subscribe");
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { fill(&*s, "live", 3, 500, 5).await })
    };
    let mut got = Vec::new();
    while got.len() < 3000 {
        let e = tokio::time::timeout(PATIENCE, from_start.next())
            .await
            .expect("in time")
            .expect("event");
        got.push(e);
    }
    writer.await.expect("writer");
    assert_eq!(positions(&got), (1..=3000).collect::<Vec<_>>());
    assert_eq!(from_start.position(), 3000);
    let mut live = Vec::new();
    while live.len() < 500 {
        live.push(from_end.next().await.expect("event").position);
    }
    assert_eq!(live, (2501..=3000).collect::<Vec<_>>());
    let mut after = Vec::new();
    while after.len() < 2000 {
        after.push(from_1000.next().await.expect("event").position);
    }
    assert_eq!(after, (1001..=3000).collect::<Vec<_>>());
    // Nothing more: no duplicate after the last one.
    let extra = tokio::time::timeout(Duration::from_millis(200), from_start.next()).await;
    assert!(extra.is_err(), "no event beyond the head: {extra:?}");
}

/// Store-side filters and an aggregate_id prefix choose the events; the position still
/// moves past the events they skip, up to the head.
pub async fn filters_and_an_aggregate_id_prefix_choose_events_and_the_position_reaches_the_head<
    H: Harness,
>(
    h: H,
) {
    let s = Arc::new(h.store().clone());
    for i in 0..30 {
        let (agg, t) = match i % 3 {
            0 => ("family_1", "PaymentReceived"),
            1 => ("family_2", "PaymentReceived"),
            _ => ("teacher_1", "PaymentReceived"),
        };
        let kind = if i % 2 == 0 { t } else { "Noted" };
        s.append(req(
            "Family",
            agg,
            ExpectedVersion::Any,
            vec![ev(kind, "{}")],
        ))
        .await
        .expect("append");
    }
    let filter = Filter {
        event_types: vec!["PaymentReceived".into()],
        ..Filter::default()
    };
    let options = SubscriptionOptions::from(Start::Beginning)
        .filter(filter)
        .aggregate_id_prefix("family_")
        .page_size(4);
    let expected: Vec<u64> = all(&*s)
        .await
        .into_iter()
        .filter(|e| options.matches(e))
        .map(|e| e.position)
        .collect();
    assert_eq!(expected.len(), 10);
    let mut sub = subscribe(s.clone(), options).await.expect("subscribe");
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let e = sub.next().await.expect("event");
        assert!(e.aggregate_id.starts_with("family_") && e.event_type == "PaymentReceived");
        got.push(e.position);
    }
    assert_eq!(got, expected);
    let head = s.head(&[]).await.expect("head");
    let batch = tokio::time::timeout(PATIENCE, async {
        loop {
            if sub.position() == head {
                return;
            }
            let b = sub.next_batch().await.expect("batch");
            assert!(b.events.is_empty(), "nothing else matches");
        }
    })
    .await;
    assert!(batch.is_ok(), "the position reaches the head ({head})");
}

/// Eight writers racing; a subscriber started before them sees every acknowledged event
/// once, in the store's total order.
pub async fn eight_concurrent_writers_and_a_subscriber_that_sees_the_total_order<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    let mut sub = subscribe(s.clone(), SubscriptionOptions::from(Start::End))
        .await
        .expect("subscribe");
    let mut writers = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50 {
                let events = (0..1 + i % 3).map(|_| ev("Tick", "{}")).collect();
                let r = s
                    .append(req(
                        "Clock",
                        &format!("w{w}-{}", i % 4),
                        ExpectedVersion::Any,
                        events,
                    ))
                    .await
                    .expect("append");
                acked.extend(r.events.into_iter().map(|e| e.event_id));
            }
            acked
        }));
    }
    let mut acked = HashSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < acked.len() {
        let e = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(
            e.position,
            last + 1,
            "the total order: no gap, no duplicate"
        );
        last = e.position;
        seen.push(e.event_id);
    }
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), acked);
}

/// A subscriber that reads nothing does not hold the writers back, and still gets
/// everything afterwards.
pub async fn a_consumer_that_does_not_read_never_makes_writers_wait<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    let mut sub = subscribe(
        s.clone(),
        SubscriptionOptions::from(Start::Beginning).page_size(100),
    )
    .await
    .expect("subscribe");
    tokio::time::timeout(PATIENCE, fill(&*s, "clock", 4, 5000, 50))
        .await
        .expect("the writers finish while the subscriber sleeps");
    let mut n = 0;
    while n < 5000 {
        let e = sub.next().await.expect("event");
        n += 1;
        assert_eq!(e.position, n);
    }
}
