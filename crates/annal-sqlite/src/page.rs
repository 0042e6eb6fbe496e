//! A page of events read on two threads: the reading thread steps the query's rows
//! while a second thread renders each chunk's packed sealed parts to their text,
//! checks the chunk against its stored hashes and opens its personal parts, so that a long read keeps both cores busy instead of
//! checking and opening only after the last row. When chunks queue up for the second
//! thread, the reading thread checks and opens the one it has just read itself, and it
//! does the last one, so neither thread waits long for the other.
//!
//! Invariants:
//! - a page is served only after every event on it was checked as [`rows::checked`]
//!   checks it: a chunk's events whose predecessor is in the chunk are checked with
//!   the chunk ([`chain::check_linked`]); the reading thread checks the rest once it
//!   has the whole page, with predecessors from the page or from the store
//!   ([`rows::check_at`]);
//! - a chunk's personal parts are opened with the chunk only with data keys kept for
//!   reads under the key table's change mark read in the page's snapshot before its
//!   rows ([`annal_core::privacy::open_kept`], and the invariants of
//!   `annal_core::privacy::read_cache`). A chunk that cannot be opened whole that way (a
//!   key not kept, no key-encryption key, a part that does not open) is opened by the
//!   reading thread after every check, as a one-thread read opens it
//!   ([`privacy::open_in`]), so errors read the same either way;
//! - the page keeps the query's order: chunks carry their place and are put back in it;
//! - a page of fewer rows than a chunk, or any page on one core, is read on one thread:
//!   [`rows::checked`], then [`privacy::open`].

use crate::privacy;
use crate::rows::{self, db};
use annal_core::privacy::Keys;
use annal_core::{Error, RecordedEvent, Result, chain};
use rusqlite::Connection;
use std::ops::Range;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Rows handed to the second thread at a time.
const CHUNK: usize = 128;
/// Chunks waiting for the second thread at most; past that the reading thread checks
/// and opens the chunk it has just read itself, so that neither thread waits long for
/// the other.
const QUEUED: usize = 2;

/// Rows read: their events, with the sealed parts stored packed not yet rendered
/// (their index in `events` and their bytes).
#[derive(Default)]
struct Rows {
    events: Vec<RecordedEvent>,
    packed: Vec<(usize, Vec<u8>)>,
}

impl Rows {
    fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
            packed: Vec::new(),
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<()> {
        let (event, packed) = rows::event_and_packed(row)?;
        if let Some(bytes) = packed {
            self.packed.push((self.events.len(), bytes));
        }
        self.events.push(event);
        Ok(())
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    /// Renders each packed sealed part to its text (the bytes are kept).
    fn render(&mut self) -> Result<()> {
        for (i, bytes) in &self.packed {
            if let Some(e) = self.events.get_mut(*i) {
                rows::render_sealed(e, bytes)?;
            }
        }
        Ok(())
    }

    /// The events, each sealed part rendered to its text.
    fn rendered(mut self) -> Result<Vec<RecordedEvent>> {
        self.render()?;
        Ok(self.events)
    }
}

/// A chunk checked and opened as far as one thread could: its place in the page and
/// what is left for the reading thread.
struct Done {
    seq: usize,
    events: Vec<RecordedEvent>,
    /// Indices (in the chunk) of events whose predecessor was not in the chunk.
    unchecked: Vec<usize>,
    /// Whether every personal part in the chunk was opened.
    opened: bool,
}

type Worker<'scope> = (
    SyncSender<(usize, Rows)>,
    ScopedJoinHandle<'scope, Result<Vec<Done>>>,
);

/// The data keys a chunk may be opened with: the store's keys and the key table's
/// change mark read in the page's snapshot.
type Mark<'a> = Option<(&'a Keys, i64)>;

