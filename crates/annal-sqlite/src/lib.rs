//! annal-sqlite: the embedded annal store, one SQLite file per store.
//!
//! - **Durability**: WAL; an append is answered only after its COMMIT returned and the
//!   WAL was then fdatasync'd (the writer's commits are synced by a stage of their own,
//!   see [`durable`], so the next group is applied while the disk syncs).
//! - **Throughput**: writes go through one writer thread that commits whatever is queued
//!   as one group (see [`writer`]): 16 writers share one fsync.
//! - **Readers never block the writer**: reads run on their own connections (WAL readers
//!   see the last committed snapshot), on tokio's blocking pool, never on its workers.
//! - **A bounded reader pool**: at most [`Options::readers`] read connections, each
//!   opened once and kept (with its cached statements and page cache); a read waits
//!   for a free one instead of opening another.
//! - **Appends read nothing first**: the writer checks expected versions, deletions and
//!   replays against each stream's record (the `streams` table), written by the same
//!   commit as the stream's events (see [`annal_core::commit`]).
//! - **Appends write only the indexes appends need**: the filters' indexes are in a file
//!   of their own, filled behind the writer by the indexer thread; filtered reads are
//!   exact however far it lags (see [`index`]).
//! - **Several processes** may open the same file: each commit takes SQLite's write lock
//!   and reads the log's tip inside it, so positions, versions and the chain stay whole.
//!   Waiters in one process are woken on its commits and poll for other processes'.
//!
//! The schema is in [`schema`]; docs/storage.md describes it for people querying the
//! file by hand.

mod backup;
mod check;
pub mod durable;
pub mod filter;
mod ids;
pub mod index;
mod open;
mod page;
mod privacy;
pub mod rows;
pub mod schema;
pub mod wal_check;
pub mod writer;

#[cfg(test)]
mod unsynced_reads;

pub use open::{OpenError, Options, default_readers};

use annal_core::append::{ProposedTransaction, check_name};
use annal_core::failures::WriteHealth;
use annal_core::lease;
use annal_core::privacy::{
    ForgetRequest, Forgotten, Keyring, Keys, SubjectInfo, SubjectKey, kek_problem, opened_with_kek,
};
use annal_core::{
    AggregateInfo, Checkpoint, CheckpointStatus, Direction, Error, EventCounts, Filter, Lease,
    Limits, RawJson, RecordedEvent, Result, Snapshot, Store, StreamRecord, Timestamp,
    TransactionResult, Uuid, stored,
};
use async_trait::async_trait;
use open::open_connection;
use rows::{EVENT_COLUMNS, clamp, db};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot, watch};

/// How often a waiter polls for commits made by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// An annal store in one SQLite file. Cheap to clone; clones share the writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    limits: Limits,
    jobs: mpsc::Sender<writer::Job>,
    /// Idle read connections (never more than the pool's size).
    readers: Mutex<Vec<Connection>>,
    /// One permit per read connection the pool may have open.
    reader_permits: Arc<Semaphore>,
    head: watch::Receiver<u64>,
    /// Which commits are durable, so reads show no other ([`Self::read_durable`]).
    durability: Arc<durable::Durability>,
    /// The connection lease operations write on (opened on first use).
    leases: Mutex<Option<Connection>>,
    /// The writer thread, joined when the store is dropped.
    writer: Option<std::thread::JoinHandle<()>>,
    /// The indexer thread ([`index`]), stopped after the writer.
    indexer: Option<index::Indexer>,
    /// Whether the writer's last commit failed.
    health: WriteHealth,
    /// The key-encryption key personal data is sealed with, and the data keys it
    /// unwrapped (none: the store takes no personal data, and reads any it holds as
    /// erased).
    keys: Option<Arc<Keys>>,
}

impl Drop for Inner {
    /// Closes the job channel and waits for the writer thread: it answers what was
    /// queued, then checkpoints the WAL into the store file (see [`writer::run`]), so a
    /// cleanly closed store is whole in its main file.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(store = %self.path.display(), "the writer thread panicked");
        }
        // After the writer: it indexes everything the writer made durable, then stops.
        drop(self.indexer.take());
    }
}

