//! The hash chain: each event's `hash` is SHA-256 over a fixed encoding of its content
//! and the previous position's hash, so any edit made behind the store's back breaks the
//! chain at that event (or, if its hash was recomputed too, at the next one).
//!
//! The recipe (docs/chain.md has it for re-implementers):
//!
//! ```text
//! hash(n) = SHA-256( "annal-event-v1" || prev || field(position) || field(event_id)
//!                    || field(event_type) || field(event_version) || field(aggregate_type)
//!                    || field(aggregate_id) || field(aggregate_version)
//!                    || field(recorded_at) || field(user_id) || field(correlation_id)
//!                    || field(causation_id) || field(data) || field(metadata) )
//! prev     = the 32 raw bytes of hash(n - 1); 32 zero bytes for position 1
//! field(x) = 0x00                                  when x is null
//!          | 0x01 || u64-big-endian(len(b)) || b   where b is x's text in UTF-8
//! ```
//!
//! Each field's text is exactly what the event's JSON form shows: numbers in decimal,
//! event_id lowercase with hyphens, recorded_at as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, data and
//! metadata as their verbatim JSON text.
//!
//! An event with a `principal` (who authenticated its append) is hashed by version 2 of
//! the recipe: `"annal-event-v2"` in place of `"annal-event-v1"`, and `field(principal)`
//! after `field(metadata)`. Events without one keep version 1, so logs written before
//! the field existed verify unchanged, and removing a principal changes the hash.
//!
//! An event with a personal part (`sealed`, docs/privacy.md) is hashed by version 3:
//! `"annal-event-v3"`, then version 1's fields, `field(principal)` (null when absent)
//! and `field(sealed)`: the stored ciphertext, never the plaintext, so destroying a
//! subject's key leaves every hash valid.

use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::read::Filter;
use crate::store::Store;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The predecessor of position 1.
    pub const ZERO: Hash = Hash([0; 32]);
}

impl Hash {
    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 15)] as char);
        }
        out
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Hex digit values; 0xff marks a byte that is not a hex digit.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0u8;
    while i < 10 {
        t[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i = 0u8;
    while i < 6 {
        t[(b'a' + i) as usize] = 10 + i;
        t[(b'A' + i) as usize] = 10 + i;
        i += 1;
    }
    t
};

/// Why a text is not a [`Hash`](struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    /// The text is not 64 characters long.
    #[error("a hash is 64 hex characters, got {0}")]
    Length(usize),
    /// The text has 64 characters, not all of them hex digits.
    #[error("'{0}' is not 64 hex digits")]
    NotHex(String),
}

impl FromStr for Hash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, ParseHashError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(ParseHashError::Length(b.len()));
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            bad |= (hi | lo) & 0xf0;
            *o = hi << 4 | (lo & 0x0f);
        }
        if bad != 0 {
            return Err(ParseHashError::NotHex(s.to_owned()));
        }
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

const DOMAIN_V1: &[u8] = b"annal-event-v1";
const DOMAIN_V2: &[u8] = b"annal-event-v2";
const DOMAIN_V3: &[u8] = b"annal-event-v3";

