//! The `checkpoints` routes: named consumers' positions, listed, read and written
//! (optionally compare-and-set). Checkpoints belong to no aggregate type, so every route
//! here needs an unlimited token.

use super::{BadRequest, Conflict, Guarded, NotFound, NotJson, Res, TooLarge, ok, path_name};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use annal_core::wire::{Checkpoint, CheckpointList, CheckpointWrite};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};

/// `GET /v1/checkpoints`
#[utoipa::path(
    get,
    path = "/v1/checkpoints",
    tag = "checkpoints",
    description = "Every checkpoint (named consumers and projections), by name, with position and status.",
    responses(
        (status = 200, description = "The checkpoints", body = CheckpointList),
        Guarded
    )
)]
pub async fn list_checkpoints(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Res {
    // Checkpoints belong to no aggregate type: a limited token may not see or move them.
    caller.check_unlimited()?;
    let checkpoints = app.store.checkpoints().await?;
    ok(&CheckpointList { checkpoints })
}

/// `GET /v1/checkpoints/{name}`
#[utoipa::path(
    get,
    path = "/v1/checkpoints/{name}",
    tag = "checkpoints",
    description = "A named consumer's position and status.",
    params(("name" = String, Path, description = "The consumer")),
    responses(
        (status = 200, description = "The checkpoint", body = Checkpoint),
        BadRequest,
        NotFound,
        Guarded
    )
)]
pub async fn get_checkpoint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(name) = path?;
    path_name("name", &name)?;
    match app.store.checkpoint(&name).await? {
        Some(c) => ok(&c),
        None => Err(Problem::not_found(format!("checkpoint '{name}'"))),
    }
}

/// `PUT /v1/checkpoints/{name}`
#[utoipa::path(
    put,
    path = "/v1/checkpoints/{name}",
    tag = "checkpoints",
    description = "Write a checkpoint, optionally only if it is at expected_position (null: must not exist).",
    params(("name" = String, Path, description = "The consumer")),
    request_body = CheckpointWrite,
    responses(
        (status = 200, description = "The checkpoint as stored", body = Checkpoint),
        BadRequest,
        Conflict,
        TooLarge,
        NotJson,
        Guarded
    )
)]
pub async fn put_checkpoint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CheckpointWrite>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(name) = path?;
    path_name("name", &name)?;
    let Json(mut write) = body?;
    if write.name.is_empty() {
        write.name = name;
    } else if write.name != name {
        return Err(Problem::invalid(
            "name",
            format!(
                "the body names '{}' but the route names '{name}'",
                write.name
            ),
        ));
    }
    ok(&app.store.put_checkpoint(write).await?)
}
