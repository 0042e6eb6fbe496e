//! API tokens with roles, optionally limited to aggregate types.
//!
//! With no tokens configured, auth is off and every caller may do everything (the
//! server then refuses non-loopback addresses unless told otherwise). With tokens, every
//! route but `/health/*` and `/openapi.json` needs `Authorization: Bearer <token>`:
//! `read` may use GET routes, `write` also appends, transactions, checkpoints and
//! snapshots, `admin` everything. A token limited to aggregate types sees and writes
//! only those aggregates' events (global reads are narrowed to them; `verify`, which
//! reads everything, needs an unlimited token). An append's `user_id` defaults to the
//! token's name.

use crate::problem::Problem;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// GET routes.
    Read,
    /// Also appends, transactions, checkpoints and snapshots.
    Write,
    /// Everything.
    Admin,
}

/// One API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who holds it; the default `user_id` of its appends.
    pub name: String,
    /// The secret sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it may do.
    pub role: Role,
    /// The aggregate types it is limited to (absent: all).
    #[serde(default)]
    pub aggregate_types: Option<Vec<String>>,
}

/// The tokens file (or `ANNAL_TOKENS`): `{"tokens": [{"name", "token", "role", "aggregate_types"?}]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// The tokens.
    pub tokens: Vec<Token>,
}

impl Tokens {
    /// Parses and checks a tokens document.
    pub fn parse(json: &str) -> Result<Self, String> {
        let t: Tokens =
            serde_json::from_str(json).map_err(|e| format!("invalid tokens document: {e}"))?;
        for (i, tok) in t.tokens.iter().enumerate() {
            if tok.name.is_empty() || tok.token.len() < 16 {
                return Err(format!(
                    "tokens[{i}]: a token needs a name and a secret of at least 16 characters"
                ));
            }
            if tok.aggregate_types.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "tokens[{i}]: aggregate_types is empty; leave it out for all types, or name some"
                ));
            }
        }
        Ok(t)
    }
}

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`None` with auth off).
    pub name: Option<String>,
    /// Its role.
    pub role: Role,
    /// Its aggregate types (`None`: all).
    pub aggregate_types: Option<Vec<String>>,
}

impl Caller {
    /// The caller when auth is off: may do everything.
    pub fn anonymous() -> Self {
        Self {
            name: None,
            role: Role::Admin,
            aggregate_types: None,
        }
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

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: resolves the caller from the bearer token and checks its role.
pub async fn authenticate(tokens: Arc<Option<Tokens>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path.starts_with("/health/") || path == "/openapi.json";
    let caller = match tokens.as_ref() {
        None => Caller::anonymous(),
        Some(_) if open => Caller::anonymous(),
        Some(t) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(found) = presented.and_then(|p| {
                t.tokens
                    .iter()
                    .find(|k| same_secret(k.token.as_bytes(), p.as_bytes()))
            }) else {
                let mut res =
                    Problem::unauthorized("send an API token: Authorization: Bearer <token>")
                        .into_response();
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return res;
            };
            let needed = if req.method() == Method::GET || req.method() == Method::HEAD {
                Role::Read
            } else {
                Role::Write
            };
            if found.role < needed {
                return Problem::forbidden(format!(
                    "token '{}' has the {:?} role; this needs {:?}",
                    found.name, found.role, needed
                ))
                .into_response();
            }
            Caller {
                name: Some(found.name.clone()),
                role: found.role,
                aggregate_types: found.aggregate_types.clone(),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The gRPC middleware: KurrentDB clients send HTTP Basic credentials (over TLS); the
/// user is an API token's name and the password its secret. `read` tokens may read and
/// subscribe, `write` and `admin` also append and delete. Tokens limited to aggregate
/// types are refused: KurrentDB's `$all` has no such narrowing. `ServerFeatures` and
/// `Gossip` need no credentials (clients call them first, as KurrentDB allows).
pub async fn authenticate_grpc(
    tokens: Arc<Option<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    use base64::Engine as _;
    // Clients ask what the server supports, and (with several hosts) who leads, before
    // sending credentials; KurrentDB answers those to anyone.
    let path = req.uri().path();
    let open = path.starts_with("/event_store.client.server_features.")
        || path.starts_with("/event_store.client.gossip.");
    let Some(t) = tokens.as_ref().as_ref().filter(|_| !open) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let found = presented.as_deref().and_then(|p| {
        let (user, secret) = p.split_once(':')?;
        t.tokens
            .iter()
            .find(|k| k.name == user && same_secret(k.token.as_bytes(), secret.as_bytes()))
    });
    let Some(found) = found else {
        return annal_grpc::status_response(tonic::Status::unauthenticated(
            "send credentials (HTTP Basic): the user is an API token's name, the password its secret",
        ));
    };
    if found.aggregate_types.is_some() {
        return annal_grpc::status_response(tonic::Status::permission_denied(format!(
            "token '{}' is limited to some aggregate types; the gRPC endpoint needs an unlimited token",
            found.name
        )));
    }
    req.extensions_mut().insert(annal_grpc::Principal {
        name: found.name.clone(),
        can_write: found.role >= Role::Write,
    });
    next.run(req).await
}
