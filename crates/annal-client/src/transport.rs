//! Failures to talk to the server: no connection, no answer in time, a broken answer.
//!
//! Invariant: every such failure becomes [`annal_core::Error::Storage`] holding a
//! [`TransportError`], whose message names the server's URL and the root cause. As for
//! any storage error, the outcome of a write that fails this way is unknown: retry it
//! with the same event_ids.

use annal_core::Error;
use std::fmt::Write as _;

/// A request to the annal server that got no usable answer.
#[derive(Debug, thiserror::Error)]
#[error("annal server at {url}: {what}")]
pub struct TransportError {
    /// The server's base URL.
    pub url: String,
    /// What went wrong.
    pub what: String,
    /// The HTTP library's error, when there is one.
    #[source]
    pub source: Option<reqwest::Error>,
}

impl TransportError {
    /// A request that failed in the HTTP library (connect, send, receive, timeout).
    pub(crate) fn request(url: &str, e: reqwest::Error) -> Self {
        let stage = if e.is_timeout() {
            "no answer in time"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else {
            "the request failed"
        };
        let mut what = stage.to_owned();
        // The root cause (e.g. "Connection refused (os error 111)") says the most.
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        let mut last = String::new();
        while let Some(c) = cause {
            last = c.to_string();
            cause = c.source();
        }
        if !last.is_empty() {
            let _ = write!(what, " ({last})");
        }
        Self {
            url: url.to_owned(),
            what,
            source: Some(e),
        }
    }

    /// An answer the client cannot use (status or body not as docs/http.md says).
    pub(crate) fn answer(url: &str, what: impl Into<String>) -> Self {
        Self {
            url: url.to_owned(),
            what: what.into(),
            source: None,
        }
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::storage(e)
    }
}
