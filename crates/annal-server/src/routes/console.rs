//! The `console` routes: what the audit console (`/console`) reads besides the log
//! itself. `GET /v1/whoami` tells any caller what its token is, so the console shows
//! only what it may do; `GET /v1/overview` shows the store as a whole (head, backend,
//! size, nodes, the last chain check) and so needs a token that sees every type;
//! `GET /v1/streams/{aggregate_id}/state` folds an aggregate up to a version with the
//! state function registered for its type ([`crate::StateViews`]), if there is one
//! (otherwise `404 not_found`, saying that this server has none);
//! `GET /v1/persistent-subscriptions` lists the gRPC endpoint's persistent
//! subscriptions with their lag and parked counts (a token that sees every type).

use super::{BadRequest, Guarded, GuardedUnlimited, NotFound, Res, ok, path_name};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use annal_core::StateViewError;
use annal_core::wire::{AggregateState, Overview, PersistentGroups, Whoami};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

/// Query of `GET /v1/streams/{aggregate_id}/state`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The version (default: the current one; 0: before the first event).
    version: Option<u64>,
}

/// `GET /v1/streams/{aggregate_id}/state`
#[utoipa::path(
    get,
    path = "/v1/streams/{aggregate_id}/state",
    tag = "console",
    description = "An aggregate's state at a version, folded by the state function this server registered for its type (404 not_found without one, saying so).",
    params(("aggregate_id" = String, Path, description = "The aggregate"), StateQuery),
    responses(
        (status = 200, description = "The state", body = AggregateState),
        BadRequest,
        NotFound,
        Guarded
    )
)]
pub async fn aggregate_state(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Res {
    let Path(id) = path?;
    path_name("aggregate_id", &id)?;
    let Query(q) = query?;
    let st = annal_core::streams::state(app.store.as_ref(), &id).await?;
    let not_found = || Problem::not_found(format!("aggregate '{id}'"));
    let Some(aggregate_type) = st.aggregate_type.clone() else {
        return Err(not_found());
    };
    caller.check_visible(&aggregate_type, not_found)?;
    let version = q.version.unwrap_or(st.version);
    if version > st.version {
        return Err(Problem::invalid(
            "version",
            format!("{version} is above the aggregate's version, {}", st.version),
        ));
    }
    // No state to show is a 404 naming why, not a 5xx: the server works as configured.
    let Some(view) = app.config.states.of(&aggregate_type) else {
        return Err(Problem::not_found(format!(
            "the state of '{id}': this server has no state function for '{aggregate_type}' \
             aggregates (annal serve has none; a server embedding annal registers its repositories)"
        )));
    };
    let (version, state) = view.state_at(&id, version).await.map_err(|e| match e {
        StateViewError::Store(e) => Problem::from(e),
        StateViewError::Fold(why) => Problem::not_found(format!(
            "the state of '{id}': the state function for '{aggregate_type}' cannot fold its events: {why}"
        )),
        other => Problem::not_found(format!("the state of '{id}': {other}")),
    })?;
    ok(&AggregateState {
        aggregate_id: id,
        aggregate_type,
        version,
        state,
    })
}

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
    // A router built outside a runtime starts its sampler here.
    app.head_history
        .start(app.store.clone(), app.shutdown.clone());
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
        nodes: match &app.config.cluster {
            Some(view) => view
                .borrow()
                .nodes
                .iter()
                .map(|n| n.address.clone())
                .collect(),
            None => vec![app.config.advertised.to_string()],
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
        last_verify,
        write_failure: app.store.write_failure(),
        head_history: app.head_history.samples(),
    })
}

/// `GET /v1/persistent-subscriptions`
#[utoipa::path(
    get,
    path = "/v1/persistent-subscriptions",
    tag = "console",
    description = "Every persistent subscription group (KurrentDB's server-side consumer groups, served over gRPC): status, consumers, checkpoint, lag, in-flight and parked counts. Needs a token that sees every type.",
    responses(
        (status = 200, description = "The groups", body = PersistentGroups),
        GuardedUnlimited
    )
)]
pub async fn persistent_subscriptions(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Res {
    caller.check_unlimited()?;
    let groups = app.persistent.dashboard().await?;
    ok(&PersistentGroups { groups })
}
