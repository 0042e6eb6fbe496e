//! Conformance cases of reading ([`crate::read`]): aggregate pages in both directions,
//! every filter of the global log, lookups by event id, the head, streaming reads, a
//! reader tailing concurrent writers, and waiting for the head to move.
//!
//! Panics (via `expect`) are the failures: this is test code.

use super::Harness;
use super::fixtures::{all, ev, payment, req, seed_family};
use crate::append::ExpectedVersion::Any;
use crate::event::{RecordedEvent, Timestamp};
use crate::read::{Direction, Filter, stream_all};
use crate::store::Store;
use futures_util::TryStreamExt;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Forward from a version, backward from a version or the end, with limits.
pub async fn aggregate_reads_page_forwards_and_backwards<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "a", 10).await;
    seed_family(s, "b", 3).await;
    let versions =
        |v: Vec<RecordedEvent>| v.iter().map(|e| e.aggregate_version).collect::<Vec<_>>();
    let fw = s
        .read_aggregate("a", Direction::Forward, None, 4)
        .await
        .expect("read");
    assert_eq!(versions(fw), vec![1, 2, 3, 4]);
    let fw = s
        .read_aggregate("a", Direction::Forward, Some(8), 100)
        .await
        .expect("read");
    assert_eq!(versions(fw), vec![8, 9, 10]);
    let bw = s
        .read_aggregate("a", Direction::Backward, None, 3)
        .await
        .expect("read");
    assert_eq!(versions(bw), vec![10, 9, 8]);
    let bw = s
        .read_aggregate("a", Direction::Backward, Some(2), 10)
        .await
        .expect("read");
    assert_eq!(versions(bw), vec![2, 1]);
    assert!(
        s.read_aggregate("a", Direction::Forward, Some(11), 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        s.read_aggregate("nope", Direction::Forward, None, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let info = s.aggregate("b").await.expect("info").expect("exists");
    assert_eq!((info.aggregate_type.as_str(), info.version), ("Family", 3));
    assert!(s.aggregate("nope").await.expect("info").is_none());
}

/// Each filter field, OR within a field, AND across fields, and the time range.
pub async fn read_all_filters_by_every_field<H: Harness>(h: H) {
    let s = h.store();
    let mut r = req(
        "Family",
        "family_123",
        Any,
        vec![ev("FamilyEnrolled", "{}"), ev("ChildAdded", "{}")],
    );
    r.user_id = Some("sarah".into());
    r.correlation_id = Some("enrollment_abc123".into());
    s.append(r).await.expect("enrolment");
    let mid = s.head(&[]).await.expect("head");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let split = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut r = req(
        "Family",
        "family_123",
        Any,
        vec![ev("PaymentReceived", "{}").caused_by("evt-9")],
    );
    r.correlation_id = Some("payment_xyz789".into());
    s.append(r).await.expect("payment");
    let mut r = req(
        "Invoice",
        "inv-1",
        Any,
        vec![ev("InvoiceIssued", "{}"), ev("PaymentReceived", "{}")],
    );
    r.user_id = Some("billing".into());
    s.append(r).await.expect("invoice");
    let pos = |f: Filter| async move {
        s.read_all(0, 100, &f)
            .await
            .expect("read")
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>()
    };
    let list = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(pos(Filter::default()).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        pos(Filter {
            event_types: list(&["PaymentReceived"]),
            ..Default::default()
        })
        .await,
        vec![3, 5]
    );
    assert_eq!(
        pos(Filter {
            event_types: list(&["ChildAdded", "InvoiceIssued"]),
            ..Default::default()
        })
        .await,
        vec![2, 4]
    );
    assert_eq!(
        pos(Filter {
            aggregate_types: list(&["Invoice"]),
            ..Default::default()
        })
        .await,
        vec![4, 5]
    );
    assert_eq!(
        pos(Filter {
            correlation_ids: list(&["enrollment_abc123"]),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        pos(Filter {
            causation_ids: list(&["evt-9"]),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        pos(Filter {
            user_ids: list(&["sarah", "billing"]),
            ..Default::default()
        })
        .await,
        vec![1, 2, 4, 5]
    );
    assert_eq!(
        pos(Filter {
            event_types: list(&["PaymentReceived"]),
            aggregate_types: list(&["Family"]),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        pos(Filter {
            since: Some(split),
            ..Default::default()
        })
        .await,
        vec![3, 4, 5]
    );
    assert_eq!(
        pos(Filter {
            until: Some(split),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(mid, 2);
    let page = s
        .read_all(
            1,
            2,
            &Filter {
                user_ids: list(&["sarah", "billing"]),
                ..Default::default()
            },
        )
        .await
        .expect("paged read");
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![2, 4]
    );
    let everything: Vec<RecordedEvent> = all(s).await;
    for f in [
        Filter {
            event_types: list(&["PaymentReceived"]),
            ..Default::default()
        },
        Filter {
            since: Some(split),
            user_ids: list(&["billing"]),
            ..Default::default()
        },
    ] {
        let want: Vec<_> = everything
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| e.position)
            .collect();
        assert_eq!(
            pos(f.clone()).await,
            want,
            "backend agrees with Filter::matches for {f:?}"
        );
    }
}

/// One event by id; an unknown id is `None`.
pub async fn events_are_found_by_id<H: Harness>(h: H) {
    let s = h.store();
    seed_family(s, "f", 3).await;
    let log = all(s).await;
    for e in &log {
        assert_eq!(&s.event(e.event_id).await.expect("read").expect("found"), e);
    }
    assert!(s.event(Uuid::now_v7()).await.expect("read").is_none());
}

/// The head is the last position; by aggregate type, the last of theirs.
pub async fn head_tracks_last_position_overall_and_by_aggregate_type<H: Harness>(h: H) {
    let s = h.store();
    assert_eq!(s.head(&[]).await.expect("head"), 0);
    seed_family(s, "f", 2).await;
    s.append(req("Invoice", "i", Any, vec![ev("InvoiceIssued", "{}")]))
        .await
        .expect("append");
    assert_eq!(s.head(&[]).await.expect("head"), 3);
    assert_eq!(s.head(&["Family".into()]).await.expect("head"), 2);
    assert_eq!(
        s.head(&["Family".into(), "Invoice".into()])
            .await
            .expect("head"),
        3
    );
    assert_eq!(s.head(&["Nothing".into()]).await.expect("head"), 0);
}

/// Eight writers on their own aggregates, while a reader tails by position.
pub async fn eight_writers_while_a_reader_tails_see_every_position_once_in_order<H: Harness>(h: H) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 60;
    let s = h.store().clone();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..APPENDS {
                let n = 1 + i % 3;
                let events = (0..n)
                    .map(|k| ev("Tick", &format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)))
                    .collect();
                let r = s
                    .append(req("Clock", &format!("clock-{w}-{}", i % 4), Any, events))
                    .await
                    .expect("append");
                acked.extend(r.events.into_iter().map(|e| e.event_id));
            }
            acked
        }));
    }
    let total: u64 = (WRITERS * (0..APPENDS).map(|i| 1 + i % 3).sum::<usize>()) as u64;
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            while after < total {
                let page = s
                    .read_all(after, 50, &Filter::default())
                    .await
                    .expect("tail");
                for e in page {
                    assert_eq!(e.position, after + 1, "no gap, no duplicate, no reordering");
                    after = e.position;
                    seen.push(e.event_id);
                }
                if after < total {
                    s.wait_for_head(after, Duration::from_millis(200))
                        .await
                        .expect("wait");
                }
            }
            seen
        })
    };
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader finishes")
        .expect("reader task");
    assert_eq!(seen.len() as u64, total);
    assert_eq!(
        seen.into_iter().collect::<HashSet<_>>(),
        acked,
        "exactly the acknowledged events"
    );
    assert_eq!(s.head(&[]).await.expect("head"), total);
}

