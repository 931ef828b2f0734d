//! The child process of `fanout`: the control plane alone, its store filled once per size.

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::json;

use crate::{DESTINATION, GROUPS, LOGIN_USER, LOGOUT_USER, PASSWORD};

pub(crate) async fn serve(
    state_dir: &Path,
    users: usize,
    sessions: usize,
    logouts: usize,
    ready: &Path,
) -> Result<()> {
    use infra_authz::clock::SystemClock;
    use infra_authz::policy::{Grant, Policy, Resource, Subject};
    use infra_control::crypto::RootKeySource;
    use infra_control::passwords::Passwords;
    use infra_control::store::{KeyKind, NewAccessKey};
    use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig};

    let dir = state_dir.join(format!("u{users}-s{sessions}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let filled = dir.join("filled");
    let config = StoreConfig {
        passwords: Passwords::new(256, 1, 1),
        initialize: true,
        max_connections: 8,
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("root.key")),
        )
    };
    let store = Store::open(&config).await.context("opening the store")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut control = ControlConfig::new(format!("http://{addr}"));
    control.anonymous_per_minute = 1_000_000;
    control.anonymous_burst = 1_000_000;
    let plane = ControlPlane::start(store, control, &Policy::default(), Arc::new(SystemClock))
        .await
        .context("starting the control plane")?;
    let store = plane.store();
    let now = SystemTime::now();
    let actor = "bench";
    if !filled.exists() {
        let started = Instant::now();
        for g in 0..GROUPS {
            store.create_group(actor, &format!("g{g}"), now).await?;
        }
        let grant = |subject: Subject, resource: &str| -> Result<Grant> {
            Ok(Grant {
                subject,
                role: "view".into(),
                resource: resource
                    .parse::<Resource>()
                    .map_err(|e| anyhow::anyhow!("{resource}: {e}"))?,
                expires_at: None,
            })
        };
        for g in 0..GROUPS {
            let resource = if g < 5 {
                DESTINATION.to_owned()
            } else {
                format!("other{}", g % 10)
            };
            store
                .create_grant(
                    actor,
                    &grant(Subject::Group(format!("g{g}")), &resource)?,
                    now,
                )
                .await?;
        }
        for i in 0..users {
            let name = format!("u{i}");
            store.create_user(actor, &name, now).await?;
            store
                .add_member(actor, &format!("g{}", i % GROUPS), &name, now)
                .await?;
            store
                .add_member(
                    actor,
                    &format!("g{}", (i / GROUPS + 1 + i) % GROUPS),
                    &name,
                    now,
                )
                .await?;
            if i < 100 {
                store
                    .create_grant(
                        actor,
                        &grant(Subject::User(name), &format!("{DESTINATION}.ns{i}"))?,
                        now,
                    )
                    .await?;
            }
            if i % 10_000 == 9_999 {
                eprintln!("  {} users ({:.0?})", i + 1, started.elapsed());
            }
        }
        for i in 0..sessions {
            store
                .create_access_key(
                    actor,
                    &format!("u{}", i % users.max(1)),
                    &NewAccessKey::session(now),
                    now,
                )
                .await?;
            if i % 20_000 == 19_999 {
                eprintln!("  {} sessions ({:.0?})", i + 1, started.elapsed());
            }
        }
        for user in [LOGIN_USER, LOGOUT_USER] {
            store.create_user(actor, user, now).await?;
        }
        store
            .set_password(
                actor,
                LOGIN_USER,
                &infra_authz::policy::Secret::new(PASSWORD.to_owned()),
                now,
            )
            .await?;
        std::fs::write(&filled, b"")?;
        eprintln!("store filled in {:.1?}", started.elapsed());
    }
    let (_, admin) = store
        .create_access_key(
            actor,
            infra_control::plane::BOOTSTRAP_ADMIN,
            &NewAccessKey {
                name: format!("bench-{}", std::process::id()),
                kind: KeyKind::Api,
                expires_at: None,
                inactivity_timeout: None,
            },
            now,
        )
        .await?;
    let mut logout_keys = Vec::with_capacity(logouts);
    for _ in 0..logouts {
        let (_, key) = store
            .create_access_key(actor, LOGOUT_USER, &NewAccessKey::session(now), now)
            .await?;
        logout_keys.push(key.expose().to_owned());
    }
    let router = infra_control::api::router(Arc::clone(&plane));
    let ready_text = json!({
        "url": format!("http://{addr}"),
        "admin": admin.expose(),
        "logouts": logout_keys,
    });
    let tmp = ready.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&ready_text)?)?;
    std::fs::rename(&tmp, ready)?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
                request
                    .extensions_mut()
                    .insert(infra_control::api::PeerAddr(peer));
                let router = router.clone();
                async move {
                    let request = request.map(axum::body::Body::new);
                    tower::ServiceExt::oneshot(router, request).await
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
