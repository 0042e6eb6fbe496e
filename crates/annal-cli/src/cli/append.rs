//! `annal append`: append requests or transactions as JSON lines on stdin, results as
//! JSON lines on stdout, each printed as soon as it is durable.
//!
//! Lines are submitted as they arrive, up to [`MAX_IN_FLIGHT`] at a time, so lines that
//! arrive together share group commits; results are printed in input order. With
//! `--server`, a line waits while an earlier line to the same aggregate is in flight
//! (HTTP requests may overtake each other; a local store's queue keeps their order). On the first
//! failure no further line is read; appends already submitted are still answered (their
//! results printed, their failures reported), then the command exits non-zero.
//!
//! An import (input from a file or a pipe, results into one, stderr a terminal) shows
//! on stderr how many requests are durable, and how far through the input a file is.

use super::progress::{Progress, rate};
use super::{CliError, LimitArgs, StoreArgs};
use annal::{AppendRequest, Store, Transaction};
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::io::Write;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};

const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// A parsed input line.
enum Line {
    Append(AppendRequest),
    Transaction(Transaction),
}

fn parse(text: &str, line: u64) -> Result<Line, CliError> {
    #[derive(Deserialize)]
    struct Shape {
        appends: Option<IgnoredAny>,
    }
    let bad = |e: serde_json::Error| CliError::Input {
        line,
        reason: if e.is_eof() {
            format!(
                "not a valid append request or transaction: {e}. Each request is one \
                 line of JSON: put a pretty-printed request on one line (`jq -c`)"
            )
        } else {
            format!("not a valid append request or transaction: {e}")
        },
    };
    let shape: Shape = serde_json::from_str(text).map_err(bad)?;
    if shape.appends.is_some() {
        serde_json::from_str(text)
            .map(Line::Transaction)
            .map_err(bad)
    } else {
        serde_json::from_str(text).map(Line::Append).map_err(bad)
    }
}

type Pending = Pin<Box<dyn Future<Output = (u64, Result<String, CliError>, Vec<String>)> + Send>>;

impl Line {
    /// The aggregates the line appends to.
    fn aggregates(&self) -> Vec<String> {
        match self {
            Line::Append(r) => vec![r.aggregate_id.clone()],
            Line::Transaction(t) => t.appends.iter().map(|a| a.aggregate_id.clone()).collect(),
        }
    }
}

fn submit(store: Arc<dyn Store>, line_no: u64, line: Line) -> Pending {
    let aggregates = line.aggregates();
    Box::pin(async move {
        let out = match line {
            Line::Append(r) => store.append(r).await.map(|r| serde_json::to_string(&r)),
            Line::Transaction(t) => store.transact(t).await.map(|r| serde_json::to_string(&r)),
        };
        let out = match out {
            Ok(Ok(json)) => Ok(json),
            Ok(Err(e)) => Err(CliError::Failed(format!("cannot print a result: {e}"))),
            Err(e) if e.is_bad_input() => Err(CliError::Input {
                line: line_no,
                reason: e.to_string(),
            }),
            Err(e) => Err(CliError::Failed(format!("line {line_no}: {e}"))),
        };
        (line_no, out, aggregates)
    })
}

