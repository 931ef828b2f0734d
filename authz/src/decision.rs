//! Decisions: which grants cover a request, and whether their roles allow it.
//!
//! An [`Authorizer`] holds one destination's grants, indexed by user and by group, with each
//! grant's role resolved against a [`RoleSet`] once, when the authorizer is built. Its
//! [`Authorizer::decide`] takes the grants that name the identity's user or one of its groups,
//! keeps those whose scope covers the request and that are active at `now`, and allows when a
//! rule of one of their roles allows:
//!
//! - a grant on the destination (`production`) covers every namespace, cluster-scoped resources
//!   and non-resource URLs;
//! - a grant on a namespace (`production.web`) covers only resource requests in that namespace:
//!   never a cluster-scoped resource, never a non-resource URL.
//!
//! A deny is a value, [`Decision::Deny`], whose reason is worded as the apiserver words it
//! ([`forbidden_message`]); [`forbidden_status_message`] gives the message of the 403 `Status`.
//!
//! [`Authorizer::explain`] decides with the same loop and says why: the grant and the rule of
//! its role that allowed, or why each of the identity's grants did not (out of scope, expired,
//! unknown role, no rule matches). [`Authorizer::rules_for`] lists the rules an identity has in
//! a namespace. Both answer the access reviews behind `kubectl auth can-i`.
//!
//! A [`DecisionCache`] remembers decisions per authorizer, identity and request; see its
//! documentation for how policy changes and grant expiry are handled.

mod cache;
mod explain;
mod rules;
mod wording;

use std::cmp::{max, min};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use crate::attributes::Attributes;
use crate::policy::Grant;
use crate::rbac::{Prepared, Role, RoleSet};

pub use cache::DecisionCache;
pub use explain::{Explanation, MatchedRule, NotAllowed, RequestScope, WhyNot};
pub use rules::Rules;
pub use wording::{forbidden_message, forbidden_status_message, go_quote, sanitize_html};

/// Who is asking: a user and the groups they belong to.
///
/// Cheap to clone (the names are shared) and cheap to hash: a fingerprint of the names is
/// computed once, at [`Identity::new`], and hashing writes only that. Build identities once per
/// verified token and reuse them.
#[derive(Clone)]
pub struct Identity {
    user: Arc<str>,
    groups: Arc<[Arc<str>]>,
    /// A hash of `user` and `groups`, so equal identities have equal fingerprints.
    fingerprint: u64,
}

/// The keys of [`Identity`] fingerprints, one set per process.
static FINGERPRINT_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl Identity {
    /// An identity of `user` in `groups`.
    pub fn new<G>(user: impl Into<Arc<str>>, groups: impl IntoIterator<Item = G>) -> Self
    where
        G: Into<Arc<str>>,
    {
        let user: Arc<str> = user.into();
        let groups: Arc<[Arc<str>]> = groups.into_iter().map(Into::into).collect();
        let fingerprint = FINGERPRINT_KEYS.hash_one((&*user, &*groups));
        Self {
            user,
            groups,
            fingerprint,
        }
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's groups.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &str> {
        self.groups.iter().map(|g| &**g)
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one identity share their names: compare pointers before contents.
        self.fingerprint == other.fingerprint
            && (Arc::ptr_eq(&self.user, &other.user) || self.user == other.user)
            && (Arc::ptr_eq(&self.groups, &other.groups) || self.groups == other.groups)
    }
}

impl Eq for Identity {}

impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The answer to "may this identity make this request?".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Allowed.
    Allow {
        /// The grant that allowed it: the first allowing grant found, looking at the user's
        /// grants first, then at each group's in the identity's order, each in the order the
        /// grants were given.
        grant: Arc<Grant>,
    },
    /// Denied. This is an answer, not an error.
    Deny {
        /// Why, worded as the apiserver words it ([`forbidden_message`]).
        reason: Arc<str>,
    },
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// The span of time over which a decision stays the same: from `from` (inclusive) until
/// `until` (exclusive); `None` is unbounded.
///
/// A decision changes only when a grant that covers the request starts or stops being active,
/// and grants only stop (at their `expires_at`). So a decision made at `now` holds from the
/// latest expiry at or before `now` to the earliest expiry after `now`, among the grants that
/// cover the request. The lower bound matters only if the clock is set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validity {
    /// The first instant the decision holds, if bounded.
    pub from: Option<SystemTime>,
    /// The first instant the decision may no longer hold, if bounded.
    pub until: Option<SystemTime>,
}

