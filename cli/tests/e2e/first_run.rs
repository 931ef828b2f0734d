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
