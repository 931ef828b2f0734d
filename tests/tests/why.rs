//! `GET /api/why` (and `infra why`): the decision of the destination's proxy for one request of
//! one user, with the grant and role rule that made it, or why none of the user's grants did.

use infra_tests::control::ControlHarness;
use infra_tests::proxy::{DESTINATION, http_get, wait_for};
use serde_json::{Value, json};

const POLICY: &str = "grants:\n  - user: suzie\n    role: edit\n    resource: testing.web\n  - group: eng\n    role: pod-deleter\n    resource: testing\n";

async fn why(h: &ControlHarness, key: &str, query: &str) -> (u16, Value) {
    h.call("GET", &format!("/api/why?{query}"), Some(key), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_grant_and_rule_or_why_each_grant_did_not_allow() {
    let h = ControlHarness::start(POLICY).await;
    // A role only the cluster has: the proxy in the control plane's process knows it once listed.
    h.standin
        .create(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "pod-deleter"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}],
        }))
        .expect("a ClusterRole");
    let readyz = format!("http://{}/readyz", h.proxy.admin_address);
    wait_for(|| async {
        http_get(&readyz)
            .await
            .contains("[+] roles ok")
            .then_some(())
    })
    .await;
    let admin = h.admin().await;
    for (method, path, body) in [
        (
            "POST",
            "/api/users",
            Some(json!({"name": "suzie", "password": "a-long-enough-passphrase"})),
        ),
        ("POST", "/api/groups", Some(json!({"name": "eng"}))),
        ("PUT", "/api/groups/eng/members/suzie", None),
    ] {
        let (status, answer) = h.call(method, path, Some(&admin), body).await;
        assert!(status < 300, "{method} {path}: {status} {answer}");
    }

    let (status, answer) = why(
        &h,
        &admin,
        "user=suzie&verb=patch&resource=deployments.apps&name=api&namespace=web",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["destination"], DESTINATION);
    assert_eq!(answer["groups"], json!(["eng"]));
    assert_eq!(
        answer["request"],
        r#"patch deployments.apps "api" in the namespace "web""#
    );
    assert_eq!(answer["allowed_by"]["user"], "suzie");
    assert_eq!(answer["allowed_by"]["role"], "edit");
    assert_eq!(answer["allowed_by"]["resource"], "testing.web");
    let rule = &answer["rule"];
    assert!(
        rule["verbs"]
            .as_array()
            .expect("verbs")
            .contains(&json!("patch")),
        "{rule}"
    );
    assert!(
        rule["resources"]
            .as_array()
            .expect("resources")
            .contains(&json!("deployments")),
        "{rule}"
    );

    // The cluster's own role decides through the group grant, anywhere.
    let (_, answer) = why(
        &h,
        &admin,
        "user=suzie&verb=delete&resource=pods&namespace=db",
    )
    .await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["allowed_by"]["group"], "eng", "{answer}");
    assert_eq!(answer["allowed_by"]["role"], "pod-deleter", "{answer}");
    assert_eq!(answer["rule"]["index"], 0);

    // Nothing allows patching in db: each grant says why.
    let (_, answer) = why(
        &h,
        &admin,
        "user=suzie&verb=patch&resource=deployments.apps&namespace=db",
    )
    .await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let whys: Vec<&str> = answer["not_allowed"]
        .as_array()
        .expect("not_allowed")
        .iter()
        .filter_map(|n| n["why"].as_str())
        .collect();
    assert!(
        whys.iter()
            .any(|w| w.contains("edit") && w.contains(r#"covers only the namespace "web""#)),
        "{answer}"
    );
    assert!(
        whys.iter()
            .any(|w| w.contains("pod-deleter") && w.contains("no rule")),
        "{answer}"
    );

    // Bad questions.
    assert_eq!(
        why(&h, &admin, "user=nobody&verb=get&resource=pods")
            .await
            .0,
        404
    );
    assert_eq!(why(&h, &admin, "user=suzie&resource=pods").await.0, 400);
    assert_eq!(
        why(
            &h,
            &admin,
            "user=suzie&verb=get&resource=/healthz&namespace=web"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        why(
            &h,
            &admin,
            "user=suzie&verb=get&resource=pods&destination=elsewhere"
        )
        .await
        .0,
        404
    );
    // Only those who may view Infra's policy may ask.
    let suzie = h.login("suzie", "a-long-enough-passphrase").await;
    assert_eq!(
        why(&h, &suzie, "user=suzie&verb=get&resource=pods").await.0,
        403
    );
}
