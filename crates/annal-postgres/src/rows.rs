//! Mapping between `events` rows and [`RecordedEvent`], times, and the SQL of reads.
//!
//! Invariants: `recorded_at` travels as whole microseconds both ways (written as
//! `'epoch' + n µs`, read from timestamptz's binary form, which is microseconds), so an
//! event reads back with exactly the [`Timestamp`] its hash was computed over; filter
//! values go in as array parameters (`= ANY($n)`), so the SQL text depends only on which
//! filters are set and prepared statements stay few.

use annal_core::{Error, Filter, Hash, RawJson, RecordedEvent, Result, Timestamp};
use std::error::Error as StdError;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

/// The columns every event read selects, in [`event_from_row`]'s order.
pub const EVENT_COLUMNS: &str = "position, event_id, event_type, event_version, aggregate_type, \
     aggregate_id, aggregate_version, recorded_at, user_id, correlation_id, causation_id, \
     data, metadata, hash, principal, sealed";

/// SQL turning a bigint parameter of microseconds since the Unix epoch into timestamptz.
pub fn micros_to_timestamptz(param: &str) -> String {
    format!("(timestamptz 'epoch' + {param}::bigint * interval '1 microsecond')")
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A timestamptz read as a [`Timestamp`], exactly (both are microseconds).
#[derive(Debug, Clone, Copy)]
pub struct PgTime(pub Timestamp);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz is 8 bytes, got {}", raw.len()))?;
        let micros = i64::from_be_bytes(bytes)
            .checked_add(PG_EPOCH_MICROS)
            .ok_or("timestamptz out of range")?;
        Ok(PgTime(Timestamp::from_micros(micros)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }
}

fn corrupt(position: i64, what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("event at position {position}: {what}: {detail}"))
}

/// Reads a column, saying which one failed.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| Error::Corrupt(format!("column {i} of a stored row: {e}")))
}

/// Reads one event row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row) -> Result<RecordedEvent> {
    let position: i64 = get(row, 0)?;
    let hash: Hash = get::<&str>(row, 13)?
        .parse()
        .map_err(|e| corrupt(position, "hash", e))?;
    let event_version: i64 = get(row, 3)?;
    let aggregate_version: i64 = get(row, 6)?;
    Ok(RecordedEvent {
        position: u64::try_from(position).map_err(|e| corrupt(position, "position", e))?,
        event_id: get(row, 1)?,
        event_type: get(row, 2)?,
        event_version: u32::try_from(event_version)
            .map_err(|e| corrupt(position, "event_version", e))?,
        aggregate_type: get(row, 4)?,
        aggregate_id: get(row, 5)?,
        aggregate_version: u64::try_from(aggregate_version)
            .map_err(|e| corrupt(position, "aggregate_version", e))?,
        recorded_at: get::<PgTime>(row, 7)?.0,
        user_id: get(row, 8)?,
        correlation_id: get(row, 9)?,
        causation_id: get(row, 10)?,
        principal: get(row, 14)?,
        data: RawJson::from_stored(get(row, 11)?),
        metadata: RawJson::from_stored(get(row, 12)?),
        sealed: get::<Option<String>>(row, 15)?.map(RawJson::from_stored),
        subjects: Vec::new(),
        personal: None,
        hash,
    })
}

/// Maps event rows.
pub fn events_from_rows(rows: &[Row]) -> Result<Vec<RecordedEvent>> {
    rows.iter().map(event_from_row).collect()
}

/// A boxed query parameter.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// Appends `AND column = ANY($n)` for a non-empty value list.
fn any_of(sql: &mut String, params: &mut Vec<Param>, column: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    params.push(Box::new(values.to_vec()));
    sql.push_str(&format!(" AND {column} = ANY(${})", params.len()));
}

