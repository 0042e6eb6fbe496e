//! The host: both protocols on the same listeners (one, or several on one port, e.g.
//! `127.0.0.1` and `::1` for `localhost`), plain or TLS.
//!
//! [`router`] sends each request by its content type: `application/grpc…` to the
//! KurrentDB gRPC endpoint (annal-grpc, with the API tokens as its credential check),
//! everything else to the HTTP API. [`serve`] and [`serve_tls`] (and their `_on` forms
//! for several listeners) are one accept loop over all the listeners.
//!
//! Invariants:
//! - every accepted connection is a [`QuickAck`] (no Nagle/delayed-ACK stalls);
//! - a failing `accept` (e.g. out of file descriptors) pauses the loop instead of
//!   spinning;
//! - no connection is held by a silent client: one that sends nothing within the
//!   header-read timeout (or does not finish its TLS handshake within [`HANDSHAKE`]) is
//!   dropped, HTTP/1.1 heads and idle keep-alive gaps have the same timeout, and HTTP/2
//!   connections whose keep-alive pings go unanswered are closed; a client that takes
//!   no bytes for the send timeout while the server has some for it is disconnected
//!   ([`SendTimeout`]);
//! - a request hyper cannot parse is answered with a problem document, not hyper's
//!   empty 400/414/431 ([`ParseErrorProblems`]);
//! - at most `max_connections` connections are served, across all the listeners;
//!   beyond them [`HEALTH_RESERVE`] more answer only `/health/*` (503 problem for anything else, and a 5 s first-byte
//!   timeout), so probes still get through a flood; past the reserve a new connection
//!   is closed at once. A connection's slot is freed when it ends;
//! - when `stop` completes the listeners close at once, subscriptions end, and open
//!   connections get up to [`DRAIN`] to finish before the call returns anyway (a client
//!   holding a call open cannot hold the process).

use crate::net::QuickAck;
use crate::parse_errors::ParseErrorProblems;
use crate::problem::Problem;
use crate::send_timeout::SendTimeout;
use crate::{Config, auth, http_router, prometheus};
use annal_core::Store;
use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Streams one HTTP/2 connection may have open at once (each subscription is one).
const MAX_STREAMS: u32 = 256;
/// How long a TLS handshake may take.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
pub const DRAIN: Duration = Duration::from_secs(30);
/// How long the loop pauses after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Connections beyond `max_connections` that still answer `/health/*`.
pub const HEALTH_RESERVE: usize = 8;
/// How long a reserve connection may wait for its first byte.
const RESERVE_FIRST_BYTE: Duration = Duration::from_secs(5);
/// File descriptors left to the store and the process (SQLite's reader pool keeps up
/// to three per connection, PostgreSQL one per pooled connection).
const OWN_FILES: u64 = 128;

/// The default connection cap: the process's open-file limit less what the store and
/// the process need and the health reserve, within 16..=10,000.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = limit.saturating_sub(OWN_FILES + HEALTH_RESERVE as u64);
    usize::try_from(room.clamp(16, 10_000)).unwrap_or(10_000)
}

/// The router of every route, on `store`: the HTTP API, and the KurrentDB gRPC
/// protocol for requests whose content type is `application/grpc`. `shutdown` turning
/// true ends subscriptions.
pub fn router(store: Arc<dyn Store>, config: Config, shutdown: watch::Receiver<bool>) -> Router {
    prometheus();
    // One set of persistent subscriptions: served over gRPC, shown over HTTP.
    let persistent = Arc::new(annal_grpc::Persistent::new(
        store.clone(),
        shutdown.clone(),
        config.cluster.clone(),
    ));
    let grpc = annal_grpc::router_with(
        store.clone(),
        annal_grpc::Options {
            advertised: config.advertised,
            advertise: config.advertise.clone(),
            max_message_bytes: config.max_body_bytes,
            credentials: auth::grpc_credentials(config.tokens.clone()),
            stalled_call: config.send_timeout,
            cluster: config.cluster.clone(),
        },
        shutdown.clone(),
        persistent.clone(),
    );
    let http = http_router(store, config, shutdown, persistent);
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let target = if annal_grpc::is_grpc(req.headers()) {
            grpc.clone()
        } else {
            http.clone()
        };
        target.oneshot(req)
    }))
}

/// Serves both protocols in plain text on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(vec![listener], store, config, None, stop).await
}

/// Serves both protocols in plain text on every one of `listeners` (one connection cap
/// for all) until `stop` completes. The first listener's address is the one Gossip
/// falls back to.
pub async fn serve_on(
    listeners: Vec<TcpListener>,
    store: Arc<dyn Store>,
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listeners, store, config, None, stop).await
}

