//! Login through OpenID Connect providers: authorization code with PKCE (S256), state and nonce
//! kept here, single use and short-lived; the code exchanged with the client secret; the ID token
//! verified (issuer, audience, nonce, expiry, signature with pinned algorithms); the user from
//! the verified email; groups from the ID token or the userinfo endpoint. And re-verification:
//! a refresh at the provider that tells whether it still knows the user.
//!
//! The client (the CLI) holds the PKCE verifier and sends only its challenge here first; the
//! verifier arrives with the code, and must match the challenge before the code is exchanged.
//!
//! Logins in flight are kept in the store (the state only as its SHA-256), so with several
//! control replicas a login may start on one and finish on another; the state is used up by one
//! atomic delete, whichever replica gets it first.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use infra_authz::policy::{Provider, ProviderKind, Secret};
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenResponse as _,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};

pub use super::store::PendingLogin;

/// How long a login may take at the provider.
pub const LOGIN_LIFETIME: Duration = Duration::from_mins(10);
/// The most logins in flight at once; beyond it a new login is refused until some expire.
pub const MAX_PENDING: i64 = 10_000;
/// Logins in flight one client address may hold at once.
pub const MAX_PENDING_PER_CLIENT: i64 = 20;

/// Why an OIDC login or check failed. The message is safe to show to the user.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The request is wrong: bad redirect URI, missing or mismatched PKCE verifier, ...
    #[error("{0}")]
    BadRequest(String),
    /// The state is unknown, expired or used: start the login again.
    #[error("the login is unknown, expired or already used; start it again")]
    UnknownState,
    /// The provider refused (a bad code, a refused refresh, an ID token that does not verify).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// How a login's state is stored and looked up: its SHA-256, hex. A reader of the store cannot
