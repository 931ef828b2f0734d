//! helm install against the stand-in apiserver: the install notes, and Secrets found in the cluster
//! used again.

use infra_tests::apiserver::StandIn;
use infra_tests::kubectl::{Credentials, Kubectl};
use serde_json::Value;

use crate::{NAMESPACE, PROXY_ONLY, chart, find, helm, objects, text};

/// Runs `helm install infra <chart> --namespace infra <extra>` against the stand-in apiserver
/// (a kubeconfig with a client certificate of its CA); returns helm's standard output.
async fn install_against(standin: &StandIn, extra: &[&str]) -> String {
    let cert = standin.client_cert("helm-test", &["system:masters"]);
    let kubectl = Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::ClientCert(cert),
    );
    let chart = chart();
    let mut args: Vec<String> = [
        "install",
        "infra",
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kubectl.kubeconfig().to_str().expect("a UTF-8 path"),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let output = tokio::task::spawn_blocking(move || helm(&args))
        .await
        .expect("helm ran");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "helm install {extra:?} failed:\n{stdout}{}",
        text(&output.stderr)
    );
    stdout
}

/// `helm install --dry-run=client` (helm asks the stand-in for its version), to read the
/// install notes a user sees.
#[tokio::test]
async fn install_notes_tell_how_to_get_the_admin_password_and_log_in() {
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    let stdout = install_against(&standin, &["--dry-run=client"]).await;
    let notes = stdout
        .split_once("NOTES:")
        .expect("helm printed the notes")
        .1;
    for expected in [
        "kubectl --namespace infra get secret infra-admin-password",
        "{.data.password}",
        "base64 --decode",
        "kubectl --namespace infra port-forward service/infra 4443:4443",
        "infra login localhost:4443 --user admin",
        "infra grants add",
        "kept by `helm uninstall`",
    ] {
        assert!(
            notes.contains(expected),
            "the notes lack {expected:?}:\n{notes}"
        );
    }
}

/// In proxy-only mode the notes say how to make the access key: a user with role `connector`
/// on `infra`, with the CLI's real syntax.
#[tokio::test]
async fn proxy_only_install_notes_tell_how_to_make_the_connector_key() {
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    let mut extra = vec!["--dry-run=client", "--set", "destination=east"];
    for set in PROXY_ONLY {
        extra.extend(["--set", set]);
    }
    let stdout = install_against(&standin, &extra).await;
    let notes = stdout
        .split_once("NOTES:")
        .expect("helm printed the notes")
        .1;
    for expected in [
        "proxy only, syncing from https://infra.example.com:4443",
        "infra users add proxies@infra",
        "infra grants add proxies@infra infra --role connector",
        "infra keys add east --user proxies@infra",
        "kubectl --namespace infra create secret generic infra-access-key",
        "--from-literal=access-key=",
        "infra grants add -g Engineering east --role view",
        "/var/lib/infra/snapshot.json",
        "after 900 seconds",
        "sync.controlCA.existingSecret",
        "app.kubernetes.io/managed-by: infra",
    ] {
        assert!(
            notes.contains(expected),
            "the notes lack {expected:?}:\n{notes}"
        );
    }
    assert!(!notes.contains("admin-password"), "{notes}");
}

/// With `--dry-run=server` helm's `lookup` reads the cluster (here the stand-in), as on an
/// upgrade or a reinstall after `helm uninstall` kept the Secrets: the chart must use the root
/// key, password and certificate it finds instead of making new ones.
#[tokio::test]
async fn secrets_found_in_the_cluster_are_used_again_not_replaced() {
    use base64::Engine as _;
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        }))
        .expect("the stand-in makes the namespace");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let existing = [
        (
            "infra-root-key",
            "root-key",
            b64(&b64("k".repeat(32).as_str())),
        ),
        (
            "infra-admin-password",
            "password",
            b64("kept-password-1234"),
        ),
        ("infra-tls", "tls.crt", b64("kept certificate")),
    ];
    for (name, key, value) in &existing {
        let mut data = serde_json::Map::new();
        data.insert((*key).to_owned(), Value::String(value.clone()));
        if *name == "infra-tls" {
            data.insert("tls.key".to_owned(), Value::String(b64("kept key")));
            data.insert("ca.crt".to_owned(), Value::String(b64("kept ca")));
        }
        standin
            .create(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                // As a kept Secret carries them: helm adopts it on a reinstall.
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {
                        "meta.helm.sh/release-name": "infra",
                        "meta.helm.sh/release-namespace": NAMESPACE,
                    },
                },
                "data": data,
            }))
            .expect("the stand-in stores the Secret");
    }

    let stdout = install_against(&standin, &["--dry-run=server"]).await;
    let manifest = stdout
        .split_once("MANIFEST:")
        .and_then(|(_, rest)| rest.split_once("NOTES:"))
        .expect("helm printed the manifest and the notes")
        .0;
    let objects = objects(manifest);
    for (name, key, value) in &existing {
        let rendered = find(&objects, "Secret")
            .into_iter()
            .find(|s| s["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("no Secret {name} rendered"));
        assert_eq!(
            rendered["data"][key], *value,
            "{name}: the value in the cluster was replaced"
        );
    }
}
