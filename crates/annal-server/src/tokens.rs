//! API tokens: the tokens file, its checks, and how a presented secret is matched.
//!
//! A token's secret is kept only as a salted SHA-256 digest, in memory and, when written
//! by `annal token new` ([`Token::generate`]), in the file too:
//! `"secret_hash": "sha256:<salt hex>:<SHA-256(salt || secret) hex>"`. A secret written in
//! plain text (`"token"`) is still read, and hashed at once with a fresh salt; the plain
//! text is not kept ([`Tokens::plain_text`] names those tokens, so the server can warn).
//!
//! Invariants: every presented secret is compared with every token's digest, each over
//! all 32 bytes, so timing tells neither which token nor how much of it matched; no two
//! tokens share a name, nor (as far as can be told: plain-text secrets, and hashed ones
//! against those) a secret; a token's `Debug` never shows its secret or digest.

use annal_core::access::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;

/// Bytes of salt per digest.
const SALT_BYTES: usize = 16;
/// Bytes of a generated secret (256 bits; 43 characters in base64url).
const SECRET_BYTES: usize = 32;
/// The shortest secret accepted in plain text.
const MIN_SECRET_CHARS: usize = 16;

/// A secret as annal keeps it: a salt and SHA-256(salt || secret).
#[derive(Clone, PartialEq, Eq)]
struct SecretDigest {
    salt: [u8; SALT_BYTES],
    digest: [u8; 32],
}

impl SecretDigest {
    /// The digest of `secret` under `salt`.
    fn of(secret: &str, salt: [u8; SALT_BYTES]) -> Self {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(secret.as_bytes());
        Self {
            salt,
            digest: h.finalize().into(),
        }
    }

    /// The digest of `secret` under a fresh random salt.
    fn fresh(secret: &str) -> Result<Self, TokensError> {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|e| TokensError::Random(e.to_string()))?;
        Ok(Self::of(secret, salt))
    }

    /// Whether `presented` is the secret, comparing every byte of both digests.
    fn matches(&self, presented: &str) -> bool {
        let other = Self::of(presented, self.salt);
        self.digest
            .iter()
            .zip(other.digest.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// The file form: `sha256:<salt hex>:<digest hex>`.
    fn encode(&self) -> String {
        format!("sha256:{}:{}", hex(&self.salt), hex(&self.digest))
    }

    /// Reads the file form.
    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let (Some("sha256"), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(Self {
            salt: unhex(salt)?,
            digest: unhex(digest)?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One entry of the tokens file, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_hash: Option<String>,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aggregate_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    may_act_for: Vec<String>,
}

/// The tokens file's shape.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<Entry>,
}

/// One API token. Its `Debug` hides the secret's digest.
#[derive(Clone)]
pub struct Token {
    /// Who holds it; the default `user_id` and the `principal` of its appends.
    pub name: String,
    secret: SecretDigest,
    /// Whether the file held the secret in plain text.
    plain_text: bool,
    /// What it may do.
    pub role: Role,
    /// The aggregate types it is limited to (absent: all).
    pub aggregate_types: Option<Vec<String>>,
    /// The user_ids its appends may claim besides its own name (`["*"]`: any). Empty:
    /// only its name.
    pub may_act_for: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"***")
            .field("role", &self.role)
            .field("aggregate_types", &self.aggregate_types)
            .field("may_act_for", &self.may_act_for)
            .finish()
    }
}

/// A token made by [`Token::generate`]: its entry for the tokens file, and the secret,
/// to hand to its holder once.
pub struct Generated {
    /// The secret (43 characters, base64url): shown once, stored nowhere.
    pub secret: String,
    /// The entry for the tokens file, with only the secret's salted hash.
    pub entry: serde_json::Value,
}

impl Token {
    /// Makes a new token: a random 256-bit secret and its salted hash.
    pub fn generate(
        name: &str,
        role: Role,
        aggregate_types: Option<Vec<String>>,
        may_act_for: Vec<String>,
    ) -> Result<Generated, TokensError> {
        use base64::Engine as _;
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| TokensError::Random(e.to_string()))?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let entry = Entry {
            name: name.to_owned(),
            token: None,
            secret_hash: Some(SecretDigest::fresh(&secret)?.encode()),
            role,
            aggregate_types,
            may_act_for,
        };
        let entry = serde_json::to_value(entry)?;
        Ok(Generated { secret, entry })
    }

    /// Whether `presented` is this token's secret (every byte compared).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.secret.matches(presented)
    }
}

/// The tokens file (or `ANNAL_TOKENS`):
/// `{"tokens": [{"name", "secret_hash" | "token", "role", "aggregate_types"?, "may_act_for"?}]}`.
#[derive(Debug, Clone)]
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
    /// A token without a name, or with a plain-text secret shorter than 16 characters.
    #[error(
        "tokens[{index}]: a token needs a name and a secret of at least {MIN_SECRET_CHARS} characters"
    )]
    Weak {
        /// Its place in `tokens`.
        index: usize,
    },
    /// Neither or both of `token` and `secret_hash`, or a `secret_hash` not of the form
    /// annal writes.
    #[error(
        "tokens[{index}]: give either secret_hash (\"sha256:<32 hex salt>:<64 hex digest>\", as `annal token new` writes it) or token (the secret in plain text), not both"
    )]
    Secret {
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
    /// The system's random source failed.
    #[error("no random bytes for a salt or secret: {0}")]
    Random(String),
}

