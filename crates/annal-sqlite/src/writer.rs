//! The writer thread and its group commit.
//!
//! One thread owns the store's only write connection. Appends, transactions, snapshot
//! and checkpoint writes queue up on a channel; the thread takes everything queued (up
//! to a cap), applies the jobs in one `BEGIN IMMEDIATE` transaction and COMMITs once:
//! one fdatasync of the WAL for the whole group. Each job checks everything
//! (expected versions, types, replays, its checkpoint) before it writes anything, so a
//! job that is refused (a conflict, a bad checkpoint) writes nothing and fails alone; the
//! others commit. A database failure fails the whole group, and nothing of it is written.
//!
//! The COMMIT itself does not sync (`synchronous=NORMAL` on this connection): the
//! committed group goes to the durability stage ([`crate::durable`]), which fdatasyncs
//! the WAL and only then answers its jobs, while this thread applies the next group. So
//! an acknowledged job is durable, and the disk's sync time overlaps the next group's
//! work instead of adding to it. After a failed sync the writer refuses every job.
//!
//! Key-table rows and data keys read by one group serve the next ([`KeyCache`]) while
//! this connection's `data_version` is unchanged: SQLite changes it when any other
//! connection, of this process (a rotation, a lease write) or another, commits to the
//! store file, and only this writer commits through this connection. A group takes
//! them once its transaction holds the write lock, and they come back only with its
//! successful commit: a group that fails after that drops them (one that fails before,
//! at `BEGIN`, committed nothing and leaves them).
//!
//! Before each group the writer waits while the indexer is too far behind the durable
//! log ([`crate::index::Nudge::hold_back`]): what filtered reads test one by one stays
//! bounded.
//!
//! The checks themselves (expected versions, stream deletion, replays, checkpoints) are
//! [`annal_core::commit`]'s, shared with every backend; this file reads what they ask
//! for (`SqlLookup`) and writes what they buffered.
//!
//! Ordering: the transaction reads the tip of the log (last position, hash, time) after
//! taking SQLite's write lock, so positions stay contiguous and the chain stays whole even
//! when several processes write the same file; `recorded_at` is the commit's clock
//! reading, raised to the tip's time if the clock went backwards, so it never decreases
//! with position.

use crate::durable::{Committed, Durability};
use crate::ids;
use crate::rows::{self, EVENT_COLUMNS, clamp, db};
use annal_core::commit::{self, Fail, Group, KeyCache, Writes};
use annal_core::failures::WriteHealth;
use annal_core::import::Tip;
use annal_core::{Error, Hash, RecordedEvent, Result, StreamRecord, Timestamp, Uuid, stored};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// Most events one group commit takes before it commits.
const MAX_GROUP_EVENTS: usize = 20_000;
/// How long a group waits for writers that were in the last group to come back.
const GATHER: Duration = Duration::from_micros(200);

use annal_core::job::Outcome;
pub use annal_core::job::{Job, SnapshotJob};

/// How long the closing checkpoint waits for other connections' reads.
const CLOSING_CHECKPOINT_WAIT: Duration = Duration::from_secs(1);

/// Runs the writer (and its durability stage) until every sender is gone and every
/// group is answered, then checkpoints the WAL into the store file and empties it
/// ([`close`]). `path` is the store file `conn` has open.
pub fn run(
    path: &Path,
    mut conn: Connection,
    jobs: Receiver<Job>,
    durability: &Arc<Durability>,
    health: WriteHealth,
) {
    let started = conn
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())
        .and_then(|()| durability.start().map_err(|e| e.to_string()));
    match started {
        Ok((to_stage, stage)) => {
            serve(path, &mut conn, jobs, durability, &to_stage, &health);
            drop(to_stage);
            if stage.join().is_err() {
                tracing::error!("the durability stage panicked");
            }
        }
        Err(e) => {
            let msg = format!("the writer could not start: {e}");
            tracing::error!(error = %msg);
            for job in jobs {
                job.answer(Err(Error::Storage(msg.clone().into())));
            }
        }
    }
    close(&conn);
}

/// Copies every committed WAL frame into the store file and truncates the WAL, so that
/// the file at rest holds the whole log (copying it alone is a whole copy). Waits at
/// most [`CLOSING_CHECKPOINT_WAIT`] for other connections' reads; if some still need
/// the WAL (another process), it is left for them to checkpoint, and that is logged.
fn close(conn: &Connection) {
    let done = conn.busy_timeout(CLOSING_CHECKPOINT_WAIT).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
    });
    match done {
        Ok((0, _, _)) => {}
        Ok((_, frames, copied)) => tracing::info!(
            frames,
            copied,
            "closing: other connections still read the WAL, so it stays; they checkpoint it"
        ),
        Err(e) => tracing::warn!(error = %e, "closing: the WAL could not be checkpointed"),
    }
}

