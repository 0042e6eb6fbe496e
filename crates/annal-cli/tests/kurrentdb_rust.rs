//! `annal serve` driven by the official Rust KurrentDB client (the `kurrentdb` crate):
//! appends with every expected state (single and batch), idempotent re-appends, stream
//! and `$all` reads, filters, catch-up subscriptions, deadlines, deletion, metadata,
//! binary data, HTTP interop, TLS with Basic auth; and the endpoint's reliability under
//! unknown methods, malformed bodies and vanishing subscribers (raw HTTP/2).

mod common;

use common::{Served, serve};
use kurrentdb::{AppendToStreamOptions, BatchAppendOptions};
use kurrentdb::{
    Client, ClientSettings, CurrentRevision, DeleteStreamOptions, Error, EventData, Position,
    ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamMetadata, StreamMetadataResult,
    StreamPosition, StreamState, SubscribeToAllOptions, SubscribeToStreamOptions, Subscription,
    SubscriptionEvent, SubscriptionFilter, TombstoneStreamOptions,
};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A fresh server on its own data directory and a client connected to it over h2c.
struct Annal {
    client: Client,
    served: Served,
    _dir: tempfile::TempDir,
}

fn start() -> Annal {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir.path().join("data"), &[]);
    let client = connect(served.port);
    Annal {
        client,
        served,
        _dir: dir,
    }
}

fn connect(port: u16) -> Client {
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{port}?tls=false")
        .parse()
        .expect("connection string");
    Client::new(settings).expect("client")
}

fn stream(category: &str) -> String {
    format!("{category}-{}", Uuid::now_v7().simple())
}

fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).expect("json")
}

fn any() -> AppendToStreamOptions {
    AppendToStreamOptions::default()
}

fn expecting(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

/// Every event of a read, or its error.
async fn read_stream(
    client: &Client,
    name: &str,
    options: &ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut read = client.read_stream(name, options).await?;
    let mut out = Vec::new();
    while let Some(e) = read.next().await? {
        out.push(e.event.expect("an event"));
    }
    Ok(out)
}

async fn read_all(client: &Client, options: &ReadAllOptions) -> Vec<RecordedEvent> {
    let mut read = client.read_all(options).await.expect("read $all");
    let mut out = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        out.push(e.event.expect("an event"));
    }
    out
}

fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn wrong_version(e: Error) -> (StreamState, CurrentRevision) {
    match e {
        Error::WrongExpectedVersion { expected, current } => (expected, current),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

/// The next event, checkpoint or caught-up of a subscription (confirmation skipped),
/// failing after five seconds.
async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next_subscription_event())
            .await
            .expect("a subscription message within 5 s")
            .expect("subscription");
        if !matches!(e, SubscriptionEvent::Confirmed(_)) {
            return e;
        }
    }
}

/// The next `n` events of a subscription, skipping checkpoints and caught-up.
async fn next_events(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        if let SubscriptionEvent::EventAppeared(e) = next(sub).await {
            out.push(e.event.expect("an event"));
        }
    }
    out
}

