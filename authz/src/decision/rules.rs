//! What an identity may do in a namespace, as lists of rules: the answer to a
//! `SelfSubjectRulesReview` (`kubectl auth can-i --list`).

use std::time::SystemTime;

use super::{Authorizer, Identity, Resolved};
use crate::rbac::PolicyRule;

/// The rules an identity's active grants give in one namespace (or at the cluster scope).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Rules for resource requests: verbs, API groups, resources and resource names (no
    /// non-resource URLs).
    pub resource: Vec<PolicyRule>,
    /// Rules for non-resource requests: verbs and non-resource URLs only.
    pub non_resource: Vec<PolicyRule>,
}

impl Rules {
    /// Adds the rules of `grant`'s role: all of them, or with `resource_only` only the resource
    /// ones.
    fn add(&mut self, grant: &Resolved, resource_only: bool) {
        let Some(role) = &grant.role else {
            return;
        };
        for rule in role.rules() {
            if !rule.verbs.is_empty() && !rule.api_groups.is_empty() && !rule.resources.is_empty() {
                push_new(
                    &mut self.resource,
                    PolicyRule {
                        non_resource_urls: Vec::new(),
                        ..rule.clone()
                    },
                );
            }
            if !resource_only && !rule.verbs.is_empty() && !rule.non_resource_urls.is_empty() {
                push_new(
                    &mut self.non_resource,
                    PolicyRule {
                        verbs: rule.verbs.clone(),
                        non_resource_urls: rule.non_resource_urls.clone(),
                        ..PolicyRule::default()
                    },
                );
            }
        }
    }
}

/// Pushes `rule` unless an equal one is there already.
fn push_new(rules: &mut Vec<PolicyRule>, rule: PolicyRule) {
    if !rules.contains(&rule) {
        rules.push(rule);
    }
}

impl Authorizer {
    /// The rules `identity`'s grants active at `now` give in `namespace` (`None` or `""`: at
    /// the cluster scope only), and those every authenticated user has
    /// ([`Authorizer::with_authenticated_roles`]).
    ///
    /// A grant on the destination gives all the rules of its role; a grant on `namespace` gives
    /// its role's resource rules only, since it covers only resource requests in that namespace;
    /// a grant on another namespace, an expired grant and a grant whose role is unknown give
    /// none. These are the rules [`Authorizer::decide`] decides with, so a request they allow
    /// is allowed (a rule of a cluster grant that names a cluster-scoped resource is listed too,
    /// as the apiserver lists it).
    pub fn rules_for(
        &self,
        identity: &Identity,
        namespace: Option<&str>,
        now: SystemTime,
    ) -> Rules {
        let namespace = namespace.filter(|ns| !ns.is_empty());
        let mut rules = Rules::default();
        for resolved in self.grants_of(identity) {
            if resolved.grant.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            match resolved.grant.resource.namespace.as_deref() {
                None => rules.add(resolved, false),
                Some(ns) if Some(ns) == namespace => rules.add(resolved, true),
                Some(_) => {}
            }
        }
        for resolved in &*self.authenticated {
            rules.add(resolved, false);
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{at, authorizer, cluster, grant, group, ns, suzie, user};
    use crate::rbac::RoleSet;

    #[test]
    fn cluster_and_namespace_grants_give_their_rules() {
        let mut expired = grant(user("suzie@example.com"), "cluster-admin", cluster());
        expired.expires_at = Some(at(5));
        let grants = [
            grant(user("suzie@example.com"), "view", ns("web")),
            grant(group("Engineering"), "edit", ns("db")),
            grant(user("suzie@example.com"), "cluster-admin", ns("ops")),
            expired,
        ];
        let roles = RoleSet::builtin();
        let view = roles.get("view").expect("view");
        let edit = roles.get("edit").expect("edit");
        let authz = authorizer(&grants);

        let web = authz.rules_for(&suzie(), Some("web"), at(10));
        assert!(!web.resource.is_empty());
        assert!(web.non_resource.is_empty(), "namespace grants give no URLs");
        assert!(
            web.resource
                .iter()
                .all(|r| view.rules().iter().any(|v| v.resources == r.resources))
        );
        let db = authz.rules_for(&suzie(), Some("db"), at(10));
        assert!(
            db.resource
                .iter()
                .any(|r| r.verbs.contains(&"create".to_owned()))
        );
        assert!(
            db.resource
                .iter()
                .all(|r| edit.rules().iter().any(|e| e.resources == r.resources))
        );
        // cluster-admin on a namespace: every resource there, but no URL.
        let ops = authz.rules_for(&suzie(), Some("ops"), at(10));
        assert!(ops.resource.iter().any(|r| r.resources == ["*"]));
        assert!(ops.non_resource.is_empty(), "{ops:?}");
        assert_eq!(
            authz.rules_for(&suzie(), None, at(10)),
            super::Rules::default()
        );
        assert_eq!(
            authz.rules_for(&suzie(), Some(""), at(10)),
            super::Rules::default()
        );

        // Before it expired, the cluster grant gives everything, URLs included.
        let before = authz.rules_for(&suzie(), Some("other"), at(0));
        assert!(before.resource.iter().any(|r| r.resources == ["*"]));
        assert!(
            before
                .non_resource
                .iter()
                .any(|r| r.non_resource_urls == ["*"])
        );
        assert!(
            before
                .non_resource
                .iter()
                .all(|r| r.resources.is_empty() && r.api_groups.is_empty())
        );

        // The roles of every authenticated user come too.
        let with = authorizer(&[]).with_authenticated_roles(&roles);
        let rules = with.rules_for(&suzie(), Some("web"), at(0));
        assert!(
            rules
                .resource
                .iter()
                .any(|r| r.resources.contains(&"selfsubjectaccessreviews".to_owned()))
        );
        assert!(
            rules
                .non_resource
                .iter()
                .any(|r| r.non_resource_urls.contains(&"/version".to_owned()))
        );
    }
}
