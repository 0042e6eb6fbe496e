//! The handlers of API.md's routes. Each translates HTTP into one Store call and back;
//! every failure is a [`Problem`], and nothing is written on any error.

use crate::auth::Caller;
#[allow(unused_imports)]
use crate::openapi::{EventsPageDoc, HeadDoc, ProblemDoc, StatusDoc, StreamPageDoc};
use crate::problem::Problem;
use crate::stream::{events_body, subscription};
use crate::{AppState, metrics_text};
use annal_core::checkpoint::CheckpointWrite;
use annal_core::streams::{self, StreamRead};
use annal_core::{AppendRequest, Direction, Filter, RawJson, Timestamp, Transaction, Uuid};
#[allow(unused_imports)]
use annal_core::{
    AppendResult, Checkpoint, RecordedEvent, Snapshot, TransactionResult, VerifyReport,
};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

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

/// `POST /v1/streams/{aggregate_id}`
#[utoipa::path(
    post,
    path = "/v1/streams/{aggregate_id}",
    tag = "events",
    description = "Append events to one aggregate, atomically, with an optimistic concurrency check.",
    params(("aggregate_id" = String, Path, description = "The aggregate")),
    request_body = AppendRequest,
    responses(
        (status = 201, description = "Appended (or an identical retry answered)", body = AppendResult),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id or checkpoint_conflict", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn append(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AppendRequest>, JsonRejection>,
) -> Res {
    let Path(id) = path?;
    let Json(mut request) = body?;
    if request.aggregate_id.is_empty() {
        request.aggregate_id = id;
    } else if request.aggregate_id != id {
        return Err(Problem::invalid(
            "aggregate_id",
            format!(
                "the body names '{}' but the route names '{id}'",
                request.aggregate_id
            ),
        ));
    }
    // Over HTTP the type is required (only the gRPC endpoint derives it from the name).
    annal_core::append::check_name("aggregate_type", &request.aggregate_type)?;
    caller.check_type(&request.aggregate_type)?;
    if request.user_id.is_none() {
        request.user_id.clone_from(&caller.name);
    }
    let result = app.store.append(request).await?;
    metrics::counter!("annal_events_appended_total").increment(result.events.len() as u64);
    created(&result)
}

/// `POST /v1/transactions`
#[utoipa::path(
    post,
    path = "/v1/transactions",
    tag = "events",
    description = "Several appends and optionally one checkpoint, committed together or not at all.",
    request_body = Transaction,
    responses(
        (status = 201, description = "Committed", body = TransactionResult),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id or checkpoint_conflict", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn transact(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Transaction>, JsonRejection>,
) -> Res {
    let Json(mut t) = body?;
    if t.checkpoint.is_some() {
        caller.check_unlimited()?;
    }
    for (i, a) in t.appends.iter_mut().enumerate() {
        // Over HTTP the type is required (only the gRPC endpoint derives it).
        annal_core::append::check_name(&format!("appends[{i}].aggregate_type"), &a.aggregate_type)?;
        caller.check_type(&a.aggregate_type)?;
        if a.user_id.is_none() {
            a.user_id.clone_from(&caller.name);
        }
    }
    let result = app.store.transact(t).await?;
    let n: usize = result.results.iter().map(|r| r.events.len()).sum();
    metrics::counter!("annal_events_appended_total").increment(n as u64);
    created(&result)
}

/// Query of `GET /v1/streams/{aggregate_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Forward: the first version (default 1); backward: the last (default: the current one).
    from_version: Option<u64>,
    /// Most events in the page (default 100, at most the server's page limit).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// `forward` (default) or `backward`.
    direction: Option<Direction>,
}

