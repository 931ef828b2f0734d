//! Who a provider login is: (provider, subject), never a user of another origin by email alone
//! (the "nOAuth" takeover), unverified emails refused on every kind of provider, and provider
//! groups kept apart from Infra's own groups of the same name.

use infra_tests::oidc::{INFRA_TEST, SUZIE, UNVERIFIED};
use serde_json::json;

use crate::{PROVIDER, assert_refused, loopback_redirect_uri, pkce, setup};

const LOCAL_PASSWORD: &str = "a-local-password-of-suzie";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_login_does_not_take_over_a_local_user_with_the_same_email() {
    let s = setup(INFRA_TEST, None).await;
    // A local user with a password holds the name the provider will vouch for.
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/users",
            Some(&s.admin),
            Some(json!({"name": SUZIE.0, "password": LOCAL_PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 401, "a provider login naming a local user");
    let message = body["message"].as_str().expect("a message").to_owned();
    assert!(message.contains("infra users link"), "{message}");
    // The message names the subject to link; an admin links it, and the next login is her.
    let subject = message
        .rsplit("--subject ")
        .next()
        .map(|rest| rest.trim_end_matches(')').trim().to_owned())
        .expect("the subject");
    let (status, body) = s
        .infra
        .call(
            "POST",
            &format!("/api/users/{}/identities", SUZIE.0),
            Some(&s.admin),
            Some(json!({"provider": PROVIDER, "subject": subject})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let key = s.log_in(SUZIE).await;
    let (status, me) = s.infra.call("GET", "/api/me", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], SUZIE.0);
    // Her local password still works: the link added a way in, it took nothing away.
    let _ = s.infra.login(SUZIE.0, LOCAL_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_is_refused_by_azure_providers_too() {
    let s = setup(INFRA_TEST, None).await;
    let (status, current) = s
        .infra
        .call(
            "GET",
            &format!("/api/providers/{PROVIDER}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{current}");
    // The same provider, said to be Azure (which once skipped `email_verified`).
    let (status, body) = s
        .infra
        .call(
            "PUT",
            &format!("/api/providers/{PROVIDER}"),
            Some(&s.admin),
            Some(json!({
                "kind": "azure",
                "url": current["url"],
                "client_id": current["client_id"],
                "revision": current["revision"],
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, UNVERIFIED).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(
        status,
        &body,
        401,
        "an unverified email at an Azure provider",
    );
    // A verified one still logs in.
    let _ = s.log_in(SUZIE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_groups_do_not_join_infra_groups_of_the_same_name() {
    let s = setup(INFRA_TEST, None).await;
    // An Infra group named like one of the provider's (the provider reports Engineering and
    // Design for suzie).
    let (status, body) = s
        .infra
        .call(
            "POST",
            "/api/groups",
            Some(&s.admin),
            Some(json!({"name": "Engineering"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = s.log_in(SUZIE).await;
    let (status, me) = s.infra.call("GET", "/api/me", Some(&key), None).await;
    assert_eq!(status, 200, "{me}");
    let groups: Vec<&str> = me["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert_eq!(groups, ["Design"], "only the group the provider made: {me}");
}
