//! The store's tables, in their own PostgreSQL schema, and their migrations.
//!
//! Tables and columns carry the names of the SQLite store (docs/storage.md) and of the
//! API's JSON form: `events`, `snapshots`, `checkpoints`, `schema_version`, plus `head`,
//! the one-row table every commit locks (see [`crate::writer`]). `data` and `metadata`
//! hold the exact JSON text as written (annal reads them back byte for byte); `data_json`
//! and `metadata_json` hold `jsonb` copies for PostgreSQL's JSON operators (NULL in the
//! rare case jsonb cannot represent a payload: a `\u0000` escape, a lone surrogate, a
//! number past `numeric`'s range). A trigger refuses UPDATE, DELETE and TRUNCATE on
//! `events`; the hash chain catches anyone who disables it.
//!
//! Invariants: the schema name was checked by [`crate::config::check_schema`] (so it is
//! safe to splice into SQL, double-quoted); migrations run in one transaction under an
//! advisory lock, so several processes opening a new store at once create it once; a
//! schema written by a newer annal is refused, never misread.

use crate::{StorageFailure, timed};
use std::time::Duration;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 8;

/// The DDL of version 1; `{s}` stands for the quoted schema name.
const V1: &str = r#"
CREATE TABLE {s}.events (
    position          bigint      PRIMARY KEY,       -- global order, 1-based, contiguous
    event_id          uuid        NOT NULL UNIQUE,
    event_type        text        NOT NULL,
    event_version     bigint      NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    recorded_at       timestamptz NOT NULL,          -- microseconds, as hashed
    user_id           text        NOT NULL,
    correlation_id    text,
    causation_id      text,
    data              text        NOT NULL,          -- JSON, exactly as written
    metadata          text        NOT NULL,          -- JSON object, exactly as written
    hash              text        NOT NULL,          -- SHA-256 hex, chained (docs/chain.md)
    data_json         jsonb,                         -- data as jsonb, for JSON operators
    metadata_json     jsonb,                         -- metadata as jsonb
    UNIQUE (aggregate_id, aggregate_version)
);
CREATE INDEX events_by_event_type     ON {s}.events (event_type, position);
CREATE INDEX events_by_aggregate_type ON {s}.events (aggregate_type, position);
CREATE INDEX events_by_correlation_id ON {s}.events (correlation_id, position);
CREATE INDEX events_by_causation_id   ON {s}.events (causation_id, position);
CREATE INDEX events_by_user_id        ON {s}.events (user_id, position);
CREATE INDEX events_by_recorded_at    ON {s}.events (recorded_at);

CREATE FUNCTION {s}.events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable and never deleted: append a compensating event instead';
END $$;
CREATE TRIGGER events_are_immutable BEFORE UPDATE OR DELETE ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.events_are_immutable();
CREATE TRIGGER events_are_never_truncated BEFORE TRUNCATE ON {s}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_are_immutable();

-- The tip of the log. Every commit locks this row (SELECT … FOR UPDATE) before it reads
-- anything, so commits are serialised, positions are contiguous and in commit order.
CREATE TABLE {s}.head (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    position    bigint      NOT NULL,                -- the last committed position (0: none)
    hash        text        NOT NULL,                -- its hash (64 zeros: none)
    recorded_at timestamptz                          -- its time (NULL: none)
);
INSERT INTO {s}.head (position, hash) VALUES (0, repeat('0', 64));

CREATE TABLE {s}.snapshots (
    aggregate_id      text        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_version bigint      NOT NULL,          -- events up to this version applied
    tag               text        NOT NULL,          -- the state's shape
    state             text        NOT NULL,          -- JSON, exactly as written
    state_json        jsonb,                         -- state as jsonb
    created_at        timestamptz NOT NULL,
    PRIMARY KEY (aggregate_id, tag, aggregate_version)
);

CREATE TABLE {s}.checkpoints (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'rebuilding', 'stopped', 'faulted')),
    error_count bigint      NOT NULL DEFAULT 0,
    last_error  text,
    updated_at  timestamptz NOT NULL
);
"#;

