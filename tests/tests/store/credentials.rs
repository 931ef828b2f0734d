//! Scenarios: access keys, and passwords with their lockout.

use std::time::Duration;

use infra_authz::clock::{Clock as _, ManualClock};
use infra_authz::policy::Secret;
use infra_control::passwords::{self, Passwords};
use infra_control::store::{KeyError, KeyKind, LoginError, NewAccessKey, StoreConfig, StoreError};
use infra_control::{Store, keys};
use sha2::{Digest as _, Sha256};

use crate::{CLIENT, Raw, contains};

pub(crate) async fn access_keys(store: &Store, clock: &ManualClock, raw: &Raw) {
    let t0 = clock.now();
    let (key, secret) = store
        .create_access_key(
            "alice@example.com",
            "alice@example.com",
            &NewAccessKey::session(t0),
            t0,
        )
        .await
        .expect("create key");
    assert_eq!(key.kind, KeyKind::Session);
    assert_eq!(key.expires_at, Some(t0 + keys::SESSION_EXPIRY));
    assert!(
        !format!("{key:?}{secret:?}").contains(secret.expose().split_once('.').expect("dot").1)
    );
    let (id, secret_part) = secret.expose().split_once('.').expect("<id>.<secret>");
    assert_eq!(id, key.id);

    // Only the SHA-256 of the secret is stored; the secret is nowhere in the row.
    let stored = raw
        .bytes("SELECT secret_hash FROM access_keys WHERE id = $1", id)
        .await;
    assert_eq!(stored, [Sha256::digest(secret_part.as_bytes()).to_vec()]);
    for col in 0..9 {
        for value in raw
            .rows("SELECT * FROM access_keys WHERE id = $1", id, col)
            .await
        {
            assert!(
                !contains(&value, secret_part.as_bytes()),
                "column {col} holds the secret"
            );
        }
    }

    let (used, owner) = store
        .authenticate_access_key(&secret, t0)
        .await
        .expect("valid");
    assert_eq!(owner.name, "alice@example.com");
    assert_eq!(used.id, key.id);
    let wrong = Secret::new(format!("{id}.{}", "A".repeat(43)));
    assert!(matches!(
        store.authenticate_access_key(&wrong, t0).await,
        Err(KeyError::Invalid)
    ));
    let unknown = Secret::new(format!("nosuchkey123.{secret_part}"));
    assert!(matches!(
        store.authenticate_access_key(&unknown, t0).await,
        Err(KeyError::Invalid)
    ));
    assert!(matches!(
        store
            .authenticate_access_key(&Secret::new("garbage"), t0)
            .await,
        Err(KeyError::Invalid)
    ));

    // Inactivity: used every two days it lives on; three idle days end it.
    clock.advance(Duration::from_hours(48));
    store
        .authenticate_access_key(&secret, clock.now())
        .await
        .expect("used after 2 days");
    clock.advance(Duration::from_hours(48));
    store
        .authenticate_access_key(&secret, clock.now())
        .await
        .expect("used 2 days later");
    clock.advance(keys::SESSION_INACTIVITY);
    assert!(matches!(
        store.authenticate_access_key(&secret, clock.now()).await,
        Err(KeyError::Inactive)
    ));

    // Expiry: a key without an inactivity timeout still ends at its expiry.
    let t1 = clock.now();
    let api = NewAccessKey {
        name: "ci".into(),
        kind: KeyKind::Api,
        expires_at: Some(t1 + Duration::from_mins(1)),
        inactivity_timeout: None,
    };
    let (api_key, api_secret) = store
        .create_access_key("admin", "bob@example.com", &api, t1)
        .await
        .expect("api key");
    store
        .authenticate_access_key(&api_secret, t1 + Duration::from_secs(59))
        .await
        .expect("valid until expiry");
    assert!(matches!(
        store
            .authenticate_access_key(&api_secret, t1 + Duration::from_mins(1))
            .await,
        Err(KeyError::Expired)
    ));
    let listed = store
        .list_access_keys("bob@example.com")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, api_key.id);
    assert_eq!(listed[0].last_used_at, t1 + Duration::from_secs(59));

    // A key from the policy file is stored the same way.
    let made = keys::generate(&ring::rand::SystemRandom::new()).expect("key");
    store
        .import_access_key(
            "policy",
            "bob@example.com",
            &made.key,
            &NewAccessKey {
                name: "file".into(),
                ..api.clone()
            },
            t1,
        )
        .await
        .expect("import");
    store
        .authenticate_access_key(&made.key, t1)
        .await
        .expect("imported key works");

    store
        .delete_access_key("admin", &api_key.id, t1)
        .await
        .expect("delete");
    assert!(matches!(
        store.authenticate_access_key(&api_secret, t1).await,
        Err(KeyError::Invalid)
    ));
    let purged = store
        .purge_expired(clock.now() + Duration::from_hours(1))
        .await
        .expect("purge");
    assert_eq!(
        purged.access_keys, 2,
        "the idle session key and the imported key"
    );
    assert_eq!(
        purged.ended.len(),
        2,
        "the purged keys are named, to end their sessions on the proxies"
    );
    assert!(
        purged
            .ended
            .iter()
            .all(|(id, user)| !id.is_empty() && !user.is_empty())
    );
}

