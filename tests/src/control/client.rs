//! A typed client of the control API for tests: each call answers the `infra-api` type the
//! route documents, or the status and error body the API answered instead. Tests that send
//! malformed input on purpose use [`super::ControlHarness::call`] instead.

use infra_api::{
    Access, AccessKey, ErrorBody, Grant, Group, LoginRequest, LoginResponse, Me, NewGrant,
    NewGroup, NewKey, NewUser, Page, Token, TokenRequest, User,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A refusal: the HTTP status and the `{code, message}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The status.
    pub status: u16,
    /// The body.
    pub body: ErrorBody,
}

/// What a call answers.
pub type Answer<T> = Result<T, Refused>;

/// The control API as one caller (an access key, or none) sees it.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client of the control API at `base` calling with `key`.
    pub fn new(http: reqwest::Client, base: String, key: Option<&str>) -> Self {
        Self {
            http,
            base,
            key: key.map(str::to_owned),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Answer<T> {
        let what = format!("{method} {path}");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the control API answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("the body");
        if !(200..300).contains(&status) {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{what}: {status} without an error body ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            return Err(Refused { status, body });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        Ok(serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!(
                "{what}: the answer is not the documented type ({e}): {}",
                String::from_utf8_lossy(bytes)
            )
        }))
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Answer<T> {
        self.send(reqwest::Method::GET, path, None::<&()>).await
    }

    /// `POST path` with `body`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + Sync),
    ) -> Answer<T> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with no body (memberships).
    pub async fn put_empty(&self, path: &str) -> Answer<()> {
        self.send(reqwest::Method::PUT, path, None::<&()>).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer<()> {
        self.send(reqwest::Method::DELETE, path, None::<&()>).await
    }

    /// Every item of the list at `path` (one page of up to 1000).
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Answer<Vec<T>> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let page: Page<T> = self.get(&format!("{path}{separator}limit=1000")).await?;
        Ok(page.items)
    }

    /// Logs in with a password.
    pub async fn login(&self, name: &str, password: &str) -> Answer<LoginResponse> {
        let request = LoginRequest::Password {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.post("/api/login", &request).await
    }

    /// A token for `destination`.
    pub async fn token(&self, destination: &str) -> Answer<Token> {
        let request = TokenRequest {
            destination: destination.to_owned(),
        };
        self.post("/api/tokens", &request).await
    }

    /// The caller.
    pub async fn me(&self) -> Answer<Me> {
        self.get("/api/me").await
    }

    /// Where the caller may go.
    pub async fn my_access(&self) -> Answer<Vec<Access>> {
        self.list("/api/me/access").await
    }

    /// Makes a user, with a password if given.
    pub async fn create_user(&self, name: &str, password: Option<&str>) -> Answer<User> {
        let request = NewUser {
            name: name.to_owned(),
            password: password.map(str::to_owned),
        };
        self.post("/api/users", &request).await
    }

    /// Makes a group.
    pub async fn create_group(&self, name: &str) -> Answer<Group> {
        let request = NewGroup {
            name: name.to_owned(),
        };
        self.post("/api/groups", &request).await
    }

    /// Adds `user` to `group`.
    pub async fn add_member(&self, group: &str, user: &str) -> Answer<()> {
        self.put_empty(&format!("/api/groups/{group}/members/{user}"))
            .await
    }

    /// Makes a grant.
    pub async fn create_grant(&self, grant: &NewGrant) -> Answer<Grant> {
        self.post("/api/grants", grant).await
    }

    /// Every grant the caller may see.
    pub async fn grants(&self) -> Answer<Vec<Grant>> {
        self.list("/api/grants").await
    }

    /// Makes an API access key for the caller (or `user`, as an admin).
    pub async fn create_key(&self, name: &str, user: Option<&str>) -> Answer<AccessKey> {
        let request = NewKey {
            name: name.to_owned(),
            user: user.map(str::to_owned),
            expires_at: None,
            inactivity_timeout_seconds: None,
        };
        self.post("/api/keys", &request).await
    }
}

/// A grant of `role` on `resource` to user `user`.
pub fn user_grant(user: &str, role: &str, resource: &str) -> NewGrant {
    NewGrant {
        user: Some(user.to_owned()),
        group: None,
        role: role.to_owned(),
        resource: resource.to_owned(),
        expires_at: None,
    }
}

/// A grant of `role` on `resource` to group `group`.
pub fn group_grant(group: &str, role: &str, resource: &str) -> NewGrant {
    NewGrant {
        user: None,
        group: Some(group.to_owned()),
        role: role.to_owned(),
        resource: resource.to_owned(),
        expires_at: None,
    }
}
