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
    back_to_version_7(&conn);
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
         DROP TABLE subject_keys; DROP TABLE IF EXISTS event_subjects;
         DELETE FROM schema_version WHERE version > 2;",
    )
    .expect("back to version 2");
    drop(conn);
    let store = SqliteStore::open(&path).expect("migrate");
    assert_eq!(store.head(&[]).await.expect("head"), head);
    streams::check_migrated(&store, &names, kept).await;
}

/// Takes away what version 11 added: the key table's change mark and its triggers.
const UNDO_V11: &str = "DROP TRIGGER key_rows_updated; DROP TRIGGER key_rows_deleted;
         DROP TRIGGER key_rows_replaced;
         DROP TABLE key_changes;";

/// Turns a file back into version 7's layout: `events` as versions 1 to 7 declared it
/// (ids and hashes as text, read from the `events_readable` view version 8 adds, and
/// its uniqueness constraints), its version 4 indexes, and no view.
fn back_to_version_7(conn: &rusqlite::Connection) {
    conn.execute_batch(&format!(
        "{UNDO_V11}
         CREATE TABLE events_v7 (
             position          INTEGER PRIMARY KEY,
             event_id          TEXT    NOT NULL UNIQUE,
             event_type        TEXT    NOT NULL,
             event_version     INTEGER NOT NULL,
             aggregate_type    TEXT    NOT NULL,
             aggregate_id      TEXT    NOT NULL,
             aggregate_version INTEGER NOT NULL,
             recorded_at       TEXT    NOT NULL,
             user_id           TEXT    NOT NULL,
             correlation_id    TEXT,
             causation_id      TEXT,
             data              TEXT    NOT NULL,
             metadata          TEXT    NOT NULL,
             hash              TEXT    NOT NULL,
             principal         TEXT,
             sealed            TEXT,
             UNIQUE (aggregate_id, aggregate_version)
         );
         INSERT INTO events_v7 SELECT * FROM events_readable ORDER BY position;
         DROP VIEW events_readable;
         DROP TRIGGER events_are_immutable;
         DROP TRIGGER events_are_never_deleted;
         DROP TABLE events;
         ALTER TABLE events_v7 RENAME TO events;
         CREATE INDEX events_by_event_type     ON events (event_type, position);
         CREATE INDEX events_by_aggregate_type ON events (aggregate_type, position);
         CREATE INDEX events_by_user_id        ON events (user_id, position);
         CREATE INDEX events_by_correlation_id ON events (correlation_id, position)
             WHERE correlation_id IS NOT NULL;
         CREATE INDEX events_by_causation_id   ON events (causation_id, position)
             WHERE causation_id IS NOT NULL;
         CREATE TRIGGER events_are_immutable BEFORE UPDATE ON events
         BEGIN SELECT RAISE(ABORT, 'events are immutable'); END;
         CREATE TRIGGER events_are_never_deleted BEFORE DELETE ON events
         BEGIN SELECT RAISE(ABORT, 'events are never deleted'); END;
         DELETE FROM schema_version WHERE version > 7;"
    ))
    .expect("back to version 7");
    let text: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE typeof(event_id) = 'text'
               AND typeof(hash) = 'text' AND length(event_id) = 36",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let all: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(text, all, "every row back in text form");
}

/// A version 7 file (ids and hashes as text, correlation ids among them UUIDs and
/// others) is migrated to bytes when opened: every event reads back equal, the chain
/// verifies, lookups by event id and filters by correlation id find the same events,
/// and the file holds fewer bytes per event.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_7_file_gets_its_ids_and_hashes_stored_as_bytes() {
    let Sqlite { _dir, path, store } = fresh().await;
    let uuid = "0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b";
    let mut events = Vec::new();
    for (i, correlation) in [uuid, "enrollment_abc123", uuid].into_iter().enumerate() {
        let mut e = ev("Placed", &format!("{{\"n\":{i}}}"));
        e.correlation_id = Some(correlation.to_owned());
        e.causation_id = Some("0190A5B2-7C3D-7E4F-8A9B-0C1D2E3F4A5B".to_owned());
        events.push(e);
    }
    store
        .append(req("order", "order-1", ExpectedVersion::NoStream, events))
        .await
        .expect("append");
    let before = annal_core::testkit::fixtures::all(&store).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    back_to_version_7(&conn);
    drop(conn);
    let store = SqliteStore::open(&path).expect("migrate");
    assert_eq!(annal_core::testkit::fixtures::all(&store).await, before);
    let first = store
        .event(before[0].event_id)
        .await
        .expect("by id")
        .expect("found");
    assert_eq!(first, before[0]);
    let by_uuid = Filter {
        correlation_ids: vec![uuid.to_owned()],
        ..Filter::default()
    };
    let found = store.read_all(0, 10, &by_uuid).await.expect("filtered");
    assert_eq!(found.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 3]);
    assert!(store.verify_deep(None, None).await.expect("verify").ok);
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let shapes: Vec<(String, String, String, i64)> = conn
        .prepare("SELECT typeof(event_id), typeof(correlation_id), typeof(causation_id), length(hash) FROM events ORDER BY position")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    let blob = || "blob".to_owned();
    let text = || "text".to_owned();
    assert_eq!(
        shapes,
        [
            (blob(), blob(), text(), 32),
            (blob(), text(), text(), 32),
            (blob(), blob(), text(), 32)
        ],
        "canonical UUIDs and hashes as bytes, other ids as their text"
    );
    let unique: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index'
               AND name IN ('events_by_event_id', 'events_by_aggregate')
               AND sql LIKE 'CREATE UNIQUE INDEX%'",
            [],
            |r| r.get(0),
        )
        .expect("indexes");
    assert_eq!(
        unique, 2,
        "both uniqueness rules kept as named unique indexes"
    );
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

    async fn another_process(
        &self,
        keyring: annal_core::privacy::Keyring,
    ) -> Result<SqliteStore, String> {
        open_with_kek(&self.path, Some(keyring)).map_err(|e| e.to_string())
    }

    async fn without_kek(&self) -> Result<SqliteStore, String> {
        let options = annal_sqlite::Options {
            keyring: None,
            without_kek: true,
            ..annal_sqlite::Options::default()
        };
        SqliteStore::open_with(&self.path, options).map_err(|e| e.to_string())
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
    back_to_version_7(&conn);
    conn.execute_batch(
        "ALTER TABLE events DROP COLUMN sealed;
         DROP TABLE subject_keys; DROP TABLE IF EXISTS event_subjects;
         DELETE FROM schema_version WHERE version > 6;",
    )
    .expect("back to version 6");
    drop(conn);
    let store = open_with_kek(&path, Some(annal_core::testkit::privacy::kek())).expect("migrate");
    assert_eq!(annal_core::testkit::fixtures::all(&store).await, before);
    annal_core::testkit::privacy::personal_data_round_trips_on(&store).await;
}

