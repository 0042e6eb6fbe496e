//! Conformance cases of consumer groups ([`crate::group`]): each aggregate stays in
//! order, and nothing is lost when members leave or crash.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{PATIENCE, fast, fill};
use crate::append::AppendRequest;
use crate::event::RecordedEvent;
use crate::group::ConsumerGroup;
use crate::projection::{Handler, HandlerError};
use crate::store::Store;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Three members share a subscription; one leaves mid-stream. Each aggregate's events
/// go to one member at a time, every event is handled exactly once, in order per aggregate.
pub async fn a_consumer_group_of_three_keeps_each_aggregate_in_order_when_a_member_leaves<
    H: Harness,
>(
    h: H,
) {
    type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;
    struct Member {
        name: String,
        seen: Seen,
    }
    #[async_trait]
    impl Handler for Member {
        async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
            self.seen.lock().expect("lock").push((
                e.aggregate_id.clone(),
                self.name.clone(),
                e.aggregate_version,
            ));
            Ok(Vec::new())
        }
    }
    let s = Arc::new(h.store().clone());
    let seen: Seen = Arc::default();
    let member = |name: &str| Member {
        name: name.into(),
        seen: seen.clone(),
    };
    let mut group = ConsumerGroup::new(s.clone(), fast("billing"), 12);
    for m in ["a", "b", "c"] {
        group.join(m, member(m)).await.expect("join");
    }
    fill(&*s, "family", 30, 600, 2).await;
    let owners: BTreeMap<u32, String> = group.assignment();
    assert_eq!(owners.len(), 12);
    for m in ["a", "b", "c"] {
        assert_eq!(owners.values().filter(|o| *o == m).count(), 4, "{owners:?}");
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { fill(&*s, "family", 30, 600, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    group.leave("b").await.expect("leave");
    let after: BTreeMap<u32, String> = group.assignment();
    for (p, owner) in &owners {
        if owner != "b" {
            assert_eq!(&after[p], owner, "only b's partitions move");
        }
    }
    assert!(after.values().all(|m| m != "b"));
    writer.await.expect("writer");
    let head = s.head(&[]).await.expect("head");
    assert!(
        group.wait_caught_up(PATIENCE).await.expect("head"),
        "the group catches up"
    );
    assert_eq!(
        seen.lock().expect("lock").len() as u64,
        head,
        "caught up means every event before the call is handled"
    );
    group.stop().await.expect("stops");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len() as u64,
        head,
        "exactly once: a graceful leave redelivers nothing"
    );
    let mut next: BTreeMap<&str, (u64, &str, u32)> = BTreeMap::new();
    for (agg, member, version) in &seen {
        let (expected, owner, moves) = next.entry(agg).or_insert((1, member, 0));
        assert_eq!(*version, *expected, "{agg}: in order, none lost");
        if owner != member {
            assert_eq!(*owner, "b", "{agg}: only b's aggregates change hands");
            *moves += 1;
            *owner = member;
        }
        assert!(*moves <= 1, "{agg} moved once at most");
        *expected += 1;
    }
    assert_eq!(next.len(), 30);
    assert!(
        seen.iter().any(|(_, m, _)| m == "b"),
        "b took part before leaving"
    );
}

/// Three members, each on its own as separate processes would be, share a group of 12
/// partitions over 2,400 events in 40 aggregates while a writer appends; one leaves
/// gracefully, one crashes (its leases expire). Every aggregate's events are handled in
/// order, none is lost, and only the crashed member's are redelivered.
pub async fn a_group_of_three_members_with_one_leaving_and_one_crashing_loses_nothing<
    H: Harness,
>(
    h: H,
) {
    use crate::group::{GroupMember, MemberOptions};
    type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;
    struct Member {
        name: String,
        seen: Seen,
    }
    #[async_trait]
    impl Handler for Member {
        async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
            self.seen.lock().expect("lock").push((
                e.aggregate_id.clone(),
                self.name.clone(),
                e.aggregate_version,
            ));
            Ok(Vec::new())
        }
    }
    let s = Arc::new(h.store().clone());
    let seen: Seen = Arc::default();
    let options = MemberOptions::new(fast("orders"), 12).ttl(Duration::from_secs(2));
    let join = |name: &str| {
        GroupMember::join(
            s.clone(),
            name,
            Member {
                name: name.into(),
                seen: seen.clone(),
            },
            options.clone(),
        )
        .expect("join")
    };
    fill(&*s, "order", 40, 400, 4).await;
    let members = [join("a"), join("b"), join("c")];
    assert!(
        !members[0]
            .wait_caught_up(Duration::from_millis(1))
            .await
            .expect("checkpoints"),
        "just joined: no partition has handled the 400 events yet"
    );
    let balanced = tokio::time::timeout(PATIENCE, async {
        loop {
            let counts: Vec<usize> = members.iter().map(|m| m.status().leases.len()).collect();
            if counts == [4, 4, 4] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(balanced.is_ok(), "three members take four partitions each");
    let mut all: BTreeSet<u32> = BTreeSet::new();
    for m in &members {
        all.extend(m.status().partitions());
    }
    assert_eq!(all.len(), 12, "no partition is held twice");

    let writer = {
        let s = s.clone();
        tokio::spawn(async move { fill(&*s, "order", 40, 2000, 4).await })
    };
    let [a, b, c] = members;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b_partitions = b.status().partitions();
    assert_eq!(b.status().lost, 0, "b lost no lease before leaving");
    b.leave().await.expect("b leaves gracefully");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let a_lost = a.status().lost;
    assert_eq!(
        a_lost, 0,
        "a lost no lease (the ttl is long enough for this machine)"
    );
    c.crash().await;
    writer.await.expect("writer");
    let head = s.head(&[]).await.expect("head");
    let versions: BTreeMap<String, u64> = {
        let mut v = BTreeMap::new();
        for e in super::fixtures::all(&*s).await {
            v.insert(e.aggregate_id.clone(), e.aggregate_version);
        }
        v
    };
    let alone = tokio::time::timeout(PATIENCE, a.wait_until(|st| st.leases.len() == 12)).await;
    assert!(
        alone.is_ok_and(|held| held),
        "a runs all partitions once c's leases expire"
    );
    // The group's checkpoints, whoever wrote them, say when everything is handled.
    assert!(
        a.wait_caught_up(PATIENCE).await.expect("checkpoints"),
        "the group catches up"
    );
    let handled: BTreeMap<String, u64> = {
        let seen = seen.lock().expect("lock");
        let mut m = BTreeMap::new();
        for (agg, _, v) in seen.iter() {
            let e = m.entry(agg.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        m
    };
    assert_eq!(
        handled, versions,
        "caught up means every event before the call is handled"
    );
    a.leave().await.expect("a leaves");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.len() as u64 >= head);
    // Per aggregate: versions in order; a step back (a redelivery) only where the crashed
    // member c handed over, and only of versions c had handled.
    let mut by_c: HashSet<(String, u64)> = HashSet::new();
    let mut next: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for (agg, member, version) in &seen {
        let (expected, owner) = next.entry(agg).or_insert((1, member));
        if *version != *expected {
            assert!(
                *version < *expected && *owner == "c" && member != "c",
                "{agg}: version {version} after {} by {owner}, now by {member}: only a crash redelivers",
                *expected - 1
            );
            assert!(
                by_c.contains(&(agg.clone(), *version)),
                "{agg}: only what c had handled is redelivered"
            );
        }
        if member == "c" {
            by_c.insert((agg.clone(), *version));
        }
        if *owner != member.as_str() && *owner == "b" {
            assert_eq!(
                *version, *expected,
                "{agg}: b's graceful leave redelivers nothing"
            );
        }
        *owner = member;
        *expected = version + 1;
    }
    assert_eq!(next.len(), 40);
    for (agg, (expected, _)) in &next {
        assert_eq!(*expected - 1, versions[*agg], "{agg}: nothing lost");
    }
    assert!(seen.iter().any(|(_, m, _)| m == "b"), "b took part");
    assert!(seen.iter().any(|(_, m, _)| m == "c"), "c took part");
    assert!(!b_partitions.is_empty());
    let leases = s.leases("orders").await.expect("leases");
    assert!(
        leases.is_empty(),
        "a released everything when it left: {leases:?}"
    );
}
