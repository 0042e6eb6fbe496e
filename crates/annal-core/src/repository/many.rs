//! [`Repository::execute_many`]: commands on several aggregates of one type, decided
//! together and committed in one transaction (a transfer between two accounts).
//!
//! Invariants:
//! - each command is decided on its aggregate's state as loaded, after the events of the
//!   earlier commands to the same aggregate in the list;
//! - every aggregate's events go into one [`Store::transact`](crate::Store::transact),
//!   each append with the exact version its aggregate was loaded at: all are written or
//!   none;
//! - a refusal of any command writes nothing; a conflict on any aggregate reloads all
//!   of them and decides every command again, as one, after the same pauses as
//!   [`Repository::execute`] ([`ConflictRetry`](super::ConflictRetry)).

use super::{CommandContext, Executed, Repository, RepositoryError, Res};
use crate::aggregate::Aggregate;
use crate::append::Transaction;
use crate::error::Error;
use serde_json::{Map, Value};

/// One aggregate of a unit of work: its state as loaded, then with its decided events.
struct Unit<A: Aggregate> {
    id: String,
    loaded_version: u64,
    state: A,
    decided: Vec<(A::Event, Map<String, Value>)>,
}

impl<A: Aggregate> Repository<A> {
    /// Decides each `(aggregate id, command)` in order and commits all their events in
    /// one transaction, each aggregate at the version it was loaded at; on a conflict,
    /// reloads and decides them all again (as [`ConflictRetry`](super::ConflictRetry)
    /// says). Answers one [`Executed`] per aggregate, in the order of first mention.
    /// Several commands may name the same aggregate: the later ones see the earlier
    /// ones' events.
    pub async fn execute_many(
        &self,
        commands: &[(&str, A::Command)],
        ctx: &CommandContext,
    ) -> Res<Vec<Executed<A>>, A> {
        let mut conflicted = String::new();
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.pause(attempt - 1)).await;
            }
            let units = self.decide_all(commands).await?;
            let mut appends = Vec::new();
            for u in units.iter().filter(|u| !u.decided.is_empty()) {
                appends.push(self.request(&u.id, u.loaded_version, ctx, &u.decided)?);
            }
            if appends.is_empty() {
                return Ok(units.into_iter().map(|u| unchanged(u, attempt)).collect());
            }
            let transaction = Transaction {
                appends,
                checkpoint: None,
            };
            match self.store.transact(transaction).await {
                Ok(out) => {
                    let mut results = out.results.into_iter();
                    let mut executed = Vec::with_capacity(units.len());
                    for u in units {
                        if u.decided.is_empty() {
                            executed.push(unchanged(u, attempt));
                            continue;
                        }
                        let result = results.next().ok_or_else(|| {
                            Error::Corrupt(
                                "a transaction returned fewer results than appends".into(),
                            )
                        })?;
                        self.snapshot_after(
                            &u.id,
                            u.loaded_version,
                            result.aggregate_version,
                            &u.state,
                        );
                        executed.push(Executed {
                            state: u.state,
                            version: result.aggregate_version,
                            events: result.events,
                            attempts: attempt,
                        });
                    }
                    return Ok(executed);
                }
                Err(Error::WrongExpectedVersion { aggregate_id, .. }) => conflicted = aggregate_id,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepositoryError::Conflict {
            aggregate_id: conflicted,
            attempts: self.retry.max_attempts,
        })
    }

    /// Loads every aggregate named once and decides the commands in order.
    async fn decide_all(&self, commands: &[(&str, A::Command)]) -> Res<Vec<Unit<A>>, A> {
        let mut units: Vec<Unit<A>> = Vec::new();
        for (id, command) in commands {
            let i = match units.iter().position(|u| u.id == *id) {
                Some(i) => i,
                None => {
                    let loaded = self.load(id).await?;
                    units.push(Unit {
                        id: (*id).to_owned(),
                        loaded_version: loaded.version,
                        state: loaded.state,
                        decided: Vec::new(),
                    });
                    units.len() - 1
                }
            };
            let unit = &mut units[i];
            let events = unit
                .state
                .handle(command.clone())
                .map_err(RepositoryError::Rejected)?;
            for event in events {
                unit.state.apply(&event);
                unit.decided.push((event, Map::new()));
            }
        }
        Ok(units)
    }
}

/// The outcome for an aggregate its commands left unchanged.
fn unchanged<A: Aggregate>(u: Unit<A>, attempts: u32) -> Executed<A> {
    Executed {
        state: u.state,
        version: u.loaded_version,
        events: Vec::new(),
        attempts,
    }
}
