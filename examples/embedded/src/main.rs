//! The smallest program that embeds annal (the README's "In Rust"): open the embedded
//! store named on the command line (default `./annal-data/annal.db`), append one event
//! to `family_123` at whatever version it is, and print the aggregate's events.

use annal::{AppendRequest, Direction, ExpectedVersion, NewEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite:./annal-data/annal.db".to_owned());
    let store = annal::connect(&url.parse()?).await?; // or postgres://user@host/db
    let result = store
        .append(
            AppendRequest::new("Family", "family_123", ExpectedVersion::Any)
                .by("sarah")
                .event(NewEvent::new(
                    "ChildAdded",
                    &serde_json::json!({"child_name": "Mateo Martinez", "age": 6, "grade": 1}),
                )?),
        )
        .await?;
    println!(
        "stored at position {}, family_123 is at version {}",
        result.first_position, result.aggregate_version
    );
    for e in store
        .read_aggregate("family_123", Direction::Forward, None, 100)
        .await?
    {
        println!("v{} {} {}", e.aggregate_version, e.event_type, e.data);
    }
    Ok(())
}
