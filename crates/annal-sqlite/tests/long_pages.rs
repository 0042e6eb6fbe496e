//! Long pages are read on two threads (crates/annal-sqlite/src/page.rs): the reading
//! thread steps the rows while a second thread checks chunks of 128 against their
//! hashes and opens their personal parts with kept data keys. These tests read pages of
//! several chunks and a tail, and check that an edit anywhere on them is caught (inside a
//! chunk, on a chunk's first event, in the tail), and that a forgetting by another store
//! on the same file between two reads is seen by every chunk of the next read.

use annal_core::privacy::{ERASED, ForgetRequest};
use annal_core::testkit::fixtures::{ev, req};
use annal_core::{Direction, Error, ExpectedVersion, Filter, RawJson, RecordedEvent, Store};
use annal_sqlite::{Options, SqliteStore};

/// Events in the test log: seven chunks of 128 and a tail of 104.
const EVENTS: u64 = 1000;

fn open(path: &std::path::Path) -> SqliteStore {
    let options = Options {
        keyring: Some(annal_core::testkit::privacy::kek()),
        ..Options::default()
    };
    SqliteStore::open_with(path, options).expect("open")
}

/// Event `i` (from 0): personal for `family_{i % 5}` when `i` is even, plain otherwise.
fn event(i: u64) -> annal_core::NewEvent {
    let mut e = ev("Paid", &format!(r#"{{"n":{i}}}"#));
    if i % 2 == 0 {
        e.personal = Some(RawJson::parse(format!(r#"{{"child":"c{i}"}}"#)).expect("json"));
        e.subjects = vec![format!("family_{}", i % 5)];
    }
    e
}

/// A store at `path` holding [`EVENTS`] events, all in the aggregate `family_all`.
async fn filled(path: &std::path::Path) -> SqliteStore {
    let store = open(path);
    for batch in 0..EVENTS / 100 {
        let events = (batch * 100..(batch + 1) * 100).map(event).collect();
        store
            .append(req("Family", "family_all", ExpectedVersion::Any, events))
            .await
            .expect("append");
    }
    store
}

async fn whole_log(store: &SqliteStore) -> annal_core::Result<Vec<RecordedEvent>> {
    store.read_all(0, 5000, &Filter::default()).await
}

async fn whole_aggregate(store: &SqliteStore) -> annal_core::Result<Vec<RecordedEvent>> {
    store
        .read_aggregate("family_all", Direction::Forward, None, 5000)
        .await
}

/// Runs `sql` on the file behind the store's back, with the immutability guard off.
fn behind_the_back(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("open behind the store's back");
    conn.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS events_are_immutable; {sql}"
    ))
    .expect("edit");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_anywhere_on_a_long_page_is_reported_and_nothing_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = filled(&path).await;
    assert_eq!(whole_log(&store).await.expect("read").len(), 1000);
    // The first event, the last of a chunk, the first of the next (its predecessor is in
    // another chunk), one inside a chunk, one in the tail; plain and personal ones.
    for position in [1u64, 128, 129, 300, 700, 999] {
        behind_the_back(
            &path,
            &format!("UPDATE events SET data = '{{\"n\":-1}}' WHERE position = {position}"),
        );
        for read in [whole_log(&store).await, whole_aggregate(&store).await] {
            match read {
                Err(Error::Corrupt(why)) => assert!(
                    why.contains(&format!("position {position} ")),
                    "position {position}: {why}"
                ),
                other => panic!(
                    "an edit at {position} was served: {:?}",
                    other.map(|e| e.len())
                ),
            }
        }
        behind_the_back(
            &path,
            &format!(
                "UPDATE events SET data = '{{\"n\":{}}}' WHERE position = {position}",
                position - 1
            ),
        );
        assert_eq!(whole_log(&store).await.expect("read back").len(), 1000);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_part_of_a_long_page_reads_as_written_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = filled(&dir.path().join("annal.db")).await;
    // The first read finds no kept keys; the second opens with the kept ones.
    for _ in 0..2 {
        for events in [whole_log(&store).await, whole_aggregate(&store).await] {
            let events = events.expect("read");
            assert_eq!(events.len(), 1000);
            for (i, e) in (0u64..).zip(&events) {
                assert_eq!(e.position, i + 1);
                assert_eq!(e.data.get(), format!(r#"{{"n":{i}}}"#));
                if i % 2 == 0 {
                    let child = format!(r#"{{"child":"c{i}"}}"#);
                    assert_eq!(e.personal.as_ref().map(RawJson::get), Some(child.as_str()));
                    assert_eq!(e.subjects, [format!("family_{}", i % 5)]);
                } else {
                    assert_eq!(e.personal, None);
                    assert!(e.subjects.is_empty());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_page_read_after_another_store_forgot_a_subject_shows_it_erased_in_every_chunk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = filled(&path).await;
    // Two reads: the second opened every chunk with data keys kept from the first.
    whole_log(&store).await.expect("read");
    whole_log(&store).await.expect("read");
    let other = open(&path);
    other
        .forget_subject(ForgetRequest {
            subject: "family_2".into(),
            reason: "asked to be forgotten".into(),
            user_id: None,
            principal: None,
        })
        .await
        .expect("forget");
    for events in [whole_log(&store).await, whole_aggregate(&store).await] {
        let events = events.expect("read");
        let erased = events
            .iter()
            .filter(|e| e.subjects == ["family_2"])
            .inspect(|e| assert_eq!(e.personal.as_ref().map(RawJson::get), Some(ERASED)))
            .count();
        assert_eq!(erased, 100);
        let readable = events
            .iter()
            .filter(|e| e.subjects == ["family_4"])
            .filter(|e| e.personal.as_ref().is_some_and(|p| p.get() != ERASED))
            .count();
        assert_eq!(readable, 100);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_edits_on_a_long_page_the_first_in_the_pages_order_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = filled(&path).await;
    for position in [129, 700] {
        behind_the_back(
            &path,
            &format!("UPDATE events SET data = '{{\"n\":-1}}' WHERE position = {position}"),
        );
    }
    // Whichever thread meets its edit first, the error names 129 reading forwards and
    // 700 reading the stream backwards, as a read on one thread does.
    for _ in 0..5 {
        for (read, first) in [
            (whole_log(&store).await, 129),
            (whole_aggregate(&store).await, 129),
            (
                store
                    .read_aggregate("family_all", Direction::Backward, None, 5000)
                    .await,
                700,
            ),
        ] {
            match read {
                Err(Error::Corrupt(why)) => {
                    assert!(why.contains(&format!("position {first} ")), "{why}")
                }
                other => panic!("edits were served: {:?}", other.map(|e| e.len())),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_read_among_others_is_checked_both_ways() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = open(&path);
    // Two streams interleaved: no event's predecessor is in its own stream's page.
    for i in 0..600u64 {
        let family = if i % 2 == 0 { "family_a" } else { "family_b" };
        store
            .append(req("Family", family, ExpectedVersion::Any, vec![event(i)]))
            .await
            .expect("append");
    }
    for direction in [Direction::Forward, Direction::Backward] {
        let events = store
            .read_aggregate("family_a", direction, None, 1000)
            .await
            .expect("read");
        assert_eq!(events.len(), 300);
        assert!(events.iter().all(|e| e.personal.is_some()));
    }
    behind_the_back(
        &path,
        "UPDATE events SET data = '{\"n\":-1}' WHERE position = 301",
    );
    for direction in [Direction::Forward, Direction::Backward] {
        match store
            .read_aggregate("family_a", direction, None, 1000)
            .await
        {
            Err(Error::Corrupt(why)) => assert!(why.contains("position 301 "), "{why}"),
            other => panic!("an edit was served: {:?}", other.map(|e| e.len())),
        }
    }
}
