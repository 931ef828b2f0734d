//! A client of the control API (`docs/control-api.md`): its objects, its errors, and one method per
//! route the CLI uses.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::{Server, Trust};
use crate::ui;

/// An error answer of the control API: `{"code", "message"}` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The error if `error` (or a cause) is an API error.
    pub fn find(error: &anyhow::Error) -> Option<&ApiError> {
        error.chain().find_map(|e| e.downcast_ref::<ApiError>())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderSummary {
    pub name: String,
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginResponse {
    pub user: String,
    pub access_key: String,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OidcStart {
    pub authorize_url: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Me {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    pub destination: String,
    pub url: String,
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// None: the whole cluster.
    #[serde(default)]
    pub namespace: Option<String>,
    pub role: String,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub has_password: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub revision: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: u64,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub revision: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub role: String,
    pub resource: String,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub revision: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKey {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub user: String,
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub inactivity_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
    /// `id.secret`, only in the answer to a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub revision: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub last_seen_at: Option<Timestamp>,
    #[serde(default)]
    pub connected: bool,
}

/// An id the document does not give a type: taken as a string or a number, kept as text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "an id must be a string or a number, not {other}"
        ))),
    }
}

/// How to log in (`POST /api/login`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRequest {
    Password {
        name: String,
        password: String,
    },
    AccessKey(String),
    Oidc {
        state: String,
        code: String,
        code_verifier: String,
    },
}

/// A list answer: `{"items", "page", "limit", "total"}`; a bare array is taken too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Page<T> {
    Paged {
        items: Vec<T>,
        #[serde(default)]
        total: Option<u64>,
    },
    Bare(Vec<T>),
}

