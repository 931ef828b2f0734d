//! Sessions and what they reach: log in (`/api/login`, `/api/login/oidc`), log out, trade the
//! session for a destination's token (`/api/tokens`), and the caller's own view (`/api/me`,
//! `/api/me/access`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use infra_api::TokenRequest;
use infra_api::{Access, LoginRequest, LoginResponse, Me, OidcStart, OidcStartRequest, Token};

use super::caller::{self, Caller};
use super::client::Throttled;
use super::extract::{Body, Params, no_content, ok, opt_time, page, time};
use super::{ApiError, ApiResult, Plane};
use crate::store::Destination;

pub(super) async fn login(
    Throttled(client): Throttled,
    State(plane): Plane,
    Body(request): Body<LoginRequest>,
) -> ApiResult {
    let user = plane.log_in(request, &client).await?;
    // Proxies take the new session's tokens without being told (they are signed and name it).
    let (key, secret) = plane.new_session(&user.name).await?;
    Ok(ok(LoginResponse {
        user: user.name,
        access_key: secret.expose().to_owned(),
        expires_at: opt_time(key.expires_at),
    }))
}

pub(super) async fn start_oidc_login(
    Throttled(client): Throttled,
    State(plane): Plane,
    Body(request): Body<OidcStartRequest>,
) -> ApiResult {
    let redirect = plane
        .start_oidc_login(
            &request.provider,
            &request.redirect_uri,
            &request.code_challenge,
            &client,
        )
        .await?;
    Ok(ok(OidcStart {
        authorize_url: redirect.authorize_url,
        state: redirect.state,
    }))
}

pub(super) async fn logout(State(plane): Plane, caller: Caller) -> ApiResult {
    plane
        .store()
        .delete_access_key(&caller.user.name, &caller.key.id, plane.now())
        .await?;
    plane
        .store()
        .append_audit(
            &caller.user.name,
            "session.end",
            &format!("user {:?}", caller.user.name),
            &format!("session {} (logout)", caller.key.id),
            plane.now(),
        )
        .await?;
    plane.session_ended(&caller.key.id, &caller.user.name);
    Ok(no_content())
}

pub(super) async fn issue_token(
    Throttled(client): Throttled,
    State(plane): Plane,
    caller: Caller,
    Body(request): Body<TokenRequest>,
) -> ApiResult {
    infra_authz::policy::validate_dns_label(&request.destination)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    plane.reverify(&caller.user).await?;
    let issued = plane
        .issue_token(&caller.user, &request.destination, Some(&caller.key))
        .await?;
    let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(issued.claims.exp);
    plane
        .store()
        .append_audit(
            &caller.user.name,
            "token.issue",
            &format!("destination {:?}", request.destination),
            &format!("session {} from {:?}", caller.key.id, client.key),
            plane.now(),
        )
        .await?;
    Ok(ok(Token {
        token: issued.token.expose().to_owned(),
        expires_at: time(expires_at),
    }))
}

pub(super) async fn me(caller: Caller) -> ApiResult {
    Ok(ok(Me {
        admin: caller.access == caller::Access::Admin,
        name: caller.user.name,
        groups: caller.groups,
    }))
}

pub(super) async fn my_access(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[])?;
    let destinations: HashMap<String, Destination> = plane
        .store()
        .list_destinations()
        .await?
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let mut items = Vec::new();
    for grant in plane.grants().await? {
        if grant.resource.is_control()
            || !caller::subject_matches(&grant.subject, &caller.user.name, &caller.groups)
        {
            continue;
        }
        let Some(destination) = destinations.get(&grant.resource.destination) else {
            continue;
        };
        items.push(Access {
            destination: destination.name.clone(),
            url: destination.url.clone(),
            ca_pem: destination.ca_pem.clone(),
            namespace: grant.resource.namespace.clone(),
            role: grant.role.clone(),
            expires_at: opt_time(grant.expires_at),
        });
    }
    // Ordered by the JSON text of each entry (its keys sorted), as it always was.
    items.sort_by_cached_key(|item| {
        serde_json::to_value(item)
            .map(|value| value.to_string())
            .unwrap_or_default()
    });
    items.dedup();
    page(&params, items)
}
