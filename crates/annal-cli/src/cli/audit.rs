//! `annal audit AGGREGATE_ID` and `annal correlated CORRELATION_ID`: readable timelines
//! of who did what, when, and why; `--json` prints the entries as NDJSON instead.

use super::{CliError, StoreArgs};
use annal::AuditEntry;
use annal::audit;
use clap::Args;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The aggregate.
    aggregate_id: String,
    /// One JSON object per change instead of a timeline.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CorrelatedArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The correlation id.
    correlation_id: String,
    /// One JSON event per line instead of a timeline.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AuditArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open_existing().await?;
    let Some(info) = store.aggregate(&args.aggregate_id).await? else {
        return Err(CliError::NotFound(format!(
            "aggregate '{}' has no events in {}",
            args.aggregate_id,
            args.store.shown()
        )));
    };
    let entries = audit::audit_trail(&*store, &args.aggregate_id).await?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        for e in &entries {
            serde_json::to_writer(&mut out, e).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    } else {
        writeln!(
            out,
            "{} ({}), {} events",
            args.aggregate_id,
            info.aggregate_type,
            entries.len()
        )?;
        for e in &entries {
            timeline_line(&mut out, e, &format!("v{}", e.aggregate_version))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_correlated(args: CorrelatedArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open_existing().await?;
    let events = audit::correlated(&*store, &args.correlation_id).await?;
    if events.is_empty() {
        return Err(CliError::NotFound(format!(
            "no events with correlation_id '{}' in {}",
            args.correlation_id,
            args.store.shown()
        )));
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        for e in &events {
            serde_json::to_writer(&mut out, e).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    } else {
        writeln!(out, "{}: {} events", args.correlation_id, events.len())?;
        for (e, entry) in events.iter().zip(audit::entries(&events)) {
            timeline_line(
                &mut out,
                &entry,
                &format!("{} v{}", e.aggregate_id, e.aggregate_version),
            )?;
            writeln!(out, "      {}", e.data)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn timeline_line(out: &mut impl Write, e: &AuditEntry, at: &str) -> std::io::Result<()> {
    write!(
        out,
        "#{:<6} {}  {:<14} {}",
        e.position, e.recorded_at, at, e.event_type
    )?;
    if e.event_version > 1 {
        write!(out, " (schema v{})", e.event_version)?;
    }
    write!(out, "  by {}", e.user_id)?;
    if let Some(c) = &e.correlation_id {
        write!(out, "  correlation {c}")?;
    }
    if let Some(c) = &e.causation_id {
        write!(out, "  caused by {c}")?;
    }
    if let Some(c) = &e.compensates {
        match c.position {
            Some(p) => write!(out, "  CORRECTS #{p}")?,
            None => write!(out, "  CORRECTS {}", c.event_id)?,
        }
        if let Some(r) = &c.reason {
            write!(out, " ({r})")?;
        }
    }
    for by in &e.compensated_by {
        write!(out, "  CORRECTED BY {by}")?;
    }
    writeln!(out)
}
