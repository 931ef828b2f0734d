//! The control plane in this process (`serve --control-listen`, the default `control` feature):
//! opening its store, serving its API beside the proxy with the proxy's certificate, keeping the
//! proxy's snapshot in step with it, and handing it the policy file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use infra_authz::clock::Clock;
use infra_control::crypto::RootKeySource;
use infra_control::plane::SYSTEM_ACTOR;
use infra_control::store::NewDestination;
use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig, api};
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::policy::{FileOwner, PolicyHandle};
use crate::server::{self, Drain, Limits};
use crate::sync::SyncState;
use crate::tls::{self, CertResolver};
use crate::upstream;

/// The control plane running in this process.
pub type Embedded = Arc<ControlPlane>;

/// Starts the control plane when `--control-listen` asks for it.
pub async fn start(
    args: &ServeArgs,
    policy: &infra_authz::policy::Policy,
    clock: Arc<dyn Clock>,
) -> Result<Option<Embedded>> {
    match args.control.control_listen {
        Some(listen) => Ok(Some(start_control(args, listen, policy, clock).await?)),
        None => Ok(None),
    }
}

/// The issuer of the control plane's tokens.
pub fn issuer(plane: &Embedded) -> String {
    plane.issuer().to_owned()
}

/// The snapshot state of the proxy in the control plane's process, with the snapshot in force.
pub async fn in_process_sync(
    plane: &Embedded,
    destination: &str,
    handle: &PolicyHandle,
) -> Result<Arc<SyncState>> {
    let sync = SyncState::in_process();
    let snapshot = plane.snapshot(destination).await?;
    sync.apply(&snapshot, handle);
    Ok(sync)
}

/// Shows failing access-request notifications in `/readyz` (a warning: requests still work)
/// and in the metrics, every 5 seconds.
pub fn spawn_notification_reports(
    plane: &Embedded,
    readiness: Arc<crate::admin::Readiness>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let plane = Arc::downgrade(plane);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(plane) = plane.upgrade() else {
                break;
            };
            let targets = plane.notification_status();
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            metrics
                .notification_failures
                .set(gauge(targets.iter().map(|t| t.failed_attempts).sum()));
            metrics
                .notifications_dropped
                .set(gauge(targets.iter().map(|t| t.dropped).sum()));
            let problems = plane.notification_problems();
            readiness.warn(
                "notifications",
                (!problems.is_empty()).then(|| problems.join("; ")),
            );
        }
    });
}

/// Stops the control plane's background work that must be handed over (the audit export, its
/// lease let go), waiting for it: the process is about to end.
pub async fn stop(plane: &Embedded) {
    plane.stop_background(Duration::from_secs(2)).await;
}

/// Shows the audit trail's OTLP export in `/readyz` (a warning when it keeps failing: events
/// wait in the store) and in the metrics, every 5 seconds.
pub fn spawn_audit_export_reports(
    plane: &Embedded,
    readiness: Arc<crate::admin::Readiness>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let Some(export) = plane.audit_export().cloned() else {
        return;
    };
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = [0_u64; 3];
        loop {
            tick.tick().await;
            let now = [
                export.exported.load(Ordering::Relaxed),
                export.retried.load(Ordering::Relaxed),
                export.dropped.load(Ordering::Relaxed),
            ];
            let counters = [
                &metrics.audit_otlp_exported,
                &metrics.audit_otlp_retries,
                &metrics.audit_otlp_dropped,
            ];
            for ((counter, now), seen) in counters.into_iter().zip(now).zip(seen.iter_mut()) {
                counter.inc_by(now.saturating_sub(*seen));
                *seen = now;
            }
            readiness.warn("audit export", export.problem());
            if export.status().mode == infra_control::otlp::exporter::Mode::Stopped {
                break;
            }
        }
    });
}

/// The control plane as the owner of the policy file's declarations.
pub fn file_owner(plane: &Embedded) -> Arc<dyn FileOwner> {
    Arc::new(PolicyFileOwner(Arc::clone(plane)))
}

#[derive(Debug)]
struct PolicyFileOwner(Arc<ControlPlane>);

impl FileOwner for PolicyFileOwner {
    fn apply<'a>(
        &'a self,
        policy: &'a infra_authz::policy::Policy,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .apply_policy_file(policy)
                .await
                .map_err(|error| format!("{error:#}"))
        })
    }

    fn reloaded<'a>(
        &'a self,
        path: &'a std::path::Path,
        hash: &'a str,
        refused: Option<&'a str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Err(error) = self
                .0
                .audit_policy_reload(&path.display().to_string(), hash, refused)
                .await
            {
                tracing::error!(%error, "cannot record the policy reload in the audit trail");
            }
        })
    }
}

/// The audit trail of the control plane in this process, written straight into its store.
pub fn audit_forward(plane: &Embedded) -> Arc<dyn crate::audit::Forward> {
    Arc::new(StoreTrail {
        plane: Arc::clone(plane),
        runtime: tokio::runtime::Handle::current(),
    })
}

