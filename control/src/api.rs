//! The control API: JSON over HTTPS under `/api` (see `docs/control-api.md` and
//! `control/openapi.yaml`). Every handler is a thin layer over the [`ControlPlane`] and its store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use infra_authz::policy::{
    CONTROL_RESOURCE, Grant, Provider, ProviderKind, Resource, Secret, Subject,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::oidc::{self, OidcError};
use super::plane::{ControlPlane, owned};
use super::store::{
    AccessKey, Destination, KeyError, KeyKind, LoginError, NewAccessKey, NewDestination,
    StoreError, StoredGrant, StoredProvider, User,
};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// Every route: method and path, as the OpenAPI document names them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/version"),
    ("get", "/api/openapi.yaml"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/api/providers"),
    ("post", "/api/providers"),
    ("get", "/api/providers/{name}"),
    ("put", "/api/providers/{name}"),
    ("delete", "/api/providers/{name}"),
    ("post", "/api/login"),
    ("post", "/api/login/oidc"),
    ("post", "/api/logout"),
    ("post", "/api/tokens"),
    ("get", "/api/me"),
    ("get", "/api/me/access"),
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("get", "/api/users/{name}"),
    ("delete", "/api/users/{name}"),
    ("put", "/api/users/{name}/password"),
    ("get", "/api/groups"),
    ("post", "/api/groups"),
    ("get", "/api/groups/{name}"),
    ("delete", "/api/groups/{name}"),
    ("get", "/api/groups/{name}/members"),
    ("put", "/api/groups/{name}/members/{user}"),
    ("delete", "/api/groups/{name}/members/{user}"),
    ("get", "/api/grants"),
    ("post", "/api/grants"),
    ("get", "/api/grants/{id}"),
    ("put", "/api/grants/{id}"),
    ("delete", "/api/grants/{id}"),
    ("get", "/api/keys"),
    ("post", "/api/keys"),
    ("delete", "/api/keys/{id}"),
    ("get", "/api/destinations"),
    ("put", "/api/destinations/{name}"),
    ("delete", "/api/destinations/{name}"),
    ("get", "/api/sync/{destination}"),
];

/// A destination whose proxy was heard from within this long counts as connected.
pub const CONNECTED_WITHIN: Duration = Duration::from_mins(2);

type Plane = State<Arc<ControlPlane>>;
type ApiResult<T = Response> = Result<T, ApiError>;

/// The API's routes.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/api/version", get(version))
        .route("/api/openapi.yaml", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/providers", get(list_providers).post(create_provider))
        .route(
            "/api/providers/{name}",
            get(get_provider)
                .put(update_provider)
                .delete(delete_provider),
        )
        .route("/api/login", post(login))
        .route("/api/login/oidc", post(start_oidc_login))
        .route("/api/logout", post(logout))
        .route("/api/tokens", post(issue_token))
        .route("/api/me", get(me))
        .route("/api/me/access", get(my_access))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{name}", get(get_user).delete(delete_user))
        .route("/api/users/{name}/password", put(set_password))
        .route("/api/groups", get(list_groups).post(create_group))
        .route("/api/groups/{name}", get(get_group).delete(delete_group))
        .route("/api/groups/{name}/members", get(list_members))
        .route(
            "/api/groups/{name}/members/{user}",
            put(add_member).delete(remove_member),
        )
        .route("/api/grants", get(list_grants).post(create_grant))
        .route(
            "/api/grants/{id}",
            get(get_grant).put(update_grant).delete(delete_grant),
        )
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{id}", axum::routing::delete(delete_key))
        .route("/api/destinations", get(list_destinations))
        .route(
            "/api/destinations/{name}",
            put(put_destination).delete(delete_destination),
        )
        .route("/api/sync/{destination}", get(sync))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(plane)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: a status, a code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    fn file_owned(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "file_owned", message)
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "control API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control plane failed; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { .. } => Self::not_found(error.to_string()),
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => {
                Self::conflict(error.to_string())
            }
            StoreError::InvalidName(_) | StoreError::WeakPassword(_) => {
                Self::bad_request(error.to_string())
            }
            _ => Self::internal(&error),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<StoreError>() {
            Ok(store) => store.into(),
            Err(other) => Self::internal(&format!("{other:#}")),
        }
    }
}

