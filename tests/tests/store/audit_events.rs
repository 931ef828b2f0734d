//! Scenario: the audit trail's table — proxies' request events stored once per id, found by
//! every filter, paged by cursor, followed in arrival order, removed after the retention; the
//! store's own changes in it with their actor; and a change that cannot be audited not made.

use std::time::Duration;

use infra_api::audit::{Event, Kind, SCHEMA_VERSION};
use infra_authz::clock::{Clock as _, ManualClock};
use infra_control::Store;
use infra_control::store::{AuditFilter, StoreError};

use crate::{Raw, T0};

const SECOND_US: i64 = 1_000_000;

fn request(id: i64, user: &str, destination: &str, at_us: i64, allowed: bool) -> Event {
    Event {
        schema: SCHEMA_VERSION,
        id: format!("{destination}-{id}"),
        time: jiff::Timestamp::from_microsecond(at_us).expect("a time"),
        kind: Kind::Request,
        user: Some(user.to_owned()),
        groups: vec!["eng".to_owned(), format!("team-{}", id % 2)],
        destination: Some(destination.to_owned()),
        verb: Some(
            if id.rem_euclid(3) == 0 {
                "delete"
            } else {
                "get"
            }
            .to_owned(),
        ),
        resource: Some("pods".to_owned()),
        namespace: Some("web".to_owned()),
        name: Some(format!("pod-{id}")),
        decision: Some(if allowed { "allow" } else { "deny" }.to_owned()),
        grant: allowed.then(|| format!("edit to user {user:?} on {destination}")),
        reason: (!allowed).then(|| format!("User {user:?} cannot delete 100% of pods")),
        code: Some(if allowed { 200 } else { 403 }),
        latency_us: Some(1200),
        source_ip: Some("192.0.2.7".to_owned()),
        user_agent: Some("kubectl/v1.31".to_owned()),
        audit_id: Some(format!("audit-{id}")),
        ..Event::default()
    }
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

pub(crate) async fn audit_events(store: &Store, clock: &ManualClock) {
    let t0 = i64::try_from(T0).expect("T0") * SECOND_US;
    // 60 events: suzie and joe alternate, on prod (even) and dev (odd), a second apart; every
    // fifth is denied.
    let batch: Vec<Event> = (0..60_i64)
        .map(|i| {
            let user = if i % 2 == 0 { "suzie" } else { "joe" };
            let destination = if i % 4 < 2 { "prod" } else { "dev" };
            request(i, user, destination, t0 + i * SECOND_US, i % 5 != 0)
        })
        .collect();
    let first = store.record_audit_events(&batch).await.expect("record");
    assert_eq!((first.stored, first.duplicates), (60, 0));
    // Sent again (a lost answer, a spool sent twice): nothing new.
    let again = store
        .record_audit_events(&batch[10..30])
        .await
        .expect("record again");
    assert_eq!((again.stored, again.duplicates), (0, 20));

    let all = AuditFilter {
        kind: Some(Kind::Request),
        ..AuditFilter::default()
    };
    let (page, _) = store.query_audit(&all, None, 1000).await.expect("query");
    assert_eq!(page.len(), 60, "each id once");
    assert_eq!(page[0], batch[59], "newest first, the whole event back");

    // By user and time range: suzie between the 10th and the 20th second.
    let suzie = AuditFilter {
        user: Some("suzie".into()),
        since_us: Some(t0 + 10 * SECOND_US),
        until_us: Some(t0 + 20 * SECOND_US),
        ..AuditFilter::default()
    };
    let (found, next) = store.query_audit(&suzie, None, 100).await.expect("query");
    assert_eq!(
        ids(&found),
        ["dev-18", "prod-16", "dev-14", "prod-12", "dev-10"]
    );
    assert_eq!(next, None, "the last page has no cursor");

    // Each other filter.
    let count = |filter: AuditFilter| async move {
        store
            .query_audit(&filter, None, 1000)
            .await
            .expect("query")
            .0
            .len()
    };
    let by = |f: fn(&mut AuditFilter)| {
        let mut filter = all.clone();
        f(&mut filter);
        filter
    };
    assert_eq!(count(by(|f| f.destination = Some("prod".into()))).await, 30);
    assert_eq!(count(by(|f| f.group = Some("team-1".into()))).await, 30);
    assert_eq!(
        count(by(|f| f.group = Some("team".into()))).await,
        0,
        "a whole group name"
    );
    assert_eq!(count(by(|f| f.decision = Some("deny".into()))).await, 12);
    assert_eq!(count(by(|f| f.verb = Some("delete".into()))).await, 20);
    assert_eq!(count(by(|f| f.name = Some("pod-7".into()))).await, 1);
    assert_eq!(count(by(|f| f.namespace = Some("web".into()))).await, 60);
    assert_eq!(count(by(|f| f.resource = Some("secrets".into()))).await, 0);
    // Free text, case-insensitive, `%` meaning itself.
    assert_eq!(
        count(by(|f| f.text = Some("CANNOT DELETE 100%".into()))).await,
        12
    );
    assert_eq!(count(by(|f| f.text = Some("delete 1%".into()))).await, 0);
    // The grant that allowed is searchable too.
    assert_eq!(
        count(by(|f| f.text = Some("edit to user \"joe\"".into()))).await,
        24
    );

    // Cursor paging: 7 pages of up to 9, every event once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.query_audit(&all, cursor, 9).await.expect("page");
        seen.extend(page.into_iter().map(|e| e.id));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = batch.iter().rev().map(|e| e.id.clone()).collect();
    assert_eq!(seen, expected);

    // The store's own changes are in the trail with their actor, as changes.
    let before = store.audit_follow_start().await.expect("start");
    store
        .create_user("root@example.com", "carol@example.com", clock.now())
        .await
        .expect("create");
    let changes = AuditFilter {
        kind: Some(Kind::Change),
        user: Some("root@example.com".into()),
        ..AuditFilter::default()
    };
    let (made, _) = store.query_audit(&changes, None, 10).await.expect("query");
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].action.as_deref(), Some("user.create"));
    assert_eq!(
        made[0].target.as_deref(),
        Some("user \"carol@example.com\"")
    );
    // A follower after `before` sees it, and only it.
    let followed = store
        .follow_audit(&AuditFilter::default(), before, 100)
        .await
        .expect("follow");
    assert_eq!(followed.len(), 1);
    assert_eq!(followed[0].1, made[0]);
    assert!(followed[0].0 > before);
    // Logins are logins, with their outcome.
    store
        .append_audit(
            "anonymous",
            "user.login.failed",
            "user \"x\"",
            "",
            clock.now(),
        )
        .await
        .expect("append");
    let failed = AuditFilter {
        kind: Some(Kind::Login),
        decision: Some("failure".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(failed).await, 1);

    // Retention: events before the 25th second go (25 requests, and the changes and the login
    // at T0), five at a time.
    let cutoff = t0 + 25 * SECOND_US;
    let old = AuditFilter {
        until_us: Some(cutoff),
        ..AuditFilter::default()
    };
    let doomed = count(old.clone()).await;
    assert!(doomed > 25, "{doomed}");
    let mut batches = Vec::new();
    loop {
        let removed = store.purge_audit(cutoff, 5).await.expect("purge");
        batches.push(removed);
        if removed < 5 {
            break;
        }
    }
    assert_eq!(batches.iter().sum::<u64>(), doomed as u64);
    assert!(
        batches[..batches.len() - 1].iter().all(|&b| b == 5),
        "{batches:?}"
    );
    assert_eq!(count(old).await, 0);
    assert_eq!(count(all.clone()).await, 35);
    clock.advance(Duration::from_secs(1));
}

