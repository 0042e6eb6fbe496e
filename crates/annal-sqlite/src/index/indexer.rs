//! The indexer: fills the index file from the durable log, a batch per transaction:
//! the filter indexes from their columns, `by_subject` from each event's sealed part
//! (only its subjects are read, [`annal_core::privacy::packed::subjects`]).
//!
//! Invariants:
//! - it reads the log in one read transaction per batch, through the durability cap
//!   taken after that transaction's snapshot began, so it indexes only durable events;
//! - each batch is one IMMEDIATE transaction on the index file that first reads the
//!   prefix again and writes only if it is still where the batch starts (another
//!   process's indexer may have moved it): the prefix never skips or repeats a position;
//! - it is woken by every synced group of this store ([`Nudge`]) and polls for other
//!   processes' commits; a failed batch is logged and tried again later, while reads stay
//!   right by testing the events past the prefix themselves;
//! - **the writer does not run away from it**: while the indexer is working (its last
//!   batch succeeded), the writer waits before a group when the log is more than
//!   [`MOST_LAG`] events past the prefix, for at most [`MOST_HOLD`] per group
//!   ([`Nudge::hold_back`]). So the events a filtered read tests one by one stay bounded
//!   under a write load the indexer cannot follow, instead of growing without end; an
//!   indexer that fails holds nobody back (reads stay right, only slower);
//! - when the store closes it indexes what is durable and checkpoints its WAL, so the
//!   index file at rest is whole and current.

use crate::durable::Durability;
use crate::index::{BY_SUBJECT, INDEXED, UNREADABLE};
use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most events one batch indexes.
const BATCH: usize = 20_000;
/// How often the indexer looks for commits it was not told about (another process's).
const POLL: Duration = Duration::from_millis(50);
/// How long the indexer lets commits gather after it was woken, at least, so that one
/// batch takes many commits (each batch is a transaction on both files: indexing every
/// one-event commit on its own cost more than the B-tree inserts it moved off the
/// writer) ...
const GATHER: Duration = Duration::from_millis(20);
/// ... and then on, a [`GATHER`] at a time, until this many events wait to be indexed
/// or [`GATHER_MOST`] passed: every batch rewrites the index pages its entries land on,
/// and random keys (ids, subjects) land on a page each, so small batches under a heavy
/// load wrote the same pages over and over (issue 18's W3: 1,030 MB written for the
/// subject index at 20 ms batches, 406 MB at 100 ms).
const GATHER_EVENTS: u64 = 5_000;
/// The longest the indexer lets commits gather.
const GATHER_MOST: Duration = Duration::from_millis(200);
/// Longest wait after failed batches before the next try.
const MOST_BACKOFF: Duration = Duration::from_secs(30);
/// How far past the index's prefix the log may run before the writer waits for it:
/// a filtered read tests at most about this many events (plus one group) one by one.
pub const MOST_LAG: u64 = 50_000;
/// Longest the writer waits for the indexer before one group: a batch that takes longer
/// (a lock held on the index file by another process) slows appends, never stops them.
const MOST_HOLD: Duration = Duration::from_secs(1);

/// Wakes the indexer (a group was synced, or the store is closing), and holds the
/// writer back while the indexer is too far behind.
pub struct Nudge {
    /// (nudged since the indexer last looked, closing)
    state: Mutex<(bool, bool)>,
    woken: Condvar,
    /// The index file's prefix as the indexer last left it.
    indexed: AtomicU64,
    /// Whether an indexer runs and its last batch succeeded: only then is the writer
    /// held back.
    working: AtomicBool,
    /// Signalled each time the indexer moves the prefix (with `state`'s lock).
    moved: Condvar,
    /// The lag that holds the writer back ([`MOST_LAG`]; smaller in tests).
    most_lag: AtomicU64,
    /// The longest hold, in milliseconds ([`MOST_HOLD`]; longer in tests).
    most_hold_ms: AtomicU64,
}

impl Default for Nudge {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            woken: Condvar::new(),
            indexed: AtomicU64::new(0),
            working: AtomicBool::new(false),
            moved: Condvar::new(),
            most_lag: AtomicU64::new(MOST_LAG),
            most_hold_ms: AtomicU64::new(
                MOST_HOLD.as_secs() * 1_000 + u64::from(MOST_HOLD.subsec_millis()),
            ),
        }
    }
}

