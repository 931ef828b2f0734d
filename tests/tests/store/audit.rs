//! Scenario: the audit trail of what the other scenarios wrote.

use std::time::{Duration, SystemTime};

use infra_authz::clock::{Clock as _, ManualClock};
use infra_control::Store;

use crate::T0;

pub(crate) async fn audit_trail(store: &Store, clock: &ManualClock) {
    let events = store.list_audit(0, 10_000).await.expect("audit");
    let first = &events[0];
    assert_eq!(
        (
            first.actor.as_str(),
            first.action.as_str(),
            first.target.as_str()
        ),
        ("admin", "user.create", "user \"alice@example.com\"")
    );
    assert_eq!(first.at, SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    for action in [
        "group.create",
        "group.member.add",
        "group.member.remove",
        "grant.create",
        "grant.update",
        "grant.delete",
        "access_key.create",
        "access_key.delete",
        "provider.create",
        "provider.update",
        "provider.delete",
        "idp_session.put",
        "destination.put",
        "signing_key.create",
        "signing_key.retire",
        "purge.expired",
    ] {
        assert!(
            events.iter().any(|e| e.action == action),
            "no {action} in the audit trail"
        );
    }
    // Nothing secret in the trail.
    for e in &events {
        let line = format!("{} {} {}", e.target, e.detail, e.action);
        assert!(
            !line.contains("secret-value") && !line.contains("refresh-token"),
            "{line}"
        );
    }
    let id = store
        .append_audit(
            "alice@example.com",
            "token.issue",
            "destination \"prod\"",
            "",
            clock.now(),
        )
        .await
        .expect("append");
    let tail = store.list_audit(id - 1, 10).await.expect("tail");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].action, "token.issue");
    assert_eq!(store.list_audit(0, 3).await.expect("page").len(), 3);
}
