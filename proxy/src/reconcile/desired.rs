//! The desired state of RBAC reconcile, pure: the bindings a destination's grants call for, the
//! roles that exist, and which existing bindings are no longer wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use infra_authz::policy::{Grant, Subject};
use infra_authz::rbac::{self, RoleSet};
use k8s_openapi::api::rbac::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest as _, Sha256};

use super::{DESTINATION_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, Target};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The most of a role's name kept in a binding's name (names are at most 253 characters).
const ROLE_IN_NAME: usize = 200;

/// What a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// A ClusterRole (the only choice for a ClusterRoleBinding).
    ClusterRole,
    /// A Role of the binding's namespace.
    Role,
}

impl RoleKind {
    /// The `roleRef.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterRole => "ClusterRole",
            Self::Role => "Role",
        }
    }
}

/// One binding Infra wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBinding {
    /// `None`: a ClusterRoleBinding; otherwise a RoleBinding in this namespace.
    pub namespace: Option<String>,
    /// The binding's name, from [`binding_name`].
    pub name: String,
    /// What `roleRef` names.
    pub role_kind: RoleKind,
    /// The role's name.
    pub role: String,
    /// Who is bound.
    pub subject: Subject,
}

impl DesiredBinding {
    /// The `roleRef`.
    pub fn role_ref(&self) -> k8s::RoleRef {
        k8s::RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: self.role_kind.as_str().to_owned(),
            name: self.role.clone(),
        }
    }

    /// The `subjects`.
    pub fn subjects(&self) -> Vec<k8s::Subject> {
        let (kind, name) = match &self.subject {
            Subject::User(name) => ("User", name),
            Subject::Group(name) => ("Group", name),
        };
        vec![k8s::Subject {
            api_group: Some(RBAC_GROUP.to_owned()),
            kind: kind.to_owned(),
            name: name.clone(),
            namespace: None,
        }]
    }

    /// The binding's metadata: name, namespace, label and annotation.
    pub fn metadata(&self, destination: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: self.namespace.clone(),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into()),
            annotations: Some([(DESTINATION_ANNOTATION.to_owned(), destination.to_owned())].into()),
            ..ObjectMeta::default()
        }
    }

    pub(super) fn describe(&self) -> Target {
        Target {
            kind: if self.namespace.is_some() {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            },
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The roles that exist: ClusterRoles (the cluster's and the built-in ones) and Roles by
/// namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownRoles {
    /// ClusterRole names.
    pub cluster_roles: BTreeSet<String>,
    /// `(namespace, name)` of each Role.
    pub roles: BTreeSet<(String, String)>,
}

impl KnownRoles {
    /// The roles of a set built by [`role_set`]: Roles are the names `<namespace>/<name>`.
    pub fn of(set: &RoleSet) -> Self {
        let mut known = Self::default();
        for name in set.names() {
            match name.split_once('/') {
                Some((namespace, role)) => {
                    known.roles.insert((namespace.to_owned(), role.to_owned()));
                }
                None => {
                    known.cluster_roles.insert(name.to_owned());
                }
            }
        }
        known
    }
}

/// The bindings wanted for a set of grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// By `(namespace, name)`; namespace `None` for ClusterRoleBindings.
    pub bindings: BTreeMap<(Option<String>, String), DesiredBinding>,
    /// The grants (of this destination, in force) whose role exists nowhere. They still get a
    /// binding to the ClusterRole of that name, which starts to count when the role appears.
    pub unknown_role: Vec<Grant>,
    /// When the next of the kept grants expires: the desired state changes then.
    pub next_expiry: Option<SystemTime>,
}

/// The bindings `destination`'s grants in force at `now` want, given the roles that exist.
pub fn desired(
    destination: &str,
    grants: &[Grant],
    known: &KnownRoles,
    now: SystemTime,
) -> Desired {
    let mut out = Desired::default();
    for grant in grants {
        if grant.resource.is_control()
            || grant.resource.destination != destination
            || !grant.is_active(now)
        {
            continue;
        }
        if let Some(at) = grant.expires_at {
            out.next_expiry = Some(out.next_expiry.map_or(at, |next| next.min(at)));
        }
        let namespace = grant.resource.namespace.as_deref();
        let cluster_role = known.cluster_roles.contains(&grant.role);
        let role_kind = match namespace {
            Some(ns)
                if !cluster_role && known.roles.contains(&(ns.to_owned(), grant.role.clone())) =>
            {
                RoleKind::Role
            }
            Some(_) | None => {
                if !cluster_role && !out.unknown_role.contains(grant) {
                    out.unknown_role.push(grant.clone());
                }
                RoleKind::ClusterRole
            }
        };
        let name = binding_name(
            destination,
            namespace,
            &grant.subject,
            role_kind,
            &grant.role,
        );
        out.bindings
            .entry((namespace.map(str::to_owned), name.clone()))
            .or_insert_with(|| DesiredBinding {
                namespace: namespace.map(str::to_owned),
                name,
                role_kind,
                role: grant.role.clone(),
                subject: grant.subject.clone(),
            });
    }
    out
}

/// The name of the binding of `subject` to `role` (`infra:<role>:<user|group>:<hash>`): the
/// same on every proxy of the destination, at most 253 characters, and different for every
/// destination, namespace, subject, role kind and role (the hash covers them all).
pub fn binding_name(
    destination: &str,
    namespace: Option<&str>,
    subject: &Subject,
    role_kind: RoleKind,
    role: &str,
) -> String {
    let (kind, who) = match subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    };
    let mut hash = Sha256::new();
    for part in [
        destination,
        namespace.unwrap_or_default(),
        kind,
        who,
        role_kind.as_str(),
        role,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut shown = role;
    if shown.len() > ROLE_IN_NAME {
        let mut end = ROLE_IN_NAME;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown = &shown[..end];
    }
    format!("infra:{shown}:{kind}:{}", hex::encode(&digest[..4]))
}

/// The roles the proxy decides with: the built-in ones, replaced and extended by the cluster's
/// ClusterRoles (with their rules as the apiserver reports them, aggregated ones included), and
/// each Role as `<namespace>/<name>` (no ClusterRole can have a `/` in its name).
pub fn role_set<'a>(
    cluster_roles: impl IntoIterator<Item = &'a k8s::ClusterRole>,
    roles: impl IntoIterator<Item = &'a k8s::Role>,
) -> RoleSet {
    let mut set = RoleSet::builtin();
    for role in cluster_roles {
        let Some(name) = role.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        set.insert(rbac::ClusterRole {
            name: name.to_owned(),
            rules: convert_rules(role.rules.as_deref()),
        });
    }
    for role in roles {
        let (Some(namespace), Some(name)) = (
            role.metadata.namespace.as_deref(),
            role.metadata.name.as_deref(),
        ) else {
            continue;
        };
        set.insert_role(rbac::Role::new(
            format!("{namespace}/{name}"),
            convert_rules(role.rules.as_deref()),
        ));
    }
    set
}

