//! Open redirects refused when a login starts.

use infra_tests::oidc::INFRA_TEST;
use serde_json::json;

use crate::{assert_refused, loopback_redirect_uri, pkce, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_are_refused_at_start() {
    let s = setup(INFRA_TEST, None).await;
    let challenge = pkce().challenge;
    for redirect_uri in [
        "//evil.example.com",
        "//evil.example.com/callback",
        "/\\evil.example.com",
        "http://good@evil.example.com/",
        "https://evil.example.com/cb",
        "http://evil.example.com:8080/callback",
        "http://127.0.0.1@evil.example.com/callback",
        "http://127.0.0.1.evil.example.com/callback",
        "javascript:alert(1)",
        "",
    ] {
        let (status, body) = s.start_login_at(redirect_uri, &challenge).await;
        assert_refused(
            status,
            &body,
            400,
            &format!("redirect_uri {redirect_uri:?}"),
        );
        assert!(body.get("authorize_url").is_none(), "{body}");
    }
    // Nor a challenge that is not S256's.
    let (status, body) = s
        .start_login_at(&loopback_redirect_uri(), "plain-verifier")
        .await;
    assert_refused(status, &body, 400, "a challenge that is not S256");
    // An unknown provider.
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/login/oidc",
            None,
            Some(json!({
                "provider": "nobody",
                "redirect_uri": loopback_redirect_uri(),
                "code_challenge": challenge,
            })),
        )
        .await;
    assert_refused(status, &body, 404, "an unknown provider");
}
