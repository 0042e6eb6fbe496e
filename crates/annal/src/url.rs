//! Store URLs: how the CLI and applications name a store.
//!
//! - `sqlite:PATH` (or `sqlite://PATH`) opens the embedded store in the file PATH,
//!   creating it and its folder if needed.
//! - `postgres://…` or `postgresql://…` connects to the PostgreSQL store (the `postgres`
//!   feature, on by default): a libpq-style URL plus annal's parameters `schema`
//!   (default `annal`), `pool_size`, `statement_timeout`, `sslmode` and `sslrootcert`
//!   (see `annal_postgres::config` and docs/postgres.md), e.g.
//!   `postgres://annal:secret@db.internal:5432/shop?schema=events&sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`.
//!
//! [`open`] is synchronous and serves the embedded store; [`connect`] is async and
//! serves every backend (a PostgreSQL store needs a running tokio runtime).
//!
//! Invariant: a URL's password never appears in `Display` or `Debug` output.

use annal_core::{Limits, Store};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// The default store: the embedded one in `./annal-data/annal.db`.
pub const DEFAULT_STORE: &str = "sqlite:./annal-data/annal.db";

/// A PostgreSQL URL, kept whole, shown with its password hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The full URL, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// The URL with its password hidden, wherever it is: `user:password@` in the
/// authority, or a `password=` query parameter.
fn redact(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            shown = format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
    }
    let Some(query_start) = shown.find('?') else {
        return shown;
    };
    let (base, query) = shown.split_at(query_start + 1);
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}{}", query.join("&"))
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// The embedded store in one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL store.
    Postgres(PostgresUrl),
}

/// Why a store could not be named or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not one annal understands.
    #[error("invalid store URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given (password hidden).
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The embedded store could not be opened.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] annal_sqlite::OpenError),
    /// The PostgreSQL store could not be opened.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] annal_postgres::OpenError),
    /// The backend the URL names is not compiled into this build.
    #[error("store URL '{0}' needs a backend this build of annal does not include")]
    NotBuilt(String),
    /// The store can only be opened with [`connect`] (it needs async I/O to open).
    #[error("store URL '{0}' must be opened with annal::connect (async)")]
    NeedsAsync(String),
}

impl FromStr for StoreUrl {
    type Err = OpenError;

    fn from_str(url: &str) -> Result<Self, OpenError> {
        let bad = |reason: &str| OpenError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad(
                    "sqlite: needs a file path, e.g. sqlite:./annal-data/annal.db",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PostgresUrl(url.to_owned());
            #[cfg(feature = "postgres")]
            if let Err(e) = annal_postgres::PgConfig::from_url(url) {
                return Err(OpenError::BadUrl {
                    url: pg.to_string(),
                    reason: e.to_string(),
                });
            }
            return Ok(StoreUrl::Postgres(pg));
        }
        Err(bad(
            "a store URL starts with sqlite: (e.g. sqlite:./annal-data/annal.db) or postgres://",
        ))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => fmt::Display::fmt(u, f),
        }
    }
}

/// Opens the store a URL names, with the default limits (embedded store only; use
/// [`connect`] for every backend).
pub fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, OpenError> {
    open_with(url, Limits::default())
}

/// Opens the store a URL names, enforcing `limits` on appends (embedded store only; use
/// [`connect_with`] for every backend).
pub fn open_with(url: &StoreUrl, limits: Limits) -> Result<Arc<dyn Store>, OpenError> {
    open_embedded(url, limits, false)
}

/// [`open_with`], opening a store that holds personal data without its KEK when
/// `without_kek` ([`ConnectOptions::without_kek`]).
fn open_embedded(
    url: &StoreUrl,
    limits: Limits,
    without_kek: bool,
) -> Result<Arc<dyn Store>, OpenError> {
    match url {
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(path) => {
            let options = annal_sqlite::Options {
                limits,
                without_kek,
                ..annal_sqlite::Options::default()
            };
            Ok(Arc::new(annal_sqlite::SqliteStore::open_with(
                path, options,
            )?))
        }
        #[cfg(not(feature = "sqlite"))]
        StoreUrl::Sqlite(_) => {
            let _ = (limits, without_kek);
            Err(OpenError::NotBuilt(url.to_string()))
        }
        StoreUrl::Postgres(_) => Err(OpenError::NeedsAsync(url.to_string())),
    }
}

