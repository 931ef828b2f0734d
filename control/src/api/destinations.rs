//! `/api/destinations`: the clusters whose proxies registered, registration (and heartbeat) by
//! a proxy's connector, and removal.

use std::time::SystemTime;

use axum::extract::{Path, State};
use infra_api::DestinationBody;

use super::caller::{Access, Caller};
use super::extract::{Body, Params, no_content, ok, opt_time, page};
use super::{ApiError, ApiResult, CONNECTED_WITHIN, Plane};
use crate::plane::ControlPlane;
use crate::store::{Destination, NewDestination};

fn project(
    plane: &ControlPlane,
    destination: &Destination,
    now: SystemTime,
) -> infra_api::Destination {
    let connected = destination
        .last_seen_at
        .is_some_and(|at| now.duration_since(at).unwrap_or_default() <= CONNECTED_WITHIN);
    infra_api::Destination {
        name: destination.name.clone(),
        url: destination.url.clone(),
        ca_pem: destination.ca_pem.clone(),
        version: destination.version.clone(),
        last_seen_at: opt_time(destination.last_seen_at),
        connected,
        unknown_roles: plane.unknown_roles(&destination.name),
        outside_bindings: plane.cluster_report(&destination.name).outside_bindings,
    }
}

pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[])?;
    caller.require(Access::View)?;
    let now = plane.now();
    let items: Vec<infra_api::Destination> = plane
        .store()
        .list_destinations()
        .await?
        .iter()
        .map(|d| project(&plane, d, now))
        .collect();
    page(&params, items)
}

pub(super) async fn put(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<DestinationBody>,
) -> ApiResult {
    caller.require_connector()?;
    infra_authz::policy::validate_dns_label(&name)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    if !body.url.starts_with("https://") {
        return Err(ApiError::bad_request("url must be an https URL"));
    }
    let destination = plane
        .put_destination(
            &caller.user.name,
            &NewDestination {
                name,
                url: body.url,
                ca_pem: body.ca_pem,
                version: body.version,
            },
            crate::plane::ClusterReport {
                unknown_roles: body.unknown_roles,
                outside_bindings: body.outside_bindings,
            },
        )
        .await?;
    Ok(ok(project(&plane, &destination, plane.now())))
}

pub(super) async fn delete(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.delete_destination(&caller.user.name, &name).await?;
    Ok(no_content())
}
