//! `annal read`: events from the whole log (filtered) or one aggregate, optionally
//! following new commits. On a terminal, one readable line per event (coloured unless
//! `NO_COLOR`); piped, into a file, or with `--json`, NDJSON, one event per line.
//!
//! `--sealed` is the auditor's export: the log as stored, read without the
//! key-encryption key (personal parts stay sealed: `sealed` and `subjects`, no
//! `personal`), for `docs/verify_chain.py`. Invariant: it prints an event only after
//! checking it against its hash and its predecessor's, in position order with no gap,
//! so a tampered log stops the export at the first bad event, as a checked read would.

use super::table::{self, clip};
use super::{CliError, StoreArgs, list};
use annal::chain::{self, Hash};
use annal::{Direction, Filter, RecordedEvent, Store, Timestamp, privacy};
use anstyle::Style;
use clap::Args;
use std::io::IsTerminal as _;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

const PAGE: usize = 1000;
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Read one aggregate's events (in version order) instead of the whole log.
    #[arg(long)]
    aggregate: Option<String>,
    /// With --aggregate: the first version to read.
    #[arg(long, requires = "aggregate")]
    from_version: Option<u64>,
    /// Read events after this global position.
    #[arg(long, default_value_t = 0, conflicts_with = "aggregate")]
    after_position: u64,
    /// Only these event types (comma-separated or repeated).
    #[arg(long)]
    event_type: Vec<String>,
    /// Only these aggregate types.
    #[arg(long)]
    aggregate_type: Vec<String>,
    /// Only events with these correlation ids.
    #[arg(long)]
    correlation_id: Vec<String>,
    /// Only events with these causation ids.
    #[arg(long)]
    causation_id: Vec<String>,
    /// Only events by these actors.
    #[arg(long)]
    user_id: Vec<String>,
    /// Only events of aggregates whose id starts with this.
    #[arg(long)]
    aggregate_id_prefix: Option<String>,
    /// Only events appended by these principals (who authenticated the append).
    #[arg(long)]
    principal: Vec<String>,
    /// Only events recorded at or after this RFC 3339 time (or date).
    #[arg(long)]
    since: Option<String>,
    /// Only events recorded before this RFC 3339 time (or date).
    #[arg(long)]
    until: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// NDJSON even on a terminal (it is what a pipe or a file always gets).
    #[arg(long)]
    json: bool,
    /// Print the matching history first, then keep running and print new events as
    /// they are committed (add --after-position HEAD to skip the history).
    #[arg(long)]
    follow: bool,
    /// The whole log as stored, without the key-encryption key: personal parts stay
    /// sealed (`sealed` and `subjects`, no `personal`), each event still checked
    /// against its hash. An auditor's export for docs/verify_chain.py; a store file or
    /// database only (--store), not a server.
    #[arg(long, conflicts_with_all = [
        "aggregate", "from_version", "event_type", "aggregate_type", "correlation_id",
        "causation_id", "user_id", "aggregate_id_prefix", "principal", "since", "until",
        "follow",
    ])]
    sealed: bool,
}

fn time(flag: &str, v: &Option<String>) -> Result<Option<Timestamp>, CliError> {
    v.as_deref()
        .map(|t| Timestamp::parse(t).map_err(|e| CliError::Usage(format!("--{flag}: {e}"))))
        .transpose()
}

