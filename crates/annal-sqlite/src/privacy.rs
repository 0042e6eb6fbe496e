//! The key table (`subject_keys`) and the subject index (`event_subjects`) of the
//! embedded store: what personal data needs from SQLite (docs/privacy.md).
//!
//! Invariants:
//! - rows change only inside a write transaction: the writer's group commit (new keys,
//!   forgetting, both serialised with the appends that use the keys) or a rotation
//!   holding SQLite's write lock;
//! - forgetting sets `wrapped_key` to NULL; with `secure_delete` on, SQLite overwrites
//!   the old bytes in the page it rewrites;
//! - a read opens personal parts with the rows as they are at that read (one query per
//!   page for every key the page names), read after its events: a key destroyed before
//!   reads as erased, whether or not its unwrapped form is cached ([`Keys`]);
//! - `events.sealed` holds an event's sealed form as a BLOB, packed
//!   ([`annal_core::privacy::packed`]), when it renders back to the very JSON text the
//!   chain hashes, and as that TEXT otherwise (and in rows written before the packed
//!   form): [`sealed_value`] and [`sealed_from`]. A BLOB that does not unpack is
//!   corrupt, never guessed at.

use crate::rows::{self, EVENT_COLUMNS, clamp, db, time};
use annal_core::commit::Writes;
use annal_core::privacy::{self, Keyring, Keys, SubjectInfo, SubjectKey, packed};
use annal_core::{RawJson, RecordedEvent, Result, stored};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Row, params};
use std::sync::Arc;

const KEY_COLUMNS: &str =
    "subject, key_id, kek_id, wrapped_key, created_at, forgotten_at, forgotten_position";

fn key_from_row(r: &Row<'_>) -> Result<SubjectKey> {
    let at: String = r.get(4).map_err(db)?;
    let forgotten_at: Option<String> = r.get(5).map_err(db)?;
    let position: Option<i64> = r.get(6).map_err(db)?;
    Ok(SubjectKey {
        subject: r.get(0).map_err(db)?,
        key_id: r.get(1).map_err(db)?,
        kek_id: r.get(2).map_err(db)?,
        wrapped: r.get(3).map_err(db)?,
        created_at: time("subject_keys.created_at", &at)?,
        forgotten_at: forgotten_at
            .map(|t| time("subject_keys.forgotten_at", &t))
            .transpose()?,
        forgotten_position: position
            .map(|p| stored::number("subject_keys.forgotten_position", p))
            .transpose()?,
    })
}

fn query_keys(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<SubjectKey>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut found = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = found.next().map_err(db)? {
        out.push(key_from_row(r)?);
    }
    Ok(out)
}

/// The stored form of an event's sealed part: packed bytes when they render back to
/// exactly its text, the text otherwise.
pub fn sealed_value(sealed: &RawJson) -> Value {
    match packed::pack(sealed.get()) {
        Some(bytes) => Value::Blob(bytes),
        None => Value::Text(sealed.get().to_owned()),
    }
}

/// An event's sealed part as stored: the JSON text the chain hashes.
pub fn sealed_from(v: ValueRef<'_>) -> std::result::Result<Option<RawJson>, String> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|t| Some(RawJson::from_stored(t.to_owned())))
            .map_err(|e| e.to_string()),
        ValueRef::Blob(b) => packed::unpack(b)
            .map(|t| Some(RawJson::from_stored(t)))
            .map_err(|e| e.to_string()),
        other => Err(format!("a {} value", other.data_type())),
    }
}

/// One subject's row.
pub fn key_row(conn: &Connection, subject: &str) -> Result<Option<SubjectKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM subject_keys WHERE subject = ?1");
    Ok(query_keys(conn, &sql, [subject])?.pop())
}

/// The rows of these subjects (those that have one), in one query.
pub fn key_rows(conn: &Connection, subjects: &[String]) -> Result<Vec<SubjectKey>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM subject_keys WHERE subject IN (SELECT value FROM json_each(?1))"
    );
    let subjects = annal_core::RawJson::from_value(&subjects)
        .map_err(|e| annal_core::Error::storage(format!("listing subjects: {e}")))?;
    query_keys(conn, &sql, [subjects.get()])
}

/// The rows of these key ids (those that exist), in one query, with only what opening
/// needs: subject, key id, KEK id and wrapped key (the times are left at 0, unread:
/// parsing them cost more than the query on a page naming a thousand keys).
fn rows_by_id(conn: &Connection, ids: &[String]) -> Result<Vec<SubjectKey>> {
    let ids = annal_core::RawJson::from_value(&ids)
        .map_err(|e| annal_core::Error::storage(format!("listing key ids: {e}")))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT subject, key_id, kek_id, wrapped_key FROM subject_keys
             WHERE key_id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(db)?;
    let mut found = stmt.query([ids.get()]).map_err(db)?;
    let mut out = Vec::with_capacity(ids.get().len() / 40);
    while let Some(r) = found.next().map_err(db)? {
        out.push(SubjectKey {
            subject: r.get(0).map_err(db)?,
            key_id: r.get(1).map_err(db)?,
            kek_id: r.get(2).map_err(db)?,
            wrapped: r.get(3).map_err(db)?,
            created_at: annal_core::Timestamp::from_micros(0),
            forgotten_at: None,
            forgotten_position: None,
        });
    }
    Ok(out)
}

