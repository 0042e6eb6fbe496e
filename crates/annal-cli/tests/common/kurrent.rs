//! What the KurrentDB client test files share: a fresh `annal serve` with the official
//! Rust client connected to it, event and option builders, reads collected into
//! vectors, subscription steps with a timeout, and two seed data sets (`five`, `mixed`).

use super::{Served, serve};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, Error, EventData,
    ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamState, Subscription, SubscriptionEvent,
    SubscriptionFilter,
};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A fresh server on its own data directory and a client connected to it over h2c.
pub struct Annal {
    /// A client connected to it over h2c.
    pub client: Client,
    /// The `annal serve` process.
    pub served: Served,
    _dir: tempfile::TempDir,
}

pub fn start() -> Annal {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(&dir.path().join("data"), &[]);
    let client = connect(served.port);
    Annal {
        client,
        served,
        _dir: dir,
    }
}

pub fn connect(port: u16) -> Client {
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{port}?tls=false")
        .parse()
        .expect("connection string");
    Client::new(settings).expect("client")
}

pub fn stream(category: &str) -> String {
    format!("{category}-{}", Uuid::now_v7().simple())
}

pub fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).expect("json")
}

pub fn any() -> AppendToStreamOptions {
    AppendToStreamOptions::default()
}

pub fn expecting(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

/// Every event of a read, or its error.
pub async fn read_stream(
    client: &Client,
    name: &str,
    options: &ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut read = client.read_stream(name, options).await?;
    let mut out = Vec::new();
    while let Some(e) = read.next().await? {
        out.push(e.event.expect("an event"));
    }
    Ok(out)
}

pub async fn read_all(client: &Client, options: &ReadAllOptions) -> Vec<RecordedEvent> {
    let mut read = client.read_all(options).await.expect("read $all");
    let mut out = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        out.push(e.event.expect("an event"));
    }
    out
}

pub fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

pub fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

pub fn wrong_version(e: Error) -> (StreamState, CurrentRevision) {
    match e {
        Error::WrongExpectedVersion { expected, current } => (expected, current),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

/// The next event, checkpoint or caught-up of a subscription (confirmation skipped),
/// failing after five seconds.
pub async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next_subscription_event())
            .await
            .expect("a subscription message within 5 s")
            .expect("subscription");
        if !matches!(e, SubscriptionEvent::Confirmed(_)) {
            return e;
        }
    }
}

/// The next `n` events of a subscription, skipping checkpoints and caught-up.
pub async fn next_events(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        if let SubscriptionEvent::EventAppeared(e) = next(sub).await {
            out.push(e.event.expect("an event"));
        }
    }
    out
}

/// Events until the caught-up message, which must come.
pub async fn until_caught_up(sub: &mut Subscription) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        match next(sub).await {
            SubscriptionEvent::EventAppeared(e) => out.push(e.event.expect("an event")),
            SubscriptionEvent::CaughtUp(_) => return out,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- single appends

/// A stream of five events A..E at revisions 0..4.
pub async fn five(a: &Annal) -> String {
    let s = stream("order");
    let events = ["A", "B", "C", "D", "E"]
        .iter()
        .enumerate()
        .map(|(n, t)| event(t, n as u64))
        .collect::<Vec<_>>();
    a.client
        .append_to_stream(s.as_str(), &expecting(StreamState::NoStream), events)
        .await
        .expect("append");
    s
}

/// Two streams of mixed types: order-… (OrderPlaced, OrderPaid, Result) and
/// invoice-… (InvoiceIssued, PersistentConfig1, OrderPlaced).
pub async fn mixed(a: &Annal) -> (String, String) {
    let order = stream("order");
    let invoice = stream("invoice");
    for (s, t) in [
        (&order, "OrderPlaced"),
        (&invoice, "InvoiceIssued"),
        (&order, "OrderPaid"),
        (&invoice, "PersistentConfig1"),
        (&order, "Result"),
        (&invoice, "OrderPlaced"),
    ] {
        a.client
            .append_to_stream(s.as_str(), &any(), event(t, 0))
            .await
            .expect("append");
    }
    (order, invoice)
}

pub fn filtered(filter: SubscriptionFilter) -> ReadAllOptions {
    ReadAllOptions::default().filter(filter)
}
