//! The seed's story, told against a real store: the usage example (enrol, add a child,
//! receive a payment, reconstruct), the audit listing, the state on a past date, the
//! correlated events, an upcast v1 payment, a mistaken withdrawal reversed by a
//! compensating event, and the portal trigger locking and restoring the Chen family
//! (the seed's "why was the Chen family locked out?", answered from the audit trail). `coop demo` prints it; the tests assert it.

use crate::triggers::{PORTAL_ACCESS, PortalAccessTrigger};
use crate::{Family, FamilyCommand, FamilyEvent, upcasters};
use annal::audit::{self, AuditEntry};
use annal::projection::{self, ProjectionError, ProjectionHandle, ProjectionOptions};
use annal::{
    AppendRequest, CommandContext, ExpectedVersion, NewEvent, RawJson, RecordedEvent, Repository,
    RepositoryError, SnapshotPolicy, Store, Timestamp,
};
use std::io::Write;
use std::sync::Arc;

/// What went wrong telling the story.
#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    /// The repository refused or failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError<crate::FamilyError>),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] annal::Error),
    /// Printing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON could not be written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The portal trigger stopped.
    #[error(transparent)]
    Trigger(#[from] ProjectionError),
}

/// What the story showed, for tests to check.
#[derive(Debug)]
pub struct Outcome {
    /// family_123 after the seed's usage example.
    pub reconstructed: Family,
    /// family_123 as of 2024-09-10 (before the payment), by domain time.
    pub before_payment: Family,
    /// family_123 as of 2024-09-20, by domain time.
    pub on_20_september: Family,
    /// The event types tied to `enrollment_abc123`.
    pub correlated: Vec<RecordedEvent>,
    /// family_456, whose only payment was stored as PaymentReceived v1.
    pub legacy_family: Family,
    /// The stored v1 payment, untouched.
    pub legacy_event: RecordedEvent,
    /// family_123 after the mistaken withdrawal.
    pub withdrawn: Family,
    /// family_123 after the reversal.
    pub reversed: Family,
    /// family_123's audit trail at the end.
    pub audit: Vec<AuditEntry>,
    /// family_456 (the Chen family) at the end: overdue, locked, paid, restored.
    pub chen: Family,
    /// The Chen family's audit trail at the end.
    pub chen_audit: Vec<AuditEntry>,
    /// The answer printed to "why was the Chen family locked out?".
    pub why_locked: String,
}

/// Waits until the trigger has handled everything committed so far (its own reactions
/// included).
async fn settle<H>(store: &dyn Store, trigger: &ProjectionHandle<H>) -> Result<(), StoryError> {
    loop {
        let head = store.head(&[]).await?;
        let progressed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            trigger.wait_until(|p| p.position >= head),
        )
        .await;
        if !matches!(progressed, Ok(true)) {
            return Err(StoryError::Store(annal::Error::Closed(format!(
                "the portal trigger did not reach position {head}: {:?}",
                trigger.progress()
            ))));
        }
        if store.head(&[]).await? == head {
            return Ok(());
        }
    }
}

fn day(date: &str) -> Timestamp {
    // The story's dates are literals of the form YYYY-MM-DD.
    Timestamp::parse(date).unwrap_or(Timestamp::from_micros(0))
}

