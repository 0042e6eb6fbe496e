//! The writer thread and its group commit.
//!
//! One thread owns the store's only write connection. Appends, transactions, snapshot
//! and checkpoint writes queue up on a channel; the thread takes everything queued (up
//! to a cap), applies each job inside its own SAVEPOINT of one `BEGIN IMMEDIATE`
//! transaction, and COMMITs once: one fsync (WAL, `synchronous=FULL`) for the whole
//! group. A job that fails (a conflict, a bad checkpoint) is rolled back to its savepoint
//! and fails alone; the others commit. Callers are answered only after COMMIT returns,
//! so an acknowledged job is durable.
//!
//! Ordering: the transaction reads the tip of the log (last position, hash, time) after
//! taking SQLite's write lock, so positions stay contiguous and the chain stays whole even
//! when several processes write the same file; `recorded_at` is the commit's clock
//! reading, raised to the tip's time if the clock went backwards, so it never decreases
//! with position.

use crate::rows::{self, EVENT_COLUMNS, clamp, db};
use annal_core::append::{ProposedAppend, ProposedTransaction, check_replay};
use annal_core::{
    AppendResult, Error, Hash, RawJson, RecordedEvent, Result, Snapshot, Timestamp,
    TransactionResult, Uuid,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::mpsc::{Receiver, TryRecvError};
use tokio::sync::{oneshot, watch};

/// Most events one group commit takes before it commits.
const MAX_GROUP_EVENTS: usize = 20_000;

/// Work for the writer.
pub enum Job {
    /// Appends and an optional checkpoint.
    Transact(
        ProposedTransaction,
        oneshot::Sender<Result<TransactionResult>>,
    ),
    /// A snapshot save.
    Snapshot(SnapshotJob, oneshot::Sender<Result<Snapshot>>),
}

/// A snapshot to save.
pub struct SnapshotJob {
    /// The aggregate.
    pub aggregate_id: String,
    /// Its version the state reflects.
    pub version: u64,
    /// The state's shape.
    pub tag: String,
    /// The state.
    pub state: RawJson,
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Transact(t, _) => t
                .appends
                .iter()
                .map(|a| a.events.len())
                .sum::<usize>()
                .max(1),
            Job::Snapshot(..) => 1,
        }
    }
}

enum Outcome {
    Transact(TransactionResult),
    Snapshot(Snapshot),
}

/// The last event of the log, as the next append needs it.
#[derive(Clone)]
struct Tip {
    position: u64,
    hash: Hash,
    recorded_at: Timestamp,
}

