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
use annal_grpc::{CheckCredentials, Principal, Refusal};
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

/// Why a tokens document was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Not JSON of the documented shape.
    #[error("invalid tokens document: {0}")]
    Json(#[from] serde_json::Error),
    /// A token without a name, or with a secret shorter than 16 characters.
    #[error("tokens[{index}]: a token needs a name and a secret of at least 16 characters")]
    Weak {
        /// Its place in `tokens`.
        index: usize,
    },
    /// `aggregate_types` present but empty (a token that could use nothing).
    #[error("tokens[{index}]: aggregate_types is empty; leave it out for all types, or name some")]
    NoTypes {
        /// Its place in `tokens`.
        index: usize,
    },
}

impl Tokens {
    /// Parses and checks a tokens document.
    pub fn parse(json: &str) -> Result<Self, TokensError> {
        let t: Tokens = serde_json::from_str(json)?;
        for (index, tok) in t.tokens.iter().enumerate() {
            if tok.name.is_empty() || tok.token.len() < 16 {
                return Err(TokensError::Weak { index });
            }
            if tok.aggregate_types.as_ref().is_some_and(Vec::is_empty) {
                return Err(TokensError::NoTypes { index });
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
    /// Its aggregate types (`None`: all).
    pub aggregate_types: Option<Vec<String>>,
}

impl Caller {
    /// The caller when auth is off: may do everything.
    pub fn anonymous() -> Self {
        Self {
            name: None,
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
                aggregate_types: found.aggregate_types.clone(),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The gRPC endpoint's credential check: KurrentDB clients send HTTP Basic
/// credentials (over TLS), where the user is an API token's name and the password its
/// secret. `read` tokens may read and subscribe, `write` and `admin` also append and
/// delete. Tokens limited to aggregate types are refused: KurrentDB's `$all` has no such
/// narrowing. `None` (auth off) when no tokens are configured.
pub fn grpc_credentials(tokens: Option<Tokens>) -> Option<CheckCredentials> {
    let tokens = tokens?;
    Some(CheckCredentials::new(move |user, secret| {
        let found = tokens
            .tokens
            .iter()
            .find(|k| k.name == user && same_secret(k.token.as_bytes(), secret.as_bytes()))
            .ok_or(Refusal::Unknown)?;
        if found.aggregate_types.is_some() {
            return Err(Refusal::NotPermitted(format!(
                "token '{}' is limited to some aggregate types; the gRPC endpoint needs an unlimited token",
                found.name
            )));
        }
        Ok(Principal {
            name: found.name.clone(),
            can_write: found.role >= Role::Write,
        })
    }))
}
