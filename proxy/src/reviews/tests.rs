//! The reviews module against a policy: decoding (JSON and protobuf, malformed input), the
//! answers; `property.rs`: agreement with the decision of the real request.

mod property;

use std::time::{Duration, SystemTime};

use infra_authz::attributes;
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::RoleSet;
use serde_json::json;

use super::wire::{
    self, AccessReview, AccessReviewSpec, NonResourceAttributes, ResourceAttributes,
};
use super::*;

const DEST: &str = "production";
const JSON: Option<&str> = Some("application/json");
const PROTOBUF: Option<&str> = Some("application/vnd.kubernetes.protobuf");

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn grant(subject: Subject, role: &str, resource: Resource) -> Grant {
    Grant {
        subject,
        role: role.to_owned(),
        resource,
        expires_at: None,
    }
}

fn suzie() -> Identity {
    Identity::new("suzie", ["eng"])
}

/// The built-in roles; `exec-getter`: `get` on `pods/exec` and `pods/attach`, which opens
/// nothing (opening a shell needs `create` too); `obj-watcher`: list and watch the objects named
/// `obj`.
fn roles() -> RoleSet {
    let mut roles = RoleSet::builtin();
    roles.insert(infra_authz::rbac::ClusterRole {
        name: "exec-getter".into(),
        rules: vec![infra_authz::rbac::PolicyRule {
            verbs: vec!["get".into()],
            api_groups: vec![String::new()],
            resources: vec!["pods/exec".into(), "pods/attach".into()],
            ..infra_authz::rbac::PolicyRule::default()
        }],
    });
    roles.insert(infra_authz::rbac::ClusterRole {
        name: "obj-watcher".into(),
        rules: vec![infra_authz::rbac::PolicyRule {
            verbs: vec!["list".into(), "watch".into()],
            api_groups: vec![String::new(), "apps".into()],
            resources: vec!["pods".into(), "deployments".into()],
            resource_names: vec!["obj".into()],
            ..infra_authz::rbac::PolicyRule::default()
        }],
    });
    roles
}

/// suzie may view the cluster; group eng may edit `web`; carl administers it all; dora may get
/// `pods/exec` in `web`.
fn policy() -> PolicyHandle {
    PolicyHandle::new(
        DEST,
        &[
            grant(
                Subject::User("suzie".into()),
                "view",
                Resource::destination(DEST),
            ),
            grant(
                Subject::Group("eng".into()),
                "edit",
                Resource::namespace(DEST, "web"),
            ),
            grant(
                Subject::User("carl".into()),
                "cluster-admin",
                Resource::destination(DEST),
            ),
            grant(
                Subject::User("dora".into()),
                "exec-getter",
                Resource::namespace(DEST, "web"),
            ),
        ],
        roles(),
    )
}

fn resource(verb: &str, resource: &str, subresource: &str, namespace: &str) -> AccessReviewSpec {
    AccessReviewSpec {
        resource_attributes: Some(ResourceAttributes {
            namespace: namespace.into(),
            verb: verb.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            version: "v1".into(),
            ..ResourceAttributes::default()
        }),
        ..AccessReviewSpec::default()
    }
}

fn ssar_json(spec: &AccessReviewSpec) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
    }))
    .expect("JSON")
}

fn ssar_protobuf(spec: &AccessReviewSpec) -> Vec<u8> {
    wire::to_protobuf(
        "SelfSubjectAccessReview",
        &AccessReview {
            spec: Some(spec.clone()),
        },
    )
}