/// Commits queued jobs in groups until every sender is gone.
fn serve(
    path: &Path,
    conn: &mut Connection,
    jobs: Receiver<Job>,
    durability: &Durability,
    to_stage: &Sender<Committed>,
    health: &WriteHealth,
) {
    let mut last_group = 1usize;
    let mut keys = KeyRows::default();
    // A job taken while deciding who syncs the last group: the next group's first.
    let mut carried: Option<Job> = None;
    while let Some(first) = carried.take().or_else(|| jobs.recv().ok()) {
        // Jobs that queue meanwhile join this group.
        durability.hold_back();
        let mut weight = first.weight();
        let mut group = vec![first];
        let gather_until = Instant::now() + GATHER;
        while weight < MAX_GROUP_EVENTS {
            let next = match jobs.try_recv() {
                Ok(job) => Some(job),
                // Writers answered by the last commit are still preparing their next job:
                // when the last group showed that many were active, wait a moment for them.
                Err(TryRecvError::Empty) if group.len() < last_group => {
                    let left = gather_until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        jobs.recv_timeout(left).ok()
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            };
            let Some(job) = next else { break };
            weight += job.weight();
            group.push(job);
        }
        last_group = group.len();
        if let Some(reason) = durability.stopped() {
            for job in group {
                job.answer(Err(Error::Storage(reason.clone().into())));
            }
            continue;
        }
        match commit_group(path, conn, &group, durability, &mut keys) {
            Ok((outcomes, head)) => {
                let answers = group.into_iter().zip(outcomes).collect();
                carried = jobs.try_recv().ok();
                durability.hand(to_stage, Committed { answers, head }, carried.is_some());
            }
            Err(e) => {
                health.failed(&e);
                let msg = format!("the commit failed, nothing of it was written: {e}");
                for job in group {
                    job.answer(Err(Error::Storage(msg.clone().into())));
                }
            }
        }
    }
}

/// The key-table rows and data keys of the last group, and the connection's
/// `data_version` when it committed (see the module's docs).
#[derive(Default)]
struct KeyRows {
    data_version: Option<i64>,
    cache: KeyCache,
}

impl KeyRows {
    /// The cache for a group whose transaction sees `data_version` (`None`: not read,
    /// as the last group left nothing): the last group's when nothing else committed
    /// since, else an empty one.
    fn take(&mut self, data_version: Option<i64>) -> KeyCache {
        let cache = std::mem::take(&mut self.cache);
        let kept = data_version.is_some() && self.data_version.take() == data_version;
        if kept {
            cache.bounded()
        } else {
            KeyCache::default()
        }
    }
}

/// The connection's `data_version`: changed by every commit of another connection to
/// the store file since the last reading, never by this connection's own.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// Reads what the shared checks ask for, inside the group's transaction.
struct SqlLookup<'c> {
    conn: &'c Connection,
}

/// A database failure fails the group; a row that cannot be read back fails the job.
fn fail(e: Error) -> Fail {
    match e {
        Error::Corrupt(_) => Fail::Job(e),
        other => Fail::Group(other),
    }
}