/// Events until the caught-up message, which must come.
async fn until_caught_up(sub: &mut Subscription) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        match next(sub).await {
            SubscriptionEvent::EventAppeared(e) => out.push(e.event.expect("an event")),
            SubscriptionEvent::CaughtUp(_) => return out,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- single appends

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

#[tokio::test]
async fn reappending_at_the_same_revision_is_idempotent_but_a_partial_overlap_is_not() {
    let a = start();
    let s = stream("order");
    a.client
        .append_to_stream(s.as_str(), &any(), event("A", 0))
        .await
        .expect("append");
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let at0 = expecting(StreamState::StreamRevision(0));
    let first = a
        .client
        .append_to_stream(s.as_str(), &at0, vec![event("B", 1).id(x)])
        .await
        .expect("append");
    let again = a
        .client
        .append_to_stream(s.as_str(), &at0, vec![event("B", 1).id(x)])
        .await
        .expect("same ids, same revision");
    assert_eq!(again.position, first.position);
    assert_eq!(again.next_expected_version, 1);
    let e = a
        .client
        .append_to_stream(
            s.as_str(),
            &at0,
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

// ---------------------------------------------------------------- batch appends

#[tokio::test]
async fn batch_append_honours_every_expected_state() {
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

// ---------------------------------------------------------------- stream reads

/// A stream of five events A..E at revisions 0..4.
async fn five(a: &Annal) -> String {
    let s = stream("order");
    let events = ["A", "B", "C", "D", "E"]
        .iter()
        .enumerate()
        .map(|(n, t)| event(t, n as u64))
        .collect::<Vec<_>>();
    a.client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), events)
        .await
        .expect("append");
    s
}

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
    // Names are exact, not prefixes.
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

// ---------------------------------------------------------------- $all reads and filters

/// Two streams of mixed types: order-… (OrderPlaced, OrderPaid, Result) and
/// invoice-… (InvoiceIssued, PersistentConfig1, OrderPlaced).
async fn mixed(a: &Annal) -> (String, String) {
    let order = stream("order");
    let invoice = stream("invoice");
    for (s, t) in [
        (&order, "OrderPlaced"),
        (&invoice, "InvoiceIssued"),
        (&order, "OrderPaid"),
        (&invoice, "PersistentConfig1"),
        (&order, "Result"),
        (&invoice, "OrderPlaced"),
    ] {
        a.client
            .append_to_stream(s.as_str(), &any(), event(t, 0))
            .await
            .expect("append");
    }
    (order, invoice)
}

fn filtered(filter: SubscriptionFilter) -> ReadAllOptions {
    ReadAllOptions::default().filter(filter)
}

#[tokio::test]
async fn all_reads_forwards_in_commit_order_and_backwards_newest_first() {
    let a = start();
    mixed(&a).await;
    let forwards = read_all(&a.client, &ReadAllOptions::default()).await;
    let expected = [
        "OrderPlaced",
        "InvoiceIssued",
        "OrderPaid",
        "PersistentConfig1",
        "Result",
        "OrderPlaced",
    ];
    assert_eq!(types(&forwards), expected);
    assert!(forwards.windows(2).all(|w| w[0].position < w[1].position));
    let backwards = read_all(
        &a.client,
        &ReadAllOptions::default().position(StreamPosition::End),
    )
    .await;
    let mut reversed = expected.to_vec();
    reversed.reverse();
    assert_eq!(types(&backwards), reversed);
    let limited = read_all(&a.client, &ReadAllOptions::default().max_count(2)).await;
    assert_eq!(types(&limited), ["OrderPlaced", "InvoiceIssued"]);
}

#[tokio::test]
async fn all_reads_from_a_position_include_it_forwards_and_exclude_it_backwards() {
    let a = start();
    mixed(&a).await;
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    let p = every[2].position;
    let forwards = read_all(
        &a.client,
        &ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Position(p)),
    )
    .await;
    assert_eq!(forwards.first().map(|e| e.position), Some(p));
    assert_eq!(forwards.len(), 4);
    let backwards = read_all(
        &a.client,
        &ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::Position(p)),
    )
    .await;
    assert_eq!(
        backwards.iter().map(|e| e.position).collect::<Vec<_>>(),
        [every[1].position, every[0].position]
    );
}

