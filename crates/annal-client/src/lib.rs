//! annal-client: [`HttpStore`], the [`Store`] trait against a remote annal server over
//! its HTTP API (API.md), so a Rust program uses a remote annal like a local one.
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
//! - reads larger than the server's page limit are fetched in pages (`page_size`).
//!
//! Aggregate ids and checkpoint names travel in URL paths, which cannot carry `.` or
//! `..`: those answer [`Error::InvalidRequest`] rather than reaching another route.
//! Filters travel as API.md's comma-separated lists, so a filter value that is empty,
//! contains a comma or starts or ends with a space cannot be sent: such a read answers
//! [`Error::InvalidRequest`] instead of a different result.

mod problem;
mod sse;
mod transport;

pub use transport::TransportError;

use annal_core::append::check_name;
use annal_core::lease::{self, Lease};
use annal_core::{
    AggregateInfo, AppendRequest, AppendResult, Checkpoint, CheckpointWrite, Direction, Error,
    Filter, Limits, NewEvent, ProposedTransaction, RawJson, RecordedEvent, Result, Snapshot, Store,
    Transaction, TransactionResult, Uuid, VerifyReport,
};
use async_trait::async_trait;
use futures_util::{FutureExt, Stream};
use problem::ProblemDoc;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sse::SseParser;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    /// page limit; set it to the server's `--max-page` if that is lower).
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
                page_size: self.page_size,
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
    page_size: usize,
    limits: Limits,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("server", &self.inner.base_text)
            .finish_non_exhaustive()
    }
}

/// When a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Also after it may have reached the server: sending it twice writes once.
    Safe,
    /// Only when the connection could not be made (it never reached the server).
    IfNotSent,
}

/// A request that got no answer.
#[derive(Debug)]
enum Failure {
    /// The connection could not be made: the server never saw the request.
    NotSent(reqwest::Error),
    /// It may have reached the server.
    Sent(reqwest::Error),
}

impl Failure {
    fn into_inner(self) -> reqwest::Error {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) => e,
        }
    }
}

/// A page of `GET /v1/streams/{id}`.
#[derive(Deserialize)]
struct StreamPage {
    events: Vec<RecordedEvent>,
    next_from_version: Option<u64>,
}

/// A page of `GET /v1/events`.
#[derive(Deserialize)]
struct EventsPage {
    events: Vec<RecordedEvent>,
    next_after_position: Option<u64>,
}

/// The answer of `GET /v1/head`.
#[derive(Deserialize)]
struct Head {
    position: u64,
}

