//! How a group chooses the consumer of an event: KurrentDB's consumer strategies.
//!
//! Invariants: a strategy is parsed once, where it enters (Create or Update), and an
//! unknown name is refused there with [`UnknownStrategy`]; afterwards it is a variant,
//! never a string compared again. A strategy serializes as its KurrentDB name, so the
//! definitions in the log read back as they were written.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{Hash as _, Hasher as _};
use std::str::FromStr;

/// A consumer strategy of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Strategy {
    /// Each event goes to the next consumer with a free slot, in turn.
    RoundRobin,
    /// Every event goes to the first consumer with a free slot.
    DispatchToSingle,
    /// The events of a stream go to one consumer, chosen by the stream's name.
    Pinned,
    /// The events of a correlation id go to one consumer (the stream's name for events
    /// without one).
    PinnedByCorrelation,
}

impl Strategy {
    /// Every strategy, in KurrentDB's order.
    pub(crate) const ALL: [Strategy; 4] = [
        Strategy::RoundRobin,
        Strategy::DispatchToSingle,
        Strategy::Pinned,
        Strategy::PinnedByCorrelation,
    ];

    /// Its KurrentDB name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "RoundRobin",
            Strategy::DispatchToSingle => "DispatchToSingle",
            Strategy::Pinned => "Pinned",
            Strategy::PinnedByCorrelation => "PinnedByCorrelation",
        }
    }

    /// The strategy of the protocol's `named_consumer_strategy` number (what older
    /// clients, and every Update, send): 0 is DispatchToSingle, 2 Pinned, anything else
    /// RoundRobin.
    pub(crate) fn from_number(n: i32) -> Self {
        match n {
            0 => Strategy::DispatchToSingle,
            2 => Strategy::Pinned,
            _ => Strategy::RoundRobin,
        }
    }

    /// Which of `n` consumers takes an event of `stream` (correlation id `correlation`),
    /// given which of them can take one now (`free`). `next` is the round robin's turn,
    /// moved past the chosen consumer. `None`: the chosen one, or every one, is busy.
    pub(crate) fn choose(
        self,
        n: usize,
        free: impl Fn(usize) -> bool,
        stream: &str,
        correlation: Option<&str>,
        next: &mut usize,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match self {
            Strategy::DispatchToSingle => (0..n).find(|&i| free(i)),
            Strategy::Pinned | Strategy::PinnedByCorrelation => {
                let subject = match (self, correlation) {
                    (Strategy::PinnedByCorrelation, Some(c)) => c,
                    _ => stream,
                };
                let i = pin(subject, n);
                free(i).then_some(i)
            }
            Strategy::RoundRobin => {
                for k in 0..n {
                    let i = (*next + k) % n;
                    if free(i) {
                        *next = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
        }
    }
}

/// The consumer (of `n`) that `subject` is pinned to.
fn pin(subject: &str, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut h);
    usize::try_from(h.finish() % n as u64).unwrap_or(0)
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

/// A strategy name KurrentDB does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownStrategy(pub(crate) String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown consumer strategy '{}' (known: {})",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownStrategy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kurrentdb_name_parses_to_its_strategy_and_back() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
        }
    }

    #[test]
    fn an_unknown_name_is_a_typed_error_naming_the_known_ones() {
        let err = "Fastest".parse::<Strategy>().expect_err("not a strategy");
        assert_eq!(err, UnknownStrategy("Fastest".into()));
        assert_eq!(
            err.to_string(),
            "unknown consumer strategy 'Fastest' (known: RoundRobin, DispatchToSingle, Pinned, PinnedByCorrelation)"
        );
        assert!("roundrobin".parse::<Strategy>().is_err(), "names are exact");
    }

    #[test]
    fn a_strategy_is_stored_as_its_kurrentdb_name() {
        let json = serde_json::to_string(&Strategy::PinnedByCorrelation).expect("serializes");
        assert_eq!(json, "\"PinnedByCorrelation\"");
        let back: Strategy = serde_json::from_str("\"DispatchToSingle\"").expect("deserializes");
        assert_eq!(back, Strategy::DispatchToSingle);
    }

    #[test]
    fn the_protocol_numbers_map_to_strategies_with_round_robin_as_the_default() {
        assert_eq!(Strategy::from_number(0), Strategy::DispatchToSingle);
        assert_eq!(Strategy::from_number(1), Strategy::RoundRobin);
        assert_eq!(Strategy::from_number(2), Strategy::Pinned);
        assert_eq!(Strategy::from_number(7), Strategy::RoundRobin);
    }

    #[test]
    fn round_robin_takes_turns_and_skips_a_busy_consumer() {
        let mut next = 0;
        let all = |_: usize| true;
        let picks: Vec<_> = (0..4)
            .map(|_| Strategy::RoundRobin.choose(3, all, "s", None, &mut next))
            .collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
        let mut next = 0;
        let not_first = |i: usize| i != 0;
        assert_eq!(
            Strategy::RoundRobin.choose(3, not_first, "s", None, &mut next),
            Some(1)
        );
        assert_eq!(next, 2);
        assert_eq!(
            Strategy::RoundRobin.choose(3, |_| false, "s", None, &mut next),
            None
        );
    }

    #[test]
    fn dispatch_to_single_always_prefers_the_first_free_consumer() {
        let mut next = 0;
        for _ in 0..3 {
            assert_eq!(
                Strategy::DispatchToSingle.choose(3, |_| true, "s", None, &mut next),
                Some(0)
            );
        }
        assert_eq!(
            Strategy::DispatchToSingle.choose(3, |i| i == 2, "s", None, &mut next),
            Some(2)
        );
    }

    #[test]
    fn pinned_sends_a_stream_to_one_consumer_and_waits_for_it_when_busy() {
        let mut next = 0;
        let first = Strategy::Pinned.choose(4, |_| true, "order-1", Some("c"), &mut next);
        assert_eq!(first, Some(pin("order-1", 4)));
        for _ in 0..3 {
            assert_eq!(
                Strategy::Pinned.choose(4, |_| true, "order-1", Some("other"), &mut next),
                first
            );
        }
        let busy = first.expect("a free consumer is chosen");
        assert_eq!(
            Strategy::Pinned.choose(4, |i| i != busy, "order-1", None, &mut next),
            None
        );
    }

    #[test]
    fn pinned_by_correlation_pins_the_correlation_id_or_else_the_stream() {
        let mut next = 0;
        assert_eq!(
            Strategy::PinnedByCorrelation.choose(5, |_| true, "order-1", Some("c-9"), &mut next),
            Some(pin("c-9", 5))
        );
        assert_eq!(
            Strategy::PinnedByCorrelation.choose(5, |_| true, "order-1", None, &mut next),
            Some(pin("order-1", 5))
        );
    }

    #[test]
    fn no_consumers_means_no_choice() {
        let mut next = 0;
        for s in Strategy::ALL {
            assert_eq!(s.choose(0, |_| true, "s", None, &mut next), None);
        }
    }
}
