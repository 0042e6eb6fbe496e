//! annal-postgres: the annal store on PostgreSQL, with every guarantee of the embedded
//! one, for many processes on one database.
//!
//! - **Gap-free global order across processes**: no sequence numbers positions; every
//!   commit locks the one-row `head` table and numbers its events from there, so
//!   positions are contiguous and in commit order, and a subscriber reading by position
//!   never misses one. [`writer`] explains why sequences lose events and how this avoids it.
//! - **Throughput**: group commit. One writer task per store takes every queued job and
//!   commits them as one transaction: one lock, one WAL flush, pipelined round trips.
//! - **Durability and atomicity**: a caller is answered after its group is flushed
//!   (COMMIT returned, or under contention from other processes, the writer's own
//!   synchronous confirmation behind an unflushed COMMIT); readers never see past what
//!   is flushed ([`writer`], "Durable before visible"); each job checks everything
//!   before it writes, so an error writes nothing.
//! - **Live readers**: commits `NOTIFY`; a dedicated connection LISTENs and wakes
//!   [`Store::wait_for_head`] callers within milliseconds, polling every 50 ms while that
//!   connection is down ([`notify`]).
//! - **Faults**: a lost connection or a restarted server surfaces as
//!   [`Error::Storage`]; nothing panics or hangs (every operation has a deadline, see
//!   [`config`]); the pool replaces dead connections, the listener reconnects.
//! - **Byte-for-byte payloads, queryable**: `data`/`metadata` are stored as their exact
//!   text, beside `jsonb` copies for PostgreSQL's JSON operators ([`schema`]).
//!
//! The store lives in its own PostgreSQL schema (default `annal`), which it creates and
//! migrates itself. docs/postgres.md describes the tables and the URL options.

mod check;
pub mod config;
pub mod notify;
mod open;
mod privacy;
pub mod replica;
pub mod rows;
pub mod schema;
pub mod writer;

pub use config::{ConfigError, PgConfig, TlsMode};
pub use open::{OpenError, Options};
pub use replica::ReadStoreOptions;

use annal_core::append::{ProposedTransaction, check_name};
use annal_core::cluster::{Node, NodeRegistration};
use annal_core::lease::{self, Lease};
use annal_core::privacy::{
    ForgetRequest, Forgotten, Keyring, Keys, SubjectInfo, SubjectKey, kek_problem, opened_with_kek,
};
use annal_core::{
    AggregateInfo, Checkpoint, CheckpointStatus, Direction, Error, EventCounts, Filter, Limits,
    RawJson, RecordedEvent, Result, Snapshot, Store, StreamRecord, TransactionResult, Uuid, stored,
};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use rows::{EVENT_COLUMNS, Param, PgTime, clamp};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;

/// How often a waiter polls the head while the listening connection is down.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often a waiter re-reads the head while notifications flow (a safety net only).
const LISTENING_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a stream's record past the read cap is waited for, with no store timeout.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// A PostgreSQL failure, with what annal was doing and what the server said.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL: {context}: {detail}")]
pub struct StorageFailure {
    context: String,
    detail: String,
    /// The SQLSTATE, when the server reported the error.
    code: Option<String>,
}

impl StorageFailure {
    /// Wraps a tokio-postgres error.
    pub fn new(context: &str, e: tokio_postgres::Error) -> Self {
        let code = e.as_db_error().map(|d| d.code().code().to_owned());
        Self {
            context: context.to_owned(),
            detail: describe(&e),
            code,
        }
    }

    /// A failure described in words.
    pub fn message(context: &str, detail: String) -> Self {
        Self {
            context: context.to_owned(),
            detail,
            code: None,
        }
    }

    /// An operation that got no answer in time.
    pub fn timeout(context: &str, after: Duration) -> Self {
        Self::message(
            context,
            format!("no answer from the server within {after:?}"),
        )
    }

    /// The same failure, with more context.
    pub fn wrap(context: &str, e: &StorageFailure) -> Self {
        Self {
            context: format!("{context}: {}", e.context),
            detail: e.detail.clone(),
            code: e.code.clone(),
        }
    }

    /// The SQLSTATE the server reported, if it reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the server reported the error (as opposed to a lost connection or a
    /// timeout, after which the outcome of a commit is unknown). Class 57 (operator
    /// intervention: shutdown, terminated connection) and 08 (connection) are not.
    pub fn is_server_error(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| !c.starts_with("57") && !c.starts_with("08"))
    }
}

/// The text of a tokio-postgres error: the server's message and SQLSTATE, or the
/// client's error with its causes.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

