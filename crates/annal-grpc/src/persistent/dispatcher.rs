//! The dispatcher: one group's delivery state and every choice it makes, free of I/O
//! and of the wire protocol. Its task ([`super::task`]) reads the store, writes
//! checkpoints and parked records, and feeds it; the Read call's transport
//! ([`super::read`]) turns what consumers receive ([`Delivery`]) into protocol messages.
//!
//! Invariants:
//! - An event is in flight with one consumer at a time. It is offered again, its retry
//!   count raised by one, when nacked with retry, when its message timeout passes, or when
//!   its consumer leaves; past `max_retry_count` retries, or when nacked with park, it is
//!   set aside for parking ([`Dispatcher::take_to_park`]).
//! - A consumer holds at most its `buffer_size` unacknowledged events (its slots), and
//!   about [`PAGE_BYTES`] of them (one event always goes, however large), and its
//!   channel always keeps room for the message that ends its call.
//! - The checkpoint ([`Dispatcher::settled_through`]) is the highest cursor value (stream
//!   version, or `$all` log position) at or below which every event read is settled:
//!   acknowledged, skipped or parked. It never moves back.
//! - Events are wanted from the store only while some consumer has a free slot and fewer
//!   than a read batch wait, so a slow consumer costs bounded memory.
//! - Acks and nacks name events by the id their consumer received
//!   ([`crate::convert::client_event_id`]: the id a gRPC writer gave, unique only per
//!   stream). Each id settles one event that consumer holds under it, the earliest
//!   delivered, so two events sharing an id (in a `$all` group) take two acks.

use super::PAGE;
use super::registry::Definition;
use crate::convert::client_event_id;
use crate::filter::EventFilter;
use annal_core::budget::{PAGE_BYTES, event_bytes};
use annal_core::{RecordedEvent, Uuid};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[cfg(test)]
mod tests;

/// What a consumer receives from its group.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// An event to handle and then acknowledge (or nack).
    Event {
        /// The event.
        event: Arc<RecordedEvent>,
        /// How many times it was offered before.
        retry: i32,
    },
    /// The group let the consumer go (why); nothing follows.
    Dropped(String),
}

/// What a consumer asks for an event it nacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NackAction {
    /// Offer it again (to any consumer), its retry count raised.
    Retry,
    /// Settle it without handling it.
    Skip,
    /// Park it now, whatever its retry count.
    Park,
    /// Offer it again and let this consumer go.
    Stop,
}

/// A consumer refused because the group has `max_subscriber_count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupFull {
    /// The group's limit.
    pub(crate) max: usize,
}

/// A connected consumer.
pub(crate) struct Consumer {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    /// Dropped with the consumer: tells its call's ack reader to stop.
    _gone: oneshot::Sender<()>,
    slots: usize,
    in_flight: usize,
    /// About the bytes of its unacknowledged events ([`event_bytes`]).
    in_flight_bytes: usize,
    from: String,
    user: String,
    total: u64,
}

impl Consumer {
    /// Consumer `id` with `slots` unacknowledged events at most, delivered on `tx` (which
    /// must have room for `slots` events and one more message); `gone` is dropped when
    /// the group lets it go.
    pub(crate) fn new(
        id: u64,
        tx: mpsc::Sender<Delivery>,
        gone: oneshot::Sender<()>,
        slots: usize,
        from: String,
        user: String,
    ) -> Self {
        Self {
            id,
            tx,
            _gone: gone,
            slots,
            in_flight: 0,
            in_flight_bytes: 0,
            from,
            user,
            total: 0,
        }
    }

    /// Whether it has a free slot, room in its byte budget ([`PAGE_BYTES`] of
    /// unacknowledged events; one event always goes), and channel room for one more
    /// event while still keeping a place for the message that ends the call.
    fn can_take(&self) -> bool {
        self.in_flight < self.slots
            && (self.in_flight == 0 || self.in_flight_bytes < PAGE_BYTES)
            && self.tx.capacity() > 1
    }
}

