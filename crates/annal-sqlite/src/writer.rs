//! The writer thread and its group commit.
//!
//! One thread owns the store's only write connection. Appends, transactions, snapshot
//! and checkpoint writes queue up on a channel; the thread takes everything queued (up
//! to a cap), applies the jobs in one `BEGIN IMMEDIATE` transaction and COMMITs once:
//! one fsync (WAL, `synchronous=FULL`) for the whole group. Each job checks everything
//! (expected versions, types, replays, its checkpoint) before it writes anything, so a
//! job that is refused (a conflict, a bad checkpoint) writes nothing and fails alone; the
//! others commit. A database failure fails the whole group, and nothing of it is written.
//! Callers are answered only after COMMIT returns, so an acknowledged job is durable.
//!
//! Ordering: the transaction reads the tip of the log (last position, hash, time) after
//! taking SQLite's write lock, so positions stay contiguous and the chain stays whole even
//! when several processes write the same file; `recorded_at` is the commit's clock
//! reading, raised to the tip's time if the clock went backwards, so it never decreases
//! with position.

use crate::rows::{self, EVENT_COLUMNS, clamp, db};
use annal_core::append::{ProposedAppend, ProposedTransaction, check_replay};
use annal_core::import::{self, check_import};
use annal_core::{
    AppendResult, Error, Hash, RecordedEvent, Result, Snapshot, Timestamp, TransactionResult, Uuid,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most events one group commit takes before it commits.
const MAX_GROUP_EVENTS: usize = 20_000;
/// How long a group waits for writers that were in the last group to come back.
const GATHER: Duration = Duration::from_micros(200);

use annal_core::job::Outcome;
pub use annal_core::job::{Job, SnapshotJob};

/// The last event of the log, as the next append needs it.
struct Tip {
    position: u64,
    hash: Hash,
    recorded_at: Timestamp,
}

/// Runs the writer until every sender is gone.
pub fn run(mut conn: Connection, jobs: Receiver<Job>, head: watch::Sender<u64>) {
    let mut last_group = 1usize;
    while let Ok(first) = jobs.recv() {
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
        match commit_group(&mut conn, &group) {
            Ok((outcomes, tip)) => {
                head.send_if_modified(|h| {
                    let moved = *h != tip;
                    *h = tip;
                    moved
                });
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    job.answer(outcome);
                }
            }
            Err(e) => {
                let msg = format!("the commit failed, nothing of it was written: {e}");
                for job in group {
                    job.answer(Err(Error::Storage(msg.clone().into())));
                }
            }
        }
    }
}

/// Why a job failed: on its own (a conflict, a bad checkpoint: nothing of it was
/// written, the group goes on) or with the whole group (the database failed).
enum Fail {
    Job(Error),
    Group(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Group(db(e))
    }
}

/// A job's own refusal.
fn refuse(e: Error) -> Fail {
    Fail::Job(e)
}

/// Applies a group in one transaction; answers each job's outcome and the new head.
///
/// Each job checks everything it needs (reads only) before it writes anything, so a job
/// that is refused leaves no trace and needs no savepoint: the only failures after the
/// first write are the database's, and those fail the whole group (its transaction is
/// rolled back when dropped).
fn commit_group(conn: &mut Connection, group: &[Job]) -> Result<(Vec<Result<Outcome>>, u64)> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let mut tip = read_tip(&tx).map_err(db)?;
    let now = Timestamp::now().max(tip.recorded_at);
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        let outcome = match job {
            Job::Transact(t, _) => apply_transaction(&tx, t, &mut tip, now).map(Outcome::Transact),
            Job::Snapshot(s, _) => save_snapshot(&tx, s, now).map(Outcome::Snapshot),
            Job::Import(events, _) => import_events(&tx, events, &mut tip).map(Outcome::Import),
        };
        match outcome {
            Ok(o) => outcomes.push(Ok(o)),
            Err(Fail::Job(e)) => outcomes.push(Err(e)),
            Err(Fail::Group(e)) => return Err(e),
        }
    }
    tx.commit().map_err(db)?;
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

