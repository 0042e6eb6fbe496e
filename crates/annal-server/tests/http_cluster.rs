//! `GET /v1/cluster` (docs/cluster.md): a server given the cluster's view shows its
//! nodes, the lease holder as leader and the others as followers; a server without one
//! is alone and its own leader; the console's overview lists the same nodes.

mod common;

use annal_core::Timestamp;
use annal_core::cluster::{ClusterView, Node};
use annal_server::Config;
use common::{get, start};
use reqwest::{Client, StatusCode};
use serde_json::json;
use uuid::Uuid;

fn node(name: &str, address: &str) -> Node {
    Node {
        name: name.into(),
        instance_id: Uuid::now_v7(),
        address: address.into(),
        started_at: Timestamp::from_micros(1_700_000_000_000_000),
        expires_at: Timestamp::from_micros(1_700_000_005_000_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_shows_every_node_with_the_lease_holder_as_leader() {
    let (a, b) = (node("db1", "10.0.0.1:2113"), node("db2", "10.0.0.2:2113"));
    let view = ClusterView {
        me: a.clone(),
        nodes: vec![a.clone(), b.clone()],
        leader: Some(b.instance_id),
        epoch: None,
        shared: true,
        fence: None,
    };
    let (_keep, watch) = tokio::sync::watch::channel(view);
    let s = start(Config {
        cluster: Some(watch),
        ..Config::default()
    })
    .await;
    let c = Client::new();
    let (status, body) = get(&c, &format!("{}/v1/cluster", s.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "this_node": "db1",
            "leader": "db2",
            "epoch": null,
            "shared": true,
            "nodes": [
                {"name": "db1", "instance_id": a.instance_id, "address": "10.0.0.1:2113",
                 "role": "follower", "started_at": a.started_at, "expires_at": a.expires_at},
                {"name": "db2", "instance_id": b.instance_id, "address": "10.0.0.2:2113",
                 "role": "leader", "started_at": b.started_at, "expires_at": b.expires_at},
            ]
        })
    );
    let (_, overview) = get(&c, &format!("{}/v1/overview", s.base)).await;
    assert_eq!(overview["nodes"], json!(["10.0.0.1:2113", "10.0.0.2:2113"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_cluster_is_alone_and_leads() {
    let s = start(Config::default()).await;
    let (status, body) = get(&Client::new(), &format!("{}/v1/cluster", s.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["shared"], false);
    let nodes = body["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["role"], "leader");
    assert_eq!(body["leader"], nodes[0]["name"]);
}
