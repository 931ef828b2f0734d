//! Access requests, their rules and notification targets against their schemas.

use infra_api::Source;

use super::{at, document, fits, page};

fn access_request(decided: bool) -> infra_api::AccessRequest {
    infra_api::AccessRequest {
        id: 12,
        user: "suzie@example.com".into(),
        role: "edit".into(),
        resource: "production.web".into(),
        duration_seconds: 7200,
        reason: "INC-1234".into(),
        state: if decided {
            infra_api::RequestState::Ended
        } else {
            infra_api::RequestState::Pending
        },
        rule: "eng-prod".into(),
        approvals_needed: 1,
        reviews: if decided {
            vec![infra_api::Review {
                reviewer: "sre@example.com".into(),
                verdict: infra_api::Verdict::Approve,
                comment: "ok".into(),
                at: at(),
            }]
        } else {
            Vec::new()
        },
        created_at: at(),
        pending_until: at(),
        access_starts: decided.then(at),
        access_ends: decided.then(at),
        grant_id: decided.then_some(7),
        ended_by: decided.then(|| "infra".to_owned()),
        end_comment: decided.then(|| "its time ran out".to_owned()),
        revision: 3,
    }
}

fn request_rule_body(on_call: bool) -> infra_api::RequestRuleBody {
    infra_api::RequestRuleBody {
        name: "eng-prod".into(),
        who: infra_api::SubjectRef {
            user: None,
            group: Some("Engineering".into()),
        },
        roles: vec!["edit".into()],
        resources: vec!["production.*".into()],
        max_duration_seconds: 14_400,
        reviewers: infra_api::SubjectRef {
            user: Some("sre@example.com".into()),
            group: None,
        },
        approvals: 2,
        on_call: on_call.then(|| "pagerduty-primary".to_owned()),
    }
}

#[test]
fn access_requests_fit_their_schemas() {
    let doc = document();
    let requests = [access_request(false), access_request(true)];
    fits(&doc, "AccessRequest", &requests, true);
    fits(&doc, "AccessRequestList", &[page(&requests)], true);
    let rules = [
        infra_api::RequestRule {
            rule: request_rule_body(true),
            source: Source::File,
            description: "group \"Engineering\" may ask ...".into(),
        },
        infra_api::RequestRule {
            rule: request_rule_body(false),
            source: Source::Api,
            description: "group \"Engineering\" may ask ...".into(),
        },
    ];
    fits(&doc, "RequestRule", &rules, true);
    fits(&doc, "RequestRuleList", &[page(&rules)], true);
    let targets = [
        infra_api::NotificationTarget {
            name: "hook".into(),
            kind: "webhook".into(),
            delivered: 3,
            failed_attempts: 1,
            dropped: 0,
            retrying: 0,
            last_error: Some("the target answered 500".into()),
            last_error_at: Some(at()),
            last_delivered_at: Some(at()),
        },
        infra_api::NotificationTarget {
            name: "slack".into(),
            kind: "slack".into(),
            delivered: 0,
            failed_attempts: 0,
            dropped: 0,
            retrying: 0,
            last_error: None,
            last_error_at: None,
            last_delivered_at: None,
        },
    ];
    fits(&doc, "NotificationTarget", &targets, true);
    fits(&doc, "NotificationTargetList", &[page(&targets)], true);
    fits(
        &doc,
        "NewRequest",
        &[infra_api::NewRequest {
            resource: "production.web".into(),
            role: "edit".into(),
            duration_seconds: 7200,
            reason: "INC-1234".into(),
        }],
        true,
    );
    fits(
        &doc,
        "RequestComment",
        &[
            infra_api::RequestComment {
                comment: Some("looks right".into()),
            },
            infra_api::RequestComment::default(),
        ],
        true,
    );
    fits(
        &doc,
        "RequestRuleBody",
        &[request_rule_body(true), request_rule_body(false)],
        true,
    );
}
