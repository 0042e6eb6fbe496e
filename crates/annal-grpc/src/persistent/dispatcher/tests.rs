//! The dispatcher's choices and checkpointing, driven directly: no store, no network.

use super::*;
use crate::persistent::settings::{Settings, StartFrom};
use crate::persistent::strategy::Strategy;
use annal_core::{Hash, RawJson, Timestamp};

const STREAM: &str = "orders";

fn settings(strategy: Strategy) -> Settings {
    Settings {
        start: StartFrom::Start,
        filter: None,
        resolve_links: false,
        extra_statistics: false,
        max_retry_count: 2,
        min_checkpoint_count: 0,
        max_checkpoint_count: 0,
        max_subscriber_count: 0,
        live_buffer_size: 500,
        read_batch_size: 20,
        history_buffer_size: 500,
        message_timeout_ms: 0,
        checkpoint_after_ms: 60_000,
        consumer_strategy: strategy,
    }
}

/// A started dispatcher of a group on `source` (a stream, or `$all`).
fn group_on(source: &str, settings: Settings) -> Dispatcher {
    let def = Definition {
        source: source.to_owned(),
        group: "billing".to_owned(),
        settings,
        generation: 1,
    };
    let mut d = Dispatcher::new(def, None);
    d.start(0, 0, 0);
    d
}

fn group(settings: Settings) -> Dispatcher {
    group_on(STREAM, settings)
}

/// Event `n` (its stream version and log position) of `stream`.
fn event_in(stream: &str, n: u64, correlation: Option<&str>) -> RecordedEvent {
    RecordedEvent {
        position: n,
        event_id: Uuid::now_v7(),
        event_type: "Placed".into(),
        event_version: 1,
        aggregate_type: "order".into(),
        aggregate_id: stream.into(),
        aggregate_version: n,
        recorded_at: Timestamp::from_micros(1_700_000_000_000_000),
        user_id: "system".into(),
        correlation_id: correlation.map(str::to_owned),
        causation_id: None,
        principal: None,
        data: RawJson::empty_object(),
        metadata: RawJson::empty_object(),
        sealed: None,
        subjects: Vec::new(),
        personal: None,
        hash: Hash::ZERO,
    }
}

/// Events 1..=n of [`STREAM`].
fn events(n: u64) -> Vec<RecordedEvent> {
    (1..=n).map(|i| event_in(STREAM, i, None)).collect()
}

/// The receiving end of a consumer.
struct Client {
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    _gone: oneshot::Receiver<()>,
}

impl Client {
    /// What arrived since last asked: (stream version, retry count, the event id the
    /// consumer sees).
    fn received(&mut self) -> Vec<(u64, i32, Uuid)> {
        let mut out = Vec::new();
        while let Ok(d) = self.rx.try_recv() {
            match d {
                Delivery::Event { event, retry } => {
                    let id = crate::convert::client_event_id(&event);
                    out.push((event.aggregate_version, retry, id));
                }
                Delivery::Dropped(why) => panic!("unexpectedly dropped: {why}"),
            }
        }
        out
    }

    fn versions(&mut self) -> Vec<u64> {
        self.received().into_iter().map(|(v, _, _)| v).collect()
    }

    /// The reason the group let it go, after any events.
    fn dropped(&mut self) -> Option<String> {
        while let Ok(d) = self.rx.try_recv() {
            if let Delivery::Dropped(why) = d {
                return Some(why);
            }
        }
        None
    }
}

fn join(d: &mut Dispatcher, id: u64, slots: usize) -> Client {
    let (tx, rx) = mpsc::channel(slots + 1);
    let (gone, gone_rx) = oneshot::channel();
    d.join(Consumer::new(
        id,
        tx,
        gone,
        slots,
        format!("consumer-{id}"),
        "ann".into(),
    ))
    .expect("the group has room");
    Client {
        id,
        rx,
        _gone: gone_rx,
    }
}

fn ids(received: &[(u64, i32, Uuid)]) -> Vec<Uuid> {
    received.iter().map(|(_, _, id)| *id).collect()
}

// Which consumer gets an event.

