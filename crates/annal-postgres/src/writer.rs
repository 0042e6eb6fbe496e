//! The writer task and its group commit: how positions stay contiguous and in commit
//! order with writers in many processes.
//!
//! # Why not a sequence
//!
//! The obvious PostgreSQL event table numbers events with a sequence (`bigserial`).
//! That loses events for subscribers, for two reasons. Sequences are not transactional:
//! a transaction that takes number 7 and rolls back leaves a gap for ever, so a reader
//! cannot tell a gap that will never fill from a commit still in flight. And numbers are
//! taken at insert time, not at commit time: transaction A takes 7, transaction B takes 8
//! and commits first; a subscriber reading "after 6" sees 8, moves its cursor to 8, and
//! never sees 7 when A commits a moment later. Several well-known event stores built on
//! PostgreSQL have shipped exactly this bug.
//!
//! # What annal does instead
//!
//! The one-row table `head` holds the last committed position, its hash and its time.
//! Every commit, from any process, starts with `SELECT … FROM head FOR UPDATE`: commits
//! are serialised on that row. Holding the lock, the commit numbers its events from
//! `head.position + 1`, chains them from `head.hash`, inserts them, moves `head`, sends
//! `NOTIFY`, and commits. The next commit's lock is granted only when this transaction
//! has ended, and PostgreSQL makes a transaction visible before it releases its locks,
//! so:
//!
//! - positions are contiguous (nothing is numbered unless it commits: a rolled-back
//!   group leaves `head` where it was);
//! - commit order is position order, and visibility is monotonic: when a reader sees
//!   position `n`, every position below `n` is already visible. A subscriber that reads
//!   "after its cursor" never skips anything.
//!
//! The price is that commits do not overlap. Group commit amortises it: one writer task
//! per store takes every queued job (appends, transactions, checkpoint and snapshot
//! writes, imports) and commits them as one transaction: one lock, one WAL flush, a few
//! round trips (the reads of a group are pipelined, then its writes). Each job checks
//! everything (expected versions, stream deletion, aggregate types, idempotent replays,
//! its checkpoint) against what the database holds plus what earlier jobs of the group
//! wrote, before it writes anything, so a refused job writes nothing and fails alone; the
//! others commit. The checks are [`annal_core::commit`]'s, shared with every backend; the
//! group reads ahead what they will ask for (the streams' records in `streams`, the
//! replayed event_ids, checkpoints and leases) and answers them from memory.
//! A database failure fails the whole group and nothing of it is written; if the database
//! refused the group (an error it reported, not a lost connection), each job is retried
//! alone, so one job the database cannot take does not fail the others. Callers are
//! answered only after COMMIT returned, so an acknowledged job is durable; when COMMIT's
//! outcome is unknown (connection lost), the callers get [`Error::Storage`] and can
//! retry with the same event_ids.
//!
//! `recorded_at` is the committing process's clock, raised to `head.recorded_at` if that
//! clock is behind, so it never decreases with position, across processes too.
//!
//! # Durable before visible: two paths
//!
//! A group holds the head lock from its read of the tip to the end of its transaction.
//! With one writer that costs nothing: its groups follow each other anyway. With
//! writers in several processes it is the whole cost: a synchronous COMMIT holds the
//! lock across its WAL flush (and the wait for a synchronous standby), so the groups of
//! different processes take one flush each, one after another. So a group takes one of
//! two paths ([`path`] chooses, under the lock, from the head it locked):
//!
//! - **Synchronous** (this writer alone: the head is the one its last group left, and
//!   for [`path::CONTENDED_FOR`] no other writer has committed): one transaction, as
//!   described above. Its `UPDATE head` also sets `head.durable_position` to the new
//!   head: a synchronous commit becomes visible only once flushed, so whoever sees that
//!   column sees a durable position.
//! - **Unflushed, then confirmed** (another writer committed since this one's last
//!   group, or lately): the group's transaction runs `SET LOCAL synchronous_commit =
//!   off`, so COMMIT releases the lock as soon as its commit record is in the WAL
//!   buffers; its `UPDATE head` leaves `durable_position` alone and sends no NOTIFY.
//!   Pipelined behind that COMMIT, in the same round trip, one statement in its own
//!   transaction at the session's `synchronous_commit` raises this writer's row of
//!   `durable` to the head it sees and sends the NOTIFY. Its COMMIT returns once the WAL
//!   is flushed (and sent to a synchronous standby) past its own commit record, which
//!   follows the group's and every commit it can see. Callers are answered only then.
//!   Several processes' confirmations wait for the flush together, while the next group
//!   already holds the lock.
//!
//! Readers see events up to the read cap, `greatest(head.durable_position,
//! max(durable.position))` ([`crate::schema::read_cap`]), in the same statement as
//! their read. Invariants:
//!
//! - *Every position at or below the cap is durable*: the cap is a value some
//!   synchronous commit wrote, and that commit returned only once flushed past the
//!   commits of all those positions (they were visible to it, so their commit records
//!   precede its own in the WAL). After a crash, an unflushed group is lost with every
//!   group numbered after it (their records follow it in the WAL), none of which was
//!   confirmed: the log stays contiguous, and no caller was answered for them.
//! - *Every position at or below the cap is visible, in any snapshot that shows the
//!   cap*: the commits of those positions ended before the commit that wrote the cap.
//!   So reads capped at it are gap-free prefixes, and the cap only rises (both parts
//!   only rise; `PgStore::connect` deletes only rows the durable head has passed).
//! - *An answer never rests on a commit that may be lost*: a group that found another
//!   writer's head (a replay of its event, a version it refused on) confirms even when
//!   it wrote nothing, so its callers wait for a flush covering that head.
//! - *A confirmed group is never written twice*: if the confirmation fails after the
//!   group committed, the failure is not reported as the server's refusal, so its jobs
//!   are not retried alone; callers learn the outcome is unknown and retry with the same
//!   event_ids. Its events become readable when a later confirmation or synchronous
//!   commit covers them.
//!
//! Switching is per group and needs no coordination: each path keeps both invariants on
//! its own, whatever the other writers do. What is visible before the flush: the
//! `events` rows above the cap (no read shows them), the `head` and `streams` rows the
//! group wrote (the writers' checks read them under the lock, which is what the order
//! of commits needs; `Store::stream` waits until the cap covers a record's last event),
//! and its `checkpoints` and `snapshots` rows (their readers may see them between the
//! COMMIT and the confirmation; their writers are answered only after it).

