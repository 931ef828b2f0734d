//! The running RBAC reconciler: the Kubernetes client, the watches of roles and bindings, and
//! the loop that reconciles on every change (with backoff) and reports to `/readyz` and metrics.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures_util::{Stream, StreamExt as _};
use infra_authz::clock::{Clock, SystemClock};
use infra_authz::policy::Grant;
use infra_authz::rbac::RoleSet;
use k8s_openapi::api::rbac::v1 as k8s;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::apply::Writer;
use super::desired::{KnownRoles, desired, role_set};
use super::{ReconcileError, chain};
use crate::admin::Readiness;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;

/// Re-evaluate everything this often even without a change.
const RESYNC: Duration = Duration::from_mins(5);
/// Wait this long after a change for more changes, so a burst makes one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The first retry after a failed pass; doubled on each failure up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Builds a Kubernetes client from the kubeconfig (path and context) that
/// [`crate::upstream::from_kube`] reads, or, with neither, the in-cluster service account.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let config = crate::upstream::kube_config(kubeconfig, context).await?;
    kube::Client::try_from(config).context("building the Kubernetes client for RBAC reconcile")
}

/// Starts the reconciler of `handle`'s destination on the system clock: it runs until the task
/// is aborted.
pub fn spawn(
    client: kube::Client,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    spawn_with_clock(client, handle, readiness, metrics, Arc::new(SystemClock))
}

/// Starts the reconciler of `handle`'s destination: it runs until the task is aborted. `clock`
/// says which grants are in force and when the next one expires; the debounce, resync and
/// retry waits are tokio timers.
pub fn spawn_with_clock(
    client: kube::Client,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, true, true, handle, readiness, metrics, clock))
}

/// Runs until aborted: watches the cluster's ClusterRoles and Roles and puts them in force; with
/// `read_bindings` also watches every binding (reporting those made outside Infra for the
/// grants' users and groups), and with `writes` keeps the bindings that mirror the grants.
pub(super) async fn run(
    client: kube::Client,
    writes: bool,
    read_bindings: bool,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) {
    let (reconciler, watches) = Reconciler::new(
        client,
        Modes {
            writes,
            read_bindings: read_bindings || writes,
        },
        handle,
        readiness,
        metrics,
        clock,
    );
    reconciler.run(watches).await;
}

/// Which watch a signal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    ClusterRoleBindings = 0,
    RoleBindings = 1,
    ClusterRoles = 2,
    Roles = 3,
}

impl Source {
    fn what(self) -> &'static str {
        match self {
            Self::ClusterRoleBindings => "clusterrolebindings",
            Self::RoleBindings => "rolebindings",
            Self::ClusterRoles => "clusterroles",
            Self::Roles => "roles",
        }
    }
}

/// A watch's news: an event (`true` when it completes a full list) or its failure.
struct Signal {
    source: Source,
    outcome: Result<bool, watcher::Error>,
}

type Watches = futures_util::stream::SelectAll<Pin<Box<dyn Stream<Item = Signal> + Send>>>;

fn watch<K>(
    source: Source,
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, Pin<Box<dyn Stream<Item = Signal> + Send>>)
where
    K: Resource<DynamicType = ()> + Clone + fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(writer)
        .map(move |event| Signal {
            source,
            outcome: event.map(|e| matches!(e, watcher::Event::InitDone)),
        });
    (store, Box::pin(stream))
}

/// What the reconciler does besides watching roles.
#[derive(Debug, Clone, Copy)]
struct Modes {
    /// Keep the bindings that mirror the grants.
    writes: bool,
    /// Watch every binding (implied by `writes`).
    read_bindings: bool,
}

struct Reconciler {
    /// Writes this destination's bindings.
    writer: Writer,
    /// Whether bindings are kept; without, only the roles are watched and put in force.
    writes: bool,
    /// Whether the bindings are watched.
    read_bindings: bool,
    /// The bindings made outside Infra last reported.
    outside_reported: Option<Vec<String>>,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    /// The time grants are in force or expired at.
    clock: Arc<dyn Clock>,
    destination: String,
    grants: tokio::sync::watch::Receiver<Arc<Vec<Grant>>>,
    cluster_role_bindings: Store<k8s::ClusterRoleBinding>,
    role_bindings: Store<k8s::RoleBinding>,
    cluster_roles: Store<k8s::ClusterRole>,
    roles: Store<k8s::Role>,
    /// Whether each watch has listed once (indexed by [`Source`]).
    listed: [bool; 4],
    /// Each watch's last failure, until it works again.
    watch_errors: [Option<String>; 4],
    /// The last pass's failures.
    errors: Vec<String>,
    /// The roles last put in force.
    roles_in_force: Option<RoleSet>,
    /// The grants with an unknown role last reported.
    unknown_reported: Vec<String>,
}

