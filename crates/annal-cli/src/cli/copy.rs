//! `annal copy --from URL --to URL`: copies a whole store's log into an empty store of
//! any backend (SQLite to PostgreSQL and back), keeping event_ids, positions, versions,
//! times and hashes, then verifies the copy's chain.
//!
//! The copy is of the log up to the source's head when the copy starts (later commits
//! are left for another run... into a fresh target). The target must be empty: copy
//! refuses otherwise and writes nothing. Each batch is imported atomically and checked
//! on the way in ([`annal::import::check_import`]: positions, chain, versions, ids), so
//! a copy cut short leaves a valid prefix of the source. Once the copy verifies, the
//! source's checkpoints are copied too (position, status, error count, last error; their
//! `updated_at` becomes the copy's time), so consumers resume where they were. Snapshots
//! are not copied (the Store API cannot list them): they are rebuilt on the next load.
//! The key table of personal data is read in one snapshot after the source's head and
//! copied before the events: live data keys stay wrapped by the KEK (both stores are
//! opened with the same one), and forgotten subjects stay forgotten, so the copy reads
//! and refuses as the source does. The copy reaches the last position a forgotten row
//! of that snapshot names, so every forgetting it holds has its event and every event
//! it holds has its key. A target that holds keys already is refused like one with
//! events; a copy cut short is not usable (start again into a new target).
//! On a terminal, stderr shows how far the copy, then its check, has got.

use super::CliError;
use super::chain_check;
use super::progress::{Progress, of_total};
use annal::checkpoint::CheckpointWrite;
use annal::read::stream_all;
use annal::{Filter, Limits, StoreUrl};
use clap::Args;
use futures_util::StreamExt;
use std::io::Write;
use std::process::ExitCode;

const BATCH: usize = 5000;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy from (sqlite:PATH or postgres://…).
    #[arg(long)]
    from: String,
    /// The store to copy into; it must be empty (created if it does not exist).
    #[arg(long)]
    to: String,
    /// Events per imported batch (each batch is one atomic commit).
    #[arg(long, default_value_t = BATCH)]
    batch: usize,
}

async fn open(url: &str) -> Result<std::sync::Arc<dyn annal::Store>, CliError> {
    let url: StoreUrl = url.parse().map_err(CliError::Open)?;
    annal::connect_with(&url, Limits::default())
        .await
        .map_err(CliError::Open)
}

pub async fn run(args: CopyArgs) -> Result<ExitCode, CliError> {
    if args.batch == 0 {
        return Err(CliError::Usage("--batch must be 1 or more".into()));
    }
    let from = open(&args.from).await?;
    let to = open(&args.to).await?;
    let target_head = to.head(&[]).await?;
    if target_head != 0 {
        return Err(CliError::Failed(format!(
            "the target store is not empty (its head is position {target_head}): copy only fills an empty store"
        )));
    }
    if let Some(row) = to.key_rows("", 1).await?.first() {
        return Err(CliError::Failed(format!(
            "the target store holds data keys already (subject '{}'): copy only fills an empty store",
            row.subject
        )));
    }
    let head = from.head(&[]).await?;
    // The key table in one read, after the head: one snapshot of it (helper-36 saw a
    // table read in pages miss a forgetting and a new key made meanwhile). Commits are
    // ordered, so every event up to the last position a forgotten row of that snapshot
    // names committed before the snapshot, with its key in it; the copy reaches that
    // position, and its forgettings come with their events.
    let rows = from.key_rows("", usize::MAX).await?;
    let total = rows
        .iter()
        .filter_map(|r| r.forgotten_position)
        .fold(head, u64::max);
    if total > head {
        // A forgetting is durable before it is answered; give one just committed a moment.
        from.wait_for_head(total - 1, std::time::Duration::from_secs(10))
            .await?;
    }
    let keys = import_keys(&*to, rows, args.batch).await?;
    let all = Filter::default();
    let mut events = stream_all(&*from, 0, &all, args.batch).chunks(args.batch);
    let mut copied = 0u64;
    let mut progress = Progress::on_stderr();
    while copied < total {
        let Some(chunk) = events.next().await else {
            break;
        };
        let mut batch = Vec::with_capacity(chunk.len());
        for e in chunk {
            let e = e?;
            if e.position <= total {
                batch.push(e);
            }
        }
        copied += batch.len() as u64;
        to.import(batch).await?;
        progress.set(&of_total("copying", copied, total, progress.elapsed()));
    }
    progress.finish();
    let copied = to.head(&[]).await?;
    let report = chain_check::check(&*to, None, None, false, "verifying the copy").await?;
    let ok = report.ok && report.checked == total && copied == total;
    let mut checkpoints = 0u64;
    if ok {
        for c in from.checkpoints().await? {
            // Positions past what was copied (commits made during the copy) are clamped.
            let mut write = CheckpointWrite::new(c.name, c.position.min(copied)).expecting(None);
            write.status = c.status;
            write.error_count = c.error_count;
            write.last_error = c.last_error;
            to.put_checkpoint(write).await?;
            checkpoints += 1;
        }
    }
    let summary = serde_json::json!({
        "copied": copied,
        "source_head": total,
        "verified": report.ok,
        "checked": report.checked,
        "checkpoints": checkpoints,
        "keys": keys,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}")?;
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "the copy does not verify: {copied} of {total} events, {report:?}"
        )))
    }
}

/// Writes the source's key rows (live keys still wrapped by the KEK both stores were
/// opened with, forgotten subjects' rows without one) into the target's key table,
/// `batch` rows at a time; answers how many.
async fn import_keys(
    to: &dyn annal::Store,
    rows: Vec<annal::privacy::SubjectKey>,
    batch: usize,
) -> Result<u64, CliError> {
    let mut copied = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        copied += to
            .import_key_rows(rows.by_ref().take(batch).collect())
            .await?;
    }
    Ok(copied)
}
