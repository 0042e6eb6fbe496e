//! `annal append`: append requests or transactions as JSON lines on stdin, results as
//! JSON lines on stdout, each printed as soon as it is durable.
//!
//! Lines are submitted as they arrive, up to [`MAX_IN_FLIGHT`] at a time, so lines that
//! arrive together share group commits; results are printed in input order. On the first
//! failure no further line is read; appends already submitted are still answered (their
//! results printed, their failures reported), then the command exits non-zero.

use super::{CliError, StoreArgs};
use annal::{AppendRequest, Store, Transaction};
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde::Deserialize;
use serde::de::IgnoredAny;
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
        reason: format!("not a valid append request or transaction: {e}"),
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

type Pending = Pin<Box<dyn Future<Output = (u64, Result<String, CliError>)> + Send>>;

fn submit(store: Arc<dyn Store>, line_no: u64, line: Line) -> Pending {
    Box::pin(async move {
        let out = match line {
            Line::Append(r) => store.append(r).await.map(|r| serde_json::to_string(&r)),
            Line::Transaction(t) => store.transact(t).await.map(|r| serde_json::to_string(&r)),
        };
        let out = match out {
            Ok(Ok(json)) => Ok(json),
            Ok(Err(e)) => Err(CliError::Failed(format!("cannot print a result: {e}"))),
            Err(e) if matches!(e.kind(), "invalid_request" | "too_large") => Err(CliError::Input {
                line: line_no,
                reason: e.to_string(),
            }),
            Err(e) => Err(CliError::Failed(format!("line {line_no}: {e}"))),
        };
        (line_no, out)
    })
}

pub async fn run(args: AppendArgs) -> Result<ExitCode, CliError> {
    let store = args.store.open().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut line_no = 0u64;
    let mut reading = true;
    let mut first_failure: Option<(u64, CliError)> = None;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            biased;
            Some((n, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(json) => {
                        let mut out = stdout.lock();
                        writeln!(out, "{json}")?;
                        out.flush()?;
                    }
                    Err(e) => {
                        reading = false;
                        fail(&mut first_failure, n, e);
                    }
                }
            }
            next = lines.next_line(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
                match next? {
                    None => reading = false,
                    Some(text) => {
                        line_no += 1;
                        if text.trim().is_empty() {
                            continue;
                        }
                        match parse(&text, line_no) {
                            Ok(line) => in_flight.push_back(submit(store.clone(), line_no, line)),
                            Err(e) => {
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
    match first_failure {
        None => Ok(ExitCode::SUCCESS),
        Some((_, e)) => Err(e),
    }
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
