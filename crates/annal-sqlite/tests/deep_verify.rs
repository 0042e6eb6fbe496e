//! A deep verify finds what the hash chain cannot: a damaged index (an event its id can
//! no longer find), an index file that disagrees with the log, and stream records that
//! disagree with the log. The quick, chain-only
//! verify still passes on both, which is why the deep one is the default.

use annal_core::Store;
use annal_core::testkit::fixtures::seed_family;
use annal_sqlite::SqliteStore;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// Fills a store, closes it (its WAL checkpointed into the file), and answers the path.
async fn closed_store(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("annal.db");
    let store = SqliteStore::open(&file).expect("open");
    for i in 0..10 {
        seed_family(&store, &format!("family_{i}"), 30).await;
    }
    drop(store);
    file
}

#[tokio::test]
async fn a_damaged_index_fails_the_deep_verify_and_not_the_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let file = closed_store(dir.path()).await;
    let (root, page_size): (i64, i64) = {
        let c = rusqlite::Connection::open(&file).expect("open by hand");
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'events_by_event_id'",
                [],
                |r| r.get(0),
            )
            .expect("the event_id index");
        let size = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        (root, size)
    };
    // The last 16 bytes of the index's root page (its first cell: cells fill a page from
    // its end) overwritten behind annal's back.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open the file");
    let at = u64::try_from(root * page_size - 16).expect("offset");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[0x7f; 16]).expect("damage");
    drop(f);

    let store = SqliteStore::open(&file).expect("reopen");
    let quick = store.verify(None, None).await.expect("quick verify");
    assert!(
        quick.ok && quick.checked == 300,
        "the chain alone looks fine: {quick:?}"
    );
    let deep = store.verify_deep(None, None).await.expect("deep verify");
    assert!(!deep.ok, "{deep:?}");
    assert!(
        deep.storage.iter().any(|p| p.contains("integrity_check")),
        "{deep:?}"
    );
}

#[tokio::test]
async fn index_file_entries_that_disagree_with_the_log_fail_the_deep_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let file = closed_store(dir.path()).await;
    let store = SqliteStore::open(&file).expect("reopen");
    assert!(store.verify_deep(None, None).await.expect("deep").ok);
    fails_after_editing_the_index(
        &store,
        dir.path(),
        "DELETE FROM by_user_id WHERE position = 7;
         UPDATE by_event_type SET key = 'Forged' WHERE position = 9;",
        &[
            "by_user_id has no entry for the event at position 7",
            "by_event_type has an entry that does not match its event at position 9",
        ],
    )
    .await;
}

/// Runs `sql` on the index file of the store in `dir` behind annal's back, then expects
/// a deep verify to fail saying each of `said`.
async fn fails_after_editing_the_index(store: &SqliteStore, dir: &Path, sql: &str, said: &[&str]) {
    let index = rusqlite::Connection::open(dir.join("annal.db-index")).expect("index");
    index
        .execute_batch(sql)
        .expect("edit the index behind annal's back");
    drop(index);
    let deep = store.verify_deep(None, None).await.expect("deep verify");
    assert!(!deep.ok, "{deep:?}");
    let report = deep.storage.join("\n");
    for line in said {
        assert!(report.contains(line), "{report}");
    }
}

#[tokio::test]
async fn stream_records_that_disagree_with_the_log_fail_the_deep_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let file = closed_store(dir.path()).await;
    {
        let c = rusqlite::Connection::open(&file).expect("open by hand");
        c.execute_batch(
            "UPDATE streams SET version = 7 WHERE aggregate_id = 'family_3';
             DELETE FROM streams WHERE aggregate_id = 'family_4';",
        )
        .expect("edit the stream records");
    }
    let store = SqliteStore::open(&file).expect("reopen");
    let deep = store.verify_deep(None, None).await.expect("deep verify");
    assert!(!deep.ok && deep.first_bad_position.is_none(), "{deep:?}");
    let said = deep.storage.join("\n");
    assert!(
        said.contains("stream family_3's record says version 7, its events end at version 30"),
        "{said}"
    );
    assert!(
        said.contains("stream family_4 has events up to version 30 but no stream record"),
        "{said}"
    );
    assert!(store.verify(None, None).await.expect("quick").ok);
}

#[tokio::test]
async fn an_intact_store_passes_the_deep_verify_with_nothing_to_say() {
    let dir = tempfile::tempdir().expect("dir");
    let file = closed_store(dir.path()).await;
    let store = SqliteStore::open(&file).expect("reopen");
    let deep = store.verify_deep(None, None).await.expect("deep verify");
    assert!(
        deep.ok && deep.storage.is_empty() && deep.checked == 300,
        "{deep:?}"
    );
    assert_eq!(
        serde_json::to_string(&deep).expect("json"),
        r#"{"ok":true,"checked":300}"#
    );
}

#[tokio::test]
async fn subject_entries_that_disagree_with_the_sealed_parts_fail_the_deep_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("annal.db");
    let options = annal_sqlite::Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..annal_sqlite::Options::default()
    };
    let store = SqliteStore::open_with(&file, options.clone()).expect("open");
    for i in 0..6 {
        let mut e = annal_core::testkit::fixtures::ev("ChildAdded", "{}");
        e.personal = Some(annal_core::RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json"));
        e.subjects = vec![format!("family_{}", i % 2), "school_1".to_owned()];
        store
            .append(annal_core::testkit::fixtures::req(
                "Family",
                &format!("family_{i}"),
                annal_core::ExpectedVersion::Any,
                vec![e],
            ))
            .await
            .expect("append");
    }
    drop(store);
    let store = SqliteStore::open_with(&file, options).expect("reopen");
    let deep = store.verify_deep(None, None).await.expect("deep");
    assert!(deep.ok && deep.storage.is_empty(), "{deep:?}");
    fails_after_editing_the_index(
        &store,
        dir.path(),
        "DELETE FROM by_subject WHERE key = 'school_1' AND position = 2;
         UPDATE by_subject SET key = 'family_9' WHERE key = 'family_0' AND position = 3;",
        &[
            "by_subject has no entry for the event at position 2",
            "by_subject has an entry that does not match its event at position 3",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_key_table_edited_behind_the_stores_back_fails_the_deep_verify() {
    use annal_core::testkit::privacy;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("annal.db");
    let options = annal_sqlite::Options {
        keyring: Some(privacy::kek()),
        ..annal_sqlite::Options::default()
    };
    let store = SqliteStore::open_with(&file, options).expect("open");
    privacy::seed_for_key_table_check(&store).await;
    let c = rusqlite::Connection::open(&file).expect("open by hand");
    for edit in privacy::KEY_TABLE_EDITS {
        c.execute(edit, []).expect("edit behind the store's back");
    }
    drop(c);
    privacy::edited_key_table_fails_the_deep_verify(&store).await;
}