#[test]
fn round_robin_deals_events_to_consumers_in_turn() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    let mut b = join(&mut d, 2, 10);
    d.accept(events(4));
    d.dispatch();
    assert_eq!(a.versions(), [1, 3]);
    assert_eq!(b.versions(), [2, 4]);
}

#[test]
fn round_robin_skips_a_consumer_without_free_slots() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 1);
    let mut b = join(&mut d, 2, 10);
    d.accept(events(4));
    d.dispatch();
    assert_eq!(a.versions(), [1]);
    assert_eq!(b.versions(), [2, 3, 4]);
}

#[test]
fn a_consumer_holds_about_its_byte_budget_of_unacknowledged_events_and_at_least_one() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 100);
    let big = |n: u64| {
        let mut e = event_in(STREAM, n, None);
        e.data = RawJson::parse(format!("\"{}\"", "x".repeat(200_000))).expect("json");
        e
    };
    d.accept((1..=10).map(big).collect());
    d.dispatch();
    let first = a.received();
    assert_eq!(
        first.iter().map(|(v, _, _)| *v).collect::<Vec<_>>(),
        [1, 2, 3],
        "about 512 KiB of 200 KB events, though 100 slots are free"
    );
    d.ack(1, &[first[0].2]);
    d.dispatch();
    assert_eq!(a.versions(), [4], "an ack frees its bytes");
    let mut fresh = group(settings(Strategy::RoundRobin));
    let mut c = join(&mut fresh, 3, 100);
    let mut huge = event_in(STREAM, 1, None);
    huge.data = RawJson::parse(format!("\"{}\"", "x".repeat(2_000_000))).expect("json");
    fresh.accept(vec![huge, event_in(STREAM, 2, None)]);
    fresh.dispatch();
    assert_eq!(
        c.versions(),
        [1],
        "with nothing in flight an event goes however large, and alone"
    );
}

#[test]
fn a_nack_that_parks_names_the_consumers_user_and_a_parking_by_the_group_names_none() {
    let mut s = settings(Strategy::RoundRobin);
    s.max_retry_count = 0;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(2));
    d.dispatch();
    let got = a.received();
    d.nack(1, &[got[0].2], NackAction::Park, "bad data");
    d.nack(1, &[got[1].2], NackAction::Retry, "try again");
    let parked = d.take_to_park();
    assert_eq!(parked.len(), 2, "one nacked to park, one past its retries");
    let by: Vec<_> = parked
        .iter()
        .map(|(i, _)| (i.event.aggregate_version, i.parked_by.clone()))
        .collect();
    assert!(by.contains(&(1, Some("ann".to_owned()))), "{by:?}");
    assert!(by.contains(&(2, None)), "{by:?}");
}

#[test]
fn dispatch_to_single_fills_the_first_consumer_before_the_next() {
    let mut d = group(settings(Strategy::DispatchToSingle));
    let mut a = join(&mut d, 1, 2);
    let mut b = join(&mut d, 2, 10);
    d.accept(events(5));
    d.dispatch();
    assert_eq!(a.versions(), [1, 2]);
    assert_eq!(b.versions(), [3, 4, 5]);
}

#[test]
fn pinned_keeps_each_stream_on_one_consumer() {
    let mut d = group_on("$all", settings(Strategy::Pinned));
    let mut clients: Vec<Client> = (1..=3).map(|id| join(&mut d, id, 50)).collect();
    let streams = ["a", "b", "c", "d", "e"];
    let page: Vec<RecordedEvent> = (1..=20)
        .map(|n| event_in(streams[(n % 5) as usize], n, None))
        .collect();
    let stream_of: HashMap<u64, String> = page
        .iter()
        .map(|e| (e.position, e.aggregate_id.clone()))
        .collect();
    d.accept(page);
    d.dispatch();
    let mut owner: HashMap<String, u64> = HashMap::new();
    let mut delivered = 0;
    for c in &mut clients {
        for v in c.versions() {
            delivered += 1;
            let previous = owner.insert(stream_of[&v].clone(), c.id);
            assert!(previous.is_none_or(|p| p == c.id), "a stream went to two");
        }
    }
    assert_eq!(delivered, 20);
}

