//! `/api/groups`: list, make, read, remove groups, and their members.

use axum::extract::{Path, State};
use infra_api::NewGroup;

use super::caller::{Access, Caller};
use super::extract::{Body, Params, created, no_content, ok, page, time};
use super::{ApiResult, Plane};
use crate::plane::{ControlPlane, owned};

async fn project(plane: &ControlPlane, name: &str) -> ApiResult<infra_api::Group> {
    let group = plane.store().get_group(name).await?;
    Ok(infra_api::Group {
        name: group.name,
        members: u64::try_from(plane.store().members(name).await?.len()).unwrap_or(u64::MAX),
        source: plane.source_of(owned::GROUP, name).await?,
        created_at: time(group.created_at),
        revision: group.revision,
    })
}

pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["name"])?;
    caller.require(Access::View)?;
    let mut items = Vec::new();
    for group in plane.store().list_groups().await? {
        if params.get("name").is_some_and(|n| n != group.name) {
            continue;
        }
        items.push(project(&plane, &group.name).await?);
    }
    page(&params, items)
}

pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(new): Body<NewGroup>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.create_group(&caller.user.name, &new.name).await?;
    Ok(created(project(&plane, &new.name).await?))
}

pub(super) async fn get(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    if !caller.groups.contains(&name) {
        caller.require(Access::View)?;
    }
    Ok(ok(project(&plane, &name).await?))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.delete_group(&caller.user.name, &name).await?;
    Ok(no_content())
}

pub(super) async fn list_members(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult {
    params.only(&[])?;
    if !caller.groups.contains(&name) {
        caller.require(Access::View)?;
    }
    plane.store().get_group(&name).await?;
    let items: Vec<String> = plane.store().members(&name).await?;
    page(&params, items)
}

pub(super) async fn add_member(
    State(plane): Plane,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.add_member(&caller.user.name, &name, &user).await?;
    Ok(no_content())
}

pub(super) async fn remove_member(
    State(plane): Plane,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.remove_member(&caller.user.name, &name, &user).await?;
    Ok(no_content())
}
