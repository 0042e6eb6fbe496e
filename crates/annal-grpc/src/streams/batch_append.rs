//! The `BatchAppend` call: a bidirectional stream of batches, each made of requests
//! sharing a correlation id, appended when its last request arrives.
//!
//! Invariants: each batch answers once, with its correlation id; a batch past its
//! deadline or its size limit is refused without writing; errors are answers carrying a
//! `google.rpc.Status` (with KurrentDB's details), and only a broken call ends the call.

use super::append::append_events;
use super::{CHANNEL, RespStream, Streams, expected_from_revision};
use crate::call::{Caller, caller};
use crate::convert::{self, stream_id, stream_name};
use crate::pb::event_store::client::AllStreamPosition;
use crate::pb::event_store::client::streams::{
    BatchAppendReq, BatchAppendResp, batch_append_req, batch_append_resp,
};
use crate::status::{deadline_exceeded, rpc_status, stream_deleted_detail, wrong_version_status};
use annal_core::access::Operation;
use annal_core::{AppendResult, ExpectedVersion, NewEvent, Store};
use prost::Message;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Serves one BatchAppend call.
pub(super) async fn batch_append(
    service: &Streams,
    request: Request<Streaming<BatchAppendReq>>,
) -> Result<Response<RespStream<BatchAppendResp>>, Status> {
    let user = caller(&request, Operation::Append)?;
    let mut input = request.into_inner();
    let (tx, rx) = mpsc::channel::<Result<BatchAppendResp, Status>>(CHANNEL);
    let store = service.store.clone();
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
                    let _ = tx.send(Err(crate::status::bad_message(status))).await;
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
    user: &Caller,
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
        let event = convert::new_event(
            &batch.stream,
            p.id.as_ref(),
            &p.metadata,
            &p.custom_metadata,
            &p.data,
        );
        match event {
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
        match append_events(store, &batch.stream, batch.expected, batch.events, user).await {
            Ok(Ok(r)) => batch_append_resp::Result::Success(batch_success(&r)),
            Ok(Err(actual)) => batch_append_resp::Result::Error(wrong_version_status(
                &batch.stream,
                batch.expected,
                actual,
            )),
            Err(status) => {
                let detail = stream_deleted_detail(&status, &batch.stream);
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
