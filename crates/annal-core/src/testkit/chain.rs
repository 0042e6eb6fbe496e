//! Conformance cases of the hash chain ([`crate::chain`]): `verify` accepts an intact
//! chain, refuses a range past the head as bad input (never a false alarm), finds an
//! event edited behind the store's back, and the chain continues across a reopen.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, payment, req, seed_family};
use crate::append::ExpectedVersion::Exact;
use crate::error::ErrorKind;
use crate::store::Store;

/// An untouched log verifies, whole and by range.
pub async fn verify_accepts_an_intact_chain_whole_and_by_range<H: Harness>(h: H) {
    let s = h.store();
    let empty = s.verify(None, None).await.expect("verify empty");
    assert!(empty.ok && empty.checked == 0);
    for i in 0..5 {
        seed_family(s, &format!("f{i}"), 7).await;
    }
    let whole = s.verify(None, None).await.expect("verify");
    assert!(whole.ok, "{whole:?}");
    assert_eq!(whole.checked, 35);
    let part = s.verify(Some(10), Some(20)).await.expect("verify range");
    assert!(part.ok && part.checked == 11, "{part:?}");
    let log = all(s).await;
    let mut prev = crate::chain::Hash::ZERO;
    for e in &log {
        assert_eq!(
            crate::chain::event_hash(&prev, e),
            e.hash,
            "the documented recipe gives the stored hash"
        );
        prev = e.hash;
    }
}

/// A range that starts past the head, or ends before it starts, is bad input, never a
/// broken chain; a range that ends past the head is checked up to the head.
pub async fn verify_of_a_range_past_the_head_is_invalid_not_broken<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_1", 7).await;
    let past = s.verify(Some(40), None).await.expect_err("past the head");
    assert_eq!(past.kind(), ErrorKind::InvalidRequest, "{past}");
    assert!(past.to_string().contains("past the head"), "{past}");
    let reversed = s.verify(Some(5), Some(3)).await.expect_err("reversed");
    assert_eq!(reversed.kind(), ErrorKind::InvalidRequest, "{reversed}");
    let beyond = s.verify(Some(3), Some(100)).await.expect("up to the head");
    assert!(beyond.ok && beyond.checked == 5, "{beyond:?}");
}

/// Editing a stored event's data behind the store's back breaks the chain there.
pub async fn verify_detects_an_event_edited_behind_the_store<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_123", 6).await;
    h.tamper_data(
        4,
        r#"{"amount": 1, "date": "2024-10-20", "method": "cash"}"#,
    )
    .await;
    let s = h.store();
    let r = s.verify(None, None).await.expect("verify");
    assert!(!r.ok);
    assert_eq!((r.first_bad_position, r.checked), (Some(4), 3));
    assert!(r.expected_hash.is_some() && r.stored_hash.is_some());
    let before = s.verify(Some(1), Some(3)).await.expect("verify");
    assert!(before.ok, "the range before the edit still verifies");
}

/// A digest proves the prefix it names: it passes on the log it was taken of (and on
/// that log grown), and fails when its position is past the head (a cut-off tail), when
/// the event there has another hash (a rewritten history), or when the chain before it
/// was edited.
pub async fn a_digest_proves_its_prefix_and_catches_a_cut_tail_or_a_rewrite<H: Harness>(h: H) {
    use crate::digest;
    let s = h.store();
    let empty = digest::take(s).await.expect("digest of an empty log");
    assert_eq!((empty.position, empty.hash), (0, crate::chain::Hash::ZERO));
    seed_family(s, "family_123", 6).await;
    let d = digest::take(s).await.expect("digest");
    assert_eq!(d.position, 6);
    assert!(d.recorded_at.is_some());
    for (position, hash) in [(0, empty.hash), (6, d.hash)] {
        let r = digest::check(s, position, hash).await.expect("check");
        assert!(r.ok && r.checked == 6, "{r:?}");
    }
    seed_family(s, "family_456", 2).await;
    let grown = digest::check(s, d.position, d.hash).await.expect("check");
    assert!(grown.ok, "a grown log still holds the prefix: {grown:?}");
    let cut = digest::check(s, 20, d.hash).await.expect("check");
    assert!(!cut.ok && cut.first_bad_position == Some(20), "{cut:?}");
    assert!(
        cut.reason.as_deref().is_some_and(|r| r.contains("cut off")),
        "{cut:?}"
    );
    let other = all(s).await[2].hash;
    let rewritten = digest::check(s, 6, other).await.expect("check");
    assert!(
        !rewritten.ok && rewritten.stored_hash == Some(d.hash),
        "{rewritten:?}"
    );
    h.tamper_data(
        2,
        r#"{"amount": 1, "date": "2024-10-20", "method": "cash"}"#,
    )
    .await;
    let s = h.store();
    let edited = digest::check(s, d.position, d.hash).await.expect("check");
    assert!(
        !edited.ok && edited.first_bad_position == Some(2),
        "{edited:?}"
    );
}

/// An event edited behind the store's back is never served: every read that would
/// return it (the log, its aggregate, by id) fails with `corrupt` naming its position,
/// the events before it are still served, and verify still reports where and how.
pub async fn a_tampered_event_is_never_served<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_123", 6).await;
    seed_family(s, "family_456", 2).await;
    let id = all(s).await[3].event_id;
    h.tamper_data(
        4,
        r#"{"amount": 1, "date": "2024-10-20", "method": "cash"}"#,
    )
    .await;
    let s = h.store();
    let names_4 = |e: crate::error::Error| {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("position 4"), "{e}");
    };
    names_4(
        s.read_all(0, 100, &Default::default())
            .await
            .expect_err("read all"),
    );
    names_4(
        s.read_all(3, 1, &Default::default())
            .await
            .expect_err("read from it"),
    );
    use crate::read::Direction;
    names_4(
        s.read_aggregate("family_123", Direction::Backward, None, 10)
            .await
            .expect_err("its aggregate, backwards"),
    );
    names_4(s.event(id).await.expect_err("by id"));
    let before = s
        .read_all(0, 3, &Default::default())
        .await
        .expect("before it");
    assert_eq!(before.len(), 3);
    let other = s
        .read_aggregate("family_456", Direction::Forward, None, 10)
        .await
        .expect("another aggregate, after it in the log");
    assert_eq!(other.len(), 2);
    let r = s.verify(None, None).await.expect("verify reports");
    assert_eq!(r.first_bad_position, Some(4), "{r:?}");
}

/// After a reopen, positions and the chain carry on where they were.
pub async fn chain_and_positions_continue_after_reopen<H: Harness>(mut h: H) {
    seed_family(h.store(), "f", 3).await;
    h.reopen().await;
    let s = h.store();
    let out = s
        .append(req("Family", "f", Exact(3), vec![payment(4)]))
        .await
        .expect("append after reopen");
    assert_eq!((out.first_position, out.aggregate_version), (4, 4));
    let r = s.verify(None, None).await.expect("verify");
    assert!(r.ok && r.checked == 4, "{r:?}");
}
