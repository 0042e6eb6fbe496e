//! The one mapping from annal errors to gRPC statuses, and the KurrentDB-specific error
//! details the official clients recognise, for every service of this crate.
//!
//! Invariants: every store error a call meets becomes a status through [`to_status`]
//! (never a panic, never a second mapping elsewhere); the clients tell some failures apart
//! by the `exception` metadata (`stream-deleted`, `wrong-expected-version`,
//! `maximum-subscribers-reached`, `persistent-subscription-dropped`) or, in BatchAppend, by
//! a `google.rpc.Status` detail, so those are built here and only here. A request
//! message that is not valid protobuf is `INVALID_ARGUMENT` (tonic says `INTERNAL`;
//! the fault is the client's), whether tonic or a service meets it.

use crate::convert::{expected_number, revision_of, stream_id};
use crate::pb::event_store::client::{
    StreamDeleted as PbStreamDeleted, WrongExpectedVersion as PbWrongExpectedVersion,
    wrong_expected_version,
};
use crate::pb::google::rpc::Status as RpcStatus;
use annal_core::{Error, ExpectedVersion};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// How tonic's `INTERNAL` status for a request that is not valid protobuf begins (prost's
/// decode error).
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// The same as `grpc-message` carries it (percent-encoded; tonic encodes spaces too).
const DECODE_FAILURE_ENCODED: &str = "failed%20to%20decode%20Protobuf%20message";

/// A request message that could not be decoded, as `INVALID_ARGUMENT`; any other
/// status as it is.
pub(crate) fn bad_message(status: Status) -> Status {
    if status.code() == Code::Internal && status.message().starts_with(DECODE_FAILURE) {
        Status::invalid_argument(status.message().to_owned())
    } else {
        status
    }
}

/// The middleware for answers that are a status only (tonic decodes a unary request
/// before the service runs): a decode failure becomes `INVALID_ARGUMENT` there too.
pub(crate) async fn decode_failures_are_invalid_argument(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let undecodable = headers.get("grpc-message").is_some_and(|v| {
        let raw = v.as_bytes();
        raw.starts_with(DECODE_FAILURE_ENCODED.as_bytes())
            || raw.starts_with(DECODE_FAILURE.as_bytes())
    });
    if internal && undecodable {
        let code = (Code::InvalidArgument as i32).to_string();
        if let Ok(code) = HeaderValue::from_str(&code) {
            res.headers_mut().insert("grpc-status", code);
        }
    }
    res
}