#[test]
fn pinned_waits_for_its_consumer_rather_than_use_another() {
    let mut d = group_on("$all", settings(Strategy::Pinned));
    let mut a = join(&mut d, 1, 1);
    let mut b = join(&mut d, 2, 1);
    d.accept(vec![event_in("x", 1, None), event_in("x", 2, None)]);
    d.dispatch();
    let first: Vec<_> = a.received().into_iter().chain(b.received()).collect();
    assert_eq!(
        first.len(),
        1,
        "the second event of x waits for x's consumer"
    );
    assert_eq!(d.stats().queued, 1);
    for c in [&a, &b] {
        d.ack(c.id, &ids(&first));
    }
    d.dispatch();
    let second: Vec<_> = a.received().into_iter().chain(b.received()).collect();
    assert_eq!(second.iter().map(|r| r.0).collect::<Vec<_>>(), [2]);
}

#[test]
fn pinned_by_correlation_keeps_a_correlation_on_one_consumer_across_streams() {
    let mut d = group_on("$all", settings(Strategy::PinnedByCorrelation));
    let mut clients: Vec<Client> = (1..=4).map(|id| join(&mut d, id, 50)).collect();
    let page: Vec<RecordedEvent> = (1..=12)
        .map(|n| event_in(&format!("stream-{n}"), n, Some("order-7")))
        .collect();
    d.accept(page);
    d.dispatch();
    let counts: Vec<usize> = clients.iter_mut().map(|c| c.received().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 12);
    assert!(
        counts.contains(&12),
        "one consumer took them all: {counts:?}"
    );
}

// Free slots and buffer_size.

#[test]
fn a_consumer_holds_at_most_its_buffer_size_until_it_acks() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 2);
    d.accept(events(5));
    d.dispatch();
    let got = a.received();
    assert_eq!(got.len(), 2);
    assert_eq!(d.stats().in_flight, 2);
    assert_eq!(d.stats().queued, 3);
    d.ack(a.id, &ids(&got[..1]));
    d.dispatch();
    assert_eq!(a.versions(), [3]);
    let stats = d.stats();
    assert_eq!(stats.connections[0].available_slots, 0);
    assert_eq!(stats.connections[0].total_items, 3);
}

#[test]
fn events_are_wanted_only_while_a_consumer_has_a_free_slot() {
    let mut d = group(settings(Strategy::RoundRobin));
    assert!(!d.wants_events(), "no one to give them to");
    let mut a = join(&mut d, 1, 1);
    assert!(d.wants_events());
    d.accept(events(1));
    d.dispatch();
    assert!(!d.wants_events(), "the only slot is taken");
    d.ack(a.id, &ids(&a.received()));
    assert!(d.wants_events());
}

#[test]
fn events_are_not_wanted_before_the_group_is_started() {
    let def = Definition {
        source: STREAM.into(),
        group: "billing".into(),
        settings: settings(Strategy::RoundRobin),
        generation: 1,
    };
    let mut d = Dispatcher::new(def, None);
    let _a = join(&mut d, 1, 10);
    assert!(!d.wants_events());
    assert!(
        !d.checkpoint_due(true),
        "nothing to checkpoint before loading"
    );
}

#[test]
fn a_group_refuses_a_consumer_beyond_max_subscriber_count() {
    let mut s = settings(Strategy::RoundRobin);
    s.max_subscriber_count = 1;
    let mut d = group(s);
    let _a = join(&mut d, 1, 10);
    let (tx, _rx) = mpsc::channel(11);
    let (gone, _gone) = oneshot::channel();
    let refused = d.join(Consumer::new(2, tx, gone, 10, "c".into(), "u".into()));
    assert_eq!(refused.err(), Some(GroupFull { max: 1 }));
}

// Retries, parking, leaving, timeouts.

#[test]
fn a_nack_with_retry_offers_the_event_again_with_its_retry_count_raised() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    let got = a.received();
    d.nack(a.id, &ids(&got), NackAction::Retry, "busy");
    d.dispatch();
    let again = a.received();
    assert_eq!((again[0].0, again[0].1), (1, 1));
    assert!(d.take_to_park().is_empty());
}

