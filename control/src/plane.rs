//! The control plane: the store, and what it does with it, split by job:
//!
//! - [`signing`]: token signing keys, their rotation, sessions and tokens.
//! - [`policy_file`]: the bootstrap admin and the policy file's ownership of what it declares.
//! - [`snapshots`]: what each destination's proxy decides with.
//! - [`fanout`]: what changed, read from the store once per change, for every sync stream.
//! - [`replicas`]: change notices between control replicas.
//!
//! The HTTP API ([`super::api`]) is a thin layer over this, [`crate::changes`] and
//! [`crate::login`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use arc_swap::ArcSwap;
use infra_authz::clock::Clock;
use infra_authz::policy::Policy;
use ring::rand::SystemRandom;
use tokio::sync::watch;

use super::Store;
use super::oidc::OidcLogins;

mod audit;
mod fanout;
mod policy_file;
mod replicas;
mod signing;
mod snapshots;

pub use fanout::{Event, Published};
pub use policy_file::{grant_key, owned};
use signing::{Keys, load_keys};
pub use snapshots::CachedSnapshot;
use snapshots::SharedView;

/// The actor name the policy file's changes are recorded under.
pub const FILE_ACTOR: &str = "policy-file";
/// The actor name of the control plane's own changes.
pub const SYSTEM_ACTOR: &str = "infra";
/// The name of the user a first start creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// How the control plane behaves.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The issuer name its tokens carry (`iss`): the control API's URL.
    pub issuer: String,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
    /// How often the signing key is replaced.
    pub rotate_every: Duration,
    /// How long a new key is published before it signs, so every verifier knows it first.
    pub publish_lead: Duration,
    /// How old a provider user's last check may be before a token is issued without asking the
    /// provider again.
    pub reverify_after: Duration,
    /// The bootstrap admin's password, read from this file instead of made up.
    pub admin_password_file: Option<PathBuf>,
    /// Where the policy file is, for messages about what it owns.
    pub policy_path: Option<PathBuf>,
    /// Redirect URIs (exact) that OIDC logins may use besides loopback ones.
    pub redirect_uris: Vec<String>,
    /// Extra CA certificates (PEM) to trust for identity providers, besides the system roots.
    pub provider_ca_file: Option<PathBuf>,
    /// Proxies (load balancers, ingress) whose `X-Forwarded-For` names the client; the address
    /// of any other peer is the client's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an access request waits for its reviewers before it expires (default 24 h).
    pub request_pending_for: Duration,
    /// Requests a minute each client address may make of login, OIDC start and token exchange.
    pub anonymous_per_minute: u32,
    /// The burst of those allowed at once.
    pub anonymous_burst: u32,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Export the audit trail as OpenTelemetry logs there (`--audit-otlp-endpoint`).
    pub audit_otlp: Option<crate::otlp::OtlpConfig>,
}

impl ControlConfig {
    /// The defaults for an issuer URL.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            token_ttl: Duration::from_mins(5),
            rotate_every: Duration::from_hours(24),
            publish_lead: Duration::from_mins(10),
            reverify_after: Duration::from_mins(15),
            admin_password_file: None,
            policy_path: None,
            redirect_uris: Vec::new(),
            provider_ca_file: None,
            trusted_proxies: Vec::new(),
            request_pending_for: Duration::from_hours(24),
            anonymous_per_minute: 20,
            anonymous_burst: 40,
            audit_retention: Duration::from_hours(24 * 90),
            audit_otlp: None,
        }
    }
}

/// A destination's policy in force, as its proxy decides with it: registered by the proxy that
/// runs in the control plane's process, so that `GET /api/why` answers with that proxy's own
/// decision (and its cluster's roles).
pub trait Decider: Send + Sync + std::fmt::Debug {
    /// The decision for `identity` and `attrs` at `now`, and why.
    fn explain(
        &self,
        identity: &infra_authz::decision::Identity,
        attrs: &infra_authz::attributes::Attributes,
        now: std::time::SystemTime,
    ) -> infra_authz::decision::Explanation;
}