/// The body of `PUT /v1/streams/{id}/snapshots/{version}`.
#[derive(Serialize)]
struct SnapshotBody<'a> {
    tag: &'a str,
    state: &'a RawJson,
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
        #[derive(Deserialize)]
        struct Ready {
            head: u64,
        }
        let url = self.url(&["health", "ready"]);
        let ready: Ready = self.get(url, self.inner.timeout).await?;
        Ok(ready.head)
    }

    /// Every event after `after_position` that passes `filter`, then live ones as they
    /// commit, over Server-Sent Events (`GET /v1/subscribe`), in order, each once.
    ///
    /// The stream ends when the server shuts down. A failure the server reports on the
    /// subscription is yielded as an error and the subscription goes on; a transport
    /// failure or an idle connection (see [`HttpStoreBuilder::idle_timeout`]) is
    /// yielded and ends it: resubscribe after the last position received.
    pub fn subscribe(
        &self,
        after_position: u64,
        filter: &Filter,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'static {
        enum Phase {
            Start(Result<Url>),
            Live(reqwest::Response),
            Done,
        }
        struct St {
            store: HttpStore,
            phase: Phase,
            parser: SseParser,
            ready: VecDeque<Result<RecordedEvent>>,
        }
        let url = self.filtered_url("subscribe", after_position, None, filter);
        let st = St {
            store: self.clone(),
            phase: Phase::Start(url),
            parser: SseParser::default(),
            ready: VecDeque::new(),
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item, st));
                }
                let base = st.store.inner.base_text.as_str();
                match std::mem::replace(&mut st.phase, Phase::Done) {
                    Phase::Done => return None,
                    Phase::Start(url) => match st.store.open_subscription(url).await {
                        Ok(response) => st.phase = Phase::Live(response),
                        Err(e) => return Some((Err(e), st)),
                    },
                    Phase::Live(mut response) => {
                        let idle = st.store.inner.idle_timeout;
                        // Bytes already received need no timer (`chunk` is cancel-safe:
                        // a pending call has taken nothing).
                        let next = match response.chunk().now_or_never() {
                            Some(next) => Ok(next),
                            None => tokio::time::timeout(idle, response.chunk()).await,
                        };
                        match next {
                            Err(_) => {
                                let e = TransportError::answer(
                                    base,
                                    format!(
                                        "the subscription sent nothing, not even a keep-alive, for {idle:?}"
                                    ),
                                );
                                return Some((Err(e.into()), st));
                            }
                            Ok(Err(e)) => {
                                return Some((Err(TransportError::request(base, e).into()), st));
                            }
                            // The server ended the subscription (it is shutting down).
                            Ok(Ok(None)) => return None,
                            Ok(Ok(Some(bytes))) => {
                                let ready = &mut st.ready;
                                st.parser.feed(&bytes, &mut |ev| {
                                    ready.push_back(sse_event(base, ev));
                                });
                                st.phase = Phase::Live(response);
                            }
                        }
                    }
                }
            }
        })
    }

    async fn open_subscription(&self, url: Result<Url>) -> Result<reqwest::Response> {
        let base = self.inner.base_text.as_str();
        let url = url?;
        let response = self
            .inner
            .http
            .get(url)
            .header(ACCEPT, "text/event-stream")
            .send();
        let response = tokio::time::timeout(self.inner.timeout, response)
            .await
            .map_err(|_| {
                TransportError::answer(base, format!("no answer within {:?}", self.inner.timeout))
            })?
            .map_err(|e| TransportError::request(base, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(self.inner.timeout, response.bytes())
            .await
            .map_err(|_| TransportError::answer(base, format!("answered {status}, then stalled")))?
            .map_err(|e| TransportError::request(base, e))?;
        Err(problem::error_from(base, status, &body, 0))
    }

    /// The base URL with `segments` appended, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `/v1/{route}` with `after_position`, an optional `limit` and the filter's fields.
    fn filtered_url(
        &self,
        route: &str,
        after_position: u64,
        limit: Option<usize>,
        filter: &Filter,
    ) -> Result<Url> {
        let mut url = self.url(&["v1", route]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("after_position", &after_position.to_string());
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
            for (key, values) in [
                ("event_type", &filter.event_types),
                ("aggregate_type", &filter.aggregate_types),
                ("correlation_id", &filter.correlation_ids),
                ("causation_id", &filter.causation_ids),
                ("user_id", &filter.user_ids),
            ] {
                if !values.is_empty() {
                    q.append_pair(key, &list(key, values)?);
                }
            }
            if let Some(t) = filter.since {
                q.append_pair("since", &t.to_string());
            }
            if let Some(t) = filter.until {
                q.append_pair("until", &t.to_string());
            }
        }
        Ok(url)
    }

    /// Sends a request (a second time only as `resend` allows) and hands the status
    /// and body of the answer to `answer`.
    async fn call<T>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        resend: Resend,
        timeout: Duration,
        answer: impl FnOnce(StatusCode, &[u8], usize) -> Result<T>,
    ) -> Result<T> {
        let base = self.inner.base_text.as_str();
        let sent = body.as_ref().map_or(0, Vec::len);
        let mut builder = self.inner.http.request(method, url).timeout(timeout);
        if let Some(body) = body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body);
        }
        let first = builder
            .build()
            .map_err(|e| TransportError::request(base, e))?;
        // A copy for a second attempt (the body is shared bytes, not copied).
        let spare = first.try_clone();
        let failure = match self.exchange(first).await {
            Ok((status, bytes)) => return answer(status, bytes.as_ref(), sent),
            Err(failure) => failure,
        };
        // A timeout is not retried: the caller asked to wait at most that long.
        let again = match &failure {
            Failure::NotSent(e) => !e.is_timeout(),
            Failure::Sent(e) => resend == Resend::Safe && !e.is_timeout(),
        };
        match spare {
            Some(request) if again => match self.exchange(request).await {
                Ok((status, bytes)) => answer(status, bytes.as_ref(), sent),
                Err(f) => Err(TransportError::request(base, f.into_inner()).into()),
            },
            _ => Err(TransportError::request(base, failure.into_inner()).into()),
        }
    }

    /// One request and its whole answer.
    async fn exchange(
        &self,
        request: reqwest::Request,
    ) -> std::result::Result<(StatusCode, impl AsRef<[u8]>), Failure> {
        let response = self.inner.http.execute(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::NotSent(e)
            } else {
                Failure::Sent(e)
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(Failure::Sent)?;
        Ok((status, bytes))
    }

    /// Parses a success answer as `T`; any other answer is its error.
    fn parse<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
        sent: usize,
    ) -> Result<T> {
        let base = self.inner.base_text.as_str();
        if !status.is_success() {
            return Err(problem::error_from(base, status, body, sent));
        }
        serde_json::from_slice(body).map_err(|e| {
            TransportError::answer(
                base,
                format!("answered {status} with a body that is not what API.md says: {e}"),
            )
            .into()
        })
    }

    /// As [`HttpStore::parse`], with a `not_found` problem as `None`.
    fn parse_opt<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
        sent: usize,
    ) -> Result<Option<T>> {
        if status == StatusCode::NOT_FOUND
            && ProblemDoc::parse(body).is_some_and(|d| d.kind.as_deref() == Some("not_found"))
        {
            return Ok(None);
        }
        self.parse(status, body, sent).map(Some)
    }

    async fn get<T: DeserializeOwned>(&self, url: Url, timeout: Duration) -> Result<T> {
        self.call(Method::GET, url, None, Resend::Safe, timeout, |s, b, n| {
            self.parse(s, b, n)
        })
        .await
    }

    async fn get_opt<T: DeserializeOwned>(&self, url: Url) -> Result<Option<T>> {
        let timeout = self.inner.timeout;
        self.call(Method::GET, url, None, Resend::Safe, timeout, |s, b, n| {
            self.parse_opt(s, b, n)
        })
        .await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &B,
        resend: Resend,
    ) -> Result<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::invalid("body", format!("cannot be written as JSON: {e}")))?;
        let timeout = self.inner.timeout;
        self.call(method, url, Some(body), resend, timeout, |s, b, n| {
            self.parse(s, b, n)
        })
        .await
    }
}

