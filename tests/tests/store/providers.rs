//! Scenarios: identity providers and their sessions, destinations and signing keys, OIDC logins in
//! flight.

use std::time::{Duration, SystemTime};

use infra_authz::clock::{Clock as _, ManualClock};
use infra_authz::policy::{Provider, ProviderKind, Secret};
use infra_control::Store;
use infra_control::crypto::SecretBytes;
use infra_control::oidc::{self, PendingLogin};
use infra_control::store::{NewDestination, NewSigningKey, StoreError};

use crate::{CLIENT, Raw, contains};

pub(crate) async fn providers_and_sessions(store: &Store, clock: &ManualClock, raw: &Raw) {
    let now = clock.now();
    let okta = Provider {
        name: "okta".into(),
        url: "acmecorp.okta.com".into(),
        client_id: "0oapn0qwiQPiMIyR35d6".into(),
        client_secret: Secret::new("very-secret-client-secret-value"),
        kind: ProviderKind::Okta,
        scopes: vec!["groups".into(), "offline_access".into()],
    };
    let stored = store
        .create_provider("admin", &okta, now)
        .await
        .expect("create");
    assert_eq!(stored.provider, okta);
    let err = store
        .create_provider("admin", &okta, now)
        .await
        .expect_err("twice");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    // Encrypted at rest: the column does not hold the plaintext, nor does any other.
    for col in 0..10 {
        for value in raw
            .rows("SELECT * FROM providers WHERE name = $1", "okta", col)
            .await
        {
            assert!(
                !contains(&value, b"very-secret-client-secret-value"),
                "column {col}"
            );
        }
    }
    assert_eq!(
        store
            .get_provider("okta")
            .await
            .expect("get")
            .provider
            .client_secret
            .expose(),
        "very-secret-client-secret-value"
    );
    assert!(
        !format!("{:?}", store.get_provider("okta").await.expect("get")).contains("very-secret")
    );

    let rotated = Provider {
        client_secret: Secret::new("rotated-client-secret"),
        ..okta.clone()
    };
    let updated = store
        .update_provider("admin", &rotated, stored.revision, now)
        .await
        .expect("update");
    assert_eq!(
        updated.provider.client_secret.expose(),
        "rotated-client-secret"
    );
    let err = store
        .update_provider("admin", &okta, stored.revision, now)
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.list_providers().await.expect("list").len(), 1);

    // Provider sessions: refresh tokens sealed at rest.
    let token = Secret::new("refresh-token-that-must-not-leak");
    let session = store
        .put_idp_session(
            "alice@example.com",
            "alice@example.com",
            "okta",
            &token,
            now,
        )
        .await
        .expect("put");
    for col in 0..7 {
        for value in raw
            .rows(
                "SELECT * FROM idp_sessions WHERE id = CAST($1 AS BIGINT)",
                &session.id.to_string(),
                col,
            )
            .await
        {
            assert!(
                !contains(&value, b"refresh-token-that-must-not-leak"),
                "column {col}"
            );
        }
    }
    let got = store
        .get_idp_session("alice@example.com", "okta")
        .await
        .expect("get");
    assert_eq!(got.refresh_token, token);
    assert_eq!(got.last_checked_at, now);
    assert!(
        store
            .idp_sessions_due(now - Duration::from_secs(1), 10)
            .await
            .expect("due")
            .is_empty()
    );
    let due = store.idp_sessions_due(now, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    let later = now + Duration::from_mins(10);
    store
        .mark_idp_session_checked(session.id, Some(&Secret::new("rotated-refresh")), later)
        .await
        .expect("checked");
    let got = store
        .get_idp_session("alice@example.com", "okta")
        .await
        .expect("get");
    assert_eq!(got.refresh_token.expose(), "rotated-refresh");
    assert_eq!(got.last_checked_at, later);
    store
        .mark_idp_session_checked(session.id, None, later + Duration::from_secs(1))
        .await
        .expect("checked");
    assert_eq!(
        store
            .get_idp_session("alice@example.com", "okta")
            .await
            .expect("get")
            .refresh_token
            .expose(),
        "rotated-refresh"
    );
    store
        .delete_idp_session("alice@example.com", "alice@example.com", "okta", now)
        .await
        .expect("delete");
    assert!(matches!(
        store.get_idp_session("alice@example.com", "okta").await,
        Err(StoreError::NotFound { .. })
    ));

    // Deleting a provider takes its sessions with it.
    store
        .put_idp_session("bob@example.com", "bob@example.com", "okta", &token, now)
        .await
        .expect("put");
    store
        .delete_provider("admin", "okta", now)
        .await
        .expect("delete");
    assert!(
        store
            .get_idp_session("bob@example.com", "okta")
            .await
            .is_err()
    );
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM idp_sessions WHERE $1 = $1", "")
            .await,
        0
    );
}

