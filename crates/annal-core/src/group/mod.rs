//! Consumer groups: N members share one named subscription. The log is split into a
//! fixed number of partitions by [`partition_of`] the aggregate_id; each partition is a
//! projection runner with its own checkpoint (`{group}.p{index}of{count}`), run by
//! exactly one member at a time.
//!
//! Two ways to run a group:
//! - [`GroupMember`]: each member runs on its own, in its own process if need be (over
//!   any [`Store`], the HTTP client included). Members agree through partition leases
//!   kept in the store ([`crate::lease`]): every `renew_every` (default ttl/3) a member
//!   sends a heartbeat (which answers the live members), renews its leases, releases the
//!   partitions above its share and takes free or expired ones up to it. Shares are
//!   deterministic: with members sorted by name, the first `partitions % members` get
//!   one more than `partitions / members`;
//! - [`ConsumerGroup`]: one value owns every member's runners, in one process (no
//!   leases needed).
//!
//! Invariants:
//! - each aggregate's events go to exactly one member, in order: an aggregate always
//!   falls in the same partition, and a partition is handled by one runner at a time
//!   (a member runs a partition only while it holds its lease);
//! - a graceful move (a member leaving or giving up a partition above its share) stops
//!   the partition's runner, which writes its checkpoint, BEFORE the lease is released;
//!   the next owner starts from that checkpoint: nothing is lost or reordered and
//!   nothing is redelivered;
//! - a member that crashes (or stalls past its ttl) loses its leases when they expire;
//!   the next owner resumes from the partition's last checkpoint, so what the crashed
//!   member handled since then is redelivered (at-least-once), nothing is lost;
//! - fencing: every checkpoint write of a member's runner (and every commit of its
//!   handler's appends) carries the lease's fencing token, and the store refuses it once
//!   the lease has changed hands. A member that lost a partition cannot move its
//!   checkpoint after the new owner started; its runner stops on the refusal, and a
//!   member stops a runner at once when a renewal says the lease is lost;
//! - a membership change moves as few partitions as it can: a partition keeps its owner
//!   while that member is in the group and within its share.
//!
//! The partition count is fixed for the group's life (changing it changes every
//! aggregate's partition: rebuild under a new name instead). Member names must be unique
//! among the live members of a group.

use crate::append::AppendRequest;
use crate::error::Error;
use crate::event::RecordedEvent;
use crate::projection::{
    Handler, HandlerError, ProjectionError, ProjectionHandle, ProjectionOptions,
};
use crate::store::Store;
use crate::subscription::{Partition, partition_of};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;

mod member;

pub use member::{GroupMember, MemberOptions, MemberStatus, share};

/// A group's member's handler, shared by the runners of the partitions it owns.
struct Shared<H>(Arc<Mutex<H>>);

#[async_trait]
impl<H: Handler> Handler for Shared<H> {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        self.0.lock().await.handle(event).await
    }
}

/// Why a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No member has this name.
    #[error("consumer group '{group}' has no member '{member}'")]
    NoSuchMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// A member with this name is already in the group.
    #[error("consumer group '{group}' already has a member '{member}'")]
    AlreadyMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// A partition's runner failed (faulted, or the store failed) while being moved.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The store refused a lease operation for a reason retrying cannot fix (bad input,
    /// or a store that cannot hold leases).
    #[error(transparent)]
    Store(#[from] Error),
    /// The member's task ended without an answer (it panicked or was aborted).
    #[error("consumer group member '{0}' ended abnormally")]
    Aborted(String),
}

/// A consumer group of members with handlers of type `H`.
pub struct ConsumerGroup<S: ?Sized, H> {
    store: Arc<S>,
    template: ProjectionOptions,
    partitions: u32,
    members: BTreeMap<String, Arc<Mutex<H>>>,
    running: BTreeMap<u32, (String, ProjectionHandle<Shared<H>>)>,
}

