//! Persistent subscriptions: KurrentDB's server-side consumer groups (competing
//! consumers with acknowledgements), on annal's log and checkpoints.
//!
//! Invariants:
//! - Definitions live in the log. Every create, update and delete is an event in the
//!   system stream [`CONFIG_STREAM`] (who and when, like every annal event), appended
//!   expecting that stream's exact version, so two servers on one store cannot both
//!   create a group; the registry folds that stream and re-reads it before each change.
//!   A group's *generation* is the version of the event that created it: a group deleted
//!   and created again starts afresh.
//! - A group's progress is the store checkpoint `$persistent:<generation>:<source>::<group>`:
//!   the highest stream version (`$all`: log position) at or below which every event the
//!   group read is settled (acknowledged, skipped or parked). Delivery is at least once:
//!   a group resumes after its checkpoint, so what was delivered but not settled when the
//!   server stopped is delivered again.
//! - One task per group (the dispatcher) owns the group's state. It reads from the store
//!   only while some consumer has a free slot (`buffer_size` unacknowledged events per
//!   consumer) and fewer than a page of events wait, so a slow or stuck consumer costs
//!   bounded memory, never an unbounded buffer.
//! - An event is in flight with one consumer at a time. It is offered again, its retry
//!   count raised by one, when nacked with `retry`, when its message timeout passes, or
//!   when its consumer leaves; past `max_retry_count` retries, or when nacked with `park`, it is parked: a
//!   `$parked` event naming it is appended to `$persistentsubscription-<source>::<group>-parked`,
//!   and replaying parked messages offers those events again.
//! - Deleting or updating a group, or restarting the subsystem, stops its dispatcher and
//!   ends its consumers' calls (KurrentDB's "persistent subscription dropped"); the
//!   checkpoint is written first.
//!
//! One `annal serve` process dispatches a group; two servers on one store would each
//! dispatch it (docs/kurrentdb.md).

use crate::call::caller;
use crate::convert::{self, stream_id, stream_name, uuid_from_pb};
use crate::filter::EventFilter;
use crate::pb::event_store::client::Empty;
use crate::pb::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptions;
use crate::pb::event_store::client::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, ListReq, ListResp,
    ReadReq, ReadResp, ReplayParkedReq, ReplayParkedResp, SubscriptionInfo, UpdateReq, UpdateResp,
    create_req, delete_req, get_info_req, list_req, read_req, read_resp, replay_parked_req,
    subscription_info, update_req,
};
use annal_core::streams::{self, StreamRead};
use annal_core::{
    AppendRequest, CheckpointWrite, Direction, Error, ExpectedVersion, Filter, NewEvent, RawJson,
    RecordedEvent, Store, Uuid,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The system stream holding every definition change.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
/// Event types of [`CONFIG_STREAM`].
const CREATED: &str = "$PersistentSubscriptionCreated";
const UPDATED: &str = "$PersistentSubscriptionUpdated";
const DELETED: &str = "$PersistentSubscriptionDeleted";
/// The event type recording a parked event.
pub const PARKED_EVENT_TYPE: &str = "$parked";
/// The source name of a subscription to every stream.
const ALL: &str = "$all";
/// Most events read from the store at a time.
const PAGE: usize = 500;
/// How often a dispatcher looks at message timeouts and due checkpoints.
const TICK: Duration = Duration::from_millis(200);
/// How long a caught-up dispatcher waits for a commit before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// Longest stream name and group name together, so that the names derived from them
/// (checkpoints, the parked stream) stay within annal's 255 bytes.
const MAX_SOURCE_AND_GROUP: usize = 200;
/// How long deleting or updating a group waits for its dispatcher to end.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Attempts at appending a definition change when others race with it.
const CONFIG_RETRIES: usize = 8;

type Key = (String, String);
type Tx = mpsc::Sender<Result<ReadResp, Status>>;

/// Where a group starts when it has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StartFrom {
    Start,
    End,
    /// A stream revision (inclusive).
    Revision(u64),
    /// A log position (inclusive).
    Position(u64),
}

/// A `$all` group's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FilterDef {
    on_stream: bool,
    #[serde(default)]
    regex: String,
    #[serde(default)]
    prefixes: Vec<String>,
}

/// A group's settings, as stored in its definition event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Settings {
    start: StartFrom,
    #[serde(default)]
    filter: Option<FilterDef>,
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout_ms: i64,
    checkpoint_after_ms: i64,
    consumer_strategy: String,
}

/// A definition change, the data of a [`CONFIG_STREAM`] event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    source: String,
    group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<Settings>,
}

/// A defined group.
#[derive(Debug, Clone)]
struct Definition {
    source: String,
    group: String,
    settings: Settings,
    generation: u64,
}

impl Definition {
    fn checkpoint_name(&self) -> String {
        format!(
            "$persistent:{}:{}::{}",
            self.generation, self.source, self.group
        )
    }

    fn parked_stream(&self) -> String {
        format!(
            "$persistentsubscription-{}::{}-parked",
            self.source, self.group
        )
    }

    fn replay_checkpoint_name(&self) -> String {
        format!(
            "$persistent-parked:{}:{}::{}",
            self.generation, self.source, self.group
        )
    }

    fn is_all(&self) -> bool {
        self.source == ALL
    }

    /// A cursor value (stream version, or log position) as KurrentDB shows it.
    fn show(&self, cursor: u64) -> String {
        if self.is_all() {
            format!("C:{cursor}/P:{cursor}")
        } else if cursor == 0 {
            String::new()
        } else {
            (cursor - 1).to_string()
        }
    }

    fn start_from(&self) -> String {
        match (self.settings.start, self.is_all()) {
            (StartFrom::Start, false) => "0".into(),
            (StartFrom::Start, true) => "C:0/P:0".into(),
            (StartFrom::End, false) => "-1".into(),
            (StartFrom::End, true) => "C:-1/P:-1".into(),
            (StartFrom::Revision(r), _) => r.to_string(),
            (StartFrom::Position(p), _) => format!("C:{p}/P:{p}"),
        }
    }
}

use crate::status::{group_not_found as not_found, to_status};

fn group_name(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("a group name must not be empty"));
    }
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "a group name must be 1-255 bytes without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn stream_source(
    id: Option<&crate::pb::event_store::client::StreamIdentifier>,
) -> Result<String, Status> {
    let name = stream_name(id)?;
    if name == ALL {
        return Err(Status::invalid_argument(
            "'$all' is not a stream: use the $all option",
        ));
    }
    Ok(name)
}

fn ticks_to_ms(ticks: i64) -> i64 {
    ticks / 10_000
}