impl Nudge {
    /// The last position the index file covers, as this store's indexer last saw it.
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::Relaxed)
    }

    /// Records the prefix the indexer reached and wakes a writer held back for it.
    fn reached(&self, position: i64) {
        self.indexed
            .store(u64::try_from(position).unwrap_or(0), Ordering::Relaxed);
        self.working.store(true, Ordering::Relaxed);
        // Taking the lock orders this with a writer between its check and its wait.
        if let Ok(_s) = self.state.lock() {
            self.moved.notify_all();
        }
    }

    /// Records that a batch failed: nobody is held back until one succeeds.
    fn failed(&self) {
        self.working.store(false, Ordering::Relaxed);
        if let Ok(_s) = self.state.lock() {
            self.moved.notify_all();
        }
    }

    /// Called by the writer before a group, with the log's last position: while the
    /// indexer works and the log is more than [`MOST_LAG`] events past its prefix, waits
    /// for it to move, at most [`MOST_HOLD`]. Answers how long it waited.
    pub fn hold_back(&self, head: u64) -> Duration {
        let most = self.most_lag.load(Ordering::Relaxed);
        let behind = |s: &(bool, bool)| {
            !s.1 && self.working.load(Ordering::Relaxed)
                && head.saturating_sub(self.indexed()) > most
        };
        let Ok(guard) = self.state.lock() else {
            return Duration::ZERO;
        };
        if !behind(&guard) {
            return Duration::ZERO;
        }
        let hold = Duration::from_millis(self.most_hold_ms.load(Ordering::Relaxed));
        let start = std::time::Instant::now();
        drop(self.moved.wait_timeout_while(guard, hold, |s| behind(s)));
        start.elapsed()
    }

    /// Sets the lag that holds the writer back (tests use a small one).
    #[cfg(test)]
    pub(crate) fn set_most_lag(&self, most: u64) {
        self.most_lag.store(most, Ordering::Relaxed);
    }

    /// Sets the longest hold (a test that must tell a wake-up from a hold waited out
    /// uses a long one).
    #[cfg(test)]
    pub(crate) fn set_most_hold(&self, most: Duration) {
        self.most_hold_ms.store(
            u64::try_from(most.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Tells the indexer that there may be more to index. Only the first nudge since
    /// the indexer last looked wakes it: the later ones (every sync while it lets
    /// commits gather) would only wake it to sleep again.
    pub fn nudge(&self) {
        if let Ok(mut s) = self.state.lock()
            && !s.0
        {
            s.0 = true;
            self.woken.notify_one();
        }
    }

    fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = true;
            self.woken.notify_one();
        }
    }

    /// Waits until nudged, closing, or `timeout`, then lets commits gather (unless
    /// closing) for [`GATHER`], and on until `waiting()` (the events not indexed yet)
    /// reaches [`GATHER_EVENTS`] or [`GATHER_MOST`] passed; false once closing.
    fn wait(&self, timeout: Duration, waiting: impl Fn() -> u64) -> bool {
        let Ok(guard) = self.state.lock() else {
            return false;
        };
        let Ok((mut guard, _)) = self
            .woken
            .wait_timeout_while(guard, timeout, |s| !s.0 && !s.1)
        else {
            return false;
        };
        let gathering = std::time::Instant::now();
        loop {
            let Ok((s, _)) = self.woken.wait_timeout_while(guard, GATHER, |s| !s.1) else {
                return false;
            };
            guard = s;
            if guard.1 || waiting() >= GATHER_EVENTS || gathering.elapsed() >= GATHER_MOST {
                break;
            }
        }
        guard.0 = false;
        !guard.1
    }
}

/// The indexer's thread; stopped (after a last catch-up) when dropped.
pub struct Indexer {
    nudge: Arc<Nudge>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    /// Starts indexing the store file at `store` into the index file `idx` is open on,
    /// woken by `durability`'s syncs and reading through its cap.
    pub fn start(
        store: &Path,
        idx: Connection,
        durability: Arc<Durability>,
    ) -> std::io::Result<Self> {
        let main = crate::open::open_connection(store, true).map_err(std::io::Error::other)?;
        let nudge = durability.nudge();
        let thread = std::thread::Builder::new()
            .name("annal-sqlite-index".into())
            .spawn({
                let nudge = nudge.clone();
                move || run(idx, &main, &durability, &nudge)
            })?;
        Ok(Self {
            nudge,
            thread: Some(thread),
        })
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.nudge.close();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the indexer thread panicked");
        }
    }
}