/// A store error as a gRPC status.
pub(crate) fn to_status(e: Error) -> Status {
    annal_core::failures::report("grpc", &e);
    if matches!(e, Error::Corrupt(_)) {
        metrics::counter!("annal_corrupt_total", "surface" => "grpc").increment(1);
    }
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
        | Error::CheckpointConflict { .. }
        | Error::SubjectForgotten { .. } => Status::failed_precondition(e.to_string()),
        Error::Corrupt(_) => Status::data_loss(e.to_string()),
        Error::Unauthorized { reason } => Status::unauthenticated(reason),
        Error::Forbidden { reason } => Status::permission_denied(reason),
        Error::Unsupported { .. } => Status::unimplemented(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// `status` with KurrentDB's `exception` metadata (and the stream it is about).
pub(crate) fn with_exception(
    mut status: Status,
    exception: &'static str,
    stream: Option<&str>,
) -> Status {
    let md = status.metadata_mut();
    md.insert("exception", MetadataValue::from_static(exception));
    if let Some(s) = stream.and_then(|s| MetadataValue::try_from(s).ok()) {
        md.insert("stream-name", s);
    }
    status
}

/// KurrentDB's "not leader": the call must go to the leader, at `host`:`port`. The
/// official clients reconnect there (they read the `exception` and the two
/// `leader-endpoint-*` entries).
pub(crate) fn not_leader(host: &str, port: u16) -> Status {
    let mut status = with_exception(
        Status::not_found("Leader info available"),
        "not-leader",
        None,
    );
    let md = status.metadata_mut();
    if let Ok(h) = MetadataValue::try_from(host) {
        md.insert("leader-endpoint-host", h);
    }
    if let Ok(p) = MetadataValue::try_from(port.to_string()) {
        md.insert("leader-endpoint-port", p);
    }
    status
}

/// KurrentDB's "stream deleted".
pub(crate) fn stream_deleted(stream: &str) -> Status {
    with_exception(
        Status::failed_precondition(format!("Event stream '{stream}' is deleted.")),
        "stream-deleted",
        Some(stream),
    )
}

/// KurrentDB's "wrong expected version" for a delete or tombstone.
pub(crate) fn delete_wrong_version(stream: &str, expected: ExpectedVersion, actual: u64) -> Status {
    with_exception(
        Status::failed_precondition(format!(
            "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {}, Actual version: {}",
            expected_number(expected),
            revision_of(actual)
        )),
        "wrong-expected-version",
        Some(stream),
    )
}

/// The status of a call whose deadline passed.
pub(crate) fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("Deadline Exceeded")
}

/// KurrentDB's refusal of a consumer beyond a group's `max_subscriber_count` (the
/// clients recognise it by its first words).
pub(crate) fn maximum_subscribers_reached(source: &str, group: &str, max: usize) -> Status {
    with_exception(
        Status::failed_precondition(format!(
            "Maximum subscriptions reached for subscription group '{group}' on stream '{source}' ({max})."
        )),
        "maximum-subscribers-reached",
        None,
    )
}

/// KurrentDB's "persistent subscription dropped" ending of a consumer's call.
pub(crate) fn subscription_dropped(why: &str) -> Status {
    with_exception(
        Status::cancelled(format!("persistent subscription dropped: {why}")),
        "persistent-subscription-dropped",
        None,
    )
}

/// KurrentDB's "the group does not exist".
pub(crate) fn group_not_found(source: &str, group: &str) -> Status {
    Status::not_found(format!(
        "Subscription group '{group}' on stream '{source}' does not exist."
    ))
}

/// KurrentDB's refusal of a `$all` read from a position at which no event starts:
/// `UNKNOWN` "Unexpected ReadAllResult: InvalidPosition" (with a filter,
/// `FilteredReadAllResult`). The Python client recognises the filtered form (every read
/// it makes carries a filter) as `InvalidCommitPositionError`.
pub(crate) fn invalid_read_position(filtered: bool) -> Status {
    let result = if filtered {
        "FilteredReadAllResult"
    } else {
        "ReadAllResult"
    };
    Status::unknown(format!("Unexpected {result}: InvalidPosition"))
}

/// KurrentDB's ending of a catch-up subscription to `$all` from a position at which no
/// event starts.
pub(crate) fn invalid_subscription_position() -> Status {
    Status::unknown("Trying to read from an invalid position.")
}

/// KurrentDB's refusal of a persistent subscription's Create or Update (settings it does
/// not accept, a start past the end of `$all`): `INTERNAL`, which the clients report as
/// an internal error.
pub(crate) fn subscription_failed(source: &str, group: &str, reason: &str) -> Status {
    Status::internal(format!(
        "Subscription group {group} on stream {source} failed: '{reason}'"
    ))
}

/// A status as the `google.rpc.Status` a BatchAppend answer carries.
pub(crate) fn rpc_status(status: &Status, detail: Option<prost_types::Any>) -> RpcStatus {
    RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: detail,
    }
}

/// The BatchAppend detail telling the client that `stream` is deleted, when `status`
/// is a "stream deleted".
pub(crate) fn stream_deleted_detail(status: &Status, stream: &str) -> Option<prost_types::Any> {
    (status.code() == tonic::Code::FailedPrecondition && status.message().ends_with("is deleted."))
        .then(|| prost_types::Any {
            type_url: "type.googleapis.com/event_store.client.StreamDeleted".to_owned(),
            value: PbStreamDeleted {
                stream_identifier: Some(stream_id(stream)),
            }
            .encode_to_vec(),
        })
}

/// A BatchAppend "wrong expected version", with its KurrentDB detail.
pub(crate) fn wrong_version_status(
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) -> RpcStatus {
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

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn an_undecodable_request_is_invalid_argument_and_other_statuses_stay() {
        let decoded = bad_message(Status::internal(
            "failed to decode Protobuf message: invalid wire type",
        ));
        assert_eq!(decoded.code(), Code::InvalidArgument);
        assert!(decoded.message().contains("invalid wire type"));
        assert_eq!(bad_message(Status::internal("boom")).code(), Code::Internal);
        assert_eq!(
            bad_message(Status::not_found("failed to decode Protobuf message")).code(),
            Code::NotFound
        );
    }
}
