//! `reviews`: an access review's body as infra-proxy reads and answers it
//! ([`infra_proxy::reviews::review`]), JSON or Kubernetes protobuf, against a fixed policy.
//!
//! Input: a selector byte (bits 0-1: the review, self access, self rules, subject or local in
//! `web`; bit 2: the body is declared `application/vnd.kubernetes.protobuf`, else JSON), then
//! the body.
//!
//! Invariants:
//!
//! - never panics;
//! - a body is answered, or refused with 400 (unreadable) or 422 (not a valid spec), and
//!   nothing else;
//! - an answer is the review's kind in `authorization.k8s.io/v1`, with a `status`: `allowed`
//!   and a reason starting `infra: ` for the access reviews, rule lists and `incomplete: false`
//!   for the rules review;
//! - the spec the answer echoes, sent again as JSON, gets the same answer (the echo is
//!   faithful, and JSON and protobuf read alike).

use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use infra_authz::decision::Identity;
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::RoleSet;
use infra_proxy::policy::PolicyHandle;
use infra_proxy::reviews::{Kind, review};
use serde_json::json;

use crate::show;

const DEST: &str = "production";

fn policy() -> PolicyHandle {
    let grant = |subject: Subject, role: &str, resource: Resource, expires: Option<u64>| Grant {
        subject,
        role: role.to_owned(),
        resource,
        expires_at: expires.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
    };
    PolicyHandle::new(
        DEST,
        &[
            grant(
                Subject::User("suzie".into()),
                "view",
                Resource::destination(DEST),
                None,
            ),
            grant(
                Subject::Group("eng".into()),
                "edit",
                Resource::namespace(DEST, "web"),
                None,
            ),
            grant(
                Subject::User("suzie".into()),
                "admin",
                Resource::namespace(DEST, "db"),
                Some(5),
            ),
            grant(
                Subject::User("suzie".into()),
                "unknown",
                Resource::destination(DEST),
                None,
            ),
        ],
        RoleSet::builtin(),
    )
}

/// The `reviews` target.
pub fn reviews(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector & 3 {
        0 => Kind::SelfSubjectAccessReview,
        1 => Kind::SelfSubjectRulesReview,
        2 => Kind::SubjectAccessReview,
        _ => Kind::LocalSubjectAccessReview {
            namespace: "web".into(),
        },
    };
    let content_type = if selector & 4 == 0 {
        "application/json"
    } else {
        "application/vnd.kubernetes.protobuf"
    };
    let policy = policy();
    let caller = Identity::new("suzie", ["eng"]);
    let now = UNIX_EPOCH + Duration::from_secs(10);
    let context = |what: &str| {
        format!(
            "{what}\nkind: {kind:?} {content_type}\ninput: {}",
            show(data)
        )
    };
    let answer = match review(&policy, &caller, &kind, Some(content_type), body, now) {
        Ok(answer) => answer,
        Err(refusal) => {
            assert!(
                matches!(
                    refusal.code(),
                    StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
                ),
                "{}",
                context(&format!("refused with {refusal:?}"))
            );
            return;
        }
    };
    assert_eq!(answer["kind"], kind.name(), "{}", context("the kind"));
    assert_eq!(
        answer["apiVersion"],
        "authorization.k8s.io/v1",
        "{}",
        context("the version")
    );
    let status = &answer["status"];
    if kind == Kind::SelfSubjectRulesReview {
        assert!(
            status["resourceRules"].is_array()
                && status["nonResourceRules"].is_array()
                && status["incomplete"] == false,
            "{}",
            context(&format!("a rules status: {status}"))
        );
    } else {
        // A self review, or an allow, says why; a deny about another subject says nothing (its
        // grants are not the caller's to read).
        let explained = kind == Kind::SelfSubjectAccessReview || status["allowed"] == true;
        assert!(
            status["allowed"].is_boolean()
                && status["reason"].as_str().is_some_and(|r| if explained {
                    r.starts_with("infra: ")
                } else {
                    r.is_empty()
                }),
            "{}",
            context(&format!("an access status: {status}"))
        );
    }
    let again = json!({"kind": kind.name(), "spec": answer["spec"]}).to_string();
    let second = review(
        &policy,
        &caller,
        &kind,
        Some("application/json"),
        again.as_bytes(),
        now,
    );
    assert_eq!(
        second.as_ref().ok(),
        Some(&answer),
        "{}",
        context(&format!("the echoed spec is answered differently: {again}"))
    );
}