impl commit::Lookup for SqlLookup<'_> {
    fn stream(&mut self, aggregate_id: &str) -> Result<Option<StreamRecord>, Fail> {
        rows::stream_record(self.conn, aggregate_id).map_err(fail)
    }

    fn event(&mut self, event_id: Uuid) -> Result<Option<RecordedEvent>, Fail> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1");
        rows::query_events(self.conn, &sql, [&event_id.as_bytes()[..]])
            .map(|mut found| found.pop())
            .map_err(fail)
    }

    fn checkpoint(&mut self, name: &str) -> Result<Option<u64>, Fail> {
        self.conn
            .prepare_cached("SELECT position FROM checkpoints WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get::<_, i64>(0)).optional())
            .map_err(|e| Fail::Group(db(e)))?
            .map(|p| stored::number("checkpoints.position", p))
            .transpose()
            .map_err(|e| fail(e.into()))
    }

    fn lease(
        &mut self,
        group: &str,
        partition: u32,
    ) -> Result<Option<(Option<String>, u64)>, Fail> {
        self.conn
            .prepare_cached(
                "SELECT owner, token FROM leases WHERE group_name = ?1 AND partition = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![group, partition], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(|e| Fail::Group(db(e)))?
            .map(|(owner, token)| stored::number("leases.token", token).map(|t| (owner, t)))
            .transpose()
            .map_err(|e| fail(e.into()))
    }

    fn subject_key(
        &mut self,
        subject: &str,
    ) -> Result<Option<annal_core::privacy::SubjectKey>, Fail> {
        crate::privacy::key_row(self.conn, subject).map_err(fail)
    }

    fn subject_keys(
        &mut self,
        subjects: &[String],
    ) -> Result<Vec<annal_core::privacy::SubjectKey>, Fail> {
        crate::privacy::key_rows(self.conn, subjects).map_err(fail)
    }

    fn kek_in_use(&mut self) -> Result<Option<String>, Fail> {
        crate::privacy::kek_in_use(self.conn).map_err(fail)
    }
}

/// Applies a group in one transaction; answers each job's outcome and the new head.
///
/// Each job is checked completely before anything of it is buffered (see
/// [`annal_core::commit`]), so a refused job leaves no trace and needs no savepoint: the
/// only failures while writing are the database's, and those fail the whole group (its
/// transaction is rolled back when dropped).
fn commit_group(
    path: &Path,
    conn: &mut Connection,
    jobs: &[Job],
    durability: &Durability,
    keys: &mut KeyRows,
) -> Result<(Vec<Result<Outcome>>, u64)> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let tip = read_tip(&tx).map_err(db)?;
    // Read only when there is a cache to check (plain groups never read it).
    let mut seen = (!keys.cache.is_empty())
        .then(|| data_version(&tx))
        .transpose()
        .map_err(db)?;
    let before = tip.position;
    let mut group = Group::with_cache(tip, keys.take(seen));
    let mut lookup = SqlLookup { conn: &tx };
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        match group.apply(&mut lookup, job) {
            Ok(o) => outcomes.push(Ok(o)),
            Err(Fail::Job(e)) => outcomes.push(Err(e)),
            Err(Fail::Group(e)) => return Err(e),
        }
    }
    let head = group.tip().position;
    let (writes, cache) = group.finish_with_cache();
    if seen.is_none() && !cache.is_empty() {
        // The same as at the group's start: this transaction holds the write lock.
        seen = Some(data_version(&tx).map_err(db)?);
    }
    write(path, &tx, &writes).map_err(db)?;
    // Before the COMMIT makes the group visible: reads hide it until it is synced.
    let first = (head > before).then_some(before + 1);
    if let Some(first) = first {
        durability.committing(first);
    }
    if let Err(e) = tx.commit() {
        if let Some(first) = first {
            durability.not_committed(first);
        }
        return Err(db(e));
    }
    // Committed: what the group read and wrote is the key table now.
    *keys = KeyRows {
        data_version: seen,
        cache,
    };
    commit::answer(&mut outcomes, writes.events);
    Ok((outcomes, head))
}

