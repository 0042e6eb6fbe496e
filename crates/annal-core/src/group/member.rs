//! One member of a consumer group running on its own: it heartbeats, holds partition
//! leases up to its [`share`], and runs one projection runner per partition it holds.
//!
//! Invariants (the group's, see the parent module): a runner runs only while its
//! member holds the partition's lease; a graceful move stops the runner (which writes its
//! checkpoint) before the lease is released; every checkpoint write carries the lease's
//! fencing token, and a runner stops at once when a renewal says the lease is lost.

use super::{GroupError, Shared};
use crate::append::check_name;
use crate::error::Error;
use crate::lease::{Lease, check_ttl};
use crate::projection::{
    Handler, HeadReader, ProjectionError, ProjectionHandle, ProjectionOptions, head_reader,
};
use crate::store::Store;
use crate::subscription::{Partition, partition_of};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

/// How a [`GroupMember`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOptions {
    /// The partitions' template: its name is the group's name, its filters the group's.
    pub projection: ProjectionOptions,
    /// The number of partitions (at least 1), the same for every member.
    pub partitions: u32,
    /// How long a lease or heartbeat lasts unless renewed (default 10 s): a crashed
    /// member's partitions move after at most this long.
    pub ttl: Duration,
    /// How often the member renews and rebalances (default ttl/3).
    pub renew_every: Duration,
}

impl MemberOptions {
    /// A member of the group `projection.name` split into `partitions`.
    pub fn new(projection: ProjectionOptions, partitions: u32) -> Self {
        let ttl = Duration::from_secs(10);
        Self {
            projection,
            partitions: partitions.max(1),
            ttl,
            renew_every: ttl / 3,
        }
    }

    /// Sets the ttl, and the renewal period to a third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.renew_every = ttl / 3;
        self
    }

    /// The checkpoint name of partition `index`.
    pub fn checkpoint_name(&self, index: u32) -> String {
        format!("{}.p{index}of{}", self.projection.name, self.partitions)
    }
}

/// The share of `partitions` of the member at `index` among `members` sorted by name.
pub fn share(partitions: u32, members: usize, index: usize) -> u32 {
    let n = members.max(1) as u64;
    let p = u64::from(partitions);
    let extra = u64::from((index as u64) < p % n);
    #[allow(clippy::cast_possible_truncation)] // at most `partitions`, a u32
    let share = (p / n + extra) as u32;
    share
}

/// What a member runs now, as its task last published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The leases of the partitions it runs, by partition.
    pub leases: BTreeMap<u32, Lease>,
    /// The live members it last heard of, by name (itself included).
    pub members: Vec<String>,
    /// Rebalancing rounds done.
    pub rounds: u64,
    /// Partitions lost so far: their lease changed hands before the member gave them up
    /// (it stalled past the ttl, or renewals failed for a whole ttl).
    pub lost: u64,
}

impl MemberStatus {
    /// The partitions it runs.
    pub fn partitions(&self) -> BTreeSet<u32> {
        self.leases.keys().copied().collect()
    }
}

/// A member of a consumer group that runs on its own (see the module docs): it holds
/// partition leases in the store and runs its partitions' projections with one shared
/// handler. [`GroupMember::leave`] hands its partitions over gracefully; dropping it
/// (or [`GroupMember::crash`]) stops everything at once, like a crash: its leases are
/// left to expire.
pub struct GroupMember<H> {
    name: String,
    control: mpsc::Sender<()>,
    status: watch::Receiver<MemberStatus>,
    task: Option<tokio::task::JoinHandle<Result<H, GroupError>>>,
    head: HeadReader,
    least_checkpoint: LeastCheckpoint,
}

/// How often [`GroupMember::wait_caught_up`] reads the group's checkpoints.
const CAUGHT_UP_POLL: Duration = Duration::from_millis(20);

/// Reads the least position of the group's partition checkpoints (`None` while one of
/// them has none), whichever member wrote them.
type LeastCheckpoint = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Option<u64>, Error>> + Send>>
        + Send
        + Sync,
>;

