//! Stream reads by the official Rust KurrentDB client against `annal serve`: forwards
//! and backwards from either end or a revision, a missing stream, deadlines.

mod common;

use common::kurrent::{five, read_stream, revisions, start, stream, types};
use kurrentdb::{Error, ReadStreamOptions, StreamPosition};
use std::time::Duration;

#[tokio::test]
async fn stream_reads_forwards_from_start_or_a_revision_include_it() {
    let a = start();
    let s = five(&a).await;
    let all = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(types(&all), ["A", "B", "C", "D", "E"]);
    assert_eq!(revisions(&all), [0, 1, 2, 3, 4]);
    let from2 = ReadStreamOptions::default()
        .forwards()
        .position(StreamPosition::Position(2));
    let got = read_stream(&a.client, &s, &from2).await.expect("read");
    assert_eq!(revisions(&got), [2, 3, 4]);
    let got = read_stream(&a.client, &s, &from2.max_count(2))
        .await
        .expect("read");
    assert_eq!(revisions(&got), [2, 3]);
    let past = ReadStreamOptions::default()
        .forwards()
        .position(StreamPosition::Position(5));
    assert!(
        read_stream(&a.client, &s, &past)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn stream_reads_backwards_from_end_or_a_revision_include_it() {
    let a = start();
    let s = five(&a).await;
    let end = ReadStreamOptions::default().position(StreamPosition::End);
    let got = read_stream(&a.client, &s, &end).await.expect("read");
    assert_eq!(revisions(&got), [4, 3, 2, 1, 0]);
    let got = read_stream(&a.client, &s, &end.clone().max_count(2))
        .await
        .expect("read");
    assert_eq!(types(&got), ["E", "D"]);
    let from2 = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::Position(2));
    let got = read_stream(&a.client, &s, &from2).await.expect("read");
    assert_eq!(revisions(&got), [2, 1, 0]);
    let forwards = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    let mut backwards = read_stream(&a.client, &s, &end).await.expect("read");
    backwards.reverse();
    assert_eq!(
        forwards.iter().map(|e| e.position).collect::<Vec<_>>(),
        backwards.iter().map(|e| e.position).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn reading_a_missing_stream_is_resource_not_found() {
    let a = start();
    let _other = five(&a).await;
    let e = read_stream(&a.client, &stream("order"), &ReadStreamOptions::default())
        .await
        .expect_err("no such stream");
    assert!(matches!(e, Error::ResourceNotFound), "{e:?}");
}

#[tokio::test]
async fn stream_names_are_exact_not_prefixes() {
    let a = start();
    let s = five(&a).await;
    let e = read_stream(&a.client, &s[..s.len() - 1], &ReadStreamOptions::default())
        .await
        .expect_err("a prefix is another stream");
    assert!(matches!(e, Error::ResourceNotFound), "{e:?}");
}

#[tokio::test]
async fn a_read_with_a_deadline_that_is_met_succeeds() {
    let a = start();
    let s = five(&a).await;
    let got = read_stream(
        &a.client,
        &s,
        &ReadStreamOptions::default().deadline(Duration::from_secs(5)),
    )
    .await
    .expect("read");
    assert_eq!(got.len(), 5);
}
