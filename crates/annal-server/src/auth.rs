//! API tokens with roles, optionally limited to aggregate types.
//!
//! With no tokens configured, auth is off and every caller may do everything (the
//! server then refuses non-loopback addresses unless told otherwise). With tokens, every
//! route but `/health/*`, `/openapi.json`, the console's static files (`/`,
//! `/console/…`, which hold no data) and `/metrics` when public needs
//! `Authorization: Bearer <token>`; what each role may do is the one table of
//! [`annal_core::access`], applied here per route ([`authorize`]) and by the handlers
//! where the body decides (system events, checkpoints, the deep verify). A token limited to aggregate types sees and writes
//! only those aggregates' events (global reads are narrowed to them; `verify`, which
//! reads everything, needs an unlimited token). An append's `user_id` defaults to the
//! token's name and may name another user only if the token's `may_act_for` lists it
//! (or `*`); the token's name is recorded as every event's `principal`, which callers
//! cannot set.

use crate::problem::Problem;
use crate::tokens::{Token, Tokens};
use annal_core::AppendRequest;
use annal_core::access::{self, Operation};
use annal_grpc::{CheckCredentials, Principal, Refusal};
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

pub use annal_core::access::Role;

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`None` with auth off, or on an open route without a token).
    pub name: Option<String>,
    /// What it may do (`None`: nothing; only open routes are reached without a token).
    pub role: Option<Role>,
    /// Its aggregate types (`None`: all).
    pub aggregate_types: Option<Vec<String>>,
    /// The user_ids it may claim besides its name (`*`: any).
    pub may_act_for: Vec<String>,
}

impl Caller {
    /// The caller when auth is off: may do everything.
    pub fn anonymous() -> Self {
        Self {
            name: None,
            role: Some(Role::Admin),
            aggregate_types: None,
            may_act_for: Vec::new(),
        }
    }

    /// A caller without a valid token on an open route (`/health/*`): may do nothing.
    fn nobody() -> Self {
        Self {
            role: None,
            ..Self::anonymous()
        }
    }

    /// The caller of a token.
    fn of(token: &Token) -> Self {
        Self {
            name: Some(token.name.clone()),
            role: Some(token.role),
            aggregate_types: token.aggregate_types.clone(),
            may_act_for: token.may_act_for.clone(),
        }
    }

    /// Refuses an operation the caller's role does not allow (`403 forbidden`, naming
    /// the role it needs).
    pub fn require(&self, op: Operation) -> Result<(), Problem> {
        let who = match &self.name {
            Some(name) => format!("token '{name}'"),
            None => "a caller without a token".to_owned(),
        };
        let refused = match self.role {
            Some(role) => access::refusal(&who, role, op),
            None => Some(format!("{who} may not do this; send an API token")),
        };
        refused.map_or(Ok(()), |why| Err(Problem::forbidden(why)))
    }

    /// Whether the caller may see the whole log's figures (the global head): auth off,
    /// or a token not limited to some aggregate types.
    pub fn sees_everything(&self) -> bool {
        self.role.is_some() && self.aggregate_types.is_none()
    }

