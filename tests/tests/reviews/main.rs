//! Access reviews answered by infra-proxy: `kubectl auth can-i` through the proxy agrees with
//! what the proxy then does with the same request, and the apiserver never sees a review.
//! `http.rs`: the reviews over plain HTTP (subject reviews, protobuf, malformed bodies, audit)
//! and a property test.

mod http;

use std::time::{Duration, SystemTime};

use infra_tests::control::ControlHarness;
use infra_tests::kubectl::Kubectl;
use infra_tests::proxy::{DESTINATION, Harness, https_send, wait_for};
use serde_json::{Value, json};

const POLICY: &str = "
grants:
  - user: suzie@example.com
    role: view
    resource: testing
  - group: Engineering
    role: edit
    resource: testing.web
  - user: carl@example.com
    role: cluster-admin
    resource: testing
";

const REVIEWS: &str = "/apis/authorization.k8s.io/v1";

/// What `kubectl auth can-i ARGS` answers: yes or no (and the reason after `no - `).
async fn can_i(kubectl: &Kubectl, args: &[&str]) -> (bool, String) {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let out = kubectl.run(&full).await;
    let answer = out.stdout.trim().to_owned();
    if answer == "yes" {
        assert!(out.status.success(), "{out:?}");
        (true, answer)
    } else {
        assert!(answer.starts_with("no"), "{args:?}: {out:?}");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        (false, answer)
    }
}

/// Whether the proxy lets `user` in `groups` make the request (it answers 403 otherwise; the
/// stand-in apiserver allows everything).
async fn proxy_allows(
    h: &Harness,
    user: &str,
    groups: &[&str],
    method: &str,
    path: &str,
    body: Option<Value>,
) -> bool {
    let token = h.token(user, groups, Duration::from_mins(5));
    let authorization = format!("Bearer {token}");
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, text) = https_send(
        h,
        method,
        path,
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    if status == 403 {
        assert!(text.contains("forbidden: User"), "{text}");
    }
    status != 403
}

/// The stand-in apiserver saw no access review.
fn assert_no_review_reached_the_apiserver(h: &Harness) {
    let reviews: Vec<String> = h
        .standin
        .recorded()
        .into_iter()
        .map(|r| r.path().to_owned())
        .filter(|p| p.contains("accessreviews") || p.contains("rulesreviews"))
        .collect();
    assert!(reviews.is_empty(), "reviews were forwarded: {reviews:?}");
}

/// A user, their groups, what they ask kubectl auth can-i, the same request (method, path,
/// body), and whether Infra allows it.
type Case<'a> = (
    &'a str,
    &'a [&'a str],
    &'a [&'a str],
    (&'a str, &'a str, Option<Value>),
    bool,
);