pub(crate) async fn passwords_and_lockout(
    store: &Store,
    config: &StoreConfig,
    clock: &ManualClock,
    raw: &Raw,
) {
    let now = clock.now();
    let name = "alice@example.com";
    let err = store
        .set_password("admin", name, &Secret::new("Password123!"), now)
        .await
        .expect_err("common");
    assert!(
        matches!(
            err,
            StoreError::WeakPassword(passwords::PolicyError::Common)
        ),
        "{err:?}"
    );
    let err = store
        .set_password("admin", name, &Secret::new("short"), now)
        .await
        .expect_err("short");
    assert!(
        matches!(
            err,
            StoreError::WeakPassword(passwords::PolicyError::TooShort)
        ),
        "{err:?}"
    );
    let good = Secret::new("correct horse battery staple");
    store
        .set_password("admin", name, &good, now)
        .await
        .expect("set");
    assert!(store.get_user(name).await.expect("get").has_password);
    let hash = raw
        .bytes("SELECT password_hash FROM users WHERE name = $1", name)
        .await;
    let hash = String::from_utf8(hash[0].clone()).expect("text");
    assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{hash}");
    assert!(!hash.contains("correct horse"));

    assert_eq!(
        store
            .login_with_password(name, &good, CLIENT, now)
            .await
            .expect("login")
            .name,
        name
    );

    // Unknown user and wrong password: the same answer.
    let wrong = Secret::new("incorrect horse battery staple");
    let a = store
        .login_with_password(name, &wrong, CLIENT, now)
        .await
        .expect_err("wrong");
    let b = store
        .login_with_password("nobody@example.com", &wrong, CLIENT, now)
        .await
        .expect_err("unknown");
    let c = store
        .login_with_password("bob@example.com", &wrong, CLIENT, now)
        .await
        .expect_err("no password");
    assert!(matches!(a, LoginError::InvalidCredentials), "{a:?}");
    assert!(matches!(b, LoginError::InvalidCredentials), "{b:?}");
    assert!(matches!(c, LoginError::InvalidCredentials), "{c:?}");
    assert_eq!(a.to_string(), b.to_string());

    // Four more failures (five in all) lock the account for 30 minutes, even for the right
    // password; the count lives in the store, so it survives a restart.
    for _ in 0..4 {
        assert!(matches!(
            store
                .login_with_password(name, &wrong, CLIENT, clock.now())
                .await,
            Err(LoginError::InvalidCredentials)
        ));
    }
    let locked_at = clock.now();
    match store
        .login_with_password(name, &good, CLIENT, locked_at)
        .await
    {
        Err(LoginError::Locked { until }) => {
            assert_eq!(until, locked_at + Duration::from_mins(30));
        }
        other => panic!("expected a lock, got {other:?}"),
    }
    let reopened = Store::open(config).await.expect("reopen");
    clock.advance(Duration::from_mins(29));
    assert!(matches!(
        reopened
            .login_with_password(name, &good, CLIENT, clock.now())
            .await,
        Err(LoginError::Locked { .. })
    ));
    clock.advance(Duration::from_mins(1));
    reopened
        .login_with_password(name, &good, CLIENT, clock.now())
        .await
        .expect("lock lifted");
    // Success cleared the count: four failures do not lock.
    for _ in 0..4 {
        let _ = reopened
            .login_with_password(name, &wrong, CLIENT, clock.now())
            .await;
    }
    reopened
        .login_with_password(name, &good, CLIENT, clock.now())
        .await
        .expect("not locked");

    // Unknown names lock the same way, so a lock tells nothing about which names exist.
    for _ in 0..5 {
        let _ = reopened
            .login_with_password("ghost@example.com", &wrong, CLIENT, clock.now())
            .await;
    }
    assert!(matches!(
        reopened
            .login_with_password("ghost@example.com", &wrong, CLIENT, clock.now())
            .await,
        Err(LoginError::Locked { .. })
    ));
    // Failures spread over more than the window do not add up.
    for _ in 0..4 {
        let _ = reopened
            .login_with_password("bob@example.com", &wrong, CLIENT, clock.now())
            .await;
    }
    clock.advance(Duration::from_secs(1801));
    let _ = reopened
        .login_with_password("bob@example.com", &wrong, CLIENT, clock.now())
        .await;
    assert!(
        reopened
            .locked_until("bob@example.com", CLIENT, clock.now())
            .await
            .expect("lock")
            .is_none()
    );
    reopened.close().await;

    // New hash parameters: the next login rehashes the password.
    let stronger = StoreConfig {
        passwords: Passwords::new(512, 1, 1),
        ..config.clone()
    };
    let rehashing = Store::open(&stronger).await.expect("reopen");
    rehashing
        .login_with_password(name, &good, CLIENT, clock.now())
        .await
        .expect("login");
    let hash = raw
        .bytes("SELECT password_hash FROM users WHERE name = $1", name)
        .await;
    let hash = String::from_utf8(hash[0].clone()).expect("text");
    assert!(hash.starts_with("$argon2id$v=19$m=512,t=1,p=1$"), "{hash}");
    rehashing
        .login_with_password(name, &good, CLIENT, clock.now())
        .await
        .expect("login with the new hash");
    rehashing.close().await;
}
