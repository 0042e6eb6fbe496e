//! Conformance cases of personal data ([`crate::privacy`]): sealing, reading back,
//! forgetting, key rotation and the key-encryption key checked at open.
//!
//! A backend runs them with [`crate::privacy_suite!`], given a [`PrivacyHarness`]: a
//! store opened with [`kek`], which it can reopen with another KEK or none.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, ev, req};
use crate::append::ExpectedVersion::Any;
use crate::append::NewEvent;
use crate::error::Error;
use crate::event::{RawJson, RecordedEvent};
use crate::privacy::{ERASED, FORGOTTEN_EVENT_TYPE, ForgetRequest, Keyring, SUBJECTS_STREAM};
use crate::projection::{self, Handler, HandlerError, ProjectionOptions};
use crate::read::{Direction, Filter};
use crate::store::Store;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// The KEK a [`PrivacyHarness`] first opens its store with.
pub fn kek() -> Keyring {
    Keyring::from_bytes([7; 32])
}

/// Another KEK.
pub fn other_kek() -> Keyring {
    Keyring::from_bytes([9; 32])
}

/// What the privacy cases need beyond a [`Harness`].
#[async_trait]
pub trait PrivacyHarness: Harness {
    /// Closes the store and opens it again with `keyring` (or none); the open's error,
    /// as its message, if it refused. After a refusal the harness keeps a store opened
    /// with the KEK that last worked.
    async fn reopen_with(&mut self, keyring: Option<Keyring>) -> Result<(), String>;
    /// A second store on the same data opened with `keyring`, as another process
    /// would open it; the open's error, as its message, if it refused.
    async fn another_process(&self, keyring: Keyring) -> Result<Self::Store, String>;
    /// A second store on the same data opened without a KEK, asking to (`without_kek`:
    /// for verifying); the open's error, as its message, if it refused.
    async fn without_kek(&self) -> Result<Self::Store, String>;
}

/// An event whose personal part, as written, is `personal` about `subject`.
fn personal_ev(event_type: &str, data: &str, subject: &str, personal: &str) -> NewEvent {
    let mut e = ev(event_type, data);
    e.personal = Some(RawJson::parse(personal).expect("json"));
    e.subjects = vec![subject.to_owned()];
    e
}

/// `family_1`'s one personal event: Sofia, for subject `family_1`.
fn sofia_added() -> crate::append::AppendRequest {
    req(
        "Family",
        "family_1",
        Any,
        vec![personal_ev("ChildAdded", "{}", "family_1", SOFIA)],
    )
}

fn forget(subject: &str) -> ForgetRequest {
    ForgetRequest {
        subject: subject.to_owned(),
        reason: "erasure request of 2024-11-02 (ticket 881)".to_owned(),
        user_id: Some("dpo".to_owned()),
        principal: None,
    }
}