#[tokio::test]
async fn all_reads_filter_event_types_by_include_exclude_prefix_and_look_ahead() {
    let a = start();
    mixed(&a).await;
    let include = filtered(SubscriptionFilter::on_event_type().regex("^OrderPlaced$|^OrderPaid$"));
    assert_eq!(
        types(&read_all(&a.client, &include).await),
        ["OrderPlaced", "OrderPaid", "OrderPlaced"]
    );
    // How clients exclude: a negative look-ahead.
    let exclude = filtered(
        SubscriptionFilter::on_event_type().regex(r"^(?!(\$.+$|PersistentConfig\d+$|Result$))"),
    );
    assert_eq!(
        types(&read_all(&a.client, &exclude).await),
        ["OrderPlaced", "InvoiceIssued", "OrderPaid", "OrderPlaced"]
    );
    let look_ahead = filtered(SubscriptionFilter::on_event_type().regex("^(?=Order)(?!OrderPaid)"));
    assert_eq!(
        types(&read_all(&a.client, &look_ahead).await),
        ["OrderPlaced", "OrderPlaced"]
    );
    let unanchored = filtered(SubscriptionFilter::on_event_type().regex("Issued"));
    assert_eq!(
        types(&read_all(&a.client, &unanchored).await),
        ["InvoiceIssued"]
    );
    let prefixes = filtered(
        SubscriptionFilter::on_event_type()
            .add_prefix("Invoice")
            .add_prefix("Res"),
    );
    assert_eq!(
        types(&read_all(&a.client, &prefixes).await),
        ["InvoiceIssued", "Result"]
    );
    // The limit counts events that pass, and filters apply backwards too.
    let limited = ReadAllOptions::default()
        .filter(SubscriptionFilter::on_event_type().regex("^Order"))
        .max_count(2);
    assert_eq!(
        types(&read_all(&a.client, &limited).await),
        ["OrderPlaced", "OrderPaid"]
    );
    let backwards = ReadAllOptions::default()
        .position(StreamPosition::End)
        .filter(SubscriptionFilter::on_event_type().regex("^Order"));
    assert_eq!(
        types(&read_all(&a.client, &backwards).await),
        ["OrderPlaced", "OrderPaid", "OrderPlaced"]
    );
    let system = filtered(SubscriptionFilter::on_event_type().exclude_system_events());
    assert_eq!(read_all(&a.client, &system).await.len(), 6);
}

#[tokio::test]
async fn all_reads_filter_stream_names_by_include_exclude_regex_and_prefix() {
    let a = start();
    let (order, invoice) = mixed(&a).await;
    let streams = |events: Vec<RecordedEvent>| -> Vec<String> {
        events.iter().map(|e| e.stream_id().to_owned()).collect()
    };
    let include = filtered(SubscriptionFilter::on_stream_name().regex(format!("^{order}$")));
    assert_eq!(
        streams(read_all(&a.client, &include).await),
        [order.clone(), order.clone(), order.clone()]
    );
    let exclude = filtered(SubscriptionFilter::on_stream_name().regex(format!("^(?!{order}$)")));
    assert_eq!(
        streams(read_all(&a.client, &exclude).await),
        [invoice.clone(), invoice.clone(), invoice.clone()]
    );
    let category = filtered(SubscriptionFilter::on_stream_name().regex("^invoice-"));
    assert_eq!(read_all(&a.client, &category).await.len(), 3);
    let prefix = filtered(SubscriptionFilter::on_stream_name().add_prefix("order-"));
    assert_eq!(
        types(&read_all(&a.client, &prefix).await),
        ["OrderPlaced", "OrderPaid", "Result"]
    );
    let none = filtered(SubscriptionFilter::on_stream_name().add_prefix("nothing-"));
    assert!(read_all(&a.client, &none).await.is_empty());
}

// ---------------------------------------------------------------- catch-up subscriptions

#[tokio::test]
async fn stream_subscription_from_start_gets_history_then_caught_up_then_live_events() {
    let a = start();
    let s = five(&a).await;
    let _noise = five(&a).await;
    let mut sub = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let history = until_caught_up(&mut sub).await;
    assert_eq!(revisions(&history), [0, 1, 2, 3, 4]);
    assert!(history.iter().all(|e| e.stream_id() == s));
    a.client
        .append_to_stream(s.as_str(), &any(), event("F", 5))
        .await
        .expect("append");
    let live = next_events(&mut sub, 1).await;
    assert_eq!((live[0].revision, live[0].event_type.as_str()), (5, "F"));
}

#[tokio::test]
async fn stream_subscription_from_a_revision_excludes_it_and_from_end_gets_only_new_events() {
    let a = start();
    let s = five(&a).await;
    let mut from2 = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(2)),
        )
        .await;
    assert_eq!(revisions(&until_caught_up(&mut from2).await), [3, 4]);
    let mut from_end = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::End),
        )
        .await;
    assert!(until_caught_up(&mut from_end).await.is_empty());
    a.client
        .append_to_stream(s.as_str(), &any(), event("F", 5))
        .await
        .expect("append");
    assert_eq!(revisions(&next_events(&mut from_end, 1).await), [5]);
    assert_eq!(revisions(&next_events(&mut from2, 1).await), [5]);
}

