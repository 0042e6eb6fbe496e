//! The filter indexes and the subject index: a file of their own beside the store file,
//! written by a thread of their own (the indexer) behind the writer.
//!
//! The store file keeps the indexes every append needs: positions (the table's key), the
//! event id and the aggregate id with its version (both unique). The five that only
//! filtered reads use (event type, aggregate type, user id, correlation id, causation id)
//! are tables `(key, position)` in `<store file>-index` ([`path_of`]), filled by the
//! indexer from the durable log in batches, on the other core. An append then writes three
//! B-trees instead of eight, and a one-event commit about half as many WAL pages.
//!
//! Beside them, `by_subject (key, position)` lists each data subject's events (the
//! subjects an event's sealed personal part names, read from `events.sealed`;
//! docs/privacy.md), for the subject access export and for the snapshots a forgetting
//! deletes (`privacy.rs`): one row per event and subject on random keys, which dirtied
//! about a hundred pages of the store file per commit of a hundred personal events
//! while it was written inside the commit (schema version 10 moved it here). An event whose sealed part cannot be read gets one entry under
//! [`UNREADABLE`] instead, so that every reader of subjects meets it (and reports it, or
//! errs on the side of privacy) whether or not it is indexed yet.
//!
//! Invariants:
//! - **the index file describes a prefix of the log**: `indexed.position` is the last
//!   position it covers: every event at or below it has its entries, no event above it
//!   has any; `indexed.hash` is that event's hash. Entries and the prefix move in one
//!   transaction;
//! - **only durable events are indexed**: the indexer reads the log through the
//!   durability cap ([`crate::durable`]), so the prefix is never ahead of what a crash of
//!   the machine keeps;
//! - **a filtered read gives the same answer however far the indexer lags**: it takes
//!   the entries up to the prefix (never past the log its own snapshot holds) and tests
//!   every event above it directly ([`crate::filter`]); and each event an entry leads to
//!   is tested against the whole filter again, so an entry that disagrees with its event
//!   can make a read slower, never wrong. Reads by subject do the same, testing an
//!   event's sealed part (`privacy::subject_events`); a forgetting takes the
//!   aggregates of the subject's entries up to the prefix and tests every event above it
//!   inside the writer's commit (`privacy::forget_snapshots`);
//! - **the index file holds nothing the log does not**: when it is missing, of another
//!   version, or does not match the log (its prefix is past the log's end, or names
//!   another hash: a restored or replaced store file), it is emptied and filled again
//!   from the log when the store opens; a store opens once its index has caught up;
//! - it is written with `synchronous=NORMAL`: a crash may lose its last batches, which
//!   are indexed again, never its consistency with itself (SQLite's WAL) or the log.

#[cfg(test)]
mod hold_back_tests;
mod indexer;
#[cfg(test)]
mod tests;

pub(crate) use indexer::subject_keys;
pub use indexer::{Indexer, MOST_LAG, Nudge, catch_up};

use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The index file's layout version (`PRAGMA user_version`): 1, the five filter indexes;
/// 2, and `by_subject` (a file of layout 1 that matches the log gains it, filled from the
/// events with a sealed part up to its prefix); any other is rebuilt.
const LAYOUT: i64 = 2;

/// The table of each subject's events: `(key, position)`, keyed by both; the key is
/// the subject (text), or [`UNREADABLE`].
pub const BY_SUBJECT: &str = "by_subject";

/// The `by_subject` key of an event whose sealed part cannot be read: a BLOB, which no
/// subject (text) equals.
pub const UNREADABLE: &[u8] = &[0];

/// The schema name the index file is attached under on read connections.
pub const SCHEMA: &str = "idx";

/// An indexed column of `events` and the table its entries are in, in the order a
/// filtered read prefers one to lead it (the most selective first).
#[derive(Debug, Clone, Copy)]
pub struct Indexed {
    /// The column of `events`.
    pub column: &'static str,
    /// The table in the index file: `(key, position)`, keyed by both.
    pub table: &'static str,
}

/// Every indexed column, in the order a filtered read prefers one to lead it.
pub const INDEXED: [Indexed; 5] = [
    Indexed {
        column: "correlation_id",
        table: "by_correlation_id",
    },
    Indexed {
        column: "causation_id",
        table: "by_causation_id",
    },
    Indexed {
        column: "event_type",
        table: "by_event_type",
    },
    Indexed {
        column: "aggregate_type",
        table: "by_aggregate_type",
    },
    Indexed {
        column: "user_id",
        table: "by_user_id",
    },
];

/// The index file of the store file at `store`.
pub fn path_of(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push("-index");
    PathBuf::from(p)
}

/// Opens the index file for writing (creating it private, like the store file).
pub fn open_writer(store: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path_of(store))?;
    conn.busy_timeout(crate::open::BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Random keys (ids, subjects) land all over the larger tables: a batch reads and
    // rewrites a page for most of its entries. A page cache of up to 128 MiB (taken only
    // as pages are used), reads through mmap, and a WAL checkpointed every 128 MiB
    // rather than 32 (a page rewritten by several batches is copied once) took the
    // preload of a 2,000,000-event store from 51,552 to 61,553 events/s (medians of
    // three alternated rounds, docs/storage.md).
    conn.pragma_update(None, "cache_size", -131_072)?;
    conn.pragma_update(None, "mmap_size", 2i64 << 30)?;
    conn.pragma_update(None, "wal_autocheckpoint", 32_768)?;
    Ok(conn)
}