/// finish someone's login with it.
pub fn state_key(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// A user the provider vouched for.
#[derive(Debug)]
pub struct Vouched {
    /// The provider's name in Infra.
    pub provider: String,
    /// The subject (`sub`): who the user is at the provider, for good.
    pub subject: String,
    /// The verified email address: the user's name in Infra.
    pub email: String,
    /// The groups the provider reports.
    pub groups: Vec<String>,
    /// The refresh token, for later checks, when the provider gave one.
    pub refresh_token: Option<Secret>,
}

/// What a check at the provider found.
#[derive(Debug)]
pub struct Checked {
    /// The groups now, when the provider said.
    pub groups: Option<Vec<String>>,
    /// A new refresh token, when the provider rotated it.
    pub refresh_token: Option<Secret>,
}

/// Logins in flight, and the HTTP client for providers.
#[derive(Debug)]
pub struct OidcLogins {
    http: reqwest::Client,
    redirect_uris: Vec<String>,
    rng: SystemRandom,
}

/// An HTTPS client for what the control plane calls out to (identity providers, on-call
/// providers, notification targets): the system roots and the configured extra CA, no
/// redirects (a redirect from a token endpoint or a webhook is an attack, never a feature), and
/// a deadline per request.
pub fn outbound_client(
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client> {
    let mut http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the provider CA file {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing the provider CA file {}", path.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    http.build().context("building the HTTP client")
}

impl OidcLogins {
    /// Ready for logins; providers' certificates are checked against the system roots and the
    /// configured extra CA.
    pub fn new(
        redirect_uris: &[String],
        provider_ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        Ok(Self {
            http: outbound_client(provider_ca_file, Duration::from_secs(15))?,
            redirect_uris: redirect_uris.to_vec(),
            rng: SystemRandom::new(),
        })
    }

    /// Starts a login: checks the redirect URI, makes a new state and nonce, and answers the
    /// provider URL to send the browser to, the state, and the login for the caller to keep
    /// (under [`state_key`]) until it ends.
    pub async fn start(
        &self,
        provider: &Provider,
        redirect_uri: &str,
        code_challenge: &str,
        now: SystemTime,
    ) -> Result<(String, String, PendingLogin), OidcError> {
        self.check_redirect_uri(redirect_uri)?;
        if code_challenge.len() != 43
            || !code_challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(OidcError::BadRequest(
                "code_challenge must be the S256 challenge of a PKCE verifier (43 base64url characters)".into(),
            ));
        }
        let (client, metadata) = self.client(provider, redirect_uri).await?;
        let state = self.random_token()?;
        let nonce = self.random_token()?;
        let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state_for_url),
                move || Nonce::new(nonce_for_url),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_extra_param("code_challenge", code_challenge.to_owned())
            .add_extra_param("code_challenge_method", "S256");
        let supported: Vec<String> = metadata
            .scopes_supported()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        for optional in ["groups", "offline_access"] {
            if supported.iter().any(|s| s == optional) {
                request = request.add_scope(Scope::new(optional.into()));
            }
        }
        if provider.kind == ProviderKind::Oidc && supported.iter().any(|s| s == "offline_access") {
            // OpenID Connect Core 1.0, section 11: a provider ignores `offline_access` (and gives
            // no refresh token, so no re-verification) unless `prompt` contains `consent`.
            // Okta and Azure give refresh tokens without it; Google is below.
            request = request.add_prompt(CoreAuthPrompt::Consent);
        }
        for extra in &provider.scopes {
            request = request.add_scope(Scope::new(extra.clone()));
        }
        if provider.kind == ProviderKind::Google {
            // Google gives refresh tokens for `access_type=offline`, not for a scope.
            request = request
                .add_extra_param("access_type", "offline")
                .add_extra_param("prompt", "consent");
        }
        let (url, _, _) = request.url();
        let pending = PendingLogin {
            provider: provider.name.clone(),
            nonce,
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: code_challenge.to_owned(),
            expires_at: now + LOGIN_LIFETIME,
        };
        Ok((url.to_string(), state, pending))
    }

    /// Ends a login whose state the caller has used up: checks that it is still live and at
    /// `provider`, checks the PKCE verifier, exchanges the code and verifies the ID token.
    pub async fn finish(
        &self,
        provider: &Provider,
        pending: PendingLogin,
        code: &str,
        code_verifier: &str,
        now: SystemTime,
    ) -> Result<Vouched, OidcError> {
        if pending.expires_at <= now || pending.provider != provider.name {
            return Err(OidcError::UnknownState);
        }
        if !(43..=128).contains(&code_verifier.len())
            || !code_verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(OidcError::BadRequest(
                "code_verifier must be the PKCE verifier of this login (43 to 128 characters)"
                    .into(),
            ));
        }
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(code_verifier.as_bytes()));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            challenge.as_bytes(),
            pending.code_challenge.as_bytes(),
        )) {
            return Err(OidcError::BadRequest(
                "the PKCE verifier does not match this login's challenge".into(),
            ));
        }
        let (client, metadata) = self.client(provider, &pending.redirect_uri).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                OidcError::Unavailable(format!("the provider has no token endpoint: {e}"))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(code_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("exchanging the code: {}", describe(&e))))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Refused("the token response has no ID token".into()))?;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(allowed_algs(&metadata));
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce.clone()))
            .map_err(|e| OidcError::Refused(format!("the ID token does not verify: {e}")))?;
        let email = claims
            .email()
            .map(|e| e.as_str().to_owned())
            .ok_or_else(|| OidcError::Refused("the ID token has no email claim".into()))?;
        // Every kind of provider, Azure included: an unverified address is a claim anyone can
        // make, and taking it would hand over the account of whoever owns it in Infra.
        if claims.email_verified() != Some(true) {
            return Err(OidcError::Refused(format!(
                "the provider has not verified the email address {email}"
            )));
        }
        // The signature was verified above; read the groups claim from the same payload.
        let groups = match groups_in_jwt(&id_token.to_string()) {
            Some(groups) => groups,
            None => self
                .userinfo_groups(&metadata, response.access_token().secret())
                .await
                .unwrap_or_default(),
        };
        Ok(Vouched {
            provider: provider.name.clone(),
            subject: claims.subject().as_str().to_owned(),
            email,
            groups,
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
        })
    }

    /// Asks the provider, with the refresh token, whether it still knows the user.
    pub async fn check(
        &self,
        provider: &Provider,
        refresh_token: &Secret,
    ) -> Result<Checked, OidcError> {
        let (client, metadata) = self.client(provider, "http://127.0.0.1/").await?;
        let response = client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_owned()))
            .map_err(|e| {
                OidcError::Unavailable(format!("the provider has no token endpoint: {e}"))
            })?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    OidcError::Refused(format!("refreshing: {}", r.error()))
                }
                other => OidcError::Unavailable(format!("refreshing: {}", describe(&other))),
            })?;
        let mut groups = response
            .id_token()
            .and_then(|t| groups_in_jwt(&t.to_string()));
        if groups.is_none() {
            groups = self
                .userinfo_groups(&metadata, response.access_token().secret())
                .await;
        }
        Ok(Checked {
            groups,
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
        })
    }

    async fn userinfo_groups(
        &self,
        metadata: &CoreProviderMetadata,
        access_token: &str,
    ) -> Option<Vec<String>> {
        let endpoint = metadata.userinfo_endpoint()?;
        let response = self
            .http
            .get(endpoint.url().as_str())
            .bearer_auth(access_token)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        string_list(body.get("groups")?)
    }

    /// Discovers the provider and builds a client for `redirect_uri`.
    async fn client(
        &self,
        provider: &Provider,
        redirect_uri: &str,
    ) -> Result<(ConfiguredClient, CoreProviderMetadata), OidcError> {
        let issuer = IssuerUrl::new(issuer_url(provider))
            .map_err(|e| OidcError::BadRequest(format!("the provider URL is not valid: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery: {}", describe(&e))))?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::BadRequest(format!("redirect_uri: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(provider.client_id.clone()),
            Some(ClientSecret::new(
                provider.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        Ok((client, metadata))
    }

    /// A redirect URI is either configured exactly, or a loopback URL of the CLI
    /// (`http://127.0.0.1:<port>/...`, `http://[::1]:<port>/...`, `http://localhost:<port>/...`).
    fn check_redirect_uri(&self, uri: &str) -> Result<(), OidcError> {
        if self.redirect_uris.iter().any(|allowed| allowed == uri) {
            return Ok(());
        }
        let refuse = || {
            OidcError::BadRequest(format!(
                "redirect_uri {uri:?} is not allowed: it must be a loopback URL (http://127.0.0.1:PORT/...) or one configured exactly"
            ))
        };
        if uri.contains('\\') || uri.contains('@') || uri.chars().any(char::is_control) {
            return Err(refuse());
        }
        let parsed = url::Url::parse(uri).map_err(|_| refuse())?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if parsed.scheme() != "http"
            || !loopback
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.fragment().is_some()
        {
            return Err(refuse());
        }
        Ok(())
    }

    fn random_token(&self) -> Result<String, OidcError> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| OidcError::Unavailable("the random number generator failed".into()))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
}

type ConfiguredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The issuer URL of a provider: its URL with `https://` when it names only a host, or the
/// well-known issuer of its kind.
pub fn issuer_url(provider: &Provider) -> String {
    let url = provider.url.trim_end_matches('/');
    if url.starts_with("https://") || url.starts_with("http://") {
        return url.to_owned();
    }
    match provider.kind {
        ProviderKind::Google if url.is_empty() => "https://accounts.google.com".to_owned(),
        _ => format!("https://{url}"),
    }
}

/// The asymmetric algorithms the provider says it signs ID tokens with (never `none` or HS*,
/// which a client secret would verify).
fn allowed_algs(metadata: &CoreProviderMetadata) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    let asymmetric = [
        A::RsaSsaPkcs1V15Sha256,
        A::RsaSsaPkcs1V15Sha384,
        A::RsaSsaPkcs1V15Sha512,
        A::RsaSsaPssSha256,
        A::RsaSsaPssSha384,
        A::RsaSsaPssSha512,
        A::EcdsaP256Sha256,
        A::EcdsaP384Sha384,
        A::EdDsa,
    ];
    let advertised = metadata.id_token_signing_alg_values_supported();
    let allowed: Vec<_> = asymmetric
        .into_iter()
        .filter(|a| advertised.contains(a))
        .collect();
    if allowed.is_empty() {
        vec![A::RsaSsaPkcs1V15Sha256]
    } else {
        allowed
    }
}

/// The `groups` claim of a JWT whose signature was verified by the caller.
fn groups_in_jwt(jwt: &str) -> Option<Vec<String>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    string_list(claims.get("groups")?)
}

