//! The conformance cases, one async function per rule, named as the behaviour it checks.
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use crate::append::{AppendRequest, ExpectedVersion, NewEvent, Transaction};
use crate::checkpoint::{CheckpointStatus, CheckpointWrite};
use crate::error::Error;
use crate::event::{RawJson, RecordedEvent, Timestamp};
use crate::read::{Direction, Filter, stream_all};
use crate::store::Store;
use futures_util::TryStreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use ExpectedVersion::{Any, Exact, Exists, NoStream};

pub use super::stream_cases::{
    a_soft_deleted_stream_written_again_shows_only_its_new_events,
    a_stream_append_without_a_type_takes_the_streams_own_or_its_category,
    stream_records_match_what_the_events_say, the_store_refuses_appends_to_a_tombstoned_stream,
};

/// An event of `event_type` with JSON text `data`.
pub fn ev(event_type: &str, data: &str) -> NewEvent {
    NewEvent::raw(event_type, RawJson::parse(data).expect("test data is JSON"))
}

/// An append request.
pub fn req(
    aggregate_type: &str,
    aggregate_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    let mut r = AppendRequest::new(aggregate_type, aggregate_id, expected);
    r.events = events;
    r
}

/// Every event of the store, in order.
pub async fn all<S: Store + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    stream_all(store, 0, &Filter::default(), 500)
        .try_collect()
        .await
        .expect("reading the whole log")
}

fn payment(i: usize) -> NewEvent {
    ev(
        "PaymentReceived",
        &format!(
            r#"{{"amount": {}, "date": "2024-10-20", "method": "credit_card"}}"#,
            400 + i
        ),
    )
}

async fn seed_family<S: Store>(s: &S, id: &str, n: usize) {
    s.append(req("Family", id, Any, (0..n).map(payment).collect()))
        .await
        .expect("seeding an aggregate");
}

/// Positions run 1, 2, 3… across aggregates; versions run 1, 2, 3… per aggregate.
pub async fn appends_get_contiguous_positions_and_versions<H: Harness>(h: H) {
    let s = h.store();
    let r1 = s
        .append(req(
            "Family",
            "family_123",
            NoStream,
            vec![payment(0), payment(1)],
        ))
        .await
        .expect("first append");
    assert_eq!(
        (r1.first_position, r1.last_position, r1.aggregate_version),
        (1, 2, 2)
    );
    let r2 = s
        .append(req("Family", "family_456", NoStream, vec![payment(2)]))
        .await
        .expect("second aggregate");
    assert_eq!(
        (r2.first_position, r2.last_position, r2.aggregate_version),
        (3, 3, 1)
    );
    let r3 = s
        .append(req("Family", "family_123", Exact(2), vec![payment(3)]))
        .await
        .expect("third append");
    assert_eq!((r3.first_position, r3.aggregate_version), (4, 3));
    let log = all(s).await;
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let versions: Vec<_> = log
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.aggregate_version))
        .collect();
    assert_eq!(
        versions,
        vec![
            ("family_123", 1),
            ("family_123", 2),
            ("family_456", 1),
            ("family_123", 3)
        ]
    );
    assert_eq!(
        log[3], r3.events[0],
        "the append's answer is what is stored"
    );
}

/// Unset fields get the documented defaults; per-event values override the append's.
pub async fn store_fills_in_defaults<H: Harness>(h: H) {
    let s = h.store();
    let before = Timestamp::now();
    let mut r = req(
        "Family",
        "family_123",
        NoStream,
        vec![ev("FamilyEnrolled", "{}"), ev("ChildAdded", "{}")],
    );
    r.correlation_id = Some("enrollment_abc123".into());
    r.events[1].user_id = Some("sarah".into());
    r.events[1].causation_id = Some("cause-1".into());
    r.events[1].event_version = Some(2);
    let out = s.append(r).await.expect("append");
    let after = Timestamp::now();
    let [a, b] = &out.events[..] else {
        panic!("two events expected")
    };
    assert_eq!(
        a.event_id.get_version_num(),
        7,
        "store-assigned ids are UUID v7"
    );
    assert_eq!(a.user_id, "system");
    assert_eq!(a.event_version, 1);
    assert_eq!(a.metadata.get(), "{}");
    assert_eq!(a.correlation_id.as_deref(), Some("enrollment_abc123"));
    assert_eq!(a.causation_id, None);
    assert_eq!(b.user_id, "sarah");
    assert_eq!(b.event_version, 2);
    assert_eq!(b.correlation_id.as_deref(), Some("enrollment_abc123"));
    assert_eq!(b.causation_id.as_deref(), Some("cause-1"));
    assert!(
        a.recorded_at >= before && a.recorded_at <= after,
        "recorded_at is the commit time"
    );
}

