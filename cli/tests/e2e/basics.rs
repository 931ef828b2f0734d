//! Password and access-key logins, kubectl and grants, an expiring grant, an unknown certificate,
//! exit codes.

use std::path::Path;

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness};
use infra_tests::proxy::{DESTINATION, wait_for};
use serde_json::{Value, json};

use crate::{POLICY, Person, SUZIE, SUZIE_PASSWORD, admin_with_suzie, infra_binary, which};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_list_use_kubectl_grants_and_logout() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    let grants = admin.infra(&["grants", "list", "-o", "json"]).await.ok();
    let grants: Value = serde_json::from_str(&grants.stdout).expect("grants JSON");
    assert!(
        grants
            .as_array()
            .expect("array")
            .iter()
            .any(|g| g["user"] == SUZIE && g["role"] == "view" && g["resource"] == DESTINATION),
        "{grants}"
    );
    let table = admin.infra(&["grants", "list"]).await.ok();
    assert!(table.stdout.starts_with("USER ("), "{}", table.stdout);

    // Suzie logs in; her kubeconfig gets the destination, with the CLI as credential plugin.
    let suzie = Person::new();
    let login = suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    assert!(
        login.stderr.contains(&format!("Logged in as {SUZIE}")),
        "{}",
        login.stderr
    );
    let kc = suzie.kubeconfig_json();
    let name = format!("infra:{DESTINATION}");
    let user = kc["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == name.as_str())
        .expect("an infra user entry");
    assert_eq!(
        user["user"]["exec"]["args"],
        json!(["tokens", "--destination", DESTINATION])
    );
    assert!(
        !std::fs::read_to_string(suzie.kubeconfig())
            .expect("kubeconfig")
            .contains("token:"),
        "no secret in the kubeconfig"
    );

    let list = suzie.infra(&["list"]).await.ok();
    assert!(
        list.stdout.contains(DESTINATION) && list.stdout.contains("view"),
        "{}",
        list.stdout
    );

    let used = suzie.infra(&["use", DESTINATION]).await.ok();
    assert!(used.stderr.contains("Switched context"), "{}", used.stderr);
    assert_eq!(suzie.kubeconfig_json()["current-context"], name.as_str());

    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();

    // A cached token: two plugin calls (by two processes, as two kubectl runs are) print the
    // same token. The shell keeps itself between the test and the plugin: `; exit $?` stops it
    // from exec'ing the plugin in its place.
    let binary = infra_binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    let plugin_call = [
        "-c",
        "\"$0\" tokens --destination \"$1\"; exit $?",
        binary,
        DESTINATION,
    ];
    let first = suzie
        .run_program(Path::new("/bin/sh"), &plugin_call, &[], "")
        .await
        .ok();
    let second = suzie
        .run_program(Path::new("/bin/sh"), &plugin_call, &[], "")
        .await
        .ok();
    let credential: Value = serde_json::from_str(&first.stdout).expect("ExecCredential");
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert!(credential["status"]["expirationTimestamp"].is_string());
    assert_eq!(
        first.stdout, second.stdout,
        "the second call is served from the cache"
    );

    // The grant goes: kubectl is denied.
    admin
        .infra(&["grants", "remove", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    wait_for(|| async {
        let out = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
        (out.code != 0).then_some(())
    })
    .await;

    // Logging out removes Infra's entries; a copy of the old kubeconfig gets the re-login message.
    let stale = suzie.dir.path().join("stale-kubeconfig");
    std::fs::copy(suzie.kubeconfig(), &stale).expect("copy");
    suzie.infra(&["logout"]).await.ok();
    let kc = suzie.kubeconfig_json();
    assert!(
        !serde_json::to_string(&kc).expect("json").contains("infra:"),
        "logout removes Infra's entries: {kc}"
    );
    let out = suzie
        .run_program(
            &which(Path::new(&infra_tests::kubectl::program())),
            &[
                "--kubeconfig",
                stale.to_str().expect("utf-8"),
                "--context",
                &name,
                "get",
                "pods",
            ],
            &[],
            "",
        )
        .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("infra login"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_an_access_key_and_whoami() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    let key = admin
        .infra(&["keys", "add", "ci", "--user", SUZIE])
        .await
        .ok();
    let key = key.stdout.trim().to_owned();
    assert!(key.contains('.'), "an id.secret key: {key}");

    let ci = Person::new();
    let ca = ci.dir.path().join("ca.pem");
    std::fs::write(&ca, h.ca.cert_pem()).expect("write CA");
    ci.infra_with(
        &[
            "login",
            &h.control_url(),
            "--tls-trusted-cert",
            ca.to_str().expect("utf-8"),
            "--non-interactive",
        ],
        &[("INFRA_ACCESS_KEY", &key)],
        "",
    )
    .await
    .ok();
    let me = ci.infra(&["whoami", "-o", "json"]).await.ok();
    let me: Value = serde_json::from_str(&me.stdout).expect("whoami JSON");
    assert_eq!(me["name"], SUZIE);

    let keys = admin
        .infra(&["keys", "list", "--user", SUZIE, "-o", "json"])
        .await
        .ok();
    assert!(keys.stdout.contains("\"ci\""), "{}", keys.stdout);
    admin
        .infra(&["keys", "remove", "ci", "--user", SUZIE])
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_certificate_is_refused_without_a_prompt() {
    let h = ControlHarness::start(POLICY).await;
    let someone = Person::new();
    let out = someone
        .infra_with(
            &[
                "login",
                &h.control_url(),
                "--user",
                "admin",
                "--non-interactive",
            ],
            &[("INFRA_PASSWORD", ADMIN_PASSWORD)],
            "",
        )
        .await;
    assert_eq!(
        out.code, 2,
        "a prompt that may not be shown is a usage error: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SHA-256:"),
        "the certificate is shown: {}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("--tls-trusted-fingerprint"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_failures_exit_1() {
    let someone = Person::new();
    let out = someone.infra(&["grants", "add", "--role", "view"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = someone.infra(&["list"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: not logged in"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: run `infra login SERVER`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_grant_lapses() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&[
            "grants",
            "add",
            SUZIE,
            DESTINATION,
            "--role",
            "view",
            "--for",
            "8s",
        ])
        .await
        .ok();
    let listed = admin.infra(&["grants", "list"]).await.ok();
    assert!(listed.stdout.contains("EXPIRES"), "{}", listed.stdout);

    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    suzie.infra(&["use", DESTINATION]).await.ok();
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();
    wait_for(|| async {
        let out = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
        (out.code != 0).then_some(())
    })
    .await;
}
