//! `GET /api/why`: how infra-proxy decides one request of one user on one destination, with the
//! grant and role rule that decide it, or why none of the user's grants allows it.
//!
//! The destination whose proxy runs in this process registered its policy as a
//! [`Decider`](crate::plane::Decider): the answer is that proxy's own decision, with the roles
//! of its cluster. Another destination's proxy runs elsewhere; the control plane then decides
//! with the grants it holds and the built-in roles, and says so in `notes` when one of the
//! user's grants names a role it does not know.

use axum::extract::State;
use infra_api::{Why, WhyGrant, WhyNotAllowed, WhyRule};
use infra_authz::attributes::{Attributes, NonResourceAttributes, ResourceAttributes};
use infra_authz::decision::{Authorizer, Explanation, Identity};
use infra_authz::policy::{Grant, Subject};
use infra_authz::rbac::RoleSet;

use super::caller::{self, Access, Caller};
use super::extract::{Params, ok, opt_time};
use super::{ApiError, ApiResult, Plane};

pub(super) async fn why(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[
        "user",
        "verb",
        "resource",
        "name",
        "namespace",
        "destination",
    ])?;
    caller.require(Access::View)?;
    let required = |key: &str| {
        params
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{key} is required")))
    };
    let user = plane.store().get_user(required("user")?).await?;
    let attrs = attributes(
        required("verb")?,
        required("resource")?,
        params.get("name").filter(|v| !v.is_empty()),
        params.get("namespace").filter(|v| !v.is_empty()),
    )?;
    let destinations = plane.store().list_destinations().await?;
    let destination = match params.get("destination") {
        Some(name) => destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ApiError::not_found(format!("destination {name:?} not found")))?,
        None => match destinations.as_slice() {
            [only] => only,
            [] => return Err(ApiError::not_found("no destination is registered")),
            several => {
                let names: Vec<&str> = several.iter().map(|d| d.name.as_str()).collect();
                return Err(ApiError::bad_request(format!(
                    "give the destination (one of {})",
                    names.join(", ")
                )));
            }
        },
    };
    let groups = plane.store().groups_of(&user.name).await?;
    let identity = Identity::new(user.name.as_str(), groups.iter().map(String::as_str));
    let now = plane.now();
    let mut notes = Vec::new();
    let explanation = if let Some(decider) = plane.decider(&destination.name) {
        decider.explain(&identity, &attrs, now)
    } else {
        let grants = plane.grants().await?;
        let roles = RoleSet::builtin();
        for grant in grants.iter().filter(|g| {
            *g.resource.destination == *destination.name
                && !g.resource.is_control()
                && caller::subject_matches(&g.subject, &user.name, &groups)
                && !roles.contains(&g.role)
        }) {
            notes.push(format!(
                "the grant of {} to {} on {} names a role the control plane does not know; the proxy of {} decides it with its cluster's role of that name, which this answer could not consult",
                grant.role, grant.subject, grant.resource, destination.name
            ));
        }
        Authorizer::new(destination.name.as_str(), &grants, &roles, 0)
            .with_authenticated_roles(&roles)
            .explain(&identity, &attrs, now)
    };
    Ok(ok(answer(
        &destination.name,
        &identity,
        &attrs,
        &explanation,
        notes,
    )))
}

/// The request's attributes from kubectl-style words: `pods`, `deployments.apps`,
/// `pods/exec`, `deployments.apps/scale`, or a non-resource URL (`/healthz`).
fn attributes(
    verb: &str,
    resource: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Attributes, ApiError> {
    if verb.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("verb must be one word"));
    }
    let verb = verb.to_ascii_lowercase();
    if resource.starts_with('/') {
        if name.is_some() || namespace.is_some() {
            return Err(ApiError::bad_request(
                "a non-resource URL takes no name and no namespace",
            ));
        }
        return Ok(Attributes::NonResource(NonResourceAttributes {
            verb,
            path: resource.to_owned(),
        }));
    }
    let (qualified, subresource) = match resource.split_once('/') {
        Some((qualified, sub)) if !sub.is_empty() && !sub.contains('/') => {
            (qualified, Some(sub.to_owned()))
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "resource {resource:?} is not RESOURCE[.GROUP][/SUBRESOURCE]"
            )));
        }
        None => (resource, None),
    };
    let (resource, group) = qualified.split_once('.').unwrap_or((qualified, ""));
    if resource.is_empty() {
        return Err(ApiError::bad_request("resource is empty"));
    }
    Ok(Attributes::Resource(ResourceAttributes {
        verb,
        api_group: group.to_owned(),
        api_version: String::new(),
        namespace: namespace.map(str::to_owned),
        resource: resource.to_owned(),
        subresource,
        name: name.map(str::to_owned),
    }))
}

