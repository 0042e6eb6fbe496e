//! The read store: a hot standby of the store's PostgreSQL that serves its reads of the
//! log and of streams (`annal serve --read-store URL`, docs/cluster.md), so that
//! catch-up readers and read-all do not load the primary.
//!
//! # Why a standby holds a gap-free prefix
//!
//! Commits are serialised on the `head` row ([`crate::writer`]): a commit's WAL record
//! is written before the next commit can lock the row. A standby replays the WAL in
//! order and makes each transaction visible when it replays its commit record, so at any
//! moment it shows the log up to some commit: positions 1 to its own `head`, nothing
//! above, as the primary showed it then. Reads of the standby are capped, in the same
//! statement, at the read cap it shows ([`crate::schema::read_cap`]: the head its
//! replayed commits confirmed durable, at or below its `head`), as reads of the primary
//! are; that cap is also how a read learns how far the standby is, and is what
//! "the standby's head" means below.
//!
//! # What a read promises
//!
//! A read answered from the standby shows what a read of the primary would have shown
//! when it began (read-your-writes, across nodes too):
//!
//! - a page of the log that comes back full is a prefix of what follows the cursor, and
//!   is answered as is;
//! - otherwise (a short page, a stream read, a count), the read needs the standby at
//!   the primary's head, read when the read began (one row of the primary's `head`,
//!   no event data; if the primary cannot answer, the highest head this process has
//!   seen). A standby behind it is waited for, up to the store's wait (default
//!   100 ms), polled every 2 ms by one task for all waiters; still behind, the primary
//!   answers the rest: for the log, only the part past the standby's head.
//!
//! # Faults
//!
//! A standby that cannot be reached, or fails a read (other than a query cancelled by a
//! recovery conflict, which fails over that read alone), is set aside, logged once;
//! reads go to the primary, and the standby is tried again every second. It is used
//! again only once its `head` holds the hash the primary has at that position: a server
//! that is not a copy of this store is never read (at open it is refused).

use crate::config::PgConfig;
use crate::open::OpenError;
use crate::rows::{self, EVENT_COLUMNS, Param, PgTime, clamp};
use crate::{StorageFailure, pool_failure, timed};
use annal_core::{Error, Filter, RecordedEvent, stored};
use deadpool_postgres::Pool;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// How long a read waits for the standby to reach the position it needs, unless set.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(100);
/// How often the standby's head is read while a reader waits for it.
const POLL: Duration = Duration::from_millis(2);
/// How often a standby set aside is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Longest the status (`GET /v1/cluster`) waits for the standby.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// A read store's settings.
#[derive(Debug, Clone)]
pub struct ReadStoreOptions {
    /// The standby's URL, parsed. Its schema must be the store's (it is the store's
    /// copy); its pool size, timeouts and TLS are its own.
    pub config: PgConfig,
    /// How long a read waits for the standby to reach the position it needs before the
    /// primary answers it ([`DEFAULT_WAIT`]; zero: never wait).
    pub wait: Duration,
}

impl ReadStoreOptions {
    /// A standby at `config`, waited for [`DEFAULT_WAIT`].
    pub fn new(config: PgConfig) -> Self {
        Self {
            config,
            wait: DEFAULT_WAIT,
        }
    }
}

/// Why a read of the standby did not answer.
pub(crate) enum Miss {
    /// The standby failed: the primary answers instead.
    Standby(StorageFailure),
    /// What it holds is wrong (the primary would say the same): the read fails.
    Data(Error),
}

impl From<Error> for Miss {
    fn from(e: Error) -> Self {
        Miss::Data(e)
    }
}

impl From<stored::OutOfRange> for Miss {
    fn from(e: stored::OutOfRange) -> Self {
        Miss::Data(e.into())
    }
}

impl From<StorageFailure> for Miss {
    fn from(e: StorageFailure) -> Self {
        Miss::Standby(e)
    }
}