#[tokio::test]
async fn stream_subscription_to_a_missing_stream_waits_for_its_first_event() {
    let a = start();
    let s = stream("order");
    let mut sub = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    assert!(until_caught_up(&mut sub).await.is_empty());
    five(&a).await;
    a.client
        .append_to_stream(s.as_str(), &any(), event("First", 0))
        .await
        .expect("append");
    let got = next_events(&mut sub, 1).await;
    assert_eq!((got[0].stream_id(), got[0].revision), (s.as_str(), 0));
}

#[tokio::test]
async fn stream_subscription_to_a_tombstoned_stream_is_resource_deleted() {
    let a = start();
    let s = five(&a).await;
    a.client
        .tombstone_stream(s.as_str(), &TombstoneStreamOptions::default())
        .await
        .expect("tombstone");
    let mut sub = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let e = loop {
        match sub.next_subscription_event().await {
            Ok(SubscriptionEvent::Confirmed(_)) => continue,
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
}

#[tokio::test]
async fn all_subscription_from_start_gets_history_then_caught_up_at_the_head_then_live_events() {
    let a = start();
    mixed(&a).await;
    let head = read_all(
        &a.client,
        &ReadAllOptions::default().position(StreamPosition::End),
    )
    .await[0]
        .position;
    let mut sub = a
        .client
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
        .await;
    let mut history = Vec::new();
    let caught_up = loop {
        match next(&mut sub).await {
            SubscriptionEvent::EventAppeared(e) => history.push(e.event.expect("event")),
            SubscriptionEvent::CaughtUp(c) => break c,
            _ => {}
        }
    };
    assert_eq!(history.len(), 6);
    assert!(history.windows(2).all(|w| w[0].position < w[1].position));
    let caught_up = caught_up.expect("caught-up carries a timestamp");
    assert_eq!(caught_up.position, Some(head));
    let s = stream("live");
    let w = a
        .client
        .append_to_stream(s.as_str(), &any(), event("Live", 0))
        .await
        .expect("append");
    let live = next_events(&mut sub, 1).await;
    assert_eq!(live[0].stream_id(), s);
    assert_eq!(live[0].position, w.position);
}

#[tokio::test]
async fn all_subscription_from_a_position_excludes_it_and_from_end_gets_only_new_events() {
    let a = start();
    mixed(&a).await;
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    let mut from = a
        .client
        .subscribe_to_all(
            &SubscribeToAllOptions::default().position(StreamPosition::Position(every[3].position)),
        )
        .await;
    let after: Vec<Position> = until_caught_up(&mut from)
        .await
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(after, [every[4].position, every[5].position]);
    let mut from_end = a
        .client
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End))
        .await;
    assert!(until_caught_up(&mut from_end).await.is_empty());
    let s = stream("live");
    a.client
        .append_to_stream(s.as_str(), &any(), event("Live", 0))
        .await
        .expect("append");
    assert_eq!(next_events(&mut from_end, 1).await[0].stream_id(), s);
    assert_eq!(next_events(&mut from, 1).await[0].stream_id(), s);
}