impl From<OidcError> for ApiError {
    fn from(error: OidcError) -> Self {
        match &error {
            OidcError::BadRequest(_) | OidcError::UnknownState => {
                Self::bad_request(error.to_string())
            }
            OidcError::Refused(_) => Self::unauthorized(error.to_string()),
            OidcError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this API route does not take that method",
    )
}

/// A JSON body whose errors are answered as [`ApiError`]s, with unknown fields refused by the
/// types it is used with.
struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Query parameters, each allowed name listed by the handler.
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(map)) => Ok(Self(map)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

impl Params {
    /// Refuses parameters other than `allowed` and the paging ones.
    fn only(&self, allowed: &[&str]) -> ApiResult<()> {
        for key in self.0.keys() {
            if !allowed.contains(&key.as_str()) && key != "page" && key != "limit" {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {key:?} (allowed: {})",
                    [allowed, &["page", "limit"]].concat().join(", ")
                )));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn paging(&self) -> ApiResult<(usize, usize)> {
        let number = |key: &str, default: usize, max: usize| -> ApiResult<usize> {
            match self.get(key) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(ApiError::bad_request(format!(
                        "{key} must be a number from 1 to {max}"
                    ))),
                },
            }
        };
        Ok((number("page", 1, usize::MAX)?, number("limit", 100, 1000)?))
    }
}

/// A page of `items` as the list envelope.
fn page(params: &Params, items: Vec<Value>) -> ApiResult {
    let (page, limit) = params.paging()?;
    let total = items.len();
    let items: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .collect();
    Ok(Json(json!({"items": items, "page": page, "limit": limit, "total": total})).into_response())
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn time(at: SystemTime) -> Value {
    jiff::Timestamp::try_from(at).map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn opt_time(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, time)
}

fn parse_time(field: &str, text: &str) -> ApiResult<SystemTime> {
    text.parse::<jiff::Timestamp>()
        .map(SystemTime::from)
        .map_err(|e| ApiError::bad_request(format!("{field} is not an RFC 3339 time: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Who is calling

/// What the caller may do with the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    /// Only their own things.
    Own,
    /// Read everything.
    View,
    /// Change everything.
    Admin,
}

/// A signed-in caller.
#[derive(Debug)]
struct Caller {
    user: User,
    key: AccessKey,
    groups: Vec<String>,
    access: Access,
    /// May register destinations and receive their policy (role `connector`, or `admin`).
    connector: bool,
}

impl Caller {
    fn require(&self, access: Access) -> ApiResult<()> {
        if self.access >= access {
            Ok(())
        } else {
            let role = if access == Access::Admin {
                "admin"
            } else {
                "view"
            };
            Err(ApiError::forbidden(format!(
                "user {:?} needs role {role:?} on resource {CONTROL_RESOURCE:?} for this",
                self.user.name
            )))
        }
    }

    fn is(&self, name: &str) -> bool {
        self.user.name == name
    }

    fn require_connector(&self) -> ApiResult<()> {
        if self.connector || self.access == Access::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {:?} needs role \"connector\" (or \"admin\") on resource {CONTROL_RESOURCE:?} for this",
                self.user.name
            )))
        }
    }
}

impl FromRequestParts<Arc<ControlPlane>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        plane: &Arc<ControlPlane>,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(&parts.headers)?;
        let now = plane.now();
        let (key, user) = plane
            .store()
            .authenticate_access_key(&key, now)
            .await
            .map_err(|e| match e {
                KeyError::Store(store) => ApiError::from(store),
                other => ApiError::unauthorized(format!("{other}; run `infra login`")),
            })?;
        let groups = plane.store().groups_of(&user.name).await?;
        let (access, connector) = control_access(plane, &user.name, &groups).await?;
        Ok(Self {
            user,
            key,
            groups,
            access,
            connector,
        })
    }
}

fn bearer(headers: &HeaderMap) -> ApiResult<Secret> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthorized(
            "sign in first: send `Authorization: Bearer <access key>` (run `infra login`)",
        ));
    };
    let text = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not a bearer key"))?;
    Ok(Secret::new(text))
}

/// The caller's role on resource `infra`, from their grants and their groups' grants.
async fn control_access(
    plane: &ControlPlane,
    user: &str,
    groups: &[String],
) -> ApiResult<(Access, bool)> {
    let mut access = Access::Own;
    let mut connector = false;
    for stored in plane
        .store()
        .list_grants_on(CONTROL_RESOURCE, plane.now())
        .await?
    {
        let grant = stored.grant;
        if !grant.resource.is_control() || !subject_matches(&grant.subject, user, groups) {
            continue;
        }
        connector |= grant.role == "connector";
        access = access.max(match grant.role.as_str() {
            "admin" => Access::Admin,
            "view" => Access::View,
            _ => Access::Own,
        });
    }
    Ok((access, connector))
}

fn subject_matches(subject: &Subject, user: &str, groups: &[String]) -> bool {
    match subject {
        Subject::User(name) => name == user,
        Subject::Group(name) => groups.iter().any(|g| g == name),
    }
}

// ---------------------------------------------------------------------------------------------
// Public

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

async fn jwks(State(plane): Plane) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        plane.jwks_json(),
    )
        .into_response()
}

