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
use crate::audit::{Audit, Sink};
use crate::authn::{Authenticator, IssuerConfig, KeySource};
use crate::config::{IssuerArgs, ServeArgs};
use crate::metrics::Metrics;
use crate::pipeline::Proxy;
use crate::policy::{self, PolicyHandle, Reloader};
use crate::server::{self, Drain, Limits};
use crate::tls::{self, CertResolver, CertSource};
use crate::upstream::{self, PoolSettings, Upstream};

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
}

/// The trusted issuers the flags describe.
pub fn issuers(destination: &str, args: &IssuerArgs) -> Result<Vec<IssuerConfig>> {
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
        });
    }
    if issuers.is_empty() {
        bail!(
            "no token issuer is configured: give --issuer with --jwks-file or --jwks-url, or --oidc-issuer-url with --oidc-audience"
        );
    }
    Ok(issuers)
}

/// Checks the configuration, binds the listeners and starts serving.
pub async fn start(args: ServeArgs) -> Result<Running> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    infra_authz::policy::validate_dns_label(&args.destination)
        .map_err(|why| anyhow!("--destination {why}"))?;
    let issuer_configs = issuers(&args.destination, &args.issuers)?;
    let audit_sink = match args.audit_log.as_str() {
        "stdout" | "-" => Sink::Stdout,
        "off" => Sink::Off,
        path => Sink::File(PathBuf::from(path)),
    };

    let loaded = policy::load(&args.policy).map_err(|errors| {
        anyhow!(
            "the policy file has errors:\n{}",
            errors.to_string().trim_end()
        )
    })?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let handle = Arc::new(PolicyHandle::new(
        &args.destination,
        &loaded.grants,
        RoleSet::builtin(),
    ));
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
    let cert_source = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => CertSource::SelfSigned,
    };
    let resolver = CertResolver::new(cert_source.clone())?;
    let tls_config = tls::server_config(Arc::clone(&resolver))?;
    let authn = Authenticator::new(
        issuer_configs,
        args.issuers.issuer_ca_file.as_deref(),
        Arc::clone(&metrics),
    )
    .await?;
    let audit = Audit::start(audit_sink, 65_536).context("opening the audit log")?;

    // Configuration is good: bind.
    let admin_listener = admin::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin_listen))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let admin_address = admin_listener.local_addr()?;
    let fingerprint = resolver.fingerprint();
    if matches!(cert_source, CertSource::SelfSigned) {
        tracing::warn!(%fingerprint, "no --tls-cert given: serving a self-signed certificate for localhost");
        eprintln!("infra-proxy: self-signed certificate, SHA-256 fingerprint {fingerprint}");
    }

    resolver.spawn_reloader(Duration::from_secs(5));
    authn.spawn_refresher(Duration::from_secs(5));
    Reloader::new(
        args.policy.clone(),
        Arc::clone(&handle),
        Arc::clone(&readiness),
        Arc::clone(&metrics),
    )
    .spawn(Duration::from_secs(1));
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

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let proxy = Arc::new(Proxy {
        destination: args.destination.clone(),
        authn,
        policy: handle,
        upstream,
        audit,
        metrics,
        clock,
    });
    let drain = Drain::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let shared = Arc::clone(&proxy);
    tokio::spawn(server::serve(
        listener,
        acceptor,
        Limits::default(),
        drain.clone(),
        move |request, peer| Arc::clone(&shared).handle(request, peer),
    ));
    tracing::info!(%address, %admin_address, destination = %args.destination, "infra-proxy serving");
    Ok(Running {
        address,
        admin_address,
        fingerprint,
        drain,
        proxy,
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