/// `GET /v1/streams/{aggregate_id}`
#[utoipa::path(
    get,
    path = "/v1/streams/{aggregate_id}",
    tag = "events",
    description = "An aggregate's events, forwards or backwards from a version.",
    params(("aggregate_id" = String, Path, description = "The aggregate"), StreamQuery),
    responses(
        (status = 200, description = "A page of the aggregate's events", body = StreamPageDoc),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn read_stream(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Res {
    let Path(id) = path?;
    path_name("aggregate_id", &id)?;
    let Query(q) = query?;
    let limit = page(q.limit, 100, app.config.max_page)?;
    let st = streams::state(app.store.as_ref(), &id).await?;
    let Some(aggregate_type) = &st.aggregate_type else {
        return Err(Problem::not_found(format!("aggregate '{id}'")));
    };
    caller.check_type(aggregate_type)?;
    let direction = q.direction.unwrap_or_default();
    let read = streams::read_with(
        app.store.as_ref(),
        &st,
        &id,
        direction,
        q.from_version,
        limit,
    )
    .await?;
    let StreamRead::Events(events) = read else {
        return Err(Problem::not_found(format!(
            "aggregate '{id}' (it was deleted)"
        )));
    };
    let next = match (direction, events.last()) {
        (Direction::Forward, Some(last)) if last.aggregate_version < st.version => {
            Some(last.aggregate_version + 1)
        }
        (Direction::Backward, Some(last)) if last.aggregate_version > st.first_visible() => {
            Some(last.aggregate_version - 1)
        }
        _ => None,
    };
    // A typed body, not a serde_json::Value: event payloads must stay verbatim.
    #[derive(serde::Serialize)]
    struct StreamPage {
        events: Vec<annal_core::RecordedEvent>,
        next_from_version: Option<u64>,
    }
    ok(&StreamPage {
        events,
        next_from_version: next,
    })
}

/// The filters every global read takes (comma-separated lists; OR within, AND across).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this global position (default 0).
    after_position: Option<u64>,
    /// Most events in the page (default 1000, at most the server's page limit).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// Comma-separated event types (any of).
    event_type: Option<String>,
    /// Comma-separated aggregate types (any of).
    aggregate_type: Option<String>,
    /// Comma-separated correlation ids (any of).
    correlation_id: Option<String>,
    /// Comma-separated causation ids (any of).
    causation_id: Option<String>,
    /// Comma-separated actors (any of).
    user_id: Option<String>,
    /// Recorded at or after this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Recorded before this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
}

/// Checks a name taken from the path (aggregate id, checkpoint name): what no append
/// could have written is bad input, not a lookup.
fn path_name(field: &str, value: &str) -> Result<(), Problem> {
    annal_core::append::check_name(field, value).map_err(Problem::from)
}

/// Refuses control characters in filter values (no stored name holds them).
fn plain(field: &str, values: &[String]) -> Result<(), Problem> {
    match values.iter().find(|v| v.chars().any(char::is_control)) {
        Some(_) => Err(Problem::invalid(
            field,
            "must not contain control characters",
        )),
        None => Ok(()),
    }
}

fn list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn time(field: &str, v: &Option<String>) -> Result<Option<Timestamp>, Problem> {
    v.as_deref()
        .map(|t| Timestamp::parse(t).map_err(|e| Problem::invalid(field, e.to_string())))
        .transpose()
}

impl EventsQuery {
    /// The store filter these parameters describe.
    pub fn filter(&self) -> Result<Filter, Problem> {
        let f = Filter {
            event_types: list(&self.event_type),
            aggregate_types: list(&self.aggregate_type),
            correlation_ids: list(&self.correlation_id),
            causation_ids: list(&self.causation_id),
            user_ids: list(&self.user_id),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        };
        plain("event_type", &f.event_types)?;
        plain("aggregate_type", &f.aggregate_types)?;
        plain("correlation_id", &f.correlation_ids)?;
        plain("causation_id", &f.causation_ids)?;
        plain("user_id", &f.user_ids)?;
        Ok(f)
    }
}

/// `GET /v1/events`: streamed, so a large page is never one buffer.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    description = "All events in global order, filtered.",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events in global order", body = EventsPageDoc),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn read_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    let mut filter = q.filter()?;
    caller.narrow(&mut filter.aggregate_types)?;
    let limit = page(q.limit, 1000, app.config.max_page)?;
    events_body(
        app.store.clone(),
        q.after_position.unwrap_or(0),
        limit,
        filter,
    )
    .await
}

/// `GET /v1/events/{event_id}`
#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    tag = "events",
    description = "One event by id.",
    params(("event_id" = uuid::Uuid, Path, description = "The event's UUID")),
    responses(
        (status = 200, description = "The event", body = RecordedEvent),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn read_event(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let Path(raw) = path?;
    let id: Uuid = raw
        .parse()
        .map_err(|e| Problem::invalid("event_id", format!("'{raw}' is not a UUID: {e}")))?;
    match app.store.event(id).await? {
        Some(e) => {
            caller.check_type(&e.aggregate_type)?;
            ok(&e)
        }
        None => Err(Problem::not_found(format!("event {id}"))),
    }
}

/// Query of `GET /v1/head`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HeadQuery {
    /// Comma-separated aggregate types: the last position among their events.
    aggregate_type: Option<String>,
}

/// `GET /v1/head`
#[utoipa::path(
    get,
    path = "/v1/head",
    tag = "events",
    description = "The last committed position, overall or among some aggregate types.",
    params(HeadQuery),
    responses(
        (status = 200, description = "The last committed position", body = HeadDoc),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn head(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HeadQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    let mut types = list(&q.aggregate_type);
    plain("aggregate_type", &types)?;
    caller.narrow(&mut types)?;
    let position = app.store.head(&types).await?;
    ok(&json!({ "position": position }))
}

/// The body of `GET /v1/checkpoints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// Every checkpoint, by name.
    pub checkpoints: Vec<Checkpoint>,
}

