//! The seed's story on a real embedded store, asserting what the seed says it shows.

use annal::privacy::Keyring;
use annal::sqlite::{Options, SqliteStore};
use annal::{Direction, Store};
use annal_example_coop::{Child, Family, PaymentStatus, PortalAccess, Status};
use annal_example_coop::{forget, story};
use std::sync::Arc;

/// A store in `dir` opened with a key-encryption key: the families' personal data is
/// sealed with it.
fn store_in(dir: &std::path::Path) -> Arc<dyn Store> {
    let options = Options {
        keyring: Some(Keyring::from_bytes([42; 32])),
        ..Options::default()
    };
    Arc::new(SqliteStore::open_with(dir.join("coop.db"), options).expect("open"))
}

async fn told() -> (tempfile::TempDir, story::Outcome, String) {
    let dir = tempfile::tempdir().expect("dir");
    let mut printed = Vec::new();
    let outcome = story::tell(store_in(dir.path()), &mut printed)
        .await
        .expect("the story runs");
    (dir, outcome, String::from_utf8(printed).expect("utf-8"))
}

#[tokio::test]
async fn the_usage_example_reconstructs_the_state_the_seed_prints() {
    let (_dir, o, _) = told().await;
    let s: &Family = &o.reconstructed;
    assert_eq!(s.family_id.as_deref(), Some("family_123"));
    assert_eq!(s.family_name.as_deref(), Some("Martinez Family"));
    assert_eq!(s.status, Status::Enrolled);
    assert_eq!(s.enrollment_date.as_deref(), Some("2024-09-01"));
    assert_eq!(
        s.children,
        vec![Child {
            child_name: Some("Sofia Martinez".into()),
            age: Some(8),
            grade: Some(3)
        }]
    );
    assert_eq!(s.payments.len(), 1);
    assert_eq!(
        (s.payments[0].amount, s.payments[0].date.as_str()),
        (450, "2024-09-15")
    );
    assert_eq!(s.engagement_score, 0);
    assert_eq!(s.payment_status, PaymentStatus::Paid);
    assert_eq!(s.portal_access, PortalAccess::Active);
}

#[tokio::test]
async fn time_travel_shows_the_state_on_a_past_date() {
    let (_dir, o, _) = told().await;
    assert_eq!(o.before_payment.status, Status::Enrolled);
    assert!(
        o.before_payment.payments.is_empty(),
        "no payment by 2024-09-10"
    );
    assert_eq!(o.on_20_september.payments.len(), 1, "paid by 2024-09-20");
    assert_eq!(o.on_20_september.children.len(), 1);
}

