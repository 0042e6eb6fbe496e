//! Importing already-recorded events: a copy of a store's log into another store
//! (`annal copy`), keeping event_ids, positions, versions, times and hashes.
//!
//! Invariant: an imported batch is written only if it continues the target's log
//! exactly, as if the target had recorded it itself: the first event at the head + 1,
//! positions contiguous, each hash chaining to the one before (so the chain verifies),
//! aggregate versions contiguous with one type per aggregate, no event_id stored twice,
//! `recorded_at` never going back. [`check_import`] is that check, shared by backends.

use crate::chain::{self, Hash};
use crate::error::{Error, Result};
use crate::event::{RecordedEvent, Timestamp};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The last event of the target's log (position 0, [`Hash::ZERO`] for an empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Its position.
    pub position: u64,
    /// Its hash.
    pub hash: Hash,
    /// Its time (anything earlier than every real time for an empty log).
    pub recorded_at: Timestamp,
}

/// Checks that `events` continue the log whose last event is `tip`. `current` gives an
/// aggregate's type and version in the target (`None`: no events), `stored` whether an
/// event_id is already in the target. Returns the new tip.
pub fn check_import(
    tip: Tip,
    events: &[RecordedEvent],
    current: impl Fn(&str) -> Option<(String, u64)>,
    stored: impl Fn(&Uuid) -> bool,
) -> Result<Tip> {
    let mut tip = tip;
    let mut versions: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut ids: HashSet<Uuid> = HashSet::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let field = |f: &str| format!("events[{i}].{f}");
        if e.position != tip.position + 1 {
            return Err(Error::invalid(
                field("position"),
                format!(
                    "{} does not follow the store's last position {}",
                    e.position, tip.position
                ),
            ));
        }
        if chain::event_hash(&tip.hash, e) != e.hash {
            return Err(Error::invalid(
                field("hash"),
                format!(
                    "position {}: the hash does not match the event and its predecessor",
                    e.position
                ),
            ));
        }
        if e.recorded_at < tip.recorded_at {
            return Err(Error::invalid(
                field("recorded_at"),
                format!("position {}: recorded_at goes backwards", e.position),
            ));
        }
        let (ty, v) = match versions.get(e.aggregate_id.as_str()) {
            Some((t, v)) => ((*t).to_owned(), *v),
            None => current(&e.aggregate_id).unwrap_or_else(|| (e.aggregate_type.clone(), 0)),
        };
        if ty != e.aggregate_type || e.aggregate_version != v + 1 {
            return Err(Error::invalid(
                field("aggregate_version"),
                format!(
                    "position {}: aggregate '{}' is of type '{ty}' at version {v}, this event is '{}' version {}",
                    e.position, e.aggregate_id, e.aggregate_type, e.aggregate_version
                ),
            ));
        }
        if !ids.insert(e.event_id) || stored(&e.event_id) {
            return Err(Error::DuplicateEventId {
                event_id: e.event_id,
                detail: "the target store already holds it".into(),
            });
        }
        versions.insert(&e.aggregate_id, (&e.aggregate_type, e.aggregate_version));
        tip = Tip {
            position: e.position,
            hash: e.hash,
            recorded_at: e.recorded_at,
        };
    }
    Ok(tip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::{AppendRequest, ExpectedVersion, Limits, NewEvent};
    use crate::event::RawJson;

    /// Three events recorded as a store would: positions 1–3, aggregates a, a, b.
    fn recorded() -> Vec<RecordedEvent> {
        let mut prev = Hash::ZERO;
        let mut out = Vec::new();
        for (i, agg) in ["a", "a", "b"].iter().enumerate() {
            let p = AppendRequest::new("T", *agg, ExpectedVersion::Any)
                .event(NewEvent::raw("E", RawJson::parse("{}").expect("json")))
                .prepare(&Limits::default())
                .expect("valid");
            let version = if i == 1 { 2 } else { 1 };
            let e = p.events[0].record(
                i as u64 + 1,
                "T",
                agg,
                version,
                Timestamp::from_micros(1_000 + i as i64),
                &prev,
            );
            prev = e.hash;
            out.push(e);
        }
        out
    }

    const EMPTY: Tip = Tip {
        position: 0,
        hash: Hash::ZERO,
        recorded_at: Timestamp::MIN,
    };

    #[test]
    fn a_log_that_continues_the_target_is_accepted() {
        let events = recorded();
        let tip = check_import(EMPTY, &events, |_| None, |_| false).expect("accepted");
        assert_eq!((tip.position, tip.hash), (3, events[2].hash));
        // In two batches, the second continuing the first.
        let first = check_import(EMPTY, &events[..1], |_| None, |_| false).expect("first");
        let current = |a: &str| (a == "a").then(|| ("T".to_owned(), 1));
        check_import(first, &events[1..], current, |_| false).expect("second");
    }

    #[test]
    fn gaps_broken_chains_bad_versions_and_known_ids_are_refused() {
        let events = recorded();
        assert!(
            check_import(EMPTY, &events[1..], |_| None, |_| false).is_err(),
            "gap"
        );
        let mut edited = events.clone();
        edited[1].data = RawJson::parse("{\"x\":1}").expect("json");
        assert!(
            check_import(EMPTY, &edited, |_| None, |_| false).is_err(),
            "chain"
        );
        let taken = |a: &str| (a == "b").then(|| ("T".to_owned(), 4));
        assert!(
            check_import(EMPTY, &events, taken, |_| false).is_err(),
            "version"
        );
        let known = events[2].event_id;
        assert!(matches!(
            check_import(EMPTY, &events, |_| None, |id| *id == known),
            Err(Error::DuplicateEventId { .. })
        ));
    }
}