/// The status of a self review of `spec` by `who`, asked in JSON and in protobuf (which must
/// agree).
fn ask(policy: &PolicyHandle, who: &Identity, spec: &AccessReviewSpec) -> Value {
    let kind = Kind::SelfSubjectAccessReview;
    let by_json = review(policy, who, &kind, JSON, &ssar_json(spec), at(0)).expect("a JSON answer");
    let by_protobuf = review(policy, who, &kind, PROTOBUF, &ssar_protobuf(spec), at(0))
        .expect("a protobuf answer");
    assert_eq!(by_json, by_protobuf);
    assert_eq!(by_json["kind"], "SelfSubjectAccessReview");
    assert_eq!(by_json["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(by_json["metadata"], json!({"creationTimestamp": null}));
    assert_eq!(by_json["spec"], json!(spec));
    by_json["status"].clone()
}

#[test]
fn the_reviews_are_told_from_other_requests() {
    let of = |method: &str, path: &str| {
        Kind::of(&attributes::parse(method, path, None).expect("attributes"))
    };
    let base = "/apis/authorization.k8s.io/v1";
    assert_eq!(
        of("POST", &format!("{base}/selfsubjectaccessreviews")),
        Some(Kind::SelfSubjectAccessReview)
    );
    assert_eq!(
        of("POST", &format!("{base}/selfsubjectrulesreviews")),
        Some(Kind::SelfSubjectRulesReview)
    );
    assert_eq!(
        of("POST", &format!("{base}/subjectaccessreviews")),
        Some(Kind::SubjectAccessReview)
    );
    assert_eq!(
        of(
            "POST",
            &format!("{base}/namespaces/web/localsubjectaccessreviews")
        ),
        Some(Kind::LocalSubjectAccessReview {
            namespace: "web".into()
        })
    );
    for (method, path) in [
        ("GET", format!("{base}/selfsubjectaccessreviews")),
        ("POST", format!("{base}/selfsubjectaccessreviews/x")),
        (
            "POST",
            format!("{base}/namespaces/web/selfsubjectaccessreviews"),
        ),
        ("POST", format!("{base}/localsubjectaccessreviews")),
        (
            "POST",
            "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews".to_owned(),
        ),
        (
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews".to_owned(),
        ),
        ("POST", "/api/v1/namespaces/web/pods".to_owned()),
    ] {
        assert_eq!(of(method, &path), None, "{method} {path}");
    }
}

#[test]
fn a_self_review_answers_from_the_grants_and_names_the_grant() {
    let policy = policy();
    let status = ask(&policy, &suzie(), &resource("create", "pods", "", "web"));
    assert_eq!(status["allowed"], true);
    assert_eq!(
        status["reason"]
            .as_str()
            .expect("a reason")
            .split(" (rule")
            .next(),
        Some("infra: allowed by the grant of edit to group \"eng\" on production.web")
    );
    assert!(status.get("denied").is_none());

    let status = ask(&policy, &suzie(), &resource("create", "pods", "", "db"));
    assert_eq!(status["allowed"], false);
    let reason = status["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("infra: no grant allows it: "),
        "{reason}"
    );
    assert!(
        reason.contains("covers only the namespace \"web\", not \"db\""),
        "{reason}"
    );
    assert!(
        reason.contains("the grant of view to user \"suzie\" on production has no rule"),
        "{reason}"
    );

    // Somebody without grants hears why too.
    let status = ask(
        &policy,
        &Identity::new("erin", ["other"]),
        &resource("get", "pods", "", "web"),
    );
    assert_eq!(status["allowed"], false);
    assert!(
        status["reason"]
            .as_str()
            .expect("reason")
            .contains("have no grant on production")
    );
}

#[test]
fn verbs_and_resources_are_taken_literally_and_exec_asks_about_its_verb() {
    let policy = policy();
    let carl = Identity::new("carl", Vec::<String>::new());
    // `*` is a verb like any other for RBAC: only a rule with `*` allows it.
    assert_eq!(
        ask(&policy, &suzie(), &resource("*", "pods", "", "web"))["allowed"],
        false
    );
    assert_eq!(
        ask(&policy, &carl, &resource("*", "*", "", ""))["allowed"],
        true
    );
    // `create pods/exec` (a SPDY exec, and the second check of a WebSocket one): edit may, a
    // user without the group's grant may not.
    assert_eq!(
        ask(
            &policy,
            &suzie(),
            &resource("create", "pods", "exec", "web")
        )["allowed"],
        true
    );
    assert_eq!(
        ask(
            &policy,
            &Identity::new("suzie", Vec::<String>::new()),
            &resource("create", "pods", "exec", "web")
        )["allowed"],
        false
    );
    // `get pods/exec` is asked about `get`, as the apiserver answers it: a role that allows
    // only that says yes to `get` and no to `create`, which opening a shell needs.
    let dora = Identity::new("dora", Vec::<String>::new());
    assert_eq!(
        ask(&policy, &dora, &resource("get", "pods", "exec", "web"))["allowed"],
        true
    );
    assert_eq!(
        ask(&policy, &dora, &resource("create", "pods", "exec", "web"))["allowed"],
        false
    );
    // Non-resource URLs: every authenticated user may get /healthz, only carl /metrics.
    let url = |path: &str| AccessReviewSpec {
        non_resource_attributes: Some(NonResourceAttributes {
            path: path.into(),
            verb: "get".into(),
        }),
        ..AccessReviewSpec::default()
    };
    assert_eq!(ask(&policy, &suzie(), &url("/healthz"))["allowed"], true);
    assert_eq!(ask(&policy, &suzie(), &url("/metrics"))["allowed"], false);
    assert_eq!(ask(&policy, &carl, &url("/metrics"))["allowed"], true);
}

#[test]
fn a_field_selector_on_the_name_names_the_object_as_for_the_real_list() {
    let policy = PolicyHandle::new(
        DEST,
        &[grant(
            Subject::User("dora".into()),
            "obj-watcher",
            Resource::namespace(DEST, "web"),
        )],
        roles(),
    );
    let dora = Identity::new("dora", Vec::<String>::new());
    let body = |verb: &str, selector: &str| {
        json!({"spec": {"resourceAttributes": {
            "namespace": "web", "verb": verb, "resource": "pods",
            "fieldSelector": {"rawSelector": selector, "requirements": [{"key": "metadata.name", "operator": "In", "values": ["x"]}]},
            "labelSelector": {"rawSelector": "app=web"},
        }}})
        .to_string()
    };
    let ask = |verb: &str, selector: &str| {
        review(
            &policy,
            &dora,
            &Kind::SelfSubjectAccessReview,
            JSON,
            body(verb, selector).as_bytes(),
            at(0),
        )
        .expect("an answer")
    };
    for verb in ["list", "watch"] {
        let answer = ask(verb, "metadata.name=obj");
        assert_eq!(answer["status"]["allowed"], true, "{answer}");
        assert_eq!(
            answer["spec"]["resourceAttributes"]["fieldSelector"]["rawSelector"],
            "metadata.name=obj"
        );
        assert_eq!(
            answer["spec"]["resourceAttributes"]["fieldSelector"]["requirements"][0]["values"],
            json!(["x"])
        );
        assert_eq!(
            answer["spec"]["resourceAttributes"]["labelSelector"]["rawSelector"],
            "app=web"
        );
        for other in [
            "metadata.name=other",
            "metadata.namespace=web",
            "",
            "metadata.name",
        ] {
            assert_eq!(
                ask(verb, other)["status"]["allowed"],
                false,
                "{verb} {other}"
            );
        }
        let real = attributes::parse(
            "GET",
            "/api/v1/namespaces/web/pods",
            Some(&format!(
                "watch={}&fieldSelector=metadata.name%3Dobj",
                verb == "watch"
            )),
        )
        .expect("attributes");
        assert!(policy.decide(&dora, &real, at(0)).0.is_allowed());
    }
}

#[test]
fn a_rules_review_lists_the_rules_of_the_namespace() {
    let policy = policy();
    let kind = Kind::SelfSubjectRulesReview;
    let body = br#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"web"}}"#;
    let answer = review(
        &policy,
        &Identity::new("dora", ["eng"]),
        &kind,
        JSON,
        body,
        at(0),
    )
    .expect("an answer");
    assert_eq!(answer["spec"], json!({"namespace": "web"}));
    assert_eq!(answer["status"]["incomplete"], false);
    let rules = answer["status"]["resourceRules"].as_array().expect("rules");
    assert!(rules.iter().any(|r| {
        r["resources"]
            .as_array()
            .is_some_and(|rs| rs.contains(&json!("pods/exec")))
            && r["verbs"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("create")))
    }));
    let urls = answer["status"]["nonResourceRules"]
        .as_array()
        .expect("URL rules");
    assert!(urls.iter().any(|r| {
        r["nonResourceURLs"]
            .as_array()
            .is_some_and(|u| u.contains(&json!("/healthz")))
    }));

    // The same in protobuf; and in another namespace, eng's grant gives nothing.
    let protobuf = wire::to_protobuf(
        "SelfSubjectRulesReview",
        &wire::RulesReview {
            spec: Some(wire::RulesReviewSpec {
                namespace: "web".into(),
            }),
        },
    );
    let again = review(
        &policy,
        &Identity::new("dora", ["eng"]),
        &kind,
        PROTOBUF,
        &protobuf,
        at(0),
    )
    .expect("an answer");
    assert_eq!(again, answer);
    let db = br#"{"spec":{"namespace":"db"}}"#;
    let other = review(
        &policy,
        &Identity::new("dora", ["eng"]),
        &kind,
        JSON,
        db,
        at(0),
    )
    .expect("an answer");
    let rules = other["status"]["resourceRules"].as_array().expect("rules");
    assert!(!rules.iter().any(|r| {
        r["resources"]
            .as_array()
            .is_some_and(|rs| rs.contains(&json!("pods")))
    }));
}

#[test]
fn a_subject_review_decides_for_the_spec_subject() {
    let policy = policy();
    let kind = Kind::SubjectAccessReview;
    let body = |user: &str, groups: &[&str]| {
        serde_json::to_vec(&json!({
            "kind": "SubjectAccessReview",
            "spec": {
                "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "web"},
                "user": user,
                "groups": groups,
                "extra": {"scopes": ["a", "b"]},
            }
        }))
        .expect("JSON")
    };
    let carl = Identity::new("carl", Vec::<String>::new());
    let answer =
        review(&policy, &carl, &kind, JSON, &body("dora", &["eng"]), at(0)).expect("answer");
    assert_eq!(answer["status"]["allowed"], true);
    assert_eq!(answer["spec"]["user"], "dora");
    assert_eq!(answer["spec"]["extra"], json!({"scopes": ["a", "b"]}));
    let answer = review(&policy, &carl, &kind, JSON, &body("dora", &[]), at(0)).expect("answer");
    assert_eq!(answer["status"]["allowed"], false);
    // A deny about another subject says nothing of that subject's grants.
    assert_eq!(answer["status"]["reason"], "", "{answer}");
    let refused = review(&policy, &carl, &kind, JSON, &body("", &[]), at(0));
    assert!(matches!(refused, Err(Refusal::Invalid(_))), "{refused:?}");

    // Protobuf, extra included.
    let mut spec = resource("delete", "pods", "", "web");
    spec.user = "dora".into();
    spec.groups = vec!["eng".into()];
    spec.extra.insert(
        "scopes".into(),
        wire::ExtraValue {
            items: vec!["a".into()],
        },
    );
    let protobuf = wire::to_protobuf("SubjectAccessReview", &AccessReview { spec: Some(spec) });
    let answer = review(&policy, &carl, &kind, PROTOBUF, &protobuf, at(0)).expect("answer");
    assert_eq!(answer["status"]["allowed"], true);
    assert_eq!(answer["spec"]["extra"], json!({"scopes": ["a"]}));
}

#[test]
fn a_local_review_is_in_the_namespace_of_its_path() {
    let policy = policy();
    let kind = Kind::LocalSubjectAccessReview {
        namespace: "web".into(),
    };
    let carl = Identity::new("carl", Vec::<String>::new());
    let ask = |spec: serde_json::Value| {
        let body = serde_json::to_vec(&json!({"kind": "LocalSubjectAccessReview", "spec": spec}))
            .expect("JSON");
        review(&policy, &carl, &kind, JSON, &body, at(0))
    };
    let answer = ask(
        json!({"resourceAttributes": {"verb": "create", "resource": "pods"}, "groups": ["eng"]}),
    )
    .expect("answer");
    assert_eq!(answer["status"]["allowed"], true);
    assert_eq!(answer["spec"]["resourceAttributes"]["namespace"], "web");
    assert_eq!(answer["metadata"]["namespace"], "web");
    let other = ask(
        json!({"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "db"}, "groups": ["eng"]}),
    );
    assert!(matches!(other, Err(Refusal::BadRequest(_))), "{other:?}");
    let url =
        ask(json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}, "user": "x"}));
    assert!(matches!(url, Err(Refusal::Invalid(_))), "{url:?}");
}

