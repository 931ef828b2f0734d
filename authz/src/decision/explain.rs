//! Why a decision came out as it did: [`Authorizer::explain`] walks the same loop as
//! [`Authorizer::decide`] and notes, on the way, which grant and which rule of its role allowed
//! the request, or why each of the identity's grants did not.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Authorizer, Decision, Identity, Resolved, Validity, Visit};
use crate::attributes::Attributes;
use crate::policy::Grant;
use crate::rbac::PolicyRule;

/// A decision, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision, exactly as [`Authorizer::decide`] gives it.
    pub decision: Decision,
    /// Its validity, exactly as [`Authorizer::decide_with_validity`] gives it.
    pub validity: Validity,
    /// On allow: the grant that allowed and the rule of its role that matched.
    pub allowed_by: Option<MatchedRule>,
    /// On deny: each grant of the identity on this destination and why it did not allow, in the
    /// order the decision looked at them. Empty on allow.
    pub not_allowed: Vec<NotAllowed>,
}

/// The grant and the rule that allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    /// The grant (for the roles of every authenticated user, a grant to the group
    /// `system:authenticated`).
    pub grant: Arc<Grant>,
    /// The index of the rule among the role's rules.
    pub index: usize,
    /// The rule.
    pub rule: PolicyRule,
}

/// A grant of the identity that did not allow a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    /// The grant.
    pub grant: Arc<Grant>,
    /// Why it did not allow.
    pub why: WhyNot,
}

/// Why a grant did not allow a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhyNot {
    /// The grant's scope does not cover the request: a namespace grant, and a request in
    /// another namespace, at the cluster scope or for a non-resource URL.
    OutOfScope {
        /// Where the request asks.
        requested: RequestScope,
    },
    /// The grant expired at `at` (at or before the time of the decision).
    Expired {
        /// When it expired.
        at: SystemTime,
    },
    /// The grant's role is unknown to this proxy: not built in, not in the cluster.
    UnknownRole,
    /// No rule of the grant's role matches the request.
    NoRuleMatches,
}

/// Where a request asks, as a grant's scope sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestScope {
    /// A resource request in a namespace.
    Namespace(String),
    /// A resource request without a namespace: a cluster-scoped resource, or every namespace.
    Cluster,
    /// A non-resource URL.
    NonResource,
}

impl RequestScope {
    /// Where `attrs` asks.
    pub fn of(attrs: &Attributes) -> Self {
        match attrs {
            Attributes::Resource(r) => match r.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => Self::Namespace(ns.to_owned()),
                _ => Self::Cluster,
            },
            Attributes::NonResource(_) => Self::NonResource,
        }
    }
}

/// Collects why each grant did not allow.
#[derive(Default)]
struct Collect(Vec<NotAllowed>);

impl Visit for Collect {
    fn not_allowed(&mut self, grant: &Resolved, why: impl FnOnce() -> WhyNot) {
        self.0.push(NotAllowed {
            grant: Arc::clone(&grant.grant),
            why: why(),
        });
    }
}

impl Authorizer {
    /// Decides as [`Authorizer::decide_with_validity`] does (the same loop), and says why.
    pub fn explain(&self, identity: &Identity, attrs: &Attributes, now: SystemTime) -> Explanation {
        let mut collect = Collect::default();
        let walked = self.walk(identity, attrs, now, &mut collect);
        let decision = walked.decision(identity, attrs);
        let allowed_by = walked.allowed.and_then(|(resolved, index)| {
            let rule = resolved.role.as_ref()?.rules().get(index)?.clone();
            Some(MatchedRule {
                grant: Arc::clone(&resolved.grant),
                index,
                rule,
            })
        });
        let not_allowed = if decision.is_allowed() {
            Vec::new()
        } else {
            collect.0
        };
        Explanation {
            decision,
            validity: walked.validity,
            allowed_by,
            not_allowed,
        }
    }
}

impl Explanation {
    /// A short sentence: which grant allowed, or why no grant of `identity` did.
    ///
    /// - `allowed by the grant of edit to user "suzie" on production.web (rule 2 of its role:
    ///   create, delete on pods/exec)`
    /// - `no grant allows it: the grant of view to user "suzie" on production.web covers only
    ///   the namespace "web", not "db"`
    /// - `user "suzie" and its groups have no grant on production that allows it`
    pub fn reason(&self, identity: &Identity, destination: &str) -> String {
        if let Some(matched) = &self.allowed_by {
            let grant = &matched.grant;
            return format!(
                "allowed by the grant of {} to {} on {} (rule {} of its role: {})",
                grant.role,
                grant.subject,
                grant.resource,
                matched.index,
                rule_summary(&matched.rule)
            );
        }
        if self.not_allowed.is_empty() {
            return format!(
                "user {:?} and its groups have no grant on {destination} that allows it",
                identity.user()
            );
        }
        let each: Vec<String> = self.not_allowed.iter().map(ToString::to_string).collect();
        format!("no grant allows it: {}", each.join("; "))
    }
}

