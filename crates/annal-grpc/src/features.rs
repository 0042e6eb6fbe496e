//! The small services: `ServerFeatures` (what this server answers) and `Gossip` (the
//! cluster's live nodes, the lease holder as `Leader` and the others as `Follower`; a
//! node alone is `Leader`).
//!
//! Gossip's address for this node, in order: the configured [`Advertise`] host and port
//! (KurrentDB's `AdvertiseHostToClientAs` / `AdvertiseNodePortToClientAs`); else the
//! host and port the caller itself used (the request's `:authority`, kept by
//! [`keep_authority`]), so a client that connected with `localhost` is told
//! `localhost`; else the listen address. Other nodes are reported at the address they
//! registered with (`annal_core::cluster`). The answer is never empty.

use crate::convert::uuid_to_pb;
use crate::pb::event_store::client::Empty;
use crate::pb::event_store::client::gossip::{ClusterInfo, EndPoint, MemberInfo, member_info};
use crate::pb::event_store::client::server_features::{SupportedMethod, SupportedMethods};
use annal_core::cluster::{ClusterView, Role};
use annal_core::{Timestamp, Uuid};
use std::net::SocketAddr;
use tokio::sync::watch;
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

/// The host (and port) Gossip reports for this node whatever address the caller used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// A host name or address (an IPv6 one in brackets, as in a URL).
    pub host: String,
    /// The port; `None` is the port listened on.
    pub port: Option<u16>,
}

/// The host and port a request was addressed to (its `:authority`, or `Host`), put in
/// its extensions by [`keep_authority`].
#[derive(Debug, Clone)]
struct Authority {
    host: String,
    port: Option<u16>,
}

/// Middleware: records the request's `:authority` (HTTP/2; `Host` otherwise) for Gossip.
pub(crate) async fn keep_authority(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authority = req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
    });
    if let Some(a) = authority.filter(|a| !a.host().is_empty()) {
        req.extensions_mut().insert(Authority {
            host: a.host().to_owned(),
            port: a.port_u16(),
        });
    }
    next.run(req).await
}

/// `Gossip`: the cluster's live nodes (without a cluster: this node, leader).
pub struct Gossip {
    /// The address listened on: the answer when nothing better is known.
    pub listen: SocketAddr,
    /// The configured address, which beats the caller's.
    pub advertise: Option<Advertise>,
    /// The cluster as this node sees it; `None`: alone.
    pub cluster: Option<watch::Receiver<ClusterView>>,
}

impl Gossip {
    /// The host and port reported to a caller that addressed its request to
    /// `authority`.
    fn end_point(&self, authority: Option<&Authority>) -> EndPoint {
        let (address, port) = match (&self.advertise, authority) {
            (Some(a), _) => (a.host.clone(), a.port.unwrap_or(self.listen.port())),
            (None, Some(a)) => (a.host.clone(), a.port.unwrap_or(self.listen.port())),
            // An IPv6 address in brackets, as clients put the address in a URL.
            (None, None) => match self.listen.ip() {
                std::net::IpAddr::V6(ip) => (format!("[{ip}]"), self.listen.port()),
                ip => (ip.to_string(), self.listen.port()),
            },
        };
        EndPoint {
            address,
            port: u32::from(port),
        }
    }
}

#[tonic::async_trait]
impl crate::pb::event_store::client::gossip::gossip_server::Gossip for Gossip {
    async fn read(&self, req: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let mine = self.end_point(req.extensions().get::<Authority>());
        let now = crate::convert::ticks(Timestamp::now().as_micros());
        let Some(view) = &self.cluster else {
            return Ok(Response::new(ClusterInfo {
                members: vec![MemberInfo {
                    instance_id: Some(uuid_to_pb(Uuid::nil(), false)),
                    time_stamp: now,
                    state: member_info::VNodeState::Leader as i32,
                    is_alive: true,
                    http_end_point: Some(mine),
                }],
            }));
        };
        let view = view.borrow().clone();
        Ok(Response::new(ClusterInfo {
            members: members(&view, mine, now),
        }))
    }
}

