//! Logins that work (also across replicas), and states Infra did not give or that are reused.

use std::collections::BTreeSet;

use base64::Engine as _;
use infra_tests::control::{ControlHarness, Options};
use infra_tests::oidc::{INFRA_TEST, SUZIE};
use infra_tests::proxy::{DESTINATION, wait_for};
use serde_json::{Value, json};

use crate::{POLICY, PROVIDER, assert_refused, loopback_redirect_uri, pkce, setup, setup_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_through_the_provider_makes_a_user_with_its_groups_and_kubectl_works() {
    let s = setup(INFRA_TEST, None).await;

    // The login screen lists the provider without credentials.
    let (status, providers) = s.infra.call("GET", "/api/providers", None, None).await;
    assert_eq!(status, 200, "{providers}");
    assert!(
        providers.to_string().contains(PROVIDER),
        "the public list shows the provider: {providers}"
    );

    let pkce = pkce();
    let redirect_uri = loopback_redirect_uri();
    let started = s.start_login(&redirect_uri, &pkce).await;
    // The authorize URL is the provider's, for our client, with our challenge and redirect.
    assert!(
        started
            .authorize_url
            .as_str()
            .starts_with(&format!("{}/", s.provider.issuer())),
        "{}",
        started.authorize_url
    );
    assert_eq!(started.param("client_id").as_deref(), Some(INFRA_TEST.id));
    assert_eq!(started.param("response_type").as_deref(), Some("code"));
    assert_eq!(started.param("redirect_uri"), Some(redirect_uri.clone()));
    assert_eq!(
        started.param("code_challenge"),
        Some(pkce.challenge.clone())
    );
    assert_eq!(
        started.param("code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(started.param("state"), Some(started.state.clone()));
    assert!(
        started.param("nonce").is_some_and(|n| n.len() >= 32),
        "a nonce: {}",
        started.authorize_url
    );
    let scopes: BTreeSet<String> = started
        .param("scope")
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    for scope in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(
            scopes.contains(scope),
            "scope {scope} asked for: {scopes:?}"
        );
    }

    let callback = s.authorize(&started, SUZIE).await;
    assert_eq!(
        callback.state, started.state,
        "the provider echoes the state"
    );
    let (status, login) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user"], SUZIE.0);
    assert!(login["expires_at"].is_string(), "{login}");
    let key = login["access_key"]
        .as_str()
        .expect("an access key")
        .to_owned();

    let (status, me) = s.infra.call("GET", "/api/me", Some(&key), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], SUZIE.0);
    assert_eq!(me["admin"], false);
    let groups: BTreeSet<&str> = me["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(groups, BTreeSet::from(["Design", "Engineering"]), "{me}");

    // No grant yet: kubectl is denied; a grant to the provider's group lets it in.
    let kubectl = s.infra.kubectl_with(&key).await;
    let denied = kubectl.run(&["get", "pods", "-n", "default"]).await;
    assert!(!denied.status.success(), "no grant yet: {denied:?}");
    assert!(denied.stderr.contains("forbidden"), "{}", denied.stderr);
    let (status, grant) = s
        .infra
        .call(
            "POST",
            "/api/grants",
            Some(&s.admin),
            Some(json!({"group": "Engineering", "role": "view", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let kubectl = s.infra.kubectl_with(&key).await;
    // The grant reaches the proxy's decisions shortly after it is made.
    wait_for(|| async {
        let out = kubectl.run(&["get", "pods", "-n", "default"]).await;
        out.status.success().then_some(())
    })
    .await;

    // A second login of the same user is the same user, with a second session.
    let again = s.log_in(SUZIE).await;
    assert_ne!(again, key);
    assert_eq!(s.sessions_of(SUZIE.0).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_infra_did_not_give_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, SUZIE).await;

    let other_state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    let (status, body) = s
        .finish(&other_state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 400, "a mismatched state");
    let (status, body) = s.finish("", &callback.code, Some(&pkce.verifier)).await;
    assert_refused(status, &body, 400, "an empty state");
    assert!(!s.has_user(SUZIE.0).await, "no user was made");

    // The refusals did not touch the login in flight: its own state still ends it.
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_state_is_refused() {
    let s = setup(INFRA_TEST, None).await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, SUZIE).await;
    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = s
        .finish(&callback.state, &callback.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 400, "the same state a second time");
    assert_eq!(
        s.sessions_of(SUZIE.0).await,
        1,
        "only the first login made a session"
    );

    // Even with a fresh code of the same user, the used state stays used.
    let fresh = s.authorize(&started, SUZIE).await;
    let (status, body) = s
        .finish(&started.state, &fresh.code, Some(&pkce.verifier))
        .await;
    assert_refused(status, &body, 400, "a used state with a fresh code");
    assert_eq!(s.sessions_of(SUZIE.0).await, 1);
}

/// Two control replicas on one PostgreSQL store: the login starts on one and the browser's
/// callback reaches the other (no session affinity needed); the state is still single use
/// across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_started_on_one_replica_finishes_on_another() {
    let s = setup_with(
        INFRA_TEST,
        Options {
            postgres: true,
            ..Options::default()
        },
    )
    .await;
    let other = ControlHarness::start_with(
        POLICY,
        Options {
            replica_of: Some(s.infra.store_of()),
            provider_ca_file: Some(s.provider.ca_file().into()),
            ..Options::default()
        },
    )
    .await;
    let pkce = pkce();
    let started = s.start_login(&loopback_redirect_uri(), &pkce).await;
    let callback = s.authorize(&started, SUZIE).await;
    let login = json!({"oidc": {"state": callback.state, "code": callback.code, "code_verifier": pkce.verifier}});
    let (status, body) = other
        .call("POST", "/api/login", None, Some(login.clone()))
        .await;
    assert_eq!(status, 200, "finishing on the other replica: {body}");
    assert_eq!(body["user"], SUZIE.0);

    // Used up on the second replica: refused on the first.
    let (status, body) = s.infra.call("POST", "/api/login", None, Some(login)).await;
    assert_refused(status, &body, 400, "the state used up on the other replica");
    assert_eq!(s.sessions_of(SUZIE.0).await, 1);
}
