//! What a store must hold after a fault (a killed process, a restarted database): one
//! contiguous log, contiguous versions, whole batches, every acknowledged event stored as
//! acknowledged, and a chain that verifies.
//!
//! Batches are recognised by their events' data: `{"batch": ID, "n": SIZE, ...}`;
//! system events (`$`-types, such as a cluster leader's `$epoch`) are in no batch.

use annal::{AppendResult, Filter, Store};
use std::collections::HashMap;

/// Checks `store` against the appends acknowledged so far; `what` names the round.
pub async fn check(store: &dyn Store, acked: &[AppendResult], what: &str) {
    // A killed client's last COMMIT may still land after it died (PostgreSQL finishes
    // a transaction whose COMMIT it received): read until the head stays put around a
    // whole read of the log.
    let mut settled = None;
    for _ in 0..20 {
        let head = store.head(&[]).await.expect("head");
        let log = read_log(store).await;
        if store.head(&[]).await.expect("head") == head {
            settled = Some((head, log));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (head, log) = settled.unwrap_or_else(|| panic!("{what}: the head never settled"));
    assert_eq!(log.len() as u64, head, "{what}: positions are contiguous");
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "{what}: no gap in positions");
    }
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut batches: HashMap<String, (u64, u64)> = HashMap::new();
    for e in &log {
        let v = versions.entry(&e.aggregate_id).or_insert(0);
        *v += 1;
        assert_eq!(e.aggregate_version, *v, "{what}: versions are contiguous");
        // System events (a cluster leader's `$epoch`) belong to no batch.
        if e.event_type.starts_with('$') {
            continue;
        }
        let data: serde_json::Value = e.data.to_value().expect("json");
        let b = batches
            .entry(data["batch"].as_str().expect("batch").to_owned())
            .or_insert((0, 0));
        b.0 += 1;
        b.1 = data["n"].as_u64().expect("n");
    }
    for (batch, (have, want)) in &batches {
        assert_eq!(have, want, "{what}: batch {batch} is whole");
    }
    for r in acked {
        for e in &r.events {
            let stored = usize::try_from(e.position - 1)
                .ok()
                .and_then(|i| log.get(i))
                .unwrap_or_else(|| panic!("{what}: acknowledged position {} is lost", e.position));
            assert_eq!(
                stored, e,
                "{what}: acknowledged event is stored as acknowledged"
            );
        }
    }
    let report = store.verify(None, None).await.expect("verify");
    assert!(report.ok, "{what}: chain verifies: {report:?}");
}

/// The whole log, in pages.
async fn read_log(store: &dyn Store) -> Vec<annal::RecordedEvent> {
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 5000, &Filter::default())
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page);
    }
    log
}

/// The events of one batch, as a JSON array: `n` events of batch `batch`, each with its
/// own id.
pub fn batch_events(batch: &str, n: u64) -> String {
    let events: Vec<String> = (0..n)
        .map(|k| {
            format!(
                r#"{{"event_id":"{}","event_type":"Tick","data":{{"batch":"{batch}","n":{n},"k":{k}}}}}"#,
                annal::Uuid::now_v7()
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// One `annal append` line: a batch to `aggregate_id`, at any version.
pub fn batch_line(aggregate_id: &str, batch: &str, n: u64) -> String {
    format!(
        r#"{{"aggregate_type":"Clock","aggregate_id":"{aggregate_id}","expected_version":"any","events":{}}}"#,
        batch_events(batch, n)
    )
}
