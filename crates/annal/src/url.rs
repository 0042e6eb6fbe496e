//! Store URLs: how the CLI and applications name a store.
//!
//! `sqlite:PATH` (or `sqlite://PATH`) opens the embedded store in the file PATH,
//! creating it and its folder if needed. `postgres://…` is reserved for the PostgreSQL
//! backend and refused with a clear message until it is built in.

use annal_core::{Limits, Store};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// The default store: the embedded one in `./annal-data/annal.db`.
pub const DEFAULT_STORE: &str = "sqlite:./annal-data/annal.db";

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// The embedded store in one SQLite file.
    Sqlite(PathBuf),
}

/// Why a store could not be named or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not one annal understands.
    #[error("invalid store URL '{url}': {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The embedded store could not be opened.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] annal_sqlite::OpenError),
    /// The backend the URL names is not compiled into this build.
    #[error("store URL '{0}' needs a backend this build of annal does not include")]
    NotBuilt(String),
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
            return Err(bad(
                "the PostgreSQL backend is not part of this build yet; use sqlite:PATH",
            ));
        }
        Err(bad(
            "a store URL starts with sqlite: (e.g. sqlite:./annal-data/annal.db)",
        ))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
        }
    }
}

/// Opens the store a URL names, with the default limits.
pub fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, OpenError> {
    open_with(url, Limits::default())
}

/// Opens the store a URL names, enforcing `limits` on appends.
pub fn open_with(url: &StoreUrl, limits: Limits) -> Result<Arc<dyn Store>, OpenError> {
    match url {
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(path) => {
            let options = annal_sqlite::Options { limits };
            Ok(Arc::new(annal_sqlite::SqliteStore::open_with(
                path, options,
            )?))
        }
        #[cfg(not(feature = "sqlite"))]
        StoreUrl::Sqlite(_) => {
            let _ = limits;
            Err(OpenError::NotBuilt(url.to_string()))
        }
    }
}
