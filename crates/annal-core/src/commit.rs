//! The checking half of a group commit, written once for every backend.
//!
//! A backend's writer takes a group of queued [`Job`]s, opens its write transaction,
//! reads the log's tip under the write lock and gives each job to a [`Group`]. The group
//! checks the job against the stored state, read through the backend's [`Lookup`], and
//! against what earlier jobs of the same group wrote. It then either refuses the job or
//! adds the job's events, stream records, checkpoint and snapshot to its buffers. The
//! backend writes the buffers ([`Group::finish`]) and commits once.
//!
//! Invariants:
//! - a job is checked completely before anything of it is buffered: a refused job
//!   leaves no trace, and the group's other jobs go on;
//! - positions continue the tip without a gap, each hash chains to the one before, and
//!   every event of the group carries one clock reading, never earlier than the tip's;
//! - every append honours the stream rules of [`crate::streams`]: a tombstoned stream
//!   takes nothing (its metadata stream still does, as in KurrentDB), `exists` fails on
//!   a soft-deleted stream, a soft-deleted stream accepts `no_stream` or its last
//!   version and, when written again, gets a `$metadata` event whose `$tb` hides the
//!   events from before;
//! - each stream's [`StreamRecord`] changes in the buffers together with its events, so
//!   the backend stores both in one commit;
//! - each event is made once: the backend stores it from the buffers and, once the
//!   commit succeeded, moves it into its append's answer ([`answer`]).

use crate::append::{
    AppendResult, ExpectedVersion, ProposedAppend, ProposedEvent, ProposedTransaction,
    TransactionResult, check_replay,
};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::event::{RawJson, RecordedEvent, Timestamp};
use crate::import::{Tip, check_import};
use crate::job::{Job, Outcome, SnapshotJob};
use crate::privacy::{self, DataKey, Envelope, ForgetRequest, Forgotten, Keys, SubjectKey};
use crate::snapshot::Snapshot;
use crate::stream_record::{StreamRecord, metadata_base};
use crate::streams::{self, METADATA_AGGREGATE_TYPE, METADATA_EVENT_TYPE};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

mod key_cache;
pub use key_cache::KeyCache;

/// Why a job failed: on its own (nothing of it is written; the group goes on) or with
/// the whole group (the database failed; nothing of the group is written).
#[derive(Debug)]
pub enum Fail {
    /// The job is refused.
    Job(Error),
    /// The group fails.
    Group(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Job(e)
    }
}

/// What a group reads from the store, inside the write transaction. Backends answer
/// [`Fail::Group`] when the database fails and [`Fail::Job`] when a stored row is
/// unreadable (only the job that needs it fails).
pub trait Lookup {
    /// A stream's record; `None` if the store has none.
    fn stream(&mut self, aggregate_id: &str) -> Result<Option<StreamRecord>, Fail>;
    /// A stored event by id.
    fn event(&mut self, event_id: Uuid) -> Result<Option<RecordedEvent>, Fail>;
    /// A checkpoint's position.
    fn checkpoint(&mut self, name: &str) -> Result<Option<u64>, Fail>;
    /// A lease's owner (`None`: released) and fencing token.
    fn lease(&mut self, group: &str, partition: u32)
    -> Result<Option<(Option<String>, u64)>, Fail>;
    /// A subject's row of the key table. Provided: a store without a key table, which
    /// refuses personal data.
    fn subject_key(&mut self, subject: &str) -> Result<Option<SubjectKey>, Fail> {
        let _ = subject;
        Err(Fail::Job(Error::Unsupported {
            what: "store personal data".into(),
        }))
    }
    /// The key-table rows of several subjects (those that have one): what a group reads
    /// once for all the subjects of a transaction. Provided: [`Lookup::subject_key`]
    /// for each.
    fn subject_keys(&mut self, subjects: &[String]) -> Result<Vec<SubjectKey>, Fail> {
        let mut rows = Vec::with_capacity(subjects.len());
        for s in subjects {
            rows.extend(self.subject_key(s)?);
        }
        Ok(rows)
    }

    /// The id of the key-encryption key that wraps the key table's rows, as any one
    /// row names it (a rotation rewraps every row in one transaction, so they all name
    /// the same); `None` for an empty table. Provided: a store without a key table,
    /// which refuses personal data.
    fn kek_in_use(&mut self) -> Result<Option<String>, Fail> {
        Err(Fail::Job(Error::Unsupported {
            what: "store personal data".into(),
        }))
    }
}

