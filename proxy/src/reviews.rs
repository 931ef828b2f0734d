//! Access reviews answered by infra-proxy itself, from Infra's decision, never forwarded.
//!
//! `kubectl auth can-i` asks the cluster with a `SelfSubjectAccessReview` (and `--list` with a
//! `SelfSubjectRulesReview`). Forwarded as the impersonated user, these would be answered from
//! the cluster's RBAC bindings, not from the grants infra-proxy decides with: a granted user
//! would hear "no" without bindings, and a binding made outside Infra would make can-i say yes
//! to what the proxy then refuses. So the pipeline, once it has allowed the caller to create the
//! review (every authenticated user may create the self reviews; a `SubjectAccessReview` needs a
//! grant that allows creating it), hands the request here:
//!
//! - [`Kind::of`] tells a review from any other request;
//! - [`read_body`] reads its body, JSON or Kubernetes protobuf, at most [`MAX_REVIEW_BYTES`];
//! - [`review`] decides the reviewed request with the same authorizer as the real request
//!   ([`PolicyHandle::explain`], the loop of [`PolicyHandle::decide`]) and answers in JSON,
//!   which kubectl reads whatever it sent.
//!
//! A self review's attributes are built as the real request's would be: verbs, groups and
//! resources as given (`*` literally, as RBAC matches it; `get pods/exec` asks about `get`, as
//! the apiserver answers it, while opening a shell over WebSocket needs `create` too), and for a
//! list or watch without a name, the
//! name its field selector requires of `metadata.name`
//! ([`infra_authz::attributes::field_selector_name`]).

pub mod wire;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use infra_authz::attributes::{
    Attributes, NonResourceAttributes, ResourceAttributes, field_selector_name,
};
use infra_authz::decision::Identity;
use infra_authz::rbac::PolicyRule;
use serde_json::{Value, json};

use crate::policy::PolicyHandle;
use crate::status::Refusal;
use crate::upstream::Body;
use wire::{
    API_VERSION, AccessReview, AccessReviewSpec, PROTOBUF_CONTENT_TYPE, RulesReview,
    RulesReviewSpec, WireError,
};

/// The most of a review's body infra-proxy reads (the proxy's body limit may be lower).
pub const MAX_REVIEW_BYTES: u64 = 64 * 1024;

/// The API group of the reviews.
const GROUP: &str = "authorization.k8s.io";

/// A review infra-proxy answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `SelfSubjectAccessReview`: may I?
    SelfSubjectAccessReview,
    /// `SelfSubjectRulesReview`: what may I do in a namespace?
    SelfSubjectRulesReview,
    /// `SubjectAccessReview`: may this user in these groups?
    SubjectAccessReview,
    /// `LocalSubjectAccessReview`: may this user in these groups, in this namespace?
    LocalSubjectAccessReview {
        /// The namespace of the request path.
        namespace: String,
    },
}

impl Kind {
    /// The review that a request with attributes `attrs` creates, if it creates one: a `POST`
    /// to `/apis/authorization.k8s.io/v1/` and one of the review resources, cluster-scoped but
    /// for the local review, which is in a namespace.
    pub fn of(attrs: &Attributes) -> Option<Self> {
        let Attributes::Resource(r) = attrs else {
            return None;
        };
        let plain = r.verb == "create"
            && r.api_group == GROUP
            && r.api_version == "v1"
            && r.subresource.is_none()
            && r.name.is_none();
        if !plain {
            return None;
        }
        let namespace = r.namespace.as_deref().filter(|ns| !ns.is_empty());
        match (r.resource.as_str(), namespace) {
            ("selfsubjectaccessreviews", None) => Some(Self::SelfSubjectAccessReview),
            ("selfsubjectrulesreviews", None) => Some(Self::SelfSubjectRulesReview),
            ("subjectaccessreviews", None) => Some(Self::SubjectAccessReview),
            ("localsubjectaccessreviews", Some(ns)) => Some(Self::LocalSubjectAccessReview {
                namespace: ns.to_owned(),
            }),
            _ => None,
        }
    }

    /// The object's `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SelfSubjectAccessReview => "SelfSubjectAccessReview",
            Self::SelfSubjectRulesReview => "SelfSubjectRulesReview",
            Self::SubjectAccessReview => "SubjectAccessReview",
            Self::LocalSubjectAccessReview { .. } => "LocalSubjectAccessReview",
        }
    }
}

