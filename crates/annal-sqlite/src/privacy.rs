//! The key table (`subject_keys`) of the embedded store, and the reads of a subject's
//! events: what personal data needs from SQLite (docs/privacy.md).
//!
//! Invariants:
//! - rows change only inside a write transaction: the writer's group commit (new keys,
//!   forgetting, both serialised with the appends that use the keys) or a rotation
//!   holding SQLite's write lock;
//! - forgetting sets `wrapped_key` to NULL; with `secure_delete` on, SQLite overwrites
//!   the old bytes in the page it rewrites;
//! - a read opens personal parts with the rows as they are at that read, read in the
//!   snapshot of its events (the same read transaction) or after them: a key destroyed
//!   before reads as erased, whether or not its unwrapped form is cached ([`Keys`]).
//!   The rows of keys kept from earlier reads are not read again while
//!   `key_changes.n`, which triggers set to a new random value in every transaction
//!   that updates, deletes or replaces a key row, is the same in the page's snapshot
//!   ([`open`], `Keys::keys_for_read`);
//! - `events.sealed` holds an event's sealed form as a BLOB, packed
//!   ([`annal_core::privacy::packed`]), when it renders back to the very JSON text the
//!   chain hashes, and as that TEXT otherwise (and in rows written before the packed
//!   form): [`sealed_value`] and [`sealed_from`]. The writer stores the packed forms
//!   its group sealed ([`annal_core::commit::Writes::packed`], rendered to the text
//!   the chain hashed), and packs only the other texts. A BLOB that does not unpack is
//!   corrupt, never guessed at;
//! - the subjects of an event are the ones its sealed part names ([`stored_subjects`]);
//!   they are indexed in the index file's `by_subject` ([`crate::index`]), behind the
//!   writer, not in its commit. Every reader of a subject's events gets the same answer
//!   however far that index lags: the export takes the entries up to the index's prefix
//!   and tests every event after it, and tests every candidate's sealed part again
//!   ([`subject_events`]); a forgetting, inside the writer's commit, takes the aggregates
//!   of the entries up to the prefix and tests every event after it, those of its own
//!   group included ([`forget_snapshots`]);
//! - an event whose sealed part cannot be read counts as naming every subject: the
//!   export meets it and reports it corrupt, and a forgetting deletes its aggregate's
//!   snapshots (more deleted, never less).

use crate::index;
use crate::rows::{self, EVENT_COLUMNS, clamp, db, time};
use annal_core::commit::Writes;
use annal_core::privacy::{self, Keyring, Keys, SubjectInfo, SubjectKey, packed};
use annal_core::{RawJson, RecordedEvent, Result, stored};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::collections::BTreeSet;
use std::path::Path;
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

/// The subjects an event's stored sealed part names (none without one), read without
/// rendering a packed form; `Err` when it cannot be read.
pub fn stored_subjects(v: ValueRef<'_>) -> std::result::Result<Vec<String>, String> {
    match v {
        ValueRef::Null => Ok(Vec::new()),
        ValueRef::Blob(b) => packed::subjects(b)
            .map(|s| s.into_iter().map(str::to_owned).collect())
            .map_err(|e| e.to_string()),
        ValueRef::Text(t) => {
            let text = std::str::from_utf8(t).map_err(|e| e.to_string())?;
            privacy::Envelope::parse(&RawJson::from_stored(text.to_owned()), 0)
                .map(|env| env.subjects)
                .map_err(|e| e.to_string())
        }
        other => Err(format!("a {} value", other.data_type())),
    }
}

