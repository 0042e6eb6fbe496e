//! Durable before visible (`annal_postgres::writer`, "Durable before visible"): with
//! writers in several stores on one schema, groups commit unflushed and are confirmed
//! by a synchronous commit of their writer's own; readers never see an event before its
//! confirmation, positions stay contiguous across the switches between the two paths,
//! a version 7 schema migrates to the read cap, and a cap past the head is reported.

mod common;

use annal_core::testkit::fixtures::{ev, req};
use annal_core::{ExpectedVersion, Filter, RecordedEvent, Store, Uuid};
use annal_postgres::PgStore;
use annal_postgres::writer::path::CONTENDED_FOR;
use common::SchemaGuard;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

async fn two_stores() -> Option<(PgStore, PgStore, String, SchemaGuard)> {
    if !common::available() {
        return None;
    }
    let schema = common::fresh_schema();
    let url = common::store_url(&schema);
    let a = PgStore::connect(&url).await.expect("store a");
    let b = PgStore::connect(&url).await.expect("store b");
    Some((a, b, schema.clone(), SchemaGuard(schema)))
}

async fn append_one(store: &PgStore, aggregate: &str) -> annal_core::AppendResult {
    store
        .append(req(
            "Thing",
            aggregate,
            ExpectedVersion::Any,
            vec![ev("Happened", r#"{"n":1}"#)],
        ))
        .await
        .expect("append")
}

async fn count_rows(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect("count").get(0)
}

/// While a contended writer's confirmation is held back (its row of `durable` locked),
/// its group is committed in `events` but no read shows it: not the log, not the
/// aggregate, not the event by id, not the head, not the stream's record (read once the
/// confirmation commits); and its caller is not answered. Once
/// the confirmation commits, the caller is answered and every read shows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_never_sees_a_contended_group_before_its_confirmation_commits() {
    let Some((a, b, schema, _guard)) = two_stores().await else {
        return;
    };
    // Each writer learns its head, then b commits past a: a is contended.
    append_one(&a, "a-1").await;
    append_one(&b, "b-1").await;
    append_one(&a, "a-2").await;
    append_one(&b, "b-2").await;
    let before = b.head(&[]).await.expect("head");

    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".durable IN EXCLUSIVE MODE"
        ))
        .await
        .expect("hold confirmations back");
    let writer = a.clone();
    let id = Uuid::now_v7();
    let pending = tokio::spawn(async move {
        let e = ev("Happened", r#"{"n":2}"#).with_id(id);
        writer
            .append(req("Thing", "held", ExpectedVersion::Any, vec![e]))
            .await
    });
    // Until the group is committed (visible in the table, behind the reads' backs).
    let probe = common::admin().await;
    let committed = format!("SELECT count(*) FROM \"{schema}\".events WHERE event_id = '{id}'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count_rows(&probe, &committed).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let record = {
        let b = b.clone();
        tokio::spawn(async move { b.stream("held").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !pending.is_finished(),
        "answered before its confirmation committed"
    );
    assert!(!record.is_finished(), "the stream's record shows it");
    for reader in [&a, &b] {
        assert_eq!(reader.head(&[]).await.expect("head"), before);
        let log = reader
            .read_all(0, 100, &Filter::default())
            .await
            .expect("read");
        assert!(log.iter().all(|e| e.event_id != id), "the log shows it");
        assert_eq!(log.len() as u64, before);
        assert!(reader.event(id).await.expect("by id").is_none());
        let held = reader
            .read_aggregate("held", annal_core::Direction::Forward, None, 10)
            .await
            .expect("aggregate");
        assert!(held.is_empty(), "the aggregate shows it");
        let woke = reader
            .wait_for_head(before, Duration::from_millis(50))
            .await
            .expect("wait");
        assert_eq!(woke, before, "a live tail is woken for it");
    }

    admin.batch_execute("COMMIT").await.expect("release");
    let done = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered once confirmed")
        .expect("task")
        .expect("append");
    assert_eq!(done.first_position, before + 1);
    let record = tokio::time::timeout(Duration::from_secs(10), record)
        .await
        .expect("the record is read once confirmed")
        .expect("task")
        .expect("stream")
        .expect("a record");
    assert_eq!(record.version, 1);
    let woke = b
        .wait_for_head(before, Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(woke, before + 1);
    assert_eq!(
        b.event(id).await.expect("by id").map(|e| e.position),
        Some(before + 1)
    );
}

/// Writers in two stores take turns and overlap: a alone (synchronous commits), both
/// (unflushed commits, confirmed), a alone again once the contention has passed
/// (synchronous again). A reader tailing the log the whole time sees every position
/// once, in order, with no gap in any page; every acknowledged event is read back at its
/// position, and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn positions_stay_contiguous_and_acknowledged_events_readable_across_path_switches() {
    let Some((a, b, schema, _guard)) = two_stores().await else {
        return;
    };
    let reader = PgStore::connect(&common::store_url(&schema))
        .await
        .expect("reader");
    let stop = Arc::new(tokio::sync::Notify::new());
    let tail = {
        let reader = reader.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut stopping = false;
            loop {
                let after = seen.last().map_or(0, |e| e.position);
                let page = reader
                    .read_all(after, 500, &Filter::default())
                    .await
                    .expect("tail read");
                for (i, e) in page.iter().enumerate() {
                    assert_eq!(e.position, after + 1 + i as u64, "a gap in a page");
                }
                let empty = page.is_empty();
                seen.extend(page);
                if empty {
                    if stopping {
                        return seen;
                    }
                    tokio::select! {
                        _ = reader.wait_for_head(after, Duration::from_millis(200)) => {}
                        _ = stop.notified() => stopping = true,
                    }
                }
            }
        })
    };

    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let burst = |stores: Vec<PgStore>, tag: &'static str, rounds: usize| {
        let acked = acked.clone();
        async move {
            let mut tasks = Vec::new();
            for (s, store) in stores.into_iter().enumerate() {
                for w in 0..4 {
                    let store = store.clone();
                    let acked = acked.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..rounds {
                            let r = append_one(&store, &format!("{tag}-{s}-{w}-{i}")).await;
                            let e = &r.events[0];
                            acked.lock().expect("acked").push((e.event_id, e.position));
                        }
                    }));
                }
            }
            for t in tasks {
                t.await.expect("writer");
            }
        }
    };
    let admin = common::admin().await;
    let rows = format!("SELECT count(*) FROM \"{schema}\".durable");
    let synced = format!("SELECT (durable_position = position)::int::int8 FROM \"{schema}\".head");

    burst(vec![a.clone()], "alone", 20).await;
    burst(vec![a.clone(), b.clone()], "both", 40).await;
    assert_eq!(
        count_rows(&admin, &rows).await,
        2,
        "both writers confirmed unflushed groups"
    );
    // a's next group finds b's last commit (contended once more); a while after it, a
    // is alone.
    burst(vec![a.clone()], "after", 1).await;
    tokio::time::sleep(CONTENDED_FOR + Duration::from_millis(200)).await;
    burst(vec![a.clone()], "again", 20).await;
    assert_eq!(
        count_rows(&admin, &synced).await,
        1,
        "a alone commits synchronously again"
    );

    stop.notify_one();
    let seen = tail.await.expect("tail");
    let acked = acked.lock().expect("acked").clone();
    let head = reader.head(&[]).await.expect("head");
    assert_eq!(head, acked.len() as u64, "every append acknowledged");
    assert_eq!(seen.len() as u64, head, "the tail saw every position");
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
    }
    let by_id: std::collections::HashMap<Uuid, u64> =
        seen.iter().map(|e| (e.event_id, e.position)).collect();
    for (id, position) in &acked {
        assert_eq!(
            by_id.get(id),
            Some(position),
            "an acknowledged event is missing"
        );
    }
    let ids: HashSet<Uuid> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), acked.len());
    assert!(reader.verify(None, None).await.expect("verify").ok);
}

