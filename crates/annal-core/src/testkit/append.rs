//! Conformance cases of appends and transactions ([`crate::append`]): positions and
//! versions, defaults the store fills in, expected versions, idempotent retries, typed
//! rejections of bad input, and all-or-nothing batches and transactions.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, ev, payment, req, seed_family};
use crate::append::ExpectedVersion::{Any, Exact, Exists, NoStream};
use crate::append::{AppendRequest, Transaction};
use crate::checkpoint::CheckpointWrite;
use crate::error::Error;
use crate::event::{RawJson, RecordedEvent, Timestamp};
use crate::read::Direction;
use crate::store::Store;
use uuid::Uuid;

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

/// Who authenticated an append is recorded on its events beside the user_id they
/// claim, read back by every read, covered by the chain, and part of what makes a
/// retry identical. Not in the shared suite: an [`crate::Store`] over HTTP leaves the
/// principal to the server's credentials.
pub async fn a_principal_is_recorded_read_back_and_chained<H: Harness>(h: H) {
    let s = h.store();
    let by_service = req("Family", "family_1", NoStream, vec![ev("Enrolled", "{}")])
        .by("sarah")
        .authenticated_as("svc-enrolment");
    let first = s.append(by_service.clone()).await.expect("append");
    let anonymous = s
        .append(req(
            "Family",
            "family_2",
            NoStream,
            vec![ev("Enrolled", "{}")],
        ))
        .await
        .expect("append");
    let recorded = &first.events[0];
    assert_eq!(recorded.user_id, "sarah");
    assert_eq!(recorded.principal.as_deref(), Some("svc-enrolment"));
    assert_eq!(anonymous.events[0].principal, None);
    let all = s.read_all(0, 10, &Default::default()).await.expect("read");
    assert_eq!(all[0].principal.as_deref(), Some("svc-enrolment"));
    assert_eq!(all[1].principal, None);
    let by_id = s
        .event(recorded.event_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(by_id, *recorded);
    let stream = s
        .read_aggregate("family_1", Direction::Forward, None, 10)
        .await
        .expect("read");
    assert_eq!(stream[0], *recorded);
    let report = s.verify(None, None).await.expect("verify");
    assert!(report.ok, "{report:?}");

    // Retrying with the same ids: identical only when the principal is the same.
    let mut retry = by_service;
    retry.events[0].event_id = Some(recorded.event_id);
    retry.expected_version = Any;
    let other = retry.clone().authenticated_as("svc-other");
    let e = s
        .append(other)
        .await
        .expect_err("another principal is another append");
    assert!(
        matches!(
            e,
            Error::DuplicateEventId { .. } | Error::WrongExpectedVersion { .. }
        ),
        "{e:?}"
    );
    assert_eq!(s.head(&[]).await.expect("head"), 2, "nothing written");
    let again = s.append(retry).await.expect("the same principal retries");
    assert_eq!(again.events[0].position, recorded.position);
    assert_eq!(s.head(&[]).await.expect("head"), 2, "nothing written");
}
