//! annal-server: the [`Store`] trait over HTTP/JSON (API.md), with Server-Sent Events,
//! RFC 9457 problem documents, health, Prometheus metrics, body and page limits, and
//! graceful shutdown. It knows no SQL: any backend serves.
//!
//! Invariants: every error is a problem document with a stable `type` and writes
//! nothing; bad input is a 4xx, never a 5xx; responses and subscriptions stream from the
//! store at the client's pace (bounded memory per client); on shutdown the server stops
//! accepting, ends subscriptions, and lets in-flight requests (appends) finish.

pub mod auth;
pub mod net;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod stream;
pub mod tls;

use annal_core::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Server limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body, in bytes (413 `too_large` beyond). Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest `limit` of a page read (400 beyond). Default 10,000.
    pub max_page: usize,
    /// API tokens; `None` turns auth off.
    pub tokens: Option<auth::Tokens>,
    /// The address the KurrentDB gRPC endpoint advertises (Gossip). [`serve`] sets it
    /// from its listener.
    pub advertised: std::net::SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_page: 10_000,
            tokens: None,
            advertised: std::net::SocketAddr::from(([127, 0, 0, 1], 2113)),
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The store served.
    pub store: Arc<dyn Store>,
    /// The limits.
    pub config: Arc<Config>,
    /// Turns true when the server is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide metrics recorder (installed on first use).
fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// The metrics in Prometheus' text format.
pub fn metrics_text() -> String {
    prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// The router of every route, on `store`: the HTTP API, and the KurrentDB gRPC
/// protocol for requests whose content type is `application/grpc`. `shutdown` turning
/// true ends subscriptions.
pub fn router(store: Arc<dyn Store>, config: Config, shutdown: watch::Receiver<bool>) -> Router {
    prometheus();
    let tokens = Arc::new(config.tokens.clone());
    let grpc_tokens = tokens.clone();
    let grpc = annal_grpc::router(
        store.clone(),
        annal_grpc::Options {
            advertised: config.advertised,
            max_message_bytes: config.max_body_bytes,
        },
        shutdown.clone(),
    )
    .layer(middleware::from_fn(move |req, next| {
        auth::authenticate_grpc(grpc_tokens.clone(), req, next)
    }))
    .layer(middleware::from_fn(count_grpc));
    let http = http_router(store, config, shutdown, tokens);
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let target = if annal_grpc::is_grpc(req.headers()) {
            grpc.clone()
        } else {
            http.clone()
        };
        target.oneshot(req)
    }))
}

fn http_router(
    store: Arc<dyn Store>,
    config: Config,
    shutdown: watch::Receiver<bool>,
    tokens: Arc<Option<auth::Tokens>>,
) -> Router {
    let limit = config.max_body_bytes;
    let state = AppState {
        store,
        config: Arc::new(config),
        shutdown,
    };
    Router::new()
        .route(
            "/v1/streams/{aggregate_id}",
            post(routes::append).get(routes::read_stream),
        )
        .route(
            "/v1/streams/{aggregate_id}/snapshots/latest",
            get(routes::latest_snapshot),
        )
        .route(
            "/v1/streams/{aggregate_id}/snapshots/{version}",
            put(routes::put_snapshot),
        )
        .route("/v1/events", get(routes::read_events))
        .route("/v1/events/{event_id}", get(routes::read_event))
        .route("/v1/head", get(routes::head))
        .route("/v1/transactions", post(routes::transact))
        .route("/v1/checkpoints", get(routes::list_checkpoints))
        .route(
            "/v1/checkpoints/{name}",
            get(routes::get_checkpoint).put(routes::put_checkpoint),
        )
        .route("/v1/groups/{group}/leases", get(routes::list_leases))
        .route(
            "/v1/groups/{group}/leases/{partition}/acquire",
            post(routes::acquire_lease),
        )
        .route(
            "/v1/groups/{group}/leases/{partition}/renew",
            post(routes::renew_lease),
        )
        .route(
            "/v1/groups/{group}/leases/{partition}/release",
            post(routes::release_lease),
        )
        .route(
            "/v1/groups/{group}/members/{member}",
            put(routes::heartbeat),
        )
        .route("/v1/subscribe", get(routes::subscribe))
        .route("/v1/verify", get(routes::verify))
        .route("/health/live", get(routes::live))
        .route("/health/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::fallback)
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(middleware::from_fn(count_requests))
        .layer(middleware::from_fn(move |req, next| {
            auth::authenticate(tokens.clone(), req, next)
        }))
        .with_state(state)
}

/// Counts requests by route and status, and times them.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("annal_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("annal_http_request_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// The gRPC methods annal serves, as `Service/Method` metric labels; anything else is
/// counted as `other` (labels must not grow with what clients send).
const GRPC_METHODS: [&str; 16] = [
    "Streams/Read",
    "Streams/Append",
    "Streams/BatchAppend",
    "Streams/Delete",
    "Streams/Tombstone",
    "ServerFeatures/GetSupportedMethods",
    "Gossip/Read",
    "PersistentSubscriptions/Create",
    "PersistentSubscriptions/Update",
    "PersistentSubscriptions/Delete",
    "PersistentSubscriptions/Read",
    "PersistentSubscriptions/GetInfo",
    "PersistentSubscriptions/ReplayParked",
    "PersistentSubscriptions/List",
    "PersistentSubscriptions/RestartSubsystem",
    "other",
];

/// Counts gRPC calls by method and answer, and times them to their first response
/// headers (for unary calls, their duration). `code` is the gRPC status of answers that
/// are a status only (refusals and errors before any message); `streamed` for answers
/// that began a body, whose status travels in trailers.
async fn count_grpc(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let method = path
        .rsplit_once('.')
        .map(|(_, tail)| tail)
        .and_then(|tail| GRPC_METHODS.iter().find(|m| **m == tail))
        .copied()
        .unwrap_or("other");
    let start = Instant::now();
    let res = next.run(req).await;
    let code = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "streamed".to_owned(), str::to_owned);
    metrics::counter!("annal_grpc_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("annal_grpc_request_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Serves `router` on `listener` until `stop` completes; then stops accepting, ends
/// subscriptions and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let mut config = config;
    if let Ok(addr) = listener.local_addr() {
        config.advertised = addr;
    }
    let app = router(store, config, rx);
    // Small gRPC and HTTP answers leave at once, and reads are acknowledged at once
    // (see `net`): otherwise Nagle and delayed ACKs cost ~40 ms per call.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(net::QuickAckListener(listener), app)
        .with_graceful_shutdown(async move {
            stop.await;
            let _ = tx.send(true);
            let _ = stopping.send(());
        })
        .into_future();
    // Graceful, but bounded: a client that keeps a call open (e.g. the request side of
    // a persistent subscription) cannot hold the process past the drain time.
    let drain = async {
        if stopped.await.is_ok() {
            tokio::time::sleep(tls::DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = server => served,
        () = drain => {
            tracing::warn!("connections still open after {:?}; exiting anyway", tls::DRAIN);
            Ok(())
        }
    }
}
