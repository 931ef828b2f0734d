//! The audit trail's wire types against their schemas.

use super::{at, document, fits};

#[test]
fn audit_events_fit_their_schemas() {
    use infra_api::audit::{Batch, Event, EventPage, Ingested, Kind, SCHEMA_VERSION, Stage};
    let doc = document();
    let request = Event {
        schema: SCHEMA_VERSION,
        id: "7c0e6a4e-0000-4000-8000-000000000001".into(),
        time: at(),
        kind: Kind::Request,
        user: Some("suzie@example.com".into()),
        groups: vec!["Engineering".into()],
        destination: Some("production".into()),
        audit_id: Some("7c0e6a4e-0000-4000-8000-000000000001".into()),
        impersonated_user: Some("suzie@example.com".into()),
        impersonated_groups: vec!["system:authenticated".into()],
        method: Some("GET".into()),
        path: Some("/api/v1/namespaces/web/pods/p".into()),
        verb: Some("get".into()),
        api_group: Some(String::new()),
        resource: Some("pods".into()),
        subresource: Some("log".into()),
        namespace: Some("web".into()),
        name: Some("p".into()),
        decision: Some("allow".into()),
        grant: Some("edit to user \"suzie@example.com\" on production".into()),
        reason: Some("denied".into()),
        code: Some(200),
        latency_us: Some(1234),
        source_ip: Some("192.0.2.1".into()),
        user_agent: Some("kubectl/v1.31".into()),
        stage: Some(Stage::End),
        duration_ms: Some(90_000),
        ..Event::default()
    };
    let update = Event {
        schema: SCHEMA_VERSION,
        id: "c0".into(),
        time: at(),
        kind: Kind::Change,
        user: Some("admin".into()),
        action: Some("grant.update".into()),
        target: Some("user \"suzie\" edit production".into()),
        before: Some(serde_json::json!({"id": 1, "user": "suzie", "revision": 1})),
        after: Some(serde_json::json!({"id": 1, "user": "suzie", "revision": 2})),
        ..Event::default()
    };
    let change = Event {
        schema: SCHEMA_VERSION,
        id: "c1".into(),
        time: at(),
        kind: Kind::Policy,
        user: Some("admin".into()),
        action: Some("policy.apply".into()),
        target: Some("policy file \"infra.yaml\"".into()),
        detail: Some("more".into()),
        hash: Some("ab".repeat(32)),
        ..Event::default()
    };
    fits(
        &doc,
        "AuditEvent",
        &[request.clone(), change.clone(), update],
        true,
    );
    fits(
        &doc,
        "AuditEventPage",
        &[
            EventPage {
                items: vec![request.clone(), change],
                next: Some("1.2".into()),
            },
            EventPage::default(),
        ],
        true,
    );
    fits(
        &doc,
        "AuditBatch",
        &[Batch {
            events: vec![request],
        }],
        true,
    );
    fits(
        &doc,
        "AuditIngested",
        &[Ingested {
            stored: 1,
            duplicates: 2,
        }],
        true,
    );
}
