//! `$all` reads by the official Rust KurrentDB client against `annal serve`: commit
//! order both ways, from a position, server-side filters on event types and stream
//! names (regular expressions, prefixes), and deadlines.

mod common;

use common::kurrent::{any, event, filtered, mixed, read_all, start, stream, types};
use kurrentdb::{
    Error, EventData, Position, ReadAllOptions, RecordedEvent, StreamPosition, SubscriptionFilter,
};
use std::time::Duration;

#[tokio::test]
async fn all_reads_forwards_in_commit_order_and_backwards_newest_first() {
    let a = start();
    mixed(&a).await;
    let forwards = read_all(&a.client, &ReadAllOptions::default()).await;
    // A served store starts with the node's `$epoch` (a_fresh_servers_all_starts_with_its_epoch).
    let expected = [
        "$epoch",
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
    assert_eq!(types(&limited), ["$epoch", "OrderPlaced"]);
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
    assert_eq!(forwards.len(), every.len() - 2);
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
async fn an_event_type_regex_keeps_only_matching_types() {
    let a = start();
    mixed(&a).await;
    let include = filtered(SubscriptionFilter::on_event_type().regex("^OrderPlaced$|^OrderPaid$"));
    assert_eq!(
        types(&read_all(&a.client, &include).await),
        ["OrderPlaced", "OrderPaid", "OrderPlaced"]
    );
}

#[tokio::test]
async fn an_event_type_regex_with_a_negative_look_ahead_excludes_types() {
    let a = start();
    mixed(&a).await;
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
}

#[tokio::test]
async fn an_unanchored_event_type_regex_matches_anywhere_in_the_type() {
    let a = start();
    mixed(&a).await;
    let unanchored = filtered(SubscriptionFilter::on_event_type().regex("Issued"));
    assert_eq!(
        types(&read_all(&a.client, &unanchored).await),
        ["InvoiceIssued"]
    );
}

#[tokio::test]
async fn event_type_prefixes_keep_types_starting_with_any_of_them() {
    let a = start();
    mixed(&a).await;
    let prefixes = filtered(
        SubscriptionFilter::on_event_type()
            .add_prefix("Invoice")
            .add_prefix("Res"),
    );
    assert_eq!(
        types(&read_all(&a.client, &prefixes).await),
        ["InvoiceIssued", "Result"]
    );
}

#[tokio::test]
async fn the_limit_of_a_filtered_read_counts_the_events_that_pass() {
    let a = start();
    mixed(&a).await;
    let limited = ReadAllOptions::default()
        .filter(SubscriptionFilter::on_event_type().regex("^Order"))
        .max_count(2);
    assert_eq!(
        types(&read_all(&a.client, &limited).await),
        ["OrderPlaced", "OrderPaid"]
    );
}

#[tokio::test]
async fn filters_apply_to_backward_reads_too() {
    let a = start();
    mixed(&a).await;
    let backwards = ReadAllOptions::default()
        .position(StreamPosition::End)
        .filter(SubscriptionFilter::on_event_type().regex("^Order"));
    assert_eq!(
        types(&read_all(&a.client, &backwards).await),
        ["OrderPlaced", "OrderPaid", "OrderPlaced"]
    );
}

#[tokio::test]
async fn excluding_system_events_keeps_every_user_event() {
    let a = start();
    mixed(&a).await;
    let system = filtered(SubscriptionFilter::on_event_type().exclude_system_events());
    let kept = read_all(&a.client, &system).await;
    assert_eq!(kept.len(), 6);
    assert!(kept.iter().all(|e| !e.event_type.starts_with('$')));
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    assert!(
        every.len() > kept.len(),
        "the $epoch is read without the filter"
    );
}

#[tokio::test]
async fn a_fresh_servers_all_starts_with_its_epoch() {
    let a = start();
    // Nothing written by a client: `$all` already holds the node's term, as on KurrentDB.
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    assert_eq!(types(&every), ["$epoch"], "{every:?}");
    let epoch = &every[0];
    assert_eq!(epoch.stream_id(), "$epochs");
    assert_eq!(epoch.revision, 0);
    let data: serde_json::Value = serde_json::from_slice(&epoch.data).expect("JSON");
    assert_eq!(data["epochNumber"], 0);
    assert_eq!(data["epochPosition"], 0);
    assert_eq!(data["prevEpochPosition"], -1);
    assert_eq!(
        data["epochId"].as_str(),
        Some(epoch.id.to_string().as_str())
    );
    for field in ["leaderInstanceId", "timeStamp"] {
        assert!(data[field].is_string(), "{field} in {data}");
    }
    // The leader's instance id is the one Gossip and GET /v1/cluster show.
    let cluster: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/v1/cluster", a.served.port))
            .await
            .expect("GET /v1/cluster")
            .json()
            .await
            .expect("JSON");
    assert_eq!(cluster["epoch"], 0, "{cluster}");
    assert_eq!(
        cluster["nodes"][0]["instance_id"], data["leaderInstanceId"],
        "{cluster}"
    );
}

/// The stream names of `events`, in order.
fn streams(events: Vec<RecordedEvent>) -> Vec<String> {
    events.iter().map(|e| e.stream_id().to_owned()).collect()
}

#[tokio::test]
async fn a_stream_name_regex_includes_or_excludes_one_stream() {
    let a = start();
    let (order, invoice) = mixed(&a).await;
    let include = filtered(SubscriptionFilter::on_stream_name().regex(format!("^{order}$")));
    assert_eq!(
        streams(read_all(&a.client, &include).await),
        [order.clone(), order.clone(), order.clone()]
    );
    // As clients exclude system streams too: a negative look-ahead.
    let exclude =
        filtered(SubscriptionFilter::on_stream_name().regex(format!(r"^(?!({order}|\$.*)$)")));
    assert_eq!(
        streams(read_all(&a.client, &exclude).await),
        [invoice.clone(), invoice.clone(), invoice.clone()]
    );
}

#[tokio::test]
async fn a_stream_name_regex_selects_a_category() {
    let a = start();
    mixed(&a).await;
    let category = filtered(SubscriptionFilter::on_stream_name().regex("^invoice-"));
    assert_eq!(read_all(&a.client, &category).await.len(), 3);
}

#[tokio::test]
async fn a_stream_name_prefix_keeps_the_streams_starting_with_it() {
    let a = start();
    mixed(&a).await;
    let prefix = filtered(SubscriptionFilter::on_stream_name().add_prefix("order-"));
    assert_eq!(
        types(&read_all(&a.client, &prefix).await),
        ["OrderPlaced", "OrderPaid", "Result"]
    );
    let none = filtered(SubscriptionFilter::on_stream_name().add_prefix("nothing-"));
    assert!(read_all(&a.client, &none).await.is_empty());
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
    assert_eq!(types(&read).iter().filter(|t| **t == "Line").count(), 5_000);
}

/// The error a `$all` read ends with (it must end with one).
async fn read_all_error(client: &kurrentdb::Client, options: &ReadAllOptions) -> String {
    let mut read = match client.read_all(options).await {
        Ok(read) => read,
        Err(Error::ServerError(m)) => return m,
        Err(other) => panic!("expected a server error, got {other:?}"),
    };
    match read.next().await {
        Ok(Some(e)) => panic!("expected an error, got {e:?}"),
        Ok(None) => panic!("expected an error, the read ended"),
        Err(Error::ServerError(m)) => m,
        Err(other) => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_all_read_from_a_position_where_no_event_is_is_refused_as_an_invalid_position() {
    let a = start();
    mixed(&a).await;
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    let last = every.last().expect("events").position.commit;
    let past = Position {
        commit: last + 1,
        prepare: last + 1,
    };
    // commit ≠ prepare: no annal event has such a position.
    let torn = Position {
        commit: every[2].position.commit,
        prepare: every[1].position.commit,
    };
    for from in [past, torn] {
        let at = ReadAllOptions::default().position(StreamPosition::Position(from));
        let m = read_all_error(&a.client, &at.clone().forwards()).await;
        assert!(
            m.contains("Unexpected ReadAllResult: InvalidPosition"),
            "{m}"
        );
        let m = read_all_error(&a.client, &at.clone().backwards()).await;
        assert!(
            m.contains("Unexpected ReadAllResult: InvalidPosition"),
            "{m}"
        );
        let filtered = at
            .forwards()
            .filter(SubscriptionFilter::on_event_type().exclude_system_events());
        let m = read_all_error(&a.client, &filtered).await;
        assert!(
            m.contains("Unexpected FilteredReadAllResult: InvalidPosition"),
            "{m}"
        );
    }
    // The last event's position, and the start, stay valid.
    let from_last = read_all(
        &a.client,
        &ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Position(Position {
                commit: last,
                prepare: last,
            })),
    )
    .await;
    assert_eq!(from_last.len(), 1);
    let from_zero = read_all(
        &a.client,
        &ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Position(Position {
                commit: 0,
                prepare: 0,
            })),
    )
    .await;
    assert_eq!(from_zero.len(), every.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_appends_of_1000_events_read_back_whole_and_not_interleaved() {
    let a = start();
    let last = read_all(
        &a.client,
        &ReadAllOptions::default()
            .position(StreamPosition::End)
            .max_count(1),
    )
    .await;
    let before = last[0].position;
    let (one, two) = (stream("nonint"), stream("nonint"));
    let append = |name: String| {
        let client = a.client.clone();
        async move {
            let events: Vec<EventData> = (0..1000).map(|n| event("Ticked", n)).collect();
            client
                .append_to_stream(name.as_str(), &any(), events)
                .await
                .expect("append")
        }
    };
    let (r1, r2) = tokio::join!(
        tokio::spawn(append(one.clone())),
        tokio::spawn(append(two.clone()))
    );
    let (r1, r2) = (r1.expect("task"), r2.expect("task"));
    // From the previous last position, dropping it (as eventsourcing reads notifications).
    let after: Vec<RecordedEvent> = read_all(
        &a.client,
        &ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Position(before))
            .max_count(2001),
    )
    .await
    .into_iter()
    .filter(|e| e.position != before)
    .take(2000)
    .collect();
    let names: Vec<&str> = after.iter().map(|e| e.stream_id()).collect();
    assert_eq!(names.len(), 2000);
    let (first, second) = names.split_at(1000);
    assert!(
        first.iter().all(|n| *n == first[0]) && second.iter().all(|n| *n == second[0]),
        "each append is contiguous"
    );
    let mut both = [first[0], second[0]];
    both.sort_unstable();
    let mut want = [one.as_str(), two.as_str()];
    want.sort_unstable();
    assert_eq!(both, want, "both appends are read");
    assert!(after.windows(2).all(|w| w[0].position < w[1].position));
    let ends = [r1.position, r2.position];
    assert!(ends.contains(&after[999].position) && ends.contains(&after[1999].position));
}
