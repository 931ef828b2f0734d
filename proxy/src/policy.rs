//! The policy in force: loaded from the policy file, swapped atomically on change, with a
//! decision cache in front of it.
//!
//! A reload that fails (a typo, a half-written file) keeps the previous policy in force; the
//! located error is logged, shown in `/readyz` and counted in a metric.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use infra_authz::attributes::Attributes;
use infra_authz::decision::{Authorizer, Decision, DecisionCache, Explanation, Identity, Rules};
use infra_authz::policy::Grant;
use infra_authz::policy::file::{self, EnvSecrets, PolicyErrors};
use infra_authz::rbac::RoleSet;

use crate::admin::Readiness;
use crate::metrics::Metrics;

/// The current policy of one destination.
#[derive(Debug)]
pub struct PolicyHandle {
    destination: String,
    current: ArcSwap<Authorizer>,
    /// The roles grants are decided with; also the lock that orders every rebuild of `current`
    /// (new grants, new roles), so that none is lost to a race between the two.
    roles: std::sync::Mutex<RoleSet>,
    cache: DecisionCache,
    generation: AtomicU64,
    /// The grants in force, for those who act on them (RBAC reconcile).
    grants: tokio::sync::watch::Sender<Arc<Vec<Grant>>>,
    /// Bindings made outside Infra naming the grants' subjects, as the RBAC watch last saw.
    outside_bindings: std::sync::Mutex<Vec<String>>,
}