#[test]
fn past_max_retry_count_an_event_is_set_aside_for_parking() {
    let mut s = settings(Strategy::RoundRobin);
    s.max_retry_count = 1;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    for _ in 0..2 {
        let got = a.received();
        assert_eq!(got.len(), 1);
        d.nack(a.id, &ids(&got), NackAction::Retry, "busy");
        d.dispatch();
    }
    assert!(a.received().is_empty(), "not offered a third time");
    let parked = d.take_to_park();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0.retry, 2);
    assert_eq!(parked[0].1, "the maximum retry count was reached");
    assert_eq!(
        d.settled_through(),
        0,
        "unsettled until the parking is recorded"
    );
    d.parked(&parked[0].0);
    assert_eq!(d.settled_through(), 1);
    assert_eq!(d.stats().parked, 1);
}

#[test]
fn a_nack_with_park_sets_the_event_aside_with_the_consumers_reason() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    d.nack(a.id, &ids(&a.received()), NackAction::Park, "poison");
    let parked = d.take_to_park();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].0.retry, parked[0].1.as_str()), (0, "poison"));
}

#[test]
fn an_event_that_could_not_be_parked_is_offered_again() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    d.nack(a.id, &ids(&a.received()), NackAction::Park, "poison");
    for (item, _) in d.take_to_park() {
        d.not_parked(item);
    }
    d.dispatch();
    assert_eq!(a.versions(), [1]);
}

#[test]
fn a_nack_with_stop_lets_the_consumer_go_and_offers_its_events_to_another() {
    let mut d = group(settings(Strategy::DispatchToSingle));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(2));
    d.dispatch();
    let got = a.received();
    let mut b = join(&mut d, 2, 10);
    d.nack(a.id, &ids(&got[..1]), NackAction::Stop, "shutting down");
    assert_eq!(
        a.dropped().as_deref(),
        Some("the consumer nacked with stop")
    );
    d.dispatch();
    let mut again: Vec<(u64, i32)> = b.received().iter().map(|r| (r.0, r.1)).collect();
    again.sort_unstable();
    // The nacked event keeps its retry count; what the consumer still held is retried.
    assert_eq!(again, [(1, 0), (2, 1)]);
}

#[test]
fn a_consumer_that_leaves_gives_back_what_it_held_in_order() {
    let mut d = group(settings(Strategy::DispatchToSingle));
    let mut a = join(&mut d, 1, 2);
    d.accept(events(3));
    d.dispatch();
    assert_eq!(a.versions(), [1, 2]);
    let mut b = join(&mut d, 2, 10);
    d.leave(a.id);
    d.dispatch();
    let got = b.received();
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(1, 1), (2, 1), (3, 0)]
    );
}

#[test]
fn a_consumer_whose_call_ended_is_let_go_and_its_event_goes_to_another() {
    let mut d = group(settings(Strategy::RoundRobin));
    let a = join(&mut d, 1, 10);
    let mut b = join(&mut d, 2, 10);
    drop(a);
    d.accept(events(2));
    d.dispatch();
    assert_eq!(b.versions(), [1, 2]);
    assert_eq!(d.stats().connections.len(), 1);
}

#[test]
fn an_event_past_its_message_timeout_is_offered_again() {
    let mut s = settings(Strategy::RoundRobin);
    s.message_timeout_ms = 1_000;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    assert_eq!(a.versions(), [1]);
    d.expire(Instant::now());
    d.dispatch();
    assert!(a.received().is_empty(), "not late yet");
    d.expire(Instant::now() + Duration::from_secs(2));
    d.dispatch();
    let again = a.received();
    assert_eq!((again[0].0, again[0].1), (1, 1));
}

#[test]
fn a_message_timeout_of_zero_never_expires() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    a.received();
    d.expire(Instant::now() + Duration::from_secs(3600));
    d.dispatch();
    assert!(a.received().is_empty());
    assert_eq!(d.stats().in_flight, 1);
}

#[test]
fn an_ack_for_an_event_another_consumer_holds_is_ignored() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    let b = join(&mut d, 2, 10);
    d.accept(events(1));
    d.dispatch();
    let got = a.received();
    d.ack(b.id, &ids(&got));
    assert_eq!(d.stats().in_flight, 1);
    assert_eq!(d.settled_through(), 0);
}

// Checkpointing.