use crate::rows::{self, EVENT_COLUMNS, PgTime, clamp, micros_to_timestamptz};
use crate::{StorageFailure, pool_failure};
use annal_core::commit::{self, Fail, Group};
use annal_core::import::Tip;
use annal_core::privacy::SubjectKey;
use annal_core::stored::{self, OutOfRange};
use annal_core::{Error, Hash, RecordedEvent, Result, StreamRecord, Timestamp, Uuid};
use deadpool_postgres::{Object, Pool};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;

/// Most events one group commit takes before it commits.
const MAX_GROUP_EVENTS: usize = 20_000;
/// How many times a group yields to let writers of the last group queue again.
const GATHER_YIELDS: usize = 4;

use annal_core::job::Outcome;
pub use annal_core::job::{Job, SnapshotJob};

mod columns;
pub mod path;
use columns::{CheckpointColumns, EventColumns, SnapshotColumns, StreamColumns};

/// The SQL the writer runs, for one schema.
pub struct Sql {
    lock_head: String,
    streams: String,
    by_id: String,
    checkpoints: String,
    leases: String,
    insert_events: String,
    upsert_streams: String,
    upsert_checkpoints: String,
    upsert_snapshots: String,
    move_head: String,
    move_head_unflushed: String,
    confirm: String,
    keys: crate::privacy::KeySql,
    /// The NOTIFY channel: `<schema>.head`.
    pub channel: String,
}

