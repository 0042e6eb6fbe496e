//! Problem documents ([`annal_core::wire::Problem`], as `annal-server` writes them)
//! turned back into the [`annal_core::Error`] a local store would have returned.
//!
//! Invariants: a problem whose `type` is one of the store's kinds, with the members the
//! server puts on it, becomes that exact variant with every field, read from members
//! (never from `detail`, which is for people). A member the server leaves out is filled
//! in only where the server is known to leave it out (the body limit's `too_large` names
//! no field, limit or size). Auth failures are [`Error::Unauthorized`] and
//! [`Error::Forbidden`]. The store's own failures (`storage_error`, `unavailable`), an
//! unknown kind, a problem without its members and a body that is not a problem document
//! are [`Error::Storage`] naming the server; `corrupt` stays [`Error::Corrupt`], naming
//! the server. Never a panic.

use crate::transport::TransportError;
use annal_core::wire::Problem;
use annal_core::{Error, ErrorKind};
use reqwest::StatusCode;

/// Parses a problem document; `None` if the body is not one (no `type`).
pub(crate) fn parse(body: &[u8]) -> Option<Problem> {
    serde_json::from_slice::<Problem>(body)
        .ok()
        .filter(|d| !d.kind.is_empty())
}

/// The error a response with a non-success `status` and `body` stands for. `sent` is
/// the size of the request body (a 413 from the server's body limit does not say it).
pub(crate) fn error_from(base: &str, status: StatusCode, body: &[u8], sent: usize) -> Error {
    let Some(mut doc) = parse(body) else {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return TransportError::answer(
            base,
            format!("answered {status} without a problem document: {excerpt:?}"),
        )
        .into();
    };
    let unexpected = |doc: &Problem| -> Error {
        TransportError::answer(
            base,
            format!("answered {status} {}: {}", doc.kind, doc.detail),
        )
        .into()
    };
    match doc.error_kind() {
        None | Some(ErrorKind::Storage | ErrorKind::Unavailable) => return unexpected(&doc),
        Some(ErrorKind::Corrupt) => {
            let message = doc.message.take().unwrap_or(doc.detail);
            return Error::Corrupt(format!("(reported by the server at {base}) {message}"));
        }
        Some(ErrorKind::TooLarge) if doc.field.is_none() => {
            // The server's body limit names no field, limit or size: 0 is "not said".
            doc.field = Some("body".to_owned());
            doc.limit.get_or_insert(0);
            doc.actual.get_or_insert(sent as u64);
        }
        Some(ErrorKind::Unauthorized | ErrorKind::Forbidden) if doc.reason.is_none() => {
            // Something in front of the server (a proxy) said it in `detail` only.
            doc.reason = Some(doc.detail.clone());
        }
        Some(_) => {}
    }
    doc.to_error().unwrap_or_else(|| unexpected(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::ExpectedVersion;

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
            r#"{"type":"invalid_request","detail":"invalid events[3].metadata: must be a JSON object","field":"events[3].metadata","reason":"must be a JSON object"}"#,
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
            r#"{"type":"not_found","detail":"not found: aggregate 'x'","what":"aggregate 'x'"}"#,
        );
        assert!(
            matches!(&e, Error::NotFound { what } if what == "aggregate 'x'"),
            "{e:?}"
        );
    }

    #[test]
    fn fields_come_from_members_not_from_the_detail_text() {
        let e = map(
            409,
            r#"{"type":"lease_conflict","detail":"reworded for people","group":"g","partition":2,"reason":"another member holds it"}"#,
        );
        assert!(
            matches!(&e, Error::LeaseConflict { group, partition: 2, detail } if group == "g" && detail == "another member holds it"),
            "{e:?}"
        );
    }

    #[test]
    fn auth_failures_are_their_own_variants() {
        let e = map(
            401,
            r#"{"type":"unauthorized","status":401,"detail":"a token is required"}"#,
        );
        assert!(
            matches!(&e, Error::Unauthorized { reason } if reason == "a token is required"),
            "{e:?}"
        );
        let e = map(
            403,
            r#"{"type":"forbidden","detail":"x","reason":"this token may not use aggregates of type 'X'"}"#,
        );
        assert!(matches!(&e, Error::Forbidden { .. }), "{e:?}");
    }

    #[test]
    fn server_failures_and_foreign_bodies_are_storage_errors_naming_the_server() {
        for (status, body) in [
            (
                503,
                r#"{"type":"storage_error","detail":"storage error: disk full"}"#,
            ),
            (
                503,
                r#"{"type":"unavailable","detail":"the store does not answer"}"#,
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
