//! The client of an API request (see [`crate::clients`]) as an extractor, and the per-address
//! rate limit of login, OIDC start and token exchange as one ([`Throttled`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::ApiError;
use crate::clients::{ClientAddr, PeerAddr, Throttle};
use crate::plane::ControlPlane;

impl FromRequestParts<Arc<ControlPlane>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        plane: &Arc<ControlPlane>,
    ) -> Result<Self, Self::Rejection> {
        let Some(PeerAddr(peer)) = parts.extensions.get::<PeerAddr>().copied() else {
            return Ok(Self::unknown());
        };
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(Self::resolve(
            peer.ip(),
            &forwarded,
            &plane.config().trusted_proxies,
        ))
    }
}

/// A request that took one of its client's allowance (see [`Throttle`]); refused with 429 and
/// `Retry-After` when the allowance is spent.
#[derive(Debug)]
pub struct Throttled(pub ClientAddr);

impl FromRequestParts<Arc<ControlPlane>> for Throttled {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        plane: &Arc<ControlPlane>,
    ) -> Result<Self, Self::Rejection> {
        let client = ClientAddr::from_request_parts(parts, plane).await?;
        if let Some(throttle) = parts.extensions.get::<Arc<Throttle>>()
            && let Err(wait) = throttle.check(&client)
        {
            return Err(ApiError::too_many_requests(
                "too many requests from this address; slow down",
                wait,
            ));
        }
        Ok(Self(client))
    }
}