/// The `WHERE` clause of a filtered read of the global log after a position, with its
/// parameters. The aggregate id prefix is `starts_with` under the "C" collation (exact
/// in any database collation; no index of its own, so it tests the rows the other terms
/// or the positions select); the principal filter has no index either.
pub fn where_sql(after_position: u64, filter: &Filter) -> (String, Vec<Param>) {
    let mut sql = " WHERE position > $1".to_owned();
    let mut params: Vec<Param> = vec![Box::new(clamp(after_position))];
    for (column, values) in [
        ("event_type", &filter.event_types),
        ("aggregate_type", &filter.aggregate_types),
        ("correlation_id", &filter.correlation_ids),
        ("causation_id", &filter.causation_ids),
        ("user_id", &filter.user_ids),
        ("principal", &filter.principals),
    ] {
        any_of(&mut sql, &mut params, column, values);
    }
    if let Some(prefix) = filter.prefix() {
        params.push(Box::new(prefix.to_owned()));
        sql.push_str(&format!(
            " AND starts_with(aggregate_id COLLATE \"C\", ${})",
            params.len()
        ));
    }
    if let Some(since) = filter.since {
        params.push(Box::new(since.as_micros()));
        let at = micros_to_timestamptz(&format!("${}", params.len()));
        sql.push_str(&format!(" AND recorded_at >= {at}"));
    }
    if let Some(until) = filter.until {
        params.push(Box::new(until.as_micros()));
        let at = micros_to_timestamptz(&format!("${}", params.len()));
        sql.push_str(&format!(" AND recorded_at < {at}"));
    }
    (sql, params)
}

/// The SQL and parameters of a filtered read of the global log, up to the read cap
/// ([`crate::schema::read_cap`]).
pub fn read_all_sql(
    schema: &str,
    after_position: u64,
    limit: usize,
    filter: &Filter,
) -> (String, Vec<Param>) {
    let (clause, mut params) = where_sql(after_position, filter);
    params.push(Box::new(clamp(limit)));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM {schema}.events{clause} AND position <= {}
         ORDER BY position LIMIT ${}",
        crate::schema::read_cap(schema),
        params.len()
    );
    (sql, params)
}

/// The SQL and parameters counting the filter's events after a position and at or
/// below another (and the read cap), by event type.
pub fn count_sql(
    schema: &str,
    after_position: u64,
    up_to: u64,
    filter: &Filter,
) -> (String, Vec<Param>) {
    let (clause, mut params) = where_sql(after_position, filter);
    params.push(Box::new(clamp(up_to)));
    let sql = format!(
        "SELECT event_type, count(*) FROM {schema}.events{clause} AND position <= ${} \
         AND position <= {} GROUP BY event_type ORDER BY event_type",
        params.len(),
        crate::schema::read_cap(schema)
    );
    (sql, params)
}

/// An unsigned number (a position, a version, a limit) as PostgreSQL's bigint, saturating.
pub fn clamp(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Whether PostgreSQL's jsonb can hold this JSON text (already checked to be valid
/// JSON). jsonb refuses the `\u0000` escape and lone surrogate escapes, and numbers
/// past `numeric`'s range; such payloads keep their exact text with a NULL jsonb copy.
pub fn jsonb_can_hold(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    // A high surrogate escape waiting for its low half.
    let mut pending_high = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => {
                    if b.get(i + 1) == Some(&b'u') {
                        let Some(code) = text
                            .get(i + 2..i + 6)
                            .and_then(|h| u16::from_str_radix(h, 16).ok())
                        else {
                            return false;
                        };
                        let high = (0xD800..0xDC00).contains(&code);
                        let low = (0xDC00..0xE000).contains(&code);
                        if code == 0 || (low && !pending_high) || (pending_high && !low) {
                            return false;
                        }
                        pending_high = high;
                        i += 6;
                        continue;
                    }
                    if pending_high {
                        return false;
                    }
                    i += 2;
                    continue;
                }
                b'"' => {
                    if pending_high {
                        return false;
                    }
                    in_string = false;
                }
                _ => {
                    if pending_high {
                        return false;
                    }
                }
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if !number_fits_numeric(&text[start..i]) {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// Conservatively, whether a JSON number fits PostgreSQL's numeric (at most 131,072
/// digits before the point and 16,383 after): short numbers with small exponents.
fn number_fits_numeric(n: &str) -> bool {
    let (mantissa, exp) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], n[i + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (n, 0),
    };
    mantissa.len() <= 1000 && exp.unsigned_abs() <= 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_compatibility_is_judged_conservatively() {
        assert!(
            !number_fits_numeric("1e-9223372036854775808"),
            "the most negative exponent does not wrap into 'small'"
        );
        for ok in [
            r#"{"a":1,"b":"x\u00e9\ud83d\ude00","c":[1.5e10,-2,0.25]}"#,
            r#""\\u0000""#,
            "123456789012345678901234567890",
        ] {
            assert!(jsonb_can_hold(ok), "{ok}");
        }
        for bad in [
            r#"{"a":"\u0000"}"#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            "1e999999",
            "[1E-5000]",
        ] {
            assert!(!jsonb_can_hold(bad), "{bad}");
        }
    }
}
