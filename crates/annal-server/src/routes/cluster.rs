//! The `cluster` route: the nodes of a cluster of `annal serve` processes on one store,
//! and which one leads ([`annal_core::cluster`]), as the answering node sees them. The
//! same picture as the gRPC `Gossip.Read`.

use super::{Guarded, Res, ok};
use crate::AppState;
use annal_core::cluster::{ClusterView, NodeRegistration};
use annal_core::wire::Cluster;
use axum::extract::State;

/// `GET /v1/cluster`
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "cluster",
    description = "The live nodes of the cluster (annal serve processes on one PostgreSQL store), the leader lease's holder as leader and the others as followers, as the answering node sees them. A node on a store that keeps no nodes (SQLite) is alone and its own leader. `read_store` describes the node's read store (a hot standby serving its reads), when it has one.",
    responses(
        (status = 200, description = "The cluster", body = Cluster),
        Guarded
    )
)]
pub async fn cluster(State(app): State<AppState>) -> Res {
    let mut body = match &app.config.cluster {
        Some(view) => Cluster::from(&*view.borrow()),
        None => Cluster::from(&ClusterView::alone(&NodeRegistration {
            name: app.config.advertised.to_string(),
            instance_id: annal_core::Uuid::nil(),
            address: app.config.advertised.to_string(),
            started_at: annal_core::Timestamp::from_micros(0),
        })),
    };
    body.read_store = app.store.read_store().await;
    ok(&body)
}