fn run(mut idx: Connection, main: &Connection, durability: &Durability, nudge: &Nudge) {
    if let Ok(p) = idx.query_row("SELECT position FROM indexed", [], |r| r.get::<_, i64>(0)) {
        nudge.reached(p);
    }
    let mut wait = POLL;
    loop {
        let open = nudge.wait(wait, || {
            durability.durable_head().saturating_sub(nudge.indexed())
        });
        match catch_up(
            &mut idx,
            main,
            || durability.visible_cap(),
            |p| nudge.reached(p),
        ) {
            Ok(p) => {
                nudge.reached(p);
                wait = POLL;
            }
            Err(e) => {
                nudge.failed();
                tracing::error!(error = %e, "indexing failed; filtered reads test the \
                    events past the index instead until it succeeds");
                wait = (wait * 2).min(MOST_BACKOFF);
            }
        }
        if !open {
            break;
        }
    }
    if let Err(e) = idx.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "closing: the index file's WAL could not be checkpointed");
    }
}

/// One event's position, hash, indexed keys (in [`INDEXED`]'s order; NULL: none) and
/// `by_subject` keys.
struct Entry {
    position: i64,
    hash: Value,
    keys: [Value; INDEXED.len()],
    subjects: Vec<Value>,
}

/// The `by_subject` keys of an event with this stored sealed part: the subjects it
/// names, or [`UNREADABLE`] when it cannot be read (told to `unreadable` with why).
pub(crate) fn subject_keys(
    sealed: rusqlite::types::ValueRef<'_>,
    unreadable: impl FnOnce(&str),
) -> Vec<Value> {
    match crate::privacy::stored_subjects(sealed) {
        Ok(subjects) => subjects.into_iter().map(Value::Text).collect(),
        Err(e) => {
            unreadable(&e);
            vec![Value::Blob(UNREADABLE.to_vec())]
        }
    }
}

/// [`subject_keys`] for the indexer: an unreadable sealed part is logged (a deep verify
/// and the event's own reads report it).
fn logged_subject_keys(position: i64, sealed: rusqlite::types::ValueRef<'_>) -> Vec<Value> {
    subject_keys(sealed, |e| {
        tracing::error!(position, error = %e, "indexing: an event's sealed personal part \
            cannot be read; it is indexed as unreadable");
    })
}

/// Indexes every event of `main`'s log past the index file's prefix, at most up to what
/// `cap` allows (taken after each batch's read snapshot began; `None`: all), in batches,
/// telling `moved` each prefix a batch commits. Returns the prefix reached.
pub fn catch_up(
    idx: &mut Connection,
    main: &Connection,
    cap: impl Fn() -> Option<u64>,
    mut moved: impl FnMut(i64),
) -> rusqlite::Result<i64> {
    loop {
        let from: i64 = idx.query_row("SELECT position FROM indexed", [], |r| r.get(0))?;
        let batch = read_batch(main, from, &cap)?;
        let Some(last) = batch.last() else {
            return Ok(from);
        };
        let (last_position, last_hash) = (last.position, last.hash.clone());
        let full = batch.len() == BATCH;
        let tx = idx.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now: i64 = tx.query_row("SELECT position FROM indexed", [], |r| r.get(0))?;
        if now != from {
            // Another indexer moved the prefix since: read again from where it is.
            continue;
        }
        write_batch(&tx, batch)?;
        tx.execute(
            "UPDATE indexed SET position = ?1, hash = ?2",
            rusqlite::params![last_position, last_hash],
        )?;
        tx.commit()?;
        moved(last_position);
        if !full {
            return Ok(last_position);
        }
    }
}

