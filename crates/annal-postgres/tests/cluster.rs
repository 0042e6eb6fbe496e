//! Nodes and the leader, kept in a PostgreSQL store (`annal_core::cluster`): node
//! heartbeats, one leader lease holder among several nodes, the `$epoch` event that
//! starts each term, fencing of a deposed leader, and the lease passing on when the
//! leader goes.

mod common;

use annal_core::cluster::{
    Cluster, ClusterOptions, ClusterView, EPOCH_EVENT, EPOCHS_STREAM, EpochRecord, LEADER_GROUP,
    NodeRegistration, start_term,
};
use annal_core::{Direction, Error, Store, Timestamp, Uuid};
use annal_postgres::PgStore;
use common::SchemaGuard;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

async fn fresh() -> Option<(Arc<dyn Store>, SchemaGuard)> {
    if !common::available() {
        return None;
    }
    let schema = common::fresh_schema();
    let store = PgStore::connect(&common::store_url(&schema))
        .await
        .expect("the test server is reachable");
    Some((Arc::new(store), SchemaGuard(schema)))
}

fn node(name: &str, port: u16) -> NodeRegistration {
    NodeRegistration {
        name: name.into(),
        instance_id: Uuid::now_v7(),
        address: format!("127.0.0.1:{port}"),
        started_at: Timestamp::now(),
    }
}

const TTL: Duration = Duration::from_millis(600);

/// Waits until `pick` holds of the view, up to `within`.
async fn until(
    view: &mut watch::Receiver<ClusterView>,
    within: Duration,
    pick: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = view.borrow_and_update().clone();
        if pick(&v) {
            return v;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "the view never came: last {v:?}");
        let _ = tokio::time::timeout(left, view.changed()).await;
    }
}

/// Node `a` joins and leads, then `b` joins and sees it lead: `a`, `a`'s view as
/// leader, `b`, and `b`'s view.
async fn a_leads_b_follows(
    store: &Arc<dyn Store>,
) -> (Cluster, ClusterView, Cluster, watch::Receiver<ClusterView>) {
    let options = ClusterOptions { lease_ttl: TTL };
    let a = Cluster::join(store.clone(), node("a", 1), options)
        .await
        .expect("a joins");
    let mut wa = a.watch();
    let leading = until(&mut wa, Duration::from_secs(5), ClusterView::is_leader).await;
    let b = Cluster::join(store.clone(), node("b", 2), options)
        .await
        .expect("b joins");
    let mut wb = b.watch();
    until(&mut wb, Duration::from_secs(5), |v| {
        v.nodes.len() == 2 && v.leader.is_some()
    })
    .await;
    assert!(!wb.borrow().is_leader(), "a came first and leads");
    (a, leading, b, wb)
}

async fn epochs(store: &dyn Store) -> Vec<EpochRecord> {
    store
        .read_aggregate(EPOCHS_STREAM, Direction::Forward, None, 100)
        .await
        .expect("read $epochs")
        .into_iter()
        .map(|e| {
            assert_eq!(e.event_type, EPOCH_EVENT);
            e.data.to_value().expect("an epoch record")
        })
        .collect()
}

#[tokio::test]
async fn a_heartbeat_lists_the_live_nodes_and_leaving_removes_one() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let (a, b) = (node("a", 1), node("b", 2));
    let seen = store.register_node(&a, TTL).await.expect("a registers");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].instance_id, a.instance_id);
    assert_eq!(seen[0].address, "127.0.0.1:1");
    let seen = store.register_node(&b, TTL).await.expect("b registers");
    let names: Vec<&str> = seen.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let seen = store
        .register_node(&a, Duration::ZERO)
        .await
        .expect("a leaves");
    assert_eq!(seen.len(), 1, "a left: only b is alive: {seen:?}");
    assert_eq!(seen[0].name, "b");
}

#[tokio::test]
async fn a_name_in_use_by_a_live_node_elsewhere_is_refused_until_its_heartbeat_lapses() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let first = node("db1", 1);
    store.register_node(&first, TTL).await.expect("registers");
    // The same node restarted (same name and address, new instance id) takes over.
    let restarted = node("db1", 1);
    let seen = store
        .register_node(&restarted, TTL)
        .await
        .expect("a restart takes its row over");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].instance_id, restarted.instance_id);
    let second = node("db1", 2);
    let refused = store.register_node(&second, TTL).await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest { .. })),
        "{refused:?}"
    );
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let seen = store
        .register_node(&second, TTL)
        .await
        .expect("the lapsed name is free");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].instance_id, second.instance_id);
}

