//! The fence a group's checkpoint writes carry in a cluster: the leader lease.
//!
//! Invariants: alone (no cluster, or a store that keeps no nodes) a write goes as it
//! is. In a cluster it carries the leader lease this node holds now, or the last one it
//! held: the checkpoint a node writes as it stops leading is then stored if nobody took
//! the lease meanwhile, and refused if another node did (that node resumes from the
//! last checkpoint stored, so some events are delivered again and none is skipped). A
//! node that never led while the group ran writes nothing.

use annal_core::CheckpointWrite;
use annal_core::cluster::ClusterView;
use annal_core::lease::LeaseFence;
use tokio::sync::watch;

/// What a group's task fences its checkpoint writes with.
pub(crate) struct LeaderFence {
    /// The cluster as this node sees it (`None`: alone).
    cluster: Option<watch::Receiver<ClusterView>>,
    /// The last leader lease seen held by this node.
    last: Option<LeaseFence>,
}

impl LeaderFence {
    /// Fences by `cluster`'s leader lease, if there is a cluster.
    pub(crate) fn new(cluster: Option<watch::Receiver<ClusterView>>) -> Self {
        Self {
            cluster,
            last: None,
        }
    }

    /// `write` as this node may make it; `None`: it may not make it at all.
    pub(crate) fn apply(&mut self, write: CheckpointWrite) -> Option<CheckpointWrite> {
        let Some(cluster) = &self.cluster else {
            return Some(write);
        };
        {
            let view = cluster.borrow();
            if !view.shared {
                return Some(write);
            }
            if let Some(fence) = &view.fence {
                self.last = Some(fence.clone());
            }
        }
        self.last.clone().map(|f| write.fenced(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::Timestamp;
    use annal_core::cluster::NodeRegistration;

    fn view(shared: bool, token: Option<u64>) -> ClusterView {
        let me = NodeRegistration {
            name: "a".into(),
            instance_id: annal_core::Uuid::from_u128(1),
            address: "127.0.0.1:2113".into(),
            started_at: Timestamp::from_micros(0),
        };
        ClusterView {
            shared,
            fence: token.map(|token| LeaseFence {
                group: "$cluster".into(),
                partition: 0,
                owner: me.instance_id.to_string(),
                token,
            }),
            ..ClusterView::alone(&me)
        }
    }

    fn token(w: Option<CheckpointWrite>) -> Option<Option<u64>> {
        w.map(|w| w.lease.map(|f| f.token))
    }

    #[test]
    fn alone_a_checkpoint_goes_unfenced() {
        let write = || CheckpointWrite::new("g", 5);
        assert_eq!(token(LeaderFence::new(None).apply(write())), Some(None));
        let (_tx, rx) = watch::channel(view(false, None));
        assert_eq!(token(LeaderFence::new(Some(rx)).apply(write())), Some(None));
    }

    #[test]
    fn in_a_cluster_a_checkpoint_carries_the_current_lease_then_the_last_one_held() {
        let write = || CheckpointWrite::new("g", 5);
        let (tx, rx) = watch::channel(view(true, None));
        let mut fence = LeaderFence::new(Some(rx));
        assert_eq!(
            token(fence.apply(write())),
            None,
            "never led: nothing written"
        );
        tx.send_replace(view(true, Some(3)));
        assert_eq!(token(fence.apply(write())), Some(Some(3)));
        tx.send_replace(view(true, None));
        assert_eq!(
            token(fence.apply(write())),
            Some(Some(3)),
            "deposed: the last lease, which the store checks"
        );
        tx.send_replace(view(true, Some(7)));
        assert_eq!(token(fence.apply(write())), Some(Some(7)));
    }
}
