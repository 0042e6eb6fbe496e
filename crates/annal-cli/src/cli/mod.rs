//! Command-line parsing and the error type every subcommand reports through.
//!
//! Exit codes: 0 success; 1 the store refused or failed (a conflict, an I/O error, a
//! broken chain); 2 bad usage or bad input; 3 nothing there (no store at that path, an
//! aggregate without events, a read that matched nothing), said on stderr with the
//! store's name. Read-only commands open a store with [`StoreArgs::open_existing`], which
//! never creates one.

mod append;
mod audit;
mod backup;
mod chain_check;
pub mod config;
mod copy;
mod digests;
mod progress;
mod projections;
mod read;
mod serve;
mod subjects;
mod table;
mod token;
mod verify;

use annal::{Limits, OpenError, StoreUrl, url::DEFAULT_STORE};
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;

/// annal: an event store that keeps every state change, in order, tamper-evident.
#[derive(Debug, Parser)]
#[command(name = "annal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Logs as JSON lines on stderr (level: ANNAL_LOG, default warn).
    #[arg(long, global = true, env = "ANNAL_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (docs/http.md) on a store: the embedded one by default.
    Serve(Box<serve::ServeArgs>),
    /// Append events: reads append requests or transactions (the JSON of docs/http.md), one per
    /// line, from stdin; prints each result as one JSON line as soon as it is durable. A
    /// request without expected_version appends at any version ("any").
    Append(append::AppendArgs),
    /// Read events as NDJSON: the whole log (filtered) or one aggregate.
    Read(Box<read::ReadArgs>),
    /// Check the hash chain, whole or by range, or that the log still holds a digest's
    /// prefix (--expect, --digest); exits 1 if it does not.
    Verify(verify::VerifyArgs),
    /// Print the log's digest (head position, head hash, times) as JSON: keep it outside
    /// the store, and `annal verify --digest FILE` later proves nothing before it changed
    /// and no tail was cut off.
    Digest(verify::DigestArgs),
    /// Copy a live embedded store into a new file, consistently and whole (no WAL to
    /// carry), then verify the copy's hash chain.
    Backup(backup::BackupArgs),
    /// An aggregate's history: who changed it, when, how, and which event corrected which.
    Audit(audit::AuditArgs),
    /// Every event one correlation_id ties together, across aggregates.
    Correlated(audit::CorrelatedArgs),
    /// Copy a whole store's log into an empty store (any backend to any backend),
    /// keeping event_ids, positions, versions, times and hashes; verifies the copy.
    Copy(copy::CopyArgs),
    /// API tokens for `annal serve --tokens-file`: `annal token new NAME --role ROLE`.
    Token(token::TokenArgs),
    /// Forget a data subject (docs/privacy.md): destroy its key, so its events' personal
    /// parts read as {"$erased":true}; records a $subjectForgotten event with the reason
    /// and deletes the snapshots holding its data. Admin.
    Forget(subjects::ForgetArgs),
    /// Personal data's subjects: list (key status), show, export (decrypted, GDPR Art.
    /// 15), rotate-kek (rewrap every data key with a new key-encryption key).
    Subjects(subjects::SubjectsArgs),
    /// List projections and named subscriptions (every checkpoint) with status, position,
    /// lag behind the head and errors.
    Projections(projections::ProjectionsArgs),
}

/// Where a command finds its store: a store URL, or a running `annal serve`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub(crate) url: StoreUrlArg,
    /// A running `annal serve` to use instead of a store, e.g. http://127.0.0.1:2113.
    #[arg(long, env = "ANNAL_SERVER")]
    pub(crate) server: Option<String>,
    /// The API token to send to --server.
    #[arg(long, env = "ANNAL_TOKEN", requires = "server", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// For an https --server with a private CA: its certificate (PEM).
    #[arg(long, env = "ANNAL_CA_CERT", requires = "server")]
    pub(crate) ca_cert: Option<std::path::PathBuf>,
}

