//! Conformance cases of checkpoints ([`crate::checkpoint`]): expected-position
//! conflicts write nothing, and status and error fields are kept as written.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{payment, req, seed_family};
use crate::append::ExpectedVersion::Exact;
use crate::append::Transaction;
use crate::checkpoint::{CheckpointStatus, CheckpointWrite};
use crate::error::Error;
use crate::store::Store;

/// A checkpoint that moved since the writer read it fails the whole transaction.
pub async fn checkpoint_conflict_writes_nothing<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "f", 5).await;
    s.put_checkpoint(CheckpointWrite::new("proj", 3))
        .await
        .expect("first write");
    let err = s
        .transact(Transaction {
            appends: vec![req("Family", "f", Exact(5), vec![payment(0)])],
            checkpoint: Some(CheckpointWrite::new("proj", 5).expecting(Some(2))),
        })
        .await
        .expect_err("stale checkpoint");
    match &err {
        Error::CheckpointConflict {
            name,
            expected_position,
            actual_position,
        } => {
            assert_eq!(
                (name.as_str(), *expected_position, *actual_position),
                ("proj", Some(2), Some(3))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.head(&[]).await.expect("head"),
        5,
        "the append in it was not written"
    );
    let err = s
        .put_checkpoint(CheckpointWrite::new("proj", 4).expecting(None))
        .await
        .expect_err("expected absent, but it exists");
    assert_eq!(err.kind(), "checkpoint_conflict");
    let err = s
        .put_checkpoint(CheckpointWrite::new("proj", 99))
        .await
        .expect_err("past the head");
    assert_eq!(err.kind(), "invalid_request");
    assert_eq!(
        s.checkpoint("proj")
            .await
            .expect("read")
            .expect("stored")
            .position,
        3
    );
}

/// A checkpoint that names another log as its source (a process application's upstream)
/// is committed with the events it led to, at positions this store's head never reached;
/// only the compare-and-set orders it. Without a source, the head still bounds it.
pub async fn a_checkpoint_of_another_log_commits_with_the_events_that_came_from_it<H: Harness>(
    h: H,
) {
    let s = h.store();
    let upstream = |position, expected| {
        CheckpointWrite::new("orders-projector", position)
            .in_source("orders-service")
            .expecting(expected)
    };
    let done = s
        .transact(Transaction {
            appends: vec![req(
                "Family",
                "f",
                crate::append::ExpectedVersion::NoStream,
                vec![payment(0)],
            )],
            checkpoint: Some(upstream(21, None)),
        })
        .await
        .expect("a position in another log, past this store's head");
    let cp = done.checkpoint.expect("written");
    assert_eq!(
        (cp.position, cp.source.as_deref()),
        (21, Some("orders-service"))
    );
    s.transact(Transaction {
        appends: vec![req("Family", "f", Exact(1), vec![payment(1)])],
        checkpoint: Some(upstream(40, Some(21))),
    })
    .await
    .expect("moved on");
    let err = s
        .transact(Transaction {
            appends: vec![req("Family", "f", Exact(2), vec![payment(2)])],
            checkpoint: Some(upstream(41, Some(21))),
        })
        .await
        .expect_err("a second delivery of upstream events already handled");
    assert_eq!(err.kind(), "checkpoint_conflict");
    assert_eq!(
        s.head(&[]).await.expect("head"),
        2,
        "its append was not written"
    );
    let read = s
        .checkpoint("orders-projector")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (read.position, read.source.as_deref()),
        (40, Some("orders-service"))
    );
    let listed = s.checkpoints().await.expect("list");
    assert_eq!(listed, vec![read]);

    let err = s
        .put_checkpoint(CheckpointWrite::new("own", 99))
        .await
        .expect_err("this store's log ends at 2");
    assert_eq!(err.kind(), "invalid_request");
    assert!(err.to_string().contains("source"), "{err}");
    let err = s
        .put_checkpoint(CheckpointWrite::new("own", 1).in_source(""))
        .await
        .expect_err("an empty source");
    assert_eq!(err.kind(), "invalid_request");
    assert!(s.checkpoint("own").await.expect("read").is_none());
    // A source's positions are still numbers the store keeps exactly.
    for too_big in [
        CheckpointWrite::new("own", u64::MAX).in_source("kafka"),
        CheckpointWrite::new("own", 1)
            .in_source("kafka")
            .expecting(Some(u64::MAX)),
    ] {
        let err = s
            .put_checkpoint(too_big)
            .await
            .expect_err("past the largest position stored");
        assert_eq!(err.kind(), "invalid_request");
        assert!(err.to_string().contains("largest position"), "{err}");
    }
    assert!(s.checkpoint("own").await.expect("read").is_none());
}

/// Status, error count and last error are stored as written.
pub async fn checkpoints_keep_status_and_errors<H: Harness>(h: H) {
    let s = h.store();
    assert!(s.checkpoint("nobody").await.expect("read").is_none());
    seed_family(s, "f", 2).await;
    let mut w = CheckpointWrite::new("proj", 1);
    w.status = CheckpointStatus::Faulted;
    w.error_count = 3;
    w.last_error = Some("handler failed: boom".into());
    let stored = s.put_checkpoint(w).await.expect("write");
    let read = s.checkpoint("proj").await.expect("read").expect("exists");
    assert_eq!(read, stored);
    assert_eq!(read.status, CheckpointStatus::Faulted);
    assert_eq!(read.error_count, 3);
    assert_eq!(read.last_error.as_deref(), Some("handler failed: boom"));
    for status in [
        CheckpointStatus::Running,
        CheckpointStatus::Rebuilding,
        CheckpointStatus::Stopped,
    ] {
        let mut w = CheckpointWrite::new("proj", 2);
        w.status = status;
        s.put_checkpoint(w).await.expect("write");
        assert_eq!(
            s.checkpoint("proj")
                .await
                .expect("read")
                .expect("exists")
                .status,
            status
        );
    }
    let json = serde_json::to_value(s.checkpoint("proj").await.expect("read").expect("exists"))
        .expect("json");
    for key in [
        "name",
        "position",
        "status",
        "error_count",
        "last_error",
        "updated_at",
    ] {
        assert!(json.get(key).is_some(), "checkpoint JSON has {key}");
    }
}
