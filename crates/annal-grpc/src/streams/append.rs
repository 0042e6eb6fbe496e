//! The `Append` call: a client-streamed append of one stream's events, and the
//! append both Append and BatchAppend go through.
//!
//! Invariants: every append goes through [`annal_core::streams`] rules; an empty append
//! checks the expectation and writes nothing; a wrong expected version is an answer
//! (the call succeeds with it), not a status. Event ids are per stream: an event is
//! stored under an id derived from its stream and the client's id
//! ([`convert::stored_event_id`]), so the same ids re-sent to the same stream are a
//! retry (answered without writing) and to another stream are new events there.

use super::{Streams, expected_from_revision};
use crate::call::{Caller, caller, deadline, within};
use crate::convert::{self, stream_name};
use crate::pb::event_store::client::Empty;
use crate::pb::event_store::client::streams::{AppendReq, AppendResp, append_req, append_resp};
use crate::status::{stream_deleted, to_status};
use annal_core::access::Operation;
use annal_core::streams;
use annal_core::{AppendRequest, AppendResult, Error, ExpectedVersion, NewEvent, Store};
use tonic::{Request, Response, Status, Streaming};

/// Appends through the stream rules; `Err(Ok(actual))` is a wrong expected version.
pub(super) async fn append_events(
    store: &dyn Store,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    by: &Caller,
) -> Result<Result<AppendResult, u64>, Status> {
    by.require(Operation::append(
        stream,
        events.iter().map(|e| e.event_type.as_str()),
    ))?;
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
    by.actor.stamp(&mut request);
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

/// Serves one Append call.
pub(super) async fn append(
    service: &Streams,
    request: Request<Streaming<AppendReq>>,
) -> Result<Response<AppendResp>, Status> {
    let user = caller(&request, Operation::Append)?;
    let deadline = deadline(request.metadata());
    let store = service.store.clone();
    let limit = store.limits().max_batch_events;
    within(deadline, async move {
        let mut input = request.into_inner();
        let Some(AppendReq {
            content: Some(append_req::Content::Options(options)),
        }) = input.message().await.map_err(crate::status::bad_message)?
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
        while let Some(m) = input.message().await.map_err(crate::status::bad_message)? {
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
                &stream,
                p.id.as_ref(),
                &p.metadata,
                &p.custom_metadata,
                &p.data,
            )?);
        }
        let result = match append_events(store.as_ref(), &stream, expected, events, &user).await? {
            Ok(r) => append_resp::Result::Success(append_success(&r)),
            Err(actual) => {
                append_resp::Result::WrongExpectedVersion(append_wrong_version(expected, actual))
            }
        };
        Ok(Response::new(AppendResp {
            result: Some(result),
        }))
    })
    .await
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
