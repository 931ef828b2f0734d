//! Fixtures and strategies shared by the decision tests: a small world of grants, identities
//! and requests.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::{Authorizer, Identity};
use crate::attributes::{Attributes, NonResourceAttributes, ResourceAttributes};
use crate::policy::{Grant, Resource, Subject};
use crate::rbac::RoleSet;

pub const DEST: &str = "production";

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn grant(subject: Subject, role: &str, resource: Resource) -> Grant {
    Grant {
        subject,
        role: role.into(),
        resource,
        expires_at: None,
    }
}

pub fn user(name: &str) -> Subject {
    Subject::User(name.into())
}

pub fn group(name: &str) -> Subject {
    Subject::Group(name.into())
}

pub fn cluster() -> Resource {
    Resource::destination(DEST)
}

pub fn ns(namespace: &str) -> Resource {
    Resource::namespace(DEST, namespace)
}

pub fn res(verb: &str, resource: &str, namespace: Option<&str>) -> Attributes {
    Attributes::Resource(ResourceAttributes {
        verb: verb.into(),
        api_group: String::new(),
        api_version: "v1".into(),
        namespace: namespace.map(Into::into),
        resource: resource.into(),
        subresource: None,
        name: None,
    })
}

pub fn url(verb: &str, path: &str) -> Attributes {
    Attributes::NonResource(NonResourceAttributes {
        verb: verb.into(),
        path: path.into(),
    })
}

pub fn authorizer(grants: &[Grant]) -> Authorizer {
    Authorizer::new(DEST, grants, &RoleSet::builtin(), 1)
}

pub fn suzie() -> Identity {
    Identity::new("suzie@example.com", ["Engineering", "Everyone"])
}

// Property tests over a small world, so that grants and requests meet often.

fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        (0..3u8).prop_map(|i| Subject::User(format!("u{i}"))),
        (0..3u8).prop_map(|i| Subject::Group(format!("g{i}"))),
    ]
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        Just(Resource::destination(DEST)),
        Just(Resource::namespace(DEST, "ns1")),
        Just(Resource::namespace(DEST, "ns2")),
        Just(Resource::destination("staging")),
        Just(Resource::namespace("staging", "ns1")),
        Just(Resource::destination("infra")),
    ]
}

pub fn any_grant() -> impl Strategy<Value = Grant> {
    let role = prop_oneof![
        Just("view"),
        Just("edit"),
        Just("admin"),
        Just("cluster-admin"),
        Just("unknown"),
    ];
    (
        subject(),
        role,
        resource(),
        proptest::option::of((0..10u64).prop_map(at)),
    )
        .prop_map(|(subject, role, resource, expires_at)| Grant {
            subject,
            role: role.into(),
            resource,
            expires_at,
        })
}

pub fn namespace_grant() -> impl Strategy<Value = Grant> {
    any_grant().prop_filter("a namespace grant", |g| g.resource.namespace.is_some())
}

fn identity() -> impl Strategy<Value = Identity> {
    (0..3u8, proptest::collection::vec(0..4u8, 0..3))
        .prop_map(|(u, gs)| Identity::new(format!("u{u}"), gs.into_iter().map(|g| format!("g{g}"))))
}

fn attributes() -> impl Strategy<Value = Attributes> {
    let verb = prop_oneof![
        Just("get"),
        Just("list"),
        Just("create"),
        Just("delete"),
        Just("escalate")
    ];
    let resource = prop_oneof![
        Just(("", "pods")),
        Just(("", "secrets")),
        Just(("", "nodes")),
        Just(("apps", "deployments")),
        Just(("rbac.authorization.k8s.io", "rolebindings")),
    ];
    // Empty parts and other versions too: the cache treats them as the apiserver does.
    let subresource = proptest::option::of(prop_oneof![
        Just("exec"),
        Just("log"),
        Just("scale"),
        Just("")
    ]);
    let namespace =
        proptest::option::of(prop_oneof![Just("ns1"), Just("ns2"), Just("ns3"), Just("")]);
    let name = proptest::option::of(prop_oneof![Just("a"), Just("")]);
    let version = prop_oneof![Just("v1"), Just("v1beta1")];
    let resource_request = (
        verb.clone(),
        resource,
        subresource,
        namespace,
        name,
        version,
    )
        .prop_map(
            |(verb, (group, resource), subresource, namespace, name, version)| {
                Attributes::Resource(ResourceAttributes {
                    verb: verb.into(),
                    api_group: group.into(),
                    api_version: version.into(),
                    namespace: namespace.map(Into::into),
                    resource: resource.into(),
                    subresource: subresource.map(Into::into),
                    name: name.map(Into::into),
                })
            },
        );
    let path = prop_oneof![Just("/healthz"), Just("/version"), Just("/api")];
    let url_request = (verb, path).prop_map(|(verb, path)| url(verb, path));
    prop_oneof![3 => resource_request, 1 => url_request]
}

pub fn queries() -> impl Strategy<Value = Vec<(Identity, Attributes, SystemTime)>> {
    proptest::collection::vec((identity(), attributes(), (0..12u64).prop_map(at)), 1..24)
}
