//! Running a projection [`Handler`] over a list of events: [`project`].
//!
//! Invariants: events are handed over one at a time, in the order given, each once (the
//! runner's retries are not imitated: the first error stops the run and names the event);
//! the appends the handler returns are collected in order, not committed.

use crate::projection::{Handler, HandlerError};
use crate::{AppendRequest, RecordedEvent};

/// Why [`project`] stopped: the handler failed on an event.
#[derive(Debug, thiserror::Error)]
#[error("the handler failed on the event at position {position} ({event_type}): {source}")]
pub struct ProjectError {
    /// The event's position.
    pub position: u64,
    /// The event's type.
    pub event_type: String,
    /// The handler's error.
    #[source]
    pub source: HandlerError,
}

/// Hands `events` to `handler` in order and answers every append it returned.
pub async fn project<H: Handler>(
    handler: &mut H,
    events: &[RecordedEvent],
) -> Result<Vec<AppendRequest>, ProjectError> {
    let mut appends = Vec::new();
    for event in events {
        let more = handler.handle(event).await.map_err(|source| ProjectError {
            position: event.position,
            event_type: event.event_type.clone(),
            source,
        })?;
        appends.extend(more);
    }
    Ok(appends)
}
