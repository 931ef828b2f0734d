//! Re-verification at the provider ends the sessions of a user it refuses.

use infra_tests::oidc::{CARL, INFRA_TEST, SUZIE};
use infra_tests::proxy::DESTINATION;
use serde_json::json;

use crate::{PROVIDER, assert_refused, loopback_redirect_uri, pkce, setup, visit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_at_the_provider_on_recheck_ends_the_users_sessions() {
    // Re-check at every token (0 s): no test waits for a clock.
    let s = setup(INFRA_TEST, Some(0)).await;
    let suzie = s.log_in(SUZIE).await;
    let suzie_again = s.log_in(SUZIE).await;
    let carl = s.log_in(CARL).await;

    // The provider still knows her: the refresh succeeds and a token is issued.
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/tokens",
            Some(&suzie),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_eq!(status, 200, "a re-check that the provider accepts: {body}");

    // Offboarding at the provider, nothing in Infra.
    s.provider_test_route("/test/disable-account", json!({"email": SUZIE.0}))
        .await;
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/tokens",
            Some(&suzie),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_refused(
        status,
        &body,
        401,
        "a token after the provider refused the refresh",
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(PROVIDER)),
        "the message names the provider: {body}"
    );
    for key in [&suzie, &suzie_again] {
        let (status, body) = s.infra.call("GET", "/api/me", Some(key), None).await;
        assert_eq!(status, 401, "every session of hers has ended: {body}");
    }
    assert_eq!(s.sessions_of(SUZIE.0).await, 0);

    // Carl is still known to the provider: his session and tokens go on.
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/tokens",
            Some(&carl),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_eq!(status, 200, "another user of the provider: {body}");
    let (status, body) = s.infra.call("GET", "/api/me", Some(&carl), None).await;
    assert_eq!(status, 200, "{body}");

    // And she cannot simply log in again: the provider refuses her password.
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let refused = visit(&s.provider, &started.authorize_url, SUZIE).await;
    assert!(
        refused.is_err(),
        "the provider refuses a disabled account: {refused:?}"
    );
}

/// A provider user made their own access key (no expiry) and the provider later refused them:
/// the key traded for tokens and opened new sessions until every credential of the identity
/// ended with the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_a_provider_user_made_ends_when_the_provider_refuses_them() {
    // Re-check at every token (0 s): no test waits for a clock.
    let s = setup(INFRA_TEST, Some(0)).await;
    let suzie = s.log_in(SUZIE).await;
    let (status, made) = s
        .infra
        .call(
            "POST",
            "/api/keys",
            Some(&suzie),
            Some(json!({"name": "laptop-script"})),
        )
        .await;
    assert_eq!(status, 201, "her own key: {made}");
    let key = made["key"]
        .as_str()
        .expect("the new key's secret")
        .to_owned();
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/tokens",
            Some(&key),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_eq!(
        status, 200,
        "the key trades for tokens while she is known: {body}"
    );

    s.provider_test_route("/test/disable-account", json!({"email": SUZIE.0}))
        .await;
    // Whichever credential asks first meets the refusal.
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/tokens",
            Some(&key),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_refused(status, &body, 401, "a token for her key after the refusal");
    for credential in [&key, &suzie] {
        let (status, body) = s.infra.call("GET", "/api/me", Some(credential), None).await;
        assert_eq!(status, 401, "every credential of hers has ended: {body}");
        let (status, body) = s
            .infra
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"access_key": credential})),
            )
            .await;
        assert_eq!(status, 401, "no new session from it either: {body}");
    }
    assert_eq!(s.sessions_of(SUZIE.0).await, 0);
}