/// The store URL alone (what `annal serve` serves; it cannot serve another server).
#[derive(Debug, Args)]
pub struct StoreUrlArg {
    /// The store: sqlite:PATH (the embedded store) or postgres://USER@HOST/DB?schema=NAME
    /// (see docs/postgres.md for the parameters).
    #[arg(long, env = "ANNAL_STORE", default_value = DEFAULT_STORE, hide_env_values = true)]
    pub(crate) store: String,
}

impl StoreUrlArg {
    /// The URL as named to people, any password hidden (a URL that does not parse is
    /// not shown at all: it may hold one).
    pub(crate) fn shown(&self) -> String {
        self.store
            .parse::<StoreUrl>()
            .map_or_else(|_| "the store".to_owned(), |u| u.to_string())
    }

    /// Opens the store for reading: an embedded store that does not exist yet is
    /// [`CliError::NotFound`], and nothing is created (no file, no folder).
    pub(crate) async fn open_existing(&self) -> Result<Arc<dyn annal::Store>, CliError> {
        self.must_exist().await?;
        self.open(Limits::default()).await
    }

    /// [`CliError::NotFound`] for a store that does not exist yet: an embedded store's
    /// file, or a PostgreSQL schema without a store (nothing is created either way).
    async fn must_exist(&self) -> Result<(), CliError> {
        match self.store.parse::<StoreUrl>() {
            Ok(StoreUrl::Sqlite(path)) if !path.exists() => Err(CliError::NotFound(format!(
                "no store at {}: nothing has been written there yet (`annal append` or \
                 `annal serve` creates it; --store or ANNAL_STORE names another)",
                path.display()
            ))),
            Ok(StoreUrl::Postgres(url)) => {
                let config = annal::postgres::PgConfig::from_url(url.expose())
                    .map_err(|e| CliError::Store(annal::Error::invalid("store", e.to_string())))?;
                let there = annal::postgres::PgStore::exists(&config)
                    .await
                    .map_err(|e| CliError::Store(annal::Error::storage(e.to_string())))?;
                if there {
                    Ok(())
                } else {
                    Err(CliError::NotFound(format!(
                        "no store in schema '{}' of {}: nothing has been written there yet \
                         (`annal append` or `annal serve` creates it; --store or ANNAL_STORE \
                         names another)",
                        config.schema,
                        self.shown()
                    )))
                }
            }
            _ => Ok(()),
        }
    }

    /// Opens (or creates) the store, enforcing `limits` on appends.
    pub(crate) async fn open(&self, limits: Limits) -> Result<Arc<dyn annal::Store>, CliError> {
        self.open_with_options(limits, false).await
    }

    /// [`Self::open`], without the key-encryption key when `without_kek`
    /// ([`annal::ConnectOptions::without_kek`]).
    async fn open_with_options(
        &self,
        limits: Limits,
        without_kek: bool,
    ) -> Result<Arc<dyn annal::Store>, CliError> {
        let url: StoreUrl = self.store.parse().map_err(CliError::Open)?;
        let options = annal::ConnectOptions {
            limits,
            without_kek,
            ..annal::ConnectOptions::default()
        };
        annal::connect_with_options(&url, options)
            .await
            .map_err(CliError::Open)
    }
}

/// The size limits on appends, for the commands that write.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest event accepted (data, metadata and personal part), in bytes.
    #[arg(long, env = "ANNAL_MAX_EVENT_BYTES", default_value_t = Limits::default().max_event_bytes)]
    max_event_bytes: usize,
    /// Most events accepted in one append or transaction.
    #[arg(long, env = "ANNAL_MAX_BATCH_EVENTS", default_value_t = Limits::default().max_batch_events)]
    max_batch_events: usize,
}

impl LimitArgs {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.max_event_bytes,
            max_batch_events: self.max_batch_events,
        }
    }
}

