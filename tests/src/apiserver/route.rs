//! Routing a request: what a handler gets of it (`Context`, `Target`), the discovery paths, and
//! a resource path down to the handler of its object, collection or subresource.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use serde_json::Value;

use super::auth::User;
use super::discovery::{self, DISCOVERY, ResourceInfo};
use super::logs::pod_log;
use super::objects::{collection_request, object_request};
use super::request::Query;
use super::response::{aggregated_response, json_text, plain};
use super::review::review;
use super::sessions::upgrade_session;
use super::status::Status;
use super::{Body, Shared};

/// Everything a handler needs of the request.
pub(super) struct Context {
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) query: Query,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) user: User,
    pub(super) upgrade: Option<OnUpgrade>,
    /// Made by infra-proxy for itself (see `connection::is_own`): not recorded, and its
    /// watches are not counted among the open streams.
    pub(super) own: bool,
}

impl Context {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub(super) fn accept(&self) -> String {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(super) fn route(
    shared: &Arc<Shared>,
    path: &str,
    context: Context,
) -> Result<Response<Body>, Status> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let read_only = matches!(context.method, Method::GET | Method::HEAD);
    let aggregated = discovery::wants_aggregated(&context.accept());
    match segments.as_slice() {
        ["version"] if read_only => Ok(json_text(StatusCode::OK, discovery::VERSION)),
        ["healthz" | "livez" | "readyz"] if read_only => Ok(plain(StatusCode::OK, "ok")),
        ["api"] if read_only && aggregated => Ok(aggregated_response(discovery::API_AGGREGATED)),
        ["api"] if read_only => Ok(json_text(StatusCode::OK, discovery::API)),
        ["apis"] if read_only && aggregated => Ok(aggregated_response(discovery::APIS_AGGREGATED)),
        ["apis"] if read_only => Ok(json_text(StatusCode::OK, discovery::APIS)),
        ["api", "v1"] if read_only => Ok(json_text(StatusCode::OK, discovery::API_V1)),
        ["apis", group] if read_only => DISCOVERY
            .group(group)
            .map(|g| json_text(StatusCode::OK, g))
            .ok_or_else(Status::no_route),
        ["apis", group, version] if read_only => DISCOVERY
            .resource_list(group, version)
            .map(|l| json_text(StatusCode::OK, l))
            .ok_or_else(Status::no_route),
        ["openapi", "v3"] if read_only => Ok(json_text(StatusCode::OK, DISCOVERY.openapi_index())),
        ["openapi", "v3", rest @ ..] if read_only => DISCOVERY
            .openapi_doc(&rest.join("/"))
            .map(|d| json_text(StatusCode::OK, d))
            .ok_or_else(Status::no_route),
        ["api", "v1", rest @ ..] => resource(shared, "", "v1", rest, context),
        ["apis", group, version, rest @ ..] => resource(shared, group, version, rest, context),
        _ => Err(Status::no_route()),
    }
}

/// A request for a resource: where it points.
pub(super) struct Target<'a> {
    pub(super) info: Arc<ResourceInfo>,
    /// `None`: across all namespaces (lists and watches only), or a cluster-scoped resource.
    pub(super) namespace: Option<&'a str>,
    pub(super) name: Option<&'a str>,
    pub(super) subresource: Option<&'a str>,
}

fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    context: Context,
) -> Result<Response<Body>, Status> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if !(tail.is_empty() && matches!(*resource, "status" | "finalize")) =>
        {
            (Some(*ns), &rest[2..])
        }
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return Err(Status::no_route()),
    };
    let info = DISCOVERY
        .resource(group, version, resource)
        .ok_or_else(Status::no_route)?;
    if (info.namespaced && namespace.is_none() && name.is_some())
        || (!info.namespaced && namespace.is_some())
        || subresource.is_some_and(|s| !info.subresources.iter().any(|x| x == s))
    {
        return Err(Status::no_route());
    }
    let target = Target {
        info,
        namespace,
        name,
        subresource,
    };
    if shared.enforce_rbac {
        super::rbac::authorize(
            shared,
            &context.user,
            &target,
            super::rbac::verb(&target, &context),
        )?;
    }
    if let Some(response) = review(shared, &target, &context)? {
        return Ok(response);
    }
    match (target.subresource, target.name) {
        (Some("log"), Some(pod)) if target.info.resource == "pods" => {
            pod_log(shared, &target, pod, &context)
        }
        (Some(sub @ ("exec" | "attach" | "portforward")), Some(pod))
            if target.info.resource == "pods" =>
        {
            upgrade_session(shared, &target, pod, sub, context)
        }
        (Some("status"), Some(name)) => object_request(shared, &target, name, true, &context),
        (Some(sub), _) => Err(Status::method_not_allowed(
            context.method.as_str(),
            &format!("{}/{sub}", target.info.resource),
        )),
        (None, Some(name)) => object_request(shared, &target, name, false, &context),
        (None, None) => collection_request(shared, &target, &context),
    }
}

pub(super) fn storage_namespace<'a>(target: &Target<'a>) -> &'a str {
    target.namespace.unwrap_or_default()
}

pub(super) fn check_verb(target: &Target<'_>, verb: &str) -> Result<(), Status> {
    if target.info.allows(verb) {
        Ok(())
    } else {
        Err(Status::method_not_allowed(verb, &target.info.resource))
    }
}

pub(super) fn parse_body(context: &Context) -> Result<Value, Status> {
    let content_type = context.header("content-type");
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "application/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(&context.body)
                .map_err(|_| Status::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))
        }
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => serde_json::from_slice(&context.body).map_err(|e| {
            Status::bad_request(format!(
                "Object 'Kind' is missing in '{}': {e}",
                String::from_utf8_lossy(&context.body)
            ))
        }),
        other => Err(Status::unsupported_media_type(other)),
    }
}
