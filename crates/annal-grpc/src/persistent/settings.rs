//! A group's settings: what its definition event stores, and how Create and Update
//! requests become them.
//!
//! Invariants: settings are checked once, when a request brings them (no negative
//! counts, `min_checkpoint_count` at most `max_checkpoint_count`, `read_batch_size` less
//! than `history_buffer_size` as KurrentDB requires, a known consumer strategy), and a
//! refusal is a [`Refused`], which the service answers as KurrentDB does (`INTERNAL`);
//! the stored form is what was checked, so a definition read back from the log needs no
//! second check. Timeouts given in .NET ticks are stored in milliseconds.

use super::strategy::{Strategy, UnknownStrategy};
use crate::pb::event_store::client::persistent_subscriptions::{create_req, update_req};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a group starts when it has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StartFrom {
    /// The first event.
    Start,
    /// What is appended after the group is created.
    End,
    /// A stream revision (inclusive).
    Revision(u64),
    /// A log position (inclusive).
    Position(u64),
}

/// A `$all` group's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FilterDef {
    pub(super) on_stream: bool,
    #[serde(default)]
    pub(super) regex: String,
    #[serde(default)]
    pub(super) prefixes: Vec<String>,
}

/// A group's settings, as stored in its definition event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Settings {
    pub(super) start: StartFrom,
    #[serde(default)]
    pub(super) filter: Option<FilterDef>,
    pub(super) resolve_links: bool,
    pub(super) extra_statistics: bool,
    pub(super) max_retry_count: i32,
    pub(super) min_checkpoint_count: i32,
    pub(super) max_checkpoint_count: i32,
    pub(super) max_subscriber_count: i32,
    pub(super) live_buffer_size: i32,
    pub(super) read_batch_size: i32,
    pub(super) history_buffer_size: i32,
    pub(super) message_timeout_ms: i64,
    pub(super) checkpoint_after_ms: i64,
    pub(super) consumer_strategy: Strategy,
}

fn ticks_to_ms(ticks: i64) -> i64 {
    ticks / 10_000
}

/// Why settings were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// A consumer strategy KurrentDB does not know.
    Strategy(UnknownStrategy),
    /// A count that must not be negative was.
    Negative { field: &'static str, value: i32 },
    /// `min_checkpoint_count` above a non-zero `max_checkpoint_count`.
    CheckpointBounds { min: i32, max: i32 },
    /// A negative message timeout or checkpoint interval.
    NegativeDuration,
    /// `read_batch_size` not less than `history_buffer_size` (KurrentDB refuses it: a
    /// group so set would never deliver).
    ReadBatchNotBelowHistory { read_batch: i32, history: i32 },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Strategy(e) => e.fmt(f),
            Refused::Negative { field, value } => {
                write!(f, "{field} must not be negative (got {value})")
            }
            Refused::CheckpointBounds { min, max } => write!(
                f,
                "min_checkpoint_count ({min}) exceeds max_checkpoint_count ({max})"
            ),
            Refused::NegativeDuration => {
                f.write_str("message timeout and checkpoint interval must not be negative")
            }
            Refused::ReadBatchNotBelowHistory {
                read_batch,
                history,
            } => write!(
                f,
                "read_batch_size ({read_batch}) must be less than history_buffer_size ({history})"
            ),
        }
    }
}

fn non_negative(field: &'static str, value: i32) -> Result<i32, Refused> {
    if value < 0 {
        return Err(Refused::Negative { field, value });
    }
    Ok(value)
}

/// The settings fields both Create and Update carry (their message types differ),
/// not yet checked.
pub(super) struct WireSettings {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout_ms: i64,
    checkpoint_after_ms: i64,
    consumer_strategy: Result<Strategy, UnknownStrategy>,
}