/// Whether an event with this stored sealed part is one of `subject`'s, for a reader:
/// it names the subject, or it cannot be read (see the module's invariants).
fn names_or_unreadable(sealed: ValueRef<'_>, subject: &str) -> bool {
    match sealed {
        ValueRef::Blob(b) => packed::subjects(b).map_or(true, |s| s.contains(&subject)),
        other => stored_subjects(other).map_or(true, |s| s.iter().any(|x| x == subject)),
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

/// Opens the personal parts of events read (after their hashes were checked), in the
/// read's snapshot. With a KEK, the data keys come from those kept for reads while the
/// key table's change mark is unchanged; only the others' rows are read
/// ([`Keys::keys_for_read`]).
pub fn open(
    conn: &Connection,
    keys: Option<&Keys>,
    mut events: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>> {
    open_in(conn, keys, &mut events)?;
    Ok(events)
}

/// [`open`] in place.
pub fn open_in(conn: &Connection, keys: Option<&Keys>, events: &mut [RecordedEvent]) -> Result<()> {
    match keys {
        Some(keys) => privacy::open_events_with(events, |ids| {
            let counter = key_changes(conn)?;
            keys.keys_for_read(counter, ids, |missing| rows_by_id(conn, missing))
        }),
        None => privacy::open_events(events, None, |ids| rows_by_id(conn, ids)),
    }
}

/// The key table's change mark (schema version 11): set to a new random value by
/// triggers in every transaction that updates, deletes or replaces a key row.
pub(crate) fn key_changes(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT n FROM key_changes")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)
}

/// The id of the KEK that one row of the key table names (a rotation rewraps every
/// row in one transaction, so any one tells which KEK wraps them all); `None` for an
/// empty table.
pub fn kek_in_use(conn: &Connection) -> Result<Option<String>> {
    conn.prepare_cached("SELECT kek_id FROM subject_keys LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(db)
}

/// The ids of the KEKs the key table names (forgotten rows too: they keep naming the
/// store's KEK after every key is gone).
pub fn kek_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT kek_id FROM subject_keys ORDER BY kek_id")?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Writes a group's key rows.
pub fn write_keys(conn: &Connection, w: &Writes) -> rusqlite::Result<()> {
    write_key_rows(conn, &w.keys)
}

/// Writes key rows, each replacing its subject's.
fn write_key_rows(conn: &Connection, rows: &[SubjectKey]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut put = conn.prepare_cached(
        "INSERT OR REPLACE INTO subject_keys
           (subject, key_id, kek_id, wrapped_key, created_at, forgotten_at, forgotten_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for k in rows {
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
    Ok(())
}

/// Deletes the snapshots of every aggregate with an event about one of the `forgotten`
/// subjects, on the writer's connection inside its commit (after the group's events and
/// snapshots are written, so both are seen): the aggregates of the subject's entries in
/// the index file of the store file at `store`, up to its prefix, and of every event
/// after that prefix whose sealed part names the subject or cannot be read. When the
/// index file cannot be read, or its prefix is not this log's, every event is tested.
pub fn forget_snapshots(
    conn: &Connection,
    store: &Path,
    forgotten: &[String],
) -> rusqlite::Result<()> {
    if forgotten.is_empty() {
        return Ok(());
    }
    let (prefix, entries) = match indexed_positions(conn, store, forgotten) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "forgetting: the index file cannot be read, so \
                every event is tested for the subject's snapshots");
            (0, Vec::new())
        }
    };
    let mut aggregates: BTreeSet<String> = BTreeSet::new();
    if !entries.is_empty() {
        let positions = RawJson::from_value(&entries)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT aggregate_id FROM events
             WHERE position IN (SELECT value FROM json_each(?1))",
        )?;
        let mut rows = stmt.query([positions.get()])?;
        while let Some(r) = rows.next()? {
            aggregates.insert(r.get(0)?);
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT aggregate_id, sealed FROM events WHERE position > ?1 AND sealed IS NOT NULL",
    )?;
    let mut rows = stmt.query([clamp(prefix)])?;
    while let Some(r) = rows.next()? {
        let sealed = r.get_ref(1)?;
        if forgotten.iter().any(|s| names_or_unreadable(sealed, s)) {
            aggregates.insert(r.get(0)?);
        }
    }
    let mut delete = conn.prepare_cached("DELETE FROM snapshots WHERE aggregate_id = ?1")?;
    for a in &aggregates {
        delete.execute([a])?;
    }
    Ok(())
}

/// The index file's prefix, if it is a prefix of the log `conn` holds (0 otherwise), and
/// the positions of its entries up to it for these subjects or [`index::UNREADABLE`],
/// read in one snapshot of the index file.
fn indexed_positions(
    conn: &Connection,
    store: &Path,
    subjects: &[String],
) -> rusqlite::Result<(u64, Vec<i64>)> {
    let idx = Connection::open_with_flags(
        index::path_of(store),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    idx.busy_timeout(crate::open::BUSY_TIMEOUT)?;
    idx.pragma_update(None, "query_only", true)?;
    idx.execute_batch("BEGIN")?;
    let read = (|| -> rusqlite::Result<(u64, Vec<i64>)> {
        let Some(position) = index::matched_prefix(&idx, conn)?.filter(|p| *p > 0) else {
            return Ok((0, Vec::new()));
        };
        let mut stmt = idx.prepare(&format!(
            "SELECT position FROM {} WHERE (key = ?1 OR key = ?2) AND position <= ?3",
            index::BY_SUBJECT
        ))?;
        let mut positions = Vec::new();
        for s in subjects {
            let found = stmt.query_map(params![s, index::UNREADABLE, position], |r| r.get(0))?;
            for p in found {
                positions.push(p?);
            }
        }
        Ok((u64::try_from(position).unwrap_or(0), positions))
    })();
    let ended = idx.execute_batch("COMMIT");
    let out = read?;
    ended.map(|()| out)
}

/// Subjects after `after` (by id), at most `limit`.
pub fn subjects(conn: &Connection, after: &str, limit: usize) -> Result<Vec<SubjectInfo>> {
    Ok(key_rows_after(conn, after, limit)?
        .iter()
        .map(SubjectInfo::from)
        .collect())
}

/// Key rows after `after` (by subject), at most `limit`, as stored.
pub fn key_rows_after(conn: &Connection, after: &str, limit: usize) -> Result<Vec<SubjectKey>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM subject_keys WHERE subject > ?1 ORDER BY subject LIMIT ?2"
    );
    query_keys(conn, &sql, params![after, clamp(limit)])
}

/// Adds key rows read from another store (`annal copy`) in one write transaction,
/// which waits for the writer's like any commit: refused, with nothing written, when a
/// row does not fit this store's KEK ([`Keys::check_imported`]) or its subject has a row
/// here already.
pub fn import_keys(conn: &mut Connection, keys: &Keys, rows: &[SubjectKey]) -> Result<u64> {
    keys.check_imported(rows)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let subjects: Vec<String> = rows.iter().map(|r| r.subject.clone()).collect();
    if let Some(there) = key_rows(&tx, &subjects)?.first() {
        return Err(privacy::imported_key_exists(&there.subject));
    }
    write_key_rows(&tx, rows).map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(rows.len() as u64)
}

/// One subject's status.
pub fn subject(conn: &Connection, subject: &str) -> Result<Option<SubjectInfo>> {
    Ok(key_row(conn, subject)?.as_ref().map(SubjectInfo::from))
}

/// Events about `subject` after `after_position`, at most `limit`, none above `cap`
/// ([`crate::durable`]), as stored (not yet checked nor opened), on a read connection
/// with the index file attached: the subject's entries up to the index's prefix
/// ([`index::covered`]), then every event after it, each one kept only if its sealed
/// part names the subject or cannot be read (which its read then reports).
pub fn subject_events(
    conn: &Connection,
    subject: &str,
    after_position: u64,
    limit: usize,
    cap: Option<u64>,
) -> Result<Vec<RecordedEvent>> {
    let cap = cap.unwrap_or(u64::MAX);
    let covered = index::covered(conn).map_err(db)?.min(cap);
    let indexed = format!(
        "SELECT position, sealed FROM (
           SELECT ix.position, e.sealed FROM {schema}.{table} AS ix
             CROSS JOIN events AS e ON e.position = ix.position
             WHERE ix.key = ?1 AND ix.position > ?2 AND ix.position <= ?3
           UNION ALL
           SELECT ix.position, e.sealed FROM {schema}.{table} AS ix
             CROSS JOIN events AS e ON e.position = ix.position
             WHERE ix.key = ?4 AND ix.position > ?2 AND ix.position <= ?3)
         ORDER BY 1 LIMIT ?5",
        schema = index::SCHEMA,
        table = index::BY_SUBJECT,
    );
    let tail = "SELECT position, sealed FROM events WHERE position > ?1 AND position <= ?2
                AND sealed IS NOT NULL ORDER BY position LIMIT ?3";
    let mut found: Vec<i64> = Vec::new();
    let mut after = after_position;
    // The index's entries up to its prefix, then every event after it, a page at a time.
    for (from_index, up_to) in [(true, covered), (false, cap)] {
        while found.len() < limit && after < up_to {
            let page = (limit - found.len()).clamp(64, 4096);
            let range = (clamp(after), clamp(up_to), clamp(page));
            let mut stmt;
            let mut rows = if from_index {
                stmt = conn.prepare_cached(&indexed).map_err(db)?;
                stmt.query(params![
                    subject,
                    range.0,
                    range.1,
                    index::UNREADABLE,
                    range.2
                ])
            } else {
                stmt = conn.prepare_cached(tail).map_err(db)?;
                stmt.query(params![range.0, range.1, range.2])
            }
            .map_err(db)?;
            let mut read = 0;
            while let Some(r) = rows.next().map_err(db)? {
                read += 1;
                let position: i64 = r.get(0).map_err(db)?;
                after = stored::number("events.position", position)?;
                if names_or_unreadable(r.get_ref(1).map_err(db)?, subject) {
                    found.push(position);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if read < page && found.len() < limit {
                after = up_to;
            }
        }
        after = after.max(up_to);
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let positions = RawJson::from_value(&found)
        .map_err(|e| annal_core::Error::storage(format!("listing positions: {e}")))?;
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE position IN (SELECT value FROM json_each(?1)) ORDER BY position"
    );
    rows::query_events(conn, &sql, [positions.get()])
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
    keys.check_rotation(&new, rows.len())?;
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