/// What a destination's proxy says of its cluster (kept in memory, renewed by its heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Roles its grants name that the cluster lacks.
    pub unknown_roles: Vec<String>,
    /// Bindings made outside Infra that name its grants' users or groups.
    pub outside_bindings: Vec<String>,
}

/// What the policy file says of access requests: its rules, on-call sources and notification
/// targets (held in memory: every replica reads the same file).
#[derive(Debug, Default)]
pub struct FileRequestSettings {
    /// The file's rules.
    pub rules: Vec<infra_authz::policy::requests::RequestRule>,
    /// The file's on-call sources.
    pub on_call: Vec<infra_authz::policy::requests::OnCallSource>,
    /// The file's notification targets.
    pub notify: Vec<infra_authz::policy::requests::Notifier>,
}

/// The control plane.
#[derive(Debug)]
pub struct ControlPlane {
    store: Store,
    /// What snapshots of every destination share, as of one change (see `shared_view`).
    shared: tokio::sync::Mutex<Option<Arc<SharedView>>>,
    /// The last snapshot of each destination sent on sync streams, as of one change.
    cached: tokio::sync::Mutex<std::collections::HashMap<String, Arc<CachedSnapshot>>>,
    /// Changes to resolve and publish, in order (see [`fanout`]).
    hints: tokio::sync::mpsc::UnboundedSender<fanout::Hint>,
    /// Resolved changes, for every sync stream.
    events: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// The `seq` of the last event; held for writing while an event is read and sent, for
    /// reading while a snapshot is built.
    published: tokio::sync::RwLock<u64>,
    /// Announcements to the other replicas, in order (PostgreSQL only).
    notices: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    config: ControlConfig,
    keys: ArcSwap<Keys>,
    changes: watch::Sender<u64>,
    generation: std::sync::atomic::AtomicU64,
    /// Sessions ended lately (id → user, when), kept until every token traded for them has
    /// expired, so proxies refuse those tokens even when the session began moments before.
    ended: std::sync::Mutex<std::collections::HashMap<String, (String, SystemTime)>>,
    /// This replica's name in announcements to the others.
    replica: String,
    /// What each destination's proxy last reported: roles its grants name that its cluster does
    /// not have.
    cluster_reports: std::sync::Mutex<std::collections::HashMap<String, ClusterReport>>,
    /// The deciders of the destinations whose proxies run in this process.
    deciders: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<dyn Decider>>>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    /// Logins in flight at identity providers.
    pub oidc: OidcLogins,
    /// The policy file's request rules, on-call sources and notification targets.
    pub(crate) request_settings: ArcSwap<FileRequestSettings>,
    /// Who is on call, cached.
    pub(crate) on_call: crate::oncall::OnCall,
    /// Access requests' notifications.
    pub(crate) notifications: Arc<crate::notify::Notifications>,
    /// The audit trail's export over OTLP, when configured.
    export: Option<Arc<crate::otlp::exporter::Exporter>>,
}