impl Validity {
    /// Unbounded both ways.
    pub const ALWAYS: Self = Self {
        from: None,
        until: None,
    };

    /// Whether `now` falls within.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.from.is_none_or(|from| from <= now) && self.until.is_none_or(|until| now < until)
    }
}

/// A grant kept by an [`Authorizer`], with its role resolved.
#[derive(Debug)]
struct Resolved {
    grant: Arc<Grant>,
    /// `None` when the role is unknown: the grant allows nothing.
    role: Option<Arc<Role>>,
}

impl Resolved {
    /// Whether the grant's scope covers the request. A namespace grant covers only resource
    /// requests in that (non-empty) namespace.
    fn covers(&self, attrs: &Attributes) -> bool {
        match self.grant.resource.namespace.as_deref() {
            None => true,
            Some(ns) => {
                !ns.is_empty()
                    && matches!(attrs, Attributes::Resource(r) if r.namespace.as_deref() == Some(ns))
            }
        }
    }
}

/// Hands out a process-unique id to each [`Authorizer`], so that a [`DecisionCache`] never
/// mixes the answers of two authorizers, even if they were given the same generation.
static NEXT_AUTHORIZER_ID: AtomicU64 = AtomicU64::new(0);

/// One destination's grants, ready to decide requests.
///
/// Immutable: when grants or roles change, build a new one with a higher generation and swap it
/// in (for example behind an `ArcSwap` or `RwLock<Arc<_>>`).
pub struct Authorizer {
    /// Process-unique, from [`NEXT_AUTHORIZER_ID`].
    id: u64,
    generation: u64,
    destination: Box<str>,
    grants: Box<[Resolved]>,
    by_user: HashMap<Box<str>, Box<[usize]>>,
    by_group: HashMap<Box<str>, Box<[usize]>>,
    /// Every `expires_at` of the kept grants, sorted.
    expiries: Box<[SystemTime]>,
    /// What every authenticated identity may do, as the cluster's default bindings to
    /// `system:authenticated` allow it (see [`Authorizer::with_authenticated_roles`]).
    authenticated: Box<[Resolved]>,
}

impl Authorizer {
    /// Builds the authorizer of `destination` from all `grants` (those of other destinations and
    /// of the control resource `infra` are left out) and the roles they may name.
    pub fn new(
        destination: impl Into<Box<str>>,
        grants: &[Grant],
        roles: &RoleSet,
        generation: u64,
    ) -> Self {
        let destination = destination.into();
        let kept: Box<[Resolved]> = grants
            .iter()
            .filter(|g| *g.resource.destination == *destination && !g.resource.is_control())
            .map(|g| Resolved {
                grant: Arc::new(g.clone()),
                role: roles.get(&g.role).cloned(),
            })
            .collect();

        let mut by_user: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut by_group: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut unknown: HashMap<&str, usize> = HashMap::new();
        for (i, r) in kept.iter().enumerate() {
            let (index, name) = match &r.grant.subject {
                crate::policy::Subject::User(name) => (&mut by_user, name),
                crate::policy::Subject::Group(name) => (&mut by_group, name),
            };
            index.entry(Box::from(name.as_str())).or_default().push(i);
            if r.role.is_none() {
                *unknown.entry(&r.grant.role).or_default() += 1;
            }
        }
        for (role, grants) in unknown {
            tracing::warn!(
                destination = &*destination,
                role,
                grants,
                "grants name a role that does not exist; they allow nothing"
            );
        }
        let mut expiries: Vec<SystemTime> =
            kept.iter().filter_map(|r| r.grant.expires_at).collect();
        expiries.sort_unstable();

        Self {
            id: NEXT_AUTHORIZER_ID.fetch_add(1, Ordering::Relaxed),
            generation,
            destination,
            by_user: freeze(by_user),
            by_group: freeze(by_group),
            grants: kept,
            expiries: expiries.into_boxed_slice(),
            authenticated: Box::default(),
        }
    }