fn non_negative(field: &str, v: i32) -> Result<i32, Status> {
    if v < 0 {
        return Err(Status::invalid_argument(format!(
            "{field} must not be negative (got {v})"
        )));
    }
    Ok(v)
}

/// Strategy names KurrentDB knows.
const STRATEGIES: [&str; 4] = [
    "RoundRobin",
    "DispatchToSingle",
    "Pinned",
    "PinnedByCorrelation",
];

fn strategy_from_enum(n: i32) -> String {
    match n {
        0 => "DispatchToSingle",
        2 => "Pinned",
        _ => "RoundRobin",
    }
    .to_owned()
}

/// The settings fields both Create and Update carry (their message types differ).
struct WireSettings {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout_ms: i64,
    checkpoint_after_ms: i64,
    consumer_strategy: String,
}

impl WireSettings {
    fn check(self, start: StartFrom, filter: Option<FilterDef>) -> Result<Settings, Status> {
        if !STRATEGIES.contains(&self.consumer_strategy.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown consumer strategy '{}' (known: {})",
                self.consumer_strategy,
                STRATEGIES.join(", ")
            )));
        }
        let min = non_negative("min_checkpoint_count", self.min_checkpoint_count)?;
        let max = non_negative("max_checkpoint_count", self.max_checkpoint_count)?;
        if max > 0 && min > max {
            return Err(Status::invalid_argument(format!(
                "min_checkpoint_count ({min}) exceeds max_checkpoint_count ({max})"
            )));
        }
        if self.message_timeout_ms < 0 || self.checkpoint_after_ms < 0 {
            return Err(Status::invalid_argument(
                "message timeout and checkpoint interval must not be negative",
            ));
        }
        Ok(Settings {
            start,
            filter,
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            max_retry_count: non_negative("max_retry_count", self.max_retry_count)?,
            min_checkpoint_count: min,
            max_checkpoint_count: max,
            max_subscriber_count: non_negative("max_subscriber_count", self.max_subscriber_count)?,
            live_buffer_size: non_negative("live_buffer_size", self.live_buffer_size)?,
            read_batch_size: non_negative("read_batch_size", self.read_batch_size)?,
            history_buffer_size: non_negative("history_buffer_size", self.history_buffer_size)?,
            message_timeout_ms: self.message_timeout_ms,
            checkpoint_after_ms: self.checkpoint_after_ms,
            consumer_strategy: self.consumer_strategy,
        })
    }
}

/// A request's stream-or-`$all` option as a group's source. The request types differ
/// per call; each call site imports its own `StreamOption`. `$what` names the call.
macro_rules! source_of {
    ($option:expr, $what:literal) => {
        match $option {
            Some(StreamOption::StreamIdentifier(s)) => stream_source(Some(s))?,
            Some(StreamOption::All(_)) => ALL.to_owned(),
            None => {
                return Err(Status::invalid_argument(concat!(
                    $what,
                    " needs a stream or $all"
                )));
            }
        }
    };
}

/// Where Create or Update says a group starts (call sites import their own
/// `RevisionOption` / `AllOption`).
macro_rules! start_from {
    (stream $option:expr) => {
        match $option {
            Some(RevisionOption::Revision(r)) => StartFrom::Revision(r),
            Some(RevisionOption::End(_)) => StartFrom::End,
            Some(RevisionOption::Start(_)) | None => StartFrom::Start,
        }
    };
    (all $option:expr) => {
        match $option {
            Some(AllOption::Position(p)) => StartFrom::Position(p.commit_position),
            Some(AllOption::End(_)) => StartFrom::End,
            Some(AllOption::Start(_)) | None => StartFrom::Start,
        }
    };
}

/// The settings Create and Update share, read from either message (their types differ,
/// their fields do not); `$strategy` is the consumer strategy's name.
macro_rules! wire_settings {
    ($s:expr, $req:ident, $strategy:expr) => {{
        use $req::settings::{CheckpointAfter, MessageTimeout};
        let s = $s;
        WireSettings {
            resolve_links: s.resolve_links,
            extra_statistics: s.extra_statistics,
            max_retry_count: s.max_retry_count,
            min_checkpoint_count: s.min_checkpoint_count,
            max_checkpoint_count: s.max_checkpoint_count,
            max_subscriber_count: s.max_subscriber_count,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            history_buffer_size: s.history_buffer_size,
            message_timeout_ms: match s.message_timeout {
                Some(MessageTimeout::MessageTimeoutMs(ms)) => i64::from(ms),
                Some(MessageTimeout::MessageTimeoutTicks(t)) => ticks_to_ms(t),
                None => 30_000,
            },
            checkpoint_after_ms: match s.checkpoint_after {
                Some(CheckpointAfter::CheckpointAfterMs(ms)) => i64::from(ms),
                Some(CheckpointAfter::CheckpointAfterTicks(t)) => ticks_to_ms(t),
                None => 2_000,
            },
            consumer_strategy: $strategy(&s),
        }
    }};
}

#[allow(deprecated)]
fn create_settings(s: Option<create_req::Settings>) -> WireSettings {
    wire_settings!(
        s.unwrap_or_default(),
        create_req,
        |s: &create_req::Settings| {
            if s.consumer_strategy.is_empty() {
                strategy_from_enum(s.named_consumer_strategy)
            } else {
                s.consumer_strategy.clone()
            }
        }
    )
}

fn update_settings(s: Option<update_req::Settings>) -> WireSettings {
    wire_settings!(
        s.unwrap_or_default(),
        update_req,
        |s: &update_req::Settings| { strategy_from_enum(s.named_consumer_strategy) }
    )
}

/// The definitions folded from [`CONFIG_STREAM`] up to `version`.
#[derive(Default)]
struct Defs {
    version: u64,
    map: BTreeMap<Key, Definition>,
}

/// The `PersistentSubscriptions` service: definitions and one dispatcher per group.
pub struct Persistent {
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
    defs: tokio::sync::Mutex<Defs>,
    running: Mutex<HashMap<Key, Handle>>,
    next_consumer: AtomicU64,
}

/// A running dispatcher.
#[derive(Clone)]
struct Handle {
    generation: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Closes when the dispatcher has ended (its last checkpoint written).
    exited: watch::Receiver<()>,
}