/// The streaming helper reads everything in pages, in order.
pub async fn streaming_reads_page_through_the_whole_log<H: Harness>(h: H) {
    let s = h.store();
    for i in 0..7 {
        s.append(req(
            "Family",
            &format!("f{i}"),
            Any,
            (0..100).map(payment).collect(),
        ))
        .await
        .expect("append");
    }
    let f = Filter::default();
    let mut positions = Vec::new();
    let mut stream = std::pin::pin!(stream_all(s, 0, &f, 64));
    while let Some(e) = stream.try_next().await.expect("stream") {
        positions.push(e.position);
    }
    assert_eq!(positions, (1..=700).collect::<Vec<_>>());
    let f = Filter {
        aggregate_types: vec!["Family".into()],
        ..Default::default()
    };
    let tail: Vec<_> = stream_all(s, 650, &f, 7)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(tail.len(), 50);
}

/// A waiter wakes when a commit moves the head, and returns at its timeout otherwise.
pub async fn wait_for_head_wakes_on_commit<H: Harness>(h: H) {
    let s = h.store().clone();
    let start = std::time::Instant::now();
    assert_eq!(
        s.wait_for_head(0, Duration::from_millis(120))
            .await
            .expect("wait"),
        0
    );
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "it waited for the timeout"
    );
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_head(0, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    seed_family(&s, "f", 1).await;
    let head = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before its timeout")
        .expect("task")
        .expect("wait");
    assert_eq!(head, 1);
}

