//! ID tokens and codes for another client or from another issuer, and unverified emails.

use infra_tests::oidc::{INFRA_TEST, OTHER_APP, OidcProvider, SUZIE, UNVERIFIED};
use serde_json::json;

use crate::{
    Started, assert_refused, id_token_with_nonce, jwt_claims, loopback_redirect_uri, pkce, setup,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_client_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let nonce = started.param("nonce").expect("a nonce");

    // A genuine ID token of the same provider and user, with this login's nonce, for other-app;
    // the provider's token endpoint answers Infra with it instead of its own.
    let foreign = id_token_with_nonce(&s.provider, OTHER_APP, SUZIE, &nonce).await;
    let claims = jwt_claims(&foreign);
    assert_eq!(claims["aud"], OTHER_APP.id, "{claims}");
    assert_eq!(claims["iss"], s.provider.issuer(), "{claims}");
    assert_eq!(claims["nonce"], nonce.as_str(), "{claims}");
    s.provider_test_route("/test/next-id-token", json!({"id_token": foreign}))
        .await;

    let callback = s.authorize(&started, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "an ID token of other-app");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("audience")),
        "refused for its audience: {body}"
    );
    assert!(
        s.provider.stderr().contains("ID token set by the test"),
        "the provider did swap the token in:\n{}",
        s.provider.stderr()
    );
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_another_issuer_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    let elsewhere = OidcProvider::start().await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let nonce = started.param("nonce").expect("a nonce");

    // An ID token for the same client id, user and nonce, from another provider.
    let foreign = id_token_with_nonce(&elsewhere, INFRA_TEST, SUZIE, &nonce).await;
    let claims = jwt_claims(&foreign);
    assert_eq!(claims["iss"], elsewhere.issuer(), "{claims}");
    assert_eq!(claims["aud"], INFRA_TEST.id, "{claims}");
    s.provider_test_route("/test/next-id-token", json!({"id_token": foreign}))
        .await;

    let callback = s.authorize(&started, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "an ID token of another issuer");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("issuer")),
        "refused for its issuer: {body}"
    );
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_issued_to_another_client_is_refused() {
    // Infra is registered as other-app; the browser is sent to the provider as infra-test.
    let s = setup(OTHER_APP, None).await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    assert_eq!(started.param("client_id").as_deref(), Some(OTHER_APP.id));
    let mut swapped = started.authorize_url.clone();
    let pairs: Vec<(String, String)> = swapped
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "client_id" {
                INFRA_TEST.id.into()
            } else {
                v
            };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    swapped.query_pairs_mut().clear().extend_pairs(pairs);
    let swapped = Started {
        authorize_url: swapped,
        state: started.state.clone(),
        redirect_uri: started.redirect_uri.clone(),
    };
    let callback = s.authorize(&swapped, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(
        status,
        &body,
        401,
        "a code of infra-test redeemed as other-app",
    );
    assert!(!s.has_user(SUZIE.0).await, "no user was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, UNVERIFIED).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "an unverified email");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not verified")),
        "{body}"
    );
    assert!(!s.has_user(UNVERIFIED.0).await, "no user was made");
    assert_eq!(s.sessions_of(UNVERIFIED.0).await, 0);
}
