//! A store the embedded backend creates is private to its owner: its folder is 0700,
//! its file 0600, and SQLite gives the write-ahead log the file's mode.
#![cfg(unix)]

use annal_core::testkit::fixtures::seed_family;
use annal_sqlite::SqliteStore;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_new_store_and_its_folder_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().expect("dir");
    let folder = dir.path().join("annal-data");
    let file = folder.join("annal.db");
    let store = SqliteStore::open(&file).expect("open");
    seed_family(&store, "family_1", 3).await;
    assert_eq!(mode(&folder), 0o700, "the folder");
    assert_eq!(mode(&file), 0o600, "the store file");
    let wal = folder.join("annal.db-wal");
    assert!(wal.exists(), "the store runs in WAL mode");
    assert_eq!(mode(&wal), 0o600, "the write-ahead log");
    assert_eq!(
        mode(&folder.join("annal.db-index")),
        0o600,
        "the index file"
    );
}

#[tokio::test]
async fn an_existing_store_keeps_the_mode_its_owner_gave_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("shared.db");
    drop(SqliteStore::open(&file).expect("create"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::remove_file(dir.path().join("shared.db-index")).expect("remove the index");
    let store = SqliteStore::open(&file).expect("reopen");
    seed_family(&store, "family_1", 1).await;
    assert_eq!(mode(&file), 0o640);
    assert_eq!(
        mode(&dir.path().join("shared.db-index")),
        0o640,
        "an index file made for it takes the store file's mode"
    );
}