/// The request in words: `list pods in the namespace "web"`.
fn request_words(attrs: &Attributes) -> String {
    match attrs {
        Attributes::NonResource(n) => format!("{} {}", n.verb, n.path),
        Attributes::Resource(r) => {
            let mut words = format!("{} {}", r.verb, r.resource);
            if !r.api_group.is_empty() {
                words = format!("{words}.{}", r.api_group);
            }
            if let Some(sub) = &r.subresource {
                words = format!("{words}/{sub}");
            }
            if let Some(name) = &r.name {
                words = format!("{words} {name:?}");
            }
            match &r.namespace {
                Some(ns) => format!("{words} in the namespace {ns:?}"),
                None => format!("{words} at the cluster scope"),
            }
        }
    }
}

fn grant_of(grant: &Grant) -> WhyGrant {
    let (user, group) = match &grant.subject {
        Subject::User(name) => (Some(name.clone()), None),
        Subject::Group(name) => (None, Some(name.clone())),
    };
    WhyGrant {
        user,
        group,
        role: grant.role.clone(),
        resource: grant.resource.to_string(),
        expires_at: opt_time(grant.expires_at),
    }
}

fn answer(
    destination: &str,
    identity: &Identity,
    attrs: &Attributes,
    explanation: &Explanation,
    notes: Vec<String>,
) -> Why {
    Why {
        destination: destination.to_owned(),
        user: identity.user().to_owned(),
        groups: identity.groups().map(str::to_owned).collect(),
        request: request_words(attrs),
        allowed: explanation.decision.is_allowed(),
        reason: explanation.reason(identity, destination),
        allowed_by: explanation.allowed_by.as_ref().map(|m| grant_of(&m.grant)),
        rule: explanation.allowed_by.as_ref().map(|m| WhyRule {
            index: m.index,
            verbs: m.rule.verbs.clone(),
            api_groups: m.rule.api_groups.clone(),
            resources: m.rule.resources.clone(),
            resource_names: m.rule.resource_names.clone(),
            non_resource_urls: m.rule.non_resource_urls.clone(),
        }),
        not_allowed: explanation
            .not_allowed
            .iter()
            .map(|n| WhyNotAllowed {
                grant: grant_of(&n.grant),
                why: n.to_string(),
            })
            .collect(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_resources_become_attributes() {
        let Ok(Attributes::Resource(r)) =
            attributes("GET", "deployments.apps/scale", Some("web"), Some("prod"))
        else {
            panic!("a resource request");
        };
        assert_eq!(
            (r.verb.as_str(), r.api_group.as_str(), r.resource.as_str()),
            ("get", "apps", "deployments")
        );
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.namespace.as_deref(), Some("prod"));
        assert_eq!(
            request_words(&Attributes::Resource(r)),
            r#"get deployments.apps/scale "web" in the namespace "prod""#
        );
        assert!(matches!(
            attributes("get", "/healthz", None, None),
            Ok(Attributes::NonResource(n)) if n.path == "/healthz"
        ));
        assert!(attributes("get", "/healthz", None, Some("web")).is_err());
        assert!(attributes("get", "pods/exec/x", None, None).is_err());
        assert!(attributes("get", ".apps", None, None).is_err());
        assert!(attributes("get all", "pods", None, None).is_err());
    }
}
