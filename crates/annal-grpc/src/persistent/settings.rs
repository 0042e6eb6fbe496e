//! A group's settings: what its definition event stores, and how Create and Update
//! requests become them.
//!
//! Invariants: settings are checked once, when a request brings them (no negative
//! counts, `min_checkpoint_count` at most `max_checkpoint_count`, a known consumer
//! strategy); the stored form is what was checked, so a definition read back from the log
//! needs no second check. Timeouts given in .NET ticks are stored in milliseconds.

use super::strategy::{Strategy, UnknownStrategy};
use crate::pb::event_store::client::persistent_subscriptions::{create_req, update_req};
use serde::{Deserialize, Serialize};
use tonic::Status;

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

fn non_negative(field: &str, v: i32) -> Result<i32, Status> {
    if v < 0 {
        return Err(Status::invalid_argument(format!(
            "{field} must not be negative (got {v})"
        )));
    }
    Ok(v)
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
    ) -> Result<Settings, Status> {
        let consumer_strategy = self
            .consumer_strategy
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let min = non_negative("min_checkpoint_count", self.min_checkpoint_count)?;
        let max = non_negative("max_checkpoint_count", self.max_checkpoint_count)?;
        if max > 0 && min > max {
            return Err(Status::invalid_argument(format!(
                "min_checkpoint_count ({min}) exceeds max_checkpoint_count ({max})"
            )));
        }
        if self.message_timeout_ms < 0 || self.checkpoint_after_ms < 0 {
            return Err(Status::invalid_argument(
                "message timeout and checkpoint interval must not be negative",
            ));
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
            read_batch_size: non_negative("read_batch_size", self.read_batch_size)?,
            history_buffer_size: non_negative("history_buffer_size", self.history_buffer_size)?,
            message_timeout_ms: self.message_timeout_ms,
            checkpoint_after_ms: self.checkpoint_after_ms,
            consumer_strategy,
        })
    }
}

/// The settings Create and Update share, read from either message (their types differ,
/// their fields do not); `$strategy` gives the consumer strategy.
/// their fields do not); `$strategy` is the consumer strategy's name.
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
