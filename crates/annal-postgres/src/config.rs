//! Connection settings: the store URL, annal's own URL parameters, and TLS.
//!
//! A store URL is a libpq-style URL, `postgres://user:password@host:port/dbname?…`,
//! plus these parameters, which annal reads and removes before handing the rest to
//! tokio-postgres (which understands `application_name`, `connect_timeout`,
//! `options`, `keepalives`, `target_session_attrs`, … as libpq does):
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `schema` | `annal` | the PostgreSQL schema holding the store's tables (lowercase letters, digits, `_`; at most 58 bytes) |
//! | `pool_size` | 16 | most connections the store opens for reads and commits (plus one listening connection) |
//! | `statement_timeout` | `30s` | server-side limit of each statement (`500ms`, `30s`, `2min` or plain milliseconds; `0` turns it off); client-side, an operation that gets no answer within this plus 10 s fails too |
//! | `sslmode` | `disable` | `disable` or `prefer` (no TLS), `require` (TLS; the certificate is checked only when `sslrootcert` is given), `verify-ca` / `verify-full` (TLS, certificate and host name checked against `sslrootcert`) |
//! | `sslrootcert` | none | a PEM file of CA certificates the server's certificate must chain to |
//!
//! Invariants: a [`PgConfig`] always names a valid schema identifier (so it can be
//! spliced into SQL, double-quoted), and never holds an `sslmode` tokio-postgres would
//! negotiate on its own: TLS is decided here.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The schema a store uses when its URL names none.
pub const DEFAULT_SCHEMA: &str = "annal";
/// Connections in the pool when the URL does not say.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Statement timeout when the URL does not say.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest schema name: the NOTIFY channel `<schema>.head` must fit PostgreSQL's 63 bytes.
pub const MAX_SCHEMA_BYTES: usize = 58;

/// Why a store URL was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An annal parameter has a bad value.
    #[error("invalid {param}: {reason}")]
    Param {
        /// The parameter.
        param: &'static str,
        /// Why.
        reason: String,
    },
    /// tokio-postgres refused the URL.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The CA file could not be read.
    #[error("cannot read sslrootcert {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the TLS settings.
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// How the store talks TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (`sslmode=disable` or `prefer`).
    Disable,
    /// TLS required; the certificate is checked against `ca_file` when one is given,
    /// otherwise not at all (as libpq's `sslmode=require`).
    Require {
        /// CA certificates (PEM).
        ca_file: Option<PathBuf>,
    },
    /// TLS required; certificate chain and host name checked against `ca_file`.
    VerifyFull {
        /// CA certificates (PEM).
        ca_file: PathBuf,
    },
}

/// Everything needed to connect a store.
#[derive(Clone)]
pub struct PgConfig {
    /// tokio-postgres's connection settings (host, port, user, database, …).
    pub pg: tokio_postgres::Config,
    /// The PostgreSQL schema holding the store.
    pub schema: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// Server-side statement timeout (`None`: off).
    pub statement_timeout: Option<Duration>,
    /// TLS.
    pub tls: TlsMode,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("ports", &self.pg.get_ports())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl FromStr for PgConfig {
    type Err = ConfigError;
    fn from_str(url: &str) -> Result<Self, ConfigError> {
        PgConfig::from_url(url)
    }
}

/// Checks a schema name: 1 to 58 bytes of lowercase ASCII letters, digits and `_`, not
/// starting with a digit.
pub fn check_schema(name: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::Param {
        param: "schema",
        reason,
    };
    if name.is_empty() || name.len() > MAX_SCHEMA_BYTES {
        return Err(bad(format!(
            "'{name}' must be 1 to {MAX_SCHEMA_BYTES} bytes long"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || name.as_bytes()[0].is_ascii_digit()
    {
        return Err(bad(format!(
            "'{name}' must be lowercase letters, digits and _, not starting with a digit"
        )));
    }
    if name.starts_with("pg_") {
        return Err(bad(format!(
            "'{name}': names starting with pg_ are PostgreSQL's"
        )));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in '{s}'"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8 once decoded"))
}

/// Parses `500ms`, `30s`, `2min`, or plain milliseconds.
fn parse_duration(param: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Param {
        param,
        reason: format!("'{v}' is not a duration such as 500ms, 30s or 2min"),
    };
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "ms"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "min" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(bad()),
    }
}

impl PgConfig {
    /// Parses a store URL (`postgres://…` or `postgresql://…`, see the module docs).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut statement_timeout = Some(DEFAULT_STATEMENT_TIMEOUT);
        let mut sslmode = "disable".to_owned();
        let mut sslrootcert: Option<PathBuf> = None;
        let mut rest: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = |param: &'static str| {
                percent_decode(v).map_err(|reason| ConfigError::Param { param, reason })
            };
            match k {
                "schema" => schema = value("schema")?,
                "pool_size" | "pool_max_size" => {
                    let v = value("pool_size")?;
                    pool_size = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| ConfigError::Param {
                            param: "pool_size",
                            reason: format!("'{v}' is not a number from 1 to 1000"),
                        })?;
                }
                "statement_timeout" => {
                    let d = parse_duration("statement_timeout", &value("statement_timeout")?)?;
                    statement_timeout = (!d.is_zero()).then_some(d);
                }
                "sslmode" => sslmode = value("sslmode")?,
                "sslrootcert" => sslrootcert = Some(PathBuf::from(value("sslrootcert")?)),
                _ => rest.push(pair),
            }
        }
        check_schema(&schema)?;
        let tls = match (sslmode.as_str(), sslrootcert) {
            ("disable" | "prefer" | "allow", _) => TlsMode::Disable,
            ("require", ca_file) => TlsMode::Require { ca_file },
            ("verify-ca" | "verify-full", Some(ca_file)) => TlsMode::VerifyFull { ca_file },
            ("verify-ca" | "verify-full", None) => {
                return Err(ConfigError::Param {
                    param: "sslrootcert",
                    reason: format!("sslmode={sslmode} needs sslrootcert=PATH (a PEM CA file)"),
                });
            }
            (other, _) => {
                return Err(ConfigError::Param {
                    param: "sslmode",
                    reason: format!(
                        "'{other}' is not one of disable, prefer, require, verify-ca, verify-full"
                    ),
                });
            }
        };
        let stripped = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut pg = tokio_postgres::Config::from_str(&stripped).map_err(ConfigError::Url)?;
        pg.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("annal");
        }
        if let Some(t) = statement_timeout {
            let mut options = pg.get_options().unwrap_or("").to_owned();
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c statement_timeout={}", t.as_millis()));
            pg.options(options);
        }
        Ok(Self {
            pg,
            schema,
            pool_size,
            statement_timeout,
            tls,
        })
    }

    /// How long the client waits for any one database operation before it gives up
    /// (the statement timeout plus 10 s; `None` when statement timeouts are off).
    pub fn operation_timeout(&self) -> Option<Duration> {
        self.statement_timeout.map(|t| t + Duration::from_secs(10))
    }

    /// The rustls connector for the TLS mode (`None` for plain TCP).
    pub fn tls_connector(
        &self,
    ) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::Tls)?;
        let config = match &self.tls {
            TlsMode::Disable => return Ok(None),
            TlsMode::Require { ca_file: None } => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            TlsMode::Require {
                ca_file: Some(ca_file),
            }
            | TlsMode::VerifyFull { ca_file } => builder
                .with_root_certificates(load_roots(ca_file)?)
                .with_no_client_auth(),
        };
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }
}

