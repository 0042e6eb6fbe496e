//! annal-server: the [`Store`] trait over HTTP/JSON (docs/api.md, docs/http.md), with
//! Server-Sent Events, RFC 9457 problem documents, health, Prometheus metrics, body and
//! page limits, and graceful shutdown; and the host that serves it beside the KurrentDB
//! gRPC endpoint on one listener, plain or TLS (`host`). It knows no SQL: any backend
//! serves.
//!
//! Exported: [`router`], [`serve`] / [`serve_tls`] (and [`serve_on`] / [`serve_tls_on`]
//! for several listeners), [`Config`] with [`Tokens`], the TLS
//! set-up ([`server_config`]) and [`metrics_text`]; everything else is internal.
//!
//! Invariants: every error is a problem document with a stable `type` and writes
//! nothing; bad input is a 4xx, never a 5xx; responses and subscriptions stream from the
//! store at the client's pace (bounded memory per client); on shutdown the server stops
//! accepting, ends subscriptions, and lets in-flight requests (appends) finish.

mod auth;
mod console;
mod head_history;
mod host;
mod net;
mod openapi;
mod parse_errors;
mod problem;
mod routes;
mod send_timeout;
mod stream;
mod tls;
mod tokens;

pub use annal_grpc::Advertise;
pub use auth::Role;
pub use host::{
    DRAIN, HANDSHAKE, HEALTH_RESERVE, default_max_connections, router, serve, serve_on, serve_tls,
    serve_tls_on,
};
pub use tls::{TlsError, TlsFiles, server_config};
pub use tokens::{Generated, Token, Tokens, TokensError};

use annal_core::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Server limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body, in bytes (413 `too_large` beyond). Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest `limit` of a page read (400 beyond). Default 10,000.
    pub max_page: usize,
    /// API tokens; `None` turns auth off.
    pub tokens: Option<tokens::Tokens>,
    /// The address listened on, which Gossip reports when neither `advertise` nor the
    /// caller's `:authority` names one. [`serve`] sets it from its (first) listener.
    pub advertised: std::net::SocketAddr,
    /// The host (and port) Gossip reports for this node whatever address the caller
    /// used (`annal serve --advertise`). `None`: the host the caller used.
    pub advertise: Option<Advertise>,
    /// How long a client may take to send a request's head; on HTTP/1.1 also how long a
    /// kept-alive connection may sit idle between requests, and on a new connection how
    /// long until its first byte. Default 30 s.
    pub header_read_timeout: Duration,
    /// How long an HTTP request body may pause between two chunks (the request then
    /// fails). Not applied to gRPC, whose request streams stay open by design. Default
    /// 30 s.
    pub body_read_timeout: Duration,
    /// HTTP/2 keep-alive: an idle connection is pinged this often and closed when a
    /// ping is not answered within the same time. Default 30 s.
    pub keep_alive: Duration,
    /// Most connections served at once. Beyond them a small reserve
    /// ([`HEALTH_RESERVE`]) still answers `/health/*`, with 503 for anything else; past
    /// the reserve, new connections are closed at once. Default: from the process's
    /// open-file limit ([`default_max_connections`]).
    pub max_connections: usize,
    /// How long a client may take no bytes while the server has some to send it (a
    /// subscription or large read it stopped reading); its connection is then closed.
    /// An idle connection (nothing to send) is not affected. A gRPC read or catch-up
    /// subscription whose caller takes no message for as long ends. Default 60 s.
    pub send_timeout: Duration,
    /// The most bytes of read-ahead pages (SSE, streamed pages, gRPC reads) held for all
    /// clients together; at it, each client's next page is one event. Default 256 MiB.
    /// It is process-wide: the last server started sets it.
    pub read_ahead_cap: usize,
    /// Whether `/metrics` answers without a token. Default false: with auth on it
    /// needs a token that sees every aggregate type (it shows the global head).
    pub metrics_public: bool,
    /// What `GET /v1/overview` (the console's overview) says about the store served.
    pub store: StoreDescription,
    /// The state functions `GET /v1/streams/{id}/state` offers (none by default).
    pub states: StateViews,
    /// The cluster as this node sees it (`annal_core::cluster::Cluster::watch`), for
    /// `GET /v1/cluster`, Gossip, and the persistent subscriptions that run on the leader
    /// only. `None` (the default): this node is alone, and leader.
    pub cluster: Option<watch::Receiver<annal_core::cluster::ClusterView>>,
}