impl Tokens {
    /// Parses and checks a tokens document.
    pub fn parse(json: &str) -> Result<Self, TokensError> {
        let file: File = serde_json::from_str(json)?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
        // The plain-text secrets read so far, to check later hashed ones against; dropped
        // when parsing ends.
        let mut plain: Vec<String> = Vec::new();
        for (index, e) in file.tokens.into_iter().enumerate() {
            if e.name.is_empty() {
                return Err(TokensError::Weak { index });
            }
            if e.aggregate_types.as_ref().is_some_and(Vec::is_empty) {
                return Err(TokensError::NoTypes { index });
            }
            if tokens.iter().any(|t| t.name == e.name) {
                return Err(TokensError::SharedName { index });
            }
            let (secret, plain_text) = match (&e.token, &e.secret_hash) {
                (Some(secret), None) => {
                    if secret.chars().count() < MIN_SECRET_CHARS {
                        return Err(TokensError::Weak { index });
                    }
                    if tokens.iter().any(|t| t.matches(secret)) {
                        return Err(TokensError::SharedSecret { index });
                    }
                    plain.push(secret.clone());
                    (SecretDigest::fresh(secret)?, true)
                }
                (None, Some(hash)) => {
                    let digest = SecretDigest::decode(hash).ok_or(TokensError::Secret { index })?;
                    if plain.iter().any(|p| digest.matches(p)) {
                        return Err(TokensError::SharedSecret { index });
                    }
                    (digest, false)
                }
                _ => return Err(TokensError::Secret { index }),
            };
            tokens.push(Token {
                name: e.name,
                secret,
                plain_text,
                role: e.role,
                aggregate_types: e.aggregate_types,
                may_act_for: e.may_act_for,
            });
        }
        Ok(Self { tokens })
    }

    /// The names of the tokens whose secret the file holds in plain text.
    pub fn plain_text(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .filter(|t| t.plain_text)
            .map(|t| t.name.as_str())
            .collect()
    }

    /// The token whose secret is `presented`, comparing it with every token whatever
    /// matches.
    pub(crate) fn find(&self, presented: &str) -> Option<&Token> {
        self.tokens
            .iter()
            .fold(None, |found, t| found.or(t.matches(presented).then_some(t)))
    }
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
    fn secrets_match_only_when_equal_whatever_their_lengths() {
        let d = SecretDigest::fresh("0123456789abcdef").expect("salt");
        assert!(d.matches("0123456789abcdef"));
        assert!(!d.matches("0123456789abcdeF"));
        assert!(!d.matches("0123456789abcdef0"));
        assert!(!d.matches(""));
    }

    #[test]
    fn a_generated_token_is_found_by_its_secret_and_its_file_entry_holds_only_a_hash() {
        let g = Token::generate("ops", Role::Admin, None, vec!["*".into()]).expect("generate");
        assert_eq!(g.secret.len(), 43, "{}", g.secret);
        let entry = g.entry.to_string();
        assert!(!entry.contains(&g.secret), "{entry}");
        assert!(entry.contains(r#""secret_hash":"sha256:"#), "{entry}");
        let tokens = Tokens::parse(&format!(r#"{{"tokens":[{entry}]}}"#)).expect("parse");
        assert!(tokens.plain_text().is_empty());
        let found = tokens.find(&g.secret).expect("found by its secret");
        assert_eq!(found.name, "ops");
        assert_eq!(found.may_act_for, ["*"]);
        assert!(tokens.find("something-else-entirely").is_none());
        let other = Token::generate("ops2", Role::Read, None, Vec::new()).expect("generate");
        assert_ne!(other.secret, g.secret);
    }

    #[test]
    fn plain_text_secrets_are_read_hashed_and_named_for_a_warning() {
        let tokens = Tokens::parse(&doc(&[ONE])).expect("parse");
        assert_eq!(tokens.plain_text(), ["sarah"]);
        assert!(tokens.find("0123456789abcdef-one").is_some());
    }

    #[test]
    fn a_malformed_or_doubled_secret_is_refused_naming_the_token() {
        for bad in [
            r#"{"name":"a","secret_hash":"sha256:00:11","role":"read"}"#,
            r#"{"name":"a","secret_hash":"md5:x:y","role":"read"}"#,
            r#"{"name":"a","role":"read"}"#,
            r#"{"name":"a","token":"0123456789abcdef-one","secret_hash":"sha256:x:y","role":"read"}"#,
        ] {
            assert!(
                matches!(
                    Tokens::parse(&doc(&[bad])),
                    Err(TokensError::Secret { index: 0 })
                ),
                "{bad}"
            );
        }
    }
}