pub(crate) fn pool_failure(context: &str, e: deadpool_postgres::PoolError) -> StorageFailure {
    match e {
        deadpool_postgres::PoolError::Backend(e) => StorageFailure::new(context, e),
        other => StorageFailure::message(context, other.to_string()),
    }
}

impl From<StorageFailure> for Error {
    fn from(e: StorageFailure) -> Self {
        Error::storage(e)
    }
}

/// Runs a database future with an optional deadline.
pub(crate) async fn timed<T>(
    timeout: Option<Duration>,
    context: &str,
    fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> std::result::Result<T, StorageFailure> {
    match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r.map_err(|e| StorageFailure::new(context, e)),
            Err(_) => Err(StorageFailure::timeout(context, t)),
        },
        None => fut.await.map_err(|e| StorageFailure::new(context, e)),
    }
}

/// Runs one query on a connection of `pool`, within `timeout`.
pub(crate) async fn query_on(
    pool: &Pool,
    timeout: Option<Duration>,
    context: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<Vec<tokio_postgres::Row>, StorageFailure> {
    let work = async {
        let client = pool.get().await.map_err(|e| pool_failure(context, e))?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| StorageFailure::new(context, e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| StorageFailure::new(context, e))
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(StorageFailure::timeout(context, t))),
        None => work.await,
    }
}

use replica::Miss;

/// Pages shorter than this are checked against their hashes on the calling task
/// (about half a microsecond per event).
const CHECK_INLINE_UP_TO: usize = 64;