pub(crate) async fn unaudited_changes_are_not_made(store: &Store, clock: &ManualClock, raw: &Raw) {
    // The trail refuses every new row: a change that cannot be audited is not made.
    match raw {
        Raw::Sqlite(_) => {
            raw.exec(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
                 BEGIN SELECT RAISE(ABORT, 'the audit trail refuses'); END",
            )
            .await;
        }
        Raw::Postgres(_) => {
            raw.exec(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the audit trail refuses'; END $$; \
                 CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            )
            .await;
        }
    }
    let refused = store
        .create_user("admin", "mallory@example.com", clock.now())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Database { .. })),
        "{refused:?}"
    );
    assert!(
        matches!(
            store.get_user("mallory@example.com").await,
            Err(StoreError::NotFound { .. })
        ),
        "the user was not made"
    );
    match raw {
        Raw::Sqlite(_) => raw.exec("DROP TRIGGER refuse_audit").await,
        Raw::Postgres(_) => raw.exec("DROP TRIGGER refuse_audit ON audit_events").await,
    }
    store
        .create_user("admin", "mallory@example.com", clock.now())
        .await
        .expect("audited again, the change is made");
}

/// The one control-plane event of `action`, newest.
async fn change(store: &Store, action: &str) -> Event {
    let filter = AuditFilter {
        verb: Some(action.to_owned()),
        ..AuditFilter::default()
    };
    let (events, _) = store.query_audit(&filter, None, 1).await.expect("query");
    events
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {action} event"))
}

