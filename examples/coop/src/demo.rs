//! `coop demo`: tells the seed's story ([`crate::story`]) into a store, then names the
//! commands that show it.
//!
//! The store is found as `annal` finds it, so that `annal read`, `annal audit` and
//! `coop state` run next in the same folder show what the demo wrote: `--store URL`,
//! else `--data DIR` (the embedded store `DIR/annal.db`), else `$ANNAL_STORE`, else
//! `sqlite:./annal-data/annal.db`. `--temp` tells it into a new store in a fresh
//! temporary folder instead (kept, for a look afterwards).
//!
//! Invariant: the story is told once per store. A store that already holds
//! `family_123` is refused before anything is written (its family would be enrolled
//! twice), with the way out named.

use crate::story::{self, StoryError};
use annal::url::DEFAULT_STORE;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The usage line of `coop demo`.
pub const USAGE: &str = "coop demo [--store URL | --data DIR | --temp]";

/// The family whose story the demo tells.
const FAMILY: &str = "family_123";

/// Where the demo tells its story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The store's URL.
    pub url: String,
    /// Whether the user named it (`--store`, `--data`, `--temp` or `$ANNAL_STORE`), so
    /// the commands suggested afterwards must name it too.
    pub named: bool,
}

/// Why the demo did not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The arguments are wrong (exit code 2).
    #[error("{0}\nusage: {USAGE}")]
    Usage(String),
    /// The store already holds the story (exit code 1).
    #[error(
        "{url} already holds {FAMILY}: the story is told once per store (annal audit \
         {FAMILY}{flag} shows it). For a fresh one: coop demo --temp, or --store URL"
    )]
    AlreadyTold {
        /// The store.
        url: String,
        /// `--store URL` when the store was named, for the suggested command.
        flag: String,
    },
    /// No key-encryption key was given (exit code 1).
    #[error(
        "the story's families have personal data (names, ages, how they paid), which annal \
         seals with a key-encryption key: make one and name it first, e.g.\n  \
         openssl rand -hex 32 > annal-kek.hex && export ANNAL_KEK_FILE=$PWD/annal-kek.hex\n\
         (docs/privacy.md; keep the key apart from the store's backups)"
    )]
    NoKek,
    /// The key-encryption key named could not be loaded (exit code 1).
    #[error(transparent)]
    Kek(#[from] annal::privacy::KekError),
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] annal::OpenError),
    /// Telling the story failed.
    #[error(transparent)]
    Story(#[from] StoryError),
}

impl DemoError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DemoError::Usage(_) => ExitCode::from(2),
            // The reader went away (`coop demo | head`): stop quietly, as SIGPIPE would.
            DemoError::Story(StoryError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                ExitCode::from(141)
            }
            _ => ExitCode::from(1),
        }
    }
}

/// Works out the store from the arguments after `demo` and `$ANNAL_STORE`'s value.
pub fn target(args: &[String], env_store: Option<String>) -> Result<Target, DemoError> {
    let value = |flag: &str, v: Option<&String>| {
        v.cloned()
            .ok_or_else(|| DemoError::Usage(format!("{flag} needs a value")))
    };
    let mut chosen: Option<Target> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let url = match arg.as_str() {
            "--store" => value("--store", args.next())?,
            "--data" => {
                let dir = PathBuf::from(value("--data", args.next())?);
                format!("sqlite:{}", dir.join("annal.db").display())
            }
            "--temp" => {
                let dir = std::env::temp_dir().join(format!("annal-coop-{}", std::process::id()));
                format!("sqlite:{}", dir.join("coop.db").display())
            }
            other => return Err(DemoError::Usage(format!("unexpected argument '{other}'"))),
        };
        if chosen.is_some() {
            return Err(DemoError::Usage(
                "--store, --data and --temp name the store: give one".into(),
            ));
        }
        chosen = Some(Target { url, named: true });
    }
    Ok(chosen.unwrap_or_else(|| match env_store {
        Some(url) => Target { url, named: true },
        None => Target {
            url: DEFAULT_STORE.to_owned(),
            named: false,
        },
    }))
}

/// Tells the story into `target`'s store, printing to `out`.
pub async fn run(target: &Target, out: &mut impl Write) -> Result<(), DemoError> {
    let url: annal::StoreUrl = target.url.parse()?;
    if annal::privacy::Keyring::from_env()?.is_none() {
        return Err(DemoError::NoKek);
    }
    let flag = if target.named {
        format!(" --store {url}")
    } else {
        String::new()
    };
    let store = annal::connect(&url).await?;
    if store
        .aggregate(FAMILY)
        .await
        .map_err(StoryError::from)?
        .is_some()
    {
        return Err(DemoError::AlreadyTold {
            url: url.to_string(),
            flag,
        });
    }
    story::tell(store, out).await?;
    writeln!(
        out,
        "\nThe story is in {url}. Next, in this folder:\n  annal read --aggregate {FAMILY}{flag}\n  \
         annal audit {FAMILY}{flag}\n  coop state {FAMILY} --at 2024-09-20{flag}\n\
         and, to see a family forgotten (its names erased, the log whole):\n  \
         coop forget {FAMILY}{flag}"
    )
    .map_err(StoryError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn without_flags_the_demo_uses_annals_default_store() {
        let t = target(&[], None).expect("target");
        assert_eq!(t.url, DEFAULT_STORE);
        assert!(!t.named);
    }

    #[test]
    fn annal_store_in_the_environment_is_honoured_and_a_flag_overrides_it() {
        let env = Some("sqlite:/elsewhere/a.db".to_owned());
        assert_eq!(
            target(&[], env.clone()).expect("env").url,
            "sqlite:/elsewhere/a.db"
        );
        let flagged = target(&args(&["--store", "sqlite:b.db"]), env).expect("flag");
        assert_eq!(flagged.url, "sqlite:b.db");
        assert!(flagged.named);
    }

    #[test]
    fn data_names_the_embedded_store_in_that_folder() {
        let t = target(&args(&["--data", "/srv/annal"]), None).expect("target");
        assert_eq!(t.url, "sqlite:/srv/annal/annal.db");
    }

    #[test]
    fn temp_names_a_fresh_folder_outside_the_current_one() {
        let t = target(&args(&["--temp"]), None).expect("target");
        let tmp = std::env::temp_dir();
        assert!(
            t.url.starts_with(&format!("sqlite:{}", tmp.display())),
            "{t:?}"
        );
    }

    #[test]
    fn two_stores_or_an_unknown_flag_are_usage_errors() {
        for bad in [
            args(&["--temp", "--store", "sqlite:x.db"]),
            args(&["--store"]),
            args(&["--stor", "x"]),
        ] {
            let e = target(&bad, None).expect_err("refused");
            assert!(matches!(e, DemoError::Usage(_)), "{bad:?}: {e}");
            assert!(e.to_string().contains(USAGE), "{e}");
        }
    }
}
