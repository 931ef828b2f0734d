//! For random grants and random requests, the self review's answer is the real request's
//! decision.

use infra_authz::attributes;
use infra_authz::decision::Identity;
use infra_authz::policy::{Grant, Resource, Subject};
use proptest::prelude::*;

use super::super::wire::{self, AccessReviewSpec, NonResourceAttributes, ResourceAttributes};
use super::super::{Kind, review};
use super::{DEST, JSON, PROTOBUF, at, roles, ssar_json, ssar_protobuf};
use crate::policy::PolicyHandle;

// For random grants and random requests, the self review's answer is the real request's
// decision: the request is made up as kubectl would send it (method, path, query), its
// attributes parsed as the pipeline parses them and decided with `PolicyHandle::decide`.

fn any_grant() -> impl Strategy<Value = Grant> {
    let subject = prop_oneof![
        (0..3u8).prop_map(|i| Subject::User(format!("u{i}"))),
        (0..3u8).prop_map(|i| Subject::Group(format!("g{i}"))),
    ];
    let role = prop_oneof![
        1 => Just("view"),
        1 => Just("edit"),
        1 => Just("admin"),
        1 => Just("cluster-admin"),
        2 => Just("exec-getter"),
        2 => Just("obj-watcher"),
        1 => Just("unknown"),
    ];
    let scope = prop_oneof![
        Just(Resource::destination(DEST)),
        Just(Resource::namespace(DEST, "ns1")),
        Just(Resource::namespace(DEST, "ns2")),
        Just(Resource::destination("staging")),
    ];
    (subject, role, scope, proptest::option::of(0..20u64)).prop_map(
        |(subject, role, resource, expires)| Grant {
            subject,
            role: role.to_owned(),
            resource,
            expires_at: expires.map(at),
        },
    )
}

/// A request as kubectl sends it, and the verb and attributes kubectl's can-i would ask for.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    query: Option<&'static str>,
    spec: AccessReviewSpec,
}

fn any_request() -> impl Strategy<Value = Request> {
    let resource = prop_oneof![
        3 => Just(("", "pods", true)),
        1 => Just(("", "secrets", true)),
        1 => Just(("", "nodes", false)),
        1 => Just(("apps", "deployments", true)),
        1 => Just(("rbac.authorization.k8s.io", "rolebindings", true)),
    ];
    let action = prop_oneof![
        1 => Just(("GET", "get", true, None)),
        1 => Just(("GET", "list", false, None)),
        1 => Just(("GET", "watch", false, Some("watch=true"))),
        // A list or watch of one object by name, as `kubectl get pod NAME --watch` makes it.
        3 => Just((
            "GET",
            "list",
            false,
            Some("fieldSelector=metadata.name%3Dobj")
        )),
        3 => Just((
            "GET",
            "watch",
            false,
            Some("watch=true&fieldSelector=metadata.name%3Dobj")
        )),
        1 => Just(("POST", "create", false, None)),
        1 => Just(("PUT", "update", true, None)),
        1 => Just(("PATCH", "patch", true, None)),
        1 => Just(("DELETE", "delete", true, None)),
        1 => Just(("DELETE", "deletecollection", false, None)),
    ];
    let subresource = prop_oneof![
        3 => Just(None),
        2 => Just(Some("exec")),
        1 => Just(Some("attach")),
        1 => Just(Some("log")),
        1 => Just(Some("status")),
    ];
    let namespace = proptest::option::of(prop_oneof![Just("ns1"), Just("ns2"), Just("ns3")]);
    let resource_request = (resource, action, subresource, namespace).prop_map(
        |((group, resource, namespaced), (method, verb, named, query), subresource, namespace)| {
            let namespace = if namespaced { namespace } else { None };
            // A subresource is of a named object.
            let name = (named || subresource.is_some()).then_some("obj");
            let mut path = vec![if group.is_empty() {
                "/api/v1".to_owned()
            } else {
                format!("/apis/{group}/v1")
            }];
            if let Some(ns) = namespace {
                path.push(format!("namespaces/{ns}"));
            }
            path.push(resource.to_owned());
            path.extend(name.map(str::to_owned));
            path.extend(subresource.map(str::to_owned));
            let path = path.join("/");
            let (method, verb, query) = match (subresource, verb) {
                (Some(_), "list" | "watch") => ("GET", "get", None),
                (Some(_), "deletecollection") => ("DELETE", "delete", None),
                _ => (method, verb, query),
            };
            let spec = AccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: namespace.unwrap_or_default().into(),
                    verb: verb.into(),
                    group: group.into(),
                    version: "v1".into(),
                    resource: resource.into(),
                    subresource: subresource.unwrap_or_default().into(),
                    name: name.unwrap_or_default().into(),
                    field_selector: query.filter(|q| q.contains("fieldSelector")).map(|_| {
                        wire::SelectorAttributes {
                            raw_selector: "metadata.name=obj".into(),
                            ..wire::SelectorAttributes::default()
                        }
                    }),
                    ..ResourceAttributes::default()
                }),
                ..AccessReviewSpec::default()
            };
            Request {
                method,
                path,
                query,
                spec,
            }
        },
    );
    let url_request = (
        prop_oneof![
            Just("/healthz"),
            Just("/version"),
            Just("/metrics"),
            Just("/api")
        ],
        prop_oneof![Just("GET"), Just("POST")],
    )
        .prop_map(|(path, method)| Request {
            method,
            path: path.to_owned(),
            query: None,
            spec: AccessReviewSpec {
                non_resource_attributes: Some(NonResourceAttributes {
                    path: path.into(),
                    verb: method.to_ascii_lowercase(),
                }),
                ..AccessReviewSpec::default()
            },
        });
    prop_oneof![4 => resource_request, 1 => url_request]
}

fn any_identity() -> impl Strategy<Value = Identity> {
    (0..4u8, proptest::collection::vec(0..4u8, 0..3))
        .prop_map(|(u, gs)| Identity::new(format!("u{u}"), gs.into_iter().map(|g| format!("g{g}"))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_self_review_says_what_the_real_request_gets(
        grants in proptest::collection::vec(any_grant(), 0..10),
        asks in proptest::collection::vec((any_identity(), any_request(), 0..25u64, any::<bool>()), 1..48),
    ) {
        let policy = PolicyHandle::new(DEST, &grants, roles());
        for (identity, request, now, protobuf) in &asks {
            let now = at(*now);
            let real = attributes::parse(request.method, &request.path, request.query)
                .expect("a valid request");
            let (decision, _) = policy.decide(identity, &real, now);
            let (content_type, body) = if *protobuf {
                (PROTOBUF, ssar_protobuf(&request.spec))
            } else {
                (JSON, ssar_json(&request.spec))
            };
            let answer = review(&policy, identity, &Kind::SelfSubjectAccessReview, content_type, &body, now)
                .expect("an answer");
            prop_assert_eq!(
                answer["status"]["allowed"].as_bool(),
                Some(decision.is_allowed()),
                "{} {} {:?} by {:?}: {}", request.method, request.path, request.query, identity, answer
            );
        }
    }
}