impl Persistent {
    /// On `store`; `shutdown` turning true stops every group (checkpoints written).
    pub fn new(store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            shutdown,
            defs: tokio::sync::Mutex::new(Defs::default()),
            running: Mutex::new(HashMap::new()),
            next_consumer: AtomicU64::new(1),
        }
    }

    /// Reads definition changes newer than `defs.version`.
    async fn refresh(&self, defs: &mut Defs) -> Result<(), Status> {
        loop {
            let page = self
                .store
                .read_aggregate(
                    CONFIG_STREAM,
                    Direction::Forward,
                    Some(defs.version + 1),
                    PAGE,
                )
                .await
                .map_err(to_status)?;
            for e in &page {
                defs.version = e.aggregate_version;
                let Ok(change) = e.data.to_value::<Change>() else {
                    tracing::warn!(
                        position = e.position,
                        "unreadable persistent subscription definition skipped"
                    );
                    continue;
                };
                let key = (change.source.clone(), change.group.clone());
                match (e.event_type.as_str(), change.settings) {
                    (CREATED, Some(settings)) => {
                        defs.map.insert(
                            key,
                            Definition {
                                source: change.source,
                                group: change.group,
                                settings,
                                generation: e.aggregate_version,
                            },
                        );
                    }
                    (UPDATED, Some(settings)) => {
                        if let Some(d) = defs.map.get_mut(&key) {
                            d.settings = settings;
                        }
                    }
                    (DELETED, _) => {
                        defs.map.remove(&key);
                    }
                    _ => {}
                }
            }
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// The group's definition and its running dispatcher (started if needed), looked up
    /// and started under the definitions lock, so a concurrent delete either comes first
    /// (NOT_FOUND here) or stops the dispatcher started here.
    async fn attach(&self, source: &str, group: &str) -> Result<(Definition, Handle), Status> {
        let defs = self.current().await?;
        let def = Self::lookup(&defs, source, group)?;
        let handle = self.dispatcher(&def);
        Ok((def, handle))
    }

    async fn definition(&self, source: &str, group: &str) -> Result<Definition, Status> {
        Self::lookup(&*self.current().await?, source, group)
    }

    /// The definitions, brought up to date, locked.
    async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, Defs>, Status> {
        let mut defs = self.defs.lock().await;
        self.refresh(&mut defs).await?;
        Ok(defs)
    }

    fn lookup(defs: &Defs, source: &str, group: &str) -> Result<Definition, Status> {
        defs.map
            .get(&(source.to_owned(), group.to_owned()))
            .cloned()
            .ok_or_else(|| not_found(source, group))
    }

    /// Appends a definition change after checking it against the current definitions
    /// (`check` answers the error to give, if any), retrying when another writer raced.
    async fn change(
        &self,
        user: Option<String>,
        event_type: &str,
        change: Change,
        check: impl Fn(Option<&Definition>) -> Result<(), Status>,
    ) -> Result<Option<Definition>, Status> {
        let key = (change.source.clone(), change.group.clone());
        let mut defs = self.defs.lock().await;
        for _ in 0..CONFIG_RETRIES {
            self.refresh(&mut defs).await?;
            check(defs.map.get(&key))?;
            let data = RawJson::from_value(&change)
                .map_err(|e| Status::internal(format!("definition: {e}")))?;
            let mut append = AppendRequest::new(
                CONFIG_STREAM,
                CONFIG_STREAM,
                ExpectedVersion::Exact(defs.version),
            )
            .event(NewEvent::raw(event_type, data));
            append.user_id = user.clone();
            match self.store.append(append).await {
                Ok(_) => {
                    self.refresh(&mut defs).await?;
                    return Ok(defs.map.get(&key).cloned());
                }
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(to_status(e)),
            }
        }
        Err(Status::aborted(
            "persistent subscription definitions kept changing; try again",
        ))
    }

    /// Stops the dispatcher of `key` if one runs, dropping its consumers with `why`,
    /// and waits (a bounded while) until it has written its last checkpoint, so that a
    /// consumer subscribing again resumes from there.
    async fn stop(&self, key: &Key, why: &str) {
        let handle = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        if let Some(mut h) = handle {
            let _ = h.cmds.send(Cmd::Stop(why.to_owned()));
            let ended = async { while h.exited.changed().await.is_ok() {} };
            if tokio::time::timeout(STOP_WAIT, ended).await.is_err() {
                tracing::warn!(group = %key.1, source = %key.0, "a stopped persistent subscription took long to end");
            }
        }
    }

    /// The dispatcher of `def`, started if it does not run.
    fn dispatcher(&self, def: &Definition) -> Handle {
        let key = (def.source.clone(), def.group.clone());
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = running.get(&key)
            && h.generation == def.generation
            && !h.cmds.is_closed()
        {
            return h.clone();
        }
        let (cmds, rx) = mpsc::unbounded_channel();
        let (exit, exited) = watch::channel(());
        let handle = Handle {
            generation: def.generation,
            cmds,
            exited,
        };
        if let Some(old) = running.insert(key, handle.clone()) {
            let _ = old.cmds.send(Cmd::Stop("the group was redefined".into()));
        }
        let dispatcher = Dispatcher::new(self.store.clone(), def.clone());
        tokio::spawn(dispatcher.run(rx, self.shutdown.clone(), exit));
        handle
    }

    async fn info(&self, def: &Definition) -> Result<SubscriptionInfo, Status> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(def.source.clone(), def.group.clone()))
            .filter(|h| h.generation == def.generation)
            .cloned();
        let stats = match running {
            Some(h) => {
                let (reply, rx) = oneshot::channel();
                if h.cmds.send(Cmd::Info(reply)).is_ok() {
                    rx.await.ok()
                } else {
                    None
                }
            }
            None => None,
        };
        let stats = match stats {
            Some(s) => s,
            None => {
                let checkpoint = self
                    .store
                    .checkpoint(&def.checkpoint_name())
                    .await
                    .map_err(to_status)?
                    .map(|c| c.position);
                Stats {
                    checkpoint,
                    ..Stats::default()
                }
            }
        };
        Ok(subscription_info(def, stats))
    }
}

/// What a dispatcher reports.
#[derive(Debug, Default)]
struct Stats {
    checkpoint: Option<u64>,
    last_known: Option<u64>,
    total_items: u64,
    queued: usize,
    retries_queued: usize,
    in_flight: usize,
    parked: u64,
    connections: Vec<subscription_info::ConnectionInfo>,
}