/// A version 7 schema (every commit synchronous, no read cap) migrates when opened: its
/// head becomes the durable head, so every event it holds is read at once, and appends
/// go on from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_7_schema_is_read_whole_once_migrated_to_the_read_cap() {
    let Some((a, b, schema, _guard)) = two_stores().await else {
        return;
    };
    for i in 0..5 {
        append_one(&a, &format!("old-{i}")).await;
    }
    drop((a, b));
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "DROP TABLE \"{schema}\".durable;
             ALTER TABLE \"{schema}\".head DROP COLUMN durable_position;
             DELETE FROM \"{schema}\".schema_version WHERE version > 7"
        ))
        .await
        .expect("back to version 7");
    let store = PgStore::connect(&common::store_url(&schema))
        .await
        .expect("migrate");
    assert_eq!(store.head(&[]).await.expect("head"), 5);
    let log = store
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read");
    assert_eq!(log.len(), 5);
    let r = append_one(&store, "new").await;
    assert_eq!(r.first_position, 6);
    assert_eq!(store.head(&[]).await.expect("head"), 6);
    assert!(store.verify(None, None).await.expect("verify").ok);
    let version: i32 = admin
        .query_one(
            &format!("SELECT max(version) FROM \"{schema}\".schema_version"),
            &[],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, annal_postgres::schema::SCHEMA_VERSION);
}

/// A read cap past the head (a `durable` row edited by hand) would show the next
/// commits before they are durable: the deep verify reports it.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_cap_past_the_head_fails_the_deep_verify() {
    let Some((a, b, schema, _guard)) = two_stores().await else {
        return;
    };
    append_one(&a, "a-1").await;
    append_one(&b, "b-1").await;
    let intact = a.verify_deep(None, None).await.expect("deep");
    assert!(intact.ok && intact.storage.is_empty(), "{intact:?}");
    let admin = common::admin().await;
    admin
        .batch_execute(&format!("UPDATE \"{schema}\".durable SET position = 40"))
        .await
        .expect("edit behind the store's back");
    let deep = a.verify_deep(None, None).await.expect("deep");
    assert!(!deep.ok, "{deep:?}");
    let said = deep.storage.join("\n");
    assert!(
        said.contains("says position 40, past the head row's 2"),
        "{said}"
    );
}
