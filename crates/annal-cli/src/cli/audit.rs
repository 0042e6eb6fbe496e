//! `annal audit AGGREGATE_ID` and `annal correlated CORRELATION_ID`: readable timelines
//! of who did what, when, and why, in aligned columns (coloured on a terminal); every
//! event is named one way, by `#position`; the date an event's data speaks of is shown
//! beside the time it was recorded. `--json` prints the entries as NDJSON instead.

use super::table::{Look, Table, clip};
use super::{CliError, StoreArgs, table};
use annal::audit;
use annal::{AuditEntry, RecordedEvent, Uuid};
use clap::Args;
use std::collections::HashMap;
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
    let events = audit::aggregate_events(&*store, &args.aggregate_id).await?;
    let entries = audit::entries(&events);
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        for e in &entries {
            serde_json::to_writer(&mut out, e).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    } else {
        writeln!(
            out,
            "{} ({}), {} events in {}",
            args.aggregate_id,
            info.aggregate_type,
            entries.len(),
            args.store.shown()
        )?;
        timeline(&events, &entries, false).write(&mut out, table::colour())?;
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
        writeln!(
            out,
            "correlation_id {}: {} events in {}",
            args.correlation_id,
            events.len(),
            args.store.shown()
        )?;
        let entries = audit::entries(&events);
        timeline(&events, &entries, true).write(&mut out, table::colour())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One row per event: where it is, when it was recorded and the date its data speaks
/// of, what happened, who did it, how it links to others (every event named the same
/// way: `#position`), and its data.
fn timeline(events: &[RecordedEvent], entries: &[AuditEntry], with_aggregate: bool) -> Table {
    let positions: HashMap<Uuid, u64> = entries.iter().map(|e| (e.event_id, e.position)).collect();
    let name = |id: &Uuid| {
        positions
            .get(id)
            .map_or_else(|| format!("event {}", short(id)), |p| format!("#{p}"))
    };
    let mut header = vec!["POS"];
    if with_aggregate {
        header.push("AGGREGATE");
    }
    header.extend(["VER", "RECORDED", "DATE", "EVENT", "BY", "LINKS", "DATA"]);
    let mut t = Table::new(&header);
    for (e, entry) in events.iter().zip(entries) {
        let mut row = vec![(format!("#{}", entry.position), Look::Plain)];
        if with_aggregate {
            row.push((e.aggregate_id.clone(), Look::Plain));
        }
        let mut event = entry.event_type.clone();
        if entry.event_version > 1 {
            event.push_str(&format!(" (schema v{})", entry.event_version));
        }
        let mut by = entry.user_id.clone();
        if let Some(p) = entry.principal.as_ref().filter(|p| **p != entry.user_id) {
            by.push_str(&format!(" (as {p})"));
        }
        let mut links = Vec::new();
        if !with_aggregate && let Some(c) = &entry.correlation_id {
            links.push(format!("correlation {c}"));
        }
        if let Some(c) = &entry.causation_id {
            let cause = c.parse::<Uuid>().map_or_else(|_| c.clone(), |id| name(&id));
            links.push(format!("caused by {cause}"));
        }
        if let Some(c) = &entry.compensates {
            let target = c
                .position
                .map_or_else(|| name(&c.event_id), |p| format!("#{p}"));
            let mut text = format!("CORRECTS {target}");
            if let Some(r) = &c.reason {
                text.push_str(&format!(" ({r})"));
            }
            links.push(text);
        }
        for by in &entry.compensated_by {
            links.push(format!("CORRECTED BY {}", name(by)));
        }
        let corrected = entry.compensates.is_some() || !entry.compensated_by.is_empty();
        row.extend([
            (format!("v{}", entry.aggregate_version), Look::Plain),
            (entry.recorded_at.to_string(), Look::Dim),
            (domain_date(e).unwrap_or_default(), Look::Plain),
            (event, Look::Strong),
            (by, Look::Plain),
            (
                links.join("; "),
                if corrected { Look::Warn } else { Look::Plain },
            ),
            (clip(e.payload().get(), 80), Look::Dim),
        ]);
        t.row(row);
    }
    t
}

/// The date an event speaks of, when it names one: its metadata's `occurred_at`, else
/// the first top-level field of its data (not its personal part: a birth date is not
/// what the event speaks of) called `date` or ending in `_date`, `_on` or
/// `_at`, whose value starts YYYY-MM-DD.
fn domain_date(e: &RecordedEvent) -> Option<String> {
    let day_of = |value: &serde_json::Value| -> Option<String> {
        let day = value.as_str()?.get(..10)?;
        day.bytes()
            .enumerate()
            .all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            })
            .then(|| day.to_owned())
    };
    let metadata: serde_json::Map<String, serde_json::Value> =
        e.metadata.to_value().unwrap_or_default();
    if let Some(day) = metadata.get("occurred_at").and_then(day_of) {
        return Some(day);
    }
    let data: serde_json::Map<String, serde_json::Value> = e.data.to_value().ok()?;
    data.iter().find_map(|(key, value)| {
        let named = key == "date" || ["_date", "_on", "_at"].iter().any(|s| key.ends_with(s));
        if named { day_of(value) } else { None }
    })
}

/// The first 8 hex digits of an id, as people quote them.
fn short(id: &Uuid) -> String {
    id.to_string().chars().take(8).collect()
}
