//! Kubernetes `Status` responses: the one place where a refusal becomes an HTTP response.
//!
//! kubectl reads these the way it reads the apiserver's own errors, so a user sees the same
//! message whether the apiserver or infra-proxy said no. The bodies are built by hand (no serde
//! round trip) because they are small and on the refusal path of every bad request.

use http::{HeaderValue, Response, StatusCode, header};

use crate::upstream::Body;

/// Why infra-proxy refused a request, before it reached the apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or one that did not verify (401; kubectl runs its credential plugin).
    Unauthorized,
    /// Two `Authorization` headers, or one that is not a bearer token (400).
    BadRequest(String),
    /// What the apiserver answers with its plain-text `500 Internal Server Error`
    /// (`responsewriters.InternalError`): impersonated groups, extras or a uid without a user.
    /// The message is the whole body; it is no `Status`.
    Internal(String),
    /// The grants do not allow the request. `message` is the apiserver's full wording; `group`,
    /// `kind` (the resource) and `name` fill `details` as the apiserver fills them.
    Forbidden {
        /// The message, as `NewForbidden` builds it.
        message: String,
        /// The API group.
        group: String,
        /// The resource.
        kind: String,
        /// The object's name, if any.
        name: String,
    },
    /// infra-proxy cannot decide safely right now (stale policy, nothing loaded): 503.
    Unavailable(String),
    /// The apiserver could not be reached (502).
    BadGateway(String),
    /// The apiserver did not answer in time (504).
    GatewayTimeout(String),
    /// The user has too many requests in flight (429, with `Retry-After`).
    TooManyRequests(String),
    /// The request body is over the limit (413).
    TooLarge(String),
    /// The object in the request body is not valid (422), as the apiserver's validation says.
    Invalid(String),
}

/// Seconds a client told 429 should wait (`Retry-After`, and `retryAfterSeconds` in the
/// `Status`), as the apiserver's own max-in-flight filter says.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl Refusal {
    /// The HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The Kubernetes `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::BadRequest(_) => "BadRequest",
            Self::Forbidden { .. } => "Forbidden",
            Self::Unavailable(_) => "ServiceUnavailable",
            Self::Internal(_) | Self::BadGateway(_) => "InternalError",
            Self::GatewayTimeout(_) => "Timeout",
            Self::TooManyRequests(_) => "TooManyRequests",
            Self::TooLarge(_) => "RequestEntityTooLarge",
            Self::Invalid(_) => "Invalid",
        }
    }

    /// The human message.
    pub fn message(&self) -> &str {
        match self {
            // The apiserver's own wording for a failed authentication.
            Self::Unauthorized => "Unauthorized",
            Self::BadRequest(m)
            | Self::Internal(m)
            | Self::Unavailable(m)
            | Self::BadGateway(m)
            | Self::GatewayTimeout(m)
            | Self::TooManyRequests(m)
            | Self::TooLarge(m)
            | Self::Invalid(m) => m,
            Self::Forbidden { message, .. } => message,
        }
    }

    /// The `Status` JSON body.
    pub fn body(&self) -> String {
        let mut details = String::new();
        if let Self::Forbidden {
            group, kind, name, ..
        } = self
        {
            let mut fields = Vec::new();
            if !name.is_empty() {
                fields.push(format!("\"name\":{}", json_string(name)));
            }
            if !group.is_empty() {
                fields.push(format!("\"group\":{}", json_string(group)));
            }
            if !kind.is_empty() {
                fields.push(format!("\"kind\":{}", json_string(kind)));
            }
            if !fields.is_empty() {
                details = format!(",\"details\":{{{}}}", fields.join(","));
            }
        }
        if let Self::TooManyRequests(_) = self {
            details = format!(",\"details\":{{\"retryAfterSeconds\":{RETRY_AFTER_SECONDS}}}");
        }
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{},\"reason\":\"{}\"{details},\"code\":{}}}\n",
            json_string(self.message()),
            self.reason(),
            self.code().as_u16()
        )
    }

    /// The whole response.
    pub fn into_response(self) -> Response<Body> {
        if let Self::Internal(message) = &self {
            // Go's `http.Error`: the text and a newline.
            let mut response = Response::new(crate::upstream::full(format!("{message}\n")));
            *response.status_mut() = self.code();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            return response;
        }
        let mut response = Response::new(crate::upstream::full(self.body()));
        *response.status_mut() = self.code();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        match self {
            Self::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"infra\""),
                );
            }
            Self::TooManyRequests(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

/// Encodes `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    // serde_json's string encoding is exact and cannot fail for a &str.
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_status_matches_the_apiserver_shape() {
        let refusal = Refusal::Forbidden {
            message: "pods \"web\" is forbidden: User \"u\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\"".into(),
            group: String::new(),
            kind: "pods".into(),
            name: "web".into(),
        };
        let body: serde_json::Value =
            serde_json::from_str(&refusal.body()).expect("the body is JSON");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(body["code"], 403);
        assert_eq!(body["details"]["name"], "web");
        assert_eq!(body["details"]["kind"], "pods");
        assert!(body["details"].get("group").is_none());
        assert_eq!(body["message"].as_str(), Some(refusal.message()));
    }

    #[test]
    fn unauthorized_is_the_apiserver_wording() {
        let body: serde_json::Value =
            serde_json::from_str(&Refusal::Unauthorized.body()).expect("the body is JSON");
        assert_eq!(body["message"], "Unauthorized");
        assert_eq!(body["code"], 401);
    }

    #[test]
    fn too_many_requests_says_when_to_retry() {
        let refusal = Refusal::TooManyRequests("slow down".into());
        let body: serde_json::Value =
            serde_json::from_str(&refusal.body()).expect("the body is JSON");
        assert_eq!(body["reason"], "TooManyRequests");
        assert_eq!(body["code"], 429);
        assert_eq!(body["details"]["retryAfterSeconds"], 1);
        let response = refusal.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let too_large: serde_json::Value =
            serde_json::from_str(&Refusal::TooLarge("big".into()).body()).expect("JSON");
        assert_eq!(too_large["reason"], "RequestEntityTooLarge");
        assert_eq!(too_large["code"], 413);
    }

    #[test]
    fn an_internal_error_is_plain_text_as_the_apiservers() {
        let response =
            Refusal::Internal("Internal Server Error: \"/x\": boom".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }

    #[test]
    fn messages_are_escaped() {
        let body = Refusal::BadRequest("a \"quoted\"\nline".into()).body();
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("the body is JSON");
        assert_eq!(parsed["message"], "a \"quoted\"\nline");
    }
}
