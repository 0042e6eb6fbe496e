//! The handlers of the HTTP API's routes (docs/http.md), one module per OpenAPI tag.
//! Each translates HTTP into one Store call and back; bodies are the
//! [`annal_core::wire`] types, every failure is a [`Problem`], and nothing is written on
//! any error.
//!
//! The problem responses several routes share are declared once here ([`BadRequest`],
//! [`Guarded`], …) and named in each route's `responses(…)`.

mod audit;
mod checkpoints;
mod cluster;
mod console;
mod events;
mod groups;
mod operations;
mod snapshots;
mod subjects;

pub use audit::{__path_digest, __path_verify, digest, verify};
pub use checkpoints::{
    __path_get_checkpoint, __path_list_checkpoints, __path_put_checkpoint, get_checkpoint,
    list_checkpoints, put_checkpoint,
};
pub use cluster::{__path_cluster, cluster};
pub use console::{
    __path_aggregate_state, __path_overview, __path_persistent_subscriptions, __path_whoami,
    aggregate_state, overview, persistent_subscriptions, whoami,
};
pub use events::{
    __path_append, __path_count_events, __path_head, __path_read_event, __path_read_events,
    __path_read_stream, __path_subscribe, __path_transact, append, count_events, head, read_event,
    read_events, read_stream, subscribe, transact,
};
pub use groups::{
    __path_acquire_lease, __path_heartbeat, __path_list_leases, __path_release_lease,
    __path_renew_lease, acquire_lease, heartbeat, list_leases, release_lease, renew_lease,
};
pub use operations::{
    __path_live, __path_metrics, __path_openapi, __path_ready, fallback, live, method_not_allowed,
    metrics, openapi, ready,
};
pub use snapshots::{__path_latest_snapshot, __path_put_snapshot, latest_snapshot, put_snapshot};
pub use subjects::{
    __path_forget_subject, __path_get_subject, __path_list_subjects, __path_subject_events,
    forget_subject, get_subject, list_subjects, subject_events,
};

use crate::problem::Problem;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

type Res = Result<Response, Problem>;

fn created<T: serde::Serialize>(body: &T) -> Res {
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn ok<T: serde::Serialize>(body: &T) -> Res {
    Ok(Json(body).into_response())
}

/// Checks a page size against the server's limit; `default` when absent.
fn page(limit: Option<usize>, default: usize, max: usize) -> Result<usize, Problem> {
    match limit {
        None => Ok(default.min(max)),
        Some(0) => Err(Problem::invalid("limit", "must be 1 or more")),
        Some(n) if n > max => Err(Problem::invalid(
            "limit",
            format!("{n} is over the server's page limit of {max}"),
        )),
        Some(n) => Ok(n),
    }
}

/// Checks a name taken from the path (aggregate id, checkpoint name): what no append
/// could have written is bad input, not a lookup.
fn path_name(field: &str, value: &str) -> Result<(), Problem> {
    annal_core::append::check_name(field, value).map_err(Problem::from)
}

/// Problem responses with these statuses and descriptions.
fn problems(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/problem+json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a set of problem responses, for routes' `responses(…)`.
macro_rules! problem_responses {
    ($(#[$doc:meta] $name:ident = [$(($status:literal, $description:literal)),+];)+) => {$(
        #[$doc]
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                problems(&[$(($status, $description)),+])
            }
        }
    )+};
}

problem_responses! {
    /// 400: a field is wrong.
    BadRequest = [(400, "Invalid request: the problem names the field")];
    /// 404.
    NotFound = [(404, "Not found")];
    /// 409: the conflicts of a write.
    Conflict = [(409, "Conflict: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id or checkpoint_conflict")];
    /// 413.
    TooLarge = [(413, "Too large")];
    /// 410: what can no longer be written.
    Gone = [(410, "Gone: stream_deleted (the stream was tombstoned) or subject_forgotten (personal data about a forgotten subject)")];
    /// 415: the body is not JSON.
    NotJson = [(415, "The body is not application/json")];
    /// What every `/v1` route may answer: 401, 403 (role or aggregate types), 503.
    Guarded = [
        (401, "Auth is on and no valid token was sent"),
        (403, "The token's role or aggregate types do not allow this"),
        (503, "The store is unavailable")
    ];
    /// As [`Guarded`], for routes that need an unlimited token.
    GuardedUnlimited = [
        (401, "Auth is on and no valid token was sent"),
        (403, "The token is not unlimited"),
        (503, "The store is unavailable")
    ];
}