impl WireSettings {
    /// The settings, checked, for a group starting at `start` with `filter`.
    pub(super) fn check(
        self,
        start: StartFrom,
        filter: Option<FilterDef>,
    ) -> Result<Settings, Refused> {
        let consumer_strategy = self.consumer_strategy.map_err(Refused::Strategy)?;
        let min = non_negative("min_checkpoint_count", self.min_checkpoint_count)?;
        let max = non_negative("max_checkpoint_count", self.max_checkpoint_count)?;
        if max > 0 && min > max {
            return Err(Refused::CheckpointBounds { min, max });
        }
        if self.message_timeout_ms < 0 || self.checkpoint_after_ms < 0 {
            return Err(Refused::NegativeDuration);
        }
        let read_batch = non_negative("read_batch_size", self.read_batch_size)?;
        let history = non_negative("history_buffer_size", self.history_buffer_size)?;
        if read_batch >= history {
            return Err(Refused::ReadBatchNotBelowHistory {
                read_batch,
                history,
            });
        }
        Ok(Settings {
            start,
            filter,
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            max_retry_count: non_negative("max_retry_count", self.max_retry_count)?,
            min_checkpoint_count: min,
            max_checkpoint_count: max,
            max_subscriber_count: non_negative("max_subscriber_count", self.max_subscriber_count)?,
            live_buffer_size: non_negative("live_buffer_size", self.live_buffer_size)?,
            read_batch_size: read_batch,
            history_buffer_size: history,
            message_timeout_ms: self.message_timeout_ms,
            checkpoint_after_ms: self.checkpoint_after_ms,
            consumer_strategy,
        })
    }
}

/// The settings Create and Update share, read from either message (their types differ,
/// their fields do not); `$strategy` gives the consumer strategy.
macro_rules! wire_settings {
    ($s:expr, $req:ident, $strategy:expr) => {{
        use $req::settings::{CheckpointAfter, MessageTimeout};
        let s = $s;
        WireSettings {
            resolve_links: s.resolve_links,
            extra_statistics: s.extra_statistics,
            max_retry_count: s.max_retry_count,
            min_checkpoint_count: s.min_checkpoint_count,
            max_checkpoint_count: s.max_checkpoint_count,
            max_subscriber_count: s.max_subscriber_count,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            history_buffer_size: s.history_buffer_size,
            message_timeout_ms: match s.message_timeout {
                Some(MessageTimeout::MessageTimeoutMs(ms)) => i64::from(ms),
                Some(MessageTimeout::MessageTimeoutTicks(t)) => ticks_to_ms(t),
                None => 30_000,
            },
            checkpoint_after_ms: match s.checkpoint_after {
                Some(CheckpointAfter::CheckpointAfterMs(ms)) => i64::from(ms),
                Some(CheckpointAfter::CheckpointAfterTicks(t)) => ticks_to_ms(t),
                None => 2_000,
            },
            consumer_strategy: $strategy(&s),
        }
    }};
}

/// The settings of a Create request. Newer clients name the strategy; older ones send
/// its number.
#[allow(deprecated)]
pub(super) fn create_settings(s: Option<create_req::Settings>) -> WireSettings {
    wire_settings!(
        s.unwrap_or_default(),
        create_req,
        |s: &create_req::Settings| {
            if s.consumer_strategy.is_empty() {
                Ok(Strategy::from_number(s.named_consumer_strategy))
            } else {
                s.consumer_strategy.parse::<Strategy>()
            }
        }
    )
}

/// The settings of an Update request (which names its strategy by number).
pub(super) fn update_settings(s: Option<update_req::Settings>) -> WireSettings {
    wire_settings!(
        s.unwrap_or_default(),
        update_req,
        |s: &update_req::Settings| { Ok(Strategy::from_number(s.named_consumer_strategy)) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(read_batch: i32, history: i32, strategy: &str) -> WireSettings {
        create_settings(Some(create_req::Settings {
            read_batch_size: read_batch,
            history_buffer_size: history,
            consumer_strategy: strategy.to_owned(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_read_batch_not_below_the_history_buffer_is_refused_as_kurrentdb_does() {
        for (read_batch, history) in [(200, 100), (20, 20), (0, 0)] {
            assert_eq!(
                wire(read_batch, history, "RoundRobin").check(StartFrom::Start, None),
                Err(Refused::ReadBatchNotBelowHistory {
                    read_batch,
                    history
                })
            );
        }
        let ok = wire(20, 500, "RoundRobin")
            .check(StartFrom::Start, None)
            .expect("the clients' defaults");
        assert_eq!((ok.read_batch_size, ok.history_buffer_size), (20, 500));
    }

    #[test]
    fn an_unknown_consumer_strategy_is_refused_naming_it() {
        let refused = wire(20, 500, "InvalidStrategy").check(StartFrom::Start, None);
        let Err(Refused::Strategy(e)) = refused else {
            panic!("{refused:?}")
        };
        assert!(e.to_string().contains("InvalidStrategy"), "{e}");
    }
}