/// Key order, spacing, number forms and escapes survive every read path.
pub async fn data_and_metadata_come_back_byte_for_byte<H: Harness>(h: H) {
    let s = h.store();
    let data = r#"{"z": 1.50, "a":[1e3, -0.0 ,{"é":"\u00e9\n"}], "big": 123456789012345678901234567890, "dup": 1, "dup": 2}"#;
    let meta = r#"{ "source" :"portal",  "trace": null }"#;
    let e = ev("Odd", data).with_metadata(RawJson::parse(meta).expect("meta"));
    let out = s
        .append(req("Thing", "t-1", NoStream, vec![e]))
        .await
        .expect("append");
    let id = out.events[0].event_id;
    let check = |e: &RecordedEvent, path: &str| {
        assert_eq!(e.data.get(), data, "data via {path}");
        assert_eq!(e.metadata.get(), meta, "metadata via {path}");
    };
    check(&out.events[0], "append result");
    check(
        &s.read_aggregate("t-1", Direction::Forward, None, 10)
            .await
            .expect("read")[0],
        "aggregate read",
    );
    check(&all(s).await[0], "global read");
    check(
        &s.event(id).await.expect("by id").expect("exists"),
        "event by id",
    );
    let json = serde_json::to_string(&out.events[0]).expect("serialise");
    assert!(
        json.contains(data) && json.contains(meta),
        "the JSON form embeds them verbatim: {json}"
    );
    let back: RecordedEvent = serde_json::from_str(&json).expect("parse back");
    assert_eq!(back, out.events[0]);
}

fn is_wrong_version(r: &Result<impl std::fmt::Debug, Error>, want_actual: u64) -> bool {
    matches!(r, Err(Error::WrongExpectedVersion { actual, .. }) if *actual == want_actual)
}

/// any / no_stream / exists / exact N / exact 0, each on a missing and an existing aggregate.
pub async fn expected_version_is_checked_for_every_variant<H: Harness>(h: H) {
    let s = h.store();
    let one = || vec![payment(0)];
    assert!(is_wrong_version(
        &s.append(req("Family", "f", Exists, one())).await,
        0
    ));
    assert!(is_wrong_version(
        &s.append(req("Family", "f", Exact(1), one())).await,
        0
    ));
    s.append(req("Family", "f", Exact(0), one()))
        .await
        .expect("exact 0 on a new aggregate");
    assert!(is_wrong_version(
        &s.append(req("Family", "f", NoStream, one())).await,
        1
    ));
    assert!(is_wrong_version(
        &s.append(req("Family", "f", Exact(0), one())).await,
        1
    ));
    assert!(is_wrong_version(
        &s.append(req("Family", "f", Exact(2), one())).await,
        1
    ));
    s.append(req("Family", "f", Exact(1), one()))
        .await
        .expect("exact 1");
    s.append(req("Family", "f", Exists, one()))
        .await
        .expect("exists");
    s.append(req("Family", "f", Any, one())).await.expect("any");
    s.append(req("Family", "g", Any, one()))
        .await
        .expect("any on a new aggregate");
    s.append(req("Family", "h", NoStream, one()))
        .await
        .expect("no_stream on a new aggregate");
    assert_eq!(
        s.aggregate("f")
            .await
            .expect("info")
            .expect("exists")
            .version,
        4
    );
    assert_eq!(s.head(&[]).await.expect("head"), 6);
}

