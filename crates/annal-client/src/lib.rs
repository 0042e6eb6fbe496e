//! annal-client: [`HttpStore`], the [`Store`] trait against a remote annal server over
//! its HTTP API (docs/http.md), so a Rust program uses a remote annal like a local one.
//!
//! ```no_run
//! # async fn demo() -> annal_core::Result<()> {
//! use annal_client::HttpStore;
//! use annal_core::{AppendRequest, ExpectedVersion, NewEvent, Store};
//! let store = HttpStore::connect("http://127.0.0.1:2113")?;
//! let request = AppendRequest::new("Family", "family_123", ExpectedVersion::NoStream)
//!     .event(NewEvent::new("FamilyEnrolled", &serde_json::json!({"family_name": "Martinez"}))?);
//! let result = store.append(request).await?;
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - every answer is the one a local store gives: results parse straight from the
//!   response bytes into the core types (`data`, `metadata` and snapshot states stay
//!   byte for byte, never passing through `serde_json::Value`); problem documents become
//!   the exact [`Error`] variant with all its fields (`problem` module); anything the
//!   client cannot use, and every failure to reach the server, is [`Error::Storage`]
//!   holding a [`TransportError`] that names the server's URL;
//! - nothing waits without bound: every request has a timeout (`verify` its own, longer
//!   one), a subscription ends when the server sends nothing, not even a keep-alive, for
//!   a while, and [`Store::wait_for_head`] polls at most every 50 ms until its timeout;
//! - a request is sent a second time only when that cannot write twice: when the first
//!   attempt never reached the server, or the request is a read, a snapshot save, an
//!   unconditional checkpoint write, or appends whose events all carry an event_id
//!   without a checkpoint compare-and-set (the store answers such a replay from what it
//!   stored). [`Store::commit`] sends the prepared events with their event_ids, so its
//!   retries are always safe;
//! - reads larger than the server's page limit are fetched in pages (`page_size`); a
//!   server whose page limit (`--max-page`) is lower answers `invalid_request` on
//!   `limit`, and the page size is then halved, for this read and the ones after, and the
//!   page asked for again, so a read never fails for asking too much at once.
//!
//! Aggregate ids and checkpoint names travel in URL paths, which cannot carry `.` or
//! `..`: those answer [`Error::InvalidRequest`] rather than reaching another route.
//! Filters travel as the comma-separated lists of docs/http.md, so a filter value that is empty,
//! contains a comma or starts or ends with a space cannot be sent: such a read answers
//! [`Error::InvalidRequest`] instead of a different result.

mod paging;
mod problem;
mod request;
mod sse;
mod store;
mod subscribe;
mod transport;
mod urls;

pub use transport::TransportError;

use annal_core::wire::Health;
use annal_core::{Error, Limits, Result};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default time for one request and its answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for `GET /v1/verify`, which reads the whole log.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(600);
/// Default longest silence on a subscription (the server sends a keep-alive every 15 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most events asked for in one request (the server's default page limit).
pub const DEFAULT_PAGE_SIZE: usize = 10_000;
/// The first and the longest pause between two head polls in `wait_for_head`.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

/// Settings for an [`HttpStore`]; start with [`HttpStore::builder`].
#[derive(Clone)]
pub struct HttpStoreBuilder {
    base_url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    verify_timeout: Duration,
    idle_timeout: Duration,
    page_size: usize,
    limits: Limits,
    ca_cert: Option<std::path::PathBuf>,
}

impl fmt::Debug for HttpStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStoreBuilder")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("verify_timeout", &self.verify_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("page_size", &self.page_size)
            .field("limits", &self.limits)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl HttpStoreBuilder {
    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The most one request and its answer may take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most opening a connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most a `verify` may take (default 10 minutes: it reads the whole log).
    pub fn verify_timeout(mut self, timeout: Duration) -> Self {
        self.verify_timeout = timeout;
        self
    }

    /// The longest a subscription waits for bytes (events or keep-alives) before it
    /// ends with an error (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most events asked for in one request (default 10,000, the server's default
    /// page limit; against a server whose `--max-page` is lower, it shrinks by itself
    /// after the server's first refusal).
    pub fn page_size(mut self, events: usize) -> Self {
        self.page_size = events;
        self
    }

    /// For `https://` servers: also trust the CA certificate(s) in this PEM file (for a
    /// self-signed or private CA), besides the system's roots.
    pub fn ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// The limits [`Store::limits`] reports. The server enforces its own; these only
    /// matter to callers that prepare requests themselves before [`Store::commit`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The store. Does not contact the server (the first request does; see
    /// [`HttpStore::ready`]).
    pub fn build(self) -> Result<HttpStore> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            Error::invalid(
                "server_url",
                format!("'{}' is not a URL: {e}", self.base_url),
            )
        })?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(Error::invalid(
                "server_url",
                format!(
                    "'{}': the server URL starts with http:// or https://",
                    self.base_url
                ),
            ));
        }
        if base.cannot_be_a_base() || base.query().is_some() || base.fragment().is_some() {
            return Err(Error::invalid(
                "server_url",
                format!(
                    "'{}' must be a base URL such as http://127.0.0.1:2113, without query or fragment",
                    self.base_url
                ),
            ));
        }
        if self.page_size == 0 {
            return Err(Error::invalid("page_size", "must be 1 or more"));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::invalid("token", "must be visible ASCII (it goes in an HTTP header)")
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let base_text = base.as_str().trim_end_matches('/').to_owned();
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .default_headers(headers);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::invalid("ca_cert", format!("cannot read {}: {e}", path.display()))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::invalid(
                    "ca_cert",
                    format!("{} is not PEM certificates: {e}", path.display()),
                )
            })? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::from(TransportError::request(&base_text, e)))?;
        Ok(HttpStore {
            inner: Arc::new(Inner {
                http,
                base,
                base_text,
                timeout: self.timeout,
                verify_timeout: self.verify_timeout,
                idle_timeout: self.idle_timeout,
                page_size: self.page_size.into(),
                limits: self.limits,
            }),
        })
    }
}

/// A [`Store`] on a remote annal server. Cheap to clone: clones share one connection
/// pool.
#[derive(Clone)]
pub struct HttpStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    base_text: String,
    timeout: Duration,
    verify_timeout: Duration,
    idle_timeout: Duration,
    /// The most events asked for at once: the builder's page size, halved whenever the
    /// server answers that a `limit` is over its page limit ([`HttpStore::smaller_page`]).
    page_size: std::sync::atomic::AtomicUsize,
    limits: Limits,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("server", &self.inner.base_text)
            .finish_non_exhaustive()
    }
}

impl HttpStore {
    /// A store on the server at `base_url` (e.g. `http://127.0.0.1:2113`) with the
    /// default settings. Does not contact the server.
    pub fn connect(base_url: &str) -> Result<HttpStore> {
        Self::builder(base_url).build()
    }

    /// Settings for a store on the server at `base_url`: token, timeouts, page size.
    pub fn builder(base_url: &str) -> HttpStoreBuilder {
        HttpStoreBuilder {
            base_url: base_url.to_owned(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
            limits: Limits::default(),
            ca_cert: None,
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_text
    }

    /// Checks that the server is up and its store answers (`GET /health/ready`);
    /// returns its head position.
    pub async fn ready(&self) -> Result<u64> {
        let url = self.url(&["health", "ready"]);
        let health: Health = self.get(url, self.inner.timeout).await?;
        health.head.ok_or_else(|| {
            TransportError::answer(&self.inner.base_text, "answered ready without a head").into()
        })
    }
}