/// `GET /v1/checkpoints`
#[utoipa::path(
    get,
    path = "/v1/checkpoints",
    tag = "checkpoints",
    description = "Every checkpoint (named consumers and projections), by name, with position and status.",
    responses(
        (status = 200, description = "The checkpoints", body = CheckpointList),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
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
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
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
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: wrong_expected_version, aggregate_type_mismatch, duplicate_event_id or checkpoint_conflict", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
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

/// Body of `PUT /v1/streams/{aggregate_id}/snapshots/{version}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    /// The state's shape, e.g. `family-v2`.
    #[schema(min_length = 1, max_length = 255)]
    tag: String,
    /// The state.
    state: RawJson,
}

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
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
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
        caller.check_type(&info.aggregate_type)?;
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
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
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
            caller.check_type(&s.aggregate_type)?;
            ok(&s)
        }
        None => Err(Problem::not_found(format!(
            "snapshot of '{id}' with tag '{tag}'"
        ))),
    }
}

/// `GET /v1/subscribe`: Server-Sent Events, history then live. A `Last-Event-ID` header
/// (sent by reconnecting browsers) resumes after that position.
#[utoipa::path(
    get,
    path = "/v1/subscribe",
    tag = "events",
    description = "Every matching event after a position, then live ones as they commit.",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position")),
    responses(
        (status = 200, description = "Server-Sent Events: id = position, data = the event JSON; history, then live", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn subscribe(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    let mut filter = q.filter()?;
    caller.narrow(&mut filter.aggregate_types)?;
    if q.limit.is_some() {
        return Err(Problem::invalid(
            "limit",
            "a subscription has no limit; read /v1/events for pages",
        ));
    }
    let mut after = q.after_position.unwrap_or(0);
    if let Some(v) = headers.get("last-event-id") {
        after = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Problem::invalid("Last-Event-ID", "must be a position"))?;
    }
    Ok(subscription(app, after, filter))
}

/// Query of `GET /v1/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// First position to check (default 1).
    from_position: Option<u64>,
    /// Last position to check (default: the head).
    to_position: Option<u64>,
}

/// `GET /v1/verify`
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "audit",
    description = "Check the hash chain, whole or by range.",
    params(VerifyQuery),
    responses(
        (status = 200, description = "The report (ok may be false)", body = VerifyReport),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn verify(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    caller.check_unlimited()?;
    ok(&app.store.verify(q.from_position, q.to_position).await?)
}

/// `GET /health/live`
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    description = "Liveness.",
    responses(
        (status = 200, description = "The process is up", body = StatusDoc)
    )
)]
pub async fn live() -> Res {
    ok(&json!({ "status": "live" }))
}

/// `GET /health/ready`: the store answers.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    description = "Readiness: the store answers.",
    responses(
        (status = 200, description = "The store answers", body = StatusDoc),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token's role or aggregate types do not allow this", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn ready(State(app): State<AppState>) -> Res {
    match app.store.head(&[]).await {
        Ok(head) => ok(&json!({ "status": "ready", "head": head })),
        Err(e) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store does not answer: {e}"),
        )),
    }
}

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus metrics.",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)
    )
)]
pub async fn metrics(State(app): State<AppState>) -> Res {
    if let Ok(head) = app.store.head(&[]).await {
        metrics::gauge!("annal_head_position").set(head as f64);
    }
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

/// Body of `POST /v1/groups/{group}/leases/{partition}/acquire`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The member taking the lease.
    #[schema(min_length = 1, max_length = 255)]
    pub owner: String,
    /// How long it lasts unless renewed, in milliseconds (1 to 3,600,000).
    pub ttl_ms: u64,
}

/// Body of `POST /v1/groups/{group}/leases/{partition}/renew` and `…/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldBody {
    /// The member holding the lease.
    #[schema(min_length = 1, max_length = 255)]
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// For a renewal: how long it lasts from now, in milliseconds (1 to 3,600,000).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// Body of `PUT /v1/groups/{group}/members/{member}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// How long the member counts as alive, in milliseconds (0: it leaves).
    pub ttl_ms: u64,
}

/// The body of `GET /v1/groups/{group}/leases`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseList {
    /// The unexpired leases, by partition.
    pub leases: Vec<annal_core::Lease>,
}

/// The body of `PUT /v1/groups/{group}/members/{member}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// The live members, by name.
    pub members: Vec<String>,
}

