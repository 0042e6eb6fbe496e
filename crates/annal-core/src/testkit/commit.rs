//! Conformance cases of the group commit ([`crate::commit`]) under concurrent writers:
//! each version is won once, and one writer's conflict never fails the others committed
//! in the same group.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{ev, payment, req, seed_family};
use crate::append::ExpectedVersion::{Exact, NoStream};
use crate::error::{Error, ErrorKind};
use crate::read::Direction;
use crate::store::Store;
use std::sync::Arc;

/// Sixteen writers with the same expected version: exactly one wins each version.
pub async fn sixteen_writers_racing_on_one_aggregate_win_each_version_once<H: Harness>(h: H) {
    const WRITERS: usize = 16;
    const ROUNDS: u64 = 12;
    let s = h.store().clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (s, barrier) = (s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let e = ev("Bid", &format!(r#"{{"writer":{w},"round":{round}}}"#));
                match s
                    .append(req("Auction", "lot-1", Exact(round), vec![e]))
                    .await
                {
                    Ok(r) => won.push(r.events[0].clone()),
                    Err(Error::WrongExpectedVersion { actual, .. }) => {
                        assert_eq!(actual, round + 1)
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            won
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.expect("writer task"));
    }
    winners.sort_by_key(|e| e.aggregate_version);
    assert_eq!(
        winners.len() as u64,
        ROUNDS,
        "exactly one winner per version"
    );
    let stored = s
        .read_aggregate("lot-1", Direction::Forward, None, 100)
        .await
        .expect("read");
    assert_eq!(
        stored, winners,
        "the log holds exactly the acknowledged events"
    );
    assert!(s.verify(None, None).await.expect("verify").ok);
}

/// Appends committed in the same group as a conflicting one still succeed.
pub async fn a_conflict_does_not_fail_appends_committed_with_it<H: Harness>(h: H) {
    let s = h.store().clone();
    seed_family(&s, "contested", 1).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            if i % 4 == 0 {
                // Always stale: the aggregate is at version 1.
                s.append(req("Family", "contested", NoStream, vec![payment(i)]))
                    .await
                    .map(|_| false)
            } else {
                s.append(req(
                    "Family",
                    &format!("free-{i}"),
                    NoStream,
                    vec![payment(i)],
                ))
                .await
                .map(|_| true)
            }
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                i % 4 == 0 && e.kind() == ErrorKind::WrongExpectedVersion,
                "append {i}: {e}"
            ),
        }
    }
    assert_eq!(ok, 24);
    assert_eq!(s.head(&[]).await.expect("head"), 25);
    assert!(s.verify(None, None).await.expect("verify").ok);
}
