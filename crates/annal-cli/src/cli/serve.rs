//! `annal serve`: the HTTP API (docs/api.md, docs/http.md) on a store, by default the embedded one in
//! `./annal-data/annal.db`, on 127.0.0.1:2113.
//!
//! Shutdown: SIGTERM or Ctrl-C stops accepting connections, ends subscriptions, lets
//! in-flight requests (appends) finish, then exits 0.

use super::digests::{self, DigestDir};
use super::{CliError, LimitArgs, StoreUrlArg};
use annal_server::Config;
use annal_server::Tokens;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Every flag can also come from its ANNAL_* environment variable or from a TOML
/// config file (--config FILE or ANNAL_CONFIG) whose keys are the flags' names
/// (listen = "127.0.0.1:2113", max_page = 5000, allow_anonymous = true, ...);
/// a flag beats its variable, which beats the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (keys: the flags below, with underscores).
    #[arg(long, env = "ANNAL_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    store: StoreUrlArg,
    #[command(flatten)]
    limits: LimitArgs,
    /// A data directory: the embedded store in DIR/annal.db (instead of --store).
    #[arg(long, env = "ANNAL_DATA", conflicts_with = "store")]
    data: Option<std::path::PathBuf>,
    /// HOST:PORT to listen on; HOST an address or a name (localhost:2113). Anything but
    /// a loopback address needs API tokens (--tokens-file) or --allow-anonymous.
    #[arg(long, env = "ANNAL_LISTEN", default_value = "127.0.0.1:2113")]
    listen: String,
    /// Serve without authentication on a non-loopback address (anyone who can reach
    /// the port can read and append).
    #[arg(long, env = "ANNAL_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// API tokens, a JSON file written by `annal token new`: {"tokens": [{"name",
    /// "secret_hash" (or "token", the secret in plain text), "role": "read"|"write"|"admin",
    /// "aggregate_types": [..]?, "may_act_for": [..]?}]}. Turns auth on. (Or the same JSON
    /// in ANNAL_TOKENS.)
    #[arg(long, env = "ANNAL_TOKENS_FILE")]
    tokens_file: Option<std::path::PathBuf>,
    /// Serve /metrics to anyone (with auth on it otherwise needs a token that sees
    /// every aggregate type: the metrics show the global head).
    #[arg(long, env = "ANNAL_METRICS_PUBLIC")]
    metrics_public: bool,
    /// HTTPS: the certificate chain (PEM). Needs --tls-key.
    #[arg(long, env = "ANNAL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: the private key (PEM). Needs --tls-cert.
    #[arg(long, env = "ANNAL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, env = "ANNAL_MAX_BODY_BYTES", default_value_t = Config::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Largest page a read may ask for with `limit` (400 beyond).
    #[arg(long, env = "ANNAL_MAX_PAGE", default_value_t = Config::default().max_page)]
    max_page: usize,
    /// Most connections served at once; beyond them a few more answer /health/* only,
    /// and the rest are closed. Default: from the open-file limit (ulimit -n).
    #[arg(long, env = "ANNAL_MAX_CONNECTIONS", default_value_t = annal_server::default_max_connections())]
    max_connections: usize,
    /// Seconds a client may take to send a request's head, its first byte, or (HTTP/1.1)
    /// its next request on a kept-alive connection.
    #[arg(long, env = "ANNAL_HEADER_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: u64,
    /// Seconds an HTTP request body may pause between two chunks.
    #[arg(long, env = "ANNAL_BODY_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout: u64,
    /// Seconds between HTTP/2 keep-alive pings on an idle connection; one unanswered
    /// for as long closes it.
    #[arg(long, env = "ANNAL_KEEP_ALIVE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    keep_alive: u64,
    /// Seconds a client may take no bytes while the server has some for it (a
    /// subscription or read it stopped reading); its connection is then closed.
    #[arg(long, env = "ANNAL_SEND_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout: u64,
    /// MiB of read-ahead (pages read for subscriptions and reads, not yet sent) held for
    /// all clients together; at it, each client is fed one event at a time.
    #[arg(long, env = "ANNAL_READ_AHEAD_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    read_ahead_mib: u64,
    /// A folder for digests (docs/chain.md#digests). Before serving, the newest digest
    /// in it is checked: a store that no longer holds its prefix (its tail cut off, its
    /// history rewritten) is refused. A digest is then written at start, every
    /// --digest-every and at shutdown, whenever the head has moved.
    #[arg(long, env = "ANNAL_DIGEST_DIR")]
    digest_dir: Option<std::path::PathBuf>,
    /// How often to write a digest into --digest-dir: 1h, 15m, 90s, ...
    #[arg(long, env = "ANNAL_DIGEST_EVERY", default_value = "1h", value_parser = digests::parse_every)]
    digest_every: Duration,
}