pub(crate) async fn destinations_and_signing_keys(store: &Store, clock: &ManualClock, raw: &Raw) {
    let now = clock.now();
    let d = NewDestination {
        name: "prod".into(),
        url: "https://prod.example.com:8443".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
        version: "0.1.0".into(),
    };
    let stored = store
        .put_destination("proxy:prod", &d, now)
        .await
        .expect("put");
    assert_eq!(stored.last_seen_at, Some(now));
    let again = store
        .put_destination(
            "proxy:prod",
            &NewDestination {
                version: "0.2.0".into(),
                ..d.clone()
            },
            now,
        )
        .await
        .expect("put again");
    assert_eq!(again.id, stored.id);
    assert_eq!(again.revision, stored.revision + 1);
    store
        .touch_destination("prod", "0.2.1", now + Duration::from_secs(30))
        .await
        .expect("seen");
    let got = store.get_destination("prod").await.expect("get");
    assert_eq!(got.version, "0.2.1");
    assert_eq!(got.last_seen_at, Some(now + Duration::from_secs(30)));
    assert_eq!(store.list_destinations().await.expect("list").len(), 1);
    assert!(matches!(
        store.touch_destination("nope", "1", now).await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .delete_destination("admin", "prod", now)
        .await
        .expect("delete");
    assert!(store.list_destinations().await.expect("list").is_empty());

    let private = b"-----PRIVATE KEY MATERIAL 0123456789-----".to_vec();
    let key = NewSigningKey {
        kid: "k1".into(),
        algorithm: "EdDSA".into(),
        public_key: b"public half".to_vec(),
        private_key: SecretBytes::new(private.clone()),
    };
    store
        .add_signing_key("system", &key, now)
        .await
        .expect("add");
    assert!(matches!(
        store.add_signing_key("system", &key, now).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    for value in raw
        .bytes("SELECT private_key FROM signing_keys WHERE kid = $1", "k1")
        .await
    {
        assert!(!contains(&value, &private));
    }
    let keys = store.signing_keys().await.expect("list");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].private_key.expose(), private.as_slice());
    assert!(!format!("{keys:?}").contains("PRIVATE KEY MATERIAL"));
    store
        .retire_signing_key("system", "k1", now + Duration::from_secs(5))
        .await
        .expect("retire");
    assert_eq!(
        store.signing_keys().await.expect("list")[0].retired_at,
        Some(now + Duration::from_secs(5))
    );
    store
        .delete_signing_key("system", "k1", now)
        .await
        .expect("delete");
    assert!(store.signing_keys().await.expect("list").is_empty());
}

/// Logins in flight: kept under the state's hash, taken once, dropped when expired, capped.
pub(crate) async fn oidc_logins_in_flight(store: &Store, clock: &ManualClock, raw: &Raw) {
    let now = clock.now();
    let login = |n: u32, expires_at: SystemTime| PendingLogin {
        provider: "okta".to_owned(),
        nonce: format!("nonce-{n}"),
        redirect_uri: "http://127.0.0.1:4000/callback".to_owned(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        expires_at,
    };
    let live = now + Duration::from_mins(10);
    let first = oidc::state_key("state-one");
    assert!(
        store
            .put_oidc_login(&first, &login(1, live), CLIENT, now, 3, 3)
            .await
            .expect("put")
    );
    assert_eq!(
        raw.bytes(
            "SELECT nonce FROM oidc_logins WHERE state_sha256 = $1",
            "state-one"
        )
        .await
        .len(),
        0,
        "the state itself is not a key of the table"
    );
    assert_eq!(
        store.take_oidc_login(&first).await.expect("take"),
        Some(login(1, live))
    );
    assert_eq!(
        store.take_oidc_login(&first).await.expect("take again"),
        None,
        "a login is taken once"
    );

    // At the cap a new login is refused, until expired ones make room.
    let soon = now + Duration::from_mins(1);
    for n in 0..3 {
        assert!(
            store
                .put_oidc_login(
                    &oidc::state_key(&format!("s{n}")),
                    &login(n, soon),
                    CLIENT,
                    now,
                    3,
                    3
                )
                .await
                .expect("put")
        );
    }
    assert!(
        !store
            .put_oidc_login(&oidc::state_key("s3"), &login(3, soon), CLIENT, now, 3, 3)
            .await
            .expect("put at the cap"),
        "the fourth login is refused"
    );
    let later = now + Duration::from_secs(61);
    assert!(
        store
            .put_oidc_login(&oidc::state_key("s3"), &login(3, live), CLIENT, later, 3, 3)
            .await
            .expect("put after expiry")
    );
    assert_eq!(
        store
            .take_oidc_login(&oidc::state_key("s0"))
            .await
            .expect("take"),
        None,
        "expired logins were dropped"
    );
    assert!(
        store
            .take_oidc_login(&oidc::state_key("s3"))
            .await
            .expect("take")
            .is_some()
    );
}