fn ttl(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

fn lease_held(group: &str, partition: u32, detail: &str) -> Problem {
    Problem::from(annal_core::Error::LeaseConflict {
        group: group.to_owned(),
        partition,
        detail: detail.to_owned(),
    })
}

/// `GET /v1/groups/{group}/leases`
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/leases",
    tag = "groups",
    description = "The consumer group's unexpired partition leases, by partition.",
    params(("group" = String, Path, description = "The consumer group")),
    responses(
        (status = 200, description = "The leases", body = LeaseList),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not unlimited", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn list_leases(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(group) = path?;
    path_name("group", &group)?;
    let leases = app.store.leases(&group).await?;
    ok(&LeaseList { leases })
}

/// `POST /v1/groups/{group}/leases/{partition}/acquire`
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/leases/{partition}/acquire",
    tag = "groups",
    description = "Take a partition's lease if no one holds it (never taken, released or expired); the fencing token rises.",
    params(
        ("group" = String, Path, description = "The consumer group"),
        ("partition" = u32, Path, description = "The partition")
    ),
    request_body = AcquireBody,
    responses(
        (status = 200, description = "The lease", body = annal_core::Lease),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "lease_conflict: another member holds it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not unlimited", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn acquire_lease(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, u32)>, PathRejection>,
    body: Result<Json<AcquireBody>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path((group, partition)) = path?;
    path_name("group", &group)?;
    let Json(b) = body?;
    match app
        .store
        .acquire_lease(&group, partition, &b.owner, ttl(b.ttl_ms))
        .await?
    {
        Some(lease) => ok(&lease),
        None => Err(lease_held(&group, partition, "another member holds it")),
    }
}

/// `POST /v1/groups/{group}/leases/{partition}/renew`
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/leases/{partition}/renew",
    tag = "groups",
    description = "Extend a lease to ttl_ms from now, if it is still held with this owner and token.",
    params(
        ("group" = String, Path, description = "The consumer group"),
        ("partition" = u32, Path, description = "The partition")
    ),
    request_body = HeldBody,
    responses(
        (status = 200, description = "The renewed lease", body = annal_core::Lease),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "lease_conflict: the lease was lost", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not unlimited", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn renew_lease(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, u32)>, PathRejection>,
    body: Result<Json<HeldBody>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path((group, partition)) = path?;
    path_name("group", &group)?;
    let Json(b) = body?;
    let Some(ttl_ms) = b.ttl_ms else {
        return Err(Problem::invalid("ttl_ms", "a renewal needs a ttl_ms"));
    };
    let held = held_lease(group, partition, b.owner, b.token);
    match app.store.renew_lease(&held, ttl(ttl_ms)).await? {
        Some(lease) => ok(&lease),
        None => Err(lease_held(
            &held.group,
            partition,
            "the lease is no longer held with this owner and token",
        )),
    }
}

/// `POST /v1/groups/{group}/leases/{partition}/release`
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/leases/{partition}/release",
    tag = "groups",
    description = "Give a lease up (its token is kept: the next owner's is higher).",
    params(
        ("group" = String, Path, description = "The consumer group"),
        ("partition" = u32, Path, description = "The partition")
    ),
    request_body = HeldBody,
    responses(
        (status = 204, description = "Released"),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "lease_conflict: it was not held with this owner and token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not unlimited", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn release_lease(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, u32)>, PathRejection>,
    body: Result<Json<HeldBody>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path((group, partition)) = path?;
    path_name("group", &group)?;
    let Json(b) = body?;
    if b.ttl_ms.is_some() {
        return Err(Problem::invalid("ttl_ms", "a release takes no ttl_ms"));
    }
    let held = held_lease(group, partition, b.owner, b.token);
    if app.store.release_lease(&held).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(lease_held(
            &held.group,
            partition,
            "the lease is not held with this owner and token",
        ))
    }
}

/// `PUT /v1/groups/{group}/members/{member}`
#[utoipa::path(
    put,
    path = "/v1/groups/{group}/members/{member}",
    tag = "groups",
    description = "A member's heartbeat: it counts as alive for ttl_ms (0: it leaves). Answers the live members.",
    params(
        ("group" = String, Path, description = "The consumer group"),
        ("member" = String, Path, description = "The member")
    ),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The live members", body = MemberList),
        (status = 400, description = "Invalid request: the problem names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Auth is on and no valid token was sent", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not unlimited", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub async fn heartbeat(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<HeartbeatBody>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path((group, member)) = path?;
    path_name("group", &group)?;
    path_name("member", &member)?;
    let Json(b) = body?;
    let members = app.store.heartbeat(&group, &member, ttl(b.ttl_ms)).await?;
    ok(&MemberList { members })
}

/// The lease a renewal or release names (its expiry is not needed).
fn held_lease(group: String, partition: u32, owner: String, token: u64) -> annal_core::Lease {
    annal_core::Lease {
        group,
        partition,
        owner,
        token,
        expires_at: Timestamp::from_micros(0),
    }
}
