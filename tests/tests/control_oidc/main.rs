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

use anyhow::Result;
use base64::Engine as _;
use infra_tests::control::{ControlHarness, Options, free_port};
use infra_tests::oidc::{OidcClient, OidcProvider, REDIRECT_URI};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

mod id_tokens;
mod identities;
mod login;
mod pkce_and_codes;
mod recheck;
mod redirects;

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
    // Boxed: the harness's start is a large future, and every test awaits this one.
    let infra = Box::pin(ControlHarness::start_with(
        POLICY,
        Options {
            provider_ca_file: Some(provider.ca_file().into()),
            ..options
        },
    ))
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
