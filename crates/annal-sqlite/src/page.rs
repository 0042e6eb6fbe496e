//! A page of events read on two threads: the reading thread steps the query's rows
//! while a second thread checks each chunk of them against their stored hashes and
//! opens their personal parts, so that a long read keeps both cores busy instead of
//! checking and opening only after the last row.
//!
//! Invariants:
//! - a page is served only after every event on it was checked as [`rows::checked`]
//!   checks it: the second thread checks each event whose predecessor is in its chunk
//!   ([`chain::check_linked`]); the reading thread checks the rest once it has the whole
//!   page, with predecessors from the page or from the store ([`rows::check_at`]);
//! - the second thread opens a chunk's personal parts only with data keys kept for
//!   reads under the key table's change mark read in the page's snapshot before its
//!   rows ([`privacy::open_kept`], the invariants of
//!   `annal_core::privacy::read_cache`). A chunk it cannot open whole (a key not kept,
//!   no key-encryption key, a part that does not open) is opened by the reading thread
//!   after every check, as a one-thread read opens it ([`privacy::open_in`]), so errors
//!   read the same either way;
//! - a page of fewer rows than a chunk, or any page on one core, is read on one thread:
//!   [`rows::checked`], then [`privacy::open`].

use crate::privacy;
use crate::rows::{self, db};
use annal_core::privacy::Keys;
use annal_core::{Error, RecordedEvent, Result, chain};
use rusqlite::Connection;
use std::ops::Range;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Rows handed to the second thread at a time.
const CHUNK: usize = 256;

/// A chunk as the second thread left it.
struct Done {
    events: Vec<RecordedEvent>,
    /// Indices (in the chunk) of events whose predecessor was not in the chunk.
    unchecked: Vec<usize>,
    /// Whether every personal part in the chunk was opened.
    opened: bool,
}

type Worker<'scope> = (
    SyncSender<Vec<RecordedEvent>>,
    ScopedJoinHandle<'scope, Result<Vec<Done>>>,
);

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
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut handed = true;
        while let Some(row) = found.next().map_err(db)? {
            chunk.push(rows::event_from_row(row)?);
            if chunk.len() == CHUNK && two_cores {
                let (tx, _) = worker.get_or_insert_with(|| start(scope, mark));
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                if tx.send(full).is_err() {
                    // The second thread stopped: its answer says why.
                    handed = false;
                    break;
                }
            }
        }
        let Some((tx, handle)) = worker else {
            return Ok((chunk, None));
        };
        drop(tx);
        let done = handle
            .join()
            .unwrap_or_else(|_| Err(Error::storage("a page-reading thread panicked")))?;
        if !handed {
            return Err(Error::storage("a page-reading thread stopped early"));
        }
        Ok((chunk, Some(done)))
    })?;
    drop(found);
    match done {
        None => privacy::open(conn, keys, rows::checked(conn, tail)?),
        Some(done) => finish(conn, keys, done, tail),
    }
}

/// Starts the second thread: it checks and opens each chunk it is handed.
fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    mark: Option<(&'scope Keys, i64)>,
) -> Worker<'scope> {
    let (tx, rx) = sync_channel::<Vec<RecordedEvent>>(2);
    let handle = scope.spawn(move || {
        let mut done = Vec::new();
        for mut events in rx {
            let unchecked = chain::check_linked(&events)?;
            let opened = match mark {
                Some((keys, counter)) => annal_core::privacy::open_kept(&mut events, keys, counter),
                None => events.iter().all(|e| e.sealed.is_none()),
            };
            done.push(Done {
                events,
                unchecked,
                opened,
            });
        }
        Ok(done)
    });
    (tx, handle)
}

/// The page from the second thread's chunks and the rows read after its last one:
/// the events it left unchecked are checked, then the parts it left closed are opened.
fn finish(
    conn: &Connection,
    keys: Option<&Keys>,
    done: Vec<Done>,
    tail: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(done.len() * CHUNK + tail.len());
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
    let base = events.len();
    unchecked.extend(base..base + tail.len());
    closed.push(base..base + tail.len());
    events.extend(tail);
    rows::check_at(conn, &events, &unchecked)?;
    for range in closed.into_iter().filter(|r| !r.is_empty()) {
        if let Some(part) = events.get_mut(range) {
            privacy::open_in(conn, keys, part)?;
        }
    }
    Ok(events)
}
