//! Who is calling: HTTP Basic credentials, checked by the host's function.
//!
//! KurrentDB clients send `Authorization: Basic base64(user:password)`. The host (which
//! owns the credentials, e.g. API tokens) passes in a [`CheckCredentials`]; this module
//! only reads the header, asks it, and puts the resulting [`Principal`] in the request's
//! extensions for the services.
//!
//! Invariants: with a check configured, every call but `ServerFeatures` and `Gossip`
//! (which clients make before they send credentials, and KurrentDB answers to anyone)
//! carries a [`Principal`] or is refused with `Unauthenticated` / `PermissionDenied`
//! before it reaches a service; with no check (auth off), calls carry none and may do
//! everything.

use crate::{Principal, status_response};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use std::fmt;
use std::sync::Arc;

/// Why the host refused a user and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such user, or the wrong secret (`Unauthenticated`).
    Unknown,
    /// Known, but may not use this endpoint; the reason is told to the client
    /// (`PermissionDenied`).
    NotPermitted(String),
}

/// A check's signature: user name and secret → who they are, or why not.
type Check = dyn Fn(&str, &str) -> Result<Principal, Refusal> + Send + Sync;

/// The host's credential check.
#[derive(Clone)]
pub struct CheckCredentials(Arc<Check>);

impl CheckCredentials {
    /// Wraps the host's check.
    pub fn new(
        check: impl Fn(&str, &str) -> Result<Principal, Refusal> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(check))
    }

    /// Asks the host: who `user` with `secret` is, or why not.
    pub fn check(&self, user: &str, secret: &str) -> Result<Principal, Refusal> {
        (self.0)(user, secret)
    }
}

impl fmt::Debug for CheckCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckCredentials(..)")
    }
}

/// Whether a method may be called without credentials: clients ask what the server
/// supports, and who leads, before they send any.
fn is_open(path: &str) -> bool {
    path.starts_with("/event_store.client.server_features.")
        || path.starts_with("/event_store.client.gossip.")
}

/// The user and secret of a Basic `Authorization` header, if it holds a well-formed one.
fn basic_credentials(req: &Request) -> Option<(String, String)> {
    let encoded = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

/// The middleware: with a check, resolves the caller or refuses the call.
pub(crate) async fn authenticate(
    check: Option<CheckCredentials>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(check) = check.filter(|_| !is_open(req.uri().path())) else {
        return next.run(req).await;
    };
    let verdict = match basic_credentials(&req) {
        Some((user, secret)) => check.check(&user, &secret),
        None => Err(Refusal::Unknown),
    };
    match verdict {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(Refusal::Unknown) => status_response(tonic::Status::unauthenticated(
            "send credentials (HTTP Basic): the user is an API token's name, the password its secret",
        )),
        Err(Refusal::NotPermitted(reason)) => {
            status_response(tonic::Status::permission_denied(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, authorization: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(path);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn basic_credentials_are_read_from_the_authorization_header() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("sarah:s3cret:with:colons");
        let req = request("/x", Some(&format!("Basic {encoded}")));
        assert_eq!(
            basic_credentials(&req),
            Some(("sarah".to_owned(), "s3cret:with:colons".to_owned()))
        );
    }

    #[test]
    fn a_bearer_or_malformed_header_carries_no_basic_credentials() {
        assert_eq!(basic_credentials(&request("/x", Some("Bearer abc"))), None);
        assert_eq!(basic_credentials(&request("/x", Some("Basic !!!"))), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("sarah");
        assert_eq!(
            basic_credentials(&request("/x", Some(&format!("Basic {no_colon}")))),
            None
        );
        assert_eq!(basic_credentials(&request("/x", None)), None);
    }

    #[test]
    fn only_server_features_and_gossip_are_open() {
        assert!(is_open(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods"
        ));
        assert!(is_open("/event_store.client.gossip.Gossip/Read"));
        assert!(!is_open("/event_store.client.streams.Streams/Append"));
    }
}
