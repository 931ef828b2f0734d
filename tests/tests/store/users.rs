//! Scenarios: users and groups, grants, and calls racing on one grant.

use std::time::Duration;

use infra_authz::clock::{Clock as _, ManualClock};
use infra_authz::policy::{Grant, Resource, Subject};
use infra_control::Store;
use infra_control::store::StoreError;

use crate::{Raw, grant, user};

pub(crate) async fn users_and_groups(store: &Store, clock: &ManualClock) {
    let now = clock.now();
    let alice = store
        .create_user("admin", "alice@example.com", now)
        .await
        .expect("create");
    assert_eq!(alice.name, "alice@example.com");
    assert!(!alice.has_password);
    assert_eq!(alice.revision, 1);
    assert_eq!(alice.created_at, now);
    store
        .create_user("admin", "bob@example.com", now)
        .await
        .expect("create");
    let err = store
        .create_user("admin", "alice@example.com", now)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let err = store
        .create_user("admin", "system:admin", now)
        .await
        .expect_err("reserved");
    assert!(matches!(err, StoreError::InvalidName(_)), "{err:?}");
    assert_eq!(
        store.get_user("alice@example.com").await.expect("get"),
        alice
    );
    let names: Vec<_> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice@example.com", "bob@example.com"]);

    store
        .create_group("admin", "Engineering", now)
        .await
        .expect("group");
    store
        .create_group("admin", "Ops", now)
        .await
        .expect("group");
    let err = store
        .create_group("admin", "Ops", now)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert!(
        store
            .add_member("admin", "Engineering", "alice@example.com", now)
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_member("admin", "Engineering", "alice@example.com", now)
            .await
            .expect("again")
    );
    assert!(
        store
            .add_member("admin", "Engineering", "bob@example.com", now)
            .await
            .expect("add")
    );
    assert!(
        store
            .add_member("admin", "Ops", "alice@example.com", now)
            .await
            .expect("add")
    );
    let err = store
        .add_member("admin", "Nope", "alice@example.com", now)
        .await
        .expect_err("no group");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .add_member("admin", "Ops", "nobody@example.com", now)
        .await
        .expect_err("no user");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(
        store.members("Engineering").await.expect("members"),
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(
        store.groups_of("alice@example.com").await.expect("groups"),
        ["Engineering", "Ops"]
    );
    assert!(
        store
            .remove_member("admin", "Ops", "alice@example.com", now)
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_member("admin", "Ops", "alice@example.com", now)
            .await
            .expect("gone")
    );
    assert_eq!(
        store.groups_of("alice@example.com").await.expect("groups"),
        ["Engineering"]
    );

    // Deleting a user takes their memberships and grants with them.
    store
        .create_user("admin", "carol@example.com", now)
        .await
        .expect("create");
    store
        .add_member("admin", "Ops", "carol@example.com", now)
        .await
        .expect("add");
    store
        .create_grant(
            "admin",
            &grant(user("carol@example.com"), "view", "prod"),
            now,
        )
        .await
        .expect("grant");
    store
        .delete_user("admin", "carol@example.com", now)
        .await
        .expect("delete");
    assert!(store.members("Ops").await.expect("members").is_empty());
    assert!(
        store
            .find_grant(
                &user("carol@example.com"),
                "view",
                &Resource::destination("prod")
            )
            .await
            .expect("find")
            .is_none()
    );
    let err = store
        .get_user("carol@example.com")
        .await
        .expect_err("deleted");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .delete_user("admin", "carol@example.com", now)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    store
        .delete_group("admin", "Ops", now)
        .await
        .expect("delete group");
    let groups: Vec<_> = store
        .list_groups()
        .await
        .expect("list")
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, ["Engineering"]);
    assert_eq!(
        store.get_group("Engineering").await.expect("get").name,
        "Engineering"
    );
}

