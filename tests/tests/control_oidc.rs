//! Login through a real OpenID Connect provider (`oidc-provider` from npm, `tests/oidc`), end
//! to end: the control plane with its embedded store, the provider added through the API, the
//! provider's own login form driven by an HTTP client (cookies on, redirects off, trusting only
//! the provider's test CA), and the login completed through `POST /api/login`.
//!
//! The test plays the CLI: it makes the PKCE verifier and challenge, picks a loopback redirect
//! URI with a port of its own (nothing listens there: the browser stops at the provider's
//! redirect, and the test reads `code` and `state` from its `Location`), and posts the code and
//! the verifier to Infra.
//!
//! Logins in flight live in the store: one started on a control replica finishes on another.
//! Refused logins get a 4xx with a JSON error and no session; re-verification at the provider
//! ends the sessions of a user the provider no longer knows.

use std::collections::BTreeSet;

use anyhow::Result;
use base64::Engine as _;
use infra_tests::control::{ControlHarness, Options, free_port};
use infra_tests::oidc::{
    CARL, INFRA_TEST, OTHER_APP, OidcClient, OidcProvider, REDIRECT_URI, SUZIE, UNVERIFIED,
};
use infra_tests::proxy::{DESTINATION, wait_for};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The provider's name in Infra.
const PROVIDER: &str = "example";

/// No grants in the file: every grant of these tests is made through the API.
const POLICY: &str = "grants: []\n";

/// A provider, Infra with that provider registered, and the admin's session key.
struct Setup {
    provider: OidcProvider,
    infra: ControlHarness,
    admin: String,
}

/// Starts the provider and Infra (trusting the provider's CA), and registers the provider
/// through the API as `client`.
async fn setup(client: OidcClient, provider_recheck_seconds: Option<u64>) -> Setup {
    setup_with(
        client,
        Options {
            provider_recheck_seconds,
            ..Options::default()
        },
    )
    .await
}

/// [`setup`] with Infra's other options.
async fn setup_with(client: OidcClient, options: Options) -> Setup {
    let provider = OidcProvider::start().await;
    let infra = ControlHarness::start_with(
        POLICY,
        Options {
            provider_ca_file: Some(provider.ca_file().into()),
            ..options
        },
    )
    .await;
    let admin = infra.admin().await;
    let (status, body) = infra
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({
                "name": PROVIDER,
                "kind": "oidc",
                "url": provider.issuer(),
                "client_id": client.id,
                "client_secret": client.secret,
            })),
        )
        .await;
    assert_eq!(status, 201, "creating the provider: {body}");
    assert_eq!(body["client_id"], client.id);
    assert!(
        body.get("client_secret").is_none(),
        "the API never shows the client secret: {body}"
    );
    Setup {
        provider,
        infra,
        admin,
    }
}

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

/// A PKCE verifier and its S256 challenge (RFC 7636), as the CLI makes them.
struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// A loopback redirect URI on a port the test picked, as the CLI's local listener would have.
fn loopback_redirect_uri() -> String {
    format!("http://127.0.0.1:{}/callback", free_port().port())
}

/// A login Infra started: where to send the browser, and the state to finish it with.
struct Started {
    authorize_url: Url,
    state: String,
    redirect_uri: String,
}

impl Started {
    /// A query parameter of the authorize URL.
    fn param(&self, name: &str) -> Option<String> {
        query_param(&self.authorize_url, name)
    }
}

/// Where the provider sent the browser back: the code and the state of the callback.
struct Callback {
    code: String,
    state: String,
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

impl Setup {
    /// `POST /api/login/oidc`: status and body.
    async fn start_login_at(&self, redirect_uri: &str, challenge: &str) -> (u16, Value) {
        self.infra
            .call(
                "POST",
                "/api/login/oidc",
                None,
                Some(json!({
                    "provider": PROVIDER,
                    "redirect_uri": redirect_uri,
                    "code_challenge": challenge,
                })),
            )
            .await
    }

    /// Starts a login that must be accepted.
    async fn start_login(&self, redirect_uri: &str, pkce: &Pkce) -> Started {
        let (status, body) = self.start_login_at(redirect_uri, &pkce.challenge).await;
        assert_eq!(status, 200, "starting the login: {body}");
        let authorize_url = body["authorize_url"]
            .as_str()
            .and_then(|url| Url::parse(url).ok())
            .unwrap_or_else(|| panic!("no authorize_url URL in {body}"));
        let state = body["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no state in {body}"))
            .to_owned();
        Started {
            authorize_url,
            state,
            redirect_uri: redirect_uri.to_owned(),
        }
    }

