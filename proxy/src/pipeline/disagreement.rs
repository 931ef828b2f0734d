//! When the apiserver refuses (403) a request Infra allowed: the two disagree, and the user
//! should hear why rather than see a bare "forbidden". The proxy appends to the `Status`
//! message what Infra decided and the likely reason the cluster did not agree, and logs both.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt as _;
use infra_authz::attributes::Attributes;
use infra_authz::policy::Grant;

use super::Trail;
use crate::upstream::{self, Body};

/// The largest 403 body read to add the explanation; a larger one passes unchanged.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// Whether a 403 to this request is the cluster's RBAC disagreeing with Infra: not for a proxied
/// request (`pods/proxy`, `services/proxy`, `nodes/proxy`, the `proxy` verb), whose 403 and body
/// come from the backend, nor for an impersonation (`kubectl --as`), whose refusal may be the
/// proxy's own credential lacking the right to impersonate that kind of identity.
pub(super) fn applies(trail: &Trail) -> bool {
    trail.impersonated.is_none()
        && matches!(&trail.attrs, Some(Attributes::Resource(r))
            if r.verb != "proxy" && r.subresource.as_deref() != Some("proxy"))
}

/// The grant that allowed the request, when a 403 to it would be the cluster disagreeing with
/// Infra ([`applies`]).
pub(super) fn allowed_grant(trail: &Trail) -> Option<std::sync::Arc<Grant>> {
    match &trail.decision {
        Some(infra_authz::decision::Decision::Allow { grant }) if applies(trail) => {
            Some(std::sync::Arc::clone(grant))
        }
        _ => None,
    }
}

/// What Infra allowed, in words: `infra-proxy allowed this by the grant of edit to user suzie
/// on production.web`.
pub(super) fn allowed_by(grant: &Grant) -> String {
    format!(
        "infra-proxy allowed this by the grant of {} to {} on {}",
        grant.role, grant.subject, grant.resource
    )
}

/// Reads a 403's body (within `deadline`) and, when it is a JSON `Status`, appends `note` to its
/// message. Any other body (protobuf, too large, not JSON) is relayed as it came; one that fails
/// or does not arrive in time fails the response.
pub(super) async fn explain(
    body: Body,
    headers: &mut HeaderMap,
    note: &str,
    deadline: std::time::Duration,
) -> Body {
    tracing::warn!(disagreement = %note, "the apiserver refused a request Infra allowed");
    if let Ok(body) = tokio::time::timeout(deadline, read_and_note(body, headers, note)).await {
        body
    } else {
        headers.remove(header::CONTENT_LENGTH);
        failed("the apiserver did not send its 403 body in time".into())
    }
}

async fn read_and_note(body: Body, headers: &mut HeaderMap, note: &str) -> Body {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return body;
    }
    let mut body = body;
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => frame.into_data().unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%error, "a 403 body could not be read whole");
                // Part of it was read: the response fails as the upstream body did.
                headers.remove(header::CONTENT_LENGTH);
                return failed(error);
            }
        };
        if read.len() + data.len() > MAX_STATUS_BYTES {
            headers.remove(header::CONTENT_LENGTH);
            read.extend_from_slice(&data);
            // Relay what was read, then the rest as it comes.
            return then(Bytes::from(read), body);
        }
        read.extend_from_slice(&data);
    }
    let bytes = Bytes::from(read);
    let Some(rewritten) = with_note(&bytes, note) else {
        return upstream::full(bytes);
    };
    if let Ok(length) = HeaderValue::from_str(&rewritten.len().to_string()) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    upstream::full(rewritten)
}

/// A body that fails at once (the client sees the response cut, as from the apiserver).
fn failed(error: upstream::BodyError) -> Body {
    let stream = futures_util::stream::once(async move {
        Err::<hyper::body::Frame<Bytes>, upstream::BodyError>(error)
    });
    http_body_util::combinators::BoxBody::new(http_body_util::StreamBody::new(stream))
}

/// `head`, then the rest of `body`.
fn then(head: Bytes, body: Body) -> Body {
    use futures_util::StreamExt as _;
    let head = futures_util::stream::once(async move { Ok(hyper::body::Frame::data(head)) });
    let rest = http_body_util::BodyStream::new(body);
    http_body_util::combinators::BoxBody::new(http_body_util::StreamBody::new(head.chain(rest)))
}

/// The `Status` with `note` appended to its message, or `None` when `bytes` is not a `Status`.
fn with_note(bytes: &Bytes, note: &str) -> Option<Vec<u8>> {
    let mut status: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if status.get("kind").and_then(|k| k.as_str()) != Some("Status") {
        return None;
    }
    let message = status
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let message = if message.is_empty() {
        note.to_owned()
    } else {
        format!("{message} ({note})")
    };
    status["message"] = serde_json::Value::String(message);
    serde_json::to_vec(&status).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_and_impersonated_requests_get_no_note() {
        let trail = |method: &str, path: &str| Trail {
            attrs: Some(infra_authz::attributes::parse(method, path, None).expect("attributes")),
            ..Trail::default()
        };
        assert!(applies(&trail("GET", "/api/v1/namespaces/web/pods")));
        assert!(!applies(&trail(
            "GET",
            "/api/v1/namespaces/web/pods/p/proxy/admin"
        )));
        assert!(!applies(&trail(
            "GET",
            "/api/v1/namespaces/web/services/s:80/proxy/"
        )));
        assert!(!applies(&trail("GET", "/api/v1/nodes/n1/proxy/stats")));
        assert!(!applies(&trail("GET", "/healthz")));
        let mut impersonated = trail("GET", "/api/v1/namespaces/web/pods");
        impersonated.impersonated = Some(infra_authz::decision::Identity::new(
            "other",
            Vec::<String>::new(),
        ));
        assert!(!applies(&impersonated));
    }

    #[test]
    fn the_note_is_appended_to_a_status_message_and_nothing_else_changes() {
        let status = Bytes::from_static(
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"suzie\" cannot list resource \"pods\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#,
        );
        let out = with_note(&status, "infra-proxy allowed this").expect("a status");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            value["message"],
            "pods is forbidden: User \"suzie\" cannot list resource \"pods\" (infra-proxy allowed this)"
        );
        assert_eq!(value["code"], 403);
        assert_eq!(value["details"]["kind"], "pods");
        assert!(with_note(&Bytes::from_static(b"{\"kind\":\"Pod\"}"), "x").is_none());
        assert!(with_note(&Bytes::from_static(b"k8s\0\x01"), "x").is_none());
    }
}
