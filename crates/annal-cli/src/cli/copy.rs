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
//! The key table of personal data is copied before the events, read after the source's
//! head: live data keys stay wrapped by the KEK (both stores are opened with the same
//! one), and forgotten subjects stay forgotten, so the copy reads and refuses as the
//! source does. A target that holds keys already is refused like one with events.
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
    // The key table after the head is read, so every event copied finds its key (rows
    // are never removed; a key made later is copied unused). A subject forgotten since
    // comes with the position of its $subjectForgotten event: the copy reaches it.
    let (keys, forgotten_up_to) = copy_keys(&*from, &*to, args.batch).await?;
    let total = head.max(forgotten_up_to);
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

/// Copies the source's key table (live keys still wrapped by the KEK both stores were
/// opened with, forgotten subjects' rows without one) into the target's, `batch` rows
/// at a time; answers how many rows, and the last position a forgotten row names.
async fn copy_keys(
    from: &dyn annal::Store,
    to: &dyn annal::Store,
    batch: usize,
) -> Result<(u64, u64), CliError> {
    let mut after = String::new();
    let mut copied = 0;
    let mut forgotten_up_to = 0;
    loop {
        let rows = from.key_rows(&after, batch).await?;
        let Some(last) = rows.last() else {
            return Ok((copied, forgotten_up_to));
        };
        after = last.subject.clone();
        let full = rows.len() == batch;
        for p in rows.iter().filter_map(|r| r.forgotten_position) {
            forgotten_up_to = forgotten_up_to.max(p);
        }
        copied += to.import_key_rows(rows).await?;
        if !full {
            return Ok((copied, forgotten_up_to));
        }
    }
}