/// Tells the story on `store`, printing to `out`.
pub async fn tell(store: Arc<dyn Store>, out: &mut impl Write) -> Result<Outcome, StoryError> {
    let families = Repository::<Family>::new(store.clone())
        .with_upcasters(upcasters())
        .with_snapshots(SnapshotPolicy::Every(100));

    writeln!(out, "== The seed's usage example")?;
    let enrol = CommandContext::by("sarah").correlated("enrollment_abc123");
    families
        .execute(
            "family_123",
            FamilyCommand::Enroll {
                family_id: "family_123".into(),
                family_name: "Martinez Family".into(),
                enrollment_date: "2024-09-01".into(),
                parent_name: "Maria Martinez".into(),
                children_count: 2,
            },
            &enrol.clone().occurred(day("2024-09-01")),
        )
        .await?;
    families
        .execute(
            "family_123",
            FamilyCommand::AddChild {
                child_name: "Sofia Martinez".into(),
                age: 8,
                grade: 3,
            },
            &enrol.occurred(day("2024-09-01")),
        )
        .await?;
    families
        .execute(
            "family_123",
            FamilyCommand::RecordPayment {
                amount: 450,
                date: "2024-09-15".into(),
                method: "credit_card".into(),
            },
            &CommandContext::by("system")
                .correlated("payment_xyz789")
                .occurred(day("2024-09-15")),
        )
        .await?;
    let reconstructed = families.load("family_123").await?.state;
    writeln!(out, "{}", serde_json::to_string_pretty(&reconstructed)?)?;

    writeln!(out, "\n== Audit: every event of family_123")?;
    for e in audit::audit_trail(&*store, "family_123").await? {
        writeln!(out, "{}: {} by {}", e.recorded_at, e.event_type, e.user_id)?;
    }

    writeln!(
        out,
        "\n== Time travel: the state on 2024-09-10 and on 2024-09-20 (domain time)"
    )?;
    let before_payment = families
        .load_as_occurred("family_123", day("2024-09-10"))
        .await?
        .state;
    let on_20_september = families
        .load_as_occurred("family_123", day("2024-09-20"))
        .await?
        .state;
    writeln!(
        out,
        "2024-09-10: status {}, {} payments",
        shown(&before_payment.status),
        before_payment.payments.len()
    )?;
    writeln!(
        out,
        "2024-09-20: status {}, {} payments",
        shown(&on_20_september.status),
        on_20_september.payments.len()
    )?;

    writeln!(
        out,
        "\n== Correlated: everything enrollment_abc123 tied together"
    )?;
    let correlated = audit::correlated(&*store, "enrollment_abc123").await?;
    for e in &correlated {
        writeln!(out, "{}: {}", e.event_type, e.payload())?;
    }

    writeln!(
        out,
        "\n== Upcasting: family_456 paid before payment methods were recorded"
    )?;
    families
        .execute(
            "family_456",
            FamilyCommand::Enroll {
                family_id: "family_456".into(),
                family_name: "Chen Family".into(),
                enrollment_date: "2024-08-15".into(),
                parent_name: "Wei Chen".into(),
                children_count: 1,
            },
            &CommandContext::by("sarah"),
        )
        .await?;
    // What the old system wrote: PaymentReceived v1, {amount, date}.
    let legacy = store
        .append(
            AppendRequest::new("Family", "family_456", ExpectedVersion::Exact(1))
                .by("legacy-import")
                .event(
                    NewEvent::raw(
                        "PaymentReceived",
                        RawJson::parse(r#"{"amount": 300, "date": "2024-08-20"}"#)?,
                    )
                    .with_version(1),
                ),
        )
        .await?;
    let legacy_event = legacy.events[0].clone();
    let legacy_family = families.load("family_456").await?.state;
    writeln!(
        out,
        "stored:  PaymentReceived v{} {}",
        legacy_event.event_version, legacy_event.data
    )?;
    writeln!(out, "read as: {}", shown(&legacy_family.payments))?;

    writeln!(
        out,
        "\n== A mistaken withdrawal, corrected by a compensating event"
    )?;
    let mistake = families
        .execute(
            "family_123",
            FamilyCommand::Withdraw {
                withdrawal_date: "2024-10-01".into(),
            },
            &CommandContext::by("sarah").correlated("bulk_update_oct"),
        )
        .await?;
    let withdrawn = mistake.state.clone();
    writeln!(
        out,
        "after the mistake: status {}",
        shown(&withdrawn.status)
    )?;
    let original = mistake.events[0].event_id;
    let reversed = families
        .compensate(
            "family_123",
            original,
            FamilyEvent::FamilyWithdrawalReversed {
                reason: "Administrative error".into(),
                original_event_id: original.to_string(),
            },
            "Administrative error",
            &CommandContext::by("sarah").correlated("bulk_update_oct"),
        )
        .await?
        .state;
    writeln!(
        out,
        "after the reversal: status {}",
        shown(&reversed.status)
    )?;
    let audit = audit::audit_trail(&*store, "family_123").await?;
    writeln!(out, "history keeps both:")?;
    for e in &audit {
        let mut note = String::new();
        if let Some(c) = &e.compensates {
            note = format!(
                "  (corrects #{}: {})",
                c.position.unwrap_or(0),
                c.reason.as_deref().unwrap_or("")
            );
        }
        if !e.compensated_by.is_empty() {
            note = "  (corrected later)".into();
        }
        writeln!(
            out,
            "  #{} v{} {} by {}{note}",
            e.position, e.aggregate_version, e.event_type, e.user_id
        )?;
    }
    writeln!(
        out,
        "\n== Triggers: the Chen family's overdue payment locks the portal; paying restores it"
    )?;
    let trigger = projection::spawn(
        store.clone(),
        PortalAccessTrigger::new(store.clone()),
        ProjectionOptions::new(PORTAL_ACCESS),
    );
    families
        .execute(
            "family_456",
            FamilyCommand::MarkPaymentDue {
                amount: 300,
                due_date: "2024-10-01".into(),
            },
            &CommandContext::by("billing-job").correlated("billing_run_2024_10"),
        )
        .await?;
    families
        .execute(
            "family_456",
            FamilyCommand::MarkPaymentOverdue,
            &CommandContext::by("billing-job").correlated("billing_run_2024_10"),
        )
        .await?;
    settle(&*store, &trigger).await?;
    families
        .execute(
            "family_456",
            FamilyCommand::RecordPayment {
                amount: 300,
                date: "2024-10-04".into(),
                method: "bank_transfer".into(),
            },
            &CommandContext::by("sarah").correlated("payment_chen_oct"),
        )
        .await?;
    settle(&*store, &trigger).await?;
    trigger.stop().await?;
    let chen = families.load("family_456").await?.state;
    let chen_audit = audit::audit_trail(&*store, "family_456").await?;
    writeln!(out, "Why was the Chen family locked out?")?;
    let mut why_locked = String::new();
    if let Some(lock) = chen_audit
        .iter()
        .find(|e| e.event_type == "PortalAccessLocked")
    {
        let cause = chen_audit
            .iter()
            .find(|e| Some(e.event_id.to_string()) == lock.causation_id);
        why_locked = match cause {
            Some(c) => format!(
                "#{} PortalAccessLocked at {} by {} (automated), caused by #{} {} by {} at {} (correlation {})",
                lock.position,
                lock.recorded_at,
                lock.user_id,
                c.position,
                c.event_type,
                c.user_id,
                c.recorded_at,
                c.correlation_id.as_deref().unwrap_or("none"),
            ),
            None => format!("#{} PortalAccessLocked by {}", lock.position, lock.user_id),
        };
        writeln!(out, "  {why_locked}")?;
    }
    for e in &chen_audit {
        writeln!(
            out,
            "  #{} v{} {} by {}{}",
            e.position,
            e.aggregate_version,
            e.event_type,
            e.user_id,
            e.causation_id
                .as_deref()
                .map(|c| format!("  (caused by {c})"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "now: payment {}, portal {}",
        shown(&chen.payment_status),
        shown(&chen.portal_access)
    )?;
    Ok(Outcome {
        chen,
        chen_audit,
        why_locked,
        reconstructed,
        before_payment,
        on_20_september,
        correlated,
        legacy_family,
        legacy_event,
        withdrawn,
        reversed,
        audit,
    })
}

/// A domain value as the story's readers know it: its JSON form (a status is its word,
/// `paid`; a list is JSON), never Rust's debug text.
fn shown<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        Ok(other) => other.to_string(),
        Err(e) => format!("(cannot show: {e})"),
    }
}
