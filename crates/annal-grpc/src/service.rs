//! The `Streams` service: reads, catch-up subscriptions, appends, batch appends,
//! deletions, over [`annal_core::streams`].
//!
//! Invariants: a read or subscription runs as one task feeding a bounded channel; it
//! reads the store a page at a time only when the client has taken what came before, and
//! ends when the client goes away (the channel closes), the deadline passes, or the
//! server shuts down. Boundaries follow KurrentDB: `$all` forwards from P includes P,
//! backwards from P excludes P; subscriptions exclude their start; stream reads from
//! revision R include R.

use crate::Principal;
use crate::convert::{self, stream_id, stream_name};
use crate::filter::EventFilter;
use crate::pb::event_store::client::streams::streams_server;
use crate::pb::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, batch_append_req,
    batch_append_resp, delete_req, delete_resp, read_req, read_resp, tombstone_req, tombstone_resp,
};
use crate::pb::event_store::client::{
    AllStreamPosition, Empty, StreamDeleted as PbStreamDeleted,
    WrongExpectedVersion as PbWrongExpectedVersion, wrong_expected_version,
};
use crate::pb::google::rpc::Status as RpcStatus;
use annal_core::streams::{self, Deletion, StreamRead, StreamState};
use annal_core::{
    AppendRequest, AppendResult, Direction, Error, ExpectedVersion, Filter, NewEvent,
    RecordedEvent, Store,
};
use prost::Message;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

/// Events read from the store at a time.
const PAGE: usize = 500;
/// Messages buffered per read or subscription before the reader waits for the client.
const CHANNEL: usize = 64;
/// How long a live subscription waits for a commit before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(5);

type RespStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Tx = mpsc::Sender<Result<ReadResp, Status>>;

/// The `Streams` service on a store.
#[derive(Clone)]
pub struct Streams {
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
}

impl Streams {
    /// Serves `store`; `shutdown` turning true ends reads and subscriptions.
    pub fn new(store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) -> Self {
        Self { store, shutdown }
    }
}

/// The caller's user name, checking that they may write when `write`.
pub(crate) fn caller<T>(request: &Request<T>, write: bool) -> Result<Option<String>, Status> {
    match request.extensions().get::<Principal>() {
        None => Ok(None),
        Some(p) if write && !p.can_write => Err(Status::permission_denied(format!(
            "user '{}' may only read",
            p.name
        ))),
        Some(p) => Ok(Some(p.name.clone())),
    }
}

/// The request's deadline (`grpc-timeout`), if any.
fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("Deadline Exceeded")
}

/// Runs `work` within the deadline.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => work.await,
        Some(at) => tokio::time::timeout_at(at.into(), work)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
    }
}

fn with_exception(mut status: Status, exception: &'static str, stream: Option<&str>) -> Status {
    let md = status.metadata_mut();
    md.insert("exception", MetadataValue::from_static(exception));
    if let Some(s) = stream.and_then(|s| MetadataValue::try_from(s).ok()) {
        md.insert("stream-name", s);
    }
    status
}

fn stream_deleted(stream: &str) -> Status {
    with_exception(
        Status::failed_precondition(format!("Event stream '{stream}' is deleted.")),
        "stream-deleted",
        Some(stream),
    )
}

