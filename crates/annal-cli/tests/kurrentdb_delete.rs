//! Stream deletion by the official Rust KurrentDB client against `annal serve`: soft
//! delete (the stream reads as missing, its revisions continue when written again, its
//! events stay in `$all`) and tombstone (the name refuses everything for good), with
//! KurrentDB's errors for wrong expected states.

mod common;

use common::kurrent::{
    Annal, any, event, expecting, filtered, five, read_all, read_stream, revisions, start, stream,
    types,
};
use kurrentdb::{
    BatchAppendOptions, DeleteStreamOptions, Error, ReadStreamOptions, StreamMetadata, StreamState,
    SubscriptionFilter, TombstoneStreamOptions,
};

fn delete_expecting(state: StreamState) -> DeleteStreamOptions {
    DeleteStreamOptions::default().stream_state(state)
}

fn tombstone_expecting(state: StreamState) -> TombstoneStreamOptions {
    TombstoneStreamOptions::default().stream_state(state)
}

fn failed_precondition(e: Error) -> String {
    match e {
        Error::Grpc {
            code: tonic::Code::FailedPrecondition,
            message,
        } => message,
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
}

// ---------------------------------------------------------------- soft delete

#[tokio::test]
async fn a_deleted_stream_reads_as_not_found_whatever_state_the_delete_expected() {
    let a = start();
    for state in [
        StreamState::Any,
        StreamState::StreamExists,
        StreamState::StreamRevision(4),
    ] {
        let s = five(&a).await;
        let p = a
            .client
            .delete_stream(s.as_str(), &delete_expecting(state))
            .await
            .expect("delete");
        assert!(p.is_some_and(|p| p.commit > 0), "{state:?}: {p:?}");
        let e = read_stream(&a.client, &s, &ReadStreamOptions::default())
            .await
            .expect_err("deleted");
        assert!(matches!(e, Error::ResourceNotFound), "{state:?}: {e:?}");
    }
}

/// A five-event stream, deleted.
async fn deleted(a: &Annal) -> String {
    let s = five(a).await;
    a.client
        .delete_stream(s.as_str(), &DeleteStreamOptions::default())
        .await
        .expect("delete");
    s
}

/// A five-event stream, deleted, then written again with `F` (expecting no stream)
/// and `G` (expecting revision 5).
async fn deleted_and_written_again(a: &Annal) -> String {
    let s = deleted(a).await;
    let r = a
        .client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("F", 5))
        .await
        .expect("a deleted stream takes no_stream");
    assert_eq!(r.next_expected_version, 5, "revisions continue");
    let r = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(5)),
            event("G", 6),
        )
        .await
        .expect("append");
    assert_eq!(r.next_expected_version, 6);
    s
}

#[tokio::test]
async fn appending_expecting_a_deleted_stream_to_exist_is_resource_deleted() {
    let a = start();
    let s = deleted(&a).await;
    let e = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamExists),
            event("X", 0),
        )
        .await
        .expect_err("exists on a deleted stream");
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
}

#[tokio::test]
async fn a_deleted_stream_written_again_shows_only_the_new_events_at_continued_revisions() {
    let a = start();
    let s = deleted_and_written_again(&a).await;
    let visible = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(types(&visible), ["F", "G"]);
    assert_eq!(revisions(&visible), [5, 6]);
}

#[tokio::test]
async fn deleted_events_stay_in_all() {
    let a = start();
    let s = deleted_and_written_again(&a).await;
    let in_all = read_all(
        &a.client,
        &filtered(SubscriptionFilter::on_stream_name().regex(format!("^{s}$"))),
    )
    .await;
    assert_eq!(types(&in_all), ["A", "B", "C", "D", "E", "F", "G"]);
}

#[tokio::test]
async fn a_stream_written_again_after_a_delete_can_be_deleted_again() {
    let a = start();
    let s = deleted_and_written_again(&a).await;
    a.client
        .delete_stream(
            s.as_str(),
            &delete_expecting(StreamState::StreamRevision(6)),
        )
        .await
        .expect("delete again");
}