/// A conflict reports the actual version and leaves the log as it was.
pub async fn conflicting_append_writes_nothing<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_123", 3).await;
    let err = s
        .append(req(
            "Family",
            "family_123",
            Exact(2),
            vec![payment(9), payment(10)],
        ))
        .await
        .expect_err("stale expected version");
    match &err {
        Error::WrongExpectedVersion {
            aggregate_id,
            expected,
            actual,
        } => {
            assert_eq!(
                (aggregate_id.as_str(), *expected, *actual),
                ("family_123", Exact(2), 3)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(err.kind(), "wrong_expected_version");
    assert!(
        err.to_string().contains("family_123"),
        "the message names the aggregate"
    );
    assert_eq!(all(s).await.len(), 3);
    assert_eq!(s.head(&[]).await.expect("head"), 3);
}

/// An aggregate's type is fixed by its first event.
pub async fn appending_with_another_aggregate_type_is_rejected<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "x-1", 1).await;
    let err = s
        .append(req("Invoice", "x-1", Any, vec![payment(0)]))
        .await
        .expect_err("type mismatch");
    assert!(
        matches!(err, Error::AggregateTypeMismatch { ref existing, ref requested, .. }
        if existing == "Family" && requested == "Invoice"),
        "{err:?}"
    );
    assert_eq!(all(s).await.len(), 1);
}

/// A client that lost the answer resends the same ids and gets the original result.
pub async fn retried_append_with_same_event_ids_writes_nothing_again<H: Harness>(h: H) {
    let s = h.store();
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let make = |expected| {
        req(
            "Family",
            "family_123",
            expected,
            vec![payment(1).with_id(ids[0]), payment(2).with_id(ids[1])],
        )
    };
    let first = s.append(make(NoStream)).await.expect("first");
    seed_family(s, "other", 1).await;
    let again = s
        .append(make(NoStream))
        .await
        .expect("retry with the same expectation");
    assert_eq!(again, first, "the retry answers the original result");
    let any = s.append(make(Any)).await.expect("retry with any");
    assert_eq!(any, first);
    assert_eq!(all(s).await.len(), 3, "nothing was written twice");
    // The same batch sent with an expectation the original position contradicts.
    let err = s
        .append(make(Exact(5)))
        .await
        .expect_err("contradicting retry");
    assert_eq!(err.kind(), "duplicate_event_id");
    // Part of the batch stored, part new: not a retry.
    let err = s
        .append(req(
            "Family",
            "family_123",
            Any,
            vec![payment(1).with_id(ids[0]), payment(3)],
        ))
        .await
        .expect_err("half retry");
    assert_eq!(err.kind(), "duplicate_event_id");
    assert_eq!(all(s).await.len(), 3);
}

/// An event_id is forever bound to its content.
pub async fn reused_event_id_with_different_content_is_rejected<H: Harness>(h: H) {
    let s = h.store();
    let id = Uuid::now_v7();
    s.append(req("Family", "f1", NoStream, vec![payment(1).with_id(id)]))
        .await
        .expect("first");
    let err = s
        .append(req("Family", "f1", Any, vec![payment(2).with_id(id)]))
        .await
        .expect_err("same id, other data");
    assert!(
        matches!(err, Error::DuplicateEventId { event_id, .. } if event_id == id),
        "{err:?}"
    );
    let err = s
        .append(req("Family", "f2", Any, vec![payment(1).with_id(id)]))
        .await
        .expect_err("same id, other aggregate");
    assert_eq!(err.kind(), "duplicate_event_id");
    let err = s
        .append(req(
            "Family",
            "f3",
            Any,
            vec![payment(1).with_id(id), payment(1).with_id(id)],
        ))
        .await
        .expect_err("same id twice in one batch");
    assert_eq!(err.kind(), "invalid_request");
    assert_eq!(all(s).await.len(), 1);
}

