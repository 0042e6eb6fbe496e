//! A write-ahead log damaged before acknowledged commits is refused at open, instead of
//! SQLite silently dropping those commits (and its next checkpoint erasing the evidence);
//! the operator may accept the loss explicitly. A WAL whose only damage is a torn tail
//! (an unacknowledged commit cut short) opens as usual.

use annal_core::Store;
use annal_core::testkit::fixtures::seed_family;
use annal_sqlite::{OpenError, Options, SqliteStore};

/// A store of `families` × 5 events as a crash leaves it: its file and WAL copied while
/// it was open. Answers the folder (keep it) and the file.
async fn crashed_store(families: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let live = dir.path().join("live.db");
    let store = SqliteStore::open(&live).expect("open");
    for i in 0..families {
        seed_family(&store, &format!("family_{i}"), 5).await;
    }
    let crashed = tempfile::tempdir().expect("crash dir");
    std::fs::copy(&live, crashed.path().join("annal.db")).expect("copy the file");
    let mut wal = live.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::copy(wal, crashed.path().join("annal.db-wal")).expect("copy the WAL");
    drop(store);
    let file = crashed.path().join("annal.db");
    (crashed, file)
}

fn options(accept: bool) -> Options {
    Options {
        accept_truncated_wal: accept,
        ..Options::default()
    }
}

#[tokio::test]
async fn a_wal_damaged_before_acknowledged_commits_is_refused_unless_accepted() {
    let (crashed, file) = crashed_store(40).await;
    let wal = crashed.path().join("annal.db-wal");
    assert!(
        annal_sqlite::wal_check::check(&file)
            .expect("read")
            .is_none(),
        "an intact WAL"
    );
    // 16 bytes in the middle of the WAL: inside a committed frame's page.
    let mut bytes = std::fs::read(&wal).expect("read the WAL");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16].fill(0x5a);
    std::fs::write(&wal, &bytes).expect("damage");

    let refused = SqliteStore::open_with(&file, options(false))
        .err()
        .expect("refused");
    assert!(
        matches!(refused, OpenError::DamagedWal { lost, .. } if lost > 0),
        "{refused}"
    );
    let said = refused.to_string();
    assert!(said.contains("ANNAL_ACCEPT_TRUNCATED_WAL=1"), "{said}");
    assert_eq!(
        std::fs::read(&wal).expect("read"),
        bytes,
        "the evidence is untouched"
    );

    let accepted = SqliteStore::open_with(&file, options(true)).expect("accepted");
    let head = accepted.head(&[]).await.expect("head");
    assert!(
        head < 200,
        "the commits after the damage are gone: head {head}"
    );
    assert!(accepted.verify(None, None).await.expect("verify").ok);
}

#[tokio::test]
async fn a_torn_tail_opens_as_usual() {
    let (crashed, file) = crashed_store(10).await;
    let wal = crashed.path().join("annal.db-wal");
    // The last 100 bytes of the last frame torn: an unsynced, unanswered commit.
    let mut bytes = std::fs::read(&wal).expect("read the WAL");
    let n = bytes.len();
    bytes[n - 100..].fill(0);
    std::fs::write(&wal, &bytes).expect("tear");
    let store = SqliteStore::open_with(&file, options(false)).expect("opens");
    assert!(store.verify(None, None).await.expect("verify").ok);
}
