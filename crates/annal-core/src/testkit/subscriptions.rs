//! The subscription cases: subscriptions, durable projections, triggers and consumer
//! groups against a real backend (`subscription_suite!(make_harness)`). Panics (via
//! `expect`) are the failures: this is test code.

use super::Harness;
use super::cases::{ev, req};
use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::checkpoint::CheckpointStatus;
use crate::event::RecordedEvent;
use crate::group::ConsumerGroup;
use crate::projection::{
    self, FailurePolicy, Handler, HandlerError, ProjectionError, ProjectionOptions, Retry,
};
use crate::read::Filter;
use crate::store::Store;
use crate::subscription::{Start, SubscriptionOptions, subscribe};
use crate::trigger::{Trigger, reaction};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(60);

/// Appends `n` events, `per_append` at a time, to aggregates `{prefix}-0..aggregates`.
async fn fill<S: Store + ?Sized>(
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

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Where a gated handler says it has arrived.
type Tell = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// A handler that records what it is given (position, aggregate, version), optionally
/// failing or blocking on chosen events.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(u64, String, u64)>>>,
    resets: Arc<Mutex<u32>>,
    calls: u64,
    /// Fail every call whose 1-based number is a multiple of this.
    fail_every: Option<u64>,
    /// Always fail on this position.
    poison: Option<u64>,
    /// On this position: record, tell, then never return.
    gate: Option<(u64, Tell)>,
}

impl Recorder {
    fn seen(&self) -> Vec<(u64, String, u64)> {
        self.seen.lock().expect("lock").clone()
    }
    fn positions(&self) -> Vec<u64> {
        self.seen().into_iter().map(|s| s.0).collect()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        self.calls += 1;
        if self.fail_every.is_some_and(|n| self.calls % n == 0) {
            return Err(format!("call {} fails on purpose", self.calls).into());
        }
        if self.poison == Some(e.position) {
            return Err("this event always fails".into());
        }
        self.seen.lock().expect("lock").push((
            e.position,
            e.aggregate_id.clone(),
            e.aggregate_version,
        ));
        if let Some((at, tell)) = &self.gate
            && *at == e.position
        {
            if let Some(tx) = tell.lock().expect("lock").take() {
                let _ = tx.send(());
            }
            std::future::pending::<()>().await;
        }
        Ok(Vec::new())
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.seen.lock().expect("lock").clear();
        *self.resets.lock().expect("lock") += 1;
        Ok(())
    }
}

fn fast(name: &str) -> ProjectionOptions {
    ProjectionOptions::new(name)
        .checkpoint(1000, Duration::from_millis(10))
        .retry(Retry {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        })
}

async fn wait_for<H>(
    p: &projection::ProjectionHandle<H>,
    what: &str,
    done: impl FnMut(&projection::Progress) -> bool,
) {
    let reached = tokio::time::timeout(PATIENCE, p.wait_until(done))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", p.progress()));
    assert!(reached, "the projection ended before {what}");
}

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
    let expected: Vec<u64> = crate::testkit::cases::all(&*s)
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

/// Kill a consumer mid-stream and restart it: nothing is missed, and the only events
/// handled twice are those handled after the last checkpoint.
pub async fn a_killed_consumer_restarts_from_its_checkpoint_missing_nothing<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 10, 1000, 10).await;
    let (tx, rx) = oneshot::channel();
    let first = Recorder {
        gate: Some((600, Arc::new(Mutex::new(Some(tx))))),
        ..Recorder::default()
    };
    let options = ProjectionOptions::new("killed")
        .checkpoint(50, Duration::from_secs(3600))
        .subscription(SubscriptionOptions::default().page_size(128));
    let run = projection::spawn(s.clone(), first.clone(), options.clone());
    tokio::time::timeout(PATIENCE, rx)
        .await
        .expect("reaches 600")
        .expect("told");
    run.kill().await;
    // A later write by the same store is committed after anything the killed runner queued.
    s.put_checkpoint(crate::checkpoint::CheckpointWrite::new("barrier", 0))
        .await
        .expect("barrier");
    let at_crash = s
        .checkpoint("killed")
        .await
        .expect("read")
        .expect("checkpointed")
        .position;
    assert!(
        (550..600).contains(&at_crash),
        "checkpoints every 50 events: {at_crash}"
    );
    assert_eq!(first.positions(), (1..=600).collect::<Vec<_>>());

    let second = Recorder::default();
    let run = projection::spawn(s.clone(), second.clone(), options);
    wait_for(&run, "position 1000", |p| p.position == 1000).await;
    run.stop().await.expect("stops");
    assert_eq!(
        second.positions(),
        (at_crash + 1..=1000).collect::<Vec<_>>(),
        "resumes right after the checkpoint"
    );
    let c = s.checkpoint("killed").await.expect("read").expect("exists");
    assert_eq!((c.position, c.status), (1000, CheckpointStatus::Stopped));
}

