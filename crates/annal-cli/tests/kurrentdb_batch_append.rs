//! Batch appends (`BatchAppend`) by the official Rust KurrentDB client against
//! `annal serve`: every expected state, failures that write nothing, idempotent
//! re-appends, the same ids in two streams, and a large batch kept in order.

mod common;

use common::kurrent::{event, five, read_stream, revisions, start, stream, types};
use kurrentdb::{BatchAppendOptions, Error, EventData, ReadStreamOptions, StreamState};
use uuid::Uuid;

#[tokio::test]
async fn batch_append_succeeds_with_every_expected_state() {
    let a = start();
    let batch = a
        .client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("BatchAppend is advertised");
    let s = stream("order");
    let r = batch
        .append_to_stream(
            &s,
            StreamState::NoStream,
            vec![event("A", 0), event("B", 1)],
        )
        .await
        .expect("no stream");
    assert_eq!(r.current_revision(), Some(1));
    assert_eq!(r.stream_name(), s);
    let first = r.current_position().expect("a position");
    assert!(first.commit > 0);
    let r = batch
        .append_to_stream(&s, StreamState::StreamExists, vec![event("C", 2)])
        .await
        .expect("exists");
    assert_eq!(r.current_revision(), Some(2));
    let r = batch
        .append_to_stream(&s, StreamState::StreamRevision(2), vec![event("D", 3)])
        .await
        .expect("revision");
    assert_eq!(r.current_revision(), Some(3));
    let r = batch
        .append_to_stream(&s, StreamState::Any, vec![event("E", 4)])
        .await
        .expect("any");
    assert_eq!(r.current_revision(), Some(4));
    assert!(r.current_position().expect("a position") > first);
    let r = batch
        .append_to_stream(stream("order"), StreamState::Any, vec![event("A", 0)])
        .await
        .expect("any on a missing stream");
    assert_eq!(r.current_revision(), Some(0));
}

#[tokio::test]
async fn a_batch_append_at_a_wrong_expected_state_is_failed_precondition_and_writes_nothing() {
    let a = start();
    let s = five(&a).await;
    // A failed batch ends the client's session: one session per failure.
    let failures = [
        (
            s.clone(),
            StreamState::NoStream,
            "Expected version: -1, Actual version: 4",
        ),
        (
            s.clone(),
            StreamState::StreamRevision(2),
            "Expected version: 2, Actual version: 4",
        ),
        (
            s.clone(),
            StreamState::StreamRevision(9),
            "Expected version: 9, Actual version: 4",
        ),
        (
            stream("order"),
            StreamState::StreamExists,
            "Expected version: -4, Actual version: -1",
        ),
        (
            stream("order"),
            StreamState::StreamRevision(0),
            "Expected version: 0, Actual version: -1",
        ),
    ];
    for (name, state, says) in failures {
        let batch = a
            .client
            .batch_append(&BatchAppendOptions::default())
            .await
            .expect("batch");
        match batch
            .append_to_stream(&name, state, vec![event("X", 9)])
            .await
        {
            Err(Error::Grpc { code, message }) => {
                assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
                assert!(
                    message.contains("WrongExpectedVersion") && message.contains(says),
                    "{state:?}: {message}"
                );
            }
            other => panic!("{state:?}: expected a gRPC error, got {other:?}"),
        }
    }
    let events = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(
        types(&events),
        ["A", "B", "C", "D", "E"],
        "no failed batch wrote"
    );
}

#[tokio::test]
async fn batch_append_reappending_the_same_event_ids_returns_the_original_result() {
    let a = start();
    let batch = a
        .client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch");
    let s = stream("order");
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let events = || -> Vec<EventData> {
        ids.iter()
            .enumerate()
            .map(|(n, id)| event("A", n as u64).id(*id))
            .collect()
    };
    let first = batch
        .append_to_stream(&s, StreamState::NoStream, events())
        .await
        .expect("append");
    let again = batch
        .append_to_stream(&s, StreamState::NoStream, events())
        .await
        .expect("idempotent");
    assert_eq!(again.current_revision(), first.current_revision());
    assert_eq!(again.current_position(), first.current_position());
    let stored = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn batch_append_of_the_same_ids_to_two_streams_writes_each_and_a_retry_writes_nothing() {
    let a = start();
    let batch = a
        .client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch");
    let (first, second) = (stream("order"), stream("order"));
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let events = || -> Vec<EventData> {
        ids.iter()
            .enumerate()
            .map(|(n, id)| event("A", n as u64).id(*id))
            .collect()
    };
    let mut written = Vec::new();
    for s in [&first, &second] {
        let r = batch
            .append_to_stream(s, StreamState::NoStream, events())
            .await
            .expect("the same ids to a new stream");
        assert_eq!(r.current_revision(), Some(2));
        written.push(r.current_position());
    }
    assert!(written[1] > written[0], "written, not taken for a retry");
    for (s, original) in [&first, &second].into_iter().zip(&written) {
        let again = batch
            .append_to_stream(s, StreamState::NoStream, events())
            .await
            .expect("a retry to the same stream");
        assert_eq!(
            &again.current_position(),
            original,
            "{s}: the original result"
        );
        let stored = read_stream(&a.client, s, &ReadStreamOptions::default())
            .await
            .expect("read");
        assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids, "{s}");
    }
}

#[tokio::test]
async fn many_events_in_one_batch_append_are_written_in_order() {
    let a = start();
    let batch = a
        .client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch");
    let s = stream("order");
    let events: Vec<EventData> = (0..2_000).map(|n| event("Line", n)).collect();
    let r = batch
        .append_to_stream(&s, StreamState::NoStream, events)
        .await
        .expect("append");
    assert_eq!(r.current_revision(), Some(1_999));
    let stored = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(revisions(&stored), (0..2_000).collect::<Vec<u64>>());
    assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
}