/// What a checked append will do.
enum Plan {
    /// A retry of an append already stored: answer this, write nothing.
    Replay(AppendResult),
    /// Write the events after `version`.
    Write { version: u64 },
}

fn apply_transaction(
    conn: &Connection,
    t: &ProposedTransaction,
    tip: &mut Tip,
    now: Timestamp,
) -> Result<TransactionResult, Fail> {
    // Check every append (reads only) before writing any. Appends of one transaction to
    // the same aggregate see each other's planned versions.
    let mut planned: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut plans = Vec::with_capacity(t.appends.len());
    let mut new_events = 0u64;
    for a in &t.appends {
        let plan = plan_append(conn, a, &planned)?;
        if let Plan::Write { version } = plan {
            planned.insert(
                &a.aggregate_id,
                (&a.aggregate_type, version + a.events.len() as u64),
            );
            new_events += a.events.len() as u64;
        }
        plans.push(plan);
    }
    if let Some(c) = &t.checkpoint {
        let actual: Option<i64> = conn
            .prepare_cached("SELECT position FROM checkpoints WHERE name = ?1")?
            .query_row([&c.name], |r| r.get(0))
            .optional()?;
        c.check_expected(actual.map(|p| p as u64)).map_err(refuse)?;
        if let Some(f) = &c.lease {
            let lease: Option<(Option<String>, i64)> = conn
                .prepare_cached(
                    "SELECT owner, token FROM leases WHERE group_name = ?1 AND partition = ?2",
                )?
                .query_row(params![f.group, f.partition], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            f.check(lease.as_ref().map(|(o, t)| (o.as_deref(), *t as u64)))
                .map_err(refuse)?;
        }
        c.check_position(tip.position + new_events)
            .map_err(refuse)?;
    }
    // Write.
    let mut results = Vec::with_capacity(plans.len());
    for (a, plan) in t.appends.iter().zip(plans) {
        results.push(match plan {
            Plan::Replay(r) => r,
            Plan::Write { version } => write_append(conn, a, version, tip, now)?,
        });
    }
    let checkpoint = match &t.checkpoint {
        None => None,
        Some(c) => {
            let stored = c.stored(now);
            conn.prepare_cached(
                "INSERT INTO checkpoints (name, position, status, error_count, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                   status = excluded.status, error_count = excluded.error_count,
                   last_error = excluded.last_error, updated_at = excluded.updated_at",
            )?
            .execute(params![
                stored.name,
                clamp(stored.position),
                stored.status.as_str(),
                clamp(stored.error_count),
                stored.last_error,
                stored.updated_at.to_string()
            ])?;
            Some(stored)
        }
    };
    Ok(TransactionResult {
        results,
        checkpoint,
    })
}

/// Checks one append: a replay of stored events, or a write after which version.
fn plan_append(
    conn: &Connection,
    a: &ProposedAppend,
    planned: &HashMap<&str, (&str, u64)>,
) -> Result<Plan, Fail> {
    if a.events.iter().any(|e| e.id_supplied) {
        let mut stored = Vec::with_capacity(a.events.len());
        for e in &a.events {
            stored.push(if e.id_supplied {
                event_by_id(conn, e.event_id)?
            } else {
                None
            });
        }
        if let Some(replayed) = check_replay(a, stored).map_err(refuse)? {
            return Ok(Plan::Replay(replayed));
        }
    }
    let current: Option<(String, u64)> = match planned.get(a.aggregate_id.as_str()) {
        Some((t, v)) => Some(((*t).to_owned(), *v)),
        None => current_version(conn, &a.aggregate_id)?,
    };
    let version = match current {
        Some((existing, _)) if existing != a.aggregate_type => {
            return Err(refuse(Error::AggregateTypeMismatch {
                aggregate_id: a.aggregate_id.clone(),
                existing,
                requested: a.aggregate_type.clone(),
            }));
        }
        Some((_, v)) => v,
        None => 0,
    };
    a.expected.check(&a.aggregate_id, version).map_err(refuse)?;
    Ok(Plan::Write { version })
}

fn current_version(
    conn: &Connection,
    aggregate_id: &str,
) -> rusqlite::Result<Option<(String, u64)>> {
    conn.prepare_cached(
        "SELECT aggregate_type, aggregate_version FROM events
         WHERE aggregate_id = ?1 ORDER BY aggregate_version DESC LIMIT 1",
    )?
    .query_row([aggregate_id], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
    })
    .optional()
}