/// A client of one server, with or without an access key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(server: &Server, key: Option<String>) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_mins(1))
            .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")));
        builder = builder.use_preconfigured_tls(crate::tls::client_config(&server.trust)?);
        if server.trust == Trust::InsecureSkipVerify {
            // The verifier already accepts any certificate; say so to reqwest as well.
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            http,
            base: server.url.clone(),
            key,
        })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let what = format!("{method} {url}");
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!(TransportError(e)))
            .with_context(|| what.clone())?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| anyhow!(TransportError(e)))
            .with_context(|| what.clone())?;
        if !status.is_success() {
            let error = parse_error(status, &bytes);
            let hint = match (status.as_u16(), error.code.as_str()) {
                (401, _) => Some("your session has ended or the key is wrong; run `infra login`"),
                (403, _) => Some(
                    "ask an Infra admin for a grant: `infra grants add USER infra --role admin`",
                ),
                (_, "file_owned") => Some("it is declared in the policy file: change it there"),
                (429, _) => Some("too many failed logins; wait a while and try again"),
                _ => None,
            };
            let err = anyhow::Error::new(error).context(what);
            return Err(match hint {
                Some(h) => ui::hint(err, h),
                None => err,
            });
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the answer is not the expected JSON"))?;
        Ok(Some(value))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        self.call(Method::GET, path, query, None)
            .await?
            .ok_or_else(|| anyhow!("GET {}{path}: an empty answer", self.base))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T> {
        let m = method.to_string();
        self.call(method, path, &[], Some(body))
            .await?
            .ok_or_else(|| anyhow!("{m} {}{path}: an empty answer", self.base))
    }

    async fn no_content(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        self.call::<serde_json::Value>(method, path, &[], body)
            .await
            .map(|_| ())
    }

    /// Every item of a paged list.
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>> {
        const LIMIT: u64 = 1000;
        let mut all = Vec::new();
        for page in 1u64.. {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("limit", LIMIT.to_string()));
            let (items, total) = match self.get(path, &q).await? {
                Page::Paged { items, total } => (items, total),
                Page::Bare(items) => {
                    all.extend(items);
                    break;
                }
            };
            let got = items.len() as u64;
            all.extend(items);
            let done = match total {
                Some(total) => all.len() as u64 >= total,
                None => got < LIMIT,
            };
            if done || got == 0 {
                break;
            }
        }
        Ok(all)
    }

    pub async fn version(&self) -> Result<Version> {
        self.get("/api/version", &[]).await
    }

    pub async fn providers_public(&self) -> Result<Vec<ProviderSummary>> {
        self.list("/api/providers", &[]).await
    }

    pub async fn login(&self, request: &LoginRequest) -> Result<LoginResponse> {
        self.send(Method::POST, "/api/login", serde_json::to_value(request)?)
            .await
    }

    pub async fn login_oidc(
        &self,
        provider: &str,
        redirect_uri: &str,
        code_challenge: &str,
    ) -> Result<OidcStart> {
        self.send(
            Method::POST,
            "/api/login/oidc",
            json!({"provider": provider, "redirect_uri": redirect_uri, "code_challenge": code_challenge}),
        )
        .await
    }

    pub async fn logout(&self) -> Result<()> {
        self.no_content(Method::POST, "/api/logout", None).await
    }

    pub async fn token(&self, destination: &str) -> Result<Token> {
        self.send(
            Method::POST,
            "/api/tokens",
            json!({"destination": destination}),
        )
        .await
    }

    pub async fn me(&self) -> Result<Me> {
        self.get("/api/me", &[]).await
    }

    pub async fn my_access(&self) -> Result<Vec<Access>> {
        self.list("/api/me/access", &[]).await
    }

    pub async fn users(&self, name: Option<&str>) -> Result<Vec<User>> {
        self.list("/api/users", &opt("name", name)).await
    }

    pub async fn add_user(&self, name: &str, password: Option<&str>) -> Result<User> {
        let mut body = json!({"name": name});
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        self.send(Method::POST, "/api/users", body).await
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        self.no_content(
            Method::PUT,
            &format!("/api/users/{}/password", seg(name)),
            Some(json!({"password": password})),
        )
        .await
    }

    pub async fn remove_user(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/users/{}", seg(name)), None)
            .await
    }

    pub async fn groups(&self, name: Option<&str>) -> Result<Vec<Group>> {
        self.list("/api/groups", &opt("name", name)).await
    }

    pub async fn add_group(&self, name: &str) -> Result<Group> {
        self.send(Method::POST, "/api/groups", json!({"name": name}))
            .await
    }

    pub async fn remove_group(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/groups/{}", seg(name)), None)
            .await
    }

    pub async fn add_member(&self, group: &str, user: &str) -> Result<()> {
        self.no_content(
            Method::PUT,
            &format!("/api/groups/{}/members/{}", seg(group), seg(user)),
            None,
        )
        .await
    }

    pub async fn remove_member(&self, group: &str, user: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("/api/groups/{}/members/{}", seg(group), seg(user)),
            None,
        )
        .await
    }

    pub async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>> {
        let mut q = Vec::new();
        for (k, v) in [
            ("user", &filter.user),
            ("group", &filter.group),
            ("resource", &filter.resource),
            ("destination", &filter.destination),
            ("role", &filter.role),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        self.list("/api/grants", &q).await
    }

    pub async fn add_grant(
        &self,
        user: Option<&str>,
        group: Option<&str>,
        role: &str,
        resource: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<Grant> {
        let mut body = json!({"role": role, "resource": resource});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        if let Some(g) = group {
            body["group"] = json!(g);
        }
        if let Some(t) = expires_at {
            body["expires_at"] = json!(t.to_string());
        }
        self.send(Method::POST, "/api/grants", body).await
    }

    pub async fn remove_grant(&self, id: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/grants/{}", seg(id)), None)
            .await
    }

    pub async fn keys(&self, user: Option<&str>) -> Result<Vec<AccessKey>> {
        self.list("/api/keys", &opt("user", user)).await
    }

    pub async fn add_key(
        &self,
        name: &str,
        user: Option<&str>,
        expires_at: Option<Timestamp>,
        inactivity_timeout_seconds: Option<u64>,
    ) -> Result<AccessKey> {
        let mut body = json!({"name": name});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        if let Some(t) = expires_at {
            body["expires_at"] = json!(t.to_string());
        }
        if let Some(s) = inactivity_timeout_seconds {
            body["inactivity_timeout_seconds"] = json!(s);
        }
        self.send(Method::POST, "/api/keys", body).await
    }

    pub async fn remove_key(&self, id: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/keys/{}", seg(id)), None)
            .await
    }

    pub async fn providers(&self) -> Result<Vec<Provider>> {
        // The public list has no client ids; fetch each provider for the full object.
        let summaries = self.providers_public().await?;
        let mut all = Vec::with_capacity(summaries.len());
        for s in summaries {
            all.push(self.provider(&s.name).await?);
        }
        Ok(all)
    }

    pub async fn provider(&self, name: &str) -> Result<Provider> {
        self.get(&format!("/api/providers/{}", seg(name)), &[])
            .await
    }

    pub async fn add_provider(&self, body: serde_json::Value) -> Result<Provider> {
        self.send(Method::POST, "/api/providers", body).await
    }

    pub async fn edit_provider(&self, name: &str, body: serde_json::Value) -> Result<Provider> {
        self.send(Method::PUT, &format!("/api/providers/{}", seg(name)), body)
            .await
    }

    pub async fn remove_provider(&self, name: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("/api/providers/{}", seg(name)),
            None,
        )
        .await
    }

    pub async fn destinations(&self) -> Result<Vec<Destination>> {
        self.list("/api/destinations", &[]).await
    }

    pub async fn remove_destination(&self, name: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("/api/destinations/{}", seg(name)),
            None,
        )
        .await
    }
}

