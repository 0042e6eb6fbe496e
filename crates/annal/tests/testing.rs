//! `annal::testing`: the test store passes the whole conformance suite (it is the SQLite
//! backend, in a temporary folder), given/when/then catches wrong decisions and events
//! that do not survive storage, and `project` feeds a handler in order.

use annal::projection::{Handler, HandlerError};
use annal::sqlite::SqliteStore;
use annal::testing::{AggregateTest, TestStore, project};
use annal::testkit::Harness;
use annal::{Aggregate, AppendRequest, DomainEvent, RecordedEvent, Store};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

struct Fresh(TestStore);

async fn fresh() -> Fresh {
    Fresh(TestStore::new().expect("test store"))
}

#[async_trait]
impl Harness for Fresh {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.0
    }

    async fn tamper_data(&self, position: u64, data: &str) {
        let conn = rusqlite::Connection::open(self.0.path()).expect("open behind the store");
        conn.execute_batch("DROP TRIGGER events_are_immutable")
            .expect("drop guard");
        let n = conn
            .execute(
                "UPDATE events SET data = ?1 WHERE position = ?2",
                rusqlite::params![data, i64::try_from(position).expect("position")],
            )
            .expect("edit");
        assert_eq!(n, 1);
    }

    async fn reopen(&mut self) {
        self.0.reopen().expect("reopen");
    }
}

annal::conformance_suite!(fresh);
annal::subscription_suite!(fresh);
annal::stream_suite!(fresh);

#[test]
fn the_test_store_folder_is_deleted_when_it_drops() {
    let store = TestStore::new().expect("test store");
    let dir = store.dir().to_path_buf();
    assert!(store.path().starts_with(&dir) && store.path().exists());
    drop(store);
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tank {
    litres: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum TankEvent {
    Filled { litres: u32 },
    Drained { litres: u32 },
}

impl DomainEvent for TankEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum TankError {
    #[error("only {0} litres in the tank")]
    NotEnough(u32),
}

impl Aggregate for Tank {
    const TYPE: &'static str = "Tank";
    const SNAPSHOT_TAG: &'static str = "tank-v1";
    type Event = TankEvent;
    type Command = TankEvent;
    type Error = TankError;

    fn apply(&mut self, event: &TankEvent) {
        match event {
            TankEvent::Filled { litres } => self.litres += litres,
            TankEvent::Drained { litres } => self.litres -= litres,
        }
    }

    fn handle(&self, command: TankEvent) -> Result<Vec<TankEvent>, TankError> {
        match command {
            TankEvent::Drained { litres } if litres > self.litres => {
                Err(TankError::NotEnough(self.litres))
            }
            c => Ok(vec![c]),
        }
    }
}

#[test]
fn given_when_then_checks_the_decided_events_and_answers_the_state() {
    let state = AggregateTest::<Tank>::given([TankEvent::Filled { litres: 5 }])
        .when(TankEvent::Drained { litres: 3 })
        .then([TankEvent::Drained { litres: 3 }]);
    assert_eq!(state.litres, 2);
    AggregateTest::<Tank>::given_nothing()
        .when(TankEvent::Drained { litres: 1 })
        .then_error(TankError::NotEnough(0));
}

#[test]
#[should_panic(expected = "the command decided other events")]
fn then_fails_on_other_events() {
    AggregateTest::<Tank>::given_nothing()
        .when(TankEvent::Filled { litres: 1 })
        .then([TankEvent::Filled { litres: 2 }]);
}

#[test]
#[should_panic(expected = "but the command was refused")]
fn then_fails_on_a_refusal() {
    AggregateTest::<Tank>::given_nothing()
        .when(TankEvent::Drained { litres: 1 })
        .then([]);
}

#[test]
#[should_panic(expected = "expected the refusal")]
fn then_error_fails_when_the_command_is_accepted() {
    AggregateTest::<Tank>::given_nothing()
        .when(TankEvent::Filled { litres: 1 })
        .then_error(TankError::NotEnough(0));
}

/// An event enum without the adjacent tagging the store needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Untagged;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum UntaggedEvent {
    Happened,
}

impl DomainEvent for UntaggedEvent {}

impl Aggregate for Untagged {
    const TYPE: &'static str = "Untagged";
    const SNAPSHOT_TAG: &'static str = "untagged-v1";
    type Event = UntaggedEvent;
    type Command = ();
    type Error = TankError;

    fn apply(&mut self, _: &UntaggedEvent) {}

    fn handle(&self, (): ()) -> Result<Vec<UntaggedEvent>, TankError> {
        Ok(vec![UntaggedEvent::Happened])
    }
}

#[test]
#[should_panic(expected = "cannot be stored and read back")]
fn then_fails_on_an_event_that_cannot_be_stored() {
    AggregateTest::<Untagged>::given_nothing()
        .when(())
        .then([UntaggedEvent::Happened]);
}

/// Sums what was filled, and asks for a refill (an append) when a tank is drained.
#[derive(Default)]
struct Refills {
    seen: Vec<u64>,
}

#[async_trait]
impl Handler for Refills {
    async fn handle(&mut self, e: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        self.seen.push(e.position);
        if e.event_type == "Broken" {
            return Err("cannot read it".into());
        }
        Ok(match e.event_type.as_str() {
            "Drained" => vec![AppendRequest::new(
                "Order",
                format!("refill-{}", e.aggregate_id),
                annal::ExpectedVersion::Any,
            )],
            _ => Vec::new(),
        })
    }
}

#[tokio::test]
async fn project_hands_recorded_events_over_in_order_and_collects_appends() {
    let store = TestStore::new().expect("test store");
    let mut events = store
        .record::<Tank>("tank-1", [TankEvent::Filled { litres: 4 }])
        .await
        .expect("record");
    events.extend(
        store
            .record::<Tank>("tank-1", [TankEvent::Drained { litres: 1 }])
            .await
            .expect("record"),
    );
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.aggregate_version))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    assert_eq!(store.head(&[]).await.expect("head"), 2);
    let mut handler = Refills::default();
    let appends = project(&mut handler, &events).await.expect("project");
    assert_eq!(handler.seen, [1, 2]);
    assert_eq!(appends.len(), 1);
    assert_eq!(appends[0].aggregate_id, "refill-tank-1");
}

#[tokio::test]
async fn project_stops_at_the_first_failure_naming_the_event() {
    let store = TestStore::new().expect("test store");
    let mut events = store
        .record::<Tank>("tank-1", [TankEvent::Filled { litres: 4 }])
        .await
        .expect("record");
    let mut broken = events[0].clone();
    broken.position = 2;
    broken.event_type = "Broken".into();
    events.extend([broken, events[0].clone()]);
    let mut handler = Refills::default();
    let e = project(&mut handler, &events).await.expect_err("fails");
    assert_eq!((e.position, e.event_type.as_str()), (2, "Broken"));
    assert_eq!(handler.seen, [1, 2], "nothing after the failure");
}
