//! The work a backend's writer takes: jobs queued by the Store methods, each with the
//! channel its caller waits on, and the outcome it is answered with.
//!
//! Invariant: a job is answered exactly once, after its group's COMMIT returned (or with
//! the error that ended it); a caller that stopped waiting is simply not answered.

use crate::append::{ProposedTransaction, TransactionResult};
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent};
use crate::privacy::{ForgetRequest, Forgotten};
use crate::snapshot::Snapshot;
use tokio::sync::oneshot;

/// Work for a writer.
pub enum Job {
    /// Appends and an optional checkpoint.
    Transact(
        ProposedTransaction,
        oneshot::Sender<Result<TransactionResult>>,
    ),
    /// A snapshot save.
    Snapshot(SnapshotJob, oneshot::Sender<Result<Snapshot>>),
    /// Already-recorded events to store as they are (a copy from another store).
    Import(Vec<RecordedEvent>, oneshot::Sender<Result<u64>>),
    /// Forgetting a data subject: its key destroyed, the forgetting recorded.
    Forget(ForgetRequest, oneshot::Sender<Result<Forgotten>>),
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

/// What a job did, to answer it with.
pub enum Outcome {
    /// A transaction's result.
    Transact(TransactionResult),
    /// The snapshot as stored.
    Snapshot(Snapshot),
    /// How many events were imported.
    Import(u64),
    /// What forgetting did.
    Forget(Forgotten),
}

impl Job {
    /// The job's size in events (at least 1), for capping a group.
    pub fn weight(&self) -> usize {
        match self {
            Job::Transact(t, _) => t
                .appends
                .iter()
                .map(|a| a.events.len())
                .sum::<usize>()
                .max(1),
            Job::Snapshot(..) | Job::Forget(..) => 1,
            Job::Import(events, _) => events.len().max(1),
        }
    }

    /// Answers the caller. A caller that stopped waiting (dropped its future) no longer
    /// needs the answer.
    pub fn answer(self, outcome: Result<Outcome>) {
        let mixed =
            || Error::Corrupt("the writer answered a job with another job's outcome".into());
        match (self, outcome) {
            (Job::Transact(_, tx), Ok(Outcome::Transact(r))) => drop(tx.send(Ok(r))),
            (Job::Snapshot(_, tx), Ok(Outcome::Snapshot(s))) => drop(tx.send(Ok(s))),
            (Job::Import(_, tx), Ok(Outcome::Import(n))) => drop(tx.send(Ok(n))),
            (Job::Forget(_, tx), Ok(Outcome::Forget(f))) => drop(tx.send(Ok(f))),
            (Job::Forget(_, tx), Err(e)) => drop(tx.send(Err(e))),
            (Job::Forget(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
            (Job::Transact(_, tx), Err(e)) => drop(tx.send(Err(e))),
            (Job::Snapshot(_, tx), Err(e)) => drop(tx.send(Err(e))),
            (Job::Import(_, tx), Err(e)) => drop(tx.send(Err(e))),
            (Job::Transact(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
            (Job::Snapshot(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
            (Job::Import(_, tx), Ok(_)) => drop(tx.send(Err(mixed()))),
        }
    }
}
