//! Errors as the API answers them: one type, [`ApiError`], built from every error the plane,
//! the store and logins return, and turned into the `{code, message}` body here and nowhere
//! else.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use infra_api::ErrorBody;

use crate::changes::ChangeError;
use crate::login::LoginFailure;
use crate::oidc::OidcError;
use crate::store::StoreError;

/// An error answer: a status, a code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// When to ask again (`Retry-After`), for refusals that pass.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(super) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub(super) fn file_owned(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "file_owned", message)
    }

    /// 429: ask again after `wait`.
    pub(super) fn too_many_requests(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    pub(super) fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "control API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control plane failed; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: a client that waits that long is let in.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds.max(1)),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { .. } => Self::not_found(error.to_string()),
            StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. }
            | StoreError::WrongState { .. } => Self::conflict(error.to_string()),
            StoreError::InvalidName(_) | StoreError::WeakPassword(_) => {
                Self::bad_request(error.to_string())
            }
            _ => Self::internal(&error),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<StoreError>() {
            Ok(store) => store.into(),
            Err(other) => Self::internal(&format!("{other:#}")),
        }
    }
}

impl From<OidcError> for ApiError {
    fn from(error: OidcError) -> Self {
        match &error {
            OidcError::BadRequest(_) | OidcError::UnknownState => {
                Self::bad_request(error.to_string())
            }
            OidcError::Refused(_) => Self::unauthorized(error.to_string()),
            OidcError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
        }
    }
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this API route does not take that method",
    )
}

impl From<LoginFailure> for ApiError {
    fn from(error: LoginFailure) -> Self {
        match error {
            LoginFailure::InvalidCredentials(message) | LoginFailure::Refused(message) => {
                Self::unauthorized(message)
            }
            LoginFailure::Locked { retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked",
                    format!(
                        "too many failed logins for this user from here; try again in {} minutes, or ask an admin to unlock it",
                        retry_after.as_secs().div_ceil(60).max(1)
                    ),
                )
            },
            LoginFailure::TooLong(message) => Self::bad_request(message),
            LoginFailure::Store(error) => error.into(),
            LoginFailure::Oidc(error) => error.into(),
            LoginFailure::Internal(error) => error.into(),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::FileOwned(message) => Self::file_owned(message),
            ChangeError::Forbidden(message) => Self::forbidden(message),
            ChangeError::RequestOwned(message) => Self::new(
                axum::http::StatusCode::CONFLICT,
                "request_owned",
                message.clone(),
            ),
            ChangeError::Invalid(message) => Self::bad_request(message),
            ChangeError::NotFound(message) => Self::not_found(message),
            ChangeError::Store(error) => error.into(),
            ChangeError::Internal(error) => error.into(),
        }
    }
}
