//! The `annal` command: append, read and verify an annal store (API.md's CLI).

mod cli;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("annal: {e}");
            e.exit_code()
        }
    }
}
