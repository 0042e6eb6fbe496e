//! An aggregate's own upcasters (`Aggregate::upcasters`): the repository reads through
//! them without being told, and writes new events at the version they lead to, so an
//! event written now is never upcast again (and `schema_version` wins when higher).

use annal::testing::TestStore;
use annal::{Aggregate, CommandContext, DomainEvent, Repository, Store, Upcast, Upcasters};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meter {
    kwh: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
enum Reading {
    /// v1 counted watt-hours as `wh`, v2 as `watt_hours`, v3 counts `kwh`.
    Read { kwh: u32 },
    /// Never changed shape, but its schema_version says 4.
    Reset {},
}

impl DomainEvent for Reading {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Reset" { 4 } else { 1 }
    }
}

impl Aggregate for Meter {
    const TYPE: &'static str = "Meter";
    const SNAPSHOT_TAG: &'static str = "meter-v1";
    type Event = Reading;
    type Command = Reading;
    type Error = std::convert::Infallible;

    fn apply(&mut self, e: &Reading) {
        match e {
            Reading::Read { kwh } => self.kwh += kwh,
            Reading::Reset {} => self.kwh = 0,
        }
    }

    fn handle(&self, c: Reading) -> Result<Vec<Reading>, Self::Error> {
        Ok(vec![c])
    }

    fn upcasters() -> Upcasters {
        Upcasters::new()
            .register("Read", 1, |data| {
                let wh = data["wh"].clone();
                Ok(Upcast::data(serde_json::json!({ "watt_hours": wh })))
            })
            .register("Read", 2, |data| {
                let wh = data["watt_hours"].as_u64().ok_or("no watt_hours")?;
                Ok(Upcast::data(serde_json::json!({ "kwh": wh / 1000 })))
            })
    }
}

#[test]
fn the_current_version_is_one_past_the_highest_upcaster() {
    let upcasters = Meter::upcasters();
    assert_eq!(upcasters.current_version("Read"), 3);
    assert_eq!(upcasters.current_version("Reset"), 1);
}

#[tokio::test]
async fn a_repository_reads_through_the_aggregates_upcasters_and_writes_past_them()
-> Result<(), Box<dyn std::error::Error>> {
    let store = TestStore::new()?;
    store
        .record_raw::<Meter>("m", "Read", 1, &serde_json::json!({ "wh": 5000 }))
        .await?;
    let meters = Repository::<Meter>::new(store.shared());
    assert_eq!(meters.load("m").await?.state.kwh, 5);
    let ctx = CommandContext::by("test");
    meters.execute("m", Reading::Read { kwh: 2 }, &ctx).await?;
    meters.execute("m", Reading::Reset {}, &ctx).await?;
    let events = store
        .read_aggregate("m", annal::Direction::Forward, None, 10)
        .await?;
    let versions: Vec<_> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.event_version))
        .collect();
    assert_eq!(versions, [("Read", 1), ("Read", 3), ("Reset", 4)]);
    let recorded = store
        .record::<Meter>("n", [Reading::Read { kwh: 1 }])
        .await?;
    assert_eq!(
        recorded[0].event_version, 3,
        "TestStore::record writes as the repository"
    );
    assert_eq!(meters.load("m").await?.state.kwh, 0);
    Ok(())
}
