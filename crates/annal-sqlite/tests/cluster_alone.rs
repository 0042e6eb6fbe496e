//! A node alone on the embedded store (`annal_core::cluster`): SQLite keeps no nodes, so
//! a node joining is its own leader from its start, and each join writes the next
//! `$epoch` to `$epochs` with KurrentDB's fields; opening the store writes none.

use annal_core::cluster::{
    Cluster, ClusterOptions, EPOCH_EVENT, EPOCHS_STREAM, EpochRecord, NodeRegistration,
};
use annal_core::{Direction, Store, Timestamp};
use annal_sqlite::SqliteStore;
use std::sync::Arc;
use uuid::Uuid;

fn node() -> NodeRegistration {
    NodeRegistration {
        name: "solo".into(),
        instance_id: Uuid::now_v7(),
        address: "127.0.0.1:2113".into(),
        started_at: Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_join_of_a_node_alone_writes_the_next_epoch_and_opening_writes_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("annal.db")).expect("open"));
    assert_eq!(
        store.head(&[]).await.expect("head"),
        0,
        "opening writes nothing"
    );

    let (first, second) = (node(), node());
    let a = Cluster::join(store.clone(), first.clone(), ClusterOptions::default())
        .await
        .expect("join");
    let view = a.watch().borrow().clone();
    assert!(view.is_leader() && !view.shared);
    assert_eq!(
        view.epoch,
        Some(0),
        "its term is stored before join answers"
    );
    a.leave().await;
    let b = Cluster::join(store.clone(), second.clone(), ClusterOptions::default())
        .await
        .expect("join again");
    assert_eq!(b.watch().borrow().epoch, Some(1));
    b.leave().await;

    let events = store
        .read_aggregate(EPOCHS_STREAM, Direction::Forward, None, 10)
        .await
        .expect("read $epochs");
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.event_type == EPOCH_EVENT));
    let records: Vec<EpochRecord> = events
        .iter()
        .map(|e| e.data.to_value().expect("an epoch record"))
        .collect();
    assert_eq!((records[0].epoch_number, records[1].epoch_number), (0, 1));
    assert_eq!(
        (records[0].epoch_position, records[0].prev_epoch_position),
        (0, -1)
    );
    assert_eq!(records[1].epoch_position, events[0].position);
    assert_eq!(records[1].prev_epoch_position, 0);
    assert_eq!(
        (records[0].leader_instance_id, records[1].leader_instance_id),
        (first.instance_id, second.instance_id)
    );
    assert_eq!(records[1].epoch_id, events[1].event_id);
    // Alone, with no lease to fence, a node writes no `$leader` checkpoint.
    assert!(
        store
            .checkpoint(annal_core::cluster::LEADER_CHECKPOINT)
            .await
            .expect("checkpoint")
            .is_none()
    );
}
