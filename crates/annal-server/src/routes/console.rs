//! The `console` routes: what the audit console (`/console`) reads besides the log
//! itself. `GET /v1/whoami` tells any caller what its token is, so the console shows
//! only what it may do; `GET /v1/overview` shows the store as a whole (head, backend,
//! size, nodes, the last chain check) and so needs a token that sees every type.

use super::{Guarded, GuardedUnlimited, Res, ok};
use crate::AppState;
use crate::auth::Caller;
use annal_core::wire::{Overview, Whoami};
use axum::extract::{Extension, State};

/// `GET /v1/whoami`
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "console",
    description = "The caller as the server sees it: the token's name, role and aggregate types.",
    responses(
        (status = 200, description = "The caller", body = Whoami),
        Guarded
    )
)]
pub async fn whoami(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Res {
    let role = caller.role.map_or("none", |r| match r {
        crate::Role::Read => "read",
        crate::Role::Write => "write",
        crate::Role::Admin => "admin",
    });
    ok(&Whoami {
        name: caller.name.clone(),
        role: role.to_owned(),
        aggregate_types: caller.aggregate_types.clone(),
        auth: app.config.tokens.is_some(),
    })
}

/// `GET /v1/overview`
#[utoipa::path(
    get,
    path = "/v1/overview",
    tag = "console",
    description = "The store as a whole: head, backend, size, nodes, the last chain check this server ran.",
    responses(
        (status = 200, description = "The overview", body = Overview),
        GuardedUnlimited
    )
)]
pub async fn overview(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Res {
    caller.check_unlimited()?;
    let head = app.store.head(&[]).await?;
    let described = &app.config.store;
    let store_bytes = if described.files.is_empty() {
        None
    } else {
        // A file that does not exist (a WAL between checkpoints) counts as empty.
        Some(
            described
                .files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum(),
        )
    };
    let last_verify = app
        .last_verify
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    ok(&Overview {
        head,
        backend: Some(described.backend.clone()).filter(|b| !b.is_empty()),
        store_bytes,
        nodes: vec![app.config.advertised.to_string()],
        version: env!("CARGO_PKG_VERSION").to_owned(),
        last_verify,
        write_failure: app.store.write_failure(),
    })
}