#[derive(Debug)]
struct StoreTrail {
    plane: Arc<ControlPlane>,
    runtime: tokio::runtime::Handle,
}

impl crate::audit::Forward for StoreTrail {
    fn send(&self, events: &[infra_api::audit::Event], _lines: &[u8]) -> Result<(), String> {
        self.runtime
            .block_on(self.plane.store().record_audit_events(events))
            .map(|_| ())
            .map_err(|error| format!("cannot store audit events: {error}"))
    }
}

/// Serves the control API on `listener` and keeps `handle`'s snapshot in step with the plane,
/// registering this destination (`name`, reached at `public_url`).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    plane: &Embedded,
    listener: TcpListener,
    resolver: &Arc<CertResolver>,
    drain: Drain,
    handle: Arc<PolicyHandle>,
    sync: Arc<SyncState>,
    name: &str,
    public_url: String,
    limits: Limits,
) -> Result<()> {
    let stopping = drain.clone();
    let background = Arc::clone(plane);
    tokio::spawn(async move {
        stopping.started().await;
        background.stop_background(Duration::from_secs(2)).await;
    });
    serve_control(plane, listener, acceptor_for(resolver)?, drain, limits);
    let destination = NewDestination {
        name: name.to_owned(),
        url: public_url,
        ca_pem: resolver.leaf_pem(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    spawn_control_sync(Arc::clone(plane), handle, sync, destination).await
}

fn acceptor_for(resolver: &Arc<CertResolver>) -> Result<tokio_rustls::TlsAcceptor> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(
        tls::server_config(Arc::clone(resolver))?,
    )))
}

/// Opens the store and starts the control plane on it.
async fn start_control(
    args: &ServeArgs,
    listen: SocketAddr,
    policy: &infra_authz::policy::Policy,
    clock: Arc<dyn Clock>,
) -> Result<Arc<ControlPlane>> {
    let control = &args.control;
    if control.control_public_url.is_none() && (listen.port() == 0 || listen.ip().is_unspecified())
    {
        bail!(
            "--control-listen {listen} needs --control-public-url: the URL users and proxies reach the control API at, which is also the issuer of its tokens"
        );
    }
    let env_key = std::env::var_os("INFRA_ROOT_KEY").is_some();
    let store_config = if let Some(path) = sqlite_path(&control.database) {
        let root_key = match (&control.root_key_file, env_key) {
            (Some(file), _) => RootKeySource::File(file.clone()),
            (None, true) => RootKeySource::Env("INFRA_ROOT_KEY".to_owned()),
            (None, false) => RootKeySource::File(path.with_extension("key")),
        };
        StoreConfig::sqlite(path, root_key)
    } else if control.database.starts_with("postgres://")
        || control.database.starts_with("postgresql://")
    {
        let root_key = match (&control.root_key_file, env_key) {
            (Some(file), _) => RootKeySource::File(file.clone()),
            (None, true) => RootKeySource::Env("INFRA_ROOT_KEY".to_owned()),
            (None, false) => bail!(
                "a PostgreSQL store needs its root key from --root-key-file or INFRA_ROOT_KEY, shared by every replica"
            ),
        };
        let mut config = StoreConfig::postgres(
            infra_authz::policy::Secret::new(control.database.clone()),
            root_key,
        );
        // Replicas share a database that an administrator made; the first to start creates the
        // schema.
        config.initialize = true;
        config
    } else {
        bail!("--database must be sqlite:PATH or a postgres:// URL");
    };
    let store = Store::open(&store_config)
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("opening the control plane's store")?;
    let mut config = ControlConfig::new(
        control
            .control_public_url
            .clone()
            .unwrap_or_else(|| format!("https://{listen}")),
    );
    config.token_ttl = Duration::from_secs(control.token_ttl_seconds);
    config.reverify_after = Duration::from_secs(control.provider_recheck_seconds);
    config.request_pending_for = Duration::from_secs(control.request_pending_seconds);
    config
        .admin_password_file
        .clone_from(&control.admin_password_file);
    config.policy_path.clone_from(&args.policy);
    config.redirect_uris.clone_from(&control.oidc_redirect_uris);
    config
        .provider_ca_file
        .clone_from(&control.provider_ca_file);
    config.trusted_proxies.clone_from(&control.trusted_proxies);
    config.anonymous_per_minute = control.client_rate_per_minute;
    config.anonymous_burst = control.client_burst;
    if !control.audit_retention.is_zero() {
        config.audit_retention = control.audit_retention;
    }
    if let Some(endpoint) = &control.audit_otlp_endpoint {
        config.audit_otlp = Some(infra_control::otlp::OtlpConfig::parse(
            endpoint,
            &control.audit_otlp_headers,
        )?);
    }
    let plane = ControlPlane::start(store, config, policy, clock).await?;
    plane.spawn_rotation(Duration::from_mins(1));
    Ok(plane)
}

