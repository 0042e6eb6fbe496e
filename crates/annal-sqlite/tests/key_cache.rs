//! The writer keeps the key-table rows and data keys of its last group for the next
//! (crates/annal-sqlite/src/writer.rs): only while no other connection committed to the
//! store file. Reads keep data keys from page to page (crates/annal-sqlite/src/privacy.rs):
//! only while the key table's change counter is the same. These tests change the key
//! table through a second store on the same file, as another process would, or by hand,
//! between two appends or two reads of the first.

use annal_core::privacy::ForgetRequest;
use annal_core::testkit::fixtures::{ev, req};
use annal_core::{Error, ExpectedVersion, Filter, RawJson, Store};
use annal_sqlite::{Options, SqliteStore};

/// A temporary directory and the store file path in it.
fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    (dir, path)
}

fn open(path: &std::path::Path) -> SqliteStore {
    let options = Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..Options::default()
    };
    SqliteStore::open_with(path, options).expect("open")
}

fn about(family: &str, child: &str) -> annal_core::NewEvent {
    let mut e = ev("ChildAdded", "{}");
    e.personal = Some(RawJson::parse(format!(r#"{{"child_name":"{child}"}}"#)).expect("json"));
    e.subjects = vec![family.to_owned()];
    e
}

async fn append(store: &SqliteStore, family: &str, child: &str) -> annal_core::Result<()> {
    store
        .append(req(
            "Family",
            family,
            ExpectedVersion::Any,
            vec![about(family, child), about(family, child)],
        ))
        .await
        .map(|_| ())
}

fn forget(family: &str) -> ForgetRequest {
    ForgetRequest {
        subject: family.to_owned(),
        reason: "asked to be forgotten".into(),
        user_id: None,
        principal: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_refuses_a_subject_another_process_forgot_after_it_used_its_key() {
    let (_dir, path) = fresh();
    let first = open(&path);
    append(&first, "family_1", "Sofía").await.expect("append");
    // The first store's writer now holds family_1's row and data key.
    let second = open(&path);
    second
        .forget_subject(forget("family_1"))
        .await
        .expect("forget");
    match append(&first, "family_1", "Mateo").await {
        Err(Error::SubjectForgotten { subject }) => assert_eq!(subject, "family_1"),
        other => panic!("an append for a forgotten subject must be refused: {other:?}"),
    }
    for part in parts_of(&first, "family_1").await {
        assert_eq!(part, annal_core::privacy::ERASED);
    }
    assert!(first.verify(None, None).await.expect("verify").ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgetting_after_a_rotation_writes_the_new_keks_id_though_the_writer_held_the_old_row() {
    let (_dir, path) = fresh();
    let store = open(&path);
    append(&store, "family_1", "Sofía").await.expect("append");
    // The rotation commits through a connection of its own: the writer's rows (naming
    // the old KEK) must not outlive it.
    let new = annal_core::testkit::privacy::other_kek();
    let new_id = new.id().to_owned();
    assert_eq!(store.rotate_kek(new).await.expect("rotate"), 1);
    store
        .forget_subject(forget("family_1"))
        .await
        .expect("forget");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    let keks: Vec<String> = conn
        .prepare("SELECT kek_id FROM subject_keys")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(keks, vec![new_id]);
    let options = Options {
        keyring: Some(annal_core::testkit::privacy::other_kek()),
        ..Options::default()
    };
    SqliteStore::open_with(&path, options).expect("opens with the new KEK alone");
}

/// What the writer keeps must follow its own forgetting: the subject forgotten in this
/// process is refused at once, the other goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_keeps_its_keys_honours_its_own_forgetting() {
    let (_dir, path) = fresh();
    let store = open(&path);
    for round in 0..3 {
        for family in ["family_1", "family_2"] {
            append(&store, family, &format!("child {round}"))
                .await
                .expect("append");
        }
    }
    store
        .forget_subject(forget("family_2"))
        .await
        .expect("forget");
    append(&store, "family_1", "after").await.expect("append");
    assert!(matches!(
        append(&store, "family_2", "after").await,
        Err(Error::SubjectForgotten { .. })
    ));
    let opened = |parts: Vec<String>| {
        parts
            .iter()
            .filter(|p| *p != annal_core::privacy::ERASED)
            .count()
    };
    assert_eq!(
        (
            opened(parts_of(&store, "family_1").await),
            opened(parts_of(&store, "family_2").await)
        ),
        (8, 0)
    );
}

/// The personal parts of `family`'s events as `store` reads them now.
async fn parts_of(store: &SqliteStore, family: &str) -> Vec<String> {
    store
        .read_all(0, 100, &Filter::default())
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.aggregate_id == family)
        .map(|e| e.personal.map(|p| p.get().to_owned()).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_kept_a_key_reads_erased_once_another_process_forgot_the_subject() {
    let (_dir, path) = fresh();
    let first = open(&path);
    append(&first, "family_1", "Sofía").await.expect("append");
    let before = parts_of(&first, "family_1").await;
    assert!(before.iter().all(|p| p.contains("Sofía")), "{before:?}");
    // The first store's readers now keep family_1's data key.
    open(&path)
        .forget_subject(forget("family_1"))
        .await
        .expect("forget");
    let after = parts_of(&first, "family_1").await;
    assert_eq!(after, vec![annal_core::privacy::ERASED.to_owned(); 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_row_emptied_replaced_or_deleted_by_hand_is_seen_by_the_next_read() {
    for edit in [
        // The row replaced by one under another key id: the events' key is gone.
        "INSERT OR REPLACE INTO subject_keys
           (subject, key_id, kek_id, wrapped_key, created_at)
         SELECT subject, 'k-other', kek_id, wrapped_key, created_at FROM subject_keys
         WHERE subject = 'family_1'",
        "UPDATE subject_keys SET wrapped_key = NULL WHERE subject = 'family_1'",
        "INSERT OR REPLACE INTO subject_keys
           (subject, key_id, kek_id, wrapped_key, created_at)
         SELECT subject, key_id, kek_id, NULL, created_at FROM subject_keys
         WHERE subject = 'family_1'",
        "DELETE FROM subject_keys WHERE subject = 'family_1'",
    ] {
        let (_dir, path) = fresh();
        let store = open(&path);
        append(&store, "family_1", "Sofía").await.expect("append");
        assert!(parts_of(&store, "family_1").await[0].contains("Sofía"));
        let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
        assert_eq!(conn.execute(edit, []).expect("edit"), 1, "{edit}");
        assert_eq!(
            parts_of(&store, "family_1").await,
            vec![annal_core::privacy::ERASED.to_owned(); 2],
            "{edit}"
        );
    }
}

/// Readers racing a forgetting by another process: every read that starts after the
/// forgetting returned shows the parts erased, whatever the other readers kept meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_started_after_a_forgetting_shows_the_part_while_readers_race_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, path) = fresh();
    let store = Arc::new(open(&path));
    for family in ["family_1", "family_2"] {
        append(&store, family, "Sofía").await.expect("append");
    }
    let forgotten = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, forgotten) = (store.clone(), forgotten.clone());
            tokio::spawn(async move {
                let mut after = 0;
                while after < 20 {
                    let started_after = forgotten.load(Ordering::SeqCst);
                    let parts = parts_of(&store, "family_1").await;
                    if started_after {
                        assert_eq!(parts, vec![annal_core::privacy::ERASED.to_owned(); 2]);
                        after += 1;
                    }
                    // The other subject's key stays readable throughout.
                    assert!(parts_of(&store, "family_2").await[0].contains("Sofía"));
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    open(&path)
        .forget_subject(forget("family_1"))
        .await
        .expect("forget");
    forgotten.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.expect("a reader failed");
    }
}
