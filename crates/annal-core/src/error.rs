//! Typed errors of every store operation.
//!
//! Every variant says what happened and what the caller can do about it. Variants other
//! than [`Error::Storage`] and [`Error::Corrupt`] are the caller's to handle (conflicts,
//! bad input); none of them leaves anything written. [`Error::kind`] gives the variant's
//! [`ErrorKind`]: its stable string is the HTTP API's problem `type` (docs/http.md), and
//! its HTTP status is decided here, once. [`crate::wire::Problem`] carries the variant's
//! fields across the wire and back.

use crate::append::ExpectedVersion;
use uuid::Uuid;

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend's database library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The aggregate's current version is not what the append expected. Nothing was
    /// written; re-read the aggregate, decide again and retry.
    #[error(
        "wrong expected version for aggregate '{aggregate_id}': expected {expected}, actual version is {actual}"
    )]
    WrongExpectedVersion {
        /// The aggregate the append was for.
        aggregate_id: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The aggregate's current version (0 when it has no events).
        actual: u64,
    },
    /// The aggregate exists with another aggregate_type, fixed by its first event.
    #[error(
        "aggregate '{aggregate_id}' is of type '{existing}', not '{requested}': an aggregate's type is fixed by its first event"
    )]
    AggregateTypeMismatch {
        /// The aggregate.
        aggregate_id: String,
        /// The type it has.
        existing: String,
        /// The type the append named.
        requested: String,
    },
    /// An event_id is already stored with other content or at another place: a retry
    /// must resend exactly what it sent first.
    #[error(
        "event_id {event_id} is already stored with different content or at another version: {detail}"
    )]
    DuplicateEventId {
        /// The reused id.
        event_id: Uuid,
        /// What differs.
        detail: String,
    },
    /// A checkpoint was not at the position the writer expected. Nothing was written.
    #[error(
        "checkpoint '{name}' is at {}, not at the expected {}",
        fmt_pos(*actual_position),
        fmt_pos(*expected_position)
    )]
    CheckpointConflict {
        /// The checkpoint.
        name: String,
        /// What the writer expected (`None`: that it does not exist yet).
        expected_position: Option<u64>,
        /// Where it is (`None`: it does not exist).
        actual_position: Option<u64>,
    },
    /// A partition lease is not (or no longer) held as the request needs: another member
    /// holds it, or a checkpoint write's fence names a lease that has since changed
    /// hands. Nothing was written; a member that gets this has lost the partition.
    #[error("lease of partition {partition} of consumer group '{group}': {detail}")]
    LeaseConflict {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
        /// Who holds it, or what changed.
        detail: String,
    },
    /// A field of the request is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The field, as a path into the request (`events[2].event_type`).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A request or one of its parts is over a configured limit.
    #[error("{field} is too large: {actual} is over the limit of {limit}")]
    TooLarge {
        /// The field or part that is too large.
        field: String,
        /// The configured limit.
        limit: u64,
        /// Its size.
        actual: u64,
    },
    /// The stream (aggregate) was tombstoned: it can no longer be read or written.
    #[error("Event stream '{aggregate_id}' is deleted.")]
    StreamDeleted {
        /// The stream.
        aggregate_id: String,
    },
    /// The subject was forgotten (its data key destroyed): no personal data can be
    /// stored for it any more. Nothing was written; store the event without that
    /// subject's personal part, or under a new subject id.
    #[error("subject '{subject}' was forgotten: no personal data can be stored for it")]
    SubjectForgotten {
        /// The subject.
        subject: String,
    },
    /// The thing asked for does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The database failed (I/O, disk full, lost connection). The outcome of an append
    /// that fails this way is unknown: retry it with the same event_ids.
    #[error("storage error: {0}")]
    Storage(#[source] BoxError),
    /// Stored data cannot be read back as an event: the store was edited behind annal's
    /// back or is damaged. Run `annal verify`.
    #[error("store content is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot serve this now: it is shutting down, its writer stopped after a
    /// failure (reopen it), or, for personal data, this process lacks the
    /// key-encryption key the key table needs (restart it with that key). The message
    /// says which.
    #[error("unavailable: {0}")]
    Closed(String),
    /// The request carries no valid credentials (the server has auth on).
    #[error("{reason}")]
    Unauthorized {
        /// What to send.
        reason: String,
    },
    /// The credentials are valid but do not allow this request.
    #[error("{reason}")]
    Forbidden {
        /// What the credentials lack.
        reason: String,
    },
    /// This store does not offer the operation (e.g. a backend without partition
    /// leases). Nothing was written; use a store that has it.
    #[error("this store cannot {what}")]
    Unsupported {
        /// What it cannot do, e.g. "hold partition leases".
        what: String,
    },
}