    /// Also allows what a cluster's default bindings allow every authenticated user: the
    /// [`AUTHENTICATED_ROLES`](crate::rbac::AUTHENTICATED_ROLES) found in `roles` (discovery,
    /// `/version`, self-reviews). A [`Decision::Allow`] from these names a grant to the group
    /// `system:authenticated`. Kept apart from the grants so that policy alone never allows
    /// them by accident, and so tests of grants can leave them out.
    #[must_use]
    pub fn with_authenticated_roles(mut self, roles: &RoleSet) -> Self {
        self.authenticated = crate::rbac::AUTHENTICATED_ROLES
            .iter()
            .filter_map(|name| {
                let role = roles.get(name)?;
                Some(Resolved {
                    grant: Arc::new(Grant {
                        subject: crate::policy::Subject::Group("system:authenticated".into()),
                        role: (*name).to_owned(),
                        resource: crate::policy::Resource::destination(&*self.destination),
                        expires_at: None,
                    }),
                    role: Some(Arc::clone(role)),
                })
            })
            .collect();
        self
    }

    /// The generation this authorizer was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The destination it decides for.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The grants it kept: those of its destination.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().map(|r| &*r.grant)
    }

    /// The kept grants whose role is not in the [`RoleSet`]: they allow nothing.
    pub fn grants_with_unknown_role(&self) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(|r| r.role.is_none())
            .map(|r| &*r.grant)
    }

    /// The earliest instant after `now` at which one of the kept grants expires.
    pub fn next_expiry_after(&self, now: SystemTime) -> Option<SystemTime> {
        let after = self.expiries.partition_point(|at| *at <= now);
        self.expiries.get(after).copied()
    }

    /// Decides whether `identity` may make the request `attrs` at `now`.
    pub fn decide(&self, identity: &Identity, attrs: &Attributes, now: SystemTime) -> Decision {
        self.decide_with_validity(identity, attrs, now).0
    }

    /// [`Authorizer::decide`], and the span of time over which the same call would give the
    /// same answer.
    pub fn decide_with_validity(
        &self,
        identity: &Identity,
        attrs: &Attributes,
        now: SystemTime,
    ) -> (Decision, Validity) {
        let walked = self.walk(identity, attrs, now, &mut ());
        (walked.decision(identity, attrs), walked.validity)
    }

    /// The kept grants that name the identity's user or one of its groups: the user's first,
    /// then each group's in the identity's order, each in the order the grants were given.
    fn grants_of<'a>(&'a self, identity: &'a Identity) -> impl Iterator<Item = &'a Resolved> {
        let user = self.by_user.get(identity.user()).map(|v| &**v);
        let groups = identity
            .groups
            .iter()
            .filter_map(|g| self.by_group.get(&**g).map(|v| &**v));
        // Indices come from enumerating `grants` in `new`; `get` keeps this panic-free.
        user.into_iter()
            .chain(groups)
            .flatten()
            .filter_map(|&i| self.grants.get(i))
    }

    /// The one decision loop: [`Authorizer::decide_with_validity`] walks it with `()` (which
    /// notes nothing), [`Authorizer::explain`] with a visitor that notes why each grant did not
    /// allow.
    fn walk<'a, V: Visit>(
        &'a self,
        identity: &'a Identity,
        attrs: &Attributes,
        now: SystemTime,
        visit: &mut V,
    ) -> Walked<'a> {
        let request = Prepared::new(attrs);
        let mut validity = Validity::ALWAYS;
        let mut allowed: Option<(&Resolved, usize)> = None;

        for resolved in self.grants_of(identity) {
            if !resolved.covers(attrs) {
                visit.not_allowed(resolved, || WhyNot::OutOfScope {
                    requested: RequestScope::of(attrs),
                });
                continue;
            }
            if let Some(at) = resolved.grant.expires_at {
                if at <= now {
                    validity.from = max(validity.from, Some(at));
                    visit.not_allowed(resolved, || WhyNot::Expired { at });
                    continue;
                }
                validity.until = Some(validity.until.map_or(at, |until| min(until, at)));
            }
            if allowed.is_some() {
                continue;
            }
            match &resolved.role {
                None => visit.not_allowed(resolved, || WhyNot::UnknownRole),
                Some(role) => match role.matching_rule_prepared(request) {
                    Some(rule) => allowed = Some((resolved, rule)),
                    None => visit.not_allowed(resolved, || WhyNot::NoRuleMatches),
                },
            }
        }

        // `system:anonymous` (reached only by impersonation: Infra's tokens always name a user)
        // is not in `system:authenticated`, so the cluster's bindings to it do not apply.
        if allowed.is_none() && identity.user() != "system:anonymous" {
            allowed = self.authenticated.iter().find_map(|resolved| {
                let rule = resolved.role.as_ref()?.matching_rule_prepared(request)?;
                Some((resolved, rule))
            });
        }
        Walked { allowed, validity }
    }
}

