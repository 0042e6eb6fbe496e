//! `annal projections`: every checkpoint (projections, named subscriptions, consumer
//! group partitions) with its status, position, lag behind the head and errors. A
//! checkpoint of another log (its `source`) shows no lag: this store does not know that
//! log's head.

use super::{CliError, StoreArgs};
use clap::Args;
use std::io::Write as _;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON object per line (name, position, status, error_count, last_error,
    /// updated_at, source, head, lag; lag is null for another log's checkpoint) instead
    /// of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ProjectionsArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open_existing().await?;
    let list = annal::projection::list(&*store).await?;
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