#[tokio::test]
async fn deleting_at_a_stale_revision_is_failed_precondition_in_kurrentdb_words() {
    let a = start();
    let s = five(&a).await;
    let message = failed_precondition(
        a.client
            .delete_stream(
                s.as_str(),
                &delete_expecting(StreamState::StreamRevision(2)),
            )
            .await
            .expect_err("stale"),
    );
    assert_eq!(
        message,
        format!(
            "Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: 2, Actual version: 4"
        )
    );
}

#[tokio::test]
async fn deleting_an_existing_stream_expecting_no_stream_is_failed_precondition() {
    let a = start();
    let s = five(&a).await;
    let message = failed_precondition(
        a.client
            .delete_stream(s.as_str(), &delete_expecting(StreamState::NoStream))
            .await
            .expect_err("exists"),
    );
    assert!(
        message.contains("Expected version: -1, Actual version: 4"),
        "{message}"
    );
}

#[tokio::test]
async fn deleting_a_missing_stream_expecting_it_is_failed_precondition_with_actual_minus_one() {
    let a = start();
    // A missing stream: "actual -1" (the Python client calls this NotFound; the Rust
    // client leaves it a FAILED_PRECONDITION).
    // Whatever was expected: KurrentDB does not delete a stream that never existed.
    for (state, n) in [
        (StreamState::StreamRevision(0), 0),
        (StreamState::StreamExists, -4),
        (StreamState::Any, -2),
        (StreamState::NoStream, -1),
    ] {
        let message = failed_precondition(
            a.client
                .delete_stream(stream("order").as_str(), &delete_expecting(state))
                .await
                .expect_err("missing"),
        );
        assert!(
            message.contains(&format!("Expected version: {n}, Actual version: -1")),
            "{state:?}: {message}"
        );
    }
}

#[tokio::test]
async fn deleting_a_deleted_stream_expecting_it_to_exist_is_resource_deleted() {
    let a = start();
    let s = deleted(&a).await;
    let e = a
        .client
        .delete_stream(s.as_str(), &delete_expecting(StreamState::StreamExists))
        .await
        .expect_err("already deleted");
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
}

// ---------------------------------------------------------------- tombstone

/// A five-event stream, tombstoned expecting revision 4.
async fn tombstoned(a: &Annal) -> String {
    let s = five(a).await;
    let p = a
        .client
        .tombstone_stream(
            s.as_str(),
            &tombstone_expecting(StreamState::StreamRevision(4)),
        )
        .await
        .expect("tombstone");
    assert!(p.is_some());
    s
}

#[tokio::test]
async fn reading_a_tombstoned_stream_is_resource_deleted() {
    let a = start();
    let s = tombstoned(&a).await;
    let e = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect_err("read");
    assert!(matches!(e, Error::ResourceDeleted), "read: {e:?}");
}

