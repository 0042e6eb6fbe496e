//! The backend-agnostic [`Store`] trait: what every annal backend does.
//!
//! Backends implement the required methods; the provided ones (`append`, `verify`) are
//! written once here in terms of them. Every method validates its input and answers a
//! typed [`Error`] that leaves nothing written.

use crate::append::{
    AppendRequest, AppendResult, Limits, ProposedTransaction, Transaction, TransactionResult,
};
use crate::chain::{self, VerifyReport};
use crate::checkpoint::{Checkpoint, CheckpointWrite};
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent};
use crate::lease::Lease;
use crate::privacy::{ForgetRequest, Forgotten, Keyring, SubjectInfo, SubjectKey};
use crate::read::{Direction, EventCounts, Filter};
use crate::snapshot::Snapshot;
use crate::stream_record::StreamRecord;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// An aggregate's type and current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateInfo {
    /// Its type.
    pub aggregate_type: String,
    /// Its last event's version.
    pub version: u64,
}

/// An event store.
#[async_trait]
pub trait Store: Send + Sync {
    /// The limits this store enforces on appends.
    fn limits(&self) -> &Limits;

    /// Commits validated appends and optionally a checkpoint, all or nothing, after
    /// checking expected versions, aggregate types and the checkpoint's expected position.
    /// An append whose event_ids are all stored with the same content is answered from
    /// the store without writing (a safe retry). Callers normally use [`Store::append`] or
    /// [`Store::transact`], which validate first.
    async fn commit(&self, proposed: ProposedTransaction) -> Result<TransactionResult>;

    /// Commits several appends and optionally a checkpoint, all or nothing.
    async fn transact(&self, transaction: Transaction) -> Result<TransactionResult> {
        let proposed = transaction.prepare(self.limits())?;
        self.commit(proposed).await
    }