fn configmap(namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": namespace}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_agrees_with_the_proxy_for_namespace_and_cluster_grants() {
    let h = Harness::start(POLICY).await;
    // (user, groups, can-i arguments, the same request, whether Infra allows it)
    let cases: [Case<'_>; 8] = [
        (
            "suzie@example.com",
            &[],
            &["get", "pods", "-n", "web"],
            ("GET", "/api/v1/namespaces/web/pods", None),
            true,
        ),
        (
            "suzie@example.com",
            &[],
            &["create", "configmaps", "-n", "web"],
            (
                "POST",
                "/api/v1/namespaces/web/configmaps",
                Some(configmap("web")),
            ),
            false,
        ),
        (
            "dora@example.com",
            &["Engineering"],
            &["create", "configmaps", "-n", "web"],
            (
                "POST",
                "/api/v1/namespaces/web/configmaps",
                Some(configmap("web")),
            ),
            true,
        ),
        (
            "dora@example.com",
            &["Engineering"],
            &["create", "configmaps", "-n", "db"],
            (
                "POST",
                "/api/v1/namespaces/db/configmaps",
                Some(configmap("db")),
            ),
            false,
        ),
        // A namespace grant covers no cluster-scoped resource, whatever its role.
        (
            "dora@example.com",
            &["Engineering"],
            &["list", "nodes"],
            ("GET", "/api/v1/nodes", None),
            false,
        ),
        (
            "suzie@example.com",
            &[],
            &["list", "nodes"],
            ("GET", "/api/v1/nodes", None),
            false,
        ),
        (
            "carl@example.com",
            &[],
            &["list", "nodes"],
            ("GET", "/api/v1/nodes", None),
            true,
        ),
        (
            "carl@example.com",
            &[],
            &["delete", "secrets", "-n", "db"],
            ("DELETE", "/api/v1/namespaces/db/secrets", None),
            true,
        ),
    ];
    for (user, groups, args, (method, path, body), expected) in cases {
        let kubectl = h.kubectl_as(user, groups);
        let (said, answer) = can_i(&kubectl, args).await;
        let did = proxy_allows(&h, user, groups, method, path, body).await;
        assert_eq!(said, expected, "can-i {args:?} as {user}: {answer}");
        assert_eq!(did, expected, "{method} {path} as {user}");
        if !said {
            assert!(answer.contains("infra: no grant allows it"), "{answer}");
        }
    }
    // The reason says why: the namespace grant does not reach the cluster scope. (Without
    // `--all-namespaces`, kubectl asks about the cluster-scoped nodes in the namespace of its
    // context, as it does with the apiserver.)
    let (_, answer) = can_i(
        &h.kubectl_as("dora@example.com", &["Engineering"]),
        &["list", "nodes", "--all-namespaces"],
    )
    .await;
    assert!(
        answer.contains("the grant of edit to group \"Engineering\" on testing.web covers only the namespace \"web\", not requests at the cluster scope"),
        "{answer}"
    );
    assert_no_review_reached_the_apiserver(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_agrees_with_the_proxy_on_exec_and_non_resource_urls() {
    let h = Harness::start(POLICY).await;
    h.standin
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}))
        .expect("a namespace");
    h.standin
        .create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "site", "namespace": "web"},
            "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
        }))
        .expect("a pod");
    for (user, groups, expected) in [
        ("dora@example.com", &["Engineering"][..], true),
        ("suzie@example.com", &[][..], false),
    ] {
        let kubectl = h.kubectl_as(user, groups);
        let (said, answer) = can_i(&kubectl, &["create", "pods/exec", "-n", "web"]).await;
        assert_eq!(said, expected, "{user}: {answer}");
        let exec = kubectl
            .run(&["exec", "site", "-n", "web", "--", "echo", "hello"])
            .await;
        assert_eq!(exec.status.success(), expected, "{user}: {exec:?}");
        if !expected {
            assert!(exec.stderr.contains("forbidden"), "{exec:?}");
        }
    }
    // /healthz is every authenticated user's; /metrics only the cluster admin's.
    for (user, path, expected) in [
        ("suzie@example.com", "/healthz", true),
        ("suzie@example.com", "/metrics", false),
        ("carl@example.com", "/metrics", true),
    ] {
        let (said, answer) = can_i(&h.kubectl_as(user, &[]), &["get", path]).await;
        assert_eq!(said, expected, "{user} {path}: {answer}");
        assert_eq!(
            proxy_allows(&h, user, &[], "GET", path, None).await,
            expected,
            "{user} {path}"
        );
    }
    assert_no_review_reached_the_apiserver(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_list_shows_the_rules_of_the_namespace() {
    let h = Harness::start(POLICY).await;
    let dora = h.kubectl_as("dora@example.com", &["Engineering"]);
    let web = dora
        .run(&["auth", "can-i", "--list", "-n", "web"])
        .await
        .success();
    assert!(
        web.stdout
            .lines()
            .any(|l| l.starts_with("pods/exec ") && l.contains("create")),
        "{}",
        web.stdout
    );
    assert!(
        web.stdout
            .contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{}",
        web.stdout
    );
    assert!(web.stdout.contains("/healthz"), "{}", web.stdout);

    let db = dora
        .run(&["auth", "can-i", "--list", "-n", "db"])
        .await
        .success();
    assert!(!db.stdout.contains("pods/exec"), "{}", db.stdout);
    assert!(!db.stdout.contains("configmaps"), "{}", db.stdout);

    // The cluster admin may do everything everywhere.
    let carl = h
        .kubectl_as("carl@example.com", &[])
        .run(&["auth", "can-i", "--list", "-n", "db"])
        .await
        .success();
    assert!(
        carl.stdout
            .lines()
            .any(|l| l.starts_with("*.* ") && l.contains("[*]")),
        "{}",
        carl.stdout
    );
    assert_no_review_reached_the_apiserver(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_answers_from_a_custom_role_of_the_cluster() {
    let policy = "
grants:
  - user: dora@example.com
    role: configmap-reader
    resource: testing.web
";
    let h = Harness::start_with(policy, |args| {
        args.rbac_reconcile = infra_proxy::reconcile::ReconcileMode::On;
    })
    .await;
    let dora = h.kubectl_as("dora@example.com", &[]);
    let (said, answer) = can_i(&dora, &["list", "configmaps", "-n", "web"]).await;
    assert!(!said, "the role is not known yet: {answer}");
    assert!(
        answer.contains("which this proxy does not know"),
        "{answer}"
    );

    h.standin
        .create(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }))
        .expect("the ClusterRole");
    wait_for(|| async {
        can_i(&dora, &["list", "configmaps", "-n", "web"])
            .await
            .0
            .then_some(())
    })
    .await;
    let path = "/api/v1/namespaces/web/configmaps";
    assert!(proxy_allows(&h, "dora@example.com", &[], "GET", path, None).await);
    for (args, method, path, body) in [
        (
            &["create", "configmaps", "-n", "web"][..],
            "POST",
            path,
            Some(configmap("web")),
        ),
        (
            &["list", "secrets", "-n", "web"][..],
            "GET",
            "/api/v1/namespaces/web/secrets",
            None,
        ),
        (
            &["list", "configmaps", "-n", "db"][..],
            "GET",
            "/api/v1/namespaces/db/configmaps",
            None,
        ),
    ] {
        let (said, answer) = can_i(&dora, args).await;
        assert!(!said, "{args:?}: {answer}");
        assert!(
            !proxy_allows(&h, "dora@example.com", &[], method, path, body).await,
            "{method} {path}"
        );
    }
    assert_no_review_reached_the_apiserver(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_says_no_once_a_grant_expired() {
    let h = ControlHarness::start("grants: []\n").await;
    let admin = h.admin().await;
    let (status, body) = h
        .call(
            "POST",
            "/api/users",
            Some(&admin),
            Some(json!({"name": "dora@example.com", "password": "a-long-enough-passphrase"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let expires = jiff::Timestamp::try_from(SystemTime::now() + Duration::from_secs(12))
        .expect("a timestamp")
        .to_string();
    let (status, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": "dora@example.com", "role": "view", "resource": DESTINATION, "expires_at": expires})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let dora = h
        .login("dora@example.com", "a-long-enough-passphrase")
        .await;
    let kubectl = h.kubectl_with(&dora).await;
    wait_for(|| async {
        can_i(&kubectl, &["list", "pods", "-n", "default"])
            .await
            .0
            .then_some(())
    })
    .await;
    kubectl
        .run(&["get", "pods", "-n", "default"])
        .await
        .success();

    // After the expiry: no, with the instant, and the request is refused too.
    let (said, answer) = wait_for(|| async {
        let (said, answer) = can_i(&kubectl, &["list", "pods", "-n", "default"]).await;
        (!said).then_some((said, answer))
    })
    .await;
    assert!(!said);
    // The grant is either still known, and expired, or gone from the policy already.
    assert!(
        answer.contains("expired at") || answer.contains("have no grant on testing"),
        "{answer}"
    );
    let refused = kubectl
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(refused.stderr.contains("forbidden"), "{refused:?}");
    let reviews: Vec<String> = h
        .standin
        .recorded()
        .into_iter()
        .map(|r| r.path().to_owned())
        .filter(|p| p.contains("accessreviews"))
        .collect();
    assert!(reviews.is_empty(), "{reviews:?}");
}