fn subscription_info(def: &Definition, st: Stats) -> SubscriptionInfo {
    let s = &def.settings;
    SubscriptionInfo {
        event_source: def.source.clone(),
        group_name: def.group.clone(),
        status: "Live".into(),
        connections: st.connections,
        average_per_second: 0,
        total_items: i64::try_from(st.total_items).unwrap_or(i64::MAX),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: st.checkpoint.map(|c| def.show(c)).unwrap_or_default(),
        last_known_event_position: st.last_known.map(|c| def.show(c)).unwrap_or_default(),
        resolve_link_tos: s.resolve_links,
        start_from: def.start_from(),
        message_timeout_milliseconds: i32::try_from(s.message_timeout_ms).unwrap_or(i32::MAX),
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count,
        live_buffer_size: s.live_buffer_size,
        buffer_size: s.history_buffer_size,
        read_batch_size: s.read_batch_size,
        check_point_after_milliseconds: i32::try_from(s.checkpoint_after_ms).unwrap_or(i32::MAX),
        min_check_point_count: s.min_checkpoint_count,
        max_check_point_count: s.max_checkpoint_count,
        read_buffer_count: i32::try_from(st.queued).unwrap_or(i32::MAX),
        live_buffer_count: 0,
        retry_buffer_count: i32::try_from(st.retries_queued).unwrap_or(i32::MAX),
        total_in_flight_messages: i32::try_from(st.in_flight).unwrap_or(i32::MAX),
        outstanding_messages_count: i32::try_from(st.in_flight).unwrap_or(i32::MAX),
        named_consumer_strategy: s.consumer_strategy.clone(),
        max_subscriber_count: s.max_subscriber_count,
        parked_message_count: i64::try_from(st.parked).unwrap_or(i64::MAX),
    }
}

/// Where a new group starts, resolved against the store (`end` becomes the head now,
/// so events appended after the group was created reach it).
async fn initial_checkpoint(store: &dyn Store, def: &Definition) -> Result<Option<u64>, Status> {
    Ok(match def.settings.start {
        StartFrom::End if def.is_all() => Some(store.head(&[]).await.map_err(to_status)?),
        StartFrom::End => Some(
            streams::state(store, &def.source)
                .await
                .map_err(to_status)?
                .version,
        ),
        _ => None,
    })
}

type RespStream = tonic::codegen::BoxStream<ReadResp>;