/// One bad event fails the whole batch.
pub async fn batch_with_one_invalid_event_writes_nothing<H: Harness>(h: H) {
    let s = h.store();
    let mut events: Vec<_> = (0..5).map(payment).collect();
    events[3].metadata = Some(RawJson::parse("[1,2]").expect("json"));
    let err = s
        .append(req("Family", "f", Any, events))
        .await
        .expect_err("bad metadata");
    match err {
        Error::InvalidRequest { field, .. } => assert_eq!(field, "events[3].metadata"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.head(&[]).await.expect("head"), 0);
    assert!(s.aggregate("f").await.expect("info").is_none());
}

/// Names, metadata, sizes and batch lengths are checked, with typed errors.
pub async fn bad_input_gets_typed_errors_and_writes_nothing<H: Harness>(h: H) {
    let s = h.store();
    let long = "x".repeat(256);
    let max = "x".repeat(255);
    let cases: Vec<(AppendRequest, &str, &str)> = vec![
        (
            req("", "a", Any, vec![payment(0)]),
            "invalid_request",
            "aggregate_type",
        ),
        (
            req(&long, "a", Any, vec![payment(0)]),
            "invalid_request",
            "aggregate_type",
        ),
        (
            req("T", "", Any, vec![payment(0)]),
            "invalid_request",
            "aggregate_id",
        ),
        (
            req("T", &long, Any, vec![payment(0)]),
            "invalid_request",
            "aggregate_id",
        ),
        (
            req("T", "a", Any, vec![ev("", "{}")]),
            "invalid_request",
            "events[0].event_type",
        ),
        (
            req("T", "a", Any, vec![ev(&long, "{}")]),
            "invalid_request",
            "events[0].event_type",
        ),
        (
            req("T", "a\n", Any, vec![payment(0)]),
            "invalid_request",
            "aggregate_id",
        ),
        (req("T", "a", Any, vec![]), "invalid_request", "events"),
        (
            req(
                "T",
                "a",
                Any,
                vec![payment(0).with_metadata(RawJson::parse("\"s\"").expect("json"))],
            ),
            "invalid_request",
            "events[0].metadata",
        ),
        (
            req("T", "a", Any, vec![payment(0).with_version(0)]),
            "invalid_request",
            "events[0].event_version",
        ),
        (
            req(
                "T",
                "a",
                Any,
                vec![ev("Big", &format!("\"{}\"", "x".repeat(1024 * 1024)))],
            ),
            "too_large",
            "events[0]",
        ),
        (
            req("T", "a", Any, (0..10_001).map(|_| ev("E", "1")).collect()),
            "too_large",
            "events",
        ),
    ];
    for (request, kind, field) in cases {
        let err = s.append(request).await.expect_err("bad input must fail");
        assert_eq!(err.kind(), kind, "{err}");
        match &err {
            Error::InvalidRequest { field: f, .. } | Error::TooLarge { field: f, .. } => {
                assert_eq!(f, field, "{err}");
            }
            other => panic!("{other:?}"),
        }
    }
    s.append(req(&max, &max, Any, vec![ev(&max, "{}")]))
        .await
        .expect("255 bytes is allowed");
    assert_eq!(s.head(&[]).await.expect("head"), 1);
    let word: Result<AppendRequest, _> = serde_json::from_str(
        r#"{"aggregate_type":"T","aggregate_id":"a","expected_version":"maybe","events":[]}"#,
    );
    let msg = word.expect_err("unknown expected_version word").to_string();
    assert!(msg.contains("expected_version"), "{msg}");
}

/// Several aggregates and a checkpoint commit together.
pub async fn transaction_commits_appends_and_checkpoint_together<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_123", 2).await;
    let out = s
        .transact(Transaction {
            appends: vec![
                req(
                    "Family",
                    "family_123",
                    Exact(2),
                    vec![ev("PortalAccessLocked", "{}")],
                ),
                req(
                    "Notice",
                    "notice-1",
                    NoStream,
                    vec![ev("NoticeSent", "{}"), ev("NoticeRead", "{}")],
                ),
            ],
            checkpoint: Some(CheckpointWrite::new("payments-projection", 2).expecting(None)),
        })
        .await
        .expect("transaction");
    assert_eq!(out.results.len(), 2);
    assert_eq!(
        (
            out.results[0].first_position,
            out.results[0].aggregate_version
        ),
        (3, 3)
    );
    assert_eq!(
        (out.results[1].first_position, out.results[1].last_position),
        (4, 5)
    );
    let cp = out.checkpoint.expect("checkpoint result");
    assert_eq!((cp.name.as_str(), cp.position), ("payments-projection", 2));
    assert_eq!(
        s.checkpoint("payments-projection")
            .await
            .expect("read")
            .expect("stored"),
        cp
    );
    let stored: Vec<_> = all(s).await.into_iter().map(|e| e.position).collect();
    assert_eq!(stored, vec![1, 2, 3, 4, 5]);
    // A checkpoint may advance to the transaction's own last event.
    let out = s
        .transact(Transaction {
            appends: vec![req(
                "Notice",
                "notice-1",
                Exact(2),
                vec![ev("NoticeArchived", "{}")],
            )],
            checkpoint: Some(CheckpointWrite::new("payments-projection", 6).expecting(Some(2))),
        })
        .await
        .expect("second transaction");
    assert_eq!(out.checkpoint.expect("checkpoint").position, 6);
}