pub async fn run(mut args: ServeArgs) -> Result<ExitCode, CliError> {
    let tokens = match (&args.tokens_file, std::env::var("ANNAL_TOKENS")) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            Some(
                Tokens::parse(&text)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?,
            )
        }
        (None, Ok(json)) => {
            Some(Tokens::parse(&json).map_err(|e| CliError::Usage(format!("ANNAL_TOKENS: {e}")))?)
        }
        (None, Err(_)) => None,
    };
    if let Some(plain) = tokens
        .as_ref()
        .map(Tokens::plain_text)
        .filter(|p| !p.is_empty())
    {
        tracing::warn!(tokens = ?plain, "tokens file holds secrets in plain text");
        eprintln!(
            "annal: warning: the tokens file holds the secrets of {} in plain text; \
             `annal token new` writes salted hashes instead (docs/http.md#auth)",
            plain.join(", ")
        );
    }
    let listen = resolve(&args.listen).await?;
    if tokens.is_none() && !listen.ip().is_loopback() && !args.allow_anonymous {
        return Err(CliError::Usage(format!(
            "refusing to listen on {} without authentication: anyone who can reach it could read and append. \
             Configure API tokens (--tokens-file), listen on 127.0.0.1, or pass --allow-anonymous if that is what you want",
            listen
        )));
    }
    if let Some(dir) = &args.data {
        args.store.store = format!("sqlite:{}", dir.join("annal.db").display());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            annal_server::server_config(&annal_server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(|e| CliError::Usage(format!("TLS: {e}")))?,
        ),
        _ => None,
    };
    let store = args.store.open(args.limits.limits()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", listen)))?;
    let digest_task = match &args.digest_dir {
        Some(dir) => {
            let dir = DigestDir::new(dir.clone());
            let last = digests::check_before_serving(store.as_ref(), &dir).await?;
            let last = digests::write_if_moved(store.as_ref(), &dir, last).await?;
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = digests::spawn(store.clone(), dir, args.digest_every, last, stopped);
            Some((stop, task))
        }
        None => None,
    };
    let config = Config {
        max_body_bytes: args.max_body_bytes,
        max_page: args.max_page,
        tokens,
        advertised: listen,
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        keep_alive: Duration::from_secs(args.keep_alive),
        send_timeout: Duration::from_secs(args.send_timeout),
        read_ahead_cap: usize::try_from(args.read_ahead_mib.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        max_connections: args.max_connections,
        metrics_public: args.metrics_public,
    };
    // The URL as shown: a password in it is hidden (StoreUrl's Display).
    let shown = args.store.shown();
    tracing::info!(listen = %listen, store = %shown, "annal is serving");
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("annal: serving {shown} on {scheme}://{}", listen);
    if config.tokens.is_none() {
        let who = if listen.ip().is_loopback() {
            "any program on this machine"
        } else {
            "anyone who can reach this address"
        };
        eprintln!(
            "annal: anonymous access is on: {who} can read and append (--tokens-file turns \
             auth on; docs/http.md#auth)"
        );
    }
    if listen.port() == 2113 {
        eprintln!(
            "annal: 2113 is also KurrentDB's port, on purpose: its clients work unchanged \
             here, and any program expecting a KurrentDB on this machine will write to annal"
        );
    }
    match tls {
        Some(tls) => {
            annal_server::serve_tls(listener, store, config, tls, stop_signal()).await?;
        }
        None => annal_server::serve(listener, store, config, stop_signal()).await?,
    }
    if let Some((stop, task)) = digest_task {
        let _ = stop.send(());
        match task.await {
            Ok(written) => written?,
            Err(e) => return Err(CliError::Failed(format!("the digest schedule failed: {e}"))),
        }
    }
    tracing::info!("annal stopped");
    Ok(ExitCode::SUCCESS)
}

/// The address `--listen` names: HOST:PORT, where HOST is an address or a name
/// (`localhost:2113`); of a name's addresses, the first IPv4 one (else the first).
async fn resolve(listen: &str) -> Result<SocketAddr, CliError> {
    let unresolved = |why: String| {
        CliError::Usage(format!(
            "--listen {listen}: {why} (give HOST:PORT, for example 127.0.0.1:2113 or \
             localhost:2113)"
        ))
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| unresolved("the name has no address".into()))
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