/// An annal store in a PostgreSQL schema. Cheap to clone; clones share the pool and the
/// writer.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    schema: String,
    quoted: String,
    limits: Limits,
    pool: Pool,
    timeout: Option<Duration>,
    jobs: mpsc::UnboundedSender<writer::Job>,
    head: watch::Receiver<u64>,
    /// The same watch's sender: a head read raises it too, so that it is at least
    /// every head a caller has been told.
    head_tx: Arc<watch::Sender<u64>>,
    /// The read store, when there is one.
    replica: Option<Arc<replica::Replica>>,
    listener: Arc<notify::Listener>,
    /// Whether the writer's last commit failed.
    health: annal_core::failures::WriteHealth,
    /// The key-encryption key personal data is sealed with.
    keys: Option<Arc<Keys>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// The PostgreSQL schema holding the store.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Whether the listening connection is up (otherwise waiters poll every 50 ms).
    pub fn is_listening(&self) -> bool {
        self.inner.listener.is_listening()
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Job,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(make(tx))
            .map_err(|_| Error::Closed("the writer task has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Closed("the writer task stopped before answering".into()))?
    }

    /// `events` once each is checked against its stored hash (pages of at least
    /// [`CHECK_INLINE_UP_TO`] events on the blocking pool)
    /// ([`annal_core::chain::check_served`]).
    async fn checked(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        self.checked_on(None, events).await.map_err(|m| match m {
            Miss::Standby(e) => e.into(),
            Miss::Data(e) => e,
        })
    }

    /// [`PgStore::checked`], the hashes before the events read from the read store
    /// `on`, or else from the primary.
    async fn checked_on(
        &self,
        on: Option<&replica::Replica>,
        events: Vec<RecordedEvent>,
    ) -> std::result::Result<Vec<RecordedEvent>, Miss> {
        let needed = annal_core::chain::predecessors_needed(&events);
        let mut found = Vec::with_capacity(needed.len());
        if !needed.is_empty() {
            let positions: Vec<i64> = needed.iter().map(|p| clamp(*p)).collect();
            let sql = format!(
                "SELECT position, hash FROM {}.events WHERE position = ANY($1)",
                self.inner.quoted
            );
            let context = "reading the hashes before some events";
            let rows = match on {
                Some(r) => r.query(context, &sql, &[&positions]).await?,
                None => {
                    query_on(
                        &self.inner.pool,
                        self.inner.timeout,
                        context,
                        &sql,
                        &[&positions],
                    )
                    .await?
                }
            };
            for r in rows {
                let position: i64 = rows::get(&r, 0)?;
                let hash: &str = rows::get(&r, 1)?;
                let hash = hash.parse().map_err(|e| {
                    Error::Corrupt(format!(
                        "the hash at position {position} is unreadable: {e}"
                    ))
                })?;
                found.push((stored::number("events.position", position)?, hash));
            }
        }
        if events.len() < CHECK_INLINE_UP_TO {
            annal_core::chain::check_served(&events, &found)?;
            return Ok(events);
        }
        // Hashing a page is CPU work: off tokio's workers.
        Ok(tokio::task::spawn_blocking(move || {
            annal_core::chain::check_served(&events, &found).map(|()| events)
        })
        .await
        .map_err(|e| Error::storage(format!("a hash check task failed: {e}")))??)
    }

    /// The read store, while reads go to it.
    fn replica(&self) -> Option<&replica::Replica> {
        self.inner.replica.as_deref().filter(|r| r.available())
    }

    /// The highest head this store has seen: its writer's commits, notifications and
    /// head reads.
    fn known_head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// The head a read that begins now must show at least: the primary's head, read
    /// now (one row); if the primary cannot answer, the highest this store has seen.
    async fn read_target(&self) -> u64 {
        let read = self.head(&[]).await.unwrap_or(0);
        read.max(self.known_head())
    }

    /// Up to `limit` events after `after` that pass `filter`: from the read store when
    /// there is one and it holds them, else (or for the part past its head) from the
    /// primary; hash-checked when `check`. See [`replica`] for what this promises.
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &Filter,
        check: bool,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        let (mut from, mut want) = (after, limit);
        if let Some(r) = self.replica() {
            let mut target = None;
            let mut waited = false;
            loop {
                let (page, head) = match r.read_all(from, want, filter).await {
                    Ok(read) => read,
                    Err(Miss::Standby(e)) => {
                        r.failed(&e);
                        break;
                    }
                    Err(Miss::Data(e)) => return Err(e),
                };
                let full = page.len() == want;
                let page = if check {
                    match self.checked_on(Some(r), page).await {
                        Ok(page) => page,
                        Err(Miss::Standby(e)) => {
                            r.failed(&e);
                            break;
                        }
                        Err(Miss::Data(e)) => return Err(e),
                    }
                } else {
                    page
                };
                want -= page.len();
                events.extend(page);
                // A full page is what the primary would answer too.
                if full {
                    r.served();
                    return Ok(events);
                }
                // Short: every match up to the standby's head is in it.
                from = from.max(head);
                let target = match target {
                    Some(t) => t,
                    None => *target.insert(self.read_target().await),
                };
                if head >= target {
                    r.served();
                    return Ok(events);
                }
                if waited || !r.reached(target).await {
                    break;
                }
                waited = true;
            }
            r.fell_back();
        }
        let rest = self.read_all_on_primary(from, want, filter).await?;
        events.extend(if check {
            self.checked(rest).await?
        } else {
            rest
        });
        Ok(events)
    }

    async fn read_all_on_primary(
        &self,
        after: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        let (sql, params) = rows::read_all_sql(&self.inner.quoted, after, limit, filter);
        let rows = self.query_boxed("reading the log", &sql, &params).await?;
        rows::events_from_rows(&rows)
    }

    /// The read store, once it holds `position` (waited for); `None`: the primary
    /// answers (counted as such).
    async fn replica_at(&self, position: u64) -> Option<&replica::Replica> {
        let r = self.replica()?;
        if r.reached(position).await {
            Some(r)
        } else {
            r.fell_back();
            None
        }
    }

    /// The read store that holds the primary's head as of now (waited for), if any.
    async fn replica_now(&self) -> Option<&replica::Replica> {
        self.replica()?;
        let target = self.read_target().await;
        self.replica_at(target).await
    }

    /// Runs a read query on the read store `on`, or else on the primary; a read store
    /// that fails hands the query to the primary.
    async fn query_read(
        &self,
        on: Option<&replica::Replica>,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        if let Some(r) = on {
            match r.query(context, sql, params).await {
                Ok(rows) => {
                    r.served();
                    return Ok(rows);
                }
                Err(e) => {
                    r.failed(&e);
                    r.fell_back();
                }
            }
        }
        self.query(context, sql, params).await
    }

    /// Events a query selects with [`EVENT_COLUMNS`], hash-checked: from the read store
    /// `on`, or else from the primary; a read store that fails hands the read to the
    /// primary.
    async fn read_events(
        &self,
        on: Option<&replica::Replica>,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>> {
        if let Some(r) = on {
            let attempt = async {
                let rows = r.query(context, sql, params).await?;
                let events = rows::events_from_rows(&rows)?;
                self.checked_on(Some(r), events).await
            };
            match attempt.await {
                Ok(events) => {
                    r.served();
                    return Ok(events);
                }
                Err(Miss::Data(e)) => return Err(e),
                Err(Miss::Standby(e)) => {
                    r.failed(&e);
                    r.fell_back();
                }
            }
        }
        let rows = self.query(context, sql, params).await?;
        self.checked(rows::events_from_rows(&rows)?).await
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        self.inner.keys.clone()
    }

    /// Opens the personal parts of events read (after their hashes were checked).
    async fn opened(&self, mut events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        let ids = annal_core::privacy::key_ids(&events)?;
        if ids.is_empty() {
            return Ok(events);
        }
        let sql = format!(
            "SELECT {} FROM {}.subject_keys WHERE key_id = ANY($1::text[])",
            privacy::KEY_COLUMNS,
            self.inner.quoted
        );
        let found = self.query("reading subject keys", &sql, &[&ids]).await?;
        let rows = found
            .iter()
            .map(privacy::key_from_row)
            .collect::<Result<Vec<_>>>()?;
        let keys = self.keys();
        annal_core::privacy::open_events(&mut events, keys.as_deref(), |_| Ok(rows))?;
        Ok(events)
    }

    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        Ok(query_on(&self.inner.pool, self.inner.timeout, context, sql, params).await?)
    }

    async fn query_boxed(
        &self,
        context: &str,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        self.query(context, sql, &refs).await
    }
}

