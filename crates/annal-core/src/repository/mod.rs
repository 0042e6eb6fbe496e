//! The [`Repository`]: loads aggregates (latest snapshot + later events, upcast on the
//! way in), executes commands with optimistic concurrency and bounded retries, appends
//! compensating events, and answers time-travel questions.
//!
//! Invariants:
//! - state is only ever built by applying stored events in version order, after upcasting;
//!   a snapshot is a cache of that fold at a version, used only when its tag matches
//!   [`Aggregate::SNAPSHOT_TAG`] and its state deserialises (otherwise it is ignored with a
//!   warning and the state is rebuilt from events);
//! - a command's events are appended with the exact version its decision was made on; a
//!   conflict reloads and decides again, at most [`ConflictRetry::max_attempts`] times,
//!   after a pause drawn at random up to a bound that doubles with each conflict (full
//!   jitter), so writers racing on one aggregate spread out instead of colliding again;
//!   commands on several aggregates ([`Repository::execute_many`], in `many`) commit in
//!   one transaction and are retried as one, the same way;
//! - snapshot writes happen in a background task after the append they follow has been
//!   acknowledged: they never fail or delay it, they may lag.

use crate::aggregate::{self, Aggregate, CodecError};
use crate::append::{AppendRequest, ExpectedVersion, NewEvent};
use crate::error::Error;
use crate::event::{RawJson, RecordedEvent, Timestamp};
use crate::read::Direction;
use crate::store::Store;
use crate::upcast::{UpcastError, Upcasters};
use serde_json::{Map, Value};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

mod many;
mod state_view;

pub use state_view::{StateView, StateViewError};

/// Metadata key holding when an event happened in the domain (RFC 3339), as opposed to
/// when the store recorded it.
pub const OCCURRED_AT: &str = "occurred_at";
/// Metadata key naming the event a compensating event corrects.
pub const COMPENSATES: &str = "compensates";
/// Metadata key holding why a compensating event was appended.
pub const REASON: &str = "reason";

const PAGE: usize = 1000;

/// When the repository saves snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// Never save (and never read) snapshots.
    #[default]
    Never,
    /// Read snapshots others saved, never save one (for read-only tools).
    ReadOnly,
    /// After a command crosses a multiple of this many events.
    Every(u64),
    /// After a load that had to replay more than this many events.
    Adaptive(u64),
}

/// Who and what a command's events are attributed to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandContext {
    /// The actor (default `system`).
    pub user_id: Option<String>,
    /// Ties the command's events to others.
    pub correlation_id: Option<String>,
    /// What caused the command.
    pub causation_id: Option<String>,
    /// When it happened in the domain, if not now (stored in metadata as `occurred_at`).
    pub occurred_at: Option<Timestamp>,
}

impl CommandContext {
    /// A context attributing events to `user_id`.
    pub fn by(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }

    /// Sets the correlation_id.
    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets the causation_id.
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Sets the domain time.
    pub fn occurred(mut self, at: Timestamp) -> Self {
        self.occurred_at = Some(at);
        self
    }
}

/// An aggregate's state as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The version of the last event applied (0: no events).
    pub version: u64,
    /// The snapshot version the load started from, if it used one.
    pub snapshot_version: Option<u64>,
    /// How many events were replayed on top of the snapshot (or from the start).
    pub replayed: u64,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A> {
    /// The state after the command's events.
    pub state: A,
    /// The aggregate's version after them.
    pub version: u64,
    /// The events appended (none when the command decided nothing).
    pub events: Vec<RecordedEvent>,
    /// How many times the command was decided (more than 1 after conflicts).
    pub attempts: u32,
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Other writers kept changing the aggregate; the command was decided `attempts`
    /// times and conflicted each time.
    #[error(
        "aggregate '{aggregate_id}' kept changing: {attempts} attempts all conflicted; try again later"
    )]
    Conflict {
        /// The aggregate.
        aggregate_id: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// A stored event could not be decoded into the aggregate's event enum.
    #[error("aggregate '{aggregate_id}', event at position {position}: {source}")]
    Event {
        /// The aggregate.
        aggregate_id: String,
        /// The event's position.
        position: u64,
        /// What is wrong with it.
        source: CodecError,
    },
    /// An upcaster failed on a stored event.
    #[error("aggregate '{aggregate_id}', event at position {position}: {source}")]
    Upcast {
        /// The aggregate.
        aggregate_id: String,
        /// The event's position.
        position: u64,
        /// What the upcaster said.
        source: UpcastError,
    },
    /// The aggregate id belongs to an aggregate of another type.
    #[error("aggregate '{aggregate_id}' is a {found}, not a {expected}")]
    WrongType {
        /// The aggregate.
        aggregate_id: String,
        /// The type this repository handles.
        expected: &'static str,
        /// The stored type.
        found: String,
    },
    /// A new event could not be encoded.
    #[error("cannot encode a new event: {0}")]
    Encode(#[source] CodecError),
    /// Something referred to does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] Error),
}

/// How [`Repository::execute`] retries after a conflict (another writer changed the
/// aggregate between the load and the append).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictRetry {
    /// Decisions per command, the first included (at least 1; default 10).
    pub max_attempts: u32,
    /// Bound of the pause after the first conflict, doubled after each further one
    /// (default 2 ms). The pause is drawn at random between zero and the bound.
    pub first_backoff: Duration,
    /// The largest bound (default 250 ms).
    pub max_backoff: Duration,
}

