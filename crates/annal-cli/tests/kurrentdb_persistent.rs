//! Persistent subscriptions (server-side consumer groups) driven by the official Rust
//! KurrentDB client: create/update/delete/list/info, delivery with acks, nacks with every
//! action, redelivery after a disconnect, message timeouts, parking and replay,
//! competing consumers, `$all` groups with filters, subscriber limits, events that share
//! their ids with another stream's (acked, nacked and parked by the ids the consumer
//! received), and a group that resumes after its checkpoint when the server is killed
//! and started again.

mod common;

use common::{Served, serve};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, DeletePersistentSubscriptionOptions, Error,
    EventData, GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionInfo,
    PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions, Position, ReadStreamOptions,
    ReplayParkedMessagesOptions, ResolvedEvent, RestartPersistentSubscriptionSubsystem,
    StreamPosition, SubscribeToPersistentSubscriptionOptions, SubscriptionFilter,
    SystemConsumerStrategy,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

struct Annal {
    client: Client,
    served: Served,
    dir: tempfile::TempDir,
}

fn start() -> Annal {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, served) = start_on(dir.path());
    Annal {
        client,
        served,
        dir,
    }
}

fn start_on(dir: &Path) -> (Client, Served) {
    let served = serve(&dir.join("data"), &[]);
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{}?tls=false", served.port)
        .parse()
        .expect("connection string");
    (Client::new(settings).expect("client"), served)
}

fn stream(category: &str) -> String {
    format!("{category}-{}", Uuid::now_v7().simple())
}

fn group() -> String {
    format!("group-{}", Uuid::now_v7().simple())
}

async fn append(client: &Client, stream: &str, event_type: &str, from: u64, n: u64) {
    let events: Vec<EventData> = (from..from + n)
        .map(|i| EventData::json(event_type, &json!({ "n": i })).expect("json"))
        .collect();
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .expect("append");
}

/// Settings that start at the beginning and checkpoint promptly.
fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .checkpoint_after(Duration::from_millis(100))
        .checkpoint_lower_bound(1)
}

async fn subscribe(client: &Client, stream: &str, group: &str) -> PersistentSubscription {
    client
        .subscribe_to_persistent_subscription(
            stream,
            group,
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe")
}

/// The next event and its retry count.
async fn next(sub: &mut PersistentSubscription) -> (ResolvedEvent, usize) {
    loop {
        let got = tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("an event within the wait")
            .expect("the subscription still runs");
        if let PersistentSubscriptionEvent::EventAppeared { event, retry_count } = got {
            return (event, retry_count);
        }
    }
}

async fn take(sub: &mut PersistentSubscription, n: usize) -> Vec<ResolvedEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(sub).await.0);
    }
    out
}