#[tokio::test]
async fn correlated_events_are_the_enrolment_and_the_child() {
    let (_dir, o, printed) = told().await;
    let types: Vec<_> = o.correlated.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["FamilyEnrolled", "ChildAdded"]);
    assert!(o.correlated.iter().all(|e| e.user_id == "sarah"));
    assert!(
        printed.contains("FamilyEnrolled: {") && printed.contains("ChildAdded: {"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_v1_payment_is_read_as_v2_with_an_unknown_method_and_never_rewritten() {
    let (_dir, o, _) = told().await;
    assert_eq!(o.legacy_event.event_version, 1);
    assert_eq!(
        o.legacy_event.data.get(),
        r#"{"amount": 300, "date": "2024-08-20"}"#
    );
    assert_eq!(o.legacy_family.payments.len(), 1);
    assert_eq!(
        o.legacy_family.payments[0].method.as_deref(),
        Some("unknown")
    );
    assert_eq!(o.legacy_family.payments[0].amount, 300);
}

#[tokio::test]
async fn a_mistaken_withdrawal_is_reversed_and_history_keeps_both() {
    let (_dir, o, _) = told().await;
    assert_eq!(o.withdrawn.status, Status::Withdrawn);
    assert_eq!(o.reversed.status, Status::Enrolled);
    assert_eq!(o.reversed.withdrawal_date, None);
    let types: Vec<_> = o.audit.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "FamilyEnrolled",
            "ChildAdded",
            "PaymentReceived",
            "FamilyWithdrawn",
            "FamilyWithdrawalReversed"
        ]
    );
    let (mistake, fix) = (&o.audit[3], &o.audit[4]);
    assert_eq!(mistake.compensated_by, vec![fix.event_id]);
    let link = fix
        .compensates
        .as_ref()
        .expect("the reversal says what it corrects");
    assert_eq!(
        (link.event_id, link.position),
        (mistake.event_id, Some(mistake.position))
    );
    assert_eq!(link.reason.as_deref(), Some("Administrative error"));
    assert_eq!(fix.causation_id, Some(mistake.event_id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_locks_the_chen_family_when_overdue_and_restores_it_when_paid() {
    let (_dir, o, printed) = told().await;
    let types: Vec<_> = o.chen_audit.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "FamilyEnrolled",
            "PaymentReceived",
            "PaymentDue",
            "PaymentOverdue",
            "PortalAccessLocked",
            "PaymentReceived",
            "PortalAccessRestored"
        ]
    );
    let (overdue, lock, paid, restore) = (
        &o.chen_audit[3],
        &o.chen_audit[4],
        &o.chen_audit[5],
        &o.chen_audit[6],
    );
    // Why was the Chen family locked out? The trigger did it, because of the overdue notice.
    assert_eq!(lock.user_id, "portal-access");
    assert_eq!(lock.causation_id, Some(overdue.event_id.to_string()));
    assert_eq!(lock.correlation_id.as_deref(), Some("billing_run_2024_10"));
    assert_eq!(overdue.user_id, "billing-job");
    assert_eq!(restore.user_id, "portal-access");
    assert_eq!(restore.causation_id, Some(paid.event_id.to_string()));
    assert_eq!(restore.correlation_id.as_deref(), Some("payment_chen_oct"));
    assert!(
        lock.position < paid.position,
        "the payment cleared after the lock"
    );
    assert_eq!(o.chen.payment_status, PaymentStatus::Paid);
    assert_eq!(o.chen.portal_access, PortalAccess::Active);
    assert!(
        o.why_locked
            .contains("by portal-access (automated), caused by")
            && o.why_locked.contains("PaymentOverdue by billing-job"),
        "{}",
        o.why_locked
    );
    assert!(
        printed.contains("Why was the Chen family locked out?"),
        "{printed}"
    );
}

#[tokio::test]
async fn names_ages_and_payment_methods_are_stored_sealed_for_the_family() {
    let (dir, _, _) = told().await;
    let store = store_in(dir.path());
    let events = store
        .read_aggregate("family_123", Direction::Forward, None, 100)
        .await
        .expect("read");
    let child = events
        .iter()
        .find(|e| e.event_type == "ChildAdded")
        .expect("Sofia");
    assert_eq!(child.data.get(), "{}", "nothing of the child in the clear");
    assert_eq!(child.subjects, ["family_123"]);
    assert!(child.sealed.is_some());
    assert!(
        !child
            .sealed
            .as_ref()
            .expect("sealed")
            .get()
            .contains("Sofia"),
        "the stored form is ciphertext"
    );
    let enrolled = &events[0];
    assert!(
        !enrolled.data.get().contains("Martinez"),
        "{}",
        enrolled.data
    );
    assert!(enrolled.payload().get().contains("Maria Martinez"));
}

#[tokio::test]
async fn forgetting_a_family_erases_its_personal_fields_and_the_story_still_verifies() {
    let (dir, _, _) = told().await;
    let store = store_in(dir.path());
    let before_count = store.head(&[]).await.expect("head");
    let mut printed = Vec::new();
    let shown = forget::forget(
        store.clone(),
        "family_123",
        "erasure request of 2024-11-02",
        &mut printed,
    )
    .await
    .expect("forget");
    let printed = String::from_utf8(printed).expect("utf-8");
    assert_eq!(shown.before.family_name.as_deref(), Some("Martinez Family"));
    assert_eq!(
        shown.before.children[0].child_name.as_deref(),
        Some("Sofia Martinez")
    );
    assert_eq!(shown.after.family_name, None, "the name is gone");
    assert_eq!(shown.after.children.len(), 1, "the child is still counted");
    assert_eq!(
        shown.after.children[0],
        Child {
            child_name: None,
            age: None,
            grade: None
        },
        "what was personal about the child is gone"
    );
    assert_eq!(
        shown.after.payments[0].amount, 450,
        "the accounts stay: amounts are not personal"
    );
    assert_eq!(shown.after.payments[0].method, None, "how it paid is");
    assert_eq!(shown.erased_events, 3, "enrolment, child, payment");
    assert!(shown.verified, "{printed}");
    assert!(!shown.forgotten.already);
    assert!(
        printed.contains("$subjectForgotten by coop-admin")
            && printed.contains("erasure request of 2024-11-02"),
        "{printed}"
    );
    let after = printed.split("== family_123 after").nth(1).expect("after");
    assert!(
        !after.contains("Sofia") && after.contains(r#""$erased":true"#),
        "{after}"
    );
    // The log lost nothing: one event more, the forgetting itself.
    assert_eq!(store.head(&[]).await.expect("head"), before_count + 1);
    let chen = store
        .read_aggregate("family_456", Direction::Forward, None, 100)
        .await
        .expect("read");
    assert!(
        chen[0].payload().get().contains("Wei Chen"),
        "another family is untouched"
    );
}