impl StoreArgs {
    /// The store as named to people: the server, or the store URL with any password
    /// hidden.
    pub(crate) fn shown(&self) -> String {
        if let Some(server) = &self.server {
            return server.clone();
        }
        self.url.shown()
    }

    /// Opens the store for reading: an embedded store that does not exist yet is
    /// [`CliError::NotFound`], and nothing is created (no file, no folder).
    async fn open_existing(&self) -> Result<Arc<dyn annal::Store>, CliError> {
        match self.server {
            None => self.url.open_existing().await,
            Some(_) => self.open(Limits::default()).await,
        }
    }

    /// [`Self::open_existing`] for work that opens no personal part (verifying the
    /// chain, a digest, the sealed export, forgetting a subject): a store that holds
    /// personal data opens without its KEK, so an auditor can verify without the key
    /// that decrypts it, and a subject can be forgotten even once the KEK is lost (one
    /// that is given is still checked).
    async fn open_without_kek(&self) -> Result<Arc<dyn annal::Store>, CliError> {
        match self.server {
            None => {
                self.url.must_exist().await?;
                self.url.open_with_options(Limits::default(), true).await
            }
            Some(_) => self.open(Limits::default()).await,
        }
    }

    /// [`Self::open_without_kek`] for `annal read --sealed`, which reads the store as
    /// stored: a store file or database only, since a server opens personal parts for
    /// its readers.
    async fn open_sealed(&self) -> Result<Arc<dyn annal::Store>, CliError> {
        if self.server.is_some() {
            return Err(CliError::Usage(
                "--sealed reads a store as stored (--store), not a server: a server's reads \
                 show each event's `sealed` part already, beside the opened one"
                    .to_owned(),
            ));
        }
        self.open_without_kek().await
    }

    /// Opens (or creates) the store, enforcing `limits` on appends.
    async fn open(&self, limits: Limits) -> Result<Arc<dyn annal::Store>, CliError> {
        if let Some(server) = &self.server {
            if !server.contains("://") {
                return Err(CliError::Usage(format!(
                    "--server needs a URL with its scheme: http://{server} (or https://)"
                )));
            }
            let mut b = annal::client::HttpStore::builder(server).limits(limits);
            if let Some(t) = &self.token {
                b = b.token(t.clone());
            }
            if let Some(ca) = &self.ca_cert {
                b = b.ca_cert(ca.clone());
            }
            return Ok(Arc::new(b.build()?));
        }
        self.url.open(limits).await
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The store could not be named or opened.
    #[error("{0}")]
    Open(OpenError),
    /// The store refused or failed an operation.
    #[error("{0}")]
    Store(#[from] annal::Error),
    /// A line of input is not a valid request.
    #[error("line {line}: {reason}")]
    Input {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A flag's value is invalid.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The command ran and found a problem it already reported.
    #[error("{0}")]
    Failed(String),
    /// What was asked for is not there (exit code 3).
    #[error("{0}")]
    NotFound(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Input { .. } | CliError::Usage(_) => ExitCode::from(2),
            CliError::Store(e) if e.is_bad_input() => ExitCode::from(2),
            CliError::NotFound(_) => ExitCode::from(3),
            CliError::Store(e) if e.kind() == annal::ErrorKind::NotFound => ExitCode::from(3),
            _ => ExitCode::from(1),
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(a) => serve::run(*a).await,
        Command::Append(a) => append::run(a).await,
        Command::Read(a) => read::run(*a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Digest(a) => verify::digest(a).await,
        Command::Backup(a) => backup::run(a).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Correlated(a) => audit::run_correlated(a).await,
        Command::Copy(a) => copy::run(a).await,
        Command::Projections(a) => projections::run(a).await,
        Command::Token(a) => token::run(a),
        Command::Forget(a) => subjects::forget(a).await,
        Command::Subjects(a) => subjects::run(a).await,
    }
}

/// Splits repeated and comma-separated flag values into one list.
fn list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}
