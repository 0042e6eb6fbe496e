//! The on-disk schema and its migrations.
//!
//! Tables and columns are named for people who query the file by hand with the sqlite3
//! tool: `events` holds one row per event with the API's field names; `recorded_at` is
//! fixed-width RFC 3339 UTC text, so `WHERE recorded_at >= '2024-10-20'` works. Triggers
//! refuse UPDATE and DELETE on `events`: the log is append-only (the hash chain catches
//! anyone who drops the triggers and edits anyway). `schema_version` records each applied
//! migration; a file from a newer annal is refused, never misread.

use rusqlite::Connection;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 11;

const V1: &str = r#"
CREATE TABLE events (
    position          INTEGER PRIMARY KEY,   -- global order, 1-based, contiguous
    event_id          TEXT    NOT NULL UNIQUE,
    event_type        TEXT    NOT NULL,
    event_version     INTEGER NOT NULL,
    aggregate_type    TEXT    NOT NULL,
    aggregate_id      TEXT    NOT NULL,
    aggregate_version INTEGER NOT NULL,
    recorded_at       TEXT    NOT NULL,      -- UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ
    user_id           TEXT    NOT NULL,
    correlation_id    TEXT,
    causation_id      TEXT,
    data              TEXT    NOT NULL,      -- JSON, exactly as written
    metadata          TEXT    NOT NULL,      -- JSON object, exactly as written
    hash              TEXT    NOT NULL,      -- SHA-256 hex, chained (docs/chain.md)
    UNIQUE (aggregate_id, aggregate_version)
);
CREATE INDEX events_by_event_type     ON events (event_type, position);
CREATE INDEX events_by_aggregate_type ON events (aggregate_type, position);
CREATE INDEX events_by_correlation_id ON events (correlation_id, position);
CREATE INDEX events_by_causation_id   ON events (causation_id, position);
CREATE INDEX events_by_user_id        ON events (user_id, position);
CREATE INDEX events_by_recorded_at    ON events (recorded_at);
CREATE TRIGGER events_are_immutable BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are immutable: append a compensating event instead'); END;
CREATE TRIGGER events_are_never_deleted BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are never deleted: append a compensating event instead'); END;

CREATE TABLE snapshots (
    aggregate_id      TEXT    NOT NULL,
    aggregate_type    TEXT    NOT NULL,
    aggregate_version INTEGER NOT NULL,      -- events up to this version applied
    tag               TEXT    NOT NULL,      -- the state's shape
    state             TEXT    NOT NULL,      -- JSON
    created_at        TEXT    NOT NULL,
    PRIMARY KEY (aggregate_id, tag, aggregate_version)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('running', 'rebuilding', 'stopped', 'faulted')),
    error_count INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    updated_at  TEXT    NOT NULL
);
"#;

/// Version 2: consumer-group partition leases and member heartbeats.
const V2: &str = r#"
CREATE TABLE leases (
    group_name TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    owner      TEXT,                         -- NULL: released
    token      INTEGER NOT NULL,             -- fencing token, raised by every acquisition
    expires_at TEXT    NOT NULL,             -- UTC, like recorded_at
    PRIMARY KEY (group_name, partition)
) WITHOUT ROWID;

CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    member     TEXT NOT NULL,
    expires_at TEXT NOT NULL,                -- the heartbeat lapses then
    PRIMARY KEY (group_name, member)
) WITHOUT ROWID;
"#;

/// Version 3: one record per stream, kept by the commit that appends to it, so an
/// append is checked without reading events (`annal_core::stream_record`). Filled here
/// from the events of a version 2 file: each stream's last event, then each metadata
/// stream's last event onto its base stream.
const V3: &str = r#"
CREATE TABLE streams (
    aggregate_id     TEXT    PRIMARY KEY,
    aggregate_type   TEXT,                   -- NULL: no event yet, only metadata
    version          INTEGER NOT NULL,       -- its last event's aggregate_version (0: none)
    tombstoned       INTEGER NOT NULL,       -- 1 once a $streamDeleted event ended it
    truncate_before  INTEGER,                -- "$tb" of its metadata, when a number
    metadata_version INTEGER NOT NULL,       -- version of $$<aggregate_id> (0: none)
    metadata         TEXT                    -- that stream's last event's data, if $metadata
) WITHOUT ROWID;

