//! The `groups` routes: consumer groups' partition leases (acquire, renew, release,
//! list) and members' heartbeats. Every route here needs an unlimited token.

use super::{BadRequest, GuardedUnlimited, NotJson, Res, ok, path_name};
use crate::AppState;
use crate::auth::Caller;
use crate::problem::Problem;
use annal_core::Timestamp;
use annal_core::wire::{AcquireBody, HeartbeatBody, HeldBody, Lease, LeaseList, MemberList};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

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
        BadRequest,
        GuardedUnlimited
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
        (status = 200, description = "The lease", body = Lease),
        BadRequest,
        NotJson,
        (status = 409, description = "lease_conflict: another member holds it", body = annal_core::wire::Problem, content_type = "application/problem+json"),
        GuardedUnlimited
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
        (status = 200, description = "The renewed lease", body = Lease),
        BadRequest,
        NotJson,
        (status = 409, description = "lease_conflict: the lease was lost", body = annal_core::wire::Problem, content_type = "application/problem+json"),
        GuardedUnlimited
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
        BadRequest,
        NotJson,
        (status = 409, description = "lease_conflict: it was not held with this owner and token", body = annal_core::wire::Problem, content_type = "application/problem+json"),
        GuardedUnlimited
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
        BadRequest,
        NotJson,
        GuardedUnlimited
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
fn held_lease(group: String, partition: u32, owner: String, token: u64) -> Lease {
    Lease {
        group,
        partition,
        owner,
        token,
        expires_at: Timestamp::from_micros(0),
    }
}
