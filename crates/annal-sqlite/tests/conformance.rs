//! The whole conformance suite and the subscription suite (subscriptions, projections,
//! triggers, consumer groups) against the embedded SQLite store, one file per test; and
//! what only this backend can show: a file migrated from an old schema, and values
//! edited into the file by hand reported as corrupt.

use annal_core::testkit::fixtures::{ev, req};
use annal_core::testkit::{Harness, streams};
use annal_core::{CheckpointWrite, ExpectedVersion, Filter, Store};
use annal_sqlite::SqliteStore;
use async_trait::async_trait;

struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: SqliteStore,
}

async fn fresh() -> Sqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = SqliteStore::open(&path).expect("open store");
    Sqlite {
        _dir: dir,
        path,
        store,
    }
}

#[async_trait]
impl Harness for Sqlite {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn tamper_data(&self, position: u64, data: &str) {
        let conn = rusqlite::Connection::open(&self.path).expect("open behind the store's back");
        conn.execute_batch("DROP TRIGGER events_are_immutable")
            .expect("drop guard");
        let n = conn
            .execute(
                "UPDATE events SET data = ?1 WHERE position = ?2",
                rusqlite::params![data, position as i64],
            )
            .expect("edit");
        assert_eq!(n, 1);
    }

    async fn reopen(&mut self) {
        self.store = SqliteStore::open(&self.path).expect("reopen");
    }
}

annal_core::conformance_suite!(fresh);
annal_core::subscription_suite!(fresh);
annal_core::stream_suite!(fresh);

#[tokio::test(flavor = "multi_thread")]
async fn a_principal_is_recorded_read_back_and_chained() {
    annal_core::testkit::append::a_principal_is_recorded_read_back_and_chained(fresh().await).await;
}

/// A version 2 file (no stream records, the old event indexes) is migrated when opened:
/// each stream's record is rebuilt from its events, equal to the one the writer kept,
/// and the stream rules hold on it at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_file_gets_the_stream_records_the_writer_would_have_kept() {
    let Sqlite { _dir, path, store } = fresh().await;
    let names = streams::populate_streams(&store).await;
    let kept = streams::records(&store, &names).await;
    let head = store.head(&[]).await.expect("head");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    conn.execute_batch(
        "DROP TABLE streams;
         DROP INDEX events_by_correlation_id;
         DROP INDEX events_by_causation_id;
         CREATE INDEX events_by_correlation_id ON events (correlation_id, position);
         CREATE INDEX events_by_causation_id   ON events (causation_id, position);
         CREATE INDEX events_by_recorded_at    ON events (recorded_at);
         ALTER TABLE events DROP COLUMN principal;
         ALTER TABLE checkpoints DROP COLUMN source;
         ALTER TABLE events DROP COLUMN sealed;
         DROP TABLE subject_keys; DROP TABLE event_subjects;
         DELETE FROM schema_version WHERE version > 2;",
    )
    .expect("back to version 2");
    drop(conn);
    let store = SqliteStore::open(&path).expect("migrate");
    assert_eq!(store.head(&[]).await.expect("head"), head);
    streams::check_migrated(&store, &names, kept).await;
}

/// Edits the file behind the store's back (the events guard dropped first).
fn tamper(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("open behind the store's back");
    conn.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS events_are_immutable; {sql}"
    ))
    .expect("tamper");
}