#[async_trait]
impl Store for PgStore {
    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    async fn commit(&self, mut proposed: ProposedTransaction) -> Result<TransactionResult> {
        annal_core::privacy::refuse_reserved(&proposed)?;
        annal_core::privacy::attach(&mut proposed, self.keys().as_ref())?;
        self.submit(|tx| writer::Job::Transact(proposed, tx)).await
    }

    async fn forget_subject(&self, request: ForgetRequest) -> Result<Forgotten> {
        request.check()?;
        let forgotten = self.submit(|tx| writer::Job::Forget(request, tx)).await?;
        // Reads already refuse the key (its row has none); this drops it from memory.
        if let Some(keys) = &self.inner.keys {
            keys.forgotten(&forgotten.key_id);
        }
        Ok(forgotten)
    }

    async fn subjects(&self, after: &str, limit: usize) -> Result<Vec<SubjectInfo>> {
        let rows = self.key_rows(after, limit).await?;
        Ok(rows.iter().map(SubjectInfo::from).collect())
    }

    async fn subject(&self, subject: &str) -> Result<Option<SubjectInfo>> {
        let sql = format!(
            "SELECT {} FROM {}.subject_keys WHERE subject = $1",
            privacy::KEY_COLUMNS,
            self.inner.quoted
        );
        let found = self.query("reading a subject", &sql, &[&subject]).await?;
        Ok(privacy::infos(&found)?.pop())
    }

