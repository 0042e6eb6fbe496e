//! The event as stored: [`RecordedEvent`], its verbatim JSON payloads ([`RawJson`]) and
//! its store-assigned time ([`Timestamp`]).
//!
//! Invariants: a `RawJson` holds the exact text a writer sent (valid JSON, without the
//! surrounding whitespace) and serialises as that text, never re-encoded; a `Timestamp`
//! is UTC with microsecond precision and always renders as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fixed width, so text order is time order).

use crate::chain::Hash;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;
use uuid::Uuid;

/// JSON text kept exactly as written: key order, spacing inside, number formatting.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Checks that `text` is one JSON value and keeps it verbatim (minus surrounding
    /// whitespace).
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let raw = RawValue::from_string(text.into())?;
        Ok(Self(raw.into()))
    }

    /// Serialises a value to compact JSON.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(serde_json::to_string(value)?.into_boxed_str()))
    }

    /// The empty object `{}`.
    pub fn empty_object() -> Self {
        Self("{}".into())
    }

    /// Wraps text a backend stored after it was checked on the way in. Backends use this
    /// on their read path so reads do not re-parse every payload; `annal verify` and any
    /// consumer that parses the text still detect damage.
    pub fn from_stored(text: String) -> Self {
        Self(text.into_boxed_str())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// Whether the text is a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }

    /// Parses the text into a typed value.
    pub fn to_value<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Self(raw.into()))
    }
}

/// Why a text is not a [`Timestamp`]: it is neither RFC 3339 nor a plain date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a time: give a date such as 2024-10-20 (its midnight UTC) or an RFC 3339 time such as 2024-10-20T14:03:11Z ({reason})"
)]
pub struct ParseTimestampError {
    /// The text that was given.
    pub text: String,
    /// What the time parser said.
    reason: time::error::Parse,
}

/// A UTC instant with microsecond precision (microseconds since the Unix epoch).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_SEC: i64 = 1_000_000;

impl Timestamp {
    /// Earlier than every real time (the time before an empty log's first event).
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_odt(time::OffsetDateTime::now_utc())
    }

    /// From microseconds since the Unix epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 time with any offset (or a plain `YYYY-MM-DD`, meaning its
    /// midnight UTC), converting to UTC and truncating to microseconds.
    pub fn parse(text: &str) -> Result<Self, ParseTimestampError> {
        if let Some(t) = Self::parse_canonical(text) {
            return Ok(t);
        }
        let bad = |reason| ParseTimestampError {
            text: text.to_owned(),
            reason,
        };
        if text.len() == 10 {
            let date = time::Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(bad)?;
            return Ok(Self::from_odt(date.midnight().assume_utc()));
        }
        let odt = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(bad)?;
        Ok(Self::from_odt(odt))
    }

    fn from_odt(odt: time::OffsetDateTime) -> Self {
        #[allow(clippy::cast_possible_truncation)] // ±9999 years are ±3.2e17 µs: an i64
        let micros = (odt.unix_timestamp_nanos() / 1000) as i64;
        Self(micros)
    }

    /// Fast path for the exact form annal writes: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn parse_canonical(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 27 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
            return None;
        }
        if b[16] != b':' || b[19] != b'.' || b[26] != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let mut n = 0u32;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + u32::from(c - b'0');
            }
            Some(n)
        };
        let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
        let two = |r: std::ops::Range<usize>| u8::try_from(num(r)?).ok();
        let year = i32::try_from(num(0..4)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, two(8..10)?).ok()?;
        let tod =
            time::Time::from_hms_micro(two(11..13)?, two(14..16)?, two(17..19)?, num(20..26)?)
                .ok()?;
        Some(Self::from_odt(
            time::PrimitiveDateTime::new(date, tod).assume_utc(),
        ))
    }
}

impl Timestamp {
    /// The canonical text `YYYY-MM-DDTHH:MM:SS.ffffffZ` as bytes. Years outside
    /// 0000–9999 (which no store clock produces) render with their last four digits.
    pub fn canonical(self) -> [u8; 27] {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..1_000_000
        let micros = self.0.rem_euclid(MICROS_PER_SEC) as u32;
        let t = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, t.year().rem_euclid(10_000) as u32);
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 6, micros);
        b
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.canonical();
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse(&s).map_err(D::Error::custom)
    }
}

