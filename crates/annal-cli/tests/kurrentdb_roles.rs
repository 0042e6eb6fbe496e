//! Least privilege over gRPC, driven by the official Rust KurrentDB client: every call
//! the client offers, tried with a read, a write and an admin token. The expectations
//! are written out here, not derived from annal's table, so a change to the table
//! shows up as a failing case.

mod common;

use common::kurrent::{any, event, read_stream, stream};
use common::serve;
use kurrentdb::{
    Client, ClientSettings, DeletePersistentSubscriptionOptions, DeleteStreamOptions, Error,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions,
    PersistentSubscriptionOptions, ReadStreamOptions, ReplayParkedMessagesOptions,
    RestartPersistentSubscriptionSubsystem, StreamMetadata, StreamPosition, SubscribeToAllOptions,
    SubscribeToPersistentSubscriptionOptions, TombstoneStreamOptions,
};
use serde_json::json;
use std::time::Duration;

/// The least role each call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Least {
    Read,
    Write,
    Admin,
}

const ROLES: [(&str, &str, Least); 3] = [
    ("reader", "reader-reader-reader", Least::Read),
    ("writer", "writer-writer-writer", Least::Write),
    ("admin", "admin-admin-admin-admin", Least::Admin),
];

fn client(port: u16, user: &str, secret: &str) -> Client {
    let settings: ClientSettings =
        format!("kurrentdb://{user}:{secret}@localhost:{port}?tls=true&tlsVerifyCert=false")
            .parse()
            .expect("connection string");
    Client::new(settings).expect("client")
}

/// Whether a call's outcome was a refusal for want of rights.
fn denied<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::AccessDenied))
}

#[tokio::test]
async fn every_call_is_allowed_from_its_least_role_up_and_denied_below_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::test_certificate(dir.path());
    let tokens = dir.path().join("tokens.json");
    let list: Vec<_> = ROLES
        .iter()
        .map(|(name, secret, least)| {
            let role = match least {
                Least::Read => "read",
                Least::Write => "write",
                Least::Admin => "admin",
            };
            json!({"name": name, "token": secret, "role": role})
        })
        .collect();
    std::fs::write(&tokens, json!({ "tokens": list }).to_string()).expect("tokens file");
    let served = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
            "--tokens-file",
            &tokens.display().to_string(),
        ],
    );
    let admin = client(served.port, ROLES[2].0, ROLES[2].1);
    let subject = stream("order");
    admin
        .append_to_stream(subject.as_str(), &any(), event("Placed", 0))
        .await
        .expect("seed");
    admin
        .create_persistent_subscription(
            subject.as_str(),
            "workers",
            &PersistentSubscriptionOptions::default(),
        )
        .await
        .expect("a group to replay");

    for (name, secret, role) in ROLES {
        let c = client(served.port, name, secret);
        // Each caller works on streams of its own, so that one's deletion does not
        // change what the next one meets.
        let own = format!("{subject}-{name}");
        admin
            .append_to_stream(own.as_str(), &any(), event("Placed", 0))
            .await
            .expect("seed");
        let metadata = StreamMetadata::builder().max_count(10).build();
        admin
            .create_persistent_subscription(
                own.as_str(),
                "mine",
                &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
            )
            .await
            .expect("a group per caller");
        let mut all = c.subscribe_to_all(&SubscribeToAllOptions::default()).await;
        let subscribed = tokio::time::timeout(Duration::from_secs(10), all.next())
            .await
            .expect("the first message of a $all subscription")
            .map(|_| ());
        let group = c
            .subscribe_to_persistent_subscription(
                own.as_str(),
                "mine",
                &SubscribeToPersistentSubscriptionOptions::default(),
            )
            .await;
        let consumed = match group {
            Ok(mut g) => tokio::time::timeout(Duration::from_secs(10), g.next())
                .await
                .expect("the group's first event")
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let cases: Vec<(&str, Least, bool)> = vec![
            (
                "read a stream",
                Least::Read,
                denied(&read_stream(&c, &subject, &ReadStreamOptions::default()).await),
            ),
            (
                "list persistent subscriptions",
                Least::Read,
                denied(
                    &c.list_all_persistent_subscriptions(
                        &ListPersistentSubscriptionsOptions::default(),
                    )
                    .await,
                ),
            ),
            ("subscribe to $all", Least::Read, denied(&subscribed)),
            (
                "consume a persistent subscription",
                Least::Read,
                denied(&consumed),
            ),
            (
                "get persistent subscription info",
                Least::Read,
                denied(
                    &c.get_persistent_subscription_info(
                        own.as_str(),
                        "mine",
                        &GetPersistentSubscriptionInfoOptions::default(),
                    )
                    .await,
                ),
            ),
            (
                "update a persistent subscription",
                Least::Admin,
                denied(
                    &c.update_persistent_subscription(
                        own.as_str(),
                        "mine",
                        &PersistentSubscriptionOptions::default(),
                    )
                    .await,
                ),
            ),
            (
                "append",
                Least::Write,
                denied(
                    &c.append_to_stream(own.as_str(), &any(), event("Paid", 1))
                        .await,
                ),
            ),
            (
                "replay parked messages",
                Least::Write,
                denied(
                    &c.replay_parked_messages(
                        subject.as_str(),
                        "workers",
                        &ReplayParkedMessagesOptions::default(),
                    )
                    .await,
                ),
            ),
            (
                "append a $ event",
                Least::Admin,
                denied(
                    &c.append_to_stream(own.as_str(), &any(), event("$custom", 2))
                        .await,
                ),
            ),
            (
                "append to a system stream",
                Least::Admin,
                denied(
                    &c.append_to_stream(
                        format!("$persistentsubscription-{own}::workers-parked"),
                        &any(),
                        event("Paid", 3),
                    )
                    .await,
                ),
            ),
            (
                "set stream metadata",
                Least::Admin,
                denied(&c.set_stream_metadata(own.as_str(), &any(), &metadata).await),
            ),
            (
                "create a persistent subscription",
                Least::Admin,
                denied(
                    &c.create_persistent_subscription(
                        own.as_str(),
                        "g",
                        &PersistentSubscriptionOptions::default(),
                    )
                    .await,
                ),
            ),
            (
                "restart the persistent subscription subsystem",
                Least::Admin,
                denied(
                    &c.restart_persistent_subscription_subsystem(
                        &RestartPersistentSubscriptionSubsystem::default(),
                    )
                    .await,
                ),
            ),
            (
                "delete a persistent subscription",
                Least::Admin,
                denied(
                    &c.delete_persistent_subscription(
                        own.as_str(),
                        "mine",
                        &DeletePersistentSubscriptionOptions::default(),
                    )
                    .await,
                ),
            ),
            (
                "delete a stream",
                Least::Admin,
                denied(
                    &c.delete_stream(own.as_str(), &DeleteStreamOptions::default())
                        .await,
                ),
            ),
            (
                "tombstone a stream",
                Least::Admin,
                denied(
                    &c.tombstone_stream(own.as_str(), &TombstoneStreamOptions::default())
                        .await,
                ),
            ),
        ];
        for (what, least, was_denied) in cases {
            assert_eq!(
                was_denied,
                role < least,
                "{name} ({role:?}) calling '{what}' (needs {least:?})"
            );
        }
    }
}
