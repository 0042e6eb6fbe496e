//! The small services: `ServerFeatures` (what this server answers) and `Gossip` (this
//! node, alone and leader).

use crate::convert::uuid_to_pb;
use crate::pb::event_store::client::Empty;
use crate::pb::event_store::client::gossip::{ClusterInfo, EndPoint, MemberInfo, member_info};
use crate::pb::event_store::client::server_features::{SupportedMethod, SupportedMethods};
use annal_core::Uuid;
use std::net::SocketAddr;
use tonic::{Request, Response, Status};

/// The KurrentDB version annal answers as: clients gate features on it.
const COMPAT_VERSION: &str = "24.10.0";

/// `ServerFeatures`.
pub struct Features;

#[tonic::async_trait]
impl crate::pb::event_store::client::server_features::server_features_server::ServerFeatures
    for Features
{
    async fn get_supported_methods(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let method = |service: &str, name: &str, features: &[&str]| SupportedMethod {
            method_name: name.to_owned(),
            service_name: service.to_owned(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        };
        let streams = "event_store.client.streams.streams";
        let persistent = "event_store.client.persistent_subscriptions.persistentsubscriptions";
        Ok(Response::new(SupportedMethods {
            methods: vec![
                method(streams, "read", &["position", "events"]),
                method(streams, "append", &[]),
                method(streams, "batchappend", &[]),
                method(streams, "delete", &[]),
                method(streams, "tombstone", &[]),
                method("event_store.client.gossip.gossip", "read", &[]),
                method(
                    "event_store.client.server_features.serverfeatures",
                    "getsupportedmethods",
                    &[],
                ),
                method(persistent, "create", &["stream", "all"]),
                method(persistent, "update", &["stream", "all"]),
                method(persistent, "delete", &["stream", "all"]),
                method(persistent, "read", &["stream", "all"]),
                method(persistent, "getinfo", &["stream", "all"]),
                method(persistent, "replayparked", &["stream", "all"]),
                method(persistent, "list", &["stream", "all"]),
                method(persistent, "restartsubsystem", &[]),
            ],
            event_store_server_version: COMPAT_VERSION.to_owned(),
        }))
    }
}

/// `Gossip`: a cluster of one, this node, leader.
pub struct Gossip {
    /// Where clients reach this node.
    pub advertised: SocketAddr,
}

#[tonic::async_trait]
impl crate::pb::event_store::client::gossip::gossip_server::Gossip for Gossip {
    async fn read(&self, _: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(uuid_to_pb(Uuid::nil(), false)),
                time_stamp: crate::convert::ticks(now),
                state: member_info::VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(EndPoint {
                    address: self.advertised.ip().to_string(),
                    port: u32::from(self.advertised.port()),
                }),
            }],
        }))
    }
}
