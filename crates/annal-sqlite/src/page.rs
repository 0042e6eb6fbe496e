//! A page of events read on two threads: the reading thread steps the query's rows
//! while a second thread takes them in chunks, renders their packed sealed parts to
//! their text, checks them against their stored hashes and opens their personal parts,
//! so that a long read keeps both cores busy instead of doing all that after the last
//! row. When chunks queue up for the second thread, the reading thread does the one it
//! has just read itself, and it does the last one.
//!
//! Invariants:
//! - a page is served only after every event on it was checked as [`rows::checked`]
//!   checks it: each chunk is checked whole ([`chain::check_served`]), with the stored
//!   hashes of the predecessors that are not in the chunk read by the reading thread
//!   before it hands the chunk over (in the same snapshot, so a predecessor on the page
//!   has the hash the page shows);
//! - a chunk's personal parts are opened with the chunk only with data keys kept for
//!   reads under the key table's change mark read in the page's read transaction
//!   ([`annal_core::privacy::open_kept`], and the invariants of
//!   `annal_core::privacy::read_cache`), and from the packed bytes that the checked
//!   texts were rendered from, so what is opened is what was checked (the AEAD binds
//!   each part to its event's id besides); the page is refused outside a transaction. A
//!   chunk that cannot be opened whole that way (a key not kept, no key-encryption key,
//!   a part that does not open) is opened by the reading thread, after every chunk was
//!   checked, as a one-thread read opens a page ([`privacy::open_in`]);
//! - the page keeps the query's order: chunks carry their place and are put back in it;
//! - errors read as on one thread: when anything fails, the page is read again on one
//!   thread ([`rows::query_events`], [`rows::checked`], [`privacy::open`]) in the same
//!   snapshot, and that read's answer is the page's, so the error names the first bad
//!   event in the page's order whichever thread met a bad event first;
//! - a page of fewer rows than a chunk, or any page on one core (or when no thread can
//!   be started), is read on one thread.

use crate::privacy;
use crate::rows::{self, db};
use annal_core::chain::{self, Hash};
use annal_core::privacy::Keys;
use annal_core::{Error, RecordedEvent, Result};
use rusqlite::Connection;
use rusqlite::types::Value;
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Rows handed to the second thread at a time.
const CHUNK: usize = 128;
/// Chunks waiting for the second thread at most; past that the reading thread does the
/// chunk it has just read itself, so that neither thread waits long for the other.
const QUEUED: usize = 2;

/// Rows read: their events, with the sealed parts stored packed not yet rendered
/// (their index in `events` and their bytes), and the stored hashes of the
/// predecessors of those events that are not among them.
#[derive(Default)]
struct Rows {
    events: Vec<RecordedEvent>,
    packed: Vec<(usize, Vec<u8>)>,
    predecessors: Vec<(u64, Hash)>,
}

impl Rows {
    fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
            ..Self::default()
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

    /// Reads the stored hashes of the predecessors the chunk's check needs.
    fn with_predecessors(mut self, conn: &Connection) -> Result<Self> {
        self.predecessors = rows::stored_hashes(conn, chain::predecessors_needed(&self.events))?;
        Ok(self)
    }
}

/// A chunk rendered, checked, and opened if it could be: its place in the page.
struct Done {
    seq: usize,
    events: Vec<RecordedEvent>,
    /// Whether every personal part in the chunk was opened.
    opened: bool,
}

type Worker<'scope> = (
    SyncSender<(usize, Rows)>,
    ScopedJoinHandle<'scope, Result<Vec<Done>>>,
);

/// The data keys a chunk may be opened with: the store's keys and the key table's
/// change mark read in the page's read transaction.
type Mark<'a> = Option<(&'a Keys, i64)>;