/// One failing append fails the transaction and writes none of it.
pub async fn transaction_with_one_conflict_writes_nothing<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "family_123", 2).await;
    let err = s
        .transact(Transaction {
            appends: vec![
                req("Notice", "notice-1", NoStream, vec![ev("NoticeSent", "{}")]),
                req(
                    "Family",
                    "family_123",
                    Exact(1),
                    vec![ev("PortalAccessLocked", "{}")],
                ),
            ],
            checkpoint: Some(CheckpointWrite::new("p", 2)),
        })
        .await
        .expect_err("stale version in the second append");
    assert!(
        matches!(err, Error::WrongExpectedVersion { ref aggregate_id, actual: 2, .. }
        if aggregate_id == "family_123"),
        "{err:?}"
    );
    assert_eq!(s.head(&[]).await.expect("head"), 2);
    assert!(s.aggregate("notice-1").await.expect("info").is_none());
    assert!(s.checkpoint("p").await.expect("read").is_none());
    let err = s
        .transact(Transaction {
            appends: vec![
                req("Notice", "n", Any, vec![ev("A", "{}")]),
                req("", "m", Any, vec![ev("A", "{}")]),
            ],
            checkpoint: None,
        })
        .await
        .expect_err("invalid second append");
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "appends[1].aggregate_type"),
        "{err:?}"
    );
    assert_eq!(s.head(&[]).await.expect("head"), 2);
}

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

