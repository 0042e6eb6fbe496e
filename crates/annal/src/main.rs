//! The `annal` command: append, read and verify an annal store (API.md's CLI).

mod cli;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANNAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("ANNAL_LOG_JSON").is_some() {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("annal: {e}");
            e.exit_code()
        }
    }
}