fn field(h: &mut Sha256, value: Option<&[u8]>) {
    match value {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

/// Writes `n` in decimal into the end of `buf`; returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The hash of `event` (its `hash` field is ignored) chained to `prev`.
pub fn event_hash(prev: &Hash, event: &RecordedEvent) -> Hash {
    let mut h = Sha256::new();
    h.update(match (&event.sealed, &event.principal) {
        (Some(_), _) => DOMAIN_V3,
        (None, None) => DOMAIN_V1,
        (None, Some(_)) => DOMAIN_V2,
    });
    h.update(prev.0);
    let mut digits = [0u8; 20];
    field(&mut h, Some(decimal(event.position, &mut digits)));
    let mut id = [0u8; 36];
    field(
        &mut h,
        Some(event.event_id.hyphenated().encode_lower(&mut id).as_bytes()),
    );
    field(&mut h, Some(event.event_type.as_bytes()));
    field(
        &mut h,
        Some(decimal(u64::from(event.event_version), &mut digits)),
    );
    field(&mut h, Some(event.aggregate_type.as_bytes()));
    field(&mut h, Some(event.aggregate_id.as_bytes()));
    field(&mut h, Some(decimal(event.aggregate_version, &mut digits)));
    field(&mut h, Some(&event.recorded_at.canonical()));
    field(&mut h, Some(event.user_id.as_bytes()));
    field(&mut h, event.correlation_id.as_deref().map(str::as_bytes));
    field(&mut h, event.causation_id.as_deref().map(str::as_bytes));
    field(&mut h, Some(event.data.get().as_bytes()));
    field(&mut h, Some(event.metadata.get().as_bytes()));
    match &event.sealed {
        None => {
            if let Some(principal) = &event.principal {
                field(&mut h, Some(principal.as_bytes()));
            }
        }
        Some(sealed) => {
            field(&mut h, event.principal.as_deref().map(str::as_bytes));
            field(&mut h, Some(sealed.get().as_bytes()));
        }
    }
    Hash(h.finalize().into())
}

/// The predecessor of event `i` of `events` (in position order, ascending or
/// descending), when it is next to it in the slice.
fn adjacent_predecessor(events: &[RecordedEvent], i: usize) -> Option<Hash> {
    let want = events.get(i)?.position.checked_sub(1)?;
    [i.checked_sub(1), i.checked_add(1)]
        .into_iter()
        .flatten()
        .filter_map(|j| events.get(j))
        .find(|e| e.position == want)
        .map(|e| e.hash)
}

/// The positions whose stored hashes [`check_served`] needs beside `events` (in
/// position order, ascending or descending): predecessors that are not among them.
pub fn predecessors_needed(events: &[RecordedEvent]) -> Vec<u64> {
    (0..events.len())
        .filter(|&i| events[i].position > 1 && adjacent_predecessor(events, i).is_none())
        .map(|i| events[i].position - 1)
        .collect()
}

/// Checks events before they are served: each one's stored hash must be the one the
/// recipe gives for its content and its predecessor's stored hash, so an event edited
/// behind the store's back is never served as if it were true. `predecessors` holds
/// the stored hashes of [`predecessors_needed`].
///
/// A mismatch, or a predecessor that is missing, is [`Error::Corrupt`] naming the
/// position (someone who also rewrote the hash is caught at the next event, and by
/// `annal verify`).
pub fn check_served(events: &[RecordedEvent], predecessors: &[(u64, Hash)]) -> Result<()> {
    let mut predecessors = predecessors.to_vec();
    predecessors.sort_unstable_by_key(|(p, _)| *p);
    let check = |range: std::ops::Range<usize>| check_range(events, &predecessors, range);
    // A long page is hashed on two threads (SHA-256 is most of the check's cost, and a
    // reader's page otherwise keeps one core busy while the other idles).
    if events.len() >= PARALLEL_CHECK_FROM
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    {
        let mid = events.len() / 2;
        return std::thread::scope(|scope| {
            let second = scope.spawn(|| check(mid..events.len()));
            let first = check(0..mid);
            let second = second
                .join()
                .unwrap_or_else(|_| Err(Error::storage("a hash check thread panicked")));
            first.and(second)
        });
    }
    check(0..events.len())
}

/// Pages at least this long are checked on two threads.
const PARALLEL_CHECK_FROM: usize = 256;

/// [`check_served`] for `events[range]` (predecessors sorted by position).
fn check_range(
    events: &[RecordedEvent],
    predecessors: &[(u64, Hash)],
    range: std::ops::Range<usize>,
) -> Result<()> {
    for i in range {
        let Some(e) = events.get(i) else { break };
        let prev = if e.position <= 1 {
            Hash::ZERO
        } else if let Some(h) = adjacent_predecessor(events, i).or_else(|| {
            predecessors
                .binary_search_by_key(&(e.position - 1), |(p, _)| *p)
                .ok()
                .map(|k| predecessors[k].1)
        }) {
            h
        } else {
            return Err(Error::Corrupt(format!(
                "the event before position {} is missing, so the event there cannot be \
                 checked against its hash (run annal verify)",
                e.position
            )));
        };
        if event_hash(&prev, e) != e.hash {
            return Err(Error::Corrupt(format!(
                "the event at position {} does not match its stored hash: it was altered \
                 after it was written, and is not served (run annal verify)",
                e.position
            )));
        }
    }
    Ok(())
}

/// The outcome of a chain check.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether every checked event links to its predecessor.
    pub ok: bool,
    /// How many events were checked (up to and excluding the first bad one).
    pub checked: u64,
    /// The first position whose hash does not match, or that is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_position: Option<u64>,
    /// What was wrong there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hash the recipe gives at the first bad position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_hash: Option<Hash>,
    /// The hash stored there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_hash: Option<Hash>,
    /// What the backend's own checks found (a deep verify only; any makes `ok` false):
    /// damaged pages or indexes, stream records that disagree with the log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

const VERIFY_PAGE: usize = 2048;

/// Checks the chain from `from` (default 1) to `to` (default: the head, and never past
/// it), in pages. The first event is checked against the stored hash of its
/// predecessor. A `from` past the head, or a `to` before `from`, is
/// [`Error::InvalidRequest`]: there is nothing to check, and "broken" would be a false
/// alarm.
pub async fn verify<S: Store + ?Sized>(
    store: &S,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<VerifyReport> {
    let from = from.unwrap_or(1).max(1);
    let head = store.head(&[]).await?;
    if from > 1 && from > head {
        // Nothing is there to check: say so, rather than report a missing event (a
        // false tamper alarm).
        return Err(Error::invalid(
            "from_position",
            format!("{from} is past the head of the log ({head})"),
        ));
    }
    if let Some(to) = to
        && to < from
    {
        return Err(Error::invalid(
            "to_position",
            format!("{to} is before from_position {from}"),
        ));
    }
    let to = to.unwrap_or(head).min(head);
    let all = Filter::default();
    let mut prev = if from == 1 {
        Hash::ZERO
    } else {
        match store.read_all_unchecked(from - 2, 1, &all).await?.pop() {
            Some(e) if e.position == from - 1 => e.hash,
            _ => {
                return Ok(bad(
                    0,
                    from - 1,
                    "the event before the range is missing".into(),
                    None,
                    None,
                ));
            }
        }
    };
    let mut checked = 0u64;
    let mut next = from;
    // Events asked for at once: one at a time after a page that could not be read as
    // stored, so the report names the first event that cannot.
    let mut most = VERIFY_PAGE;
    while next <= to {
        let want = usize::try_from(to - next + 1)
            .unwrap_or(usize::MAX)
            .min(most);
        let page = match store.read_all_unchecked(next - 1, want, &all).await {
            Ok(page) => page,
            Err(Error::Corrupt(_)) if want > 1 => {
                most = 1;
                continue;
            }
            Err(Error::Corrupt(why)) => {
                return Ok(bad(
                    checked,
                    next,
                    format!("the event cannot be read as stored: {why}"),
                    None,
                    None,
                ));
            }
            Err(e) => return Err(e),
        };
        if page.is_empty() {
            return Ok(bad(
                checked,
                next,
                "the event is missing".into(),
                None,
                None,
            ));
        }
        for e in page {
            if e.position != next {
                return Ok(bad(
                    checked,
                    next,
                    format!(
                        "the event is missing (the next stored position is {})",
                        e.position
                    ),
                    None,
                    None,
                ));
            }
            let expected = event_hash(&prev, &e);
            if expected != e.hash {
                return Ok(bad(
                    checked,
                    next,
                    "the stored hash does not match the event's content and its predecessor's hash"
                        .into(),
                    Some(expected),
                    Some(e.hash),
                ));
            }
            prev = e.hash;
            checked += 1;
            next += 1;
            if next > to {
                break;
            }
        }
    }
    Ok(VerifyReport {
        ok: true,
        checked,
        ..VerifyReport::default()
    })
}

/// A failed report: `checked` events were fine, then `position` was not, for `reason`.
pub(crate) fn bad(
    checked: u64,
    position: u64,
    reason: String,
    expected_hash: Option<Hash>,
    stored_hash: Option<Hash>,
) -> VerifyReport {
    VerifyReport {
        ok: false,
        checked,
        first_bad_position: Some(position),
        reason: Some(reason),
        expected_hash,
        stored_hash,
        storage: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trips_and_rejects_non_hex() {
        let h = Hash(std::array::from_fn(|i| (i * 37 + 5).to_le_bytes()[0]));
        let hex = h.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Hash>(), Ok(h));
        assert_eq!(hex.to_uppercase().parse::<Hash>(), Ok(h));
        for bad in ["g", "G", " ", "/", ":", "@", "`"] {
            let s = format!("{bad}{}", &hex[1..]);
            assert!(s.parse::<Hash>().is_err(), "{bad:?} is not a hex digit");
        }
        assert!(hex[..62].parse::<Hash>().is_err());
    }

    /// A chained log of `n` events (one aggregate per ten), as a writer records them.
    fn log(n: u64) -> Vec<RecordedEvent> {
        let mut prev = Hash::ZERO;
        (1..=n)
            .map(|p| {
                let proposed = crate::append::ProposedEvent {
                    event_id: uuid::Uuid::now_v7(),
                    id_supplied: false,
                    event_type: "Noted".into(),
                    event_version: 1,
                    user_id: "sarah".into(),
                    correlation_id: None,
                    causation_id: None,
                    // Both recipes: every other event has a principal.
                    principal: (p % 2 == 0).then(|| "sarah-token".to_owned()),
                    data: crate::event::RawJson::parse(format!(r#"{{"n":{p}}}"#)).expect("json"),
                    metadata: crate::event::RawJson::empty_object(),
                    personal: None,
                };
                let e = proposed.record(
                    p,
                    "Family",
                    &format!("f{}", p % 10),
                    p.div_ceil(10),
                    crate::event::Timestamp::from_micros(1),
                    &prev,
                );
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn served_events_are_checked_on_both_halves_of_a_long_page_in_either_order() {
        let events = log(600);
        assert!(check_served(&events, &[]).is_ok());
        let mut backwards = events.clone();
        backwards.reverse();
        assert!(check_served(&backwards, &[]).is_ok());
        for at in [3usize, 450] {
            let mut edited = events.clone();
            edited[at].data = crate::event::RawJson::parse(r#"{"n":0}"#).expect("json");
            let e = check_served(&edited, &[]).expect_err("an edit is caught");
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
            assert!(
                e.to_string().contains(&format!("position {}", at + 1)),
                "{e}"
            );
        }
    }

    #[test]
    fn events_apart_in_the_log_are_checked_against_their_predecessors_hashes() {
        let events = log(30);
        let one_stream: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.aggregate_id == "f3")
            .cloned()
            .collect();
        let needed = predecessors_needed(&one_stream);
        assert_eq!(needed, [2, 12, 22]);
        let found: Vec<(u64, Hash)> = needed
            .iter()
            .map(|p| (*p, events[usize::try_from(*p).expect("small") - 1].hash))
            .collect();
        assert!(check_served(&one_stream, &found).is_ok());
        let missing = check_served(&one_stream, &found[..2]).expect_err("missing predecessor");
        assert!(
            missing.to_string().contains("before position 23"),
            "{missing}"
        );
    }

    #[test]
    fn a_principal_is_hashed_so_removing_adding_or_changing_it_is_caught() {
        let events = log(4);
        let with = &events[1];
        assert_eq!(with.principal.as_deref(), Some("sarah-token"));
        let prev = events[0].hash;
        assert_eq!(event_hash(&prev, with), with.hash);
        for principal in [None, Some("admin".to_owned())] {
            let mut edited = with.clone();
            edited.principal = principal;
            assert_ne!(event_hash(&prev, &edited), with.hash);
        }
        let mut added = events[2].clone();
        added.principal = Some(String::new());
        assert_ne!(event_hash(&events[1].hash, &added), events[2].hash);
    }

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        for n in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
