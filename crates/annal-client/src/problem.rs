//! Problem documents (RFC 9457, as `annal-server` writes them) turned back into the
//! [`annal_core::Error`] a local store would have returned.
//!
//! Invariants: a problem whose `type` is one of the store's stable kinds, with the
//! members the server puts on it, becomes that exact variant with every field; the
//! human-readable parts the server only puts in `detail` (`reason`, `what`, the
//! duplicate's `detail`) are recovered by removing the prefix the core error's message
//! adds. Anything else (5xx, an unknown kind, a body that is not a problem document) is
//! [`Error::Storage`] naming the server, never a panic.

use crate::transport::TransportError;
use annal_core::{Error, ExpectedVersion, Uuid};
use reqwest::StatusCode;
use serde::Deserialize;

/// The members of a problem document the client reads. Unknown members are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProblemDoc {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub detail: Option<String>,
    pub field: Option<String>,
    pub aggregate_id: Option<String>,
    pub expected: Option<ExpectedVersion>,
    pub actual: Option<u64>,
    pub existing: Option<String>,
    pub requested: Option<String>,
    pub event_id: Option<Uuid>,
    pub name: Option<String>,
    pub expected_position: Option<u64>,
    pub actual_position: Option<u64>,
    pub limit: Option<u64>,
    pub group: Option<String>,
    pub partition: Option<u32>,
}

impl ProblemDoc {
    /// Parses a problem document; `None` if the body is not one (no `type`).
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<ProblemDoc>(body)
            .ok()
            .filter(|d| d.kind.is_some())
    }
}

/// `text` without `prefix`, or all of it when it does not start so.
fn strip(text: &str, prefix: &str) -> String {
    text.strip_prefix(prefix).unwrap_or(text).to_owned()
}

