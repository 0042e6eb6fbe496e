//! A cluster of `annal serve` nodes on one store: who is there, and which one leads.
//!
//! The store is the only shared thing; annal adds no consensus of its own. Each node
//! registers itself with a heartbeat ([`Store::register_node`]): its name, its instance
//! id (new at every start), the address clients reach it at, when it started. One node
//! holds the leader lease: the partition-0 lease of the reserved group [`LEADER_GROUP`],
//! the same fenced lease consumer groups use ([`crate::lease`]), owned by the holder's
//! instance id. Work that must run once (persistent subscriptions) runs on the leader.
//!
//! Invariants:
//! - at most one node holds the lease at a time (the store's lease rules); a node counts
//!   itself leader only while its own clock says the lease it last renewed has not
//!   lapsed, so a node cut off from the store steps down by itself within one lease
//!   period, before another can take the lease;
//! - every term starts with a `$epoch` event in [`EPOCHS_STREAM`], appended with the
//!   stream's exact version and a checkpoint write fenced by the new lease, so only the
//!   lease's holder can write it and epoch numbers are 0, 1, 2, … without gaps;
//! - a node is leader (in its own view) only once its term's `$epoch` is stored;
//! - on a store that keeps no nodes (SQLite), the node is alone and its own leader: its
//!   term is its run, so joining writes one `$epoch` ([`start_term_alone`], the same
//!   record at the stream's exact version, with no lease to fence) before it answers;
//!   a store that cannot take it then (a full disk) gets it as soon as it can, and the
//!   view's epoch is unknown until it is stored.
//!
//! Timing: every `ttl / 4` a node sends its heartbeat, renews the lease it holds, or
//! tries to take it. A leader that dies leaves a lease with at most `ttl` to run, so
//! another node takes it within `ttl * 5 / 4` of the death.

use crate::append::{AppendRequest, ExpectedVersion, NewEvent, Transaction};
use crate::checkpoint::CheckpointWrite;
use crate::error::{Error, Result};
use crate::event::{RawJson, Timestamp};
use crate::lease::{Lease, LeaseFence};
use crate::read::Direction;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// The lease group whose partition 0 is the leader lease.
pub const LEADER_GROUP: &str = "$cluster";
/// The system stream of the leaders' terms, one `$epoch` event each.
pub const EPOCHS_STREAM: &str = "$epochs";
/// The event type of a term's start.
pub const EPOCH_EVENT: &str = "$epoch";
/// The checkpoint the `$epoch` write moves, fenced by the new leader's lease: its
/// position is the head when the current term began. A node alone (no lease) writes
/// none.
pub const LEADER_CHECKPOINT: &str = "$leader";
/// The default time-to-live of a heartbeat and of the leader lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// 9999-12-31T23:59:59.999999Z: when the heartbeat of a node alone lapses (it has
/// none), the last instant RFC 3339 can write.
const NEVER_MICROS: i64 = 253_402_300_799_999_999;

/// What a node says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    /// Its name, unique among the live nodes.
    pub name: String,
    /// Its instance id: new at every start, and the owner of the leader lease it holds.
    pub instance_id: Uuid,
    /// `host:port` clients reach it at (HTTP and gRPC share the port).
    pub address: String,
    /// When it started.
    pub started_at: Timestamp,
}

/// A live node, as the store keeps it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its instance id (new at every start).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub instance_id: Uuid,
    /// `host:port` clients reach it at, for HTTP and gRPC.
    pub address: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When its heartbeat lapses unless renewed (the store's clock).
    pub expires_at: Timestamp,
}

impl Node {
    /// The address's host and port (`[v6]:port` keeps its brackets); the port is 0 when
    /// the address has none.
    pub fn host_port(&self) -> (String, u16) {
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !port.contains(']') => {
                (host.to_owned(), port.parse().unwrap_or(0))
            }
            _ => (self.address.clone(), 0),
        }
    }
}

