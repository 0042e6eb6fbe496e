//! The SQL of filtered reads of the global log and of counting them by event type.
//!
//! Invariants:
//! - every [`Filter`] field is translated with [`Filter::matches`]' semantics: values
//!   within a field OR-ed, fields AND-ed, an empty field (or empty prefix) not filtering;
//! - the time bounds are never in the SQL: `recorded_at` never decreases with position,
//!   so they become positions first ([`rows::first_position_at`]), with no index on it;
//! - the aggregate id prefix is a range (`prefix <= aggregate_id < bound`,
//!   [`prefix_upper_bound`]) on the `(aggregate_id, aggregate_version)` index every
//!   append already writes: no index of its own. Which way the query runs depends on
//!   how many events the prefix covers, estimated from the `streams` table (one row per
//!   aggregate, keyed by id): a few ([`NARROW_EVENTS`] at most) are found through the
//!   id index and sorted by position; more are found by walking positions in order and
//!   testing each event (a page fills quickly, and nothing large is sorted);
//! - the principal filter uses no index (none is written for it): it is a test on the
//!   rows another filter, the position range, or the time range selects;
//! - the other terms' indexes are in the index file ([`crate::index`]): one of them leads
//!   a read up to the position the index covers, and every event past it is tested
//!   directly, so an answer never depends on how far the indexer has come; every
//!   candidate is tested against the whole filter.

use crate::ids;
use crate::index::{self, INDEXED, Indexed};
use crate::rows::{self, EVENT_COLUMNS, clamp, db, query_events};
use annal_core::read::prefix_upper_bound;
use annal_core::{Filter, RecordedEvent, Result, stored};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

/// At most this many events under a prefix are read through the id index and sorted.
const NARROW_EVENTS: i64 = 20_000;
/// At most this many aggregates under a prefix are read from `streams` to estimate.
const NARROW_STREAMS: i64 = 2_000;

/// How the aggregate id prefix is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixPlan {
    /// There is no prefix.
    None,
    /// Few events: through the id index (every other term kept off its index).
    ByIndex,
    /// Many events: tested on each row the other terms (or positions) select.
    ByScan,
}

/// Decides how to apply `filter`'s prefix, from the `streams` table.
pub fn prefix_plan(conn: &Connection, filter: &Filter) -> Result<PrefixPlan> {
    let Some(prefix) = filter.prefix() else {
        return Ok(PrefixPlan::None);
    };
    let bound = prefix_upper_bound(prefix).unwrap_or_else(|| char::MAX.to_string().repeat(256));
    let (aggregates, events): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(version), 0) FROM (SELECT version FROM streams \
             WHERE aggregate_id >= ?1 AND aggregate_id < ?2 LIMIT ?3)",
        )
        .map_err(db)?
        .query_row(rusqlite::params![prefix, bound, NARROW_STREAMS + 1], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(db)?;
    Ok(if aggregates > NARROW_STREAMS || events > NARROW_EVENTS {
        PrefixPlan::ByScan
    } else {
        PrefixPlan::ByIndex
    })
}

/// Most values of a leading term read as one ordered arm each ([`selection`]); a term
/// with more is read as one arm and sorted.
const MOST_ARMS: usize = 16;