impl Reconciler {
    fn new(
        client: kube::Client,
        modes: Modes,
        handle: Arc<PolicyHandle>,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> (Self, Watches) {
        // Every binding, not only Infra's: those made outside Infra are reported. Infra's own are
        // told apart by their label and annotation before anything is changed or deleted.
        let (cluster_role_bindings, crb) = watch(
            Source::ClusterRoleBindings,
            Api::<k8s::ClusterRoleBinding>::all(client.clone()),
            watcher::Config::default(),
        );
        let (role_bindings, rb) = watch(
            Source::RoleBindings,
            Api::<k8s::RoleBinding>::all(client.clone()),
            watcher::Config::default(),
        );
        let (cluster_roles, cr) = watch(
            Source::ClusterRoles,
            Api::<k8s::ClusterRole>::all(client.clone()),
            watcher::Config::default(),
        );
        let (roles, r) = watch(
            Source::Roles,
            Api::<k8s::Role>::all(client.clone()),
            watcher::Config::default(),
        );
        let Modes {
            writes,
            read_bindings,
        } = modes;
        let watches = if read_bindings {
            futures_util::stream::select_all([crb, rb, cr, r])
        } else {
            futures_util::stream::select_all([cr, r])
        };
        // Bindings not watched count as listed.
        let listed = [!read_bindings, !read_bindings, false, false];
        let destination = handle.destination().to_owned();
        let reconciler = Self {
            writer: Writer::new(client, destination.clone()),
            writes,
            read_bindings,
            outside_reported: None,
            destination,
            grants: handle.subscribe_grants(),
            handle,
            readiness,
            metrics,
            clock,
            cluster_role_bindings,
            role_bindings,
            cluster_roles,
            roles,
            listed,
            watch_errors: Default::default(),
            errors: Vec::new(),
            roles_in_force: None,
            unknown_reported: Vec::new(),
        };
        (reconciler, watches)
    }

    async fn run(mut self, mut watches: Watches) {
        if self.writes {
            tracing::info!(destination = %self.destination, "RBAC reconcile started");
        } else {
            tracing::info!(destination = %self.destination, "watching the cluster's roles (RBAC reconcile off)");
        }
        self.readiness.set(
            "roles",
            Err("waiting for the first list of the cluster's ClusterRoles and Roles".to_owned()),
        );
        self.publish();
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due: Option<Instant> = None;
        let mut retry = RETRY_MIN;
        let schedule = |due: &mut Option<Instant>, at: Instant| {
            *due = Some(due.map_or(at, |d| d.min(at)));
        };
        loop {
            let wake = due;
            tokio::select! {
                Some(signal) = watches.next() => {
                    if self.on_signal(signal) {
                        schedule(&mut due, Instant::now() + DEBOUNCE);
                    }
                }
                Ok(()) = self.grants.changed() => schedule(&mut due, Instant::now() + DEBOUNCE),
                _ = resync.tick() => schedule(&mut due, Instant::now()),
                () = sleep_until(wake) => {
                    due = None;
                    if let Ok(next_expiry) = self.reconcile().await {
                        retry = RETRY_MIN;
                        if let Some(at) = next_expiry {
                            let wait = until(at, self.clock.as_ref());
                            schedule(&mut due, Instant::now() + wait);
                        }
                    } else {
                        schedule(&mut due, Instant::now() + retry);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }

    /// Takes a watch's news; answers whether it calls for a pass.
    fn on_signal(&mut self, signal: Signal) -> bool {
        let index = signal.source as usize;
        match signal.outcome {
            Ok(listed) => {
                self.listed[index] |= listed;
                if self.watch_errors[index].take().is_some() {
                    self.publish();
                }
                self.listed[index]
            }
            Err(error) => {
                self.metrics.reconcile_errors.inc();
                let text = format!("watching {}: {}", signal.source.what(), chain(&error));
                tracing::warn!(destination = %self.destination, error = %text, "RBAC reconcile: a watch failed; retrying with backoff");
                self.watch_errors[index] = Some(text);
                self.publish();
                false
            }
        }
    }

    /// Shows the state in `/readyz`: watch failures, the last pass's failures, or that the
    /// first lists are not in yet.
    fn publish(&self) {
        let mut problems: Vec<&str> = self
            .watch_errors
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        problems.extend(self.errors.iter().map(String::as_str));
        let warning = if problems.is_empty() {
            (self.writes && !self.listed.iter().all(|l| *l)).then(|| {
                "RBAC reconcile is waiting for the first list of the cluster's roles and bindings"
                    .to_owned()
            })
        } else {
            Some(format!(
                "{} failing (retrying with backoff): {}",
                if self.writes {
                    "RBAC reconcile"
                } else {
                    "watching the cluster's roles"
                },
                problems.join("; ")
            ))
        };
        self.readiness.warn("rbac", warning);
    }

    /// One pass. `Ok` with the next grant expiry, or `Err` when a step failed (reported).
    async fn reconcile(&mut self) -> Result<Option<SystemTime>, ()> {
        if !self.listed.iter().all(|l| *l) {
            // Without a full list of the roles the choice of roleRef is unknown, and without one
            // of the bindings nothing can be confirmed as Infra's: write nothing yet.
            self.publish();
            return Ok(None);
        }
        let cluster_roles = self.cluster_roles.state();
        let roles = self.roles.state();
        let set = role_set(
            cluster_roles.iter().map(|r| &**r),
            roles.iter().map(|r| &**r),
        );
        if self.roles_in_force.as_ref() != Some(&set) {
            let generation = self.handle.replace_roles(set.clone());
            self.metrics
                .policy_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
            tracing::info!(
                destination = %self.destination,
                roles = set.len(),
                generation,
                "RBAC reconcile: the cluster's roles are in force"
            );
            self.roles_in_force = Some(set.clone());
            self.readiness.set("roles", Ok(()));
        }
        let grants = Arc::clone(&self.grants.borrow_and_update());
        let desired = desired(
            &self.destination,
            &grants,
            &KnownRoles::of(&set),
            self.clock.now(),
        );
        self.report_unknown(&desired.unknown_role);
        if self.read_bindings {
            let (outside, total) = super::outside_bindings(
                &self.destination,
                &grants,
                self.cluster_role_bindings.state().iter().map(|b| &**b),
                self.role_bindings.state().iter().map(|b| &**b),
            );
            self.report_outside(outside, total);
        }
        if !self.writes {
            return Ok(desired.next_expiry);
        }

        let mut errors: Vec<ReconcileError> = Vec::new();
        for want in desired.bindings.values() {
            let result = if want.namespace.is_some() {
                self.writer.ensure(&self.role_bindings, want).await
            } else {
                self.writer.ensure(&self.cluster_role_bindings, want).await
            };
            errors.extend(result.err());
        }
        for current in self.cluster_role_bindings.state() {
            if desired.unwanted(&self.destination, current.meta()) {
                errors.extend(self.writer.remove(&*current).await.err());
            }
        }
        for current in self.role_bindings.state() {
            if desired.unwanted(&self.destination, current.meta()) {
                errors.extend(self.writer.remove(&*current).await.err());
            }
        }

        self.errors = errors.iter().map(|e| chain(e)).collect();
        self.publish();
        if errors.is_empty() {
            Ok(desired.next_expiry)
        } else {
            for text in &self.errors {
                self.metrics.reconcile_errors.inc();
                tracing::warn!(destination = %self.destination, error = %text, "RBAC reconcile failed; retrying with backoff");
            }
            Err(())
        }
    }

    fn report_outside(&mut self, lines: Vec<String>, total: usize) {
        self.metrics
            .outside_bindings
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        if self.outside_reported.as_ref() == Some(&lines) {
            return;
        }
        if lines.is_empty() {
            self.readiness.warn("outside-bindings", None);
        } else {
            for line in &lines {
                tracing::warn!(destination = %self.destination, binding = %line, "a binding made outside Infra names a user or group of its grants; infra-proxy decides from grants and does not honour it");
            }
            self.readiness.warn(
                "outside-bindings",
                Some(format!(
                    "bindings made outside Infra name users or groups of its grants; infra-proxy decides from grants and does not honour them: {}",
                    lines.join("; ")
                )),
            );
        }
        self.handle.set_outside_bindings(lines.clone());
        self.outside_reported = Some(lines);
    }

    fn report_unknown(&mut self, unknown: &[Grant]) {
        let mut lines: Vec<String> = unknown
            .iter()
            .map(|g| format!("{} has role {:?} on {}", g.subject, g.role, g.resource))
            .collect();
        lines.sort();
        self.metrics
            .grants_unknown_role
            .set(i64::try_from(lines.len()).unwrap_or(i64::MAX));
        if lines == self.unknown_reported {
            return;
        }
        if lines.is_empty() {
            self.readiness.warn("roles", None);
            tracing::info!(destination = %self.destination, "every grant names a role that exists");
        } else {
            for line in &lines {
                tracing::warn!(destination = %self.destination, grant = %line, "a grant names a role that exists nowhere in the cluster (no ClusterRole, no Role of its namespace); it allows nothing");
            }
            self.readiness.warn(
                "roles",
                Some(format!(
                    "grants name roles that exist nowhere in the cluster and allow nothing: {}",
                    lines.join("; ")
                )),
            );
        }
        self.unknown_reported = lines;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long from the clock's now until `at` (zero when it has passed).
fn until(at: SystemTime, clock: &dyn Clock) -> Duration {
    at.duration_since(clock.now()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_authz::clock::ManualClock;

    #[test]
    fn the_wait_for_an_expiry_is_measured_on_the_injected_clock() {
        let clock = ManualClock::at_unix(1_000);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_060);
        assert_eq!(until(at, &clock), Duration::from_mins(1));
        clock.advance(Duration::from_secs(90));
        assert_eq!(until(at, &clock), Duration::ZERO);
    }
}
