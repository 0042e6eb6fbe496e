//! Conformance cases of partition leases ([`crate::lease`]): a lease is exclusive and
//! changes hands only with a higher token.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{ev, req};
use crate::append::ExpectedVersion;
use crate::store::Store;
use std::time::Duration;

/// Leases are exclusive; an expired or released lease is taken with a higher fencing
/// token; the old owner can neither renew it nor write a fenced checkpoint or commit;
/// heartbeats answer the live members; bad input is refused with typed errors.
pub async fn partition_leases_are_exclusive_and_change_hands_with_a_higher_token<H: Harness>(h: H) {
    use crate::checkpoint::CheckpointWrite;
    use crate::error::Error;
    let s = h.store();
    let long = Duration::from_secs(30);
    let a0 = s
        .acquire_lease("billing", 0, "a", long)
        .await
        .expect("acquire")
        .expect("a free partition is taken");
    assert_eq!(
        (a0.group.as_str(), a0.partition, a0.owner.as_str()),
        ("billing", 0, "a")
    );
    assert!(a0.token >= 1);
    assert_eq!(
        s.acquire_lease("billing", 0, "b", long)
            .await
            .expect("acquire"),
        None
    );
    assert_eq!(
        s.acquire_lease("billing", 0, "a", long)
            .await
            .expect("acquire"),
        None,
        "a held lease is renewed, not acquired again"
    );
    let renewed = s
        .renew_lease(&a0, long)
        .await
        .expect("renew")
        .expect("the owner renews");
    assert_eq!(renewed.token, a0.token, "renewing keeps the token");
    assert!(renewed.expires_at >= a0.expires_at);
    // Another group's partition 0 is another lease.
    assert!(
        s.acquire_lease("shipping", 0, "b", long)
            .await
            .expect("acquire")
            .is_some()
    );

    // A short lease lapses and is taken by another member with a higher token.
    let a1 = s
        .acquire_lease("billing", 1, "a", Duration::from_millis(50))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let b1 = s
        .acquire_lease("billing", 1, "b", long)
        .await
        .expect("acquire")
        .expect("an expired lease is taken");
    assert!(b1.token > a1.token, "the fencing token increases");
    assert_eq!(
        s.renew_lease(&a1, long).await.expect("renew"),
        None,
        "a lost it"
    );
    assert!(
        !s.release_lease(&a1).await.expect("release"),
        "a cannot release it"
    );
    let held = s.leases("billing").await.expect("leases");
    let owners: Vec<(u32, &str)> = held
        .iter()
        .map(|l| (l.partition, l.owner.as_str()))
        .collect();
    assert_eq!(owners, [(0, "a"), (1, "b")]);

    // Fencing: the old owner's checkpoint write and commit fail and write nothing.
    let stale = CheckpointWrite::new("billing.p1of2", 0).fenced(a1.fence());
    match s.put_checkpoint(stale.clone()).await {
        Err(Error::LeaseConflict {
            group, partition, ..
        }) => {
            assert_eq!((group.as_str(), partition), ("billing", 1));
        }
        other => panic!("a stale owner's checkpoint write must fail: {other:?}"),
    }
    let stale_commit = crate::append::Transaction {
        appends: vec![req(
            "Clock",
            "c-1",
            ExpectedVersion::Any,
            vec![ev("Tick", "{}")],
        )],
        checkpoint: Some(CheckpointWrite::new("billing.p1of2", 1).fenced(a1.fence())),
    };
    assert!(matches!(
        s.transact(stale_commit).await,
        Err(Error::LeaseConflict { .. })
    ));
    assert_eq!(s.head(&[]).await.expect("head"), 0, "nothing was written");
    assert_eq!(s.checkpoint("billing.p1of2").await.expect("read"), None);
    s.put_checkpoint(CheckpointWrite::new("billing.p1of2", 0).fenced(b1.fence()))
        .await
        .expect("the owner's fenced write commits");

    // A release keeps the token: the next owner's is higher still, and the released
    // owner's fence no longer holds.
    assert!(s.release_lease(&b1).await.expect("release"));
    assert!(matches!(
        s.put_checkpoint(CheckpointWrite::new("billing.p1of2", 0).fenced(b1.fence()))
            .await,
        Err(Error::LeaseConflict { .. })
    ));
    let c1 = s
        .acquire_lease("billing", 1, "c", long)
        .await
        .expect("acquire")
        .expect("a released lease is free");
    assert!(c1.token > b1.token);

    // Heartbeats.
    assert_eq!(
        s.heartbeat("billing", "b", long).await.expect("beat"),
        ["b"]
    );
    assert_eq!(
        s.heartbeat("billing", "a", long).await.expect("beat"),
        ["a", "b"]
    );
    s.heartbeat("billing", "x", Duration::from_millis(30))
        .await
        .expect("beat");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        s.heartbeat("billing", "a", Duration::ZERO)
            .await
            .expect("leave"),
        ["b"],
        "a left and x lapsed"
    );

    // Bad input.
    for bad in [
        s.acquire_lease("", 0, "a", long).await,
        s.acquire_lease("billing", 0, "", long).await,
        s.acquire_lease("billing", 0, "a", Duration::ZERO).await,
        s.acquire_lease("billing", 0, "a", Duration::from_secs(7200))
            .await,
    ] {
        assert!(
            matches!(bad, Err(Error::InvalidRequest { .. })),
            "bad input is refused: {bad:?}"
        );
    }
}