/// A read store: a hot standby of a PostgreSQL store that serves the node's catch-up
/// reads and reads of the log (`annal serve --read-store`), as the node sees it now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStoreStatus {
    /// Where it is: `host:port/dbname`.
    pub target: String,
    /// Whether reads go to it now. False while it cannot be reached, or does not hold
    /// this store's log: reads then go to the primary.
    pub available: bool,
    /// The last position committed on it (its own `head` row), when it answered.
    pub head: Option<u64>,
    /// How many positions it is behind the primary's head, when both answered.
    pub behind: Option<u64>,
    /// When the primary committed the last transaction the standby has replayed
    /// (`pg_last_xact_replay_timestamp()`); `null` for a server that is not a standby
    /// or has replayed none since it started.
    pub replayed_commit_at: Option<Timestamp>,
    /// Reads it answered whole since the node started.
    pub reads_served: u64,
    /// Reads the primary answered, whole or their newest part, since the node started:
    /// the read store was unavailable, failed, or was still behind the position the
    /// read needed after the wait.
    pub reads_on_primary: u64,
}

/// A node's part in the cluster, as KurrentDB names it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It holds the leader lease.
    Leader,
    /// Another node holds it, or nobody does yet.
    Follower,
}

/// What one node knows of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This node.
    pub me: Node,
    /// Every live node, this one included, by name.
    pub nodes: Vec<Node>,
    /// The instance id of the lease holder, if any.
    pub leader: Option<Uuid>,
    /// The current term's epoch number, once known.
    pub epoch: Option<u64>,
    /// Whether the store keeps nodes (a cluster is possible) or this node is alone.
    pub shared: bool,
    /// While this node leads a shared store: its leader lease as a fence, which the
    /// writes only the leader may make (persistent-subscription checkpoints) carry, so
    /// a node deposed meanwhile writes none of them.
    pub fence: Option<LeaseFence>,
}

impl ClusterView {
    /// A node alone, its own leader (a store that keeps no nodes).
    pub fn alone(me: &NodeRegistration) -> Self {
        let node = Node {
            name: me.name.clone(),
            instance_id: me.instance_id,
            address: me.address.clone(),
            started_at: me.started_at,
            expires_at: Timestamp::from_micros(NEVER_MICROS),
        };
        Self {
            me: node.clone(),
            nodes: vec![node],
            leader: Some(me.instance_id),
            epoch: None,
            shared: false,
            fence: None,
        }
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.me.instance_id)
    }

    /// The leading node, if one is known and alive.
    pub fn leader_node(&self) -> Option<&Node> {
        let id = self.leader?;
        self.nodes.iter().find(|n| n.instance_id == id)
    }

    /// A node's role.
    pub fn role(&self, node: &Node) -> Role {
        if self.leader == Some(node.instance_id) {
            Role::Leader
        } else {
            Role::Follower
        }
    }
}

/// The data of a `$epoch` event, with KurrentDB's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochRecord {
    /// 0 for the first term, then one more per term.
    pub epoch_number: u64,
    /// The head when the term began: every event at or below it was committed before.
    pub epoch_position: u64,
    /// The previous term's `epoch_position` (-1 for the first term).
    pub prev_epoch_position: i64,
    /// The term's id (also the `$epoch` event's id).
    pub epoch_id: Uuid,
    /// The leader's instance id.
    pub leader_instance_id: Uuid,
    /// When the term began (the leader's clock).
    pub time_stamp: Timestamp,
}

/// Settings of a node's membership.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// How long a heartbeat and the leader lease last unless renewed.
    pub lease_ttl: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// A node's membership: a task that keeps its heartbeat and contends for the lease,
