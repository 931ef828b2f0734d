//! Token signing key rotation on a manual clock, with a real SQLite store: a new key is published
//! before it signs; an old key stays published until the last token it signed has expired; the
//! keys survive a restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use infra_authz::clock::{Clock, ManualClock};
use infra_authz::policy::Policy;
use infra_authz::token::Verifier;
use infra_control::crypto::RootKeySource;
use infra_control::passwords::Passwords;
use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig};

const ISSUER: &str = "https://control.example.com";

fn config() -> ControlConfig {
    let mut config = ControlConfig::new(ISSUER);
    config.token_ttl = Duration::from_mins(5);
    config.rotate_every = Duration::from_hours(24);
    config.publish_lead = Duration::from_mins(10);
    config
}

async fn open(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig {
        passwords: Passwords::new(256, 1, 1),
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("infra.key")),
        )
    })
    .await
    .expect("store opens")
}

fn kids(plane: &ControlPlane) -> Vec<String> {
    let mut kids: Vec<String> = plane
        .jwks()
        .trusted_keys()
        .iter()
        .map(|k| k.kid().to_owned())
        .collect();
    kids.sort();
    kids
}

async fn signing_kid(plane: &ControlPlane) -> (String, String) {
    let user = plane.store().get_user("admin").await.expect("admin");
    let issued = plane
        .issue_token(&user, "testing", None)
        .await
        .expect("token issued");
    let token = issued.token.expose().to_owned();
    let verifier = Verifier::builder(ISSUER)
        .trust_jwks(&plane.jwks())
        .build()
        .expect("verifier");
    let verified = verifier
        .verify(&token, "testing", plane.now())
        .expect("a fresh token verifies with the published keys");
    (verified.kid, token)
}

#[tokio::test]
async fn keys_are_published_before_they_sign_and_kept_until_their_tokens_expire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::at_unix(1_800_000_000));
    let as_clock: Arc<dyn Clock> = clock.clone();
    let plane = ControlPlane::start(
        open(dir.path()).await,
        config(),
        &Policy::default(),
        Arc::clone(&as_clock),
    )
    .await
    .expect("control plane starts");

    // First start: one key, and it signs.
    let first = kids(&plane);
    assert_eq!(first.len(), 1);
    let (kid, old_token) = signing_kid(&plane).await;
    assert_eq!(kid, first[0]);

    // Not due yet: nothing changes.
    clock.advance(Duration::from_hours(23));
    assert!(!plane.rotate_keys().await.expect("rotate"));
    assert_eq!(kids(&plane), first);

    // Due: a second key is published, but the first still signs (verifiers learn the new key
    // before any token carries it).
    clock.advance(Duration::from_hours(1));
    assert!(plane.rotate_keys().await.expect("rotate"));
    let both = kids(&plane);
    assert_eq!(both.len(), 2);
    let new_kid = both
        .iter()
        .find(|k| **k != first[0])
        .expect("a new key")
        .clone();
    assert_eq!(signing_kid(&plane).await.0, first[0]);

    // After the lead time the new key signs; the old one is still published, for the tokens it
    // signed in the last five minutes.
    clock.advance(Duration::from_mins(10));
    plane.rotate_keys().await.expect("rotate");
    let (kid, _) = signing_kid(&plane).await;
    assert_eq!(kid, new_kid);
    assert_eq!(kids(&plane).len(), 2);

    // A restart keeps the keys and the signer.
    drop(plane);
    let plane = ControlPlane::start(
        open(dir.path()).await,
        config(),
        &Policy::default(),
        Arc::clone(&as_clock),
    )
    .await
    .expect("control plane restarts");
    assert_eq!(kids(&plane).len(), 2);
    assert_eq!(signing_kid(&plane).await.0, new_kid);

    // Once every token of the old key has expired, it is no longer published.
    clock.advance(Duration::from_mins(7));
    assert!(plane.rotate_keys().await.expect("rotate"));
    assert_eq!(kids(&plane), vec![new_kid.clone()]);
    let verifier = Verifier::builder(ISSUER)
        .trust_jwks(&plane.jwks())
        .build()
        .expect("verifier");
    assert!(
        verifier
            .verify(
                &old_token,
                "testing",
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001)
            )
            .is_err(),
        "the old key's tokens no longer verify once it is gone"
    );
}