#[tokio::test]
async fn one_of_three_nodes_leads_and_its_term_starts_with_epoch_zero() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let options = ClusterOptions { lease_ttl: TTL };
    let mut members = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let port = 2113 + u16::try_from(i).expect("small");
        members.push(
            Cluster::join(store.clone(), node(name, port), options)
                .await
                .expect("joins"),
        );
    }
    let mut views: Vec<ClusterView> = Vec::new();
    for m in &members {
        let mut w = m.watch();
        views.push(
            until(&mut w, Duration::from_secs(5), |v| {
                v.nodes.len() == 3 && v.leader.is_some()
            })
            .await,
        );
    }
    let leader = views[0].leader.expect("a leader");
    assert!(
        views.iter().all(|v| v.leader == Some(leader)),
        "every node names the same leader: {views:?}"
    );
    assert_eq!(views.iter().filter(|v| v.is_leader()).count(), 1);
    let leading = views
        .iter()
        .find(|v| v.is_leader())
        .expect("the leader's view");
    assert_eq!(leading.epoch, Some(0));
    let found = epochs(store.as_ref()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].epoch_number, 0);
    assert_eq!(
        found[0].epoch_position, 0,
        "a fresh store: the term began at 0"
    );
    assert_eq!(found[0].prev_epoch_position, -1);
    assert_eq!(found[0].leader_instance_id, leader);
    let held = store.leases(LEADER_GROUP).await.expect("leases");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].owner, leader.to_string());
    for m in members {
        m.leave().await;
    }
}

#[tokio::test]
async fn when_the_leader_stops_another_node_takes_the_lease_and_starts_the_next_epoch() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let (a, _, b, mut wb) = a_leads_b_follows(&store).await;
    // Events appended meanwhile: the next term begins after them.
    store
        .append(
            annal_core::AppendRequest::new("Order", "order-1", annal_core::ExpectedVersion::Any)
                .event(annal_core::NewEvent::raw(
                    "Placed",
                    annal_core::RawJson::from_stored("{}".into()),
                )),
        )
        .await
        .expect("append");
    let head = store.head(&[]).await.expect("head");
    // `a` is gone without giving its lease up (as if killed): its heartbeat and lease
    // lapse, and `b` takes over within 1¼ lease periods of the last renewal.
    drop(a);
    let started = tokio::time::Instant::now();
    let v = until(&mut wb, TTL * 4, ClusterView::is_leader).await;
    assert!(started.elapsed() < TTL * 3, "took {:?}", started.elapsed());
    assert_eq!(v.epoch, Some(1));
    let found = epochs(store.as_ref()).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].epoch_number, 1);
    assert_eq!(found[1].epoch_position, head);
    assert_eq!(found[1].prev_epoch_position, 0);
    assert_eq!(found[1].leader_instance_id, v.me.instance_id);
    b.leave().await;
}

#[tokio::test]
async fn a_deposed_leader_cannot_write_an_epoch() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let (old, new) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let stale = store
        .acquire_lease(LEADER_GROUP, 0, &old, Duration::from_millis(50))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let current = store
        .acquire_lease(LEADER_GROUP, 0, &new, TTL)
        .await
        .expect("acquire")
        .expect("lapsed");
    let refused = start_term(store.as_ref(), &stale).await;
    assert!(
        matches!(refused, Err(Error::LeaseConflict { .. })),
        "{refused:?}"
    );
    assert!(epochs(store.as_ref()).await.is_empty(), "nothing written");
    let record = start_term(store.as_ref(), &current)
        .await
        .expect("the holder writes its epoch");
    assert_eq!(record.epoch_number, 0);
}

/// The leader's view carries its lease as a fence (what persistent-subscription
/// checkpoints are written with): a write fenced by it is stored while the node leads,
/// and refused once another node has taken the lease.
#[tokio::test]
async fn a_checkpoint_fenced_by_a_deposed_leaders_lease_is_refused() {
    let Some((store, _guard)) = fresh().await else {
        return;
    };
    let (a, v, b, mut wb) = a_leads_b_follows(&store).await;
    let fence = v.fence.clone().expect("a leader's view names its lease");
    assert_eq!(fence.group, LEADER_GROUP);
    assert_eq!(fence.owner, v.me.instance_id.to_string());
    let write = |fence| annal_core::CheckpointWrite::new("$ps-billing", 1).fenced(fence);
    store
        .put_checkpoint(write(fence.clone()))
        .await
        .expect("stored while a leads");
    // `a` dies holding the lease; `b` takes it once it lapses.
    drop(a);
    let vb = until(&mut wb, TTL * 4, ClusterView::is_leader).await;
    let refused = store.put_checkpoint(write(fence)).await;
    assert!(
        matches!(refused, Err(Error::LeaseConflict { .. })),
        "{refused:?}"
    );
    store
        .put_checkpoint(write(vb.fence.expect("b's view names its lease")))
        .await
        .expect("the new leader's write is stored");
    b.leave().await;
}