/// and the view it keeps up to date.
pub struct Cluster {
    view: watch::Receiver<ClusterView>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Joins the cluster of `store` as `me`: registers once (so a name already used by
    /// a live node fails here, with [`Error::InvalidRequest`]), then keeps the membership in a
    /// task. On a store that keeps no nodes, `me` is alone and its own leader, and its
    /// term starts here ([`Cluster::alone`]).
    pub async fn join(
        store: Arc<dyn Store>,
        me: NodeRegistration,
        options: ClusterOptions,
    ) -> Result<Self> {
        crate::lease::check_ttl(options.lease_ttl, false)?;
        let nodes = match store.register_node(&me, options.lease_ttl).await {
            Ok(nodes) => nodes,
            Err(Error::Unsupported { .. }) => return Ok(Self::alone(store, me, options).await),
            Err(e) => return Err(e),
        };
        let mut first = ClusterView::alone(&me);
        first.leader = None;
        first.shared = true;
        if let Some(n) = nodes.iter().find(|n| n.instance_id == me.instance_id) {
            first.me = n.clone();
        }
        first.nodes = nodes;
        let (tx, view) = watch::channel(first);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let member = Member {
            store,
            me,
            ttl: options.lease_ttl,
            lease: None,
            held_until: None,
            epoch: None,
            view: tx,
        };
        let task = tokio::spawn(member.run(stopped));
        Ok(Self {
            view,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `me` alone on `store`: its term starts now. Its `$epoch` is written before this
    /// answers; if the store cannot take it (a full disk), the node serves anyway, its
    /// epoch unknown, and a task writes it every `ttl / 4` until it is stored.
    async fn alone(store: Arc<dyn Store>, me: NodeRegistration, options: ClusterOptions) -> Self {
        let (tx, view) = watch::channel(ClusterView::alone(&me));
        let first = match start_term_alone(store.as_ref(), me.instance_id).await {
            Ok(epoch) => epoch,
            Err(e) => {
                tracing::error!(error = %e, "could not write this node's $epoch; retrying");
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(retry_alone(store, me, options.lease_ttl / 4, tx, stopped));
                return Self {
                    view,
                    stop: Some(stop),
                    task: Some(task),
                };
            }
        };
        tracing::info!(node = %me.name, epoch = first.epoch_number, "leading, alone");
        tx.send_modify(|v| v.epoch = Some(first.epoch_number));
        Self {
            view,
            stop: None,
            task: None,
        }
    }

    /// The view, kept up to date.
    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Leaves: gives the lease up (if held) and removes the heartbeat, so another node
    /// takes over at once rather than after the lease lapses.
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Dropped without [`Cluster::leave`], the node stops at once, as if killed: it gives
/// nothing up, and its heartbeat and lease lapse on their own.
impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The membership task's state.
struct Member {
    store: Arc<dyn Store>,
    me: NodeRegistration,
    ttl: Duration,
    /// The leader lease, while this node holds it.
    lease: Option<Lease>,
    /// When the lease lapses by this node's clock (from before its last renewal).
    held_until: Option<tokio::time::Instant>,
    /// This term's epoch number, once its `$epoch` is stored.
    epoch: Option<u64>,
    view: watch::Sender<ClusterView>,
}

impl Member {
    async fn run(mut self, mut stopped: tokio::sync::oneshot::Receiver<()>) {
        let tick = self.ttl / 4;
        loop {
            self.beat().await;
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = &mut stopped => break,
            }
        }
        if let Some(lease) = self.lease.take()
            && let Err(e) = self.store.release_lease(&lease).await
        {
            tracing::warn!(error = %e, "could not give the leader lease up");
        }
        if let Err(e) = self.store.register_node(&self.me, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not remove this node's heartbeat");
        }
    }

    /// One round: heartbeat, lease, view.
    async fn beat(&mut self) {
        let sent = tokio::time::Instant::now();
        let nodes = match self.store.register_node(&self.me, self.ttl).await {
            Ok(nodes) => Some(nodes),
            Err(e) => {
                tracing::warn!(error = %e, "node heartbeat failed");
                None
            }
        };
        self.contend(sent).await;
        let holder = match self.store.leases(LEADER_GROUP).await {
            Ok(leases) => leases
                .into_iter()
                .find(|l| l.partition == 0)
                .and_then(|l| l.owner.parse::<Uuid>().ok()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the leader lease");
                None
            }
        };
        let leading = self.leading();
        self.view.send_modify(|v| {
            if let Some(nodes) = nodes {
                if let Some(n) = nodes.iter().find(|n| n.instance_id == self.me.instance_id) {
                    v.me = n.clone();
                }
                v.nodes = nodes;
            }
            // This node's own word on itself beats a read of the lease (which may be
            // older than the renewal, or failed).
            v.leader = if leading {
                Some(self.me.instance_id)
            } else {
                holder.filter(|h| *h != self.me.instance_id)
            };
            v.epoch = if leading { self.epoch } else { None };
            v.fence = if leading {
                self.lease.as_ref().map(Lease::fence)
            } else {
                None
            };
        });
    }

    /// Whether this node leads now: it holds the lease, its clock says the lease has
    /// not lapsed, and its term's `$epoch` is stored.
    fn leading(&self) -> bool {
        self.lease.is_some()
            && self.epoch.is_some()
            && self
                .held_until
                .is_some_and(|t| tokio::time::Instant::now() < t)
    }

    /// Renews the lease held, or tries to take it; starts the term once taken.
    async fn contend(&mut self, sent: tokio::time::Instant) {
        if let Some(held) = &self.lease {
            match self.store.renew_lease(held, self.ttl).await {
                Ok(Some(renewed)) => {
                    self.lease = Some(renewed);
                    self.held_until = Some(sent + self.ttl);
                }
                Ok(None) => {
                    tracing::warn!(node = %self.me.name, "lost the leader lease");
                    self.step_down();
                }
                // Still held until `held_until` by this clock ([`Member::leading`]); a
                // later renewal keeps the term if nobody took the lease meanwhile.
                Err(e) => tracing::warn!(error = %e, "could not renew the leader lease"),
            }
        } else {
            let owner = self.me.instance_id.to_string();
            match self
                .store
                .acquire_lease(LEADER_GROUP, 0, &owner, self.ttl)
                .await
            {
                Ok(Some(lease)) => {
                    tracing::info!(node = %self.me.name, token = lease.token, "took the leader lease");
                    self.lease = Some(lease);
                    self.held_until = Some(sent + self.ttl);
                    self.epoch = None;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not try for the leader lease"),
            }
        }
        if let Some(lease) = self.lease.clone()
            && self.epoch.is_none()
        {
            match start_term(self.store.as_ref(), &lease).await {
                Ok(epoch) => {
                    tracing::info!(node = %self.me.name, epoch = epoch.epoch_number, "leading");
                    self.epoch = Some(epoch.epoch_number);
                }
                Err(Error::LeaseConflict { .. }) => self.step_down(),
                Err(e) => tracing::warn!(error = %e, "could not write this term's $epoch"),
            }
        }
    }

    fn step_down(&mut self) {
        self.lease = None;
        self.held_until = None;
        self.epoch = None;
    }
}

/// Writes the `$epoch` of `me`, alone, every `every` until it is stored or `stopped`.
async fn retry_alone(
    store: Arc<dyn Store>,
    me: NodeRegistration,
    every: Duration,
    view: watch::Sender<ClusterView>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stopped => return,
        }
        match start_term_alone(store.as_ref(), me.instance_id).await {
            Ok(epoch) => {
                tracing::info!(node = %me.name, epoch = epoch.epoch_number, "leading, alone");
                view.send_modify(|v| v.epoch = Some(epoch.epoch_number));
                return;
            }
            Err(e) => tracing::debug!(error = %e, "could not write this node's $epoch yet"),
        }
    }
}

/// Attempts at writing a term's `$epoch` when the stream moved meanwhile.
const EPOCH_RETRIES: usize = 4;

/// Writes the `$epoch` event that starts the term of `lease`'s holder, fenced by the
/// lease, and answers it.
pub async fn start_term(store: &dyn Store, lease: &Lease) -> Result<EpochRecord> {
    let leader: Uuid = lease
        .owner
        .parse()
        .map_err(|_| Error::invalid("owner", "the leader lease's owner is an instance id"))?;
    write_epoch(store, leader, Some(lease.fence())).await
}

/// Writes the `$epoch` event that starts the term of `leader`, a node alone on its store
/// (no lease: nobody else leads it), and answers it.
pub async fn start_term_alone(store: &dyn Store, leader: Uuid) -> Result<EpochRecord> {
    write_epoch(store, leader, None).await
}

/// Appends the next `$epoch` at the stream's exact version (retried when another term
/// started meanwhile); with a fence, in one transaction with [`LEADER_CHECKPOINT`]
/// fenced by it, so a node that lost the lease writes nothing.
async fn write_epoch(
    store: &dyn Store,
    leader: Uuid,
    fence: Option<LeaseFence>,
) -> Result<EpochRecord> {
    for _ in 0..EPOCH_RETRIES {
        let last = store
            .read_aggregate(EPOCHS_STREAM, Direction::Backward, None, 1)
            .await?
            .pop();
        let (version, prev) = match &last {
            Some(e) => (
                e.aggregate_version,
                e.data
                    .to_value::<EpochRecord>()
                    .map_or(-1, |r| i64::try_from(r.epoch_position).unwrap_or(i64::MAX)),
            ),
            None => (0, -1),
        };
        let head = store.head(&[]).await?;
        let record = EpochRecord {
            epoch_number: version,
            epoch_position: head,
            prev_epoch_position: prev,
            epoch_id: Uuid::now_v7(),
            leader_instance_id: leader,
            time_stamp: Timestamp::now(),
        };
        let data =
            RawJson::from_value(&record).map_err(|e| Error::invalid("data", e.to_string()))?;
        let mut append = AppendRequest::new(
            EPOCHS_STREAM,
            EPOCHS_STREAM,
            ExpectedVersion::Exact(version),
        )
        .event(NewEvent::raw(EPOCH_EVENT, data).with_id(record.epoch_id));
        append.user_id = Some(format!("$node:{leader}"));
        let transaction = Transaction {
            appends: vec![append],
            checkpoint: fence
                .clone()
                .map(|f| CheckpointWrite::new(LEADER_CHECKPOINT, head).fenced(f)),
        };
        match store.transact(transaction).await {
            Ok(_) => return Ok(record),
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::storage(
        "the $epochs stream kept moving while this node wrote its term's $epoch",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str) -> Node {
        Node {
            name: "n".into(),
            instance_id: Uuid::nil(),
            address: address.into(),
            started_at: Timestamp::from_micros(0),
            expires_at: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn an_address_splits_into_host_and_port() {
        assert_eq!(node("db1:2113").host_port(), ("db1".into(), 2113));
        assert_eq!(node("[::1]:2114").host_port(), ("[::1]".into(), 2114));
        assert_eq!(node("[::1]").host_port(), ("[::1]".into(), 0));
    }

    #[test]
    fn an_epoch_record_has_kurrentdbs_field_names() {
        let r = EpochRecord {
            epoch_number: 2,
            epoch_position: 40,
            prev_epoch_position: 12,
            epoch_id: Uuid::nil(),
            leader_instance_id: Uuid::nil(),
            time_stamp: Timestamp::from_micros(0),
        };
        let v = serde_json::to_value(&r).expect("serialises");
        for field in [
            "epochNumber",
            "epochPosition",
            "prevEpochPosition",
            "epochId",
            "leaderInstanceId",
            "timeStamp",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
    }

    #[test]
    fn a_node_alone_leads() {
        let me = NodeRegistration {
            name: "solo".into(),
            instance_id: Uuid::now_v7(),
            address: "127.0.0.1:2113".into(),
            started_at: Timestamp::now(),
        };
        let v = ClusterView::alone(&me);
        assert!(v.is_leader());
        assert_eq!(v.me.expires_at.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(v.leader_node().map(|n| n.name.as_str()), Some("solo"));
        assert_eq!(v.role(&v.me), Role::Leader);
    }
}
