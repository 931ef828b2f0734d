//! The cluster's own roles are known in every reconcile mode, and the proxy knows what its own
//! credential may do: `/readyz` waits for the first list of roles, a grant naming a custom
//! ClusterRole decides with its rules once listed, a grant naming a role the cluster lacks is
//! reported, and the start-up permission check names exactly what the credential lacks.

use std::time::Duration;

use infra_proxy::reconcile::{Needed, Permissions};
use infra_tests::apiserver::StandIn;
use infra_tests::kubectl::{Credentials, Kubectl};
use infra_tests::proxy::{DESTINATION, Harness, http_get, wait_for};
use serde_json::json;

const RBAC: &str = "rbac.authorization.k8s.io/v1";
const CLUSTER_ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";

fn pod_reader() -> serde_json::Value {
    json!({
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_roles_and_custom_roles_decide_with_reconcile_off() {
    let policy = format!(
        "grants:\n  - user: suzie\n    role: pod-reader\n    resource: {DESTINATION}\n  - user: suzie\n    role: no-such-role\n    resource: {DESTINATION}.web\n"
    );
    // The list of ClusterRoles takes two seconds to answer.
    let h = Harness::start_custom(
        &policy,
        StandIn::builder().stall(CLUSTER_ROLES, Duration::from_secs(2)),
        |issuers| issuers,
        |_| {},
    )
    .await;
    h.standin.create(pod_reader()).expect("a ClusterRole");
    let readyz = format!("http://{}/readyz", h.proxy.admin_address);
    let early = http_get(&readyz).await;
    assert!(early.contains("[-] roles failed"), "{early}");

    let ready = wait_for(|| async {
        let report = http_get(&readyz).await;
        report.contains("readyz check passed").then_some(report)
    })
    .await;
    assert!(ready.contains("[+] roles ok"), "{ready}");
    assert!(
        ready.contains(r#"[!] roles: grants name roles that exist nowhere in the cluster and allow nothing: user "suzie" has role "no-such-role""#),
        "{ready}"
    );
    let metrics = http_get(&format!("http://{}/metrics", h.proxy.admin_address)).await;
    assert!(
        metrics.contains("infra_proxy_grants_unknown_role 1"),
        "{metrics}"
    );

    // Once ready, the custom role's rules decide: get and list pods, nothing else.
    let suzie = h.kubectl_as("suzie", &[]);
    suzie.run(&["get", "pods", "-n", "default"]).await.success();
    let denied = suzie.run(&["get", "configmaps", "-n", "default"]).await;
    assert!(
        denied
            .stderr
            .contains(r#"User "suzie" cannot list resource "configmaps""#),
        "{}",
        denied.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_check_names_exactly_what_the_credential_lacks() {
    let standin = StandIn::builder().enforce_rbac().start().await;
    // The proxy's credential may impersonate and read roles, and write bindings, but not bind.
    standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "almost-infra-proxy"},
            "rules": [
                {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "roles"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings", "rolebindings"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
            ],
        }))
        .expect("a ClusterRole");
    standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "almost-infra-proxy"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "almost-infra-proxy"},
            "subjects": [{"kind": "User", "name": "infra-proxy", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .expect("a ClusterRoleBinding");
    let cert = standin.client_cert("infra-proxy", &[]);
    let kubectl = Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::ClientCert(cert),
    );
    let client = infra_proxy::reconcile::client(Some(kubectl.kubeconfig()), None)
        .await
        .expect("a client");

    let permissions = Permissions::check(&client).await.expect("answered");
    let bind = |resource| Needed {
        verb: "bind",
        group: "rbac.authorization.k8s.io",
        resource,
    };
    assert_eq!(
        permissions,
        Permissions {
            impersonate: vec![],
            read_roles: vec![],
            read_bindings: vec![],
            reconcile: vec![bind("clusterroles"), bind("roles")],
        }
    );

    // Without the binding, nothing is allowed.
    standin.delete(RBAC, "ClusterRoleBinding", "", "almost-infra-proxy");
    let permissions = Permissions::check(&client).await.expect("answered");
    assert_eq!(permissions.impersonate.len(), 2, "{permissions:?}");
    assert_eq!(permissions.read_roles.len(), 4, "{permissions:?}");
    assert_eq!(permissions.read_bindings.len(), 4, "{permissions:?}");
    assert_eq!(permissions.reconcile.len(), 18, "{permissions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_made_outside_infra_for_its_users_are_reported_not_honoured() {
    let policy =
        format!("grants:\n  - user: suzie\n    role: view\n    resource: {DESTINATION}.web\n");
    let h = Harness::start(&policy).await;
    h.standin
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}))
        .expect("a namespace");
    h.standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": {"name": "suzie-edits-default", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": "suzie", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .expect("a RoleBinding made by hand");
    let readyz = format!("http://{}/readyz", h.proxy.admin_address);
    let report = wait_for(|| async {
        let report = http_get(&readyz).await;
        report.contains("[!] outside-bindings").then_some(report)
    })
    .await;
    assert!(
        report.contains(
            r#"RoleBinding "default/suzie-edits-default" binds user "suzie" to ClusterRole "edit""#
        ),
        "{report}"
    );
    let metrics = http_get(&format!("http://{}/metrics", h.proxy.admin_address)).await;
    assert!(
        metrics.contains("infra_proxy_outside_bindings 1"),
        "{metrics}"
    );
    assert_eq!(h.proxy.proxy.policy.outside_bindings().len(), 1);

    // The proxy decides from grants: the binding gives suzie nothing in default.
    let denied = h
        .kubectl_as("suzie", &[])
        .run(&["get", "pods", "-n", "default"])
        .await;
    assert!(
        denied
            .stderr
            .contains(r#"User "suzie" cannot list resource "pods""#),
        "{}",
        denied.stderr
    );

    // And kubectl auth can-i, answered by the proxy, says the same.
    let can_i = h
        .kubectl_as("suzie", &[])
        .run(&["auth", "can-i", "list", "pods", "-n", "default"])
        .await;
    assert!(can_i.stdout.starts_with("no"), "{can_i:?}");
    let can_i = h
        .kubectl_as("suzie", &[])
        .run(&["auth", "can-i", "list", "pods", "-n", "web"])
        .await;
    assert!(can_i.stdout.starts_with("yes"), "{can_i:?}");

    // Gone from the cluster, gone from the report.
    h.standin
        .delete(RBAC, "RoleBinding", "default", "suzie-edits-default")
        .expect("deleted");
    wait_for(|| async { (!http_get(&readyz).await.contains("outside-bindings")).then_some(()) })
        .await;
}