#[test]
fn malformed_bodies_are_refused_with_400_and_bad_specs_with_422() {
    let policy = policy();
    let kind = Kind::SelfSubjectAccessReview;
    let refuse = |content_type: Option<&str>, body: &[u8]| match review(
        &policy,
        &suzie(),
        &kind,
        content_type,
        body,
        at(0),
    ) {
        Err(refusal) => refusal,
        Ok(answer) => panic!("answered {answer} for {body:?}"),
    };
    let valid = ssar_protobuf(&resource("get", "pods", "", "web"));
    let wrong_kind = wire::to_protobuf(
        "SubjectAccessReview",
        &AccessReview {
            spec: Some(resource("get", "pods", "", "web")),
        },
    );
    for (content_type, body) in [
        (JSON, b"".to_vec()),
        (JSON, b"{".to_vec()),
        (JSON, b"null".to_vec()),
        (
            JSON,
            br#"{"spec": {"resourceAttributes": "pods"}}"#.to_vec(),
        ),
        (JSON, br#"{"kind": "Pod", "spec": {}}"#.to_vec()),
        (JSON, br#"{"apiVersion": "v1", "spec": {}}"#.to_vec()),
        (None, b"\x00\x01".to_vec()),
        // Protobuf without the magic, cut short, with a varint that never ends.
        (PROTOBUF, b"{}".to_vec()),
        (PROTOBUF, b"k8s".to_vec()),
        (PROTOBUF, valid[..valid.len() - 3].to_vec()),
        (PROTOBUF, b"k8s\0\x12\xff\xff\xff".to_vec()),
        (
            PROTOBUF,
            b"k8s\0\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01".to_vec(),
        ),
        (PROTOBUF, b"k8s\0\x12\x03\x12\x01\x0a".to_vec()),
        (PROTOBUF, b"k8s\0\x12\x04\x12\x02\x0a\x80".to_vec()),
        (PROTOBUF, wrong_kind),
        // A compressed object is not read.
        (PROTOBUF, {
            let mut body = b"k8s\0".to_vec();
            body.extend(prost::Message::encode_to_vec(&wire::Unknown {
                type_meta: None,
                raw: Vec::new(),
                content_encoding: "gzip".into(),
                content_type: String::new(),
            }));
            body
        }),
    ] {
        let refusal = refuse(content_type, &body);
        assert_eq!(
            refusal.code(),
            StatusCode::BAD_REQUEST,
            "{body:?}: {refusal:?}"
        );
        assert!(
            refusal.message().contains("SelfSubjectAccessReview"),
            "{refusal:?}"
        );
    }
    for body in [
        b"{}".to_vec(),
        br#"{"spec": null}"#.to_vec(),
        br#"{"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get"}}}"#.to_vec(),
    ] {
        assert_eq!(refuse(JSON, &body).code(), StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    }
    assert_eq!(
        refuse(
            PROTOBUF,
            &wire::to_protobuf("SelfSubjectAccessReview", &AccessReview { spec: None })
        )
        .code(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let body = http_body_util::Full::new(Bytes::from(vec![b' '; 100]));
    let refused = read_body(body, 99, Duration::from_secs(5)).await;
    assert_eq!(
        refused.map_err(|r| r.code()),
        Err(StatusCode::PAYLOAD_TOO_LARGE)
    );
    // A body that does not say its length is cut off as it streams.
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter((0..10).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(
            b"0123456789",
        )))
    })));
    let refused = read_body(stream, 99, Duration::from_secs(5)).await;
    assert_eq!(
        refused.map_err(|r| r.code()),
        Err(StatusCode::PAYLOAD_TOO_LARGE)
    );
    let fits = read_body(
        http_body_util::Full::new(Bytes::from_static(b"{}")),
        99,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(fits.ok(), Some(Bytes::from_static(b"{}")));
}
