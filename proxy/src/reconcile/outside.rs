//! Bindings made outside Infra that name Infra's users or groups, pure. infra-proxy decides from
//! grants alone, so such a binding gives nothing through the proxy (and, with the proxy answering
//! access reviews itself, `kubectl auth can-i` does not count it either); but an admin should
//! know it is there: it acts for anyone who reaches the apiserver another way, and it is a sign
//! that someone expects it to work.

use std::collections::BTreeSet;

use infra_authz::policy::{Grant, Subject};
use k8s_openapi::api::rbac::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::owned_by;

/// The most bindings reported by name; beyond, one line counts the rest. Anyone who may make
/// RoleBindings in a namespace can make many: the report, which goes to `/readyz`, the log and
/// the proxy's registration with the control plane (a body of at most 64 KiB), stays small.
pub const MAX_REPORTED: usize = 50;

/// One line per (binding, subject) for the bindings that are not this destination's own (its
/// label and destination annotation, [`owned_by`]: a label alone is easy to copy) whose subjects
/// are users or groups of `destination`'s grants, sorted: `RoleBinding "default/x" binds user
/// "suzie" to ClusterRole "view"`. At most [`MAX_REPORTED`] lines, then `and N more`; with the
/// number of them all.
pub fn outside_bindings<'a>(
    destination: &str,
    grants: &[Grant],
    cluster_role_bindings: impl IntoIterator<Item = &'a k8s::ClusterRoleBinding>,
    role_bindings: impl IntoIterator<Item = &'a k8s::RoleBinding>,
) -> (Vec<String>, usize) {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for grant in grants
        .iter()
        .filter(|g| *g.resource.destination == *destination && !g.resource.is_control())
    {
        match &grant.subject {
            Subject::User(name) => users.insert(name.as_str()),
            Subject::Group(name) => groups.insert(name.as_str()),
        };
    }
    let mut lines = BTreeSet::new();
    let mut check =
        |kind: &str, meta: &ObjectMeta, role: &k8s::RoleRef, subjects: &[k8s::Subject]| {
            if owned_by(meta, destination) {
                return;
            }
            let name = match meta.namespace.as_deref() {
                Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
                None => meta.name.clone().unwrap_or_default(),
            };
            for subject in subjects {
                let who = match subject.kind.as_str() {
                    "User" if users.contains(subject.name.as_str()) => "user",
                    "Group" if groups.contains(subject.name.as_str()) => "group",
                    _ => continue,
                };
                lines.insert(format!(
                    "{kind} {name:?} binds {who} {:?} to {} {:?}",
                    subject.name, role.kind, role.name
                ));
            }
        };
    for binding in cluster_role_bindings {
        check(
            "ClusterRoleBinding",
            &binding.metadata,
            &binding.role_ref,
            binding.subjects.as_deref().unwrap_or_default(),
        );
    }
    for binding in role_bindings {
        check(
            "RoleBinding",
            &binding.metadata,
            &binding.role_ref,
            binding.subjects.as_deref().unwrap_or_default(),
        );
    }
    let total = lines.len();
    let mut report: Vec<String> = lines.into_iter().take(MAX_REPORTED).collect();
    if total > MAX_REPORTED {
        report.push(format!(
            "and {} more (infra_proxy_outside_bindings counts them all)",
            total - MAX_REPORTED
        ));
    }
    (report, total)
}

#[cfg(test)]
mod tests {
    use super::super::{DESTINATION_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL};
    use super::*;
    use infra_authz::policy::Resource;