/// An event as the store recorded it: the one JSON form of docs/api.md.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position: 1-based, contiguous, commit order.
    pub position: u64,
    /// Unique id (supplied by the writer, or a UUID v7 assigned by the store).
    pub event_id: Uuid,
    /// What happened, e.g. `PaymentReceived`.
    pub event_type: String,
    /// Schema version of `data` (default 1).
    pub event_version: u32,
    /// The kind of entity, fixed by the aggregate's first event.
    pub aggregate_type: String,
    /// The entity; unique across the store.
    pub aggregate_id: String,
    /// 1-based, contiguous per aggregate.
    pub aggregate_version: u64,
    /// When the store committed it (UTC, microseconds; never decreases with position).
    pub recorded_at: Timestamp,
    /// The actor (default `system`).
    pub user_id: String,
    /// Ties related events together.
    pub correlation_id: Option<String>,
    /// What caused this event (often another event's id).
    pub causation_id: Option<String>,
    /// Who authenticated the append that recorded it (an API token's name, a gRPC
    /// user), beside the `user_id` they claimed; absent when nobody did (embedded use,
    /// auth off, events older than this field). Callers cannot set it over the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The payload, verbatim.
    pub data: RawJson,
    /// A JSON object, verbatim.
    pub metadata: RawJson,
    /// The personal part as stored: encrypted with its subjects' keys (docs/privacy.md).
    /// The hash covers it; absent for events without personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<RawJson>,
    /// The subjects the personal part belongs to (read from `sealed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// The personal part, decrypted as written, or `{"$erased":true}` once a subject's
    /// key was destroyed. Derived from `sealed` on read: not covered by the hash, and
    /// ignored when a log is copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<RawJson>,
    /// SHA-256 over this event's content and the previous event's hash.
    pub hash: Hash,
}

impl RecordedEvent {
    /// What aggregates and upcasters decode: `data`, with the personal part's members
    /// (or the `"$erased":true` marker) after its own; `data` alone for an event
    /// without one.
    pub fn payload(&self) -> std::borrow::Cow<'_, RawJson> {
        match &self.personal {
            Some(p) => std::borrow::Cow::Owned(crate::privacy::merge(&self.data, p)),
            None => std::borrow::Cow::Borrowed(&self.data),
        }
    }

    /// Whether the personal part was erased (a subject forgotten).
    pub fn is_erased(&self) -> bool {
        self.personal
            .as_ref()
            .is_some_and(|p| p.get() == crate::privacy::ERASED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_fixed_width_and_parse_back() {
        for micros in [
            0i64,
            1,
            999_999,
            1_729_432_991_123_456,
            253_402_300_799_999_999,
        ] {
            let t = Timestamp::from_micros(micros);
            let text = t.to_string();
            assert_eq!(text.len(), 27, "{text}");
            assert_eq!(Timestamp::parse(&text), Ok(t), "{text}");
        }
        assert_eq!(
            Timestamp::from_micros(1_729_432_991_123_456).to_string(),
            "2024-10-20T14:03:11.123456Z"
        );
    }

    #[test]
    fn timestamps_parse_offsets_and_plain_dates_as_utc() {
        let utc = Timestamp::parse("2024-10-20T14:03:11Z").expect("utc");
        assert_eq!(Timestamp::parse("2024-10-20T16:03:11+02:00"), Ok(utc));
        assert_eq!(
            Timestamp::parse("2024-09-20").expect("date").to_string(),
            "2024-09-20T00:00:00.000000Z"
        );
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2024-13-01T00:00:00.000000Z").is_err());
    }

    #[test]
    fn raw_json_keeps_text_and_rejects_invalid_json() {
        let j = RawJson::parse("  {\"b\": 1.0,\"a\":2}\n").expect("json");
        assert_eq!(j.get(), "{\"b\": 1.0,\"a\":2}");
        assert!(j.is_object());
        assert_eq!(
            serde_json::to_string(&j).expect("ser"),
            "{\"b\": 1.0,\"a\":2}"
        );
        assert!(RawJson::parse("{\"a\":").is_err());
        assert!(RawJson::parse("1 2").is_err());
    }
}