/// A version 9 file (each subject's events in `event_subjects`, written by every commit)
/// opened by this annal: the table is dropped, the index file (of the layout before
/// `by_subject`) is built again with each subject's events, and the export and the
/// snapshot deletion of a forgetting find every event about the subject.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_9_file_loses_event_subjects_and_its_index_file_gets_them() {
    use annal_core::testkit::privacy::kek;
    let Sqlite { _dir, path, store } = fresh_with_kek().await;
    for (family, subject) in [
        ("family_1", "family_1"),
        ("family_2", "family_2"),
        ("family_3", "family_1"),
    ] {
        let mut e = ev("ChildAdded", "{}");
        e.personal = Some(annal_core::RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json"));
        e.subjects = vec![subject.to_owned()];
        store
            .append(req(
                "Family",
                family,
                ExpectedVersion::Any,
                vec![e, ev("Noted", "{}")],
            ))
            .await
            .expect("append");
        let state = annal_core::RawJson::parse(r#"{"children":["Sofía"]}"#).expect("json");
        store
            .save_snapshot(family, 2, "t", state)
            .await
            .expect("snapshot");
    }
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open behind the store's back");
    conn.execute_batch(&format!(
        "CREATE TABLE event_subjects (
             subject  TEXT    NOT NULL,
             position INTEGER NOT NULL,
             PRIMARY KEY (subject, position)
         ) WITHOUT ROWID;
         INSERT INTO event_subjects VALUES ('family_1', 1), ('family_2', 3), ('family_1', 5);
         {UNDO_V11}
         DELETE FROM schema_version WHERE version > 9;"
    ))
    .expect("back to version 9");
    drop(conn);
    let index = rusqlite::Connection::open(path.with_extension("db-index")).expect("index file");
    index
        .execute_batch("DROP TABLE by_subject; PRAGMA user_version = 1;")
        .expect("back to the index file's layout 1");
    drop(index);

    let store = open_with_kek(&path, Some(kek())).expect("migrate");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let (tables, version): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'event_subjects'),
                    (SELECT max(version) FROM schema_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("schema");
    assert_eq!((tables, version), (0, 11));
    // Version 11: the key table's change mark and its three triggers.
    let counted: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema
             WHERE (type = 'trigger' AND name LIKE 'key_rows_%') OR name = 'key_changes'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(counted, 4);
    let index = rusqlite::Connection::open(path.with_extension("db-index")).expect("index file");
    let entries: Vec<(String, i64)> = index
        .prepare("SELECT key, position FROM by_subject ORDER BY position")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    let f = |s: &str, p| (s.to_owned(), p);
    assert_eq!(
        entries,
        [f("family_1", 1), f("family_2", 3), f("family_1", 5)]
    );
    let exported: Vec<u64> = store
        .subject_events("family_1", 0, 10)
        .await
        .expect("export")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(exported, [1, 5]);
    store
        .forget_subject(annal_core::privacy::ForgetRequest {
            subject: "family_1".into(),
            reason: "erasure request".into(),
            user_id: None,
            principal: None,
        })
        .await
        .expect("forget");
    let mut left = Vec::new();
    for family in ["family_1", "family_2", "family_3"] {
        left.push(
            store
                .load_snapshot(family, "t", None)
                .await
                .expect("load")
                .is_some(),
        );
    }
    assert_eq!(left, [false, true, false]);
    assert!(store.verify_deep(None, None).await.expect("verify").ok);
}
