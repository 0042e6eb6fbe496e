//! The body of `GET /v1/cluster`: the nodes of a cluster and which one leads
//! ([`crate::cluster`]).

use crate::cluster::{ClusterView, ReadStoreStatus, Role};
use crate::event::Timestamp;
use serde::{Deserialize, Serialize};

/// The body of `GET /v1/cluster`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// The name of the node that answered.
    pub this_node: String,
    /// The name of the leader, if one is known.
    pub leader: Option<String>,
    /// The current term's epoch number (the leader's `$epoch` event in `$epochs`), when
    /// the answering node leads a cluster.
    pub epoch: Option<u64>,
    /// Whether the nodes share their store (PostgreSQL): false for a node alone.
    pub shared: bool,
    /// The live nodes, by name.
    pub nodes: Vec<ClusterNode>,
    /// The answering node's read store (a hot standby serving its reads), when it has
    /// one (`annal serve --read-store`; docs/cluster.md#reads-from-a-standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_store: Option<ReadStoreStatus>,
}

/// A live node of [`Cluster`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// Its instance id (new at every start).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub instance_id: uuid::Uuid,
    /// `host:port` clients reach it at, for HTTP and gRPC.
    pub address: String,
    /// `leader` or `follower`.
    pub role: Role,
    /// When it started.
    pub started_at: Timestamp,
    /// When its heartbeat lapses unless renewed.
    pub expires_at: Timestamp,
}

impl From<&ClusterView> for Cluster {
    fn from(view: &ClusterView) -> Self {
        Self {
            this_node: view.me.name.clone(),
            leader: view.leader_node().map(|n| n.name.clone()),
            epoch: view.epoch,
            shared: view.shared,
            nodes: view
                .nodes
                .iter()
                .map(|n| ClusterNode {
                    name: n.name.clone(),
                    instance_id: n.instance_id,
                    address: n.address.clone(),
                    role: view.role(n),
                    started_at: n.started_at,
                    expires_at: n.expires_at,
                })
                .collect(),
            read_store: None,
        }
    }
}
