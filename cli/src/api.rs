//! A client of the control API (`docs/control-api.md`): one method per route the CLI uses, on
//! the wire types of `infra-api` (the CLI declares none of its own), and its errors.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

pub use infra_api::{
    Access, AccessKey, Destination, Grant, Group, IdentityLink, LoginRequest, LoginResponse, Me,
    NewGrant, NewGroup, NewKey, NewPassword, NewUser, OidcStart, OidcStartRequest, Page, Provider,
    ProviderBody, ProviderSummary, Token, TokenRequest, User, Version,
};

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
                // A request's refusal says what would cover it; its reviewers are not admins.
                (403, _) if path.starts_with("/api/requests") => None,
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
        body: &impl Serialize,
    ) -> Result<T> {
        let m = method.to_string();
        let body = serde_json::to_value(body).context("encoding the request")?;
        self.call(method, path, &[], Some(body))
            .await?
            .ok_or_else(|| anyhow!("{m} {}{path}: an empty answer", self.base))
    }

    async fn no_content(
        &self,
        method: Method,
        path: &str,
        body: Option<&NewPassword>,
    ) -> Result<()> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .context("encoding the request")?;
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
        const LIMIT: usize = 1000;
        let mut all = Vec::new();
        for page in 1usize.. {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("limit", LIMIT.to_string()));
            let Page { items, total, .. } = self.get::<Page<T>>(path, &q).await?;
            let got = items.len();
            all.extend(items);
            if all.len() >= total || got == 0 {
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
        self.send(Method::POST, "/api/login", request).await
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
            &OidcStartRequest {
                provider: provider.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
            },
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
            &TokenRequest {
                destination: destination.to_owned(),
            },
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
        let body = NewUser {
            name: name.to_owned(),
            password: password.map(str::to_owned),
        };
        self.send(Method::POST, "/api/users", &body).await
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        self.no_content(
            Method::PUT,
            &format!("/api/users/{}/password", seg(name)),
            Some(&NewPassword {
                password: password.to_owned(),
            }),
        )
        .await
    }

    pub async fn unlock_user(&self, name: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("/api/users/{}/lockout", seg(name)),
            None,
        )
        .await
    }

    pub async fn link_identity(&self, name: &str, provider: &str, subject: &str) -> Result<()> {
        let body = IdentityLink {
            provider: provider.to_owned(),
            subject: subject.to_owned(),
        };
        let _: serde_json::Value = self
            .call(
                Method::POST,
                &format!("/api/users/{}/identities", seg(name)),
                &[],
                Some(serde_json::to_value(&body).context("encoding the request")?),
            )
            .await?
            .unwrap_or_default();
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/users/{}", seg(name)), None)
            .await
    }

    pub async fn groups(&self, name: Option<&str>) -> Result<Vec<Group>> {
        self.list("/api/groups", &opt("name", name)).await
    }

    pub async fn add_group(&self, name: &str) -> Result<Group> {
        let body = NewGroup {
            name: name.to_owned(),
        };
        self.send(Method::POST, "/api/groups", &body).await
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
        let body = NewGrant {
            user: user.map(str::to_owned),
            group: group.map(str::to_owned),
            role: role.to_owned(),
            resource: resource.to_owned(),
            expires_at: expires_at.map(|t| t.to_string()),
        };
        self.send(Method::POST, "/api/grants", &body).await
    }

    pub async fn remove_grant(&self, id: i64) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/grants/{id}"), None)
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
        let body = NewKey {
            name: name.to_owned(),
            user: user.map(str::to_owned),
            expires_at: expires_at.map(|t| t.to_string()),
            inactivity_timeout_seconds,
        };
        self.send(Method::POST, "/api/keys", &body).await
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

    pub async fn add_provider(&self, body: &ProviderBody) -> Result<Provider> {
        self.send(Method::POST, "/api/providers", body).await
    }

    pub async fn edit_provider(&self, name: &str, body: &ProviderBody) -> Result<Provider> {
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

    pub async fn ask(&self, new: &infra_api::NewRequest) -> Result<infra_api::AccessRequest> {
        self.send(Method::POST, "/api/requests", new).await
    }

    pub async fn requests(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<infra_api::AccessRequest>> {
        self.list("/api/requests", query).await
    }

    pub async fn request(&self, id: i64) -> Result<infra_api::AccessRequest> {
        self.get(&format!("/api/requests/{id}"), &[]).await
    }

    /// `action` is approve, deny, cancel or revoke.
    pub async fn act_on_request(
        &self,
        id: i64,
        action: &str,
        comment: Option<String>,
    ) -> Result<infra_api::AccessRequest> {
        self.send(
            Method::POST,
            &format!("/api/requests/{id}/{action}"),
            &infra_api::RequestComment { comment },
        )
        .await
    }

    pub async fn request_rules(&self) -> Result<Vec<infra_api::RequestRule>> {
        self.list("/api/request-rules", &[]).await
    }

    pub async fn why(&self, query: &[(&str, String)]) -> Result<infra_api::Why> {
        self.get("/api/why", query).await
    }

    /// A page of the audit trail, newest first.
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<infra_api::audit::EventPage> {
        self.get("/api/audit", query).await
    }

    /// Follows the audit trail: calls `each` with every event as it arrives, until the server
    /// ends the stream.
    pub async fn follow_audit(
        &self,
        query: &[(&str, String)],
        mut each: impl FnMut(infra_api::audit::Event) -> Result<()>,
    ) -> Result<()> {
        let url = format!("{}/api/audit/stream", self.base);
        let mut request = self
            .http
            .get(&url)
            .query(query)
            // The stream lives up to an hour; the server says when it ends.
            .timeout(Duration::from_hours(2));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let what = format!("GET {url}");
        let mut response = request
            .send()
            .await
            .map_err(|e| anyhow!(TransportError(e)))
            .with_context(|| what.clone())?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(anyhow::Error::new(parse_error(status, &bytes)).context(what));
        }
        let mut pending = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow!(TransportError(e)))
            .with_context(|| what.clone())?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.len() <= 1 {
                    continue; // a keep-alive
                }
                let event = serde_json::from_slice(&line)
                    .with_context(|| format!("{what}: a line that is not an audit event"))?;
                each(event)?;
            }
        }
        Ok(())
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
    match serde_json::from_slice::<infra_api::ErrorBody>(body) {
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
    use serde_json::json;

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
    fn path_segments_are_encoded() {
        assert_eq!(seg("suzie@example.com"), "suzie%40example.com");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