/// The streams whose records a job may read: each stream it writes and that stream's
/// metadata stream (or, for a metadata stream, its base). A backend that reads ahead
/// reads these.
pub fn streams_touched(job: &Job) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |id: &str| {
        out.push(id.to_owned());
        match metadata_base(id) {
            Some(base) => out.push(base.to_owned()),
            None => out.push(streams::metadata_stream(id)),
        }
    };
    match job {
        Job::Transact(t, _) => t.appends.iter().for_each(|a| add(&a.aggregate_id)),
        Job::Snapshot(s, _) => add(&s.aggregate_id),
        Job::Import(events, _) => events.iter().for_each(|e| add(&e.aggregate_id)),
        Job::Forget(..) => add(privacy::SUBJECTS_STREAM),
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What a group writes: the backend stores all of it in one commit.
#[derive(Debug, Default)]
pub struct Writes {
    /// New events, in position order.
    pub events: Vec<RecordedEvent>,
    /// Stream records to store (insert or replace), by stream.
    pub streams: Vec<(String, StreamRecord)>,
    /// Checkpoints to store (insert or replace).
    pub checkpoints: Vec<Checkpoint>,
    /// Snapshots to store (insert or replace).
    pub snapshots: Vec<Snapshot>,
    /// Rows of the key table to store (insert or replace, by subject): new data keys,
    /// and the rows of subjects forgotten, whose wrapped key is gone.
    pub keys: Vec<SubjectKey>,
    /// The packed form of every sealed part this group sealed that has one, by the
    /// position of its event, in position order ([`privacy::SealedPart`]): a backend
    /// that stores sealed parts as bytes stores these rather than packing the text
    /// again. Events without an entry here (imported ones, parts without a packed form)
    /// have only their text.
    pub packed: Vec<(u64, Vec<u8>)>,
    /// Subjects forgotten by this group: the backend deletes the snapshots of every
    /// aggregate with an event about them.
    pub forgotten: Vec<String>,
}

/// Moves a committed group's events ([`Writes::events`]) into the answers of the
/// appends that wrote them: a written append's [`AppendResult`] leaves [`Group::apply`]
/// with its positions and no events, so that each event is made once, stored from the
/// buffer and then handed to its writer, never copied. A backend calls this once the
/// group's commit succeeded. Answers that already hold events (retries answered from
/// the log) and events no answer asked for (a revived stream's `$metadata`,
/// forgettings, imports) are left as they are.
pub fn answer(outcomes: &mut [crate::error::Result<Outcome>], events: Vec<RecordedEvent>) {
    let mut events = events.into_iter().peekable();
    let written = outcomes
        .iter_mut()
        .filter_map(|o| match o {
            Ok(Outcome::Transact(t)) => Some(t),
            _ => None,
        })
        .flat_map(|t| t.results.iter_mut())
        .filter(|r| r.events.is_empty());
    // By position, not by count: an answer of no events (an append of none, possible
    // only through `Store::commit`, answers positions 0 to 0) takes nothing.
    for r in written {
        while events.next_if(|e| e.position < r.first_position).is_some() {}
        while let Some(e) = events.next_if(|e| e.position <= r.last_position) {
            r.events.push(e);
        }
    }
}

/// One group commit's checks and buffers.
pub struct Group {
    tip: Tip,
    now: Timestamp,
    /// Stream records read or written so far (`None`: the store has none).
    streams: HashMap<String, Option<StreamRecord>>,
    /// Streams whose records this group changed.
    changed: BTreeSet<String>,
    /// This group's events by id (an index into `events`).
    written: HashMap<Uuid, usize>,
    /// Checkpoint positions read or written so far.
    checkpoints: HashMap<String, Option<u64>>,
    events: Vec<RecordedEvent>,
    /// The packed sealed parts of `events`, by position.
    packed: Vec<(u64, Vec<u8>)>,
    checkpoint_writes: HashMap<String, Checkpoint>,
    snapshot_writes: HashMap<(String, String, u64), Snapshot>,
    /// Key-table rows read or written so far and data keys unwrapped so far, by
    /// subject (by earlier groups too, when the backend hands them on).
    keys: KeyCache,
    /// Subjects whose rows this group changed.
    changed_keys: BTreeSet<String>,
    /// Whether the key table was seen wrapped by this process's key-encryption key
    /// ([`Group::check_kek`]).
    kek_checked: bool,
    forgotten: Vec<String>,
}

/// A transaction's writes before they join the group (dropped if it is refused).
struct Staged {
    tip: Tip,
    events: Vec<RecordedEvent>,
    /// The packed sealed parts of `events`, by position.
    packed: Vec<(u64, Vec<u8>)>,
    streams: HashMap<String, StreamRecord>,
    /// Data keys made for this transaction's subjects.
    keys: HashMap<String, (SubjectKey, DataKey)>,
}

impl Staged {
    fn at(tip: Tip) -> Self {
        Self {
            tip,
            events: Vec::new(),
            packed: Vec::new(),
            streams: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

/// What a checked append does.
enum Plan {
    /// A retry of an append already stored: answer this, write nothing.
    Replay(AppendResult),
    /// Write the events; `revive` is the `$metadata` event that un-hides a
    /// soft-deleted stream's new events.
    Write {
        aggregate_type: String,
        version: u64,
        revive: Option<RawJson>,
    },
}

impl Group {
    /// A group continuing the log at `tip`; its events are recorded now (or at the
    /// tip's time, if the clock went back).
    pub fn new(tip: Tip) -> Self {
        Self::with_cache(tip, KeyCache::default())
    }

    /// A group continuing the log at `tip` that starts from the key-table rows and data
    /// keys of the groups before it ([`KeyCache`]: the backend vouches that nobody else
    /// changed the key table since they committed).
    pub fn with_cache(tip: Tip, keys: KeyCache) -> Self {
        Self {
            now: Timestamp::now().max(tip.recorded_at),
            tip,
            streams: HashMap::new(),
            changed: BTreeSet::new(),
            written: HashMap::new(),
            checkpoints: HashMap::new(),
            events: Vec::new(),
            packed: Vec::new(),
            checkpoint_writes: HashMap::new(),
            snapshot_writes: HashMap::new(),
            keys,
            changed_keys: BTreeSet::new(),
            kek_checked: false,
            forgotten: Vec::new(),
        }
    }

    /// The tip after the jobs applied so far.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Checks a job and buffers its writes, or refuses it. A written append's answer
    /// holds its positions and no events until the backend, once the group committed,
    /// hands it the group's events ([`answer`]).
    pub fn apply(&mut self, lookup: &mut impl Lookup, job: &Job) -> Result<Outcome, Fail> {
        match job {
            Job::Transact(t, _) => self.transact(lookup, t).map(Outcome::Transact),
            Job::Snapshot(s, _) => self.snapshot(lookup, s).map(Outcome::Snapshot),
            Job::Import(events, _) => self.import(lookup, events).map(Outcome::Import),
            Job::Forget(f, _) => self.forget(lookup, f).map(Outcome::Forget),
        }
    }

    /// The group's writes.
    pub fn finish(self) -> Writes {
        self.finish_with_cache().0
    }

    /// The group's writes, and the key-table rows and data keys it read or wrote: what
    /// the next group may start from once these writes are committed
    /// ([`Group::with_cache`]).
    pub fn finish_with_cache(mut self) -> (Writes, KeyCache) {
        let streams = self
            .changed
            .iter()
            .filter_map(|id| {
                let rec = self.streams.remove(id).flatten()?;
                Some((id.clone(), rec))
            })
            .collect();
        let mut checkpoints: Vec<Checkpoint> = self.checkpoint_writes.into_values().collect();
        checkpoints.sort_by(|a, b| a.name.cmp(&b.name));
        let mut snapshots: Vec<Snapshot> = self.snapshot_writes.into_values().collect();
        snapshots.sort_by(|a, b| {
            (&a.aggregate_id, &a.tag, a.aggregate_version).cmp(&(
                &b.aggregate_id,
                &b.tag,
                b.aggregate_version,
            ))
        });
        let keys = self
            .changed_keys
            .iter()
            .filter_map(|s| self.keys.rows.get(s).cloned().flatten())
            .collect();
        let writes = Writes {
            events: self.events,
            streams,
            checkpoints,
            snapshots,
            keys,
            packed: self.packed,
            forgotten: self.forgotten,
        };
        (writes, self.keys)
    }

    /// A stream's record as this group sees it.
    fn stream(&mut self, lookup: &mut impl Lookup, id: &str) -> Result<Option<StreamRecord>, Fail> {
        if let Some(rec) = self.streams.get(id) {
            return Ok(rec.clone());
        }
        let rec = lookup.stream(id)?;
        self.streams.insert(id.to_owned(), rec.clone());
        Ok(rec)
    }

    /// A stored event by id, this group's own included.
    fn event(&mut self, lookup: &mut impl Lookup, id: Uuid) -> Result<Option<RecordedEvent>, Fail> {
        match self.written.get(&id) {
            Some(&i) => Ok(self.events.get(i).cloned()),
            None => lookup.event(id),
        }
    }

    fn staged_stream(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &Staged,
        id: &str,
    ) -> Result<StreamRecord, Fail> {
        match staged.streams.get(id) {
            Some(rec) => Ok(rec.clone()),
            None => Ok(self.stream(lookup, id)?.unwrap_or_default()),
        }
    }

    /// Records an event in `staged` and updates the records it changes.
    fn stage_event(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &mut Staged,
        event: RecordedEvent,
    ) -> Result<(), Fail> {
        let mut rec = self.staged_stream(lookup, staged, &event.aggregate_id)?;
        rec.note_event(&event);
        staged.streams.insert(event.aggregate_id.clone(), rec);
        if let Some(base) = metadata_base(&event.aggregate_id) {
            let mut rec = self.staged_stream(lookup, staged, base)?;
            rec.note_metadata_event(&event);
            staged.streams.insert(base.to_owned(), rec);
        }
        staged.tip = Tip {
            position: event.position,
            hash: event.hash,
            recorded_at: event.recorded_at,
        };
        staged.events.push(event);
        Ok(())
    }

    /// Joins a checked job's writes to the group.
    fn join(&mut self, staged: Staged) {
        self.tip = staged.tip;
        for (id, rec) in staged.streams {
            self.changed.insert(id.clone());
            self.streams.insert(id, Some(rec));
        }
        for e in staged.events {
            self.written.insert(e.event_id, self.events.len());
            self.events.push(e);
        }
        self.packed.extend(staged.packed);
        for (subject, (row, key)) in staged.keys {
            self.changed_keys.insert(subject.clone());
            self.keys.rows.insert(subject.clone(), Some(row));
            self.keys.data_keys.insert(subject, key);
        }
    }

    /// A subject's key-table row as this group sees it.
    fn key_row(
        &mut self,
        lookup: &mut impl Lookup,
        subject: &str,
    ) -> Result<Option<SubjectKey>, Fail> {
        if let Some(row) = self.keys.rows.get(subject) {
            return Ok(row.clone());
        }
        let row = lookup.subject_key(subject)?;
        self.keys.rows.insert(subject.to_owned(), row.clone());
        Ok(row)
    }

    /// The data key an event about `subject` is sealed with: the subject's, made now
    /// (wrapped by the store's current KEK, read here, inside the commit) if it has
    /// none; a forgotten subject takes no more personal data.
    fn data_key(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &mut Staged,
        keys: &Keys,
        subject: &str,
    ) -> Result<DataKey, Fail> {
        if let Some((_, key)) = staged.keys.get(subject) {
            return Ok(key.clone());
        }
        if let Some(key) = self.keys.data_keys.get(subject) {
            return Ok(key.clone());
        }
        match self.key_row(lookup, subject)? {
            // The row as the key table holds it now (read in this commit, or kept from an
            // earlier group the backend vouches for): a cached key is used only while it
            // holds it.
            Some(row) => match keys.data_key(&row)? {
                Some(key) => {
                    self.keys.data_keys.insert(subject.to_owned(), key.clone());
                    Ok(key)
                }
                None => Err(Error::SubjectForgotten {
                    subject: subject.to_owned(),
                }
                .into()),
            },
            None => {
                let current = keys.current();
                self.check_kek(lookup, current.id())?;
                let (key, row) = current.new_key(subject, self.now)?;
                // Served later only against this very row, so harmless if the commit fails.
                keys.remember(&row, &key);
                staged.keys.insert(subject.to_owned(), (row, key.clone()));
                Ok(key)
            }
        }
    }

    /// Refuses to make a data key under `kek` while the key table's rows are wrapped by
    /// another key-encryption key (another process rotated it since this one opened the
    /// store, or made the first key under its own): a row wrapped by `kek` beside them
    /// would leave a store that opens with neither. Asked once per group (no other
    /// process can rotate while the group's transaction holds the write lock).
    fn check_kek(&mut self, lookup: &mut impl Lookup, kek: &str) -> Result<(), Fail> {
        if self.kek_checked {
            return Ok(());
        }
        match lookup.kek_in_use()? {
            Some(stored) if stored != kek => Err(Fail::Job(privacy::kek_rotated(&stored, kek))),
            _ => {
                self.kek_checked = true;
                Ok(())
            }
        }
    }

    /// Records a proposed event at the staged tip, sealing its personal part.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &mut Staged,
        e: &ProposedEvent,
        aggregate_type: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<RecordedEvent, Fail> {
        let sealed = match &e.personal {
            None => None,
            Some(p) => {
                // Stores attach their KEK before queueing (`privacy::attach`), refusing
                // personal data when they have none; this is a store that did not.
                let store_keys = p.keys.as_deref().ok_or_else(|| {
                    Fail::Job(Error::Unsupported {
                        what: "store personal data without a key-encryption key".into(),
                    })
                })?;
                let mut keys = Vec::with_capacity(p.subjects.len());
                for subject in &p.subjects {
                    let key = self.data_key(lookup, staged, store_keys, subject)?;
                    keys.push((subject.as_str(), key));
                }
                let part = privacy::seal_part(e.event_id, &p.plain, &keys)?;
                if let Some(bytes) = part.packed {
                    staged.packed.push((staged.tip.position + 1, bytes));
                }
                Some(part.text)
            }
        };
        let prev = staged.tip.hash;
        Ok(e.record_sealed(
            staged.tip.position + 1,
            aggregate_type,
            aggregate_id,
            version,
            self.now,
            &prev,
            sealed,
        ))
    }

    /// Opens a stored event's personal part for a replay check, with the key of the
    /// proposed event that claims its id.
    fn open_stored(
        &mut self,
        lookup: &mut impl Lookup,
        keys: &Keys,
        stored: &mut RecordedEvent,
    ) -> Result<(), Fail> {
        let Some(sealed) = &stored.sealed else {
            return Ok(());
        };
        let env = Envelope::parse(sealed, stored.position)?;
        let mut rows = Vec::new();
        for subject in &env.subjects {
            if let Some(row) = self.key_row(lookup, subject)? {
                rows.push(row);
            }
        }
        privacy::open_events(std::slice::from_mut(stored), Some(keys), |_| Ok(rows))?;
        Ok(())
    }

    /// Forgets a subject: records the `$subjectForgotten` event and destroys its key.
    fn forget(&mut self, lookup: &mut impl Lookup, f: &ForgetRequest) -> Result<Forgotten, Fail> {
        f.check()?;
        let Some(row) = self.key_row(lookup, &f.subject)? else {
            return Err(Error::NotFound {
                what: format!(
                    "subject '{}' (no personal data was ever stored for it)",
                    f.subject
                ),
            }
            .into());
        };
        if row.wrapped.is_none() {
            return Ok(Forgotten {
                subject: row.subject,
                key_id: row.key_id,
                forgotten_at: row.forgotten_at.unwrap_or(row.created_at),
                position: row.forgotten_position.unwrap_or(0),
                already: true,
            });
        }
        let data = serde_json::json!({
            "subject": f.subject,
            "key_id": row.key_id,
            "reason": f.reason,
        });
        let mut append = crate::append::AppendRequest::new(
            privacy::SUBJECTS_STREAM,
            privacy::SUBJECTS_STREAM,
            ExpectedVersion::Any,
        )
        .event(crate::append::NewEvent::new(
            privacy::FORGOTTEN_EVENT_TYPE,
            &data,
        )?);
        append.user_id.clone_from(&f.user_id);
        append.principal.clone_from(&f.principal);
        let proposed = append.prepare(&crate::append::Limits::default())?;
        let out = self.transact(lookup, &proposed.into())?;
        let position = out.results.first().map_or(0, |r| r.first_position);
        let forgotten = SubjectKey {
            wrapped: None,
            forgotten_at: Some(self.now),
            forgotten_position: Some(position),
            ..row
        };
        self.keys.data_keys.remove(&f.subject);
        self.changed_keys.insert(f.subject.clone());
        self.keys
            .rows
            .insert(f.subject.clone(), Some(forgotten.clone()));
        self.forgotten.push(f.subject.clone());
        Ok(Forgotten {
            subject: forgotten.subject,
            key_id: forgotten.key_id,
            forgotten_at: self.now,
            position,
            already: false,
        })
    }

    /// Reads the key-table rows of the subjects of `t`'s personal parts this group has
    /// not read yet, at once.
    fn read_keys(&mut self, lookup: &mut impl Lookup, t: &ProposedTransaction) -> Result<(), Fail> {
        let mut wanted: Vec<String> = t
            .appends
            .iter()
            .flat_map(|a| &a.events)
            .filter_map(|e| e.personal.as_ref())
            .flat_map(|p| &p.subjects)
            .filter(|s| !self.keys.rows.contains_key(s.as_str()))
            .cloned()
            .collect();
        if wanted.len() < 2 {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut rows: HashMap<String, SubjectKey> = lookup
            .subject_keys(&wanted)?
            .into_iter()
            .map(|r| (r.subject.clone(), r))
            .collect();
        for s in wanted {
            let row = rows.remove(&s);
            self.keys.rows.insert(s, row);
        }
        Ok(())
    }

    fn transact(
        &mut self,
        lookup: &mut impl Lookup,
        t: &ProposedTransaction,
    ) -> Result<TransactionResult, Fail> {
        self.read_keys(lookup, t)?;
        let mut staged = Staged::at(self.tip);
        // Each append is checked against the ones before it in the transaction, and
        // staged; nothing joins the group until every check passed.
        let mut results = Vec::with_capacity(t.appends.len());
        for a in &t.appends {
            let result = match self.plan(lookup, &staged, a)? {
                Plan::Replay(r) => r,
                Plan::Write {
                    aggregate_type,
                    version,
                    revive,
                } => {
                    let first_position = staged.tip.position + 1;
                    for (i, e) in a.events.iter().enumerate() {
                        let recorded = self.record(
                            lookup,
                            &mut staged,
                            e,
                            &aggregate_type,
                            &a.aggregate_id,
                            version + 1 + i as u64,
                        )?;
                        self.stage_event(lookup, &mut staged, recorded)?;
                    }
                    let written = if a.events.is_empty() {
                        AppendResult::from_events(Vec::new())
                    } else {
                        AppendResult {
                            aggregate_version: version + a.events.len() as u64,
                            first_position,
                            last_position: staged.tip.position,
                            // Filled with the events once they are committed ([`answer`]).
                            events: Vec::new(),
                        }
                    };
                    if let Some(meta) = revive {
                        self.stage_revival(lookup, &mut staged, a, meta)?;
                    }
                    written
                }
            };
            results.push(result);
        }
        let checkpoint = match &t.checkpoint {
            None => None,
            Some(c) => {
                let actual = match self.checkpoints.get(&c.name) {
                    Some(p) => *p,
                    None => lookup.checkpoint(&c.name)?,
                };
                c.check_expected(actual)?;
                if let Some(f) = &c.lease {
                    f.check(
                        lookup
                            .lease(&f.group, f.partition)?
                            .as_ref()
                            .map(|(o, t)| (o.as_deref(), *t)),
                    )?;
                }
                c.check_position(staged.tip.position)?;
                Some(c.stored(self.now))
            }
        };
        self.join(staged);
        if let Some(stored) = &checkpoint {
            self.checkpoints
                .insert(stored.name.clone(), Some(stored.position));
            self.checkpoint_writes
                .insert(stored.name.clone(), stored.clone());
        }
        Ok(TransactionResult {
            results,
            checkpoint,
        })
    }

    /// The `$metadata` event that keeps a soft-deleted stream's old events hidden once
    /// it is written again.
    fn stage_revival(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &mut Staged,
        a: &ProposedAppend,
        meta: RawJson,
    ) -> Result<(), Fail> {
        let meta_stream = streams::metadata_stream(&a.aggregate_id);
        let base = self.staged_stream(lookup, staged, &a.aggregate_id)?;
        let first = a.events.first();
        let proposed = ProposedEvent {
            event_id: Uuid::now_v7(),
            id_supplied: false,
            event_type: METADATA_EVENT_TYPE.to_owned(),
            event_version: 1,
            user_id: first.map_or_else(|| "system".to_owned(), |e| e.user_id.clone()),
            correlation_id: first.and_then(|e| e.correlation_id.clone()),
            causation_id: None,
            principal: first.and_then(|e| e.principal.clone()),
            data: meta,
            metadata: RawJson::empty_object(),
            personal: None,
        };
        let recorded = proposed.record(
            staged.tip.position + 1,
            METADATA_AGGREGATE_TYPE,
            &meta_stream,
            base.metadata_version + 1,
            self.now,
            &staged.tip.hash,
        );
        self.stage_event(lookup, staged, recorded)
    }

    /// Checks one append against the stream's record (as staged so far).
    fn plan(
        &mut self,
        lookup: &mut impl Lookup,
        staged: &Staged,
        a: &ProposedAppend,
    ) -> Result<Plan, Fail> {
        let id = &a.aggregate_id;
        let rec = self.staged_stream(lookup, staged, id)?;
        // Only the stream's own tombstone counts: the metadata stream of a tombstoned
        // stream still takes appends, as KurrentDB's does (reads of it fail).
        let deleted = || Error::StreamDeleted {
            aggregate_id: id.clone(),
        };
        if rec.tombstoned {
            return Err(deleted().into());
        }
        let soft_deleted = rec.soft_deleted();
        if a.expected == ExpectedVersion::Exists && soft_deleted {
            return Err(deleted().into());
        }
        // An empty type takes the stream's own, or its category for a new stream.
        let aggregate_type = if a.aggregate_type.is_empty() {
            rec.aggregate_type
                .clone()
                .unwrap_or_else(|| streams::category(id).to_owned())
        } else {
            a.aggregate_type.clone()
        };
        if a.events.iter().any(|e| e.id_supplied) {
            let mut stored = Vec::with_capacity(a.events.len());
            for e in &a.events {
                let mut found = if e.id_supplied {
                    self.event(lookup, e.event_id)?
                } else {
                    None
                };
                if let (Some(s), Some(keys)) = (
                    found.as_mut(),
                    e.personal.as_ref().and_then(|p| p.keys.clone()),
                ) {
                    self.open_stored(lookup, &keys, s)?;
                }
                if let (Some(s), Some(p)) = (&found, &e.personal)
                    && s.is_erased()
                {
                    // Its stored part cannot be compared any more: a retry naming a
                    // forgotten subject is refused as any personal data about one is.
                    for subject in &p.subjects {
                        if let Some(row) = self.key_row(lookup, subject)?
                            && row.wrapped.is_none()
                        {
                            return Err(Error::SubjectForgotten {
                                subject: subject.clone(),
                            }
                            .into());
                        }
                    }
                }
                stored.push(found);
            }
            if stored.iter().any(Option::is_some) {
                // A derived type is compared as the writer would have stored it.
                let typed = if a.aggregate_type.is_empty() {
                    Cow::Owned(ProposedAppend {
                        aggregate_type: aggregate_type.clone(),
                        ..a.clone()
                    })
                } else {
                    Cow::Borrowed(a)
                };
                if let Some(replayed) = check_replay(&typed, stored)? {
                    return Ok(Plan::Replay(replayed));
                }
            }
        }
        if let Some(existing) = &rec.aggregate_type
            && *existing != aggregate_type
        {
            return Err(Error::AggregateTypeMismatch {
                aggregate_id: id.clone(),
                existing: existing.clone(),
                requested: aggregate_type,
            }
            .into());
        }
        let allowed = rec.allows(a.expected);
        if !allowed {
            return Err(Error::WrongExpectedVersion {
                aggregate_id: id.clone(),
                expected: a.expected,
                actual: rec.version,
            }
            .into());
        }
        let revive = if soft_deleted {
            Some(streams::with_truncate_before(
                rec.metadata
                    .as_ref()
                    .and_then(|m| m.to_value::<Map<String, Value>>().ok()),
                rec.version,
            )?)
        } else {
            None
        };
        Ok(Plan::Write {
            aggregate_type,
            version: rec.version,
            revive,
        })
    }

    fn snapshot(&mut self, lookup: &mut impl Lookup, s: &SnapshotJob) -> Result<Snapshot, Fail> {
        let rec = self.stream(lookup, &s.aggregate_id)?.unwrap_or_default();
        let (Some(aggregate_type), version @ 1..) = (rec.aggregate_type, rec.version) else {
            return Err(Error::NotFound {
                what: format!("aggregate '{}'", s.aggregate_id),
            }
            .into());
        };
        if s.version == 0 || s.version > version {
            return Err(Error::invalid(
                "version",
                format!(
                    "{} is not a version of aggregate '{}' (its current version is {version})",
                    s.version, s.aggregate_id
                ),
            )
            .into());
        }
        let snapshot = Snapshot {
            aggregate_id: s.aggregate_id.clone(),
            aggregate_type,
            aggregate_version: s.version,
            tag: s.tag.clone(),
            state: s.state.clone(),
            created_at: self.now,
        };
        self.snapshot_writes.insert(
            (s.aggregate_id.clone(), s.tag.clone(), s.version),
            snapshot.clone(),
        );
        Ok(snapshot)
    }

    /// Checks that `events` continue the log exactly ([`check_import`]) and stages them
    /// as they are.
    fn import(&mut self, lookup: &mut impl Lookup, events: &[RecordedEvent]) -> Result<u64, Fail> {
        let mut current: HashMap<&str, Option<(String, u64)>> = HashMap::new();
        let mut stored: BTreeSet<Uuid> = BTreeSet::new();
        for e in events {
            if !current.contains_key(e.aggregate_id.as_str()) {
                let rec = self.stream(lookup, &e.aggregate_id)?.unwrap_or_default();
                let now = rec.aggregate_type.filter(|_| rec.version > 0);
                current.insert(&e.aggregate_id, now.map(|t| (t, rec.version)));
            }
            if self.event(lookup, e.event_id)?.is_some() {
                stored.insert(e.event_id);
            }
        }
        check_import(
            self.tip,
            events,
            |a| current.get(a).cloned().flatten(),
            |id| stored.contains(id),
        )?;
        let mut staged = Staged::at(self.tip);
        for e in events {
            let mut e = e.clone();
            // What a copy stores of a personal part is its sealed form; its subjects
            // are read from it, never taken from the copy's word.
            e.personal = None;
            e.subjects = match &e.sealed {
                Some(sealed) => Envelope::parse(sealed, e.position)?.subjects,
                None => Vec::new(),
            };
            self.stage_event(lookup, &mut staged, e)?;
        }
        self.join(staged);
        Ok(events.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::append::{AppendRequest, Limits, NewEvent, TransactionResult};
    use crate::chain::Hash;

    /// Events of `stream` at `positions`, as a group records them.
    fn recorded(stream: &str, positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        let proposed = AppendRequest::new("Family", stream, ExpectedVersion::Any)
            .event(NewEvent::new("Noted", &serde_json::json!({"n": 1})).expect("event"))
            .prepare(&Limits::default())
            .expect("prepare");
        positions
            .map(|p| {
                proposed.events[0].record(p, "Family", stream, p, Timestamp::now(), &Hash::ZERO)
            })
            .collect()
    }

    fn written(first_position: u64, last_position: u64) -> AppendResult {
        AppendResult {
            aggregate_version: last_position,
            first_position,
            last_position,
            events: Vec::new(),
        }
    }

    fn transact(results: Vec<AppendResult>) -> crate::error::Result<Outcome> {
        Ok(Outcome::Transact(TransactionResult {
            results,
            checkpoint: None,
        }))
    }

    fn positions(outcome: &crate::error::Result<Outcome>) -> Vec<Vec<u64>> {
        match outcome {
            Ok(Outcome::Transact(t)) => t
                .results
                .iter()
                .map(|r| r.events.iter().map(|e| e.position).collect())
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn committed_events_go_to_the_appends_that_wrote_them_and_nowhere_else() {
        // A group at 11 to 18: an append of no events, one of 11-12, a revived
        // stream's `$metadata` at 13 that no append asked for, a refused job, a retry
        // answered from the log (3-4) beside an append of 14-16, then an import of
        // 17-18.
        let replayed = AppendResult::from_events(recorded("b", 3..=4));
        let mut outcomes = vec![
            // An append of no events (only `Store::commit` lets one through).
            transact(vec![AppendResult::from_events(Vec::new())]),
            transact(vec![written(11, 12)]),
            Err(Error::invalid("events", "refused")),
            transact(vec![replayed.clone(), written(14, 16)]),
            Ok(Outcome::Import(2)),
        ];
        let mut log = recorded("a", 11..=12);
        log.extend(recorded("$$a", 13..=13));
        log.extend(recorded("c", 14..=16));
        log.extend(recorded("i", 17..=18));
        answer(&mut outcomes, log.clone());
        assert_eq!(positions(&outcomes[0]), [Vec::<u64>::new()]);
        assert_eq!(positions(&outcomes[1]), [vec![11, 12]]);
        assert_eq!(positions(&outcomes[3]), [vec![3, 4], vec![14, 15, 16]]);
        let Some(Ok(Outcome::Transact(t))) = outcomes.get(3) else {
            panic!("a transaction's outcome");
        };
        assert_eq!(t.results[0], replayed);
        assert_eq!(t.results[1].events[..], log[3..6]);
        assert!(matches!(outcomes[4], Ok(Outcome::Import(2))));
    }
}