impl PolicyHandle {
    /// A handle deciding for `destination` with `roles`, starting from `policy`'s grants.
    pub fn new(destination: &str, grants: &[Grant], roles: RoleSet) -> Self {
        let authorizer = build_authorizer(destination, grants, &roles, 1);
        report_unknown_roles(&authorizer);
        let (grants, _) = tokio::sync::watch::channel(Arc::new(grants.to_vec()));
        Self {
            destination: destination.to_owned(),
            current: ArcSwap::from_pointee(authorizer),
            roles: std::sync::Mutex::new(roles),
            cache: DecisionCache::new(100_000),
            generation: AtomicU64::new(1),
            grants,
            outside_bindings: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A receiver of every set of grants put in force (all destinations' grants as given; filter
    /// by [`Self::destination`]).
    pub fn subscribe_grants(&self) -> tokio::sync::watch::Receiver<Arc<Vec<Grant>>> {
        self.grants.subscribe()
    }

    /// The destination this handle decides for.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Decides, from the cache when it can; the `bool` says whether it was a cache hit.
    pub fn decide(
        &self,
        identity: &Identity,
        attrs: &Attributes,
        now: SystemTime,
    ) -> (Decision, bool) {
        let authorizer = self.current.load();
        self.cache.lookup(&authorizer, identity, attrs, now)
    }

    /// Decides as [`Self::decide`] does, with the authorizer in force and the same loop, but
    /// not from the cache, and says why (for the access reviews infra-proxy answers).
    pub fn explain(&self, identity: &Identity, attrs: &Attributes, now: SystemTime) -> Explanation {
        self.current.load().explain(identity, attrs, now)
    }

    /// The rules `identity` has in `namespace` at `now` ([`Authorizer::rules_for`]).
    pub fn rules_for(
        &self,
        identity: &Identity,
        namespace: Option<&str>,
        now: SystemTime,
    ) -> Rules {
        self.current.load().rules_for(identity, namespace, now)
    }

    /// Puts new grants in force. Every cached decision of the old ones becomes unreachable.
    pub fn replace(&self, grants: &[Grant]) -> u64 {
        let roles = self.lock_roles();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let authorizer = build_authorizer(&self.destination, grants, &roles, generation);
        report_unknown_roles(&authorizer);
        self.current.store(Arc::new(authorizer));
        self.grants.send_replace(Arc::new(grants.to_vec()));
        generation
    }

    /// Puts new roles in force with the grants in force (RBAC reconcile: the cluster's
    /// ClusterRoles, and its Roles under `<namespace>/<name>`, see [`build_authorizer`]). Every
    /// cached decision of the old roles becomes unreachable. Returns the new generation.
    pub fn replace_roles(&self, roles: RoleSet) -> u64 {
        let mut held = self.lock_roles();
        *held = roles;
        let grants = Arc::clone(&self.grants.borrow());
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let authorizer = build_authorizer(&self.destination, &grants, &held, generation);
        report_unknown_roles(&authorizer);
        self.current.store(Arc::new(authorizer));
        generation
    }

    fn lock_roles(&self) -> std::sync::MutexGuard<'_, RoleSet> {
        self.roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.current.load().generation()
    }

    /// The roles that grants of this destination name but that exist nowhere (not built in, not
    /// in the cluster), sorted.
    pub fn unknown_roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self
            .current
            .load()
            .grants_with_unknown_role()
            .map(|g| g.role.clone())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Records the bindings made outside Infra that name the grants' users or groups.
    pub fn set_outside_bindings(&self, bindings: Vec<String>) {
        *self
            .outside_bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bindings;
    }

    /// The bindings made outside Infra that name the grants' users or groups (the proxy does not
    /// honour them: it decides from grants), as last seen.
    pub fn outside_bindings(&self) -> Vec<String> {
        self.outside_bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The number of grants in force for this destination.
    pub fn grant_count(&self) -> usize {
        self.current.load().grants().count()
    }
}

/// The authorizer of `grants` with `roles`. A namespace grant whose role is no role of `roles`
/// but a Role of its namespace (kept in `roles` as `<namespace>/<name>`, a name no ClusterRole
/// can have) is decided with that Role, as the apiserver does with the RoleBinding the
/// reconcile makes for it.
fn build_authorizer(
    destination: &str,
    grants: &[Grant],
    roles: &RoleSet,
    generation: u64,
) -> Authorizer {
    let namespaced = |grant: &Grant| {
        let namespace = grant.resource.namespace.as_deref()?;
        if roles.contains(&grant.role) {
            return None;
        }
        let qualified = format!("{namespace}/{}", grant.role);
        roles.contains(&qualified).then_some(qualified)
    };
    let grants: std::borrow::Cow<'_, [Grant]> = if grants.iter().any(|g| namespaced(g).is_some()) {
        grants
            .iter()
            .map(|grant| match namespaced(grant) {
                Some(role) => Grant {
                    role,
                    ..grant.clone()
                },
                None => grant.clone(),
            })
            .collect::<Vec<_>>()
            .into()
    } else {
        grants.into()
    };
    Authorizer::new(destination, &grants, roles, generation).with_authenticated_roles(roles)
}

fn report_unknown_roles(authorizer: &Authorizer) {
    for grant in authorizer.grants_with_unknown_role() {
        tracing::warn!(
            subject = %grant.subject,
            role = %grant.role,
            resource = %grant.resource,
            "a grant names a role this proxy does not know; it allows nothing"
        );
    }
}

/// Loads the policy file, for start-up (where an error is fatal).
pub fn load(path: &Path) -> Result<infra_authz::policy::Policy, PolicyErrors> {
    file::load(path, &EnvSecrets)
}

/// Who owns what a policy file declares when a control plane runs in this process: it is given
/// each good file, stores what it declares, and publishes the grants back to the handle. Defined
/// here so that the proxy core never names the control plane (no module or crate cycle).
pub trait FileOwner: Send + Sync + std::fmt::Debug {
    /// Puts `policy` in force; an error leaves the previous policy in force.
    fn apply<'a>(
        &'a self,
        policy: &'a infra_authz::policy::Policy,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

    /// Records in the audit trail that the file at `path`, whose contents have the SHA-256
    /// `hash` (hex), was reloaded: applied, or refused with `refused` saying why.
    fn reloaded<'a>(
        &'a self,
        path: &'a Path,
        hash: &'a str,
        refused: Option<&'a str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// Watches the policy file and reloads it when it changes.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    /// With a control plane in the process, the file goes to it (it owns what the file declares
    /// and publishes the grants); without, its grants go straight to the handle.
    control: Option<Arc<dyn FileOwner>>,
}

impl Reloader {
    /// A reloader of `path` into `handle`.
    pub fn new(
        path: PathBuf,
        handle: Arc<PolicyHandle>,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path,
            handle,
            readiness,
            metrics,
            control: None,
        }
    }

    /// Sends the file to the control plane instead of straight to the handle.
    #[must_use]
    pub fn with_control(mut self, control: Arc<dyn FileOwner>) -> Self {
        self.control = Some(control);
        self
    }

    /// Loads the file now; on success puts it in force, on failure keeps the old policy and
    /// reports the error. Returns whether the new policy is in force.
    pub async fn reload(&self) -> bool {
        let hash = std::fs::read(&self.path).map_or_else(
            |_| "unreadable".to_owned(),
            |bytes| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        );
        let loaded = match load(&self.path) {
            Ok(policy) => match &self.control {
                Some(control) => control.apply(&policy).await.map(|()| policy),
                None => Ok(policy),
            },
            Err(errors) => Err(errors.to_string()),
        };
        match loaded {
            Ok(policy) => {
                let generation = if self.control.is_some() {
                    // The control plane's change notice brings the grants to the handle.
                    self.handle.generation()
                } else {
                    self.handle.replace(&policy.grants)
                };
                self.metrics
                    .policy_generation
                    .set(i64::try_from(generation).unwrap_or(i64::MAX));
                self.readiness.warn("policy", None);
                if let Some(control) = &self.control {
                    control.reloaded(&self.path, &hash, None).await;
                }
                tracing::info!(
                    path = %self.path.display(),
                    generation,
                    grants = self.handle.grant_count(),
                    "policy reloaded"
                );
                true
            }
            Err(text) => {
                if let Some(control) = &self.control {
                    control
                        .reloaded(&self.path, &hash, Some(text.trim_end()))
                        .await;
                }
                self.metrics.policy_reload_failures.inc();
                self.readiness.warn(
                    "policy",
                    Some(format!(
                        "the policy file has errors; the previous policy stays in force: {}",
                        text.trim_end().replace('\n', "; ")
                    )),
                );
                tracing::error!(
                    path = %self.path.display(),
                    errors = %text.trim_end(),
                    "policy reload failed; the previous policy stays in force"
                );
                false
            }
        }
    }

    /// Polls the file's modification time and size every `every`, and reloads on change.
    /// Polling survives editors that replace the file and Kubernetes' ConfigMap symlink swaps.
    pub fn spawn(self, every: Duration) {
        tokio::spawn(async move {
            let mut last = stamp(&self.path);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = stamp(&self.path);
                if now != last {
                    last = now;
                    self.reload().await;
                }
            }
        });
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
