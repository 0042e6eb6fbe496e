//! The `audit` routes: the hash chain checked by the server, next to its data, and the
//! log's digest (its head, to keep elsewhere). The last check's report is kept for
//! the overview (`GET /v1/overview`).

use super::{BadRequest, Guarded, Res, ok};
use crate::AppState;
use crate::auth::Caller;
use annal_core::wire::{Digest, LastVerify, VerifyReport};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

/// Query of `GET /v1/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// First position to check (default 1).
    from_position: Option<u64>,
    /// Last position to check (default: the head).
    to_position: Option<u64>,
    /// Also run the backend's own checks (SQLite's integrity_check; on PostgreSQL the
    /// head row; on both the stream records against the log): slower, reads every page.
    deep: Option<bool>,
}

/// `GET /v1/verify`
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "audit",
    description = "Check the hash chain, whole or by range; with deep=true also the backend's own consistency (findings in `storage`, which make ok false).",
    params(VerifyQuery),
    responses(
        (status = 200, description = "The report (ok may be false)", body = VerifyReport),
        BadRequest,
        Guarded
    )
)]
pub async fn verify(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    caller.check_unlimited()?;
    let deep = q.deep.unwrap_or(false);
    let report = if deep {
        caller.require(annal_core::access::Operation::VerifyDeep)?;
        app.store
            .verify_deep(q.from_position, q.to_position)
            .await?
    } else {
        app.store.verify(q.from_position, q.to_position).await?
    };
    *app.last_verify
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LastVerify {
        at: annal_core::Timestamp::now(),
        deep,
        report: report.clone(),
    });
    ok(&report)
}

/// `GET /v1/digest`
#[utoipa::path(
    get,
    path = "/v1/digest",
    tag = "audit",
    description = "The log's digest: its head position and hash, the head event's time and now. Keep it outside the store; `annal verify --digest` (or --expect POSITION:HASH) later proves the log still holds that prefix unchanged, which catches a cut-off tail (docs/chain.md).",
    responses(
        (status = 200, description = "The digest", body = Digest),
        Guarded
    )
)]
pub async fn digest(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Res {
    caller.check_unlimited()?;
    ok(&annal_core::digest::take(app.store.as_ref()).await?)
}