/// Changes carry the object before and after them, as the control API shows it, never a
/// secret: a grant made, its expiry changed, the grant deleted with its user; a provider made,
/// changed and deleted.
pub(crate) async fn changes_show_before_and_after(store: &Store, clock: &ManualClock) {
    use infra_authz::policy::{Grant, Provider, ProviderKind, Secret, Subject};
    let now = clock.now();
    store
        .create_user("root", "dana@example.com", now)
        .await
        .expect("user");
    let made = store
        .create_grant(
            "root",
            &Grant {
                subject: Subject::User("dana@example.com".into()),
                role: "edit".into(),
                resource: "prod.web".parse().expect("resource"),
                expires_at: None,
            },
            now,
        )
        .await
        .expect("grant");
    let made_user = change(store, "user.create").await;
    assert_eq!(made_user.after.expect("after")["name"], "dana@example.com");
    store
        .create_group("root", "oncall", now)
        .await
        .expect("group");
    store
        .add_member("root", "oncall", "dana@example.com", now)
        .await
        .expect("member");
    store
        .remove_member("root", "oncall", "dana@example.com", now)
        .await
        .expect("removed");
    let added = change(store, "group.member.add").await;
    assert_eq!(
        added.after,
        Some(serde_json::json!({"group": "oncall", "member": "dana@example.com"}))
    );
    let removed = change(store, "group.member.remove").await;
    assert_eq!(
        removed.before,
        Some(serde_json::json!({"group": "oncall", "member": "dana@example.com"}))
    );
    assert!(removed.after.is_none());
    let created = change(store, "grant.create").await;
    assert!(created.before.is_none(), "{created:?}");
    let after = created.after.expect("after");
    assert_eq!(after["user"], "dana@example.com");
    assert_eq!(after["role"], "edit");
    assert_eq!(after["resource"], "prod.web");
    assert_eq!(after["id"], made.id);
    assert!(after.get("expires_at").is_none(), "{after}");

    let until = now + Duration::from_hours(1);
    store
        .update_grant_expiry("root", made.id, made.revision, Some(until), now)
        .await
        .expect("update");
    let updated = change(store, "grant.update").await;
    let (before, after) = (
        updated.before.expect("before"),
        updated.after.expect("after"),
    );
    assert!(before.get("expires_at").is_none(), "{before}");
    let expires: jiff::Timestamp = after["expires_at"]
        .as_str()
        .expect("an expiry")
        .parse()
        .expect("RFC 3339");
    assert_eq!(
        expires.as_second(),
        i64::try_from(T0).expect("T0") + 3600,
        "{after}"
    );
    assert_eq!(
        after["revision"],
        before["revision"].as_i64().expect("revision") + 1
    );

    store
        .delete_user("root", "dana@example.com", now)
        .await
        .expect("delete");
    let deleted = change(store, "user.delete").await;
    let before = deleted.before.expect("before");
    assert_eq!(before["user"], "dana@example.com");
    let grants = before["grants"].as_array().expect("the grants removed");
    assert_eq!(grants.len(), 1, "{before}");
    assert_eq!(grants[0]["role"], "edit");
    assert!(deleted.after.is_none());

    let secret = "client-secret-never-in-the-trail";
    let okta = Provider {
        name: "okta2".into(),
        url: "acme.okta.com".into(),
        client_id: "client-1".into(),
        client_secret: Secret::new(secret),
        kind: ProviderKind::Okta,
        scopes: vec!["groups".into()],
    };
    let stored = store
        .create_provider("root", &okta, now)
        .await
        .expect("provider");
    let moved = Provider {
        url: "login.acme.example".into(),
        ..okta
    };
    store
        .update_provider("root", &moved, stored.revision, now)
        .await
        .expect("update");
    store
        .delete_provider("root", "okta2", now)
        .await
        .expect("delete");
    let updated = change(store, "provider.update").await;
    assert_eq!(
        updated.before.as_ref().expect("before")["url"],
        "acme.okta.com"
    );
    assert_eq!(
        updated.after.as_ref().expect("after")["url"],
        "login.acme.example"
    );
    let deleted = change(store, "provider.delete").await;
    assert_eq!(
        deleted.before.as_ref().expect("before")["client_id"],
        "client-1"
    );
    for action in ["provider.create", "provider.update", "provider.delete"] {
        let text = serde_json::to_string(&change(store, action).await).expect("JSON");
        assert!(!text.contains(secret), "{action}: {text}");
        assert!(text.contains("acme"), "{action} shows the provider: {text}");
    }
}