fn write_append(
    conn: &Connection,
    a: &ProposedAppend,
    version: u64,
    tip: &mut Tip,
    now: Timestamp,
) -> rusqlite::Result<AppendResult> {
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
        insert_event(conn, &recorded, &at)?;
        tip.position = recorded.position;
        tip.hash = recorded.hash;
        tip.recorded_at = now;
        events.push(recorded);
    }
    Ok(AppendResult::from_events(events))
}

fn insert_event(conn: &Connection, e: &RecordedEvent, at: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (position, event_id, event_type, event_version, aggregate_type,
           aggregate_id, aggregate_version, recorded_at, user_id, correlation_id,
           causation_id, data, metadata, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        clamp(e.position),
        e.event_id.hyphenated().to_string(),
        e.event_type,
        e.event_version,
        e.aggregate_type,
        e.aggregate_id,
        clamp(e.aggregate_version),
        at,
        e.user_id,
        e.correlation_id,
        e.causation_id,
        e.data.get(),
        e.metadata.get(),
        e.hash.to_hex(),
    ])?;
    Ok(())
}

/// Checks that `events` continue the log exactly ([`check_import`]), then stores them
/// as they are.
fn import_events(conn: &Connection, events: &[RecordedEvent], tip: &mut Tip) -> Result<u64, Fail> {
    let mut current: HashMap<&str, Option<(String, u64)>> = HashMap::new();
    let mut stored: HashSet<Uuid> = HashSet::new();
    for e in events {
        if !current.contains_key(e.aggregate_id.as_str()) {
            current.insert(&e.aggregate_id, current_version(conn, &e.aggregate_id)?);
        }
        if event_by_id(conn, e.event_id)?.is_some() {
            stored.insert(e.event_id);
        }
    }
    let new_tip = check_import(
        import::Tip {
            position: tip.position,
            hash: tip.hash,
            recorded_at: tip.recorded_at,
        },
        events,
        |a| current.get(a).cloned().flatten(),
        |id| stored.contains(id),
    )
    .map_err(refuse)?;
    for e in events {
        insert_event(conn, e, &e.recorded_at.to_string())?;
    }
    tip.position = new_tip.position;
    tip.hash = new_tip.hash;
    tip.recorded_at = new_tip.recorded_at;
    Ok(events.len() as u64)
}

fn event_by_id(conn: &Connection, id: Uuid) -> Result<Option<RecordedEvent>, Fail> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1");
    match rows::query_events(conn, &sql, [id.hyphenated().to_string()]) {
        Ok(mut found) => Ok(found.pop()),
        Err(e @ Error::Corrupt(_)) => Err(Fail::Job(e)),
        Err(e) => Err(Fail::Group(e)),
    }
}

fn save_snapshot(conn: &Connection, s: &SnapshotJob, now: Timestamp) -> Result<Snapshot, Fail> {
    let Some((aggregate_type, version)) = current_version(conn, &s.aggregate_id)? else {
        return Err(refuse(Error::NotFound {
            what: format!("aggregate '{}'", s.aggregate_id),
        }));
    };
    if s.version == 0 || s.version > version {
        return Err(refuse(Error::invalid(
            "version",
            format!(
                "{} is not a version of aggregate '{}' (its current version is {version})",
                s.version, s.aggregate_id
            ),
        )));
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
    )?
    .execute(params![
        snapshot.aggregate_id,
        snapshot.aggregate_type,
        clamp(snapshot.aggregate_version),
        snapshot.tag,
        snapshot.state.get(),
        now.to_string()
    ])?;
    Ok(snapshot)
}