/// The standby, its pool, and what is known of it.
pub(crate) struct Replica {
    pub(crate) pool: Pool,
    /// The primary's pool, to check that the standby is a copy of the store.
    primary: Pool,
    quoted: String,
    /// host:port/dbname.
    target: String,
    timeout: Option<Duration>,
    primary_timeout: Option<Duration>,
    wait: Duration,
    /// The standby's head as last seen; only moves forward.
    head: watch::Sender<u64>,
    /// The highest position a reader waits for.
    wanted: watch::Sender<u64>,
    /// Readers waiting now.
    waiting: AtomicUsize,
    /// Whether reads go to the standby.
    available: AtomicBool,
    /// Whether a mismatch (not a copy) was logged since the standby was last used.
    mismatch_logged: AtomicBool,
    served: AtomicU64,
    on_primary: AtomicU64,
}

impl Replica {
    /// Sets up the standby's pool and checks it once: a standby that is not a copy of
    /// the store is refused; one that cannot be reached is set aside (reads go to the
    /// primary) and tried again every second.
    pub(crate) async fn open(
        options: ReadStoreOptions,
        schema: &str,
        primary: Pool,
        primary_timeout: Option<Duration>,
    ) -> std::result::Result<std::sync::Arc<Self>, OpenError> {
        let mut config = options.config;
        if config.schema != schema && config.schema != crate::config::DEFAULT_SCHEMA {
            return Err(OpenError::ReadStore(format!(
                "its URL names schema '{}', the store's is '{schema}': a read store serves \
                 the store's own schema",
                config.schema
            )));
        }
        config.schema = schema.to_owned();
        // Nothing is written through this pool, whatever the server.
        let mut pg_options = config.pg.get_options().unwrap_or("").to_owned();
        if !pg_options.is_empty() {
            pg_options.push(' ');
        }
        pg_options.push_str("-c default_transaction_read_only=on");
        config.pg.options(pg_options);
        let tls = config.tls_connector()?;
        let pool = crate::open::build_pool(&config, tls.as_ref())?;
        let replica = std::sync::Arc::new(Self {
            pool,
            primary,
            quoted: crate::schema::quoted(schema),
            target: crate::open::target(&config.pg),
            timeout: config.operation_timeout(),
            primary_timeout,
            wait: options.wait,
            head: watch::channel(0).0,
            wanted: watch::channel(0).0,
            waiting: AtomicUsize::new(0),
            available: AtomicBool::new(false),
            mismatch_logged: AtomicBool::new(false),
            served: AtomicU64::new(0),
            on_primary: AtomicU64::new(0),
        });
        match replica.check().await {
            Ok(Ok(())) => replica.set_available(),
            Ok(Err(mismatch)) => {
                return Err(OpenError::ReadStore(format!(
                    "{} is not a copy of this store: {mismatch}",
                    replica.target
                )));
            }
            Err(e) => {
                tracing::warn!(read_store = %replica.target, error = %e,
                    "the read store does not answer yet: reads go to the primary until it does");
            }
        }
        tokio::spawn(watch_over(
            std::sync::Arc::downgrade(&replica),
            replica.wanted.subscribe(),
        ));
        Ok(replica)
    }

    /// Whether reads go to the standby now.
    pub(crate) fn available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    fn set_available(&self) {
        self.mismatch_logged.store(false, Ordering::Relaxed);
        if !self.available.swap(true, Ordering::AcqRel) {
            tracing::info!(read_store = %self.target, "the read store answers: reads go to it");
        }
    }

    /// A read of the standby failed: a query cancelled by a recovery conflict (SQLSTATE
    /// class 40) fails over that read alone; anything else sets the standby aside,
    /// logged once, until it answers again.
    pub(crate) fn failed(&self, e: &StorageFailure) {
        if e.sqlstate().is_some_and(|c| c.starts_with("40")) {
            tracing::debug!(read_store = %self.target, error = %e, "a read of the read store was cancelled: the primary answers it");
            return;
        }
        if self.available.swap(false, Ordering::AcqRel) {
            tracing::warn!(read_store = %self.target, error = %e,
                "the read store failed: reads go to the primary until it answers again");
            // Readers waiting for it stop waiting.
            self.head.send_modify(|_| {});
        }
    }

