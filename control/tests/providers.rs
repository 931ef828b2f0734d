//! Changing an identity provider through the API: its client secret is never shown, so an update
//! that leaves it out keeps the stored one, and an update that gives one replaces it. (The API
//! used to require the secret on every update, which refused `infra providers edit` without a
//! new secret.)

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use infra_api::{LoginRequest, LoginResponse, Provider, ProviderBody};
use infra_authz::clock::SystemClock;
use infra_authz::policy::Policy;
use infra_control::api;
use infra_control::crypto::RootKeySource;
use infra_control::passwords::Passwords;
use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

const PASSWORD: &str = "a password long enough for the policy";

async fn plane(dir: &std::path::Path) -> Arc<ControlPlane> {
    let config = StoreConfig {
        passwords: Passwords::new(256, 1, 1),
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("root.key")),
        )
    };
    let store = Store::open(&config).await.expect("open the store");
    std::fs::write(dir.join("admin-password"), PASSWORD).expect("write the password file");
    let mut control = ControlConfig::new("https://127.0.0.1:1");
    control.admin_password_file = Some(dir.join("admin-password"));
    ControlPlane::start(store, control, &Policy::default(), Arc::new(SystemClock))
        .await
        .expect("start the control plane")
}

async fn call<T: DeserializeOwned>(
    router: &axum::Router,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: &impl Serialize,
) -> (StatusCode, Option<T>) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).ok())
}

#[tokio::test]
async fn a_provider_update_without_a_client_secret_keeps_the_stored_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plane = plane(dir.path()).await;
    let router = api::router(Arc::clone(&plane));
    let (status, login) = call::<LoginResponse>(
        &router,
        Method::POST,
        "/api/login",
        None,
        &LoginRequest::Password {
            name: "admin".into(),
            password: PASSWORD.into(),
        },
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let key = login.expect("a session").access_key;

    let created = ProviderBody {
        name: Some("okta".into()),
        kind: Some("okta".into()),
        url: "acme.okta.com".into(),
        client_id: "0oa-first".into(),
        client_secret: Some("the first secret".into()),
        scopes: vec![],
        revision: None,
    };
    let (status, provider) = call::<Provider>(
        &router,
        Method::POST,
        "/api/providers",
        Some(&key),
        &created,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let provider = provider.expect("the provider");

    let update = ProviderBody {
        client_id: "0oa-second".into(),
        client_secret: None,
        revision: Some(provider.revision),
        ..created.clone()
    };
    let (status, updated) = call::<Provider>(
        &router,
        Method::PUT,
        "/api/providers/okta",
        Some(&key),
        &update,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an update without a secret is taken"
    );
    let updated = updated.expect("the provider");
    assert_eq!(updated.client_id, "0oa-second");
    let stored = plane.store().get_provider("okta").await.expect("stored");
    assert_eq!(stored.provider.client_id, "0oa-second");
    assert_eq!(
        stored.provider.client_secret.expose(),
        "the first secret",
        "the stored secret is kept"
    );

    let replace = ProviderBody {
        client_secret: Some("the second secret".into()),
        revision: Some(updated.revision),
        ..update
    };
    let (status, _) = call::<Provider>(
        &router,
        Method::PUT,
        "/api/providers/okta",
        Some(&key),
        &replace,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stored = plane.store().get_provider("okta").await.expect("stored");
    assert_eq!(stored.provider.client_secret.expose(), "the second secret");

    let (status, _) = call::<serde_json::Value>(
        &router,
        Method::POST,
        "/api/providers",
        Some(&key),
        &ProviderBody {
            name: Some("google".into()),
            client_secret: None,
            ..created
        },
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a new provider needs its client secret"
    );
}
