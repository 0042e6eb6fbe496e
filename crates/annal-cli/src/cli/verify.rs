//! `annal verify`: checks the hash chain (or that the log still holds a digest's
//! prefix) and prints the report as JSON, with progress on stderr while it runs when
//! that is a terminal; `annal digest`: prints the log's digest.

use super::chain_check;
use super::digests::{self, DigestDir};
use super::{CliError, StoreArgs};
use annal::{Digest, Hash, digest};
use clap::Args;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// First position to check (default 1; checked against its predecessor's stored hash).
    #[arg(long, conflicts_with_all = ["expect", "digest"])]
    from_position: Option<u64>,
    /// Last position to check (default: the head).
    #[arg(long, conflicts_with_all = ["expect", "digest"])]
    to_position: Option<u64>,
    /// Prove the log still holds an earlier head unchanged: POSITION:HASH, as `annal
    /// digest` printed them. Fails if the tail was cut off before POSITION, if the event
    /// there has another hash, or if the chain is broken anywhere.
    #[arg(long, value_name = "POSITION:HASH", conflicts_with = "digest")]
    expect: Option<String>,
    /// The same as --expect, from a file holding what `annal digest` printed, or from
    /// the newest digest in a folder (`annal serve --digest-dir`).
    #[arg(long, value_name = "FILE")]
    digest: Option<PathBuf>,
    /// Check the hash chain only, skipping the store's own checks (SQLite's
    /// integrity_check of every page and index; the stream records against the log).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let expected = expectation(&args)?;
    let store = args.store.open_without_kek().await?;
    let (from, to) = (args.from_position, args.to_position);
    let deep = !args.quick;
    // A digest's own claim first (one event read), then the whole chain, as
    // digest::check and digest::check_deep do, with progress on a terminal.
    let anchor = match expected {
        Some((position, hash)) => digest::check_anchor(store.as_ref(), position, hash).await?,
        None => None,
    };
    let report = match anchor {
        Some(failed) => failed,
        None => chain_check::check(store.as_ref(), from, to, deep, "verifying").await?,
    };
    let json = serde_json::to_string(&report).map_err(std::io::Error::from)?;
    writeln!(std::io::stdout(), "{json}")?;
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else if let Some(position) = report.first_bad_position {
        Err(CliError::Failed(format!(
            "verification failed at position {position}: {}",
            report.reason.as_deref().unwrap_or("unknown")
        )))
    } else {
        Err(CliError::Failed(format!(
            "the store's own checks failed: {}",
            report.storage.join("; ")
        )))
    }
}

/// The digest to check against, from --expect or --digest.
fn expectation(args: &VerifyArgs) -> Result<Option<(u64, Hash)>, CliError> {
    if let Some(text) = &args.expect {
        return Ok(Some(Digest::parse_expectation(text)?));
    }
    let Some(path) = &args.digest else {
        return Ok(None);
    };
    let d = if path.is_dir() {
        DigestDir::new(path.clone())
            .latest()?
            .ok_or_else(|| CliError::Usage(format!("{} holds no digest", path.display())))?
            .1
    } else {
        digests::read(path)?
    };
    Ok(Some((d.position, d.hash)))
}

/// Prints the log's digest as one JSON line.
pub async fn digest(args: DigestArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open_without_kek().await?;
    let d = digest::take(store.as_ref()).await?;
    let json = serde_json::to_string(&d).map_err(std::io::Error::from)?;
    writeln!(std::io::stdout(), "{json}")?;
    Ok(ExitCode::SUCCESS)
}
