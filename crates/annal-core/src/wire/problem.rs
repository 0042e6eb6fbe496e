//! The problem document (RFC 9457, `application/problem+json`) of every HTTP error, and
//! its conversions to and from [`Error`].
//!
//! Invariants:
//! - `type` is [`ErrorKind::as_str`] and `status` is [`ErrorKind::status`] (a body that
//!   is not JSON answers 415 instead of 400: the server's only override);
//! - every field of the error's variant travels as a member of its own, so
//!   [`Problem::to_error`] rebuilds the variant from members, never from `detail`, which
//!   is for people: Error → Problem → JSON → Problem → Error gives the same error;
//! - members are written in alphabetical order, absent ones omitted, except
//!   `checkpoint_conflict`'s two positions, written as `null` when there is none: the
//!   bytes the server has always sent.

use crate::append::ExpectedVersion;
use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A problem document. Every member but `type`, `title`, `status` and `detail` belongs
/// to some kinds only (see each member).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Problem {
    /// wrong_expected_version: the aggregate's current version; too_large: the size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<u64>,
    /// checkpoint_conflict: where the checkpoint is (null: it does not exist).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub actual_position: Option<Option<u64>>,
    /// wrong_expected_version, aggregate_type_mismatch, stream_deleted: the aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<String>,
    /// What happened, for people.
    pub detail: String,
    /// duplicate_event_id: the reused id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// aggregate_type_mismatch: the aggregate's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<String>,
    /// wrong_expected_version: what the append expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedVersion>,
    /// checkpoint_conflict: where the writer expected it (null: that it does not exist).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub expected_position: Option<Option<u64>>,
    /// invalid_request, too_large: the field, as a path into the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// lease_conflict: the consumer group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// too_large: the configured limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// storage_error, corrupt, unavailable: what the store reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// checkpoint_conflict: the checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// lease_conflict: the partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// invalid_request, unauthorized, forbidden: why; duplicate_event_id: what differs;
    /// lease_conflict: who holds it, or what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// aggregate_type_mismatch: the type the append named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The HTTP status.
    pub status: u16,
    /// subject_forgotten: the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The HTTP reason phrase.
    pub title: String,
    /// Stable: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id,
    /// checkpoint_conflict, lease_conflict, invalid_request, too_large, stream_deleted,
    /// not_found, subject_forgotten, storage_error, corrupt, unavailable, unauthorized, forbidden,
    /// unsupported.
    #[serde(rename = "type")]
    pub kind: String,
    /// not_found: what was looked for; unsupported: what the store cannot do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

