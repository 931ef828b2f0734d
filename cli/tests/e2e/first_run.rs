//! The first run on a cluster that enforces RBAC, as the README tells it: the admin logs in,
//! grants themself `cluster-admin` on the destination, and `kubectl get ns` works — because the
//! proxy (with `--rbac-reconcile` at its default, `auto`) found it may manage bindings and made
//! the one the grant needs. With reconcile off, the same steps end in the cluster's 403, and
//! its message says what Infra decided and why the cluster disagreed.

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness, Options, ReconcileMode};
use infra_tests::proxy::{DESTINATION, wait_for};

use crate::{POLICY, Person};

async fn first_run(reconcile: ReconcileMode) -> (ControlHarness, Person) {
    let h = ControlHarness::start_with(
        POLICY,
        Options {
            enforce_rbac: true,
            rbac_reconcile: Some(reconcile),
            ..Options::default()
        },
    )
    .await;
    let admin = Person::new();
    admin.login(&h, "admin", ADMIN_PASSWORD).await.ok();
    admin
        .infra(&[
            "grants",
            "add",
            "admin",
            DESTINATION,
            "--role",
            "cluster-admin",
        ])
        .await
        .ok();
    admin.infra(&["use", DESTINATION]).await.ok();
    (h, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reconcile_at_its_default_kubectl_works_after_the_first_grant() {
    let (h, admin) = first_run(ReconcileMode::Auto).await;
    // The binding is made within moments of the grant.
    let run = wait_for(|| async {
        let run = admin.kubectl(&["get", "ns"]).await;
        (run.code == 0).then_some(run)
    })
    .await;
    assert!(run.stdout.contains("kube-system"), "{run:?}");
    let readyz = reqwest::get(format!("http://{}/readyz", h.proxy.admin_address))
        .await
        .expect("readyz answers")
        .text()
        .await
        .expect("readyz body");
    assert!(
        readyz.contains("[+] roles ok") && !readyz.contains("reconcile"),
        "{readyz}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reconcile_off_the_clusters_refusal_says_why() {
    let (h, admin) = first_run(ReconcileMode::Off).await;
    let run = admin.kubectl(&["get", "ns"]).await;
    assert_ne!(run.code, 0, "the cluster has no binding: {run:?}");
    assert!(
        run.stderr.contains(r#"namespaces is forbidden: User "admin" cannot list resource "namespaces" in API group "" at the cluster scope"#)
            && run.stderr.contains(&format!(
                r#"infra-proxy allowed this by the grant of cluster-admin to user "admin" on {DESTINATION}, but the cluster refused it: RBAC reconcile is off"#
            )),
        "{}",
        run.stderr
    );
    // An exec the cluster refuses (before any 101) says the same: the cluster lets admin read
    // the pod (a binding made by hand), not open a shell in it.
    h.standin
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        }))
        .expect("a pod");
    h.standin
        .create(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "admin-views", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "admin", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .expect("a RoleBinding");
    let exec = admin
        .kubectl(&["exec", "web-1", "-n", "default", "--", "true"])
        .await;
    assert_ne!(exec.code, 0, "{exec:?}");
    assert!(
        exec.stderr
            .contains(r#"infra-proxy allowed this by the grant of cluster-admin to user "admin""#),
        "{}",
        exec.stderr
    );
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infra_why_explains_the_decision_in_a_table() {
    let (_h, admin) = first_run(ReconcileMode::Off).await;
    let run = admin
        .infra(&["why", "admin", "delete", "pods", "web-1", "-n", "web"])
        .await
        .ok();
    let lines: Vec<String> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "DECISION allowed",
        r#"REQUEST delete pods "web-1" in the namespace "web""#,
        "GRANT cluster-admin to user admin on testing",
    ] {
        assert!(
            lines.iter().any(|l| l == line),
            "{line:?} in:\n{}",
            run.stdout
        );
    }
    let run = admin.infra(&["why", "nobody-here", "get", "pods"]).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(r#"user "nobody-here" does not exist"#),
        "{}",
        run.stderr
    );
}

/// The README's first-run transcript: its `infra` and `kubectl` commands after the login, run as
/// written (the destination renamed to this harness's), each succeeding, and `kubectl get ns`
/// listing the cluster's namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_run_transcript_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let block = readme
        .split("```console\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("$ ./scripts/run") && block.contains("$ kubectl get ns"))
        .expect("the README has a first-run transcript");
    // The transcript's destination: the one its grant names.
    let destination = block
        .lines()
        .find_map(|l| l.strip_prefix("$ infra grants add admin "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the transcript grants the admin a role")
        .to_owned();
    let h = ControlHarness::start_with(
        POLICY,
        Options {
            enforce_rbac: true,
            rbac_reconcile: Some(ReconcileMode::Auto),
            ..Options::default()
        },
    )
    .await;
    let admin = Person::new();
    admin.login(&h, "admin", ADMIN_PASSWORD).await.ok();
    let mut namespaces = None;
    for line in block.lines().filter_map(|l| l.strip_prefix("$ ")) {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                if w == destination {
                    DESTINATION.to_owned()
                } else {
                    w.to_owned()
                }
            })
            .collect();
        let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
        let run = match words.first().map(String::as_str) {
            Some("infra") if args.first() != Some(&"login") => admin.infra(&args).await,
            Some("kubectl") => {
                // The binding is made within moments of the grant.
                wait_for(|| async {
                    let run = admin.kubectl(&args).await;
                    (run.code == 0).then_some(run)
                })
                .await
            }
            _ => continue,
        };
        let run = run.ok();
        if line == "kubectl get ns" {
            namespaces = Some(run);
        }
    }
    let namespaces = namespaces.expect("the transcript runs kubectl get ns");
    assert!(namespaces.stdout.contains("kube-system"), "{namespaces:?}");
}
