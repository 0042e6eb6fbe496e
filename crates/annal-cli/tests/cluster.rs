//! Three `annal serve` processes on one PostgreSQL store form a cluster (docs/cluster.md):
//! `GET /v1/cluster` and Gossip show the same nodes and one leader on every node; the
//! official KurrentDB client, sent to a follower, is told "not leader" and follows to
//! the leader for persistent subscriptions; a discovering client reaches the leader and
//! consumes a group there; when the leader is killed (-9), another node takes the lease,
//! starts the next term, resumes the group, and the consumer gets what was appended
//! since. Skipped (with a notice) when
//! `ANNAL_TEST_POSTGRES_URL` is not set.

mod common;

use common::Served;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, PersistentSubscription,
    PersistentSubscriptionOptions,
};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Short enough for a quick test, long enough for a loaded CI machine.
const LEASE_TTL: &str = "1s";
const LEASE: Duration = Duration::from_secs(1);

fn node(url: &str, name: &str) -> Served {
    common::serve_with(&[
        "--store",
        url,
        "--node-name",
        name,
        "--lease-ttl",
        LEASE_TTL,
    ])
}

async fn cluster(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/v1/cluster"))
        .await
        .expect("GET /v1/cluster")
        .json()
        .await
        .expect("JSON")
}