pub async fn run(args: AppendArgs) -> Result<ExitCode, CliError> {
    // A local store takes jobs in submission order (one queue), so lines may all be in
    // flight at once. Requests to a server may overtake each other, so there a line waits
    // until no earlier line to the same aggregate is in flight.
    let ordered = args.store.server.is_some();
    let store = args.store.open(args.limits.limits()).await?;
    if std::io::stdin().is_terminal() {
        eprintln!(
            "annal: reading append requests from stdin, one JSON object per line \
             (docs/http.md; expected_version defaults to \"any\"); Ctrl-D ends"
        );
    }
    // Progress only where it cannot mix with the results: input and results both
    // elsewhere (a file or a pipe), stderr a terminal.
    let mut progress = Progress::on_stderr()
        .only_if(!std::io::stdin().is_terminal() && !std::io::stdout().is_terminal());
    let input_size = if progress.shown() { stdin_size() } else { None };
    let mut input_read = 0u64;
    let mut appended = 0u64;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut busy: HashMap<String, usize> = HashMap::new();
    let mut waiting: Option<(u64, Line)> = None;
    let mut line_no = 0u64;
    let mut reading = true;
    let mut first_failure: Option<(u64, CliError)> = None;
    let stdout = std::io::stdout();
    loop {
        if first_failure.is_some() {
            // Nothing more is submitted after a failure (a parked line included).
            waiting = None;
        }
        if let Some((n, line)) = waiting.take() {
            if line.aggregates().iter().any(|a| busy.contains_key(a)) {
                waiting = Some((n, line));
            } else {
                start(&mut in_flight, &mut busy, ordered, &store, n, line);
            }
        }
        tokio::select! {
            biased;
            Some((n, result, aggregates)) = in_flight.next(), if !in_flight.is_empty() => {
                for a in aggregates {
                    if let Some(count) = busy.get_mut(&a) {
                        *count -= 1;
                        if *count == 0 {
                            busy.remove(&a);
                        }
                    }
                }
                match result {
                    Ok(json) => {
                        let mut out = stdout.lock();
                        writeln!(out, "{json}")?;
                        out.flush()?;
                        appended += 1;
                        progress.set(&appending(appended, input_read, input_size, progress.elapsed()));
                    }
                    Err(e) => {
                        // Failures are said on stderr: the progress line stops there.
                        progress = progress.only_if(false);
                        reading = false;
                        fail(&mut first_failure, n, e);
                    }
                }
            }
            next = lines.next_line(), if reading && waiting.is_none() && in_flight.len() < MAX_IN_FLIGHT => {
                match next? {
                    None => reading = false,
                    Some(text) => {
                        line_no += 1;
                        input_read += text.len() as u64 + 1;
                        if text.trim().is_empty() {
                            continue;
                        }
                        match parse(&text, line_no) {
                            Ok(line) if ordered && line.aggregates().iter().any(|a| busy.contains_key(a)) => {
                                waiting = Some((line_no, line));
                            }
                            Ok(line) => start(&mut in_flight, &mut busy, ordered, &store, line_no, line),
                            Err(e) => {
                                progress = progress.only_if(false);
                                reading = false;
                                fail(&mut first_failure, line_no, e);
                            }
                        }
                    }
                }
            }
            else => break,
        }
    }
    progress.finish();
    match first_failure {
        None => Ok(ExitCode::SUCCESS),
        Some((_, e)) => Err(e),
    }
}

/// Submits a line, noting its aggregates as busy when submission must stay ordered.
fn start(
    in_flight: &mut FuturesOrdered<Pending>,
    busy: &mut HashMap<String, usize>,
    ordered: bool,
    store: &Arc<dyn Store>,
    line_no: u64,
    line: Line,
) {
    if ordered {
        for a in line.aggregates() {
            *busy.entry(a).or_insert(0) += 1;
        }
    }
    in_flight.push_back(submit(store.clone(), line_no, line));
}

/// Keeps the failure of the earliest line as the one the command exits with, and reports
/// any other on stderr at once.
fn fail(first: &mut Option<(u64, CliError)>, line: u64, e: CliError) {
    match first {
        Some((at, _)) if *at < line => eprintln!("annal: {e}"),
        _ => {
            if let Some((_, earlier)) = first.replace((line, e)) {
                eprintln!("annal: {earlier}");
            }
        }
    }
}

/// The import's progress line: requests durable, how far through a file, how fast.
fn appending(done: u64, read: u64, size: Option<u64>, elapsed: std::time::Duration) -> String {
    let through = match size {
        Some(size) => format!(", {}% of the input", read.saturating_mul(100) / size.max(1)),
        None => String::new(),
    };
    format!(
        "appending: {done} requests durable{through}, {} requests/s",
        rate(done, elapsed)
    )
}

/// The size of stdin when it is a file (`annal append < events.ndjson`), else `None`.
#[cfg(unix)]
fn stdin_size() -> Option<u64> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

#[cfg(not(unix))]
fn stdin_size() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_import_line_says_how_far_through_a_file_and_how_fast() {
        assert_eq!(
            appending(50, 2_500, Some(10_000), Duration::from_secs(5)),
            "appending: 50 requests durable, 25% of the input, 10 requests/s"
        );
        assert_eq!(
            appending(7, 700, None, Duration::from_secs(1)),
            "appending: 7 requests durable, 7 requests/s"
        );
    }
}
