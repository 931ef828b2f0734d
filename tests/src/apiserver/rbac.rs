//! RBAC as the apiserver's RBAC authorizer applies it, from the ClusterRoleBindings,
//! RoleBindings, ClusterRoles and Roles in the stand-in's own store — only when the stand-in is
//! built with [`super::StandInBuilder::enforce_rbac`], so that a missing binding fails a test as
//! it would fail against a real cluster.
//!
//! Written apart from infra-proxy's own rule matching (`infra_authz::rbac`), so the two check
//! each other. The rules, as the Kubernetes RBAC documentation gives them:
//!
//! - a ClusterRoleBinding grants its role's rules everywhere; a RoleBinding only for requests in
//!   its namespace, and it may name a ClusterRole or a Role of its own namespace;
//! - a subject matches a `User` by name, a `Group` by any of the user's groups (every
//!   authenticated user is in `system:authenticated`);
//! - a rule matches when its `verbs`, `apiGroups` and `resources` contain the request's (or
//!   `*`), a subresource being `resource/subresource` (`*/subresource` and `resource/*` too), and
//!   its `resourceNames` are empty or contain the request's name;
//! - the group `system:masters` may do anything.
//!
//! The self-reviews (`selfsubjectreviews`, `selfsubjectaccessreviews`,
//! `selfsubjectrulesreviews`) are allowed to every authenticated user, as the default
//! `system:basic-user` binding does; non-resource paths are not authorized here.

use http::Method;
use serde_json::Value;

use super::Shared;
use super::auth::User;
use super::discovery::DISCOVERY;
use super::route::{Context, Target};
use super::status::Status;

/// The verb the apiserver's request resolver gives the request.
pub(super) fn verb(target: &Target<'_>, context: &Context) -> &'static str {
    match (&context.method, target.name) {
        (&Method::GET | &Method::HEAD, Some(_)) => "get",
        (&Method::GET | &Method::HEAD, None) if context.query.flag("watch") => "watch",
        (&Method::GET | &Method::HEAD, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => "",
    }
}

/// Refuses, in the apiserver's words, what no binding allows `user`.
pub(super) fn authorize(
    shared: &Shared,
    user: &User,
    target: &Target<'_>,
    verb: &str,
) -> Result<(), Status> {
    let info = &target.info;
    if user.groups.iter().any(|g| g == "system:masters")
        || (info.group == "authentication.k8s.io" && info.resource == "selfsubjectreviews")
        || (info.group == "authorization.k8s.io"
            && matches!(
                info.resource.as_str(),
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            ))
    {
        return Ok(());
    }
    let resource = match target.subresource {
        Some(sub) => format!("{}/{sub}", info.resource),
        None => info.resource.clone(),
    };
    let request = Request {
        verb,
        group: &info.group,
        resource: &resource,
        name: target.name.unwrap_or_default(),
    };
    let allowed = allows(shared, user, &request, target.namespace);
    if allowed {
        Ok(())
    } else {
        Err(Status::forbidden(
            &user.name,
            verb,
            &resource,
            &info.group,
            target.name.unwrap_or_default(),
            target.namespace,
        ))
    }
}

/// A resource request's attributes; `resource` is `resource/subresource` for a subresource.
pub(super) struct Request<'a> {
    pub(super) verb: &'a str,
    pub(super) group: &'a str,
    pub(super) resource: &'a str,
    pub(super) name: &'a str,
}

/// Whether a binding allows `user` the `request` (in `namespace`, or cluster-wide with `None`).
pub(super) fn allows(
    shared: &Shared,
    user: &User,
    request: &Request<'_>,
    namespace: Option<&str>,
) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    bindings(shared, "ClusterRoleBinding", None)
        .iter()
        .chain(
            namespace
                .map(|ns| bindings(shared, "RoleBinding", Some(ns)))
                .unwrap_or_default()
                .iter(),
        )
        .filter(|binding| binds(binding, user))
        .any(|binding| {
            rules_of(shared, binding)
                .iter()
                .any(|rule| request.matches(rule))
        })
}

impl Request<'_> {
    fn matches(&self, rule: &Value) -> bool {
        let has = |field: &str, wanted: &dyn Fn(&str) -> bool| {
            rule[field]
                .as_array()
                .is_some_and(|items| items.iter().filter_map(Value::as_str).any(wanted))
        };
        let (base, sub) = self
            .resource
            .split_once('/')
            .map_or((self.resource, None), |(b, s)| (b, Some(s)));
        let names = rule["resourceNames"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        has("verbs", &|v| v == "*" || v == self.verb)
            && has("apiGroups", &|g| g == "*" || g == self.group)
            && has("resources", &|r| {
                r == "*"
                    || r == self.resource
                    || sub.is_some_and(|s| r == format!("*/{s}") || r == format!("{base}/*"))
            })
            && (names.is_empty() || names.iter().any(|n| n.as_str() == Some(self.name)))
    }
}

fn bindings(shared: &Shared, kind: &str, namespace: Option<&str>) -> Vec<Value> {
    DISCOVERY
        .resource_for_kind("rbac.authorization.k8s.io/v1", kind)
        .map(|info| shared.store.list(&info, namespace).0)
        .unwrap_or_default()
}

fn binds(binding: &Value, user: &User) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            let name = s["name"].as_str().unwrap_or_default();
            match s["kind"].as_str() {
                Some("User") => name == user.name,
                Some("Group") => {
                    (name == "system:authenticated" && user.name != "system:anonymous")
                        || user.groups.iter().any(|g| g == name)
                }
                _ => false,
            }
        })
    })
}

fn rules_of(shared: &Shared, binding: &Value) -> Vec<Value> {
    let role = &binding["roleRef"];
    let name = role["name"].as_str().unwrap_or_default();
    let (kind, namespace) = match role["kind"].as_str() {
        Some("ClusterRole") => ("ClusterRole", ""),
        Some("Role") => (
            "Role",
            binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
        ),
        _ => return Vec::new(),
    };
    DISCOVERY
        .resource_for_kind("rbac.authorization.k8s.io/v1", kind)
        .and_then(|info| shared.store.get(&info, namespace, name).ok())
        .and_then(|role| role["rules"].as_array().cloned())
        .unwrap_or_default()
}