fn revisions(events: &[ResolvedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect()
}

/// Waits for the server to end the subscription (it answers an error).
async fn ends(sub: &mut PersistentSubscription) {
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = sub.next_subscription_event().await {
                return e;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the subscriber was not dropped");
}

async fn ack_all(sub: &mut PersistentSubscription, events: &[ResolvedEvent]) {
    sub.ack_ids(events.iter().map(|e| e.get_original_event().id))
        .await
        .expect("ack");
}

/// A new group on a new `order-…` stream holding `events` `Placed` events.
async fn group_on(
    client: &Client,
    events: u64,
    options: &PersistentSubscriptionOptions,
) -> (String, String) {
    let (s, g) = (stream("order"), group());
    if events > 0 {
        append(client, &s, "Placed", 0, events).await;
    }
    client
        .create_persistent_subscription(s.as_str(), &g, options)
        .await
        .expect("create");
    (s, g)
}

async fn info(client: &Client, stream: &str, group: &str) -> PersistentSubscriptionInfo<u64> {
    client
        .get_persistent_subscription_info(
            stream,
            group,
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .expect("info")
}

/// Waits until `reached` holds of the group's info.
async fn info_reaches(
    client: &Client,
    stream: &str,
    group: &str,
    what: &str,
    reached: impl Fn(&PersistentSubscriptionInfo<u64>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = info(client, stream, group).await;
        if reached(&now) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never reached; last stats {:?}",
            now.stats
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the group's checkpoint reaches `revision`.
async fn checkpoint_reaches(client: &Client, stream: &str, group: &str, revision: u64) {
    info_reaches(client, stream, group, "checkpoint", |i| {
        i.stats.last_checkpointed_event_revision == Some(revision)
    })
    .await;
}

/// Waits until the group counts `n` parked events.
async fn parked_reaches(client: &Client, stream: &str, group: &str, n: usize) {
    info_reaches(client, stream, group, "parked count", |i| {
        i.stats.parked_message_count == n
    })
    .await;
}

#[tokio::test]
async fn a_created_group_is_listed_with_its_settings_and_creating_it_again_is_already_exists() {
    let a = start();
    let s = stream("order");
    let g = group();
    let options = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Position(3))
        .message_timeout(Duration::from_secs(7))
        .max_retry_count(4)
        .max_subscriber_count(2)
        .consumer_strategy_name(SystemConsumerStrategy::DispatchToSingle);
    a.client
        .create_persistent_subscription(s.as_str(), &g, &options)
        .await
        .expect("create");
    let again = a
        .client
        .create_persistent_subscription(s.as_str(), &g, &options)
        .await;
    assert!(
        matches!(again, Err(Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let info = info(&a.client, &s, &g).await;
    assert_eq!(info.group_name, g);
    assert_eq!(info.event_source, s);
    let settings = info.settings.expect("settings");
    assert_eq!(settings.start_from, StreamPosition::Position(3));
    assert_eq!(settings.message_timeout, Duration::from_secs(7));
    assert_eq!(settings.max_retry_count, 4);
    assert_eq!(settings.max_subscriber_count, 2);
    assert_eq!(
        settings.consumer_strategy_name,
        SystemConsumerStrategy::DispatchToSingle
    );

    let all = a
        .client
        .list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list");
    assert!(all.iter().any(|i| i.group_name == g && i.event_source == s));
    let for_stream = a
        .client
        .list_persistent_subscriptions_for_stream(
            &s,
            &ListPersistentSubscriptionsOptions::default(),
        )
        .await
        .expect("list for stream");
    assert_eq!(for_stream.len(), 1);
}

#[tokio::test]
async fn a_group_delivers_history_then_live_events_and_acks_move_its_checkpoint() {
    let a = start();
    let (s, g) = group_on(&a.client, 5, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let history = take(&mut sub, 5).await;
    assert_eq!(revisions(&history), [0, 1, 2, 3, 4]);
    ack_all(&mut sub, &history).await;
    checkpoint_reaches(&a.client, &s, &g, 4).await;

    append(&a.client, &s, "Shipped", 5, 2).await;
    let live = take(&mut sub, 2).await;
    assert_eq!(revisions(&live), [5, 6]);
    assert_eq!(live[0].get_original_event().event_type, "Shipped");
    ack_all(&mut sub, &live).await;
    checkpoint_reaches(&a.client, &s, &g, 6).await;
}

#[tokio::test]
async fn a_group_created_from_the_end_gets_only_events_appended_after_its_creation() {
    let a = start();
    let s = stream("order");
    let g = group();
    append(&a.client, &s, "Old", 0, 3).await;
    a.client
        .create_persistent_subscription(
            s.as_str(),
            &g,
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::End),
        )
        .await
        .expect("create");
    // Appended before anyone subscribes: still after the group's creation.
    append(&a.client, &s, "New", 3, 2).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 2).await;
    assert_eq!(revisions(&got), [3, 4]);
}

#[tokio::test]
async fn events_a_consumer_did_not_ack_go_to_the_next_consumer_with_a_higher_retry_count() {
    let a = start();
    let (s, g) = group_on(&a.client, 3, &from_start()).await;
    let mut first = subscribe(&a.client, &s, &g).await;
    let got = take(&mut first, 3).await;
    ack_all(&mut first, &got[..1]).await;
    checkpoint_reaches(&a.client, &s, &g, 0).await;
    drop(first);

    let mut second = subscribe(&a.client, &s, &g).await;
    let (e1, retry1) = next(&mut second).await;
    let (e2, retry2) = next(&mut second).await;
    assert_eq!(revisions(&[e1, e2]), [1, 2]);
    assert!(retry1 >= 1 && retry2 >= 1, "retries {retry1} {retry2}");
}

#[tokio::test]
async fn nack_retry_redelivers_and_past_the_retry_limit_the_event_is_parked_then_replayed() {
    let a = start();
    let (s, g) = group_on(&a.client, 2, &from_start().max_retry_count(1)).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (e0, r0) = next(&mut sub).await;
    assert_eq!((e0.get_original_event().revision, r0), (0, 0));
    sub.nack(&e0, NakAction::Retry, "try again")
        .await
        .expect("nack");
    // Either revision 1 or the retried 0 may come first.
    let mut retried = None;
    for _ in 0..2 {
        let (e, r) = next(&mut sub).await;
        if e.get_original_event().revision == 0 {
            retried = Some((e, r));
        } else {
            sub.ack(&e).await.expect("ack");
        }
    }
    let (e0, r0) = retried.expect("revision 0 again");
    assert_eq!(r0, 1);
    sub.nack(&e0, NakAction::Retry, "still failing")
        .await
        .expect("nack");

    // Retry count 2 > 1: parked, recorded in the parked stream.
    let parked_stream = format!("$persistentsubscription-{s}::{g}-parked");
    parked_reaches(&a.client, &s, &g, 1).await;
    let mut parked = a
        .client
        .read_stream(parked_stream.as_str(), &ReadStreamOptions::default())
        .await
        .expect("parked stream");
    let record = parked.next().await.expect("read").expect("a parked record");
    assert_eq!(record.get_original_event().event_type, "$parked");
    let body: serde_json::Value = record.get_original_event().as_json().expect("json");
    assert_eq!(body["eventId"], e0.get_original_event().id.to_string());
    checkpoint_reaches(&a.client, &s, &g, 1).await;

    a.client
        .replay_parked_messages(&s, &g, &ReplayParkedMessagesOptions::default())
        .await
        .expect("replay");
    let (again, _) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, e0.get_original_event().id);
    sub.ack(&again).await.expect("ack");
}

#[tokio::test]
async fn nack_skip_settles_the_event_and_nack_park_parks_it() {
    let a = start();
    let (s, g) = group_on(&a.client, 3, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 3).await;
    sub.nack(&got[0], NakAction::Skip, "not for us")
        .await
        .expect("skip");
    sub.nack(&got[1], NakAction::Park, "poison")
        .await
        .expect("park");
    sub.ack(&got[2]).await.expect("ack");
    checkpoint_reaches(&a.client, &s, &g, 2).await;
    let info = info(&a.client, &s, &g).await;
    assert_eq!(info.stats.parked_message_count, 1);
}

#[tokio::test]
async fn an_event_not_acked_within_the_message_timeout_is_offered_again() {
    let a = start();
    let (s, g) = group_on(
        &a.client,
        1,
        &from_start().message_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (e, r) = next(&mut sub).await;
    assert_eq!(r, 0);
    let (again, r) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, e.get_original_event().id);
    assert_eq!(r, 1);
}

#[tokio::test]
async fn competing_consumers_share_a_group_each_event_going_to_one_of_them() {
    let a = start();
    let (s, g) = group_on(&a.client, 0, &from_start()).await;
    let mut one = subscribe(&a.client, &s, &g).await;
    let mut two = subscribe(&a.client, &s, &g).await;
    append(&a.client, &s, "Placed", 0, 40).await;
    let mut seen = BTreeSet::new();
    let (mut n1, mut n2) = (0, 0);
    while seen.len() < 40 {
        tokio::select! {
            (e, _) = next(&mut one) => {
                one.ack(&e).await.expect("ack");
                assert!(seen.insert(e.get_original_event().revision), "delivered twice");
                n1 += 1;
            }
            (e, _) = next(&mut two) => {
                two.ack(&e).await.expect("ack");
                assert!(seen.insert(e.get_original_event().revision), "delivered twice");
                n2 += 1;
            }
        }
    }
    assert!(n1 > 0 && n2 > 0, "round robin used both: {n1} / {n2}");
    checkpoint_reaches(&a.client, &s, &g, 39).await;
}

#[tokio::test]
async fn an_all_group_with_an_event_type_filter_delivers_only_matching_events() {
    let a = start();
    let g = group();
    let tag = Uuid::now_v7().simple().to_string();
    let wanted = format!("Wanted{tag}");
    let s = stream("mixed");
    append(&a.client, &s, &wanted, 0, 2).await;
    append(&a.client, &s, "Other", 2, 3).await;
    append(&a.client, &s, &wanted, 5, 1).await;
    a.client
        .create_persistent_subscription_to_all(
            &g,
            &PersistentSubscriptionToAllOptions::default()
                .start_from(StreamPosition::Start)
                .filter(SubscriptionFilter::on_event_type().add_prefix(&wanted)),
        )
        .await
        .expect("create");
    let mut sub = a
        .client
        .subscribe_to_persistent_subscription_to_all(
            &g,
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe");
    let got = take(&mut sub, 3).await;
    assert_eq!(revisions(&got), [0, 1, 5]);
    assert!(
        got.iter()
            .all(|e| e.get_original_event().event_type == wanted)
    );
    ack_all(&mut sub, &got).await;
    let info = a
        .client
        .list_persistent_subscriptions_to_all(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list $all");
    assert!(
        info.iter()
            .any(|i| i.group_name == g && i.event_source == "$all")
    );
}

/// Appends events `Placed` with `ids` to `stream`, expecting no stream.
async fn append_ids(client: &Client, stream: &str, ids: &[Uuid]) {
    let events: Vec<EventData> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            EventData::json("Placed", &json!({ "n": n }))
                .expect("json")
                .id(*id)
        })
        .collect();
    client
        .append_to_stream(
            stream,
            &AppendToStreamOptions::default().stream_state(kurrentdb::StreamState::NoStream),
            events,
        )
        .await
        .expect("append");
}

fn ids(events: &[ResolvedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.get_original_event().id).collect()
}

#[tokio::test]
async fn events_sharing_ids_with_another_stream_are_acked_and_parked_by_the_ids_received() {
    let a = start();
    let (other, s, g) = (stream("order"), stream("order"), group());
    let sent = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    append_ids(&a.client, &other, &sent).await;
    append_ids(&a.client, &s, &sent).await;
    a.client
        .create_persistent_subscription(s.as_str(), &g, &from_start())
        .await
        .expect("create");
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 3).await;
    assert_eq!(ids(&got), sent, "the consumer receives the client's ids");
    assert_eq!(revisions(&got), [0, 1, 2]);
    sub.nack(&got[0], NakAction::Park, "poison")
        .await
        .expect("park");
    ack_all(&mut sub, &got[1..]).await;
    checkpoint_reaches(&a.client, &s, &g, 2).await;
    parked_reaches(&a.client, &s, &g, 1).await;
    info_reaches(&a.client, &s, &g, "nothing in flight", |i| {
        i.stats.total_in_flight_messages == 0
    })
    .await;

    let parked_stream = format!("$persistentsubscription-{s}::{g}-parked");
    let mut parked = a
        .client
        .read_stream(parked_stream.as_str(), &ReadStreamOptions::default())
        .await
        .expect("parked stream");
    let record = parked.next().await.expect("read").expect("a parked record");
    let body: serde_json::Value = record.get_original_event().as_json().expect("json");
    assert_eq!(body["eventId"], sent[0].to_string(), "named as received");
    assert_eq!(body["stream"], s.as_str());

    a.client
        .replay_parked_messages(&s, &g, &ReplayParkedMessagesOptions::default())
        .await
        .expect("replay");
    let (again, _) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, sent[0]);
    assert_eq!(again.get_original_event().stream_id(), s.as_str());
    sub.ack(&again).await.expect("ack");
    info_reaches(&a.client, &s, &g, "the replayed event acked", |i| {
        i.stats.total_in_flight_messages == 0
    })
    .await;
}

#[tokio::test]
async fn an_all_group_settles_two_events_sharing_an_id_with_two_acks_of_it() {
    let a = start();
    let g = group();
    let category = format!("shared{}", Uuid::now_v7().simple());
    let (one, two) = (stream(&category), stream(&category));
    let sent = [Uuid::new_v4(), Uuid::new_v4()];
    append_ids(&a.client, &one, &sent).await;
    append_ids(&a.client, &two, &sent).await;
    a.client
        .create_persistent_subscription_to_all(
            &g,
            &PersistentSubscriptionToAllOptions::default()
                .start_from(StreamPosition::Start)
                .filter(SubscriptionFilter::on_stream_name().add_prefix(&category)),
        )
        .await
        .expect("create");
    let mut sub = a
        .client
        .subscribe_to_persistent_subscription_to_all(
            &g,
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe");
    let got = take(&mut sub, 4).await;
    assert_eq!(ids(&got), [sent[0], sent[1], sent[0], sent[1]]);
    ack_all(&mut sub, &got).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = a
            .client
            .get_persistent_subscription_info_to_all(
                &g,
                &GetPersistentSubscriptionInfoOptions::default(),
            )
            .await
            .expect("info");
        if info.stats.total_in_flight_messages == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acks of shared ids left events in flight: {:?}",
            info.stats
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_group_refuses_a_subscriber_beyond_its_maximum() {
    let a = start();
    let (s, g) = group_on(&a.client, 0, &from_start().max_subscriber_count(1)).await;
    let mut first = subscribe(&a.client, &s, &g).await;
    let second = a
        .client
        .subscribe_to_persistent_subscription(
            s.as_str(),
            &g,
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await;
    let refused = match second {
        Err(e) => Some(e),
        Ok(mut sub) => tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("an answer")
            .err(),
    };
    assert!(refused.is_some(), "a second subscriber was accepted");
    append(&a.client, &s, "Placed", 0, 1).await;
    assert_eq!(next(&mut first).await.0.get_original_event().revision, 0);
}

#[tokio::test]
async fn deleting_a_group_ends_its_subscribers_and_a_missing_group_is_resource_not_found() {
    let a = start();
    let (s, g) = group_on(&a.client, 0, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    a.client
        .delete_persistent_subscription(
            s.as_str(),
            &g,
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await
        .expect("delete");
    ends(&mut sub).await;
    let again = a
        .client
        .delete_persistent_subscription(
            s.as_str(),
            &g,
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await;
    assert!(matches!(again, Err(Error::ResourceNotFound)), "{again:?}");
    let info = a
        .client
        .get_persistent_subscription_info(&s, &g, &GetPersistentSubscriptionInfoOptions::default())
        .await;
    assert!(matches!(info, Err(Error::ResourceNotFound)), "{info:?}");
    let missing = a
        .client
        .subscribe_to_persistent_subscription(
            s.as_str(),
            &g,
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await;
    let missing = match missing {
        Err(e) => e,
        Ok(mut sub) => tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("an answer")
            .expect_err("a missing group cannot deliver"),
    };
    assert!(matches!(missing, Error::ResourceNotFound), "{missing:?}");

    // Definitions are kept in the log: who did what, when.
    let mut config = a
        .client
        .read_stream(
            "$persistentSubscriptionConfig",
            &ReadStreamOptions::default(),
        )
        .await
        .expect("config stream");
    let mut types = Vec::new();
    while let Some(e) = config.next().await.expect("read") {
        types.push(e.get_original_event().event_type.clone());
    }
    assert_eq!(
        types,
        [
            "$PersistentSubscriptionCreated",
            "$PersistentSubscriptionDeleted"
        ]
    );
}

#[tokio::test]
async fn updating_a_group_drops_its_subscribers_and_keeps_its_checkpoint() {
    let a = start();
    let (s, g) = group_on(&a.client, 3, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 2).await;
    ack_all(&mut sub, &got).await;
    checkpoint_reaches(&a.client, &s, &g, 1).await;
    a.client
        .update_persistent_subscription(s.as_str(), &g, &from_start().max_retry_count(3))
        .await
        .expect("update");
    ends(&mut sub).await;
    let info = info(&a.client, &s, &g).await;
    assert_eq!(info.settings.expect("settings").max_retry_count, 3);
    let mut sub = subscribe(&a.client, &s, &g).await;
    assert_eq!(next(&mut sub).await.0.get_original_event().revision, 2);
}

#[tokio::test]
async fn restarting_the_subsystem_drops_subscribers_who_can_subscribe_again() {
    let a = start();
    let (s, g) = group_on(&a.client, 1, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (e, _) = next(&mut sub).await;
    a.client
        .restart_persistent_subscription_subsystem(
            &RestartPersistentSubscriptionSubsystem::default(),
        )
        .await
        .expect("restart");
    ends(&mut sub).await;
    // Not acked before the restart: delivered again from the checkpoint.
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (again, _) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, e.get_original_event().id);
}

#[tokio::test]
async fn a_group_resumes_after_its_checkpoint_when_the_server_is_killed_and_started_again() {
    let a = start();
    let (s, g) = group_on(&a.client, 6, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 6).await;
    ack_all(&mut sub, &got[..4]).await;
    checkpoint_reaches(&a.client, &s, &g, 3).await;
    let Annal {
        client,
        served,
        dir,
    } = a;
    drop(sub);
    drop(client);
    drop(served); // SIGKILL
    let (client, _served) = start_on(dir.path());
    let mut sub = subscribe(&client, &s, &g).await;
    let again = take(&mut sub, 2).await;
    assert_eq!(revisions(&again), [4, 5]);
}

#[tokio::test]
async fn sigterm_with_a_subscriber_connected_exits_promptly_and_keeps_what_was_acked() {
    let a = start();
    let s = stream("order");
    let g = group();
    append(&a.client, &s, "Placed", 0, 5).await;
    // Checkpoints would not come due on their own during this test.
    let lazy = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .checkpoint_after(Duration::from_secs(600))
        .checkpoint_lower_bound(1_000)
        .checkpoint_upper_bound(1_000);
    a.client
        .create_persistent_subscription(s.as_str(), &g, &lazy)
        .await
        .expect("create");
    let mut sub = subscribe(&a.client, &s, &g).await;
    let got = take(&mut sub, 5).await;
    ack_all(&mut sub, &got[..3]).await;
    // The acks reach the server before it is told to stop.
    info(&a.client, &s, &g).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Annal {
        client,
        mut served,
        dir,
    } = a;
    // Off the runtime: the client's connection task must keep running meanwhile (it
    // answers the server's GOAWAY and ping, as a live consumer process would).
    let exited = tokio::task::spawn_blocking(move || served.terminate(Duration::from_secs(10)))
        .await
        .expect("terminate");
    assert!(
        exited,
        "annal serve did not exit within 10 s of SIGTERM with a persistent subscriber"
    );
    drop((sub, client));
    let (client, _served) = start_on(dir.path());
    let mut sub = subscribe(&client, &s, &g).await;
    assert_eq!(revisions(&take(&mut sub, 2).await), [3, 4]);
}

#[tokio::test]
async fn an_event_whose_consumers_keep_vanishing_is_parked_past_the_retry_limit() {
    let a = start();
    let s = stream("order");
    let g = group();
    append(&a.client, &s, "Poison", 0, 1).await;
    append(&a.client, &s, "Fine", 1, 1).await;
    a.client
        .create_persistent_subscription(s.as_str(), &g, &from_start().max_retry_count(0))
        .await
        .expect("create");
    let mut crashing = a
        .client
        .subscribe_to_persistent_subscription(
            s.as_str(),
            &g,
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(1),
        )
        .await
        .expect("subscribe");
    let (poison, _) = next(&mut crashing).await;
    assert_eq!(poison.get_original_event().revision, 0);
    drop(crashing); // "crashes" holding revision 0
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (e, _) = next(&mut sub).await;
    assert_eq!(
        e.get_original_event().revision,
        1,
        "the poison event was parked"
    );
    sub.ack(&e).await.expect("ack");
    parked_reaches(&a.client, &s, &g, 1).await;
}

#[tokio::test]
async fn a_group_created_again_starts_afresh_without_the_old_groups_parked_events() {
    let a = start();
    let (s, g) = group_on(&a.client, 1, &from_start()).await;
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (e, _) = next(&mut sub).await;
    sub.nack(&e, NakAction::Park, "poison").await.expect("park");
    parked_reaches(&a.client, &s, &g, 1).await;
    a.client
        .delete_persistent_subscription(
            s.as_str(),
            &g,
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await
        .expect("delete");
    a.client
        .create_persistent_subscription(s.as_str(), &g, &from_start())
        .await
        .expect("create again");
    assert_eq!(info(&a.client, &s, &g).await.stats.parked_message_count, 0);
    // From the start again: the new group sees revision 0 as new.
    let mut sub = subscribe(&a.client, &s, &g).await;
    let (again, retry) = next(&mut sub).await;
    assert_eq!((again.get_original_event().revision, retry), (0, 0));
}

#[tokio::test]
async fn a_stream_and_group_name_too_long_together_are_refused_and_nothing_is_created() {
    let a = start();
    let s = format!("order-{}", "x".repeat(150));
    let g = "g".repeat(100);
    let refused = a
        .client
        .create_persistent_subscription(s.as_str(), &g, &from_start())
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Grpc {
                code: tonic::Code::InvalidArgument,
                ..
            })
        ),
        "{refused:?}"
    );
    let all = a
        .client
        .list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list");
    assert!(all.is_empty());
}

/// The message of KurrentDB's `INTERNAL` refusal (the client's server error).
fn internal(refused: Result<(), Error>) -> String {
    match refused {
        Err(Error::ServerError(m)) => {
            assert!(m.contains("Internal"), "{m}");
            m
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[tokio::test]
async fn settings_kurrentdb_refuses_are_an_internal_error_and_create_or_change_nothing() {
    let a = start();
    let g = group();
    // The read batch (the client's default, 20) must be less than the history buffer.
    let small_history = PersistentSubscriptionToAllOptions::default().history_buffer_size(20);
    let m = internal(
        a.client
            .create_persistent_subscription_to_all(&g, &small_history)
            .await,
    );
    assert!(m.contains("history_buffer_size"), "{m}");
    // (An unknown consumer strategy is refused the same way; this client will not send
    // one, UnsupportedFeature, so the Python suite and the unit tests cover it.)
    let all = a
        .client
        .list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list");
    assert!(all.is_empty(), "{all:?}");
    a.client
        .create_persistent_subscription_to_all(&g, &PersistentSubscriptionToAllOptions::default())
        .await
        .expect("create");
    internal(
        a.client
            .update_persistent_subscription_to_all(&g, &small_history)
            .await,
    );
    let info = a
        .client
        .get_persistent_subscription_info_to_all(
            &g,
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .expect("info");
    assert_eq!(info.settings.expect("settings").history_buffer_size, 500);
}

#[tokio::test]
async fn an_all_group_starting_past_the_last_event_is_an_internal_error() {
    let a = start();
    let s = stream("order");
    append(&a.client, &s, "Placed", 0, 2).await;
    let last = a
        .client
        .read_all(
            &kurrentdb::ReadAllOptions::default()
                .position(StreamPosition::End)
                .max_count(1),
        )
        .await
        .expect("read")
        .next()
        .await
        .expect("next")
        .expect("an event")
        .get_original_event()
        .position
        .commit;
    let at = |commit: u64, prepare: u64| {
        PersistentSubscriptionToAllOptions::default()
            .start_from(StreamPosition::Position(Position { commit, prepare }))
    };
    let g = group();
    internal(
        a.client
            .create_persistent_subscription_to_all(&g, &at(last + 1, last + 1))
            .await,
    );
    // As in the KurrentDB clients' own test: commit past the end, prepare at it.
    internal(
        a.client
            .create_persistent_subscription_to_all(&g, &at(last + 1, last))
            .await,
    );
    a.client
        .create_persistent_subscription_to_all(&g, &at(last, last))
        .await
        .expect("the last event's position is a start");
    // Creating the group recorded its definition, one event more.
    internal(
        a.client
            .update_persistent_subscription_to_all(&g, &at(last + 2, last + 2))
            .await,
    );
}

/// A server with a key-encryption key, and a group (`options`) on a new stream holding
/// one event whose `name` is personal data about `subject`, which a subscription has
/// received once. Bind `served` and `_dir` where it is taken apart: dropping them stops
/// the server and removes its folder.
struct PersonalGroup {
    client: Client,
    served: Served,
    data: std::path::PathBuf,
    stream: String,
    group: String,
    sub: PersistentSubscription,
    first: ResolvedEvent,
    _dir: tempfile::TempDir,
}

async fn personal_group(subject: &str, options: &PersistentSubscriptionOptions) -> PersonalGroup {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.hex");
    std::fs::write(&kek, "4".repeat(64)).expect("kek");
    let data = dir.path().join("data");
    let served = common::serve_with_env(
        &["--data", data.to_str().expect("path")],
        &[("ANNAL_KEK_FILE", kek.as_os_str())],
    );
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{}?tls=false", served.port)
        .parse()
        .expect("connection string");
    let client = Client::new(settings).expect("client");
    let stream = stream("family");
    let event = EventData::json("ChildAdded", &json!({ "grade": 3, "name": "Sofia" }))
        .expect("json")
        .metadata_as_json(&json!({ "$personal": ["name"], "$subjects": [subject] }))
        .expect("metadata");
    client
        .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), event)
        .await
        .expect("append");
    let group = group();
    client
        .create_persistent_subscription(stream.as_str(), &group, options)
        .await
        .expect("create");
    let mut sub = subscribe(&client, &stream, &group).await;
    let (first, _) = next(&mut sub).await;
    PersonalGroup {
        client,
        served,
        data,
        stream,
        group,
        sub,
        first,
        _dir: dir,
    }
}

#[tokio::test]
async fn an_event_offered_again_after_its_subject_was_forgotten_reads_as_erased() {
    let PersonalGroup {
        client,
        served,
        stream: s,
        group: g,
        mut sub,
        first,
        _dir,
        ..
    } = personal_group("family_7", &from_start()).await;
    let body = String::from_utf8_lossy(&first.get_original_event().data).into_owned();
    assert!(body.contains("Sofia"), "{body}");

    let forgot = common::annal(
        &[
            "forget",
            "family_7",
            "--reason",
            "erasure request",
            "--server",
            &format!("http://127.0.0.1:{}", served.port),
        ],
        "",
    );
    assert!(
        forgot.status.success(),
        "{}",
        String::from_utf8_lossy(&forgot.stderr)
    );
    sub.nack(&first, NakAction::Retry, "again")
        .await
        .expect("nack");
    let (again, retry) = next(&mut sub).await;
    let body = String::from_utf8_lossy(&again.get_original_event().data).into_owned();
    assert_eq!(retry, 1);
    assert!(
        body.contains(r#""$erased":true"#) && !body.contains("Sofia"),
        "offered again after the forgetting: {body}"
    );
    // A consumer that joins later gets it erased too.
    drop(sub);
    let mut later = subscribe(&client, &s, &g).await;
    let (third, _) = next(&mut later).await;
    let body = String::from_utf8_lossy(&third.get_original_event().data).into_owned();
    assert!(!body.contains("Sofia"), "{body}");
}

#[tokio::test]
async fn an_event_that_cannot_be_read_again_for_its_personal_part_is_parked_not_sent_as_it_was() {
    let PersonalGroup {
        client,
        data,
        stream: s,
        group: g,
        mut sub,
        first,
        served: _served,
        _dir,
    } = personal_group("family_8", &from_start().max_retry_count(1)).await;

    // Edited behind the store's back: reading it again now fails its hash check.
    let db = rusqlite::Connection::open(data.join("annal.db")).expect("open by hand");
    db.execute_batch("DROP TRIGGER IF EXISTS events_are_immutable")
        .expect("drop guard");
    let n = db
        .execute(
            "UPDATE events SET data = '{\"grade\":4}' WHERE aggregate_id = ?1",
            [s.as_str()],
        )
        .expect("edit");
    assert_eq!(n, 1);
    drop(db);
    sub.nack(&first, NakAction::Retry, "again")
        .await
        .expect("nack");
    parked_reaches(&client, &s, &g, 1).await;
}