#[tokio::test]
async fn filtered_all_subscription_sends_checkpoints_and_resumes_from_one_without_gaps() {
    let a = start();
    let s = stream("order");
    // 3 wanted among 40 events.
    let events: Vec<EventData> = (0..40)
        .map(|n| event(if n % 15 == 7 { "Wanted" } else { "Noise" }, n))
        .collect();
    a.client
        .append_to_stream(s.as_str(), &any(), events)
        .await
        .expect("append");
    let wanted = SubscriptionFilter::on_event_type().regex("^Wanted$").max(4);
    let mut sub = a
        .client
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(wanted.clone()))
        .await;
    let (mut seen, mut checkpoints) = (Vec::new(), Vec::new());
    loop {
        match next(&mut sub).await {
            SubscriptionEvent::EventAppeared(e) => seen.push(e.event.expect("event")),
            SubscriptionEvent::Checkpoint(p) => checkpoints.push(p),
            SubscriptionEvent::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(revisions(&seen), [7, 22, 37]);
    assert_eq!(
        checkpoints.len(),
        10,
        "one every 4 events scanned: {checkpoints:?}"
    );
    assert!(checkpoints.windows(2).all(|w| w[0] < w[1]));
    // Events filtered out while live still move checkpoints on.
    a.client
        .append_to_stream(
            s.as_str(),
            &any(),
            (40..48).map(|n| event("Noise", n)).collect::<Vec<_>>(),
        )
        .await
        .expect("append");
    let live = loop {
        if let SubscriptionEvent::Checkpoint(p) = next(&mut sub).await {
            break p;
        }
    };
    assert!(live > checkpoints[checkpoints.len() - 1]);
    drop(sub);
    // Resuming from a checkpoint: the wanted events after it, none twice.
    let resume_at = checkpoints[5];
    let mut resumed = a
        .client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .filter(wanted)
                .position(StreamPosition::Position(resume_at)),
        )
        .await;
    let again = until_caught_up(&mut resumed).await;
    let expected: Vec<u64> = seen
        .iter()
        .filter(|e| e.position > resume_at)
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions(&again), expected);
    assert!(!expected.is_empty());
}

