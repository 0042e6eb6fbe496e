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
use sha2::{Digest as _, Sha256};
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

/// One API token. Its `Debug` hides the secret.
#[derive(Clone, Deserialize)]
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

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("token", &"***")
            .field("role", &self.role)
            .field("aggregate_types", &self.aggregate_types)
            .finish()
    }
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
    /// Two tokens with one secret (which of them a request is would be a guess).
    #[error("tokens[{index}] has the same secret as an earlier token; give each its own")]
    SharedSecret {
        /// The later one's place in `tokens`.
        index: usize,
    },
    /// Two tokens with one name (gRPC callers are known by name).
    #[error("tokens[{index}] has the same name as an earlier token; names must be unique")]
    SharedName {
        /// The later one's place in `tokens`.
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
            let earlier = &t.tokens[..index];
            if earlier.iter().any(|e| e.token == tok.token) {
                return Err(TokensError::SharedSecret { index });
            }
            if earlier.iter().any(|e| e.name == tok.name) {
                return Err(TokensError::SharedName { index });
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

/// Compares secrets in time independent of their contents and lengths: both are hashed
/// to 32 bytes, and every byte of the digests is compared.
#[cfg(test)]
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    same_digest(&Sha256::digest(a), b)
}

/// Whether `secret` hashes to `digest`, comparing every byte of both digests.
fn same_digest(digest: &[u8], secret: &[u8]) -> bool {
    let other = Sha256::digest(secret);
    digest
        .iter()
        .zip(other.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token of an `Authorization` header in the Bearer scheme (matched without
/// regard to case, RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The token whose secret is `presented`, looking at every token whatever matches.
fn find_by_secret<'t>(tokens: &'t Tokens, presented: &str) -> Option<&'t Token> {
    let presented = Sha256::digest(presented.as_bytes());
    tokens.tokens.iter().fold(None, |found, k| {
        found.or(same_digest(&presented, k.token.as_bytes()).then_some(k))
    })
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
                .and_then(bearer);
            let Some(found) = presented.and_then(|p| find_by_secret(t, p)) else {
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
        // The secret decides (compared whatever the name), then the name must agree.
        let found = find_by_secret(&tokens, secret)
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
            can_write: found.role >= Role::Write,
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
    fn a_token_debug_never_shows_its_secret() {
        let t = Tokens::parse(&doc(&[ONE])).expect("tokens");
        let shown = format!("{t:?}");
        assert!(shown.contains("sarah"), "{shown}");
        assert!(!shown.contains("0123456789abcdef-one"), "{shown}");
    }

    #[test]
    fn two_tokens_with_one_secret_or_one_name_are_refused() {
        let same_secret = r#"{"name":"tom","token":"0123456789abcdef-one","role":"read"}"#;
        assert!(matches!(
            Tokens::parse(&doc(&[ONE, same_secret])),
            Err(TokensError::SharedSecret { index: 1 })
        ));
        let same_name = r#"{"name":"sarah","token":"0123456789abcdef-two","role":"read"}"#;
        assert!(matches!(
            Tokens::parse(&doc(&[ONE, same_name])),
            Err(TokensError::SharedName { index: 1 })
        ));
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
    fn secrets_match_only_when_equal_whatever_their_lengths() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdef0"));
        assert!(!same_secret(b"", b"x"));
    }

    #[test]
    fn grpc_credentials_need_the_secret_and_the_matching_name() {
        let t = Tokens::parse(&doc(&[ONE])).expect("tokens");
        let check = grpc_credentials(Some(t)).expect("a check");
        let ok = check.check("sarah", "0123456789abcdef-one");
        assert_eq!(ok.map(|p| p.can_write), Ok(true));
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