/// Serves the control API on its own listener, with the proxy's certificate.
fn serve_control(
    plane: &Arc<ControlPlane>,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    drain: Drain,
    limits: Limits,
) {
    let router = api::router(Arc::clone(plane));
    tokio::spawn(server::serve(
        listener,
        acceptor,
        limits,
        drain,
        move |mut request: http::Request<hyper::body::Incoming>, peer| {
            // Rate limits and login lockouts count per client address.
            request.extensions_mut().insert(api::PeerAddr(peer));
            let router = router.clone();
            async move { control_response(router, request).await }
        },
    ));
}

async fn control_response(
    router: axum::Router,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<upstream::Body> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let response = match router.oneshot(request.map(axum::body::Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let streaming = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    if streaming {
        // The sync stream: pass each chunk on as it comes, for as long as it lasts.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data()
                    && tx.send(data).await.is_err()
                {
                    break;
                }
            }
        });
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|data| {
                (
                    Ok::<_, upstream::BodyError>(hyper::body::Frame::data(data)),
                    rx,
                )
            })
        });
        return http::Response::from_parts(parts, http_body_util::StreamBody::new(frames).boxed());
    }
    // Other control answers are small JSON documents: collect them, so the body type matches
    // the proxy's.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "control API response body failed");
            bytes::Bytes::new()
        }
    };
    http::Response::from_parts(
        parts,
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// Keeps the proxy's snapshot in step with the control plane in this process, registers this
/// destination, and heartbeats it.
async fn spawn_control_sync(
    plane: Arc<ControlPlane>,
    handle: Arc<PolicyHandle>,
    sync: Arc<SyncState>,
    destination: NewDestination,
) -> Result<()> {
    let now = plane.now();
    plane
        .store()
        .put_destination(SYSTEM_ACTOR, &destination, now)
        .await
        .context("registering this destination")?;
    let publisher = Arc::clone(&plane);
    let name = destination.name.clone();
    let handle_for_roles = Arc::clone(&handle);
    // The same stream a proxy in another cluster follows (snapshot, then deltas), read in
    // process: a change costs this proxy what it costs the others.
    tokio::spawn(async move {
        loop {
            match api::sync_lines(Arc::clone(&publisher), name.clone()).await {
                Ok(mut lines) => {
                    let mut reader = crate::sync::StreamReader::new(&name);
                    while let Some(line) = lines.recv().await {
                        let line = line.strip_suffix(b"\n").unwrap_or(&line);
                        if let Err(error) = reader.line(line, &sync, &handle, publisher.now()) {
                            tracing::error!(
                                error = format!("{error:#}"),
                                "the in-process sync stream failed; starting it again"
                            );
                            break;
                        }
                    }
                }
                Err(error) => tracing::error!(
                    error = format!("{error:#}"),
                    "building the policy snapshot failed"
                ),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    plane.register_decider(
        &destination.name,
        Arc::new(Decider(Arc::clone(&handle_for_roles))),
    );
    let reporter = Arc::clone(&handle_for_roles);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            plane.report_cluster(
                &destination.name,
                infra_control::plane::ClusterReport {
                    unknown_roles: reporter.unknown_roles(),
                    outside_bindings: reporter.outside_bindings(),
                },
            );
            if let Err(error) = plane
                .store()
                .touch_destination(&destination.name, &destination.version, plane.now())
                .await
            {
                tracing::warn!(%error, "destination heartbeat failed");
            }
        }
    });
    Ok(())
}

/// Without a certificate, the embedded control plane on SQLite keeps its self-signed one next to
/// the database (`infra-tls.crt`, `infra-tls.key`), so users who trusted it at `infra login` keep
/// trusting it across restarts, and their kubeconfigs stay valid.
pub fn kept_certificate(args: &ServeArgs) -> Result<Option<(PathBuf, PathBuf)>> {
    if args.control.control_listen.is_none() {
        return Ok(None);
    }
    let Some(db) = sqlite_path(&args.control.database) else {
        return Ok(None);
    };
    let (cert, key) = (
        db.with_file_name("infra-tls.crt"),
        db.with_file_name("infra-tls.key"),
    );
    if tls::keep_self_signed(&cert, &key)? {
        tracing::info!(cert = %cert.display(), "made a self-signed certificate for localhost, kept for later starts");
    }
    Ok(Some((cert, key)))
}

/// The file of a `sqlite:PATH` (or `sqlite://PATH`) database setting.
fn sqlite_path(database: &str) -> Option<PathBuf> {
    database
        .strip_prefix("sqlite:")
        .map(|path| PathBuf::from(path.trim_start_matches("//")))
}

/// The embedded proxy's policy, as the control plane's `GET /api/why` consults it.
#[derive(Debug)]
struct Decider(Arc<PolicyHandle>);

impl infra_control::plane::Decider for Decider {
    fn explain(
        &self,
        identity: &infra_authz::decision::Identity,
        attrs: &infra_authz::attributes::Attributes,
        now: std::time::SystemTime,
    ) -> infra_authz::decision::Explanation {
        self.0.explain(identity, attrs, now)
    }
}
