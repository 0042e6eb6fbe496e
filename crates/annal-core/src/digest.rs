//! Digests: the log's head (position and hash) written down outside the store, so that
//! a later check can prove the log still holds that prefix unchanged.
//!
//! A hash chain shows an edit anywhere before the last event, but not a tail that was
//! cut off, nor a history rewritten with every hash recomputed: both leave a chain that
//! verifies. A digest kept elsewhere (a ticket, an email, another machine) closes both.
//!
//! Invariants:
//! - a digest names an event by position and hash; the digest of an empty log is
//!   position 0 with the zero hash, and every log holds that prefix;
//! - [`check`] passes only when the whole chain verifies from position 1 to the head and
//!   the event at the digest's position still has the digest's hash. Because each hash
//!   covers its predecessor's, that proves every event up to that position unchanged;
//! - a head before the digest's position is reported as a cut-off tail, never as "ok".

use crate::chain::{self, Hash, VerifyReport};
use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::read::Filter;
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// The log's head, written down.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The head's position (0: an empty log).
    pub position: u64,
    /// The head event's hash (the zero hash for an empty log).
    pub hash: Hash,
    /// When the head event was recorded (absent for an empty log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<Timestamp>,
    /// When the digest was taken.
    pub taken_at: Timestamp,
}

impl Digest {
    /// Parses `POSITION:HASH` (the short form `annal verify --expect` takes).
    pub fn parse_expectation(text: &str) -> Result<(u64, Hash)> {
        let invalid = |why: String| Error::invalid("expect", why);
        let (position, hash) = text.split_once(':').ok_or_else(|| {
            invalid(format!(
                "'{text}' is not POSITION:HASH (for example 42:9f86d0…, the hash in 64 hex digits)"
            ))
        })?;
        let position = position
            .trim()
            .parse::<u64>()
            .map_err(|e| invalid(format!("'{position}' is not a position: {e}")))?;
        let hash = hash
            .trim()
            .parse::<Hash>()
            .map_err(|e| invalid(format!("'{hash}' is not a hash: {e}")))?;
        Ok((position, hash))
    }
}

/// The store's digest now: its head event's position, hash and time.
pub async fn take<S: Store + ?Sized>(store: &S) -> Result<Digest> {
    let taken_at = Timestamp::now();
    let head = store.head(&[]).await?;
    if head == 0 {
        return Ok(Digest {
            position: 0,
            hash: Hash::ZERO,
            recorded_at: None,
            taken_at,
        });
    }
    // The head and the event before it, as stored (no personal part is opened, so a
    // store opened without its KEK takes a digest too); the head is checked against its
    // hash here, as a checked read would.
    let mut events = store
        .read_all_unchecked(head.saturating_sub(2), 2, &Filter::default())
        .await?;
    let missing = || Error::Corrupt(format!("the head event (position {head}) is missing"));
    let event = events
        .pop()
        .filter(|e| e.position == head)
        .ok_or_else(missing)?;
    let prev = match events.pop() {
        Some(p) if p.position + 1 == head => p.hash,
        None if head == 1 => Hash::ZERO,
        _ => {
            return Err(Error::Corrupt(format!(
                "the event before the head (position {head}) is missing"
            )));
        }
    };
    if chain::event_hash(&prev, &event) != event.hash {
        return Err(Error::Corrupt(format!(
            "the head event (position {head}) does not match its hash: run annal verify"
        )));
    }
    Ok(Digest {
        position: head,
        hash: event.hash,
        recorded_at: Some(event.recorded_at),
        taken_at,
    })
}

/// Checks that the log still holds the prefix a digest names: the event at `position`
/// has `hash`, and the chain verifies from position 1 to the head.
pub async fn check<S: Store + ?Sized>(
    store: &S,
    position: u64,
    hash: Hash,
) -> Result<VerifyReport> {
    check_with(store, position, hash, false).await
}

/// [`check`], with the store's own checks too ([`Store::verify_deep`]).
pub async fn check_deep<S: Store + ?Sized>(
    store: &S,
    position: u64,
    hash: Hash,
) -> Result<VerifyReport> {
    check_with(store, position, hash, true).await
}

async fn check_with<S: Store + ?Sized>(
    store: &S,
    position: u64,
    hash: Hash,
    deep: bool,
) -> Result<VerifyReport> {
    if let Some(bad) = check_anchor(store, position, hash).await? {
        return Ok(bad);
    }
    if deep {
        store.verify_deep(None, None).await
    } else {
        store.verify(None, None).await
    }
}

/// The digest's own claim alone, without walking the chain: the log reaches `position`
/// and the event there still has `hash`. `None` when it holds; otherwise the failed
/// report, saying whether the tail was cut off or the history rewritten. Cheap (one
/// event read), so a server can run it at every start.
pub async fn check_anchor<S: Store + ?Sized>(
    store: &S,
    position: u64,
    hash: Hash,
) -> Result<Option<VerifyReport>> {
    let head = store.head(&[]).await?;
    if position > head {
        return Ok(Some(chain::bad(
            head,
            position,
            format!(
                "the log ends at position {head}, before the digest's position {position}: \
                 its tail was cut off"
            ),
            Some(hash),
            None,
        )));
    }
    if position == 0 {
        if hash != Hash::ZERO {
            return Err(Error::invalid(
                "expect",
                "position 0 (an empty log) has the zero hash",
            ));
        }
        return Ok(None);
    }
    let stored = store
        .read_all_unchecked(position - 1, 1, &Filter::default())
        .await?
        .pop()
        .filter(|e| e.position == position);
    Ok(match stored {
        None => Some(chain::bad(
            0,
            position,
            format!("the event at the digest's position {position} is missing"),
            Some(hash),
            None,
        )),
        Some(e) if e.hash != hash => Some(chain::bad(
            0,
            position,
            format!(
                "the event at position {position} no longer has the digest's hash: \
                 the history up to it was rewritten"
            ),
            Some(hash),
            Some(e.hash),
        )),
        Some(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expectation_is_a_position_and_a_hash() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let (p, h) = Digest::parse_expectation(&format!("42:{hash}")).expect("parses");
        assert_eq!((p, h.to_hex()), (42, hash.to_owned()));
        for bad in ["42", "x:00", &format!("-1:{hash}"), "42:abc"] {
            let e = Digest::parse_expectation(bad).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidRequest, "{bad}: {e}");
        }
    }
}
