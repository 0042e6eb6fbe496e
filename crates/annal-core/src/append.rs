//! Appends and transactions: what a writer sends, how it is validated and resolved, and
//! what the store answers.
//!
//! A request is first *prepared* ([`AppendRequest::prepare`], [`Transaction::prepare`]):
//! every field is checked against the rules and [`Limits`], defaults are applied
//! (`user_id` "system", `event_version` 1, `metadata` `{}`, a UUID v7 `event_id`), and the
//! result is a [`ProposedAppend`] a backend can write without further checks on its
//! content. Backends then check the expected version ([`ExpectedVersion::check`]) and
//! replays of already-stored event_ids ([`check_replay`]) inside their write transaction.

use crate::chain::{self, Hash};
use crate::checkpoint::{Checkpoint, CheckpointWrite};
use crate::error::{Error, Result};
use crate::event::{RawJson, RecordedEvent, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;
use uuid::Uuid;

/// The largest aggregate_type, aggregate_id, event_type, user_id, correlation_id or
/// causation_id, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// What a writer expects of the aggregate's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No check.
    #[default]
    Any,
    /// The aggregate must have no events yet.
    NoStream,
    /// The aggregate must have at least one event.
    Exists,
    /// The aggregate's current version must be exactly this (0 means no events).
    Exact(u64),
}

impl ExpectedVersion {
    /// Checks the expectation against the aggregate's current version (0: no events).
    pub fn check(self, aggregate_id: &str, actual: u64) -> Result<()> {
        let ok = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => actual == 0,
            ExpectedVersion::Exists => actual > 0,
            ExpectedVersion::Exact(n) => actual == n,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::WrongExpectedVersion {
                aggregate_id: aggregate_id.to_owned(),
                expected: self,
                actual,
            })
        }
    }

    /// Parses `any`, `no_stream`, `exists` or a version number.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "any" => Ok(Self::Any),
            "no_stream" => Ok(Self::NoStream),
            "exists" => Ok(Self::Exists),
            other => other.parse::<u64>().map(Self::Exact).map_err(|_| {
                Error::invalid(
                    "expected_version",
                    format!(
                        "'{other}' is not one of \"any\", \"no_stream\", \"exists\" or a version number"
                    ),
                )
            }),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(n) => serializer.serialize_u64(*n),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Number(u64),
            Word(String),
        }
        match Form::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected_version must be \"any\", \"no_stream\", \"exists\" or a non-negative integer",
            )
        })? {
            Form::Number(n) => Ok(ExpectedVersion::Exact(n)),
            Form::Word(w) => ExpectedVersion::parse(&w).map_err(serde::de::Error::custom),
        }
    }
}

/// Size limits a store enforces on every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (data, metadata and personal part), in bytes. Default 1 MiB.
    pub max_event_bytes: usize,
    /// Most events in one append or transaction. Default 10,000.
    pub max_batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch_events: 10_000,
        }
    }
}

/// One event a writer proposes. Unset fields take the append's values, then defaults.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Supplying it makes a retried append idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// What happened.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub event_type: String,
    /// Schema version of `data` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub event_version: Option<u32>,
    /// The actor, overriding the append's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub user_id: Option<String>,
    /// Overrides the append's correlation_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub correlation_id: Option<String>,
    /// Overrides the append's causation_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub causation_id: Option<String>,
    /// A JSON object (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RawJson>,
    /// The payload: any JSON, kept verbatim.
    pub data: RawJson,
    /// Personal data about `subjects`: a JSON object the store keeps only encrypted
    /// with each subject's key (docs/privacy.md). Reads show it beside `data`, or
    /// `{"$erased":true}` once a subject was forgotten. `data` must then be an object
    /// with none of its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<RawJson>,
    /// The data subjects `personal` belongs to (opaque ids such as `family_123`, which
    /// stay readable: they must not be personal data themselves). Required with
    /// `personal`, refused without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub subjects: Vec<String>,
}

impl NewEvent {
    /// An event of `event_type` whose data is `data` serialised as compact JSON.
    pub fn new<T: Serialize + ?Sized>(event_type: impl Into<String>, data: &T) -> Result<Self> {
        let data = RawJson::from_value(data).map_err(|e| Error::invalid("data", e.to_string()))?;
        Ok(Self::raw(event_type, data))
    }

