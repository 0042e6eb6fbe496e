//! Checkpoints: a named consumer's position in the global log, with the seed's
//! projection_checkpoints fields (status, error_count, last_error, updated time).
//!
//! A checkpoint may track another log instead (`source`: an upstream store, another
//! service's log, a Kafka topic), so that a process application commits its own events
//! together with the upstream position they came from. Without a source, a position is
//! this store's and may not pass its head; with one, annal cannot know that log's head,
//! and only the compare-and-set orders the writes. A checkpoint shows the source its last
//! write named.
//!
//! Invariant: a checkpoint is written atomically, optionally only if it is still at the
//! position the writer expected (compare-and-set), alone or inside a [`crate::Transaction`],
//! and, when it carries a [`LeaseFence`], only while that partition lease is still held
//! with that token (checked in the same transaction).

use crate::append::check_name;
use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::lease::LeaseFence;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// The largest `last_error` kept, in bytes.
pub const MAX_LAST_ERROR_BYTES: usize = 64 * 1024;
/// The largest position a checkpoint may hold (and expect): `i64::MAX`, the largest
/// both backends store.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// A consumer's state, as the seed's projection_checkpoints names it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    /// Processing events.
    #[default]
    Running,
    /// Replaying from the beginning.
    Rebuilding,
    /// Stopped on purpose.
    Stopped,
    /// Stopped by an error it could not get past.
    Faulted,
}

impl CheckpointStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Running => "running",
            CheckpointStatus::Rebuilding => "rebuilding",
            CheckpointStatus::Stopped => "stopped",
            CheckpointStatus::Faulted => "faulted",
        }
    }
}

impl fmt::Display for CheckpointStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckpointStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "running" => Ok(Self::Running),
            "rebuilding" => Ok(Self::Rebuilding),
            "stopped" => Ok(Self::Stopped),
            "faulted" => Ok(Self::Faulted),
            other => Err(Error::invalid(
                "status",
                format!("'{other}' is not one of running, rebuilding, stopped, faulted"),
            )),
        }
    }
}

/// A checkpoint as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The consumer's name.
    pub name: String,
    /// The last global position it has handled (0: none).
    pub position: u64,
    /// Its state.
    pub status: CheckpointStatus,
    /// Errors counted since the consumer last reset the count.
    pub error_count: u64,
    /// The last error's text.
    pub last_error: Option<String>,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// The log its position is in, when not this store's (the last write's `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A write of a checkpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointWrite {
    /// The consumer's name (over HTTP it comes from the route).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub name: String,
    /// The new position: in this store's log (at most its head position after the
    /// write), or in `source`'s.
    pub position: u64,
    /// The log the position is in, when not this store's: a name of the caller's
    /// choosing ("orders-service", "kafka:payments/3"). Absent: this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub source: Option<String>,
    /// The new status (default running).
    #[serde(default)]
    pub status: CheckpointStatus,
    /// The new error count (default 0).
    #[serde(default)]
    pub error_count: u64,
    /// The new last error (default none).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Compare-and-set: absent writes unconditionally; `null` (`Some(None)`) requires
    /// that the checkpoint does not exist yet; a number requires it to be at that position.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub expected_position: Option<Option<u64>>,
    /// Fencing: write only while this partition lease is still held with this owner and
    /// token (a consumer-group member's runner sets it; see [`crate::lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseFence>,
}

fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

impl CheckpointWrite {
    /// A write moving `name` to `position`, status running, no error, unconditional.
    pub fn new(name: impl Into<String>, position: u64) -> Self {
        Self {
            name: name.into(),
            position,
            source: None,
            status: CheckpointStatus::Running,
            error_count: 0,
            last_error: None,
            expected_position: None,
            lease: None,
        }
    }

    /// Names the log the position is in, when it is not this store's.
    pub fn in_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Makes the write conditional on the current position (`None`: must not exist).
    pub fn expecting(mut self, expected_position: Option<u64>) -> Self {
        self.expected_position = Some(expected_position);
        self
    }

    /// Makes the write conditional on a partition lease still being held.
    pub fn fenced(mut self, fence: LeaseFence) -> Self {
        self.lease = Some(fence);
        self
    }

    /// Checks the fields; `at` prefixes field paths in errors.
    pub fn validate(&self, at: &str) -> Result<()> {
        check_name(&format!("{at}name"), &self.name)?;
        if let Some(source) = &self.source {
            check_name(&format!("{at}source"), source)?;
        }
        if let Some(f) = &self.lease {
            f.validate(&format!("{at}lease."))?;
        }
        // Both backends store positions as signed 64-bit integers: a larger one (only a
        // source's can pass the head check) would be stored as another number.
        let expected = self.expected_position.flatten();
        for (field, p) in [
            ("position", Some(self.position)),
            ("expected_position", expected),
        ] {
            if let Some(p) = p
                && p > MAX_POSITION
            {
                return Err(Error::invalid(
                    format!("{at}{field}"),
                    format!("{p} is above the largest position a store keeps, {MAX_POSITION}"),
                ));
            }
        }
        if let Some(e) = &self.last_error
            && e.len() > MAX_LAST_ERROR_BYTES
        {
            return Err(Error::TooLarge {
                field: format!("{at}last_error"),
                limit: MAX_LAST_ERROR_BYTES as u64,
                actual: e.len() as u64,
            });
        }
        Ok(())
    }

    /// Checks the compare-and-set against the stored position (`None`: not stored).
    pub fn check_expected(&self, actual: Option<u64>) -> Result<()> {
        match self.expected_position {
            Some(expected) if expected != actual => Err(Error::CheckpointConflict {
                name: self.name.clone(),
                expected_position: expected,
                actual_position: actual,
            }),
            _ => Ok(()),
        }
    }

    /// Checks that a position in this store's log is not past its head, the last
    /// committed position (a position in another source's log is not checked).
    pub fn check_position(&self, head: u64) -> Result<()> {
        if self.source.is_none() && self.position > head {
            return Err(Error::invalid(
                "checkpoint.position",
                format!(
                    "{} is past the head position {head} (a position in another log \
                     names that log as the checkpoint's source)",
                    self.position
                ),
            ));
        }
        Ok(())
    }

    /// The stored checkpoint this write produces at `now`.
    pub fn stored(&self, now: Timestamp) -> Checkpoint {
        Checkpoint {
            name: self.name.clone(),
            position: self.position,
            status: self.status,
            error_count: self.error_count,
            last_error: self.last_error.clone(),
            updated_at: now,
            source: self.source.clone(),
        }
    }
}
