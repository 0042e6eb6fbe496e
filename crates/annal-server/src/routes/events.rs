//! The `events` routes: appends, transactions, reads by aggregate and in global order,
//! one event, the head and the live subscription.

use super::{
    BadRequest, Conflict, Gone, Guarded, NotFound, NotJson, Res, TooLarge, created, ok, page,
    path_name,
};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::stream::{events_body, subscription};
use annal_core::access::Operation;
use annal_core::append::MAX_NAME_BYTES;
use annal_core::streams::{self, StreamRead};
use annal_core::wire::{
    AppendRequest, AppendResult, EventCounts, EventsPage, Head, RecordedEvent, StreamPage,
    Transaction, TransactionResult,
};
use annal_core::{Direction, Filter, Timestamp, Uuid};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::IntoParams;

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
        BadRequest,
        Conflict,
        Gone,
        TooLarge,
        NotJson,
        Guarded
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
    caller.require(append_operation(&request))?;
    caller.act(&mut request, "")?;
    let result = match app.store.append(request).await {
        Ok(r) => r,
        Err(e) => return Err(caller.conceal(app.store.as_ref(), e).await),
    };
    metrics::counter!("annal_events_appended_total").increment(result.events.len() as u64);
    created(&result)
}

/// What appending `request` is, for the roles: system events (`$` types, metadata
/// streams, the `$metadata` aggregate type) need admin.
fn append_operation(request: &AppendRequest) -> Operation {
    if request.aggregate_type.starts_with('$') {
        return Operation::AppendSystem;
    }
    Operation::append(
        &request.aggregate_id,
        request.events.iter().map(|e| e.event_type.as_str()),
    )
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
        BadRequest,
        Conflict,
        Gone,
        TooLarge,
        NotJson,
        Guarded
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
        caller.require(Operation::Checkpoint)?;
    }
    for (i, a) in t.appends.iter_mut().enumerate() {
        // Over HTTP the type is required (only the gRPC endpoint derives it).
        annal_core::append::check_name(&format!("appends[{i}].aggregate_type"), &a.aggregate_type)?;
        caller.check_type(&a.aggregate_type)?;
        caller.require(append_operation(a))?;
        caller.act(a, &format!("appends[{i}]."))?;
    }
    let result = match app.store.transact(t).await {
        Ok(r) => r,
        Err(e) => return Err(caller.conceal(app.store.as_ref(), e).await),
    };
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
        (status = 200, description = "A page of the aggregate's events", body = StreamPage),
        BadRequest,
        NotFound,
        Guarded
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
    caller.check_visible(aggregate_type, || {
        Problem::not_found(format!("aggregate '{id}'"))
    })?;
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
    /// Aggregates whose id starts with this (one prefix, commas included; at most 255
    /// bytes).
    #[param(max_length = 255)]
    aggregate_id_prefix: Option<String>,
    /// Comma-separated principals (any of): who authenticated the append (an API
    /// token's name), beside the user_id it claims.
    principal: Option<String>,
    /// Recorded at or after this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Recorded before this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
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
            aggregate_id_prefix: self.aggregate_id_prefix.clone().filter(|p| !p.is_empty()),
            principals: list(&self.principal),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        };
        plain("event_type", &f.event_types)?;
        plain("aggregate_type", &f.aggregate_types)?;
        plain("correlation_id", &f.correlation_ids)?;
        plain("causation_id", &f.causation_ids)?;
        plain("user_id", &f.user_ids)?;
        plain("principal", &f.principals)?;
        if let Some(prefix) = &f.aggregate_id_prefix {
            plain("aggregate_id_prefix", std::slice::from_ref(prefix))?;
            if prefix.len() > MAX_NAME_BYTES {
                return Err(Problem::invalid(
                    "aggregate_id_prefix",
                    format!(
                        "is {} bytes long; no aggregate id is over {MAX_NAME_BYTES}",
                        prefix.len()
                    ),
                ));
            }
        }
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
        (status = 200, description = "A page of events in global order", body = EventsPage),
        BadRequest,
        Guarded
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

/// Query of `GET /v1/events/counts`: the filters of `GET /v1/events`, without a page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    /// Count events after this global position (default 0).
    after_position: Option<u64>,
    /// Count events at or below this position (default: the head when the count
    /// begins).
    up_to_position: Option<u64>,
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
    /// Aggregates whose id starts with this (at most 255 bytes).
    #[param(max_length = 255)]
    aggregate_id_prefix: Option<String>,
    /// Comma-separated principals (any of).
    principal: Option<String>,
    /// Recorded at or after this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Recorded before this RFC 3339 time (or date).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
}

/// `GET /v1/events/counts`
#[utoipa::path(
    get,
    path = "/v1/events/counts",
    tag = "events",
    description = "How many events pass the filters, per event type, in one request: what a page of GET /v1/events would list, counted over the whole range. A token limited to some aggregate types counts only theirs.",
    params(CountsQuery),
    responses(
        (status = 200, description = "The counts, exact up to up_to_position", body = EventCounts),
        BadRequest,
        Guarded
    )
)]
pub async fn count_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<CountsQuery>, QueryRejection>,
) -> Res {
    let Query(q) = query?;
    let mut filter = EventsQuery {
        event_type: q.event_type,
        aggregate_type: q.aggregate_type,
        correlation_id: q.correlation_id,
        causation_id: q.causation_id,
        user_id: q.user_id,
        aggregate_id_prefix: q.aggregate_id_prefix,
        principal: q.principal,
        since: q.since,
        until: q.until,
        ..EventsQuery::default()
    }
    .filter()?;
    caller.narrow(&mut filter.aggregate_types)?;
    let counts = app
        .store
        .count_by_type(q.after_position.unwrap_or(0), q.up_to_position, &filter)
        .await?;
    ok(&counts)
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
        BadRequest,
        NotFound,
        Guarded
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
            caller.check_visible(&e.aggregate_type, || {
                Problem::not_found(format!("event {id}"))
            })?;
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
        (status = 200, description = "The last committed position", body = Head),
        BadRequest,
        Guarded
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
    ok(&Head { position })
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
        BadRequest,
        Guarded
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