/// An event waiting or in flight.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) event: Arc<RecordedEvent>,
    pub(crate) retry: i32,
    /// Its cursor value; `None` for a replayed parked event (already settled once).
    pub(crate) key: Option<u64>,
    /// For a replayed parked event: its record's version in the parked stream.
    pub(crate) parked: Option<u64>,
    /// Who parked it with a nack (their record's user_id and principal); `None` when
    /// the group parked it itself (retries exhausted) or nobody authenticated.
    pub(crate) parked_by: Option<String>,
}

struct InFlight {
    item: Item,
    consumer: u64,
    /// The id its consumer received, which its ack names.
    client_id: Uuid,
    deadline: Option<Instant>,
}

/// What a dispatcher reports about itself.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) checkpoint: Option<u64>,
    pub(crate) last_known: Option<u64>,
    pub(crate) total_items: u64,
    pub(crate) queued: usize,
    pub(crate) retries_queued: usize,
    pub(crate) in_flight: usize,
    pub(crate) parked: u64,
    pub(crate) connections: Vec<ConnectionStats>,
}

/// What a dispatcher reports about one consumer.
#[derive(Debug)]
pub(crate) struct ConnectionStats {
    pub(crate) from: String,
    pub(crate) user: String,
    pub(crate) total_items: u64,
    pub(crate) available_slots: usize,
    pub(crate) in_flight: usize,
}

/// One group's delivery state.
pub(crate) struct Dispatcher {
    def: Definition,
    filter: Option<EventFilter>,
    /// Stream: the last version read; `$all`: the last position read.
    cursor: u64,
    loaded: bool,
    queue: VecDeque<Item>,
    /// By annal event_id.
    in_flight: HashMap<Uuid, InFlight>,
    /// What each consumer holds, by (consumer, the id it received): annal event_ids in
    /// the order they were delivered.
    held: HashMap<(u64, Uuid), VecDeque<Uuid>>,
    /// Cursor values read and not yet settled.
    outstanding: BTreeSet<u64>,
    checkpointed: Option<u64>,
    settled_since: u64,
    last_checkpoint: Instant,
    consumers: Vec<Consumer>,
    next_rr: usize,
    total_items: u64,
    parked_total: u64,
    /// Parked records replayed and settled through this version (stored).
    replayed: u64,
    /// The last parked record read for replay.
    replay_read: u64,
    /// Parked records replayed and not yet settled, by version.
    replay_outstanding: BTreeSet<u64>,
    /// Events to park, with the reason.
    to_park: Vec<(Item, String)>,
}

impl Dispatcher {
    /// The state of `def`'s group, delivering what passes `filter`; nothing is wanted
    /// until [`Dispatcher::start`].
    pub(crate) fn new(def: Definition, filter: Option<EventFilter>) -> Self {
        Self {
            def,
            filter,
            cursor: 0,
            loaded: false,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            held: HashMap::new(),
            outstanding: BTreeSet::new(),
            checkpointed: None,
            settled_since: 0,
            last_checkpoint: Instant::now(),
            consumers: Vec::new(),
            next_rr: 0,
            total_items: 0,
            parked_total: 0,
            replayed: 0,
            replay_read: 0,
            replay_outstanding: BTreeSet::new(),
            to_park: Vec::new(),
        }
    }

    /// The group's definition.
    pub(crate) fn def(&self) -> &Definition {
        &self.def
    }

