//! Assembling a running proxy from its configuration. Everything that can be wrong with the
//! configuration is found here, before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use infra_authz::clock::{Clock, SystemClock};
use infra_authz::rbac::RoleSet;
use infra_authz::token::ClaimMapping;
use tokio::net::TcpListener;

use crate::admin::{self, Readiness};
use crate::audit::{Audit, Reporting, Sink};
use crate::authn::{Authenticator, IssuerConfig, KeySource};
use crate::config::{ControlArgs, IssuerArgs, ServeArgs};
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::pipeline::Proxy;
use crate::policy::{self, PolicyHandle, Reloader};
use crate::server::{self, Drain};
use crate::streams::Streams;
use crate::sync::SyncState;
use crate::tls::{self, CertResolver, CertSource};

#[cfg(feature = "control")]
mod embedded;
#[cfg(not(feature = "control"))]
#[path = "app/proxy_only.rs"]
mod embedded;

use crate::upstream::{self, PoolSettings, Upstream};
pub use embedded::Embedded;

/// A proxy that is serving.
#[derive(Debug)]
pub struct Running {
    /// Where kubectl connects.
    pub address: SocketAddr,
    /// Where the admin endpoints are.
    pub admin_address: SocketAddr,
    /// The serving certificate's SHA-256 fingerprint.
    pub fingerprint: String,
    /// Drains the listener.
    pub drain: Drain,
    /// The shared request state.
    pub proxy: Arc<Proxy>,
    /// Where the control API is, when the control plane runs in this process.
    pub control_address: Option<SocketAddr>,
    /// The control plane, when it runs in this process.
    pub control: Option<Embedded>,
}

impl Running {
    /// Hands over what the control plane in this process does in the background (the audit
    /// export's lease), waiting for it: call when the process is about to end, after the drain.
    pub async fn stop_control(&self) {
        if let Some(plane) = &self.control {
            embedded::stop(plane).await;
        }
    }
}

/// The trusted issuers the flags describe.
pub fn issuers(
    destination: &str,
    args: &IssuerArgs,
    control: &ControlArgs,
) -> Result<Vec<IssuerConfig>> {
    let mut issuers = Vec::new();
    if let Some(issuer) = &args.issuer {
        let keys = match (&args.jwks_file, &args.jwks_url) {
            (Some(file), None) => KeySource::File(file.clone()),
            (None, Some(url)) => KeySource::Url(url.clone()),
            (Some(_), Some(_)) => bail!("give either --jwks-file or --jwks-url, not both"),
            (None, None) => bail!("--issuer needs --jwks-file or --jwks-url"),
        };
        issuers.push(IssuerConfig {
            issuer: issuer.clone(),
            audience: destination.to_owned(),
            keys,
            // Infra's tokens name the user in `name` and the groups in `groups`.
            mapping: ClaimMapping {
                username_claim: "name".into(),
                ..ClaimMapping::default()
            },
            sessions: None,
        });
    }
    if let Some(url) = &args.oidc_issuer_url {
        if !url.starts_with("https://") {
            bail!("--oidc-issuer-url must be an https URL, not {url:?}");
        }
        let audience = args
            .oidc_audience
            .clone()
            .ok_or_else(|| anyhow!("--oidc-issuer-url needs --oidc-audience"))?;
        issuers.push(IssuerConfig {
            issuer: url.clone(),
            audience,
            keys: KeySource::Discovery(url.clone()),
            mapping: ClaimMapping {
                username_claim: args.oidc_username_claim.clone(),
                username_prefix: args.oidc_username_prefix.clone(),
                groups_claim: args.oidc_groups_claim.clone(),
                groups_prefix: args.oidc_groups_prefix.clone(),
            },
            sessions: None,
        });
    }
    if issuers.is_empty() && control.control_listen.is_none() && control.control_url.is_none() {
        bail!(
            "no token issuer is configured: run the control plane here (--control-listen), or give --issuer with --jwks-file or --jwks-url, or --oidc-issuer-url with --oidc-audience"
        );
    }
    Ok(issuers)
}

