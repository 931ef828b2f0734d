//! RBAC: the reconcile switch, and the ClusterRole against the README's permissions table.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{MODES, NAMESPACE, env, objects, render, repo_root, template, the};

#[test]
fn rbac_reconcile_sets_infra_rbac_reconcile() {
    for (sets, expected) in [
        (&[][..], "true"),
        (&["rbac.reconcile=true"][..], "true"),
        (&["rbac.reconcile=false"][..], "false"),
        (
            &[MODES[2].1, &["rbac.reconcile=false"]].concat()[..],
            "false",
        ),
    ] {
        let objects = render(sets);
        assert_eq!(env(&objects)["INFRA_RBAC_RECONCILE"], expected, "{sets:?}");
        // The ClusterRole does not change: it always holds what the reconciler needs.
        assert_eq!(cluster_role_permissions(&objects), readme_permissions());
    }
}

/// `(API group, resource, verb)` of every rule of the rendered ClusterRole.
fn cluster_role_permissions(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let role = the(objects, "ClusterRole");
    let mut permissions = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules is a list") {
        assert!(
            rule["nonResourceURLs"].is_null() && rule["resourceNames"].is_null(),
            "a rule the README does not list: {rule}"
        );
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let [group, resource, verb] =
                        [group, resource, verb].map(|v| v.as_str().expect("strings").to_owned());
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "a wildcard in the ClusterRole: {rule}"
                    );
                    permissions.insert((group, resource, verb));
                }
            }
        }
    }
    permissions
}

/// The table under "Permissions infra-proxy needs in the cluster" in the README: columns API
/// group, resources, verbs, with every name in backticks (`""` is the core group).
fn readme_permissions() -> BTreeSet<(String, String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once("Permissions infra-proxy needs in the cluster")
        .expect("the README has a section \"Permissions infra-proxy needs in the cluster\"")
        .1;
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .collect();
    assert!(!rows.is_empty(), "the permissions section has no table");
    let mut permissions = BTreeSet::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let names = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(|name| {
                    if name == "\"\"" {
                        String::new()
                    } else {
                        name.to_owned()
                    }
                })
                .collect()
        };
        let groups = names(cells[0]);
        assert_eq!(groups.len(), 1, "one API group per row: {row}");
        for resource in names(cells[1]) {
            for verb in names(cells[2]) {
                permissions.insert((groups[0].clone(), resource.clone(), verb));
            }
        }
    }
    permissions
}

#[test]
fn cluster_role_holds_exactly_the_permissions_the_readme_lists() {
    let objects = objects(&template(&[]));
    let chart = cluster_role_permissions(&objects);
    let readme = readme_permissions();
    assert_eq!(
        chart,
        readme,
        "the chart's ClusterRole and the README's list differ:\nonly in the chart: {:?}\nonly in the README: {:?}",
        chart.difference(&readme).collect::<Vec<_>>(),
        readme.difference(&chart).collect::<Vec<_>>()
    );
    // The proxy never impersonates service accounts, and never reads Secrets.
    assert!(
        chart
            .iter()
            .all(|(_, resource, _)| resource != "serviceaccounts" && resource != "secrets")
    );

    let binding = the(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        the(&objects, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "infra", "namespace": NAMESPACE}])
    );
    let pod = &the(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "infra");
}
