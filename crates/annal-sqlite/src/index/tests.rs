//! Filtered reads give the answer a scan of the whole log gives, whatever the index file
//! holds: caught up, behind by any number of events, rebuilt, from another store, or
//! with an entry that disagrees with its event.

use crate::SqliteStore;
use crate::filter::{self, PrefixPlan, prefix_plan};
use crate::index::{self, INDEXED};
use crate::open::open_reader;
use annal_core::privacy::ForgetRequest;
use annal_core::testkit::fixtures::{all, ev, req};
use annal_core::{ExpectedVersion, Filter, NewEvent, RawJson, RecordedEvent, Store, Transaction};
use rusqlite::Connection;
use std::path::Path;

const TYPES: [&str; 3] = ["Placed", "Paid", "Shipped"];
const USERS: [&str; 3] = ["ana", "ben", "cy"];

/// 400 events in 40 orders and 10 carts, with every indexed field varied: correlation
/// ids some UUIDs (stored as bytes), some text, some absent.
async fn populated(path: &Path) -> Vec<RecordedEvent> {
    let store = SqliteStore::open(path).expect("open");
    for batch in 0..10u32 {
        let appends = (0..5u32)
            .map(|a| {
                let n = batch * 5 + a;
                let (kind, id) = if n % 5 == 4 {
                    ("Cart", format!("cart-{n}"))
                } else {
                    ("Order", format!("order-{n}"))
                };
                let events = (0..8u32)
                    .map(|i| {
                        let k = (n * 8 + i) as usize;
                        let mut e = ev(TYPES[k % 3], &format!("{{\"k\":{k}}}"));
                        e.user_id = Some(USERS[(k / 2) % 3].to_owned());
                        e.correlation_id = match k % 4 {
                            0 => Some(format!("00000000-0000-4000-8000-{:012}", k % 24)),
                            1 => Some(format!("corr-{}", k % 30)),
                            2 => None,
                            _ => Some(format!("corr-{}", k % 7)),
                        };
                        e.causation_id = (k % 3 != 0).then(|| format!("cause-{}", k % 11));
                        e
                    })
                    .collect();
                req(kind, &id, ExpectedVersion::NoStream, events)
            })
            .collect();
        store
            .transact(Transaction {
                appends,
                checkpoint: None,
            })
            .await
            .expect("append");
    }
    let events = all(&store).await;
    assert_eq!(events.len(), 400);
    events
}

