//! Conformance cases of durable projections ([`crate::projection`]): restart from the
//! checkpoint, retries, faulting or skipping by policy, rebuilds under load, and lag;
//! with `Recorder`, a handler that records what it is given and fails or blocks on
//! purpose.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{PATIENCE, ev, fast, fill, req, wait_for};
use crate::append::AppendRequest;
use crate::append::ExpectedVersion;
use crate::checkpoint::CheckpointStatus;
use crate::event::RecordedEvent;
use crate::projection::{
    self, FailurePolicy, Handler, HandlerError, ProjectionError, ProjectionOptions,
};
use crate::store::Store;
use crate::subscription::SubscriptionOptions;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

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

/// `wait_caught_up` returns once everything committed before the call is handled, even
/// when the filter skips the last events; a handler stuck short of the head makes it
/// answer false at its timeout.
pub async fn waiting_for_a_projection_to_catch_up_covers_what_was_committed_before<H: Harness>(
    h: H,
) {
    let s = Arc::new(h.store().clone());
    fill(&*s, "clock", 3, 300, 10).await;
    for i in 0..5 {
        let noise = (0..10).map(|_| ev("Noise", "{}")).collect();
        s.append(req(
            "Noise",
            &format!("noise-{i}"),
            ExpectedVersion::Any,
            noise,
        ))
        .await
        .expect("append");
    }
    let counted = Recorder::default();
    let only_counted = crate::read::Filter {
        event_types: vec!["Tick".into()],
        ..crate::read::Filter::default()
    };
    let run = projection::spawn(
        s.clone(),
        counted.clone(),
        ProjectionOptions::new("caught-up")
            .subscription(SubscriptionOptions::default().filter(only_counted)),
    );
    assert!(
        run.wait_caught_up(PATIENCE).await.expect("head"),
        "caught up with the 350 events committed before"
    );
    assert_eq!(counted.seen().len(), 300, "every matching event handled");
    assert_eq!(
        run.progress().position,
        350,
        "the skipped ones count as handled"
    );
    run.stop().await.expect("stops");

    let (tx, _rx) = oneshot::channel();
    let stuck = Recorder {
        gate: Some((10, Arc::new(Mutex::new(Some(tx))))),
        ..Recorder::default()
    };
    let run = projection::spawn(s.clone(), stuck, ProjectionOptions::new("stuck"));
    assert!(
        !run.wait_caught_up(Duration::from_millis(300))
            .await
            .expect("head"),
        "a handler stuck at position 10 is not caught up"
    );
    run.kill().await;
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
    s.put_checkpoint(crate::checkpoint::CheckpointWrite::new("upstream", 900).in_source("orders"))
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
            ("ahead", 60, Some(10), CheckpointStatus::Stopped),
            ("behind", 60, Some(40), CheckpointStatus::Running),
            // Another log's position: this store cannot say how far behind it is.
            ("upstream", 60, None, CheckpointStatus::Running),
        ]
    );
    let one = projection::info(&*s, "behind")
        .await
        .expect("info")
        .expect("exists");
    assert_eq!(one.lag, Some(40));
    assert!(
        projection::info(&*s, "nobody")
            .await
            .expect("info")
            .is_none()
    );
}