    /// An event whose data is already JSON text.
    pub fn raw(event_type: impl Into<String>, data: RawJson) -> Self {
        Self {
            event_id: None,
            event_type: event_type.into(),
            event_version: None,
            user_id: None,
            correlation_id: None,
            causation_id: None,
            metadata: None,
            data,
            personal: None,
            subjects: Vec::new(),
        }
    }

    /// Marks `personal` (serialised as a JSON object) as personal data about `subject`.
    pub fn personal<T: Serialize + ?Sized>(
        self,
        subject: impl Into<String>,
        personal: &T,
    ) -> Result<Self> {
        self.personal_of(vec![subject.into()], personal)
    }

    /// Marks `personal` as personal data about every one of `subjects`: it reads as
    /// erased once any of them is forgotten.
    pub fn personal_of<T: Serialize + ?Sized>(
        mut self,
        subjects: Vec<String>,
        personal: &T,
    ) -> Result<Self> {
        self.personal = Some(
            RawJson::from_value(personal).map_err(|e| Error::invalid("personal", e.to_string()))?,
        );
        self.subjects = subjects;
        Ok(self)
    }

    /// Sets the event_id (makes retries idempotent).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Sets the schema version.
    pub fn with_version(mut self, version: u32) -> Self {
        self.event_version = Some(version);
        self
    }

    /// Sets the causation_id.
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Sets the metadata object.
    pub fn with_metadata(mut self, metadata: RawJson) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// Who makes a change: the `user_id` it is recorded for, and the `principal` who
/// authenticated it ([`AppendRequest::principal`]). The default is nobody in
/// particular: user_id `system`, no principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The user the change is made for (`None`: the append's default).
    pub user_id: Option<String>,
    /// Who authenticated (`None`: nobody did).
    pub principal: Option<String>,
}

impl Actor {
    /// A caller who authenticated as `name` and acts as themself.
    pub fn authenticated(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            user_id: Some(name.clone()),
            principal: Some(name),
        }
    }

    /// Gives `request` this actor: its user_id where the request names none, and its
    /// principal.
    pub fn stamp(&self, request: &mut AppendRequest) {
        if request.user_id.is_none() {
            request.user_id.clone_from(&self.user_id);
        }
        request.principal.clone_from(&self.principal);
    }
}

/// Appends events to one aggregate, atomically.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendRequest {
    /// The aggregate's type (must match its first event's).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub aggregate_type: String,
    /// The aggregate (over HTTP it may come from the route instead).
    #[serde(default)]
    pub aggregate_id: String,
    /// The optimistic concurrency check (default `any`).
    #[serde(default)]
    pub expected_version: ExpectedVersion,
    /// Actor for events that set none (default `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub user_id: Option<String>,
    /// correlation_id for events that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub correlation_id: Option<String>,
    /// causation_id for events that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub causation_id: Option<String>,
    /// The events, in order.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub events: Vec<NewEvent>,
    /// Who authenticated the append (an API token's name, a gRPC user), recorded on
    /// every event beside the `user_id` they claim. Never read from a request body:
    /// the server sets it from the credentials; an embedding application may set it
    /// from its own ([`AppendRequest::authenticated_as`]).
    #[serde(skip)]
    pub principal: Option<String>,
}

