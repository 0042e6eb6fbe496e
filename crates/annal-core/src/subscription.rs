//! Subscriptions: a consumer's view of the global log from a start it names (the
//! beginning, the end, or after a position), through a filter, first the history and
//! then live commits, on any [`Store`].
//!
//! How it works: a feeder task reads pages with [`Store::read_all`] by position. When a
//! page comes back short the feeder has reached the head, and it waits with
//! [`Store::wait_for_head`] (an in-process wake-up on the embedded store, LISTEN/NOTIFY
//! on PostgreSQL, polling over HTTP) before reading again from the same position. Pages
//! travel to the consumer over a bounded channel of `buffer_pages` pages.
//!
//! Invariants:
//! - every committed event after the start that passes the filter is delivered exactly
//!   once, in global order, with no gap and no duplicate at the switch from history to
//!   live (there is no switch: both are the same read by position; positions are
//!   gap-free and commit-ordered in every backend);
//! - [`Subscription::position`] is the position up to which everything has been handed
//!   over: every matching event at or below it was delivered (with a filter it can be
//!   past the last delivered event: the feeder knows the head it read up to);
//! - memory is bounded: at most `buffer_pages + 2` pages of `page_size` events are held.
//!   A slow consumer only slows its own feeder; writers never wait for subscribers;
//! - the feeder stops when the [`Subscription`] is dropped; a store error is delivered
//!   once and ends the subscription (resubscribe from [`Subscription::position`]).

use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::read::Filter;
use crate::store::Store;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one `wait_for_head` call waits before the feeder checks it is still wanted.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// From position 1: the whole history, then live.
    #[default]
    Beginning,
    /// After the head as it is when [`subscribe`] returns: only new commits.
    End,
    /// After this position (e.g. a checkpoint): events at later positions.
    After(u64),
}

/// Which aggregates' events a partitioned consumer takes: those whose
/// [`partition_of`] is `index` among `count` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// This consumer's partition, `0..count`.
    pub index: u32,
    /// The number of partitions (at least 1).
    pub count: u32,
}

/// The partition of `aggregate_id` among `count` (FNV-1a 64 of its UTF-8 bytes, modulo
/// `count`): stable across processes, platforms and releases.
pub fn partition_of(aggregate_id: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in aggregate_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    #[allow(clippy::cast_possible_truncation)] // below `count`, a u32
    let partition = (h % u64::from(count.max(1))) as u32;
    partition
}

/// What a subscription reads and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Where it starts.
    pub start: Start,
    /// The store-side filter (event types, aggregate types, correlation ids, …).
    pub filter: Filter,
    /// Only aggregates whose id starts with this (applied as events arrive).
    pub aggregate_id_prefix: Option<String>,
    /// Only this partition's aggregates (applied as events arrive).
    pub partition: Option<Partition>,
    /// Events per read (default 1000).
    pub page_size: usize,
    /// Pages read ahead of the consumer (default 2).
    pub buffer_pages: usize,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            start: Start::Beginning,
            filter: Filter::default(),
            aggregate_id_prefix: None,
            partition: None,
            page_size: 1000,
            buffer_pages: 2,
        }
    }
}

