//! PKCE verifiers and authorization codes: wrong, missing, reused, of another login.

use infra_tests::oidc::{INFRA_TEST, SUZIE};

use crate::{assert_refused, loopback_redirect_uri, pkce, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pkce_verifier_is_refused_and_uses_the_state_up() {
    let s = setup(INFRA_TEST, None).await;
    let pkce_of_login = pkce();
    let started = s
        .start_login(&loopback_redirect_uri(), &pkce_of_login)
        .await;
    let callback = s.authorize(&started, SUZIE).await;

    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce().verifier))
        .await;
    assert_refused(status, &body, 400, "another login's verifier");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("PKCE")),
        "the message names the verifier: {body}"
    );

    // A guess costs the login: the state is used up, the right verifier comes too late.
    let (status, body) = s
        .finish(
            &callback.state,
            &callback.code,
            Some(&pkce_of_login.verifier),
        )
        .await;
    assert_refused(status, &body, 400, "the right verifier after a wrong one");
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pkce_verifier_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    for verifier in [None, Some("")] {
        let pkce = pkce();
        let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
        let callback = s.authorize(&started, SUZIE).await;
        let (status, body) = s.finish(&callback.state, &callback.code, verifier).await;
        assert_refused(status, &body, 400, &format!("verifier {verifier:?}"));
    }
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_code_is_refused_by_the_provider() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let redirect_uri = loopback_redirect_uri();
    let first = s.start_login(&redirect_uri, &pkce).await;
    let callback = s.authorize(&first, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_eq!(status, 200, "{body}");

    // A second login in flight with the same verifier and redirect: only the code is stale.
    let second = s.start_login(&redirect_uri, &pkce).await;
    let (status, body) = s
        .finish(&second.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "a code used before");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_grant")),
        "the provider's refusal is passed on: {body}"
    );
    assert_eq!(
        s.sessions_of(SUZIE.0).await,
        1,
        "only the first login made a session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_of_another_login_fails_the_nonce_check() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let redirect_uri = loopback_redirect_uri();
    let first = s.start_login(&redirect_uri, &pkce).await;
    let second = s.start_login(&redirect_uri, &pkce).await;
    assert_ne!(first.param("nonce"), second.param("nonce"));

    // The code of the first login (its ID token carries the first nonce) with the second state.
    let callback = s.authorize(&first, SUZIE).await;
    let (status, body) = s
        .finish(&second.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "an ID token with another login's nonce");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("nonce")),
        "the message names the nonce: {body}"
    );
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}
