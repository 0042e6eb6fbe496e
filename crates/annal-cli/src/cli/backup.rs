//! `annal backup --to FILE`: a consistent online copy of an embedded store, verified.
//!
//! The copy is one snapshot of the live store (the server may keep writing), complete
//! in one file; the command then opens the copy and checks its hash chain before it
//! reports success. On a terminal, stderr shows how far the copy, then its check, has
//! got. PostgreSQL stores are backed up with PostgreSQL's own tools, or
//! copied into an embedded store with `annal copy` (docs/storage.md says which).

use super::progress::{self, Progress};
use super::{CliError, chain_check};
use annal::sqlite::{Options, SqliteStore};
use annal::{Error, StoreUrl, Timestamp, url::DEFAULT_STORE};
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};
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
    // A backup copies the file and verifies the chain, which covers the sealed parts:
    // it needs no KEK (one that is given is still checked).
    let options = || Options {
        without_kek: true,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options()).map_err(|e| CliError::Store(e.into()))?;
    let taken_at = Timestamp::now();
    copy_with_progress(&store, &path, &args.to).await?;
    let copy =
        SqliteStore::open_with(&args.to, options()).map_err(|e| CliError::Store(e.into()))?;
    let report = chain_check::check(&copy, None, None, false, "verifying the backup").await?;
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

/// Writes the backup; on a terminal, stderr shows how much of it is written against
/// the store's files (main file and WAL: about what the copy will hold, which is
/// compacted and so often smaller).
async fn copy_with_progress(store: &SqliteStore, path: &Path, to: &Path) -> Result<(), CliError> {
    let mut progress = Progress::on_stderr();
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let about = size(path) + size(Path::new(&wal));
    let backup = store.backup_to(to);
    tokio::pin!(backup);
    let mut tick = tokio::time::interval(progress::EVERY);
    loop {
        tokio::select! {
            done = &mut backup => {
                progress.finish();
                return Ok(done?);
            }
            _ = tick.tick(), if progress.shown() => {
                progress.set(&format!(
                    "backing up: {} written, of about {}",
                    progress::mib(size(to)),
                    progress::mib(about)
                ));
            }
        }
    }
}