#[tonic::async_trait]
impl PersistentSubscriptions for Persistent {
    #[allow(deprecated)]
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        use create_req::all_options::{AllOption, FilterOption, filter_options};
        use create_req::options::StreamOption;
        use create_req::stream_options::RevisionOption;
        let user = caller(&request, true)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("create needs options"))?;
        let group = group_name(&o.group_name)?;
        let wire = create_settings(o.settings.clone());
        let (source, start, filter) = match o.stream_option {
            Some(StreamOption::Stream(s)) => {
                let start = start_from!(stream s.revision_option);
                (stream_source(s.stream_identifier.as_ref())?, start, None)
            }
            Some(StreamOption::All(a)) => {
                let start = start_from!(all a.all_option);
                let filter = match a.filter_option {
                    Some(FilterOption::Filter(f)) => match f.filter {
                        Some(filter_options::Filter::StreamIdentifier(e)) => Some(FilterDef {
                            on_stream: true,
                            regex: e.regex,
                            prefixes: e.prefix,
                        }),
                        Some(filter_options::Filter::EventType(e)) => Some(FilterDef {
                            on_stream: false,
                            regex: e.regex,
                            prefixes: e.prefix,
                        }),
                        None => None,
                    },
                    _ => None,
                };
                if let Some(f) = &filter {
                    EventFilter::compile(f.on_stream, &f.regex, &f.prefixes, 1)?;
                }
                (ALL.to_owned(), start, filter)
            }
            // Clients older than 21.10 name the stream here and the revision in settings.
            None => {
                let revision = o.settings.as_ref().map_or(0, |s| s.revision);
                (
                    stream_source(o.stream_identifier.as_ref())?,
                    if revision == u64::MAX {
                        StartFrom::End
                    } else {
                        StartFrom::Revision(revision)
                    },
                    None,
                )
            }
        };
        let settings = wire.check(start, filter)?;
        // The group's checkpoint and parked-stream names hold both (at most 255 bytes).
        if source.len() + group.len() > MAX_SOURCE_AND_GROUP {
            return Err(Status::invalid_argument(format!(
                "a stream name and group name may have {MAX_SOURCE_AND_GROUP} bytes together; these have {}",
                source.len() + group.len()
            )));
        }
        let def = self
            .change(
                user,
                CREATED,
                Change {
                    source: source.clone(),
                    group: group.clone(),
                    settings: Some(settings),
                },
                |existing| match existing {
                    Some(_) => Err(Status::already_exists(format!(
                        "Subscription group '{group}' on stream '{source}' already exists."
                    ))),
                    None => Ok(()),
                },
            )
            .await?
            .ok_or_else(|| Status::aborted("the group was deleted as it was created; try again"))?;
        if let Some(position) = initial_checkpoint(self.store.as_ref(), &def).await? {
            self.store
                .put_checkpoint(CheckpointWrite::new(def.checkpoint_name(), position))
                .await
                .map_err(to_status)?;
        }
        // Events parked by an earlier group of the same name are not this group's.
        let parked_before = self
            .store
            .aggregate(&def.parked_stream())
            .await
            .map_err(to_status)?
            .map_or(0, |a| a.version);
        if parked_before > 0 {
            self.store
                .put_checkpoint(CheckpointWrite::new(
                    def.replay_checkpoint_name(),
                    parked_before,
                ))
                .await
                .map_err(to_status)?;
        }
        Ok(Response::new(CreateResp {}))
    }

    #[allow(deprecated)]
    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        use update_req::all_options::AllOption;
        use update_req::options::StreamOption;
        use update_req::stream_options::RevisionOption;
        let user = caller(&request, true)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("update needs options"))?;
        let group = group_name(&o.group_name)?;
        let wire = update_settings(o.settings);
        let (source, start) = match o.stream_option {
            Some(StreamOption::Stream(s)) => (
                stream_source(s.stream_identifier.as_ref())?,
                start_from!(stream s.revision_option),
            ),
            Some(StreamOption::All(a)) => (ALL.to_owned(), start_from!(all a.all_option)),
            None => (
                stream_source(o.stream_identifier.as_ref())?,
                StartFrom::Start,
            ),
        };
        let current = self.definition(&source, &group).await?;
        // The filter of a $all group is fixed at creation.
        let settings = wire.check(start, current.settings.filter.clone())?;
        let key = (source.clone(), group.clone());
        self.change(
            user,
            UPDATED,
            Change {
                source: source.clone(),
                group: group.clone(),
                settings: Some(settings),
            },
            |existing| match existing {
                Some(_) => Ok(()),
                None => Err(not_found(&source, &group)),
            },
        )
        .await?;
        self.stop(&key, "the group's settings were updated").await;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use delete_req::options::StreamOption;
        let user = caller(&request, true)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("delete needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "delete");
        let key = (source.clone(), group.clone());
        self.change(
            user,
            DELETED,
            Change {
                source: source.clone(),
                group: group.clone(),
                settings: None,
            },
            |existing| match existing {
                Some(_) => Ok(()),
                None => Err(not_found(&source, &group)),
            },
        )
        .await?;
        self.stop(&key, "the group was deleted").await;
        Ok(Response::new(DeleteResp {}))
    }

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<RespStream>, Status> {
        use read_req::options::{StreamOption, uuid_option};
        let user = caller(&request, false)?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the call ended before its options"))?;
        let Some(read_req::Content::Options(o)) = first.content else {
            return Err(Status::invalid_argument(
                "the first message of a persistent subscription must be its options",
            ));
        };
        let source = source_of!(o.stream_option.as_ref(), "read");
        let group = group_name(&o.group_name)?;
        let (_, handle) = self.attach(&source, &group).await?;
        let structured = matches!(
            o.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        let slots = match usize::try_from(o.buffer_size) {
            Ok(0) | Err(_) => 10,
            Ok(n) => n.min(PAGE),
        };
        // Room for the confirmation, `slots` events and the status that ends the call.
        let (tx, rx) = mpsc::channel(slots + 2);
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: format!("{source}::{group}"),
                },
            )),
        };
        // The confirmation goes first: the channel is new and has room for it.
        tx.try_send(Ok(confirmation))
            .map_err(|_| Status::internal("a new subscription channel was full"))?;
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let from = format!("consumer-{id}");
        let (reply, joined) = oneshot::channel();
        let (gone_tx, mut gone) = oneshot::channel::<()>();
        let consumer = Consumer {
            id,
            tx,
            _gone: gone_tx,
            slots,
            in_flight: 0,
            structured,
            from,
            user: user.unwrap_or_default(),
            total: 0,
        };
        let stopping = || Status::unavailable("the group is stopping; subscribe again");
        handle
            .cmds
            .send(Cmd::Join(consumer, reply))
            .map_err(|_| stopping())?;
        joined.await.map_err(|_| stopping())??;
        let cmds = handle.cmds.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    msg = incoming.message() => match msg {
                        Ok(Some(msg)) => msg,
                        _ => break,
                    },
                    // The dispatcher let the consumer go: stop reading its acks, so the
                    // call ends even if the client keeps its side open.
                    _ = &mut gone => return,
                };
                let cmd = match msg.content {
                    Some(read_req::Content::Ack(a)) => Cmd::Ack(id, ids(&a.ids)),
                    Some(read_req::Content::Nack(n)) => Cmd::Nack(
                        id,
                        ids(&n.ids),
                        read_req::nack::Action::try_from(n.action)
                            .unwrap_or(read_req::nack::Action::Unknown),
                        n.reason,
                    ),
                    _ => continue,
                };
                if cmds.send(cmd).is_err() {
                    return;
                }
            }
            let _ = cmds.send(Cmd::Leave(id));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        use get_info_req::options::StreamOption;
        caller(&request, false)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("get info needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "get info");
        let def = self.definition(&source, &group).await?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(self.info(&def).await?),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        use replay_parked_req::options::{StopAtOption, StreamOption};
        caller(&request, true)?;
        let o = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("replay needs options"))?;
        let group = group_name(&o.group_name)?;
        let source = source_of!(o.stream_option.as_ref(), "replay");
        let stop_at = match o.stop_at_option {
            Some(StopAtOption::StopAt(n)) if n >= 0 => Some(n.unsigned_abs()),
            _ => None,
        };
        let (_, handle) = self.attach(&source, &group).await?;
        let (reply, done) = oneshot::channel();
        handle
            .cmds
            .send(Cmd::Replay(stop_at, reply))
            .map_err(|_| Status::unavailable("the group is stopping; try again"))?;
        done.await
            .map_err(|_| Status::unavailable("the group is stopping; try again"))??;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        caller(&request, false)?;
        let option = request.into_inner().options.and_then(|o| o.list_option);
        let only = match option {
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(stream_source(Some(&id))?),
                Some(StreamOption::All(_)) => Some(ALL.to_owned()),
                None => None,
            },
            _ => None,
        };
        let defs: Vec<Definition> = {
            let defs = self.current().await?;
            defs.map
                .values()
                .filter(|d| only.as_ref().is_none_or(|s| *s == d.source))
                .cloned()
                .collect()
        };
        if let Some(s) = &only
            && defs.is_empty()
        {
            // KurrentDB answers "not found" for a stream with no groups.
            return Err(Status::not_found(format!(
                "no persistent subscriptions on '{s}'"
            )));
        }
        let mut subscriptions = Vec::with_capacity(defs.len());
        for d in &defs {
            subscriptions.push(self.info(d).await?);
        }
        Ok(Response::new(ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        caller(&request, true)?;
        let keys: Vec<Key> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for key in &keys {
            self.stop(key, "the persistent subscription subsystem restarted")
                .await;
        }
        Ok(Response::new(Empty {}))
    }
}

fn ids(ids: &[crate::pb::event_store::client::Uuid]) -> Vec<Uuid> {
    ids.iter()
        .filter_map(|i| uuid_from_pb(Some(i)).ok().flatten())
        .collect()
}

/// What a dispatcher is told.
enum Cmd {
    Join(Consumer, oneshot::Sender<Result<(), Status>>),
    Ack(u64, Vec<Uuid>),
    Nack(u64, Vec<Uuid>, read_req::nack::Action, String),
    Leave(u64),
    Info(oneshot::Sender<Stats>),
    Replay(Option<u64>, oneshot::Sender<Result<(), Status>>),
    Stop(String),
}

/// A connected consumer.
struct Consumer {
    id: u64,
    tx: Tx,
    /// Dropped with the consumer: tells its call's ack reader to stop.
    _gone: oneshot::Sender<()>,
    slots: usize,
    in_flight: usize,
    structured: bool,
    from: String,
    user: String,
    total: u64,
}

impl Consumer {
    /// Whether it has a free slot, and its channel room for one more event while still
    /// keeping a place for the status that ends the call.
    fn can_take(&self) -> bool {
        self.in_flight < self.slots && self.tx.capacity() > 1
    }
}

/// An event waiting or in flight.
struct Item {
    event: Arc<RecordedEvent>,
    retry: i32,
    /// Its cursor value; `None` for a replayed parked event (already settled once).
    key: Option<u64>,
    /// For a replayed parked event: its record's version in the parked stream.
    parked: Option<u64>,
}