/// Appends Sofia, as personal data about each of `families`, to each family in turn.
async fn sofia_for_each<S: Store + ?Sized>(s: &S, families: &[&str]) {
    for f in families {
        s.append(req(
            "Family",
            f,
            Any,
            vec![personal_ev("ChildAdded", r#"{"n":1}"#, f, SOFIA)],
        ))
        .await
        .expect("append");
    }
}

async fn family_events<S: Store + ?Sized>(s: &S, id: &str) -> Vec<RecordedEvent> {
    s.read_aggregate(id, Direction::Forward, None, 1000)
        .await
        .expect("read aggregate")
}

const SOFIA: &str = r#"{"child_name" : "Sofía Martinez",  "grade": 7.50}"#;

/// Appends a personal event to `family_9` on `s` and reads it back decrypted, with the
/// whole chain verifying (for a store migrated from before personal data).
pub async fn personal_data_round_trips_on<S: Store + ?Sized>(s: &S) {
    let out = s
        .append(req(
            "Family",
            "family_9",
            Any,
            vec![personal_ev("ChildAdded", "{}", "family_9", SOFIA)],
        ))
        .await
        .expect("append");
    let read = s
        .event(out.events[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.personal.as_ref().map(RawJson::get), Some(SOFIA));
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// The personal part comes back byte for byte from every read, merged into the payload
/// aggregates decode; the store keeps only ciphertext; the chain verifies.
pub async fn personal_data_round_trips_byte_for_byte_and_is_stored_sealed<H: PrivacyHarness>(h: H) {
    let s = h.store();
    let out = s
        .append(req(
            "Family",
            "family_1",
            Any,
            vec![
                ev("FamilyEnrolled", r#"{"plan":"full"}"#),
                personal_ev("ChildAdded", r#"{"age_band": "7-9"}"#, "family_1", SOFIA),
            ],
        ))
        .await
        .expect("append");
    assert_eq!(
        out.events[1].personal.as_ref().map(RawJson::get),
        Some(SOFIA)
    );
    let plain = &out.events[0];
    assert!(plain.sealed.is_none() && plain.personal.is_none() && plain.subjects.is_empty());
    let by_id = s
        .event(out.events[1].event_id)
        .await
        .expect("read")
        .expect("found");
    for e in [
        by_id,
        family_events(s, "family_1").await.remove(1),
        all(s).await.remove(1),
    ] {
        assert_eq!(e.personal.as_ref().map(RawJson::get), Some(SOFIA));
        assert_eq!(e.data.get(), r#"{"age_band": "7-9"}"#);
        assert_eq!(e.subjects, vec!["family_1".to_owned()]);
        assert_eq!(
            e.payload().get(),
            r#"{"age_band": "7-9","child_name" : "Sofía Martinez",  "grade": 7.50}"#
        );
        let sealed = e.sealed.as_ref().expect("sealed").get();
        assert!(
            !sealed.contains("Sof") && !sealed.contains("7.50"),
            "{sealed}"
        );
        assert_eq!(e.hash, out.events[1].hash);
    }
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// After forgetting: the subject's events read as erased everywhere, the other
/// subject's still open, the forgetting is in the log, verify passes, and the subject
/// takes no more personal data.
pub async fn a_forgotten_subject_reads_as_erased_and_the_chain_still_verifies<H: PrivacyHarness>(
    h: H,
) {
    let s = h.store();
    sofia_for_each(s, &["family_1", "family_2"]).await;
    let done = s.forget_subject(forget("family_1")).await.expect("forget");
    assert!(!done.already);
    let log = all(s).await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].personal.as_ref().map(RawJson::get), Some(ERASED));
    assert!(log[0].is_erased());
    assert_eq!(log[0].payload().get(), r#"{"n":1,"$erased":true}"#);
    assert_eq!(log[1].personal.as_ref().map(RawJson::get), Some(SOFIA));
    let audit = &log[2];
    assert_eq!(
        (
            audit.event_type.as_str(),
            audit.aggregate_id.as_str(),
            audit.position
        ),
        (FORGOTTEN_EVENT_TYPE, SUBJECTS_STREAM, done.position)
    );
    assert_eq!(audit.user_id, "dpo");
    let data: serde_json::Value = audit.data.to_value().expect("json");
    assert_eq!(data["subject"], "family_1");
    assert_eq!(data["reason"], "erasure request of 2024-11-02 (ticket 881)");
    let by_id = s
        .event(log[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert!(by_id.is_erased());
    assert!(family_events(s, "family_1").await[0].is_erased());
    assert!(s.verify(None, None).await.expect("verify").ok);
    assert!(s.verify_deep(None, None).await.expect("verify").ok);

    let again = s.forget_subject(forget("family_1")).await.expect("again");
    assert!(again.already);
    assert_eq!(again.position, done.position);
    let head = s.head(&[]).await.expect("head");
    let refused = s
        .append(sofia_added())
        .await
        .expect_err("a forgotten subject takes no personal data");
    assert!(
        matches!(&refused, Error::SubjectForgotten { subject } if subject == "family_1"),
        "{refused:?}"
    );
    assert_eq!(s.head(&[]).await.expect("head"), head, "nothing written");
    let listed = s.subjects("", 10).await.expect("list");
    let status: Vec<_> = listed
        .iter()
        .map(|i| (i.subject.as_str(), i.status.as_str()))
        .collect();
    assert_eq!(status, [("family_1", "forgotten"), ("family_2", "active")]);
    let missing = s
        .forget_subject(forget("nobody"))
        .await
        .expect_err("unknown subject");
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
}

/// Only a forgetting writes the record of forgettings: an append to `$subjects` or its
/// metadata stream, its deletion or tombstone, and a `$subjectForgotten` event anywhere
/// are refused with nothing written, and forgetting works afterwards.
pub async fn the_record_of_forgettings_is_written_by_forgetting_only<H: PrivacyHarness>(h: H) {
    use crate::streams::{self, Deletion};
    let s = h.store();
    s.append(sofia_added()).await.expect("append");
    let head = s.head(&[]).await.expect("head");
    let forged = || vec![ev(FORGOTTEN_EVENT_TYPE, r#"{"subject":"family_1"}"#)];
    let refusals = [
        s.append(req(SUBJECTS_STREAM, SUBJECTS_STREAM, Any, forged()))
            .await,
        s.append(req("Foo", SUBJECTS_STREAM, Any, vec![ev("Noted", "{}")]))
            .await,
        s.append(req("Family", "family_1", Any, forged())).await,
        s.append(req(
            "$metadata",
            "$$$subjects",
            Any,
            vec![ev("$metadata", "{}")],
        ))
        .await,
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        let e = r.expect_err("refused");
        assert!(matches!(e, Error::InvalidRequest { .. }), "{i}: {e:?}");
    }
    for how in [Deletion::Soft, Deletion::Tombstone] {
        let e = streams::delete(s, SUBJECTS_STREAM, Any, how, &Default::default())
            .await
            .expect_err("refused");
        assert!(
            matches!(
                e,
                Error::InvalidRequest { .. } | Error::WrongExpectedVersion { .. }
            ),
            "{e:?}"
        );
    }
    assert_eq!(s.head(&[]).await.expect("head"), head, "nothing written");
    let done = s.forget_subject(forget("family_1")).await.expect("forget");
    assert_eq!(done.position, head + 1);
    // Now that it exists, deleting it softly reaches the refusal too.
    let e = streams::delete(s, SUBJECTS_STREAM, Any, Deletion::Soft, &Default::default())
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    let e = streams::delete(
        s,
        SUBJECTS_STREAM,
        Any,
        Deletion::Tombstone,
        &Default::default(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    assert!(all(s).await[0].is_erased());
}

/// The edits behind the store's back that a backend's test makes between
/// [`seed_for_key_table_check`] and [`edited_key_table_fails_the_deep_verify`], as SQL
/// on the schema's `subject_keys` (the same text on SQLite and PostgreSQL): `family_1`'s
/// row gets `family_2`'s wrapped key (its own no longer opens), `family_2` loses its
/// key as if forgotten at a position where no forgetting is recorded, forgotten
/// `family_3`'s row names a position past the log's head, and `family_4`'s row is gone.
pub const KEY_TABLE_EDITS: [&str; 4] = [
    "UPDATE subject_keys SET wrapped_key = (SELECT wrapped_key FROM subject_keys \
     WHERE subject = 'family_2') WHERE subject = 'family_1'",
    "UPDATE subject_keys SET wrapped_key = NULL, forgotten_at = created_at, \
     forgotten_position = 2 WHERE subject = 'family_2'",
    "UPDATE subject_keys SET forgotten_position = 999 WHERE subject = 'family_3'",
    "DELETE FROM subject_keys WHERE subject = 'family_4'",
];

/// Four subjects with personal data (positions 1 to 4), the third forgotten (5); a deep
/// verify passes.
pub async fn seed_for_key_table_check<S: Store + ?Sized>(s: &S) {
    sofia_for_each(s, &["family_1", "family_2", "family_3", "family_4"]).await;
    s.forget_subject(forget("family_3")).await.expect("forget");
    let deep = s.verify_deep(None, None).await.expect("deep");
    assert!(deep.ok && deep.storage.is_empty(), "{deep:?}");
}

/// After [`KEY_TABLE_EDITS`]: the deep verify names both rows, the chain-only one passes.
pub async fn edited_key_table_fails_the_deep_verify<S: Store + ?Sized>(s: &S) {
    let deep = s.verify_deep(None, None).await.expect("deep");
    assert!(!deep.ok, "{deep:?}");
    let said = deep.storage.join("\n");
    assert!(
        said.contains("the data key of subject 'family_1' does not open"),
        "{said}"
    );
    for finding in [
        "subject 'family_2' has no data key, but no $subjectForgotten event at position 2",
        "subject 'family_3' has no data key, and its row says it was forgotten at position 999, past the log's head",
        "the $subjectForgotten event at position 5 records forgetting subject 'family_3', but the key table does not say",
        "the event at position 4 is sealed with key",
    ] {
        assert!(said.contains(finding), "{finding}: {said}");
    }
    assert!(
        said.contains("of subject 'family_4', which the key table has no row for"),
        "{said}"
    );
    assert_eq!(deep.storage.len(), 5, "{said}");
    assert!(s.verify(None, None).await.expect("quick").ok);
}

/// Key rows read from one store ([`Store::key_rows`]) are taken by another only when
/// its KEK wraps them and it has none of their subjects: a subject it has and a row of
/// another KEK are refused, writing nothing; a new subject's row is taken, and its key
/// then seals that subject's personal data.
pub async fn imported_key_rows_are_taken_once_and_only_under_the_stores_kek<H: PrivacyHarness>(
    h: H,
) {
    let s = h.store();
    s.append(sofia_added()).await.expect("append");
    let rows = s.key_rows("", 10).await.expect("rows");
    assert_eq!(rows.len(), 1);
    let e = s.import_key_rows(rows).await.expect_err("a subject it has");
    assert!(
        matches!(&e, Error::InvalidRequest { field, .. } if field == "keys"),
        "{e:?}"
    );
    let now = crate::event::Timestamp::now();
    let (_, theirs) = other_kek().new_key("family_9", now).expect("key");
    let e = s
        .import_key_rows(vec![theirs])
        .await
        .expect_err("another KEK");
    assert!(
        matches!(&e, Error::InvalidRequest { field, .. } if field == "kek"),
        "{e:?}"
    );
    let (_, ours) = kek().new_key("family_8", now).expect("key");
    let (_, mixed) = other_kek().new_key("family_7", now).expect("key");
    let e = s
        .import_key_rows(vec![ours.clone(), mixed])
        .await
        .expect_err("one bad row refuses the batch");
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    assert_eq!(
        s.key_rows("", 10).await.expect("rows").len(),
        1,
        "nothing written"
    );
    assert_eq!(s.import_key_rows(vec![ours]).await.expect("import"), 1);
    let listed: Vec<String> = s
        .key_rows("", 10)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.subject)
        .collect();
    assert_eq!(listed, ["family_1", "family_8"]);
    let e = personal_ev("ChildAdded", "{}", "family_8", SOFIA);
    s.append(req("Family", "family_8", Any, vec![e]))
        .await
        .expect("the imported key seals");
    let read = family_events(s, "family_8").await;
    assert_eq!(read[0].personal.as_ref().map(RawJson::get), Some(SOFIA));
}

/// An event about two subjects opens only while both keys exist.
pub async fn an_event_about_two_subjects_is_erased_when_either_is_forgotten<H: PrivacyHarness>(
    h: H,
) {
    let s = h.store();
    let mut e = ev("Transferred", r#"{"amount":10}"#);
    e.personal = Some(RawJson::parse(r#"{"from":"A","to":"B"}"#).expect("json"));
    e.subjects = vec!["family_a".into(), "family_b".into()];
    let out = s
        .append(req("Ledger", "l1", Any, vec![e]))
        .await
        .expect("append");
    assert_eq!(
        out.events[0].personal.as_ref().map(RawJson::get),
        Some(r#"{"from":"A","to":"B"}"#)
    );
    let read = s
        .event(out.events[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.personal, out.events[0].personal);
    s.forget_subject(forget("family_b")).await.expect("forget");
    let read = s
        .event(out.events[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert!(read.is_erased());
    assert_eq!(
        read.subjects,
        vec!["family_a".to_owned(), "family_b".to_owned()]
    );
}

/// Forgetting deletes the snapshots of the aggregates that hold the subject's data,
/// and only those.
pub async fn forgetting_deletes_the_snapshots_holding_the_subjects_data<H: PrivacyHarness>(h: H) {
    let s = h.store();
    for (f, subject) in [("family_1", "family_1"), ("family_2", "family_2")] {
        s.append(req(
            "Family",
            f,
            Any,
            vec![personal_ev("ChildAdded", "{}", subject, SOFIA)],
        ))
        .await
        .expect("append");
        let state = RawJson::parse(r#"{"children":["Sofía Martinez"]}"#).expect("json");
        s.save_snapshot(f, 1, "family-v1", state)
            .await
            .expect("snapshot");
    }
    s.forget_subject(forget("family_1")).await.expect("forget");
    assert!(
        s.load_snapshot("family_1", "family-v1", None)
            .await
            .expect("load")
            .is_none(),
        "the forgotten family's snapshot is gone"
    );
    assert!(
        s.load_snapshot("family_2", "family-v1", None)
            .await
            .expect("load")
            .is_some(),
        "another family's snapshot stays"
    );
}

/// Collects the payloads it handles; a rebuild starts it over (and is counted).
struct Payloads(
    Arc<std::sync::Mutex<Vec<String>>>,
    Arc<std::sync::atomic::AtomicUsize>,
);

#[async_trait]
impl Handler for Payloads {
    async fn handle(
        &mut self,
        event: &RecordedEvent,
    ) -> Result<Vec<crate::append::AppendRequest>, HandlerError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(event.payload().get().to_owned());
        }
        Ok(Vec::new())
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.clear();
        }
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A projection that rebuilds on forgetting does so by itself, and its rebuild sees the
/// erasure marker, never the data; it rebuilds once per forgetting, not again on the
/// replay.
pub async fn a_projection_rebuilt_after_erasure_sees_markers<H: PrivacyHarness>(h: H) {
    let s = Arc::new(h.store().clone());
    s.append(req(
        "Family",
        "family_1",
        Any,
        vec![personal_ev("ChildAdded", r#"{"n":1}"#, "family_1", SOFIA)],
    ))
    .await
    .expect("append");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let resets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = projection::spawn(
        s.clone(),
        Payloads(seen.clone(), resets.clone()),
        ProjectionOptions::new("children").rebuilding_on_forget(),
    );
    assert!(
        p.wait_caught_up(Duration::from_secs(30))
            .await
            .expect("wait")
    );
    let first = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(first[0].contains("Sofía"), "{first:?}");
    s.forget_subject(forget("family_1")).await.expect("forget");
    let deadline = tokio::time::Instant::now() + super::fixtures::PATIENCE;
    let after = loop {
        let now = seen.lock().map(|v| v.clone()).unwrap_or_default();
        if now.len() == 2 && now[0].contains("$erased") {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rebuilt: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], r#"{"n":1,"$erased":true}"#);
    assert!(after.iter().all(|p| !p.contains("Sofía")));
    s.append(req(
        "Family",
        "family_2",
        Any,
        vec![ev("Noted", r#"{"n":2}"#)],
    ))
    .await
    .expect("append");
    assert!(
        p.wait_caught_up(Duration::from_secs(30))
            .await
            .expect("wait")
    );
    let last = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(last.len(), 3, "{last:?}");
    assert_eq!(
        resets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one rebuild for one forgetting, none for its replay"
    );
    p.stop().await.expect("stop");
}

/// Opening with another KEK, or none, is refused with a clear message; the right one
/// opens and reads.
pub async fn a_wrong_or_missing_kek_is_refused_at_open<H: PrivacyHarness>(mut h: H) {
    let out = h.store().append(sofia_added()).await.expect("append");
    let wrong = h
        .reopen_with(Some(other_kek()))
        .await
        .expect_err("wrong KEK");
    assert!(wrong.contains("wrong key-encryption key"), "{wrong}");
    assert!(
        wrong.contains(kek().id()) && wrong.contains(other_kek().id()),
        "{wrong}"
    );
    let missing = h.reopen_with(None).await.expect_err("no KEK");
    assert!(missing.contains("ANNAL_KEK"), "{missing}");
    h.reopen_with(Some(kek())).await.expect("the right KEK");
    let read = h
        .store()
        .event(out.events[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.personal.as_ref().map(RawJson::get), Some(SOFIA));
}

/// A store opened without a KEK refuses personal data (and still takes other events).
pub async fn a_store_without_a_kek_refuses_personal_data<H: PrivacyHarness>(mut h: H) {
    h.reopen_with(None).await.expect("no keys yet: opens");
    let s = h.store();
    let e = s.append(sofia_added()).await.expect_err("no KEK");
    assert!(
        matches!(&e, Error::InvalidRequest { field, .. } if field == "events[0].personal"),
        "{e:?}"
    );
    s.append(req("Family", "family_1", Any, vec![ev("Noted", "{}")]))
        .await
        .expect("plain events still go in");
}

/// Rotating the KEK rewraps the data keys (a forgotten subject's row, without one, only
/// names the new KEK): events read as before, the old KEK no longer opens the store and
/// the new one does. A rotation to the KEK in use, or of an empty key table, is refused.
pub async fn rotating_the_kek_rewraps_keys_without_rewriting_events<H: PrivacyHarness>(mut h: H) {
    // An empty key table has nothing to rewrap and would keep no trace of the new KEK.
    match h.store().rotate_kek(other_kek()).await {
        Err(Error::InvalidRequest { field, reason }) => {
            assert_eq!(field, "new_kek");
            assert!(reason.contains("no data keys"), "{reason}");
        }
        other => panic!("a rotation of an empty key table must be refused: {other:?}"),
    }
    let out = h.store().append(sofia_added()).await.expect("append");
    // A forgotten subject's row has no key left: the rotation only renames its KEK.
    h.store()
        .append(req(
            "Family",
            "family_3",
            Any,
            vec![personal_ev("ChildAdded", "{}", "family_3", SOFIA)],
        ))
        .await
        .expect("append");
    h.store()
        .forget_subject(forget("family_3"))
        .await
        .expect("forget");
    let before = all(h.store()).await;
    match h.store().rotate_kek(kek()).await {
        Err(Error::InvalidRequest { field, .. }) => assert_eq!(field, "new_kek"),
        other => panic!("a rotation to the KEK in use must be refused: {other:?}"),
    }
    assert_eq!(h.store().rotate_kek(other_kek()).await.expect("rotate"), 1);
    let after = all(h.store()).await;
    assert_eq!(before, after, "events untouched, still readable");
    h.store()
        .append(req(
            "Family",
            "family_2",
            Any,
            vec![personal_ev("ChildAdded", "{}", "family_2", SOFIA)],
        ))
        .await
        .expect("new keys under the new KEK");
    let old = h.reopen_with(Some(kek())).await.expect_err("old KEK");
    assert!(old.contains("wrong key-encryption key"), "{old}");
    h.reopen_with(Some(other_kek())).await.expect("new KEK");
    let read = h
        .store()
        .event(out.events[0].event_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.personal.as_ref().map(RawJson::get), Some(SOFIA));
    assert_eq!(
        all(h.store()).await.len(),
        4,
        "three appends and a $subjectForgotten"
    );
}

/// A process whose KEK another process rotated away makes no data key under it: a row
/// wrapped by the old KEK beside the rewrapped ones would leave a store that opens with
/// neither. Its appends that need a key and its reads of personal parts are refused as
/// [`Error::Closed`] (restart with the new key), not as corruption; plain events still
/// go in; the store opens with the new KEK, and verifies.
pub async fn a_process_whose_kek_was_rotated_away_makes_no_key_under_the_old_one<
    H: PrivacyHarness,
>(
    mut h: H,
) {
    h.store().append(sofia_added()).await.expect("append");
    assert_eq!(h.store().kek_problem().await.expect("kek check"), None);
    let second = h.another_process(kek()).await.expect("second process");
    assert_eq!(second.rotate_kek(other_kek()).await.expect("rotate"), 1);
    assert_eq!(second.kek_problem().await.expect("kek check"), None);
    drop(second);
    // What a readiness check reports, before any personal read or append meets it.
    let problem = h.store().kek_problem().await.expect("kek check");
    assert!(
        problem
            .as_deref()
            .is_some_and(|why| why.contains(other_kek().id()) && why.contains("restart")),
        "{problem:?}"
    );
    for family in ["family_1", "family_2"] {
        let e = personal_ev("ChildAdded", "{}", family, SOFIA);
        match h.store().append(req("Family", family, Any, vec![e])).await {
            Err(Error::Closed(why)) => assert!(why.contains("restart"), "{why}"),
            other => panic!("an append under a rotated-away KEK must be refused: {other:?}"),
        }
    }
    match h.store().read_all(0, 10, &Filter::default()).await {
        Err(Error::Closed(why)) => assert!(why.contains(other_kek().id()), "{why}"),
        other => panic!("a read under a rotated-away KEK must say so: {other:?}"),
    }
    h.store()
        .append(req("Family", "family_3", Any, vec![ev("Noted", "{}")]))
        .await
        .expect("plain events still go in");
    h.reopen_with(Some(other_kek()))
        .await
        .expect("every key is wrapped by the new KEK");
    assert_eq!(h.store().kek_problem().await.expect("kek check"), None);
    let e = personal_ev("ChildAdded", "{}", "family_2", SOFIA);
    h.store()
        .append(req("Family", "family_2", Any, vec![e]))
        .await
        .expect("new keys under the new KEK");
    let events = all(h.store()).await;
    assert_eq!(events.len(), 3, "Sofia, the plain event, family_2's");
    assert_eq!(events[0].personal.as_ref().map(RawJson::get), Some(SOFIA));
    assert!(h.store().verify(None, None).await.expect("verify").ok);
}

/// A process started without a KEK on a store that held no keys, reading personal data
/// another process (with a KEK) wrote since, is told to restart with that key
/// ([`Error::Closed`]), not that the store is corrupt; its plain reads go on.
pub async fn a_process_without_a_kek_is_told_to_restart_with_one_not_that_data_is_corrupt<
    H: PrivacyHarness,
>(
    mut h: H,
) {
    h.reopen_with(None)
        .await
        .expect("an empty store opens without a KEK");
    h.store()
        .append(req("Family", "family_0", Any, vec![ev("Noted", "{}")]))
        .await
        .expect("plain");
    let other = h
        .another_process(kek())
        .await
        .expect("a process with the KEK");
    other.append(sofia_added()).await.expect("personal");
    drop(other);
    let problem = h.store().kek_problem().await.expect("kek check");
    assert!(
        problem
            .as_deref()
            .is_some_and(|why| why.contains("restart") && why.contains(kek().id())),
        "{problem:?}"
    );
    match h.store().read_all(0, 10, &Filter::default()).await {
        Err(Error::Closed(why)) => {
            assert!(why.contains("restart") && why.contains(kek().id()), "{why}")
        }
        other => panic!("must say to restart with the KEK: {other:?}"),
    }
    let plain = h
        .store()
        .read_aggregate("family_0", Direction::Forward, None, 10)
        .await
        .expect("plain reads go on");
    assert_eq!(plain.len(), 1);
}

/// A store that holds personal data, opened without its KEK for verifying: the chain
/// verifies (the deep check too), a digest is taken and checked, its personal parts
/// answer [`Error::Closed`], and it takes no personal data; its plain events read as
/// ever.
pub async fn a_store_opened_without_its_kek_verifies_and_opens_no_personal_part<
    H: PrivacyHarness,
>(
    h: H,
) {
    h.store()
        .append(req("Family", "family_0", Any, vec![ev("Noted", "{}")]))
        .await
        .expect("plain");
    // The head holds a live personal part: a digest of it opens nothing either.
    h.store().append(sofia_added()).await.expect("personal");
    let s = h
        .without_kek()
        .await
        .expect("opens without its KEK when asked");
    assert!(s.verify(None, None).await.expect("verify").ok);
    assert!(s.verify_deep(None, None).await.expect("deep verify").ok);
    let digest = crate::digest::take(&s).await.expect("a digest");
    let keyed = crate::digest::take(h.store()).await.expect("a digest");
    assert_eq!((digest.position, digest.hash), (keyed.position, keyed.hash));
    let checked = crate::digest::check(&s, digest.position, digest.hash).await;
    assert!(checked.expect("check").ok);
    match s.read_all(0, 10, &Filter::default()).await {
        Err(Error::Closed(why)) => assert!(why.contains(kek().id()), "{why}"),
        other => panic!("personal parts cannot be read without the KEK: {other:?}"),
    }
    let plain = s
        .read_aggregate("family_0", Direction::Forward, None, 10)
        .await
        .expect("plain reads");
    assert_eq!(plain.len(), 1);
    let e = personal_ev("ChildAdded", "{}", "family_2", SOFIA);
    match s.append(req("Family", "family_2", Any, vec![e])).await {
        Err(Error::InvalidRequest { field, .. }) => assert_eq!(field, "events[0].personal"),
        other => panic!("no personal data without the KEK: {other:?}"),
    }
}

/// KEK rotations racing appends (some for subjects with keys, some making new keys):
/// every append is acknowledged, every event reads back decrypted, and the store
/// afterwards names one KEK, the last one, so it opens with that one only.
pub async fn appends_racing_kek_rotations_all_succeed_under_one_kek<H: PrivacyHarness>(mut h: H) {
    let s = h.store().clone();
    for k in 0..4 {
        s.append(req(
            "Family",
            &format!("k{k}"),
            Any,
            vec![personal_ev(
                "ChildAdded",
                "{}",
                &format!("family_k{k}"),
                SOFIA,
            )],
        ))
        .await
        .expect("first keys");
    }
    let mut writers = Vec::new();
    for w in 0..6 {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..120 {
                // Every third event is about a subject new to the store: a key made now.
                let subject = if i % 3 == 0 {
                    format!("family_new_{w}_{i}")
                } else {
                    format!("family_k{}", i % 4)
                };
                let e = personal_ev("Noted", &format!(r#"{{"w":{w},"i":{i}}}"#), &subject, SOFIA);
                match s
                    .append(req("Family", &format!("k{w}"), Any, vec![e]))
                    .await
                {
                    Ok(out) => acknowledged.push(out.events[0].event_id),
                    Err(e) => return Err(format!("append {w}/{i} for {subject}: {e}")),
                }
            }
            Ok(acknowledged)
        }));
    }
    let mut kek_now = kek();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let next = if round % 2 == 0 { other_kek() } else { kek() };
        s.rotate_kek(next.clone()).await.expect("rotate");
        kek_now = next;
    }
    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for w in writers {
        match w.await.expect("writer") {
            Ok(ids) => acknowledged.extend(ids),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "appends failed during rotation: {failures:?}"
    );
    assert_eq!(acknowledged.len(), 6 * 120);
    for id in &acknowledged {
        let e = s.event(*id).await.expect("read").expect("stored");
        assert_eq!(e.personal.as_ref().map(RawJson::get), Some(SOFIA), "{e:?}");
    }
    drop(s);
    let stale = if kek_now == kek() { other_kek() } else { kek() };
    let refused = h
        .reopen_with(Some(stale))
        .await
        .expect_err("the replaced KEK");
    assert!(refused.contains("wrong key-encryption key"), "{refused}");
    h.reopen_with(Some(kek_now))
        .await
        .expect("every key is wrapped by the last KEK");
    let e = h
        .store()
        .event(acknowledged[0])
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(e.personal.as_ref().map(RawJson::get), Some(SOFIA));
    assert!(h.store().verify(None, None).await.expect("verify").ok);
}

/// Appends for a subject racing its forgetting: every one acknowledged reads as erased
/// afterwards, and every one after the forgetting was refused.
pub async fn appends_racing_a_forgetting_leave_none_readable<H: PrivacyHarness>(h: H) {
    let s = h.store().clone();
    s.append(req(
        "Family",
        "family_r",
        Any,
        vec![personal_ev("ChildAdded", "{}", "family_r", SOFIA)],
    ))
    .await
    .expect("first");
    let mut writers = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..200 {
                let e = personal_ev(
                    "Noted",
                    &format!(r#"{{"w":{w},"i":{i}}}"#),
                    "family_r",
                    SOFIA,
                );
                match s
                    .append(req("Family", &format!("r{w}"), Any, vec![e]))
                    .await
                {
                    Ok(out) => acknowledged.push(out.events[0].event_id),
                    Err(Error::SubjectForgotten { .. }) => return (acknowledged, true),
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
            (acknowledged, false)
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let done = s.forget_subject(forget("family_r")).await.expect("forget");
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for w in writers {
        let (ids, was_refused) = w.await.expect("writer");
        acknowledged.extend(ids);
        refused += usize::from(was_refused);
    }
    assert!(!acknowledged.is_empty(), "no append raced the forgetting");
    assert!(refused > 0, "no append came after the forgetting");
    for id in acknowledged {
        let e = s
            .event(id)
            .await
            .expect("read")
            .expect("acknowledged, so stored");
        assert!(e.is_erased(), "readable after forgetting: {e:?}");
        assert!(
            e.position < done.position,
            "sealed after the forgetting: {e:?}"
        );
    }
    let mut after = 0;
    while let Some(page) = Some(
        s.subject_events("family_r", after, 500)
            .await
            .expect("export"),
    ) && !page.is_empty()
    {
        assert!(page.iter().all(RecordedEvent::is_erased));
        after = page.last().map_or(after, |e| e.position);
    }
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// A subject's events can be exported (Art. 15), decrypted, in order; other subjects'
/// events are not among them.
pub async fn a_subjects_events_export_decrypted_in_order<H: PrivacyHarness>(h: H) {
    let s = h.store();
    for (agg, subject, n) in [
        ("f1", "family_1", 1),
        ("f2", "family_2", 2),
        ("f1", "family_1", 3),
    ] {
        s.append(req(
            "Family",
            agg,
            Any,
            vec![personal_ev(
                "Paid",
                &format!(r#"{{"n":{n}}}"#),
                subject,
                r#"{"card":"4111"}"#,
            )],
        ))
        .await
        .expect("append");
    }
    let first = s.subject_events("family_1", 0, 1).await.expect("page");
    assert_eq!(first.len(), 1);
    let rest = s
        .subject_events("family_1", first[0].position, 10)
        .await
        .expect("page");
    let got: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|e| e.payload().get().to_owned())
        .collect();
    assert_eq!(
        got,
        [r#"{"n":1,"card":"4111"}"#, r#"{"n":3,"card":"4111"}"#]
    );
    assert!(
        s.subject_events("nobody", 0, 10)
            .await
            .expect("none")
            .is_empty()
    );
    let info = s.subject("family_1").await.expect("info").expect("known");
    assert_eq!(info.status, "active");
    assert!(s.subject("nobody").await.expect("info").is_none());
}

/// A retried append with personal data and the same event ids writes nothing again;
/// the same ids with another personal part are a duplicate; once its subject is
/// forgotten, a retry is refused as `SubjectForgotten`.
pub async fn a_retried_personal_append_writes_nothing_again<H: PrivacyHarness>(h: H) {
    let s = h.store();
    let id = uuid::Uuid::now_v7();
    let first = personal_ev("ChildAdded", "{}", "family_1", SOFIA).with_id(id);
    let a = s
        .append(req("Family", "family_1", Any, vec![first.clone()]))
        .await
        .expect("first");
    let b = s
        .append(req("Family", "family_1", Any, vec![first]))
        .await
        .expect("retry");
    assert_eq!(a, b);
    assert_eq!(s.head(&[]).await.expect("head"), 1);
    let changed =
        personal_ev("ChildAdded", "{}", "family_1", r#"{"child_name":"Other"}"#).with_id(id);
    let e = s
        .append(req("Family", "family_1", Any, vec![changed]))
        .await
        .expect_err("other content");
    assert!(matches!(e, Error::DuplicateEventId { .. }), "{e:?}");
    // Once the subject is forgotten the stored part reads as erased and cannot be
    // compared: the retry names a forgotten subject, and is refused as such.
    s.forget_subject(forget("family_1")).await.expect("forget");
    let retry = personal_ev("ChildAdded", "{}", "family_1", SOFIA).with_id(id);
    let e = s
        .append(req("Family", "family_1", Any, vec![retry]))
        .await
        .expect_err("retry after forgetting");
    assert!(
        matches!(&e, Error::SubjectForgotten { subject } if subject == "family_1"),
        "{e:?}"
    );
    assert_eq!(
        s.head(&[]).await.expect("head"),
        2,
        "the event and the forgetting"
    );
}

/// Personal parts that break the rules are refused with the field named; nothing is
/// written.
pub async fn bad_personal_input_gets_typed_errors_and_writes_nothing<H: PrivacyHarness>(h: H) {
    let s = h.store();
    let cases: Vec<(NewEvent, &str)> = vec![
        (personal_ev("E", "{}", "s", "[1]"), "events[0].personal"),
        (personal_ev("E", "[1]", "s", r#"{"a":1}"#), "events[0].data"),
        (
            personal_ev("E", r#"{"a":1}"#, "s", r#"{"a":2}"#),
            "events[0].personal",
        ),
        (
            personal_ev("E", "{}", "s", r#"{"$erased":true}"#),
            "events[0].personal",
        ),
        (
            personal_ev("E", "{}", "", r#"{"a":1}"#),
            "events[0].subjects[0]",
        ),
        (
            {
                let mut e = ev("E", "{}");
                e.subjects = vec!["s".into()];
                e
            },
            "events[0].subjects",
        ),
        (
            {
                let mut e = personal_ev("E", "{}", "s", r#"{"a":1}"#);
                e.subjects = Vec::new();
                e
            },
            "events[0].subjects",
        ),
    ];
    for (e, field) in cases {
        let err = s
            .append(req("Family", "f", Any, vec![e]))
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, Error::InvalidRequest { field: f, .. } if f == field),
            "{field}: {err:?}"
        );
    }
    assert_eq!(s.head(&[]).await.expect("head"), 0);
    assert!(
        s.subjects("", 10).await.expect("list").is_empty(),
        "no key made"
    );
}