impl AppendRequest {
    /// An append of no events yet; add them with [`AppendRequest::event`].
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        expected_version: ExpectedVersion,
    ) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            expected_version,
            user_id: None,
            correlation_id: None,
            causation_id: None,
            events: Vec::new(),
            principal: None,
        }
    }

    /// Adds an event.
    pub fn event(mut self, event: NewEvent) -> Self {
        self.events.push(event);
        self
    }

    /// Sets the actor for every event that sets none.
    pub fn by(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Records `principal` as who authenticated this append (see
    /// [`AppendRequest::principal`]).
    pub fn authenticated_as(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the correlation_id for every event that sets none.
    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Validates the request and applies defaults. `at` prefixes field paths in errors
    /// (`""` for a lone append, `"appends[2]."` inside a transaction).
    pub fn prepare(self, limits: &Limits) -> Result<ProposedAppend> {
        self.prepare_at(limits, "", false)
    }

    /// [`AppendRequest::prepare`] for an append to a KurrentDB-style stream, which names
    /// no type: an empty aggregate_type stays empty, and the store's writer gives the
    /// events the stream's own type or, for a new stream, its category (the part of its
    /// name before the first `-`).
    pub fn prepare_for_stream(self, limits: &Limits) -> Result<ProposedAppend> {
        self.prepare_at(limits, "", true)
    }

    fn prepare_at(self, limits: &Limits, at: &str, derive_type: bool) -> Result<ProposedAppend> {
        if !(derive_type && self.aggregate_type.is_empty()) {
            check_name(&format!("{at}aggregate_type"), &self.aggregate_type)?;
        }
        check_name(&format!("{at}aggregate_id"), &self.aggregate_id)?;
        if self.events.is_empty() {
            return Err(Error::invalid(
                format!("{at}events"),
                "an append must hold at least one event",
            ));
        }
        check_batch(&format!("{at}events"), self.events.len(), limits)?;
        for (name, value) in [
            ("user_id", &self.user_id),
            ("correlation_id", &self.correlation_id),
            ("causation_id", &self.causation_id),
            ("principal", &self.principal),
        ] {
            if let Some(v) = value {
                check_name(&format!("{at}{name}"), v)?;
            }
        }
        let mut seen = HashSet::with_capacity(self.events.len());
        let mut events = Vec::with_capacity(self.events.len());
        for (i, e) in self.events.into_iter().enumerate() {
            let field = |f: &str| format!("{at}events[{i}].{f}");
            check_name_at(&e.event_type, || field("event_type"))?;
            for (name, value) in [
                ("user_id", &e.user_id),
                ("correlation_id", &e.correlation_id),
                ("causation_id", &e.causation_id),
            ] {
                if let Some(v) = value {
                    check_name_at(v, || field(name))?;
                }
            }
            let event_version = e.event_version.unwrap_or(1);
            if event_version == 0 {
                return Err(Error::invalid(field("event_version"), "must be 1 or more"));
            }
            let metadata = e.metadata.unwrap_or_else(RawJson::empty_object);
            if !metadata.is_object() {
                return Err(Error::invalid(field("metadata"), "must be a JSON object"));
            }
            let personal = match e.personal {
                Some(plain) => {
                    crate::privacy::check_personal(
                        || format!("{at}events[{i}]."),
                        &e.data,
                        &plain,
                        &e.subjects,
                    )?;
                    Some(crate::privacy::Personal {
                        subjects: e.subjects,
                        plain,
                        keys: None,
                    })
                }
                None if !e.subjects.is_empty() => {
                    return Err(Error::invalid(
                        field("subjects"),
                        "subjects name whom a personal part belongs to; this event has none",
                    ));
                }
                None => None,
            };
            let size = e.data.get().len()
                + metadata.get().len()
                + personal.as_ref().map_or(0, |p| p.plain.get().len());
            if size > limits.max_event_bytes {
                return Err(Error::TooLarge {
                    field: format!("{at}events[{i}]"),
                    limit: limits.max_event_bytes as u64,
                    actual: size as u64,
                });
            }
            let (event_id, id_supplied) = match e.event_id {
                Some(id) => (id, true),
                None => (Uuid::now_v7(), false),
            };
            if !seen.insert(event_id) {
                return Err(Error::invalid(
                    field("event_id"),
                    format!("{event_id} appears twice in the same append"),
                ));
            }
            events.push(ProposedEvent {
                event_id,
                id_supplied,
                event_type: e.event_type,
                event_version,
                user_id: e
                    .user_id
                    .or_else(|| self.user_id.clone())
                    .unwrap_or_else(|| "system".to_owned()),
                correlation_id: e.correlation_id.or_else(|| self.correlation_id.clone()),
                causation_id: e.causation_id.or_else(|| self.causation_id.clone()),
                principal: self.principal.clone(),
                data: e.data,
                metadata,
                personal,
            });
        }
        Ok(ProposedAppend {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            expected: self.expected_version,
            events,
        })
    }
}

fn check_batch(field: &str, n: usize, limits: &Limits) -> Result<()> {
    if n > limits.max_batch_events {
        return Err(Error::TooLarge {
            field: field.to_owned(),
            limit: limits.max_batch_events as u64,
            actual: n as u64,
        });
    }
    Ok(())
}

/// Checks a name-like field: 1 to 255 bytes, no control characters.
pub fn check_name(field: &str, value: &str) -> Result<()> {
    check_name_at(value, || field.to_owned())
}

/// [`check_name`] with the field's name made only when `value` is refused: what the
/// checks that run once per event use, so that an accepted event formats no names.
pub fn check_name_at(value: &str, field: impl FnOnce() -> String) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field(), "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field(),
            format!(
                "is {} bytes long; the limit is {MAX_NAME_BYTES}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An event after validation, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Whether the writer supplied the id (only then can the append be a retry).
    pub id_supplied: bool,
    /// What happened.
    pub event_type: String,
    /// Schema version.
    pub event_version: u32,
    /// The actor.
    pub user_id: String,
    /// Ties related events together.
    pub correlation_id: Option<String>,
    /// What caused it.
    pub causation_id: Option<String>,
    /// Who authenticated the append, if anyone did.
    pub principal: Option<String>,
    /// Payload, verbatim.
    pub data: RawJson,
    /// Metadata object, verbatim.
    pub metadata: RawJson,
    /// The personal part, sealed by the writer when it records the event.
    pub personal: Option<crate::privacy::Personal>,
}

impl ProposedEvent {
    /// Records the event at a place in the log, computing its hash from `prev`. An
    /// event with a personal part is recorded with [`ProposedEvent::record_sealed`].
    pub fn record(
        &self,
        position: u64,
        aggregate_type: &str,
        aggregate_id: &str,
        aggregate_version: u64,
        recorded_at: Timestamp,
        prev: &Hash,
    ) -> RecordedEvent {
        self.record_sealed(
            position,
            aggregate_type,
            aggregate_id,
            aggregate_version,
            recorded_at,
            prev,
            None,
        )
    }

    /// [`ProposedEvent::record`] with the personal part's sealed form (which the hash
    /// covers); the recorded event shows the plaintext too, as reads do.
    #[allow(clippy::too_many_arguments)]
    pub fn record_sealed(
        &self,
        position: u64,
        aggregate_type: &str,
        aggregate_id: &str,
        aggregate_version: u64,
        recorded_at: Timestamp,
        prev: &Hash,
        sealed: Option<RawJson>,
    ) -> RecordedEvent {
        let open = sealed.as_ref().and(self.personal.as_ref());
        let mut event = RecordedEvent {
            position,
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            event_version: self.event_version,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            aggregate_version,
            recorded_at,
            user_id: self.user_id.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            principal: self.principal.clone(),
            data: self.data.clone(),
            metadata: self.metadata.clone(),
            sealed,
            subjects: open.map(|p| p.subjects.clone()).unwrap_or_default(),
            personal: open.map(|p| p.plain.clone()),
            hash: Hash::ZERO,
        };
        event.hash = chain::event_hash(prev, &event);
        event
    }

    /// Whether a stored event has this content (everything a writer chooses).
    pub fn same_content(&self, stored: &RecordedEvent) -> bool {
        self.event_type == stored.event_type
            && self.event_version == stored.event_version
            && self.user_id == stored.user_id
            && self.correlation_id == stored.correlation_id
            && self.causation_id == stored.causation_id
            && self.principal == stored.principal
            && self.data == stored.data
            && self.metadata == stored.metadata
            && match &self.personal {
                None => stored.sealed.is_none(),
                // Compared once the store opened the stored event's sealed part.
                Some(p) => {
                    p.subjects == stored.subjects && stored.personal.as_ref() == Some(&p.plain)
                }
            }
    }
}

/// An append after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedAppend {
    /// The aggregate's type; empty only from [`AppendRequest::prepare_for_stream`].
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// The concurrency check.
    pub expected: ExpectedVersion,
    /// The events, at least one.
    pub events: Vec<ProposedEvent>,
}

/// Decides whether an append is a retry of one already stored, given the stored events
/// (if any) carrying each proposed event's id, in the append's order.
///
/// Returns `Ok(None)` when none is stored (write it), `Ok(Some(result))` when all are
/// stored with the same content, in the same aggregate, at consecutive versions the
/// expectation allows (answer the original result, write nothing), and
/// [`Error::DuplicateEventId`] otherwise.
pub fn check_replay(
    append: &ProposedAppend,
    stored: Vec<Option<RecordedEvent>>,
) -> Result<Option<AppendResult>> {
    if stored.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut events = Vec::with_capacity(stored.len());
    for (proposed, stored) in append.events.iter().zip(stored) {
        let dup = |detail: String| Error::DuplicateEventId {
            event_id: proposed.event_id,
            detail,
        };
        let Some(stored) = stored else {
            return Err(dup(
                "another event of this append is already stored but this one is not; a retry must resend exactly the same batch".to_owned(),
            ));
        };
        if stored.aggregate_id != append.aggregate_id
            || stored.aggregate_type != append.aggregate_type
        {
            return Err(dup(format!(
                "it belongs to aggregate '{}' of type '{}'",
                stored.aggregate_id, stored.aggregate_type
            )));
        }
        if !proposed.same_content(&stored) {
            return Err(dup(
                "its stored content differs from this append's".to_owned()
            ));
        }
        if let Some(prev) = events.last() {
            let prev: &RecordedEvent = prev;
            if stored.aggregate_version != prev.aggregate_version + 1 {
                return Err(dup("the batch is stored at other versions".to_owned()));
            }
        }
        events.push(stored);
    }
    let first = events.first().map_or(0, |e| e.aggregate_version);
    let allowed = match append.expected {
        ExpectedVersion::Any | ExpectedVersion::Exists => true,
        ExpectedVersion::NoStream => first == 1,
        ExpectedVersion::Exact(n) => first == n + 1,
    };
    if !allowed {
        return Err(Error::DuplicateEventId {
            event_id: append.events[0].event_id,
            detail: format!(
                "the batch is stored from version {first}, which expected_version {} does not allow",
                append.expected
            ),
        });
    }
    Ok(Some(AppendResult::from_events(events)))
}

/// What the store answers to an append.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The aggregate's version after the append (its last event's version).
    pub aggregate_version: u64,
    /// Position of the first event written.
    pub first_position: u64,
    /// Position of the last event written.
    pub last_position: u64,
    /// The events as recorded.
    pub events: Vec<RecordedEvent>,
}

