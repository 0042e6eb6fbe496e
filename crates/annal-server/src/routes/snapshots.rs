//! The `snapshots` routes: store an aggregate's state at a version, read the newest one
//! with a tag.

use super::{BadRequest, Guarded, NotFound, NotJson, Res, TooLarge, created, ok, path_name};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use annal_core::wire::{Snapshot, SnapshotBody};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

/// `PUT /v1/streams/{aggregate_id}/snapshots/{version}`
#[utoipa::path(
    put,
    path = "/v1/streams/{aggregate_id}/snapshots/{version}",
    tag = "snapshots",
    description = "Store a snapshot of an aggregate at a version (replaces one with the same version and tag).",
    params(("aggregate_id" = String, Path, description = "The aggregate"), ("version" = u64, Path, description = "The version the state reflects")),
    request_body = SnapshotBody,
    responses(
        (status = 201, description = "The snapshot as stored", body = Snapshot),
        BadRequest,
        NotFound,
        TooLarge,
        NotJson,
        Guarded
    )
)]
pub async fn put_snapshot(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, u64)>, PathRejection>,
    body: Result<Json<SnapshotBody>, JsonRejection>,
) -> Res {
    let Path((id, version)) = path?;
    path_name("aggregate_id", &id)?;
    let Json(b) = body?;
    if let Some(info) = app.store.aggregate(&id).await? {
        caller.check_visible(&info.aggregate_type, || {
            Problem::not_found(format!("aggregate '{id}'"))
        })?;
    }
    created(
        &app.store
            .save_snapshot(&id, version, &b.tag, b.state)
            .await?,
    )
}

/// Query of `GET /v1/streams/{aggregate_id}/snapshots/latest`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// The state's shape (required).
    #[param(required = true, value_type = String, min_length = 1)]
    tag: Option<String>,
    /// The newest snapshot at or below this version (default: any).
    at_or_below: Option<u64>,
}

/// `GET /v1/streams/{aggregate_id}/snapshots/latest`
#[utoipa::path(
    get,
    path = "/v1/streams/{aggregate_id}/snapshots/latest",
    tag = "snapshots",
    description = "The newest snapshot with a tag at or below a version.",
    params(("aggregate_id" = String, Path, description = "The aggregate"), SnapshotQuery),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        BadRequest,
        NotFound,
        Guarded
    )
)]
pub async fn latest_snapshot(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Res {
    let Path(id) = path?;
    path_name("aggregate_id", &id)?;
    let Query(q) = query?;
    let Some(tag) = q.tag.filter(|t| !t.is_empty()) else {
        return Err(Problem::invalid(
            "tag",
            "is required: snapshots are read by the tag of their shape",
        ));
    };
    match app.store.load_snapshot(&id, &tag, q.at_or_below).await? {
        Some(s) => {
            caller.check_visible(&s.aggregate_type, || {
                Problem::not_found(format!("snapshot of '{id}' with tag '{tag}'"))
            })?;
            ok(&s)
        }
        None => Err(Problem::not_found(format!(
            "snapshot of '{id}' with tag '{tag}'"
        ))),
    }
}
