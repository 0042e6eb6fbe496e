//! annal-grpc: the KurrentDB (EventStoreDB) gRPC protocol over any annal [`Store`], so
//! the official KurrentDB clients work against annal unchanged (docs/kurrentdb.md).
//!
//! Services: `Streams` (Read with catch-up subscriptions, Append, BatchAppend, Delete,
//! Tombstone), `ServerFeatures`, `Gossip` (the cluster's nodes, or this node alone, leader)
//! and `PersistentSubscriptions` (server-side consumer groups with acknowledgements,
//! retries and parking, dispatched by the leader only: a follower answers KurrentDB's
//! "not leader" with the leader's address).
//!
//! Invariants: one store, two protocols — every write goes through
//! [`annal_core::streams`], exactly like the HTTP stream routes; reads and subscriptions
//! stream from the store at the client's pace through a bounded channel (a slow or gone
//! client costs a parked task, never a growing buffer, and a disconnect ends it); every
//! failure is a gRPC status, never a panic.

// tonic's handlers answer `Result<_, tonic::Status>`; helpers return the same type so
// `?` works throughout, whatever Status's size.
#![allow(clippy::result_large_err)]

mod auth;
mod call;
mod convert;
mod features;
mod filter;
mod metrics;
mod persistent;
mod status;
mod streams;

pub use auth::{CheckCredentials, Refusal};
pub use convert::{CLIENT_ID_KEY, EVENT_ID_NAMESPACE, client_event_id, stored_event_id};
pub use features::Advertise;
pub use persistent::Persistent;
pub use streams::Streams;

use annal_core::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Code generated from the `.proto` files in `proto/` (see proto/NOTICE.md).
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::pedantic)]
pub mod pb {
    /// `event_store.*`
    pub mod event_store {
        /// `event_store.client`
        pub mod client {
            tonic::include_proto!("event_store.client");
            /// `event_store.client.streams`
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
            /// `event_store.client.gossip`
            pub mod gossip {
                tonic::include_proto!("event_store.client.gossip");
            }
            /// `event_store.client.server_features`
            pub mod server_features {
                tonic::include_proto!("event_store.client.server_features");
            }
            /// `event_store.client.persistent_subscriptions`
            pub mod persistent_subscriptions {
                tonic::include_proto!("event_store.client.persistent_subscriptions");
            }
        }
    }
    /// `google.rpc`
    pub mod google {
        /// `google.rpc`
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// What a caller may do, decided by the host's [`CheckCredentials`] and put in the
/// request's extensions. Absent: anonymous with auth off (everything allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name, recorded as the user_id of what they write.
    pub name: String,
    /// What they may do ([`annal_core::access`]).
    pub role: annal_core::access::Role,
}

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// The address listened on: what Gossip answers when neither `advertise` nor the
    /// caller's `:authority` names one.
    pub advertised: SocketAddr,
    /// The host (and port) Gossip reports whatever the caller used (`--advertise`).
    pub advertise: Option<Advertise>,
    /// Largest message the server decodes, in bytes.
    pub max_message_bytes: usize,
    /// How callers' credentials are checked; `None` turns auth off.
    pub credentials: Option<CheckCredentials>,
    /// How long a read or catch-up subscription waits for its caller to take the next
    /// message before it ends the call (`annal serve --send-timeout`).
    pub stalled_call: std::time::Duration,
    /// The cluster as this node sees it (`annal_core::cluster`); `None`: this node is
    /// alone, and leader.
    pub cluster: Option<watch::Receiver<annal_core::cluster::ClusterView>>,
}

/// The gRPC services as an axum router, with authentication (by `options.credentials`)
/// and call metrics. `shutdown` turning true ends subscriptions.
pub fn router(
    store: Arc<dyn Store>,
    options: Options,
    shutdown: watch::Receiver<bool>,
) -> axum::Router {
    let persistent = Arc::new(Persistent::new(
        store.clone(),
        shutdown.clone(),
        options.cluster.clone(),
    ));
    router_with(store, options, shutdown, persistent)
}

/// [`router`], with the persistent subscriptions served by `persistent` (which the
/// caller keeps, to show them elsewhere: [`Persistent::dashboard`]).
pub fn router_with(
    store: Arc<dyn Store>,
    options: Options,
    shutdown: watch::Receiver<bool>,
    persistent: Arc<Persistent>,
) -> axum::Router {
    use pb::event_store::client::gossip::gossip_server::GossipServer;
    use pb::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
    use pb::event_store::client::server_features::server_features_server::ServerFeaturesServer;
    use pb::event_store::client::streams::streams_server::StreamsServer;
    let max = options.max_message_bytes;
    let streams = Streams::new(store, shutdown, options.stalled_call);
    let mut routes = tonic::service::Routes::new(
        StreamsServer::new(streams)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    );
    routes = routes
        .add_service(ServerFeaturesServer::new(features::Features))
        .add_service(GossipServer::new(features::Gossip {
            listen: options.advertised,
            advertise: options.advertise,
            cluster: options.cluster.clone(),
        }))
        .add_service(PersistentSubscriptionsServer::from_arc(persistent));
    let credentials = options.credentials;
    routes
        .into_axum_router()
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::authenticate(credentials.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(
            status::decode_failures_are_invalid_argument,
        ))
        .layer(axum::middleware::from_fn(metrics::count))
        .layer(axum::middleware::from_fn(features::keep_authority))
}

/// Whether a request is gRPC (by its content type).
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A gRPC error answer (HTTP 200 with `grpc-status`): unknown methods and refused
/// credentials.
pub fn status_response(status: tonic::Status) -> axum::response::Response {
    let (parts, ()) = status.into_http::<()>().into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::empty())
}