fn convert_rules(rules: Option<&[k8s::PolicyRule]>) -> Vec<rbac::PolicyRule> {
    rules
        .unwrap_or_default()
        .iter()
        .map(|rule| rbac::PolicyRule {
            verbs: rule.verbs.clone(),
            api_groups: rule.api_groups.clone().unwrap_or_default(),
            resources: rule.resources.clone().unwrap_or_default(),
            resource_names: rule.resource_names.clone().unwrap_or_default(),
            non_resource_urls: rule.non_resource_urls.clone().unwrap_or_default(),
        })
        .collect()
}

/// Whether a binding is this destination's: Infra's label and `destination` in the annotation.
pub fn owned_by(meta: &ObjectMeta, destination: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESTINATION_ANNOTATION))
            .is_some_and(|v| v == destination)
}

impl Desired {
    /// Whether an existing binding is one to delete: this destination's (see [`owned_by`]) and
    /// not among the bindings wanted.
    pub(super) fn unwanted(&self, destination: &str, meta: &ObjectMeta) -> bool {
        owned_by(meta, destination)
            && !self.bindings.contains_key(&(
                meta.namespace.clone(),
                meta.name.clone().unwrap_or_default(),
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_authz::policy::Resource as Where;
    use std::time::Duration;

    const DEST: &str = "production";

    fn grant(subject: Subject, role: &str, resource: Where) -> Grant {
        Grant {
            subject,
            role: role.to_owned(),
            resource,
            expires_at: None,
        }
    }

    fn known() -> KnownRoles {
        KnownRoles {
            cluster_roles: ["view", "edit", "shared"].map(str::to_owned).into(),
            roles: [("web", "deployer"), ("web", "shared")]
                .map(|(n, r)| (n.to_owned(), r.to_owned()))
                .into(),
        }
    }

    #[test]
    fn cluster_and_namespace_grants_make_their_bindings() {
        let grants = [
            grant(
                Subject::Group("eng".into()),
                "view",
                Where::destination(DEST),
            ),
            grant(
                Subject::User("carl@example.com".into()),
                "edit",
                Where::namespace(DEST, "web"),
            ),
        ];
        let out = desired(DEST, &grants, &known(), SystemTime::UNIX_EPOCH);
        assert!(out.unknown_role.is_empty());
        let bindings: Vec<&DesiredBinding> = out.bindings.values().collect();
        assert_eq!(bindings.len(), 2);
        let cluster = bindings
            .iter()
            .find(|b| b.namespace.is_none())
            .expect("a cluster binding");
        assert_eq!(cluster.role_kind, RoleKind::ClusterRole);
        assert!(
            cluster.name.starts_with("infra:view:group:"),
            "{}",
            cluster.name
        );
        assert_eq!(cluster.subjects()[0].kind, "Group");
        assert_eq!(cluster.subjects()[0].api_group.as_deref(), Some(RBAC_GROUP));
        let ns = bindings
            .iter()
            .find(|b| b.namespace.is_some())
            .expect("a namespace binding");
        assert_eq!(ns.namespace.as_deref(), Some("web"));
        assert_eq!(ns.role_ref().kind, "ClusterRole");
        assert_eq!(ns.subjects()[0].kind, "User");
        assert!(ns.name.starts_with("infra:edit:user:"), "{}", ns.name);
    }

    #[test]
    fn other_destinations_the_control_resource_and_expired_grants_make_none() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut expired = grant(Subject::User("a".into()), "view", Where::destination(DEST));
        expired.expires_at = Some(now - Duration::from_secs(1));
        let mut later = grant(Subject::User("b".into()), "view", Where::destination(DEST));
        later.expires_at = Some(now + Duration::from_mins(1));
        let grants = [
            grant(
                Subject::User("a".into()),
                "admin",
                Where::destination("infra"),
            ),
            grant(
                Subject::User("a".into()),
                "view",
                Where::destination("staging"),
            ),
            expired,
            later,
        ];
        let out = desired(DEST, &grants, &known(), now);
        assert_eq!(out.bindings.len(), 1, "{out:?}");
        assert_eq!(out.next_expiry, Some(now + Duration::from_mins(1)));
    }

    #[test]
    fn a_role_of_the_namespace_is_used_only_when_no_cluster_role_has_the_name() {
        let eng = || Subject::Group("eng".into());
        let grants = [
            grant(eng(), "deployer", Where::namespace(DEST, "web")),
            grant(eng(), "shared", Where::namespace(DEST, "web")),
            grant(eng(), "deployer", Where::namespace(DEST, "api")),
            grant(eng(), "deployer", Where::destination(DEST)),
        ];
        let out = desired(DEST, &grants, &known(), SystemTime::UNIX_EPOCH);
        let kind_of = |ns: Option<&str>, role: &str| {
            out.bindings
                .values()
                .find(|b| b.namespace.as_deref() == ns && b.role == role)
                .map(|b| b.role_kind)
        };
        assert_eq!(kind_of(Some("web"), "deployer"), Some(RoleKind::Role));
        assert_eq!(kind_of(Some("web"), "shared"), Some(RoleKind::ClusterRole));
        assert_eq!(
            kind_of(Some("api"), "deployer"),
            Some(RoleKind::ClusterRole)
        );
        assert_eq!(kind_of(None, "deployer"), Some(RoleKind::ClusterRole));
        // The Role of `web` covers neither `api` nor the whole cluster.
        assert_eq!(out.unknown_role.len(), 2, "{:?}", out.unknown_role);
    }

    #[test]
    fn names_are_stable_distinct_and_short() {
        let user = Subject::User("carl@example.com".into());
        let group = Subject::Group("carl@example.com".into());
        let a = binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "edit");
        assert_eq!(
            a,
            binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "edit")
        );
        let others = [
            binding_name("staging", Some("web"), &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("api"), &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, None, &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("web"), &group, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("web"), &user, RoleKind::Role, "edit"),
            binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "view"),
        ];
        for other in &others {
            assert_ne!(&a, other);
        }
        let long = "r".repeat(600);
        let name = binding_name(DEST, None, &user, RoleKind::ClusterRole, &long);
        assert!(name.len() <= 253, "{}", name.len());
        let re = regex_lite_check(&a);
        assert!(re, "{a}");
    }

    /// `infra:<role>:<kind>:<8 hex>`.
    fn regex_lite_check(name: &str) -> bool {
        let parts: Vec<&str> = name.split(':').collect();
        parts.len() == 4
            && parts[0] == "infra"
            && parts[3].len() == 8
            && parts[3].chars().all(|c| c.is_ascii_hexdigit())
    }

    #[test]
    fn duplicate_grants_make_one_binding() {
        let g = grant(
            Subject::Group("eng".into()),
            "view",
            Where::destination(DEST),
        );
        let out = desired(DEST, &[g.clone(), g], &known(), SystemTime::UNIX_EPOCH);
        assert_eq!(out.bindings.len(), 1);
    }

    #[test]
    fn ownership_needs_the_label_and_this_destination() {
        let want = desired(
            DEST,
            &[grant(
                Subject::Group("eng".into()),
                "view",
                Where::destination(DEST),
            )],
            &known(),
            SystemTime::UNIX_EPOCH,
        );
        let binding = want.bindings.values().next().expect("one binding");
        let meta = binding.metadata(DEST);
        assert!(owned_by(&meta, DEST));
        assert!(!owned_by(&meta, "staging"));
        let mut unlabelled = meta.clone();
        unlabelled.labels = None;
        assert!(!owned_by(&unlabelled, DEST));
        let mut unannotated = meta;
        unannotated.annotations = None;
        assert!(!owned_by(&unannotated, DEST));
    }

    #[test]
    fn the_role_set_holds_cluster_roles_and_namespaced_roles() {
        let rule = k8s::PolicyRule {
            verbs: vec!["get".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            ..k8s::PolicyRule::default()
        };
        let cluster_role = k8s::ClusterRole {
            metadata: ObjectMeta {
                name: Some("pod-reader".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![rule.clone()]),
            ..k8s::ClusterRole::default()
        };
        let role = k8s::Role {
            metadata: ObjectMeta {
                name: Some("deployer".into()),
                namespace: Some("web".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![rule]),
        };
        let set = role_set([&cluster_role], [&role]);
        assert!(set.contains("view"), "built-ins stay");
        assert!(set.contains("pod-reader"));
        assert!(set.contains("web/deployer"));
        let known = KnownRoles::of(&set);
        assert!(known.cluster_roles.contains("pod-reader"));
        assert!(
            known
                .roles
                .contains(&("web".to_owned(), "deployer".to_owned()))
        );
        let rules = set.get("pod-reader").expect("present").rules();
        assert_eq!(rules[0].resources, ["pods"]);
        assert_eq!(rules[0].api_groups, [""]);
    }
}