fn corrupt_message<T: std::fmt::Debug>(r: annal_core::Result<T>) -> String {
    match r {
        Err(annal_core::Error::Corrupt(m)) => m,
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// A negative version written into the file by hand is reported as corrupt, naming the
/// column, by reads and by the writer: never wrapped into a huge version.
#[tokio::test(flavor = "multi_thread")]
async fn a_negative_version_edited_into_the_file_is_reported_corrupt_not_wrapped() {
    let Sqlite { _dir, path, store } = fresh().await;
    let two = vec![ev("Placed", "{}"), ev("Paid", "{}")];
    store
        .append(req("order", "order-1", ExpectedVersion::NoStream, two))
        .await
        .expect("append");
    tamper(
        &path,
        "UPDATE events SET aggregate_version = -2 WHERE position = 2;
         UPDATE streams SET version = -2 WHERE aggregate_id = 'order-1';",
    );
    let read = corrupt_message(store.read_all(0, 10, &Filter::default()).await);
    assert!(read.contains("aggregate_version"), "{read}");
    let record = corrupt_message(store.stream("order-1").await);
    assert!(
        record.contains("streams.version") && record.contains("-2"),
        "{record}"
    );
    let more = vec![ev("Shipped", "{}")];
    let append = store
        .append(req("order", "order-1", ExpectedVersion::Any, more))
        .await;
    assert!(corrupt_message(append).contains("streams.version"));
}

/// A negative checkpoint position or lease token written into the file by hand is
/// reported as corrupt, naming the column.
#[tokio::test(flavor = "multi_thread")]
async fn a_negative_checkpoint_position_or_lease_token_is_reported_corrupt_not_wrapped() {
    let Sqlite { _dir, path, store } = fresh().await;
    store
        .put_checkpoint(CheckpointWrite::new("billing", 0))
        .await
        .expect("checkpoint");
    store
        .acquire_lease("g", 0, "m", std::time::Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("free");
    tamper(
        &path,
        "UPDATE checkpoints SET position = -5 WHERE name = 'billing';
         UPDATE leases SET token = -1;",
    );
    let checkpoint = corrupt_message(store.checkpoint("billing").await);
    assert!(checkpoint.contains("checkpoints.position") && checkpoint.contains("-5"));
    assert!(corrupt_message(store.leases("g").await).contains("leases.token"));
}

/// A store opened with the test KEK, for the personal-data cases.
async fn fresh_with_kek() -> Sqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("annal.db");
    let store = open_with_kek(&path, Some(annal_core::testkit::privacy::kek())).expect("open");
    Sqlite {
        _dir: dir,
        path,
        store,
    }
}

fn open_with_kek(
    path: &std::path::Path,
    keyring: Option<annal_core::privacy::Keyring>,
) -> Result<SqliteStore, annal_sqlite::OpenError> {
    let options = annal_sqlite::Options {
        keyring,
        ..annal_sqlite::Options::default()
    };
    SqliteStore::open_with(path, options)
}

#[async_trait]
impl annal_core::testkit::privacy::PrivacyHarness for Sqlite {
    async fn reopen_with(
        &mut self,
        keyring: Option<annal_core::privacy::Keyring>,
    ) -> Result<(), String> {
        let working = self.store.clone();
        drop(std::mem::replace(&mut self.store, working));
        match open_with_kek(&self.path, keyring) {
            Ok(s) => {
                self.store = s;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

annal_core::privacy_suite!(fresh_with_kek);

/// A version 6 file (before personal data) holding events migrates to version 7 when
/// opened with a KEK: its events and their hashes are untouched and verify, and it then
/// takes personal data.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_6_file_with_events_takes_personal_data_once_migrated() {
    let Sqlite { _dir, path, store } = fresh().await;
    annal_core::testkit::fixtures::seed_family(&store, "family_1", 5).await;
    let before = annal_core::testkit::fixtures::all(&store).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    conn.execute_batch(
        "ALTER TABLE events DROP COLUMN sealed;
         DROP TABLE subject_keys; DROP TABLE event_subjects;
         DELETE FROM schema_version WHERE version > 6;",
    )
    .expect("back to version 6");
    drop(conn);
    let store = open_with_kek(&path, Some(annal_core::testkit::privacy::kek())).expect("migrate");
    assert_eq!(annal_core::testkit::fixtures::all(&store).await, before);
    annal_core::testkit::privacy::personal_data_round_trips_on(&store).await;
}