    async fn subject_events(
        &self,
        subject: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let s = &self.inner.quoted;
        let cap = schema::read_cap(s);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE position IN (
               SELECT position FROM {s}.event_subjects WHERE subject = $1 AND position > $2
               AND position <= {cap} ORDER BY position LIMIT $3) ORDER BY position"
        );
        let found = self
            .query(
                "reading a subject's events",
                &sql,
                &[&subject, &clamp(after_position), &clamp(limit)],
            )
            .await?;
        let events = self.checked(rows::events_from_rows(&found)?).await?;
        self.opened(events).await
    }

    async fn key_rows(&self, after: &str, limit: usize) -> Result<Vec<SubjectKey>> {
        let sql = format!(
            "SELECT {} FROM {}.subject_keys WHERE subject > $1 ORDER BY subject LIMIT $2",
            privacy::KEY_COLUMNS,
            self.inner.quoted
        );
        let found = self
            .query("listing key rows", &sql, &[&after, &clamp(limit)])
            .await?;
        found.iter().map(privacy::key_from_row).collect()
    }

    async fn import_key_rows(&self, rows: Vec<SubjectKey>) -> Result<u64> {
        let keys = opened_with_kek(self.keys(), "the key that wraps the rows")?;
        self.import_keys(&keys, &rows).await
    }

    async fn kek_problem(&self) -> Result<Option<String>> {
        let sql = privacy::KeySql::new(&self.inner.quoted).kek_in_use;
        let found = self.query("reading the key table's KEK", &sql, &[]).await?;
        let in_use: Option<String> = match found.first() {
            Some(r) => Some(rows::get(r, 0)?),
            None => None,
        };
        Ok(kek_problem(in_use.as_deref(), self.keys().as_deref()))
    }

    async fn rotate_kek(&self, new: Keyring) -> Result<u64> {
        let keys = opened_with_kek(self.keys(), "the current one to rotate")?;
        self.rotate(&keys, new).await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        self.submit(|tx| writer::Job::Import(events, tx)).await
    }

    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let s = &self.inner.quoted;
        let cap = schema::read_cap(s);
        let (sql, from) = match direction {
            Direction::Forward => (
                format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE aggregate_id = $1
                     AND aggregate_version >= $2 AND position <= {cap}
                     ORDER BY aggregate_version LIMIT $3"
                ),
                from_version.unwrap_or(1),
            ),
            Direction::Backward => (
                format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE aggregate_id = $1
                     AND aggregate_version <= $2 AND position <= {cap}
                     ORDER BY aggregate_version DESC LIMIT $3"
                ),
                from_version.unwrap_or(u64::MAX),
            ),
        };
        let on = self.replica_now().await;
        let events = self
            .read_events(
                on,
                "reading an aggregate",
                &sql,
                &[&aggregate_id, &clamp(from), &clamp(limit)],
            )
            .await?;
        self.opened(events).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        let events = self.read_log(after_position, limit, filter, true).await?;
        self.opened(events).await
    }

    /// The log as stored, for `verify` (which reports a mismatch rather than failing).
    async fn read_all_unchecked(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_log(after_position, limit, filter, false).await
    }

    /// One `GROUP BY event_type` query over the filter's rows, up to the head row.
    async fn count_by_type(
        &self,
        after_position: u64,
        up_to: Option<u64>,
        filter: &Filter,
    ) -> Result<EventCounts> {
        let (up_to, head) = match up_to {
            Some(p) => (p, None),
            None => {
                let head = self.head(&[]).await?;
                (head, Some(head))
            }
        };
        let on = match self.replica() {
            // The read store, once it holds every position counted.
            Some(_) => {
                let target = match head {
                    Some(head) => head,
                    None => self.read_target().await.min(up_to),
                };
                self.replica_at(target).await
            }
            None => None,
        };
        let (sql, params) = rows::count_sql(&self.inner.quoted, after_position, up_to, filter);
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let rows = self.query_read(on, "counting events", &sql, &refs).await?;
        let counts = rows
            .iter()
            .map(|r| {
                let n: i64 = rows::get(r, 1)?;
                Ok((rows::get(r, 0)?, stored::number("count(*)", n)?))
            })
            .collect::<Result<Vec<(String, u64)>>>()?;
        Ok(EventCounts::new(up_to, counts))
    }

    async fn event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1 AND position <= {}",
            schema::read_cap(&self.inner.quoted),
            s = self.inner.quoted
        );
        let rows = self.query("reading an event", &sql, &[&event_id]).await?;
        let events = self.checked(rows::events_from_rows(&rows)?).await?;
        Ok(self.opened(events).await?.pop())
    }

    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<AggregateInfo>> {
        Ok(self
            .stream(aggregate_id)
            .await?
            .and_then(StreamRecord::aggregate_info))
    }

    /// The record as a reader may see it: one the writer just wrote whose last event
    /// (or metadata event) is past the read cap is waited for until the cap covers it
    /// ([`writer`], "Durable before visible"), within the store's timeout.
    async fn stream(&self, aggregate_id: &str) -> Result<Option<StreamRecord>> {
        let s = &self.inner.quoted;
        let sql = format!(
            "SELECT st.aggregate_type, st.version, st.tombstoned, st.metadata_version,
               st.metadata,
               greatest(
                 (SELECT position FROM {s}.events
                  WHERE aggregate_id = st.aggregate_id AND aggregate_version = st.version),
                 (SELECT position FROM {s}.events
                  WHERE aggregate_id = '$$' || st.aggregate_id
                    AND aggregate_version = st.metadata_version)),
               {}
             FROM {s}.streams AS st WHERE st.aggregate_id = $1",
            schema::read_cap(s)
        );
        let patience = self.inner.timeout.unwrap_or(STREAM_WAIT);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let rows = self
                .query("reading a stream's record", &sql, &[&aggregate_id])
                .await?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let last: Option<i64> = rows::get(r, 5)?;
            let cap: i64 = rows::get(r, 6)?;
            if let Some(last) = last.filter(|l| *l > cap) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::storage(format!(
                        "stream '{aggregate_id}': its last event, position {last}, was not \
                         confirmed durable within {patience:?}"
                    )));
                }
                let below = stored::number("events.position", last - 1)?;
                self.wait_for_head(below, left).await?;
                continue;
            }
            return Ok(Some(StreamRecord {
                aggregate_type: rows::get(r, 0)?,
                version: stored::number(
                    format_args!("streams.version of {aggregate_id}"),
                    rows::get::<i64>(r, 1)?,
                )?,
                tombstoned: rows::get(r, 2)?,
                metadata_version: stored::number(
                    format_args!("streams.metadata_version of {aggregate_id}"),
                    rows::get::<i64>(r, 3)?,
                )?,
                metadata: rows::get::<Option<String>>(r, 4)?.map(RawJson::from_stored),
            }));
        }
    }

    fn write_failure(&self) -> Option<String> {
        self.inner.health.failure()
    }

    /// The head row and the stream records against the log, and the key table against
    /// the log and the KEK.
    async fn check_storage(&self) -> Result<Vec<String>> {
        let mut found = self.problems().await?;
        let keys = self.keys();
        found.extend(annal_core::privacy::key_table_problems(self, keys.as_deref()).await?);
        Ok(found)
    }

    async fn head(&self, aggregate_types: &[String]) -> Result<u64> {
        let s = &self.inner.quoted;
        // The head readers may see: durable, every position below it visible.
        let cap = schema::read_cap(s);
        let rows = if aggregate_types.is_empty() {
            let sql = format!("SELECT {cap} FROM {s}.head");
            self.query("reading the head", &sql, &[]).await?
        } else {
            let sql = format!(
                "SELECT coalesce(max(position), 0) FROM {s}.events WHERE aggregate_type = ANY($1)
                 AND position <= {cap}"
            );
            self.query("reading the head", &sql, &[&aggregate_types])
                .await?
        };
        let row = rows
            .first()
            .ok_or_else(|| Error::Corrupt(format!("the table {s}.head has no row")))?;
        let head = stored::number("events.position", rows::get::<i64>(row, 0)?)?;
        if aggregate_types.is_empty() {
            // Reads from the read store show at least every head a caller was told.
            self.inner.head_tx.send_if_modified(|h| {
                let moved = *h < head;
                if moved {
                    *h = head;
                }
                moved
            });
        }
        Ok(head)
    }

    async fn read_store(&self) -> Option<annal_core::cluster::ReadStoreStatus> {
        let r = self.inner.replica.as_ref()?;
        let primary = self.head(&[]).await.ok();
        Some(r.status(primary).await)
    }

    async fn save_snapshot(
        &self,
        aggregate_id: &str,
        version: u64,
        tag: &str,
        state: RawJson,
    ) -> Result<Snapshot> {
        check_name("aggregate_id", aggregate_id)?;
        check_name("tag", tag)?;
        let job = writer::SnapshotJob {
            aggregate_id: aggregate_id.to_owned(),
            version,
            tag: tag.to_owned(),
            state,
        };
        self.submit(|tx| writer::Job::Snapshot(job, tx)).await
    }

    async fn load_snapshot(
        &self,
        aggregate_id: &str,
        tag: &str,
        at_or_below: Option<u64>,
    ) -> Result<Option<Snapshot>> {
        let sql = format!(
            "SELECT aggregate_type, aggregate_version, state, created_at FROM {}.snapshots
             WHERE aggregate_id = $1 AND tag = $2 AND aggregate_version <= $3
             ORDER BY aggregate_version DESC LIMIT 1",
            self.inner.quoted
        );
        let below = clamp(at_or_below.unwrap_or(u64::MAX));
        let rows = self
            .query("reading a snapshot", &sql, &[&aggregate_id, &tag, &below])
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate_type: rows::get(r, 0)?,
            aggregate_version: stored::number(
                "snapshots.aggregate_version",
                rows::get::<i64>(r, 1)?,
            )?,
            tag: tag.to_owned(),
            state: RawJson::from_stored(rows::get(r, 2)?),
            created_at: rows::get::<PgTime>(r, 3)?.0,
        }))
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let sql = format!(
            "SELECT name, position, status, error_count, last_error, updated_at, source
             FROM {}.checkpoints WHERE name = $1",
            self.inner.quoted
        );
        let rows = self.query("reading a checkpoint", &sql, &[&name]).await?;
        rows.first().map(checkpoint_from_row).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let sql = format!(
            "SELECT name, position, status, error_count, last_error, updated_at, source
             FROM {}.checkpoints ORDER BY name",
            self.inner.quoted
        );
        let rows = self.query("listing checkpoints", &sql, &[]).await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn acquire_lease(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        lease::check_request(group, owner, ttl, false)?;
        let sql = format!(
            "INSERT INTO {s}.leases AS l (group_name, partition, owner, token, expires_at)
             VALUES ($1, $2, $3, 1, clock_timestamp() + $4::bigint * interval '1 microsecond')
             ON CONFLICT (group_name, partition) DO UPDATE SET owner = excluded.owner,
               token = l.token + 1, expires_at = excluded.expires_at
             WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp()
             RETURNING token, expires_at",
            s = self.inner.quoted
        );
        let p = i64::from(partition);
        let micros = ttl_micros(ttl);
        let rows = self
            .query("acquiring a lease", &sql, &[&group, &p, &owner, &micros])
            .await?;
        rows.first()
            .map(|r| lease_from_row(group, partition, owner, r))
            .transpose()
    }

    async fn renew_lease(&self, held: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        lease::check_request(&held.group, &held.owner, ttl, false)?;
        let sql = format!(
            "UPDATE {s}.leases
             SET expires_at = clock_timestamp() + $5::bigint * interval '1 microsecond'
             WHERE group_name = $1 AND partition = $2 AND owner = $3 AND token = $4
             RETURNING token, expires_at",
            s = self.inner.quoted
        );
        let p = i64::from(held.partition);
        let token = clamp(held.token);
        let micros = ttl_micros(ttl);
        let rows = self
            .query(
                "renewing a lease",
                &sql,
                &[&held.group, &p, &held.owner, &token, &micros],
            )
            .await?;
        rows.first()
            .map(|r| lease_from_row(&held.group, held.partition, &held.owner, r))
            .transpose()
    }

    async fn release_lease(&self, held: &Lease) -> Result<bool> {
        lease::check_request(&held.group, &held.owner, Duration::ZERO, true)?;
        let sql = format!(
            "UPDATE {s}.leases SET owner = NULL, expires_at = clock_timestamp()
             WHERE group_name = $1 AND partition = $2 AND owner = $3 AND token = $4
             RETURNING token",
            s = self.inner.quoted
        );
        let p = i64::from(held.partition);
        let token = clamp(held.token);
        let rows = self
            .query(
                "releasing a lease",
                &sql,
                &[&held.group, &p, &held.owner, &token],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn leases(&self, group: &str) -> Result<Vec<Lease>> {
        check_name("group", group)?;
        let sql = format!(
            "SELECT partition, owner, token, expires_at FROM {s}.leases
             WHERE group_name = $1 AND owner IS NOT NULL AND expires_at > clock_timestamp()
             ORDER BY partition",
            s = self.inner.quoted
        );
        let rows = self.query("listing leases", &sql, &[&group]).await?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    group: group.to_owned(),
                    partition: stored::number("leases.partition", rows::get::<i64>(r, 0)?)?,
                    owner: rows::get(r, 1)?,
                    token: stored::number("leases.token", rows::get::<i64>(r, 2)?)?,
                    expires_at: rows::get::<PgTime>(r, 3)?.0,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        lease::check_request(group, member, ttl, true)?;
        let s = &self.inner.quoted;
        let others = format!(
            "SELECT member FROM {s}.group_members
             WHERE group_name = $1 AND member <> $2 AND expires_at > clock_timestamp()"
        );
        let rows = if ttl.is_zero() {
            let sql = format!(
                "WITH gone AS (DELETE FROM {s}.group_members WHERE group_name = $1 AND member = $2)
                 {others} ORDER BY 1"
            );
            self.query("leaving a group", &sql, &[&group, &member])
                .await?
        } else {
            let sql = format!(
                "WITH beat AS (
                     INSERT INTO {s}.group_members (group_name, member, expires_at)
                     VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 microsecond')
                     ON CONFLICT (group_name, member) DO UPDATE SET expires_at = excluded.expires_at
                     RETURNING member
                 )
                 {others} UNION SELECT member FROM beat ORDER BY 1"
            );
            let micros = ttl_micros(ttl);
            self.query("sending a heartbeat", &sql, &[&group, &member, &micros])
                .await?
        };
        rows.iter().map(|r| rows::get(r, 0)).collect()
    }

    async fn register_node(&self, node: &NodeRegistration, ttl: Duration) -> Result<Vec<Node>> {
        check_name("name", &node.name)?;
        check_name("address", &node.address)?;
        lease::check_ttl(ttl, true)?;
        let s = &self.inner.quoted;
        let others = format!(
            "SELECT name, instance_id, address, started_at, expires_at, false FROM {s}.nodes
             WHERE name <> $1 AND expires_at > clock_timestamp()"
        );
        if ttl.is_zero() {
            let sql = format!(
                "WITH gone AS (DELETE FROM {s}.nodes WHERE name = $1 AND instance_id = $2)
                 {others} ORDER BY 1"
            );
            let rows = self
                .query("removing a node", &sql, &[&node.name, &node.instance_id])
                .await?;
            return rows.iter().map(node_from_row).collect();
        }
        // A name is taken over from a node whose heartbeat has lapsed, or with the same
        // address (the same node, restarted after a crash); nodes gone for a day are
        // forgotten.
        let sql = format!(
            "WITH beat AS (
                 INSERT INTO {s}.nodes AS n (name, instance_id, address, started_at, expires_at)
                 VALUES ($1, $2, $3, {started}, clock_timestamp() + $5::bigint * interval '1 microsecond')
                 ON CONFLICT (name) DO UPDATE SET instance_id = excluded.instance_id,
                   address = excluded.address, started_at = excluded.started_at,
                   expires_at = excluded.expires_at
                 WHERE n.instance_id = excluded.instance_id OR n.address = excluded.address
                    OR n.expires_at <= clock_timestamp()
                 RETURNING name, instance_id, address, started_at, expires_at
             ), forgotten AS (
                 DELETE FROM {s}.nodes WHERE name <> $1
                 AND expires_at < clock_timestamp() - interval '1 day'
             )
             SELECT name, instance_id, address, started_at, expires_at, true FROM beat
             UNION ALL {others} ORDER BY 1",
            started = rows::micros_to_timestamptz("$4")
        );
        let rows = self
            .query(
                "sending a node heartbeat",
                &sql,
                &[
                    &node.name,
                    &node.instance_id,
                    &node.address,
                    &node.started_at.as_micros(),
                    &ttl_micros(ttl),
                ],
            )
            .await?;
        if !rows
            .iter()
            .any(|r| r.try_get::<_, bool>(5).unwrap_or(false))
        {
            return Err(Error::invalid(
                "name",
                format!(
                    "node '{}' is alive at another address: give each node its own name",
                    node.name
                ),
            ));
        }
        rows.iter().map(node_from_row).collect()
    }

    async fn wait_for_head(&self, after_position: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.head.clone();
        changes.mark_unchanged();
        // Read once: a commit may be visible before its notification arrives.
        let mut head = self.head(&[]).await?;
        loop {
            head = head.max(*changes.borrow_and_update());
            let now = tokio::time::Instant::now();
            if head > after_position || now >= deadline {
                return Ok(head);
            }
            let poll = if self.is_listening() {
                LISTENING_POLL_INTERVAL
            } else {
                POLL_INTERVAL
            };
            let nap = (deadline - now).min(poll);
            match tokio::time::timeout(nap, changes.changed()).await {
                // Woken by a commit (this process's writer or a notification).
                Ok(Ok(())) => continue,
                // The store's tasks are gone (closing): keep polling without wake-ups.
                Ok(Err(_)) => tokio::time::sleep(nap).await,
                Err(_) => {}
            }
            head = head.max(self.head(&[]).await?);
        }
    }
}

fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

/// A node from a row of name, instance_id, address, started_at, expires_at.
fn node_from_row(r: &tokio_postgres::Row) -> Result<Node> {
    Ok(Node {
        name: rows::get(r, 0)?,
        instance_id: rows::get(r, 1)?,
        address: rows::get(r, 2)?,
        started_at: rows::get::<PgTime>(r, 3)?.0,
        expires_at: rows::get::<PgTime>(r, 4)?.0,
    })
}

/// A lease from a row of token, expires_at.
fn lease_from_row(
    group: &str,
    partition: u32,
    owner: &str,
    r: &tokio_postgres::Row,
) -> Result<Lease> {
    Ok(Lease {
        group: group.to_owned(),
        partition,
        owner: owner.to_owned(),
        token: stored::number("leases.token", rows::get::<i64>(r, 0)?)?,
        expires_at: rows::get::<PgTime>(r, 1)?.0,
    })
}

/// A checkpoint from a row of name, position, status, error_count, last_error, updated_at,
/// source.
fn checkpoint_from_row(r: &tokio_postgres::Row) -> Result<Checkpoint> {
    let name: String = rows::get(r, 0)?;
    let status: CheckpointStatus = rows::get::<&str>(r, 2)?
        .parse()
        .map_err(|e: Error| Error::Corrupt(format!("checkpoint '{name}': {e}")))?;
    Ok(Checkpoint {
        position: stored::number(
            format_args!("checkpoints.position of '{name}'"),
            rows::get::<i64>(r, 1)?,
        )?,
        status,
        error_count: stored::number(
            format_args!("checkpoints.error_count of '{name}'"),
            rows::get::<i64>(r, 3)?,
        )?,
        last_error: rows::get(r, 4)?,
        updated_at: rows::get::<PgTime>(r, 5)?.0,
        source: rows::get(r, 6)?,
        name,
    })
}
