//! `annal serve`: the HTTP API (docs/api.md, docs/http.md) on a store, by default the embedded one in
//! `./annal-data/annal.db`, on 127.0.0.1:2113.
//!
//! Listening: `--listen` names a host and port; a name (`localhost`) is listened on at
//! every address it resolves to (`127.0.0.1` and `::1`), on one port. The first (IPv4)
//! address must be bound; another that cannot be (no IPv6 on the machine) is reported
//! and skipped. Gossip reports `--advertise`, else the host the client used.
//!
//! Cluster: on a store that keeps nodes (PostgreSQL) the server joins the store's
//! cluster (`annal::cluster`) under `--node-name`, at its advertised address; one node
//! holds the leader lease and runs the persistent subscriptions. Elsewhere (SQLite) it is
//! alone and its own leader from its start: each start writes its term's `$epoch`
//! before serving (after the digest check, which must see the store as it was).
//!
//! Shutdown: SIGTERM or Ctrl-C stops accepting connections, ends subscriptions, lets
//! in-flight requests (appends) finish, leaves the cluster (giving the leader lease up,
//! so another node takes it at once), then exits 0.

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
    /// A hot standby of the --store PostgreSQL server (postgres://…, hot_standby on)
    /// that serves reads of the log and of streams, catch-up subscriptions included;
    /// appends and everything else stay on the primary, and a read the standby is
    /// still behind for falls back to it (docs/cluster.md#reads-from-a-standby).
    #[arg(
        long,
        env = "ANNAL_READ_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    read_store: Option<String>,
    /// How long a read waits for the --read-store to reach the position it needs
    /// before the primary answers it (0: at once).
    #[arg(long, env = "ANNAL_READ_STORE_WAIT", default_value = "100ms", value_parser = parse_read_store_wait)]
    read_store_wait: Duration,
    /// A data directory: the embedded store in DIR/annal.db (instead of --store).
    #[arg(long, env = "ANNAL_DATA", conflicts_with = "store")]
    data: Option<std::path::PathBuf>,
    /// HOST:PORT to listen on; HOST an address or a name (localhost:2113), listened on at
    /// every address it resolves to (for localhost: 127.0.0.1 and ::1). Anything but
    /// loopback addresses needs API tokens (--tokens-file) or --allow-anonymous.
    #[arg(long, env = "ANNAL_LISTEN", default_value = "127.0.0.1:2113")]
    listen: String,
    /// HOST[:PORT] that KurrentDB clients are told to connect to (Gossip), like
    /// KurrentDB's --advertise-host-to-client-as; PORT defaults to the listen port.
    /// Without it each client is told the host it connected with.
    #[arg(long, env = "ANNAL_ADVERTISE", value_name = "HOST[:PORT]", value_parser = parse_advertise)]
    advertise: Option<annal_server::Advertise>,
    /// This node's name in the cluster of `annal serve` processes on one PostgreSQL
    /// store (GET /v1/cluster, Gossip); unique among the live nodes. Default: the
    /// advertised HOST:PORT.
    #[arg(long, env = "ANNAL_NODE_NAME")]
    node_name: Option<String>,
    /// How long a node's heartbeat and the leader lease last unless renewed (500ms,
    /// 5s, …). A dead leader's lease passes to another node within 1¼ of this.
    #[arg(long, env = "ANNAL_LEASE_TTL", default_value = "5s", value_parser = parse_lease_ttl)]
    lease_ttl: Duration,
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
    /// subscription or read it stopped reading); its connection is then closed. A gRPC
    /// read whose caller takes no message for as long ends alone (HTTP/2 flow control
    /// can starve one call on a healthy connection).
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
    if let Some(warning) = annal::privacy::Keyring::env_file_warning() {
        tracing::warn!(%warning, "key-encryption key file readable by others");
        eprintln!("annal: warning: {warning}");
    }
    let addresses = resolve(&args.listen).await?;
    let outside = addresses.iter().find(|a| !a.ip().is_loopback());
    let only_loopback = outside.is_none();
    if let (None, Some(outside), false) = (&tokens, outside, args.allow_anonymous) {
        return Err(CliError::Usage(format!(
            "refusing to listen on {outside} without authentication: anyone who can reach it could read and append. \
             Configure API tokens (--tokens-file), listen on 127.0.0.1, or pass --allow-anonymous if that is what you want"
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
    let read_store = match &args.read_store {
        Some(url) => Some(
            url.parse::<annal::url::StoreUrl>()
                .map_err(CliError::Open)?,
        ),
        None => None,
    };
    let store = match &read_store {
        None => args.store.open(args.limits.limits()).await?,
        Some(read) => {
            let url: annal::url::StoreUrl = args.store.store.parse().map_err(CliError::Open)?;
            annal::connect_with_options(
                &url,
                annal::ConnectOptions {
                    limits: args.limits.limits(),
                    read_store: Some(read.clone()),
                    read_store_wait: Some(args.read_store_wait),
                    without_kek: false,
                },
            )
            .await
            .map_err(CliError::Open)?
        }
    };
    let (listen, listeners) = bind(&addresses).await?;
    // Checked before anything is written: joining the cluster may write a `$epoch`.
    let checked = match &args.digest_dir {
        Some(dir) => {
            let dir = DigestDir::new(dir.clone());
            let last = digests::check_before_serving(store.as_ref(), &dir).await?;
            Some((dir, last))
        }
        None => None,
    };
    let address = match &args.advertise {
        Some(a) => format!("{}:{}", a.host, a.port.unwrap_or(listen.port())),
        None => listen.to_string(),
    };
    let me = annal::cluster::NodeRegistration {
        name: args.node_name.clone().unwrap_or_else(|| address.clone()),
        instance_id: annal::Uuid::now_v7(),
        address,
        started_at: annal::Timestamp::now(),
    };
    let cluster = annal::cluster::Cluster::join(
        store.clone(),
        me,
        annal::cluster::ClusterOptions {
            lease_ttl: args.lease_ttl,
        },
    )
    .await?;
    // The digest at start is taken once this node's `$epoch` (alone) is written.
    let digest_task = match checked {
        Some((dir, last)) => {
            let last = digests::write_if_moved(store.as_ref(), &dir, last).await?;
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = digests::spawn(store.clone(), dir, args.digest_every, last, stopped);
            Some((stop, task))
        }
        None => None,
    };
    let config = Config {
        cluster: Some(cluster.watch()),
        max_body_bytes: args.max_body_bytes,
        max_page: args.max_page,
        tokens,
        advertised: listen,
        advertise: args.advertise.clone(),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        keep_alive: Duration::from_secs(args.keep_alive),
        send_timeout: Duration::from_secs(args.send_timeout),
        read_ahead_cap: usize::try_from(args.read_ahead_mib.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        max_connections: args.max_connections,
        metrics_public: args.metrics_public,
        store: describe(&args.store.store),
        // annal serve has no aggregate's code: no state functions (docs/console.md).
        states: annal_server::StateViews::default(),
    };
    // The URL as shown: a password in it is hidden (StoreUrl's Display).
    let shown = args.store.shown();
    tracing::info!(listen = %listen, store = %shown, "annal is serving");
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("annal: serving {shown} on {scheme}://{}", listen);
    if let Some(read) = &read_store {
        tracing::info!(read_store = %read, "reads of the log and of streams go to the read store");
        eprintln!("annal: reading the log and streams from {read}");
    }
    for also in listeners.iter().skip(1).filter_map(|l| l.local_addr().ok()) {
        eprintln!("annal: also listening on {scheme}://{also}");
    }
    if config.tokens.is_none() {
        let who = if only_loopback {
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
            annal_server::serve_tls_on(listeners, store, config, tls, stop_signal()).await?;
        }
        None => annal_server::serve_on(listeners, store, config, stop_signal()).await?,
    }
    cluster.leave().await;
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

/// The store as the console's overview describes it: the backend, and for the embedded
/// store the database file with its write-ahead log and shared-memory index, and its
/// index file with its own.
fn describe(url: &str) -> annal_server::StoreDescription {
    match url.parse::<annal::url::StoreUrl>() {
        Ok(annal::url::StoreUrl::Sqlite(path)) => {
            let with = |suffix: &str| {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                std::path::PathBuf::from(p)
            };
            annal_server::StoreDescription {
                backend: "sqlite".into(),
                files: vec![
                    path.clone(),
                    with("-wal"),
                    with("-shm"),
                    with("-index"),
                    with("-index-wal"),
                    with("-index-shm"),
                ],
            }
        }
        Ok(annal::url::StoreUrl::Postgres(_)) => annal_server::StoreDescription {
            backend: "postgres".into(),
            files: Vec::new(),
        },
        _ => annal_server::StoreDescription::default(),
    }
}

/// The addresses `--listen` names: HOST:PORT, where HOST is an address or a name
/// (`localhost:2113`); a name's addresses without repeats, the first IPv4 one first;
/// for `localhost`, `127.0.0.1` and `::1` even where only one is in /etc/hosts.
async fn resolve(listen: &str) -> Result<Vec<SocketAddr>, CliError> {
    let unresolved = |why: String| {
        CliError::Usage(format!(
            "--listen {listen}: {why} (give HOST:PORT, for example 127.0.0.1:2113 or \
             localhost:2113)"
        ))
    };
    let mut found: Vec<SocketAddr> = Vec::new();
    for a in tokio::net::lookup_host(listen)
        .await
        .map_err(|e| unresolved(e.to_string()))?
    {
        if !found.contains(&a) {
            found.push(a);
        }
    }
    // `localhost` is both loopback addresses (RFC 6761) whatever /etc/hosts says:
    // clients that resolve it themselves (gRPC's resolvers among them) try `::1` first.
    if let Some((host, port)) = listen.rsplit_once(':')
        && is_localhost(host)
        && let Ok(port) = port.parse::<u16>()
    {
        for ip in [
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            let a = SocketAddr::new(ip, port);
            if !found.contains(&a) {
                found.push(a);
            }
        }
    }
    if let Some(v4) = found.iter().position(SocketAddr::is_ipv4) {
        let first = found.remove(v4);
        found.insert(0, first);
    }
    if found.is_empty() {
        return Err(unresolved("the name has no address".into()));
    }
    Ok(found)
}

/// Whether `host` is `localhost` or a name under it (RFC 6761: always loopback).
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Binds the first of `addresses` (which must succeed) and then the others on the same
/// port (so `localhost:0` is one port); one of those that cannot be bound (no IPv6 on
/// the machine, say) is reported and left out. The first listener's address, and all
/// the listeners.
async fn bind(
    addresses: &[SocketAddr],
) -> Result<(SocketAddr, Vec<tokio::net::TcpListener>), CliError> {
    let Some((first, others)) = addresses.split_first() else {
        return Err(CliError::Usage("--listen names no address".into()));
    };
    let cannot =
        |a: SocketAddr, e: std::io::Error| CliError::Usage(format!("cannot listen on {a}: {e}"));
    let listener = tokio::net::TcpListener::bind(first)
        .await
        .map_err(|e| cannot(*first, e))?;
    let listen = listener.local_addr().map_err(|e| cannot(*first, e))?;
    let mut listeners = vec![listener];
    for other in others {
        let at = SocketAddr::new(other.ip(), listen.port());
        match tokio::net::TcpListener::bind(at).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                tracing::warn!(address = %at, error = %e, "cannot listen on this address too; going on without it");
                eprintln!("annal: warning: cannot also listen on {at}: {e}; going on without it");
            }
        }
    }
    Ok((listen, listeners))
}

/// `--advertise HOST[:PORT]`: a host name or address, an IPv6 one bare or in brackets,
/// and an optional port.
fn parse_advertise(text: &str) -> Result<annal_server::Advertise, String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1..65535)")),
        Ok(n) => Ok(Some(n)),
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: an unclosed ["))?;
        let port = match after {
            "" => None,
            _ => port(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("{text:?}: expected :PORT after ]"))?,
            )?,
        };
        (format!("[{inside}]"), port)
    } else if text.matches(':').count() > 1 {
        (format!("[{text}]"), None)
    } else {
        match text.split_once(':') {
            Some((host, p)) => (host.to_owned(), port(p)?),
            None => (text.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(char::is_whitespace) {
        return Err(format!("{text:?}: expected HOST or HOST:PORT"));
    }
    Ok(annal_server::Advertise { host, port })
}

/// A `--lease-ttl`: 100ms to an hour.
fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl =
        humantime::parse_duration(text).map_err(|e| format!("{e} (for example 500ms, 5s)"))?;
    if ttl < Duration::from_millis(100) || ttl > annal::lease::MAX_LEASE_TTL {
        return Err("between 100ms and 1h".into());
    }
    Ok(ttl)
}

/// A `--read-store-wait`: 0 to 10s.
fn parse_read_store_wait(text: &str) -> Result<Duration, String> {
    let wait = if text.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| format!("{e} (for example 100ms, 1s)"))?
    };
    if wait > Duration::from_secs(10) {
        return Err("at most 10s".into());
    }
    Ok(wait)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn advertised(text: &str) -> (String, Option<u16>) {
        let a = parse_advertise(text).expect("valid");
        (a.host, a.port)
    }

    #[test]
    fn advertise_takes_a_host_with_or_without_a_port() {
        assert_eq!(advertised("db.example"), ("db.example".into(), None));
        assert_eq!(
            advertised("localhost:2114"),
            ("localhost".into(), Some(2114))
        );
        assert_eq!(advertised("10.0.0.5:443"), ("10.0.0.5".into(), Some(443)));
    }

    #[test]
    fn advertise_puts_an_ipv6_address_in_brackets() {
        assert_eq!(advertised("::1"), ("[::1]".into(), None));
        assert_eq!(advertised("[::1]"), ("[::1]".into(), None));
        assert_eq!(
            advertised("[fd00::2]:2113"),
            ("[fd00::2]".into(), Some(2113))
        );
    }

    #[test]
    fn advertise_refuses_an_empty_host_or_a_bad_port() {
        for bad in [
            "",
            ":2113",
            "host:",
            "host:0",
            "host:70000",
            "[::1",
            "[::1]2113",
            "a b",
        ] {
            assert!(parse_advertise(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn localhost_is_listened_on_at_both_loopback_addresses_ipv4_first() {
        let found = resolve("localhost:2113").await.expect("resolves");
        assert_eq!(
            found.first(),
            Some(&SocketAddr::from(([127, 0, 0, 1], 2113)))
        );
        assert!(found.contains(&SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 2113))));
        assert!(is_localhost("LocalHost.") && is_localhost("db.localhost"));
        assert!(!is_localhost("localhost.example"));
    }

    #[tokio::test]
    async fn an_address_is_listened_on_alone() {
        assert_eq!(
            resolve("127.0.0.1:2113").await.expect("resolves"),
            [SocketAddr::from(([127, 0, 0, 1], 2113))]
        );
    }
}
