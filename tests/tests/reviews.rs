//! Access reviews answered by infra-proxy: `kubectl auth can-i` through the proxy agrees with
//! what the proxy then does with the same request, and the apiserver never sees a review.

use std::time::{Duration, SystemTime};

use infra_proxy::reviews::wire::{self, AccessReview, AccessReviewSpec, ResourceAttributes};
use infra_tests::control::ControlHarness;
use infra_tests::kubectl::Kubectl;
use infra_tests::proxy::{DESTINATION, Harness, https_send, wait_for};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
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
    let h = Harness::start_with(policy, |args| args.rbac_reconcile = true).await;
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

fn sar(user: &str, verb: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "resourceAttributes": {"verb": verb, "resource": "pods", "namespace": namespace},
            "user": user,
        },
    })
}

async fn post(
    h: &Harness,
    user: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let token = h.token(user, &[], Duration::from_mins(5));
    let authorization = format!("Bearer {token}");
    let (status, text) = https_send(
        h,
        "POST",
        path,
        &[
            ("authorization", &authorization),
            ("content-type", content_type),
        ],
        body,
    )
    .await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_reviews_need_a_grant_and_are_answered_by_the_proxy() {
    let h = Harness::start(POLICY).await;
    let path = format!("{REVIEWS}/subjectaccessreviews");
    let body = |user: &str, verb: &str| sar(user, verb, "db").to_string().into_bytes();

    // suzie may view, not create subject reviews: the pipeline's usual 403.
    let (status, refused) = post(
        &h,
        "suzie@example.com",
        &path,
        "application/json",
        body("carl@example.com", "get"),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["kind"], "Status");
    assert_eq!(refused["reason"], "Forbidden");
    assert_eq!(refused["details"]["kind"], "subjectaccessreviews");

    // The cluster admin may, and hears Infra's answer for the subject.
    let (status, answer) = post(
        &h,
        "carl@example.com",
        &path,
        "application/json",
        body("suzie@example.com", "get"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["kind"], "SubjectAccessReview");
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert!(
        answer["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with(
                "infra: allowed by the grant of view to user \"suzie@example.com\" on testing"
            )),
        "{answer}"
    );
    let (status, answer) = post(
        &h,
        "carl@example.com",
        &path,
        "application/json",
        body("suzie@example.com", "delete"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"]["allowed"], false, "{answer}");

    // A local review: in the namespace of its path.
    let local = json!({
        "kind": "LocalSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}, "user": "dora@example.com", "groups": ["Engineering"]},
    });
    let (status, answer) = post(
        &h,
        "carl@example.com",
        &format!("{REVIEWS}/namespaces/web/localsubjectaccessreviews"),
        "application/json",
        local.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    let (status, answer) = post(
        &h,
        "carl@example.com",
        &format!("{REVIEWS}/namespaces/db/localsubjectaccessreviews"),
        "application/json",
        local.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"]["allowed"], false, "{answer}");
    let (status, refused) = post(
        &h,
        "suzie@example.com",
        &format!("{REVIEWS}/namespaces/web/localsubjectaccessreviews"),
        "application/json",
        local.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 403, "{refused}");

    // A self review in protobuf, as kubectl's typed client sends it.
    let spec = AccessReviewSpec {
        resource_attributes: Some(ResourceAttributes {
            namespace: "web".into(),
            verb: "list".into(),
            resource: "pods".into(),
            ..ResourceAttributes::default()
        }),
        ..AccessReviewSpec::default()
    };
    let protobuf = wire::to_protobuf(
        "SelfSubjectAccessReview",
        &AccessReview { spec: Some(spec) },
    );
    let (status, answer) = post(
        &h,
        "suzie@example.com",
        &format!("{REVIEWS}/selfsubjectaccessreviews"),
        "application/vnd.kubernetes.protobuf",
        protobuf,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["spec"]["resourceAttributes"]["resource"], "pods");
    assert_eq!(answer["status"]["allowed"], true, "{answer}");

    // Malformed bodies: 400, a Status as the apiserver sends it.
    for (content_type, body) in [
        ("application/json", b"{\"spec\": [".to_vec()),
        (
            "application/vnd.kubernetes.protobuf",
            b"k8s\0\x12\x05\x12".to_vec(),
        ),
    ] {
        let (status, refused) = post(
            &h,
            "suzie@example.com",
            &format!("{REVIEWS}/selfsubjectaccessreviews"),
            content_type,
            body,
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["kind"], "Status");
        assert_eq!(refused["reason"], "BadRequest");
    }
    // Over the 64 KiB a review may have: 413.
    let big = json!({"kind": "SelfSubjectAccessReview", "spec": {"nonResourceAttributes": {"path": "x".repeat(70_000), "verb": "get"}}});
    let (status, refused) = post(
        &h,
        "suzie@example.com",
        &format!("{REVIEWS}/selfsubjectaccessreviews"),
        "application/json",
        big.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{refused}");

    assert_no_review_reached_the_apiserver(&h);
    // Each review has its audit line: allowed, not forwarded (no impersonated user).
    let lines = wait_for(|| async {
        let lines: Vec<Value> = h
            .audit_lines()
            .into_iter()
            .filter(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("accessreviews"))
            })
            .collect();
        (lines.len() >= 10).then_some(lines)
    })
    .await;
    let answered: Vec<&Value> = lines.iter().filter(|l| l["code"] == 201).collect();
    assert_eq!(answered.len(), 5, "{lines:?}");
    for line in answered {
        assert_eq!(line["decision"], "allow", "{line}");
        assert!(
            line.get("impersonated_user").is_none_or(Value::is_null),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["code"] == 403 && l["decision"] == "deny"),
        "{lines:?}"
    );
}

// Random requests by random identities, against grants of every shape: what a self review
// answers over HTTP is what the proxy then does with the request. (Grant expiry and random
// grants are covered at the module level, in infra-proxy's reviews tests.)

const WORLD: &str = "
grants:
  - user: u0
    role: view
    resource: testing
  - user: u1
    role: edit
    resource: testing.ns1
  - group: g0
    role: admin
    resource: testing.ns2
  - group: g1
    role: cluster-admin
    resource: testing.ns1
  - group: g2
    role: edit
    resource: testing
  - user: u2
    role: no-such-role
    resource: testing
";

#[derive(Debug, Clone)]
struct Ask {
    user: String,
    groups: Vec<String>,
    method: &'static str,
    path: String,
    review: Value,
}

fn any_ask() -> impl Strategy<Value = Ask> {
    let identity = (0..4u8, proptest::collection::vec(0..4u8, 0..3));
    let resource = prop_oneof![
        Just(("", "pods", true)),
        Just(("", "configmaps", true)),
        Just(("", "nodes", false)),
        Just(("apps", "deployments", true)),
    ];
    let action = prop_oneof![
        Just(("GET", "get", true)),
        Just(("GET", "list", false)),
        Just(("POST", "create", false)),
        Just(("DELETE", "delete", true)),
    ];
    let namespace = proptest::option::of(prop_oneof![Just("ns1"), Just("ns2"), Just("ns3")]);
    let exec = any::<bool>();
    let url = prop_oneof![Just("/healthz"), Just("/metrics"), Just("/version")];
    (
        identity,
        resource,
        action,
        namespace,
        exec,
        proptest::option::of(url),
    )
        .prop_map(
            |(
                (u, gs),
                (group, resource, namespaced),
                (method, verb, named),
                namespace,
                exec,
                url,
            )| {
                let user = format!("u{u}");
                let groups = gs.into_iter().map(|g| format!("g{g}")).collect();
                if let Some(url) = url.filter(|_| method == "GET") {
                    return Ask {
                        user,
                        groups,
                        method,
                        path: url.to_owned(),
                        review: json!({"nonResourceAttributes": {"path": url, "verb": "get"}}),
                    };
                }
                let namespace = namespace.filter(|_| namespaced);
                let exec = exec && resource == "pods" && namespace.is_some();
                let name = (named || exec).then_some("obj");
                let mut path = vec![if group.is_empty() {
                    "/api/v1".to_owned()
                } else {
                    format!("/apis/{group}/v1")
                }];
                path.extend(namespace.map(|ns| format!("namespaces/{ns}")));
                path.push(resource.to_owned());
                path.extend(name.map(str::to_owned));
                if exec {
                    path.push("exec".to_owned());
                }
                let verb = if exec && verb != "create" {
                    "get"
                } else {
                    verb
                };
                let method = if exec && method != "POST" {
                    "GET"
                } else {
                    method
                };
                let mut attributes =
                    json!({"verb": verb, "group": group, "version": "v1", "resource": resource});
                if let Some(ns) = namespace {
                    attributes["namespace"] = json!(ns);
                }
                if let Some(name) = name {
                    attributes["name"] = json!(name);
                }
                if exec {
                    attributes["subresource"] = json!("exec");
                }
                Ask {
                    user,
                    groups,
                    method,
                    path: path.join("/"),
                    review: json!({"resourceAttributes": attributes}),
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_review_over_http_says_what_the_proxy_then_does() {
    let h = Harness::start(WORLD).await;
    let mut runner = TestRunner::new(Config::with_cases(64));
    let strategy = any_ask();
    let mut allowed = 0;
    for _ in 0..64 {
        let ask = strategy.new_tree(&mut runner).expect("a case").current();
        let groups: Vec<&str> = ask.groups.iter().map(String::as_str).collect();
        let token = h.token(&ask.user, &groups, Duration::from_mins(5));
        let authorization = format!("Bearer {token}");
        let review = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": ask.review});
        let (status, text) = https_send(
            &h,
            "POST",
            &format!("{REVIEWS}/selfsubjectaccessreviews"),
            &[
                ("authorization", &authorization),
                ("content-type", "application/json"),
            ],
            review.to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 201, "{text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        let says = answer["status"]["allowed"].as_bool().expect("allowed");
        let body = (ask.method == "POST")
            .then(|| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}));
        let does = proxy_allows(&h, &ask.user, &groups, ask.method, &ask.path, body).await;
        assert_eq!(says, does, "{ask:?}: {answer}");
        allowed += usize::from(does);
    }
    // The world is small enough that both answers come up.
    assert!(allowed > 0 && allowed < 64, "{allowed} of 64 allowed");
    assert_no_review_reached_the_apiserver(&h);
}
