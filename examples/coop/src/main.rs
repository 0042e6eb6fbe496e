//! `coop`: the seed's co-op story and a state-at-a-time query for families.
//!
//! - `coop demo [--store URL | --data DIR | --temp]` tells the whole story into the
//!   store `annal` uses (`./annal-data/annal.db` unless named; `--temp`: a throwaway
//!   one), so `annal read`, `annal audit` and `coop state` show it next.
//! - `coop serve [--data DIR] [--listen ADDR]` serves that store (HTTP API and console)
//!   with the Family state function registered, so the console shows a family's state.
//! - `coop forget FAMILY_ID [--reason TEXT] [--store URL | --data DIR]` forgets a
//!   family (its personal data erased for good, the log and its chain whole) and shows
//!   its timeline before and after.
//! - `coop state FAMILY_ID [--at DATE] [--version N] [--recorded] [--store URL]` prints a
//!   family's state (annal's ready-made state command for any aggregate).

use annal_example_coop::{Family, demo, forget, serve, upcasters};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("demo") => demo(&args[2..]).await,
        Some("forget") => forget(&args[2..]).await,
        Some("serve") => serve(&args[2..]).await,
        Some("state") => annal::state_command::run::<Family>(&args[1..], upcasters()).await,
        _ => {
            eprintln!(
                "usage: {} | {} | {} | coop state FAMILY_ID [--at DATE] [--version N] [--recorded] [--store URL]",
                demo::USAGE,
                forget::USAGE,
                serve::USAGE
            );
            ExitCode::from(2)
        }
    }
}

async fn demo(args: &[String]) -> ExitCode {
    let told = match demo::target(args, std::env::var("ANNAL_STORE").ok()) {
        Ok(target) => demo::run(&target, &mut std::io::stdout()).await,
        Err(e) => Err(e),
    };
    match told {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            if code != ExitCode::from(141) {
                eprintln!("coop: {e}");
            }
            code
        }
    }
}

async fn forget(args: &[String]) -> ExitCode {
    let done = async {
        let (family, reason, target) = forget::args(args, std::env::var("ANNAL_STORE").ok())?;
        let url: annal::StoreUrl = target.url.parse()?;
        let store = annal::connect(&url).await?;
        let shown = forget::forget(store, &family, &reason, &mut std::io::stdout()).await?;
        Ok::<_, demo::DemoError>(shown.verified)
    };
    match done.await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let code = e.exit_code();
            if code != ExitCode::from(141) {
                eprintln!("coop: {e}");
            }
            code
        }
    }
}

async fn serve(args: &[String]) -> ExitCode {
    let served = match serve::args(args) {
        Ok(args) => {
            serve::run(args, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coop: {e}");
            ExitCode::from(if matches!(e, serve::ServeError::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}