impl SqliteStore {
    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        self.inner.keys.clone()
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Job,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(make(tx))
            .map_err(|_| Error::Closed("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Closed("the writer thread stopped before answering".into()))?
    }

    /// Runs `f` on a connection of its own, on the blocking pool: for work that takes
    /// SQLite's write lock beside the writer (a KEK rotation, a key import), named
    /// `what` in errors.
    async fn on_own_connection<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = open_connection(&path, false).map_err(db)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::storage(format!("{what} task failed: {e}")))?
    }

    /// Runs `f` on a pooled read connection on the blocking pool, once one is free.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let permit = inner
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("the reader pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            // Holding a permit guarantees an idle connection or room to open one.
            let _permit = permit;
            let pooled = inner.readers.lock().map(|mut v| v.pop()).unwrap_or(None);
            let conn = match pooled {
                Some(c) => c,
                None => open::open_reader(&inner.path).map_err(db)?,
            };
            let out = f(&conn);
            if let Ok(mut idle) = inner.readers.lock() {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::storage(format!("a read task failed: {e}")))?
    }
}

impl SqliteStore {
    /// Runs `f` like [`Self::read`], inside one read transaction, with the last position
    /// it may show: `Some(cap)` while a commit of this store is visible but not yet
    /// durable (every position above `cap` is then hidden), `None` when all are. The
    /// snapshot begins before the cap is taken, so any commit the snapshot holds and the
    /// cap allows was durable when the cap was taken ([`durable`]).
    async fn read_durable<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, Option<u64>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let durability = self.inner.durability.clone();
        self.read(move |c| {
            c.execute_batch("BEGIN").map_err(db)?;
            let out = c
                .prepare_cached("SELECT 1 FROM events LIMIT 1")
                .and_then(|mut s| s.exists([]))
                .map_err(db)
                .and_then(|_| f(c, durability.visible_cap()));
            // A read transaction: ending it cannot lose anything.
            let ended = c.execute_batch("COMMIT").map_err(db);
            let out = out?;
            ended.map(|()| out)
        })
        .await
    }
}

impl SqliteStore {
    /// Runs `f` in an IMMEDIATE transaction on the lease connection, on the blocking
    /// pool, and commits (durable once answered). Lease writes are a row or two: they
    /// hold SQLite's write lock for one short commit, beside the writer thread's groups.
    async fn lease_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = inner
                .leases
                .lock()
                .map_err(|_| Error::storage("the lease connection's lock is poisoned"))?;
            if slot.is_none() {
                *slot = Some(open_connection(&inner.path, false).map_err(db)?);
            }
            let conn = slot
                .as_mut()
                .ok_or_else(|| Error::storage("no lease connection"))?;
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let now = Timestamp::now().to_string();
            let out = f(&tx, &now)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::storage(format!("a lease task failed: {e}")))?
    }
}