/// Opens or connects to the store a URL names, with the default limits.
pub async fn connect(url: &StoreUrl) -> Result<Arc<dyn Store>, OpenError> {
    connect_with(url, Limits::default()).await
}

/// Opens or connects to the store a URL names, enforcing `limits` on appends.
pub async fn connect_with(url: &StoreUrl, limits: Limits) -> Result<Arc<dyn Store>, OpenError> {
    connect_with_options(
        url,
        ConnectOptions {
            limits,
            ..ConnectOptions::default()
        },
    )
    .await
}

/// What [`connect_with_options`] takes beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The limits enforced on appends.
    pub limits: Limits,
    /// A hot standby of a PostgreSQL store's server (a `postgres://` URL) that serves
    /// its reads of the log and of streams (docs/cluster.md#reads-from-a-standby).
    pub read_store: Option<StoreUrl>,
    /// How long a read waits for the read store to reach the position it needs before
    /// the primary answers it (default 100 ms).
    pub read_store_wait: Option<std::time::Duration>,
    /// Open a store that holds personal data without its key-encryption key, for work
    /// that needs none (verifying the chain): `without_kek` of `annal_sqlite::Options`
    /// and `annal_postgres::Options`.
    pub without_kek: bool,
}

/// Opens or connects to the store a URL names, with a read store if given (PostgreSQL
/// only).
pub async fn connect_with_options(
    url: &StoreUrl,
    options: ConnectOptions,
) -> Result<Arc<dyn Store>, OpenError> {
    let ConnectOptions {
        limits,
        read_store,
        read_store_wait,
        without_kek,
    } = options;
    match url {
        StoreUrl::Sqlite(_) => match read_store {
            Some(read) => Err(OpenError::BadUrl {
                url: read.to_string(),
                reason: "a read store serves a PostgreSQL store; this store is embedded (sqlite:)"
                    .into(),
            }),
            None => open_embedded(url, limits, without_kek),
        },
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(pg) => {
            let config = annal_postgres::PgConfig::from_url(pg.expose())
                .map_err(annal_postgres::OpenError::from)?;
            let read_store = match read_store {
                None => None,
                Some(StoreUrl::Postgres(read)) => {
                    let config = annal_postgres::PgConfig::from_url(read.expose())
                        .map_err(annal_postgres::OpenError::from)?;
                    let mut read = annal_postgres::ReadStoreOptions::new(config);
                    if let Some(wait) = read_store_wait {
                        read.wait = wait;
                    }
                    Some(read)
                }
                Some(other) => {
                    return Err(OpenError::BadUrl {
                        url: other.to_string(),
                        reason: "a read store is a PostgreSQL server: postgres://…".into(),
                    });
                }
            };
            let options = annal_postgres::Options {
                limits,
                read_store,
                without_kek,
                ..annal_postgres::Options::default()
            };
            Ok(Arc::new(
                annal_postgres::PgStore::connect_with(config, options).await?,
            ))
        }
        #[cfg(not(feature = "postgres"))]
        StoreUrl::Postgres(_) => {
            let _ = (limits, read_store, read_store_wait);
            Err(OpenError::NotBuilt(url.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_parse_and_hide_their_password() {
        let url: StoreUrl = "postgres://annal:s3cret@127.0.0.1:5432/shop?schema=events"
            .parse()
            .expect("url");
        assert_eq!(
            url.to_string(),
            "postgres://annal:***@127.0.0.1:5432/shop?schema=events"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        let plain: StoreUrl = "postgresql://postgres@127.0.0.1/test".parse().expect("url");
        assert_eq!(plain.to_string(), "postgresql://postgres@127.0.0.1/test");
    }

    #[test]
    fn a_password_query_parameter_is_hidden_too() {
        assert_eq!(
            redact("postgres://annal@db/shop?schema=events&password=s3cret&sslmode=require"),
            "postgres://annal@db/shop?schema=events&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://annal:pw@db/shop?PASSWORD=s3cret"),
            "postgres://annal:***@db/shop?PASSWORD=***"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn bad_postgres_parameters_are_refused_when_parsed() {
        let err = "postgres://u:pw@127.0.0.1/db?schema=Not-Valid"
            .parse::<StoreUrl>()
            .expect_err("bad schema");
        let text = err.to_string();
        assert!(text.contains("schema"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!("mysql://x".parse::<StoreUrl>().is_err());
        assert!("sqlite:".parse::<StoreUrl>().is_err());
    }
}