/// Polls `GET /v1/cluster` on `port` until `pick` holds, up to `within`.
async fn until(port: u16, within: Duration, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = cluster(port).await;
        if pick(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never came; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn leader_of(v: &Value) -> Option<&str> {
    v["leader"].as_str()
}

fn settings(text: &str) -> Client {
    let settings: ClientSettings = text.parse().expect("connection string");
    Client::new(settings).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_one_leader_which_alone_serves_persistent_subscriptions_and_a_killed_leader_is_replaced()
 {
    let Some(base) = common::pg::server_url() else {
        return;
    };
    let schema = common::pg::TestSchema::new(&base);
    let mut nodes = [
        node(&schema.url, "n1"),
        node(&schema.url, "n2"),
        node(&schema.url, "n3"),
    ];
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    // Every node sees the three, and the same leader.
    let mut leader = None;
    for &p in &ports {
        let v = until(p, Duration::from_secs(10), |v| {
            v["nodes"].as_array().is_some_and(|n| n.len() == 3) && leader_of(v).is_some()
        })
        .await;
        assert_eq!(v["shared"], true);
        let l = leader_of(&v).expect("a leader").to_owned();
        assert_eq!(*leader.get_or_insert(l.clone()), l, "one leader: {v}");
        let roles: Vec<&str> = v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["role"].as_str().expect("role"))
            .collect();
        assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{v}");
    }
    let leader = leader.expect("a leader");
    let at = |name: &str| -> usize {
        ["n1", "n2", "n3"]
            .iter()
            .position(|n| *n == name)
            .expect("a node")
    };
    let li = at(&leader);
    let fi = (li + 1) % 3;
    let on_leader = until(ports[li], Duration::from_secs(5), |v| v["epoch"].is_u64()).await;
    assert_eq!(on_leader["epoch"], 0, "the first term: {on_leader}");

    // A client connected to a follower is told "not leader", with the leader's address,
    // and the next call goes to the leader.
    let follower = settings(&format!("kurrentdb://127.0.0.1:{}?tls=false", ports[fi]));
    let stream = format!("orders-{}", uuid::Uuid::now_v7().simple());
    let options = PersistentSubscriptionOptions::default();
    let first = follower
        .create_persistent_subscription(stream.as_str(), "workers", &options)
        .await;
    match first {
        Err(kurrentdb::Error::NotLeaderException(e)) => {
            assert_eq!(
                (e.host.as_str(), e.port),
                ("127.0.0.1", u32::from(ports[li]))
            );
        }
        other => panic!("expected not-leader from a follower, got {other:?}"),
    }
    let mut created = false;
    for _ in 0..50 {
        match follower
            .create_persistent_subscription(stream.as_str(), "workers", &options)
            .await
        {
            Ok(()) => {
                created = true;
                break;
            }
            Err(kurrentdb::Error::NotLeaderException(_)) => {}
            Err(e) => panic!("creating on the leader: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the client followed to the leader");

    // A discovering client with the default node preference (leader) reaches the leader,
    // and consumes the group there.
    let discover_url = format!(
        "kurrentdb+discover://127.0.0.1:{}?tls=false&maxDiscoverAttempts=100&discoveryInterval=100",
        ports[fi]
    );
    let discover = settings(&discover_url);
    discover
        .get_persistent_subscription_info(&stream, "workers", &Default::default())
        .await
        .expect("a discovering client talks to the leader");
    let survivor = ports[fi];
    let appender = settings(&format!("kurrentdb://127.0.0.1:{survivor}?tls=false"));
    let before = append(&appender, &stream, 10).await;
    let mut consumer = subscribe(&discover, &stream, Instant::now() + LEASE * 5).await;
    let mut seen = HashSet::new();
    while !before.iter().all(|id| seen.contains(id)) {
        seen.insert(take(&mut consumer).await.expect("delivered by the leader"));
    }

    // Kill -9 the leader: another node takes the lease, writes the next term's $epoch,
    // and resumes the group, from which the consumer gets what was appended since.
    let killed = Instant::now();
    nodes[li].kill();
    let after = append(&appender, &stream, 10).await;
    let v = until(survivor, LEASE * 6, |v| {
        leader_of(v).is_some_and(|l| l != leader)
            && v["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
    let took = killed.elapsed();
    let new_leader = leader_of(&v).expect("a new leader").to_owned();
    assert!(
        took < LEASE * 3,
        "the lease moved {took:?} after the kill (lease {LEASE:?})"
    );
    let on_new = until(ports[at(&new_leader)], Duration::from_secs(5), |v| {
        v["epoch"].is_u64()
    })
    .await;
    assert_eq!(on_new["epoch"], 1, "the second term: {on_new}");
    let mut delivering_again = None;
    let deadline = killed + LEASE * 10;
    while !after.iter().all(|id| seen.contains(id)) {
        match take(&mut consumer).await {
            Ok(id) => {
                delivering_again.get_or_insert_with(|| killed.elapsed());
                seen.insert(id);
            }
            // The Rust client (1.2.0) rediscovers on "not leader" but stays with a node
            // it can no longer reach: the consumer starts a new client, which asks
            // Gossip again.
            Err(_) => {
                assert!(Instant::now() < deadline, "the group never resumed");
                let fresh = settings(&discover_url);
                consumer = subscribe(&fresh, &stream, deadline).await;
            }
        }
    }
    let delivering_again = delivering_again.expect("delivered after the kill");
    eprintln!(
        "leader killed: the lease moved to {new_leader} in {took:?}; the persistent \
         subscription delivered again after {delivering_again:?} (lease {LEASE:?})"
    );
    assert!(
        delivering_again < LEASE * 5,
        "delivering again {delivering_again:?} after the kill"
    );
}

/// Appends `n` events to `stream`: their ids.
async fn append(client: &Client, stream: &str, n: u64) -> Vec<uuid::Uuid> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let events: Vec<EventData> = ids
        .iter()
        .zip(0..n)
        .map(|(id, k)| {
            EventData::json("Placed", &serde_json::json!({ "k": k }))
                .expect("json")
                .id(*id)
        })
        .collect();
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .expect("append on a surviving node");
    ids
}

/// Subscribes to the group `workers` of `stream`, retrying (the leader may be moving)
/// until `deadline`.
async fn subscribe(client: &Client, stream: &str, deadline: Instant) -> PersistentSubscription {
    loop {
        match client
            .subscribe_to_persistent_subscription(stream, "workers", &Default::default())
            .await
        {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "could not subscribe: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event of the subscription, acknowledged: its id (an error: the call ended).
async fn take(consumer: &mut PersistentSubscription) -> Result<uuid::Uuid, kurrentdb::Error> {
    let event = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .map_err(|_| kurrentdb::Error::DeadlineExceeded)??;
    consumer.ack(&event).await?;
    Ok(event.get_original_event().id)
}