impl Sql {
    /// The statements for `schema` (unquoted, already checked).
    pub fn new(schema: &str) -> Self {
        let s = crate::schema::quoted(schema);
        Self {
            lock_head: format!("SELECT position, hash, recorded_at FROM {s}.head FOR UPDATE"),
            streams: format!(
                "SELECT aggregate_id, aggregate_type, version, tombstoned, metadata_version,
                   metadata
                 FROM {s}.streams WHERE aggregate_id = ANY($1::text[])"
            ),
            by_id: format!("SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = ANY($1::uuid[])"),
            checkpoints: format!(
                "SELECT name, position FROM {s}.checkpoints WHERE name = ANY($1::text[])"
            ),
            // Share-locked until the commit ends: an acquisition waits for the commit, so a
            // fenced checkpoint write never lands after its lease changed hands.
            leases: format!(
                "SELECT l.group_name, l.partition, l.owner, l.token
                 FROM {s}.leases AS l
                 JOIN unnest($1::text[], $2::bigint[]) AS f(g, p)
                   ON l.group_name = f.g AND l.partition = f.p
                 FOR SHARE OF l"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events (position, event_id, event_type, event_version,
                   aggregate_type, aggregate_id, aggregate_version, recorded_at, user_id,
                   correlation_id, causation_id, data, metadata, hash, data_json, metadata_json,
                   principal, sealed)
                 SELECT p, id, et, ev, aty, aid, av, {}, u, co, ca, d, m, h,
                   CASE WHEN dj THEN d::jsonb END, CASE WHEN mj THEN m::jsonb END, pr, se
                 FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
                   $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[],
                   $12::text[], $13::text[], $14::text[], $15::bool[], $16::bool[], $17::text[],
                   $18::text[])
                   AS t(p, id, et, ev, aty, aid, av, at, u, co, ca, d, m, h, dj, mj, pr, se)",
                micros_to_timestamptz("at")
            ),
            upsert_streams: format!(
                "INSERT INTO {s}.streams (aggregate_id, aggregate_type, version, tombstoned,
                   truncate_before, metadata_version, metadata)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[],
                   $5::bigint[], $6::bigint[], $7::text[])
                 ON CONFLICT (aggregate_id) DO UPDATE SET
                   aggregate_type = excluded.aggregate_type, version = excluded.version,
                   tombstoned = excluded.tombstoned, truncate_before = excluded.truncate_before,
                   metadata_version = excluded.metadata_version, metadata = excluded.metadata"
            ),
            upsert_checkpoints: format!(
                "INSERT INTO {s}.checkpoints
                   (name, position, status, error_count, last_error, updated_at, source)
                 SELECT n, p, st, ec, le, {}, src
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                             $7::text[])
                   AS t(n, p, st, ec, le, at, src)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                   status = excluded.status, error_count = excluded.error_count,
                   last_error = excluded.last_error, updated_at = excluded.updated_at,
                   source = excluded.source",
                micros_to_timestamptz("at")
            ),
            upsert_snapshots: format!(
                "INSERT INTO {s}.snapshots (aggregate_id, aggregate_type, aggregate_version, tag,
                   state, state_json, created_at)
                 SELECT i, ty, v, tg, st, CASE WHEN sj THEN st::jsonb END, {}
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                   $6::bool[], $7::bigint[]) AS t(i, ty, v, tg, st, sj, at)
                 ON CONFLICT (aggregate_id, tag, aggregate_version) DO UPDATE SET
                   aggregate_type = excluded.aggregate_type, state = excluded.state,
                   state_json = excluded.state_json, created_at = excluded.created_at",
                micros_to_timestamptz("at")
            ),
            // A synchronous commit is visible only once flushed: its head is durable.
            move_head: format!(
                "WITH moved AS (
                     UPDATE {s}.head SET position = $1, hash = $2, recorded_at = {},
                       durable_position = $1
                     RETURNING position
                 )
                 SELECT pg_notify($4, position::text) FROM moved",
                micros_to_timestamptz("$3")
            ),
            // An unflushed commit: readers do not see it until `confirm` (or a later
            // synchronous commit) covers it, so it neither raises `durable_position`
            // nor notifies.
            move_head_unflushed: format!(
                "UPDATE {s}.head SET position = $1, hash = $2, recorded_at = {}",
                micros_to_timestamptz("$3")
            ),
            // Its own transaction, at the session's synchronous_commit: it returns once
            // the WAL is flushed past it, and so past every commit it can see, whose
            // commit records come before its own. So it raises the writer's row to the
            // head it sees (the group's, or later), never to a position it assumes.
            confirm: format!(
                "WITH confirmed AS (
                     INSERT INTO {s}.durable AS d (writer, position)
                     VALUES ($1, (SELECT position FROM {s}.head))
                     ON CONFLICT (writer) DO UPDATE
                       SET position = greatest(d.position, excluded.position),
                           updated_at = now()
                     RETURNING position
                 )
                 SELECT pg_notify($2, position::text) FROM confirmed"
            ),
            keys: crate::privacy::KeySql::new(&s),
            channel: format!("{schema}.head"),
        }
    }
}

/// What the writer task needs.
pub struct Writer {
    /// The store's pool.
    pub pool: Pool,
    /// Its statements.
    pub sql: Arc<Sql>,
    /// Longest a group may take before it is abandoned (its connection dropped).
    pub timeout: Option<Duration>,
    /// Where the writer publishes the head after each commit.
    pub head: Arc<watch::Sender<u64>>,
    /// Whether its last commit failed.
    pub health: annal_core::failures::WriteHealth,
    /// Its row in `durable` (new at every open).
    pub id: Uuid,
    /// Which path the next group takes ([`path`]).
    pub path: std::sync::Mutex<path::Adaptive>,
}