impl HttpStore {
    /// A lease call whose `lease_conflict` answer is `None`.
    async fn lease_call(
        &self,
        url: Url,
        body: &serde_json::Value,
        resend: Resend,
    ) -> Result<Option<Lease>> {
        match self.send(Method::POST, url, body, resend).await {
            Ok(lease) => Ok(Some(lease)),
            Err(Error::LeaseConflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A ttl in whole milliseconds, rounded up (a ttl below 1 ms is refused before).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Refuses an id that a URL path cannot carry: `.` and `..` are removed from paths by
/// URL rules, so the request would reach another route.
fn addressable(field: &str, value: &str) -> Result<()> {
    if value == "." || value == ".." {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?} cannot be addressed over HTTP: URL paths drop '.' and '..' segments"
            ),
        ));
    }
    Ok(())
}

/// A filter's values as one comma-separated parameter, refusing values the list form
/// would change.
fn list(key: &str, values: &[String]) -> Result<String> {
    for v in values {
        if v.is_empty() || v.contains(',') || v.trim() != v {
            return Err(Error::invalid(
                key,
                format!(
                    "{v:?} cannot be sent as a filter over HTTP (values are comma-separated and trimmed)"
                ),
            ));
        }
    }
    Ok(values.join(","))
}

/// One SSE event as a recorded event, or the error the server reported.
fn sse_event(base: &str, ev: sse::SseEvent) -> Result<RecordedEvent> {
    if ev.event == "error" {
        let text = String::from_utf8_lossy(&ev.data);
        return Err(
            TransportError::answer(base, format!("the subscription reported: {text}")).into(),
        );
    }
    serde_json::from_slice(&ev.data).map_err(|e| {
        TransportError::answer(
            base,
            format!("sent a subscription event that is not an event: {e}"),
        )
        .into()
    })
}

