//! Store failures told to operators: every failure of the store itself (a 5xx kind:
//! `storage`, `corrupt`, `unavailable`) that a server answers is logged at error level
//! with its cause, so a full disk or a damaged page is never only in the answers.
//!
//! [`WriteHealth`] keeps whether a store's writer can write: its last group failed for
//! a reason of the store's own (a full disk, a lost primary), or not. Readiness checks
//! (`/health/ready`) report it until a commit succeeds again.
//!
//! Invariants: bad input and conflicts are never logged here (they are the caller's);
//! the same failure (kind and message) is logged at most once per [`WINDOW`], and the
//! next line for it says how many were held back, so a flood is visible without
//! drowning the log; at most [`TRACKED`] distinct failures are remembered (then the
//! memory starts over, logging each again once).

use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Least time between two log lines for the same failure.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Most distinct failures remembered at once.
pub const TRACKED: usize = 256;

/// A failure: its status and message.
type Failure = (u16, String);

/// When a failure was last logged, and how many repeats were held back since.
type Told = (Instant, u64);

/// Every failure logged lately.
static SEEN: Mutex<Option<HashMap<Failure, Told>>> = Mutex::new(None);

/// Logs `e` at error level if it is a failure of the store itself (status 500 and
/// above), at most once per [`WINDOW`] for the same failure. `surface` says where it
/// was answered (`"http"`, `"grpc"`).
pub fn report(surface: &str, e: &Error) {
    let kind = e.kind();
    let status = kind.status();
    if status < 500 {
        return;
    }
    let message = e.to_string();
    if let Some(held_back) = due(status, &message, Instant::now()) {
        tracing::error!(
            surface,
            kind = kind.as_str(),
            status,
            repeats_held_back = held_back,
            "the store failed: {message}"
        );
    }
}

/// Whether the failure is due a log line now; if so, how many repeats were held back.
fn due(status: u16, message: &str, now: Instant) -> Option<u64> {
    let Ok(mut seen) = SEEN.lock() else {
        // A panic while holding the lock: log everything rather than nothing.
        return Some(0);
    };
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() >= TRACKED {
        seen.clear();
    }
    let key = (status, message.to_owned());
    match seen.get_mut(&key) {
        Some((last, held)) if now.duration_since(*last) < WINDOW => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            let told = *held;
            *last = now;
            *held = 0;
            Some(told)
        }
        None => {
            seen.insert(key, (now, 0));
            Some(0)
        }
    }
}

/// Whether a store's writer can write: the failure of its last commit, if it failed.
/// Cheap to clone; clones share the state (the writer sets it, readiness reads it).
#[derive(Debug, Clone, Default)]
pub struct WriteHealth(Arc<Mutex<Option<String>>>);

impl WriteHealth {
    /// A commit failed for a reason of the store's own.
    pub fn failed(&self, e: &Error) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(e.to_string());
        }
    }

    /// A commit succeeded: the store writes again.
    pub fn succeeded(&self) {
        if let Ok(mut last) = self.0.lock()
            && last.is_some()
        {
            *last = None;
        }
    }

    /// Why the store cannot write, if its last commit failed.
    pub fn failure(&self) -> Option<String> {
        self.0.lock().ok().and_then(|last| last.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_per_window_with_the_count_held_back() {
        let t = Instant::now();
        let msg = "disk full (a test of failures::due)";
        assert_eq!(due(503, msg, t), Some(0));
        assert_eq!(due(503, msg, t + Duration::from_secs(1)), None);
        assert_eq!(due(503, msg, t + Duration::from_secs(2)), None);
        assert_eq!(
            due(503, "another failure (test)", t),
            Some(0),
            "another failure is told"
        );
        assert_eq!(due(503, msg, t + WINDOW + Duration::from_secs(1)), Some(2));
    }

    #[test]
    fn write_health_reports_the_last_failure_until_a_commit_succeeds() {
        let h = WriteHealth::default();
        assert_eq!(h.failure(), None);
        h.clone().failed(&Error::storage("disk full"));
        assert!(h.failure().is_some_and(|f| f.contains("disk full")));
        h.succeeded();
        assert_eq!(h.failure(), None);
    }
}
