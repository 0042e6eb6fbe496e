//! Conformance cases of snapshots ([`crate::snapshot`]): the latest at or below a
//! version, per tag.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::seed_family;
use crate::event::RawJson;
use crate::store::Store;

/// Snapshots: newest at or below a version, per tag; replace; unknown aggregate; bad version.
pub async fn snapshots_load_latest_at_or_below_for_their_tag<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "f", 10).await;
    let st = |v: &str| RawJson::parse(v).expect("json");
    s.save_snapshot("f", 3, "family-v1", st(r#"{"v":3}"#))
        .await
        .expect("save");
    s.save_snapshot("f", 7, "family-v1", st(r#"{"v":7}"#))
        .await
        .expect("save");
    s.save_snapshot("f", 5, "family-v2", st(r#"{"v":5, "shape": 2}"#))
        .await
        .expect("save");
    let latest = s
        .load_snapshot("f", "family-v1", None)
        .await
        .expect("load")
        .expect("some");
    assert_eq!(
        (latest.aggregate_version, latest.state.get()),
        (7, r#"{"v":7}"#)
    );
    assert_eq!(latest.aggregate_type, "Family");
    let below = s
        .load_snapshot("f", "family-v1", Some(6))
        .await
        .expect("load")
        .expect("some");
    assert_eq!(below.aggregate_version, 3);
    assert!(
        s.load_snapshot("f", "family-v1", Some(2))
            .await
            .expect("load")
            .is_none()
    );
    let v2 = s
        .load_snapshot("f", "family-v2", None)
        .await
        .expect("load")
        .expect("some");
    assert_eq!(
        v2.state.get(),
        r#"{"v":5, "shape": 2}"#,
        "state is kept verbatim"
    );
    assert!(
        s.load_snapshot("f", "family-v3", None)
            .await
            .expect("load")
            .is_none(),
        "other tags are never returned"
    );
    s.save_snapshot("f", 7, "family-v1", st(r#"{"v":"seven"}"#))
        .await
        .expect("replace");
    let replaced = s
        .load_snapshot("f", "family-v1", None)
        .await
        .expect("load")
        .expect("some");
    assert_eq!(replaced.state.get(), r#"{"v":"seven"}"#);
    let err = s
        .save_snapshot("nope", 1, "t", st("{}"))
        .await
        .expect_err("unknown aggregate");
    assert_eq!(err.kind(), "not_found");
    let err = s
        .save_snapshot("f", 11, "t", st("{}"))
        .await
        .expect_err("above current version");
    assert_eq!(err.kind(), "invalid_request");
    assert_eq!(
        s.head(&[]).await.expect("head"),
        10,
        "snapshots are not events"
    );
}