    fn binding(
        namespace: Option<&str>,
        name: &str,
        infra: bool,
        subjects: &[(&str, &str)],
    ) -> (ObjectMeta, k8s::RoleRef, Vec<k8s::Subject>) {
        let meta = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: infra.then(|| {
                [(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]
                    .into_iter()
                    .collect()
            }),
            annotations: infra.then(|| {
                [(DESTINATION_ANNOTATION.to_owned(), "production".to_owned())]
                    .into_iter()
                    .collect()
            }),
            ..ObjectMeta::default()
        };
        let role = k8s::RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "view".to_owned(),
        };
        let subjects = subjects
            .iter()
            .map(|(kind, name)| k8s::Subject {
                kind: (*kind).to_owned(),
                name: (*name).to_owned(),
                ..k8s::Subject::default()
            })
            .collect();
        (meta, role, subjects)
    }

    #[test]
    fn only_unlabelled_bindings_of_the_grants_subjects_are_reported() {
        let grants = [
            Grant {
                subject: Subject::User("suzie".to_owned()),
                role: "edit".to_owned(),
                resource: Resource::destination("production"),
                expires_at: None,
            },
            Grant {
                subject: Subject::Group("eng".to_owned()),
                role: "view".to_owned(),
                resource: Resource::destination("production"),
                expires_at: None,
            },
            Grant {
                subject: Subject::User("otto".to_owned()),
                role: "view".to_owned(),
                resource: Resource::destination("staging"),
                expires_at: None,
            },
        ];
        let rb = |(metadata, role_ref, subjects): (ObjectMeta, k8s::RoleRef, Vec<k8s::Subject>)| {
            k8s::RoleBinding {
                metadata,
                role_ref,
                subjects: Some(subjects),
            }
        };
        let crb =
            |(metadata, role_ref, subjects): (ObjectMeta, k8s::RoleRef, Vec<k8s::Subject>)| {
                k8s::ClusterRoleBinding {
                    metadata,
                    role_ref,
                    subjects: Some(subjects),
                }
            };
        let role_bindings = [
            rb(binding(
                Some("default"),
                "by-hand",
                false,
                &[
                    ("User", "suzie"),
                    ("User", "otto"),
                    ("ServiceAccount", "suzie"),
                ],
            )),
            rb(binding(
                Some("default"),
                "infra:view:x",
                true,
                &[("User", "suzie")],
            )),
        ];
        let cluster_role_bindings = [
            crb(binding(
                None,
                "eng-view",
                false,
                &[("Group", "eng"), ("Group", "ops")],
            )),
            crb(binding(None, "nobody", false, &[("User", "carl")])),
        ];
        assert_eq!(
            outside_bindings(
                "production",
                &grants,
                &cluster_role_bindings,
                &role_bindings
            )
            .0,
            vec![
                r#"ClusterRoleBinding "eng-view" binds group "eng" to ClusterRole "view""#,
                r#"RoleBinding "default/by-hand" binds user "suzie" to ClusterRole "view""#,
            ]
        );
        assert!(
            outside_bindings("other", &grants, &cluster_role_bindings, &role_bindings)
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_copied_label_hides_nothing_and_the_report_is_capped() {
        let grants = [Grant {
            subject: Subject::User("suzie".to_owned()),
            role: "edit".to_owned(),
            resource: Resource::destination("production"),
            expires_at: None,
        }];
        let (mut metadata, role_ref, subjects) = binding(
            Some("default"),
            "looks-like-infra",
            true,
            &[("User", "suzie")],
        );
        metadata.annotations = None;
        let disguised = k8s::RoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        };
        assert_eq!(
            outside_bindings("production", &grants, [], [&disguised]).0,
            vec![
                r#"RoleBinding "default/looks-like-infra" binds user "suzie" to ClusterRole "view""#
            ]
        );

        let many: Vec<k8s::RoleBinding> = (0..MAX_REPORTED + 7)
            .map(|i| {
                let (metadata, role_ref, subjects) = binding(
                    Some("web"),
                    &format!("b{i:03}"),
                    false,
                    &[("User", "suzie")],
                );
                k8s::RoleBinding {
                    metadata,
                    role_ref,
                    subjects: Some(subjects),
                }
            })
            .collect();
        let (report, total) = outside_bindings("production", &grants, [], &many);
        assert_eq!(total, MAX_REPORTED + 7);
        assert_eq!(report.len(), MAX_REPORTED + 1);
        assert_eq!(
            report.last().map(String::as_str),
            Some("and 7 more (infra_proxy_outside_bindings counts them all)")
        );
    }
}