/// A store error as a gRPC status.
pub(crate) fn to_status(e: Error) -> Status {
    match e {
        Error::StreamDeleted { aggregate_id } => stream_deleted(&aggregate_id),
        Error::WrongExpectedVersion { .. } => with_exception(
            Status::failed_precondition(e.to_string()),
            "wrong-expected-version",
            None,
        ),
        Error::InvalidRequest { .. } | Error::TooLarge { .. } => {
            Status::invalid_argument(e.to_string())
        }
        Error::NotFound { .. } => Status::not_found(e.to_string()),
        Error::AggregateTypeMismatch { .. }
        | Error::DuplicateEventId { .. }
        | Error::CheckpointConflict { .. } => Status::failed_precondition(e.to_string()),
        Error::Corrupt(_) => Status::data_loss(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// A client's expected revision as an expected annal version.
fn expected_from_revision(revision: u64) -> Result<ExpectedVersion, Status> {
    revision
        .checked_add(1)
        .map(ExpectedVersion::Exact)
        .ok_or_else(|| Status::invalid_argument("expected revision is out of range"))
}

/// A request's `expected_stream_revision` oneof (the same shape in Append, Delete and
/// Tombstone options, generated as three types) as an expected annal version.
macro_rules! expected_of {
    ($oneof:expr, $ty:path) => {{
        use $ty as E;
        match $oneof {
            Some(E::Revision(r)) => expected_from_revision(r)?,
            Some(E::NoStream(_)) => ExpectedVersion::NoStream,
            Some(E::StreamExists(_)) => ExpectedVersion::Exists,
            Some(E::Any(_)) | None => ExpectedVersion::Any,
        }
    }};
}

/// KurrentDB's number for an expectation in error messages.
fn expected_number(e: ExpectedVersion) -> i64 {
    match e {
        ExpectedVersion::Any => -2,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => -1,
        ExpectedVersion::Exists => -4,
        ExpectedVersion::Exact(v) => v as i64 - 1,
    }
}

fn revision_of(version: u64) -> i64 {
    version as i64 - 1
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Appends through the stream rules; `Err(Ok(actual))` is a wrong expected version.
async fn append_events(
    store: &dyn Store,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    user: Option<String>,
) -> Result<Result<AppendResult, u64>, Status> {
    if events.is_empty() {
        // An empty append checks the expectation and writes nothing.
        let st = streams::state(store, stream).await.map_err(to_status)?;
        if st.tombstoned {
            return Err(stream_deleted(stream));
        }
        let visible = if st.soft_deleted() { 0 } else { st.version };
        return match expected.check(stream, visible) {
            Ok(()) => Ok(Ok(AppendResult {
                aggregate_version: st.version,
                first_position: 0,
                last_position: 0,
                events: Vec::new(),
            })),
            Err(_) => Ok(Err(st.version)),
        };
    }
    let mut request = AppendRequest::new("", stream, expected);
    request.user_id = user;
    request.events = events;
    match store.append_to_stream(request).await {
        Ok(r) => Ok(Ok(r)),
        Err(Error::WrongExpectedVersion { actual, .. }) => Ok(Err(actual)),
        Err(Error::DuplicateEventId { .. }) => {
            let st = streams::state(store, stream).await.map_err(to_status)?;
            Ok(Err(st.version))
        }
        Err(e) => Err(to_status(e)),
    }
}

#[tonic::async_trait]
impl streams_server::Streams for Streams {
    async fn read(
        &self,
        request: Request<ReadReq>,
    ) -> Result<Response<RespStream<ReadResp>>, Status> {
        caller(&request, false)?;
        let deadline = deadline(request.metadata());
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a read needs options"))?;
        let plan = ReadPlan::new(options)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let store = self.store.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let err_tx = tx.clone();
            let run = plan.run(store.as_ref(), &tx);
            let outcome = tokio::select! {
                r = within(deadline, run) => r,
                _ = shutdown.wait_for(|s| *s) => Err(Status::unavailable("the server is shutting down")),
                () = tx.closed() => Ok(()),
            };
            if let Err(status) = outcome {
                let _ = err_tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let user = caller(&request, true)?;
        let deadline = deadline(request.metadata());
        let store = self.store.clone();
        let limit = store.limits().max_batch_events;
        within(deadline, async move {
            let mut input = request.into_inner();
            let Some(AppendReq {
                content: Some(append_req::Content::Options(options)),
            }) = input.message().await?
            else {
                return Err(Status::invalid_argument(
                    "an append starts with its options",
                ));
            };
            let stream = stream_name(options.stream_identifier.as_ref())?;
            let expected = expected_of!(
                options.expected_stream_revision,
                append_req::options::ExpectedStreamRevision
            );
            let mut events = Vec::new();
            while let Some(m) = input.message().await? {
                let Some(append_req::Content::ProposedMessage(p)) = m.content else {
                    return Err(Status::invalid_argument(
                        "an append sends its options once, then events",
                    ));
                };
                if events.len() >= limit {
                    return Err(Status::invalid_argument(format!(
                        "an append holds at most {limit} events"
                    )));
                }
                events.push(convert::new_event(
                    p.id.as_ref(),
                    &p.metadata,
                    &p.custom_metadata,
                    &p.data,
                )?);
            }
            let result =
                match append_events(store.as_ref(), &stream, expected, events, user).await? {
                    Ok(r) => append_resp::Result::Success(append_success(&r)),
                    Err(actual) => append_resp::Result::WrongExpectedVersion(append_wrong_version(
                        expected, actual,
                    )),
                };
            Ok(Response::new(AppendResp {
                result: Some(result),
            }))
        })
        .await
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let user = caller(&request, true)?;
        let deadline = deadline(request.metadata());
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a delete needs options"))?;
        let expected = expected_of!(
            options.expected_stream_revision,
            delete_req::options::ExpectedStreamRevision
        );
        let stream = stream_name(options.stream_identifier.as_ref())?;
        let position = within(
            deadline,
            delete(self.store.as_ref(), &stream, expected, Deletion::Soft, user),
        )
        .await?;
        Ok(Response::new(DeleteResp {
            position_option: Some(delete_resp::PositionOption::Position(
                delete_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                },
            )),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let user = caller(&request, true)?;
        let deadline = deadline(request.metadata());
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a tombstone needs options"))?;
        let expected = expected_of!(
            options.expected_stream_revision,
            tombstone_req::options::ExpectedStreamRevision
        );
        let stream = stream_name(options.stream_identifier.as_ref())?;
        let position = within(
            deadline,
            delete(
                self.store.as_ref(),
                &stream,
                expected,
                Deletion::Tombstone,
                user,
            ),
        )
        .await?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(tombstone_resp::PositionOption::Position(
                tombstone_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                },
            )),
        }))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<RespStream<BatchAppendResp>>, Status> {
        let user = caller(&request, true)?;
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<BatchAppendResp, Status>>(CHANNEL);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut pending: HashMap<Vec<u8>, Batch> = HashMap::new();
            loop {
                let msg = tokio::select! {
                    m = input.message() => m,
                    () = tx.closed() => return,
                };
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let resp = batch_step(store.as_ref(), &mut pending, req, &user).await;
                match resp {
                    Ok(None) => {}
                    Ok(Some(resp)) => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn append_success(r: &AppendResult) -> append_resp::Success {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    append_resp::Success {
        current_revision_option: Some(if r.aggregate_version == 0 {
            CurrentRevisionOption::NoStream(Empty {})
        } else {
            CurrentRevisionOption::CurrentRevision(r.aggregate_version - 1)
        }),
        position_option: Some(if r.events.is_empty() {
            PositionOption::NoPosition(Empty {})
        } else {
            PositionOption::Position(append_resp::Position {
                commit_position: r.last_position,
                prepare_position: r.last_position,
            })
        }),
    }
}

fn append_wrong_version(
    expected: ExpectedVersion,
    actual: u64,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version::{
        CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
        ExpectedRevisionOption2060,
    };
    let (current, current_legacy) = if actual == 0 {
        (
            CurrentRevisionOption::CurrentNoStream(Empty {}),
            CurrentRevisionOption2060::NoStream2060(Empty {}),
        )
    } else {
        (
            CurrentRevisionOption::CurrentRevision(actual - 1),
            CurrentRevisionOption2060::CurrentRevision2060(actual - 1),
        )
    };
    let (exp, exp_legacy) = match expected {
        ExpectedVersion::Any => (
            ExpectedRevisionOption::ExpectedAny(Empty {}),
            Some(ExpectedRevisionOption2060::Any2060(Empty {})),
        ),
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => {
            (ExpectedRevisionOption::ExpectedNoStream(Empty {}), None)
        }
        ExpectedVersion::Exists => (
            ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
            Some(ExpectedRevisionOption2060::StreamExists2060(Empty {})),
        ),
        ExpectedVersion::Exact(v) => (
            ExpectedRevisionOption::ExpectedRevision(v - 1),
            Some(ExpectedRevisionOption2060::ExpectedRevision2060(v - 1)),
        ),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_legacy),
        expected_revision_option_20_6_0: exp_legacy,
        current_revision_option: Some(current),
        expected_revision_option: Some(exp),
    }
}

/// Deletes softly or by tombstone; the position of the deletion record.
async fn delete(
    store: &dyn Store,
    stream: &str,
    expected: ExpectedVersion,
    how: Deletion,
    user: Option<String>,
) -> Result<u64, Status> {
    match streams::delete(store, stream, expected, how, user).await {
        Ok(e) => Ok(e.position),
        Err(Error::WrongExpectedVersion { actual, .. }) => Err(with_exception(
            Status::failed_precondition(format!(
                "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {}",
                expected_number(expected),
                revision_of(actual)
            )),
            "wrong-expected-version",
            Some(stream),
        )),
        Err(e) => Err(to_status(e)),
    }
}

/// A batch being received.
struct Batch {
    stream: String,
    expected: ExpectedVersion,
    expected_pb: batch_append_resp::ExpectedStreamPosition,
    deadline: Option<SystemTime>,
    events: Vec<NewEvent>,
}

/// Takes one BatchAppend request; answers when its batch is final.
async fn batch_step(
    store: &dyn Store,
    pending: &mut HashMap<Vec<u8>, Batch>,
    req: BatchAppendReq,
    user: &Option<String>,
) -> Result<Option<BatchAppendResp>, Status> {
    let correlation = req
        .correlation_id
        .clone()
        .ok_or_else(|| Status::invalid_argument("a batch append needs a correlation_id"))?;
    let key = correlation.encode_to_vec();
    if !pending.contains_key(&key) {
        let options = req.options.as_ref().ok_or_else(|| {
            Status::invalid_argument("the first message of a batch carries its options")
        })?;
        let stream = stream_name(options.stream_identifier.as_ref())?;
        use batch_append_req::options::{DeadlineOption, ExpectedStreamPosition as E};
        use batch_append_resp::ExpectedStreamPosition as R;
        let (expected, expected_pb) = match options.expected_stream_position {
            Some(E::StreamPosition(r)) => (expected_from_revision(r)?, R::StreamPosition(r)),
            Some(E::NoStream(())) => (ExpectedVersion::NoStream, R::NoStream(())),
            Some(E::StreamExists(())) => (ExpectedVersion::Exists, R::StreamExists(())),
            Some(E::Any(())) | None => (ExpectedVersion::Any, R::Any(())),
        };
        let deadline = match &options.deadline_option {
            Some(DeadlineOption::Deadline(d)) => batch_deadline(d.seconds, d.nanos),
            Some(DeadlineOption::Deadline21100(t)) => batch_deadline(t.seconds, t.nanos),
            None => None,
        };
        pending.insert(
            key.clone(),
            Batch {
                stream,
                expected,
                expected_pb,
                deadline,
                events: Vec::new(),
            },
        );
    }
    let Some(batch) = pending.get_mut(&key) else {
        return Ok(None);
    };
    let limit = store.limits().max_batch_events;
    let mut refused = None;
    for p in &req.proposed_messages {
        if batch.events.len() >= limit {
            refused = Some(Status::invalid_argument(format!(
                "a batch holds at most {limit} events"
            )));
            break;
        }
        match convert::new_event(p.id.as_ref(), &p.metadata, &p.custom_metadata, &p.data) {
            Ok(e) => batch.events.push(e),
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    if !req.is_final && refused.is_none() {
        return Ok(None);
    }
    let Some(batch) = pending.remove(&key) else {
        return Ok(None);
    };
    let result = if let Some(status) = refused {
        batch_append_resp::Result::Error(rpc_status(&status, None))
    } else if batch.deadline.is_some_and(|d| d <= SystemTime::now()) {
        batch_append_resp::Result::Error(rpc_status(&deadline_exceeded(), None))
    } else {
        match append_events(
            store,
            &batch.stream,
            batch.expected,
            batch.events,
            user.clone(),
        )
        .await
        {
            Ok(Ok(r)) => batch_append_resp::Result::Success(batch_success(&r)),
            Ok(Err(actual)) => batch_append_resp::Result::Error(wrong_version_status(
                &batch.stream,
                batch.expected,
                actual,
            )),
            Err(status) => {
                let detail = (status.code() == tonic::Code::FailedPrecondition
                    && status.message().ends_with("is deleted."))
                .then(|| prost_types::Any {
                    type_url: "type.googleapis.com/event_store.client.StreamDeleted".to_owned(),
                    value: PbStreamDeleted {
                        stream_identifier: Some(stream_id(&batch.stream)),
                    }
                    .encode_to_vec(),
                });
                batch_append_resp::Result::Error(rpc_status(&status, detail))
            }
        }
    };
    Ok(Some(BatchAppendResp {
        correlation_id: Some(correlation),
        result: Some(result),
        stream_identifier: Some(stream_id(&batch.stream)),
        expected_stream_position: Some(batch.expected_pb),
    }))
}

/// A batch deadline: clients send either a duration from now or (the Rust client) a
/// time since the Unix epoch in the duration field; anything over ten years is the latter.
fn batch_deadline(seconds: i64, nanos: i32) -> Option<SystemTime> {
    let d = Duration::new(u64::try_from(seconds).ok()?, u32::try_from(nanos).ok()?);
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::now().checked_add(d)
    }
}

fn rpc_status(status: &Status, detail: Option<prost_types::Any>) -> RpcStatus {
    RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: detail,
    }
}

fn wrong_version_status(stream: &str, expected: ExpectedVersion, actual: u64) -> RpcStatus {
    use wrong_expected_version::{CurrentStreamRevisionOption, ExpectedStreamPositionOption};
    let detail = PbWrongExpectedVersion {
        current_stream_revision_option: Some(if actual == 0 {
            CurrentStreamRevisionOption::CurrentNoStream(())
        } else {
            CurrentStreamRevisionOption::CurrentStreamRevision(actual - 1)
        }),
        expected_stream_position_option: Some(match expected {
            ExpectedVersion::Any => ExpectedStreamPositionOption::ExpectedAny(()),
            ExpectedVersion::Exists => ExpectedStreamPositionOption::ExpectedStreamExists(()),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => {
                ExpectedStreamPositionOption::ExpectedNoStream(())
            }
            ExpectedVersion::Exact(v) => {
                ExpectedStreamPositionOption::ExpectedStreamPosition(v - 1)
            }
        }),
    };
    RpcStatus {
        code: tonic::Code::FailedPrecondition as i32,
        message: format!(
            "Append failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {}",
            expected_number(expected),
            revision_of(actual)
        ),
        details: Some(prost_types::Any {
            type_url: "type.googleapis.com/event_store.client.WrongExpectedVersion".to_owned(),
            value: detail.encode_to_vec(),
        }),
    }
}

fn batch_success(r: &AppendResult) -> batch_append_resp::Success {
    use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
    batch_append_resp::Success {
        current_revision_option: Some(if r.aggregate_version == 0 {
            CurrentRevisionOption::NoStream(())
        } else {
            CurrentRevisionOption::CurrentRevision(r.aggregate_version - 1)
        }),
        position_option: Some(if r.events.is_empty() {
            PositionOption::NoPosition(())
        } else {
            PositionOption::Position(AllStreamPosition {
                commit_position: r.last_position,
                prepare_position: r.last_position,
            })
        }),
    }
}

/// What a `Read` asks for.
struct ReadPlan {
    target: Target,
    backwards: bool,
    /// `None`: a subscription.
    count: Option<u64>,
    filter: Option<EventFilter>,
    structured_ids: bool,
}

enum Target {
    Stream(String, read_req::options::stream_options::RevisionOption),
    All(read_req::options::all_options::AllOption),
}

impl ReadPlan {
    fn new(o: read_req::Options) -> Result<Self, Status> {
        use read_req::options::{CountOption, FilterOption, StreamOption, uuid_option};
        let target = match o.stream_option {
            Some(StreamOption::Stream(s)) => Target::Stream(
                stream_name(s.stream_identifier.as_ref())?,
                s.revision_option
                    .ok_or_else(|| Status::invalid_argument("a stream read needs a revision"))?,
            ),
            Some(StreamOption::All(a)) => Target::All(
                a.all_option
                    .ok_or_else(|| Status::invalid_argument("a $all read needs a position"))?,
            ),
            None => return Err(Status::invalid_argument("a read needs a stream or $all")),
        };
        let count = match o.count_option {
            Some(CountOption::Count(n)) => Some(n),
            Some(CountOption::Subscription(_)) => None,
            None => Some(u64::MAX),
        };
        let filter = match &o.filter_option {
            Some(FilterOption::Filter(f)) => {
                if matches!(target, Target::Stream(..)) {
                    return Err(Status::invalid_argument("filters apply to $all reads only"));
                }
                EventFilter::new(Some(f))?
            }
            _ => None,
        };
        let structured_ids = matches!(
            o.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        Ok(Self {
            target,
            backwards: o.read_direction == read_req::options::ReadDirection::Backwards as i32,
            count,
            filter,
            structured_ids,
        })
    }

    fn event(&self, e: &RecordedEvent) -> ReadResp {
        ReadResp {
            content: Some(read_resp::Content::Event(convert::read_event(
                e,
                self.structured_ids,
            ))),
        }
    }

    async fn run(&self, store: &dyn Store, tx: &Tx) -> Result<(), Status> {
        match (&self.target, self.count) {
            (Target::Stream(s, from), Some(n)) => self.read_stream(store, tx, s, from, n).await,
            (Target::All(from), Some(n)) => self.read_all(store, tx, from, n).await,
            (Target::Stream(s, from), None) => self.subscribe_stream(store, tx, s, from).await,
            (Target::All(from), None) => self.subscribe_all(store, tx, from).await,
        }
    }

    async fn read_stream(
        &self,
        store: &dyn Store,
        tx: &Tx,
        stream: &str,
        from: &read_req::options::stream_options::RevisionOption,
        count: u64,
    ) -> Result<(), Status> {
        use read_req::options::stream_options::RevisionOption as R;
        let st = streams::state(store, stream).await.map_err(to_status)?;
        if st.tombstoned {
            return Err(stream_deleted(stream));
        }
        if !st.has_visible_events() {
            send(
                tx,
                ReadResp {
                    content: Some(read_resp::Content::StreamNotFound(
                        read_resp::StreamNotFound {
                            stream_identifier: Some(stream_id(stream)),
                        },
                    )),
                },
            )
            .await;
            return Ok(());
        }
        let direction = if self.backwards {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let mut next = match (from, self.backwards) {
            (R::Revision(r), _) => r.saturating_add(1),
            (R::Start(_), false) => 1,
            (R::Start(_), true) => 1,
            (R::End(_), false) => st.version.saturating_add(1),
            (R::End(_), true) => st.version,
        };
        let mut left = count;
        while left > 0 && next >= 1 {
            let page = PAGE.min(usize::try_from(left).unwrap_or(PAGE));
            let events = match streams::read_with(store, &st, stream, direction, Some(next), page)
                .await
                .map_err(to_status)?
            {
                StreamRead::Events(e) => e,
                StreamRead::NotFound => Vec::new(),
            };
            let Some(last) = events.last() else {
                break;
            };
            next = if self.backwards {
                last.aggregate_version.saturating_sub(1)
            } else {
                last.aggregate_version.saturating_add(1)
            };
            let full = events.len() == page;
            for e in &events {
                if !send(tx, self.event(e)).await {
                    return Ok(());
                }
            }
            left -= events.len() as u64;
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn read_all(
        &self,
        store: &dyn Store,
        tx: &Tx,
        from: &read_req::options::all_options::AllOption,
        count: u64,
    ) -> Result<(), Status> {
        use read_req::options::all_options::AllOption as A;
        let everything = Filter::default();
        let mut left = count;
        if self.backwards {
            // Exclusive upper bound.
            let mut before = match from {
                A::End(_) => store.head(&[]).await.map_err(to_status)?.saturating_add(1),
                A::Position(p) => p.commit_position,
                A::Start(_) => 0,
            };
            while left > 0 && before > 1 {
                let after = before.saturating_sub(1 + PAGE as u64);
                let span = usize::try_from(before - 1 - after).unwrap_or(PAGE);
                let page = store
                    .read_all(after, span, &everything)
                    .await
                    .map_err(to_status)?;
                for e in page.iter().rev().filter(|e| e.position < before) {
                    if self.filter.as_ref().is_none_or(|f| f.matches(e)) {
                        if !send(tx, self.event(e)).await {
                            return Ok(());
                        }
                        left -= 1;
                        if left == 0 {
                            return Ok(());
                        }
                    }
                }
                before = after.saturating_add(1);
            }
            return Ok(());
        }
        let mut after = match from {
            A::Start(_) => 0,
            A::Position(p) => p.commit_position.saturating_sub(1),
            A::End(_) => return Ok(()),
        };
        while left > 0 {
            let page = store
                .read_all(after, PAGE, &everything)
                .await
                .map_err(to_status)?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.position;
            let full = page.len() == PAGE;
            for e in &page {
                if self.filter.as_ref().is_none_or(|f| f.matches(e)) {
                    if !send(tx, self.event(e)).await {
                        return Ok(());
                    }
                    left -= 1;
                    if left == 0 {
                        return Ok(());
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    async fn subscribe_stream(
        &self,
        store: &dyn Store,
        tx: &Tx,
        stream: &str,
        from: &read_req::options::stream_options::RevisionOption,
    ) -> Result<(), Status> {
        use read_req::options::stream_options::RevisionOption as R;
        if !confirm(tx).await {
            return Ok(());
        }
        let mut head = store.head(&[]).await.map_err(to_status)?;
        let st = streams::state(store, stream).await.map_err(to_status)?;
        let mut next = match from {
            R::Start(_) => 1,
            R::End(_) => st.version.saturating_add(1),
            R::Revision(r) => r.saturating_add(2),
        };
        let mut st: StreamState = st;
        let mut caught_up = false;
        loop {
            if st.tombstoned {
                return Err(stream_deleted(stream));
            }
            let events =
                match streams::read_with(store, &st, stream, Direction::Forward, Some(next), PAGE)
                    .await
                    .map_err(to_status)?
                {
                    StreamRead::Events(e) => e,
                    StreamRead::NotFound => Vec::new(),
                };
            for e in &events {
                if !send(tx, self.event(e)).await {
                    return Ok(());
                }
                next = e.aggregate_version.saturating_add(1);
            }
            if events.len() < PAGE {
                if !caught_up {
                    caught_up = true;
                    let msg = read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: (next > 1).then(|| revision_of(next - 1)),
                        position: None,
                    };
                    if !send(
                        tx,
                        ReadResp {
                            content: Some(read_resp::Content::CaughtUp(msg)),
                        },
                    )
                    .await
                    {
                        return Ok(());
                    }
                }
                head = wait(store, tx, head).await?;
            }
            st = streams::state(store, stream).await.map_err(to_status)?;
        }
    }

    async fn subscribe_all(
        &self,
        store: &dyn Store,
        tx: &Tx,
        from: &read_req::options::all_options::AllOption,
    ) -> Result<(), Status> {
        use read_req::options::all_options::AllOption as A;
        if !confirm(tx).await {
            return Ok(());
        }
        let everything = Filter::default();
        let mut after = match from {
            A::Start(_) => 0,
            A::End(_) => store.head(&[]).await.map_err(to_status)?,
            A::Position(p) => p.commit_position,
        };
        let mut scanned = 0u64;
        let mut caught_up = false;
        loop {
            let page = store
                .read_all(after, PAGE, &everything)
                .await
                .map_err(to_status)?;
            for e in &page {
                after = e.position;
                let pass = self.filter.as_ref().is_none_or(|f| f.matches(e));
                if pass && !send(tx, self.event(e)).await {
                    return Ok(());
                }
                if let Some(f) = &self.filter {
                    scanned += 1;
                    if scanned >= f.checkpoint_interval {
                        scanned = 0;
                        if !send(tx, checkpoint(after)).await {
                            return Ok(());
                        }
                    }
                }
            }
            if page.len() < PAGE {
                if !caught_up {
                    caught_up = true;
                    let msg = read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: None,
                        position: (after > 0).then_some(read_resp::Position {
                            commit_position: after,
                            prepare_position: after,
                        }),
                    };
                    if !send(
                        tx,
                        ReadResp {
                            content: Some(read_resp::Content::CaughtUp(msg)),
                        },
                    )
                    .await
                    {
                        return Ok(());
                    }
                }
                wait(store, tx, after).await?;
            }
        }
    }
}

fn checkpoint(position: u64) -> ReadResp {
    ReadResp {
        content: Some(read_resp::Content::Checkpoint(read_resp::Checkpoint {
            commit_position: position,
            prepare_position: position,
            timestamp: Some(now()),
        })),
    }
}

/// Sends the subscription confirmation; false if the client is gone.
async fn confirm(tx: &Tx) -> bool {
    send(
        tx,
        ReadResp {
            content: Some(read_resp::Content::Confirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: annal_core::Uuid::now_v7().to_string(),
                },
            )),
        },
    )
    .await
}

/// Waits for a commit after `head` (or a while); the new head.
async fn wait(store: &dyn Store, tx: &Tx, head: u64) -> Result<u64, Status> {
    tokio::select! {
        h = store.wait_for_head(head, IDLE_WAIT) => h.map_err(to_status),
        () = tx.closed() => Ok(head),
    }
}

/// Sends one message; false when the client is gone.
async fn send(tx: &Tx, msg: ReadResp) -> bool {
    tx.send(Ok(msg)).await.is_ok()
}
