//! The embedded store's own consistency checks, for a deep verify: SQLite's
//! `integrity_check` (every page, and every index entry against its row: an event that
//! an index lost would otherwise be "not found" by id while it exists), and the stream
//! records against the log they summarise.
//!
//! Invariants: read-only; every finding is a sentence naming what is wrong and where,
//! at most [`MOST`] of each kind; a file too damaged to run a check on is itself a
//! finding, not an error.

use crate::rows::db;
use annal_core::Result;
use rusqlite::Connection;

/// Most findings of one kind reported.
pub const MOST: usize = 20;

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
/// not there.
fn streams(conn: &Connection) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT m.aggregate_id, m.v, s.version
             FROM (SELECT aggregate_id, max(aggregate_version) AS v FROM events
                   GROUP BY aggregate_id) m
             LEFT JOIN streams s ON s.aggregate_id = m.aggregate_id
             WHERE s.aggregate_id IS NULL OR s.version <> m.v
             LIMIT {MOST}"
        ))
        .map_err(db)?;
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
        found.push(match recorded {
            None => format!("stream {id} has events up to version {last} but no stream record"),
            Some(v) => {
                format!("stream {id}'s record says version {v}, its events end at version {last}")
            }
        });
    }
    let mut stmt = conn
        .prepare(&format!(
            "SELECT s.aggregate_id, s.version FROM streams s
             WHERE s.version > 0 AND NOT EXISTS (
                 SELECT 1 FROM events e
                 WHERE e.aggregate_id = s.aggregate_id AND e.aggregate_version = s.version)
             LIMIT {MOST}"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(db)?;
    for row in rows {
        let (id, v) = row.map_err(db)?;
        found.push(format!(
            "stream {id}'s record says version {v}, but no such event is stored"
        ));
    }
    Ok(found)
}
