//! `annal projections`: every checkpoint (projections, named subscriptions, consumer
//! group partitions) with its status, position, lag behind the head and errors. A
//! checkpoint of another log (its `source`) shows no lag: this store does not know that
//! log's head. `--wait` first waits while any is rebuilding (a rebuild runs in the
//! application that owns the projection), with its progress on stderr on a terminal.

use super::progress::Progress;
use super::{CliError, StoreArgs};
use annal::Store;
use annal::checkpoint::CheckpointStatus;
use annal::projection::ProjectionInfo;
use clap::Args;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--wait` reads the checkpoints again.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON object per line (name, position, status, error_count, last_error,
    /// updated_at, source, head, lag; lag is null for another log's checkpoint) instead
    /// of a table.
    #[arg(long)]
    json: bool,
    /// First wait while any projection is rebuilding, showing how far each has got on
    /// stderr when that is a terminal (until Ctrl-C, if the application rebuilding it
    /// stopped); then list them.
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: ProjectionsArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open_existing().await?;
    let list = if args.wait {
        after_rebuilds(&*store).await?
    } else {
        annal::projection::list(&*store).await?
    };
    if args.json {
        for p in &list {
            let json = serde_json::to_string(p).map_err(std::io::Error::from)?;
            writeln!(std::io::stdout(), "{json}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        std::io::stdout(),
        "{:<32} {:<10} {:>12} {:>10} {:>7}  last error",
        "name",
        "status",
        "position",
        "lag",
        "errors"
    )?;
    for p in &list {
        let c = &p.checkpoint;
        let mut last_error = c.last_error.clone().unwrap_or_default().replace('\n', " ");
        if last_error.len() > 80 {
            let mut cut = 80;
            while !last_error.is_char_boundary(cut) {
                cut -= 1;
            }
            last_error.truncate(cut);
            last_error.push('…');
        }
        writeln!(
            std::io::stdout(),
            "{:<32} {:<10} {:>12} {:>10} {:>7}  {}",
            c.name,
            c.status,
            c.position,
            p.lag.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            c.error_count,
            last_error
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the checkpoints every [`POLL`] until none is rebuilding; the list as it then
/// stands.
async fn after_rebuilds(store: &dyn Store) -> Result<Vec<ProjectionInfo>, CliError> {
    let mut progress = Progress::on_stderr();
    loop {
        let list = annal::projection::list(store).await?;
        let rebuilding: Vec<String> = list
            .iter()
            .filter(|p| p.checkpoint.status == CheckpointStatus::Rebuilding)
            .map(rebuild_progress)
            .collect();
        if rebuilding.is_empty() {
            progress.finish();
            return Ok(list);
        }
        progress.set(&format!("rebuilding {}", rebuilding.join("; ")));
        tokio::time::sleep(POLL).await;
    }
}

/// "NAME: POSITION of HEAD events (P%)".
fn rebuild_progress(p: &ProjectionInfo) -> String {
    let c = &p.checkpoint;
    let pct = c.position.saturating_mul(100) / p.head.max(1);
    format!("{}: {} of {} events ({pct}%)", c.name, c.position, p.head)
}