struct InFlight {
    item: Item,
    consumer: u64,
    deadline: Option<Instant>,
}

/// One group's state, owned by its task.
struct Dispatcher {
    store: Arc<dyn Store>,
    def: Definition,
    filter: Option<EventFilter>,
    /// Stream: the last version read; `$all`: the last position read.
    cursor: u64,
    loaded: bool,
    at_head: bool,
    head_seen: u64,
    queue: VecDeque<Item>,
    in_flight: HashMap<Uuid, InFlight>,
    /// Cursor values read and not yet settled.
    outstanding: BTreeSet<u64>,
    checkpointed: Option<u64>,
    settled_since: u64,
    last_checkpoint: Instant,
    consumers: Vec<Consumer>,
    next_rr: usize,
    total_items: u64,
    parked_total: u64,
    /// Parked records replayed and settled through this version (stored).
    replayed: u64,
    /// The last parked record read for replay.
    replay_read: u64,
    /// Parked records replayed and not yet settled, by version.
    replay_outstanding: BTreeSet<u64>,
    /// Events past their retry limit, to be parked by the task.
    to_park: Vec<Item>,
}

impl Dispatcher {
    fn new(store: Arc<dyn Store>, def: Definition) -> Self {
        let filter = def.settings.filter.as_ref().and_then(|f| {
            EventFilter::compile(f.on_stream, &f.regex, &f.prefixes, 1)
                .map_err(|e| tracing::warn!(error = %e.message(), "persistent subscription filter unusable; delivering everything"))
                .ok()
        });
        Self {
            store,
            def,
            filter,
            cursor: 0,
            loaded: false,
            at_head: false,
            head_seen: 0,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            outstanding: BTreeSet::new(),
            checkpointed: None,
            settled_since: 0,
            last_checkpoint: Instant::now(),
            consumers: Vec::new(),
            next_rr: 0,
            total_items: 0,
            parked_total: 0,
            replayed: 0,
            replay_read: 0,
            replay_outstanding: BTreeSet::new(),
            to_park: Vec::new(),
        }
    }

    /// Loads the checkpoint and parked counts (once; retried until it works).
    async fn load(&mut self) -> Result<(), Error> {
        if self.loaded {
            return Ok(());
        }
        let stored = self.store.checkpoint(&self.def.checkpoint_name()).await?;
        self.head_seen = self.store.head(&[]).await?;
        self.cursor = match (stored, self.def.settings.start) {
            (Some(c), _) => c.position,
            (None, StartFrom::Start) => 0,
            (None, StartFrom::Revision(r)) => r,
            (None, StartFrom::Position(p)) => p.saturating_sub(1),
            (None, StartFrom::End) if self.def.is_all() => self.head_seen,
            (None, StartFrom::End) => {
                streams::state(self.store.as_ref(), &self.def.source)
                    .await?
                    .version
            }
        };
        self.checkpointed = Some(self.cursor);
        self.replayed = self
            .store
            .checkpoint(&self.def.replay_checkpoint_name())
            .await?
            .map_or(0, |c| c.position);
        self.replay_read = self.replayed;
        self.parked_total = self
            .store
            .aggregate(&self.def.parked_stream())
            .await?
            .map_or(0, |a| a.version);
        self.loaded = true;
        Ok(())
    }

    fn free_slots(&self) -> bool {
        self.consumers.iter().any(Consumer::can_take)
    }

    fn read_size(&self) -> usize {
        usize::try_from(self.def.settings.read_batch_size)
            .unwrap_or(0)
            .clamp(100, PAGE)
    }

    fn wants_events(&self) -> bool {
        self.loaded && self.free_slots() && self.queue.len() < self.read_size()
    }

