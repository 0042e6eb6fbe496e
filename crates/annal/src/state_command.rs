//! A ready-made command that prints an aggregate's state now, at a version, or as of a
//! time, for any [`Aggregate`]: state needs the aggregate's code, so each application
//! ships its own small program, and this makes it a few lines:
//!
//! ```no_run
//! # use annal::Upcasters;
//! # #[derive(Default, Clone, serde::Serialize, serde::Deserialize)] struct Family;
//! # impl annal::Aggregate for Family { const TYPE: &'static str = "Family"; const SNAPSHOT_TAG: &'static str = "f1";
//! #   type Event = Ev; type Command = (); type Error = std::io::Error;
//! #   fn apply(&mut self, _: &Ev) {} fn handle(&self, _: ()) -> Result<Vec<Ev>, std::io::Error> { Ok(vec![]) } }
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] #[serde(tag = "event_type", content = "data")] enum Ev { A {} }
//! # impl annal::DomainEvent for Ev {}
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let args: Vec<String> = std::env::args().collect();
//!     annal::state_command::run::<Family>(&args, Upcasters::new()).await
//! }
//! ```
//!
//! Usage: `PROGRAM ID [--at TIME] [--version N] [--recorded] [--store URL]`. `--at` is
//! domain time (events' `occurred_at` metadata, else their record time) unless
//! `--recorded` asks for what the store knew at that time.

use crate::url::DEFAULT_STORE;
use annal_core::{Aggregate, Repository, SnapshotPolicy, Timestamp, Upcasters};
use clap::Parser;
use std::io::Write as _;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(about = "Print an aggregate's state now, at a version, or as of a time")]
struct Args {
    /// The aggregate's id.
    aggregate_id: String,
    /// A time (RFC 3339, or a date meaning its midnight UTC).
    #[arg(long, conflicts_with = "version")]
    at: Option<String>,
    /// A version.
    #[arg(long)]
    version: Option<u64>,
    /// With --at: the store's record time instead of the domain time.
    #[arg(long, requires = "at")]
    recorded: bool,
    /// The store.
    #[arg(long, env = "ANNAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
}

/// Parses `args` (the first is the program or subcommand name), loads, prints JSON
/// `{"aggregate_id", "version", "state"}`; returns the exit code (1 on failure, 2 on bad
/// usage) after printing why on stderr.
pub async fn run<A: Aggregate>(args: &[String], upcasters: Upcasters) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match load::<A>(&args, upcasters).await {
        Ok(json) => match writeln!(std::io::stdout(), "{json}") {
            Ok(()) => ExitCode::SUCCESS,
            // The reader went away (`… | head`): stop quietly, as SIGPIPE would.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
            Err(e) => {
                eprintln!("error: cannot print the state: {e}");
                ExitCode::from(1)
            }
        },
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn load<A: Aggregate>(args: &Args, upcasters: Upcasters) -> Result<String, (u8, String)> {
    let at = args
        .at
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .map_err(|e| (2, format!("--at: {e}")))?;
    let url = args.store.parse().map_err(|e| (2, format!("{e}")))?;
    let store = crate::connect(&url).await.map_err(|e| (1, e.to_string()))?;
    let repo = Repository::<A>::new(store)
        .with_upcasters(upcasters)
        .with_snapshots(SnapshotPolicy::ReadOnly);
    let id = &args.aggregate_id;
    if repo
        .store()
        .aggregate(id)
        .await
        .map_err(|e| (1, e.to_string()))?
        .is_none()
    {
        return Err((1, format!("aggregate '{id}' has no events in {url}")));
    }
    let loaded = match (args.version, at) {
        (Some(v), _) => repo.load_at_version(id, v).await,
        (None, Some(t)) if args.recorded => repo.load_as_of(id, t).await,
        (None, Some(t)) => repo.load_as_occurred(id, t).await,
        (None, None) => repo.load(id).await,
    }
    .map_err(|e| (1, e.to_string()))?;
    #[derive(serde::Serialize)]
    struct Out<'a, A> {
        aggregate_id: &'a str,
        version: u64,
        state: &'a A,
    }
    let out = Out {
        aggregate_id: id,
        version: loaded.version,
        state: &loaded.state,
    };
    serde_json::to_string_pretty(&out).map_err(|e| (1, e.to_string()))
}