    /// Signs `user` in at the provider through the authorize URL; answers the callback.
    async fn authorize(&self, started: &Started, user: (&str, &str)) -> Callback {
        let callback = visit(&self.provider, &started.authorize_url, user)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "signing {} in at the provider: {error:#}\nthe provider's stderr:\n{}",
                    user.0,
                    self.provider.stderr()
                )
            });
        assert!(
            callback.as_str().starts_with(&started.redirect_uri),
            "the provider sends the browser back to {}, not to {callback}",
            started.redirect_uri
        );
        assert_eq!(
            query_param(&callback, "error"),
            None,
            "the provider refused: {callback}"
        );
        Callback {
            code: query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}")),
            state: query_param(&callback, "state")
                .unwrap_or_else(|| panic!("no state in {callback}")),
        }
    }

    /// `POST /api/login` with an OIDC code: status and body. `None` leaves the verifier out.
    async fn finish(&self, state: &str, code: &str, verifier: Option<&str>) -> (u16, Value) {
        let mut oidc = json!({"state": state, "code": code});
        if let Some(verifier) = verifier {
            oidc["code_verifier"] = json!(verifier);
        }
        self.infra
            .call("POST", "/api/login", None, Some(json!({"oidc": oidc})))
            .await
    }

    /// A whole login of `user` that must succeed; answers the session key.
    async fn log_in(&self, user: (&str, &str)) -> String {
        let pkce = pkce();
        let started = self.start_login(&loopback_redirect_uri(), &pkce).await;
        let callback = self.authorize(&started, user).await;
        assert_eq!(callback.state, started.state);
        let (status, body) = self
            .finish(&callback.state, &callback.code, Some(&pkce.verifier))
            .await;
        assert_eq!(status, 200, "the login of {}: {body}", user.0);
        assert_eq!(body["user"], user.0);
        body["access_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_key in {body}"))
            .to_owned()
    }

    /// The session keys `user` holds, as the admin sees them.
    async fn sessions_of(&self, user: &str) -> usize {
        let (status, body) = self
            .infra
            .call(
                "GET",
                &format!("/api/keys?user={user}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "keys of {user}: {body}");
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {body}"))
            .iter()
            .filter(|key| key["kind"] == "session")
            .count()
    }

    /// Whether Infra has a user of that name.
    async fn has_user(&self, user: &str) -> bool {
        let (status, body) = self
            .infra
            .call(
                "GET",
                &format!("/api/users/{user}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert!(status == 200 || status == 404, "GET user {user}: {body}");
        status == 200
    }

    /// A test-only route of the provider (`server.mjs`).
    async fn provider_test_route(&self, path: &str, body: Value) {
        let http = provider_http(&self.provider);
        let url = format!("{}{path}", self.provider.issuer());
        let response = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("the provider answers");
        let status = response.status();
        let text = response.text().await.expect("the provider's answer reads");
        assert!(status.is_success(), "POST {url}: {status}: {text}");
    }
}

/// A browser with no session at `provider`: follows its redirects, posts its login form,
/// and stops at the first redirect away from the provider (the callback), answered.
async fn visit(
    provider: &OidcProvider,
    start: &Url,
    (user, password): (&str, &str),
) -> Result<Url> {
    provider.try_sign_in(start, user, password).await
}

/// A refusal: `expected` status, a JSON error with a code and a message, and no session key.
#[track_caller]
fn assert_refused(status: u16, body: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        body["code"].is_string() && body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: the error is JSON with a code and a message: {body}"
    );
    assert!(
        body.get("access_key").is_none(),
        "{what}: no session: {body}"
    );
}

/// An ID token of `client` from `provider` with the given `nonce`, through the code flow in a
/// browser of its own, at the clients' registered redirect URI.
async fn id_token_with_nonce(
    provider: &OidcProvider,
    client: OidcClient,
    user: (&str, &str),
    nonce: &str,
) -> String {
    let pkce = pkce();
    let discovery: Value = provider_get_json(
        provider,
        &format!("{}/.well-known/openid-configuration", provider.issuer()),
    )
    .await;
    let endpoint = |name: &str| {
        discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("the discovery has no {name}: {discovery}"))
            .to_owned()
    };
    let authorize = Url::parse_with_params(
        &endpoint("authorization_endpoint"),
        [
            ("response_type", "code"),
            ("client_id", client.id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid email profile groups"),
            ("state", "s"),
            ("nonce", nonce),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("the authorize URL parses");
    let callback = visit(provider, &authorize, user)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "signing {} in for {}: {error:#}\n{}",
                user.0,
                client.id,
                provider.stderr()
            )
        });
    let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));
    let http = provider_http(provider);
    let response = http
        .post(endpoint("token_endpoint"))
        .basic_auth(client.id, Some(client.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .expect("the token endpoint answers");
    let status = response.status();
    let tokens: Value = response
        .json()
        .await
        .expect("the token endpoint answers JSON");
    assert!(
        status.is_success(),
        "the token endpoint: {status}: {tokens}"
    );
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token in {tokens}"))
        .to_owned()
}

fn provider_http(provider: &OidcProvider) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(provider.ca_pem().as_bytes())
                .expect("the provider's CA parses"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("an HTTP client builds")
}

async fn provider_get_json(provider: &OidcProvider, url: &str) -> Value {
    let response = provider_http(provider)
        .get(url)
        .send()
        .await
        .expect("the provider answers");
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.expect("the provider answers JSON")
}

/// The JSON payload of a JWT (not verified: for assertions on what a test made).
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}