/// Up to [`BATCH`] events after `from`, read in one snapshot, none above the cap.
fn read_batch(
    main: &Connection,
    from: i64,
    cap: &impl Fn() -> Option<u64>,
) -> rusqlite::Result<Vec<Entry>> {
    main.execute_batch("BEGIN")?;
    let read = (|| -> rusqlite::Result<Vec<Entry>> {
        main.prepare_cached("SELECT 1 FROM events LIMIT 1")?
            .exists([])?;
        let up_to = cap().map_or(i64::MAX, crate::rows::clamp);
        let columns: Vec<&str> = INDEXED.iter().map(|ix| ix.column).collect();
        let sql = format!(
            "SELECT position, hash, {}, sealed FROM events WHERE position > ?1 \
             AND position <= ?2 ORDER BY position LIMIT ?3",
            columns.join(", ")
        );
        let mut stmt = main.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params![from, up_to, BATCH as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut keys: [Value; INDEXED.len()] = std::array::from_fn(|_| Value::Null);
            for (i, key) in keys.iter_mut().enumerate() {
                *key = r.get(i + 2)?;
            }
            let position = r.get(0)?;
            out.push(Entry {
                position,
                hash: r.get(1)?,
                keys,
                subjects: logged_subject_keys(position, r.get_ref(INDEXED.len() + 2)?),
            });
        }
        Ok(out)
    })();
    // A read transaction: ending it loses nothing.
    let ended = main.execute_batch("COMMIT");
    let out = read?;
    ended.map(|()| out)
}

/// Inserts `batch`'s entries, each table's sorted by key (fewer B-tree pages touched).
fn write_batch(tx: &Connection, batch: Vec<Entry>) -> rusqlite::Result<()> {
    for (i, ix) in INDEXED.iter().enumerate() {
        let mut entries: Vec<(&Value, i64)> = batch
            .iter()
            .filter(|e| !matches!(e.keys[i], Value::Null))
            .map(|e| (&e.keys[i], e.position))
            .collect();
        entries.sort_by(|a, b| order(a.0).cmp(&order(b.0)).then(a.1.cmp(&b.1)));
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO {} (key, position) VALUES (?1, ?2)",
            ix.table
        ))?;
        for (key, position) in entries {
            insert.execute(rusqlite::params![key, position])?;
        }
    }
    insert_subjects(
        tx,
        batch
            .iter()
            .flat_map(|e| e.subjects.iter().map(|s| (s, e.position)))
            .collect(),
    )
}

/// Inserts `by_subject` entries, sorted by key.
fn insert_subjects(tx: &Connection, mut entries: Vec<(&Value, i64)>) -> rusqlite::Result<()> {
    entries.sort_by(|a, b| order(a.0).cmp(&order(b.0)).then(a.1.cmp(&b.1)));
    // OR IGNORE: a sealed part naming one subject twice (the writer refuses that; an
    // imported or hand-made one might) still makes one entry.
    let mut insert = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {BY_SUBJECT} (key, position) VALUES (?1, ?2)"
    ))?;
    for (key, position) in entries {
        insert.execute(rusqlite::params![key, position])?;
    }
    Ok(())
}

/// Fills `by_subject` for the events of `main`'s log up to `prefix` (an index file of
/// layout 1, whose other tables already cover them), a chunk of positions at a time;
/// answers how many events with a sealed part it read.
pub(crate) fn subjects_up_to(
    tx: &Connection,
    main: &Connection,
    prefix: i64,
) -> rusqlite::Result<u64> {
    const CHUNK: i64 = 100_000;
    let mut stmt = main.prepare(
        "SELECT position, sealed FROM events
         WHERE position > ?1 AND position <= ?2 AND sealed IS NOT NULL",
    )?;
    let mut read = 0;
    let mut from = 0;
    while from < prefix {
        let to = prefix.min(from.saturating_add(CHUNK));
        let mut keys: Vec<(Vec<Value>, i64)> = Vec::new();
        let mut rows = stmt.query(rusqlite::params![from, to])?;
        while let Some(r) = rows.next()? {
            let position: i64 = r.get(0)?;
            keys.push((logged_subject_keys(position, r.get_ref(1)?), position));
        }
        read += keys.len() as u64;
        insert_subjects(
            tx,
            keys.iter()
                .flat_map(|(subjects, p)| subjects.iter().map(|s| (s, *p)))
                .collect(),
        )?;
        from = to;
    }
    Ok(read)
}

/// A key's place in SQLite's order (numbers, then text by bytes, then blobs by bytes).
fn order(v: &Value) -> (u8, &[u8]) {
    match v {
        Value::Null => (0, &[]),
        Value::Integer(_) | Value::Real(_) => (1, &[]),
        Value::Text(t) => (2, t.as_bytes()),
        Value::Blob(b) => (3, b),
    }
}
