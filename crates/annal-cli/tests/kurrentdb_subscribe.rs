//! Catch-up subscriptions by the official Rust KurrentDB client against `annal serve`:
//! to a stream and to `$all`, from either end or a position, history then caught-up
//! then live events; filtered `$all` subscriptions with checkpoints to resume from;
//! a tombstoned stream; dropped subscriptions.

mod common;

use common::kurrent::{
    Annal, any, event, five, mixed, next, next_events, read_all, revisions, start, stream,
    until_caught_up,
};
use kurrentdb::{
    Error, EventData, Position, ReadAllOptions, RecordedEvent, StreamPosition,
    SubscribeToAllOptions, SubscribeToStreamOptions, Subscription, SubscriptionEvent,
    SubscriptionFilter, TombstoneStreamOptions,
};

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
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    let head = every.last().expect("events").position;
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
    // The whole log, the node's `$epoch` first, as a read of `$all` has it.
    assert_eq!(
        history.iter().map(|e| e.position).collect::<Vec<_>>(),
        every.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_eq!(history[0].event_type, "$epoch");
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
    let expected: Vec<Position> = every[4..].iter().map(|e| e.position).collect();
    assert_eq!(after, expected);
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

/// A filtered `$all` subscription (`Wanted` events, a checkpoint every 4 events
/// scanned) over a stream of 40 events, 3 of them wanted, read until caught up.
struct Filtered {
    a: Annal,
    s: String,
    wanted: SubscriptionFilter,
    sub: Subscription,
    seen: Vec<RecordedEvent>,
    checkpoints: Vec<Position>,
}

async fn filtered_until_caught_up() -> Filtered {
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
    Filtered {
        a,
        s,
        wanted,
        sub,
        seen,
        checkpoints,
    }
}

#[tokio::test]
async fn a_filtered_all_subscription_sends_the_wanted_events_and_a_checkpoint_every_max_scanned() {
    let f = filtered_until_caught_up().await;
    assert_eq!(revisions(&f.seen), [7, 22, 37]);
    assert_eq!(
        f.checkpoints.len(),
        10,
        "one every 4 events scanned: {:?}",
        f.checkpoints
    );
    assert!(f.checkpoints.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn events_filtered_out_while_live_still_move_checkpoints_on() {
    let mut f = filtered_until_caught_up().await;
    f.a.client
        .append_to_stream(
            f.s.as_str(),
            &any(),
            (40..48).map(|n| event("Noise", n)).collect::<Vec<_>>(),
        )
        .await
        .expect("append");
    let live = loop {
        if let SubscriptionEvent::Checkpoint(p) = next(&mut f.sub).await {
            break p;
        }
    };
    assert!(live > f.checkpoints[f.checkpoints.len() - 1]);
}

#[tokio::test]
async fn a_filtered_subscription_resumed_from_a_checkpoint_misses_and_repeats_nothing() {
    let f = filtered_until_caught_up().await;
    drop(f.sub);
    // Resuming from a checkpoint: the wanted events after it, none twice.
    let resume_at = f.checkpoints[5];
    let mut resumed =
        f.a.client
            .subscribe_to_all(
                &SubscribeToAllOptions::default()
                    .filter(f.wanted)
                    .position(StreamPosition::Position(resume_at)),
            )
            .await;
    let again = until_caught_up(&mut resumed).await;
    let expected: Vec<u64> = f
        .seen
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
async fn an_all_subscription_from_a_position_where_no_event_is_ends_with_an_invalid_position() {
    let a = start();
    mixed(&a).await;
    let every = read_all(&a.client, &ReadAllOptions::default()).await;
    let last = every.last().expect("events").position.commit;
    let mut sub = a
        .client
        .subscribe_to_all(
            &SubscribeToAllOptions::default().position(StreamPosition::Position(Position {
                commit: last + 1,
                prepare: last + 1,
            })),
        )
        .await;
    let e = loop {
        match sub.next_subscription_event().await {
            Ok(SubscriptionEvent::Confirmed(_)) => continue,
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => break e,
        }
    };
    match e {
        Error::ServerError(m) => assert!(m.contains("invalid position"), "{m}"),
        other => panic!("expected a server error, got {other:?}"),
    }
}
