//! Subscriptions and shutdown end to end over real HTTP: thirty-two concurrent
//! appenders and live Server-Sent Events subscribers (one filtered) that see every
//! acknowledged event once, in order; a shutdown that ends open subscriptions.

mod common;

use annal_server::Config;
use common::{family, post, start, start_on_postgres};
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

async fn sse_positions(url: String, want: usize) -> Vec<u64> {
    let r = Client::new().get(url).send().await.expect("subscribe");
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut seen = Vec::new();
    while seen.len() < want {
        let chunk = stream
            .next()
            .await
            .expect("the stream stays open")
            .expect("bytes");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let frame: String = buf.drain(..i + 2).collect();
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(str::trim);
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(str::trim);
            if let (Some(id), Some(data)) = (id, data) {
                let e: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(
                    e["position"].as_u64().map(|p| p.to_string()).as_deref(),
                    Some(id)
                );
                seen.push(e["position"].as_u64().expect("position"));
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_appenders_and_a_live_subscriber_see_every_event_once_in_order() {
    let s = start(Config::default()).await;
    check_appenders_and_subscriber(&s.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_appenders_and_a_live_subscriber_on_postgres() {
    if let Some(s) = start_on_postgres(Config::default()).await {
        check_appenders_and_subscriber(&s.base).await;
    }
}

async fn check_appenders_and_subscriber(base: &str) {
    const CLIENTS: u64 = 32;
    const EACH: u64 = 20;
    let b = base.to_owned();
    let c = Client::new();
    assert_eq!(
        post(
            &c,
            &format!("{b}/v1/streams/seed"),
            &family(json!("any"), json!([{"event_type": "Seeded", "data": {}}]))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let total = usize::try_from(1 + CLIENTS * EACH).expect("a count");
    let subscriber = tokio::spawn(sse_positions(
        format!("{b}/v1/subscribe?after_position=0"),
        total,
    ));
    let filtered = tokio::spawn(sse_positions(
        format!("{b}/v1/subscribe?event_type=Tick&after_position=0"),
        usize::try_from(CLIENTS * EACH).expect("a count"),
    ));
    let mut acked = HashSet::new();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (c, b) = (c.clone(), b.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..EACH {
                    let body = family(
                        json!(i),
                        json!([{"event_type": "Tick", "data": {"w": w, "i": i}}]),
                    );
                    let (st, r) = post(&c, &format!("{b}/v1/streams/writer-{w}"), &body).await;
                    assert_eq!(st, StatusCode::CREATED, "{r}");
                    mine.push(r["first_position"].as_u64().expect("position"));
                }
                mine
            })
        })
        .collect();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), subscriber)
        .await
        .expect("subscriber finishes")
        .expect("task");
    assert_eq!(
        seen,
        (1..=total as u64).collect::<Vec<_>>(),
        "every position once, in order"
    );
    let ticks = tokio::time::timeout(Duration::from_secs(30), filtered)
        .await
        .expect("filtered finishes")
        .expect("task");
    assert_eq!(
        ticks.iter().copied().collect::<HashSet<_>>(),
        acked,
        "exactly the acknowledged appends"
    );
    assert!(ticks.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions_and_returns() {
    let mut s = start(Config::default()).await;
    let r = Client::new()
        .get(format!("{}/v1/subscribe", s.base))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = s.stop.take().expect("stop").send(());
    let served = tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .expect("the server stops")
        .expect("task");
    assert!(served.is_ok());
    drop(r);
}
