//! Mapping between `events` rows and [`RecordedEvent`], `streams` rows and
//! [`StreamRecord`]; the filtered reads' SQL is in [`crate::filter`].

use crate::ids;
use annal_core::chain::Hash;
use annal_core::{Error, RawJson, RecordedEvent, Result, StreamRecord, Timestamp, stored};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row};

/// The columns every event read selects, in [`event_from_row`]'s order.
pub const EVENT_COLUMNS: &str = "position, event_id, event_type, event_version, aggregate_type, \
     aggregate_id, aggregate_version, recorded_at, user_id, correlation_id, causation_id, \
     data, metadata, hash, principal, sealed";

/// Maps a database error.
pub fn db(e: rusqlite::Error) -> Error {
    Error::storage(e)
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str> {
    row.get_ref(i)
        .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
        .map_err(db)
}

fn corrupt(position: i64, what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("event at position {position}: {what}: {detail}"))
}

/// Parses a time read from `column` (or from the database's clock); a text that is not
/// a time is [`Error::Corrupt`] naming the column.
pub fn time(column: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse(text).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

/// Reads one event row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row<'_>) -> Result<RecordedEvent> {
    read_event(row, false).map(|(event, _)| event)
}

/// Gives `event` the sealed part whose packed form ([`annal_core::privacy::packed`]) is
/// `bytes`, as its JSON text; bytes that do not unpack are [`Error::Corrupt`].
pub fn render_sealed(event: &mut RecordedEvent, bytes: &[u8]) -> Result<()> {
    let text = annal_core::privacy::packed::unpack(bytes)
        .map_err(|e| corrupt(clamp(event.position), "sealed", e))?;
    event.sealed = Some(RawJson::from_stored(text));
    Ok(())
}

/// [`event_from_row`] with a sealed part stored packed left out (`sealed` is `None`)
/// and answered as its bytes, for [`render_sealed`] to render, on another thread if
/// need be; one stored as text is read into the event.
pub fn event_and_packed(row: &Row<'_>) -> Result<(RecordedEvent, Option<Vec<u8>>)> {
    read_event(row, true)
}

/// An event row, its packed sealed part rendered to text or, with `keep_packed`, left
/// out and answered as its bytes.
fn read_event(row: &Row<'_>, keep_packed: bool) -> Result<(RecordedEvent, Option<Vec<u8>>)> {
    let position: i64 = row.get(0).map_err(db)?;
    let value = |i| row.get_ref(i).map_err(db);
    let event_id = ids::event_id_from(value(1)?).map_err(|e| corrupt(position, "event_id", e))?;
    let recorded_at =
        Timestamp::parse(text(row, 7)?).map_err(|e| corrupt(position, "recorded_at", e))?;
    let hash = ids::hash_from(value(13)?).map_err(|e| corrupt(position, "hash", e))?;
    let correlation_id =
        ids::id_from(value(9)?).map_err(|e| corrupt(position, "correlation_id", e))?;
    let causation_id =
        ids::id_from(value(10)?).map_err(|e| corrupt(position, "causation_id", e))?;
    let event_version: i64 = row.get(3).map_err(db)?;
    let (sealed, packed) = match value(15)? {
        ValueRef::Blob(b) if keep_packed => (None, Some(b.to_vec())),
        stored => (
            crate::privacy::sealed_from(stored).map_err(|e| corrupt(position, "sealed", e))?,
            None,
        ),
    };
    let aggregate_version: i64 = row.get(6).map_err(db)?;
    let event = RecordedEvent {
        position: u64::try_from(position).map_err(|e| corrupt(position, "position", e))?,
        event_id,
        event_type: row.get(2).map_err(db)?,
        event_version: u32::try_from(event_version)
            .map_err(|e| corrupt(position, "event_version", e))?,
        aggregate_type: row.get(4).map_err(db)?,
        aggregate_id: row.get(5).map_err(db)?,
        aggregate_version: u64::try_from(aggregate_version)
            .map_err(|e| corrupt(position, "aggregate_version", e))?,
        recorded_at,
        user_id: row.get(8).map_err(db)?,
        correlation_id,
        causation_id,
        principal: row.get(14).map_err(db)?,
        data: RawJson::from_stored(row.get(11).map_err(db)?),
        metadata: RawJson::from_stored(row.get(12).map_err(db)?),
        sealed,
        subjects: Vec::new(),
        personal: None,
        hash,
    };
    Ok((event, packed))
}

/// Runs a prepared event query and collects its rows.
pub fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(event_from_row(row)?);
    }
    Ok(out)
}

/// Appends `AND column IN (?, …)` for a non-empty value list, each value in its
/// stored form (`stored`: [`Value::Text`] for most columns, [`ids::id_value`] for ids).
pub(crate) fn any_of(
    sql: &mut String,
    params: &mut Vec<Value>,
    column: &str,
    values: &[String],
    stored: fn(&str) -> Value,
) {
    any_of_values(sql, params, column, values.iter().map(|v| stored(v)));
}

