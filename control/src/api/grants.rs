//! `/api/grants`: list (with filters), make, read, change the expiry of, and remove grants.

use axum::extract::{Path, State};
use infra_api::{GrantUpdate, NewGrant};
use infra_authz::policy::{Grant, Resource, Subject};

use super::caller::{Access, Caller};
use super::extract::{Body, Params, created, no_content, ok, opt_time, page, parse_time, time};
use super::{ApiError, ApiResult, Plane};
use crate::plane::{ControlPlane, grant_key, owned};
use crate::store::StoredGrant;

/// Grant id → the approved access request that owns it.
type Owners = std::collections::HashMap<i64, i64>;

async fn project(
    plane: &ControlPlane,
    stored: &StoredGrant,
    owners: &Owners,
) -> ApiResult<infra_api::Grant> {
    let grant = &stored.grant;
    let request_id = owners.get(&stored.id).copied();
    let (user, group) = match &grant.subject {
        Subject::User(name) => (Some(name.clone()), None),
        Subject::Group(name) => (None, Some(name.clone())),
    };
    Ok(infra_api::Grant {
        id: stored.id,
        user,
        group,
        role: grant.role.clone(),
        resource: grant.resource.to_string(),
        expires_at: opt_time(grant.expires_at),
        problem: problem(plane, grant),
        source: match request_id {
            Some(_) => infra_api::Source::Request,
            None => plane.source_of(owned::GRANT, &grant_key(grant)).await?,
        },
        request_id,
        created_at: time(stored.created_at),
        created_by: stored.created_by.clone(),
        revision: stored.revision,
    })
}

/// What is wrong with `grant`, as its destination's proxy reports it, if anything.
fn problem(plane: &ControlPlane, grant: &Grant) -> Option<String> {
    if grant.resource.is_control() {
        return None;
    }
    let destination = &grant.resource.destination;
    plane
        .unknown_roles(destination)
        .contains(&grant.role)
        .then(|| format!(
            "role {:?} exists neither among the built-in roles nor in the cluster of destination {destination:?}; this grant allows nothing there",
            grant.role
        ))
}

fn grant_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("grant id {id:?} is not a number")))
}

pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["user", "group", "resource", "destination", "role"])?;
    let own_only =
        params.get("user").is_some_and(|u| caller.is(u)) && params.get("group").is_none();
    if !own_only {
        caller.require(Access::View)?;
    }
    let mut items = Vec::new();
    let owners = plane.store().requests_by_grant().await?;
    for stored in plane.store().list_grants(plane.now()).await? {
        let grant = &stored.grant;
        let keep = match (&grant.subject, params.get("user"), params.get("group")) {
            (_, None, None) => true,
            (Subject::User(name), Some(user), _) => name == user,
            (Subject::Group(name), _, Some(group)) => name == group,
            _ => false,
        } && params
            .get("resource")
            .is_none_or(|r| grant.resource.to_string() == r)
            && params
                .get("destination")
                .is_none_or(|d| grant.resource.destination == d)
            && params.get("role").is_none_or(|r| grant.role == r);
        if keep {
            items.push(project(&plane, &stored, &owners).await?);
        }
    }
    page(&params, items)
}

pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(new): Body<NewGrant>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let subject = match (new.user, new.group) {
        (Some(user), None) => Subject::User(user),
        (None, Some(group)) => Subject::Group(group),
        _ => return Err(ApiError::bad_request("give exactly one of user and group")),
    };
    let resource: Resource = new
        .resource
        .parse()
        .map_err(|e| ApiError::bad_request(format!("resource: {e}")))?;
    let expires_at = new
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let grant = Grant {
        subject,
        role: new.role,
        resource,
        expires_at,
    };
    let stored = plane.create_grant(&caller.user.name, &grant).await?;
    Ok(created(project(&plane, &stored, &Owners::new()).await?))
}

pub(super) async fn get(State(plane): Plane, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let stored = plane.store().get_grant(grant_id(&id)?).await?;
    let own = matches!(&stored.grant.subject, Subject::User(u) if caller.is(u));
    if !own {
        caller.require(Access::View)?;
    }
    let owners = plane.store().requests_by_grant().await?;
    Ok(ok(project(&plane, &stored, &owners).await?))
}

pub(super) async fn update(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(update): Body<GrantUpdate>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let id = grant_id(&id)?;
    let expires_at = update
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let updated = plane
        .update_grant_expiry(&caller.user.name, id, update.revision, expires_at)
        .await?;
    Ok(ok(project(&plane, &updated, &Owners::new()).await?))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane
        .delete_grant(&caller.user.name, grant_id(&id)?)
        .await?;
    Ok(no_content())
}
