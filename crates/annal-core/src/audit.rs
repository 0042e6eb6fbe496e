//! The audit trail: who changed an aggregate, when, how, and why (correlation and
//! causation), with compensating events linked to the events they correct; and the
//! chain of events one correlation_id ties together (the seed's getCorrelatedEvents).

use crate::error::Result;
use crate::event::{RecordedEvent, Timestamp};
use crate::read::{Direction, Filter, stream_all};
use crate::repository::{COMPENSATES, REASON};
use crate::store::Store;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// One change in an aggregate's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Global position.
    pub position: u64,
    /// The aggregate's version after it.
    pub aggregate_version: u64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// Who did it.
    pub user_id: String,
    /// Who authenticated the change, if anyone did ([`RecordedEvent::principal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// What happened.
    pub event_type: String,
    /// Its schema version.
    pub event_version: u32,
    /// Its id.
    pub event_id: Uuid,
    /// What it is tied to.
    pub correlation_id: Option<String>,
    /// What caused it.
    pub causation_id: Option<String>,
    /// The event this one corrects, if it is a compensating event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensates: Option<Compensation>,
    /// The events that correct this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compensated_by: Vec<Uuid>,
}

/// A correction's link to what it corrects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    /// The corrected event.
    pub event_id: Uuid,
    /// Its position, when it is in the same aggregate.
    pub position: Option<u64>,
    /// Why it was corrected.
    pub reason: Option<String>,
}

/// Reads the compensation metadata of an event, if it has any.
pub fn compensation_of(e: &RecordedEvent) -> Option<(Uuid, Option<String>)> {
    if !e.metadata.get().contains(COMPENSATES) {
        return None;
    }
    let meta: Map<String, Value> = e.metadata.to_value().ok()?;
    let id = meta.get(COMPENSATES)?.as_str()?.parse().ok()?;
    let reason = meta.get(REASON).and_then(Value::as_str).map(str::to_owned);
    Some((id, reason))
}

/// The whole history of one aggregate, oldest first.
pub async fn audit_trail<S: Store + ?Sized>(
    store: &S,
    aggregate_id: &str,
) -> Result<Vec<AuditEntry>> {
    Ok(entries(&aggregate_events(store, aggregate_id).await?))
}

/// Every event of one aggregate, in version order (read in pages).
pub async fn aggregate_events<S: Store + ?Sized>(
    store: &S,
    aggregate_id: &str,
) -> Result<Vec<RecordedEvent>> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut next = 1;
    loop {
        let page = store
            .read_aggregate(aggregate_id, Direction::Forward, Some(next), 1000)
            .await?;
        let full = page.len() == 1000;
        if let Some(last) = page.last() {
            next = last.aggregate_version + 1;
        }
        events.extend(page);
        if !full {
            break;
        }
    }
    Ok(events)
}

/// Every event tied to `correlation_id`, in global order, as audit entries.
pub async fn correlated<S: Store + ?Sized>(
    store: &S,
    correlation_id: &str,
) -> Result<Vec<RecordedEvent>> {
    let filter = Filter {
        correlation_ids: vec![correlation_id.to_owned()],
        ..Filter::default()
    };
    stream_all(store, 0, &filter, 1000).try_collect().await
}

/// Turns events into audit entries, linking compensations among them.
pub fn entries(events: &[RecordedEvent]) -> Vec<AuditEntry> {
    let mut out: Vec<_> = events.iter().map(entry).collect();
    link(&mut out);
    out
}

fn entry(e: &RecordedEvent) -> AuditEntry {
    AuditEntry {
        position: e.position,
        aggregate_version: e.aggregate_version,
        recorded_at: e.recorded_at,
        user_id: e.user_id.clone(),
        principal: e.principal.clone(),
        event_type: e.event_type.clone(),
        event_version: e.event_version,
        event_id: e.event_id,
        correlation_id: e.correlation_id.clone(),
        causation_id: e.causation_id.clone(),
        compensates: compensation_of(e).map(|(event_id, reason)| Compensation {
            event_id,
            position: None,
            reason,
        }),
        compensated_by: Vec::new(),
    }
}

fn link(entries: &mut [AuditEntry]) {
    let index: HashMap<Uuid, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id, i))
        .collect();
    let mut links = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(c) = &e.compensates
            && let Some(&j) = index.get(&c.event_id)
        {
            links.push((i, j));
        }
    }
    for (i, j) in links {
        let (by, position) = (entries[i].event_id, entries[j].position);
        entries[j].compensated_by.push(by);
        if let Some(c) = entries[i].compensates.as_mut() {
            c.position = Some(position);
        }
    }
}
