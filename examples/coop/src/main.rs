//! `coop`: the seed's co-op story and a state-at-a-time query for families.
//!
//! - `coop demo [--store URL]` tells the whole story (on a fresh temporary store unless
//!   one is given) and prints where the store is, for `annal audit` and `annal read`.
//! - `coop state FAMILY_ID [--at DATE] [--version N] [--recorded] [--store URL]` prints a
//!   family's state (annal's ready-made state command for any aggregate).

use annal_example_coop::story::StoryError;
use annal_example_coop::{Family, story, upcasters};
use std::io::Write as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("demo") => demo(&args[2..]).await,
        Some("state") => annal::state_command::run::<Family>(&args[1..], upcasters()).await,
        _ => {
            eprintln!(
                "usage: coop demo [--store URL] | coop state FAMILY_ID [--at DATE] [--version N] [--recorded] [--store URL]"
            );
            ExitCode::from(2)
        }
    }
}

async fn demo(args: &[String]) -> ExitCode {
    let url = match args {
        [flag, url] if flag == "--store" => url.clone(),
        [] => {
            let dir = std::env::temp_dir().join(format!("annal-coop-{}", std::process::id()));
            format!("sqlite:{}", dir.join("coop.db").display())
        }
        _ => {
            eprintln!("usage: coop demo [--store URL]");
            return ExitCode::from(2);
        }
    };
    let store = match url.parse() {
        Ok(u) => annal::connect(&u).await,
        Err(e) => Err(e),
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("coop: {e}");
            return ExitCode::from(1);
        }
    };
    let told = story::tell(store, &mut std::io::stdout())
        .await
        .and_then(|_| {
            writeln!(
                std::io::stdout(),
                "\nThe store is {url}. Try:\n  annal audit family_123 --store {url}\n  coop state family_123 --at 2024-09-20 --store {url}"
            )
            .map_err(StoryError::from)
        });
    match told {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`coop demo | head`): stop quietly, as SIGPIPE would.
        Err(StoryError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(e) => {
            eprintln!("coop: {e}");
            ExitCode::from(1)
        }
    }
}