/// The error a response with a non-success `status` and `body` stands for. `sent` is
/// the size of the request body (a 413 from the server's body limit does not say it).
pub(crate) fn error_from(base: &str, status: StatusCode, body: &[u8], sent: usize) -> Error {
    let Some(doc) = ProblemDoc::parse(body) else {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return TransportError::answer(
            base,
            format!("answered {status} without a problem document: {excerpt:?}"),
        )
        .into();
    };
    let kind = doc.kind.clone().unwrap_or_default();
    let detail = doc.detail.clone().unwrap_or_default();
    let unexpected = |doc_kind: &str, detail: &str| -> Error {
        TransportError::answer(base, format!("answered {status} {doc_kind}: {detail}")).into()
    };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Error::InvalidRequest {
            field: "authorization".to_owned(),
            reason: format!(
                "the server at {base} refused the request ({status} {kind}): {detail}; \
                 give a token with HttpStore::builder(url).token(..)"
            ),
        };
    }
    match kind.as_str() {
        "wrong_expected_version" => match (doc.aggregate_id, doc.expected, doc.actual) {
            (Some(aggregate_id), Some(expected), Some(actual)) => Error::WrongExpectedVersion {
                aggregate_id,
                expected,
                actual,
            },
            _ => unexpected(&kind, &detail),
        },
        "aggregate_type_mismatch" => match (doc.aggregate_id, doc.existing, doc.requested) {
            (Some(aggregate_id), Some(existing), Some(requested)) => Error::AggregateTypeMismatch {
                aggregate_id,
                existing,
                requested,
            },
            _ => unexpected(&kind, &detail),
        },
        "duplicate_event_id" => match doc.event_id {
            Some(event_id) => Error::DuplicateEventId {
                event_id,
                detail: strip(
                    &detail,
                    &format!(
                        "event_id {event_id} is already stored with different content or at another version: "
                    ),
                ),
            },
            None => unexpected(&kind, &detail),
        },
        "checkpoint_conflict" => match doc.name {
            Some(name) => Error::CheckpointConflict {
                name,
                expected_position: doc.expected_position,
                actual_position: doc.actual_position,
            },
            None => unexpected(&kind, &detail),
        },
        "lease_conflict" => match (doc.group, doc.partition) {
            (Some(group), Some(partition)) => Error::LeaseConflict {
                detail: strip(
                    &detail,
                    &format!("lease of partition {partition} of consumer group '{group}': "),
                ),
                group,
                partition,
            },
            _ => unexpected(&kind, &detail),
        },
        "invalid_request" => {
            let field = doc.field.unwrap_or_else(|| "request".to_owned());
            let reason = strip(&detail, &format!("invalid {field}: "));
            Error::InvalidRequest { field, reason }
        }
        "too_large" => {
            let field = doc.field.unwrap_or_else(|| "body".to_owned());
            Error::TooLarge {
                // The body limit's problem names no limit: 0 stands for "not said".
                limit: doc.limit.unwrap_or(0),
                actual: doc.actual.unwrap_or(sent as u64),
                field,
            }
        }
        "stream_deleted" => match doc.aggregate_id {
            Some(aggregate_id) => Error::StreamDeleted { aggregate_id },
            None => unexpected(&kind, &detail),
        },
        "not_found" => Error::NotFound {
            what: strip(&detail, "not found: "),
        },
        "corrupt" => Error::Corrupt(format!("(reported by the server at {base}) {detail}")),
        _ => unexpected(&kind, &detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:9";

    fn map(status: u16, body: &str) -> Error {
        let status = StatusCode::from_u16(status).expect("status");
        error_from(BASE, status, body.as_bytes(), 42)
    }

    #[test]
    fn every_store_kind_maps_back_to_its_variant_with_all_fields() {
        let e = map(
            409,
            r#"{"type":"wrong_expected_version","status":409,"detail":"x","aggregate_id":"f","expected":"no_stream","actual":3}"#,
        );
        assert!(
            matches!(&e, Error::WrongExpectedVersion { aggregate_id, expected: ExpectedVersion::NoStream, actual: 3 } if aggregate_id == "f"),
            "{e:?}"
        );
        let e = map(
            400,
            r#"{"type":"invalid_request","detail":"invalid events[3].metadata: must be a JSON object","field":"events[3].metadata"}"#,
        );
        assert!(
            matches!(&e, Error::InvalidRequest { field, reason } if field == "events[3].metadata" && reason == "must be a JSON object"),
            "{e:?}"
        );
        let e = map(
            409,
            r#"{"type":"checkpoint_conflict","detail":"x","name":"p","expected_position":null,"actual_position":3}"#,
        );
        assert!(
            matches!(&e, Error::CheckpointConflict { name, expected_position: None, actual_position: Some(3) } if name == "p"),
            "{e:?}"
        );
        let e = map(
            413,
            r#"{"type":"too_large","detail":"x","field":"events[0]","limit":10,"actual":11}"#,
        );
        assert!(
            matches!(&e, Error::TooLarge { field, limit: 10, actual: 11 } if field == "events[0]"),
            "{e:?}"
        );
        let e = map(
            404,
            r#"{"type":"not_found","detail":"not found: aggregate 'x'"}"#,
        );
        assert!(
            matches!(&e, Error::NotFound { what } if what == "aggregate 'x'"),
            "{e:?}"
        );
    }

    #[test]
    fn server_failures_and_foreign_bodies_are_storage_errors_naming_the_server() {
        for (status, body) in [
            (
                503,
                r#"{"type":"storage_error","detail":"storage error: disk full"}"#,
            ),
            (502, "<html>bad gateway</html>"),
            (409, r#"{"type":"wrong_expected_version","detail":"x"}"#),
        ] {
            let e = map(status, body);
            assert_eq!(e.kind(), "storage_error", "{status} {body}: {e:?}");
            assert!(e.to_string().contains(BASE), "{e}");
        }
    }

    #[test]
    fn a_body_limit_rejection_reports_the_size_sent() {
        let e = map(
            413,
            r#"{"type":"too_large","detail":"the request body is over the server's limit"}"#,
        );
        assert!(
            matches!(&e, Error::TooLarge { field, actual: 42, .. } if field == "body"),
            "{e:?}"
        );
    }
}
