//! A store closed cleanly is whole in its main file: the writer checkpoints the WAL into
//! it and truncates the WAL when the store is dropped, so copying the file alone is a
//! whole copy (issue 14, "the file at rest is the whole log").

use annal_core::Store;
use annal_core::testkit::fixtures::seed_family;
use annal_sqlite::SqliteStore;
use std::path::Path;

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test]
async fn a_dropped_store_leaves_its_whole_log_in_the_main_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("annal.db");
    let store = SqliteStore::open(&file).expect("open");
    for i in 0..20 {
        seed_family(&store, &format!("family_{i}"), 50).await;
    }
    let wal = dir.path().join("annal.db-wal");
    assert!(len(&wal) > 0, "while open, commits are in the WAL");
    let clone = store.clone();
    drop(store);
    assert!(len(&wal) > 0, "a clone keeps the store open");
    drop(clone);
    assert_eq!(len(&wal), 0, "the WAL is checkpointed and emptied on close");

    // The main file alone, copied elsewhere, is the whole store.
    let copy_dir = tempfile::tempdir().expect("copy dir");
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&file, &copy).expect("copy the main file only");
    let copied = SqliteStore::open(&copy).expect("open the copy");
    assert_eq!(copied.head(&[]).await.expect("head"), 1000);
    let report = copied.verify(None, None).await.expect("verify");
    assert!(report.ok && report.checked == 1000, "{report:?}");
}
