//! Errors as RFC 9457 problem documents (`application/problem+json`): the server's side
//! of [`annal_core::wire::Problem`]. Every problem is built from an [`Error`], so its
//! `type`, status and members are the ones `annal_core` decides for the error's kind.
//! Bad input is always a 4xx; only the store's own failures are 5xx (503 when it is
//! unavailable, 500 when its content is corrupt).

use annal_core::{Error, ErrorKind, wire};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A problem document, as the handlers return it (boxed: errors stay small).
#[derive(Debug)]
pub struct Problem(Box<wire::Problem>);

impl Problem {
    /// 400 `invalid_request` naming the field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::invalid(field, reason).into()
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }.into()
    }

    /// 401 `unauthorized`: no valid credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Error::Unauthorized {
            reason: reason.into(),
        }
        .into()
    }

    /// 403 `forbidden`: the credentials do not allow this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Error::Forbidden {
            reason: reason.into(),
        }
        .into()
    }

    /// 503 `unavailable`: the store does not answer. `detail` is said as it is.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = wire::Problem::from(Error::Closed(message.clone()));
        p.detail = message;
        Problem(Box::new(p))
    }

    /// 405 `invalid_request`: the route exists but does not answer this method (the
    /// router adds the `Allow` header).
    pub fn method_not_allowed() -> Self {
        let mut p = wire::Problem::from(Error::invalid(
            "method",
            "this route does not answer this method; the Allow header lists those it does",
        ));
        p.status = StatusCode::METHOD_NOT_ALLOWED.as_u16();
        p.title = "Method Not Allowed".to_owned();
        Problem(Box::new(p))
    }

    /// A 409 of `kind` for a caller who may not see what it conflicts with: `detail`
    /// says why without naming it; the fields that would (the other aggregate's type)
    /// stay out.
    pub fn conflict_hidden(
        kind: ErrorKind,
        detail: String,
        aggregate_id: Option<String>,
        event_id: Option<annal_core::Uuid>,
    ) -> Self {
        let mut p = wire::Problem::new(kind, detail.clone());
        p.aggregate_id = aggregate_id;
        p.event_id = event_id;
        if event_id.is_some() {
            p.reason = Some(detail);
        }
        Problem(Box::new(p))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Tells operators about an error answered on `surface` (`http`, `sse`): a failure of
/// the store itself is logged ([`annal_core::failures`]), and corrupt data is counted in
/// `annal_corrupt_total`.
pub(crate) fn store_failed(surface: &'static str, e: &Error) {
    annal_core::failures::report(surface, e);
    if e.kind() == ErrorKind::Corrupt {
        metrics::counter!("annal_corrupt_total", "surface" => surface).increment(1);
    }
}

impl From<Error> for Problem {
    /// The store's own failures are also told to operators ([`store_failed`]).
    fn from(e: Error) -> Self {
        store_failed("http", &e);
        Problem(Box::new(wire::Problem::from(&e)))
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The body limit names no field, limit or size (the client fills them in).
            return Problem(Box::new(wire::Problem::new(
                ErrorKind::TooLarge,
                "the request body is over the server's limit",
            )));
        }
        let p = Problem::invalid("body", r.body_text());
        if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            Problem(Box::new(
                p.0.with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16()),
            ))
        } else {
            p
        }
    }
}

impl From<QueryRejection> for Problem {
    /// `invalid_request` naming the query parameter serde names (`limit`, say), or
    /// `query` when it names none.
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        match query_parameter(&text) {
            Some((name, why)) => Problem::invalid(name, why),
            None => Problem::invalid("query", text),
        }
    }
}

/// The parameter and the reason in a query rejection's text ("Failed to deserialize
/// query string: limit: invalid digit found in string"), if it names one.
fn query_parameter(text: &str) -> Option<(&str, &str)> {
    let (name, why) = text
        .strip_prefix("Failed to deserialize query string: ")?
        .split_once(": ")?;
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (!name.is_empty() && name.chars().all(plain)).then_some((name, why))
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Problem::invalid("path", r.body_text())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_string(&*self.0).unwrap_or_else(|_| {
            format!(r#"{{"status":{},"type":"{}"}}"#, self.0.status, self.0.kind)
        });
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_rejection_names_the_parameter_serde_names() {
        assert_eq!(
            query_parameter(
                "Failed to deserialize query string: limit: invalid digit found in string"
            ),
            Some(("limit", "invalid digit found in string"))
        );
        assert_eq!(
            query_parameter("Failed to deserialize query string: expected `,` or `}`"),
            None
        );
        assert_eq!(query_parameter("something else: entirely"), None);
    }

    #[test]
    fn every_kind_is_titled_with_its_statuss_reason_phrase() {
        for kind in ErrorKind::ALL {
            let p = wire::Problem::new(kind, "x");
            let status = StatusCode::from_u16(p.status).expect("a status");
            assert_eq!(Some(p.title.as_str()), status.canonical_reason(), "{kind}");
        }
        let media = wire::Problem::new(ErrorKind::InvalidRequest, "x").with_status(415);
        assert_eq!(
            Some(media.title.as_str()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE.canonical_reason()
        );
    }
}
