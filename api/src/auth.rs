//! Logging in, trading a session for a token, and what the caller may reach.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How to log in (`POST /api/login`): exactly one of the three, as an object with one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LoginRequest {
    /// A local user's name and password.
    Password {
        /// The user's name.
        name: String,
        /// The password.
        password: String,
    },
    /// An access key, `<id>.<secret>`.
    AccessKey(String),
    /// The end of an OpenID Connect login: what the provider sent back to the redirect URI,
    /// and the PKCE verifier the client kept.
    Oidc {
        /// The `state` the login was started with.
        state: String,
        /// The authorization code.
        code: String,
        /// The PKCE code verifier.
        #[serde(default)]
        code_verifier: String,
    },
}

/// The answer to a login: a session (an access key of kind `session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Who logged in.
    pub user: String,
    /// The session's access key, `<id>.<secret>`; shown only here.
    pub access_key: String,
    /// When the session ends, if it does by time.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// Starts an OpenID Connect login (`POST /api/login/oidc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcStartRequest {
    /// The provider's name.
    pub provider: String,
    /// Where the provider sends the browser back (a loopback URL of the CLI).
    pub redirect_uri: String,
    /// The PKCE S256 challenge of the verifier the client keeps.
    pub code_challenge: String,
}

/// Where to send the browser to log in, and the state that comes back with the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcStart {
    /// The provider's authorization URL.
    pub authorize_url: String,
    /// The single-use state.
    pub state: String,
}

/// Asks for a token for one destination (`POST /api/tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The destination (cluster) the token is for.
    pub destination: String,
}

/// A short-lived token for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The signed JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// The caller (`GET /api/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// The user's name.
    pub name: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the user is an admin of the control API.
    #[serde(default)]
    pub admin: bool,
}

/// One destination (and namespace) the caller may reach, and how (`GET /api/me/access`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The destination's name.
    pub destination: String,
    /// Where its proxy is reached.
    pub url: String,
    /// Its proxy's CA certificate(s), PEM.
    #[serde(default)]
    pub ca_pem: String,
    /// The namespace of the grant; none: the whole cluster.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The role granted.
    pub role: String,
    /// When the grant lapses.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}