/// The DDL of version 2: consumer-group partition leases and member heartbeats.
const V2: &str = r#"
CREATE TABLE {s}.leases (
    group_name text        NOT NULL,
    partition  bigint      NOT NULL,
    owner      text,                             -- NULL: released
    token      bigint      NOT NULL,             -- fencing token, raised by every acquisition
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (group_name, partition)
);

CREATE TABLE {s}.group_members (
    group_name text        NOT NULL,
    member     text        NOT NULL,
    expires_at timestamptz NOT NULL,             -- the heartbeat lapses then
    PRIMARY KEY (group_name, member)
);
"#;

/// The DDL of version 3: one record per stream, kept by the commit that appends to it
/// (`annal_core::stream_record`), filled from the events already stored: each stream's
/// last event, then each metadata stream's last event onto its base stream.
const V3: &str = r#"
CREATE TABLE {s}.streams (
    aggregate_id     text    PRIMARY KEY,
    aggregate_type   text,                       -- NULL: no event yet, only metadata
    version          bigint  NOT NULL,           -- its last event's aggregate_version (0: none)
    tombstoned       boolean NOT NULL,           -- once a $streamDeleted event ended it
    truncate_before  bigint,                     -- "$tb" of its metadata, when a number
    metadata_version bigint  NOT NULL,           -- version of $$<aggregate_id> (0: none)
    metadata         text                        -- that stream's last event's data, if $metadata
);

INSERT INTO {s}.streams (aggregate_id, aggregate_type, version, tombstoned, truncate_before,
                         metadata_version, metadata)
SELECT DISTINCT ON (aggregate_id) aggregate_id, aggregate_type, aggregate_version,
       event_type = '$streamDeleted', NULL::bigint, 0, NULL::text
FROM {s}.events
ORDER BY aggregate_id, aggregate_version DESC;

INSERT INTO {s}.streams (aggregate_id, aggregate_type, version, tombstoned, truncate_before,
                         metadata_version, metadata)
SELECT substr(m.aggregate_id, 3), NULL, 0, false, NULL, m.version,
       CASE WHEN e.event_type = '$metadata' THEN e.data END
FROM {s}.streams m
JOIN {s}.events e ON e.aggregate_id = m.aggregate_id AND e.aggregate_version = m.version
WHERE left(m.aggregate_id, 2) = '$$'
ON CONFLICT (aggregate_id) DO UPDATE SET metadata_version = excluded.metadata_version,
                                          metadata = excluded.metadata;

UPDATE {s}.streams s SET truncate_before = (e.data_json ->> '$tb')::bigint
FROM {s}.events e
WHERE s.metadata IS NOT NULL
  AND e.aggregate_id = '$$' || s.aggregate_id AND e.aggregate_version = s.metadata_version
  AND jsonb_typeof(e.data_json -> '$tb') = 'number'
  AND (e.data_json ->> '$tb') ~ '^[0-9]{1,19}$'
  AND (e.data_json ->> '$tb')::numeric <= 9223372036854775807;
"#;

/// The DDL of version 4: who authenticated each append (`principal`), beside the
/// `user_id` it claims; NULL for events written before (their hashes stay valid: the
/// chain hashes a principal only where there is one).
const V4: &str = "ALTER TABLE {s}.events ADD COLUMN principal text;";

/// The DDL of version 5: a checkpoint may track another log (`source`; NULL: this
/// store's).
const V5: &str = "ALTER TABLE {s}.checkpoints ADD COLUMN source text;";

/// The DDL of version 6: personal data (docs/privacy.md). `sealed` holds an event's
/// encrypted personal part (NULL for events without one: older events and their hashes
/// are untouched); `subject_keys` is the key table, the one table annal deletes from;
/// `event_subjects` finds a subject's events.
const V6: &str = r#"
ALTER TABLE {s}.events ADD COLUMN sealed text;
CREATE TABLE {s}.subject_keys (
    subject            text        PRIMARY KEY,
    key_id             text        NOT NULL UNIQUE,
    kek_id             text        NOT NULL,     -- the key-encryption key that wraps it
    wrapped_key        text,                     -- base64(nonce || sealed key); NULL: forgotten
    created_at         timestamptz NOT NULL,
    forgotten_at       timestamptz,
    forgotten_position bigint                    -- its $subjectForgotten event
);
CREATE TABLE {s}.event_subjects (
    subject  text   NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (subject, position)
);
"#;