/// Runs the writer until every sender is gone.
pub fn run(mut conn: Connection, jobs: Receiver<Job>, head: watch::Sender<u64>) {
    while let Ok(first) = jobs.recv() {
        let mut weight = first.weight();
        let mut group = vec![first];
        while weight < MAX_GROUP_EVENTS {
            match jobs.try_recv() {
                Ok(job) => {
                    weight += job.weight();
                    group.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        match commit_group(&mut conn, &group) {
            Ok((outcomes, tip)) => {
                head.send_if_modified(|h| {
                    let moved = *h != tip;
                    *h = tip;
                    moved
                });
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    answer(job, outcome);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in group {
                    answer(job, Err(Error::Storage(msg.clone().into())));
                }
            }
        }
    }
}

fn answer(job: Job, outcome: Result<Outcome>) {
    // A caller that stopped waiting (dropped its future) no longer needs the answer.
    match (job, outcome) {
        (Job::Transact(_, tx), Ok(Outcome::Transact(r))) => drop(tx.send(Ok(r))),
        (Job::Snapshot(_, tx), Ok(Outcome::Snapshot(s))) => drop(tx.send(Ok(s))),
        (Job::Transact(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (Job::Snapshot(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (Job::Transact(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
        (Job::Snapshot(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
    }
}

fn mixed() -> Error {
    Error::Corrupt("the writer answered a job with another job's outcome".into())
}

/// Applies a group in one transaction; answers each job's outcome and the new head.
fn commit_group(
    conn: &mut Connection,
    group: &[Job],
) -> rusqlite::Result<(Vec<Result<Outcome>>, u64)> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut tip = read_tip(&tx)?;
    let now = Timestamp::now().max(tip.recorded_at);
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        let before = tip.clone();
        let sp = tx.savepoint()?;
        let outcome = match job {
            Job::Transact(t, _) => apply_transaction(&sp, t, &mut tip, now).map(Outcome::Transact),
            Job::Snapshot(s, _) => save_snapshot(&sp, s, now).map(Outcome::Snapshot),
        };
        if outcome.is_ok() {
            sp.commit()?;
        } else {
            // Rolls back to the savepoint and releases it: this job leaves nothing.
            sp.finish()?;
            tip = before;
        }
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok((outcomes, tip.position))
}

fn read_tip(conn: &Connection) -> rusqlite::Result<Tip> {
    let row = conn
        .prepare_cached(
            "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1",
        )?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((position, hash, at)) = row else {
        return Ok(Tip {
            position: 0,
            hash: Hash::ZERO,
            recorded_at: Timestamp::from_micros(i64::MIN),
        });
    };
    let bad = |what: &str, e: String| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("last event (position {position}) has a bad {what}: {e}").into(),
        )
    };
    Ok(Tip {
        position: position as u64,
        hash: hash.parse().map_err(|e| bad("hash", e))?,
        recorded_at: Timestamp::parse(&at).map_err(|e| bad("recorded_at", e))?,
    })
}

fn apply_transaction(
    conn: &Connection,
    t: &ProposedTransaction,
    tip: &mut Tip,
    now: Timestamp,
) -> Result<TransactionResult> {
    let mut results = Vec::with_capacity(t.appends.len());
    for a in &t.appends {
        results.push(apply_append(conn, a, tip, now)?);
    }
    let checkpoint = match &t.checkpoint {
        None => None,
        Some(c) => {
            let actual: Option<i64> = conn
                .prepare_cached("SELECT position FROM checkpoints WHERE name = ?1")
                .map_err(db)?
                .query_row([&c.name], |r| r.get(0))
                .optional()
                .map_err(db)?;
            c.check_expected(actual.map(|p| p as u64))?;
            c.check_position(tip.position)?;
            let stored = c.stored(now);
            conn.prepare_cached(
                "INSERT INTO checkpoints (name, position, status, error_count, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                   status = excluded.status, error_count = excluded.error_count,
                   last_error = excluded.last_error, updated_at = excluded.updated_at",
            )
            .map_err(db)?
            .execute(params![
                stored.name,
                clamp(stored.position),
                stored.status.as_str(),
                clamp(stored.error_count),
                stored.last_error,
                stored.updated_at.to_string()
            ])
            .map_err(db)?;
            Some(stored)
        }
    };
    Ok(TransactionResult {
        results,
        checkpoint,
    })
}

fn apply_append(
    conn: &Connection,
    a: &ProposedAppend,
    tip: &mut Tip,
    now: Timestamp,
) -> Result<AppendResult> {
    if a.events.iter().any(|e| e.id_supplied) {
        let mut stored = Vec::with_capacity(a.events.len());
        for e in &a.events {
            stored.push(if e.id_supplied {
                event_by_id(conn, e.event_id)?
            } else {
                None
            });
        }
        if let Some(replayed) = check_replay(a, stored)? {
            return Ok(replayed);
        }
    }
    let current: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT aggregate_type, aggregate_version FROM events
             WHERE aggregate_id = ?1 ORDER BY aggregate_version DESC LIMIT 1",
        )
        .map_err(db)?
        .query_row([&a.aggregate_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let version = match current {
        Some((existing, _)) if existing != a.aggregate_type => {
            return Err(Error::AggregateTypeMismatch {
                aggregate_id: a.aggregate_id.clone(),
                existing,
                requested: a.aggregate_type.clone(),
            });
        }
        Some((_, v)) => v as u64,
        None => 0,
    };
    a.expected.check(&a.aggregate_id, version)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (position, event_id, event_type, event_version, aggregate_type,
               aggregate_id, aggregate_version, recorded_at, user_id, correlation_id,
               causation_id, data, metadata, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .map_err(db)?;
    let at = now.to_string();
    let mut events = Vec::with_capacity(a.events.len());
    for (i, e) in a.events.iter().enumerate() {
        let recorded = e.record(
            tip.position + 1,
            &a.aggregate_type,
            &a.aggregate_id,
            version + 1 + i as u64,
            now,
            &tip.hash,
        );
        insert
            .execute(params![
                clamp(recorded.position),
                recorded.event_id.hyphenated().to_string(),
                recorded.event_type,
                recorded.event_version,
                recorded.aggregate_type,
                recorded.aggregate_id,
                clamp(recorded.aggregate_version),
                at,
                recorded.user_id,
                recorded.correlation_id,
                recorded.causation_id,
                recorded.data.get(),
                recorded.metadata.get(),
                recorded.hash.to_string(),
            ])
            .map_err(|err| match err.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => Error::DuplicateEventId {
                    event_id: recorded.event_id,
                    detail: format!("the store refused it: {err}"),
                },
                _ => db(err),
            })?;
        tip.position = recorded.position;
        tip.hash = recorded.hash;
        tip.recorded_at = now;
        events.push(recorded);
    }
    Ok(AppendResult::from_events(events))
}

fn event_by_id(conn: &Connection, id: Uuid) -> Result<Option<RecordedEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1");
    Ok(rows::query_events(conn, &sql, [id.hyphenated().to_string()])?.pop())
}

fn save_snapshot(conn: &Connection, s: &SnapshotJob, now: Timestamp) -> Result<Snapshot> {
    let current: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT aggregate_type, aggregate_version FROM events
             WHERE aggregate_id = ?1 ORDER BY aggregate_version DESC LIMIT 1",
        )
        .map_err(db)?
        .query_row([&s.aggregate_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let Some((aggregate_type, version)) = current else {
        return Err(Error::NotFound {
            what: format!("aggregate '{}'", s.aggregate_id),
        });
    };
    if s.version == 0 || s.version > version as u64 {
        return Err(Error::invalid(
            "version",
            format!(
                "{} is not a version of aggregate '{}' (its current version is {version})",
                s.version, s.aggregate_id
            ),
        ));
    }
    let snapshot = Snapshot {
        aggregate_id: s.aggregate_id.clone(),
        aggregate_type,
        aggregate_version: s.version,
        tag: s.tag.clone(),
        state: s.state.clone(),
        created_at: now,
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO snapshots
           (aggregate_id, aggregate_type, aggregate_version, tag, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(db)?
    .execute(params![
        snapshot.aggregate_id,
        snapshot.aggregate_type,
        clamp(snapshot.aggregate_version),
        snapshot.tag,
        snapshot.state.get(),
        now.to_string()
    ])
    .map_err(db)?;
    Ok(snapshot)
}