    /// A read the standby answered whole.
    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// A read the primary answered, whole or its newest part.
    pub(crate) fn fell_back(&self) {
        self.on_primary.fetch_add(1, Ordering::Relaxed);
    }

    fn saw_head(&self, head: u64) {
        self.head.send_if_modified(|h| {
            let moved = *h < head;
            if moved {
                *h = head;
            }
            moved
        });
    }

    /// Runs one query on the standby, with its deadline.
    pub(crate) async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, StorageFailure> {
        let context = format!("the read store: {context}");
        crate::query_on(&self.pool, self.timeout, &context, sql, params).await
    }

    /// Whether the standby holds `position` (waiting for it up to the store's wait).
    pub(crate) async fn reached(&self, position: u64) -> bool {
        if *self.head.borrow() >= position {
            return true;
        }
        if self.wait.is_zero() || !self.available() {
            return false;
        }
        let mut seen = self.head.subscribe();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        // Always a wake-up for the watcher (it sleeps while nobody waits).
        self.wanted.send_modify(|w| *w = (*w).max(position));
        let reached = tokio::time::timeout(
            self.wait,
            seen.wait_for(|h| *h >= position || !self.available()),
        )
        .await
        .is_ok_and(|r| r.is_ok())
            && *self.head.borrow() >= position;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        reached
    }

    /// Up to `limit` events after `after` that pass `filter`, capped at the standby's
    /// head, and that head: one statement, one snapshot.
    pub(crate) async fn read_all(
        &self,
        after: u64,
        limit: usize,
        filter: &Filter,
    ) -> std::result::Result<(Vec<RecordedEvent>, u64), Miss> {
        let (clause, mut params) = rows::where_sql(after, filter);
        params.push(Box::new(clamp(limit)));
        let s = &self.quoted;
        let sql = format!(
            "SELECT e.*, h.cap FROM (SELECT {} AS cap FROM {s}.head) AS h LEFT JOIN LATERAL (
               SELECT {EVENT_COLUMNS} FROM {s}.events{clause} AND position <= h.cap
               ORDER BY position LIMIT ${}) AS e ON true",
            crate::schema::read_cap(s),
            params.len()
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p: &Param| &**p as &(dyn ToSql + Sync))
            .collect();
        let found = self.query("reading the log", &sql, &refs).await?;
        let mut head = None;
        let mut events = Vec::with_capacity(found.len());
        for row in &found {
            head = Some(rows::get::<i64>(row, 16)?);
            if rows::get::<Option<i64>>(row, 0)?.is_some() {
                events.push(rows::event_from_row(row)?);
            }
        }
        // In the subquery's order in practice; sorted here rather than by the server
        // (a sort of a sorted page is one pass).
        events.sort_by_key(|e| e.position);
        let head = head.ok_or_else(|| Error::Corrupt(format!("the table {s}.head has no row")))?;
        let head = stored::number(format_args!("{s}.head on the read store"), head)?;
        self.saw_head(head);
        Ok((events, head))
    }

    /// The standby's head and whether it holds the primary's hash there: `Err` when
    /// either cannot be asked, `Ok(Err(why))` when the hashes differ.
    async fn check(&self) -> std::result::Result<std::result::Result<(), String>, StorageFailure> {
        let s = &self.quoted;
        let sql = format!(
            "SELECT position, hash, {} FROM {s}.head",
            crate::schema::read_cap(s)
        );
        let rows = self.query("reading its head", &sql, &[]).await?;
        let Some(row) = rows.first() else {
            return Ok(Err(format!("its table {s}.head has no row")));
        };
        let position: i64 = row
            .try_get(0)
            .map_err(|e| StorageFailure::new("the read store: reading its head", e))?;
        let hash: String = row
            .try_get(1)
            .map_err(|e| StorageFailure::new("the read store: reading its head", e))?;
        let cap: i64 = row
            .try_get(2)
            .map_err(|e| StorageFailure::new("the read store: reading its head", e))?;
        if position > 0 {
            let sql = format!("SELECT hash FROM {s}.events WHERE position = $1");
            let client = self
                .primary
                .get()
                .await
                .map_err(|e| pool_failure("checking the read store", e))?;
            let found = timed(
                self.primary_timeout,
                "checking the read store",
                client.query(&sql, &[&position]),
            )
            .await?;
            let theirs: Option<String> = found.first().and_then(|r| r.try_get(0).ok());
            if theirs.as_deref() != Some(hash.as_str()) {
                return Ok(Err(format!(
                    "its head, position {position}, has hash {hash}; the store has {}",
                    theirs.map_or_else(|| "no event there".to_owned(), |h| format!("hash {h}"))
                )));
            }
        }
        if let Ok(head) = u64::try_from(cap) {
            self.saw_head(head);
        }
        Ok(Ok(()))
    }

    /// How the standby is doing, for `GET /v1/cluster`; `primary_head` is the store's.
    pub(crate) async fn status(
        &self,
        primary_head: Option<u64>,
    ) -> annal_core::cluster::ReadStoreStatus {
        let sql = format!(
            "SELECT {}, pg_last_xact_replay_timestamp() FROM {}.head",
            crate::schema::read_cap(&self.quoted),
            self.quoted
        );
        let context = "the read store: reading its head";
        let asked = crate::query_on(&self.pool, Some(STATUS_TIMEOUT), context, &sql, &[]).await;
        let (head, replayed) = match asked.as_deref() {
            Ok([row, ..]) => (
                row.try_get::<_, i64>(0)
                    .ok()
                    .and_then(|p| u64::try_from(p).ok()),
                row.try_get::<_, Option<PgTime>>(1).ok().flatten(),
            ),
            _ => (None, None),
        };
        if let Some(h) = head {
            self.saw_head(h);
        }
        annal_core::cluster::ReadStoreStatus {
            target: self.target.clone(),
            available: self.available(),
            head,
            behind: head.zip(primary_head).map(|(r, p)| p.saturating_sub(r)),
            replayed_commit_at: replayed.map(|t| t.0),
            reads_served: self.served.load(Ordering::Relaxed),
            reads_on_primary: self.on_primary.load(Ordering::Relaxed),
        }
    }
}

