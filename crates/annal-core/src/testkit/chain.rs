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
