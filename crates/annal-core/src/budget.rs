//! Read-ahead measured in bytes: how many events a server reads for a client at a time,
//! so that what it holds for a client that stops reading stays about one budget.
//!
//! Invariants: a page asks for at least one event and at most `max`; after a page, the
//! next asks for as many events as the budget fits at that page's average size, but at
//! most twice as many as that page held, so small events before large ones (a served
//! store's `$epoch` at position 1, then documents of 1 MiB) cost a page of twice the
//! small page's count, not `max` large events; the first page, before any size is
//! known, asks for [`FIRST_PAGE`]. Across the process, the
//! pages read ahead and not yet handed to the network ([`Held`]) are counted; while
//! they reach the process's cap ([`set_cap`]), every page asks for one event, so past
//! the cap memory grows by at most one event per client, and every client still
//! moves.

use crate::event::RecordedEvent;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of read-ahead pages held across the process.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// The process's cap on [`HELD`] (see the module's invariants).
static CAP: AtomicUsize = AtomicUsize::new(DEFAULT_CAP);
/// The default cap: 256 MiB.
pub const DEFAULT_CAP: usize = 256 * 1024 * 1024;

/// Sets the process's cap on read-ahead bytes.
pub fn set_cap(bytes: usize) {
    CAP.store(bytes, Ordering::Relaxed);
}

/// Bytes of read-ahead pages held across the process now.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Counts `bytes` of a read-ahead page as held until dropped.
#[derive(Debug)]
pub struct Held(usize);

impl Held {
    /// Counts `bytes` as held.
    pub fn new(bytes: usize) -> Self {
        HELD.fetch_add(bytes, Ordering::Relaxed);
        Self(bytes)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// About the most bytes one client's read-ahead page holds.
pub const PAGE_BYTES: usize = 512 * 1024;
/// Events in a first page, before their sizes are known: one, so that a client's first
/// page is one event however large events are (with 16, a client of a history of 1 MiB
/// events held 16 MiB, and 200 of them arriving together passed the process's cap
/// fivefold before any page was counted). The second page is sized by the first.
pub const FIRST_PAGE: usize = 1;
/// How many times larger (in events) a page may be than the page before it.
pub const GROWTH: usize = 2;
/// What an event costs beyond its data and metadata (ids, names, times, hash), as an
/// estimate for [`event_bytes`].
const EVENT_OVERHEAD: usize = 256;

/// The size of the next page to read for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBudget {
    bytes: usize,
    max: usize,
    next: usize,
}

impl PageBudget {
    /// A budget of [`PAGE_BYTES`], starting at [`FIRST_PAGE`] events, never over `max`.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            bytes: PAGE_BYTES,
            max,
            next: FIRST_PAGE.min(max),
        }
    }

    /// How many events to ask for next: one while the process's read-ahead is at its
    /// cap.
    pub fn events(&self) -> usize {
        if held() >= CAP.load(Ordering::Relaxed) {
            1
        } else {
            self.next
        }
    }

    /// Learns from a page of `events` that took `bytes` (as sent, or as held).
    pub fn observe_bytes(&mut self, events: usize, bytes: usize) {
        if events == 0 || bytes == 0 {
            return;
        }
        let average = bytes.div_ceil(events).max(1);
        self.next = (self.bytes / average)
            .min(events.saturating_mul(GROWTH))
            .clamp(1, self.max);
    }

    /// Learns from a page of events ([`event_bytes`] each).
    pub fn observe(&mut self, page: &[RecordedEvent]) {
        let bytes = page.iter().map(event_bytes).sum();
        self.observe_bytes(page.len(), bytes);
    }
}

/// About how many bytes an event takes to hold or send: its data and metadata, plus
/// its other fields.
pub fn event_bytes(e: &RecordedEvent) -> usize {
    e.data.get().len() + e.metadata.get().len() + EVENT_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_holds_about_its_byte_budget_and_at_least_one_event() {
        let mut b = PageBudget::new(1000);
        assert_eq!(b.events(), FIRST_PAGE);
        b.observe_bytes(10, 1_000_000);
        assert_eq!(b.events(), PAGE_BYTES / 100_000);
        b.observe_bytes(1, 10 * PAGE_BYTES);
        assert_eq!(b.events(), 1, "an event over the budget still goes, alone");
        b.observe_bytes(600, 600);
        assert_eq!(b.events(), 1000, "small events: the most a page may hold");
        b.observe_bytes(0, 0);
        assert_eq!(b.events(), 1000, "an empty page teaches nothing");
        assert_eq!(PageBudget::new(4).events(), 1, "a first page is one event");
    }

    #[test]
    fn a_page_is_at_most_twice_the_one_before_so_small_events_cannot_pull_in_many_large_ones() {
        let mut b = PageBudget::new(1000);
        b.observe_bytes(1, 300);
        assert_eq!(b.events(), 2, "one small event: a page of two next");
        b.observe_bytes(2, 2 * 1024 * 1024);
        assert_eq!(b.events(), 1, "two events of 1 MiB: one at a time");
        let mut pages = 0;
        let mut small = PageBudget::new(1000);
        while small.events() < 1000 {
            let n = small.events();
            small.observe_bytes(n, n * 300);
            pages += 1;
        }
        assert_eq!(
            pages, 10,
            "small events reach the most a page holds by doubling"
        );
    }

    #[test]
    fn at_the_process_cap_every_page_asks_for_one_event_until_pages_are_let_go() {
        let mut b = PageBudget::new(1000);
        b.observe_bytes(600, 600);
        assert_eq!(b.events(), 1000);
        let held = Held::new(DEFAULT_CAP);
        assert_eq!(b.events(), 1, "at the cap");
        drop(held);
        assert_eq!(b.events(), 1000, "below it again");
    }
}
