//! `coop serve`: the co-op's own server. It serves a store as `annal serve` does (the
//! HTTP API and the console at `/console`), and also knows the `Family` aggregate: its
//! [`Repository`] is registered as the state function of `Family`, so the console's time
//! travel shows a family's state at each version, and what changed.
//!
//! Invariant: it listens on loopback only (it has no tokens: anyone who reaches it may
//! read and append).

use crate::{Family, upcasters};
use annal::Repository;
use annal_server::{Config, StateViews, StoreDescription};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The usage line of `coop serve`.
pub const USAGE: &str = "coop serve [--data DIR] [--listen 127.0.0.1:PORT] [--kek-file FILE]";

/// Why the server did not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The arguments are wrong.
    #[error("{0}\nusage: {USAGE}")]
    Usage(String),
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] annal::OpenError),
    /// The key-encryption key file could not be loaded.
    #[error(transparent)]
    Kek(#[from] annal::privacy::KekError),
    /// Listening or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `coop serve` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The folder of the embedded store (`annal.db` in it).
    pub data: PathBuf,
    /// The loopback address to listen on.
    pub listen: SocketAddr,
    /// The key-encryption key's file (`--kek-file`); else `ANNAL_KEK_FILE` or
    /// `ANNAL_KEK`, as for `annal`.
    pub kek_file: Option<PathBuf>,
}

/// Parses the arguments after `serve`.
pub fn args(given: &[String]) -> Result<Args, ServeError> {
    let mut out = Args {
        data: PathBuf::from("annal-data"),
        listen: SocketAddr::from(([127, 0, 0, 1], 2113)),
        kek_file: None,
    };
    let mut it = given.iter();
    while let Some(arg) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| ServeError::Usage(format!("{arg} needs a value")))?;
        match arg.as_str() {
            "--data" => out.data = PathBuf::from(value),
            "--kek-file" => out.kek_file = Some(PathBuf::from(value)),
            "--listen" => {
                out.listen = value
                    .parse()
                    .map_err(|e| ServeError::Usage(format!("--listen {value}: {e}")))?;
            }
            other => return Err(ServeError::Usage(format!("unexpected argument '{other}'"))),
        }
    }
    if !out.listen.ip().is_loopback() {
        return Err(ServeError::Usage(format!(
            "{} is not a loopback address: coop serve has no tokens, so it listens on this machine only",
            out.listen
        )));
    }
    Ok(out)
}

/// Serves until `stop` completes.
pub async fn run(
    args: Args,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let db = args.data.join("annal.db");
    let store: Arc<dyn annal::Store> = match &args.kek_file {
        Some(file) => {
            let options = annal::sqlite::Options {
                keyring: Some(annal::privacy::Keyring::from_file(file)?),
                ..annal::sqlite::Options::default()
            };
            Arc::new(
                annal::sqlite::SqliteStore::open_with(&db, options)
                    .map_err(annal::OpenError::from)?,
            )
        }
        None => {
            let url: annal::StoreUrl = format!("sqlite:{}", db.display()).parse()?;
            annal::connect(&url).await?
        }
    };
    let families = Repository::<Family>::new(store.clone()).with_upcasters(upcasters());
    let with = |suffix: &str| {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let config = Config {
        advertised: listener.local_addr()?,
        store: StoreDescription {
            backend: "sqlite".into(),
            files: vec![db.clone(), with("-wal"), with("-shm")],
        },
        states: StateViews::default().with(Arc::new(families)),
        ..Config::default()
    };
    eprintln!(
        "coop: serving {} on http://{} (console: /console; Family state shown)",
        db.display(),
        args.listen
    );
    annal_server::serve(listener, store, config, stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn serve_listens_on_loopback_only() {
        assert!(args(&given(&["--listen", "127.0.0.1:0"])).is_ok());
        assert!(matches!(
            args(&given(&["--listen", "0.0.0.0:2113"])),
            Err(ServeError::Usage(_))
        ));
        assert!(matches!(
            args(&given(&["--data"])),
            Err(ServeError::Usage(_))
        ));
    }
}