/// A rule in a few words: `get, list on pods, pods/log` (with ` in apps` for other groups),
/// `get on /healthz`.
fn rule_summary(rule: &PolicyRule) -> String {
    let verbs = rule.verbs.join(", ");
    if rule.resources.is_empty() {
        return format!("{verbs} on {}", rule.non_resource_urls.join(", "));
    }
    let mut out = format!("{verbs} on {}", rule.resources.join(", "));
    let groups: Vec<&str> = rule
        .api_groups
        .iter()
        .map(String::as_str)
        .filter(|g| !g.is_empty())
        .collect();
    if !groups.is_empty() {
        out.push_str(" in ");
        out.push_str(&groups.join(", "));
    }
    if !rule.resource_names.is_empty() {
        out.push_str(" named ");
        out.push_str(&rule.resource_names.join(", "));
    }
    out
}

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grant = &self.grant;
        write!(
            f,
            "the grant of {} to {} on {} ",
            grant.role, grant.subject, grant.resource
        )?;
        match &self.why {
            WhyNot::OutOfScope { requested } => {
                let ns = grant.resource.namespace.as_deref().unwrap_or_default();
                write!(f, "covers only the namespace {ns:?}, not ")?;
                match requested {
                    RequestScope::Namespace(other) => write!(f, "{other:?}"),
                    RequestScope::Cluster => f.write_str("requests at the cluster scope"),
                    RequestScope::NonResource => f.write_str("non-resource URLs"),
                }
            }
            WhyNot::Expired { at } => match jiff::Timestamp::try_from(*at) {
                Ok(at) => write!(f, "expired at {at}"),
                Err(_) => f.write_str("expired"),
            },
            WhyNot::UnknownRole => write!(
                f,
                "names the role {:?}, which this proxy does not know",
                grant.role
            ),
            WhyNot::NoRuleMatches => write!(f, "has no rule of its role that matches"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        any_grant, at, authorizer, cluster, grant, ns, queries, res, suzie, url, user,
    };
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_allow_names_the_grant_and_the_rule() {
        let edit = grant(user("suzie@example.com"), "edit", ns("web"));
        let authz = authorizer(std::slice::from_ref(&edit));
        let attrs = res("create", "pods", Some("web"));
        let explained = authz.explain(&suzie(), &attrs, at(0));
        assert!(explained.decision.is_allowed());
        assert!(explained.not_allowed.is_empty());
        let matched = explained.allowed_by.clone().expect("the matched rule");
        assert_eq!(*matched.grant, edit);
        let role = crate::rbac::RoleSet::builtin();
        let role = role.get("edit").expect("edit");
        assert_eq!(role.rules().get(matched.index), Some(&matched.rule));
        assert!(matched.rule.allows(&attrs));
        // No earlier rule of the role allows it.
        assert!(
            role.rules()
                .iter()
                .take(matched.index)
                .all(|r| !r.allows(&attrs))
        );
        let reason = explained.reason(&suzie(), "production");
        assert!(
            reason.starts_with(&format!(
                "allowed by the grant of edit to user \"suzie@example.com\" on production.web \
                 (rule {} of its role: ",
                matched.index
            )),
            "{reason}"
        );
        assert!(
            reason.contains("create") && reason.contains(" on pods"),
            "{reason}"
        );
        assert!(
            !reason.contains(" in "),
            "the core group goes unsaid: {reason}"
        );
    }

    #[test]
    fn a_deny_says_why_each_grant_did_not_allow() {
        let mut expired = grant(user("suzie@example.com"), "edit", cluster());
        expired.expires_at = Some(at(5));
        let grants = [
            grant(user("suzie@example.com"), "admin", ns("web")),
            expired,
            grant(user("suzie@example.com"), "no-such-role", cluster()),
            grant(user("suzie@example.com"), "view", cluster()),
        ];
        let authz = authorizer(&grants);
        let attrs = res("create", "nodes", None);
        let explained = authz.explain(&suzie(), &attrs, at(10));
        assert!(!explained.decision.is_allowed());
        assert_eq!(explained.allowed_by, None);
        let whys: Vec<_> = explained
            .not_allowed
            .iter()
            .map(|n| n.why.clone())
            .collect();
        assert_eq!(
            whys,
            vec![
                WhyNot::OutOfScope {
                    requested: RequestScope::Cluster
                },
                WhyNot::Expired { at: at(5) },
                WhyNot::UnknownRole,
                WhyNot::NoRuleMatches,
            ]
        );
        let reason = explained.reason(&suzie(), "production");
        assert!(
            reason.contains("covers only the namespace \"web\", not requests at the cluster scope"),
            "{reason}"
        );
        assert!(
            reason.contains("expired at 1970-01-01T00:00:05Z"),
            "{reason}"
        );
        assert!(
            reason.contains("which this proxy does not know"),
            "{reason}"
        );
        assert!(reason.contains("the grant of view"), "{reason}");

        let other = authz.explain(&suzie(), &res("get", "pods", Some("db")), at(10));
        assert!(other.decision.is_allowed(), "view on the cluster allows it");
        let healthz = authorizer(&grants[..1]).explain(&suzie(), &url("get", "/healthz"), at(0));
        assert_eq!(
            healthz.not_allowed[0].why,
            WhyNot::OutOfScope {
                requested: RequestScope::NonResource
            }
        );
        let nothing = authorizer(&[]).explain(&suzie(), &attrs, at(0));
        assert!(nothing.not_allowed.is_empty());
        assert!(
            nothing
                .reason(&suzie(), "production")
                .contains("have no grant on production")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn explain_agrees_with_decide(
            grants in proptest::collection::vec(any_grant(), 0..12),
            queries in queries(),
        ) {
            let authz = authorizer(&grants)
                .with_authenticated_roles(&crate::rbac::RoleSet::builtin());
            for (identity, attrs, now) in &queries {
                let (decision, validity) = authz.decide_with_validity(identity, attrs, *now);
                let explained = authz.explain(identity, attrs, *now);
                prop_assert_eq!(&explained.decision, &decision);
                prop_assert_eq!(explained.validity, validity);
                prop_assert_eq!(explained.allowed_by.is_some(), decision.is_allowed());
                if let Some(matched) = &explained.allowed_by {
                    prop_assert!(matched.rule.allows(attrs));
                } else {
                    // Every grant of the identity on this destination is accounted for.
                    let mine = authz
                        .grants_of(identity)
                        .count();
                    prop_assert_eq!(explained.not_allowed.len(), mine);
                }
            }
        }
    }
}
