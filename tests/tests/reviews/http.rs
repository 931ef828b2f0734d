//! The reviews over HTTP: subject reviews need a grant, protobuf bodies, malformed bodies, the
//! audit trail; and a property test that a self review says what the proxy then does.

use std::time::Duration;

use infra_proxy::reviews::wire::{self, AccessReview, AccessReviewSpec, ResourceAttributes};
use infra_tests::proxy::{Harness, https_send, wait_for};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use super::{POLICY, REVIEWS, assert_no_review_reached_the_apiserver, proxy_allows};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_counts_among_the_users_requests_in_flight() {
    let h = std::sync::Arc::new(
        Harness::start_with(POLICY, |args| {
            args.limits.max_requests_in_flight_per_user = 1;
        })
        .await,
    );
    let path = format!("{REVIEWS}/selfsubjectaccessreviews");
    let review = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
    let (status, answer) = post(
        &h,
        "suzie@example.com",
        &path,
        "application/json",
        review.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");

    // A request of suzie's stalls at the apiserver: her one place is taken.
    h.standin
        .stall("/api/v1/namespaces/web/configmaps", Duration::from_secs(30));
    let stalled = {
        let h = std::sync::Arc::clone(&h);
        tokio::spawn(async move {
            proxy_allows(
                &h,
                "suzie@example.com",
                &[],
                "GET",
                "/api/v1/namespaces/web/configmaps",
                None,
            )
            .await
        })
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        h.standin.wait_for_stalled(|n| n == 1),
    )
    .await
    .expect("the request stalls at the apiserver");
    let (status, refused) = post(
        &h,
        "suzie@example.com",
        &path,
        "application/json",
        review.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["reason"], "TooManyRequests");
    // Another user is answered.
    let (status, answer) = post(
        &h,
        "carl@example.com",
        &path,
        "application/json",
        review.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    stalled.abort();
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
