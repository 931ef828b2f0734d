//! What handlers take from a request (a JSON body, query parameters) and the shapes of what
//! they answer (the list envelope, times).

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use infra_api::Page;
use jiff::Timestamp;
use serde::Serialize;

use super::{ApiError, ApiResult};

/// A JSON body whose errors are answered as [`ApiError`]s, with unknown fields refused by the
/// types it is used with.
pub(super) struct Body<T>(pub(super) T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "the request body is larger than the {} KiB the API reads",
                        super::MAX_BODY_BYTES / 1024
                    ),
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Query parameters, each allowed name listed by the handler.
pub(super) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(map)) => Ok(Self(map)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

impl Params {
    /// Refuses parameters other than `allowed` and the paging ones.
    pub(super) fn only(&self, allowed: &[&str]) -> ApiResult<()> {
        for key in self.0.keys() {
            if !allowed.contains(&key.as_str()) && key != "page" && key != "limit" {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {key:?} (allowed: {})",
                    [allowed, &["page", "limit"]].concat().join(", ")
                )));
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn paging(&self) -> ApiResult<(usize, usize)> {
        let number = |key: &str, default: usize, max: usize| -> ApiResult<usize> {
            match self.get(key) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(ApiError::bad_request(format!(
                        "{key} must be a number from 1 to {max}"
                    ))),
                },
            }
        };
        Ok((number("page", 1, usize::MAX)?, number("limit", 100, 1000)?))
    }
}

/// A page of `items` as the list envelope.
pub(super) fn page<T: Serialize>(params: &Params, items: Vec<T>) -> ApiResult {
    let (page, limit) = params.paging()?;
    let total = items.len();
    let items: Vec<T> = items
        .into_iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .collect();
    Ok(Json(Page {
        items,
        page,
        limit,
        total,
    })
    .into_response())
}

/// `201 Created` with `value`.
pub(super) fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// `200 OK` with `value`.
pub(super) fn ok<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

/// `204 No Content`.
pub(super) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A stored time on the wire (a time outside what RFC 3339 can say is clamped to its ends).
pub(super) fn time(at: SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or(if at > SystemTime::UNIX_EPOCH {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// An optional stored time on the wire.
pub(super) fn opt_time(at: Option<SystemTime>) -> Option<Timestamp> {
    at.map(time)
}

/// A time the caller sent, RFC 3339.
pub(super) fn parse_time(field: &str, text: &str) -> ApiResult<SystemTime> {
    text.parse::<Timestamp>()
        .map(SystemTime::from)
        .map_err(|e| ApiError::bad_request(format!("{field} is not an RFC 3339 time: {e}")))
}