pub(crate) async fn grants(store: &Store, clock: &ManualClock, raw: &Raw) {
    let now = clock.now();
    let g = grant(Subject::Group("Engineering".into()), "edit", "prod.web");
    let stored = store.create_grant("admin", &g, now).await.expect("create");
    assert_eq!(stored.grant, g);
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.created_by, "admin");
    assert_eq!(store.get_grant(stored.id).await.expect("get"), stored);
    let err = store
        .create_grant("admin", &g, now)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let bad = grant(user("system:anonymous"), "view", "prod");
    assert!(matches!(
        store.create_grant("admin", &bad, now).await,
        Err(StoreError::InvalidName(_))
    ));

    // A grant with an expiry, on the fixed clock.
    let until = now + Duration::from_hours(1);
    let jit = Grant {
        expires_at: Some(until),
        ..grant(user("alice@example.com"), "admin", "prod")
    };
    let jit = store.create_grant("admin", &jit, now).await.expect("jit");
    let active = |list: Vec<infra_control::store::StoredGrant>| {
        list.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(
        active(store.list_grants(now).await.expect("list")),
        [stored.id, jit.id]
    );
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        active(store.list_grants(clock.now()).await.expect("list")).len(),
        2
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        active(store.list_grants(clock.now()).await.expect("list")),
        [stored.id]
    );
    assert!(
        !store
            .get_grant(jit.id)
            .await
            .expect("still stored")
            .grant
            .is_active(clock.now())
    );

    // Optimistic concurrency: the second writer with the old revision gets a conflict.
    let later = clock.now() + Duration::from_hours(2);
    let updated = store
        .update_grant_expiry("admin", jit.id, jit.revision, Some(later), clock.now())
        .await
        .expect("update");
    assert_eq!(updated.revision, jit.revision + 1);
    assert_eq!(updated.grant.expires_at, Some(later));
    let err = store
        .update_grant_expiry("mallory", jit.id, jit.revision, None, clock.now())
        .await
        .expect_err("stale revision");
    match err {
        StoreError::Conflict {
            what,
            expected,
            actual,
        } => {
            assert_eq!(what, format!("grant {}", jit.id));
            assert_eq!((expected, actual), (jit.revision, jit.revision + 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_grant(jit.id).await.expect("get").grant.expires_at,
        Some(later)
    );
    let err = store
        .delete_grant("mallory", jit.id, Some(jit.revision), clock.now())
        .await
        .expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = store
        .update_grant_expiry("admin", 999_999, 1, None, clock.now())
        .await
        .expect_err("no such grant");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    store
        .delete_grant("admin", jit.id, Some(updated.revision), clock.now())
        .await
        .expect("delete");
    let err = store.get_grant(jit.id).await.expect_err("deleted");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    // Purging removes only what has expired.
    let short = Grant {
        expires_at: Some(clock.now() + Duration::from_secs(10)),
        ..grant(user("bob@example.com"), "view", "staging")
    };
    store
        .create_grant("admin", &short, clock.now())
        .await
        .expect("short");
    clock.advance(Duration::from_secs(10));
    let purged = store.purge_expired(clock.now()).await.expect("purge");
    assert_eq!(purged.grants, 1);
    assert_eq!(
        raw.count(
            "SELECT COUNT(*) FROM grants WHERE subject_name = $1",
            "bob@example.com"
        )
        .await,
        0
    );
    assert!(store.get_grant(stored.id).await.is_ok());
}

/// 50 create/revoke calls at once on one grant: each succeeds or says exists/not found, the
/// successes alternate, and what is left agrees with them, with no duplicate rows.
pub(crate) async fn parallel_grant_calls(store: &Store, clock: &ManualClock, raw: &Raw) {
    let now = clock.now();
    let g = grant(user("race@example.com"), "view", "prod.race");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                match store.create_grant("racer", &g, now).await {
                    Ok(_) => (1, 0),
                    Err(StoreError::AlreadyExists { .. }) => (0, 0),
                    Err(e) => panic!("create failed: {e:?}"),
                }
            } else {
                match store.revoke_grant("racer", &g, now).await {
                    Ok(()) => (0, 1),
                    Err(StoreError::NotFound { .. }) => (0, 0),
                    Err(e) => panic!("revoke failed: {e:?}"),
                }
            }
        }));
    }
    let (mut created, mut revoked) = (0i64, 0i64);
    for t in tasks {
        let (c, r) = t.await.expect("task");
        created += c;
        revoked += r;
    }
    let rows = raw
        .count(
            "SELECT COUNT(*) FROM grants WHERE subject_name = $1",
            "race@example.com",
        )
        .await;
    assert!(rows <= 1, "{rows} rows for one grant");
    assert_eq!(
        created - revoked,
        rows,
        "created {created}, revoked {revoked}, left {rows}"
    );
    let found = store
        .find_grant(&g.subject, &g.role, &g.resource)
        .await
        .expect("find");
    assert_eq!(found.is_some(), rows == 1);
    assert!(created >= 1);
    eprintln!("50 parallel calls: {created} created, {revoked} revoked, {rows} left");
    // The audit trail saw exactly the successful calls.
    let audited = store
        .list_audit(0, 10_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.actor == "racer")
        .count();
    assert_eq!(i64::try_from(audited).expect("small"), created + revoked);
}
