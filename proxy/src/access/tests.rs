use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use infra_authz::attributes::parse;
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::{ClusterRole, PolicyRule, RoleSet};

use super::*;
use crate::impersonation::requested;

const DEST: &str = "testing";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    PolicyRule {
        verbs: owned(verbs),
        api_groups: owned(groups),
        resources: owned(resources),
        resource_names: owned(names),
        non_resource_urls: Vec::new(),
    }
}

fn grant(user: &str, role: &str) -> Grant {
    Grant {
        subject: Subject::User(user.to_owned()),
        role: role.to_owned(),
        resource: Resource::destination(DEST),
        expires_at: None,
    }
}

/// suzie may impersonate the user `other` and the group `ops`; `other` may list pods;
/// `getter` has only `get pods/exec`, `creator` only `create`, `both` both.
fn policy() -> PolicyHandle {
    let mut roles = RoleSet::builtin();
    for (name, rules) in [
        (
            "impersonator",
            vec![
                rule(&[""], &["users"], &["impersonate"], &["other"]),
                rule(&[""], &["groups"], &["impersonate"], &["ops"]),
            ],
        ),
        ("exec-get", vec![rule(&[""], &["pods/exec"], &["get"], &[])]),
        (
            "exec-create",
            vec![rule(&[""], &["pods/exec"], &["create"], &[])],
        ),
        (
            "exec-both",
            vec![rule(&[""], &["pods/exec"], &["get", "create"], &[])],
        ),
        ("pod-lister", vec![rule(&[""], &["pods"], &["list"], &[])]),
    ] {
        roles.insert(ClusterRole {
            name: name.to_owned(),
            rules,
        });
    }
    let grants = [
        grant("suzie", "impersonator"),
        grant("other", "pod-lister"),
        grant("getter", "exec-get"),
        grant("creator", "exec-create"),
        grant("both", "exec-both"),
    ];
    PolicyHandle::new(DEST, &grants, roles)
}

fn access(method: &str, path: &str, upgrade: bool, headers: &[(&str, &str)]) -> Access {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    Access {
        attrs: parse(method, path, None).expect("a valid path"),
        upgrade,
        impersonation: requested(&map).expect("valid headers"),
    }
}

fn outcome(user: &str, access: &Access) -> Result<Identity, String> {
    match access.decide(
        &policy(),
        &Identity::new(user, ["Engineering"]),
        SystemTime::UNIX_EPOCH + std::time::Duration::from_hours(500_000),
        None,
    ) {
        Outcome::Allowed { acting, decision } => {
            assert!(decision.is_allowed());
            Ok(acting)
        }
        Outcome::Denied {
            decision, refusal, ..
        } => {
            assert!(!decision.is_allowed());
            Err(refusal.message().to_owned())
        }
    }
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const EXEC: &str = "/api/v1/namespaces/default/pods/web/exec";

#[test]
fn exec_over_websocket_needs_get_and_create_spdy_create_and_a_plain_get_get() {
    let forbidden = |user: &str, verb: &str| {
        format!(
            "pods \"web\" is forbidden: User \"{user}\" cannot {verb} resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        )
    };
    // (user, plain GET, WebSocket upgrade GET, SPDY upgrade POST)
    for (user, plain, websocket, spdy) in [
        (
            "getter",
            Ok(()),
            Err(forbidden("getter", "create")),
            Err(forbidden("getter", "create")),
        ),
        (
            "creator",
            Err(forbidden("creator", "get")),
            Err(forbidden("creator", "get")),
            Ok(()),
        ),
        ("both", Ok(()), Ok(()), Ok(())),
    ] {
        let decided = |method: &str, upgrade: bool| {
            outcome(user, &access(method, EXEC, upgrade, &[])).map(|acting| {
                assert_eq!(acting.user(), user);
            })
        };
        assert_eq!(decided("GET", false), plain, "{user}: plain GET");
        assert_eq!(decided("GET", true), websocket, "{user}: WebSocket");
        assert_eq!(decided("POST", true), spdy, "{user}: SPDY");
    }
}

#[test]
fn an_allowed_impersonation_is_decided_as_the_impersonated_identity() {
    let acting = outcome(
        "suzie",
        &access("GET", PODS, false, &[("impersonate-user", "other")]),
    )
    .expect("other may list pods");
    assert_eq!(acting.user(), "other");
    assert_eq!(
        acting.groups().collect::<Vec<_>>(),
        ["system:authenticated"]
    );
    // Decided as `other`: what suzie's own grants allow does not count, and the 403 names
    // `other`.
    assert_eq!(
        outcome(
            "suzie",
            &access("GET", "/api/v1/namespaces/default/secrets", false, &[("impersonate-user", "other")])
        ),
        Err("secrets is forbidden: User \"other\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"".to_owned())
    );
    let acting = outcome(
        "suzie",
        &access(
            "GET",
            PODS,
            false,
            &[("impersonate-user", "other"), ("impersonate-group", "ops")],
        ),
    )
    .expect("allowed");
    assert_eq!(
        acting.groups().collect::<Vec<_>>(),
        ["ops", "system:authenticated"]
    );
}

#[test]
fn a_refused_impersonation_is_the_apiservers_403_for_the_caller() {
    assert_eq!(
        outcome("carl", &access("GET", PODS, false, &[("impersonate-user", "other")])),
        Err("users \"other\" is forbidden: User \"carl\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope".to_owned())
    );
    assert_eq!(
        outcome("suzie", &access("GET", PODS, false, &[("impersonate-user", "someone-else")])),
        Err("users \"someone-else\" is forbidden: User \"suzie\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope".to_owned())
    );
    assert_eq!(
        outcome(
            "suzie",
            &access("GET", PODS, false, &[("impersonate-user", "other"), ("impersonate-group", "system:masters")])
        ),
        Err("groups \"system:masters\" is forbidden: User \"suzie\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope".to_owned())
    );
    assert_eq!(
        outcome(
            "suzie",
            &access("GET", PODS, false, &[("impersonate-user", "other"), ("impersonate-uid", "1")])
        ),
        Err("uids.authentication.k8s.io \"1\" is forbidden: User \"suzie\" cannot impersonate resource \"uids\" in API group \"authentication.k8s.io\" at the cluster scope".to_owned())
    );
    assert_eq!(
        outcome(
            "suzie",
            &access("GET", PODS, false, &[("impersonate-user", "other"), ("impersonate-extra-scopes", "all")])
        ),
        Err("userextras.authentication.k8s.io \"all\" is forbidden: User \"suzie\" cannot impersonate resource \"userextras/scopes\" in API group \"authentication.k8s.io\" at the cluster scope".to_owned())
    );
    assert_eq!(
        outcome(
            "suzie",
            &access("GET", PODS, false, &[("impersonate-user", "system:serviceaccount:web:deployer")])
        ),
        Err("serviceaccounts \"deployer\" is forbidden: User \"suzie\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"web\"".to_owned())
    );
}

#[test]
fn the_impersonated_identity_needs_create_for_a_websocket_exec_too() {
    // `other` may list pods, not exec: the upgrade is refused naming `other`.
    assert_eq!(
        outcome("suzie", &access("GET", EXEC, true, &[("impersonate-user", "other")])),
        Err("pods \"web\" is forbidden: User \"other\" cannot get resource \"pods/exec\" in API group \"\" in the namespace \"default\"".to_owned())
    );
}
