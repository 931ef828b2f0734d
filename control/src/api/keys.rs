//! `/api/keys`: list, make and remove access keys (one's own; anyone's as an admin).

use std::time::Duration;

use axum::extract::{Path, State};
use infra_api::NewKey;

use super::caller::{Access, Caller};
use super::extract::{Body, Params, created, no_content, opt_time, page, parse_time, time};
use super::{ApiError, ApiResult, Plane};
use crate::store::AccessKey;

fn project(key: &AccessKey) -> infra_api::AccessKey {
    infra_api::AccessKey {
        id: key.id.clone(),
        user: key.user.clone(),
        name: key.name.clone(),
        kind: key.kind,
        created_at: time(key.created_at),
        expires_at: opt_time(key.expires_at),
        inactivity_timeout_seconds: key.inactivity_timeout.map(|t| t.as_secs()),
        last_used_at: time(key.last_used_at),
        key: None,
    }
}

pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["user"])?;
    let user = params.get("user").unwrap_or(&caller.user.name).to_owned();
    if !caller.is(&user) {
        caller.require(Access::View)?;
    }
    let items: Vec<infra_api::AccessKey> = plane
        .store()
        .list_access_keys(&user)
        .await?
        .iter()
        .map(project)
        .collect();
    page(&params, items)
}

pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(new): Body<NewKey>,
) -> ApiResult {
    let user = new.user.unwrap_or_else(|| caller.user.name.clone());
    if !caller.is(&user) {
        caller.require(Access::Admin)?;
    }
    let expires_at = new
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let (key, secret) = plane
        .create_api_key(
            &caller.user.name,
            &user,
            new.name,
            expires_at,
            new.inactivity_timeout_seconds.map(Duration::from_secs),
        )
        .await?;
    let mut answer = project(&key);
    answer.key = Some(secret.expose().to_owned());
    Ok(created(answer))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let own = plane
        .store()
        .list_access_keys(&caller.user.name)
        .await?
        .iter()
        .any(|k| k.id == id);
    let owner = if own {
        caller.user.name.clone()
    } else {
        caller.require(Access::Admin)?;
        plane
            .access_key_owner(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("access key {id:?} does not exist")))?
    };
    plane
        .delete_access_key(&caller.user.name, &id, &owner)
        .await?;
    Ok(no_content())
}
