//! Triggers (the seed's pattern 23): handlers that react to events by appending new
//! ones. Run one with [`crate::projection::spawn`]: its appends are committed together
//! with its checkpoint, so each reaction happens exactly once.
//!
//! Invariants of a reaction built with [`reaction`]: its `causation_id` is the
//! triggering event's id, its `correlation_id` the triggering event's correlation_id,
//! its `user_id` the trigger's name (so the audit trail tells automated changes from
//! manual ones), and its events' ids are derived from the trigger's name, the cause's
//! id and the event's index ([`reaction_event_id`]): a reaction appended twice is
//! answered from the store the second time instead of being stored again.

use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::event::RecordedEvent;
use crate::projection::{Handler, HandlerError};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The id of the `index`th event `trigger` appends in reaction to `cause`: the first
/// 16 bytes of SHA-256 over them, as a version 8 (custom) UUID.
pub fn reaction_event_id(trigger: &str, cause: Uuid, index: usize) -> Uuid {
    let mut h = Sha256::new();
    h.update(trigger.as_bytes());
    h.update([0]);
    h.update(cause.as_bytes());
    h.update((index as u64).to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// An append made by `trigger` in reaction to `cause`: `events` to `aggregate_id`
/// (of `aggregate_type`) at `expected`, caused by `cause`, in its correlation, by the
/// trigger, with derived event ids.
pub fn reaction(
    trigger: &str,
    cause: &RecordedEvent,
    aggregate_type: &str,
    aggregate_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    let mut request = AppendRequest::new(aggregate_type, aggregate_id, expected).by(trigger);
    request.causation_id = Some(cause.event_id.to_string());
    request.correlation_id = cause.correlation_id.clone();
    request.events = events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.event_id = Some(reaction_event_id(trigger, cause.event_id, i));
            e.causation_id = Some(cause.event_id.to_string());
            e.correlation_id = cause.correlation_id.clone();
            e
        })
        .collect();
    request
}

/// A trigger made of a name and a function from an event to the reactions it calls
/// for (none: ignore it). For triggers that need to read the store, implement
/// [`Handler`] directly and build appends with [`reaction`].
pub struct Trigger<F> {
    name: String,
    react: F,
}

impl<F> Trigger<F>
where
    F: FnMut(&str, &RecordedEvent) -> Vec<AppendRequest> + Send + 'static,
{
    /// A trigger called `name` (its appends' user_id) that reacts with `react(name, event)`.
    pub fn new(name: impl Into<String>, react: F) -> Self {
        Self {
            name: name.into(),
            react,
        }
    }
}

#[async_trait]
impl<F> Handler for Trigger<F>
where
    F: FnMut(&str, &RecordedEvent) -> Vec<AppendRequest> + Send + 'static,
{
    async fn handle(&mut self, event: &RecordedEvent) -> Result<Vec<AppendRequest>, HandlerError> {
        Ok((self.react)(&self.name, event))
    }
}
