//! What anyone may read without signing in: the version, the OpenAPI document, the token keys,
//! and the providers one can log in with.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use infra_api::{ProviderSummary, Version};

use super::extract::{Params, ok, page};
use super::{ApiResult, OPENAPI, Plane};

pub(super) async fn version() -> Response {
    ok(Version {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

pub(super) async fn jwks(State(plane): Plane) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        plane.jwks_json(),
    )
        .into_response()
}

pub(super) async fn list_providers(State(plane): Plane, params: Params) -> ApiResult {
    params.only(&[])?;
    let items: Vec<ProviderSummary> = plane
        .store()
        .list_providers()
        .await?
        .iter()
        .map(|p| ProviderSummary {
            name: p.provider.name.clone(),
            kind: p.provider.kind,
            url: p.provider.url.clone(),
        })
        .collect();
    page(&params, items)
}