#[test]
fn the_checkpoint_is_just_below_the_oldest_unsettled_event() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(5));
    d.dispatch();
    let got = a.received();
    let id = |v: u64| got[usize::try_from(v - 1).unwrap_or(0)].2;
    d.ack(a.id, &[id(1), id(2), id(4)]);
    assert_eq!(d.settled_through(), 2);
    d.ack(a.id, &[id(3)]);
    assert_eq!(d.settled_through(), 4);
    d.ack(a.id, &[id(5)]);
    assert_eq!(d.settled_through(), 5);
}

#[test]
fn skipped_and_parked_events_count_as_settled() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.accept(events(3));
    d.dispatch();
    let got = a.received();
    d.nack(a.id, &[got[0].2], NackAction::Skip, "");
    d.nack(a.id, &[got[1].2], NackAction::Park, "bad");
    d.ack(a.id, &[got[2].2]);
    assert_eq!(d.settled_through(), 1, "the parking is not recorded yet");
    for (item, _) in d.take_to_park() {
        d.parked(&item);
    }
    assert_eq!(d.settled_through(), 3);
}

#[test]
fn events_the_filter_drops_are_passed_by_the_checkpoint() {
    let def = Definition {
        source: "$all".into(),
        group: "billing".into(),
        settings: settings(Strategy::RoundRobin),
        generation: 1,
    };
    let filter = EventFilter::compile(true, "", &["keep".to_owned()], 1).ok();
    let mut d = Dispatcher::new(def, filter);
    d.start(0, 0, 0);
    let mut a = join(&mut d, 1, 10);
    d.accept(vec![
        event_in("drop-1", 1, None),
        event_in("keep-1", 2, None),
        event_in("drop-2", 3, None),
    ]);
    d.dispatch();
    let got = a.received();
    assert_eq!(got.len(), 1);
    assert_eq!(d.settled_through(), 1);
    d.ack(a.id, &ids(&got));
    assert_eq!(d.settled_through(), 3, "the cursor, all read is settled");
}

#[test]
fn the_checkpoint_never_moves_back() {
    let mut d = group(settings(Strategy::RoundRobin));
    d.start(10, 0, 0);
    assert_eq!(d.checkpoint_to_write(), None, "already at 10");
    let mut a = join(&mut d, 1, 10);
    d.accept((11..=12).map(|n| event_in(STREAM, n, None)).collect());
    d.dispatch();
    let got = a.received();
    assert_eq!(d.checkpoint_to_write(), None, "nothing settled past 10");
    d.ack(a.id, &ids(&got[..1]));
    assert_eq!(d.checkpoint_to_write(), Some(11));
    d.checkpointed(11);
    assert_eq!(d.checkpoint_to_write(), None);
}

#[test]
fn a_checkpoint_is_due_after_max_checkpoint_count_settled_events() {
    let mut s = settings(Strategy::RoundRobin);
    s.max_checkpoint_count = 2;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(3));
    d.dispatch();
    let got = a.received();
    assert!(!d.checkpoint_due(false));
    assert!(d.checkpoint_due(true), "forced");
    d.ack(a.id, &ids(&got[..1]));
    assert!(!d.checkpoint_due(false));
    d.ack(a.id, &ids(&got[1..2]));
    assert!(d.checkpoint_due(false));
    d.checkpointed(2);
    assert!(!d.checkpoint_due(false), "counting starts again");
}

#[test]
fn a_checkpoint_is_due_once_checkpoint_after_passed_and_min_count_settled() {
    let mut s = settings(Strategy::RoundRobin);
    s.checkpoint_after_ms = 0;
    s.min_checkpoint_count = 2;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(3));
    d.dispatch();
    let got = a.received();
    d.ack(a.id, &ids(&got[..1]));
    assert!(
        !d.checkpoint_due(false),
        "one settled, events still in flight"
    );
    d.ack(a.id, &ids(&got[1..2]));
    assert!(d.checkpoint_due(false));
}

#[test]
fn an_idle_group_checkpoints_what_it_settled_once_checkpoint_after_passed() {
    let mut s = settings(Strategy::RoundRobin);
    s.checkpoint_after_ms = 0;
    s.min_checkpoint_count = 10;
    let mut d = group(s);
    let mut a = join(&mut d, 1, 10);
    d.accept(events(1));
    d.dispatch();
    d.ack(a.id, &ids(&a.received()));
    assert!(d.checkpoint_due(false));
}

