//! The control API: JSON over HTTPS under `/api` (see `docs/control-api.md` and
//! `control/openapi.yaml`), on the wire types of `infra-api`.
//!
//! One file per resource. A handler checks the caller's access ([`caller`]), calls the
//! [`ControlPlane`] (which checks the policy file's ownership and publishes changes), and
//! projects the answer into an `infra-api` type. Every error becomes the JSON error body in one
//! place ([`error`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};

use crate::plane::ControlPlane;

mod audit;
mod caller;
mod client;
mod destinations;
pub mod error;
mod extract;
mod grants;
mod groups;
mod keys;
mod providers;
mod public;
mod requests;
mod session;
mod sync;
mod users;
mod why;

pub use crate::clients::{ClientAddr, PeerAddr, Throttle};
pub use error::ApiError;
pub use sync::lines as sync_lines;

/// The largest request body the API reads; no request of the API needs more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
    ("delete", "/api/users/{name}/lockout"),
    ("post", "/api/users/{name}/identities"),
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
    ("get", "/api/why"),
    ("get", "/api/requests"),
    ("post", "/api/requests"),
    ("get", "/api/requests/{id}"),
    ("post", "/api/requests/{id}/approve"),
    ("post", "/api/requests/{id}/deny"),
    ("post", "/api/requests/{id}/cancel"),
    ("post", "/api/requests/{id}/revoke"),
    ("get", "/api/request-rules"),
    ("post", "/api/request-rules"),
    ("delete", "/api/request-rules/{name}"),
    ("get", "/api/request-notifications"),
    ("get", "/api/destinations"),
    ("put", "/api/destinations/{name}"),
    ("delete", "/api/destinations/{name}"),
    ("get", "/api/sync/{destination}"),
    ("get", "/api/audit"),
    ("get", "/api/audit/stream"),
    ("get", "/api/audit/export"),
    ("post", "/api/audit/events"),
];

/// A destination whose proxy was heard from within this long counts as connected.
pub const CONNECTED_WITHIN: Duration = Duration::from_mins(2);

type Plane = State<Arc<ControlPlane>>;
type ApiResult<T = axum::response::Response> = Result<T, ApiError>;

/// The API's routes. Whoever serves them puts each connection's [`PeerAddr`] in the requests'
/// extensions, so that limits and lockouts count per client address.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    let config = plane.config();
    let throttle = Arc::new(Throttle::new(
        config.anonymous_per_minute,
        config.anonymous_burst,
    ));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&throttle);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_mins(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(throttle) = weak.upgrade() else {
                    break;
                };
                throttle.forget_idle();
            }
        });
    }
    Router::new()
        .route("/api/version", get(public::version))
        .route("/api/openapi.yaml", get(public::openapi))
        .route("/.well-known/jwks.json", get(public::jwks))
        .route(
            "/api/providers",
            get(public::list_providers).post(providers::create),
        )
        .route(
            "/api/providers/{name}",
            get(providers::get)
                .put(providers::update)
                .delete(providers::delete),
        )
        .route("/api/login", post(session::login))
        .route("/api/login/oidc", post(session::start_oidc_login))
        .route("/api/logout", post(session::logout))
        .route("/api/tokens", post(session::issue_token))
        .route("/api/me", get(session::me))
        .route("/api/me/access", get(session::my_access))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{name}", get(users::get).delete(users::delete))
        .route("/api/users/{name}/password", put(users::set_password))
        .route(
            "/api/users/{name}/lockout",
            axum::routing::delete(users::unlock),
        )
        .route("/api/users/{name}/identities", post(users::link))
        .route("/api/groups", get(groups::list).post(groups::create))
        .route(
            "/api/groups/{name}",
            get(groups::get).delete(groups::delete),
        )
        .route("/api/groups/{name}/members", get(groups::list_members))
        .route(
            "/api/groups/{name}/members/{user}",
            put(groups::add_member).delete(groups::remove_member),
        )
        .route("/api/grants", get(grants::list).post(grants::create))
        .route(
            "/api/grants/{id}",
            get(grants::get).put(grants::update).delete(grants::delete),
        )
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", axum::routing::delete(keys::delete))
        .route("/api/why", get(why::why))
        .route("/api/requests", get(requests::list).post(requests::create))
        .route("/api/requests/{id}", get(requests::get))
        .route("/api/requests/{id}/approve", post(requests::approve))
        .route("/api/requests/{id}/deny", post(requests::deny))
        .route("/api/requests/{id}/cancel", post(requests::cancel))
        .route("/api/requests/{id}/revoke", post(requests::revoke))
        .route(
            "/api/request-rules",
            get(requests::list_rules).post(requests::create_rule),
        )
        .route(
            "/api/request-rules/{name}",
            axum::routing::delete(requests::delete_rule),
        )
        .route("/api/request-notifications", get(requests::notifications))
        .route("/api/destinations", get(destinations::list))
        .route(
            "/api/destinations/{name}",
            put(destinations::put).delete(destinations::delete),
        )
        .route("/api/sync/{destination}", get(sync::stream))
        .route("/api/audit", get(audit::list))
        .route("/api/audit/stream", get(audit::stream))
        .route("/api/audit/export", get(audit::export))
        .route(
            "/api/audit/events",
            post(audit::ingest).layer(axum::extract::DefaultBodyLimit::max(
                audit::INGEST_MAX_BYTES,
            )),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::Extension(throttle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(plane)
}