/// The aggregate id prefix reads exactly the ids that start with it (case and all),
/// alone and with the other filters; an empty prefix reads everything.
pub async fn aggregate_id_prefix_reads_only_the_ids_that_start_with_it<H: Harness>(h: H) {
    let s = h.store();
    for (id, n) in [
        ("family_1", 2),
        ("family_12", 1),
        ("family_2", 1),
        ("famine", 1),
        ("Family_3", 1),
        ("family", 1),
        ("famíly_4", 1),
    ] {
        seed_family(s, id, n).await;
    }
    s.append(req("Invoice", "family_9", Any, vec![ev("Issued", "{}")]))
        .await
        .expect("invoice");
    let everything = all(s).await;
    let ids = |f: Filter| async move {
        s.read_all(0, 100, &f)
            .await
            .expect("read")
            .iter()
            .map(|e| e.aggregate_id.clone())
            .collect::<Vec<_>>()
    };
    let prefix = |p: &str| Filter {
        aggregate_id_prefix: Some(p.to_owned()),
        ..Default::default()
    };
    assert_eq!(
        ids(prefix("family_1")).await,
        vec!["family_1", "family_1", "family_12"]
    );
    assert_eq!(
        ids(prefix("family_")).await,
        vec!["family_1", "family_1", "family_12", "family_2", "family_9"]
    );
    assert_eq!(ids(prefix("fam")).await.len(), 8, "not Family_3");
    assert_eq!(ids(prefix("famí")).await, vec!["famíly_4"]);
    assert!(ids(prefix("family_1x")).await.is_empty());
    assert_eq!(ids(prefix("")).await.len(), everything.len());
    for f in [
        prefix("family_1"),
        prefix("family"),
        prefix("F"),
        Filter {
            aggregate_types: vec!["Invoice".into()],
            ..prefix("family_")
        },
        Filter {
            event_types: vec!["Issued".into(), "FamilyEnrolled".into()],
            ..prefix("fam")
        },
    ] {
        let want: Vec<_> = everything
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| e.position)
            .collect();
        let got: Vec<_> = s
            .read_all(0, 100, &f)
            .await
            .expect("read")
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(got, want, "backend agrees with Filter::matches for {f:?}");
        // Paged from the middle, the same events.
        if let Some(&first) = want.first() {
            let rest: Vec<_> = s
                .read_all(first, 100, &f)
                .await
                .expect("read")
                .iter()
                .map(|e| e.position)
                .collect();
            assert_eq!(rest, want[1..].to_vec(), "paged, {f:?}");
        }
    }
}

