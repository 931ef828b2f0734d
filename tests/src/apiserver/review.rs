//! The create-only review resources (`selfsubjectreviews`, the access reviews), answered from
//! the caller's identity.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::response::json_response;
use super::route::{Context, Target, parse_body};
use super::status::Status;
use super::{Body, Shared};

/// The create-only review resources, answered from the caller's identity.
pub(super) fn review(
    shared: &Shared,
    target: &Target<'_>,
    context: &Context,
) -> Result<Option<Response<Body>>, Status> {
    let info = &target.info;
    let kind = match (info.group.as_str(), info.resource.as_str()) {
        ("authentication.k8s.io", "selfsubjectreviews" | "tokenreviews")
        | (
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews"
            | "subjectaccessreviews"
            | "localsubjectaccessreviews",
        ) => info.resource.as_str(),
        _ => return Ok(None),
    };
    if context.method != Method::POST || target.name.is_some() {
        return Err(Status::method_not_allowed(context.method.as_str(), kind));
    }
    // kubectl's typed client sends reviews as protobuf; the answer depends on the caller only,
    // so such a body is not read (and the answer is JSON, which the client accepts too).
    let mut object = if context
        .header("content-type")
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        json!({})
    } else {
        parse_body(context)?
    };
    object["apiVersion"] = json!(info.api_version());
    object["kind"] = json!(info.kind);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]["creationTimestamp"] = Value::Null;
    let user = &context.user;
    object["status"] = match kind {
        "selfsubjectreviews" => {
            let mut user_info = json!({"username": user.name, "groups": user.groups});
            if let Some(uid) = &user.uid {
                user_info["uid"] = json!(uid);
            }
            if !user.extra.is_empty() {
                user_info["extra"] = json!(user.extra);
            }
            json!({"userInfo": user_info})
        }
        "tokenreviews" => json!({"authenticated": false, "user": {}}),
        "selfsubjectrulesreviews" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        "selfsubjectaccessreviews" if shared.enforce_rbac => {
            let spec = &object["spec"]["resourceAttributes"];
            let field = |name: &str| spec[name].as_str().unwrap_or_default().to_owned();
            let (resource, subresource) = (field("resource"), field("subresource"));
            let resource = if subresource.is_empty() {
                resource
            } else {
                format!("{resource}/{subresource}")
            };
            let namespace = field("namespace");
            let (verb, group, name) = (field("verb"), field("group"), field("name"));
            let request = super::rbac::Request {
                verb: &verb,
                group: &group,
                resource: &resource,
                name: &name,
            };
            let allowed = spec.is_object()
                && super::rbac::allows(
                    shared,
                    user,
                    &request,
                    (!namespace.is_empty()).then_some(namespace.as_str()),
                );
            json!({"allowed": allowed})
        }
        _ => json!({"allowed": true, "reason": "the stand-in apiserver allows everything"}),
    };
    Ok(Some(json_response(StatusCode::CREATED, &object)))
}