#[tokio::test]
async fn appending_to_a_tombstoned_stream_is_resource_deleted_whatever_the_expected_state() {
    let a = start();
    let s = tombstoned(&a).await;
    for state in [
        StreamState::Any,
        StreamState::NoStream,
        StreamState::StreamRevision(4),
    ] {
        let e = a
            .client
            .append_to_stream(s.as_str(), &expecting(state), event("X", 0))
            .await
            .expect_err("append");
        assert!(
            matches!(e, Error::ResourceDeleted),
            "append {state:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn deleting_or_tombstoning_a_tombstoned_stream_again_is_resource_deleted() {
    let a = start();
    let s = tombstoned(&a).await;
    let e = a
        .client
        .delete_stream(s.as_str(), &DeleteStreamOptions::default())
        .await
        .expect_err("delete");
    assert!(matches!(e, Error::ResourceDeleted), "delete: {e:?}");
    let e = a
        .client
        .tombstone_stream(s.as_str(), &TombstoneStreamOptions::default())
        .await
        .expect_err("tombstone");
    assert!(matches!(e, Error::ResourceDeleted), "tombstone: {e:?}");
}

#[tokio::test]
async fn a_batch_append_to_a_tombstoned_stream_says_it_is_deleted() {
    let a = start();
    let s = tombstoned(&a).await;
    let batch = a
        .client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch");
    match batch
        .append_to_stream(&s, StreamState::Any, vec![event("X", 0)])
        .await
    {
        Err(Error::Grpc { message, .. }) => {
            assert!(message.contains("is deleted"), "{message}")
        }
        other => panic!("batch append: {other:?}"),
    }
}

#[tokio::test]
async fn the_metadata_of_a_tombstoned_stream_says_it_is_deleted() {
    let a = start();
    let s = tombstoned(&a).await;
    let meta = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("metadata");
    assert!(meta.is_deleted(), "{meta:?}");
}

#[tokio::test]
async fn tombstoning_at_a_wrong_expected_state_is_failed_precondition() {
    let a = start();
    let s = five(&a).await;
    let message = failed_precondition(
        a.client
            .tombstone_stream(
                s.as_str(),
                &tombstone_expecting(StreamState::StreamRevision(1)),
            )
            .await
            .expect_err("stale"),
    );
    assert!(
        message.contains("Expected version: 1, Actual version: 4"),
        "{message}"
    );
    let message = failed_precondition(
        a.client
            .tombstone_stream(s.as_str(), &tombstone_expecting(StreamState::NoStream))
            .await
            .expect_err("exists"),
    );
    assert!(
        message.contains("Expected version: -1, Actual version: 4"),
        "{message}"
    );
}

#[tokio::test]
async fn tombstoning_a_missing_stream_expecting_it_is_failed_precondition_with_actual_minus_one() {
    let a = start();
    for (state, n) in [
        (StreamState::StreamExists, -4),
        (StreamState::StreamRevision(0), 0),
    ] {
        let message = failed_precondition(
            a.client
                .tombstone_stream(stream("order").as_str(), &tombstone_expecting(state))
                .await
                .expect_err("missing"),
        );
        assert!(
            message.contains(&format!("Expected version: {n}, Actual version: -1")),
            "{state:?}: {message}"
        );
    }
}

#[tokio::test]
async fn a_tombstone_of_a_missing_stream_blocks_the_name() {
    let a = start();
    for state in [StreamState::Any, StreamState::NoStream] {
        let missing = stream("order");
        a.client
            .tombstone_stream(missing.as_str(), &tombstone_expecting(state))
            .await
            .expect("a missing stream can be tombstoned");
        let e = a
            .client
            .append_to_stream(missing.as_str(), &any(), event("X", 0))
            .await
            .expect_err("the name is blocked");
        assert!(matches!(e, Error::ResourceDeleted), "{state:?}: {e:?}");
    }
}

#[tokio::test]
async fn a_soft_deleted_stream_can_still_be_tombstoned_for_good() {
    let a = start();
    let s = deleted(&a).await;
    a.client
        .tombstone_stream(s.as_str(), &TombstoneStreamOptions::default())
        .await
        .expect("tombstone");
    let e = a
        .client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("X", 0))
        .await
        .expect_err("deleted for good");
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
}

#[tokio::test]
async fn metadata_set_on_a_tombstoned_stream_is_accepted_and_still_reads_as_deleted() {
    let a = start();
    let s = tombstoned(&a).await;
    let head: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/v1/head", a.served.port))
            .await
            .expect("GET head")
            .json()
            .await
            .expect("json");
    let meta = StreamMetadata::builder().max_count(5).build();
    let w = a
        .client
        .set_stream_metadata(s.as_str(), &any(), &meta)
        .await
        .expect("KurrentDB accepts metadata for a tombstoned stream");
    assert_eq!(w.next_expected_version, 0);
    let read = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("metadata");
    assert!(read.is_deleted(), "{read:?}");
    let e = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect_err("tombstoned");
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
    // Over HTTP the stream is gone (410) and the log shows the metadata event.
    let port = a.served.port;
    let gone = reqwest::get(format!("http://127.0.0.1:{port}/v1/streams/{s}"))
        .await
        .expect("GET stream");
    assert_eq!(gone.status(), 410);
    let after = head["position"].as_u64().expect("position");
    let log: serde_json::Value = reqwest::get(format!(
        "http://127.0.0.1:{port}/v1/events?after_position={after}"
    ))
    .await
    .expect("GET events")
    .json()
    .await
    .expect("json");
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{log}");
    assert_eq!(events[0]["aggregate_id"], format!("$${s}"));
    assert_eq!(events[0]["event_type"], "$metadata");
    assert_eq!(events[0]["data"]["$maxCount"], 5);
}