/// Whether every event of every append carries an event_id and no checkpoint
/// compare-and-set rides along: then sending it twice writes it once.
fn replay_safe(appends: &[AppendRequest], checkpoint: Option<&CheckpointWrite>) -> Resend {
    let ids = appends
        .iter()
        .all(|a| a.events.iter().all(|e| e.event_id.is_some()));
    let cas = checkpoint.is_some_and(|c| c.expected_position.is_some());
    if ids && !cas {
        Resend::Safe
    } else {
        Resend::IfNotSent
    }
}

/// A prepared transaction as the request that reproduces it exactly: every default
/// applied, every event_id set.
fn to_transaction(proposed: ProposedTransaction) -> Transaction {
    let appends = proposed
        .appends
        .into_iter()
        .map(|a| AppendRequest {
            aggregate_type: a.aggregate_type,
            aggregate_id: a.aggregate_id,
            expected_version: a.expected,
            user_id: None,
            correlation_id: None,
            causation_id: None,
            events: a
                .events
                .into_iter()
                .map(|e| NewEvent {
                    event_id: Some(e.event_id),
                    event_type: e.event_type,
                    event_version: Some(e.event_version),
                    user_id: Some(e.user_id),
                    correlation_id: e.correlation_id,
                    causation_id: e.causation_id,
                    metadata: Some(e.metadata),
                    data: e.data,
                })
                .collect(),
        })
        .collect();
    Transaction {
        appends,
        checkpoint: proposed.checkpoint,
    }
}

#[async_trait]
impl Store for HttpStore {
    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// `POST /v1/transactions` with every event_id set, so a retry is a replay.
    async fn commit(&self, proposed: ProposedTransaction) -> Result<TransactionResult> {
        let transaction = to_transaction(proposed);
        let resend = replay_safe(&transaction.appends, transaction.checkpoint.as_ref());
        let url = self.url(&["v1", "transactions"]);
        self.send(Method::POST, url, &transaction, resend).await
    }

    /// `POST /v1/transactions`, validated by the server with its own limits.
    async fn transact(&self, transaction: Transaction) -> Result<TransactionResult> {
        let resend = replay_safe(&transaction.appends, transaction.checkpoint.as_ref());
        let url = self.url(&["v1", "transactions"]);
        self.send(Method::POST, url, &transaction, resend).await
    }