impl SubscriptionOptions {
    /// Every event from `start`.
    pub fn from(start: Start) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// Filters by the store-side `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Keeps only aggregates whose id starts with `prefix`.
    pub fn aggregate_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.aggregate_id_prefix = Some(prefix.into());
        self
    }

    /// Keeps only one partition's aggregates.
    pub fn partition(mut self, partition: Partition) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Reads `page_size` events at a time.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Whether `event` passes every filter (store-side and client-side).
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.filter.matches(event) && self.passes_client_side(event)
    }

    fn passes_client_side(&self, event: &RecordedEvent) -> bool {
        self.aggregate_id_prefix
            .as_deref()
            .is_none_or(|p| event.aggregate_id.starts_with(p))
            && self
                .partition
                .is_none_or(|p| partition_of(&event.aggregate_id, p.count) == p.index)
    }

    fn check(&self) -> Result<()> {
        if let Some(p) = self.partition
            && (p.count == 0 || p.index >= p.count)
        {
            return Err(Error::invalid(
                "partition",
                format!("index {} is not below count {}", p.index, p.count),
            ));
        }
        if self.page_size == 0 {
            return Err(Error::invalid("page_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// A page of delivered events and how far the read behind it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Matching events, in global order.
    pub events: Vec<RecordedEvent>,
    /// Every matching event at or below this position is in this batch or an earlier one.
    pub through: u64,
    /// Whether the read behind this batch reached the head (history is done: live).
    pub caught_up: bool,
}

/// A running subscription; pull events with [`Subscription::next`] or
/// [`Subscription::next_batch`]. Dropping it stops its feeder.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<Batch>>,
    current: VecDeque<RecordedEvent>,
    current_through: u64,
    current_caught_up: bool,
    position: u64,
    caught_up: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a subscription on `store` (a tokio runtime must be running).
pub async fn subscribe<S: Store + ?Sized + 'static>(
    store: Arc<S>,
    options: SubscriptionOptions,
) -> Result<Subscription> {
    options.check()?;
    let (after, known_head) = match options.start {
        Start::Beginning => (0, 0),
        Start::After(p) => (p, 0),
        Start::End => {
            let head = store.head(&[]).await?;
            (head, head)
        }
    };
    let (tx, rx) = mpsc::channel(options.buffer_pages.max(1));
    let task = tokio::spawn(feed(store, options, after, known_head, tx));
    Ok(Subscription {
        rx,
        current: VecDeque::new(),
        current_through: after,
        current_caught_up: false,
        position: after,
        caught_up: false,
        task,
    })
}

impl Subscription {
    /// The position up to which every matching event has been handed over.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether the history has been delivered (the last batch handed over reached the head).
    pub fn caught_up(&self) -> bool {
        self.caught_up && self.current.is_empty()
    }

    /// The next matching event, waiting for a commit if need be. Cancel-safe. An error
    /// (the store failed) ends the subscription.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(e) = self.current.pop_front() {
                self.position = if self.current.is_empty() {
                    self.caught_up = self.current_caught_up;
                    self.current_through.max(e.position)
                } else {
                    e.position
                };
                return Ok(e);
            }
            let batch = self.receive().await?;
            self.stash(batch);
        }
    }

    /// What is left of the current batch, or the next batch (possibly without events,
    /// when only the position moved). Cancel-safe. An error ends the subscription.
    pub async fn next_batch(&mut self) -> Result<Batch> {
        if !self.current.is_empty() {
            let events: Vec<_> = self.current.drain(..).collect();
            self.position = self.current_through;
            self.caught_up = self.current_caught_up;
            return Ok(Batch {
                events,
                through: self.current_through,
                caught_up: self.current_caught_up,
            });
        }
        let batch = self.receive().await?;
        self.position = batch.through;
        self.caught_up = batch.caught_up;
        Ok(batch)
    }

    async fn receive(&mut self) -> Result<Batch> {
        match self.rx.recv().await {
            Some(batch) => batch,
            None => Err(Error::Closed("the subscription's feeder stopped".into())),
        }
    }

    fn stash(&mut self, batch: Batch) {
        if batch.events.is_empty() {
            self.position = batch.through;
            self.caught_up = batch.caught_up;
        }
        self.current_through = batch.through;
        self.current_caught_up = batch.caught_up;
        self.current.extend(batch.events);
    }
}

/// The feeder: reads by position, sends pages, waits for the head when a page is short.
async fn feed<S: Store + ?Sized>(
    store: Arc<S>,
    options: SubscriptionOptions,
    mut after: u64,
    mut known_head: u64,
    tx: mpsc::Sender<Result<Batch>>,
) {
    let page_size = options.page_size.max(1);
    let client_side = options.aggregate_id_prefix.is_some() || options.partition.is_some();
    loop {
        // `known_head` was learnt before this read: a short page proves that every
        // matching event up to it has been read.
        let page = match store.read_all(after, page_size, &options.filter).await {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let full = page.len() == page_size;
        let last = page.last().map_or(after, |e| e.position);
        let through = if full {
            last
        } else {
            last.max(known_head).max(after)
        };
        let events = if client_side {
            page.into_iter()
                .filter(|e| options.passes_client_side(e))
                .collect()
        } else {
            page
        };
        if !events.is_empty() || through > after || !full {
            let batch = Batch {
                events,
                through,
                caught_up: !full,
            };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
        }
        after = through;
        if full {
            continue;
        }
        loop {
            tokio::select! {
                head = store.wait_for_head(after, WAIT_SLICE) => match head {
                    Ok(head) if head > after => {
                        known_head = head;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                () = tx.closed() => return,
            }
        }
    }
}