/// The events `sql` selects (with [`rows::EVENT_COLUMNS`]), checked against their hashes
/// and with their personal parts opened, as `rows::checked` and `privacy::open` would
/// give them, read inside the caller's read transaction.
pub fn read(
    conn: &Connection,
    keys: Option<&Keys>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>> {
    let mark = match keys {
        Some(k) => Some((k, privacy::key_changes(conn)?)),
        None => None,
    };
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut found = stmt.query(params).map_err(db)?;
    let (tail, done) = std::thread::scope(|scope| -> Result<_> {
        let mut worker: Option<Worker<'_>> = None;
        let mut done = Vec::new();
        let mut chunk = Rows::with_capacity(CHUNK);
        let mut handed = true;
        while let Some(row) = found.next().map_err(db)? {
            chunk.push(row)?;
            if chunk.len() == CHUNK && two_cores {
                let (tx, _) = worker.get_or_insert_with(|| start(scope, mark));
                let full = std::mem::replace(&mut chunk, Rows::with_capacity(CHUNK));
                match tx.try_send((done.len(), full)) {
                    Ok(()) => done.push(None),
                    Err(TrySendError::Full((seq, full))) => {
                        done.push(Some(check_and_open(seq, full, mark)?));
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        // The second thread stopped: its answer says why.
                        handed = false;
                        break;
                    }
                }
            }
        }
        let Some((tx, handle)) = worker else {
            return Ok((chunk, None));
        };
        drop(tx);
        let seq = done.len();
        let mut done: Vec<Done> = done.into_iter().flatten().collect();
        if !chunk.events.is_empty() {
            done.push(check_and_open(seq, chunk, mark)?);
        }
        let theirs = handle
            .join()
            .unwrap_or_else(|_| Err(Error::storage("a page-reading thread panicked")))?;
        if !handed {
            return Err(Error::storage("a page-reading thread stopped early"));
        }
        done.extend(theirs);
        done.sort_unstable_by_key(|d| d.seq);
        Ok((Rows::default(), Some(done)))
    })?;
    drop(found);
    match done {
        None => privacy::open(conn, keys, rows::checked(conn, tail.rendered()?)?),
        Some(done) => finish(conn, keys, done),
    }
}

/// Renders a chunk's packed sealed parts, checks its events whose predecessor is in it,
/// and opens its personal parts if every data key they need is kept (see the module's
/// invariants).
fn check_and_open(seq: usize, mut chunk: Rows, mark: Mark<'_>) -> Result<Done> {
    chunk.render()?;
    let unchecked = chain::check_linked(&chunk.events)?;
    let Rows { mut events, packed } = chunk;
    let opened = match mark {
        Some((keys, counter)) => {
            annal_core::privacy::open_kept(&mut events, &packed, keys, counter)
        }
        None => events.iter().all(|e| e.sealed.is_none()),
    };
    Ok(Done {
        seq,
        events,
        unchecked,
        opened,
    })
}

/// Starts the second thread: it checks and opens each chunk it is handed.
fn start<'scope>(scope: &'scope Scope<'scope, '_>, mark: Mark<'scope>) -> Worker<'scope> {
    let (tx, rx) = sync_channel::<(usize, Rows)>(QUEUED);
    let handle = scope.spawn(move || {
        rx.into_iter()
            .map(|(seq, events)| check_and_open(seq, events, mark))
            .collect()
    });
    (tx, handle)
}

/// The page from its chunks, in order: the events left unchecked are checked, then
/// the parts left closed are opened.
fn finish(conn: &Connection, keys: Option<&Keys>, done: Vec<Done>) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(done.iter().map(|d| d.events.len()).sum());
    let mut unchecked = Vec::new();
    let mut closed: Vec<Range<usize>> = Vec::new();
    for d in done {
        let base = events.len();
        unchecked.extend(d.unchecked.into_iter().map(|i| base + i));
        if !d.opened {
            closed.push(base..base + d.events.len());
        }
        events.extend(d.events);
    }
    rows::check_at(conn, &events, &unchecked)?;
    for range in closed {
        if let Some(part) = events.get_mut(range) {
            privacy::open_in(conn, keys, part)?;
        }
    }
    Ok(events)
}