    /// Appends events to one aggregate, atomically, after checking the expected version.
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let proposed = request.prepare(self.limits())?;
        only_result(self.commit(proposed.into()).await?)
    }

    /// [`Store::append`] to a KurrentDB-style stream: the request may leave
    /// aggregate_type empty, and the events then take the stream's own type, or its
    /// category for a new stream ([`AppendRequest::prepare_for_stream`]).
    async fn append_to_stream(&self, request: AppendRequest) -> Result<AppendResult> {
        let proposed = request.prepare_for_stream(self.limits())?;
        only_result(self.commit(proposed.into()).await?)
    }

    /// Reads up to `limit` events of one aggregate. Forward: versions ≥ `from_version`
    /// (default 1) ascending; backward: versions ≤ `from_version` (default: the last)
    /// descending. An unknown aggregate reads as no events.
    async fn read_aggregate(
        &self,
        aggregate_id: &str,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `limit` events after `after_position` that pass `filter`, in global order.
    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>>;

    /// [`Store::read_all`] without checking each event against its hash: for
    /// [`Store::verify`], which reports a mismatch (where, and both hashes) instead of
    /// failing on it. Backends whose reads check hashes override it; by default it is
    /// `read_all`.
    async fn read_all_unchecked(
        &self,
        after_position: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_all(after_position, limit, filter).await
    }

    /// How many events after `after_position` and at or below `up_to` (default: the
    /// head, read first) pass `filter`, per event type. By default it reads them
    /// ([`crate::read::count_by_reading`]); backends count in one query.
    async fn count_by_type(
        &self,
        after_position: u64,
        up_to: Option<u64>,
        filter: &Filter,
    ) -> Result<EventCounts> {
        crate::read::count_by_reading(self, after_position, up_to, filter).await
    }

    /// One event by id.
    async fn event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>>;

    /// An aggregate's type and current version; `None` if it has no events.
    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<AggregateInfo>>;

    /// A stream's record: its type, version, deletion and metadata, as its events left
    /// them; `None` if it has neither events nor metadata. Backends keep these records
    /// (written by the commit that changes them); this default works them out from the
    /// events.
    async fn stream(&self, aggregate_id: &str) -> Result<Option<StreamRecord>> {
        crate::streams::record_from_events(self, aggregate_id).await
    }

    /// The last committed position (0 for an empty store); with `aggregate_types`, the
    /// last position among those aggregates' events (0 if none).
    async fn head(&self, aggregate_types: &[String]) -> Result<u64>;

    /// The read store (a hot standby serving reads) this store sends reads to, and how
    /// it is doing; `None` for stores without one.
    async fn read_store(&self) -> Option<crate::cluster::ReadStoreStatus> {
        None
    }

    /// The last position the store's filter indexes cover, for a store that builds them
    /// behind its writer (the embedded store's index file); `None` for stores that index
    /// inside each commit. Reads are exact either way; this says how far behind they are.
    fn indexed_up_to(&self) -> Option<u64> {
        None
    }

    /// Why the store cannot write right now: its last commit failed for a reason of its
    /// own (a full disk, a lost primary). `None` once a commit succeeds again, and for
    /// stores that do not track it.
    fn write_failure(&self) -> Option<String> {
        None
    }

    /// Saves a snapshot of `aggregate_id` at `version` (at most its current version),
    /// replacing one with the same aggregate, version and tag.
    async fn save_snapshot(
        &self,
        aggregate_id: &str,
        version: u64,
        tag: &str,
        state: RawJson,
    ) -> Result<Snapshot>;

    /// The newest snapshot with `tag` at or below `at_or_below` (default: any version).
    async fn load_snapshot(
        &self,
        aggregate_id: &str,
        tag: &str,
        at_or_below: Option<u64>,
    ) -> Result<Option<Snapshot>>;

    /// A checkpoint by name.
    async fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>>;

    /// Every checkpoint, by name. Backends that cannot list them answer
    /// [`Error::Unsupported`] (this default).
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        Err(Error::Unsupported {
            what: "list checkpoints".into(),
        })
    }

    /// Writes a checkpoint (compare-and-set when `expected_position` is given).
    async fn put_checkpoint(&self, write: CheckpointWrite) -> Result<Checkpoint> {
        write.validate("")?;
        let out = self
            .commit(ProposedTransaction {
                appends: Vec::new(),
                checkpoint: Some(write),
            })
            .await?;
        out.checkpoint
            .ok_or_else(|| Error::Corrupt("a checkpoint write returned no checkpoint".into()))
    }

    /// Takes the lease of `partition` of `group` for `owner` for `ttl`, if no one holds
    /// it (never taken, released, or expired), raising its fencing token; `None` if
    /// another owner (or `owner` itself: use [`Store::renew_lease`]) holds it unexpired.
    /// Backends without leases answer [`Error::Unsupported`] (this default).
    async fn acquire_lease(
        &self,
        group: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let _ = (group, partition, owner, ttl);
        Err(no_leases())
    }

    /// Extends `lease` to `ttl` from now if it is still held with its owner and token
    /// (even if it lapsed meanwhile, as long as nobody took it); `None` if it was lost.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let _ = (lease, ttl);
        Err(no_leases())
    }

    /// Gives `lease` up (its token is kept, so the next owner's is higher); `false` if it
    /// was no longer held with that owner and token.
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let _ = lease;
        Err(no_leases())
    }

    /// The unexpired leases of `group`, by partition.
    async fn leases(&self, group: &str) -> Result<Vec<Lease>> {
        let _ = group;
        Err(no_leases())
    }

    /// Records that `member` of `group` is alive for `ttl` (zero: it leaves), and answers
    /// the members alive now, by name.
    async fn heartbeat(&self, group: &str, member: &str, ttl: Duration) -> Result<Vec<String>> {
        let _ = (group, member, ttl);
        Err(no_leases())
    }

    /// Records that `node` is alive for `ttl` (zero: it leaves) and answers the nodes
    /// alive now, by name ([`crate::cluster`]). A name held by a live node at another
    /// address is refused ([`Error::InvalidRequest`]); at the same address it is the
    /// same node restarted, and takes its row over. Stores that keep no nodes
    /// answer [`Error::Unsupported`] (this default): a node on them is alone.
    async fn register_node(
        &self,
        node: &crate::cluster::NodeRegistration,
        ttl: Duration,
    ) -> Result<Vec<crate::cluster::Node>> {
        let _ = (node, ttl);
        Err(Error::Unsupported {
            what: "keep cluster nodes".into(),
        })
    }

    /// Waits until the head is past `after_position` or `timeout` passes; returns the
    /// head. Backends wake waiters on commit; writers in other processes are seen by
    /// polling at least every 50 ms.
    async fn wait_for_head(&self, after_position: u64, timeout: Duration) -> Result<u64>;

    /// Stores already-recorded events exactly as they are (same event_ids, positions,
    /// versions, times and hashes): a copy from another store. They must continue this
    /// store's log ([`crate::import::check_import`]); otherwise nothing is written.
    /// Backends that cannot import answer [`Error::Unsupported`] (this default).
    async fn import(&self, events: Vec<RecordedEvent>) -> Result<u64> {
        let _ = events;
        Err(Error::Unsupported {
            what: "import recorded events".into(),
        })
    }

    /// Checks the hash chain from `from_position` (default 1) to `to_position` (default:
    /// the head), reading in pages.
    async fn verify(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
    ) -> Result<VerifyReport> {
        chain::verify(self, from_position, to_position).await
    }

    /// [`Store::verify`], plus the backend's own checks ([`Store::check_storage`]):
    /// their findings go in the report's `storage`, and any makes it not `ok`.
    async fn verify_deep(
        &self,
        from_position: Option<u64>,
        to_position: Option<u64>,
    ) -> Result<VerifyReport> {
        let mut report = self.verify(from_position, to_position).await?;
        let found = self.check_storage().await?;
        if !found.is_empty() {
            report.ok = false;
            report.storage = found;
        }
        Ok(report)
    }

    /// Forgets a data subject (docs/privacy.md): destroys its data key, records a
    /// `$subjectForgotten` event and deletes the snapshots of the aggregates holding
    /// its data, in one durable commit ordered with appends; from then on its events'
    /// personal parts read as erased. Forgetting a subject again answers the first
    /// forgetting (`already`), writing nothing; a subject without a key is `not_found`.
    async fn forget_subject(&self, request: ForgetRequest) -> Result<Forgotten> {
        let _ = request;
        Err(no_privacy())
    }

    /// Subjects with a key (live or destroyed), by id, after `after` (`""`: from the
    /// first), at most `limit`.
    async fn subjects(&self, after: &str, limit: usize) -> Result<Vec<SubjectInfo>> {
        let _ = (after, limit);
        Err(no_privacy())
    }

    /// One subject's key status; `None` if no personal data was ever stored for it.
    async fn subject(&self, subject: &str) -> Result<Option<SubjectInfo>> {
        let _ = subject;
        Err(no_privacy())
    }

    /// The events holding personal data about `subject`, after `after_position`, at
    /// most `limit`, decrypted (a subject access request, GDPR Art. 15).
    async fn subject_events(
        &self,
        subject: &str,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let _ = (subject, after_position, limit);
        Err(no_privacy())
    }

    /// The key table's rows after subject `after` (`""`: from the first), at most
    /// `limit`, in subject order, as stored: data keys still wrapped by the KEK, and
    /// forgotten subjects' rows without one (for `annal copy`, which copies them into
    /// another store opened with the same KEK). One call reads one snapshot of the
    /// table; pages read by several calls may each see another.
    async fn key_rows(&self, after: &str, limit: usize) -> Result<Vec<SubjectKey>> {
        let _ = (after, limit);
        Err(no_privacy())
    }

    /// Adds key rows read from another store ([`Store::key_rows`]) to this store's key
    /// table, in one commit ordered with appends: every row must be wrapped by this
    /// store's KEK (`Keys::check_imported`), and a subject that has a row here already
    /// is refused; when anything is refused, nothing is written. Answers how many rows
    /// were added.
    async fn import_key_rows(&self, rows: Vec<SubjectKey>) -> Result<u64> {
        let _ = rows;
        Err(no_privacy())
    }

    /// Rewraps every live data key with `new` (rotating the key-encryption key without
    /// rewriting events); from then on the store uses `new`. Answers how many keys
    /// were rewrapped.
    async fn rotate_kek(&self, new: Keyring) -> Result<u64> {
        let _ = new;
        Err(no_privacy())
    }

    /// Why this process cannot serve the store's personal data, if it cannot: the key
    /// table is wrapped by another KEK than this process's (rotated by another
    /// process), or by one while this process has none ([`crate::privacy::kek_problem`]).
    /// For readiness checks. Provided: nothing.
    async fn kek_problem(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The backend's own consistency checks (its pages and indexes, its stream records
    /// against the log): what is wrong, if anything. Provided: nothing to check.
    async fn check_storage(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The one result of a transaction of one append.
fn only_result(mut out: TransactionResult) -> Result<AppendResult> {
    out.results
        .pop()
        .ok_or_else(|| Error::Corrupt("a transaction of one append returned no result".into()))
}

fn no_privacy() -> Error {
    Error::Unsupported {
        what: "keep personal data (subject keys)".into(),
    }
}

fn no_leases() -> Error {
    Error::Unsupported {
        what: "hold partition leases".into(),
    }
}