/// Forward from a version, backward from a version or the end, with limits.
pub async fn aggregate_reads_page_forwards_and_backwards<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "a", 10).await;
    seed_family(s, "b", 3).await;
    let versions =
        |v: Vec<RecordedEvent>| v.iter().map(|e| e.aggregate_version).collect::<Vec<_>>();
    let fw = s
        .read_aggregate("a", Direction::Forward, None, 4)
        .await
        .expect("read");
    assert_eq!(versions(fw), vec![1, 2, 3, 4]);
    let fw = s
        .read_aggregate("a", Direction::Forward, Some(8), 100)
        .await
        .expect("read");
    assert_eq!(versions(fw), vec![8, 9, 10]);
    let bw = s
        .read_aggregate("a", Direction::Backward, None, 3)
        .await
        .expect("read");
    assert_eq!(versions(bw), vec![10, 9, 8]);
    let bw = s
        .read_aggregate("a", Direction::Backward, Some(2), 10)
        .await
        .expect("read");
    assert_eq!(versions(bw), vec![2, 1]);
    assert!(
        s.read_aggregate("a", Direction::Forward, Some(11), 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        s.read_aggregate("nope", Direction::Forward, None, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let info = s.aggregate("b").await.expect("info").expect("exists");
    assert_eq!((info.aggregate_type.as_str(), info.version), ("Family", 3));
    assert!(s.aggregate("nope").await.expect("info").is_none());
}

/// Each filter field, OR within a field, AND across fields, and the time range.
pub async fn read_all_filters_by_every_field<H: Harness>(h: H) {
    let s = h.store();
    let mut r = req(
        "Family",
        "family_123",
        Any,
        vec![ev("FamilyEnrolled", "{}"), ev("ChildAdded", "{}")],
    );
    r.user_id = Some("sarah".into());
    r.correlation_id = Some("enrollment_abc123".into());
    s.append(r).await.expect("enrolment");
    let mid = s.head(&[]).await.expect("head");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let split = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut r = req(
        "Family",
        "family_123",
        Any,
        vec![ev("PaymentReceived", "{}").caused_by("evt-9")],
    );
    r.correlation_id = Some("payment_xyz789".into());
    s.append(r).await.expect("payment");
    let mut r = req(
        "Invoice",
        "inv-1",
        Any,
        vec![ev("InvoiceIssued", "{}"), ev("PaymentReceived", "{}")],
    );
    r.user_id = Some("billing".into());
    s.append(r).await.expect("invoice");
    let pos = |f: Filter| async move {
        s.read_all(0, 100, &f)
            .await
            .expect("read")
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>()
    };
    let list = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(pos(Filter::default()).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        pos(Filter {
            event_types: list(&["PaymentReceived"]),
            ..Default::default()
        })
        .await,
        vec![3, 5]
    );
    assert_eq!(
        pos(Filter {
            event_types: list(&["ChildAdded", "InvoiceIssued"]),
            ..Default::default()
        })
        .await,
        vec![2, 4]
    );
    assert_eq!(
        pos(Filter {
            aggregate_types: list(&["Invoice"]),
            ..Default::default()
        })
        .await,
        vec![4, 5]
    );
    assert_eq!(
        pos(Filter {
            correlation_ids: list(&["enrollment_abc123"]),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        pos(Filter {
            causation_ids: list(&["evt-9"]),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        pos(Filter {
            user_ids: list(&["sarah", "billing"]),
            ..Default::default()
        })
        .await,
        vec![1, 2, 4, 5]
    );
    assert_eq!(
        pos(Filter {
            event_types: list(&["PaymentReceived"]),
            aggregate_types: list(&["Family"]),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        pos(Filter {
            since: Some(split),
            ..Default::default()
        })
        .await,
        vec![3, 4, 5]
    );
    assert_eq!(
        pos(Filter {
            until: Some(split),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(mid, 2);
    let page = s
        .read_all(
            1,
            2,
            &Filter {
                user_ids: list(&["sarah", "billing"]),
                ..Default::default()
            },
        )
        .await
        .expect("paged read");
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![2, 4]
    );
    let everything: Vec<RecordedEvent> = all(s).await;
    for f in [
        Filter {
            event_types: list(&["PaymentReceived"]),
            ..Default::default()
        },
        Filter {
            since: Some(split),
            user_ids: list(&["billing"]),
            ..Default::default()
        },
    ] {
        let want: Vec<_> = everything
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| e.position)
            .collect();
        assert_eq!(
            pos(f.clone()).await,
            want,
            "backend agrees with Filter::matches for {f:?}"
        );
    }
}

/// One event by id; an unknown id is `None`.
pub async fn events_are_found_by_id<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "f", 3).await;
    let log = all(s).await;
    for e in &log {
        assert_eq!(&s.event(e.event_id).await.expect("read").expect("found"), e);
    }
    assert!(s.event(Uuid::now_v7()).await.expect("read").is_none());
}

/// The head is the last position; by aggregate type, the last of theirs.
pub async fn head_tracks_last_position_overall_and_by_aggregate_type<H: Harness>(h: H) {
    let s = h.store();
    assert_eq!(s.head(&[]).await.expect("head"), 0);
    seed_family(s, "f", 2).await;
    s.append(req("Invoice", "i", Any, vec![ev("InvoiceIssued", "{}")]))
        .await
        .expect("append");
    assert_eq!(s.head(&[]).await.expect("head"), 3);
    assert_eq!(s.head(&["Family".into()]).await.expect("head"), 2);
    assert_eq!(
        s.head(&["Family".into(), "Invoice".into()])
            .await
            .expect("head"),
        3
    );
    assert_eq!(s.head(&["Nothing".into()]).await.expect("head"), 0);
}

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

/// Sixteen writers with the same expected version: exactly one wins each version.
pub async fn sixteen_writers_racing_on_one_aggregate_win_each_version_once<H: Harness>(h: H) {
    const WRITERS: usize = 16;
    const ROUNDS: u64 = 12;
    let s = h.store().clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (s, barrier) = (s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let e = ev("Bid", &format!(r#"{{"writer":{w},"round":{round}}}"#));
                match s
                    .append(req("Auction", "lot-1", Exact(round), vec![e]))
                    .await
                {
                    Ok(r) => won.push(r.events[0].clone()),
                    Err(Error::WrongExpectedVersion { actual, .. }) => {
                        assert_eq!(actual, round + 1)
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            won
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.expect("writer task"));
    }
    winners.sort_by_key(|e| e.aggregate_version);
    assert_eq!(
        winners.len() as u64,
        ROUNDS,
        "exactly one winner per version"
    );
    let stored = s
        .read_aggregate("lot-1", Direction::Forward, None, 100)
        .await
        .expect("read");
    assert_eq!(
        stored, winners,
        "the log holds exactly the acknowledged events"
    );
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// Eight writers on their own aggregates, while a reader tails by position.
pub async fn eight_writers_while_a_reader_tails_see_every_position_once_in_order<H: Harness>(h: H) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 60;
    let s = h.store().clone();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..APPENDS {
                let n = 1 + i % 3;
                let events = (0..n)
                    .map(|k| ev("Tick", &format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)))
                    .collect();
                let r = s
                    .append(req("Clock", &format!("clock-{w}-{}", i % 4), Any, events))
                    .await
                    .expect("append");
                acked.extend(r.events.into_iter().map(|e| e.event_id));
            }
            acked
        }));
    }
    let total: u64 = (WRITERS * (0..APPENDS).map(|i| 1 + i % 3).sum::<usize>()) as u64;
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            while after < total {
                let page = s
                    .read_all(after, 50, &Filter::default())
                    .await
                    .expect("tail");
                for e in page {
                    assert_eq!(e.position, after + 1, "no gap, no duplicate, no reordering");
                    after = e.position;
                    seen.push(e.event_id);
                }
                if after < total {
                    s.wait_for_head(after, Duration::from_millis(200))
                        .await
                        .expect("wait");
                }
            }
            seen
        })
    };
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader finishes")
        .expect("reader task");
    assert_eq!(seen.len() as u64, total);
    assert_eq!(
        seen.into_iter().collect::<HashSet<_>>(),
        acked,
        "exactly the acknowledged events"
    );
    assert_eq!(s.head(&[]).await.expect("head"), total);
}

/// Appends committed in the same group as a conflicting one still succeed.
pub async fn a_conflict_does_not_fail_appends_committed_with_it<H: Harness>(h: H) {
    let s = h.store().clone();
    seed_family(&s, "contested", 1).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            if i % 4 == 0 {
                // Always stale: the aggregate is at version 1.
                s.append(req("Family", "contested", NoStream, vec![payment(i)]))
                    .await
                    .map(|_| false)
            } else {
                s.append(req(
                    "Family",
                    &format!("free-{i}"),
                    NoStream,
                    vec![payment(i)],
                ))
                .await
                .map(|_| true)
            }
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                i % 4 == 0 && e.kind() == "wrong_expected_version",
                "append {i}: {e}"
            ),
        }
    }
    assert_eq!(ok, 24);
    assert_eq!(s.head(&[]).await.expect("head"), 25);
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// The streaming helper reads everything in pages, in order.
pub async fn streaming_reads_page_through_the_whole_log<H: Harness>(h: H) {
    let s = h.store();
    for i in 0..7 {
        s.append(req(
            "Family",
            &format!("f{i}"),
            Any,
            (0..100).map(payment).collect(),
        ))
        .await
        .expect("append");
    }
    let f = Filter::default();
    let mut positions = Vec::new();
    let mut stream = std::pin::pin!(stream_all(s, 0, &f, 64));
    while let Some(e) = stream.try_next().await.expect("stream") {
        positions.push(e.position);
    }
    assert_eq!(positions, (1..=700).collect::<Vec<_>>());
    let f = Filter {
        aggregate_types: vec!["Family".into()],
        ..Default::default()
    };
    let tail: Vec<_> = stream_all(s, 650, &f, 7)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(tail.len(), 50);
}

/// Time and order agree: recorded_at never decreases as positions grow.
pub async fn recorded_at_never_decreases_with_position<H: Harness>(h: H) {
    let s = h.store().clone();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.append(req("Family", &format!("f{w}"), Any, vec![payment(i)]))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let log = all(&s).await;
    assert_eq!(log.len(), 100);
    assert!(log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

/// A waiter wakes when a commit moves the head, and returns at its timeout otherwise.
pub async fn wait_for_head_wakes_on_commit<H: Harness>(h: H) {
    let s = h.store().clone();
    let start = std::time::Instant::now();
    assert_eq!(
        s.wait_for_head(0, Duration::from_millis(120))
            .await
            .expect("wait"),
        0
    );
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "it waited for the timeout"
    );
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_head(0, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    seed_family(&s, "f", 1).await;
    let head = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before its timeout")
        .expect("task")
        .expect("wait");
    assert_eq!(head, 1);
}
