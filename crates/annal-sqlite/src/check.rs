//! The embedded store's own consistency checks, for a deep verify: SQLite's
//! `integrity_check` (every page, and every index entry against its row: an event that
//! an index lost would otherwise be "not found" by id while it exists), the stream
//! records against the log they summarise, and the index file against the log.
//!
//! Invariants: read-only; every finding is a sentence naming what is wrong and where,
//! at most [`MOST`] of each kind; a file too damaged to run a check on is itself a
//! finding, not an error.

use crate::rows::db;
use annal_core::Result;
use rusqlite::Connection;

/// Most findings of one kind reported.
pub const MOST: i64 = 20;

/// What is wrong with the file, if anything.
pub fn problems(conn: &Connection) -> Result<Vec<String>> {
    let mut found = Vec::new();
    match integrity(conn) {
        Ok(mut messages) => found.append(&mut messages),
        Err(e) => found.push(format!("SQLite cannot check the file: {e}")),
    }
    match streams(conn) {
        Ok(mut messages) => found.append(&mut messages),
        Err(e) => found.push(format!("the stream records cannot be checked: {e}")),
    }
    match index(conn) {
        Ok(mut messages) => found.append(&mut messages),
        Err(e) => found.push(format!("the index file cannot be checked: {e} ({REBUILD})")),
    }
    Ok(found)
}

/// What to do about a damaged index file.
const REBUILD: &str = "remove the store file's -index file while no annal has the store \
                       open: it is built again from the log when the store opens";

/// The index file ([`crate::index`]): SQLite's `integrity_check` of it, entries up to
/// its prefix that disagree with their event, and events up to it missing an entry.
fn index(conn: &Connection) -> Result<Vec<String>> {
    use crate::index::{INDEXED, SCHEMA, covered};
    let mut found: Vec<String> = conn
        .prepare(&format!("PRAGMA {SCHEMA}.integrity_check({MOST})"))
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)?
        .into_iter()
        .filter(|m| m != "ok")
        .map(|m| format!("SQLite integrity_check of the index file: {m} ({REBUILD})"))
        .collect();
    let up_to = covered(conn).map_err(db)?;
    for ix in INDEXED {
        let (table, column) = (ix.table, ix.column);
        let wrong = format!(
            "SELECT ix.position FROM {SCHEMA}.{table} AS ix \
             LEFT JOIN events AS e ON e.position = ix.position \
             WHERE ix.position <= ?1 AND (e.position IS NULL OR e.{column} IS NOT ix.key) \
             LIMIT {MOST}"
        );
        let missing = format!(
            "SELECT e.position FROM events AS e WHERE e.position <= ?1 \
             AND e.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.{table} AS ix \
             WHERE ix.key = e.{column} AND ix.position = e.position) LIMIT {MOST}"
        );
        for (sql, what) in [
            (wrong, "an entry that does not match its event"),
            (missing, "no entry for the event"),
        ] {
            let positions = conn
                .prepare(&sql)
                .and_then(|mut s| {
                    s.query_map([crate::rows::clamp(up_to)], |r| r.get::<_, i64>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db)?;
            for p in positions {
                found.push(format!(
                    "the index file's {table} has {what} at position {p} ({REBUILD})"
                ));
            }
        }
    }
    found.append(&mut subjects(conn, up_to)?);
    Ok(found)
}

/// `by_subject` up to the prefix `up_to` against the subjects each event's sealed part
/// names ([`crate::privacy::stored_subjects`]; [`crate::index::UNREADABLE`] for one that
/// cannot be read).
fn subjects(conn: &Connection, up_to: u64) -> Result<Vec<String>> {
    use crate::index::{BY_SUBJECT, SCHEMA};
    use rusqlite::types::{Value, ValueRef};
    let keys_of = |sealed: ValueRef<'_>| crate::index::subject_keys(sealed, |_| ());
    let up_to = crate::rows::clamp(up_to);
    let mut wrong = Vec::new();
    let mut entries = conn
        .prepare(&format!(
            "SELECT ix.key, ix.position, e.sealed FROM {SCHEMA}.{BY_SUBJECT} AS ix \
             LEFT JOIN events AS e ON e.position = ix.position WHERE ix.position <= ?1"
        ))
        .map_err(db)?;
    let mut rows = entries.query([up_to]).map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let key: Value = r.get(0).map_err(db)?;
        if !keys_of(r.get_ref(2).map_err(db)?).contains(&key) {
            wrong.push(r.get::<_, i64>(1).map_err(db)?);
            if wrong.len() as i64 >= MOST {
                break;
            }
        }
    }
    let mut missing = Vec::new();
    let mut has = conn
        .prepare(&format!(
            "SELECT 1 FROM {SCHEMA}.{BY_SUBJECT} WHERE key = ?1 AND position = ?2"
        ))
        .map_err(db)?;
    let mut events = conn
        .prepare("SELECT position, sealed FROM events WHERE position <= ?1 AND sealed IS NOT NULL")
        .map_err(db)?;
    let mut rows = events.query([up_to]).map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let position: i64 = r.get(0).map_err(db)?;
        for key in keys_of(r.get_ref(1).map_err(db)?) {
            if !has.exists(rusqlite::params![key, position]).map_err(db)? {
                missing.push(position);
                break;
            }
        }
        if missing.len() as i64 >= MOST {
            break;
        }
    }
    let mut found = Vec::new();
    for (positions, what) in [
        (wrong, "an entry that does not match its event"),
        (missing, "no entry for the event"),
    ] {
        for p in positions {
            found.push(format!(
                "the index file's {BY_SUBJECT} has {what} at position {p} ({REBUILD})"
            ));
        }
    }
    Ok(found)
}

fn integrity(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA integrity_check({MOST})"))
        .map_err(db)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    Ok(rows
        .into_iter()
        .filter(|m| m != "ok")
        .map(|m| {
            format!(
                "SQLite integrity_check: {m} (restore from a backup, or copy the readable \
                 log out with annal copy, then run annal verify on the copy)"
            )
        })
        .collect())
}

/// Streams whose record disagrees with their events, and records of events that are
/// not there ([`annal_core::stream_record::check_queries`]).
fn streams(conn: &Connection) -> Result<Vec<String>> {
    use annal_core::stream_record::{check_queries, disagreement, missing_event};
    let [disagreeing, dangling] = check_queries("events", "streams", MOST);
    let mut found = Vec::new();
    let mut stmt = conn.prepare(&disagreeing).map_err(db)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(db)?;
    for row in rows {
        let (id, last, recorded) = row.map_err(db)?;
        found.push(disagreement(&id, last, recorded));
    }
    let mut stmt = conn.prepare(&dangling).map_err(db)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(db)?;
    for row in rows {
        let (id, v) = row.map_err(db)?;
        found.push(missing_event(&id, v));
    }
    Ok(found)
}