/// A leases row: owner, token, expires_at.
fn lease_from_row(
    group: &str,
    partition: u32,
    owner: String,
    token: i64,
    at: &str,
) -> Result<Lease> {
    Ok(Lease {
        group: group.to_owned(),
        partition,
        owner,
        token: stored::number("leases.token", token)?,
        expires_at: rows::time("leases.expires_at", at)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
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
        let after = after.to_owned();
        self.read(move |c| privacy::subjects(c, &after, limit))
            .await
    }

    async fn subject(&self, subject: &str) -> Result<Option<SubjectInfo>> {
        let subject = subject.to_owned();
        self.read(move |c| privacy::subject(c, &subject)).await
    }

    async fn subject_events(
        &self,
        subject: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let subject = subject.to_owned();
        let keys = self.keys();
        self.read_durable(move |c, cap| {
            let events = privacy::subject_events(c, &subject, after_position, limit, cap)?;
            privacy::open(c, keys.as_deref(), rows::checked(c, events)?)
        })
        .await
    }

    async fn key_rows(&self, after: &str, limit: usize) -> Result<Vec<SubjectKey>> {
        let after = after.to_owned();
        self.read(move |c| privacy::key_rows_after(c, &after, limit))
            .await
    }

    async fn import_key_rows(&self, rows: Vec<SubjectKey>) -> Result<u64> {
        let keys = opened_with_kek(self.keys(), "the key that wraps the rows")?;
        self.on_own_connection("the key import", move |conn| {
            privacy::import_keys(conn, &keys, &rows)
        })
        .await
    }

    async fn kek_problem(&self) -> Result<Option<String>> {
        let in_use = self.read(privacy::kek_in_use).await?;
        Ok(kek_problem(in_use.as_deref(), self.keys().as_deref()))
    }

    async fn rotate_kek(&self, new: Keyring) -> Result<u64> {
        let keys = opened_with_kek(self.keys(), "the current one to rotate")?;
        self.on_own_connection("the rotation", move |conn| {
            privacy::rotate(conn, &keys, new)
        })
        .await
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
        let id = aggregate_id.to_owned();
        let keys = self.keys();
        self.read_durable(move |c, cap| {
            let (sql, from) = match direction {
                Direction::Forward => (
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = ?1
                         AND aggregate_version >= ?2 AND position <= ?4
                         ORDER BY aggregate_version LIMIT ?3"
                    ),
                    from_version.unwrap_or(1),
                ),
                Direction::Backward => (
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = ?1
                         AND aggregate_version <= ?2 AND position <= ?4
                         ORDER BY aggregate_version DESC LIMIT ?3"
                    ),
                    from_version.unwrap_or(u64::MAX),
                ),
            };
            let until = clamp(cap.unwrap_or(u64::MAX));
            let params = vec![
                rusqlite::types::Value::Text(id),
                rusqlite::types::Value::Integer(clamp(from)),
                rusqlite::types::Value::Integer(clamp(limit)),
                rusqlite::types::Value::Integer(until),
            ];
            page::read(c, keys.as_deref(), &sql, params)
        })
        .await
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        let filter = filter.clone();
        let keys = self.keys();
        self.read_durable(move |c, cap| {
            let (sql, params) =
                crate::filter::read_all_query(c, after_position, limit, &filter, cap)?;
            page::read(c, keys.as_deref(), &sql, params)
        })
        .await
    }

    /// The log as stored, for `verify` (which reports a mismatch rather than failing).
    async fn read_all_unchecked(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        let filter = filter.clone();
        self.read_durable(move |c, cap| {
            crate::filter::read_all(c, after_position, limit, &filter, cap)
        })
        .await
    }

    /// One `GROUP BY event_type` query over the filter's rows.
    async fn count_by_type(
        &self,
        after_position: u64,
        up_to: Option<u64>,
        filter: &Filter,
    ) -> Result<EventCounts> {
        let filter = filter.clone();
        self.read_durable(move |c, cap| {
            let (up_to, counts) =
                crate::filter::count_by_type(c, after_position, up_to, &filter, cap)?;
            Ok(EventCounts::new(up_to, counts))
        })
        .await
    }

    async fn event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let keys = self.keys();
        self.read_durable(move |c, cap| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1 AND position <= ?2"
            );
            let until = clamp(cap.unwrap_or(u64::MAX));
            let events =
                rows::query_events(c, &sql, rusqlite::params![&event_id.as_bytes()[..], until])?;
            Ok(privacy::open(c, keys.as_deref(), rows::checked(c, events)?)?.pop())
        })
        .await
    }

    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<AggregateInfo>> {
        Ok(self
            .stream(aggregate_id)
            .await?
            .and_then(StreamRecord::aggregate_info))
    }

    /// The stream's record, unless a commit not yet durable changed it: then derived from
    /// the events reads show (the rare case; [`durable`]).
    async fn stream(&self, aggregate_id: &str) -> Result<Option<StreamRecord>> {
        let id = aggregate_id.to_owned();
        let found = self
            .read_durable(move |c, cap| match cap {
                Some(cap) if rows::stream_changed_after(c, &id, cap)? => Ok(None),
                _ => rows::stream_record(c, &id).map(Some),
            })
            .await?;
        match found {
            Some(record) => Ok(record),
            None => annal_core::streams::record_from_events(self, aggregate_id).await,
        }
    }

    fn indexed_up_to(&self) -> Option<u64> {
        Some(self.inner.durability.nudge().indexed())
    }

    fn write_failure(&self) -> Option<String> {
        self.inner.health.failure()
    }

    /// SQLite's `integrity_check`, the stream records and the index file against the
    /// log, and the key table against the log and the KEK.
    async fn check_storage(&self) -> Result<Vec<String>> {
        let mut found = self.read(check::problems).await?;
        let keys = self.keys();
        found.extend(annal_core::privacy::key_table_problems(self, keys.as_deref()).await?);
        Ok(found)
    }

    async fn head(&self, aggregate_types: &[String]) -> Result<u64> {
        let types = aggregate_types.to_vec();
        self.read_durable(move |c, cap| crate::filter::head_of(c, &types, cap))
            .await
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
        let (id, tag) = (aggregate_id.to_owned(), tag.to_owned());
        let below = clamp(at_or_below.unwrap_or(u64::MAX));
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT aggregate_type, aggregate_version, state, created_at FROM snapshots
                     WHERE aggregate_id = ?1 AND tag = ?2 AND aggregate_version <= ?3
                     ORDER BY aggregate_version DESC LIMIT 1",
                )
                .map_err(db)?
                .query_row(rusqlite::params![id, tag, below], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()
                .map_err(db)?;
            let Some((aggregate_type, version, state, created_at)) = row else {
                return Ok(None);
            };
            Ok(Some(Snapshot {
                aggregate_id: id,
                aggregate_type,
                aggregate_version: stored::number("snapshots.aggregate_version", version)?,
                tag,
                state: RawJson::from_stored(state),
                created_at: rows::time("snapshots.created_at", &created_at)?,
            }))
        })
        .await
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let name = name.to_owned();
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT name, position, status, error_count, last_error, updated_at, source
                     FROM checkpoints WHERE name = ?1",
                )
                .map_err(db)?
                .query_row([&name], checkpoint_row)
                .optional()
                .map_err(db)?;
            row.map(checkpoint_from_row).transpose()
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT name, position, status, error_count, last_error, updated_at, source
                     FROM checkpoints ORDER BY name",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([], checkpoint_row)
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter().map(checkpoint_from_row).collect()
        })
        .await
    }

    async fn acquire_lease(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        lease::check_request(group, owner, ttl, false)?;
        let (group, owner) = (group.to_owned(), owner.to_owned());
        self.lease_write(move |tx, now| {
            let row: Option<(Option<String>, i64, String)> = tx
                .prepare_cached(
                    "SELECT owner, token, expires_at FROM leases
                     WHERE group_name = ?1 AND partition = ?2",
                )
                .map_err(db)?
                .query_row(params![group, partition], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(db)?;
            let token = match row {
                Some((Some(_), _, expires)) if expires.as_str() > now => return Ok(None),
                Some((_, token, _)) => token + 1,
                None => 1,
            };
            let expires = lease::expiry(rows::time("the database clock", now)?, ttl).to_string();
            tx.prepare_cached(
                "INSERT INTO leases (group_name, partition, owner, token, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (group_name, partition) DO UPDATE SET owner = excluded.owner,
                   token = excluded.token, expires_at = excluded.expires_at",
            )
            .map_err(db)?
            .execute(params![group, partition, owner, token, expires])
            .map_err(db)?;
            lease_from_row(&group, partition, owner, token, &expires).map(Some)
        })
        .await
    }

    async fn renew_lease(&self, held: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        lease::check_request(&held.group, &held.owner, ttl, false)?;
        let held = held.clone();
        self.lease_write(move |tx, now| {
            let expires = lease::expiry(rows::time("the database clock", now)?, ttl).to_string();
            let n = tx
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?5
                     WHERE group_name = ?1 AND partition = ?2 AND owner = ?3 AND token = ?4",
                )
                .map_err(db)?
                .execute(params![
                    held.group,
                    held.partition,
                    held.owner,
                    clamp(held.token),
                    expires
                ])
                .map_err(db)?;
            if n == 0 {
                return Ok(None);
            }
            Ok(Some(Lease {
                expires_at: rows::time("leases.expires_at", &expires)?,
                ..held
            }))
        })
        .await
    }

    async fn release_lease(&self, held: &Lease) -> Result<bool> {
        lease::check_request(&held.group, &held.owner, Duration::ZERO, true)?;
        let held = held.clone();
        self.lease_write(move |tx, now| {
            let n = tx
                .prepare_cached(
                    "UPDATE leases SET owner = NULL, expires_at = ?5
                     WHERE group_name = ?1 AND partition = ?2 AND owner = ?3 AND token = ?4",
                )
                .map_err(db)?
                .execute(params![
                    held.group,
                    held.partition,
                    held.owner,
                    clamp(held.token),
                    now
                ])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn leases(&self, group: &str) -> Result<Vec<Lease>> {
        check_name("group", group)?;
        let group = group.to_owned();
        self.read(move |c| {
            let now = Timestamp::now().to_string();
            let mut stmt = c
                .prepare_cached(
                    "SELECT partition, owner, token, expires_at FROM leases
                     WHERE group_name = ?1 AND owner IS NOT NULL AND expires_at > ?2
                     ORDER BY partition",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![group, now], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(p, owner, token, at)| lease_from_row(&group, p, owner, token, &at))
                .collect()
        })
        .await
    }

    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        lease::check_request(group, member, ttl, true)?;
        let (group, member) = (group.to_owned(), member.to_owned());
        self.lease_write(move |tx, now| {
            if ttl.is_zero() {
                tx.prepare_cached(
                    "DELETE FROM group_members WHERE group_name = ?1 AND member = ?2",
                )
                .map_err(db)?
                .execute(params![group, member])
                .map_err(db)?;
            } else {
                let expires =
                    lease::expiry(rows::time("the database clock", now)?, ttl).to_string();
                tx.prepare_cached(
                    "INSERT INTO group_members (group_name, member, expires_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_name, member) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .map_err(db)?
                .execute(params![group, member, expires])
                .map_err(db)?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT member FROM group_members
                     WHERE group_name = ?1 AND expires_at > ?2 ORDER BY member",
                )
                .map_err(db)?;
            let members = stmt
                .query_map(params![group, now], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            Ok(members)
        })
        .await
    }

    async fn wait_for_head(&self, after_position: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.head.clone();
        changes.mark_unchanged();
        loop {
            let head = self.head(&[]).await?;
            let now = tokio::time::Instant::now();
            if head > after_position || now >= deadline {
                return Ok(head);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            // Woken early by a commit in this process; otherwise poll for other processes.
            if let Ok(Err(_)) = tokio::time::timeout(nap, changes.changed()).await {
                // The writer is gone (store closing): keep polling without a wake-up.
                tokio::time::sleep(nap).await;
            }
        }
    }
}

/// A checkpoints row's columns: name, position, status, error_count, last_error, updated_at.
type CheckpointRow = (
    String,
    i64,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
);

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn checkpoint_from_row(row: CheckpointRow) -> Result<Checkpoint> {
    let (name, position, status, error_count, last_error, updated_at, source) = row;
    let status: CheckpointStatus = status
        .parse()
        .map_err(|e: Error| Error::Corrupt(format!("checkpoint '{name}': {e}")))?;
    let position = stored::number(format_args!("checkpoints.position of '{name}'"), position)?;
    let error_count = stored::number(
        format_args!("checkpoints.error_count of '{name}'"),
        error_count,
    )?;
    Ok(Checkpoint {
        name,
        position,
        status,
        error_count,
        last_error,
        updated_at: rows::time("checkpoints.updated_at", &updated_at)?,
        source,
    })
}