/// A handler that fails every third call: each failure is retried, every event is
/// handled once and in order, and the checkpoint counts the errors.
pub async fn a_handler_failing_every_third_call_handles_every_event_once_in_order<H: Harness>(
    h: H,
) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 3, 300, 10).await;
    let handler = Recorder {
        fail_every: Some(3),
        ..Recorder::default()
    };
    let run = projection::spawn(s.clone(), handler.clone(), fast("flaky"));
    wait_for(&run, "position 300", |p| p.position == 300).await;
    let progress = run.progress();
    let back = run.stop().await.expect("stops");
    assert_eq!(handler.positions(), (1..=300).collect::<Vec<_>>());
    // Calls go success, success, failure (retried), …: 300 successes take 449 calls.
    assert_eq!(back.calls, 449);
    assert_eq!(progress.error_count, 149);
    let c = s.checkpoint("flaky").await.expect("read").expect("exists");
    assert_eq!(c.error_count, 149);
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.contains("fails on purpose")),
        "{c:?}"
    );
}

/// An event that keeps failing faults the projection just before it, or (by policy)
/// is skipped and named in last_error.
pub async fn an_event_that_keeps_failing_faults_the_projection_or_is_skipped_by_policy<
    H: Harness,
>(
    h: H,
) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 2, 20, 1).await;
    let poisoned = Recorder {
        poison: Some(7),
        ..Recorder::default()
    };
    let run = projection::spawn(s.clone(), poisoned.clone(), fast("strict"));
    let err = tokio::time::timeout(PATIENCE, run.join())
        .await
        .expect("ends")
        .err()
        .expect("faults");
    assert!(
        matches!(err, ProjectionError::Faulted { position: 7, .. }),
        "{err}"
    );
    let c = s.checkpoint("strict").await.expect("read").expect("exists");
    assert_eq!(
        (c.position, c.status, c.error_count),
        (6, CheckpointStatus::Faulted, 3)
    );
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.contains("position 7"))
    );
    assert_eq!(poisoned.positions(), (1..=6).collect::<Vec<_>>());

    let skipping = Recorder {
        poison: Some(7),
        ..Recorder::default()
    };
    let run = projection::spawn(
        s.clone(),
        skipping.clone(),
        fast("lenient").on_failure(FailurePolicy::Skip),
    );
    wait_for(&run, "position 20", |p| p.position == 20).await;
    run.stop().await.expect("stops");
    let mut expected: Vec<u64> = (1..=20).collect();
    expected.retain(|p| *p != 7);
    assert_eq!(skipping.positions(), expected);
    let c = s
        .checkpoint("lenient")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((c.position, c.status), (20, CheckpointStatus::Stopped));
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("skipped") && e.contains("position 7")),
        "{c:?}"
    );
}

