//! Single appends by the official Rust KurrentDB client against `annal serve`: every
//! expected state, idempotent re-appends, event ids unique per stream (the same ids in
//! two streams), what a recorded event carries, binary data, deadlines.

mod common;

use common::kurrent::{any, event, expecting, read_all, read_stream, start, stream, wrong_version};
use kurrentdb::{
    CurrentRevision, EventData, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamState,
};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn append_expecting_no_stream_creates_the_stream_at_revision_zero() {
    let a = start();
    let s = stream("order");
    let r = a
        .client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("A", 0))
        .await
        .expect("append");
    assert_eq!(r.next_expected_version, 0);
    assert!(
        r.position.commit > 0,
        "the first user event's position is > 0"
    );
}

#[tokio::test]
async fn an_append_answers_the_position_of_the_last_event_it_wrote() {
    let a = start();
    let s = stream("order");
    let r = a
        .client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("A", 0))
        .await
        .expect("append");
    let two = a
        .client
        .append_to_stream(s.as_str(), &any(), vec![event("B", 1), event("C", 2)])
        .await
        .expect("append");
    assert_eq!(two.next_expected_version, 2);
    let events = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(
        events.last().map(|e| e.position.commit),
        Some(two.position.commit),
        "an append answers the position of the last event it wrote"
    );
    assert!(two.position > r.position);
}

#[tokio::test]
async fn append_expecting_no_stream_to_an_existing_stream_is_a_wrong_expected_version() {
    let a = start();
    let s = stream("order");
    let opts = expecting(StreamState::NoStream);
    a.client
        .append_to_stream(s.as_str(), &opts, event("A", 0))
        .await
        .expect("append");
    let e = a
        .client
        .append_to_stream(s.as_str(), &opts, event("B", 1))
        .await
        .expect_err("the stream exists");
    assert_eq!(
        wrong_version(e),
        (StreamState::NoStream, CurrentRevision::Current(0))
    );
}

#[tokio::test]
async fn append_expecting_stream_exists_needs_the_stream() {
    let a = start();
    let s = stream("order");
    let exists = expecting(StreamState::StreamExists);
    let e = a
        .client
        .append_to_stream(s.as_str(), &exists, event("A", 0))
        .await
        .expect_err("no stream yet");
    assert_eq!(
        wrong_version(e),
        (StreamState::StreamExists, CurrentRevision::NoStream)
    );
    a.client
        .append_to_stream(s.as_str(), &any(), event("A", 0))
        .await
        .expect("append");
    let r = a
        .client
        .append_to_stream(s.as_str(), &exists, event("B", 1))
        .await
        .expect("the stream exists now");
    assert_eq!(r.next_expected_version, 1);
}

#[tokio::test]
async fn append_expecting_any_succeeds_on_missing_and_existing_streams() {
    let a = start();
    let s = stream("order");
    for n in 0..3 {
        let r = a
            .client
            .append_to_stream(s.as_str(), &any(), event("A", n))
            .await
            .expect("append");
        assert_eq!(r.next_expected_version, n);
    }
}

#[tokio::test]
async fn append_expecting_a_revision_succeeds_only_at_the_current_one() {
    let a = start();
    let s = stream("order");
    let at = |r| expecting(StreamState::StreamRevision(r));
    let e = a
        .client
        .append_to_stream(s.as_str(), &at(0), event("A", 0))
        .await
        .expect_err("missing stream");
    assert_eq!(
        wrong_version(e),
        (StreamState::StreamRevision(0), CurrentRevision::NoStream)
    );
    a.client
        .append_to_stream(s.as_str(), &any(), vec![event("A", 0), event("B", 1)])
        .await
        .expect("append");
    let r = a
        .client
        .append_to_stream(s.as_str(), &at(1), event("C", 2))
        .await
        .expect("current revision");
    assert_eq!(r.next_expected_version, 2);
    for stale_or_future in [1, 0, 3, 7] {
        let e = a
            .client
            .append_to_stream(s.as_str(), &at(stale_or_future), event("D", 3))
            .await
            .expect_err("not the current revision");
        assert_eq!(
            wrong_version(e),
            (
                StreamState::StreamRevision(stale_or_future),
                CurrentRevision::Current(2)
            )
        );
    }
}