INSERT INTO streams (aggregate_id, aggregate_type, version, tombstoned, truncate_before,
                     metadata_version, metadata)
SELECT e.aggregate_id, e.aggregate_type, e.aggregate_version,
       e.event_type = '$streamDeleted', NULL, 0, NULL
FROM (SELECT aggregate_id, max(aggregate_version) AS v FROM events GROUP BY aggregate_id) m
JOIN events e ON e.aggregate_id = m.aggregate_id AND e.aggregate_version = m.v;

INSERT INTO streams (aggregate_id, aggregate_type, version, tombstoned, truncate_before,
                     metadata_version, metadata)
SELECT substr(m.aggregate_id, 3), NULL, 0, 0, NULL, m.version,
       CASE WHEN e.event_type = '$metadata' THEN e.data END
FROM streams m
JOIN events e ON e.aggregate_id = m.aggregate_id AND e.aggregate_version = m.version
WHERE substr(m.aggregate_id, 1, 2) = '$$'
ON CONFLICT (aggregate_id) DO UPDATE SET metadata_version = excluded.metadata_version,
                                          metadata = excluded.metadata;

UPDATE streams SET truncate_before = json_extract(metadata, '$."$tb"')
WHERE metadata IS NOT NULL AND json_valid(metadata)
  AND json_type(metadata, '$."$tb"') = 'integer';
"#;

/// Version 4: fewer B-trees written per event. Reads by time binary-search positions
/// (`recorded_at` never decreases with position), so its index goes; correlation and
/// causation ids, often absent, are indexed only where present.
const V4: &str = r#"
DROP INDEX events_by_recorded_at;
DROP INDEX events_by_correlation_id;
DROP INDEX events_by_causation_id;
CREATE INDEX events_by_correlation_id ON events (correlation_id, position)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX events_by_causation_id   ON events (causation_id, position)
    WHERE causation_id IS NOT NULL;
"#;

/// Version 5: who authenticated each append (`principal`), beside the `user_id` it
/// claims. Events written before have none (NULL), and their hashes stay valid: the
/// chain's recipe hashes a principal only where there is one (docs/chain.md).
const V5: &str = "ALTER TABLE events ADD COLUMN principal TEXT;";

/// Version 6: a checkpoint may track another log (`source`; NULL: this store's).
const V6: &str = "ALTER TABLE checkpoints ADD COLUMN source TEXT;";

/// Version 7: personal data (docs/privacy.md). `sealed` holds an event's encrypted
/// personal part (NULL for every event without one, so older events and their hashes
/// are untouched); `subject_keys` is the key table, the one table annal deletes from
/// (a forgotten subject's `wrapped_key` becomes NULL); `event_subjects` found a
/// subject's events (for export, and for the snapshots a forgetting deletes) until
/// version 10 moved it to the index file.
const V7: &str = r#"
ALTER TABLE events ADD COLUMN sealed TEXT;
CREATE TABLE subject_keys (
    subject            TEXT    PRIMARY KEY,
    key_id             TEXT    NOT NULL UNIQUE,
    kek_id             TEXT    NOT NULL,        -- the key-encryption key that wraps it
    wrapped_key        TEXT,                    -- base64(nonce || sealed key); NULL: forgotten
    created_at         TEXT    NOT NULL,
    forgotten_at       TEXT,
    forgotten_position INTEGER                  -- its $subjectForgotten event
);
CREATE TABLE event_subjects (
    subject  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (subject, position)
) WITHOUT ROWID;
"#;