/// The kind of an [`Error`]: one stable string per kind (the HTTP problem `type`) and
/// one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::WrongExpectedVersion`].
    WrongExpectedVersion,
    /// [`Error::AggregateTypeMismatch`].
    AggregateTypeMismatch,
    /// [`Error::DuplicateEventId`].
    DuplicateEventId,
    /// [`Error::CheckpointConflict`].
    CheckpointConflict,
    /// [`Error::LeaseConflict`].
    LeaseConflict,
    /// [`Error::InvalidRequest`].
    InvalidRequest,
    /// [`Error::TooLarge`].
    TooLarge,
    /// [`Error::StreamDeleted`].
    StreamDeleted,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::SubjectForgotten`].
    SubjectForgotten,
    /// [`Error::Storage`].
    Storage,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::Closed`]: the store does not answer.
    Unavailable,
    /// [`Error::Unauthorized`].
    Unauthorized,
    /// [`Error::Forbidden`].
    Forbidden,
    /// [`Error::Unsupported`].
    Unsupported,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::WrongExpectedVersion,
        ErrorKind::AggregateTypeMismatch,
        ErrorKind::DuplicateEventId,
        ErrorKind::CheckpointConflict,
        ErrorKind::LeaseConflict,
        ErrorKind::InvalidRequest,
        ErrorKind::TooLarge,
        ErrorKind::StreamDeleted,
        ErrorKind::NotFound,
        ErrorKind::SubjectForgotten,
        ErrorKind::Storage,
        ErrorKind::Corrupt,
        ErrorKind::Unavailable,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::Unsupported,
    ];

    /// The stable string: the HTTP problem `type` (docs/http.md).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::WrongExpectedVersion => "wrong_expected_version",
            ErrorKind::AggregateTypeMismatch => "aggregate_type_mismatch",
            ErrorKind::DuplicateEventId => "duplicate_event_id",
            ErrorKind::CheckpointConflict => "checkpoint_conflict",
            ErrorKind::LeaseConflict => "lease_conflict",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::StreamDeleted => "stream_deleted",
            ErrorKind::NotFound => "not_found",
            ErrorKind::SubjectForgotten => "subject_forgotten",
            ErrorKind::Storage => "storage_error",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    /// The kind whose stable string is `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The HTTP status of a problem of this kind (bad input 4xx; the store's own
    /// failures 5xx: 503 when it is unavailable, 500 when its content is corrupt).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::WrongExpectedVersion
            | ErrorKind::AggregateTypeMismatch
            | ErrorKind::DuplicateEventId
            | ErrorKind::CheckpointConflict
            | ErrorKind::LeaseConflict => 409,
            ErrorKind::StreamDeleted | ErrorKind::SubjectForgotten => 410,
            ErrorKind::TooLarge => 413,
            ErrorKind::Corrupt => 500,
            ErrorKind::Unsupported => 501,
            ErrorKind::Storage | ErrorKind::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

fn fmt_pos(p: Option<u64>) -> String {
    match p {
        Some(p) => format!("position {p}"),
        None => "nothing (no such checkpoint)".to_owned(),
    }
}

impl Error {
    /// The kind of this error; its stable string is the HTTP problem `type`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongExpectedVersion { .. } => ErrorKind::WrongExpectedVersion,
            Error::AggregateTypeMismatch { .. } => ErrorKind::AggregateTypeMismatch,
            Error::DuplicateEventId { .. } => ErrorKind::DuplicateEventId,
            Error::CheckpointConflict { .. } => ErrorKind::CheckpointConflict,
            Error::LeaseConflict { .. } => ErrorKind::LeaseConflict,
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::StreamDeleted { .. } => ErrorKind::StreamDeleted,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::SubjectForgotten { .. } => ErrorKind::SubjectForgotten,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Closed(_) => ErrorKind::Unavailable,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }

    /// Whether the caller's input is at fault ([`ErrorKind::InvalidRequest`] or
    /// [`ErrorKind::TooLarge`]): fix the request rather than retry it.
    pub fn is_bad_input(&self) -> bool {
        matches!(self.kind(), ErrorKind::InvalidRequest | ErrorKind::TooLarge)
    }

    /// Shorthand for an [`Error::InvalidRequest`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Wraps a backend's error as [`Error::Storage`].
    pub fn storage(e: impl Into<BoxError>) -> Self {
        Error::Storage(e.into())
    }
}