impl<S: Store + ?Sized + 'static, H: Handler> ConsumerGroup<S, H> {
    /// A group named `options.name` over `options`' filters, split into `partitions`
    /// (at least 1), with no members yet.
    pub fn new(store: Arc<S>, options: ProjectionOptions, partitions: u32) -> Self {
        Self {
            store,
            template: options,
            partitions: partitions.max(1),
            members: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// The checkpoint name of partition `index`.
    pub fn checkpoint_name(&self, index: u32) -> String {
        format!("{}.p{index}of{}", self.template.name, self.partitions)
    }

    /// Which member runs each partition.
    pub fn assignment(&self) -> BTreeMap<u32, String> {
        self.running
            .iter()
            .map(|(p, (m, _))| (*p, m.clone()))
            .collect()
    }

    /// The member that handles `aggregate_id`'s events, if the group has members.
    pub fn member_for(&self, aggregate_id: &str) -> Option<&str> {
        let p = partition_of(aggregate_id, self.partitions);
        self.running.get(&p).map(|(m, _)| m.as_str())
    }

    /// Waits until every partition has handled everything committed before this call
    /// (each runner's position reaches the head the store had then). `Ok(true)` once
    /// they have; `Ok(false)` if `timeout` passed first, a runner ended, or the group has
    /// no members while there are events to handle; an error if the head could not be
    /// read.
    pub async fn wait_caught_up(&self, timeout: std::time::Duration) -> Result<bool, Error> {
        let head = self.store.head(&[]).await?;
        if head == 0 {
            return Ok(true);
        }
        if self.running.len() < self.partitions as usize {
            return Ok(false);
        }
        let all = futures_util::future::join_all(
            self.running
                .values()
                .map(|(_, h)| h.wait_until(|p| p.position >= head)),
        );
        Ok(tokio::time::timeout(timeout, all)
            .await
            .is_ok_and(|reached| reached.into_iter().all(|r| r)))
    }

    /// Adds a member; partitions move to it.
    pub async fn join(&mut self, member: impl Into<String>, handler: H) -> Result<(), GroupError> {
        let member = member.into();
        if self.members.contains_key(&member) {
            return Err(GroupError::AlreadyMember {
                group: self.template.name.clone(),
                member,
            });
        }
        self.members.insert(member, Arc::new(Mutex::new(handler)));
        self.rebalance().await
    }

    /// Removes a member, once its partitions have moved to the others (their checkpoints
    /// written), and hands back its handler.
    pub async fn leave(&mut self, member: &str) -> Result<H, GroupError> {
        let Some(shared) = self.members.remove(member) else {
            return Err(GroupError::NoSuchMember {
                group: self.template.name.clone(),
                member: member.to_owned(),
            });
        };
        self.rebalance().await?;
        let handler = Arc::try_unwrap(shared)
            .map_err(|_| GroupError::NoSuchMember {
                group: self.template.name.clone(),
                member: member.to_owned(),
            })?
            .into_inner();
        Ok(handler)
    }

    /// Stops every partition (checkpoints written) and hands back the members' handlers.
    pub async fn stop(mut self) -> Result<BTreeMap<String, H>, GroupError> {
        let mut first_error = None;
        for (_, (_, handle)) in std::mem::take(&mut self.running) {
            if let Err(e) = handle.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
        let mut out = BTreeMap::new();
        for (name, shared) in std::mem::take(&mut self.members) {
            if let Ok(m) = Arc::try_unwrap(shared) {
                out.insert(name, m.into_inner());
            }
        }
        Ok(out)
    }

    /// The assignment for the current members: partitions keep their owner while it is a
    /// member within its fair share; the rest go to the members with the fewest.
    fn plan(&self) -> BTreeMap<u32, String> {
        let n = self.members.len();
        let mut plan = BTreeMap::new();
        if n == 0 {
            return plan;
        }
        let most = (self.partitions as usize).div_ceil(n);
        let mut count: BTreeMap<&str, usize> =
            self.members.keys().map(|m| (m.as_str(), 0)).collect();
        for (p, (owner, _)) in &self.running {
            if let Some(c) = count.get_mut(owner.as_str())
                && *c < most
            {
                *c += 1;
                plan.insert(*p, owner.clone());
            }
        }
        for p in 0..self.partitions {
            if plan.contains_key(&p) {
                continue;
            }
            if let Some((m, c)) = count.iter_mut().min_by_key(|(m, c)| (**c, **m)) {
                *c += 1;
                plan.insert(p, (*m).to_owned());
            }
        }
        plan
    }

    /// Moves every partition whose owner changes: stop, then start under the new owner.
    async fn rebalance(&mut self) -> Result<(), GroupError> {
        let plan = self.plan();
        let mut first_error: Option<ProjectionError> = None;
        for p in 0..self.partitions {
            let owner = plan.get(&p).cloned();
            let current = self.running.get(&p).map(|(m, _)| m.clone());
            if current == owner {
                continue;
            }
            if let Some((_, handle)) = self.running.remove(&p)
                && let Err(e) = handle.stop().await
            {
                first_error.get_or_insert(e);
            }
            let Some(owner) = owner else { continue };
            let Some(shared) = self.members.get(&owner) else {
                continue;
            };
            let mut options = self.template.clone();
            options.name = self.checkpoint_name(p);
            options.rebuild = false;
            options.subscription.partition = Some(Partition {
                index: p,
                count: self.partitions,
            });
            let handle =
                crate::projection::spawn(self.store.clone(), Shared(shared.clone()), options);
            self.running.insert(p, (owner, handle));
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