fn load_roots(path: &PathBuf) -> Result<rustls::RootCertStore, ConfigError> {
    let bad = |reason: String| ConfigError::CaFile {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// `sslmode=require` without a CA file: encrypt, but accept any server certificate (what
/// libpq does). The handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annal_parameters_are_taken_out_and_the_rest_passed_on() {
        let c = PgConfig::from_url(
            "postgres://postgres@127.0.0.1:5432/test?schema=shop_events&pool_size=4&statement_timeout=5s&application_name=x",
        )
        .expect("url");
        assert_eq!(c.schema, "shop_events");
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.statement_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.pg.get_application_name(), Some("x"));
        assert_eq!(c.pg.get_dbname(), Some("test"));
        assert_eq!(c.pg.get_options(), Some("-c statement_timeout=5000"));
        assert_eq!(c.tls, TlsMode::Disable);
    }

    #[test]
    fn defaults_apply_when_the_url_says_nothing() {
        let c = PgConfig::from_url("postgresql://postgres@127.0.0.1/test").expect("url");
        assert_eq!(c.schema, DEFAULT_SCHEMA);
        assert_eq!(c.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(c.statement_timeout, Some(DEFAULT_STATEMENT_TIMEOUT));
        let off = PgConfig::from_url("postgres://h/db?statement_timeout=0").expect("url");
        assert_eq!(off.statement_timeout, None);
        assert_eq!(off.pg.get_options(), None);
    }

    #[test]
    fn bad_parameters_are_refused_with_the_parameter_named() {
        for (url, param) in [
            ("postgres://h/db?schema=Bad-Name", "schema"),
            ("postgres://h/db?schema=", "schema"),
            ("postgres://h/db?schema=pg_catalog", "schema"),
            ("postgres://h/db?pool_size=0", "pool_size"),
            (
                "postgres://h/db?statement_timeout=soon",
                "statement_timeout",
            ),
            ("postgres://h/db?sslmode=sometimes", "sslmode"),
            ("postgres://h/db?sslmode=verify-full", "sslrootcert"),
        ] {
            match PgConfig::from_url(url) {
                Err(ConfigError::Param { param: p, .. }) => assert_eq!(p, param, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(matches!(
            PgConfig::from_url("postgres://h/db?no_such_option=1"),
            Err(ConfigError::Url(_))
        ));
    }

    #[test]
    fn tls_modes_follow_sslmode() {
        let r = PgConfig::from_url("postgres://h/db?sslmode=require").expect("url");
        assert_eq!(r.tls, TlsMode::Require { ca_file: None });
        assert!(r.tls_connector().expect("tls").is_some());
        let v = PgConfig::from_url("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fnone.pem")
            .expect("url");
        assert_eq!(
            v.tls,
            TlsMode::VerifyFull {
                ca_file: "/none.pem".into()
            }
        );
        assert!(matches!(v.tls_connector(), Err(ConfigError::CaFile { .. })));
    }
}