    /// Reads the next page into the queue.
    async fn read_page(&mut self) -> Result<(), Error> {
        let size = self.read_size();
        let events = if self.def.is_all() {
            self.store
                .read_all(self.cursor, size, &Filter::default())
                .await?
        } else {
            match streams::read(
                self.store.as_ref(),
                &self.def.source,
                Direction::Forward,
                Some(self.cursor + 1),
                size,
            )
            .await
            {
                Ok(StreamRead::Events(e)) => e,
                Ok(StreamRead::NotFound) | Err(Error::StreamDeleted { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        self.at_head = events.len() < size;
        for e in events {
            let key = if self.def.is_all() {
                e.position
            } else {
                e.aggregate_version
            };
            self.cursor = self.cursor.max(key);
            if self.filter.as_ref().is_some_and(|f| !f.matches(&e)) {
                continue;
            }
            self.outstanding.insert(key);
            self.queue.push_back(Item {
                event: Arc::new(e),
                retry: 0,
                key: Some(key),
                parked: None,
            });
        }
        Ok(())
    }

    /// Which consumer takes `item`, by the group's strategy; `None` if none can now.
    fn pick(&mut self, item: &Item) -> Option<usize> {
        let n = self.consumers.len();
        if n == 0 {
            return None;
        }
        let free = Consumer::can_take;
        match self.def.settings.consumer_strategy.as_str() {
            "DispatchToSingle" => self.consumers.iter().position(free),
            s @ ("Pinned" | "PinnedByCorrelation") => {
                let subject = match (s, &item.event.correlation_id) {
                    ("PinnedByCorrelation", Some(c)) => c.as_str(),
                    _ => item.event.aggregate_id.as_str(),
                };
                let mut h = std::collections::hash_map::DefaultHasher::new();
                subject.hash(&mut h);
                let i = usize::try_from(h.finish() % n as u64).unwrap_or(0);
                free(&self.consumers[i]).then_some(i)
            }
            _ => {
                for k in 0..n {
                    let i = (self.next_rr + k) % n;
                    if free(&self.consumers[i]) {
                        self.next_rr = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
        }
    }

    /// Hands queued events to consumers with free slots.
    fn dispatch(&mut self) {
        let timeout = u64::try_from(self.def.settings.message_timeout_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        // A copy of an event already in flight (a replayed parked event) waits its turn.
        let mut deferred = Vec::new();
        while let Some(item) = self.queue.pop_front() {
            if self.in_flight.contains_key(&item.event.event_id) {
                deferred.push(item);
                continue;
            }
            let Some(i) = self.pick(&item) else {
                self.queue.push_front(item);
                break;
            };
            let c = &mut self.consumers[i];
            let msg = event_message(&item, c.structured);
            match c.tx.try_send(Ok(msg)) {
                Ok(()) => {
                    c.in_flight += 1;
                    c.total += 1;
                    self.total_items += 1;
                    let consumer = c.id;
                    self.in_flight.insert(
                        item.event.event_id,
                        InFlight {
                            item,
                            consumer,
                            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                        },
                    );
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // `can_take` saw room; nothing else sends on this channel.
                    self.queue.push_front(item);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let id = c.id;
                    self.queue.push_front(item);
                    self.leave(id);
                }
            }
        }
        for item in deferred.into_iter().rev() {
            self.queue.push_front(item);
        }
    }

    fn settle(&mut self, item: &Item) {
        if let Some(k) = item.key {
            self.outstanding.remove(&k);
        }
        if let Some(p) = item.parked {
            self.replay_outstanding.remove(&p);
        }
        self.settled_since += 1;
    }

    /// Takes `id` out of flight (it was with `consumer`).
    fn take(&mut self, consumer: u64, id: &Uuid) -> Option<Item> {
        let f = self.in_flight.get(id)?;
        if f.consumer != consumer {
            return None;
        }
        let f = self.in_flight.remove(id)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == f.consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(f.item)
    }

    /// Offers `item` again with its retry count raised, or (past the retry limit) sets it
    /// aside for [`Dispatcher::park_due`].
    fn requeue(&mut self, mut item: Item) {
        item.retry = item.retry.saturating_add(1);
        if item.retry > self.def.settings.max_retry_count {
            self.to_park.push(item);
        } else {
            self.queue.push_front(item);
        }
    }

    /// Parks what went past its retry limit.
    async fn park_due(&mut self) {
        for item in std::mem::take(&mut self.to_park) {
            self.park(item, "the maximum retry count was reached").await;
        }
    }

    /// Records `item` as parked and settles it (offered again if recording fails).
    async fn park(&mut self, item: Item, reason: &str) {
        let e = &item.event;
        let data = serde_json::json!({
            "eventId": e.event_id,
            "stream": e.aggregate_id,
            "revision": e.aggregate_version.saturating_sub(1),
            "position": e.position,
            "retryCount": item.retry,
            "reason": reason,
        });
        let append = RawJson::from_value(&data).map(|data| {
            let mut a = AppendRequest::new(
                "$persistentsubscription",
                self.def.parked_stream(),
                ExpectedVersion::Any,
            )
            .event(NewEvent::raw(PARKED_EVENT_TYPE, data));
            a.causation_id = Some(e.event_id.to_string());
            a.correlation_id = e.correlation_id.clone();
            a
        });
        match append {
            Ok(a) => match self.store.append(a).await {
                Ok(_) => {
                    self.parked_total += 1;
                    self.settle(&item);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not park an event; offering it again");
                    self.queue.push_front(item);
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "could not park an event; offering it again");
                self.queue.push_front(item);
            }
        }
    }

    /// A consumer left: what it held is offered again.
    fn leave(&mut self, id: u64) {
        self.consumers.retain(|c| c.id != id);
        let held: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == id)
            .map(|(k, _)| *k)
            .collect();
        let mut back: Vec<Item> = held
            .iter()
            .filter_map(|k| self.in_flight.remove(k))
            .map(|f| f.item)
            .collect();
        // In their original order, ahead of what was never sent.
        back.sort_by_key(|i| i.event.position);
        for item in back.into_iter().rev() {
            self.requeue(item);
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(consumer, reply) => {
                let max = usize::try_from(self.def.settings.max_subscriber_count).unwrap_or(0);
                if max > 0 && self.consumers.len() >= max {
                    let status = crate::status::maximum_subscribers_reached(
                        &self.def.source,
                        &self.def.group,
                        max,
                    );
                    let _ = reply.send(Err(status));
                    return;
                }
                self.consumers.push(consumer);
                let _ = reply.send(Ok(()));
            }
            Cmd::Ack(consumer, ids) => {
                for id in ids {
                    if let Some(item) = self.take(consumer, &id) {
                        self.settle(&item);
                    }
                }
                self.checkpoint_if_due(false).await;
            }
            Cmd::Nack(consumer, ids, action, reason) => {
                use read_req::nack::Action;
                for id in ids {
                    let Some(item) = self.take(consumer, &id) else {
                        continue;
                    };
                    match action {
                        Action::Park => self.park(item, &reason).await,
                        Action::Skip => self.settle(&item),
                        Action::Stop => {
                            self.queue.push_front(item);
                            self.drop_consumer(consumer, "the consumer nacked with stop");
                        }
                        Action::Retry | Action::Unknown => self.requeue(item),
                    }
                }
                self.park_due().await;
                self.checkpoint_if_due(false).await;
            }
            Cmd::Leave(id) => {
                self.leave(id);
                self.park_due().await;
            }
            Cmd::Info(reply) => {
                let _ = reply.send(self.stats());
            }
            Cmd::Replay(stop_at, reply) => {
                let _ = reply.send(self.replay(stop_at).await.map_err(to_status));
            }
            Cmd::Stop(_) => {}
        }
    }

    /// Ends one consumer's call.
    fn drop_consumer(&mut self, id: u64, why: &str) {
        if let Some(c) = self.consumers.iter().find(|c| c.id == id) {
            let _ = c.tx.try_send(Err(dropped(why)));
        }
        self.leave(id);
    }

    fn stats(&self) -> Stats {
        Stats {
            checkpoint: self.checkpointed,
            last_known: self.loaded.then_some(self.cursor),
            total_items: self.total_items,
            queued: self.queue.len(),
            retries_queued: self.queue.iter().filter(|i| i.retry > 0).count(),
            in_flight: self.in_flight.len(),
            parked: self.parked_total.saturating_sub(self.replay_read),
            connections: self
                .consumers
                .iter()
                .map(|c| subscription_info::ConnectionInfo {
                    from: c.from.clone(),
                    username: c.user.clone(),
                    average_items_per_second: 0,
                    total_items: i64::try_from(c.total).unwrap_or(i64::MAX),
                    count_since_last_measurement: 0,
                    observed_measurements: Vec::new(),
                    available_slots: i32::try_from(c.slots.saturating_sub(c.in_flight))
                        .unwrap_or(i32::MAX),
                    in_flight_messages: i32::try_from(c.in_flight).unwrap_or(i32::MAX),
                    connection_name: c.from.clone(),
                })
                .collect(),
        }
    }

    /// Offers parked events again (up to `stop_at` of them), oldest first. The replay
    /// marker moves past a parked record only once its event is settled again, so a
    /// restart replays what was not.
    async fn replay(&mut self, stop_at: Option<u64>) -> Result<(), Error> {
        self.load().await?;
        let stream = self.def.parked_stream();
        let mut left = stop_at.unwrap_or(u64::MAX);
        let mut replayed = Vec::new();
        while left > 0 {
            let page = self
                .store
                .read_aggregate(
                    &stream,
                    Direction::Forward,
                    Some(self.replay_read + 1),
                    PAGE,
                )
                .await?;
            let full = page.len() == PAGE;
            for p in page {
                if left == 0 {
                    break;
                }
                left -= 1;
                self.replay_read = p.aggregate_version;
                let id = p
                    .data
                    .to_value::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v.get("eventId")?.as_str()?.parse::<Uuid>().ok());
                if let Some(event) = match id {
                    Some(id) => self.store.event(id).await?,
                    None => None,
                } {
                    self.replay_outstanding.insert(p.aggregate_version);
                    replayed.push(Item {
                        event: Arc::new(event),
                        retry: 0,
                        key: None,
                        parked: Some(p.aggregate_version),
                    });
                }
            }
            if !full {
                break;
            }
        }
        self.queue.extend(replayed);
        self.write_replay_marker().await;
        Ok(())
    }

    /// Stores how far replayed parked records are settled.
    async fn write_replay_marker(&mut self) {
        let at = self
            .replay_outstanding
            .first()
            .map_or(self.replay_read, |p| p.saturating_sub(1));
        if at <= self.replayed {
            return;
        }
        match self
            .store
            .put_checkpoint(CheckpointWrite::new(self.def.replay_checkpoint_name(), at))
            .await
        {
            Ok(_) => self.replayed = at,
            Err(e) => {
                tracing::warn!(error = %e, group = %self.def.group, "could not record replayed parked events")
            }
        }
    }

    /// Where the checkpoint can be: just below the oldest unsettled event.
    fn settled_through(&self) -> u64 {
        self.outstanding
            .first()
            .map_or(self.cursor, |k| k.saturating_sub(1))
    }

    /// Writes the checkpoint when the settings say it is due (or `force`).
    async fn checkpoint_if_due(&mut self, force: bool) {
        if !self.loaded {
            return;
        }
        let s = &self.def.settings;
        let max = u64::try_from(s.max_checkpoint_count).unwrap_or(0);
        let min = u64::try_from(s.min_checkpoint_count).unwrap_or(0);
        let after = Duration::from_millis(u64::try_from(s.checkpoint_after_ms).unwrap_or(0));
        let idle = self.queue.is_empty() && self.in_flight.is_empty();
        let elapsed = self.last_checkpoint.elapsed() >= after;
        let due = force
            || (max > 0 && self.settled_since >= max)
            || (elapsed && self.settled_since >= min.max(1))
            || (elapsed && idle && self.settled_since > 0);
        if !due {
            return;
        }
        self.write_replay_marker().await;
        let at = self.settled_through();
        if self.checkpointed.is_some_and(|c| c >= at) {
            return;
        }
        match self
            .store
            .put_checkpoint(CheckpointWrite::new(self.def.checkpoint_name(), at))
            .await
        {
            Ok(_) => {
                self.checkpointed = Some(at);
                self.settled_since = 0;
                self.last_checkpoint = Instant::now();
            }
            Err(e) => {
                tracing::warn!(error = %e, group = %self.def.group, "could not write a persistent subscription checkpoint")
            }
        }
    }

    /// Offers again what timed out.
    async fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<(u64, Uuid)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(id, f)| (f.consumer, *id))
            .collect();
        for (consumer, id) in late {
            if let Some(item) = self.take(consumer, &id) {
                self.requeue(item);
            }
        }
        self.park_due().await;
    }

    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut shutdown: watch::Receiver<bool>,
        _exit: watch::Sender<()>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        let why = 'run: loop {
            if !self.consumers.is_empty()
                && let Err(e) = self.load().await
            {
                tracing::warn!(error = %e, group = %self.def.group, "could not load a persistent subscription; retrying");
            }
            if self.wants_events()
                && !self.at_head
                && let Err(e) = self.read_page().await
            {
                tracing::warn!(error = %e, group = %self.def.group, "persistent subscription read failed; retrying");
                self.at_head = true;
            }
            self.dispatch();
            // Acknowledgements that arrived meanwhile, without waiting.
            while let Ok(cmd) = cmds.try_recv() {
                match cmd {
                    Cmd::Stop(why) => break 'run why,
                    cmd => self.handle(cmd).await,
                }
            }
            if self.wants_events() && !self.at_head {
                continue; // more history to read at once
            }
            let live = self.wants_events();
            let head_seen = self.head_seen;
            let store = self.store.clone();
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break "the server stopped the group".to_owned(),
                    Some(Cmd::Stop(why)) => break why,
                    Some(cmd) => self.handle(cmd).await,
                },
                head = store.wait_for_head(head_seen, IDLE_WAIT), if live => {
                    match head {
                        Ok(h) => self.head_seen = h,
                        Err(e) => {
                            // A failing store is asked again after a pause, not in a spin.
                            tracing::warn!(error = %e, group = %self.def.group, "persistent subscription could not wait for commits");
                            tokio::time::sleep(TICK).await;
                        }
                    }
                    self.at_head = false;
                },
                _ = tick.tick() => {
                    self.expire().await;
                    self.checkpoint_if_due(false).await;
                    if self.consumers.is_empty() {
                        // Nothing is read for nobody; look again when someone joins.
                        self.at_head = false;
                    }
                },
                changed = shutdown.changed(), if watching => {
                    if changed.is_err() {
                        watching = false; // no one can shut us down any more
                    } else if *shutdown.borrow() {
                        break "the server is shutting down".to_owned();
                    }
                },
            }
        };
        self.checkpoint_if_due(true).await;
        for c in &self.consumers {
            let _ = c.tx.try_send(Err(dropped(&why)));
        }
    }
}

use crate::status::subscription_dropped as dropped;

/// An event as a persistent subscription message.
fn event_message(item: &Item, structured: bool) -> ReadResp {
    use read_resp::read_event::{Count, Position, RecordedEvent as PbEvent};
    let e = convert::read_event(&item.event, structured);
    let event = e.event.map(|r| PbEvent {
        id: r.id,
        stream_identifier: r
            .stream_identifier
            .or_else(|| Some(stream_id(&item.event.aggregate_id))),
        stream_revision: r.stream_revision,
        prepare_position: r.prepare_position,
        commit_position: r.commit_position,
        metadata: r.metadata,
        custom_metadata: r.custom_metadata,
        data: r.data,
    });
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event,
            link: None,
            position: Some(Position::CommitPosition(item.event.position)),
            count: Some(Count::RetryCount(item.retry)),
        })),
    }
}
