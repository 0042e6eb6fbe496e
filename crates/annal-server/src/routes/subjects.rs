//! The `subjects` routes (admin): personal data's subjects listed with their key
//! status, one subject's events exported decrypted (GDPR Art. 15), and a subject
//! forgotten (Art. 17: its key destroyed, docs/privacy.md). Subjects span aggregate
//! types, so every route here needs an unlimited token as well as the admin role.

use super::{BadRequest, Guarded, NotFound, NotJson, Res, ok, page, path_name};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use annal_core::privacy::ForgetRequest;
use annal_core::wire::{EventsPage, ForgetBody, Forgotten, SubjectInfo, SubjectList};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

/// Query of `GET /v1/subjects`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubjectsQuery {
    /// List the subjects after this id (default: from the first); a subject id's rules
    /// apply (at most 255 bytes, no control characters).
    after: Option<String>,
    /// At most this many (default 1,000; at most the server's page limit).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// `GET /v1/subjects`
#[utoipa::path(
    get,
    path = "/v1/subjects",
    tag = "subjects",
    description = "Data subjects with a key, by id, with their key status (active or forgotten). Admin.",
    params(SubjectsQuery),
    responses(
        (status = 200, description = "A page of subjects", body = SubjectList),
        BadRequest,
        Guarded
    )
)]
pub async fn list_subjects(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<SubjectsQuery>, QueryRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Query(q) = query?;
    let limit = page(q.limit, 1000, app.config.max_page)?;
    let after = q.after.unwrap_or_default();
    if !after.is_empty() {
        // A cursor is a subject id: one that could not be one is a bad request, not a
        // question for the store (PostgreSQL refuses a NUL in text).
        path_name("after", &after)?;
    }
    let subjects = app.store.subjects(&after, limit).await?;
    let next_after = (subjects.len() == limit)
        .then(|| subjects.last().map(|s| s.subject.clone()))
        .flatten();
    ok(&SubjectList {
        subjects,
        next_after,
    })
}

/// `GET /v1/subjects/{subject}`
#[utoipa::path(
    get,
    path = "/v1/subjects/{subject}",
    tag = "subjects",
    description = "One data subject's key status. Admin.",
    params(("subject" = String, Path, description = "The subject")),
    responses(
        (status = 200, description = "The subject", body = SubjectInfo),
        BadRequest,
        NotFound,
        Guarded
    )
)]
pub async fn get_subject(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(subject) = path?;
    path_name("subject", &subject)?;
    match app.store.subject(&subject).await? {
        Some(info) => ok(&info),
        None => Err(Problem::not_found(format!("subject '{subject}'"))),
    }
}

/// Query of `GET /v1/subjects/{subject}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubjectEventsQuery {
    /// Events after this position (default 0).
    after_position: Option<u64>,
    /// At most this many (default 1,000; at most the server's page limit).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// `GET /v1/subjects/{subject}/events`
#[utoipa::path(
    get,
    path = "/v1/subjects/{subject}/events",
    tag = "subjects",
    description = "The events holding personal data about a subject, decrypted (or erased), in global order: a subject access request. Admin.",
    params(("subject" = String, Path, description = "The subject"), SubjectEventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        BadRequest,
        Guarded
    )
)]
pub async fn subject_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubjectEventsQuery>, QueryRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(subject) = path?;
    path_name("subject", &subject)?;
    let Query(q) = query?;
    let limit = page(q.limit, 1000, app.config.max_page)?;
    let after = q.after_position.unwrap_or(0);
    let events = app.store.subject_events(&subject, after, limit).await?;
    let next_after_position = (events.len() == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    ok(&EventsPage {
        events,
        next_after_position,
    })
}

/// `POST /v1/subjects/{subject}/forget`
#[utoipa::path(
    post,
    path = "/v1/subjects/{subject}/forget",
    tag = "subjects",
    description = "Forget a data subject: destroy its key (its events' personal parts then read as {\"$erased\":true}), record a $subjectForgotten event and delete the snapshots holding its data. Durable when answered; forgetting again answers the first forgetting (already: true). Admin.",
    params(("subject" = String, Path, description = "The subject")),
    request_body = ForgetBody,
    responses(
        (status = 200, description = "What was forgotten", body = Forgotten),
        BadRequest,
        NotFound,
        NotJson,
        Guarded
    )
)]
pub async fn forget_subject(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ForgetBody>, JsonRejection>,
) -> Res {
    caller.check_unlimited()?;
    let Path(subject) = path?;
    path_name("subject", &subject)?;
    let Json(b) = body?;
    let request = ForgetRequest {
        subject,
        reason: b.reason,
        user_id: caller.name.clone(),
        principal: caller.name.clone(),
    };
    ok(&app.store.forget_subject(request).await?)
}
