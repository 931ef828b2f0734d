//! `/api/users`: list, make, read, remove users, and set a password.

use axum::extract::{Path, State};
use infra_api::{IdentityLink, NewPassword, NewUser};

use super::caller::{Access, Caller};
use super::extract::{Body, Params, created, no_content, ok, page, time};
use super::{ApiResult, Plane};
use crate::plane::{ControlPlane, owned};
use crate::store::User;

async fn project(plane: &ControlPlane, user: &User) -> ApiResult<infra_api::User> {
    Ok(infra_api::User {
        name: user.name.clone(),
        has_password: user.has_password,
        groups: plane.store().groups_of(&user.name).await?,
        source: plane.source_of(owned::USER, &user.name).await?,
        created_at: time(user.created_at),
        updated_at: time(user.updated_at),
        revision: user.revision,
    })
}

pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["name"])?;
    caller.require(Access::View)?;
    let mut items = Vec::new();
    for user in plane.store().list_users().await? {
        if params.get("name").is_some_and(|n| n != user.name) {
            continue;
        }
        items.push(project(&plane, &user).await?);
    }
    page(&params, items)
}

pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(new): Body<NewUser>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let user = plane
        .create_user(&caller.user.name, &new.name, new.password)
        .await?;
    Ok(created(project(&plane, &user).await?))
}

pub(super) async fn get(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    if !caller.is(&name) {
        caller.require(Access::View)?;
    }
    let user = plane.store().get_user(&name).await?;
    Ok(ok(project(&plane, &user).await?))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.delete_user(&caller.user.name, &name).await?;
    Ok(no_content())
}

pub(super) async fn set_password(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<NewPassword>,
) -> ApiResult {
    if !caller.is(&name) {
        caller.require(Access::Admin)?;
    }
    plane
        .set_password(&caller.user.name, &name, body.password)
        .await?;
    Ok(no_content())
}

pub(super) async fn unlock(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.unlock_user(&caller.user.name, &name).await?;
    Ok(no_content())
}

pub(super) async fn link(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(link): Body<IdentityLink>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane
        .link_identity(&caller.user.name, &name, &link.provider, &link.subject)
        .await?;
    Ok(no_content())
}
