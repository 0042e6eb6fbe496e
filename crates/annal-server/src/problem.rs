//! Errors as RFC 9457 problem documents (`application/problem+json`) with the stable
//! `type` strings of API.md. Bad input is always a 4xx; only the store's own failures
//! are 5xx (503 when it is unavailable, 500 when its content is corrupt).

use annal_core::Error;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Map<String, Value>,
}

impl Problem {
    /// A problem of `kind` with `status` and a human-readable `detail`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// 400 `invalid_request` naming the field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid {field}: {reason}"),
        )
        .with("field", json!(field))
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("not found: {}", what.into()),
        )
    }

    /// Adds a member to the document.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::WrongExpectedVersion {
                aggregate_id,
                expected,
                actual,
            } => Problem::new(StatusCode::CONFLICT, "wrong_expected_version", detail)
                .with("aggregate_id", json!(aggregate_id))
                .with("expected", json!(expected))
                .with("actual", json!(actual)),
            Error::AggregateTypeMismatch {
                aggregate_id,
                existing,
                requested,
            } => Problem::new(StatusCode::CONFLICT, "aggregate_type_mismatch", detail)
                .with("aggregate_id", json!(aggregate_id))
                .with("existing", json!(existing))
                .with("requested", json!(requested)),
            Error::DuplicateEventId { event_id, .. } => {
                Problem::new(StatusCode::CONFLICT, "duplicate_event_id", detail)
                    .with("event_id", json!(event_id))
            }
            Error::CheckpointConflict {
                name,
                expected_position,
                actual_position,
            } => Problem::new(StatusCode::CONFLICT, "checkpoint_conflict", detail)
                .with("name", json!(name))
                .with("expected_position", json!(expected_position))
                .with("actual_position", json!(actual_position)),
            Error::LeaseConflict {
                group, partition, ..
            } => Problem::new(StatusCode::CONFLICT, "lease_conflict", detail)
                .with("group", json!(group))
                .with("partition", json!(partition)),
            Error::InvalidRequest { field, .. } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
                    .with("field", json!(field))
            }
            Error::TooLarge {
                field,
                limit,
                actual,
            } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
                .with("field", json!(field))
                .with("limit", json!(limit))
                .with("actual", json!(actual)),
            Error::StreamDeleted { aggregate_id } => {
                Problem::new(StatusCode::GONE, "stream_deleted", detail)
                    .with("aggregate_id", json!(aggregate_id))
            }
            Error::NotFound { .. } => Problem::new(StatusCode::NOT_FOUND, "not_found", detail),
            Error::Corrupt(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", detail),
            Error::Storage(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "storage_error", detail)
            }
            _ => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail),
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over the server's limit",
            );
        }
        let status = if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        Problem::new(
            status,
            "invalid_request",
            format!("invalid body: {}", r.body_text()),
        )
        .with("field", json!("body"))
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid query: {}", r.body_text()),
        )
        .with("field", json!("query"))
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid path: {}", r.body_text()),
        )
        .with("field", json!("path"))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut doc = Map::new();
        doc.insert("type".into(), json!(self.kind));
        doc.insert(
            "title".into(),
            json!(self.status.canonical_reason().unwrap_or("Error")),
        );
        doc.insert("status".into(), json!(self.status.as_u16()));
        doc.insert("detail".into(), json!(self.detail));
        doc.extend(self.extra);
        let mut res = (self.status, Value::Object(doc).to_string()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}