/// Appends `AND column IN (?, …)` for the values given as stored (nothing when none).
pub(crate) fn any_of_values(
    sql: &mut String,
    params: &mut Vec<Value>,
    column: &str,
    values: impl IntoIterator<Item = Value>,
) {
    let mut values = values.into_iter().peekable();
    if values.peek().is_none() {
        return;
    }
    sql.push_str(" AND ");
    sql.push_str(column);
    sql.push_str(" IN (");
    for (i, v) in values.enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
        params.push(v);
    }
    sql.push(')');
}

/// `events`, read on `conn`, once each is checked against its stored hash
/// ([`annal_core::chain::check_served`]); predecessors' hashes come from `conn`.
pub fn checked(conn: &Connection, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
    let found = stored_hashes(conn, annal_core::chain::predecessors_needed(&events))?;
    annal_core::chain::check_served(&events, &found)?;
    Ok(events)
}

/// The stored hashes of these positions (those that exist).
pub fn stored_hashes(conn: &Connection, positions: Vec<u64>) -> Result<Vec<(u64, Hash)>> {
    let mut found = Vec::with_capacity(positions.len());
    if positions.is_empty() {
        return Ok(found);
    }
    let mut stmt = conn
        .prepare_cached("SELECT hash FROM events WHERE position = ?1")
        .map_err(db)?;
    for p in positions {
        let hash = stmt
            .query_row([clamp(p)], |r| Ok(ids::hash_from(r.get_ref(0)?)))
            .optional()
            .map_err(db)?;
        if let Some(hash) = hash {
            found.push((p, hash.map_err(|e| corrupt(clamp(p), "hash", e))?));
        }
    }
    Ok(found)
}

/// The first position whose event was recorded at or after `at` (the head + 1 if none).
///
/// `recorded_at` never decreases with position (the writer's invariant, kept by imports
/// too), so a binary search over positions finds it: about 24 primary-key lookups for
/// 10 million events, and no index on `recorded_at` to write with every event.
pub fn first_position_at(conn: &Connection, at: Timestamp) -> Result<u64> {
    let head: i64 = conn
        .prepare_cached("SELECT coalesce(max(position), 0) FROM events")
        .map_err(db)?
        .query_row([], |r| r.get(0))
        .map_err(db)?;
    let at = at.to_string();
    let mut stmt = conn
        .prepare_cached("SELECT recorded_at >= ?2 FROM events WHERE position = ?1")
        .map_err(db)?;
    // Invariant: positions below `lo` are earlier than `at`; `hi` and above are not.
    let (mut lo, mut hi) = (1i64, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let later: Option<bool> = stmt
            .query_row(rusqlite::params![mid, at], |r| r.get(0))
            .optional()
            .map_err(db)?;
        match later {
            Some(true) => hi = mid,
            Some(false) => lo = mid + 1,
            None => return Err(Error::Corrupt(format!("position {mid} is missing"))),
        }
    }
    Ok(stored::number("events.position", lo)?)
}

/// A filter's value for a text column.
pub fn text_value(v: &str) -> Value {
    Value::Text(v.to_owned())
}

/// An unsigned number (a position, a version, a limit) as SQLite's i64, saturating.
pub fn clamp(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A stream's record (`streams` row), if the store has one.
pub fn stream_record(conn: &Connection, aggregate_id: &str) -> Result<Option<StreamRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT aggregate_type, version, tombstoned, metadata_version, metadata
             FROM streams WHERE aggregate_id = ?1",
        )
        .map_err(db)?
        .query_row([aggregate_id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()
        .map_err(db)?;
    row.map(
        |(aggregate_type, version, tombstoned, metadata_version, metadata)| {
            Ok(StreamRecord {
                aggregate_type,
                version: stored::number(
                    format_args!("streams.version of {aggregate_id}"),
                    version,
                )?,
                tombstoned,
                metadata_version: stored::number(
                    format_args!("streams.metadata_version of {aggregate_id}"),
                    metadata_version,
                )?,
                metadata: metadata.map(RawJson::from_stored),
            })
        },
    )
    .transpose()
}

/// Whether a commit after position `cap` appended to `aggregate_id` or to its metadata
/// stream (so its `streams` row shows more than positions up to `cap` do).
pub fn stream_changed_after(conn: &Connection, aggregate_id: &str, cap: u64) -> Result<bool> {
    conn.prepare_cached(
        "SELECT coalesce((SELECT position FROM events WHERE aggregate_id = ?1
                          ORDER BY aggregate_version DESC LIMIT 1), 0) > ?2
             OR coalesce((SELECT position FROM events WHERE aggregate_id = '$$' || ?1
                          ORDER BY aggregate_version DESC LIMIT 1), 0) > ?2",
    )
    .map_err(db)?
    .query_row(rusqlite::params![aggregate_id, clamp(cap)], |r| r.get(0))
    .map_err(db)
}