impl AppendResult {
    /// Builds the result from the recorded events (at least one).
    pub fn from_events(events: Vec<RecordedEvent>) -> Self {
        let first = events.first();
        let last = events.last();
        Self {
            aggregate_version: last.map_or(0, |e| e.aggregate_version),
            first_position: first.map_or(0, |e| e.position),
            last_position: last.map_or(0, |e| e.position),
            events,
        }
    }
}

/// Several appends and optionally one checkpoint, committed together or not at all.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// The appends, applied in order (a later one sees an earlier one's events).
    pub appends: Vec<AppendRequest>,
    /// A checkpoint to advance in the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointWrite>,
}

/// A transaction after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedTransaction {
    /// The appends.
    pub appends: Vec<ProposedAppend>,
    /// The checkpoint to write.
    pub checkpoint: Option<CheckpointWrite>,
}

impl Transaction {
    /// Validates every append (error fields say which: `appends[1].events[0].data`) and
    /// the checkpoint.
    pub fn prepare(self, limits: &Limits) -> Result<ProposedTransaction> {
        if self.appends.is_empty() && self.checkpoint.is_none() {
            return Err(Error::invalid(
                "appends",
                "a transaction must hold at least one append or a checkpoint",
            ));
        }
        let total: usize = self.appends.iter().map(|a| a.events.len()).sum();
        check_batch("appends", total, limits)?;
        let mut ids = HashSet::new();
        let mut appends = Vec::with_capacity(self.appends.len());
        for (i, a) in self.appends.into_iter().enumerate() {
            let p = a.prepare_at(limits, &format!("appends[{i}]."), false)?;
            for e in &p.events {
                if !ids.insert(e.event_id) {
                    return Err(Error::invalid(
                        format!("appends[{i}].events"),
                        format!("event_id {} appears twice in the transaction", e.event_id),
                    ));
                }
            }
            appends.push(p);
        }
        if let Some(c) = &self.checkpoint {
            c.validate("checkpoint.")?;
        }
        Ok(ProposedTransaction {
            appends,
            checkpoint: self.checkpoint,
        })
    }
}

impl From<ProposedAppend> for ProposedTransaction {
    fn from(a: ProposedAppend) -> Self {
        Self {
            appends: vec![a],
            checkpoint: None,
        }
    }
}

/// What the store answers to a transaction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionResult {
    /// One result per append, in order.
    pub results: Vec<AppendResult>,
    /// The checkpoint as stored, when the transaction held one.
    pub checkpoint: Option<Checkpoint>,
}