/// A rebuild while writers keep appending: the handler is reset, replays the whole log
/// and the new events, then goes live; the result is as if it had never stopped.
pub async fn a_rebuild_under_live_load_replays_everything_then_goes_live<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 5, 2000, 20).await;
    let handler = Recorder::default();
    let run = projection::spawn(s.clone(), handler.clone(), fast("rebuilt"));
    wait_for(&run, "position 2000", |p| p.position == 2000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fill(&*s, "live", 3, 10, 2).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    run.rebuild().await;
    wait_for(&run, "the reset", |_| {
        *handler.resets.lock().expect("lock") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let head = s.head(&[]).await.expect("head");
    assert!(head > 2000, "writers kept writing");
    wait_for(&run, "live at the head", |p| {
        p.position == head && p.status == CheckpointStatus::Running
    })
    .await;
    run.stop().await.expect("stops");
    assert_eq!(
        handler.positions(),
        (1..=head).collect::<Vec<_>>(),
        "the rebuilt read model saw every event once, in order"
    );
    let c = s
        .checkpoint("rebuilt")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(c.position, head);
}

/// Lag is the head minus the checkpoint; every checkpoint is listed.
pub async fn lag_is_the_head_minus_the_checkpoint_for_every_listed_projection<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 2, 50, 5).await;
    let run = projection::spawn(s.clone(), Recorder::default(), fast("ahead"));
    wait_for(&run, "position 50", |p| {
        p.position == 50 && p.checkpointed == 50
    })
    .await;
    run.stop().await.expect("stops");
    s.put_checkpoint(crate::checkpoint::CheckpointWrite::new("behind", 20))
        .await
        .expect("write");
    fill(&*s, "clock", 2, 10, 5).await;
    let list = projection::list(&*s).await.expect("list");
    let lags: Vec<_> = list
        .iter()
        .map(|p| {
            (
                p.checkpoint.name.as_str(),
                p.head,
                p.lag,
                p.checkpoint.status,
            )
        })
        .collect();
    assert_eq!(
        lags,
        [
            ("ahead", 60, 10, CheckpointStatus::Stopped),
            ("behind", 60, 40, CheckpointStatus::Running)
        ]
    );
    let one = projection::info(&*s, "behind")
        .await
        .expect("info")
        .expect("exists");
    assert_eq!(one.lag, 40);
    assert!(
        projection::info(&*s, "nobody")
            .await
            .expect("info")
            .is_none()
    );
}