/// A member that is present (possibly `null`) as `Some`; an absent one stays `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The HTTP reason phrase of the statuses the API answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl Problem {
    /// A problem of `kind` with its status and a `detail`, and no other member.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let status = kind.status();
        Self {
            kind: kind.as_str().to_owned(),
            title: reason_phrase(status).to_owned(),
            status,
            detail: detail.into(),
            ..Self::default()
        }
    }

    /// The same problem answered with another HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self.title = reason_phrase(status).to_owned();
        self
    }

    /// The kind `type` names; `None` for a type this version does not know.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        ErrorKind::parse(&self.kind)
    }

    /// The error this problem stands for; `None` when its `type` is unknown or a member
    /// its variant needs is missing.
    pub fn to_error(&self) -> Option<Error> {
        let p = self.clone();
        Some(match self.error_kind()? {
            ErrorKind::WrongExpectedVersion => Error::WrongExpectedVersion {
                aggregate_id: p.aggregate_id?,
                expected: p.expected?,
                actual: p.actual?,
            },
            ErrorKind::AggregateTypeMismatch => Error::AggregateTypeMismatch {
                aggregate_id: p.aggregate_id?,
                existing: p.existing?,
                requested: p.requested?,
            },
            ErrorKind::DuplicateEventId => Error::DuplicateEventId {
                event_id: p.event_id?,
                detail: p.reason?,
            },
            ErrorKind::CheckpointConflict => Error::CheckpointConflict {
                name: p.name?,
                expected_position: p.expected_position.flatten(),
                actual_position: p.actual_position.flatten(),
            },
            ErrorKind::LeaseConflict => Error::LeaseConflict {
                group: p.group?,
                partition: p.partition?,
                detail: p.reason?,
            },
            ErrorKind::InvalidRequest => Error::InvalidRequest {
                field: p.field?,
                reason: p.reason?,
            },
            ErrorKind::TooLarge => Error::TooLarge {
                field: p.field?,
                limit: p.limit?,
                actual: p.actual?,
            },
            ErrorKind::StreamDeleted => Error::StreamDeleted {
                aggregate_id: p.aggregate_id?,
            },
            ErrorKind::NotFound => Error::NotFound { what: p.what? },
            ErrorKind::SubjectForgotten => Error::SubjectForgotten {
                subject: p.subject?,
            },
            ErrorKind::Unsupported => Error::Unsupported { what: p.what? },
            ErrorKind::Storage => Error::storage(p.message?),
            ErrorKind::Corrupt => Error::Corrupt(p.message?),
            ErrorKind::Unavailable => Error::Closed(p.message?),
            ErrorKind::Unauthorized => Error::Unauthorized { reason: p.reason? },
            ErrorKind::Forbidden => Error::Forbidden { reason: p.reason? },
        })
    }
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Self {
        let mut p = Problem::new(e.kind(), e.to_string());
        match e {
            Error::WrongExpectedVersion {
                aggregate_id,
                expected,
                actual,
            } => {
                p.aggregate_id = Some(aggregate_id.clone());
                p.expected = Some(*expected);
                p.actual = Some(*actual);
            }
            Error::AggregateTypeMismatch {
                aggregate_id,
                existing,
                requested,
            } => {
                p.aggregate_id = Some(aggregate_id.clone());
                p.existing = Some(existing.clone());
                p.requested = Some(requested.clone());
            }
            Error::DuplicateEventId { event_id, detail } => {
                p.event_id = Some(*event_id);
                p.reason = Some(detail.clone());
            }
            Error::CheckpointConflict {
                name,
                expected_position,
                actual_position,
            } => {
                p.name = Some(name.clone());
                p.expected_position = Some(*expected_position);
                p.actual_position = Some(*actual_position);
            }
            Error::LeaseConflict {
                group,
                partition,
                detail,
            } => {
                p.group = Some(group.clone());
                p.partition = Some(*partition);
                p.reason = Some(detail.clone());
            }
            Error::InvalidRequest { field, reason } => {
                p.field = Some(field.clone());
                p.reason = Some(reason.clone());
            }
            Error::TooLarge {
                field,
                limit,
                actual,
            } => {
                p.field = Some(field.clone());
                p.limit = Some(*limit);
                p.actual = Some(*actual);
            }
            Error::StreamDeleted { aggregate_id } => p.aggregate_id = Some(aggregate_id.clone()),
            Error::NotFound { what } | Error::Unsupported { what } => p.what = Some(what.clone()),
            Error::SubjectForgotten { subject } => p.subject = Some(subject.clone()),
            Error::Storage(source) => p.message = Some(source.to_string()),
            Error::Corrupt(message) | Error::Closed(message) => p.message = Some(message.clone()),
            Error::Unauthorized { reason } | Error::Forbidden { reason } => {
                p.reason = Some(reason.clone());
            }
        }
        p
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Problem::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each variant.
    fn one_of_each() -> Vec<Error> {
        vec![
            Error::WrongExpectedVersion {
                aggregate_id: "family_1".into(),
                expected: ExpectedVersion::Exact(2),
                actual: 3,
            },
            Error::WrongExpectedVersion {
                aggregate_id: "family_1".into(),
                expected: ExpectedVersion::NoStream,
                actual: 1,
            },
            Error::AggregateTypeMismatch {
                aggregate_id: "a".into(),
                existing: "Family".into(),
                requested: "Notice".into(),
            },
            Error::DuplicateEventId {
                event_id: Uuid::from_u128(7),
                detail: "the data differs".into(),
            },
            Error::CheckpointConflict {
                name: "p".into(),
                expected_position: None,
                actual_position: Some(3),
            },
            Error::CheckpointConflict {
                name: "p".into(),
                expected_position: Some(2),
                actual_position: None,
            },
            Error::LeaseConflict {
                group: "billing".into(),
                partition: 3,
                detail: "another member holds it".into(),
            },
            Error::invalid("events[2].event_type", "must not be empty"),
            Error::TooLarge {
                field: "events[0]".into(),
                limit: 10,
                actual: 11,
            },
            Error::StreamDeleted {
                aggregate_id: "gone".into(),
            },
            Error::NotFound {
                what: "aggregate 'x'".into(),
            },
            Error::SubjectForgotten {
                subject: "family_1".into(),
            },
            Error::storage("disk full"),
            Error::Corrupt("position 7 has no hash".into()),
            Error::Closed("the writer thread has stopped".into()),
            Error::Unauthorized {
                reason: "send an API token".into(),
            },
            Error::Forbidden {
                reason: "this token may not use aggregates of type 'X'".into(),
            },
            Error::Unsupported {
                what: "hold partition leases".into(),
            },
        ]
    }

    #[test]
    fn every_variant_survives_the_trip_through_a_problem_document() {
        let errors = one_of_each();
        for kind in ErrorKind::ALL {
            assert!(
                errors.iter().any(|e| e.kind() == kind),
                "no example of {kind}"
            );
        }
        for e in errors {
            let json = serde_json::to_vec(&Problem::from(&e)).expect("serialise");
            let back: Problem = serde_json::from_slice(&json).expect("parse");
            let rebuilt = back.to_error().expect("a known kind with its members");
            assert_eq!(format!("{rebuilt:?}"), format!("{e:?}"));
            assert_eq!(rebuilt.to_string(), e.to_string());
        }
    }

    #[test]
    fn each_kind_has_one_string_and_parses_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Error::Closed("x".into()).kind(), "unavailable");
    }

    #[test]
    fn a_problem_is_written_in_alphabetical_order_with_checkpoint_positions_as_null() {
        let e = Error::CheckpointConflict {
            name: "p".into(),
            expected_position: None,
            actual_position: Some(3),
        };
        let json = serde_json::to_string(&Problem::from(&e)).expect("serialise");
        assert_eq!(
            json,
            format!(
                r#"{{"actual_position":3,"detail":"{}","expected_position":null,"name":"p","status":409,"title":"Conflict","type":"checkpoint_conflict"}}"#,
                e
            )
        );
    }

    #[test]
    fn a_problem_missing_its_variants_members_is_no_error() {
        let p: Problem = serde_json::from_str(r#"{"type":"wrong_expected_version","detail":"x"}"#)
            .expect("parse");
        assert!(p.to_error().is_none());
        let p: Problem = serde_json::from_str(r#"{"type":"teapot"}"#).expect("parse");
        assert_eq!(p.error_kind(), None);
        assert!(p.to_error().is_none());
    }
}