/// The events `sql` selects (with [`rows::EVENT_COLUMNS`]), checked against their hashes
/// and with their personal parts opened, as `rows::checked` and `privacy::open` give
/// them, read inside the caller's read transaction.
pub fn read(
    conn: &Connection,
    keys: Option<&Keys>,
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<RecordedEvent>> {
    if conn.is_autocommit() {
        return Err(Error::storage(
            "a page of events is read inside a read transaction (the key table's mark and the rows must share its snapshot)",
        ));
    }
    match two_threads(conn, keys, sql, &params) {
        Ok(events) => Ok(events),
        Err(_) => {
            let events = rows::query_events(conn, sql, rusqlite::params_from_iter(params))?;
            privacy::open(conn, keys, rows::checked(conn, events)?)
        }
    }
}

/// Whether this machine has a second core to read on (asked once).
fn two_cores() -> bool {
    static TWO: OnceLock<bool> = OnceLock::new();
    *TWO.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

fn two_threads(
    conn: &Connection,
    keys: Option<&Keys>,
    sql: &str,
    params: &[Value],
) -> Result<Vec<RecordedEvent>> {
    let mark = match keys {
        Some(k) => Some((k, privacy::key_changes(conn)?)),
        None => None,
    };
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut found = stmt.query(rusqlite::params_from_iter(params)).map_err(db)?;
    let mut two = two_cores();
    let (tail, done) = std::thread::scope(|scope| -> Result<_> {
        let mut worker: Option<Worker<'_>> = None;
        let mut done = Vec::new();
        let mut chunk = Rows::with_capacity(CHUNK);
        while let Some(row) = found.next().map_err(db)? {
            chunk.push(row)?;
            if chunk.events.len() < CHUNK || !two {
                continue;
            }
            let full = std::mem::replace(&mut chunk, Rows::with_capacity(CHUNK))
                .with_predecessors(conn)?;
            if worker.is_none() {
                worker = start(scope, mark);
            }
            let Some((tx, _)) = &worker else {
                // No thread could be started (at the first full chunk, so none was
                // handed over or done yet): read on one thread from here.
                two = false;
                chunk = full;
                continue;
            };
            match tx.try_send((done.len(), full)) {
                Ok(()) => done.push(None),
                Err(TrySendError::Full((seq, full))) => {
                    done.push(Some(check_and_open(seq, full, mark)?));
                }
                Err(TrySendError::Disconnected(_)) => {
                    // The second thread stopped on an error: that is the page's.
                    if let Some((tx, handle)) = worker.take() {
                        drop(tx);
                        joined(handle)?;
                    }
                    return Err(Error::storage("a page-reading thread stopped early"));
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
            done.push(check_and_open(seq, chunk.with_predecessors(conn)?, mark)?);
        }
        let theirs = joined(handle)?;
        done.extend(theirs);
        done.sort_unstable_by_key(|d| d.seq);
        if done.iter().enumerate().any(|(i, d)| d.seq != i) {
            return Err(Error::storage("a page-reading thread lost a chunk"));
        }
        Ok((Rows::default(), Some(done)))
    })?;
    drop(found);
    match done {
        None => {
            let events = rendered(tail)?;
            privacy::open(conn, keys, rows::checked(conn, events)?)
        }
        Some(done) => finish(conn, keys, done),
    }
}

/// The events read, each packed sealed part rendered to its text.
fn rendered(mut read: Rows) -> Result<Vec<RecordedEvent>> {
    render(&mut read.events, &read.packed)?;
    Ok(read.events)
}

/// Renders each packed sealed part (by index in `events`) to its text.
fn render(events: &mut [RecordedEvent], packed: &[(usize, Vec<u8>)]) -> Result<()> {
    for (i, bytes) in packed {
        if let Some(e) = events.get_mut(*i) {
            rows::render_sealed(e, bytes)?;
        }
    }
    Ok(())
}

/// Renders a chunk's packed sealed parts, checks its events against their hashes, and
/// opens its personal parts if every data key they need is kept, from the bytes the
/// checked texts were rendered from (see the module's invariants).
fn check_and_open(seq: usize, chunk: Rows, mark: Mark<'_>) -> Result<Done> {
    let Rows {
        mut events,
        packed,
        predecessors,
    } = chunk;
    render(&mut events, &packed)?;
    chain::check_served(&events, &predecessors)?;
    let opened = match mark {
        Some((keys, counter)) => {
            annal_core::privacy::open_kept(&mut events, &packed, keys, counter)
        }
        None => events.iter().all(|e| e.sealed.is_none()),
    };
    Ok(Done {
        seq,
        events,
        opened,
    })
}

/// Starts the second thread, which renders, checks and opens each chunk it is handed;
/// `None` when no thread can be started.
fn start<'scope>(scope: &'scope Scope<'scope, '_>, mark: Mark<'scope>) -> Option<Worker<'scope>> {
    let (tx, rx) = sync_channel::<(usize, Rows)>(QUEUED);
    let handle = std::thread::Builder::new()
        .spawn_scoped(scope, move || {
            rx.into_iter()
                .map(|(seq, rows)| check_and_open(seq, rows, mark))
                .collect()
        })
        .ok()?;
    Some((tx, handle))
}

/// The second thread's chunks, or the error it stopped on (a panic is a storage error).
fn joined(handle: ScopedJoinHandle<'_, Result<Vec<Done>>>) -> Result<Vec<Done>> {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::storage("a page-reading thread panicked")))
}

/// The page from its chunks, in order, each checked; the parts left closed are opened.
fn finish(conn: &Connection, keys: Option<&Keys>, done: Vec<Done>) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(done.iter().map(|d| d.events.len()).sum());
    let mut closed: Vec<Range<usize>> = Vec::new();
    for d in done {
        let base = events.len();
        if !d.opened {
            closed.push(base..base + d.events.len());
        }
        events.extend(d.events);
    }
    for range in closed {
        if let Some(part) = events.get_mut(range) {
            privacy::open_in(conn, keys, part)?;
        }
    }
    Ok(events)
}
