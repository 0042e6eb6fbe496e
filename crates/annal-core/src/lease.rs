//! Partition leases and member heartbeats: how consumer-group members in separate
//! processes agree, through the store, on who runs which partition
//! (see [`crate::group::GroupMember`]).
//!
//! A [`Lease`] says that `owner` runs `partition` of `group` until `expires_at`, by the
//! store's clock (the member never compares times itself). Its `token` is a fencing
//! token: a number that grows with every acquisition of that partition and is never
//! reused, even after a release. A checkpoint write can carry a [`LeaseFence`]; the store
//! then commits it only if the lease still has that owner and token, in the same
//! transaction as the checkpoint, so a member that lost its lease (it paused past the
//! expiry and another member took the partition) cannot move the checkpoint any more.
//!
//! Invariants every backend keeps (the subscription suite checks them):
//! - at most one owner holds a partition's lease at a time: acquiring succeeds only if
//!   the lease was never taken, was released, or has expired;
//! - each acquisition raises the token; renewing keeps it; a release clears the owner
//!   but keeps the token, so the next acquisition still raises it;
//! - renewing and releasing need the current owner and token: a renewal after another
//!   member took the partition fails (`None`), and so does a fenced checkpoint write;
//! - lease operations are durable once answered, like appends.

use crate::append::check_name;
use crate::error::{Error, Result};
use crate::event::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest time-to-live of a lease or heartbeat.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// A partition lease as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The consumer group.
    pub group: String,
    /// The partition.
    pub partition: u32,
    /// The member holding it.
    pub owner: String,
    /// The fencing token: raised by every acquisition of this partition.
    pub token: u64,
    /// When it lapses unless renewed (the store's clock).
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence a checkpoint write carries to commit only while this lease holds.
    pub fn fence(&self) -> LeaseFence {
        LeaseFence {
            group: self.group.clone(),
            partition: self.partition,
            owner: self.owner.clone(),
            token: self.token,
        }
    }
}

/// A condition on a checkpoint write: the lease of `partition` of `group` is still held
/// by `owner` with `token`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseFence {
    /// The consumer group.
    pub group: String,
    /// The partition.
    pub partition: u32,
    /// The member that must hold the lease.
    pub owner: String,
    /// The token its lease must have.
    pub token: u64,
}

impl LeaseFence {
    /// Checks the fields; `at` prefixes field paths in errors.
    pub fn validate(&self, at: &str) -> Result<()> {
        check_name(&format!("{at}group"), &self.group)?;
        check_name(&format!("{at}owner"), &self.owner)
    }

    /// Checks the fence against the stored lease: its (owner, token), `None` when the
    /// partition has no lease row; an owner of `None` means released.
    pub fn check(&self, stored: Option<(Option<&str>, u64)>) -> Result<()> {
        match stored {
            Some((Some(owner), token)) if owner == self.owner && token == self.token => Ok(()),
            other => Err(Error::LeaseConflict {
                group: self.group.clone(),
                partition: self.partition,
                detail: match other {
                    None => "the partition has no lease".to_owned(),
                    Some((None, _)) => "the lease was released".to_owned(),
                    Some((Some(owner), token)) => format!(
                        "the lease is held by '{owner}' with token {token}, not by '{}' with token {}",
                        self.owner, self.token
                    ),
                },
            }),
        }
    }
}

/// Checks a lease request's group, owner and ttl (`zero_ok`: a zero ttl is allowed).
pub fn check_request(group: &str, owner: &str, ttl: Duration, zero_ok: bool) -> Result<()> {
    check_name("group", group)?;
    check_name("owner", owner)?;
    check_ttl(ttl, zero_ok)
}

/// Checks a time-to-live: at most [`MAX_LEASE_TTL`], at least 1 ms unless `zero_ok`.
pub fn check_ttl(ttl: Duration, zero_ok: bool) -> Result<()> {
    if ttl > MAX_LEASE_TTL {
        return Err(Error::invalid(
            "ttl_ms",
            format!(
                "{} ms is over the limit of {} ms",
                ttl.as_millis(),
                MAX_LEASE_TTL.as_millis()
            ),
        ));
    }
    if !zero_ok && ttl < Duration::from_millis(1) {
        return Err(Error::invalid("ttl_ms", "must be at least 1 ms"));
    }
    Ok(())
}

/// `now + ttl` on the store's clock.
pub fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_micros(now.as_micros().saturating_add(micros))
}
