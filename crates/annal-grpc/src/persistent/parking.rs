//! Parking: events a group gave up on are recorded in its parked stream, and replaying
//! offers them again.
//!
//! Invariants: an event is parked (past `max_retry_count` retries, or nacked with park)
//! by appending a [`PARKED_EVENT_TYPE`] event naming it to
//! `$persistentsubscription-<source>::<group>-parked` (naming it by the id its consumers
//! received, `eventId`, and by its annal event_id, `annalEventId`); only once that append succeeded is
//! it settled (otherwise it is offered again). Replay offers parked events oldest first,
//! and the replay marker (a store checkpoint) moves past a parked record only once its
//! event is settled again, so a restart replays what was not.

use super::PAGE;
use super::dispatcher::Item;
use super::registry::Definition;
use super::task::Task;
use crate::convert::client_event_id;
use annal_core::{
    Actor, AppendRequest, CheckpointWrite, Direction, Error, ExpectedVersion, NewEvent, RawJson,
    RecordedEvent, Uuid,
};

/// The event type recording a parked event.
pub(crate) const PARKED_EVENT_TYPE: &str = "$parked";

/// The append recording `item` as parked in `def`'s parked stream, for `reason`.
fn parked_record(
    def: &Definition,
    item: &Item,
    reason: &str,
) -> Result<AppendRequest, serde_json::Error> {
    let e = &item.event;
    let data = serde_json::json!({
        "eventId": client_event_id(e),
        "annalEventId": e.event_id,
        "stream": e.aggregate_id,
        "revision": e.aggregate_version.saturating_sub(1),
        "position": e.position,
        "retryCount": item.retry,
        "reason": reason,
    });
    let data = RawJson::from_value(&data)?;
    let mut a = AppendRequest::new(
        "$persistentsubscription",
        def.parked_stream(),
        ExpectedVersion::Any,
    )
    .event(NewEvent::raw(PARKED_EVENT_TYPE, data));
    a.causation_id = Some(e.event_id.to_string());
    a.correlation_id = e.correlation_id.clone();
    if let Some(by) = &item.parked_by {
        Actor::authenticated(by.clone()).stamp(&mut a);
    }
    Ok(a)
}

/// The annal event_id of the event a parked record names (`None` if it names none):
/// its `annalEventId`, or in records written before there was one, its `eventId`.
fn parked_event_id(record: &RecordedEvent) -> Option<Uuid> {
    let data = record.data.to_value::<serde_json::Value>().ok()?;
    let id = data.get("annalEventId").or_else(|| data.get("eventId"))?;
    id.as_str()?.parse::<Uuid>().ok()
}

impl Task {
    /// Parks what the dispatcher set aside.
    pub(crate) async fn park_due(&mut self) {
        for (item, reason) in self.engine.take_to_park() {
            self.park(item, &reason).await;
        }
    }

    /// Records `item` as parked and settles it (offered again if recording fails).
    async fn park(&mut self, item: Item, reason: &str) {
        let recorded = match parked_record(self.engine.def(), &item, reason) {
            Ok(a) => self
                .store
                .append(a)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match recorded {
            Ok(()) => self.engine.parked(&item),
            Err(err) => {
                tracing::warn!(error = %err, "could not park an event; offering it again");
                self.engine.not_parked(item);
            }
        }
    }

    /// Offers parked events again (up to `stop_at` of them), oldest first.
    pub(crate) async fn replay(&mut self, stop_at: Option<u64>) -> Result<(), Error> {
        self.load().await?;
        let stream = self.engine.def().parked_stream();
        let mut left = stop_at.unwrap_or(u64::MAX);
        while left > 0 {
            let page = self
                .store
                .read_aggregate(
                    &stream,
                    Direction::Forward,
                    Some(self.engine.replay_read() + 1),
                    PAGE,
                )
                .await?;
            let full = page.len() == PAGE;
            for p in page {
                if left == 0 {
                    break;
                }
                left -= 1;
                self.engine.replay_read_through(p.aggregate_version);
                // Only the server's own park records: another event in the parked stream
                // (an admin's append) names nothing to replay.
                if p.event_type == PARKED_EVENT_TYPE
                    && let Some(id) = parked_event_id(&p)
                    && let Some(event) = self.store.event(id).await?
                {
                    self.engine.offer_parked(p.aggregate_version, event);
                }
            }
            if !full {
                break;
            }
        }
        self.write_replay_marker().await;
        Ok(())
    }

    /// Stores how far replayed parked records are settled.
    pub(crate) async fn write_replay_marker(&mut self) {
        let Some(at) = self.engine.replay_marker_to_write() else {
            return;
        };
        let name = self.engine.def().replay_checkpoint_name();
        let Some(write) = self.fence.apply(CheckpointWrite::new(name, at)) else {
            return;
        };
        match self.store.put_checkpoint(write).await {
            Ok(_) => self.engine.replay_marker_written(at),
            Err(e) => {
                let group = &self.engine.def().group;
                tracing::warn!(error = %e, group = %group, "could not record replayed parked events")
            }
        }
    }
}
