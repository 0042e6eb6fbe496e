//! `annal backup --to FILE`: a consistent online copy of an embedded store, verified.
//!
//! The copy is one snapshot of the live store (the server may keep writing), complete
//! in one file; the command then opens the copy and checks its hash chain before it
//! reports success. PostgreSQL stores are backed up with PostgreSQL's own tools, or
//! copied into an embedded store with `annal copy` (docs/storage.md says which).

use super::CliError;
use annal::sqlite::SqliteStore;
use annal::{Error, Store as _, StoreUrl, Timestamp, url::DEFAULT_STORE};
use clap::Args;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The store to copy: sqlite:PATH.
    #[arg(long, env = "ANNAL_STORE", default_value = DEFAULT_STORE, hide_env_values = true)]
    store: String,
    /// The new file to write (must not exist, or be empty).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

pub async fn run(args: BackupArgs) -> Result<ExitCode, CliError> {
    let url: StoreUrl = args.store.parse().map_err(CliError::Open)?;
    let path = match url {
        StoreUrl::Sqlite(path) => path,
        _ => {
            return Err(CliError::Store(Error::Unsupported {
                what: "back up this kind of store (only the embedded one, sqlite:PATH); for \
                       PostgreSQL: use pg_dump, or `annal copy --from \
                       postgres://… --to sqlite:FILE` for a verified copy of the log \
                       (docs/storage.md)"
                    .into(),
            }));
        }
    };
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "there is no store at {}: nothing to back up",
            path.display()
        )));
    }
    let store = SqliteStore::open(&path).map_err(|e| CliError::Store(e.into()))?;
    let taken_at = Timestamp::now();
    store.backup_to(&args.to).await?;
    let copy = SqliteStore::open(&args.to).map_err(|e| CliError::Store(e.into()))?;
    let report = copy.verify(None, None).await?;
    let line = serde_json::json!({
        "to": args.to.display().to_string(),
        "taken_at": taken_at,
        "events": report.checked,
        "verified": report.ok,
    });
    writeln!(std::io::stdout(), "{line}")?;
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "the copy does not verify at position {}: {} (the store itself is damaged: run \
             annal verify on it)",
            report.first_bad_position.unwrap_or(0),
            report.reason.as_deref().unwrap_or("unknown")
        )))
    }
}