/// Serves both protocols over TLS on `listener` until `stop` completes.
pub async fn serve_tls(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    tls: rustls::ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls_on(vec![listener], store, config, tls, stop).await
}

/// Serves both protocols over TLS on every one of `listeners`, as [`serve_on`].
pub async fn serve_tls_on(
    listeners: Vec<TcpListener>,
    store: Arc<dyn Store>,
    config: Config,
    tls: rustls::ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    run(listeners, store, config, Some(acceptor), stop).await
}

/// The next connection on any of `listeners` (none: never), those from `first` on asked
/// first (the loop turns `first` round so that no listener starves the others).
async fn accept_any(
    listeners: &[TcpListener],
    first: usize,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let (before, from) = listeners.split_at(first % listeners.len());
    // `accept` is cancel-safe: the listeners that lose the race lose no connection.
    let accepts = from.iter().chain(before).map(|l| Box::pin(l.accept()));
    futures_util::future::select_all(accepts).await.0
}

/// What a connection may use: the full router or, from the reserve, `/health/*` only.
struct Slot {
    app: Router,
    first_byte: Duration,
    _permit: OwnedSemaphorePermit,
}

/// Connection slots: the general ones and the health reserve.
struct Slots {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    app: Router,
    health_only: Router,
    first_byte: Duration,
}

impl Slots {
    fn new(app: Router, config: &Config) -> Self {
        let full = app.clone();
        let health_only = Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let full = full.clone();
            async move {
                if req.uri().path().starts_with("/health/") {
                    full.oneshot(req).await
                } else {
                    Ok(Problem::unavailable(
                        "the server is at its connection limit; try again shortly",
                    )
                    .into_response())
                }
            }
        }));
        Self {
            general: Arc::new(Semaphore::new(config.max_connections)),
            reserve: Arc::new(Semaphore::new(HEALTH_RESERVE)),
            app,
            health_only,
            first_byte: config.header_read_timeout,
        }
    }

    /// A slot for a new connection, or `None` when even the reserve is full.
    fn take(&self) -> Option<Slot> {
        let (permit, app, first_byte) = match self.general.clone().try_acquire_owned() {
            Ok(permit) => (permit, &self.app, self.first_byte),
            Err(_) => (
                self.reserve.clone().try_acquire_owned().ok()?,
                &self.health_only,
                self.first_byte.min(RESERVE_FIRST_BYTE),
            ),
        };
        Some(Slot {
            app: app.clone(),
            first_byte,
            _permit: permit,
        })
    }
}

/// The connection builder: HTTP/1.1 and HTTP/2, with the configured timeouts.
fn builder(config: &Config) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.keep_alive)
        .keep_alive_timeout(config.keep_alive)
        .max_concurrent_streams(MAX_STREAMS);
    builder
}

/// Serves one connection (plain or TLS) until it ends, watched by the graceful shutdown.
async fn serve_io<I>(
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: TowerToHyperService<Router>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ParseErrorProblems::new(io));
    let conn = builder.serve_connection_with_upgrades(io, service);
    watcher.watch(conn.into_owned()).await
}

/// The accept loop over all `listeners`, for plain connections (`tls` is `None`) or
/// TLS ones.
async fn run(
    listeners: Vec<TcpListener>,
    store: Arc<dyn Store>,
    mut config: Config,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    if let Some(Ok(addr)) = listeners.first().map(TcpListener::local_addr) {
        config.advertised = addr;
    }
    annal_core::budget::set_cap(config.read_ahead_cap);
    let builder = builder(&config);
    let slots = Slots::new(router(store, config.clone(), rx), &config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    let mut turn = 0usize;
    loop {
        turn = turn.wrapping_add(1);
        let (tcp, peer) = tokio::select! {
            accepted = accept_any(&listeners, turn) => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = slots.take() else {
            metrics::counter!("annal_connections_refused_total").increment(1);
            tracing::debug!(%peer, "at the connection limit and its reserve; closing");
            continue;
        };
        let tcp = QuickAck::new(tcp);
        let send_timeout = config.send_timeout;
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            // The slot (and its permit) lives as long as this task.
            let Slot {
                app,
                first_byte,
                _permit,
            } = slot;
            if !matches!(
                tokio::time::timeout(first_byte, tcp.first_byte()).await,
                Ok(Ok(()))
            ) {
                tracing::debug!(%peer, "no request within the header-read timeout; closing");
                return;
            }
            let tcp = SendTimeout::new(tcp, send_timeout);
            let service = TowerToHyperService::new(app);
            let ended = match tls {
                None => serve_io(&builder, watcher, tcp, service).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await
                {
                    Ok(Ok(stream)) => serve_io(&builder, watcher, stream, service).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listeners);
    let _ = tx.send(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}
