//! The `Delete` and `Tombstone` calls: a soft delete (the stream can be written again)
//! and a tombstone (its name is blocked for good).
//!
//! Invariants: both go through [`annal_core::streams::delete`] and answer the position
//! of the deletion record; a wrong expected version is KurrentDB's failed precondition.

use super::{Streams, expected_from_revision};
use crate::call::{caller, deadline, within};
use crate::convert::stream_name;
use crate::pb::event_store::client::streams::{
    DeleteReq, DeleteResp, TombstoneReq, TombstoneResp, delete_req, delete_resp, tombstone_req,
    tombstone_resp,
};
use crate::status::{delete_wrong_version, to_status};
use annal_core::access::Operation;
use annal_core::streams::{self, Deletion};
use annal_core::{Actor, Error, ExpectedVersion, Store};
use tonic::{Request, Response, Status};

/// Serves one Delete call.
pub(super) async fn delete(
    service: &Streams,
    request: Request<DeleteReq>,
) -> Result<Response<DeleteResp>, Status> {
    let user = caller(&request, Operation::Delete)?;
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
        delete_stream(
            service.store.as_ref(),
            &stream,
            expected,
            Deletion::Soft,
            &user.actor,
        ),
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

/// Serves one Tombstone call.
pub(super) async fn tombstone(
    service: &Streams,
    request: Request<TombstoneReq>,
) -> Result<Response<TombstoneResp>, Status> {
    let user = caller(&request, Operation::Tombstone)?;
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
        delete_stream(
            service.store.as_ref(),
            &stream,
            expected,
            Deletion::Tombstone,
            &user.actor,
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

/// Deletes softly or by tombstone; the position of the deletion record.
async fn delete_stream(
    store: &dyn Store,
    stream: &str,
    expected: ExpectedVersion,
    how: Deletion,
    by: &Actor,
) -> Result<u64, Status> {
    match streams::delete(store, stream, expected, how, by).await {
        Ok(e) => Ok(e.position),
        Err(Error::WrongExpectedVersion { actual, .. }) => {
            Err(delete_wrong_version(stream, expected, actual))
        }
        Err(e) => Err(to_status(e)),
    }
}