    /// Whether the caller may see aggregates of this type.
    fn may_see(&self, aggregate_type: &str) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == aggregate_type))
    }

    /// Hides what the token may not see behind the answer `not_found` gives for what
    /// does not exist, so that a limited token cannot learn that it does.
    pub fn check_visible(
        &self,
        aggregate_type: &str,
        not_found: impl FnOnce() -> Problem,
    ) -> Result<(), Problem> {
        if self.may_see(aggregate_type) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// A write's failure as this caller may see it: a conflict with an aggregate of a
    /// type the token may not use does not name that aggregate's type or id.
    pub async fn conceal(&self, store: &dyn annal_core::Store, e: annal_core::Error) -> Problem {
        use annal_core::Error;
        match e {
            Error::AggregateTypeMismatch {
                aggregate_id,
                existing,
                requested,
            } if !self.may_see(&existing) => Problem::conflict_hidden(
                annal_core::ErrorKind::AggregateTypeMismatch,
                format!(
                    "aggregate '{aggregate_id}' cannot take '{requested}' events: it exists with a type this token may not use"
                ),
                Some(aggregate_id),
                None,
            ),
            Error::DuplicateEventId { event_id, detail } => {
                let hidden = match store.event(event_id).await {
                    Ok(Some(stored)) => !self.may_see(&stored.aggregate_type),
                    Ok(None) => false,
                    Err(_) => self.aggregate_types.is_some(),
                };
                if hidden {
                    Problem::conflict_hidden(
                        annal_core::ErrorKind::DuplicateEventId,
                        format!(
                            "event id {event_id} is already used by an aggregate this token may not use; give the event another id"
                        ),
                        None,
                        Some(event_id),
                    )
                } else {
                    Problem::from(Error::DuplicateEventId { event_id, detail })
                }
            }
            other => Problem::from(other),
        }
    }

    /// Makes `request` this caller's: its user_id defaults to the token's name, every
    /// user_id it claims (the append's and each event's) must be the name or one the
    /// token may act for, and the token's name is recorded as the principal. `at`
    /// prefixes field names in the refusal (`appends[2].` in a transaction).
    pub fn act(&self, request: &mut AppendRequest, at: &str) -> Result<(), Problem> {
        let Some(name) = &self.name else {
            return Ok(());
        };
        let may = |claimed: &str| {
            claimed == name || self.may_act_for.iter().any(|m| m == "*" || m == claimed)
        };
        let claims = std::iter::once((format!("{at}user_id"), request.user_id.as_deref())).chain(
            request
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{at}events[{i}].user_id"), e.user_id.as_deref())),
        );
        for (field, claimed) in claims {
            if let Some(claimed) = claimed.filter(|c| !may(c)) {
                return Err(Problem::forbidden(format!(
                    "{field}: token '{name}' may not act for user '{claimed}'; leave user_id out \
                     to record '{name}', or list the user in the token's may_act_for"
                )));
            }
        }
        if request.user_id.is_none() {
            request.user_id = Some(name.clone());
        }
        request.principal = Some(name.clone());
        Ok(())
    }

    /// Refuses aggregates of a type the token is not limited to.
    pub fn check_type(&self, aggregate_type: &str) -> Result<(), Problem> {
        match &self.aggregate_types {
            Some(types) if !types.iter().any(|t| t == aggregate_type) => Err(Problem::forbidden(
                format!("this token may not use aggregates of type '{aggregate_type}'"),
            )),
            _ => Ok(()),
        }
    }

    /// Narrows a list of aggregate types to the token's: all of its types when the list
    /// is empty, an error when the list names another type.
    pub fn narrow(&self, requested: &mut Vec<String>) -> Result<(), Problem> {
        let Some(types) = &self.aggregate_types else {
            return Ok(());
        };
        if types.is_empty() {
            return Err(Problem::forbidden(
                "this token may not use any aggregate type",
            ));
        }
        if requested.is_empty() {
            requested.clone_from(types);
            return Ok(());
        }
        requested.iter().try_for_each(|t| self.check_type(t))
    }

    /// Refuses a limited token (for routes that read everything).
    pub fn check_unlimited(&self) -> Result<(), Problem> {
        match self.aggregate_types {
            Some(_) => Err(Problem::forbidden(
                "this token is limited to some aggregate types; this route reads them all",
            )),
            None => Ok(()),
        }
    }
}

/// The token of an `Authorization` header in the Bearer scheme (matched without
/// regard to case, RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Routes anyone may call: health, the OpenAPI document, and the metrics when the
/// server makes them public.
fn is_open(path: &str, public_metrics: bool) -> bool {
    path.starts_with("/health/")
        || path == "/openapi.json"
        || crate::console::is_console(path)
        || (public_metrics && path == "/metrics")
}