#[tokio::test]
async fn a_dropped_subscription_stops_and_the_server_keeps_serving() {
    let a = start();
    let s = five(&a).await;
    for _ in 0..20 {
        let mut sub = a
            .client
            .subscribe_to_all(&SubscribeToAllOptions::default())
            .await;
        next_events(&mut sub, 2).await;
        drop(sub);
    }
    let mut sub = a
        .client
        .subscribe_to_stream(
            s.as_str(),
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    assert_eq!(until_caught_up(&mut sub).await.len(), 5);
    let w = a
        .client
        .append_to_stream(s.as_str(), &any(), event("F", 5))
        .await
        .expect("the server still appends");
    assert_eq!(w.next_expected_version, 5);
    assert_eq!(revisions(&next_events(&mut sub, 1).await), [5]);
}

#[tokio::test]
async fn a_read_that_outlasts_its_deadline_is_deadline_exceeded() {
    let a = start();
    let s = stream("order");
    let events: Vec<EventData> = (0..5_000).map(|n| event("Line", n)).collect();
    a.client
        .append_to_stream(s.as_str(), &any(), events)
        .await
        .expect("append");
    let tight = ReadAllOptions::default().deadline(Duration::from_millis(1));
    let outcome = async {
        let mut read = a.client.read_all(&tight).await?;
        let mut n = 0;
        while read.next().await?.is_some() {
            n += 1;
        }
        Ok::<_, Error>(n)
    }
    .await;
    assert!(
        matches!(outcome, Err(Error::DeadlineExceeded)),
        "5,000 events in 1 ms: {outcome:?}"
    );
    // (The Rust client sends no deadline with subscriptions: it puts only headers on them.)
    let read = read_all(
        &a.client,
        &ReadAllOptions::default().deadline(Duration::from_secs(30)),
    )
    .await;
    assert_eq!(read.len(), 5_000);
}

// ---------------------------------------------------------------- delete and tombstone

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

#[tokio::test]
async fn a_deleted_stream_reads_as_not_found_and_revisions_continue_when_written_again() {
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
    let s = five(&a).await;
    a.client
        .delete_stream(s.as_str(), &DeleteStreamOptions::default())
        .await
        .expect("delete");
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
    let visible = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(types(&visible), ["F", "G"]);
    assert_eq!(revisions(&visible), [5, 6]);
    // Deleted events stay in $all.
    let in_all = read_all(
        &a.client,
        &filtered(SubscriptionFilter::on_stream_name().regex(format!("^{s}$"))),
    )
    .await;
    assert_eq!(types(&in_all), ["A", "B", "C", "D", "E", "F", "G"]);
    // It can be deleted again.
    a.client
        .delete_stream(
            s.as_str(),
            &delete_expecting(StreamState::StreamRevision(6)),
        )
        .await
        .expect("delete again");
}

#[tokio::test]
async fn delete_errors_are_failed_precondition_for_versions_and_resource_deleted_when_deleted() {
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
    // A missing stream: "actual -1" (the Python client calls this NotFound; the Rust
    // client leaves it a FAILED_PRECONDITION).
    for (state, n) in [
        (StreamState::StreamRevision(0), 0),
        (StreamState::StreamExists, -4),
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
    a.client
        .delete_stream(s.as_str(), &DeleteStreamOptions::default())
        .await
        .expect("delete");
    let e = a
        .client
        .delete_stream(s.as_str(), &delete_expecting(StreamState::StreamExists))
        .await
        .expect_err("already deleted");
    assert!(matches!(e, Error::ResourceDeleted), "{e:?}");
}

#[tokio::test]
async fn a_tombstoned_stream_refuses_everything_as_resource_deleted() {
    let a = start();
    let s = five(&a).await;
    let p = a
        .client
        .tombstone_stream(
            s.as_str(),
            &tombstone_expecting(StreamState::StreamRevision(4)),
        )
        .await
        .expect("tombstone");
    assert!(p.is_some());
    let e = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect_err("read");
    assert!(matches!(e, Error::ResourceDeleted), "read: {e:?}");
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
    let meta = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("metadata");
    assert!(meta.is_deleted(), "{meta:?}");
}

#[tokio::test]
async fn tombstone_errors_and_a_tombstone_of_a_missing_stream_blocks_the_name() {
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
    // A soft-deleted stream can still be tombstoned, for good.
    a.client
        .delete_stream(s.as_str(), &DeleteStreamOptions::default())
        .await
        .expect("delete");
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

// ---------------------------------------------------------------- metadata

#[tokio::test]
async fn stream_metadata_set_and_get_round_trip_with_versions() {
    let a = start();
    let s = five(&a).await;
    let none = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("metadata");
    assert!(none.is_not_found(), "{none:?}");
    let meta = StreamMetadata::builder()
        .max_count(100)
        .insert_custom_property("owner", "billing")
        .build();
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
    let got = a
        .client
        .get_stream_metadata(s.as_str(), &ReadStreamOptions::default())
        .await
        .expect("get");
    let StreamMetadataResult::Success(v) = got else {
        panic!("metadata: {got:?}")
    };
    assert_eq!((v.metadata(), v.version()), (&meta2, 1));
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
async fn stream_metadata_max_count_and_truncate_before_hide_events() {
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

// ---------------------------------------------------------------- HTTP interop

#[tokio::test]
async fn an_event_appended_over_grpc_reads_back_over_http() {
    let a = start();
    let s = stream("order");
    let correlation = Uuid::new_v4().to_string();
    let causation = Uuid::new_v4().to_string();
    let id = Uuid::new_v4();
    a.client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::NoStream),
            vec![
                event("OrderPlaced", 1),
                EventData::json("OrderPaid", &json!({"amount": 10}))
                    .expect("json")
                    .id(id)
                    .metadata_as_json(
                        &json!({"$correlationId": correlation, "$causationId": causation}),
                    )
                    .expect("json"),
            ],
        )
        .await
        .expect("append");
    let url = format!("http://127.0.0.1:{}/v1/streams/{s}", a.served.port);
    let resp = reqwest::get(&url).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["event_type"], "OrderPlaced");
    assert_eq!(events[0]["aggregate_type"], "order");
    assert_eq!(events[0]["aggregate_id"], s.as_str());
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[1]["event_id"], id.to_string());
    assert_eq!(events[1]["aggregate_version"], 2);
    assert_eq!(events[1]["data"], json!({"amount": 10}));
    assert_eq!(events[1]["correlation_id"], correlation.as_str());
    assert_eq!(events[1]["causation_id"], causation.as_str());
}

#[tokio::test]
async fn an_event_appended_over_http_reads_back_over_grpc() {
    let a = start();
    let s = stream("order");
    let url = format!("http://127.0.0.1:{}/v1/streams/{s}", a.served.port);
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({
            "aggregate_type": "order",
            "expected_version": "no_stream",
            "events": [
                {"event_type": "OrderPlaced", "data": {"total": 3}},
                {"event_type": "OrderShipped", "data": {"carrier": "x"}},
            ],
        }))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.expect("json");
    let http_ids: Vec<String> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect();
    let got = read_stream(&a.client, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(
        got.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        http_ids
    );
    assert_eq!(types(&got), ["OrderPlaced", "OrderShipped"]);
    assert_eq!(revisions(&got), [0, 1]);
    assert_eq!(
        got[0].as_json::<serde_json::Value>().expect("json"),
        json!({"total": 3})
    );
    assert!(got[0].is_json);
    // And gRPC continues the stream HTTP started.
    let r = a
        .client
        .append_to_stream(
            s.as_str(),
            &expecting(StreamState::StreamRevision(1)),
            event("C", 2),
        )
        .await
        .expect("append");
    assert_eq!(r.next_expected_version, 2);
}

// ---------------------------------------------------------------- TLS and Basic auth

// The client asks ServerFeatures without credentials when it connects: annal answers
// that (and Gossip) to anyone, and wants Basic credentials for the rest.
#[tokio::test]
async fn over_tls_basic_auth_with_a_token_is_accepted_and_wrong_credentials_are_access_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::test_certificate(dir.path());
    let secret = "s3cret-s3cret-s3cret";
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        json!({"tokens": [
            {"name": "admin", "token": secret, "role": "admin"},
            {"name": "reader", "token": "reader-reader-reader", "role": "read"},
        ]})
        .to_string(),
    )
    .expect("tokens file");
    let (cert, key, tokens) = (
        cert.display().to_string(),
        key.display().to_string(),
        tokens.display().to_string(),
    );
    let served = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tokens-file",
            &tokens,
        ],
    );
    let client = |userinfo: &str| {
        let settings: ClientSettings = format!(
            "kurrentdb://{userinfo}localhost:{}?tls=true&tlsVerifyCert=false",
            served.port
        )
        .parse()
        .expect("connection string");
        Client::new(settings).expect("client")
    };
    let s = stream("order");
    let admin = client(&format!("admin:{secret}@"));
    let r = admin
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), event("A", 0))
        .await
        .expect("append over TLS with Basic auth");
    assert_eq!(r.next_expected_version, 0);
    let got = read_stream(&admin, &s, &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_eq!(types(&got), ["A"]);

    let reader = client("reader:reader-reader-reader@");
    assert_eq!(
        read_stream(&reader, &s, &ReadStreamOptions::default())
            .await
            .expect("a read token reads")
            .len(),
        1
    );
    let e = reader
        .append_to_stream(s.as_str(), &any(), event("B", 1))
        .await
        .expect_err("a read token cannot append");
    assert!(matches!(e, Error::AccessDenied), "{e:?}");

    for wrong in [
        "admin:wrong-wrong-wrong-wrong@",
        "nobody:s3cret-s3cret-s3cret@",
        "",
    ] {
        let c = client(wrong);
        let e = c
            .append_to_stream(s.as_str(), &any(), event("B", 1))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::AccessDenied), "{wrong:?}: {e:?}");
        let e = read_stream(&c, &s, &ReadStreamOptions::default())
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::AccessDenied), "{wrong:?}: {e:?}");
    }
}