impl Default for ConflictRetry {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(250),
        }
    }
}

impl ConflictRetry {
    /// The pause after the `conflicts`-th conflict (1-based): at random up to
    /// `first_backoff × 2^(conflicts-1)`, at most `max_backoff`.
    pub fn pause(&self, conflicts: u32) -> Duration {
        let bound = self
            .first_backoff
            .saturating_mul(1u32 << conflicts.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(..=micros))
    }
}

/// Loads and changes aggregates of type `A` in a store.
pub struct Repository<A: Aggregate> {
    store: Arc<dyn Store>,
    upcasters: Upcasters,
    policy: SnapshotPolicy,
    retry: ConflictRetry,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            upcasters: self.upcasters.clone(),
            policy: self.policy,
            retry: self.retry,
            aggregate: PhantomData,
        }
    }
}

type Res<T, A> = Result<T, RepositoryError<<A as Aggregate>::Error>>;

impl<A: Aggregate> Repository<A> {
    /// A repository on `store`: the aggregate's own upcasters ([`Aggregate::upcasters`]),
    /// no snapshots, conflicts retried as [`ConflictRetry::default`] says (10 decisions
    /// per command, jittered backoff).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            upcasters: A::upcasters(),
            policy: SnapshotPolicy::Never,
            retry: ConflictRetry::default(),
            aggregate: PhantomData,
        }
    }

    /// Uses these upcasters on every read, instead of the aggregate's own (new events are
    /// then written at the versions these lead to).
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Saves snapshots by this policy.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Decides a command at most this many times on conflicts (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts.max(1);
        self
    }

    /// Retries conflicts this way (attempts and backoff).
    pub fn with_conflict_retry(mut self, retry: ConflictRetry) -> Self {
        self.retry = ConflictRetry {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current state (a new aggregate loads as the default state at version 0).
    pub async fn load(&self, id: &str) -> Res<Loaded<A>, A> {
        let loaded = self.load_upto(id, None).await?;
        if let SnapshotPolicy::Adaptive(threshold) = self.policy
            && loaded.replayed > threshold
        {
            self.snapshot_later(id, loaded.version, &loaded.state);
        }
        Ok(loaded)
    }

    /// The state after the event at `version` (or the current state, if it is lower).
    pub async fn load_at_version(&self, id: &str, version: u64) -> Res<Loaded<A>, A> {
        self.load_upto(id, Some(version)).await
    }

    /// The state as the store knew it at `time`: every event recorded at or before it.
    pub async fn load_as_of(&self, id: &str, time: Timestamp) -> Res<Loaded<A>, A> {
        let mut from = None;
        loop {
            let page = self
                .store
                .read_aggregate(id, Direction::Backward, from, PAGE)
                .await?;
            if let Some(e) = page.iter().find(|e| e.recorded_at <= time) {
                return self.load_upto(id, Some(e.aggregate_version)).await;
            }
            match page.last() {
                Some(last) if page.len() == PAGE && last.aggregate_version > 1 => {
                    from = Some(last.aggregate_version - 1);
                }
                _ => return self.load_upto(id, Some(0)).await,
            }
        }
    }

    /// The state as of a domain time: every event whose `occurred_at` (metadata; the
    /// record time when absent) is at or before `time`, applied in version order.
    /// Replays from the start: snapshots follow record order, not domain time.
    pub async fn load_as_occurred(&self, id: &str, time: Timestamp) -> Res<Loaded<A>, A> {
        self.fold(id, A::default(), 0, None, None, |e| occurred_at(e) <= time)
            .await
    }

    /// Decides `command` on the current state and appends its events with optimistic
    /// concurrency, deciding again after a conflict (as [`ConflictRetry`] says).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Res<Executed<A>, A> {
        self.decide_and_append(id, ctx, |state| {
            state
                .handle(command.clone())
                .map(|events| events.into_iter().map(|e| (e, Map::new())).collect())
                .map_err(RepositoryError::Rejected)
        })
        .await
    }

    /// Appends `event` to correct the earlier event `original` of the same aggregate:
    /// causation_id is set to the original's id and metadata records
    /// `{"compensates": id, "reason": reason}`. History keeps both.
    pub async fn compensate(
        &self,
        id: &str,
        original: Uuid,
        event: A::Event,
        reason: &str,
        ctx: &CommandContext,
    ) -> Res<Executed<A>, A> {
        let Some(stored) = self.store.event(original).await? else {
            return Err(RepositoryError::NotFound(format!("event {original}")));
        };
        if stored.aggregate_id != id {
            return Err(RepositoryError::NotFound(format!(
                "event {original} in aggregate '{id}' (it belongs to '{}')",
                stored.aggregate_id
            )));
        }
        let ctx = CommandContext {
            causation_id: Some(original.to_string()),
            ..ctx.clone()
        };
        let mut meta = Map::new();
        meta.insert(COMPENSATES.into(), Value::String(original.to_string()));
        meta.insert(REASON.into(), Value::String(reason.to_owned()));
        self.decide_and_append(id, &ctx, |_| Ok(vec![(event.clone(), meta.clone())]))
            .await
    }

    async fn decide_and_append(
        &self,
        id: &str,
        ctx: &CommandContext,
        decide: impl Fn(&A) -> Res<Vec<(A::Event, Map<String, Value>)>, A>,
    ) -> Res<Executed<A>, A> {
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.pause(attempt - 1)).await;
            }
            let loaded = self.load(id).await?;
            let decided = decide(&loaded.state)?;
            if decided.is_empty() {
                return Ok(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    events: Vec::new(),
                    attempts: attempt,
                });
            }
            let request = self.request(id, loaded.version, ctx, &decided)?;
            match self.store.append(request).await {
                Ok(result) => {
                    let mut state = loaded.state;
                    for (event, _) in &decided {
                        state.apply(event);
                    }
                    self.snapshot_after(id, loaded.version, result.aggregate_version, &state);
                    return Ok(Executed {
                        state,
                        version: result.aggregate_version,
                        events: result.events,
                        attempts: attempt,
                    });
                }
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepositoryError::Conflict {
            aggregate_id: id.to_owned(),
            attempts: self.retry.max_attempts,
        })
    }

    /// The append of `decided` to `id` at exactly `version`, attributed as `ctx` says.
    fn request(
        &self,
        id: &str,
        version: u64,
        ctx: &CommandContext,
        decided: &[(A::Event, Map<String, Value>)],
    ) -> Res<AppendRequest, A> {
        let mut request = AppendRequest::new(A::TYPE, id, ExpectedVersion::Exact(version));
        request.user_id = ctx.user_id.clone();
        request.correlation_id = ctx.correlation_id.clone();
        request.causation_id = ctx.causation_id.clone();
        for (event, meta) in decided {
            let mut meta = meta.clone();
            let (event_type, version, data) =
                aggregate::encode(event).map_err(RepositoryError::Encode)?;
            let version = version.max(self.upcasters.current_version(&event_type));
            if let Some(at) = ctx.occurred_at {
                meta.insert(OCCURRED_AT.into(), Value::String(at.to_string()));
            }
            let fields = <A::Event as crate::aggregate::DomainEvent>::personal_fields(&event_type);
            let (data, personal) =
                aggregate::split_personal(data, fields).map_err(RepositoryError::Encode)?;
            let mut e = NewEvent::raw(event_type, data).with_version(version);
            if let Some(personal) = personal {
                e.subjects = crate::aggregate::DomainEvent::subjects(event, id);
                e.personal = Some(personal);
            }
            if !meta.is_empty() {
                let meta = RawJson::from_value(&meta)
                    .map_err(|e| RepositoryError::Encode(CodecError::Shape(e.to_string())))?;
                e = e.with_metadata(meta);
            }
            request.events.push(e);
        }
        Ok(request)
    }

    /// Saves a snapshot when the policy is `Every(n)` and the append from `before` to
    /// `after` crossed a multiple of `n`.
    fn snapshot_after(&self, id: &str, before: u64, after: u64, state: &A) {
        if let SnapshotPolicy::Every(n) = self.policy
            && n > 0
            && before / n != after / n
        {
            self.snapshot_later(id, after, state);
        }
    }

    /// Loads from the newest usable snapshot at or below `upto`, then replays.
    async fn load_upto(&self, id: &str, upto: Option<u64>) -> Res<Loaded<A>, A> {
        let mut start = (A::default(), 0, None);
        if self.policy != SnapshotPolicy::Never && upto != Some(0) {
            if let Some(s) = self.store.load_snapshot(id, A::SNAPSHOT_TAG, upto).await? {
                match s.state.to_value::<A>() {
                    Ok(state) => start = (state, s.aggregate_version, Some(s.aggregate_version)),
                    Err(e) => tracing::warn!(
                        aggregate_id = id,
                        version = s.aggregate_version,
                        tag = A::SNAPSHOT_TAG,
                        error = %e,
                        "ignoring a snapshot that does not deserialise; rebuilding from events"
                    ),
                }
            }
        }
        let (state, version, snapshot) = start;
        self.fold(id, state, version, snapshot, upto, |_| true)
            .await
    }

    /// Applies the events after `version` (up to `upto`) that pass `keep`.
    async fn fold(
        &self,
        id: &str,
        mut state: A,
        mut version: u64,
        snapshot_version: Option<u64>,
        upto: Option<u64>,
        keep: impl Fn(&RecordedEvent) -> bool,
    ) -> Res<Loaded<A>, A> {
        let mut replayed = 0;
        let limit = upto.unwrap_or(u64::MAX);
        let mut next = version + 1;
        while next <= limit {
            let page = self
                .store
                .read_aggregate(id, Direction::Forward, Some(next), PAGE)
                .await?;
            for e in &page {
                if e.aggregate_version > limit {
                    break;
                }
                if e.aggregate_type != A::TYPE {
                    return Err(RepositoryError::WrongType {
                        aggregate_id: id.to_owned(),
                        expected: A::TYPE,
                        found: e.aggregate_type.clone(),
                    });
                }
                if keep(e) {
                    state.apply(&self.decode(e)?);
                    version = e.aggregate_version;
                    replayed += 1;
                }
                next = e.aggregate_version + 1;
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(Loaded {
            state,
            version,
            snapshot_version,
            replayed,
        })
    }

    /// Upcasts and decodes one stored event (as [`decode`] with this repository's
    /// upcasters).
    pub fn decode(&self, e: &RecordedEvent) -> Res<A::Event, A> {
        decode::<A>(&self.upcasters, e)
    }

    /// Saves a snapshot in the background (skipped outside a tokio runtime).
    fn snapshot_later(&self, id: &str, version: u64, state: &A) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, id, state) = (self.store.clone(), id.to_owned(), state.clone());
        runtime.spawn(async move {
            let saved = match RawJson::from_value(&state) {
                Ok(json) => store
                    .save_snapshot(&id, version, A::SNAPSHOT_TAG, json)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = saved {
                tracing::warn!(aggregate_id = %id, version, %error, "snapshot not saved");
            }
        });
    }
}