async fn list_providers(State(plane): Plane, params: Params) -> ApiResult {
    params.only(&[])?;
    let items = plane
        .store()
        .list_providers()
        .await?
        .iter()
        .map(|p| {
            json!({
                "name": p.provider.name,
                "kind": p.provider.kind.as_str(),
                "url": p.provider.url,
            })
        })
        .collect();
    page(&params, items)
}

// ---------------------------------------------------------------------------------------------
// Login

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum LoginRequest {
    Password {
        name: String,
        password: String,
    },
    AccessKey(String),
    Oidc {
        state: String,
        code: String,
        #[serde(default)]
        code_verifier: String,
    },
}

async fn login(State(plane): Plane, Body(request): Body<LoginRequest>) -> ApiResult {
    let now = plane.now();
    let store = plane.store();
    let user = match request {
        LoginRequest::Password { name, password } => {
            match store
                .login_with_password(&name, &Secret::new(password), now)
                .await
            {
                Ok(user) => user,
                Err(LoginError::InvalidCredentials) => {
                    return Err(ApiError::unauthorized(
                        LoginError::InvalidCredentials.to_string(),
                    ));
                }
                Err(LoginError::Locked { .. }) => {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "locked",
                        "too many failed logins for this user; try again in 30 minutes",
                    ));
                }
                Err(LoginError::Store(e)) => return Err(e.into()),
            }
        }
        LoginRequest::AccessKey(key) => {
            match store.authenticate_access_key(&Secret::new(key), now).await {
                Ok((_, user)) => user,
                Err(KeyError::Store(e)) => return Err(e.into()),
                Err(other) => return Err(ApiError::unauthorized(other.to_string())),
            }
        }
        LoginRequest::Oidc {
            state,
            code,
            code_verifier,
        } => oidc_login(&plane, &state, &code, &code_verifier).await?,
    };
    let (key, secret) = plane.new_session(&user.name).await?;
    plane.changed();
    Ok(Json(json!({
        "user": user.name,
        "access_key": secret.expose(),
        "expires_at": opt_time(key.expires_at),
    }))
    .into_response())
}