/// Version 8: ids and hashes stored as bytes ([`crate::ids`]): `event_id` as the
/// UUID's 16 bytes, `correlation_id` and `causation_id` likewise when they are UUIDs in
/// canonical text form (other ids stay text), `hash` as its 32 bytes. About 150 bytes
/// less per event with both ids, in the rows and in the three indexes on them.
///
/// `events` is rebuilt rather than updated in place: its rows are copied in position
/// order into a table declared with the new types, then every index is built by sorting
/// (updating the keys in place walked the random-keyed indexes row by row: 3.5 s against
/// 2.4 s for 200,000 events). Its uniqueness constraints become named unique indexes.
/// A value of any other shape is copied as it is, for reads to report. `events_readable`
/// shows every row with its ids and hash as text, for the sqlite3 tool.
fn v8() -> String {
    let hex_uuid = |b: &str| {
        format!(
            "lower(substr(hex({b}), 1, 8) || '-' || substr(hex({b}), 9, 4) || '-' || \
             substr(hex({b}), 13, 4) || '-' || substr(hex({b}), 17, 4) || '-' || \
             substr(hex({b}), 21, 12))"
        )
    };
    let canonical = |c: &str| {
        format!(
            "typeof({c}) = 'text' AND length({c}) = 36 AND lower({c}) = {c} \
             AND substr({c}, 9, 1) = '-' AND substr({c}, 14, 1) = '-' \
             AND substr({c}, 19, 1) = '-' AND substr({c}, 24, 1) = '-' \
             AND length(unhex(replace({c}, '-', ''))) = 16"
        )
    };
    let to_bytes = |c: &str| {
        format!(
            "CASE WHEN {} THEN unhex(replace({c}, '-', '')) ELSE {c} END",
            canonical(c)
        )
    };
    let readable = |c: &str| {
        format!(
            "CASE WHEN typeof({c}) = 'blob' AND length({c}) = 16 THEN {} ELSE {c} END AS {c}",
            hex_uuid(c)
        )
    };
    format!(
        "CREATE TABLE events_v8 (
             position          INTEGER PRIMARY KEY,
             event_id          BLOB    NOT NULL,  -- 16 bytes; unique: events_by_event_id
             event_type        TEXT    NOT NULL,
             event_version     INTEGER NOT NULL,
             aggregate_type    TEXT    NOT NULL,
             aggregate_id      TEXT    NOT NULL,
             aggregate_version INTEGER NOT NULL,
             recorded_at       TEXT    NOT NULL,
             user_id           TEXT    NOT NULL,
             correlation_id,                      -- a UUID's 16 bytes, or text
             causation_id,                        -- likewise
             data              TEXT    NOT NULL,
             metadata          TEXT    NOT NULL,
             hash              BLOB    NOT NULL,  -- 32 bytes
             principal         TEXT,
             sealed            TEXT
         );
         INSERT INTO events_v8 (position, event_id, event_type, event_version, aggregate_type,
             aggregate_id, aggregate_version, recorded_at, user_id, correlation_id,
             causation_id, data, metadata, hash, principal, sealed)
         SELECT position, {}, event_type, event_version, aggregate_type, aggregate_id,
             aggregate_version, recorded_at, user_id, {}, {}, data, metadata,
             CASE WHEN typeof(hash) = 'text' AND length(unhex(hash)) = 32
                  THEN unhex(hash) ELSE hash END,
             principal, sealed
         FROM events ORDER BY position;
         DROP TRIGGER events_are_immutable;
         DROP TRIGGER events_are_never_deleted;
         DROP TABLE events;
         ALTER TABLE events_v8 RENAME TO events;
         CREATE UNIQUE INDEX events_by_event_id  ON events (event_id);
         CREATE UNIQUE INDEX events_by_aggregate ON events (aggregate_id, aggregate_version);
         -- (Version 8 also had five filter indexes here; this build always goes on to
         -- version 9 in the same transaction, which moves them to the index file.)
         CREATE TRIGGER events_are_immutable BEFORE UPDATE ON events
         BEGIN SELECT RAISE(ABORT, 'events are immutable: append a compensating event instead'); END;
         CREATE TRIGGER events_are_never_deleted BEFORE DELETE ON events
         BEGIN SELECT RAISE(ABORT, 'events are never deleted: append a compensating event instead'); END;
         CREATE VIEW events_readable AS
         SELECT position, {}, event_type, event_version, aggregate_type, aggregate_id,
                aggregate_version, recorded_at, user_id, {}, {}, data, metadata,
                CASE WHEN typeof(hash) = 'blob' THEN lower(hex(hash)) ELSE hash END AS hash,
                principal, sealed
         FROM events;",
        to_bytes("event_id"),
        to_bytes("correlation_id"),
        to_bytes("causation_id"),
        readable("event_id"),
        readable("correlation_id"),
        readable("causation_id"),
    )
}