/// Upcasts one stored event of aggregate type `A` with `upcasters` and decodes it into
/// `A`'s event enum: what loads, and typed projections, do with every event.
pub fn decode<A: Aggregate>(upcasters: &Upcasters, e: &RecordedEvent) -> Res<A::Event, A> {
    // Personal members (or the erasure marker) are merged in: upcasters and the
    // aggregate see the event whole.
    let payload = e.payload();
    let upcast = upcasters
        .upcast(&e.event_type, e.event_version, &payload)
        .map_err(|source| RepositoryError::Upcast {
            aggregate_id: e.aggregate_id.clone(),
            position: e.position,
            source,
        })?;
    let (event_type, data) = match &upcast {
        Some(u) => (u.event_type.as_str(), &u.data),
        None => (e.event_type.as_str(), payload.as_ref()),
    };
    aggregate::decode(event_type, data).map_err(|source| RepositoryError::Event {
        aggregate_id: e.aggregate_id.clone(),
        position: e.position,
        source,
    })
}

/// When an event happened in the domain: its `occurred_at` metadata, else when it was
/// recorded.
pub fn occurred_at(e: &RecordedEvent) -> Timestamp {
    if !e.metadata.get().contains(OCCURRED_AT) {
        return e.recorded_at;
    }
    e.metadata
        .to_value::<Map<String, Value>>()
        .ok()
        .and_then(|m| {
            m.get(OCCURRED_AT)
                .and_then(Value::as_str)
                .map(Timestamp::parse)
        })
        .and_then(Result::ok)
        .unwrap_or(e.recorded_at)
}