fn least_checkpoint<S: Store + ?Sized + 'static>(
    store: Arc<S>,
    options: &MemberOptions,
) -> LeastCheckpoint {
    let names: Arc<Vec<String>> = Arc::new(
        (0..options.partitions)
            .map(|i| options.checkpoint_name(i))
            .collect(),
    );
    Arc::new(move || {
        let (store, names) = (store.clone(), names.clone());
        Box::pin(async move {
            let mut least: Option<u64> = None;
            for name in names.iter() {
                let Some(c) = store.checkpoint(name).await? else {
                    return Ok(None);
                };
                least = Some(least.map_or(c.position, |l| l.min(c.position)));
            }
            Ok(least)
        })
    })
}

impl<H> Drop for GroupMember<H> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<H: Handler> GroupMember<H> {
    /// Joins the group as `member` and starts taking partitions (a tokio runtime must be
    /// running). Bad names or ttl are refused here; a store that cannot hold leases ends
    /// the member with [`GroupError::Store`].
    pub fn join<S: Store + ?Sized + 'static>(
        store: Arc<S>,
        member: impl Into<String>,
        handler: H,
        options: MemberOptions,
    ) -> Result<Self, GroupError> {
        let name = member.into();
        check_name("member", &name)?;
        check_name("group", &options.projection.name)?;
        check_ttl(options.ttl, false)?;
        if options.renew_every.is_zero() || options.renew_every >= options.ttl {
            return Err(
                Error::invalid("renew_every", "must be above zero and below the ttl").into(),
            );
        }
        let (control, control_rx) = mpsc::channel(1);
        let (status_tx, status) = watch::channel(MemberStatus::default());
        let head = head_reader(store.clone());
        let least_checkpoint = least_checkpoint(store.clone(), &options);
        let task = MemberTask {
            store,
            name: name.clone(),
            options,
            handler: Arc::new(Mutex::new(handler)),
            running: Running(BTreeMap::new()),
            status: status_tx,
            rounds: 0,
            lost: 0,
            members: Vec::new(),
        };
        Ok(Self {
            name,
            control,
            status,
            task: Some(tokio::spawn(task.run(control_rx))),
            head,
            least_checkpoint,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it runs now.
    pub fn status(&self) -> MemberStatus {
        self.status.borrow().clone()
    }

    /// Waits until `done` holds for its status, or the member ends (then `false`).
    pub async fn wait_until(&self, done: impl FnMut(&MemberStatus) -> bool) -> bool {
        let mut rx = self.status.clone();
        rx.wait_for(done).await.is_ok()
    }

    /// Waits until the whole group, whichever members run its partitions (in this process
    /// or others), has handled everything committed before this call: every partition's
    /// checkpoint at or past the head the store had then. Checkpoints are written at most
    /// `checkpoint_interval` after a partition moves on, so this answers up to that much
    /// after the handlers are done. `Ok(true)` once caught up; `Ok(false)` if `timeout`
    /// passed first (a partition no member runs never catches up) or this member ended;
    /// an error if the store could not be read. What tests and read-your-writes
    /// endpoints wait on after an append.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        let head = (self.head)().await?;
        loop {
            if head == 0 || (self.least_checkpoint)().await?.is_some_and(|p| p >= head) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline || self.task.as_ref().is_none_or(|t| t.is_finished()) {
                return Ok(false);
            }
            tokio::time::sleep(CAUGHT_UP_POLL.min(deadline - now)).await;
        }
    }

    /// Leaves gracefully: stops every runner (each writes its checkpoint), then releases
    /// the leases and the heartbeat, and hands back the handler.
    pub async fn leave(mut self) -> Result<H, GroupError> {
        let _ = self.control.send(()).await;
        let Some(task) = self.task.take() else {
            return Err(GroupError::Aborted(self.name.clone()));
        };
        match task.await {
            Ok(out) => out,
            Err(_) => Err(GroupError::Aborted(self.name.clone())),
        }
    }

    /// Stops at once like a crash: runners are aborted, no checkpoint is written and no
    /// lease released (they expire after the ttl).
    pub async fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A partition a member runs: its lease and runner.
struct Owned<H> {
    lease: Lease,
    /// When the last successful renewal (or the acquisition) was sent.
    renewed_at: Instant,
    handle: ProjectionHandle<Shared<H>>,
}

/// The partitions a member runs; dropped (the member crashed or was aborted), it aborts
/// their runners.
struct Running<H>(BTreeMap<u32, Owned<H>>);

impl<H> Drop for Running<H> {
    fn drop(&mut self) {
        for owned in self.0.values() {
            owned.handle.abort();
        }
    }
}

struct MemberTask<S: ?Sized, H> {
    store: Arc<S>,
    name: String,
    options: MemberOptions,
    handler: Arc<Mutex<H>>,
    running: Running<H>,
    status: watch::Sender<MemberStatus>,
    rounds: u64,
    lost: u64,
    members: Vec<String>,
}

/// Whether a store error is the caller's to fix (retrying will not help).
fn is_permanent(e: &Error) -> bool {
    matches!(e, Error::InvalidRequest { .. } | Error::TooLarge { .. })
}

/// Whether a runner ended because its lease changed hands.
fn lost_lease(e: &ProjectionError) -> bool {
    matches!(
        e,
        ProjectionError::Store {
            source: Error::LeaseConflict { .. },
            ..
        }
    )
}

impl<S: Store + ?Sized + 'static, H: Handler> MemberTask<S, H> {
    fn group(&self) -> &str {
        &self.options.projection.name
    }

    async fn run(mut self, mut control: mpsc::Receiver<()>) -> Result<H, GroupError> {
        let mut tick = tokio::time::interval(self.options.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                biased;
                _ = control.recv() => break Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = self.round().await {
                        break Err(e);
                    }
                }
            }
        };
        let left = self.leave().await;
        outcome?;
        left?;
        let name = self.name.clone();
        let handler = self.handler.clone();
        drop(self);
        match Arc::try_unwrap(handler) {
            Ok(h) => Ok(h.into_inner()),
            Err(_) => Err(GroupError::Aborted(name)),
        }
    }

    /// One round: collect ended runners, heartbeat, renew, release above the share,
    /// take free partitions up to it.
    async fn round(&mut self) -> Result<(), GroupError> {
        self.reap().await?;
        let group = self.group().to_owned();
        match self
            .store
            .heartbeat(&group, &self.name, self.options.ttl)
            .await
        {
            Ok(members) => self.members = members,
            Err(e) if is_permanent(&e) => return Err(e.into()),
            Err(e) => tracing::warn!(group, member = self.name, "heartbeat failed: {e}"),
        }
        if !self.members.contains(&self.name) {
            self.members.push(self.name.clone());
            self.members.sort();
        }
        self.renew().await?;
        let index = self
            .members
            .iter()
            .position(|m| *m == self.name)
            .unwrap_or(0);
        let quota = share(self.options.partitions, self.members.len(), index) as usize;
        while self.running.0.len() > quota {
            let Some(p) = self.running.0.keys().next_back().copied() else {
                break;
            };
            self.hand_over(p).await?;
        }
        if self.running.0.len() < quota {
            self.take(quota).await?;
        }
        self.rounds += 1;
        self.publish();
        Ok(())
    }

    /// Collects runners that ended on their own: a lost lease drops the partition; any
    /// other failure (a fault) ends the member with it.
    async fn reap(&mut self) -> Result<(), GroupError> {
        let ended: Vec<u32> = self
            .running
            .0
            .iter()
            .filter(|(_, o)| o.handle.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            let Some(owned) = self.running.0.remove(&p) else {
                continue;
            };
            match owned.handle.join().await {
                Err(e) if lost_lease(&e) => {
                    tracing::warn!(member = self.name, partition = p, "lease lost: {e}");
                    self.lost += 1;
                }
                Err(e) => {
                    let _ = self.store.release_lease(&owned.lease).await;
                    return Err(e.into());
                }
                Ok(_) => {
                    let _ = self.store.release_lease(&owned.lease).await;
                }
            }
        }
        Ok(())
    }

    /// Renews every lease; stops the runner of a lease that was lost, and of one whose
    /// renewals have failed for a whole ttl.
    async fn renew(&mut self) -> Result<(), GroupError> {
        let ttl = self.options.ttl;
        let mut lost = Vec::new();
        for (p, owned) in &mut self.running.0 {
            let sent = Instant::now();
            match self.store.renew_lease(&owned.lease, ttl).await {
                Ok(Some(lease)) => {
                    owned.lease = lease;
                    owned.renewed_at = sent;
                }
                Ok(None) => lost.push(*p),
                Err(e) if is_permanent(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(member = self.name, partition = p, "renewal failed: {e}");
                    if owned.renewed_at.elapsed() >= ttl {
                        lost.push(*p);
                    }
                }
            }
        }
        for p in lost {
            if let Some(owned) = self.running.0.remove(&p) {
                tracing::warn!(member = self.name, partition = p, "lease lost");
                self.lost += 1;
                owned.handle.kill().await;
            }
        }
        Ok(())
    }

    /// Stops partition `p`'s runner (its checkpoint written), then releases its lease.
    async fn hand_over(&mut self, p: u32) -> Result<(), GroupError> {
        let Some(owned) = self.running.0.remove(&p) else {
            return Ok(());
        };
        let stopped = owned.handle.stop().await;
        let released = self.store.release_lease(&owned.lease).await;
        match stopped {
            Err(e) if !lost_lease(&e) => return Err(e.into()),
            _ => {}
        }
        match released {
            Err(e) if is_permanent(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Takes free partitions until the member runs `quota` of them.
    async fn take(&mut self, quota: usize) -> Result<(), GroupError> {
        let group = self.group().to_owned();
        let held: BTreeSet<u32> = match self.store.leases(&group).await {
            Ok(leases) => leases.into_iter().map(|l| l.partition).collect(),
            Err(e) if is_permanent(&e) => return Err(e.into()),
            Err(_) => return Ok(()),
        };
        let count = self.options.partitions;
        // Members start looking at different partitions, to collide less.
        let first = partition_of(&self.name, count);
        for i in 0..count {
            if self.running.0.len() >= quota {
                break;
            }
            let p = (first + i) % count;
            if held.contains(&p) || self.running.0.contains_key(&p) {
                continue;
            }
            let sent = Instant::now();
            match self
                .store
                .acquire_lease(&group, p, &self.name, self.options.ttl)
                .await
            {
                Ok(Some(lease)) => self.start(lease, sent),
                Ok(None) => {}
                Err(e) if is_permanent(&e) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Starts the runner of a partition whose lease was just acquired.
    fn start(&mut self, lease: Lease, renewed_at: Instant) {
        let p = lease.partition;
        let mut options = self.options.projection.clone();
        options.name = self.options.checkpoint_name(p);
        options.rebuild = false;
        options.subscription.partition = Some(Partition {
            index: p,
            count: self.options.partitions,
        });
        options.fence = Some(lease.fence());
        let handle =
            crate::projection::spawn(self.store.clone(), Shared(self.handler.clone()), options);
        self.running.0.insert(
            p,
            Owned {
                lease,
                renewed_at,
                handle,
            },
        );
    }

    /// Hands every partition over (the runners stop at the same time, each writing its
    /// checkpoint, then the leases are released) and leaves the heartbeat table.
    async fn leave(&mut self) -> Result<(), GroupError> {
        let owned: Vec<Owned<H>> = std::mem::take(&mut self.running.0).into_values().collect();
        let (leases, handles): (Vec<Lease>, Vec<_>) =
            owned.into_iter().map(|o| (o.lease, o.handle)).unzip();
        let stopped = futures_util::future::join_all(handles.into_iter().map(|h| h.stop())).await;
        let mut first_error = None;
        for (lease, outcome) in leases.iter().zip(stopped) {
            match outcome {
                Err(e) if lost_lease(&e) => self.lost += 1,
                Err(e) => {
                    first_error.get_or_insert(GroupError::from(e));
                }
                Ok(_) => {}
            }
            if let Err(e) = self.store.release_lease(lease).await {
                first_error.get_or_insert(e.into());
            }
        }
        let group = self.group().to_owned();
        let _ = self
            .store
            .heartbeat(&group, &self.name, Duration::ZERO)
            .await;
        self.publish();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn publish(&self) {
        let status = MemberStatus {
            leases: self
                .running
                .0
                .iter()
                .map(|(p, o)| (*p, o.lease.clone()))
                .collect(),
            members: self.members.clone(),
            rounds: self.rounds,
            lost: self.lost,
        };
        self.status.send_replace(status);
    }
}