/// The DDL of version 7: the nodes of a cluster of `annal serve` processes on this
/// store (`annal_core::cluster`), each with its heartbeat. The leader lease is a row of
/// `leases` (group `$cluster`, partition 0).
const V7: &str = r#"
CREATE TABLE {s}.nodes (
    name        text        PRIMARY KEY,
    instance_id uuid        NOT NULL,            -- new at every start; owns the leader lease
    address     text        NOT NULL,            -- host:port clients reach it at
    started_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL             -- the heartbeat lapses then
);
"#;

/// The DDL of version 8: what readers may see (`crate::writer`, "Durable before
/// visible"). `head.durable_position` is the head a synchronous commit left (its commit
/// returned only once flushed, so the position it shows is durable); `durable` holds,
/// per writer, the highest position that writer confirmed durable by a synchronous
/// commit of its own after a group committed without waiting for the flush. Readers
/// show events up to `greatest(head.durable_position, max(durable.position))`
/// ([`read_cap`]). A store migrated from version 7 holds only synchronous commits, so
/// its head is durable as it is.
const V8: &str = r#"
ALTER TABLE {s}.head ADD COLUMN durable_position bigint;
UPDATE {s}.head SET durable_position = position;
ALTER TABLE {s}.head ALTER COLUMN durable_position SET NOT NULL;
CREATE TABLE {s}.durable (
    writer     uuid        PRIMARY KEY,          -- one store's writer task, new at every open
    position   bigint      NOT NULL,             -- it confirmed every position up to this durable
    updated_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// The highest position readers may see, as an SQL expression over the schema `s`
/// (quoted): every position up to it is committed, durable, and visible in the same
/// snapshot. See [`crate::writer`].
pub fn read_cap(s: &str) -> String {
    format!(
        "greatest((SELECT durable_position FROM {s}.head), (SELECT max(position) FROM {s}.durable))"
    )
}

/// What can go wrong bringing a schema up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] StorageFailure),
    /// The schema was written by a newer annal.
    #[error(
        "schema '{schema}' has version {found}, newer than the {SCHEMA_VERSION} this annal knows: upgrade annal"
    )]
    TooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
    },
}

/// The double-quoted schema identifier.
pub fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Creates or migrates the store's schema, in one transaction under an advisory lock.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    timeout: Option<Duration>,
) -> Result<(), MigrateError> {
    let s = quoted(schema);
    let ctx = "migrating the schema";
    let tx = timed(timeout, ctx, client.transaction()).await?;
    timed(
        timeout,
        ctx,
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('annal schema ' || $1, 0))",
            &[&schema],
        ),
    )
    .await?;
    timed(
        timeout,
        ctx,
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.schema_version (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        )),
    )
    .await?;
    let found: i32 = timed(
        timeout,
        ctx,
        tx.query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.schema_version"),
            &[],
        ),
    )
    .await?
    .try_get(0)
    .map_err(|e| StorageFailure::new(ctx, e))?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew {
            schema: schema.to_owned(),
            found,
        });
    }
    for (version, ddl) in (1..)
        .zip([V1, V2, V3, V4, V5, V6, V7, V8])
        .skip_while(|(v, _)| *v <= found)
    {
        timed(timeout, ctx, tx.batch_execute(&ddl.replace("{s}", &s))).await?;
        timed(
            timeout,
            ctx,
            tx.execute(
                &format!("INSERT INTO {s}.schema_version (version) VALUES ($1)"),
                &[&version],
            ),
        )
        .await?;
    }
    timed(timeout, ctx, tx.commit()).await?;
    Ok(())
}
