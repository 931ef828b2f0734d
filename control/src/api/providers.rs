//! `/api/providers` for admins: make, read, change and remove identity providers (the public
//! list is in [`super::public`]).

use axum::extract::{Path, State};
use infra_api::ProviderBody;
use infra_authz::policy::{Provider, ProviderKind, Secret};

use super::caller::{Access, Caller};
use super::extract::{Body, created, no_content, ok};
use super::{ApiError, ApiResult, Plane};
use crate::plane::{ControlPlane, owned};
use crate::store::StoredProvider;

async fn project(plane: &ControlPlane, stored: &StoredProvider) -> ApiResult<infra_api::Provider> {
    let p = &stored.provider;
    Ok(infra_api::Provider {
        name: p.name.clone(),
        kind: p.kind,
        url: p.url.clone(),
        client_id: p.client_id.clone(),
        scopes: p.scopes.clone(),
        source: plane.source_of(owned::PROVIDER, &p.name).await?,
        revision: stored.revision,
    })
}

/// The provider `body` describes, named `name`, with `body`'s client secret or else `current`.
fn provider(body: ProviderBody, name: String, current: Option<Secret>) -> ApiResult<Provider> {
    let client_secret = match (body.client_secret, current) {
        (Some(secret), _) => Secret::new(secret),
        (None, Some(current)) => current,
        (None, None) => return Err(ApiError::bad_request("client_secret is required")),
    };
    let kind: ProviderKind = body
        .kind
        .as_deref()
        .unwrap_or("oidc")
        .parse()
        .map_err(ApiError::bad_request)?;
    Ok(Provider {
        name,
        url: body.url,
        client_id: body.client_id,
        client_secret,
        kind,
        scopes: body.scopes,
    })
}

pub(super) async fn get(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::View)?;
    let stored = plane.store().get_provider(&name).await?;
    Ok(ok(project(&plane, &stored).await?))
}

pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(body): Body<ProviderBody>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    infra_authz::policy::validate_dns_label(&name)
        .map_err(|why| ApiError::bad_request(format!("provider name {why}")))?;
    let provider = provider(body, name, None)?;
    let stored = plane.create_provider(&caller.user.name, &provider).await?;
    Ok(created(project(&plane, &stored).await?))
}

pub(super) async fn update(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<ProviderBody>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request("a provider cannot be renamed"));
    }
    let revision = body
        .revision
        .ok_or_else(|| ApiError::bad_request("revision is required"))?;
    let current = match body.client_secret {
        Some(_) => None,
        None => Some(
            plane
                .store()
                .get_provider(&name)
                .await?
                .provider
                .client_secret,
        ),
    };
    let provider = provider(body, name, current)?;
    let stored = plane
        .update_provider(&caller.user.name, &provider, revision)
        .await?;
    Ok(ok(project(&plane, &stored).await?))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.delete_provider(&caller.user.name, &name).await?;
    Ok(no_content())
}
