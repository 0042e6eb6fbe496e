//! Conformance cases of triggers ([`crate::trigger`]): a reaction is appended once,
//! with causation and correlation set.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, ev, fast, wait_for};
use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::event::RecordedEvent;
use crate::projection;
use crate::store::Store;
use crate::trigger::{Trigger, reaction};
use std::sync::Arc;

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
    let events = all(&*s).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["PaymentOverdue", "PortalAccessLocked"]);
    let lock = &events[1];
    assert_eq!(lock.causation_id, Some(overdue.event_id.to_string()));
    assert_eq!(lock.correlation_id.as_deref(), Some("billing_run_oct"));
    assert_eq!(lock.user_id, "portal-lock");
}