fn string_list(value: &serde_json::Value) -> Option<Vec<String>> {
    Some(
        value
            .as_array()?
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
    )
}

/// An error and its causes on one line.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> OidcLogins {
        let redirect_uris = vec!["https://infra.example.com/login/callback".to_owned()];
        OidcLogins::new(&redirect_uris, None).expect("logins")
    }

    #[test]
    fn loopback_and_configured_redirects_are_allowed() {
        let logins = logins();
        for ok in [
            "http://127.0.0.1:43123/callback",
            "http://[::1]:9999/cb",
            "http://localhost:8080/callback",
            "https://infra.example.com/login/callback",
        ] {
            assert!(logins.check_redirect_uri(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn open_redirects_are_refused() {
        let logins = logins();
        for bad in [
            "//evil.example.com/callback",
            "/\\evil.example.com",
            "http://good@evil.example.com/",
            "http://127.0.0.1@evil.example.com/",
            "http://127.0.0.1:80\\@evil.example.com/",
            "https://127.0.0.1:8443/callback",
            "http://evil.example.com/callback",
            "http://127.0.0.1.evil.example.com/",
            "https://infra.example.com/login/callback/../../evil",
            "https://infra.example.com/login/callback?next=evil",
            "javascript:alert(1)",
            "",
        ] {
            assert!(logins.check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn provider_urls_become_issuers() {
        let provider = |kind, url: &str| Provider {
            name: "p".into(),
            url: url.into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            kind,
            scopes: vec![],
        };
        assert_eq!(
            issuer_url(&provider(ProviderKind::Okta, "acme.okta.com")),
            "https://acme.okta.com"
        );
        assert_eq!(
            issuer_url(&provider(ProviderKind::Google, "")),
            "https://accounts.google.com"
        );
        assert_eq!(
            issuer_url(&provider(ProviderKind::Oidc, "https://127.0.0.1:3000/")),
            "https://127.0.0.1:3000"
        );
    }

    #[test]
    fn groups_come_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","groups":["a","b",3]}"#);
        assert_eq!(
            groups_in_jwt(&format!("h.{payload}.s")),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(groups_in_jwt("h.e30.s"), None);
        assert_eq!(groups_in_jwt("garbage"), None);
    }
}