/// Counts by event type equal what reading the same filter finds, over the whole
/// log, after a position, up to a position, and in a time range.
pub async fn counts_by_event_type_match_a_read_of_the_same_filter<H: Harness>(h: H) {
    let s = h.store();
    assert_eq!(
        s.count_by_type(0, None, &Filter::default())
            .await
            .expect("count of nothing"),
        crate::read::EventCounts::default()
    );
    seed_family(s, "family_1", 4).await;
    let mut r = req(
        "Invoice",
        "inv-1",
        Any,
        vec![ev("InvoiceIssued", "{}"), ev("PaymentReceived", "{}")],
    );
    r.user_id = Some("billing".into());
    s.append(r).await.expect("invoice");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let split = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    seed_family(s, "family_2", 3).await;
    let everything = all(s).await;
    let head = s.head(&[]).await.expect("head");
    let cases = [
        (0, None, Filter::default()),
        (
            0,
            None,
            Filter {
                user_ids: vec!["billing".into()],
                ..Default::default()
            },
        ),
        (
            0,
            None,
            Filter {
                aggregate_id_prefix: Some("family_".into()),
                ..Default::default()
            },
        ),
        (
            0,
            None,
            Filter {
                since: Some(split),
                ..Default::default()
            },
        ),
        (
            0,
            None,
            Filter {
                until: Some(split),
                event_types: vec!["PaymentReceived".into(), "FamilyEnrolled".into()],
                ..Default::default()
            },
        ),
        (3, Some(head - 1), Filter::default()),
        (head, None, Filter::default()),
    ];
    for (after, up_to, f) in cases {
        let counts = s.count_by_type(after, up_to, &f).await.expect("count");
        let mut want = std::collections::BTreeMap::<String, u64>::new();
        for e in everything
            .iter()
            .filter(|e| e.position > after && e.position <= up_to.unwrap_or(head) && f.matches(e))
        {
            *want.entry(e.event_type.clone()).or_default() += 1;
        }
        assert_eq!(counts.counts, want, "counts of {f:?} after {after}");
        assert_eq!(counts.total, want.values().sum::<u64>());
        assert_eq!(counts.up_to_position, up_to.unwrap_or(head));
    }
}

/// The principal filter reads the events a principal authenticated, whatever user
/// they claim; events with no principal pass no principal filter. For backends only:
/// a client of a server cannot choose its principal.
pub async fn principal_filter_reads_what_a_principal_appended<H: Harness>(h: H) {
    let s = h.store();
    s.append(req("Family", "f1", Any, vec![ev("FamilyEnrolled", "{}")]))
        .await
        .expect("no principal");
    s.append(
        req("Family", "f1", Any, vec![ev("ChildAdded", "{}")])
            .by("sarah")
            .authenticated_as("portal"),
    )
    .await
    .expect("portal for sarah");
    s.append(
        req("Family", "f2", Any, vec![ev("FamilyEnrolled", "{}")])
            .by("billing-job")
            .authenticated_as("billing"),
    )
    .await
    .expect("billing");
    s.append(
        req("Family", "f2", Any, vec![ev("PaymentDue", "{}")])
            .by("portal")
            .authenticated_as("billing"),
    )
    .await
    .expect("billing for portal");
    let pos = |f: Filter| async move {
        s.read_all(0, 100, &f)
            .await
            .expect("read")
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>()
    };
    let principals = |v: &[&str]| Filter {
        principals: v.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(pos(principals(&["portal"])).await, vec![2]);
    assert_eq!(pos(principals(&["billing"])).await, vec![3, 4]);
    assert_eq!(pos(principals(&["billing", "portal"])).await, vec![2, 3, 4]);
    assert!(pos(principals(&["system"])).await.is_empty());
    assert_eq!(
        pos(Filter {
            user_ids: vec!["portal".into()],
            ..principals(&["billing"])
        })
        .await,
        vec![4]
    );
    let counts = s
        .count_by_type(0, None, &principals(&["billing"]))
        .await
        .expect("count");
    assert_eq!(counts.total, 2);
    assert_eq!(counts.counts.get("PaymentDue"), Some(&1));
}
