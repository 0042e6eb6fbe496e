//! `annal verify`: checks the hash chain and prints the report as JSON.

use super::{CliError, StoreArgs};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// First position to check (default 1; checked against its predecessor's stored hash).
    #[arg(long)]
    from_position: Option<u64>,
    /// Last position to check (default: the head).
    #[arg(long)]
    to_position: Option<u64>,
}

pub async fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open().await?;
    let report = store.verify(args.from_position, args.to_position).await?;
    let json = serde_json::to_string(&report).map_err(std::io::Error::from)?;
    println!("{json}");
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "the hash chain is broken at position {}: {}",
            report.first_bad_position.unwrap_or(0),
            report.reason.as_deref().unwrap_or("unknown")
        )))
    }
}