// Replaying parked events.

#[test]
fn a_replayed_parked_record_counts_as_replayed_only_once_its_event_is_settled() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    d.replay_read_through(1);
    d.offer_parked(1, event_in(STREAM, 4, None));
    d.replay_read_through(2);
    d.offer_parked(2, event_in(STREAM, 9, None));
    assert_eq!(d.replay_marker_to_write(), None);
    d.dispatch();
    let got = a.received();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 9]);
    d.ack(a.id, &ids(&got[..1]));
    assert_eq!(d.replay_marker_to_write(), Some(1));
    d.replay_marker_written(1);
    d.ack(a.id, &ids(&got[1..]));
    assert_eq!(d.replay_marker_to_write(), Some(2));
    assert_eq!(
        d.settled_through(),
        0,
        "replayed events leave the checkpoint alone"
    );
}

#[test]
fn a_replayed_copy_of_an_event_in_flight_waits_until_it_is_settled() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    let original = event_in(STREAM, 1, None);
    let copy = original.clone();
    d.accept(vec![original]);
    d.dispatch();
    let got = a.received();
    d.replay_read_through(1);
    d.offer_parked(1, copy);
    d.dispatch();
    assert!(a.received().is_empty(), "the same event is in flight");
    d.ack(a.id, &ids(&got));
    d.dispatch();
    assert_eq!(a.versions(), [1]);
}

/// Event `n` of `stream` as a gRPC client appended it with id `client_id`.
fn appended_over_grpc(stream: &str, n: u64, client_id: Uuid) -> RecordedEvent {
    let mut e = event_in(stream, n, None);
    e.event_id = crate::convert::stored_event_id(stream, client_id);
    e.metadata = RawJson::parse(format!(r#"{{"$eventId":"{client_id}"}}"#)).expect("json");
    e
}

#[test]
fn an_ack_names_the_id_the_consumer_received_and_settles_one_event_per_id() {
    let mut d = group_on("$all", settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    let shared = Uuid::now_v7();
    let first = appended_over_grpc("a", 1, shared);
    let second = appended_over_grpc("b", 2, shared);
    assert_ne!(first.event_id, second.event_id);
    d.accept(vec![first, second, event_in("c", 3, None)]);
    d.dispatch();
    assert_eq!(a.received().len(), 3);
    d.ack(1, &[stored_id_of(&d, "a")]);
    assert_eq!(
        d.stats().in_flight,
        3,
        "the stored id is not what the consumer saw"
    );
    d.ack(1, &[shared]);
    assert_eq!(d.settled_through(), 1, "the earliest delivered of the two");
    d.nack(1, &[shared], NackAction::Skip, "done");
    assert_eq!(d.settled_through(), 2);
    assert_eq!(d.stats().in_flight, 1);
    d.ack(1, &[shared]);
    assert_eq!(d.stats().in_flight, 1, "no third event has that id");
}

/// The stored (derived) event_id of the event in flight from `stream`.
fn stored_id_of(d: &Dispatcher, stream: &str) -> Uuid {
    d.in_flight
        .values()
        .find(|f| f.item.event.aggregate_id == stream)
        .map(|f| f.item.event.event_id)
        .expect("stream a's event is in flight")
}

#[test]
fn a_consumer_that_leaves_forgets_the_ids_it_held() {
    let mut d = group(settings(Strategy::RoundRobin));
    let mut a = join(&mut d, 1, 10);
    let c = Uuid::now_v7();
    d.accept(vec![appended_over_grpc(STREAM, 1, c)]);
    d.dispatch();
    assert_eq!(a.received().len(), 1);
    d.leave(1);
    assert!(d.held.is_empty());
    let mut b = join(&mut d, 2, 10);
    d.dispatch();
    assert_eq!(b.received().len(), 1);
    d.ack(1, &[c]);
    assert_eq!(
        d.stats().in_flight,
        1,
        "the consumer that left acks nothing"
    );
    d.ack(2, &[c]);
    assert_eq!(d.stats().in_flight, 0);
    assert!(d.held.is_empty());
}
