//! What every call checks before its work: who the caller is and whether they may
//! write, and the deadline the client set.
//!
//! Invariants: a caller without write permission never reaches a write; work with a
//! deadline ends with `DEADLINE_EXCEEDED` when it passes, whatever it was doing.

use crate::Principal;
use crate::status::deadline_exceeded;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The caller's user name, checking that they may write when `write`.
pub(crate) fn caller<T>(request: &Request<T>, write: bool) -> Result<Option<String>, Status> {
    match request.extensions().get::<Principal>() {
        None => Ok(None),
        Some(p) if write && !p.can_write => Err(Status::permission_denied(format!(
            "user '{}' may only read",
            p.name
        ))),
        Some(p) => Ok(Some(p.name.clone())),
    }
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