/// What [`Authorizer::walk`] found.
struct Walked<'a> {
    /// The grant that allowed, and the index of its role's rule that did.
    allowed: Option<(&'a Resolved, usize)>,
    validity: Validity,
}

impl Walked<'_> {
    fn decision(&self, identity: &Identity, attrs: &Attributes) -> Decision {
        match self.allowed {
            Some((resolved, _)) => Decision::Allow {
                grant: Arc::clone(&resolved.grant),
            },
            None => Decision::Deny {
                reason: forbidden_message(identity.user(), attrs).into(),
            },
        }
    }
}

/// What the decision loop tells a visitor.
trait Visit {
    /// A grant of the identity did not allow the request, for the reason `why` gives (called
    /// only when the visitor wants it).
    fn not_allowed(&mut self, grant: &Resolved, why: impl FnOnce() -> WhyNot);
}

/// Notes nothing: the plain decision.
impl Visit for () {
    #[inline]
    fn not_allowed(&mut self, _grant: &Resolved, _why: impl FnOnce() -> WhyNot) {}
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("destination", &self.destination)
            .field("generation", &self.generation)
            .field("grants", &self.grants.len())
            .finish_non_exhaustive()
    }
}

/// Turns the build-time index into its compact read-only form.
fn freeze(index: HashMap<Box<str>, Vec<usize>>) -> HashMap<Box<str>, Box<[usize]>> {
    index
        .into_iter()
        .map(|(k, v)| (k, v.into_boxed_slice()))
        .collect()
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::test_support::{
        DEST, any_grant, at, authorizer, cluster, grant, group, namespace_grant, ns, queries, res,
        suzie, url, user,
    };
    use super::*;
    use crate::attributes::ResourceAttributes;
    use crate::policy::Resource;

    #[test]
    fn every_authenticated_user_may_discover_and_review_itself() {
        let bare = authorizer(&[]);
        let with = authorizer(&[]).with_authenticated_roles(&RoleSet::builtin());
        let review = Attributes::Resource(ResourceAttributes {
            verb: "create".into(),
            api_group: "authentication.k8s.io".into(),
            api_version: "v1".into(),
            namespace: None,
            resource: "selfsubjectreviews".into(),
            subresource: None,
            name: None,
        });
        for attrs in [
            url("get", "/api"),
            url("get", "/apis/apps/v1"),
            url("get", "/version"),
            url("get", "/openapi/v3"),
            review,
        ] {
            assert!(
                !bare.decide(&suzie(), &attrs, at(0)).is_allowed(),
                "{attrs:?}"
            );
            match with.decide(&suzie(), &attrs, at(0)) {
                Decision::Allow { grant } => {
                    assert_eq!(grant.subject, group("system:authenticated"), "{attrs:?}");
                }
                other => panic!("{attrs:?}: {other:?}"),
            }
        }
        let anonymous = Identity::new("system:anonymous", ["system:unauthenticated"]);
        assert!(
            !with
                .decide(&anonymous, &url("get", "/api"), at(0))
                .is_allowed(),
            "system:anonymous is not an authenticated user"
        );
        for attrs in [
            res("list", "pods", Some("web")),
            url("post", "/api"),
            url("get", "/metrics"),
        ] {
            assert!(
                !with.decide(&suzie(), &attrs, at(0)).is_allowed(),
                "{attrs:?}"
            );
        }
    }

    #[test]
    fn no_grants_deny_with_the_apiservers_words() {
        let authz = authorizer(&[]);
        let decision = authz.decide(&suzie(), &res("list", "pods", Some("web")), at(0));
        assert_eq!(
            decision,
            Decision::Deny {
                reason:
                    "User \"suzie@example.com\" cannot list resource \"pods\" in API group \"\" \
                         in the namespace \"web\""
                        .into()
            }
        );
    }

    #[test]
    fn user_and_group_grants_allow() {
        let by_user = grant(user("suzie@example.com"), "view", cluster());
        let by_group = grant(group("Engineering"), "edit", ns("web"));
        let authz = authorizer(&[by_user.clone(), by_group.clone()]);
        let get = res("get", "pods", Some("web"));
        assert_eq!(
            authz.decide(&suzie(), &get, at(0)),
            Decision::Allow {
                grant: Arc::new(by_user)
            }
        );
        let create = res("create", "pods", Some("web"));
        assert_eq!(
            authz.decide(&suzie(), &create, at(0)),
            Decision::Allow {
                grant: Arc::new(by_group)
            }
        );
        // Not in Engineering: only the user grant applies, and that is for someone else.
        let other = Identity::new("carl@example.com", ["Everyone"]);
        assert!(!authz.decide(&other, &get, at(0)).is_allowed());
        let engineer = Identity::new("carl@example.com", ["Engineering"]);
        assert!(authz.decide(&engineer, &create, at(0)).is_allowed());
        assert!(
            !authz
                .decide(&engineer, &res("create", "pods", Some("db")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn a_user_grant_does_not_match_a_group_of_the_same_name() {
        let authz = authorizer(&[grant(group("suzie"), "view", cluster())]);
        let alone = Identity::new("suzie", Vec::<String>::new());
        assert!(
            !authz
                .decide(&alone, &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn namespace_grants_cover_only_their_namespace() {
        let authz = authorizer(&[grant(user("suzie@example.com"), "cluster-admin", ns("web"))]);
        let me = suzie();
        assert!(
            authz
                .decide(&me, &res("delete", "pods", Some("web")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("delete", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("get", "nodes", None), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("get", "nodes", Some("")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn cluster_grants_cover_everything() {
        let authz = authorizer(&[grant(user("suzie@example.com"), "cluster-admin", cluster())]);
        let me = suzie();
        assert!(
            authz
                .decide(&me, &res("delete", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&me, &res("get", "nodes", None), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
        let view = authorizer(&[grant(user("suzie@example.com"), "view", cluster())]);
        assert!(
            view.decide(&me, &res("list", "namespaces", None), at(0))
                .is_allowed()
        );
        assert!(
            !view
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn grants_expire_at_their_instant() {
        let mut g = grant(user("suzie@example.com"), "view", cluster());
        g.expires_at = Some(at(100));
        let authz = authorizer(&[g]);
        let get = res("get", "pods", Some("web"));
        let (decision, validity) = authz.decide_with_validity(&suzie(), &get, at(99));
        assert!(decision.is_allowed());
        assert_eq!(
            validity,
            Validity {
                from: None,
                until: Some(at(100))
            }
        );
        let (decision, validity) = authz.decide_with_validity(&suzie(), &get, at(100));
        assert!(!decision.is_allowed());
        assert_eq!(
            validity,
            Validity {
                from: Some(at(100)),
                until: None
            }
        );
        assert_eq!(authz.next_expiry_after(at(0)), Some(at(100)));
        assert_eq!(authz.next_expiry_after(at(100)), None);
    }

    #[test]
    fn other_destinations_and_the_control_resource_are_ignored() {
        let grants = [
            grant(
                user("suzie@example.com"),
                "cluster-admin",
                Resource::destination("staging"),
            ),
            grant(
                user("suzie@example.com"),
                "cluster-admin",
                Resource::namespace("staging", "web"),
            ),
            grant(
                user("suzie@example.com"),
                "admin",
                Resource::destination("infra"),
            ),
        ];
        let authz = authorizer(&grants);
        assert_eq!(authz.grants().count(), 0);
        assert!(
            !authz
                .decide(&suzie(), &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
        // Even a destination called `infra` gets no control grants.
        let infra = Authorizer::new("infra", &grants, &RoleSet::builtin(), 1);
        assert_eq!(infra.grants().count(), 0);
    }

    #[test]
    fn unknown_roles_allow_nothing_and_are_listed() {
        let unknown = grant(user("suzie@example.com"), "no-such-role", cluster());
        let known = grant(user("suzie@example.com"), "view", ns("web"));
        let authz = authorizer(&[unknown.clone(), known]);
        assert_eq!(
            authz.grants_with_unknown_role().collect::<Vec<_>>(),
            vec![&unknown]
        );
        assert!(
            !authz
                .decide(&suzie(), &res("get", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&suzie(), &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );

        // A ClusterRole of the cluster makes it known.
        let mut roles = RoleSet::builtin();
        roles.insert(crate::rbac::ClusterRole {
            name: "no-such-role".into(),
            rules: vec![crate::rbac::PolicyRule {
                verbs: vec!["get".into()],
                api_groups: vec![String::new()],
                resources: vec!["pods".into()],
                ..Default::default()
            }],
        });
        let authz = Authorizer::new(DEST, &[unknown], &roles, 2);
        assert_eq!(authz.grants_with_unknown_role().count(), 0);
        assert!(
            authz
                .decide(&suzie(), &res("get", "pods", Some("db")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn many_grants_are_indexed() {
        let mut grants: Vec<Grant> = (0..100_000)
            .map(|i| grant(user(&format!("user{i}@example.com")), "view", ns("web")))
            .collect();
        grants.push(grant(group("Engineering"), "edit", ns("web")));
        let authz = authorizer(&grants);
        let get = res("get", "pods", Some("web"));
        let someone = Identity::new("user99999@example.com", Vec::<String>::new());
        assert!(authz.decide(&someone, &get, at(0)).is_allowed());
        assert!(
            !authz
                .decide(&someone, &res("create", "pods", Some("web")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&suzie(), &res("create", "pods", Some("web")), at(0))
                .is_allowed()
        );
        let stranger = Identity::new("stranger", ["Strangers"]);
        assert!(!authz.decide(&stranger, &get, at(0)).is_allowed());
    }

    // Property tests over a small world, so that grants and requests meet often.

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn removing_a_grant_never_widens_access(
            grants in proptest::collection::vec(any_grant(), 1..12),
            remove in any::<prop::sample::Index>(),
            queries in queries(),
        ) {
            let before = authorizer(&grants);
            let mut fewer = grants.clone();
            fewer.remove(remove.index(grants.len()));
            let after = authorizer(&fewer);
            for (identity, attrs, now) in &queries {
                if after.decide(identity, attrs, *now).is_allowed() {
                    prop_assert!(before.decide(identity, attrs, *now).is_allowed());
                }
            }
        }

        #[test]
        fn the_order_of_grants_does_not_matter(
            (grants, shuffled) in proptest::collection::vec(any_grant(), 0..12)
                .prop_flat_map(|g| (Just(g.clone()), Just(g).prop_shuffle())),
            queries in queries(),
        ) {
            let one = authorizer(&grants);
            let other = authorizer(&shuffled);
            for (identity, attrs, now) in &queries {
                prop_assert_eq!(
                    one.decide(identity, attrs, *now).is_allowed(),
                    other.decide(identity, attrs, *now).is_allowed()
                );
            }
        }

        #[test]
        fn a_namespace_grant_never_allows_cluster_scope_nor_urls(
            grants in proptest::collection::vec(namespace_grant(), 0..12),
            queries in queries(),
        ) {
            let authz = authorizer(&grants);
            for (identity, attrs, now) in &queries {
                let cluster_scoped = match attrs {
                    Attributes::Resource(r) => r.namespace.as_deref().is_none_or(str::is_empty),
                    Attributes::NonResource(_) => true,
                };
                if cluster_scoped {
                    prop_assert!(!authz.decide(identity, attrs, *now).is_allowed());
                }
            }
        }
    }
}