// ---------------------------------------------------------------- reliability (raw HTTP/2)

/// A gRPC call over a raw HTTP/2 (h2c) connection of its own with a raw message: the
/// HTTP status and the `grpc-status` / `grpc-message` the server ends with (from the
/// headers of a trailers-only answer, else from the trailers).
async fn raw_grpc(port: u16, path: &str, message: &[u8]) -> (u16, Option<String>, String) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = h2.send_request(request, false).expect("send");
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(message);
    send.send_data(bytes::Bytes::from(body), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("an answer within 5 s")
        .expect("response");
    let status = response.status().as_u16();
    let pick = |h: &http::HeaderMap| {
        (
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            h.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (mut grpc_status, mut grpc_message) = pick(response.headers());
    if grpc_status.is_none() {
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
            .await
            .expect("trailers within 5 s")
            .expect("trailers");
        (grpc_status, grpc_message) = trailers.as_ref().map(pick).unwrap_or_default();
    }
    driver.abort();
    (status, grpc_status, grpc_message)
}

#[tokio::test]
async fn an_unknown_grpc_method_or_service_is_unimplemented() {
    let a = start();
    for path in [
        "/event_store.client.streams.Streams/NoSuchMethod",
        "/event_store.client.nothing.Nothing/Read",
    ] {
        let (status, grpc_status, message) = raw_grpc(a.served.port, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(grpc_status.as_deref(), Some("12"), "{path}: {message}");
    }
    // Counted under one `other` label, whatever the paths were.
    let m = metrics(a.served.port).await;
    let other = metric_value(
        &m,
        "annal_grpc_requests_total",
        &["method=\"other\"", "code=\"12\""],
    );
    assert_eq!(other, Some(2.0), "{m}");
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn grpc_calls_are_counted_and_timed_in_the_prometheus_metrics() {
    let a = start();
    let s = stream("order");
    for n in 0..3 {
        a.client
            .append_to_stream(s.as_str(), &any(), event("A", n))
            .await
            .expect("append");
    }
    let missing = read_stream(&a.client, &stream("none"), &ReadStreamOptions::default()).await;
    assert!(missing.is_err());
    let m = metrics(a.served.port).await;
    let appends = metric_value(
        &m,
        "annal_grpc_requests_total",
        &["method=\"Streams/Append\"", "code=\"streamed\""],
    );
    assert_eq!(appends, Some(3.0), "{m}");
    assert!(
        metric_value(
            &m,
            "annal_grpc_requests_total",
            &["method=\"Streams/Read\""]
        )
        .is_some(),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("annal_grpc_request_seconds") && l.contains("Streams/Append")),
        "{m}"
    );
}

#[tokio::test]
async fn a_malformed_protobuf_body_gets_a_grpc_error_and_the_server_keeps_serving() {
    let a = start();
    // Field 1 declared length-delimited with a length running past the end; then bytes
    // that are no valid tag at all.
    let garbage: [&[u8]; 3] = [&[0x0a, 0x7f, 0x01], &[0xff, 0xff, 0xff, 0xff], &[0x0a]];
    for method in ["Read", "Append", "Delete", "Tombstone", "BatchAppend"] {
        for body in garbage {
            let path = format!("/event_store.client.streams.Streams/{method}");
            let (status, grpc_status, message) = raw_grpc(a.served.port, &path, body).await;
            assert_eq!(status, 200, "{method} {body:?}");
            let code = grpc_status.unwrap_or_else(|| panic!("{method} {body:?}: no grpc-status"));
            assert_ne!(code, "0", "{method} {body:?}: {message}");
        }
    }
    let s = stream("order");
    let r = a
        .client
        .append_to_stream(s.as_str(), &any(), event("A", 0))
        .await
        .expect("the server still answers");
    assert_eq!(r.next_expected_version, 0);
}

/// The resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

#[tokio::test]
async fn clients_that_vanish_mid_catch_up_free_their_server_tasks() {
    let a = start();
    // 3,000 events of 20 KiB: a catch-up that stalls on its first page holds ~10 MiB
    // (a 500-event page plus a full channel) for as long as its task lives.
    let big = "x".repeat(20 * 1024);
    for n in 0..30 {
        let events: Vec<EventData> = (0..100)
            .map(|k| EventData::json("Big", &json!({"n": n * 100 + k, "pad": big})).expect("json"))
            .collect();
        a.client
            .append_to_stream(stream("big").as_str(), &any(), events)
            .await
            .expect("append");
    }
    let pid = a.served.pid();
    let abandon = |rounds: usize| async move {
        for _ in 0..rounds {
            // A connection of its own, dropped whole: the client vanishes.
            let client = connect(a.served.port);
            let mut sub = client
                .subscribe_to_all(&SubscribeToAllOptions::default())
                .await;
            next_events(&mut sub, 1).await;
            drop(sub);
            drop(client);
        }
    };
    abandon(5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(pid);
    abandon(40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mib(pid);
    assert!(
        after < before + 150,
        "40 abandoned catch-ups would hold ~400 MiB if their tasks lived: RSS {before} -> {after} MiB"
    );
    // And the server still serves a full catch-up.
    let mut sub = a
        .client
        .subscribe_to_all(&SubscribeToAllOptions::default())
        .await;
    assert_eq!(until_caught_up(&mut sub).await.len(), 3_000);
}