    /// `POST /v1/streams/{aggregate_id}`: error fields are those of a local append
    /// (`events[3].metadata`, not `appends[0].…`).
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        // The id goes in the route: an empty or invalid one must fail as locally.
        check_name("aggregate_type", &request.aggregate_type)?;
        check_name("aggregate_id", &request.aggregate_id)?;
        addressable("aggregate_id", &request.aggregate_id)?;
        let resend = replay_safe(std::slice::from_ref(&request), None);
        let url = self.url(&["v1", "streams", &request.aggregate_id]);
        self.send(Method::POST, url, &request, resend).await
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut out = Vec::new();
        let mut from = from_version;
        while out.len() < limit {
            let want = (limit - out.len()).min(self.inner.page_size);
            let mut url = self.url(&["v1", "streams", aggregate_id]);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair(
                    "direction",
                    match direction {
                        Direction::Forward => "forward",
                        Direction::Backward => "backward",
                    },
                );
                q.append_pair("limit", &want.to_string());
                if let Some(v) = from {
                    q.append_pair("from_version", &v.to_string());
                }
            }
            // 404: no such aggregate, which reads as no events.
            let Some(page) = self.get_opt::<StreamPage>(url).await? else {
                break;
            };
            let got = page.events.len();
            out.extend(page.events);
            match page.next_from_version {
                Some(next) if got > 0 => from = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        let mut after = after_position;
        while out.len() < limit {
            let want = (limit - out.len()).min(self.inner.page_size);
            let url = self.filtered_url("events", after, Some(want), filter)?;
            let page: EventsPage = self.get(url, self.inner.timeout).await?;
            let got = page.events.len();
            out.extend(page.events);
            match page.next_after_position {
                Some(next) if got > 0 => after = next,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let url = self.url(&["v1", "events", &event_id.to_string()]);
        self.get_opt(url).await
    }

    /// The stream route read backward, one event: its type and version.
    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<AggregateInfo>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut url = self.url(&["v1", "streams", aggregate_id]);
        url.query_pairs_mut()
            .append_pair("direction", "backward")
            .append_pair("limit", "1");
        let page = self.get_opt::<StreamPage>(url).await?;
        Ok(page
            .and_then(|p| p.events.into_iter().next())
            .map(|e| AggregateInfo {
                aggregate_type: e.aggregate_type,
                version: e.aggregate_version,
            }))
    }

    async fn head(&self, aggregate_types: &[String]) -> Result<u64> {
        let mut url = self.url(&["v1", "head"]);
        if !aggregate_types.is_empty() {
            let types = list("aggregate_type", aggregate_types)?;
            url.query_pairs_mut().append_pair("aggregate_type", &types);
        }
        let head: Head = self.get(url, self.inner.timeout).await?;
        Ok(head.position)
    }

    async fn save_snapshot(
        &self,
        aggregate_id: &str,
        version: u64,
        tag: &str,
        state: RawJson,
    ) -> Result<Snapshot> {
        addressable("aggregate_id", aggregate_id)?;
        let url = self.url(&[
            "v1",
            "streams",
            aggregate_id,
            "snapshots",
            &version.to_string(),
        ]);
        let body = SnapshotBody { tag, state: &state };
        self.send(Method::PUT, url, &body, Resend::Safe).await
    }

    async fn load_snapshot(
        &self,
        aggregate_id: &str,
        tag: &str,
        at_or_below: Option<u64>,
    ) -> Result<Option<Snapshot>> {
        addressable("aggregate_id", aggregate_id)?;
        let mut url = self.url(&["v1", "streams", aggregate_id, "snapshots", "latest"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("tag", tag);
            if let Some(v) = at_or_below {
                q.append_pair("at_or_below", &v.to_string());
            }
        }
        self.get_opt(url).await
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        addressable("name", name)?;
        self.get_opt(self.url(&["v1", "checkpoints", name])).await
    }

    /// `GET /v1/checkpoints`.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        #[derive(serde::Deserialize)]
        struct List {
            checkpoints: Vec<Checkpoint>,
        }
        let list: List = self
            .get(self.url(&["v1", "checkpoints"]), self.inner.timeout)
            .await?;
        Ok(list.checkpoints)
    }

    /// `PUT /v1/checkpoints/{name}`.
    async fn put_checkpoint(&self, write: CheckpointWrite) -> Result<Checkpoint> {
        write.validate("")?;
        addressable("name", &write.name)?;
        let resend = if write.expected_position.is_some() {
            Resend::IfNotSent
        } else {
            Resend::Safe
        };
        let url = self.url(&["v1", "checkpoints", &write.name]);
        self.send(Method::PUT, url, &write, resend).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/acquire`; a `lease_conflict` is `None`.
    async fn acquire_lease(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        lease::check_request(group, owner, ttl, false)?;
        addressable("group", group)?;
        let url = self.url(&[
            "v1",
            "groups",
            group,
            "leases",
            &partition.to_string(),
            "acquire",
        ]);
        let body = serde_json::json!({"owner": owner, "ttl_ms": ttl_ms(ttl)});
        // Not resent once sent: a second acquisition would not see that the first won.
        self.lease_call(url, &body, Resend::IfNotSent).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/renew`; a `lease_conflict` is `None`.
    async fn renew_lease(&self, held: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        lease::check_request(&held.group, &held.owner, ttl, false)?;
        addressable("group", &held.group)?;
        let url = self.url(&[
            "v1",
            "groups",
            &held.group,
            "leases",
            &held.partition.to_string(),
            "renew",
        ]);
        let body =
            serde_json::json!({"owner": held.owner, "token": held.token, "ttl_ms": ttl_ms(ttl)});
        self.lease_call(url, &body, Resend::Safe).await
    }

    /// `POST /v1/groups/{group}/leases/{partition}/release`; a `lease_conflict` is `false`.
    async fn release_lease(&self, held: &Lease) -> Result<bool> {
        lease::check_request(&held.group, &held.owner, Duration::ZERO, true)?;
        addressable("group", &held.group)?;
        let url = self.url(&[
            "v1",
            "groups",
            &held.group,
            "leases",
            &held.partition.to_string(),
            "release",
        ]);
        let body = serde_json::json!({"owner": held.owner, "token": held.token});
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::invalid("body", format!("cannot be written as JSON: {e}")))?;
        let timeout = self.inner.timeout;
        self.call(
            Method::POST,
            url,
            Some(body),
            Resend::Safe,
            timeout,
            |s, b, n| {
                if s == reqwest::StatusCode::NO_CONTENT {
                    return Ok(true);
                }
                match self.parse::<serde_json::Value>(s, b, n) {
                    Err(Error::LeaseConflict { .. }) => Ok(false),
                    Err(e) => Err(e),
                    Ok(_) => Ok(true),
                }
            },
        )
        .await
    }

    /// `GET /v1/groups/{group}/leases`.
    async fn leases(&self, group: &str) -> Result<Vec<Lease>> {
        #[derive(serde::Deserialize)]
        struct List {
            leases: Vec<Lease>,
        }
        check_name("group", group)?;
        addressable("group", group)?;
        let list: List = self
            .get(
                self.url(&["v1", "groups", group, "leases"]),
                self.inner.timeout,
            )
            .await?;
        Ok(list.leases)
    }

    /// `PUT /v1/groups/{group}/members/{member}`.
    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            members: Vec<String>,
        }
        lease::check_request(group, member, ttl, true)?;
        addressable("group", group)?;
        addressable("member", member)?;
        let url = self.url(&["v1", "groups", group, "members", member]);
        let body = serde_json::json!({"ttl_ms": ttl_ms(ttl)});
        let list: List = self.send(Method::PUT, url, &body, Resend::Safe).await?;
        Ok(list.members)
    }

    /// Polls `GET /v1/head`, 5 ms after the first look and then at most every 50 ms,
    /// until the head passes `after_position` or `timeout` has passed.
    async fn wait_for_head(&self, after_position: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        loop {
            let head = self.head(&[]).await?;
            let now = Instant::now();
            if head > after_position || now >= deadline {
                return Ok(head);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// `GET /v1/verify`: the server checks the chain next to its data.
    async fn verify(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
    ) -> Result<VerifyReport> {
        let mut url = self.url(&["v1", "verify"]);
        if from_position.is_some() || to_position.is_some() {
            let mut q = url.query_pairs_mut();
            if let Some(p) = from_position {
                q.append_pair("from_position", &p.to_string());
            }
            if let Some(p) = to_position {
                q.append_pair("to_position", &p.to_string());
            }
        }
        self.get(url, self.inner.verify_timeout).await
    }
}
