//! The `annal` command: serve, append, read, verify and audit an annal store (docs/api.md).

mod cli;

use clap::Parser;
use std::io::IsTerminal as _;
use std::process::ExitCode;

/// The binary's allocator: many small, short-lived allocations per request from several
/// threads (HTTP parsing, JSON, events), where glibc's malloc spent 15% of `annal serve`'s
/// cycles under load (issue 12's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let argv = match cli::config::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            say(&e);
            return e.exit_code();
        }
    };
    let args = cli::Cli::parse_from(argv);
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANNAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a log file or a pipe gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli::run(args).await {
        Ok(code) => code,
        // The reader went away (`annal read | head`): stop quietly, as a pipe's writer
        // killed by SIGPIPE does (128 + 13).
        Err(cli::CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(141)
        }
        Err(e) => {
            say(&e);
            e.exit_code()
        }
    }
}

/// Writes why the command failed to stderr. A stderr that is gone (`annal verify 2>&1 |
/// head -c 10`) drops it rather than panicking: the exit code still says it.
fn say(e: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "annal: {e}");
}