/// Reads a review's body: at most `limit` bytes (413 beyond), within `timeout`.
pub async fn read_body<B>(body: B, limit: u64, timeout: Duration) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        Refusal::TooLarge(format!(
            "Request entity too large: limit is {limit} bytes (infra-proxy reads at most that much of an access review)"
        ))
    };
    if body.size_hint().lower() > limit {
        return Err(too_large());
    }
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Refusal::GatewayTimeout(format!(
            "the access review's body did not arrive within {}s",
            timeout.as_secs()
        ))),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "reading an access review's body failed");
            Err(Refusal::BadRequest(format!(
                "infra-proxy could not read the access review's body: {error}"
            )))
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Answers a review: 201 and the object with its `status`, in JSON; or the refusal of a body
/// that cannot be read (400) or a spec that is not valid (422).
pub fn answer(
    policy: &PolicyHandle,
    caller: &Identity,
    kind: &Kind,
    content_type: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Response<Body>, Refusal> {
    let object = review(policy, caller, kind, content_type, body, now)?;
    let mut response = Response::new(crate::upstream::full(object.to_string()));
    *response.status_mut() = StatusCode::CREATED;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// [`answer`]'s object: the review as the apiserver returns it, `status` filled in.
pub fn review(
    policy: &PolicyHandle,
    caller: &Identity,
    kind: &Kind,
    content_type: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Value, Refusal> {
    let protobuf = content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with(PROTOBUF_CONTENT_TYPE)
    });
    let unreadable = |error: WireError| {
        Refusal::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): {error}",
            kind.name()
        ))
    };
    let mut metadata = json!({"creationTimestamp": null});
    let (spec, status) = if *kind == Kind::SelfSubjectRulesReview {
        let spec: RulesReviewSpec = if protobuf {
            wire::object_from_protobuf::<RulesReview>(body, kind.name())
                .map_err(unreadable)?
                .spec
                .unwrap_or_default()
        } else {
            wire::spec_from_json(body, kind.name()).map_err(unreadable)?
        };
        let rules = policy.rules_for(caller, Some(&spec.namespace), now);
        let status = json!({
            "resourceRules": rules.resource.iter().map(resource_rule).collect::<Vec<_>>(),
            "nonResourceRules": rules.non_resource.iter().map(non_resource_rule).collect::<Vec<_>>(),
            "incomplete": false,
        });
        (json!(spec), status)
    } else {
        let mut spec: AccessReviewSpec = if protobuf {
            wire::object_from_protobuf::<AccessReview>(body, kind.name())
                .map_err(unreadable)?
                .spec
                .unwrap_or_default()
        } else {
            wire::spec_from_json(body, kind.name()).map_err(unreadable)?
        };
        let subject = subject(kind, caller, &mut spec)?;
        if let Kind::LocalSubjectAccessReview { namespace } = kind {
            metadata["namespace"] = json!(namespace);
        }
        let attrs = attributes(&spec)?;
        let explained = policy.explain(&subject, &attrs, now);
        // A self review says why in full: the caller's own grants. A review about another
        // subject names only the grant that allows, as the apiserver names the binding; on a
        // deny it says nothing, so that one who may ask about others (a namespace admin may
        // create local reviews) cannot read their grants elsewhere through the reasons.
        let own = matches!(kind, Kind::SelfSubjectAccessReview);
        let reason = if own || explained.decision.is_allowed() {
            format!(
                "infra: {}",
                explained.reason(&subject, policy.destination())
            )
        } else {
            String::new()
        };
        let status = json!({"allowed": explained.decision.is_allowed(), "reason": reason});
        (json!(spec), status)
    };
    Ok(json!({
        "kind": kind.name(),
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }))
}

/// Whose access a review asks about: the caller's for a self review (whatever the spec says of
/// users), the spec's user and groups otherwise. A local review's namespace is the path's.
fn subject(
    kind: &Kind,
    caller: &Identity,
    spec: &mut AccessReviewSpec,
) -> Result<Identity, Refusal> {
    match kind {
        Kind::SelfSubjectAccessReview | Kind::SelfSubjectRulesReview => {
            spec.user.clear();
            spec.groups.clear();
            spec.extra.clear();
            spec.uid.clear();
            return Ok(caller.clone());
        }
        Kind::SubjectAccessReview => {}
        Kind::LocalSubjectAccessReview { namespace } => {
            if spec.non_resource_attributes.is_some() {
                return Err(Refusal::Invalid(
                    "LocalSubjectAccessReview is invalid: spec.nonResourceAttributes: Invalid value: disallowed on this kind of request".to_owned(),
                ));
            }
            if let Some(resource) = &mut spec.resource_attributes {
                if resource.namespace.is_empty() {
                    resource.namespace.clone_from(namespace);
                } else if resource.namespace != *namespace {
                    return Err(Refusal::BadRequest(format!(
                        "spec.resourceAttributes.namespace must match namespace: {namespace}"
                    )));
                }
            }
        }
    }
    if spec.user.is_empty() && spec.groups.is_empty() {
        return Err(Refusal::Invalid(format!(
            "{} is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified",
            kind.name()
        )));
    }
    Ok(Identity::new(
        spec.user.as_str(),
        spec.groups.iter().map(String::as_str),
    ))
}

/// The attributes a review's spec asks about, built as the real request's are.
fn attributes(spec: &AccessReviewSpec) -> Result<Attributes, Refusal> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(r), None) => {
            let subresource = non_empty(&r.subresource);
            Ok(Attributes::Resource(ResourceAttributes {
                verb: r.verb.clone(),
                api_group: r.group.clone(),
                api_version: r.version.clone(),
                namespace: non_empty(&r.namespace),
                resource: r.resource.clone(),
                subresource,
                // A list or watch is authorized for the name its field selector requires, as
                // the real request is.
                name: non_empty(&r.name).or_else(|| {
                    let selector = r.field_selector.as_ref()?;
                    matches!(r.verb.as_str(), "list" | "watch")
                        .then(|| field_selector_name(&selector.raw_selector))
                        .flatten()
                }),
            }))
        }
        (None, Some(n)) => Ok(Attributes::NonResource(NonResourceAttributes {
            verb: n.verb.clone(),
            path: n.path.clone(),
        })),
        _ => Err(Refusal::Invalid(
            "the review is invalid: spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified".to_owned(),
        )),
    }
}

/// A `ResourceRule` of a rules review.
fn resource_rule(rule: &PolicyRule) -> Value {
    let mut out = json!({
        "verbs": rule.verbs,
        "apiGroups": rule.api_groups,
        "resources": rule.resources,
    });
    if !rule.resource_names.is_empty() {
        out["resourceNames"] = json!(rule.resource_names);
    }
    out
}

/// A `NonResourceRule` of a rules review.
fn non_resource_rule(rule: &PolicyRule) -> Value {
    json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls})
}

#[cfg(test)]
mod tests;
