//! The `operations` routes: health, metrics, this API's OpenAPI document, and the
//! answer to any other route.

use super::{Guarded, GuardedUnlimited, Res, ok};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::{AppState, metrics_text};
use annal_core::wire::Health;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /health/live`
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    description = "Liveness.",
    responses(
        (status = 200, description = "The process is up", body = Health)
    )
)]
pub async fn live() -> Res {
    ok(&Health::live())
}

/// `GET /health/ready`: the store answers and can write.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    description = "Readiness: the store answers reads, its last commit did not fail (a full disk, a lost primary), and this process holds the key-encryption key its personal data needs (another process may have rotated it). A 503 says which.",
    responses(
        (status = 200, description = "The store answers and writes", body = Health),
        Guarded
    )
)]
pub async fn ready(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Res {
    let head = match app.store.head(&[]).await {
        Ok(head) => head,
        Err(e) => {
            crate::problem::store_failed("http", &e);
            return Err(Problem::unavailable(format!(
                "the store does not answer: {e}"
            )));
        }
    };
    // A process whose KEK no longer wraps the key table (rotated by another process)
    // serves plain events but no personal data until it restarts: not ready.
    match app.store.kek_problem().await {
        Ok(None) => {}
        Ok(Some(why)) => {
            return Err(Problem::unavailable(format!(
                "the store answers, but this process cannot serve its personal data: {why}"
            )));
        }
        Err(e) => {
            crate::problem::store_failed("http", &e);
            return Err(Problem::unavailable(format!(
                "the store does not answer: {e}"
            )));
        }
    }
    match app.store.write_failure() {
        // The global head only for callers who may see the whole log.
        None if caller.sees_everything() => ok(&Health::ready(head)),
        None => ok(&Health {
            head: None,
            ..Health::ready(head)
        }),
        Some(why) => Err(Problem::unavailable(format!(
            "the store answers reads but cannot write: its last commit failed ({why}); \
             ready again once a commit succeeds"
        ))),
    }
}

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus metrics.",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        GuardedUnlimited
    )
)]
pub async fn metrics(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Res {
    if !app.config.metrics_public {
        caller.check_unlimited()?;
    }
    let head = app.store.head(&[]).await.ok();
    if let Some(head) = head {
        metrics::gauge!("annal_head_position").set(head as f64);
    }
    if let Some(indexed) = app.store.indexed_up_to() {
        metrics::gauge!("annal_index_position").set(indexed as f64);
        if let Some(head) = head {
            metrics::gauge!("annal_index_lag_events").set(head.saturating_sub(indexed) as f64);
        }
    }
    metrics::gauge!("annal_read_ahead_bytes").set(annal_core::budget::held() as f64);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(),
    )
        .into_response())
}

/// `GET /openapi.json`: the OpenAPI 3 document of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", description = "This document.", responses((status = 200, description = "The OpenAPI 3 document", body = Object)))]
pub async fn openapi() -> Response {
    use utoipa::OpenApi;
    Json(crate::openapi::ApiDoc::openapi()).into_response()
}

/// Any other route.
pub async fn fallback() -> Problem {
    Problem::not_found("no such route (GET /openapi.json lists them)")
}

/// A route asked with a method it does not answer.
pub async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}
