//! Stream metadata by the official Rust KurrentDB client against `annal serve`: set and
//! get with expected versions, `$$stream` reads, `max_count` and `truncate_before`,
//! and metadata set before its stream exists.

mod common;

use common::kurrent::{
    Annal, any, expecting, five, read_stream, revisions, start, stream, wrong_version,
};
use kurrentdb::{
    CurrentRevision, Error, ReadStreamOptions, StreamMetadata, StreamMetadataResult, StreamState,
};

#[tokio::test]
async fn a_stream_without_metadata_reads_as_metadata_not_found() {
    let a = start();
    let s = five(&a).await;
    let none = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("metadata");
    assert!(none.is_not_found(), "{none:?}");
}

/// The metadata `max_count` 100 and `owner` = `billing`.
fn first_metadata() -> StreamMetadata {
    StreamMetadata::builder()
        .max_count(100)
        .insert_custom_property("owner", "billing")
        .build()
}

/// A five-event stream whose metadata was set twice: [`first_metadata`] (version 0),
/// then `max_count` 50 (version 1), which is returned.
async fn metadata_set_twice(a: &Annal) -> (String, StreamMetadata) {
    let s = five(a).await;
    let meta = first_metadata();
    let w = a
        .client
        .set_stream_metadata(s.as_str(), &expecting(StreamState::NoStream), &meta)
        .await
        .expect("set");
    assert_eq!(w.next_expected_version, 0);
    let got = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("get");
    let StreamMetadataResult::Success(v) = got else {
        panic!("metadata: {got:?}")
    };
    assert_eq!(v.metadata(), &meta);
    assert_eq!(v.version(), 0);
    assert_eq!(v.stream_name(), format!("$${s}"));
    let meta2 = StreamMetadata::builder().max_count(50).build();
    let w = a
        .client
        .set_stream_metadata(
            s.as_str(),
            &expecting(StreamState::StreamRevision(0)),
            &meta2,
        )
        .await
        .expect("set again");
    assert_eq!(w.next_expected_version, 1);
    (s, meta2)
}

#[tokio::test]
async fn stream_metadata_set_and_get_round_trip_with_versions() {
    let a = start();
    let (s, meta2) = metadata_set_twice(&a).await;
    let got = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("get");
    let StreamMetadataResult::Success(v) = got else {
        panic!("metadata: {got:?}")
    };
    assert_eq!((v.metadata(), v.version()), (&meta2, 1));
}

#[tokio::test]
async fn setting_metadata_at_a_wrong_expected_state_is_a_wrong_expected_version() {
    let a = start();
    let (s, _) = metadata_set_twice(&a).await;
    let meta = first_metadata();
    let e = a
        .client
        .set_stream_metadata(
            s.as_str(),
            &expecting(StreamState::StreamRevision(0)),
            &meta,
        )
        .await
        .expect_err("stale");
    assert_eq!(
        wrong_version(e),
        (StreamState::StreamRevision(0), CurrentRevision::Current(1))
    );
    let e = a
        .client
        .set_stream_metadata(s.as_str(), &expecting(StreamState::NoStream), &meta)
        .await
        .expect_err("already set");
    assert_eq!(
        wrong_version(e),
        (StreamState::NoStream, CurrentRevision::Current(1))
    );
}

#[tokio::test]
async fn the_metadata_stream_shows_only_its_last_event_and_the_stream_gains_none() {
    let a = start();
    let (s, _) = metadata_set_twice(&a).await;
    // The metadata stream shows only its last event, whichever way it is read.
    let raw = read_stream(&a.client, &format!("$${s}"), &ReadStreamOptions::default())
        .await
        .expect("read $$");
    assert_eq!(revisions(&raw), [1]);
    let events = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(events.len(), 5, "metadata adds no events to the stream");
}

#[tokio::test]
async fn stream_metadata_max_count_hides_all_but_the_last_events() {
    let a = start();
    let capped = five(&a).await;
    a.client
        .set_stream_metadata(
            capped.as_str(),
            &any(),
            &StreamMetadata::builder().max_count(2).build(),
        )
        .await
        .expect("set");
    let got = read_stream(&a.client, &capped, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(revisions(&got), [3, 4]);
}

#[tokio::test]
async fn stream_metadata_truncate_before_hides_the_earlier_events() {
    let a = start();
    let truncated = five(&a).await;
    a.client
        .set_stream_metadata(
            truncated.as_str(),
            &any(),
            &StreamMetadata::builder().truncate_before(3).build(),
        )
        .await
        .expect("set");
    let got = read_stream(&a.client, &truncated, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(revisions(&got), [3, 4]);
}

#[tokio::test]
async fn metadata_can_be_set_before_the_stream_exists() {
    let a = start();
    let s = stream("order");
    a.client
        .set_stream_metadata(
            s.as_str(),
            &expecting(StreamState::NoStream),
            &StreamMetadata::builder().max_count(3).build(),
        )
        .await
        .expect("set");
    let e = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect_err("the stream itself does not exist");
    assert!(matches!(e, Error::ResourceNotFound), "{e:?}");
    let got = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("get");
    assert!(got.is_success(), "{got:?}");
}