/// The middleware: resolves the caller from the bearer token (`401` without a valid one,
/// except on open routes, where the caller is then nobody in particular).
pub async fn authenticate(
    tokens: Arc<Option<Tokens>>,
    public_metrics: bool,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match tokens.as_ref() {
        None => Caller::anonymous(),
        Some(t) => {
            let found = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .and_then(|p| t.find(p));
            match found {
                Some(token) => Caller::of(token),
                None if is_open(req.uri().path(), public_metrics) => Caller::nobody(),
                None => {
                    let mut res =
                        Problem::unauthorized("send an API token: Authorization: Bearer <token>")
                            .into_response();
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    return res;
                }
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The operation of an HTTP route, as far as its method and route tell; handlers
/// raise it where the body or query asks for more (system events, checkpoints in a
/// transaction, the deep verify). `None`: a route missing from this table
/// ([`Operation::Unlisted`], admin only).
fn route_operation(method: &Method, route: &str) -> Option<Operation> {
    let read = method == Method::GET || method == Method::HEAD;
    Some(match route {
        "/health/live" | "/health/ready" | "/openapi.json" | "/metrics" if read => Operation::Read,
        "/v1/streams/{aggregate_id}"
        | "/v1/streams/{aggregate_id}/snapshots/latest"
        | "/v1/streams/{aggregate_id}/state"
        | "/v1/events"
        | "/v1/events/counts"
        | "/v1/events/{event_id}"
        | "/v1/head"
        | "/v1/checkpoints"
        | "/v1/checkpoints/{name}"
        | "/v1/groups/{group}/leases"
        | "/v1/subscribe"
        | "/v1/verify"
        | "/v1/digest"
        | "/v1/overview"
        | "/v1/persistent-subscriptions"
        | "/v1/whoami"
        | "/v1/cluster"
        | "/"
        | "/console"
        | "/console/"
        | "/console/{*file}"
            if read =>
        {
            Operation::Read
        }
        "/v1/streams/{aggregate_id}" | "/v1/transactions" if method == Method::POST => {
            Operation::Append
        }
        "/v1/streams/{aggregate_id}/snapshots/{version}" if method == Method::PUT => {
            Operation::Snapshot
        }
        "/v1/checkpoints/{name}" if method == Method::PUT => Operation::Checkpoint,
        "/v1/subjects" | "/v1/subjects/{subject}" | "/v1/subjects/{subject}/events" if read => {
            Operation::Subjects
        }
        "/v1/subjects/{subject}/forget" if method == Method::POST => Operation::Subjects,
        "/v1/groups/{group}/leases/{partition}/acquire"
        | "/v1/groups/{group}/leases/{partition}/renew"
        | "/v1/groups/{group}/leases/{partition}/release"
        | "/v1/groups/{group}/members/{member}" => Operation::Group,
        _ => return None,
    })
}

/// The route layer: refuses a route the caller's role does not allow (`403`), by the
/// one table of [`annal_core::access`]. Open routes skip it (they check for themselves
/// what they show).
pub async fn authorize(req: Request, next: Next) -> Response {
    let (Some(caller), Some(route)) = (
        req.extensions().get::<Caller>(),
        req.extensions().get::<MatchedPath>(),
    ) else {
        return next.run(req).await;
    };
    if caller.role.is_some() {
        let op = route_operation(req.method(), route.as_str()).unwrap_or(Operation::Unlisted);
        if let Err(p) = caller.require(op) {
            return p.into_response();
        }
    }
    next.run(req).await
}

/// The gRPC endpoint's credential check: KurrentDB clients send HTTP Basic
/// credentials (over TLS), where the user is an API token's name and the password its
/// secret. Each call checks the token's role against [`annal_core::access`]. Tokens
/// limited to aggregate types are refused: KurrentDB's `$all` has no such
/// narrowing. `None` (auth off) when no tokens are configured.
pub fn grpc_credentials(tokens: Option<Tokens>) -> Option<CheckCredentials> {
    let tokens = tokens?;
    Some(CheckCredentials::new(move |user, secret| {
        // The secret decides (compared whatever the name), then the name must agree.
        let found = tokens
            .find(secret)
            .filter(|k| k.name == user)
            .ok_or(Refusal::Unknown)?;
        if found.aggregate_types.is_some() {
            return Err(Refusal::NotPermitted(format!(
                "token '{}' is limited to some aggregate types; the gRPC endpoint needs an unlimited token",
                found.name
            )));
        }
        Ok(Principal {
            name: found.name.clone(),
            role: found.role,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"name":"sarah","token":"0123456789abcdef-one","role":"write"}"#;

    fn doc(tokens: &[&str]) -> String {
        format!(r#"{{"tokens":[{}]}}"#, tokens.join(","))
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn grpc_credentials_need_the_secret_and_the_matching_name() {
        let t = Tokens::parse(&doc(&[ONE])).expect("tokens");
        let check = grpc_credentials(Some(t)).expect("a check");
        let ok = check.check("sarah", "0123456789abcdef-one");
        assert_eq!(ok.map(|p| p.role), Ok(Role::Write));
        assert_eq!(
            check.check("tom", "0123456789abcdef-one"),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            check.check("sarah", "wrong-secret-0123456"),
            Err(Refusal::Unknown)
        );
    }
}