/// The members of `view`, as KurrentDB reports them: this node at `mine`, the others
/// at their registered addresses; the lease holder `Leader`, the others `Follower`.
fn members(view: &ClusterView, mine: EndPoint, now: i64) -> Vec<MemberInfo> {
    view.nodes
        .iter()
        .map(|n| {
            let http_end_point = if n.instance_id == view.me.instance_id {
                mine.clone()
            } else {
                let (address, port) = n.host_port();
                EndPoint {
                    address,
                    port: u32::from(port),
                }
            };
            let state = match view.role(n) {
                Role::Leader => member_info::VNodeState::Leader,
                Role::Follower => member_info::VNodeState::Follower,
            };
            MemberInfo {
                instance_id: Some(uuid_to_pb(n.instance_id, false)),
                time_stamp: now,
                state: state as i32,
                is_alive: true,
                http_end_point: Some(http_end_point),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_core::cluster::Node;

    fn gossip(advertise: Option<Advertise>) -> Gossip {
        Gossip {
            listen: SocketAddr::from(([127, 0, 0, 1], 2113)),
            advertise,
            cluster: None,
        }
    }

    fn node(name: &str, address: &str) -> Node {
        Node {
            name: name.into(),
            instance_id: Uuid::now_v7(),
            address: address.into(),
            started_at: Timestamp::from_micros(0),
            expires_at: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn the_lease_holder_is_leader_and_the_others_followers_each_at_its_address() {
        let (a, b, c) = (
            node("a", "10.0.0.1:2113"),
            node("b", "10.0.0.2:2114"),
            node("c", "10.0.0.3:2113"),
        );
        let view = ClusterView {
            me: a.clone(),
            nodes: vec![a.clone(), b.clone(), c.clone()],
            leader: Some(b.instance_id),
            epoch: None,
            shared: true,
            fence: None,
        };
        let mine = EndPoint {
            address: "localhost".into(),
            port: 2113,
        };
        let found: Vec<(String, u32, i32)> = members(&view, mine, 0)
            .into_iter()
            .map(|m| {
                let e = m.http_end_point.expect("an end point");
                (e.address, e.port, m.state)
            })
            .collect();
        let (leader, follower) = (
            member_info::VNodeState::Leader as i32,
            member_info::VNodeState::Follower as i32,
        );
        assert_eq!(
            found,
            [
                ("localhost".into(), 2113, follower),
                ("10.0.0.2".into(), 2114, leader),
                ("10.0.0.3".into(), 2113, follower),
            ]
        );
    }

    fn authority(host: &str, port: Option<u16>) -> Authority {
        Authority {
            host: host.to_owned(),
            port,
        }
    }

    fn shown(e: EndPoint) -> (String, u32) {
        (e.address, e.port)
    }

    #[test]
    fn a_caller_is_told_the_host_and_port_it_used() {
        let g = gossip(None);
        assert_eq!(
            shown(g.end_point(Some(&authority("localhost", Some(2114))))),
            ("localhost".into(), 2114)
        );
        assert_eq!(
            shown(g.end_point(Some(&authority("[::1]", None)))),
            ("[::1]".into(), 2113)
        );
    }

    #[test]
    fn the_configured_address_beats_the_callers() {
        let g = gossip(Some(Advertise {
            host: "db.example".into(),
            port: None,
        }));
        assert_eq!(
            shown(g.end_point(Some(&authority("localhost", Some(2114))))),
            ("db.example".into(), 2113)
        );
        let g = gossip(Some(Advertise {
            host: "db.example".into(),
            port: Some(443),
        }));
        assert_eq!(shown(g.end_point(None)), ("db.example".into(), 443));
    }

    #[test]
    fn without_an_authority_the_listen_address_is_reported() {
        assert_eq!(
            shown(gossip(None).end_point(None)),
            ("127.0.0.1".into(), 2113)
        );
        let on_v6 = Gossip {
            listen: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 2113)),
            advertise: None,
            cluster: None,
        };
        assert_eq!(shown(on_v6.end_point(None)), ("[::1]".into(), 2113));
    }
}
