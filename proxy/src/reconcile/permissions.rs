//! What infra-proxy's own credential may do in its cluster, asked of the apiserver at start.
//!
//! One `SelfSubjectAccessReview` per permission, each cluster-wide (no namespace, so the answer
//! is "in every namespace"). A `SelfSubjectRulesReview` would answer for one namespace only and
//! says `incomplete` under webhook authorizers; the reviews here are exact for what the proxy
//! does, which is always cluster-wide (watch every namespace's Roles, bind in any namespace).

use futures_util::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// One permission the proxy's credential needs, and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    /// The verb.
    pub verb: &'static str,
    /// The API group (`""` is the core group).
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
}

impl std::fmt::Display for Needed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.verb, self.resource)
        } else {
            write!(f, "{} {}.{}", self.verb, self.resource, self.group)
        }
    }
}

const fn needed(verb: &'static str, group: &'static str, resource: &'static str) -> Needed {
    Needed {
        verb,
        group,
        resource,
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// To forward every request as the user who made it.
pub const IMPERSONATE: [Needed; 2] = [
    needed("impersonate", "", "users"),
    needed("impersonate", "", "groups"),
];

/// To decide with the cluster's own ClusterRoles and Roles.
pub const READ_ROLES: [Needed; 4] = [
    needed("list", RBAC, "clusterroles"),
    needed("watch", RBAC, "clusterroles"),
    needed("list", RBAC, "roles"),
    needed("watch", RBAC, "roles"),
];

/// To see the cluster's bindings (those made outside Infra that name its users are reported).
pub const READ_BINDINGS: [Needed; 4] = [
    needed("list", RBAC, "clusterrolebindings"),
    needed("watch", RBAC, "clusterrolebindings"),
    needed("list", RBAC, "rolebindings"),
    needed("watch", RBAC, "rolebindings"),
];

/// To keep the bindings that mirror the grants.
pub const RECONCILE: [Needed; 14] = [
    needed("get", RBAC, "clusterrolebindings"),
    needed("list", RBAC, "clusterrolebindings"),
    needed("watch", RBAC, "clusterrolebindings"),
    needed("create", RBAC, "clusterrolebindings"),
    needed("update", RBAC, "clusterrolebindings"),
    needed("delete", RBAC, "clusterrolebindings"),
    needed("get", RBAC, "rolebindings"),
    needed("list", RBAC, "rolebindings"),
    needed("watch", RBAC, "rolebindings"),
    needed("create", RBAC, "rolebindings"),
    needed("update", RBAC, "rolebindings"),
    needed("delete", RBAC, "rolebindings"),
    needed("bind", RBAC, "clusterroles"),
    needed("bind", RBAC, "roles"),
];

/// The answers: what the credential lacks, per purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Missing of [`IMPERSONATE`].
    pub impersonate: Vec<Needed>,
    /// Missing of [`READ_ROLES`].
    pub read_roles: Vec<Needed>,
    /// Missing of [`READ_BINDINGS`].
    pub read_bindings: Vec<Needed>,
    /// Missing of [`RECONCILE`] (and of [`READ_ROLES`], which reconcile needs too).
    pub reconcile: Vec<Needed>,
}

impl Permissions {
    /// Asks the apiserver about every needed permission at once.
    ///
    /// # Errors
    ///
    /// When a review cannot be made or answered (the apiserver is away, or refuses the review
    /// itself).
    pub async fn check(client: &kube::Client) -> Result<Self, kube::Error> {
        let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
        let all: Vec<Needed> = IMPERSONATE
            .iter()
            .chain(&READ_ROLES)
            .chain(&RECONCILE)
            .copied()
            .collect();
        let answers = join_all(all.iter().map(|n| allowed(&api, *n))).await;
        let mut missing = Vec::new();
        for (need, answer) in all.into_iter().zip(answers) {
            if !answer? {
                missing.push(need);
            }
        }
        Ok(Self::from_missing(&missing))
    }

    /// Sorts missing permissions by purpose.
    pub fn from_missing(missing: &[Needed]) -> Self {
        let of = |set: &[Needed]| -> Vec<Needed> {
            missing
                .iter()
                .filter(|m| set.contains(m))
                .copied()
                .collect()
        };
        let mut reconcile = of(&READ_ROLES);
        reconcile.extend(of(&RECONCILE));
        Self {
            impersonate: of(&IMPERSONATE),
            read_roles: of(&READ_ROLES),
            read_bindings: of(&READ_BINDINGS),
            reconcile,
        }
    }
}

/// Lists permissions for a message: `create rolebindings.rbac.authorization.k8s.io, ...`.
pub fn list(missing: &[Needed]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn allowed(api: &Api<SelfSubjectAccessReview>, need: Needed) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(need.verb.to_owned()),
                group: Some(need.group.to_owned()),
                resource: Some(need.resource.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_permissions_are_sorted_by_purpose_and_named_as_kubectl_names_them() {
        let missing = [IMPERSONATE[1], READ_ROLES[0], RECONCILE[3], RECONCILE[12]];
        let permissions = Permissions::from_missing(&missing);
        assert_eq!(permissions.impersonate, vec![IMPERSONATE[1]]);
        assert_eq!(permissions.read_roles, vec![READ_ROLES[0]]);
        assert_eq!(
            permissions.reconcile,
            vec![READ_ROLES[0], RECONCILE[3], RECONCILE[12]]
        );
        assert_eq!(
            list(&permissions.reconcile),
            "list clusterroles.rbac.authorization.k8s.io, create clusterrolebindings.rbac.authorization.k8s.io, bind clusterroles.rbac.authorization.k8s.io"
        );
        assert_eq!(list(&permissions.impersonate), "impersonate groups");
        assert_eq!(Permissions::from_missing(&[]), Permissions::default());
    }
}
