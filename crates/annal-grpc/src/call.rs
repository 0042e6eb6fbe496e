//! What every call checks before its work: who the caller is and whether they may
//! write, and the deadline the client set.
//!
//! Invariants: a caller reaches an operation only if its role allows it
//! ([`annal_core::access`]); work with a
//! deadline ends with `DEADLINE_EXCEEDED` when it passes, whatever it was doing.

use crate::Principal;
use crate::status::deadline_exceeded;
use annal_core::Actor;
use annal_core::access::{self, Operation};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// As recorded on what they write: a gRPC caller always acts as themself (their
    /// name is both user_id and principal); nobody in particular with auth off.
    pub(crate) actor: Actor,
    /// Their name and role (`None` with auth off: everything is allowed).
    principal: Option<Principal>,
}

impl Caller {
    /// Refuses an operation the caller's role does not allow (`PERMISSION_DENIED`),
    /// by the one table of [`annal_core::access`].
    pub(crate) fn require(&self, op: Operation) -> Result<(), Status> {
        let Some(p) = &self.principal else {
            return Ok(());
        };
        match access::refusal(&format!("user '{}'", p.name), p.role, op) {
            None => Ok(()),
            Some(why) => Err(Status::permission_denied(why)),
        }
    }
}

/// Who the caller is, checking that they may do `op`.
pub(crate) fn caller<T>(request: &Request<T>, op: Operation) -> Result<Caller, Status> {
    let principal = request.extensions().get::<Principal>().cloned();
    let caller = Caller {
        actor: principal
            .as_ref()
            .map_or_else(Actor::default, |p| Actor::authenticated(p.name.clone())),
        principal,
    };
    caller.require(op)?;
    Ok(caller)
}

/// The request's deadline (`grpc-timeout`), if any.
pub(crate) fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

/// Runs `work` within the deadline.
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => work.await,
        Some(at) => tokio::time::timeout_at(at.into(), work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
    }
}