/// Checks the configuration, binds the listeners and starts serving.
pub async fn start(args: ServeArgs) -> Result<Running> {
    // Boxed: the start's state is large, and the futures of its callers (tests) stay small.
    Box::pin(start_boxed(args)).await
}

async fn start_boxed(args: ServeArgs) -> Result<Running> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    infra_authz::policy::validate_dns_label(&args.destination)
        .map_err(|why| anyhow!("--destination {why}"))?;
    let mut issuer_configs = issuers(&args.destination, &args.issuers, &args.control)?;
    let audit_sink = match args.audit_log.as_str() {
        "stdout" | "-" => Sink::Stdout,
        "off" => Sink::Off,
        path => Sink::File(PathBuf::from(path)),
    };

    if args.control.control_url.is_some() && args.policy.is_some() {
        bail!(
            "with --control-url the policy comes from that control plane: give the policy file to the control plane, not to this proxy"
        );
    }
    let loaded = match &args.policy {
        Some(path) => policy::load(path).map_err(|errors| {
            anyhow!(
                "the policy file has errors:\n{}",
                errors.to_string().trim_end()
            )
        })?,
        None => infra_authz::policy::Policy::default(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let control = embedded::start(&args, &loaded, Arc::clone(&clock)).await?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let handle = Arc::new(PolicyHandle::new(
        &args.destination,
        &loaded.grants,
        RoleSet::builtin(),
    ));
    let (sync, remote) = start_sync(&args, control.as_ref(), &handle).await?;
    if let Some(sync) = &sync {
        let issuer = match (&control, &remote) {
            (Some(plane), _) => embedded::issuer(plane),
            (None, Some(remote)) => remote.control_url.trim_end_matches('/').to_owned(),
            (None, None) => bail!("a policy snapshot without a control plane"),
        };
        issuer_configs.push(IssuerConfig {
            issuer,
            audience: args.destination.clone(),
            keys: KeySource::Snapshot(Arc::clone(sync)),
            // Infra's tokens name the user in `name` and the groups in `groups`.
            mapping: ClaimMapping {
                username_claim: "name".into(),
                ..ClaimMapping::default()
            },
            sessions: Some(sync.sessions()),
        });
    }
    metrics.policy_generation.set(1);
    readiness.set("policy", Ok(()));

    let upstream = Arc::new(
        upstream::from_kube(
            args.kubeconfig.as_deref(),
            args.context.as_deref(),
            PoolSettings {
                max_streams_per_connection: args.upstream_max_streams.max(1),
                ..PoolSettings::default()
            },
        )
        .await?,
    );
    let rbac_client =
        crate::reconcile::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let rbac_status = Arc::new(crate::reconcile::RbacStatus::default());
    let cert_source = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => match embedded::kept_certificate(&args)? {
            Some((cert, key)) => CertSource::Files { cert, key },
            None => CertSource::SelfSigned,
        },
    };
    let resolver = CertResolver::new(cert_source.clone())?;
    let tls_config = tls::server_config(Arc::clone(&resolver))?;
    let authn = Authenticator::new(
        issuer_configs,
        args.issuers.issuer_ca_file.as_deref(),
        Arc::clone(&metrics),
    )
    .await?;
    let forward: Option<Arc<dyn crate::audit::Forward>> = match (&control, &remote) {
        (Some(plane), _) => Some(embedded::audit_forward(plane)),
        (None, Some(remote)) => Some(Arc::new(
            crate::audit::forward::Remote::new(
                &remote.control_url,
                remote.access_key.clone(),
                remote.ca_pem.as_deref(),
                tokio::runtime::Handle::current(),
            )
            .context("building the audit sender")?,
        )),
        (None, None) => None,
    };
    let trail = match forward {
        Some(forward) => Some(crate::audit::Trail {
            forward,
            spool: crate::audit::spool::Spool::open(&args.audit_spool, args.audit_spool_bytes)
                .with_context(|| {
                    format!("opening the audit spool {}", args.audit_spool.display())
                })?,
        }),
        None => None,
    };
    let audit = Audit::start(
        audit_sink,
        trail,
        &args.destination,
        65_536,
        Reporting {
            mode: args.audit_fail,
            failures: metrics.audit_failures.clone(),
            recorded: metrics.audit_recorded.clone(),
            spooled: metrics.audit_spooled.clone(),
            readiness: Some(Arc::clone(&readiness)),
            format: args.audit_format,
        },
    )
    .context("opening the audit log")?;
    let limits = args.limits.limits();

    // Configuration is good: bind.
    let admin_listener = admin::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin_listen))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let control_listener = match args.control.control_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the control listener on {addr}"))?,
        ),
        None => None,
    };
    let address = listener.local_addr()?;
    let admin_address = admin_listener.local_addr()?;
    let fingerprint = resolver.fingerprint();
    if args.tls_cert.is_none() {
        tracing::warn!(%fingerprint, "no --tls-cert given: serving a self-signed certificate for localhost");
        eprintln!("infra-proxy: self-signed certificate, SHA-256 fingerprint {fingerprint}");
    }

    resolver.spawn_reloader(Duration::from_secs(5));
    authn.spawn_refresher(Duration::from_secs(5));
    if let Some(path) = &args.policy {
        let mut reloader = Reloader::new(
            path.clone(),
            Arc::clone(&handle),
            Arc::clone(&readiness),
            Arc::clone(&metrics),
        );
        if let Some(plane) = &control {
            reloader = reloader.with_control(embedded::file_owner(plane));
        }
        reloader.spawn(Duration::from_secs(1));
    }
    if let Some(sync) = &sync
        && remote.is_some()
    {
        spawn_staleness_reports(
            Arc::clone(sync),
            Arc::clone(&readiness),
            Arc::clone(&metrics),
            Arc::clone(&clock),
        );
    }
    if let Some(plane) = &control {
        embedded::spawn_notification_reports(plane, Arc::clone(&readiness), Arc::clone(&metrics));
        embedded::spawn_audit_export_reports(plane, Arc::clone(&readiness), Arc::clone(&metrics));
    }
    spawn_readiness_probes(
        Arc::clone(&upstream),
        Arc::clone(&authn),
        Arc::clone(&readiness),
    );
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::clone(&readiness),
        Arc::clone(&metrics),
    ));

    let streams = Arc::new(Streams::default());
    streams.spawn_rechecks(
        Arc::clone(&authn),
        Arc::clone(&handle),
        Arc::clone(&clock),
        Duration::from_secs(5),
    );
    let proxy = Arc::new(Proxy {
        destination: args.destination.clone(),
        authn,
        policy: handle,
        upstream,
        audit,
        metrics,
        clock,
        sync: sync.clone(),
        streams,
        limits,
        in_flight: InFlight::new(limits.max_requests_in_flight_per_user),
        rbac: Arc::clone(&rbac_status),
    });
    let drain = Drain::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let shared = Arc::clone(&proxy);
    tokio::spawn(server::serve(
        listener,
        acceptor,
        limits,
        drain.clone(),
        move |request, peer| Arc::clone(&shared).handle(request, peer),
    ));
    let mut control_address = None;
    if let (Some(plane), Some(control_listener)) = (&control, control_listener) {
        control_address = Some(control_listener.local_addr()?);
        let public_url = args
            .control
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{address}"));
        embedded::serve(
            plane,
            control_listener,
            &resolver,
            drain.clone(),
            Arc::clone(&proxy.policy),
            sync.clone().ok_or_else(|| anyhow!("no snapshot state"))?,
            &args.destination,
            public_url,
            limits,
        )
        .await?;
        tracing::info!(address = ?control_address, "control API serving");
    }
    if let (Some(sync), Some(mut remote)) = (&sync, remote) {
        remote.public_url = args
            .control
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{address}"));
        remote.serving_ca_pem = resolver.leaf_pem();
        crate::sync::spawn_remote(
            remote,
            Arc::clone(sync),
            Arc::clone(&proxy.policy),
            Arc::clone(&proxy.clock),
        )?;
    }
    crate::reconcile::spawn_rbac(crate::reconcile::RbacTask {
        client: rbac_client,
        mode: args.rbac_reconcile,
        handle: Arc::clone(&proxy.policy),
        readiness: Arc::clone(&readiness),
        metrics: Arc::clone(&proxy.metrics),
        clock: Arc::clone(&proxy.clock),
        status: rbac_status,
    });
    tracing::info!(%address, %admin_address, destination = %args.destination, "infra-proxy serving");
    Ok(Running {
        address,
        admin_address,
        fingerprint,
        drain,
        proxy,
        control_address,
        control,
    })
}