/// The state functions a server offers, one per aggregate type: a [`Repository`]
/// registers its aggregate's (`StateViews::default().with(Arc::new(repository))`).
///
/// [`Repository`]: annal_core::Repository
#[derive(Clone, Default)]
pub struct StateViews(Vec<Arc<dyn annal_core::StateView>>);

impl StateViews {
    /// These views and `view` (replacing one for the same aggregate type).
    pub fn with(mut self, view: Arc<dyn annal_core::StateView>) -> Self {
        self.0
            .retain(|v| v.aggregate_type() != view.aggregate_type());
        self.0.push(view);
        self
    }

    /// The view of `aggregate_type`, if one is registered.
    pub fn of(&self, aggregate_type: &str) -> Option<&Arc<dyn annal_core::StateView>> {
        self.0.iter().find(|v| v.aggregate_type() == aggregate_type)
    }
}

impl std::fmt::Debug for StateViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|v| v.aggregate_type()))
            .finish()
    }
}

/// The store as the overview describes it: the server knows it only as a [`Store`], so
/// the host names its backend and the files that hold it.
#[derive(Debug, Clone, Default)]
pub struct StoreDescription {
    /// The backend's name (`sqlite`, `postgres`; empty: not told).
    pub backend: String,
    /// The files whose sizes add up to the store's (empty: the size is not known here,
    /// as for a database server).
    pub files: Vec<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_page: 10_000,
            tokens: None,
            advertised: std::net::SocketAddr::from(([127, 0, 0, 1], 2113)),
            advertise: None,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            max_connections: default_max_connections(),
            metrics_public: false,
            send_timeout: Duration::from_secs(60),
            read_ahead_cap: annal_core::budget::DEFAULT_CAP,
            store: StoreDescription::default(),
            states: StateViews::default(),
            cluster: None,
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
    /// The last chain check this server ran (`GET /v1/verify`), for the overview.
    pub last_verify: Arc<std::sync::Mutex<Option<annal_core::wire::LastVerify>>>,
    /// The head, sampled every few seconds, for the overview.
    pub head_history: Arc<head_history::HeadHistory>,
    /// The persistent subscriptions the gRPC endpoint serves, for the overview.
    pub persistent: Arc<annal_grpc::Persistent>,
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide metrics recorder (installed on first use).
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
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

/// The HTTP API's routes (the host puts gRPC beside them).
pub(crate) fn http_router(
    store: Arc<dyn Store>,
    config: Config,
    shutdown: watch::Receiver<bool>,
    persistent: Arc<annal_grpc::Persistent>,
) -> Router {
    let limit = config.max_body_bytes;
    let body_timeout = config.body_read_timeout;
    let tokens = Arc::new(config.tokens.clone());
    let public_metrics = config.metrics_public;
    let head_history = Arc::new(head_history::HeadHistory::default());
    head_history.start(store.clone(), shutdown.clone());
    let state = AppState {
        store,
        config: Arc::new(config),
        shutdown,
        last_verify: Arc::default(),
        head_history,
        persistent,
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
        .route(
            "/v1/streams/{aggregate_id}/state",
            get(routes::aggregate_state),
        )
        .route("/v1/events", get(routes::read_events))
        .route("/v1/events/counts", get(routes::count_events))
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
        .route("/v1/subjects", get(routes::list_subjects))
        .route("/v1/subjects/{subject}", get(routes::get_subject))
        .route("/v1/subjects/{subject}/events", get(routes::subject_events))
        .route(
            "/v1/subjects/{subject}/forget",
            post(routes::forget_subject),
        )
        .route("/v1/subscribe", get(routes::subscribe))
        .route("/v1/verify", get(routes::verify))
        .route("/v1/digest", get(routes::digest))
        .route("/v1/overview", get(routes::overview))
        .route(
            "/v1/persistent-subscriptions",
            get(routes::persistent_subscriptions),
        )
        .route("/v1/whoami", get(routes::whoami))
        .route("/v1/cluster", get(routes::cluster))
        .route("/", get(console::root))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{*file}", get(console::asset))
        .route("/health/live", get(routes::live))
        .route("/health/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .route_layer(middleware::from_fn(auth::authorize))
        .route_layer(middleware::from_fn(count_requests))
        .layer(middleware::from_fn(move |req, next| {
            auth::authenticate(tokens.clone(), public_metrics, req, next)
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