#[tokio::test]
async fn reappending_the_same_event_ids_returns_the_original_result() {
    let a = start();
    for state in [StreamState::NoStream, StreamState::Any] {
        let s = stream("order");
        let ids = [Uuid::new_v4(), Uuid::new_v4()];
        let events = || vec![event("A", 0).id(ids[0]), event("B", 1).id(ids[1])];
        let first = a
            .client
            .append_to_stream(s.as_str(), &expecting(state), events())
            .await
            .expect("append");
        let again = a
            .client
            .append_to_stream(s.as_str(), &expecting(state), events())
            .await
            .expect("idempotent re-append");
        assert_eq!(again.next_expected_version, first.next_expected_version);
        assert_eq!(again.position, first.position, "{state:?}");
        let stored = read_stream(&a.client, &s, &ReadStreamOptions::default())
            .await
            .expect("read");
        assert_eq!(
            stored.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids.to_vec(),
            "written once"
        );
    }
}

/// Three events with the given ids.
fn three(ids: &[Uuid; 3]) -> Vec<EventData> {
    ids.iter()
        .zip(["A", "B", "C"])
        .enumerate()
        .map(|(n, (id, t))| event(t, n as u64).id(*id))
        .collect()
}

fn ids_of(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn the_same_event_ids_appended_to_two_streams_are_new_events_in_each() {
    let a = start();
    let (first, second) = (stream("order"), stream("order"));
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let no_stream = expecting(StreamState::NoStream);
    let one = a
        .client
        .append_to_stream(first.as_str(), &no_stream, three(&ids))
        .await
        .expect("append to the first stream");
    let two = a
        .client
        .append_to_stream(second.as_str(), &no_stream, three(&ids))
        .await
        .expect("the same ids to a new stream expecting no stream");
    assert_eq!(two.next_expected_version, 2);
    assert!(two.position > one.position, "written, not a retry");
    for s in [&first, &second] {
        let got = read_stream(&a.client, s, &ReadStreamOptions::default())
            .await
            .expect("read");
        assert_eq!(ids_of(&got), ids, "{s} reads back with the client's ids");
        assert!(got.iter().all(|e| e.stream_id() == s.as_str()));
    }
    let all = read_all(&a.client, &ReadAllOptions::default()).await;
    let mine: Vec<(String, Uuid)> = all
        .iter()
        .filter(|e| e.stream_id() == first || e.stream_id() == second)
        .map(|e| (e.stream_id().to_owned(), e.id))
        .collect();
    let want: Vec<(String, Uuid)> = [&first, &second]
        .iter()
        .flat_map(|s| ids.iter().map(|id| (s.to_string(), *id)))
        .collect();
    assert_eq!(
        mine, want,
        "$all shows both streams' events with the client's ids"
    );
}

#[tokio::test]
async fn a_retry_of_ids_another_stream_also_holds_writes_nothing_to_the_same_stream() {
    let a = start();
    let (first, second) = (stream("order"), stream("order"));
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let no_stream = expecting(StreamState::NoStream);
    let mut written = Vec::new();
    for s in [&first, &second] {
        let r = a
            .client
            .append_to_stream(s.as_str(), &no_stream, three(&ids))
            .await
            .expect("append");
        written.push(r);
    }
    for (s, original) in [&first, &second].into_iter().zip(&written) {
        let again = a
            .client
            .append_to_stream(s.as_str(), &no_stream, three(&ids))
            .await
            .expect("the same ids to the same stream at the same expected state");
        assert_eq!(
            again.position, original.position,
            "{s}: the original result"
        );
        assert_eq!(again.next_expected_version, 2);
        let got = read_stream(&a.client, s, &ReadStreamOptions::default())
            .await
            .expect("read");
        assert_eq!(ids_of(&got), ids, "{s}: written once");
    }
}

/// A stream at revision 1 whose last event (`B`, id `x`) was appended expecting revision 0:
/// the stream, `x`, and that append's answer.
async fn appended_at_revision_zero(
    a: &common::kurrent::Annal,
) -> (String, Uuid, kurrentdb::WriteResult) {
    let s = stream("order");
    a.client
        .append_to_stream(s.as_str(), &any(), event("A", 0))
        .await
        .expect("append");
    let x = Uuid::new_v4();
    let first = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(0)),
            vec![event("B", 1).id(x)],
        )
        .await
        .expect("append");
    (s, x, first)
}

