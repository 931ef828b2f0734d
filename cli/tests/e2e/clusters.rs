//! Several clusters, one login, a kubeconfig context each.

use infra_tests::control::ControlHarness;
use infra_tests::proxy::{DESTINATION, wait_for};

use crate::{POLICY, Person, SUZIE, SUZIE_PASSWORD, admin_with_suzie};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clusters_one_login_a_context_each() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    // A second cluster, `east`, whose proxy follows this control plane with a connector's key.
    admin
        .infra_with(
            &["users", "add", "proxies@infra", "--password-stdin"],
            &[],
            &format!("{SUZIE_PASSWORD}\n"),
        )
        .await
        .ok();
    admin
        .infra(&[
            "grants",
            "add",
            "proxies@infra",
            "infra",
            "--role",
            "connector",
        ])
        .await
        .ok();
    let key = admin
        .infra(&["keys", "add", "east", "--user", "proxies@infra"])
        .await
        .ok();
    let key = key.stdout.trim().to_owned();
    let east = infra_tests::control::RemoteProxy::start(&h, "east", &key, 900, None).await;
    wait_for(|| async {
        let list = admin.infra(&["destinations", "list", "-o", "json"]).await;
        list.stdout.contains("\"east\"").then_some(())
    })
    .await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    admin
        .infra(&["grants", "add", SUZIE, "east.default", "--role", "edit"])
        .await
        .ok();

    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    let list = suzie.infra(&["list"]).await.ok();
    assert!(
        list.stdout.contains(DESTINATION) && list.stdout.contains("east"),
        "{}",
        list.stdout
    );
    let contexts: Vec<String> = suzie.kubeconfig_json()["contexts"]
        .as_array()
        .expect("contexts")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        contexts.contains(&format!("infra:{DESTINATION}")),
        "{contexts:?}"
    );
    assert!(contexts.contains(&"infra:east".to_owned()), "{contexts:?}");

    // Each context reaches its own cluster with a token for it.
    suzie.infra(&["use", "east.default"]).await.ok();
    suzie.kubectl(&["get", "pods"]).await.ok();
    assert!(
        east.standin
            .recorded()
            .iter()
            .any(|r| r.path() == "/api/v1/namespaces/default/pods"),
        "the request reached east's apiserver"
    );
    suzie.infra(&["use", DESTINATION]).await.ok();
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();
    // Her view grant on testing does not let her into east's other namespaces.
    suzie.infra(&["use", "east"]).await.ok();
    let denied = suzie.kubectl(&["get", "pods", "-n", "kube-system"]).await;
    assert_ne!(denied.code, 0, "{}", denied.stderr);
    assert!(denied.stderr.contains("forbidden"), "{}", denied.stderr);
}