/// A trigger appends its reaction caused by the triggering event, in its correlation,
/// by the trigger, exactly once even when it is restarted and sees the event again.
pub async fn a_trigger_reacts_once_with_causation_and_correlation<H: Harness>(h: H) {
    let s = Arc::new(h.store().clone());
    let overdue = s
        .append(
            AppendRequest::new("Family", "family_456", ExpectedVersion::Any)
                .correlated("billing_run_oct")
                .by("billing")
                .event(NewEvent::raw(
                    "PaymentOverdue",
                    crate::RawJson::empty_object(),
                )),
        )
        .await
        .expect("append")
        .events
        .remove(0);
    let react = |name: &str, e: &RecordedEvent| {
        if e.event_type != "PaymentOverdue" {
            return Vec::new();
        }
        vec![reaction(
            name,
            e,
            "Family",
            &e.aggregate_id,
            ExpectedVersion::Any,
            vec![ev("PortalAccessLocked", r#"{"reason":"payment overdue"}"#)],
        )]
    };
    let run = projection::spawn(
        s.clone(),
        Trigger::new("portal-lock", react),
        fast("portal-lock"),
    );
    wait_for(&run, "the reaction", |p| p.position >= 2).await;
    run.stop().await.expect("stops");
    // Start again from before the cause: the reaction is not appended twice.
    s.put_checkpoint(crate::checkpoint::CheckpointWrite::new("portal-lock", 0))
        .await
        .expect("rewind");
    let run = projection::spawn(
        s.clone(),
        Trigger::new("portal-lock", react),
        fast("portal-lock"),
    );
    wait_for(&run, "the replay", |p| p.position >= 2).await;
    run.stop().await.expect("stops");
    let events = crate::testkit::cases::all(&*s).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["PaymentOverdue", "PortalAccessLocked"]);
    let lock = &events[1];
    assert_eq!(lock.causation_id, Some(overdue.event_id.to_string()));
    assert_eq!(lock.correlation_id.as_deref(), Some("billing_run_oct"));
    assert_eq!(lock.user_id, "portal-lock");
}

/// Three members share a subscription; one leaves mid-stream. Each aggregate's events
/// go to one member at a time, every event is handled exactly once, in order per aggregate.
pub async fn a_consumer_group_of_three_keeps_each_aggregate_in_order_when_a_member_leaves<
    H: Harness,
>(
    h: H,
) {
    type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;
    struct Member {
        name: String,
        seen: Seen,
    }
    #[async_trait]
    impl Handler for Member {
        async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
            self.seen.lock().expect("lock").push((
                e.aggregate_id.clone(),
                self.name.clone(),
                e.aggregate_version,
            ));
            Ok(Vec::new())
        }
    }
    let s = Arc::new(h.store().clone());
    let seen: Seen = Arc::default();
    let member = |name: &str| Member {
        name: name.into(),
        seen: seen.clone(),
    };
    let mut group = ConsumerGroup::new(s.clone(), fast("billing"), 12);
    for m in ["a", "b", "c"] {
        group.join(m, member(m)).await.expect("join");
    }
    fill(&*s, "family", 30, 600, 2).await;
    let owners: BTreeMap<u32, String> = group.assignment();
    assert_eq!(owners.len(), 12);
    for m in ["a", "b", "c"] {
        assert_eq!(owners.values().filter(|o| *o == m).count(), 4, "{owners:?}");
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { fill(&*s, "family", 30, 600, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    group.leave("b").await.expect("leave");
    let after: BTreeMap<u32, String> = group.assignment();
    for (p, owner) in &owners {
        if owner != "b" {
            assert_eq!(&after[p], owner, "only b's partitions move");
        }
    }
    assert!(after.values().all(|m| m != "b"));
    writer.await.expect("writer");
    let head = s.head(&[]).await.expect("head");
    let done = tokio::time::timeout(PATIENCE, async {
        loop {
            if seen.lock().expect("lock").len() as u64 >= head {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "every event is handled");
    group.stop().await.expect("stops");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len() as u64,
        head,
        "exactly once: a graceful leave redelivers nothing"
    );
    let mut next: BTreeMap<&str, (u64, &str, u32)> = BTreeMap::new();
    for (agg, member, version) in &seen {
        let (expected, owner, moves) = next.entry(agg).or_insert((1, member, 0));
        assert_eq!(*version, *expected, "{agg}: in order, none lost");
        if owner != member {
            assert_eq!(*owner, "b", "{agg}: only b's aggregates change hands");
            *moves += 1;
            *owner = member;
        }
        assert!(*moves <= 1, "{agg} moved once at most");
        *expected += 1;
    }
    assert_eq!(next.len(), 30);
    assert!(
        seen.iter().any(|(_, m, _)| m == "b"),
        "b took part before leaving"
    );
}

/// Leases are exclusive; an expired or released lease is taken with a higher fencing
/// token; the old owner can neither renew it nor write a fenced checkpoint or commit;
/// heartbeats answer the live members; bad input is refused with typed errors.
pub async fn partition_leases_are_exclusive_and_change_hands_with_a_higher_token<H: Harness>(h: H) {
    use crate::checkpoint::CheckpointWrite;
    use crate::error::Error;
    let s = h.store();
    let long = Duration::from_secs(30);
    let a0 = s
        .acquire_lease("billing", 0, "a", long)
        .await
        .expect("acquire")
        .expect("a free partition is taken");
    assert_eq!(
        (a0.group.as_str(), a0.partition, a0.owner.as_str()),
        ("billing", 0, "a")
    );
    assert!(a0.token >= 1);
    assert_eq!(
        s.acquire_lease("billing", 0, "b", long)
            .await
            .expect("acquire"),
        None
    );
    assert_eq!(
        s.acquire_lease("billing", 0, "a", long)
            .await
            .expect("acquire"),
        None,
        "a held lease is renewed, not acquired again"
    );
    let renewed = s
        .renew_lease(&a0, long)
        .await
        .expect("renew")
        .expect("the owner renews");
    assert_eq!(renewed.token, a0.token, "renewing keeps the token");
    assert!(renewed.expires_at >= a0.expires_at);
    // Another group's partition 0 is another lease.
    assert!(
        s.acquire_lease("shipping", 0, "b", long)
            .await
            .expect("acquire")
            .is_some()
    );

    // A short lease lapses and is taken by another member with a higher token.
    let a1 = s
        .acquire_lease("billing", 1, "a", Duration::from_millis(50))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let b1 = s
        .acquire_lease("billing", 1, "b", long)
        .await
        .expect("acquire")
        .expect("an expired lease is taken");
    assert!(b1.token > a1.token, "the fencing token increases");
    assert_eq!(
        s.renew_lease(&a1, long).await.expect("renew"),
        None,
        "a lost it"
    );
    assert!(
        !s.release_lease(&a1).await.expect("release"),
        "a cannot release it"
    );
    let held = s.leases("billing").await.expect("leases");
    let owners: Vec<(u32, &str)> = held
        .iter()
        .map(|l| (l.partition, l.owner.as_str()))
        .collect();
    assert_eq!(owners, [(0, "a"), (1, "b")]);

    // Fencing: the old owner's checkpoint write and commit fail and write nothing.
    let stale = CheckpointWrite::new("billing.p1of2", 0).fenced(a1.fence());
    match s.put_checkpoint(stale.clone()).await {
        Err(Error::LeaseConflict {
            group, partition, ..
        }) => {
            assert_eq!((group.as_str(), partition), ("billing", 1));
        }
        other => panic!("a stale owner's checkpoint write must fail: {other:?}"),
    }
    let stale_commit = crate::append::Transaction {
        appends: vec![req(
            "Clock",
            "c-1",
            ExpectedVersion::Any,
            vec![ev("Tick", "{}")],
        )],
        checkpoint: Some(CheckpointWrite::new("billing.p1of2", 1).fenced(a1.fence())),
    };
    assert!(matches!(
        s.transact(stale_commit).await,
        Err(Error::LeaseConflict { .. })
    ));
    assert_eq!(s.head(&[]).await.expect("head"), 0, "nothing was written");
    assert_eq!(s.checkpoint("billing.p1of2").await.expect("read"), None);
    s.put_checkpoint(CheckpointWrite::new("billing.p1of2", 0).fenced(b1.fence()))
        .await
        .expect("the owner's fenced write commits");

    // A release keeps the token: the next owner's is higher still, and the released
    // owner's fence no longer holds.
    assert!(s.release_lease(&b1).await.expect("release"));
    assert!(matches!(
        s.put_checkpoint(CheckpointWrite::new("billing.p1of2", 0).fenced(b1.fence()))
            .await,
        Err(Error::LeaseConflict { .. })
    ));
    let c1 = s
        .acquire_lease("billing", 1, "c", long)
        .await
        .expect("acquire")
        .expect("a released lease is free");
    assert!(c1.token > b1.token);

    // Heartbeats.
    assert_eq!(
        s.heartbeat("billing", "b", long).await.expect("beat"),
        ["b"]
    );
    assert_eq!(
        s.heartbeat("billing", "a", long).await.expect("beat"),
        ["a", "b"]
    );
    s.heartbeat("billing", "x", Duration::from_millis(30))
        .await
        .expect("beat");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        s.heartbeat("billing", "a", Duration::ZERO)
            .await
            .expect("leave"),
        ["b"],
        "a left and x lapsed"
    );

    // Bad input.
    for bad in [
        s.acquire_lease("", 0, "a", long).await,
        s.acquire_lease("billing", 0, "", long).await,
        s.acquire_lease("billing", 0, "a", Duration::ZERO).await,
        s.acquire_lease("billing", 0, "a", Duration::from_secs(7200))
            .await,
    ] {
        assert!(
            matches!(bad, Err(Error::InvalidRequest { .. })),
            "bad input is refused: {bad:?}"
        );
    }
}

/// Three members, each on its own as separate processes would be, share a group of 12
/// partitions over 2,400 events in 40 aggregates while a writer appends; one leaves
/// gracefully, one crashes (its leases expire). Every aggregate's events are handled in
/// order, none is lost, and only the crashed member's are redelivered.
pub async fn a_group_of_three_members_with_one_leaving_and_one_crashing_loses_nothing<
    H: Harness,
>(
    h: H,
) {
    use crate::group::{GroupMember, MemberOptions};
    type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;
    struct Member {
        name: String,
        seen: Seen,
    }
    #[async_trait]
    impl Handler for Member {
        async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
            self.seen.lock().expect("lock").push((
                e.aggregate_id.clone(),
                self.name.clone(),
                e.aggregate_version,
            ));
            Ok(Vec::new())
        }
    }
    let s = Arc::new(h.store().clone());
    let seen: Seen = Arc::default();
    let options = MemberOptions::new(fast("orders"), 12).ttl(Duration::from_secs(2));
    let join = |name: &str| {
        GroupMember::join(
            s.clone(),
            name,
            Member {
                name: name.into(),
                seen: seen.clone(),
            },
            options.clone(),
        )
        .expect("join")
    };
    fill(&*s, "order", 40, 400, 4).await;
    let members = [join("a"), join("b"), join("c")];
    let balanced = tokio::time::timeout(PATIENCE, async {
        loop {
            let counts: Vec<usize> = members.iter().map(|m| m.status().leases.len()).collect();
            if counts == [4, 4, 4] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(balanced.is_ok(), "three members take four partitions each");
    let mut all: BTreeSet<u32> = BTreeSet::new();
    for m in &members {
        all.extend(m.status().partitions());
    }
    assert_eq!(all.len(), 12, "no partition is held twice");

    let writer = {
        let s = s.clone();
        tokio::spawn(async move { fill(&*s, "order", 40, 2000, 4).await })
    };
    let [a, b, c] = members;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b_partitions = b.status().partitions();
    assert_eq!(b.status().lost, 0, "b lost no lease before leaving");
    b.leave().await.expect("b leaves gracefully");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let a_lost = a.status().lost;
    assert_eq!(
        a_lost, 0,
        "a lost no lease (the ttl is long enough for this machine)"
    );
    c.crash().await;
    writer.await.expect("writer");
    let head = s.head(&[]).await.expect("head");
    let versions: BTreeMap<String, u64> = {
        let mut v = BTreeMap::new();
        for e in crate::testkit::cases::all(&*s).await {
            v.insert(e.aggregate_id.clone(), e.aggregate_version);
        }
        v
    };
    let done = tokio::time::timeout(PATIENCE, async {
        loop {
            let handled: BTreeMap<String, u64> = {
                let seen = seen.lock().expect("lock");
                let mut m = BTreeMap::new();
                for (agg, _, v) in seen.iter() {
                    let e = m.entry(agg.clone()).or_insert(0);
                    *e = (*e).max(*v);
                }
                m
            };
            if handled == versions && a.status().leases.len() == 12 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "every event is handled and a runs all partitions"
    );
    a.leave().await.expect("a leaves");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.len() as u64 >= head);
    // Per aggregate: versions in order; a step back (a redelivery) only where the crashed
    // member c handed over, and only of versions c had handled.
    let mut by_c: HashSet<(String, u64)> = HashSet::new();
    let mut next: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for (agg, member, version) in &seen {
        let (expected, owner) = next.entry(agg).or_insert((1, member));
        if *version != *expected {
            assert!(
                *version < *expected && *owner == "c" && member != "c",
                "{agg}: version {version} after {} by {owner}, now by {member}: only a crash redelivers",
                *expected - 1
            );
            assert!(
                by_c.contains(&(agg.clone(), *version)),
                "{agg}: only what c had handled is redelivered"
            );
        }
        if member == "c" {
            by_c.insert((agg.clone(), *version));
        }
        if *owner != member.as_str() && *owner == "b" {
            assert_eq!(
                *version, *expected,
                "{agg}: b's graceful leave redelivers nothing"
            );
        }
        *owner = member;
        *expected = version + 1;
    }
    assert_eq!(next.len(), 40);
    for (agg, (expected, _)) in &next {
        assert_eq!(*expected - 1, versions[*agg], "{agg}: nothing lost");
    }
    assert!(seen.iter().any(|(_, m, _)| m == "b"), "b took part");
    assert!(seen.iter().any(|(_, m, _)| m == "c"), "c took part");
    assert!(!b_partitions.is_empty());
    let leases = s.leases("orders").await.expect("leases");
    assert!(
        leases.is_empty(),
        "a released everything when it left: {leases:?}"
    );
}