/// The standby's watcher, one per store, until the store is dropped: while readers
/// wait for a position the standby has not shown yet, reads its head every 2 ms; while
/// the standby is set aside, checks it every second and puts it back once it answers
/// and holds the store's hash at its head.
async fn watch_over(replica: Weak<Replica>, mut wanted: watch::Receiver<u64>) {
    loop {
        let Some(r) = replica.upgrade() else { return };
        if !r.available() {
            drop(r);
            tokio::time::sleep(RETRY).await;
            let Some(r) = replica.upgrade() else { return };
            match r.check().await {
                Ok(Ok(())) => r.set_available(),
                Ok(Err(mismatch)) => {
                    if !r.mismatch_logged.swap(true, Ordering::Relaxed) {
                        tracing::error!(read_store = %r.target, %mismatch,
                            "the read store is not a copy of this store: it is not read");
                    }
                }
                Err(_) => {}
            }
            continue;
        }
        let want = *wanted.borrow_and_update();
        if want > *r.head.borrow() && r.waiting.load(Ordering::Acquire) > 0 {
            let sql = format!(
                "SELECT {} FROM {}.head",
                crate::schema::read_cap(&r.quoted),
                r.quoted
            );
            match r.query("reading its head", &sql, &[]).await {
                Ok(rows) => {
                    if let Some(p) = rows
                        .first()
                        .and_then(|row| row.try_get::<_, i64>(0).ok())
                        .and_then(|p| u64::try_from(p).ok())
                    {
                        r.saw_head(p);
                    }
                }
                Err(e) => r.failed(&e),
            }
            drop(r);
            tokio::time::sleep(POLL).await;
            continue;
        }
        drop(r);
        // Until a reader waits for more (or, at the latest, a second on, to notice a
        // standby set aside meanwhile).
        if let Ok(Err(_)) = tokio::time::timeout(RETRY, wanted.changed()).await {
            return;
        }
    }
}