/// Attaches the index file to a read connection as [`SCHEMA`].
pub fn attach(conn: &Connection, store: &Path) -> rusqlite::Result<()> {
    let file = path_of(store);
    conn.execute(
        &format!("ATTACH DATABASE ?1 AS {SCHEMA}"),
        [file.to_string_lossy()],
    )?;
    conn.pragma_update(Some(SCHEMA), "cache_size", -8192)?;
    conn.pragma_update(Some(SCHEMA), "mmap_size", 256i64 << 20)?;
    Ok(())
}

/// Creates the index file's tables, or empties them when the file is of another layout
/// or does not match the log `main` holds (see the module's invariants). Returns whether
/// it was emptied.
pub fn prepare(idx: &mut Connection, main: &Connection) -> rusqlite::Result<bool> {
    let tx = idx.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let layout: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let fresh = layout == 0
        && tx
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n == 0)?;
    let mut emptied = false;
    // Only layouts with an `indexed` table are compared with the log.
    let matched = if !fresh && (layout == 1 || layout == LAYOUT) {
        matched_prefix(&tx, main)?
    } else {
        None
    };
    if let (1, Some(prefix)) = (layout, matched) {
        // Layout 1 lacks only `by_subject`: fill it for the prefix the other tables
        // cover, from the events with a sealed part, instead of indexing everything
        // again.
        let started = std::time::Instant::now();
        create_table(&tx, BY_SUBJECT)?;
        let personal = indexer::subjects_up_to(&tx, main, prefix)?;
        tx.pragma_update(None, "user_version", LAYOUT)?;
        tracing::info!(
            up_to = prefix,
            personal,
            seconds = started.elapsed().as_secs_f64(),
            "the index file gained its subject index (layout 1 to 2)"
        );
    } else if layout != LAYOUT || fresh {
        if !fresh {
            tracing::warn!(
                found = layout,
                "the index file is of another layout: building it again from the log"
            );
            emptied = true;
        }
        drop_all(&tx)?;
        create(&tx)?;
    } else if matched.is_none() {
        tracing::warn!(
            "the index file does not match the store file's log (restored or replaced?): \
             building it again from the log"
        );
        for table in INDEXED.iter().map(|ix| ix.table).chain([BY_SUBJECT]) {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        tx.execute("UPDATE indexed SET position = 0, hash = NULL", [])?;
        emptied = true;
    }
    tx.commit()?;
    Ok(emptied)
}

fn drop_all(tx: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = tx
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tables {
        tx.execute(
            &format!("DROP TABLE IF EXISTS \"{}\"", t.replace('"', "\"\"")),
            [],
        )?;
    }
    Ok(())
}

fn create(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE indexed (
             id       INTEGER PRIMARY KEY CHECK (id = 1),
             position INTEGER NOT NULL,  -- the last position indexed (0: none)
             hash     BLOB               -- its event's hash
         );
         INSERT INTO indexed VALUES (1, 0, NULL);",
    )?;
    for table in INDEXED.iter().map(|ix| ix.table).chain([BY_SUBJECT]) {
        create_table(tx, table)?;
    }
    tx.pragma_update(None, "user_version", LAYOUT)
}

fn create_table(tx: &Connection, table: &str) -> rusqlite::Result<()> {
    // The key column is untyped: ids are stored as the log stores them (16 bytes or
    // text, crate::ids), and compared the same way.
    tx.execute_batch(&format!(
        "CREATE TABLE {table} (key NOT NULL, position INTEGER NOT NULL, \
         PRIMARY KEY (key, position)) WITHOUT ROWID"
    ))
}

/// The index file's prefix on `idx`, if it is a prefix of the log in `main` (its last
/// position is in the log with the same hash, or it is empty); `None` when it is not.
pub(crate) fn matched_prefix(idx: &Connection, main: &Connection) -> rusqlite::Result<Option<i64>> {
    let (position, hash): (i64, Option<Vec<u8>>) =
        idx.query_row("SELECT position, hash FROM indexed", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if position == 0 {
        return Ok(Some(0));
    }
    let in_log: Option<Vec<u8>> = main
        .query_row(
            "SELECT CASE WHEN typeof(hash) = 'blob' THEN hash ELSE unhex(hash) END \
             FROM events WHERE position = ?1",
            [position],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok((in_log.is_some() && in_log == hash).then_some(position))
}

/// The last position a filtered read may take from the index file on `conn` (a read
/// connection with it attached): its prefix, but never past the log in `conn`'s own
/// snapshot of the store file (the two files' snapshots are taken apart).
pub fn covered(conn: &Connection) -> rusqlite::Result<u64> {
    let (indexed, head): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT (SELECT position FROM {SCHEMA}.indexed), \
                    (SELECT coalesce(max(position), 0) FROM main.events)"
        ))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(u64::try_from(indexed.min(head)).unwrap_or(0))
}
