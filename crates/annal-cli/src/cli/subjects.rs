//! `annal forget` and `annal subjects`: personal data's subjects (docs/privacy.md).
//! Forgetting destroys a subject's key, durably, before it answers; listing shows each
//! subject's key status; exporting prints every event whose personal part names one
//! subject, decrypted, as NDJSON (for a subject access request); `rotate-kek` rewraps every data key with a new
//! key-encryption key. The store's current KEK comes from `ANNAL_KEK_FILE` or
//! `ANNAL_KEK`, as for every command.

use super::{CliError, StoreArgs, StoreUrlArg};
use annal::privacy::{ForgetRequest, Keyring};
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Subjects per page when listing or exporting.
const PAGE: usize = 1000;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The subject to forget, e.g. family_123.
    subject: String,
    /// Why (kept in the audit trail, in the `$subjectForgotten` event: no personal data).
    #[arg(long)]
    reason: String,
    /// Who asks (default `system`); not with --server, which records the token's name.
    #[arg(long)]
    user_id: Option<String>,
}

pub async fn forget(args: ForgetArgs) -> Result<ExitCode, CliError> {
    if args.user_id.is_some() && args.store.server.is_some() {
        return Err(CliError::Usage(
            "--user-id is for --store: over --server, the server records who forgot as the \
             token's name (and the token as the principal)"
                .into(),
        ));
    }
    // Forgetting opens no personal part: it works without the KEK (one given is checked).
    let store = args.store.open_without_kek().await?;
    let done = store
        .forget_subject(ForgetRequest {
            subject: args.subject,
            reason: args.reason,
            user_id: args.user_id,
            principal: None,
        })
        .await?;
    let json = serde_json::to_string(&done).map_err(std::io::Error::from)?;
    writeln!(std::io::stdout(), "{json}")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SubjectsArgs {
    #[command(subcommand)]
    command: SubjectsCommand,
}

#[derive(Debug, Subcommand)]
enum SubjectsCommand {
    /// Every subject with a key, as JSON lines: subject, key_id, status (active or
    /// forgotten), kek_id, created_at, forgotten_at, forgotten_position.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One subject's key status (exit 3 if no personal data was ever stored for it).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// The subject.
        subject: String,
    },
    /// Every event whose personal part names one subject, decrypted, as NDJSON (for a
    /// subject access request, GDPR Art. 15).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// The subject.
        subject: String,
    },
    /// Rewrap every data key with a new key-encryption key (no event is rewritten);
    /// the store must be opened with the current one. Afterwards give the new one.
    RotateKek {
        /// The store itself: a running `annal serve` cannot rotate its own key (stop
        /// it, rotate, start it with the new key).
        #[command(flatten)]
        store: StoreUrlArg,
        /// A file holding the new KEK: 64 hex digits (`openssl rand -hex 32`).
        #[arg(long)]
        new_kek_file: PathBuf,
    },
}

fn line<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let json = serde_json::to_string(value).map_err(std::io::Error::from)?;
    writeln!(std::io::stdout(), "{json}")?;
    Ok(())
}

pub async fn run(args: SubjectsArgs) -> Result<ExitCode, CliError> {
    match args.command {
        SubjectsCommand::List { store } => {
            let store = store.open_existing().await?;
            let mut after = String::new();
            loop {
                let page = store.subjects(&after, PAGE).await?;
                for s in &page {
                    line(s)?;
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after.clone_from(&last.subject),
                    _ => break,
                }
            }
        }
        SubjectsCommand::Show { store, subject } => {
            let shown = store.shown();
            let store = store.open_existing().await?;
            match store.subject(&subject).await? {
                Some(info) => line(&info)?,
                None => {
                    return Err(CliError::NotFound(format!(
                        "no personal data was ever stored for subject '{subject}' in {shown}"
                    )));
                }
            }
        }
        SubjectsCommand::Export { store, subject } => {
            let store = store.open_existing().await?;
            let mut after = 0;
            loop {
                let page = store.subject_events(&subject, after, PAGE).await?;
                for e in &page {
                    line(e)?;
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = last.position,
                    _ => break,
                }
            }
        }
        SubjectsCommand::RotateKek {
            store,
            new_kek_file,
        } => {
            let new =
                Keyring::from_file(&new_kek_file).map_err(|e| CliError::Usage(e.to_string()))?;
            let id = new.id().to_owned();
            let store = store.open_existing().await?;
            let rewrapped = store.rotate_kek(new).await?;
            line(&serde_json::json!({"rewrapped": rewrapped, "kek_id": id}))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