    /// Whether [`Dispatcher::start`] ran.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded
    }

    /// Starts after `cursor` (the stored checkpoint, or where the group starts), with
    /// `replayed` parked records already replayed and `parked` recorded in all.
    pub(crate) fn start(&mut self, cursor: u64, replayed: u64, parked: u64) {
        self.cursor = cursor;
        self.checkpointed = Some(cursor);
        self.replayed = replayed;
        self.replay_read = replayed;
        self.parked_total = parked;
        self.loaded = true;
    }

    /// Where the next read starts after: the last cursor value read.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether anyone is connected.
    pub(crate) fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    fn free_slots(&self) -> bool {
        self.consumers.iter().any(Consumer::can_take)
    }

    /// How many events one read asks for.
    pub(crate) fn read_size(&self) -> usize {
        usize::try_from(self.def.settings.read_batch_size)
            .unwrap_or(0)
            .clamp(100, PAGE)
    }

    /// Whether more events should be read: started, someone can take one, and fewer
    /// than a read batch wait.
    pub(crate) fn wants_events(&self) -> bool {
        self.loaded && self.free_slots() && self.queue.len() < self.read_size()
    }

    /// Takes a page read from the store after [`Dispatcher::cursor`]: the cursor moves
    /// past all of it, and what passes the filter waits for a consumer.
    pub(crate) fn accept(&mut self, events: Vec<RecordedEvent>) {
        for e in events {
            let key = if self.def.is_all() {
                e.position
            } else {
                e.aggregate_version
            };
            self.cursor = self.cursor.max(key);
            if self.filter.as_ref().is_some_and(|f| !f.matches(&e)) {
                continue;
            }
            self.outstanding.insert(key);
            self.queue.push_back(Item {
                event: Arc::new(e),
                retry: 0,
                key: Some(key),
                parked: None,
                parked_by: None,
            });
        }
    }

    /// Parked records through version `record` were read for replay.
    pub(crate) fn replay_read_through(&mut self, record: u64) {
        self.replay_read = record;
    }

    /// Offers a parked event again (its record is version `record` of the parked
    /// stream); it counts as replayed once settled.
    pub(crate) fn offer_parked(&mut self, record: u64, event: RecordedEvent) {
        self.replay_outstanding.insert(record);
        self.queue.push_back(Item {
            event: Arc::new(event),
            retry: 0,
            key: None,
            parked: Some(record),
            parked_by: None,
        });
    }

    /// The last parked record read for replay.
    pub(crate) fn replay_read(&self) -> u64 {
        self.replay_read
    }

    /// Which consumer takes `item`, by the group's strategy; `None` if none can now.
    fn pick(&mut self, item: &Item) -> Option<usize> {
        let consumers = &self.consumers;
        self.def.settings.consumer_strategy.choose(
            consumers.len(),
            |i| consumers[i].can_take(),
            &item.event.aggregate_id,
            item.event.correlation_id.as_deref(),
            &mut self.next_rr,
        )
    }

    /// Hands queued events to consumers with free slots.
    pub(crate) fn dispatch(&mut self) {
        let timeout = u64::try_from(self.def.settings.message_timeout_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        // A copy of an event already in flight (a replayed parked event) waits its turn.
        let mut deferred = Vec::new();
        while let Some(item) = self.queue.pop_front() {
            if self.in_flight.contains_key(&item.event.event_id) {
                deferred.push(item);
                continue;
            }
            let Some(i) = self.pick(&item) else {
                self.queue.push_front(item);
                break;
            };
            let c = &mut self.consumers[i];
            let delivery = Delivery::Event {
                event: item.event.clone(),
                retry: item.retry,
            };
            match c.tx.try_send(delivery) {
                Ok(()) => {
                    c.in_flight += 1;
                    c.in_flight_bytes += event_bytes(&item.event);
                    c.total += 1;
                    self.total_items += 1;
                    let consumer = c.id;
                    let client_id = client_event_id(&item.event);
                    self.held
                        .entry((consumer, client_id))
                        .or_default()
                        .push_back(item.event.event_id);
                    self.in_flight.insert(
                        item.event.event_id,
                        InFlight {
                            item,
                            consumer,
                            client_id,
                            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                        },
                    );
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // `can_take` saw room; nothing else sends on this channel.
                    self.queue.push_front(item);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let id = c.id;
                    self.queue.push_front(item);
                    self.leave(id);
                }
            }
        }
        for item in deferred.into_iter().rev() {
            self.queue.push_front(item);
        }
    }

    /// Marks `item` settled (acknowledged, skipped or parked).
    fn settle(&mut self, item: &Item) {
        if let Some(k) = item.key {
            self.outstanding.remove(&k);
        }
        if let Some(p) = item.parked {
            self.replay_outstanding.remove(&p);
        }
        self.settled_since += 1;
    }

    /// The annal event_id of the event `consumer` holds under `client_id` (the id it
    /// received), the earliest delivered if several.
    fn held_by(&self, consumer: u64, client_id: &Uuid) -> Option<Uuid> {
        self.held.get(&(consumer, *client_id))?.front().copied()
    }

    /// Takes `id` (an annal event_id) out of flight (it was with `consumer`).
    fn take(&mut self, consumer: u64, id: &Uuid) -> Option<Item> {
        let f = self.in_flight.get(id)?;
        if f.consumer != consumer {
            return None;
        }
        let f = self.in_flight.remove(id)?;
        let key = (f.consumer, f.client_id);
        if let Some(ids) = self.held.get_mut(&key) {
            ids.retain(|held| held != id);
            if ids.is_empty() {
                self.held.remove(&key);
            }
        }
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == f.consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(event_bytes(&f.item.event));
        }
        Some(f.item)
    }

    /// Offers `item` again with its retry count raised, or (past the retry limit) sets it
    /// aside to be parked.
    fn requeue(&mut self, mut item: Item) {
        item.retry = item.retry.saturating_add(1);
        if item.retry > self.def.settings.max_retry_count {
            self.to_park
                .push((item, "the maximum retry count was reached".to_owned()));
        } else {
            self.queue.push_front(item);
        }
    }

    /// What is to be parked, with the reasons; taken once.
    pub(crate) fn take_to_park(&mut self) -> Vec<(Item, String)> {
        std::mem::take(&mut self.to_park)
    }

    /// `item` was parked: it is settled.
    pub(crate) fn parked(&mut self, item: &Item) {
        self.parked_total += 1;
        self.settle(item);
    }

    /// `item` could not be parked: it is offered again.
    pub(crate) fn not_parked(&mut self, item: Item) {
        self.queue.push_front(item);
    }

    /// Adds a consumer, unless the group has its `max_subscriber_count` already.
    pub(crate) fn join(&mut self, consumer: Consumer) -> Result<(), GroupFull> {
        let max = usize::try_from(self.def.settings.max_subscriber_count).unwrap_or(0);
        if max > 0 && self.consumers.len() >= max {
            return Err(GroupFull { max });
        }
        self.consumers.push(consumer);
        Ok(())
    }

    /// `consumer` acknowledged `ids`, the ids it received (ids it does not hold are
    /// ignored).
    pub(crate) fn ack(&mut self, consumer: u64, ids: &[Uuid]) {
        for client_id in ids {
            let Some(id) = self.held_by(consumer, client_id) else {
                continue;
            };
            if let Some(item) = self.take(consumer, &id) {
                self.settle(&item);
            }
        }
    }

    /// `consumer` nacked `ids`, the ids it received (ids it does not hold are ignored).
    pub(crate) fn nack(&mut self, consumer: u64, ids: &[Uuid], action: NackAction, reason: &str) {
        let by = self
            .consumers
            .iter()
            .find(|c| c.id == consumer)
            .map(|c| c.user.clone())
            .filter(|u| !u.is_empty());
        for client_id in ids {
            let Some(id) = self.held_by(consumer, client_id) else {
                continue;
            };
            let Some(mut item) = self.take(consumer, &id) else {
                continue;
            };
            match action {
                NackAction::Park => {
                    item.parked_by.clone_from(&by);
                    self.to_park.push((item, reason.to_owned()));
                }
                NackAction::Skip => self.settle(&item),
                NackAction::Stop => {
                    self.queue.push_front(item);
                    self.drop_consumer(consumer, "the consumer nacked with stop");
                }
                NackAction::Retry => self.requeue(item),
            }
        }
    }

    /// A consumer left: what it held is offered again.
    pub(crate) fn leave(&mut self, id: u64) {
        self.consumers.retain(|c| c.id != id);
        self.held.retain(|(consumer, _), _| *consumer != id);
        let held: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == id)
            .map(|(k, _)| *k)
            .collect();
        let mut back: Vec<Item> = held
            .iter()
            .filter_map(|k| self.in_flight.remove(k))
            .map(|f| f.item)
            .collect();
        // In their original order, ahead of what was never sent.
        back.sort_by_key(|i| i.event.position);
        for item in back.into_iter().rev() {
            self.requeue(item);
        }
    }

    /// Ends one consumer's call.
    fn drop_consumer(&mut self, id: u64, why: &str) {
        if let Some(c) = self.consumers.iter().find(|c| c.id == id) {
            let _ = c.tx.try_send(Delivery::Dropped(why.to_owned()));
        }
        self.leave(id);
    }

    /// Ends every consumer's call (the group stops).
    pub(crate) fn drop_all(&self, why: &str) {
        for c in &self.consumers {
            let _ = c.tx.try_send(Delivery::Dropped(why.to_owned()));
        }
    }

    /// Offers again what was in flight past its deadline at `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let late: Vec<(u64, Uuid)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(id, f)| (f.consumer, *id))
            .collect();
        for (consumer, id) in late {
            if let Some(item) = self.take(consumer, &id) {
                self.requeue(item);
            }
        }
    }

    /// Where the checkpoint can be: just below the oldest unsettled event.
    pub(crate) fn settled_through(&self) -> u64 {
        self.outstanding
            .first()
            .map_or(self.cursor, |k| k.saturating_sub(1))
    }

    /// Whether the settings say a checkpoint is due (always when `force`, never before
    /// [`Dispatcher::start`]).
    pub(crate) fn checkpoint_due(&self, force: bool) -> bool {
        if !self.loaded {
            return false;
        }
        let s = &self.def.settings;
        let max = u64::try_from(s.max_checkpoint_count).unwrap_or(0);
        let min = u64::try_from(s.min_checkpoint_count).unwrap_or(0);
        let after = Duration::from_millis(u64::try_from(s.checkpoint_after_ms).unwrap_or(0));
        let idle = self.queue.is_empty() && self.in_flight.is_empty();
        let elapsed = self.last_checkpoint.elapsed() >= after;
        force
            || (max > 0 && self.settled_since >= max)
            || (elapsed && self.settled_since >= min.max(1))
            || (elapsed && idle && self.settled_since > 0)
    }

    /// The checkpoint to write now, if it moves forward.
    pub(crate) fn checkpoint_to_write(&self) -> Option<u64> {
        let at = self.settled_through();
        self.checkpointed.is_none_or(|c| c < at).then_some(at)
    }

    /// The checkpoint `at` was written.
    pub(crate) fn checkpointed(&mut self, at: u64) {
        self.checkpointed = Some(at);
        self.settled_since = 0;
        self.last_checkpoint = Instant::now();
    }

    /// The replay marker to write now, if it moves forward: how far replayed parked
    /// records are settled.
    pub(crate) fn replay_marker_to_write(&self) -> Option<u64> {
        let at = self
            .replay_outstanding
            .first()
            .map_or(self.replay_read, |p| p.saturating_sub(1));
        (at > self.replayed).then_some(at)
    }

    /// The replay marker `at` was written.
    pub(crate) fn replay_marker_written(&mut self, at: u64) {
        self.replayed = at;
    }

    /// What it reports.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            checkpoint: self.checkpointed,
            last_known: self.loaded.then_some(self.cursor),
            total_items: self.total_items,
            queued: self.queue.len(),
            retries_queued: self.queue.iter().filter(|i| i.retry > 0).count(),
            in_flight: self.in_flight.len(),
            parked: self.parked_total.saturating_sub(self.replay_read),
            connections: self
                .consumers
                .iter()
                .map(|c| ConnectionStats {
                    from: c.from.clone(),
                    user: c.user.clone(),
                    total_items: c.total,
                    available_slots: c.slots.saturating_sub(c.in_flight),
                    in_flight: c.in_flight,
                })
                .collect(),
        }
    }
}