/// A filter term: the `events` column, the filter's values for it, and how a value is
/// stored in that column.
type Term = (&'static str, fn(&Filter) -> &[String], fn(&str) -> Value);

/// Every filter term tested on an event row, indexed ones first.
const TERMS: [Term; 6] = [
    ("correlation_id", |f| &f.correlation_ids, ids::id_value),
    ("causation_id", |f| &f.causation_ids, ids::id_value),
    ("event_type", |f| &f.event_types, rows::text_value),
    ("aggregate_type", |f| &f.aggregate_types, rows::text_value),
    ("user_id", |f| &f.user_ids, rows::text_value),
    ("principal", |f| &f.principals, rows::text_value),
];

/// Appends every term of `filter` as a test on the row of `events AS e` (none using an
/// index of the store file, except the aggregate id range under [`PrefixPlan::ByIndex`]).
fn row_terms(sql: &mut String, params: &mut Vec<Value>, filter: &Filter, plan: PrefixPlan) {
    for (column, values, stored) in TERMS {
        rows::any_of(sql, params, &format!("+e.{column}"), values(filter), stored);
    }
    if let Some(prefix) = filter.prefix() {
        let id = if plan == PrefixPlan::ByIndex {
            "e.aggregate_id"
        } else {
            "+e.aggregate_id"
        };
        sql.push_str(&format!(" AND {id} >= ?"));
        params.push(Value::Text(prefix.to_owned()));
        if let Some(bound) = prefix_upper_bound(prefix) {
            sql.push_str(&format!(" AND {id} < ?"));
            params.push(Value::Text(bound));
        }
    }
}

/// The indexed term a read takes its candidates from, with its distinct stored values:
/// the first of [`INDEXED`] the filter has values for, unless the aggregate id range
/// leads ([`PrefixPlan::ByIndex`]).
fn lead(filter: &Filter, plan: PrefixPlan) -> Option<(Indexed, Vec<Value>)> {
    if plan == PrefixPlan::ByIndex {
        return None;
    }
    INDEXED.into_iter().find_map(|ix| {
        let (_, values, stored) = TERMS.into_iter().find(|t| t.0 == ix.column)?;
        let mut keys: Vec<Value> = Vec::new();
        for v in values(filter) {
            let key = stored(v);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        (!keys.is_empty()).then_some((ix, keys))
    })
}

/// `columns` (of `events AS e`) of every event after `after` and before `before` that
/// passes `filter`, as SQL and its parameters; when `ordered`, the SQL ends where an
/// `ORDER BY 1` can follow and its rows then need no sort.
///
/// With an indexed term, candidates up to what the index file covers
/// ([`index::covered`]) come from its entries (one arm per value, merged in position
/// order), and every event above it is tested directly (the tail arm); each candidate is
/// tested against the whole filter too. Without one, the events are tested in position
/// order (or along the aggregate id index under [`PrefixPlan::ByIndex`]).
pub fn selection(
    conn: &Connection,
    after: u64,
    before: Option<u64>,
    filter: &Filter,
    plan: PrefixPlan,
    columns: &str,
    ordered: bool,
) -> Result<(String, Vec<Value>)> {
    let mut terms = String::new();
    let mut term_params = Vec::new();
    row_terms(&mut terms, &mut term_params, filter, plan);
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut tail_after = after;
    if let Some((ix, keys)) = lead(filter, plan) {
        let covered = index::covered(conn).map_err(db)?;
        let up_to = before.map_or(covered, |b| covered.min(b.saturating_sub(1)));
        if up_to > after {
            let groups: Vec<&[Value]> = if ordered && keys.len() <= MOST_ARMS {
                keys.chunks(1).collect()
            } else {
                vec![&keys[..]]
            };
            for group in groups {
                // The entry's position, equal to the event's, is the one SQLite knows the
                // arm's rows are ordered by.
                let mut arm = format!(
                    "SELECT {columns} FROM {schema}.{table} AS ix CROSS JOIN events AS e \
                     ON e.position = ix.position WHERE ix.position > ? AND ix.position <= ?",
                    columns = columns.replace("e.position", "ix.position"),
                    schema = index::SCHEMA,
                    table = ix.table,
                );
                params.push(Value::Integer(clamp(after)));
                params.push(Value::Integer(clamp(up_to)));
                if let [key] = group {
                    arm.push_str(" AND ix.key = ?");
                    params.push(key.clone());
                } else {
                    rows::any_of_values(&mut arm, &mut params, "ix.key", group.iter().cloned());
                }
                arm.push_str(&terms);
                params.extend(term_params.iter().cloned());
                sql.push_str(&arm);
                sql.push_str(" UNION ALL ");
            }
            tail_after = up_to;
        }
    }
    let position = if plan == PrefixPlan::ByIndex {
        "+e.position"
    } else {
        "e.position"
    };
    sql.push_str(&format!(
        "SELECT {columns} FROM events AS e WHERE {position} > ?"
    ));
    params.push(Value::Integer(clamp(tail_after)));
    if let Some(before) = before {
        sql.push_str(&format!(" AND {position} < ?"));
        params.push(Value::Integer(clamp(before)));
    }
    sql.push_str(&terms);
    params.extend(term_params);
    Ok((sql, params))
}

/// [`rows::EVENT_COLUMNS`] of `events AS e`.
fn event_columns() -> String {
    EVENT_COLUMNS
        .split(',')
        .map(|c| format!("e.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The positions a read after `after_position` spans once the filter's time bounds are
/// turned into positions: (after, before).
fn span(conn: &Connection, after_position: u64, filter: &Filter) -> Result<(u64, Option<u64>)> {
    let mut after = after_position;
    if let Some(since) = filter.since {
        after = after.max(rows::first_position_at(conn, since)?.saturating_sub(1));
    }
    let before = match filter.until {
        Some(until) => Some(rows::first_position_at(conn, until)?),
        None => None,
    };
    Ok((after, before))
}

/// Up to `limit` events after `after_position` that pass `filter`, in global order,
/// none above `cap` ([`crate::durable`]), as stored (unchecked, unopened).
pub fn read_all(
    conn: &Connection,
    after_position: u64,
    limit: usize,
    filter: &Filter,
    cap: Option<u64>,
) -> Result<Vec<RecordedEvent>> {
    let (sql, params) = read_all_query(conn, after_position, limit, filter, cap)?;
    query_events(conn, &sql, rusqlite::params_from_iter(params))
}

/// The query of [`read_all`] and its parameters.
pub fn read_all_query(
    conn: &Connection,
    after_position: u64,
    limit: usize,
    filter: &Filter,
    cap: Option<u64>,
) -> Result<(String, Vec<Value>)> {
    let (after, until) = span(conn, after_position, filter)?;
    let before = [until, cap.map(|c| c.saturating_add(1))]
        .into_iter()
        .flatten()
        .min();
    let plan = prefix_plan(conn, filter)?;
    let (sql, mut params) = selection(conn, after, before, filter, plan, &event_columns(), true)?;
    let sql = format!("{sql} ORDER BY 1 LIMIT ?");
    params.push(Value::Integer(clamp(limit)));
    Ok((sql, params))
}

/// How many events after `after_position` and at or below `up_to` pass `filter`, per
/// event type (by name), and `up_to` itself: the head when not given, read first; never
/// above `cap` ([`crate::durable`]).
pub fn count_by_type(
    conn: &Connection,
    after_position: u64,
    up_to: Option<u64>,
    filter: &Filter,
    cap: Option<u64>,
) -> Result<(u64, Vec<(String, u64)>)> {
    let up_to = match up_to {
        Some(p) => p,
        None => head_of(conn, &[], None)?,
    };
    let up_to = cap.map_or(up_to, |cap| up_to.min(cap));
    let (after, before) = span(conn, after_position, filter)?;
    let before = before.map_or(up_to.saturating_add(1), |b| b.min(up_to.saturating_add(1)));
    let plan = prefix_plan(conn, filter)?;
    let (rows, params) = selection(
        conn,
        after,
        Some(before),
        filter,
        plan,
        "e.event_type AS event_type",
        false,
    )?;
    let sql = format!(
        "SELECT event_type, count(*) FROM ({rows}) GROUP BY event_type ORDER BY event_type"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut found = stmt.query(rusqlite::params_from_iter(params)).map_err(db)?;
    let mut counts = Vec::new();
    while let Some(row) = found.next().map_err(db)? {
        let n: i64 = row.get(1).map_err(db)?;
        counts.push((row.get(0).map_err(db)?, stored::number("count(*)", n)?));
    }
    Ok((up_to, counts))
}

/// The last position of an event of one of `aggregate_types` (of any event when none is
/// given), at most `cap`; 0 when there is none. Past the index file's prefix the events
/// are tested from the end; up to it, each type's last entry whose event agrees.
pub fn head_of(conn: &Connection, aggregate_types: &[String], cap: Option<u64>) -> Result<u64> {
    let cap = cap.unwrap_or(u64::MAX);
    let one = |sql: &str, params: Vec<Value>| -> Result<u64> {
        let found: Option<i64> = conn
            .prepare_cached(sql)
            .map_err(db)?
            .query_row(rusqlite::params_from_iter(params), |r| r.get(0))
            .optional()
            .map_err(db)?;
        Ok(stored::number("events.position", found.unwrap_or(0))?)
    };
    if aggregate_types.is_empty() {
        return one(
            "SELECT coalesce(max(position), 0) FROM events WHERE position <= ?",
            vec![Value::Integer(clamp(cap))],
        );
    }
    let covered = index::covered(conn).map_err(db)?.min(cap);
    let mut sql = "SELECT position FROM events WHERE position > ? AND position <= ?".to_owned();
    let mut params = vec![Value::Integer(clamp(covered)), Value::Integer(clamp(cap))];
    rows::any_of(
        &mut sql,
        &mut params,
        "+aggregate_type",
        aggregate_types,
        rows::text_value,
    );
    sql.push_str(" ORDER BY position DESC LIMIT 1");
    let mut last = one(&sql, params)?;
    if last == 0 {
        // The event is tested too: an entry that disagrees with it is passed over.
        let by_type = format!(
            "SELECT ix.position FROM {}.by_aggregate_type AS ix CROSS JOIN events AS e \
             ON e.position = ix.position WHERE ix.key = ? AND ix.position <= ? \
             AND +e.aggregate_type = ix.key ORDER BY ix.position DESC LIMIT 1",
            index::SCHEMA
        );
        for t in aggregate_types {
            let p = one(
                &by_type,
                vec![rows::text_value(t), Value::Integer(clamp(covered))],
            )?;
            last = last.max(p);
        }
    }
    Ok(last)
}