pub async fn run(args: ReadArgs) -> Result<ExitCode, CliError> {
    let filter = Filter {
        event_types: list(&args.event_type),
        aggregate_types: list(&args.aggregate_type),
        correlation_ids: list(&args.correlation_id),
        causation_ids: list(&args.causation_id),
        user_ids: list(&args.user_id),
        aggregate_id_prefix: args.aggregate_id_prefix.clone().filter(|p| !p.is_empty()),
        principals: list(&args.principal),
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
    };
    let store = if args.sealed {
        args.store.open_sealed().await?
    } else {
        args.store.open_existing().await?
    };
    let people = !args.json && std::io::stdout().is_terminal();
    let mut out = Output {
        w: BufWriter::new(std::io::stdout().lock()),
        left: args.limit.unwrap_or(u64::MAX),
        printed: 0,
        people: people.then(table::colour),
    };
    match &args.aggregate {
        Some(id) => {
            read_aggregate(
                &*store,
                id,
                args.from_version,
                &filter,
                args.follow,
                &mut out,
            )
            .await?
        }
        None if args.sealed => read_sealed(&*store, args.after_position, &mut out).await?,
        None => read_all(&*store, args.after_position, &filter, args.follow, &mut out).await?,
    }
    out.w.flush()?;
    if out.printed == 0 && args.limit != Some(0) {
        let what = match &args.aggregate {
            Some(id) if filter == Filter::default() => format!("aggregate '{id}' has no events"),
            Some(id) => format!("no events of aggregate '{id}' match the filters"),
            None if args.after_position > 0 => {
                format!("no events match after position {}", args.after_position)
            }
            None if filter == Filter::default() => "the log has no events".to_owned(),
            None => "no events match the filters".to_owned(),
        };
        return Err(CliError::NotFound(format!(
            "{what} in {}",
            args.store.shown()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

struct Output<W: Write> {
    w: W,
    left: u64,
    /// Events printed so far.
    printed: u64,
    /// For a person at a terminal: `Some(colour)`; NDJSON when `None`.
    people: Option<bool>,
}

impl<W: Write> Output<W> {
    /// Prints the events; false once the limit is reached.
    fn print(&mut self, events: &[RecordedEvent], filter: &Filter) -> Result<bool, CliError> {
        for e in events.iter().filter(|e| filter.matches(e)) {
            if self.left == 0 {
                return Ok(false);
            }
            match self.people {
                Some(colour) => self.line(e, colour)?,
                None => {
                    serde_json::to_writer(&mut self.w, e).map_err(std::io::Error::from)?;
                    self.w.write_all(b"\n")?;
                }
            }
            self.left -= 1;
            self.printed += 1;
        }
        Ok(self.left > 0)
    }

    /// One event as a line for people: position, aggregate and version, time, type,
    /// who, and the data cut to fit.
    fn line(&mut self, e: &RecordedEvent, colour: bool) -> std::io::Result<()> {
        let (strong, dim) = if colour {
            (Style::new().bold(), Style::new().dimmed())
        } else {
            (Style::new(), Style::new())
        };
        writeln!(
            self.w,
            "{:<8} {:<24} {dim}{}{dim:#}  {strong}{:<24}{strong:#} {:<10} {dim}{}{dim:#}",
            format!("#{}", e.position),
            clip(&format!("{} v{}", e.aggregate_id, e.aggregate_version), 24),
            e.recorded_at,
            clip(&e.event_type, 24),
            clip(&e.user_id, 10),
            clip(e.payload().get(), 100),
        )
    }
}

async fn read_all<W: Write>(
    store: &dyn Store,
    mut after: u64,
    filter: &Filter,
    follow: bool,
    out: &mut Output<W>,
) -> Result<(), CliError> {
    loop {
        // Everything up to `scanned` has been looked at once a short page comes back.
        let scanned = store.head(&[]).await?;
        let page = store.read_all(after, PAGE, filter).await?;
        if let Some(last) = page.last() {
            after = last.position;
        }
        if !out.print(&page, filter)? {
            return Ok(());
        }
        if page.len() == PAGE {
            continue;
        }
        if !follow {
            return Ok(());
        }
        out.w.flush()?;
        after = after.max(scanned);
        store.wait_for_head(after, FOLLOW_WAIT).await?;
    }
}

/// The log after `after` as stored, each event checked against its hash and its
/// predecessor's before it is printed (see the module's invariant), with the subjects
/// its sealed part names.
async fn read_sealed<W: Write>(
    store: &dyn Store,
    after: u64,
    out: &mut Output<W>,
) -> Result<(), CliError> {
    let all = Filter::default();
    let mut prev = match after {
        0 => Hash::ZERO,
        _ => match store.read_all_unchecked(after - 1, 1, &all).await?.pop() {
            Some(e) if e.position == after => e.hash,
            // Past the head: nothing to print (the caller says so).
            None => return Ok(()),
            Some(e) => {
                return Err(annal::Error::Corrupt(format!(
                    "the log has no event at position {after} (the next is at {}): run annal verify",
                    e.position
                ))
                .into());
            }
        },
    };
    let mut at = after;
    let mut want = PAGE;
    loop {
        let mut page = match store.read_all_unchecked(at, want, &all).await {
            Ok(page) => page,
            // A page with an event that cannot even be read as stored (a damaged sealed
            // part): read on one event at a time, so those before it are printed.
            Err(annal::Error::Corrupt(_)) if want > 1 => {
                want = 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let full = page.len() == want;
        let mut bad = None;
        for (i, e) in page.iter_mut().enumerate() {
            if let Err(why) = check_stored(e, at, &prev) {
                bad = Some((i, why));
                break;
            }
            prev = e.hash;
            at = e.position;
        }
        // The events checked before a bad one are printed, then the error.
        if let Some((i, why)) = bad {
            out.print(&page[..i], &all)?;
            return Err(why);
        }
        if !out.print(&page, &all)? || !full {
            return Ok(());
        }
    }
}

/// Checks the stored event `e` that should follow position `at`, whose hash is `prev`,
/// and gives it the subjects its sealed part names.
fn check_stored(e: &mut RecordedEvent, at: u64, prev: &Hash) -> Result<(), CliError> {
    if e.position != at + 1 {
        return Err(annal::Error::Corrupt(format!(
            "the log has no event at position {} (the next is at {}): run annal verify",
            at + 1,
            e.position
        ))
        .into());
    }
    if chain::event_hash(prev, e) != e.hash {
        return Err(annal::Error::Corrupt(format!(
            "event at position {} does not match its hash: run annal verify",
            e.position
        ))
        .into());
    }
    if let Some(sealed) = e.sealed.as_ref().filter(|_| e.subjects.is_empty()) {
        e.subjects = privacy::Envelope::parse(sealed, e.position)?.subjects;
    }
    Ok(())
}

async fn read_aggregate<W: Write>(
    store: &dyn Store,
    id: &str,
    from: Option<u64>,
    filter: &Filter,
    follow: bool,
    out: &mut Output<W>,
) -> Result<(), CliError> {
    let mut next = from.unwrap_or(1);
    loop {
        let scanned = store.head(&[]).await?;
        let page = store
            .read_aggregate(id, Direction::Forward, Some(next), PAGE)
            .await?;
        if let Some(last) = page.last() {
            next = last.aggregate_version + 1;
        }
        if !out.print(&page, filter)? {
            return Ok(());
        }
        if page.len() == PAGE {
            continue;
        }
        if !follow {
            return Ok(());
        }
        out.w.flush()?;
        store.wait_for_head(scanned, FOLLOW_WAIT).await?;
    }
}