#[derive(Debug, Default, Clone)]
pub struct GrantFilter {
    pub user: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub destination: Option<String>,
    pub role: Option<String>,
}

fn opt(key: &'static str, value: Option<&str>) -> Vec<(&'static str, String)> {
    value.map(|v| (key, v.to_owned())).into_iter().collect()
}

/// A path segment, percent-encoded.
fn seg(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn parse_error(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => ApiError {
            status: status.as_u16(),
            code: b.code,
            message: b.message,
        },
        Err(_) => ApiError {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect::<String>(),
        },
    }
}

/// A request that got no answer: the connection or TLS failed. Its causes (the TLS error, the
/// refused connection) are reported too.
#[derive(Debug)]
struct TransportError(reqwest::Error);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_timeout() {
            f.write_str("no answer in time")
        } else if self.0.is_connect() {
            f.write_str("cannot connect")
        } else {
            f.write_str("the request failed")
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_requests_have_the_documented_shape() {
        assert_eq!(
            serde_json::to_value(LoginRequest::Password {
                name: "a".into(),
                password: "b".into()
            })
            .expect("json"),
            json!({"password": {"name": "a", "password": "b"}})
        );
        assert_eq!(
            serde_json::to_value(LoginRequest::AccessKey("id.secret".into())).expect("json"),
            json!({"access_key": "id.secret"})
        );
        assert_eq!(
            serde_json::to_value(LoginRequest::Oidc {
                state: "s".into(),
                code: "c".into(),
                code_verifier: "v".into()
            })
            .expect("json"),
            json!({"oidc": {"state": "s", "code": "c", "code_verifier": "v"}})
        );
    }

    #[test]
    fn errors_are_read_from_the_body_or_the_status() {
        let e = parse_error(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"user \"bob\" does not exist"}"#,
        );
        assert_eq!(
            e.to_string(),
            "user \"bob\" does not exist (not_found, HTTP 404)"
        );
        let e = parse_error(StatusCode::BAD_GATEWAY, b"upstream gone");
        assert_eq!(e.code, "bad_gateway");
        assert_eq!(e.message, "upstream gone");
    }

    #[test]
    fn ids_may_be_numbers_or_strings() {
        let g: Grant = serde_json::from_value(json!({
            "id": 42, "user": "a", "group": null, "role": "view", "resource": "production",
            "expires_at": null, "source": "api", "created_at": "2026-11-22T13:50:06Z",
            "created_by": "admin", "revision": 1
        }))
        .expect("grant");
        assert_eq!(g.id, "42");
        let k: AccessKey = serde_json::from_value(json!({
            "id": "k1", "user": "a", "name": "ci", "kind": "api", "created_at": null,
            "expires_at": null, "inactivity_timeout_seconds": null, "last_used_at": null
        }))
        .expect("key");
        assert_eq!(k.id, "k1");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("suzie@example.com"), "suzie%40example.com");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
