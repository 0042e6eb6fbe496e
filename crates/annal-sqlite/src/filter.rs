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
//!   rows another filter, the position range, or the time range selects.

use crate::ids;
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

/// The `WHERE` clause of a filtered read between positions (`after` < position, and
/// position < `before` if given), with its parameters. Under [`PrefixPlan::ByIndex`]
/// every other term is written `+column` (SQLite then uses no index for it), so the
/// id range is the one index searched; under [`PrefixPlan::ByScan`] the range is
/// written so, and the planner picks among the others and the positions.
pub fn where_sql(
    after: u64,
    before: Option<u64>,
    filter: &Filter,
    plan: PrefixPlan,
) -> (String, Vec<Value>) {
    let other = if plan == PrefixPlan::ByIndex { "+" } else { "" };
    let mut sql = format!(" WHERE {other}position > ?");
    let mut params = vec![Value::Integer(clamp(after))];
    if let Some(before) = before {
        sql.push_str(&format!(" AND {other}position < ?"));
        params.push(Value::Integer(clamp(before)));
    }
    for (column, values, stored) in [
        (
            "event_type",
            &filter.event_types,
            rows::text_value as fn(&str) -> Value,
        ),
        ("aggregate_type", &filter.aggregate_types, rows::text_value),
        ("correlation_id", &filter.correlation_ids, ids::id_value),
        ("causation_id", &filter.causation_ids, ids::id_value),
        ("user_id", &filter.user_ids, rows::text_value),
        ("principal", &filter.principals, rows::text_value),
    ] {
        let column = format!("{other}{column}");
        rows::any_of(&mut sql, &mut params, &column, values, stored);
    }
    if let Some(prefix) = filter.prefix() {
        let id = if plan == PrefixPlan::ByScan {
            "+aggregate_id"
        } else {
            "aggregate_id"
        };
        sql.push_str(&format!(" AND {id} >= ?"));
        params.push(Value::Text(prefix.to_owned()));
        if let Some(bound) = prefix_upper_bound(prefix) {
            sql.push_str(&format!(" AND {id} < ?"));
            params.push(Value::Text(bound));
        }
    }
    (sql, params)
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
/// none above `cap` ([`crate::durable`]).
pub fn read_all(
    conn: &Connection,
    after_position: u64,
    limit: usize,
    filter: &Filter,
    cap: Option<u64>,
) -> Result<Vec<RecordedEvent>> {
    let (after, until) = span(conn, after_position, filter)?;
    let before = [until, cap.map(|c| c.saturating_add(1))]
        .into_iter()
        .flatten()
        .min();
    let plan = prefix_plan(conn, filter)?;
    let (clause, mut params) = where_sql(after, before, filter, plan);
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events{clause} ORDER BY position LIMIT ?");
    params.push(Value::Integer(clamp(limit)));
    query_events(conn, &sql, rusqlite::params_from_iter(params))
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
        None => stored::number(
            "events.position",
            conn.prepare_cached("SELECT coalesce(max(position), 0) FROM events")
                .map_err(db)?
                .query_row([], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(db)?
                .unwrap_or(0),
        )?,
    };
    let up_to = cap.map_or(up_to, |cap| up_to.min(cap));
    let (after, before) = span(conn, after_position, filter)?;
    let before = before.map_or(up_to.saturating_add(1), |b| b.min(up_to.saturating_add(1)));
    let plan = prefix_plan(conn, filter)?;
    let (clause, params) = where_sql(after, Some(before), filter, plan);
    let sql = format!(
        "SELECT event_type, count(*) FROM events{clause} GROUP BY event_type ORDER BY event_type"
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