fn spawn_readiness_probes(
    upstream: Arc<Upstream>,
    authn: Arc<Authenticator>,
    readiness: Arc<Readiness>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            readiness.set("keys", authn.keys_loaded());
            readiness.set("upstream", probe(&upstream).await);
        }
    });
}

async fn probe(upstream: &Upstream) -> Result<(), String> {
    let uri = upstream.uri_for("/version").map_err(|e| e.to_string())?;
    let mut request = http::Request::get(uri)
        .body(upstream::empty())
        .map_err(|e| e.to_string())?;
    if let Some(credential) = upstream.credential() {
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, (*credential).clone());
    }
    let response = tokio::time::timeout(Duration::from_secs(5), upstream.send(request))
        .await
        .map_err(|_| "the apiserver did not answer GET /version in 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("GET /version answered {}", response.status()))
    }
}

/// The snapshot state of this proxy: in the control plane's process, synced from a remote one
/// (with the saved snapshot put in force at once), or none (policy from the file only).
async fn start_sync(
    args: &ServeArgs,
    control: Option<&Embedded>,
    handle: &Arc<PolicyHandle>,
) -> Result<(Option<Arc<SyncState>>, Option<crate::sync::Remote>)> {
    if let Some(plane) = control {
        let sync = embedded::in_process_sync(plane, &args.destination, handle).await?;
        return Ok((Some(sync), None));
    }
    let Some(url) = &args.control.control_url else {
        return Ok((None, None));
    };
    if !url.starts_with("https://") {
        bail!("--control-url must be an https URL, not {url:?}");
    }
    let access_key = match (
        &args.control.access_key_file,
        std::env::var("INFRA_ACCESS_KEY"),
    ) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the access key file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(key)) => key.trim().to_owned(),
        (None, Err(_)) => bail!(
            "--control-url needs an access key: --access-key-file or INFRA_ACCESS_KEY (a key of a user with role connector on infra)"
        ),
    };
    let ca_pem = match &args.control.control_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the control CA file {}", path.display()))?,
        ),
        None => None,
    };
    let sync = SyncState::remote(
        args.control.snapshot_file.clone(),
        Duration::from_secs(args.control.staleness_seconds),
    );
    if let Some(snapshot) = sync.load()? {
        if snapshot.destination == args.destination {
            sync.apply(&snapshot, handle);
            // The snapshot was saved when the control plane was last heard from.
            let saved = std::fs::metadata(&args.control.snapshot_file)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            sync.contact(saved);
            tracing::info!(
                generation = snapshot.generation,
                "serving the saved policy snapshot until the control plane answers"
            );
        } else {
            tracing::warn!(saved = %snapshot.destination, "the saved snapshot is of another destination; ignoring it");
        }
    }
    let remote = crate::sync::Remote {
        control_url: url.clone(),
        access_key: infra_authz::policy::Secret::new(access_key),
        ca_pem,
        destination: args.destination.clone(),
        public_url: String::new(),
        serving_ca_pem: String::new(),
    };
    Ok((Some(sync), Some(remote)))
}

/// Shows a proxy-only proxy's distance from its control plane in /readyz and a metric.
fn spawn_staleness_reports(
    sync: Arc<SyncState>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = clock.now();
            readiness.set("control-plane", sync.refuse_reason(now).map_or(Ok(()), Err));
            metrics.snapshot_age.set(
                sync.age(now)
                    .map_or(-1, |age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
            );
        }
    });
}