/// Opens the personal parts of events read (after their hashes were checked).
pub fn open(
    conn: &Connection,
    keys: Option<&Keys>,
    mut events: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>> {
    privacy::open_events(&mut events, keys, |ids| rows_by_id(conn, ids))?;
    Ok(events)
}

/// The ids of the KEKs the key table names (forgotten rows too: they keep naming the
/// store's KEK after every key is gone).
pub fn kek_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT kek_id FROM subject_keys ORDER BY kek_id")?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Writes a group's key rows, its events' subjects, and deletes the snapshots of the
/// aggregates that hold data about the subjects it forgot.
pub fn write(conn: &Connection, w: &Writes) -> rusqlite::Result<()> {
    if !w.keys.is_empty() {
        let mut put = conn.prepare_cached(
            "INSERT OR REPLACE INTO subject_keys
               (subject, key_id, kek_id, wrapped_key, created_at, forgotten_at, forgotten_position)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for k in &w.keys {
            put.execute(params![
                k.subject,
                k.key_id,
                k.kek_id,
                k.wrapped,
                k.created_at.to_string(),
                k.forgotten_at.map(|t| t.to_string()),
                k.forgotten_position.map(clamp),
            ])?;
        }
    }
    for e in w.events.iter().filter(|e| !e.subjects.is_empty()) {
        let mut index = conn.prepare_cached(
            "INSERT OR IGNORE INTO event_subjects (subject, position) VALUES (?1, ?2)",
        )?;
        for s in &e.subjects {
            index.execute(params![s, clamp(e.position)])?;
        }
    }
    for s in &w.forgotten {
        conn.prepare_cached(
            "DELETE FROM snapshots WHERE aggregate_id IN (
               SELECT DISTINCT e.aggregate_id FROM event_subjects s
               JOIN events e ON e.position = s.position WHERE s.subject = ?1)",
        )?
        .execute([s])?;
    }
    Ok(())
}

/// Subjects after `after` (by id), at most `limit`.
pub fn subjects(conn: &Connection, after: &str, limit: usize) -> Result<Vec<SubjectInfo>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM subject_keys WHERE subject > ?1 ORDER BY subject LIMIT ?2"
    );
    Ok(query_keys(conn, &sql, params![after, clamp(limit)])?
        .iter()
        .map(SubjectInfo::from)
        .collect())
}

/// One subject's status.
pub fn subject(conn: &Connection, subject: &str) -> Result<Option<SubjectInfo>> {
    Ok(key_row(conn, subject)?.as_ref().map(SubjectInfo::from))
}

/// Events about `subject` after `after_position`, at most `limit`, as stored (not yet
/// checked nor opened).
pub fn subject_events(
    conn: &Connection,
    subject: &str,
    after_position: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position IN (
           SELECT position FROM event_subjects WHERE subject = ?1 AND position > ?2
           ORDER BY position LIMIT ?3) ORDER BY position"
    );
    rows::query_events(
        conn,
        &sql,
        params![subject, clamp(after_position), clamp(limit)],
    )
}

/// Rewraps every live data key from the current KEK of `keys` to `new` in one write
/// transaction (and makes forgotten rows name `new`); answers how many keys were
/// rewrapped. A key that does not open with the current KEK aborts it all.
///
/// `new` becomes the KEK of `keys` while the transaction still holds SQLite's write
/// lock, so the writer's next commit, which waits for that lock, wraps new keys with
/// it; if the commit fails, the old KEK is back before the lock is let go.
pub fn rotate(conn: &mut Connection, keys: &Keys, new: Keyring) -> Result<u64> {
    let mut tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let old = keys.current();
    let sql = format!("SELECT {KEY_COLUMNS} FROM subject_keys");
    let rows = query_keys(&tx, &sql, [])?;
    for row in &rows {
        let moved = old.rewrap(row, &new)?;
        tx.execute(
            "UPDATE subject_keys SET kek_id = ?2, wrapped_key = ?3 WHERE subject = ?1",
            params![moved.subject, moved.kek_id, moved.wrapped],
        )
        .map_err(db)?;
    }
    // From here a failed commit is rolled back by hand, after the old KEK is back.
    tx.set_drop_behavior(rusqlite::DropBehavior::Ignore);
    let previous = keys.install(Arc::new(new));
    if let Err(e) = tx.commit() {
        keys.restore(previous);
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK").map_err(db)?;
        }
        return Err(db(e));
    }
    Ok(rows.iter().filter(|r| r.wrapped.is_some()).count() as u64)
}