/// Moves the index file back to cover positions up to `k` only, as if the indexer had
/// stopped there.
fn index_back_to(path: &Path, k: i64) {
    let main = Connection::open(path).expect("store file");
    let hash: Option<Vec<u8>> = main
        .query_row("SELECT hash FROM events WHERE position = ?1", [k], |r| {
            r.get(0)
        })
        .ok();
    let idx = Connection::open(index::path_of(path)).expect("index file");
    for table in INDEXED.iter().map(|ix| ix.table).chain([index::BY_SUBJECT]) {
        idx.execute(&format!("DELETE FROM {table} WHERE position > ?1"), [k])
            .expect("delete entries");
    }
    idx.execute(
        "UPDATE indexed SET position = ?1, hash = ?2",
        rusqlite::params![k, hash],
    )
    .expect("move the prefix");
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn filters() -> Vec<Filter> {
    let many: Vec<String> = (0..20).map(|i| format!("corr-{i}")).collect();
    vec![
        Filter::default(),
        Filter {
            event_types: s(&["Paid"]),
            ..Filter::default()
        },
        Filter {
            event_types: s(&["Paid", "Shipped", "Paid"]),
            ..Filter::default()
        },
        Filter {
            aggregate_types: s(&["Cart"]),
            ..Filter::default()
        },
        Filter {
            user_ids: s(&["ben", "cy"]),
            ..Filter::default()
        },
        Filter {
            correlation_ids: s(&["00000000-0000-4000-8000-000000000004", "corr-3"]),
            ..Filter::default()
        },
        Filter {
            correlation_ids: many,
            event_types: s(&["Placed"]),
            ..Filter::default()
        },
        Filter {
            causation_ids: s(&["cause-2"]),
            user_ids: s(&["ana"]),
            ..Filter::default()
        },
        Filter {
            event_types: s(&["Shipped"]),
            aggregate_id_prefix: Some("order-1".to_owned()),
            ..Filter::default()
        },
        Filter {
            event_types: s(&["Nothing"]),
            ..Filter::default()
        },
    ]
}

/// Every filter's reads (from several positions, in pages), counts and type heads on a
/// pooled read connection, against a scan of `events`.
fn check_against_a_scan(path: &Path, events: &[RecordedEvent], lag: &str) {
    let conn = open_reader(path).expect("reader");
    for f in filters() {
        let matching: Vec<&RecordedEvent> = events.iter().filter(|e| f.matches(e)).collect();
        for after in [0u64, 7, 150, 399] {
            for limit in [5usize, 1000] {
                let want: Vec<u64> = matching
                    .iter()
                    .filter(|e| e.position > after)
                    .take(limit)
                    .map(|e| e.position)
                    .collect();
                let got: Vec<u64> = filter::read_all(&conn, after, limit, &f, None)
                    .expect("read")
                    .iter()
                    .map(|e| e.position)
                    .collect();
                assert_eq!(got, want, "{lag}: {f:?} after {after}, limit {limit}");
            }
        }
        let (_, counts) = filter::count_by_type(&conn, 20, None, &f, Some(390)).expect("count");
        let mut want: Vec<(String, u64)> = Vec::new();
        for e in matching
            .iter()
            .filter(|e| e.position > 20 && e.position <= 390)
        {
            match want.iter_mut().find(|(t, _)| *t == e.event_type) {
                Some((_, n)) => *n += 1,
                None => want.push((e.event_type.clone(), 1)),
            }
        }
        want.sort();
        assert_eq!(counts, want, "{lag}: counts of {f:?}");
    }
    for (types, cap) in [
        (s(&["Cart"]), None),
        (s(&["Cart"]), Some(390)),
        (s(&["Order", "Cart"]), Some(123)),
    ] {
        let want = events
            .iter()
            .filter(|e| types.contains(&e.aggregate_type))
            .filter(|e| cap.is_none_or(|c| e.position <= c))
            .map(|e| e.position)
            .max()
            .unwrap_or(0);
        let got = filter::head_of(&conn, &types, cap).expect("head");
        assert_eq!(got, want, "{lag}: head of {types:?} at most {cap:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_counts_and_heads_equal_a_scan_however_far_the_index_has_come() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let events = populated(&path).await;
    check_against_a_scan(&path, &events, "caught up");
    for k in [397, 200, 8, 0] {
        index_back_to(&path, k);
        check_against_a_scan(&path, &events, &format!("indexed up to {k}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_with_its_index_caught_up() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    populated(&path).await;
    index_back_to(&path, 50);
    drop(SqliteStore::open(&path).expect("reopen"));
    let idx = Connection::open(index::path_of(&path)).expect("index file");
    let covered: i64 = idx
        .query_row("SELECT position FROM indexed", [], |r| r.get(0))
        .expect("prefix");
    assert_eq!(covered, 400);
    let paid: i64 = idx
        .query_row(
            "SELECT count(*) FROM by_event_type WHERE key = 'Paid'",
            [],
            |r| r.get(0),
        )
        .expect("entries");
    assert_eq!(paid, 133);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_index_file_or_one_of_another_store_is_built_again_from_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let events = populated(&path).await;
    std::fs::remove_file(index::path_of(&path)).expect("remove the index file");
    drop(SqliteStore::open(&path).expect("reopen"));
    check_against_a_scan(&path, &events, "rebuilt after removal");

    // Another store's index file, with a prefix at a position this log also has.
    let other = dir.path().join("other.db");
    let store = SqliteStore::open(&other).expect("other");
    for i in 0..300 {
        store
            .append(req(
                "Other",
                &format!("o-{i}"),
                ExpectedVersion::NoStream,
                vec![ev("Paid", "{}")],
            ))
            .await
            .expect("append");
    }
    drop(store);
    std::fs::copy(index::path_of(&other), index::path_of(&path)).expect("copy");
    drop(SqliteStore::open(&path).expect("reopen"));
    check_against_a_scan(&path, &events, "rebuilt after replacement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_disagrees_with_its_event_puts_nothing_wrong_in_a_read() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let events = populated(&path).await;
    let idx = Connection::open(index::path_of(&path)).expect("index file");
    let placed = events
        .iter()
        .find(|e| e.event_type == "Placed")
        .expect("a Placed event");
    idx.execute(
        "INSERT INTO by_event_type (key, position) VALUES ('Paid', ?1)",
        [placed.position],
    )
    .expect("a wrong entry");
    // An order's event entered as a cart's, above the last cart at or below 390.
    let order = events
        .iter()
        .filter(|e| e.position <= 390 && e.aggregate_type == "Order")
        .map(|e| e.position)
        .max()
        .expect("an order");
    idx.execute(
        "INSERT INTO by_aggregate_type (key, position) VALUES ('Cart', ?1)",
        [order],
    )
    .expect("a wrong entry");
    drop(idx);
    check_against_a_scan(&path, &events, "with a wrong entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_led_by_an_index_merges_its_values_in_order_without_sorting() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    populated(&path).await;
    let conn = open_reader(&path).expect("reader");
    let f = Filter {
        event_types: s(&["Paid", "Shipped"]),
        ..Filter::default()
    };
    let plan = prefix_plan(&conn, &f).expect("plan");
    assert_eq!(plan, PrefixPlan::None);
    let (sql, params) =
        filter::selection(&conn, 0, None, &f, plan, "e.position", true).expect("selection");
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql} ORDER BY 1 LIMIT 10"))
        .expect("explain");
    let plan: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
        .expect("plan")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    let text = plan.join("\n");
    assert!(text.contains("MERGE"), "{text}");
    assert!(
        text.contains("SEARCH ix USING PRIMARY KEY (key=?"),
        "{text}"
    );
    assert!(!text.contains("TEMP B-TREE"), "{text}");
}

fn with_kek(path: &Path) -> SqliteStore {
    let options = crate::Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..crate::Options::default()
    };
    SqliteStore::open_with(path, options).expect("open")
}

/// An event with a personal part about `subjects`.
fn personal(event_type: &str, subjects: &[&str]) -> NewEvent {
    let mut e = ev(event_type, "{}");
    e.personal = Some(RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json"));
    e.subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
    e
}

/// 120 events in 10 families: a quarter without personal data, the others about `s-a`,
/// `s-b` or both, every fifth also about `s-c`; read back opened (with their subjects).
async fn populated_with_subjects(path: &Path) -> Vec<RecordedEvent> {
    let store = with_kek(path);
    for i in 0..120usize {
        let mut subjects = match i % 3 {
            0 => vec!["s-a"],
            1 => vec!["s-b"],
            _ => vec!["s-a", "s-b"],
        };
        if i % 5 == 0 {
            subjects.push("s-c");
        }
        let e = if i % 4 == 3 {
            ev("Noted", "{}")
        } else {
            personal("Noted", &subjects)
        };
        store
            .append(req(
                "Family",
                &format!("fam-{}", i % 10),
                ExpectedVersion::Any,
                vec![e],
            ))
            .await
            .expect("append");
    }
    let events = all(&store).await;
    assert_eq!(events.len(), 120);
    events
}

/// Every subject's export (from several positions, in pages) against a scan of the log.
fn check_exports(path: &Path, events: &[RecordedEvent], lag: &str) {
    let conn = open_reader(path).expect("reader");
    for subject in ["s-a", "s-b", "s-c", "nobody"] {
        for after in [0u64, 7, 60, 119] {
            for limit in [1usize, 5, 1000] {
                let want: Vec<u64> = events
                    .iter()
                    .filter(|e| e.position > after && e.subjects.iter().any(|s| s == subject))
                    .take(limit)
                    .map(|e| e.position)
                    .collect();
                let got: Vec<u64> =
                    crate::privacy::subject_events(&conn, subject, after, limit, None)
                        .expect("export")
                        .iter()
                        .map(|e| e.position)
                        .collect();
                assert_eq!(got, want, "{lag}: {subject} after {after}, limit {limit}");
            }
        }
    }
    let capped: Vec<u64> = crate::privacy::subject_events(&conn, "s-a", 0, 1000, Some(50))
        .expect("export")
        .iter()
        .map(|e| e.position)
        .collect();
    assert!(capped.last().is_some_and(|p| *p <= 50), "{lag}: {capped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subjects_export_equals_a_scan_however_far_the_index_has_come() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let events = populated_with_subjects(&path).await;
    check_exports(&path, &events, "caught up");
    // An entry for s-c at an event that does not name it, and one for an event with no
    // personal part: both tested away.
    let idx = Connection::open(index::path_of(&path)).expect("index file");
    idx.execute_batch("INSERT INTO by_subject (key, position) VALUES ('s-c', 2), ('s-a', 4);")
        .expect("wrong entries");
    drop(idx);
    check_exports(&path, &events, "with wrong entries");
    for k in [117, 61, 3, 0] {
        index_back_to(&path, k);
        check_exports(&path, &events, &format!("indexed up to {k}"));
    }
}

/// Snapshots by aggregate id and tag: whether each is there.
async fn snapshots(store: &SqliteStore, ids: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            store
                .load_snapshot(id, "t", None)
                .await
                .expect("load")
                .is_some(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_deletes_the_snapshot_of_an_aggregate_whose_event_the_index_has_not_reached() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let store = with_kek(&path);
    let state = || RawJson::parse(r#"{"children":["Sofía"]}"#).expect("json");
    let append = |id: &'static str, e: NewEvent| {
        let store = store.clone();
        async move {
            store
                .append(req("Family", id, ExpectedVersion::Any, vec![e]))
                .await
                .expect("append")
                .first_position
        }
    };
    let indexed = append("fam-1", personal("ChildAdded", &["s-x"])).await;
    store
        .save_snapshot("fam-1", 1, "t", state())
        .await
        .expect("snapshot");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.indexed_up_to() < Some(indexed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the indexer never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The indexer is held back: this connection keeps the index file's write lock.
    let hold = Connection::open(index::path_of(&path)).expect("index file");
    hold.execute_batch("BEGIN IMMEDIATE")
        .expect("hold the index file");
    let past = append("fam-2", personal("ChildAdded", &["s-y", "s-x"])).await;
    append("fam-3", personal("ChildAdded", &["s-y"])).await;
    for id in ["fam-2", "fam-3"] {
        store
            .save_snapshot(id, 1, "t", state())
            .await
            .expect("snapshot");
    }
    let prefix: u64 = hold
        .query_row("SELECT position FROM indexed", [], |r| r.get(0))
        .expect("prefix");
    assert!(prefix >= indexed && prefix < past, "prefix {prefix}");
    let exported: Vec<u64> = store
        .subject_events("s-x", 0, 10)
        .await
        .expect("export")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(exported, [indexed, past]);
    store
        .forget_subject(ForgetRequest {
            subject: "s-x".into(),
            reason: "erasure request".into(),
            user_id: None,
            principal: None,
        })
        .await
        .expect("forget");
    assert_eq!(
        snapshots(&store, &["fam-1", "fam-2", "fam-3"]).await,
        [false, false, true],
        "the snapshots of both aggregates with an event about s-x are gone, only those"
    );
    hold.execute_batch("ROLLBACK").expect("let the indexer go");
}

/// An index file's rows of `table`, in key order.
fn rows_of(idx: &Connection, table: &str) -> Vec<(rusqlite::types::Value, i64)> {
    idx.prepare(&format!(
        "SELECT key, position FROM {table} ORDER BY key, position"
    ))
    .expect("prepare")
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
    .expect("query")
    .collect::<rusqlite::Result<_>>()
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_file_of_the_first_layout_gains_its_subject_index_and_keeps_its_other_tables() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let events = populated_with_subjects(&path).await;
    let idx = Connection::open(index::path_of(&path)).expect("index file");
    let built = rows_of(&idx, "by_subject");
    assert!(built.len() > 100, "{}", built.len());
    // What layout 1 was: no by_subject; and an entry a rebuild would not keep (an event
    // type no event has), to tell a migration from a rebuild.
    idx.execute_batch(
        "DROP TABLE by_subject; PRAGMA user_version = 1;
         INSERT INTO by_event_type (key, position) VALUES ('NotAType', 5);",
    )
    .expect("layout 1");
    drop(idx);
    drop(with_kek(&path));
    let idx = Connection::open(index::path_of(&path)).expect("index file");
    let layout: i64 = idx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("layout");
    assert_eq!(layout, 2);
    assert_eq!(rows_of(&idx, "by_subject"), built);
    let kept: i64 = idx
        .query_row(
            "SELECT count(*) FROM by_event_type WHERE key = 'NotAType'",
            [],
            |r| r.get(0),
        )
        .expect("entries");
    assert_eq!(
        kept, 1,
        "the filter tables were built again instead of kept"
    );
    drop(idx);
    check_exports(&path, &events, "after the layout 1 to 2 migration");
}
