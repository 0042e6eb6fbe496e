//! Consumer groups: N members share one named subscription. The log is split into a
//! fixed number of partitions by [`partition_of`] the aggregate_id; each partition is a
//! projection runner with its own checkpoint (`{group}.p{index}of{count}`), run by
//! exactly one member at a time.
//!
//! Invariants:
//! - each aggregate's events go to exactly one member, in order: an aggregate always
//!   falls in the same partition, and a partition is handled by one runner at a time;
//! - a membership change ([`ConsumerGroup::join`], [`ConsumerGroup::leave`]) moves a
//!   partition by stopping its runner (which writes its checkpoint) before the next
//!   owner's runner starts from that checkpoint: nothing is lost or reordered, and a
//!   graceful move redelivers nothing. A member that crashes instead redelivers what it
//!   handled since its partitions' last checkpoints (at-least-once);
//! - a membership change moves as few partitions as it can: a partition keeps its owner
//!   while that member is in the group and within its fair share (⌈partitions/members⌉).
//!
//! Membership is coordinated in this process: the group object owns every member's
//! runners. The partition count is fixed for the group's life (changing it changes
//! every aggregate's partition: rebuild under a new name instead).

use crate::append::AppendRequest;
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
