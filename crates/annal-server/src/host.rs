//! The host: one listener for both protocols, plain or TLS.
//!
//! [`router`] sends each request by its content type: `application/grpc…` to the
//! KurrentDB gRPC endpoint (annal-grpc, with the API tokens as its credential check),
//! everything else to the HTTP API. [`serve`] and [`serve_tls`] are one accept loop.
//!
//! Invariants: every accepted connection is a [`QuickAck`] (no Nagle/delayed-ACK
//! stalls); a failing `accept` (e.g. out of file descriptors) pauses the loop instead of
//! spinning; a TLS client that does not finish its handshake within [`HANDSHAKE`] is
//! dropped. When `stop` completes the listener closes at once, subscriptions end, and
//! open connections get up to [`DRAIN`] to finish before the call returns anyway (a
//! client holding a call open cannot hold the process).

use crate::net::QuickAck;
use crate::{Config, auth, http_router, prometheus};
use annal_core::Store;
use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// How long a TLS handshake may take.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
pub const DRAIN: Duration = Duration::from_secs(30);
/// How long the loop pauses after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// The router of every route, on `store`: the HTTP API, and the KurrentDB gRPC
/// protocol for requests whose content type is `application/grpc`. `shutdown` turning
/// true ends subscriptions.
pub fn router(store: Arc<dyn Store>, config: Config, shutdown: watch::Receiver<bool>) -> Router {
    prometheus();
    let grpc = annal_grpc::router(
        store.clone(),
        annal_grpc::Options {
            advertised: config.advertised,
            max_message_bytes: config.max_body_bytes,
            credentials: auth::grpc_credentials(config.tokens.clone()),
        },
        shutdown.clone(),
    );
    let http = http_router(store, config, shutdown);
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
    run(listener, store, config, None, stop).await
}

/// Serves both protocols over TLS on `listener` until `stop` completes.
pub async fn serve_tls(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    tls: rustls::ServerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    run(listener, store, config, Some(acceptor), stop).await
}

/// The accept loop, for plain connections (`tls` is `None`) or TLS ones.
async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    mut config: Config,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    if let Ok(addr) = listener.local_addr() {
        config.advertised = addr;
    }
    let app = router(store, config, rx);
    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let tcp = QuickAck::new(tcp);
        let service = TowerToHyperService::new(app.clone());
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tx.send(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}