/// Runs the writer until every sender is gone.
pub async fn run(w: Writer, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut last_group = 1usize;
    while let Some(first) = jobs.recv().await {
        let mut weight = first.weight();
        let mut group = vec![first];
        let mut yields = 0;
        while weight < MAX_GROUP_EVENTS {
            match jobs.try_recv() {
                Ok(job) => {
                    weight += job.weight();
                    group.push(job);
                }
                // Writers answered by the last commit are still preparing their next job:
                // when the last group showed that many were active, let them run a moment.
                Err(mpsc::error::TryRecvError::Empty)
                    if group.len() < last_group && yields < GATHER_YIELDS =>
                {
                    yields += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        last_group = group.len();
        match w.commit_group(&group).await {
            Ok((outcomes, tip)) => {
                w.health.succeeded();
                w.publish(tip);
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    job.answer(outcome);
                }
            }
            Err(e) if group.len() > 1 && e.is_server_error() => {
                // The database refused the group: one job may be the cause. Retry each
                // alone so the others are not failed with it.
                for job in group {
                    match w.commit_group(std::slice::from_ref(&job)).await {
                        Ok((mut outcomes, tip)) => {
                            w.health.succeeded();
                            w.publish(tip);
                            let outcome = outcomes
                                .pop()
                                .unwrap_or_else(|| Err(Error::Corrupt("no outcome".into())));
                            job.answer(outcome);
                        }
                        Err(e) => {
                            let failed = group_failed(&e);
                            w.health.failed(&failed);
                            job.answer(Err(failed));
                        }
                    }
                }
            }
            Err(e) => {
                let failed = group_failed(&e);
                w.health.failed(&failed);
                for job in group {
                    job.answer(Err(group_failed(&e)));
                }
            }
        }
    }
}

fn group_failed(e: &StorageFailure) -> Error {
    Error::storage(StorageFailure::wrap(
        "the commit failed; if it was lost with the connection its outcome is unknown (retry with the same event_ids)",
        e,
    ))
}

/// A lease's owner (`None`: released) and fencing token.
type Holder = (Option<String>, u64);

/// What a group read ahead, under the head lock: the answers to the shared checks'
/// questions ([`commit::Lookup`]).
struct ReadAhead {
    /// The streams asked for ([`commit::streams_touched`]), and the records found. A
    /// stored number out of range (here, in a checkpoint or in a lease) fails only the
    /// jobs that ask for it, as [`Error::Corrupt`].
    asked: HashSet<String>,
    streams: HashMap<String, Result<StreamRecord, OutOfRange>>,
    /// Stored events by id, for replays.
    by_id: HashMap<Uuid, RecordedEvent>,
    /// Stored events that could not be read back.
    damaged: HashSet<Uuid>,
    checkpoints: HashMap<String, Result<u64, OutOfRange>>,
    /// The leases fenced checkpoint writes name: (group, partition) → (owner, token).
    leases: HashMap<(String, u32), Result<Holder, OutOfRange>>,
    /// The subjects asked for, and their key-table rows (an unreadable row fails only
    /// the jobs that need it).
    subjects: HashSet<String>,
    keys: HashMap<String, std::result::Result<SubjectKey, String>>,
    /// The KEK id a row of the key table names, read when the group names subjects.
    kek_in_use: Option<String>,
}

impl commit::Lookup for ReadAhead {
    fn stream(&mut self, aggregate_id: &str) -> Result<Option<StreamRecord>, Fail> {
        if !self.asked.contains(aggregate_id) {
            return Err(Fail::Group(Error::storage(format!(
                "the writer did not read stream '{aggregate_id}' ahead"
            ))));
        }
        found(self.streams.get(aggregate_id))
    }

    fn event(&mut self, event_id: Uuid) -> Result<Option<RecordedEvent>, Fail> {
        if self.damaged.contains(&event_id) {
            return Err(Fail::Job(Error::Corrupt(format!(
                "the stored event {event_id} cannot be read back"
            ))));
        }
        Ok(self.by_id.get(&event_id).cloned())
    }

    fn checkpoint(&mut self, name: &str) -> Result<Option<u64>, Fail> {
        found(self.checkpoints.get(name))
    }

    fn lease(
        &mut self,
        group: &str,
        partition: u32,
    ) -> Result<Option<(Option<String>, u64)>, Fail> {
        found(self.leases.get(&(group.to_owned(), partition)))
    }

    fn subject_key(&mut self, subject: &str) -> Result<Option<SubjectKey>, Fail> {
        if !self.subjects.contains(subject) {
            // Only a stored event's other subjects: read as no key, so a replay with
            // other subjects is a duplicate, as it should be.
            return Ok(None);
        }
        match self.keys.get(subject) {
            None => Ok(None),
            Some(Ok(k)) => Ok(Some(k.clone())),
            Some(Err(e)) => Err(Fail::Job(Error::Corrupt(e.clone()))),
        }
    }

    fn kek_in_use(&mut self) -> Result<Option<String>, Fail> {
        Ok(self.kek_in_use.clone())
    }
}

/// What the read-ahead found for one question: nothing, a value, or a stored number out
/// of range, which fails the job that asked.
fn found<T: Clone>(v: Option<&Result<T, OutOfRange>>) -> Result<Option<T>, Fail> {
    v.cloned()
        .transpose()
        .map_err(|e| Fail::Job(Error::from(e)))
}

type Fut<'a> = BoxFuture<'a, std::result::Result<u64, tokio_postgres::Error>>;

/// Polls a future once, from an async context.
async fn poll_once<T>(fut: &mut BoxFuture<'_, T>) -> Poll<T> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

impl Writer {
    fn publish(&self, tip: u64) {
        self.head.send_if_modified(|h| {
            let moved = *h < tip;
            if moved {
                *h = tip;
            }
            moved
        });
    }

    /// Commits a group on a pooled connection; a connection that failed (or timed out)
    /// mid-transaction is dropped, never returned to the pool.
    async fn commit_group(
        &self,
        group: &[Job],
    ) -> std::result::Result<(Vec<Result<Outcome>>, u64), StorageFailure> {
        let client = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.pool.get())
                .await
                .map_err(|_| StorageFailure::timeout("taking a connection", t))?,
            None => self.pool.get().await,
        }
        .map_err(|e| pool_failure("taking a connection for a commit", e))?;
        let result = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.commit_on(&client, group))
                .await
                .unwrap_or_else(|_| Err(StorageFailure::timeout("committing", t))),
            None => self.commit_on(&client, group).await,
        };
        if result.is_err() {
            // Its transaction state is unknown: close it (the server rolls back).
            drop(Object::take(client));
            self.adaptive().failed();
        }
        result
    }

    fn adaptive(&self) -> std::sync::MutexGuard<'_, path::Adaptive> {
        self.path
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn commit_on(
        &self,
        client: &deadpool_postgres::Client,
        group: &[Job],
    ) -> std::result::Result<(Vec<Result<Outcome>>, u64), StorageFailure> {
        let fail = |ctx: &'static str| move |e| StorageFailure::new(ctx, e);
        let sql = &self.sql;
        // What the group needs to read.
        let mut aggregates: Vec<String> = Vec::new();
        let mut ids: Vec<Uuid> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut fences: Vec<(&str, i64)> = Vec::new();
        let mut subjects: Vec<&str> = Vec::new();
        for job in group {
            aggregates.extend(commit::streams_touched(job));
            match job {
                Job::Transact(t, _) => {
                    for a in &t.appends {
                        for e in &a.events {
                            if let Some(p) = &e.personal {
                                subjects.extend(p.subjects.iter().map(String::as_str));
                            }
                        }
                        ids.extend(
                            a.events
                                .iter()
                                .filter(|e| e.id_supplied)
                                .map(|e| e.event_id),
                        );
                    }
                    if let Some(c) = &t.checkpoint {
                        names.push(&c.name);
                        if let Some(f) = &c.lease {
                            fences.push((&f.group, i64::from(f.partition)));
                        }
                    }
                }
                Job::Snapshot(..) => {}
                Job::Import(events, _) => ids.extend(events.iter().map(|e| e.event_id)),
                Job::Forget(f, _) => subjects.push(&f.subject),
            }
        }
        subjects.sort_unstable();
        subjects.dedup();
        aggregates.sort_unstable();
        aggregates.dedup();
        ids.sort_unstable();
        ids.dedup();
        names.sort_unstable();
        names.dedup();
        fences.sort_unstable();
        fences.dedup();
        let (fence_groups, fence_partitions): (Vec<&str>, Vec<i64>) =
            fences.iter().copied().unzip();

        let prep = fail("preparing the commit's statements");
        let lock_head = client.prepare_cached(&sql.lock_head).await.map_err(prep)?;
        let streams = client.prepare_cached(&sql.streams).await.map_err(prep)?;
        let by_id = client.prepare_cached(&sql.by_id).await.map_err(prep)?;
        let checkpoints = client
            .prepare_cached(&sql.checkpoints)
            .await
            .map_err(prep)?;
        let leases = client.prepare_cached(&sql.leases).await.map_err(prep)?;
        let insert_events = client
            .prepare_cached(&sql.insert_events)
            .await
            .map_err(prep)?;
        let upsert_streams = client
            .prepare_cached(&sql.upsert_streams)
            .await
            .map_err(prep)?;
        let upsert_checkpoints = client
            .prepare_cached(&sql.upsert_checkpoints)
            .await
            .map_err(prep)?;
        let upsert_snapshots = client
            .prepare_cached(&sql.upsert_snapshots)
            .await
            .map_err(prep)?;
        let move_head = client.prepare_cached(&sql.move_head).await.map_err(prep)?;
        let move_head_unflushed = client
            .prepare_cached(&sql.move_head_unflushed)
            .await
            .map_err(prep)?;
        let confirm = client.prepare_cached(&sql.confirm).await.map_err(prep)?;
        let key_rows = client
            .prepare_cached(&sql.keys.by_subject)
            .await
            .map_err(prep)?;
        let kek_in_use = client
            .prepare_cached(&sql.keys.kek_in_use)
            .await
            .map_err(prep)?;

        // Read phase, pipelined: the server runs these in order, so every read happens
        // after the head lock is granted and sees every commit before this one.
        let aggregates_param: [&(dyn ToSql + Sync); 1] = [&aggregates];
        let ids_param: [&(dyn ToSql + Sync); 1] = [&ids];
        let names_param: [&(dyn ToSql + Sync); 1] = [&names];
        let fences_param: [&(dyn ToSql + Sync); 2] = [&fence_groups, &fence_partitions];
        let no_fences = fences.is_empty();
        let subjects_param: [&(dyn ToSql + Sync); 1] = [&subjects];
        let no_subjects = subjects.is_empty();
        let (begin, tip, found, stored, cps, held, keyed, kek) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query_one(&lock_head, &[]),
            client.query(&streams, &aggregates_param),
            client.query(&by_id, &ids_param),
            client.query(&checkpoints, &names_param),
            async {
                if no_fences {
                    Ok(Vec::new())
                } else {
                    client.query(&leases, &fences_param).await
                }
            },
            async {
                if no_subjects {
                    Ok(Vec::new())
                } else {
                    client.query(&key_rows, &subjects_param).await
                }
            },
            async {
                if no_subjects {
                    Ok(None)
                } else {
                    client.query_opt(&kek_in_use, &[]).await
                }
            },
        );
        let read = fail("reading the log's tip under the commit lock");
        begin.map_err(read)?;
        let tip = tip.map_err(read)?;
        let found = found.map_err(read)?;
        let stored = stored.map_err(read)?;
        let cps = cps.map_err(read)?;
        let held = held.map_err(read)?;
        let keyed = keyed.map_err(read)?;
        let kek = kek.map_err(read)?;
        let bad = |e: Error| StorageFailure::message("reading the log's tip", e.to_string());
        let position: i64 = rows::get(&tip, 0).map_err(bad)?;
        let hash: Hash = rows::get::<&str>(&tip, 1)
            .map_err(bad)?
            .parse()
            .map_err(|e| bad(Error::Corrupt(format!("head hash: {e}"))))?;
        let at: Option<PgTime> = rows::get(&tip, 2).map_err(bad)?;
        let tip = Tip {
            position: stored::number("head.position", position).map_err(|e| bad(e.into()))?,
            hash,
            recorded_at: at.map_or(Timestamp::from_micros(i64::MIN), |t| t.0),
        };
        let start = tip.position;
        let mut ahead = ReadAhead {
            asked: aggregates.iter().cloned().collect(),
            streams: HashMap::with_capacity(found.len()),
            by_id: HashMap::with_capacity(stored.len()),
            damaged: HashSet::new(),
            checkpoints: HashMap::with_capacity(cps.len()),
            leases: HashMap::with_capacity(held.len()),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            keys: HashMap::with_capacity(keyed.len()),
            kek_in_use: match &kek {
                Some(r) => Some(rows::get(r, 0).map_err(bad)?),
                None => None,
            },
        };
        for r in &keyed {
            let subject: String = rows::get(r, 0).map_err(bad)?;
            let row = crate::privacy::key_from_row(r).map_err(|e| e.to_string());
            ahead.keys.insert(subject, row);
        }
        for r in &found {
            let id: String = rows::get(r, 0).map_err(bad)?;
            let version: i64 = rows::get(r, 2).map_err(bad)?;
            let metadata_version: i64 = rows::get(r, 4).map_err(bad)?;
            let metadata: Option<String> = rows::get(r, 5).map_err(bad)?;
            let aggregate_type = rows::get(r, 1).map_err(bad)?;
            let tombstoned = rows::get(r, 3).map_err(bad)?;
            let record = stored::number(format_args!("streams.version of {id}"), version).and_then(
                |version| {
                    Ok(StreamRecord {
                        aggregate_type,
                        version,
                        tombstoned,
                        metadata_version: stored::number(
                            format_args!("streams.metadata_version of {id}"),
                            metadata_version,
                        )?,
                        metadata: metadata.map(annal_core::RawJson::from_stored),
                    })
                },
            );
            ahead.streams.insert(id, record);
        }
        // A stored event that cannot be read back fails only the jobs that replay it.
        for r in &stored {
            match rows::event_from_row(r) {
                Ok(e) => drop(ahead.by_id.insert(e.event_id, e)),
                Err(_) => ahead.damaged.extend(r.try_get::<_, Uuid>(1).ok()),
            }
        }
        for r in &cps {
            let name: String = rows::get(r, 0).map_err(bad)?;
            let p: i64 = rows::get(r, 1).map_err(bad)?;
            let position = stored::number(format_args!("checkpoints.position of '{name}'"), p);
            ahead.checkpoints.insert(name, position);
        }
        for r in &held {
            let g: String = rows::get(r, 0).map_err(bad)?;
            let p: i64 = rows::get(r, 1).map_err(bad)?;
            let owner: Option<String> = rows::get(r, 2).map_err(bad)?;
            let token: i64 = rows::get(r, 3).map_err(bad)?;
            let partition = stored::number("leases.partition", p).map_err(|e| bad(e.into()))?;
            let token = stored::number("leases.token", token).map(|t| (owner, t));
            ahead.leases.insert((g, partition), token);
        }

        // Each job checks everything, then writes into the group's buffers.
        let mut state = Group::new(tip);
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            if let Job::Transact(t, _) = job
                && let Some(c) = &t.checkpoint
                && c.last_error.as_deref().is_some_and(|e| e.contains('\0'))
            {
                outcomes.push(Err(Error::invalid(
                    "checkpoint.last_error",
                    "must not contain NUL characters",
                )));
                continue;
            }
            outcomes.push(match state.apply(&mut ahead, job) {
                Ok(o) => Ok(o),
                Err(Fail::Job(e)) => Err(e),
                Err(Fail::Group(e)) => {
                    return Err(StorageFailure::message("checking the group", e.to_string()));
                }
            });
        }
        let tip = state.tip();
        let writes = state.finish();
        let path = self
            .adaptive()
            .choose(start, tip.position != start, std::time::Instant::now());

        // Write phase, pipelined; COMMIT only once every write succeeded.
        let ev = EventColumns::from(&writes.events);
        let ev_params: [&(dyn ToSql + Sync); 18] = [
            &ev.position,
            &ev.event_id,
            &ev.event_type,
            &ev.event_version,
            &ev.aggregate_type,
            &ev.aggregate_id,
            &ev.aggregate_version,
            &ev.recorded_at,
            &ev.user_id,
            &ev.correlation_id,
            &ev.causation_id,
            &ev.data,
            &ev.metadata,
            &ev.hash,
            &ev.data_ok,
            &ev.metadata_ok,
            &ev.principal,
            &ev.sealed,
        ];
        let st = StreamColumns::from(&writes.streams);
        let st_params: [&(dyn ToSql + Sync); 7] = [
            &st.aggregate_id,
            &st.aggregate_type,
            &st.version,
            &st.tombstoned,
            &st.truncate_before,
            &st.metadata_version,
            &st.metadata,
        ];
        let cp = CheckpointColumns::from(writes.checkpoints.iter());
        let cp_params: [&(dyn ToSql + Sync); 7] = [
            &cp.name,
            &cp.position,
            &cp.status,
            &cp.error_count,
            &cp.last_error,
            &cp.updated_at,
            &cp.source,
        ];
        let sn = SnapshotColumns::from(writes.snapshots.iter());
        let sn_params: [&(dyn ToSql + Sync); 7] = [
            &sn.aggregate_id,
            &sn.aggregate_type,
            &sn.version,
            &sn.tag,
            &sn.state,
            &sn.state_ok,
            &sn.created_at,
        ];
        let kc = crate::privacy::KeyColumns::from(&writes);
        let kc_params: [&(dyn ToSql + Sync); 7] = [
            &kc.subject,
            &kc.key_id,
            &kc.kek_id,
            &kc.wrapped,
            &kc.created_at,
            &kc.forgotten_at,
            &kc.forgotten_position,
        ];
        let ix_params: [&(dyn ToSql + Sync); 2] = [&kc.index_subject, &kc.index_position];
        let fg_params: [&(dyn ToSql + Sync); 1] = [&kc.forgotten];
        let upsert_keys = if kc.subject.is_empty() {
            None
        } else {
            Some(
                client
                    .prepare_cached(&sql.keys.upsert)
                    .await
                    .map_err(prep)?,
            )
        };
        let index_subjects = if kc.index_subject.is_empty() {
            None
        } else {
            Some(client.prepare_cached(&sql.keys.index).await.map_err(prep)?)
        };
        let drop_snapshots = if kc.forgotten.is_empty() {
            None
        } else {
            Some(
                client
                    .prepare_cached(&sql.keys.drop_snapshots)
                    .await
                    .map_err(prep)?,
            )
        };
        let head = clamp(tip.position);
        let head_hash = tip.hash.to_hex();
        let head_at = tip.recorded_at.as_micros();
        let head_params: [&(dyn ToSql + Sync); 4] = [&head, &head_hash, &head_at, &sql.channel];
        let unflushed_params: [&(dyn ToSql + Sync); 3] = [&head, &head_hash, &head_at];
        let confirm_params: [&(dyn ToSql + Sync); 2] = [&self.id, &sql.channel];
        let mut requests: Vec<Fut<'_>> = Vec::new();
        if path.unflushed {
            requests.push(Box::pin(async {
                client
                    .batch_execute("SET LOCAL synchronous_commit = off")
                    .await
                    .map(|()| 0)
            }));
        }
        if !writes.events.is_empty() {
            requests.push(Box::pin(client.execute(&insert_events, &ev_params)));
        }
        if !st.aggregate_id.is_empty() {
            requests.push(Box::pin(client.execute(&upsert_streams, &st_params)));
        }
        if !cp.name.is_empty() {
            requests.push(Box::pin(client.execute(&upsert_checkpoints, &cp_params)));
        }
        if !sn.aggregate_id.is_empty() {
            requests.push(Box::pin(client.execute(&upsert_snapshots, &sn_params)));
        }
        if let Some(st) = &upsert_keys {
            requests.push(Box::pin(client.execute(st, &kc_params)));
        }
        if let Some(st) = &index_subjects {
            requests.push(Box::pin(client.execute(st, &ix_params)));
        }
        if let Some(st) = &drop_snapshots {
            requests.push(Box::pin(client.execute(st, &fg_params)));
        }
        if tip.position != start {
            requests.push(if path.unflushed {
                Box::pin(client.execute(&move_head_unflushed, &unflushed_params))
            } else {
                Box::pin(client.execute(&move_head, &head_params))
            });
        }
        // Send every write (a future sends its request when first polled). A write that
        // fails before it is sent (it could not be encoded) stops the group here, before
        // COMMIT is sent: the connection is then closed and the server rolls back.
        let write_failed = fail("writing the group");
        let mut answered: Vec<Option<std::result::Result<u64, tokio_postgres::Error>>> =
            Vec::with_capacity(requests.len());
        for w in &mut requests {
            match poll_once(w).await {
                Poll::Ready(Err(e)) => return Err(write_failed(e)),
                Poll::Ready(Ok(n)) => answered.push(Some(Ok(n))),
                Poll::Pending => answered.push(None),
            }
        }
        // COMMIT goes out behind the writes, in the same round trip. If any write failed
        // on the server, the transaction is aborted and COMMIT only ends it (PostgreSQL
        // answers ROLLBACK): the group is reported failed below and nothing was written.
        let mut commit: Fut<'_> =
            Box::pin(async { client.batch_execute("COMMIT").await.map(|()| 0) });
        let mut committed = match poll_once(&mut commit).await {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        };
        // The confirmation goes out behind COMMIT, still in the same round trip. Should
        // the group have failed, it raises this writer's row only to a head committed
        // before it, which its own flush covers.
        let mut confirmation: Option<Fut<'_>> = path
            .confirm
            .then(|| Box::pin(client.execute(&confirm, &confirm_params)) as Fut<'_>);
        let mut confirmed = match &mut confirmation {
            Some(c) => match poll_once(c).await {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            },
            None => None,
        };
        for (w, answer) in requests.iter_mut().zip(answered) {
            match answer {
                Some(r) => r.map_err(&write_failed)?,
                None => w.await.map_err(&write_failed)?,
            };
        }
        let committed = match committed.take() {
            Some(r) => r,
            None => commit.await,
        };
        committed.map_err(fail("committing the group"))?;
        if let Some(c) = confirmation {
            let confirmed = match confirmed.take() {
                Some(r) => r,
                None => c.await,
            };
            // The group did commit: never a server error, so that its jobs are not
            // retried alone (they would be written twice). Their outcome is unknown to
            // the callers until the log is read again.
            confirmed.map_err(|e| {
                StorageFailure::message(
                    "confirming the committed group durable",
                    crate::describe(&e),
                )
            })?;
        }
        self.adaptive().committed(tip.position);
        // The requests borrow the group's events (through `ev`); the answers take them.
        drop(requests);
        commit::answer(&mut outcomes, writes.events);
        Ok((outcomes, tip.position))
    }
}