/// Writes a group's buffers (of the store file at `path`); the snapshots of the
/// aggregates holding data about a subject it forgot are deleted last, after its events
/// and snapshots are in.
fn write(path: &Path, conn: &Connection, w: &Writes) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (position, event_id, event_type, event_version, aggregate_type,
           aggregate_id, aggregate_version, recorded_at, user_id, correlation_id,
           causation_id, data, metadata, hash, principal, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    // A group's appended events share one time: format it once.
    let mut at: Option<(Timestamp, String)> = None;
    // The packed forms the group made as it sealed (by position, in order).
    let mut packed = w.packed.iter().peekable();
    for e in &w.events {
        let sealed = match (&e.sealed, packed.next_if(|(p, _)| *p == e.position)) {
            (None, _) => None,
            (Some(_), Some((_, bytes))) => Some(ToSqlOutput::Borrowed(ValueRef::Blob(bytes))),
            (Some(text), None) => Some(ToSqlOutput::Owned(crate::privacy::sealed_value(text))),
        };
        let text = match &at {
            Some((t, text)) if *t == e.recorded_at => text.clone(),
            _ => {
                let text = e.recorded_at.to_string();
                at = Some((e.recorded_at, text.clone()));
                text
            }
        };
        insert.execute(params![
            clamp(e.position),
            &e.event_id.as_bytes()[..],
            e.event_type,
            e.event_version,
            e.aggregate_type,
            e.aggregate_id,
            clamp(e.aggregate_version),
            text,
            e.user_id,
            e.correlation_id.as_deref().map(ids::id_value),
            e.causation_id.as_deref().map(ids::id_value),
            e.data.get(),
            e.metadata.get(),
            &e.hash.0[..],
            e.principal,
            sealed,
        ])?;
    }
    crate::privacy::write_keys(conn, w)?;
    let mut streams = conn.prepare_cached(
        "INSERT OR REPLACE INTO streams (aggregate_id, aggregate_type, version, tombstoned,
           truncate_before, metadata_version, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (id, r) in &w.streams {
        streams.execute(params![
            id,
            r.aggregate_type,
            clamp(r.version),
            r.tombstoned,
            r.truncate_before().map(clamp),
            clamp(r.metadata_version),
            r.metadata.as_ref().map(|m| m.get()),
        ])?;
    }
    for c in &w.checkpoints {
        conn.prepare_cached(
            "INSERT INTO checkpoints
               (name, position, status, error_count, last_error, updated_at, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
               status = excluded.status, error_count = excluded.error_count,
               last_error = excluded.last_error, updated_at = excluded.updated_at,
               source = excluded.source",
        )?
        .execute(params![
            c.name,
            clamp(c.position),
            c.status.as_str(),
            clamp(c.error_count),
            c.last_error,
            c.updated_at.to_string(),
            c.source
        ])?;
    }
    for s in &w.snapshots {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO snapshots
               (aggregate_id, aggregate_type, aggregate_version, tag, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            s.aggregate_id,
            s.aggregate_type,
            clamp(s.aggregate_version),
            s.tag,
            s.state.get(),
            s.created_at.to_string()
        ])?;
    }
    crate::privacy::forget_snapshots(conn, path, &w.forgotten)
}

fn read_tip(conn: &Connection) -> rusqlite::Result<Tip> {
    let row = conn
        .prepare_cached(
            "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1",
        )?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ids::hash_from(r.get_ref(1)?),
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((position, hash, at)) = row else {
        return Ok(Tip {
            position: 0,
            hash: Hash::ZERO,
            recorded_at: Timestamp::MIN,
        });
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("last event (position {position}) has a bad {what}: {e}").into(),
        )
    };
    Ok(Tip {
        position: u64::try_from(position).map_err(|e| bad("position", &e))?,
        hash: hash.map_err(|e| bad("hash", &e))?,
        recorded_at: Timestamp::parse(&at).map_err(|e| bad("recorded_at", &e))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::testkit::fixtures::{all, ev, req};
    use annal_core::{ExpectedVersion, RawJson, Snapshot, Store};

    fn snapshot(aggregate_id: &str) -> Snapshot {
        Snapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate_type: "Family".to_owned(),
            aggregate_version: 1,
            tag: "t".to_owned(),
            state: RawJson::parse(r#"{"children":["Sofía"]}"#).expect("json"),
            created_at: Timestamp::now(),
        }
    }

    /// A group that appends an event about a subject, saves snapshots and forgets the
    /// subject: the snapshot of the aggregate of that very event, saved in that very
    /// group, is deleted with the one of an aggregate whose event the index holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forgetting_sees_the_events_and_snapshots_of_its_own_group() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let options = crate::Options {
            keyring: Some(annal_core::testkit::privacy::kek()),
            ..crate::Options::default()
        };
        let store = crate::SqliteStore::open_with(&path, options).expect("open");
        let mut e = ev("ChildAdded", "{}");
        e.personal = Some(RawJson::parse(r#"{"child_name":"Sofía"}"#).expect("json"));
        e.subjects = vec!["s-x".to_owned()];
        store
            .append(req("Family", "fam-1", ExpectedVersion::NoStream, vec![e]))
            .await
            .expect("append");
        store
            .save_snapshot("fam-1", 1, "t", snapshot("fam-1").state)
            .await
            .expect("snapshot");
        let first = all(&store).await.pop().expect("the event");
        drop(store);

        let mut conn = crate::open::open_connection(&path, false).expect("connection");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        let mut same_group = first.clone();
        same_group.position = 2;
        same_group.event_id = Uuid::now_v7();
        same_group.aggregate_id = "fam-2".to_owned();
        let writes = Writes {
            events: vec![same_group],
            snapshots: vec![snapshot("fam-2"), snapshot("fam-3")],
            forgotten: vec!["s-x".to_owned()],
            ..Writes::default()
        };
        write(&path, &tx, &writes).expect("write");
        let left: Vec<String> = tx
            .prepare("SELECT aggregate_id FROM snapshots ORDER BY aggregate_id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(left, ["fam-3"]);
    }
}
