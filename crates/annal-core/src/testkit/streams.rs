//! Conformance cases of the stream rules ([`crate::streams`]) as the store's own writer
//! enforces them: through [`Store::append`], with no read before it.

use super::Harness;
use super::fixtures::{ev, req};
use crate::append::{Actor, AppendRequest, ExpectedVersion};
use crate::error::Error;
use crate::read::Direction;
use crate::store::Store;
use crate::stream_record::StreamRecord;
use crate::streams::{self, Deletion, StreamRead, TRUNCATE_ALL};

use ExpectedVersion::{Any, Exact, Exists, NoStream};

fn append(stream: &str, expected: ExpectedVersion, n: usize) -> AppendRequest {
    req(
        "order",
        stream,
        expected,
        (0..n)
            .map(|i| ev("Placed", &format!("{{\"i\":{i}}}")))
            .collect(),
    )
}

/// Writes streams in every state a record can describe; returns their names (metadata
/// streams included).
pub async fn populate_streams<S: Store + ?Sized>(s: &S) -> Vec<String> {
    let ok = "populating streams";
    // Plain.
    s.append(append("order-plain", NoStream, 2))
        .await
        .expect(ok);
    // Soft-deleted.
    s.append(append("order-soft", NoStream, 3)).await.expect(ok);
    streams::delete(s, "order-soft", Any, Deletion::Soft, &Actor::default())
        .await
        .expect(ok);
    // Soft-deleted, then written again.
    s.append(append("order-again", NoStream, 2))
        .await
        .expect(ok);
    streams::delete(
        s,
        "order-again",
        Exact(2),
        Deletion::Soft,
        &Actor::default(),
    )
    .await
    .expect(ok);
    s.append(append("order-again", NoStream, 1))
        .await
        .expect(ok);
    // Tombstoned.
    s.append(append("order-gone", NoStream, 2)).await.expect(ok);
    streams::delete(s, "order-gone", Any, Deletion::Tombstone, &Actor::default())
        .await
        .expect(ok);
    // Metadata only, and metadata that is not a `$metadata` event.
    s.append(req(
        "$metadata",
        "$$order-meta",
        NoStream,
        vec![ev("$metadata", r#"{"$maxCount":2}"#)],
    ))
    .await
    .expect(ok);
    s.append(append("order-meta", NoStream, 4)).await.expect(ok);
    s.append(req(
        "$metadata",
        "$$order-odd",
        NoStream,
        vec![ev("$metadata", r#"{"$tb":1}"#), ev("Note", "{}")],
    ))
    .await
    .expect(ok);
    let mut names: Vec<String> = Vec::new();
    for base in [
        "order-plain",
        "order-soft",
        "order-again",
        "order-gone",
        "order-meta",
        "order-odd",
        "order-never",
    ] {
        names.push(base.to_owned());
        names.push(streams::metadata_stream(base));
    }
    names
}

/// The records of `names`, as the store keeps them.
pub async fn records<S: Store + ?Sized>(s: &S, names: &[String]) -> Vec<Option<StreamRecord>> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        out.push(s.stream(n).await.expect("record"));
    }
    out
}

/// After a migration from a store without records (of [`populate_streams`]'s streams):
/// every record equals the one the writer kept (`kept`), and the rules hold at once.
pub async fn check_migrated<S: Store + ?Sized>(
    s: &S,
    names: &[String],
    kept: Vec<Option<StreamRecord>>,
) {
    for (n, (now, before)) in names
        .iter()
        .zip(records(s, names).await.into_iter().zip(kept))
    {
        assert_eq!(now, before, "stream '{n}'");
    }
    assert!(s.verify(None, None).await.expect("verify").ok);
    let err = s
        .append(append("order-gone", Any, 1))
        .await
        .expect_err("tombstoned");
    assert!(matches!(err, Error::StreamDeleted { .. }), "{err:?}");
}

/// Every stream's record, as kept by the store, equals the one its events describe.
pub async fn stream_records_match_what_the_events_say<H: Harness>(h: H) {
    let s = h.store();
    for name in populate_streams(s).await {
        let kept = s.stream(&name).await.expect("record");
        let derived = streams::record_from_events(s, &name)
            .await
            .expect("derived record");
        assert_eq!(kept, derived, "stream '{name}'");
    }
    let gone = s.stream("order-gone").await.expect("record").expect("kept");
    assert!(gone.tombstoned);
    assert_eq!(gone.version, 3);
    let soft = s.stream("order-soft").await.expect("record").expect("kept");
    assert!(soft.soft_deleted());
    assert_eq!(soft.truncate_before(), Some(TRUNCATE_ALL));
}

/// A tombstoned stream takes no append, even one straight to the store, and nothing is
/// written; its metadata stream still takes one (as KurrentDB's does), and reads of it
/// still find the stream deleted.
pub async fn the_store_refuses_appends_to_a_tombstoned_stream<H: Harness>(h: H) {
    let s = h.store();
    s.append(append("order-1", NoStream, 2))
        .await
        .expect("append");
    streams::delete(
        s,
        "order-1",
        Exact(2),
        Deletion::Tombstone,
        &Actor::default(),
    )
    .await
    .expect("tombstone");
    let head = s.head(&[]).await.expect("head");
    for expected in [Any, NoStream, Exists, Exact(3)] {
        let err = s
            .append(append("order-1", expected, 1))
            .await
            .expect_err("tombstoned");
        assert!(
            matches!(err, Error::StreamDeleted { .. }),
            "{expected}: {err:?}"
        );
    }
    assert_eq!(s.head(&[]).await.expect("head"), head, "nothing written");
    s.append(req(
        "$metadata",
        "$$order-1",
        Any,
        vec![ev("$metadata", "{}")],
    ))
    .await
    .expect("metadata of a tombstoned stream");
    assert_eq!(s.head(&[]).await.expect("head"), head + 1);
    let st = streams::state(s, "$$order-1").await.expect("state");
    assert!(
        st.tombstoned,
        "reads of the metadata stream find it deleted"
    );
    let base = s.stream("order-1").await.expect("record").expect("kept");
    assert!(base.tombstoned, "the stream stays tombstoned");
}

/// A soft-deleted stream refuses `exists`, accepts `no_stream`, and once written again
/// shows only its new events; its versions go on counting.
pub async fn a_soft_deleted_stream_written_again_shows_only_its_new_events<H: Harness>(h: H) {
    let s = h.store();
    s.append(append("order-2", NoStream, 3))
        .await
        .expect("append");
    streams::delete(s, "order-2", Any, Deletion::Soft, &Actor::default())
        .await
        .expect("soft delete");
    let err = s
        .append(append("order-2", Exists, 1))
        .await
        .expect_err("exists on a deleted stream");
    assert!(matches!(err, Error::StreamDeleted { .. }), "{err:?}");
    let err = s
        .append(append("order-2", Exact(1), 1))
        .await
        .expect_err("stale version");
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: 3, .. }),
        "{err:?}"
    );
    let r = s
        .append(append("order-2", NoStream, 2))
        .await
        .expect("written again");
    assert_eq!(r.aggregate_version, 5);
    // The answer holds the append's own events, not the `$metadata` written with them.
    let answered: Vec<(&str, u64, u64)> = r
        .events
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.aggregate_version, e.position))
        .collect();
    assert_eq!(
        answered,
        [
            ("order-2", 4, r.first_position),
            ("order-2", 5, r.last_position)
        ]
    );
    let StreamRead::Events(events) = streams::read(s, "order-2", Direction::Forward, None, 100)
        .await
        .expect("read")
    else {
        panic!("the stream has visible events");
    };
    let versions: Vec<u64> = events.iter().map(|e| e.aggregate_version).collect();
    assert_eq!(versions, [4, 5]);
    let rec = s.stream("order-2").await.expect("record").expect("kept");
    assert_eq!(rec.truncate_before(), Some(3));
    assert!(!rec.soft_deleted());
}

/// An append to a stream that names no type gets the stream's own, or for a new
/// stream its category; an append that names one must match.
pub async fn a_stream_append_without_a_type_takes_the_streams_own_or_its_category<H: Harness>(
    h: H,
) {
    let s = h.store();
    let untyped = |stream: &str| req("", stream, Any, vec![ev("Placed", "{}")]);
    let r = s
        .append_to_stream(untyped("basket-7"))
        .await
        .expect("new stream");
    assert_eq!(r.events[0].aggregate_type, "basket");
    s.append(req(
        "Family",
        "family_1",
        NoStream,
        vec![ev("Enrolled", "{}")],
    ))
    .await
    .expect("typed");
    let r = s
        .append_to_stream(untyped("family_1"))
        .await
        .expect("existing stream");
    assert_eq!(r.events[0].aggregate_type, "Family");
    let err = s
        .append(untyped("x-1"))
        .await
        .expect_err("the library wants a type");
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
}