/// Version 9: the five indexes only filtered reads use move to the index file
/// ([`crate::index`]), filled from the log by the store's indexer; the store file keeps
/// the indexes every append needs (event id, aggregate id and version).
const V9: &str = "
DROP INDEX IF EXISTS events_by_event_type;
DROP INDEX IF EXISTS events_by_aggregate_type;
DROP INDEX IF EXISTS events_by_user_id;
DROP INDEX IF EXISTS events_by_correlation_id;
DROP INDEX IF EXISTS events_by_causation_id;
";

/// Version 10: the subject index (`event_subjects`, written by every commit with
/// personal data, one row per event and subject on random keys) moves to the index
/// file as `by_subject`, filled by the indexer from each event's sealed part
/// ([`crate::index`]); the first open after it builds that table from the log.
const V10: &str = "DROP TABLE IF EXISTS event_subjects;";

/// Version 11: a mark of changes to the key table that can make a data key read before
/// useless (an update, a deletion, an insert that replaces a row: a forgetting, a
/// rotation, an edit by hand). Triggers set it to a new random value in the transaction
/// of the change, whoever makes it (any process, any version of annal, the `sqlite3`
/// shell), so a reader that kept data keys from earlier pages uses them only while the
/// mark it reads with its events is the one they were read under ([`crate::privacy`]).
/// Random rather than counted, so that a file restored from an older copy never shows a
/// mark it showed before with other rows. Inserting a new subject's row does not change
/// it: no reader holds a key it replaces (readers never keep a key id without a row).
/// A migration that rebuilds `subject_keys` must create these triggers again.
const V11: &str = "
CREATE TABLE key_changes (n INTEGER NOT NULL);
INSERT INTO key_changes (n) VALUES (random());
CREATE TRIGGER key_rows_updated AFTER UPDATE ON subject_keys
BEGIN UPDATE key_changes SET n = random(); END;
CREATE TRIGGER key_rows_deleted AFTER DELETE ON subject_keys
BEGIN UPDATE key_changes SET n = random(); END;
CREATE TRIGGER key_rows_replaced BEFORE INSERT ON subject_keys
WHEN EXISTS (SELECT 1 FROM subject_keys WHERE subject = NEW.subject OR key_id = NEW.key_id)
BEGIN UPDATE key_changes SET n = random(); END;
";

/// What can go wrong bringing a file's schema up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    /// The file was written by a newer annal.
    #[error(
        "the store file has schema version {found}, newer than the {SCHEMA_VERSION} this annal knows: upgrade annal"
    )]
    TooNew {
        /// The file's version.
        found: i64,
    },
}

/// Creates or migrates the schema, in one immediate transaction (safe when several
/// processes open the same new file at once).
pub fn migrate(conn: &mut Connection, now: &str) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )?;
    let found: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    let v8 = v8();
    for (version, ddl) in (1..)
        .zip([V1, V2, V3, V4, V5, V6, V7, &v8, V9, V10, V11])
        .skip_while(|(v, _)| *v <= found)
    {
        if version == 8 && found > 0 {
            let events: i64 =
                tx.query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
                    r.get(0)
                })?;
            tracing::info!(
                events,
                "schema version 8: rebuilding the events table with ids and hashes as bytes \
                 (once; about 12 s per million events on a 2-core machine)"
            );
        }
        tx.execute_batch(ddl)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, now],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_file_is_migrated_to_the_current_version_keeping_its_data() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .expect("version table");
        conn.execute_batch(V1).expect("v1");
        conn.execute_batch(
            "INSERT INTO schema_version VALUES (1, '2024-01-01T00:00:00.000000Z');
             INSERT INTO checkpoints VALUES ('p', 0, 'running', 0, NULL, '2024-01-01T00:00:00.000000Z');",
        )
        .expect("v1 content");
        migrate(&mut conn, "2024-02-01T00:00:00.000000Z").expect("migrate");
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let leases: i64 = conn
            .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
            .expect("leases table");
        assert_eq!(leases, 0);
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0))
            .expect("checkpoints");
        assert_eq!(kept, 1);
        migrate(&mut conn, "2024-03-01T00:00:00.000000Z").expect("migrating again is a no-op");
    }
}
