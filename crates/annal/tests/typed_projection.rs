//! Typed projections: `projection::spawn_typed::<A>` hands its handler each event of
//! `A` decoded into `A`'s event enum (upcast first), beside the stored event; events of
//! other aggregate types never reach it; an event that cannot be decoded is a handler
//! failure (faulted or skipped as the policy says).

use annal::projection::{
    self, FailurePolicy, HandlerError, ProjectionError, ProjectionOptions, Retry, Typed,
    TypedHandler,
};
use annal::testing::{TestStore, project};
use annal::{
    Aggregate, AppendRequest, DomainEvent, ExpectedVersion, NewEvent, RecordedEvent, Store, Upcast,
    Upcasters,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meter;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum Reading {
    Read { kwh: u32 },
}

impl DomainEvent for Reading {
    fn schema_version(_: &str) -> u32 {
        2
    }
}

impl Aggregate for Meter {
    const TYPE: &'static str = "Meter";
    const SNAPSHOT_TAG: &'static str = "meter-v1";
    type Event = Reading;
    type Command = Reading;
    type Error = std::convert::Infallible;

    fn apply(&mut self, _: &Reading) {}

    fn handle(&self, c: Reading) -> Result<Vec<Reading>, Self::Error> {
        Ok(vec![c])
    }
}

/// Version 1 counted watt-hours.
fn upcasters() -> Upcasters {
    Upcasters::new().register("Read", 1, |data| {
        let wh = data["wh"].as_u64().ok_or("no wh")?;
        Ok(Upcast::data(serde_json::json!({ "kwh": wh / 1000 })))
    })
}

#[derive(Debug, Default)]
struct Seen(Vec<(u64, Reading)>);

#[async_trait]
impl TypedHandler<Meter> for Seen {
    async fn handle(
        &mut self,
        e: &RecordedEvent,
        typed: Reading,
    ) -> Result<Vec<AppendRequest>, HandlerError> {
        self.0.push((e.position, typed));
        Ok(Vec::new())
    }
}

async fn append(store: &TestStore, aggregate_type: &str, event: NewEvent) {
    let request = AppendRequest::new(
        aggregate_type,
        format!("{aggregate_type}-1"),
        ExpectedVersion::Any,
    );
    store.append(request.event(event)).await.expect("append");
}

fn event(event_type: &str, version: u32, data: serde_json::Value) -> NewEvent {
    NewEvent::new(event_type, &data)
        .expect("event")
        .with_version(version)
}

#[tokio::test]
async fn a_typed_projection_gets_its_aggregates_events_upcast_and_no_others() {
    let store = TestStore::new().expect("store");
    append(
        &store,
        "Meter",
        event("Read", 1, serde_json::json!({ "wh": 3000 })),
    )
    .await;
    append(&store, "Boiler", event("Lit", 1, serde_json::json!({}))).await;
    append(
        &store,
        "Meter",
        event("Read", 2, serde_json::json!({ "kwh": 4 })),
    )
    .await;
    let running = projection::spawn_typed::<Meter, _, _>(
        store.shared(),
        upcasters(),
        Seen::default(),
        ProjectionOptions::new("readings"),
    );
    assert!(
        running
            .wait_caught_up(Duration::from_secs(10))
            .await
            .expect("head")
    );
    let seen = running.stop().await.expect("stopped");
    assert_eq!(
        seen.0,
        [(1, Reading::Read { kwh: 3 }), (3, Reading::Read { kwh: 4 })]
    );
}

#[tokio::test]
async fn an_event_the_enum_cannot_read_faults_the_projection_or_is_skipped() {
    let store = TestStore::new().expect("store");
    append(&store, "Meter", event("Exploded", 1, serde_json::json!({}))).await;
    append(
        &store,
        "Meter",
        event("Read", 2, serde_json::json!({ "kwh": 4 })),
    )
    .await;
    let retry = Retry {
        attempts: 2,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let options = ProjectionOptions::new("faults").retry(retry);
    let running = projection::spawn_typed::<Meter, _, _>(
        store.shared(),
        upcasters(),
        Seen::default(),
        options.clone(),
    );
    match running.join().await {
        Err(ProjectionError::Faulted {
            position: 1,
            message,
            ..
        }) => {
            assert!(message.contains("Exploded"), "{message}");
        }
        other => panic!("expected a fault at position 1, got {other:?}"),
    }
    let mut options = options.on_failure(FailurePolicy::Skip);
    options.name = "skips".into();
    let running = projection::spawn_typed::<Meter, _, _>(
        store.shared(),
        upcasters(),
        Seen::default(),
        options,
    );
    assert!(
        running
            .wait_caught_up(Duration::from_secs(10))
            .await
            .expect("head")
    );
    assert!(
        running
            .progress()
            .last_error
            .is_some_and(|e| e.contains("Exploded"))
    );
    let seen = running.stop().await.expect("stopped");
    assert_eq!(seen.0, [(2, Reading::Read { kwh: 4 })]);
}

#[tokio::test]
async fn a_typed_handler_runs_over_a_list_of_events_through_typed() {
    let store = TestStore::new().expect("store");
    let events = store
        .record::<Meter>(
            "meter-1",
            [Reading::Read { kwh: 1 }, Reading::Read { kwh: 2 }],
        )
        .await
        .expect("record");
    let mut handler = Typed::new(Seen::default(), upcasters());
    project(&mut handler, &events).await.expect("project");
    assert_eq!(
        handler.inner().0,
        [(1, Reading::Read { kwh: 1 }), (2, Reading::Read { kwh: 2 })]
    );
}