#[tokio::test]
async fn reappending_the_same_ids_at_the_same_revision_returns_the_original_result() {
    let a = start();
    let (s, x, first) = appended_at_revision_zero(&a).await;
    let again = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(0)),
            vec![event("B", 1).id(x)],
        )
        .await
        .expect("same ids, same revision");
    assert_eq!(again.position, first.position);
    assert_eq!(again.next_expected_version, 1);
}

#[tokio::test]
async fn a_reappend_that_only_partly_overlaps_is_a_wrong_expected_version() {
    let a = start();
    let (s, x, _) = appended_at_revision_zero(&a).await;
    let y = Uuid::new_v4();
    let e = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(0)),
            vec![event("B", 1).id(x), event("C", 2).id(y)],
        )
        .await
        .expect_err("a partial overlap");
    assert_eq!(
        wrong_version(e),
        (StreamState::StreamRevision(0), CurrentRevision::Current(1))
    );
}

#[tokio::test]
async fn recorded_events_carry_what_was_appended() {
    let a = start();
    let s = stream("order");
    let id = Uuid::new_v4();
    let correlation = Uuid::new_v4().to_string();
    let appended = EventData::json("OrderPlaced", &json!({"total": 10, "lines": ["a"]}))
        .expect("json")
        .id(id)
        .metadata_as_json(&json!({"$correlationId": correlation, "source": "rust"}))
        .expect("json");
    a.client
        .append_to_stream(s.as_str(), &any(), appended)
        .await
        .expect("append");
    let got = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    let [e] = got.as_slice() else {
        panic!("one event: {got:?}")
    };
    assert_eq!(e.id, id);
    assert_eq!(e.stream_id(), s);
    assert_eq!(e.event_type, "OrderPlaced");
    assert!(e.is_json);
    assert_eq!(
        e.as_json::<serde_json::Value>().expect("json"),
        json!({"total": 10, "lines": ["a"]})
    );
    let meta: serde_json::Value = serde_json::from_slice(&e.custom_metadata).expect("json");
    assert_eq!(meta["$correlationId"], json!(correlation));
    assert_eq!(meta["source"], json!("rust"));
    let age = chrono_age_secs(e);
    assert!(age < 60, "created is recent: {age} s");
}

/// Seconds since the event's `created` (via its RFC 3339 form, to avoid a chrono dependency).
fn chrono_age_secs(e: &RecordedEvent) -> i64 {
    let created = time::OffsetDateTime::parse(
        &e.created.to_rfc3339(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    (time::OffsetDateTime::now_utc() - created)
        .whole_seconds()
        .abs()
}

#[tokio::test]
async fn binary_data_round_trips_byte_for_byte() {
    let a = start();
    let s = stream("blob");
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, 0x80, 0xc3]).collect();
    a.client
        .append_to_stream(
            s.as_str(),
            &any(),
            vec![
                EventData::binary("Blob", bytes.clone().into()),
                EventData::binary("Empty", Vec::new().into()),
            ],
        )
        .await
        .expect("append");
    let got = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].data.as_ref(), bytes.as_slice());
    assert!(!got[0].is_json);
    assert_eq!(
        got[0].metadata.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );
    assert!(got[1].data.is_empty());
}

#[tokio::test]
async fn append_with_a_deadline_that_is_met_succeeds() {
    let a = start();
    let s = stream("order");
    let r = a
        .client
        .append_to_stream(
            s.as_str(),
            &any().deadline(Duration::from_secs(5)),
            event("A", 0),
        )
        .await
        .expect("append");
    assert_eq!(r.next_expected_version, 0);
}