impl ControlPlane {
    /// Starts the control plane on an opened store: the first signing key, the bootstrap admin,
    /// and the policy file's objects.
    pub async fn start(
        store: Store,
        config: ControlConfig,
        policy: &Policy,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        let now = clock.now();
        let keys = load_keys(&store, &config, now, true).await?;
        let (changes, _) = watch::channel(0);
        let oidc = OidcLogins::new(&config.redirect_uris, config.provider_ca_file.as_deref())?;
        let outbound = crate::oidc::outbound_client(
            config.provider_ca_file.as_deref(),
            Duration::from_secs(10),
        )?;
        let notifications = Arc::new(crate::notify::Notifications::new(
            outbound.clone(),
            crate::notify::RETRY_BASE,
            Arc::clone(&clock),
        ));
        let replica = uuid::Uuid::new_v4().to_string();
        let export = match &config.audit_otlp {
            Some(otlp) => Some(Arc::new(crate::otlp::exporter::Exporter::new(
                store.clone(),
                crate::oidc::outbound_client(
                    config.provider_ca_file.as_deref(),
                    Duration::from_secs(30),
                )?,
                otlp.clone(),
                Arc::clone(&clock),
                replica.clone(),
            ))),
            None => None,
        };
        let (hints, hints_rx) = tokio::sync::mpsc::unbounded_channel();
        let (events, _) = tokio::sync::broadcast::channel(fanout::EVENT_BACKLOG);
        let (notices, notices_rx) = if store.database_kind() == "postgres" {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let plane = Arc::new(Self {
            store,
            shared: tokio::sync::Mutex::new(None),
            cached: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            hints,
            events,
            published: tokio::sync::RwLock::new(0),
            notices,
            config,
            keys: ArcSwap::from_pointee(keys),
            changes,
            generation: std::sync::atomic::AtomicU64::new(0),
            ended: std::sync::Mutex::new(std::collections::HashMap::new()),
            replica,
            cluster_reports: std::sync::Mutex::new(std::collections::HashMap::new()),
            deciders: std::sync::Mutex::new(std::collections::HashMap::new()),
            clock,
            rng: SystemRandom::new(),
            oidc,
            request_settings: ArcSwap::from_pointee(FileRequestSettings::default()),
            on_call: crate::oncall::OnCall::new(outbound),
            notifications,
            export,
        });
        plane.load_ended().await?;
        plane.spawn_publisher(hints_rx);
        if let Some(queue) = notices_rx {
            plane.spawn_notifier(queue);
        }
        plane.apply_policy_file(policy).await?;
        plane.bootstrap(policy).await?;
        plane.spawn_replica_listener();
        plane.spawn_request_sweeper();
        if let Some(export) = &plane.export {
            tokio::spawn(Arc::clone(export).run());
        }
        Ok(plane)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The audit trail's export over OTLP, when configured.
    pub fn audit_export(&self) -> Option<&Arc<crate::otlp::exporter::Exporter>> {
        self.export.as_ref()
    }

    /// Stops what this replica does in the background that another replica or the next start
    /// must take over at once: the audit export (its lease is let go). Waits for it, at most
    /// `wait`.
    pub async fn stop_background(&self, wait: Duration) {
        if let Some(export) = &self.export {
            export.stop();
            if tokio::time::timeout(wait, export.stopped()).await.is_err() {
                tracing::warn!(
                    "the audit export did not stop in time; its lease runs out by itself"
                );
            }
        }
    }

    /// The clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The issuer name (`iss`) of its tokens.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// A receiver that sees a new number whenever something a proxy decides with changed
    /// (after the change's event is published, see [`Self::subscribe_events`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records what `destination`'s proxy says of its cluster: the roles its grants name but
    /// the cluster lacks, and the bindings made outside Infra that name its grants' subjects.
    pub fn report_cluster(&self, destination: &str, report: ClusterReport) {
        let mut known = self
            .cluster_reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if report == ClusterReport::default() {
            known.remove(destination);
        } else {
            known.insert(destination.to_owned(), report);
        }
    }

    /// Registers the decider of `destination`, whose proxy runs in this process.
    pub fn register_decider(&self, destination: &str, decider: std::sync::Arc<dyn Decider>) {
        self.deciders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(destination.to_owned(), decider);
    }

    /// The decider of `destination`, if its proxy runs in this process.
    pub fn decider(&self, destination: &str) -> Option<std::sync::Arc<dyn Decider>> {
        self.deciders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .cloned()
    }

    /// What `destination`'s proxy last said of its cluster.
    pub fn cluster_report(&self, destination: &str) -> ClusterReport {
        self.cluster_reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(destination)
            .cloned()
            .unwrap_or_default()
    }

    /// The roles `destination`'s proxy last reported missing.
    pub fn unknown_roles(&self, destination: &str) -> Vec<String> {
        self.cluster_report(destination).unknown_roles
    }
}