async fn oidc_login(
    plane: &ControlPlane,
    state: &str,
    code: &str,
    code_verifier: &str,
) -> ApiResult<User> {
    let now = plane.now();
    let store = plane.store();
    // Used up here, once, whatever happens next (and on whichever replica it started).
    let pending = store
        .take_oidc_login(&oidc::state_key(state))
        .await?
        .ok_or_else(|| ApiError::from(OidcError::UnknownState))?;
    let name = pending.provider.clone();
    let provider = store.get_provider(&name).await?.provider;
    let vouched = plane
        .oidc
        .finish(&provider, pending, code, code_verifier, now)
        .await?;
    let user = match store.get_user(&vouched.email).await {
        Ok(user) => user,
        Err(StoreError::NotFound { .. }) => {
            store
                .create_user(&format!("provider:{name}"), &vouched.email, now)
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    sync_provider_groups(plane, &name, &user.name, &vouched.groups).await?;
    if let Some(refresh) = &vouched.refresh_token {
        store
            .put_idp_session(&user.name, &user.name, &name, refresh, now)
            .await?;
    }
    Ok(user)
}

/// Makes `user`'s memberships that `provider` manages match `groups`.
async fn sync_provider_groups(
    plane: &ControlPlane,
    provider: &str,
    user: &str,
    groups: &[String],
) -> ApiResult<()> {
    let store = plane.store();
    let now = plane.now();
    let owner = owned::idp_groups(provider, user);
    let actor = format!("provider:{provider}");
    let before = store.managed(&owner).await?;
    let mut after = BTreeSet::new();
    for group in groups {
        if infra_authz::policy::validate_subject_name(group).is_err() {
            tracing::warn!(provider, group = %group, "ignoring a group name Infra does not accept");
            continue;
        }
        match store.create_group(&actor, group, now).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        store.add_member(&actor, group, user, now).await?;
        after.insert(group.clone());
    }
    for gone in before.difference(&after) {
        match store.remove_member(&actor, gone, user, now).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.set_managed(&owner, &after).await?;
    if before != after {
        plane.changed();
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcStart {
    provider: String,
    redirect_uri: String,
    code_challenge: String,
}

async fn start_oidc_login(State(plane): Plane, Body(request): Body<OidcStart>) -> ApiResult {
    let provider = plane
        .store()
        .get_provider(&request.provider)
        .await?
        .provider;
    let now = plane.now();
    let (authorize_url, state, pending) = plane
        .oidc
        .start(
            &provider,
            &request.redirect_uri,
            &request.code_challenge,
            now,
        )
        .await?;
    if !plane
        .store()
        .put_oidc_login(&oidc::state_key(&state), &pending, now, oidc::MAX_PENDING)
        .await?
    {
        return Err(OidcError::Unavailable(
            "too many logins in flight; try again in a minute".into(),
        )
        .into());
    }
    Ok(Json(json!({"authorize_url": authorize_url, "state": state})).into_response())
}

async fn logout(State(plane): Plane, caller: Caller) -> ApiResult {
    plane
        .store()
        .delete_access_key(&caller.user.name, &caller.key.id, plane.now())
        .await?;
    plane.session_ended(&caller.key.id, &caller.user.name);
    plane.changed();
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Tokens and the caller

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequestBody {
    destination: String,
}

async fn issue_token(
    State(plane): Plane,
    caller: Caller,
    Body(request): Body<TokenRequestBody>,
) -> ApiResult {
    infra_authz::policy::validate_dns_label(&request.destination)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    reverify(&plane, &caller.user).await?;
    let issued = plane
        .issue_token(&caller.user, &request.destination, Some(&caller.key))
        .await?;
    let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(issued.claims.exp);
    Ok(
        Json(json!({"token": issued.token.expose(), "expires_at": time(expires_at)}))
            .into_response(),
    )
}

/// Asks each provider the user logged in with, when its last answer is old, whether it still
/// knows the user. A refusal ends the user's sessions.
async fn reverify(plane: &ControlPlane, user: &User) -> ApiResult<()> {
    let store = plane.store();
    let now = plane.now();
    for stored in store.list_providers().await? {
        let provider = &stored.provider;
        let session = match store.get_idp_session(&user.name, &provider.name).await {
            Ok(session) => session,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let age = now
            .duration_since(session.last_checked_at)
            .unwrap_or_default();
        if age < plane.config().reverify_after {
            continue;
        }
        match plane.oidc.check(provider, &session.refresh_token).await {
            Ok(checked) => {
                store
                    .mark_idp_session_checked(session.id, checked.refresh_token.as_ref(), now)
                    .await?;
                if let Some(groups) = checked.groups {
                    sync_provider_groups(plane, &provider.name, &user.name, &groups).await?;
                }
            }
            Err(OidcError::Refused(why)) => {
                tracing::info!(user = %user.name, provider = %provider.name, why = %why, "the provider no longer vouches for the user; ending their sessions");
                store
                    .delete_idp_session(
                        &format!("provider:{}", provider.name),
                        &user.name,
                        &provider.name,
                        now,
                    )
                    .await?;
                for key in store.list_access_keys(&user.name).await? {
                    if key.kind == KeyKind::Session {
                        store
                            .delete_access_key(&format!("provider:{}", provider.name), &key.id, now)
                            .await?;
                        plane.session_ended(&key.id, &user.name);
                    }
                }
                plane.changed();
                return Err(ApiError::unauthorized(format!(
                    "{} no longer accepts your login; run `infra login`",
                    provider.name
                )));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

async fn me(State(plane): Plane, caller: Caller) -> ApiResult {
    let _ = &plane;
    Ok(Json(json!({
        "name": caller.user.name,
        "groups": caller.groups,
        "admin": caller.access == Access::Admin,
    }))
    .into_response())
}

async fn my_access(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[])?;
    let destinations: HashMap<String, Destination> = plane
        .store()
        .list_destinations()
        .await?
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let mut items = Vec::new();
    for grant in plane.grants().await? {
        if grant.resource.is_control()
            || !subject_matches(&grant.subject, &caller.user.name, &caller.groups)
        {
            continue;
        }
        let Some(destination) = destinations.get(&grant.resource.destination) else {
            continue;
        };
        items.push(json!({
            "destination": destination.name,
            "url": destination.url,
            "ca_pem": destination.ca_pem,
            "namespace": grant.resource.namespace,
            "role": grant.role,
            "expires_at": opt_time(grant.expires_at),
        }));
    }
    items.sort_by_key(ToString::to_string);
    items.dedup();
    page(&params, items)
}

// ---------------------------------------------------------------------------------------------
// Users

async fn user_json(plane: &ControlPlane, user: &User) -> ApiResult<Value> {
    let source = source(plane, owned::USER, &user.name).await?;
    Ok(json!({
        "name": user.name,
        "has_password": user.has_password,
        "groups": plane.store().groups_of(&user.name).await?,
        "source": source,
        "created_at": time(user.created_at),
        "updated_at": time(user.updated_at),
        "revision": user.revision,
    }))
}

async fn source(plane: &ControlPlane, kind: &str, name: &str) -> ApiResult<&'static str> {
    Ok(if plane.store().is_managed(kind, name).await? {
        "file"
    } else {
        "api"
    })
}

async fn refuse_owned(plane: &ControlPlane, kind: &str, name: &str, what: &str) -> ApiResult<()> {
    if plane.store().is_managed(kind, name).await? {
        return Err(ApiError::file_owned(plane.file_owned_message(what)));
    }
    Ok(())
}

async fn list_users(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["name"])?;
    caller.require(Access::View)?;
    let mut items = Vec::new();
    for user in plane.store().list_users().await? {
        if params.get("name").is_some_and(|n| n != user.name) {
            continue;
        }
        items.push(user_json(&plane, &user).await?);
    }
    page(&params, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
}

async fn create_user(State(plane): Plane, caller: Caller, Body(new): Body<NewUser>) -> ApiResult {
    caller.require(Access::Admin)?;
    let now = plane.now();
    let store = plane.store();
    if let Some(password) = &new.password {
        super::passwords::check_policy(password, &new.name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let user = store.create_user(&caller.user.name, &new.name, now).await?;
    let user = match &new.password {
        Some(password) => {
            store
                .set_password(
                    &caller.user.name,
                    &new.name,
                    &Secret::new(password.clone()),
                    now,
                )
                .await?;
            store.get_user(&new.name).await?
        }
        None => user,
    };
    plane.changed();
    Ok(created(user_json(&plane, &user).await?))
}

async fn get_user(State(plane): Plane, caller: Caller, Path(name): Path<String>) -> ApiResult {
    if !caller.is(&name) {
        caller.require(Access::View)?;
    }
    let user = plane.store().get_user(&name).await?;
    Ok(Json(user_json(&plane, &user).await?).into_response())
}

async fn delete_user(State(plane): Plane, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Access::Admin)?;
    refuse_owned(&plane, owned::USER, &name, &format!("user {name:?}")).await?;
    if caller.is(&name) {
        return Err(ApiError::bad_request(
            "you cannot delete yourself; ask another admin",
        ));
    }
    let keys = plane.store().list_access_keys(&name).await?;
    plane
        .store()
        .delete_user(&caller.user.name, &name, plane.now())
        .await?;
    for key in keys {
        plane.session_ended(&key.id, &name);
    }
    plane.changed();
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn set_password(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<NewPassword>,
) -> ApiResult {
    if !caller.is(&name) {
        caller.require(Access::Admin)?;
    }
    refuse_owned(&plane, owned::USER, &name, &format!("user {name:?}")).await?;
    plane
        .store()
        .set_password(
            &caller.user.name,
            &name,
            &Secret::new(body.password),
            plane.now(),
        )
        .await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Groups

async fn group_json(plane: &ControlPlane, name: &str) -> ApiResult<Value> {
    let group = plane.store().get_group(name).await?;
    Ok(json!({
        "name": group.name,
        "members": plane.store().members(name).await?.len(),
        "source": source(plane, owned::GROUP, name).await?,
        "created_at": time(group.created_at),
        "revision": group.revision,
    }))
}

async fn list_groups(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["name"])?;
    caller.require(Access::View)?;
    let mut items = Vec::new();
    for group in plane.store().list_groups().await? {
        if params.get("name").is_some_and(|n| n != group.name) {
            continue;
        }
        items.push(group_json(&plane, &group.name).await?);
    }
    page(&params, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
}

async fn create_group(State(plane): Plane, caller: Caller, Body(new): Body<NewGroup>) -> ApiResult {
    caller.require(Access::Admin)?;
    plane
        .store()
        .create_group(&caller.user.name, &new.name, plane.now())
        .await?;
    Ok(created(group_json(&plane, &new.name).await?))
}

async fn get_group(State(plane): Plane, caller: Caller, Path(name): Path<String>) -> ApiResult {
    if !caller.groups.contains(&name) {
        caller.require(Access::View)?;
    }
    Ok(Json(group_json(&plane, &name).await?).into_response())
}

async fn delete_group(State(plane): Plane, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Access::Admin)?;
    refuse_owned(&plane, owned::GROUP, &name, &format!("group {name:?}")).await?;
    plane
        .store()
        .delete_group(&caller.user.name, &name, plane.now())
        .await?;
    plane.changed();
    Ok(no_content())
}

async fn list_members(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult {
    params.only(&[])?;
    if !caller.groups.contains(&name) {
        caller.require(Access::View)?;
    }
    plane.store().get_group(&name).await?;
    let items = plane
        .store()
        .members(&name)
        .await?
        .into_iter()
        .map(Value::String)
        .collect();
    page(&params, items)
}

async fn add_member(
    State(plane): Plane,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let key = format!("{name}\n{user}");
    refuse_owned(
        &plane,
        owned::MEMBER,
        &key,
        &format!("{user:?} in group {name:?}"),
    )
    .await?;
    let now = plane.now();
    let store = plane.store();
    store.get_group(&name).await?;
    match store.create_user(&caller.user.name, &user, now).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    store
        .add_member(&caller.user.name, &name, &user, now)
        .await?;
    plane.changed();
    Ok(no_content())
}

async fn remove_member(
    State(plane): Plane,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let key = format!("{name}\n{user}");
    refuse_owned(
        &plane,
        owned::MEMBER,
        &key,
        &format!("{user:?} in group {name:?}"),
    )
    .await?;
    if !plane
        .store()
        .remove_member(&caller.user.name, &name, &user, plane.now())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "{user:?} is not a member of group {name:?}"
        )));
    }
    plane.changed();
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Grants

async fn grant_json(plane: &ControlPlane, stored: &StoredGrant) -> ApiResult<Value> {
    let grant = &stored.grant;
    let (user, group) = match &grant.subject {
        Subject::User(name) => (Some(name), None),
        Subject::Group(name) => (None, Some(name)),
    };
    Ok(json!({
        "id": stored.id,
        "user": user,
        "group": group,
        "role": grant.role,
        "resource": grant.resource.to_string(),
        "expires_at": opt_time(grant.expires_at),
        "problem": grant_problem(plane, grant),
        "source": source(plane, owned::GRANT, &super::plane::grant_key(grant)).await?,
        "created_at": time(stored.created_at),
        "created_by": stored.created_by,
        "revision": stored.revision,
    }))
}

async fn list_grants(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["user", "group", "resource", "destination", "role"])?;
    let own_only =
        params.get("user").is_some_and(|u| caller.is(u)) && params.get("group").is_none();
    if !own_only {
        caller.require(Access::View)?;
    }
    let mut items = Vec::new();
    for stored in plane.store().list_grants(plane.now()).await? {
        let grant = &stored.grant;
        let keep = match (&grant.subject, params.get("user"), params.get("group")) {
            (_, None, None) => true,
            (Subject::User(name), Some(user), _) => name == user,
            (Subject::Group(name), _, Some(group)) => name == group,
            _ => false,
        } && params
            .get("resource")
            .is_none_or(|r| grant.resource.to_string() == r)
            && params
                .get("destination")
                .is_none_or(|d| grant.resource.destination == d)
            && params.get("role").is_none_or(|r| grant.role == r);
        if keep {
            items.push(grant_json(&plane, &stored).await?);
        }
    }
    page(&params, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    role: String,
    resource: String,
    #[serde(default)]
    expires_at: Option<String>,
}

async fn create_grant(State(plane): Plane, caller: Caller, Body(new): Body<NewGrant>) -> ApiResult {
    caller.require(Access::Admin)?;
    let subject = match (new.user, new.group) {
        (Some(user), None) => Subject::User(user),
        (None, Some(group)) => Subject::Group(group),
        _ => return Err(ApiError::bad_request("give exactly one of user and group")),
    };
    let resource: Resource = new
        .resource
        .parse()
        .map_err(|e| ApiError::bad_request(format!("resource: {e}")))?;
    let expires_at = new
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let now = plane.now();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_request("expires_at is in the past"));
    }
    if resource.is_control() && !infra_authz::policy::CONTROL_ROLES.contains(&new.role.as_str()) {
        return Err(ApiError::bad_request(format!(
            "role {:?} means nothing on {CONTROL_RESOURCE:?}; use one of {}",
            new.role,
            infra_authz::policy::CONTROL_ROLES.join(", ")
        )));
    }
    let grant = Grant {
        subject,
        role: new.role,
        resource,
        expires_at,
    };
    let stored = plane
        .store()
        .create_grant(&caller.user.name, &grant, now)
        .await?;
    plane.changed();
    Ok(created(grant_json(&plane, &stored).await?))
}

/// What is wrong with `grant`, as its destination's proxy reports it, if anything.
fn grant_problem(plane: &ControlPlane, grant: &Grant) -> Value {
    if grant.resource.is_control() {
        return Value::Null;
    }
    let destination = &grant.resource.destination;
    if plane.unknown_roles(destination).contains(&grant.role) {
        Value::String(format!(
            "role {:?} exists neither among the built-in roles nor in the cluster of destination {destination:?}; this grant allows nothing there",
            grant.role
        ))
    } else {
        Value::Null
    }
}

/// The id of the grant `id` names, when the caller may change it (an admin; not the policy
/// file's).
async fn changeable_grant(plane: &ControlPlane, caller: &Caller, id: &str) -> ApiResult<i64> {
    caller.require(Access::Admin)?;
    let id = grant_id(id)?;
    let stored = plane.store().get_grant(id).await?;
    refuse_owned(
        plane,
        owned::GRANT,
        &super::plane::grant_key(&stored.grant),
        &format!("grant {id}"),
    )
    .await?;
    Ok(id)
}

fn grant_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("grant id {id:?} is not a number")))
}

async fn get_grant(State(plane): Plane, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let stored = plane.store().get_grant(grant_id(&id)?).await?;
    let own = matches!(&stored.grant.subject, Subject::User(u) if caller.is(u));
    if !own {
        caller.require(Access::View)?;
    }
    Ok(Json(grant_json(&plane, &stored).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantUpdate {
    expires_at: Option<String>,
    revision: i64,
}

async fn update_grant(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(update): Body<GrantUpdate>,
) -> ApiResult {
    let id = changeable_grant(&plane, &caller, &id).await?;
    let expires_at = update
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let updated = plane
        .store()
        .update_grant_expiry(
            &caller.user.name,
            id,
            update.revision,
            expires_at,
            plane.now(),
        )
        .await?;
    plane.changed();
    Ok(Json(grant_json(&plane, &updated).await?).into_response())
}

async fn delete_grant(State(plane): Plane, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let id = changeable_grant(&plane, &caller, &id).await?;
    plane
        .store()
        .delete_grant(&caller.user.name, id, None, plane.now())
        .await?;
    plane.changed();
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Access keys

fn key_json(key: &AccessKey) -> Value {
    json!({
        "id": key.id,
        "user": key.user,
        "name": key.name,
        "kind": key.kind.as_str(),
        "created_at": time(key.created_at),
        "expires_at": opt_time(key.expires_at),
        "inactivity_timeout_seconds": key.inactivity_timeout.map(|t| t.as_secs()),
        "last_used_at": time(key.last_used_at),
    })
}

async fn list_keys(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["user"])?;
    let user = params.get("user").unwrap_or(&caller.user.name).to_owned();
    if !caller.is(&user) {
        caller.require(Access::View)?;
    }
    let items = plane
        .store()
        .list_access_keys(&user)
        .await?
        .iter()
        .map(key_json)
        .collect();
    page(&params, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    inactivity_timeout_seconds: Option<u64>,
}

async fn create_key(State(plane): Plane, caller: Caller, Body(new): Body<NewKey>) -> ApiResult {
    let user = new.user.unwrap_or_else(|| caller.user.name.clone());
    if !caller.is(&user) {
        caller.require(Access::Admin)?;
    }
    let now = plane.now();
    let expires_at = new
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_request("expires_at is in the past"));
    }
    let (key, secret) = plane
        .store()
        .create_access_key(
            &caller.user.name,
            &user,
            &NewAccessKey {
                name: new.name,
                kind: KeyKind::Api,
                expires_at,
                inactivity_timeout: new.inactivity_timeout_seconds.map(Duration::from_secs),
            },
            now,
        )
        .await?;
    plane.changed();
    let mut value = key_json(&key);
    value["key"] = Value::String(secret.expose().to_owned());
    Ok(created(value))
}

async fn delete_key(State(plane): Plane, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let keys = plane.store().list_access_keys(&caller.user.name).await?;
    let owner = if keys.iter().any(|k| k.id == id) {
        caller.user.name.clone()
    } else {
        caller.require(Access::Admin)?;
        plane
            .store()
            .all_access_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.user)
            .ok_or_else(|| ApiError::not_found(format!("access key {id:?} does not exist")))?
    };
    plane
        .store()
        .delete_access_key(&caller.user.name, &id, plane.now())
        .await?;
    plane.session_ended(&id, &owner);
    plane.changed();
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Providers

async fn provider_json(plane: &ControlPlane, stored: &StoredProvider) -> ApiResult<Value> {
    let p = &stored.provider;
    Ok(json!({
        "name": p.name,
        "kind": p.kind.as_str(),
        "url": p.url,
        "client_id": p.client_id,
        "scopes": p.scopes,
        "source": source(plane, owned::PROVIDER, &p.name).await?,
        "revision": stored.revision,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    url: String,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    revision: Option<i64>,
}

impl ProviderBody {
    fn provider(self, name: String) -> ApiResult<Provider> {
        let kind: ProviderKind = self
            .kind
            .as_deref()
            .unwrap_or("oidc")
            .parse()
            .map_err(ApiError::bad_request)?;
        Ok(Provider {
            name,
            url: self.url,
            client_id: self.client_id,
            client_secret: Secret::new(self.client_secret),
            kind,
            scopes: self.scopes,
        })
    }
}

async fn get_provider(State(plane): Plane, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Access::View)?;
    let stored = plane.store().get_provider(&name).await?;
    Ok(Json(provider_json(&plane, &stored).await?).into_response())
}

async fn create_provider(
    State(plane): Plane,
    caller: Caller,
    Body(body): Body<ProviderBody>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    infra_authz::policy::validate_dns_label(&name)
        .map_err(|why| ApiError::bad_request(format!("provider name {why}")))?;
    let provider = body.provider(name)?;
    let stored = plane
        .store()
        .create_provider(&caller.user.name, &provider, plane.now())
        .await?;
    Ok(created(provider_json(&plane, &stored).await?))
}

async fn update_provider(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<ProviderBody>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    refuse_owned(
        &plane,
        owned::PROVIDER,
        &name,
        &format!("provider {name:?}"),
    )
    .await?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request("a provider cannot be renamed"));
    }
    let revision = body
        .revision
        .ok_or_else(|| ApiError::bad_request("revision is required"))?;
    let provider = body.provider(name)?;
    let stored = plane
        .store()
        .update_provider(&caller.user.name, &provider, revision, plane.now())
        .await?;
    Ok(Json(provider_json(&plane, &stored).await?).into_response())
}

async fn delete_provider(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    refuse_owned(
        &plane,
        owned::PROVIDER,
        &name,
        &format!("provider {name:?}"),
    )
    .await?;
    plane
        .store()
        .delete_provider(&caller.user.name, &name, plane.now())
        .await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Destinations

fn destination_json(plane: &ControlPlane, destination: &Destination, now: SystemTime) -> Value {
    let connected = destination
        .last_seen_at
        .is_some_and(|at| now.duration_since(at).unwrap_or_default() <= CONNECTED_WITHIN);
    json!({
        "name": destination.name,
        "url": destination.url,
        "ca_pem": destination.ca_pem,
        "version": destination.version,
        "last_seen_at": opt_time(destination.last_seen_at),
        "connected": connected,
        "unknown_roles": plane.unknown_roles(&destination.name),
    })
}

async fn list_destinations(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[])?;
    caller.require(Access::View)?;
    let now = plane.now();
    let items = plane
        .store()
        .list_destinations()
        .await?
        .iter()
        .map(|d| destination_json(&plane, d, now))
        .collect();
    page(&params, items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationBody {
    url: String,
    ca_pem: String,
    version: String,
    /// Roles the destination's grants name that its cluster does not have.
    #[serde(default)]
    unknown_roles: Vec<String>,
}

async fn put_destination(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<DestinationBody>,
) -> ApiResult {
    caller.require_connector()?;
    infra_authz::policy::validate_dns_label(&name)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    if !body.url.starts_with("https://") {
        return Err(ApiError::bad_request("url must be an https URL"));
    }
    let now = plane.now();
    plane.report_unknown_roles(&name, body.unknown_roles);
    let destination = plane
        .store()
        .put_destination(
            &caller.user.name,
            &NewDestination {
                name,
                url: body.url,
                ca_pem: body.ca_pem,
                version: body.version,
            },
            now,
        )
        .await?;
    Ok(Json(destination_json(&plane, &destination, now)).into_response())
}

async fn delete_destination(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane
        .store()
        .delete_destination(&caller.user.name, &name, plane.now())
        .await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Sync

/// How often the sync stream says it is alive when nothing changes.
const SYNC_HEARTBEAT: Duration = Duration::from_secs(15);
/// How often it sends the whole snapshot even when nothing changed (expiries, and tokens newer
/// than the last snapshot).
const SYNC_REFRESH: Duration = Duration::from_mins(1);

/// The policy of a destination as a stream of JSON lines: a snapshot now and after every change,
/// heartbeats between. For proxies in other clusters.
async fn sync(State(plane): Plane, caller: Caller, Path(destination): Path<String>) -> ApiResult {
    caller.require_connector()?;
    infra_authz::policy::validate_dns_label(&destination)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    let first = plane.snapshot(&destination).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let mut changes = plane.subscribe();
    changes.mark_unchanged();
    tokio::spawn(async move {
        let mut next = Some(first);
        loop {
            let snapshot = match next.take() {
                Some(snapshot) => snapshot,
                None => match plane.snapshot(&destination).await {
                    Ok(snapshot) => snapshot,
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "building a snapshot failed");
                        return;
                    }
                },
            };
            let Some(line) = message_line(&infra_api::sync::Message::Snapshot(Box::new(snapshot)))
            else {
                return;
            };
            if tx.send(line).await.is_err() {
                return;
            }
            let refresh_at = tokio::time::Instant::now() + SYNC_REFRESH;
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                    () = tokio::time::sleep(SYNC_HEARTBEAT) => {
                        if tokio::time::Instant::now() >= refresh_at {
                            break;
                        }
                        if let Ok(known) = plane.store().get_destination(&destination).await {
                            let _ = plane
                                .store()
                                .touch_destination(&destination, &known.version, plane.now())
                                .await;
                        }
                        let Some(line) = message_line(&infra_api::sync::Message::Heartbeat(
                            *changes.borrow(),
                        )) else {
                            return;
                        };
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

fn message_line(message: &infra_api::sync::Message) -> Option<bytes::Bytes> {
    match serde_json::to_vec(message) {
        Ok(mut line) => {
            line.push(b'\n');
            Some(line.into())
        }
        Err(error) => {
            tracing::error!(%error, "encoding a sync message failed");
            None
        }
    }
}
