//! RBAC reconcile: bindings in the cluster that mirror this destination's grants, so that the
//! apiserver agrees with the proxy's decision for the identity it impersonates; and the cluster's
//! own ClusterRoles and Roles, so that the proxy decides with their real rules.
//!
//! ```text
//! grants (PolicyHandle) ─┐
//! watch ClusterRoles ────┤                         ┌─ create / replace the bindings it wants
//! watch Roles ───────────┼─▶ desired bindings ─────┤
//! watch Infra's bindings ┘   (pure: `desired`)     └─ delete Infra's bindings it no longer wants
//!                         └▶ role set ──▶ PolicyHandle::replace_roles
//! ```
//!
//! - A cluster grant (`production`) becomes a ClusterRoleBinding to the named ClusterRole; a
//!   namespace grant (`production.web`) a RoleBinding in that namespace to the named ClusterRole,
//!   or to the Role of that name in the namespace when there is one and no ClusterRole of the
//!   name. Grants of the control resource `infra`, of other destinations and expired ones make
//!   no binding.
//! - Every binding carries the label [`MANAGED_BY_LABEL`]`: `[`MANAGED_BY`] and the annotation
//!   [`DESTINATION_ANNOTATION`]`: <destination>`. Its name is deterministic
//!   (`infra:<role>:<user|group>:<hash>`), so replicas of one proxy want the same objects and
//!   never fight: a create that finds the object there (409) reads it and converges.
//! - Only bindings seen by the label-filtered watch, with this destination's annotation, are
//!   ever replaced or deleted, and nothing is deleted before that watch has listed them once.
//!   Deletes carry the uid and `resourceVersion` seen as preconditions.
//! - Kept in step on every change of the grants, of the watched objects, at the next expiry of
//!   a grant, and every five minutes; failures are retried with exponential backoff (up to
//!   30 seconds) and shown in `/readyz` and `infra_proxy_reconcile_errors_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures_util::{Stream, StreamExt as _};
use infra_authz::policy::{Grant, Subject};
use infra_authz::rbac::{self, RoleSet};
use k8s_openapi::api::rbac::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::admin::Readiness;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;

/// The label every binding Infra makes carries (with [`MANAGED_BY`]); the watches select it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "infra";
/// The annotation naming the destination whose grants a binding mirrors. A proxy touches only
/// bindings that carry its own destination here.
pub const DESTINATION_ANNOTATION: &str = "infra.dev/destination";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Re-evaluate everything this often even without a change.
const RESYNC: Duration = Duration::from_mins(5);
/// Wait this long after a change for more changes, so a burst makes one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The first retry after a failed pass; doubled on each failure up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The most of a role's name kept in a binding's name (names are at most 253 characters).
const ROLE_IN_NAME: usize = 200;

// ---------------------------------------------------------------------------------------------
// The desired state: pure.

/// What a binding refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// A ClusterRole (the only choice for a ClusterRoleBinding).
    ClusterRole,
    /// A Role of the binding's namespace.
    Role,
}

impl RoleKind {
    /// The `roleRef.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterRole => "ClusterRole",
            Self::Role => "Role",
        }
    }
}

/// One binding Infra wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBinding {
    /// `None`: a ClusterRoleBinding; otherwise a RoleBinding in this namespace.
    pub namespace: Option<String>,
    /// The binding's name, from [`binding_name`].
    pub name: String,
    /// What `roleRef` names.
    pub role_kind: RoleKind,
    /// The role's name.
    pub role: String,
    /// Who is bound.
    pub subject: Subject,
}

impl DesiredBinding {
    /// The `roleRef`.
    pub fn role_ref(&self) -> k8s::RoleRef {
        k8s::RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: self.role_kind.as_str().to_owned(),
            name: self.role.clone(),
        }
    }

    /// The `subjects`.
    pub fn subjects(&self) -> Vec<k8s::Subject> {
        let (kind, name) = match &self.subject {
            Subject::User(name) => ("User", name),
            Subject::Group(name) => ("Group", name),
        };
        vec![k8s::Subject {
            api_group: Some(RBAC_GROUP.to_owned()),
            kind: kind.to_owned(),
            name: name.clone(),
            namespace: None,
        }]
    }

    /// The binding's metadata: name, namespace, label and annotation.
    pub fn metadata(&self, destination: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: self.namespace.clone(),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into()),
            annotations: Some([(DESTINATION_ANNOTATION.to_owned(), destination.to_owned())].into()),
            ..ObjectMeta::default()
        }
    }

    fn describe(&self) -> Target {
        Target {
            kind: if self.namespace.is_some() {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            },
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The roles that exist: ClusterRoles (the cluster's and the built-in ones) and Roles by
/// namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownRoles {
    /// ClusterRole names.
    pub cluster_roles: BTreeSet<String>,
    /// `(namespace, name)` of each Role.
    pub roles: BTreeSet<(String, String)>,
}

impl KnownRoles {
    /// The roles of a set built by [`role_set`]: Roles are the names `<namespace>/<name>`.
    pub fn of(set: &RoleSet) -> Self {
        let mut known = Self::default();
        for name in set.names() {
            match name.split_once('/') {
                Some((namespace, role)) => {
                    known.roles.insert((namespace.to_owned(), role.to_owned()));
                }
                None => {
                    known.cluster_roles.insert(name.to_owned());
                }
            }
        }
        known
    }
}

/// The bindings wanted for a set of grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// By `(namespace, name)`; namespace `None` for ClusterRoleBindings.
    pub bindings: BTreeMap<(Option<String>, String), DesiredBinding>,
    /// The grants (of this destination, in force) whose role exists nowhere. They still get a
    /// binding to the ClusterRole of that name, which starts to count when the role appears.
    pub unknown_role: Vec<Grant>,
    /// When the next of the kept grants expires: the desired state changes then.
    pub next_expiry: Option<SystemTime>,
}

/// The bindings `destination`'s grants in force at `now` want, given the roles that exist.
pub fn desired(
    destination: &str,
    grants: &[Grant],
    known: &KnownRoles,
    now: SystemTime,
) -> Desired {
    let mut out = Desired::default();
    for grant in grants {
        if grant.resource.is_control()
            || grant.resource.destination != destination
            || !grant.is_active(now)
        {
            continue;
        }
        if let Some(at) = grant.expires_at {
            out.next_expiry = Some(out.next_expiry.map_or(at, |next| next.min(at)));
        }
        let namespace = grant.resource.namespace.as_deref();
        let cluster_role = known.cluster_roles.contains(&grant.role);
        let role_kind = match namespace {
            Some(ns)
                if !cluster_role && known.roles.contains(&(ns.to_owned(), grant.role.clone())) =>
            {
                RoleKind::Role
            }
            Some(_) | None => {
                if !cluster_role && !out.unknown_role.contains(grant) {
                    out.unknown_role.push(grant.clone());
                }
                RoleKind::ClusterRole
            }
        };
        let name = binding_name(
            destination,
            namespace,
            &grant.subject,
            role_kind,
            &grant.role,
        );
        out.bindings
            .entry((namespace.map(str::to_owned), name.clone()))
            .or_insert_with(|| DesiredBinding {
                namespace: namespace.map(str::to_owned),
                name,
                role_kind,
                role: grant.role.clone(),
                subject: grant.subject.clone(),
            });
    }
    out
}

/// The name of the binding of `subject` to `role` (`infra:<role>:<user|group>:<hash>`): the
/// same on every proxy of the destination, at most 253 characters, and different for every
/// destination, namespace, subject, role kind and role (the hash covers them all).
pub fn binding_name(
    destination: &str,
    namespace: Option<&str>,
    subject: &Subject,
    role_kind: RoleKind,
    role: &str,
) -> String {
    let (kind, who) = match subject {
        Subject::User(name) => ("user", name),
        Subject::Group(name) => ("group", name),
    };
    let mut hash = Sha256::new();
    for part in [
        destination,
        namespace.unwrap_or_default(),
        kind,
        who,
        role_kind.as_str(),
        role,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut shown = role;
    if shown.len() > ROLE_IN_NAME {
        let mut end = ROLE_IN_NAME;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown = &shown[..end];
    }
    format!("infra:{shown}:{kind}:{}", hex::encode(&digest[..4]))
}

/// The roles the proxy decides with: the built-in ones, replaced and extended by the cluster's
/// ClusterRoles (with their rules as the apiserver reports them, aggregated ones included), and
/// each Role as `<namespace>/<name>` (no ClusterRole can have a `/` in its name).
pub fn role_set<'a>(
    cluster_roles: impl IntoIterator<Item = &'a k8s::ClusterRole>,
    roles: impl IntoIterator<Item = &'a k8s::Role>,
) -> RoleSet {
    let mut set = RoleSet::builtin();
    for role in cluster_roles {
        let Some(name) = role.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        set.insert(rbac::ClusterRole {
            name: name.to_owned(),
            rules: convert_rules(role.rules.as_deref()),
        });
    }
    for role in roles {
        let (Some(namespace), Some(name)) = (
            role.metadata.namespace.as_deref(),
            role.metadata.name.as_deref(),
        ) else {
            continue;
        };
        set.insert_role(rbac::Role::new(
            format!("{namespace}/{name}"),
            convert_rules(role.rules.as_deref()),
        ));
    }
    set
}

fn convert_rules(rules: Option<&[k8s::PolicyRule]>) -> Vec<rbac::PolicyRule> {
    rules
        .unwrap_or_default()
        .iter()
        .map(|rule| rbac::PolicyRule {
            verbs: rule.verbs.clone(),
            api_groups: rule.api_groups.clone().unwrap_or_default(),
            resources: rule.resources.clone().unwrap_or_default(),
            resource_names: rule.resource_names.clone().unwrap_or_default(),
            non_resource_urls: rule.non_resource_urls.clone().unwrap_or_default(),
        })
        .collect()
}

/// Whether a binding is this destination's: Infra's label and `destination` in the annotation.
pub fn owned_by(meta: &ObjectMeta, destination: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESTINATION_ANNOTATION))
            .is_some_and(|v| v == destination)
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A binding, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    kind: &'static str,
    namespace: Option<String>,
    name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why one step of a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Creating a binding failed.
    #[error("creating {0}")]
    Create(Target, #[source] kube::Error),
    /// Replacing a binding's subjects failed.
    #[error("updating {0}")]
    Update(Target, #[source] kube::Error),
    /// Deleting a binding failed.
    #[error("deleting {0}")]
    Delete(Target, #[source] kube::Error),
    /// Reading a binding (after a 409) failed.
    #[error("reading {0}")]
    Read(Target, #[source] kube::Error),
    /// The name Infra wants is held by a binding it does not own.
    #[error(
        "{0} exists but is not this destination's (no `{MANAGED_BY_LABEL}: {MANAGED_BY}` label or another `{DESTINATION_ANNOTATION}`); it is left alone"
    )]
    NotOwned(Target),
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn code_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Bindings of both kinds.

trait Binding:
    Resource<DynamicType = ()>
    + Clone
    + fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn api(client: &kube::Client, namespace: Option<&str>) -> Api<Self>;
    fn role_ref(&self) -> &k8s::RoleRef;
    fn subjects(&self) -> &[k8s::Subject];
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>);
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self;
}

impl Binding for k8s::ClusterRoleBinding {
    fn api(client: &kube::Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client.clone())
    }
    fn role_ref(&self) -> &k8s::RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[k8s::Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>) {
        self.subjects = Some(subjects);
    }
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self {
        Self {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

impl Binding for k8s::RoleBinding {
    fn api(client: &kube::Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    fn role_ref(&self) -> &k8s::RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[k8s::Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>) {
        self.subjects = Some(subjects);
    }
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self {
        Self {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

fn target_of<K: Binding>(object: &K) -> Target {
    Target {
        kind: if object.meta().namespace.is_some() {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        },
        namespace: object.meta().namespace.clone(),
        name: object.name_any(),
    }
}

fn key_of<K: Binding>(namespace: Option<&str>, name: &str) -> ObjectRef<K> {
    let key = ObjectRef::new(name);
    match namespace {
        Some(ns) => key.within(ns),
        None => key,
    }
}

// ---------------------------------------------------------------------------------------------
// The running reconciler.

/// Builds a Kubernetes client from the kubeconfig (path and context) that
/// [`crate::upstream::from_kube`] reads, or, with neither, the in-cluster service account.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let config = crate::upstream::kube_config(kubeconfig, context).await?;
    kube::Client::try_from(config).context("building the Kubernetes client for RBAC reconcile")
}

/// Starts the reconciler of `handle`'s destination: it runs until the task is aborted.
pub fn spawn(
    client: kube::Client,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (reconciler, watches) = Reconciler::new(client, handle, readiness, metrics);
        reconciler.run(watches).await;
    })
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

struct Reconciler {
    client: kube::Client,
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
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
        handle: Arc<PolicyHandle>,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
    ) -> (Self, Watches) {
        let labelled =
            || watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let (cluster_role_bindings, crb) = watch(
            Source::ClusterRoleBindings,
            Api::<k8s::ClusterRoleBinding>::all(client.clone()),
            labelled(),
        );
        let (role_bindings, rb) = watch(
            Source::RoleBindings,
            Api::<k8s::RoleBinding>::all(client.clone()),
            labelled(),
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
        let watches = futures_util::stream::select_all([crb, rb, cr, r]);
        let reconciler = Self {
            client,
            destination: handle.destination().to_owned(),
            grants: handle.subscribe_grants(),
            handle,
            readiness,
            metrics,
            cluster_role_bindings,
            role_bindings,
            cluster_roles,
            roles,
            listed: [false; 4],
            watch_errors: Default::default(),
            errors: Vec::new(),
            roles_in_force: None,
            unknown_reported: Vec::new(),
        };
        (reconciler, watches)
    }

    async fn run(mut self, mut watches: Watches) {
        tracing::info!(destination = %self.destination, "RBAC reconcile started");
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
                            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
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
            (!self.listed.iter().all(|l| *l)).then(|| {
                "RBAC reconcile is waiting for the first list of the cluster's roles and bindings"
                    .to_owned()
            })
        } else {
            Some(format!(
                "RBAC reconcile failing (retrying with backoff): {}",
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
        }
        let grants = Arc::clone(&self.grants.borrow_and_update());
        let desired = desired(
            &self.destination,
            &grants,
            &KnownRoles::of(&set),
            SystemTime::now(),
        );
        self.report_unknown(&desired.unknown_role);

        let mut errors: Vec<ReconcileError> = Vec::new();
        for want in desired.bindings.values() {
            let result = if want.namespace.is_some() {
                self.ensure(&self.role_bindings, want).await
            } else {
                self.ensure(&self.cluster_role_bindings, want).await
            };
            errors.extend(result.err());
        }
        for current in self.cluster_role_bindings.state() {
            if self.unwanted(&desired, current.meta()) {
                errors.extend(self.remove(&*current).await.err());
            }
        }
        for current in self.role_bindings.state() {
            if self.unwanted(&desired, current.meta()) {
                errors.extend(self.remove(&*current).await.err());
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

    fn unwanted(&self, desired: &Desired, meta: &ObjectMeta) -> bool {
        owned_by(meta, &self.destination)
            && !desired.bindings.contains_key(&(
                meta.namespace.clone(),
                meta.name.clone().unwrap_or_default(),
            ))
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

    /// Makes the cluster hold `want`.
    async fn ensure<K: Binding>(
        &self,
        store: &Store<K>,
        want: &DesiredBinding,
    ) -> Result<(), ReconcileError> {
        match store.get(&key_of::<K>(want.namespace.as_deref(), &want.name)) {
            Some(current) if owned_by(current.meta(), &self.destination) => {
                self.converge(&*current, want).await
            }
            // Labelled as Infra's, but another destination's.
            Some(_) => Err(ReconcileError::NotOwned(want.describe())),
            None => self.create::<K>(want).await,
        }
    }

    async fn create<K: Binding>(&self, want: &DesiredBinding) -> Result<(), ReconcileError> {
        let api = K::api(&self.client, want.namespace.as_deref());
        let object = K::build(
            want.metadata(&self.destination),
            want.role_ref(),
            want.subjects(),
        );
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(destination = %self.destination, binding = %want.describe(), "RBAC reconcile: created");
                Ok(())
            }
            Err(error) if code_of(&error) == Some(409) => {
                // There already (a replica made it, or the watch is behind): read and converge.
                match api.get_opt(&want.name).await {
                    Ok(Some(current)) if owned_by(current.meta(), &self.destination) => {
                        self.converge(&current, want).await
                    }
                    Ok(Some(_)) => Err(ReconcileError::NotOwned(want.describe())),
                    Ok(None) => Err(ReconcileError::Create(want.describe(), error)),
                    Err(read) => Err(ReconcileError::Read(want.describe(), read)),
                }
            }
            Err(error) => Err(ReconcileError::Create(want.describe(), error)),
        }
    }

    /// Brings an owned binding to `want`: nothing when it already is; new subjects by a replace
    /// (re-read once on a 409); a new `roleRef` (immutable) by delete and create.
    async fn converge<K: Binding>(
        &self,
        current: &K,
        want: &DesiredBinding,
    ) -> Result<(), ReconcileError> {
        let subjects = want.subjects();
        if *current.role_ref() == want.role_ref() && current.subjects() == subjects.as_slice() {
            return Ok(());
        }
        let api = K::api(&self.client, want.namespace.as_deref());
        if *current.role_ref() != want.role_ref() {
            self.remove(current).await?;
            let object = K::build(want.metadata(&self.destination), want.role_ref(), subjects);
            return api
                .create(&PostParams::default(), &object)
                .await
                .map(drop)
                .map_err(|e| ReconcileError::Create(want.describe(), e));
        }
        let mut next = current.clone();
        next.set_subjects(subjects.clone());
        match api.replace(&want.name, &PostParams::default(), &next).await {
            Ok(_) => {
                tracing::info!(destination = %self.destination, binding = %want.describe(), "RBAC reconcile: updated");
                Ok(())
            }
            Err(error) if code_of(&error) == Some(409) => {
                let fresh = match api.get_opt(&want.name).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => return Err(ReconcileError::Update(want.describe(), error)),
                    Err(read) => return Err(ReconcileError::Read(want.describe(), read)),
                };
                if !owned_by(fresh.meta(), &self.destination) {
                    return Err(ReconcileError::NotOwned(want.describe()));
                }
                if *fresh.role_ref() == want.role_ref() && fresh.subjects() == subjects.as_slice() {
                    return Ok(());
                }
                let mut next = fresh;
                next.set_subjects(subjects);
                api.replace(&want.name, &PostParams::default(), &next)
                    .await
                    .map(drop)
                    .map_err(|e| ReconcileError::Update(want.describe(), e))
            }
            Err(error) => Err(ReconcileError::Update(want.describe(), error)),
        }
    }

    /// Deletes an owned binding, on the condition that it is still the object seen (uid and
    /// `resourceVersion`); when it changed since, it is read again and deleted only if still
    /// this destination's.
    async fn remove<K: Binding>(&self, current: &K) -> Result<(), ReconcileError> {
        let target = target_of(current);
        let api = K::api(&self.client, current.meta().namespace.as_deref());
        let name = current.name_any();
        let params = |meta: &ObjectMeta| DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params(current.meta())).await {
            Ok(_) => {}
            Err(error) if code_of(&error) == Some(404) => return Ok(()),
            Err(error) if code_of(&error) == Some(409) => {
                let fresh = match api.get_opt(&name).await {
                    Ok(Some(fresh)) if owned_by(fresh.meta(), &self.destination) => fresh,
                    Ok(_) => return Ok(()),
                    Err(read) => return Err(ReconcileError::Read(target, read)),
                };
                match api.delete(&name, &params(fresh.meta())).await {
                    Ok(_) => {}
                    Err(error) if code_of(&error) == Some(404) => return Ok(()),
                    Err(error) => return Err(ReconcileError::Delete(target, error)),
                }
            }
            Err(error) => return Err(ReconcileError::Delete(target, error)),
        }
        tracing::info!(destination = %self.destination, binding = %target, "RBAC reconcile: deleted");
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_authz::policy::Resource as Where;

    const DEST: &str = "production";

    fn grant(subject: Subject, role: &str, resource: Where) -> Grant {
        Grant {
            subject,
            role: role.to_owned(),
            resource,
            expires_at: None,
        }
    }

    fn known() -> KnownRoles {
        KnownRoles {
            cluster_roles: ["view", "edit", "shared"].map(str::to_owned).into(),
            roles: [("web", "deployer"), ("web", "shared")]
                .map(|(n, r)| (n.to_owned(), r.to_owned()))
                .into(),
        }
    }

    #[test]
    fn cluster_and_namespace_grants_make_their_bindings() {
        let grants = [
            grant(
                Subject::Group("eng".into()),
                "view",
                Where::destination(DEST),
            ),
            grant(
                Subject::User("carl@example.com".into()),
                "edit",
                Where::namespace(DEST, "web"),
            ),
        ];
        let out = desired(DEST, &grants, &known(), SystemTime::UNIX_EPOCH);
        assert!(out.unknown_role.is_empty());
        let bindings: Vec<&DesiredBinding> = out.bindings.values().collect();
        assert_eq!(bindings.len(), 2);
        let cluster = bindings
            .iter()
            .find(|b| b.namespace.is_none())
            .expect("a cluster binding");
        assert_eq!(cluster.role_kind, RoleKind::ClusterRole);
        assert!(
            cluster.name.starts_with("infra:view:group:"),
            "{}",
            cluster.name
        );
        assert_eq!(cluster.subjects()[0].kind, "Group");
        assert_eq!(cluster.subjects()[0].api_group.as_deref(), Some(RBAC_GROUP));
        let ns = bindings
            .iter()
            .find(|b| b.namespace.is_some())
            .expect("a namespace binding");
        assert_eq!(ns.namespace.as_deref(), Some("web"));
        assert_eq!(ns.role_ref().kind, "ClusterRole");
        assert_eq!(ns.subjects()[0].kind, "User");
        assert!(ns.name.starts_with("infra:edit:user:"), "{}", ns.name);
    }

    #[test]
    fn other_destinations_the_control_resource_and_expired_grants_make_none() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut expired = grant(Subject::User("a".into()), "view", Where::destination(DEST));
        expired.expires_at = Some(now - Duration::from_secs(1));
        let mut later = grant(Subject::User("b".into()), "view", Where::destination(DEST));
        later.expires_at = Some(now + Duration::from_mins(1));
        let grants = [
            grant(
                Subject::User("a".into()),
                "admin",
                Where::destination("infra"),
            ),
            grant(
                Subject::User("a".into()),
                "view",
                Where::destination("staging"),
            ),
            expired,
            later,
        ];
        let out = desired(DEST, &grants, &known(), now);
        assert_eq!(out.bindings.len(), 1, "{out:?}");
        assert_eq!(out.next_expiry, Some(now + Duration::from_mins(1)));
    }

    #[test]
    fn a_role_of_the_namespace_is_used_only_when_no_cluster_role_has_the_name() {
        let eng = || Subject::Group("eng".into());
        let grants = [
            grant(eng(), "deployer", Where::namespace(DEST, "web")),
            grant(eng(), "shared", Where::namespace(DEST, "web")),
            grant(eng(), "deployer", Where::namespace(DEST, "api")),
            grant(eng(), "deployer", Where::destination(DEST)),
        ];
        let out = desired(DEST, &grants, &known(), SystemTime::UNIX_EPOCH);
        let kind_of = |ns: Option<&str>, role: &str| {
            out.bindings
                .values()
                .find(|b| b.namespace.as_deref() == ns && b.role == role)
                .map(|b| b.role_kind)
        };
        assert_eq!(kind_of(Some("web"), "deployer"), Some(RoleKind::Role));
        assert_eq!(kind_of(Some("web"), "shared"), Some(RoleKind::ClusterRole));
        assert_eq!(
            kind_of(Some("api"), "deployer"),
            Some(RoleKind::ClusterRole)
        );
        assert_eq!(kind_of(None, "deployer"), Some(RoleKind::ClusterRole));
        // The Role of `web` covers neither `api` nor the whole cluster.
        assert_eq!(out.unknown_role.len(), 2, "{:?}", out.unknown_role);
    }

    #[test]
    fn names_are_stable_distinct_and_short() {
        let user = Subject::User("carl@example.com".into());
        let group = Subject::Group("carl@example.com".into());
        let a = binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "edit");
        assert_eq!(
            a,
            binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "edit")
        );
        let others = [
            binding_name("staging", Some("web"), &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("api"), &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, None, &user, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("web"), &group, RoleKind::ClusterRole, "edit"),
            binding_name(DEST, Some("web"), &user, RoleKind::Role, "edit"),
            binding_name(DEST, Some("web"), &user, RoleKind::ClusterRole, "view"),
        ];
        for other in &others {
            assert_ne!(&a, other);
        }
        let long = "r".repeat(600);
        let name = binding_name(DEST, None, &user, RoleKind::ClusterRole, &long);
        assert!(name.len() <= 253, "{}", name.len());
        let re = regex_lite_check(&a);
        assert!(re, "{a}");
    }

    /// `infra:<role>:<kind>:<8 hex>`.
    fn regex_lite_check(name: &str) -> bool {
        let parts: Vec<&str> = name.split(':').collect();
        parts.len() == 4
            && parts[0] == "infra"
            && parts[3].len() == 8
            && parts[3].chars().all(|c| c.is_ascii_hexdigit())
    }

    #[test]
    fn duplicate_grants_make_one_binding() {
        let g = grant(
            Subject::Group("eng".into()),
            "view",
            Where::destination(DEST),
        );
        let out = desired(DEST, &[g.clone(), g], &known(), SystemTime::UNIX_EPOCH);
        assert_eq!(out.bindings.len(), 1);
    }

    #[test]
    fn ownership_needs_the_label_and_this_destination() {
        let want = desired(
            DEST,
            &[grant(
                Subject::Group("eng".into()),
                "view",
                Where::destination(DEST),
            )],
            &known(),
            SystemTime::UNIX_EPOCH,
        );
        let binding = want.bindings.values().next().expect("one binding");
        let meta = binding.metadata(DEST);
        assert!(owned_by(&meta, DEST));
        assert!(!owned_by(&meta, "staging"));
        let mut unlabelled = meta.clone();
        unlabelled.labels = None;
        assert!(!owned_by(&unlabelled, DEST));
        let mut unannotated = meta;
        unannotated.annotations = None;
        assert!(!owned_by(&unannotated, DEST));
    }

    #[test]
    fn the_role_set_holds_cluster_roles_and_namespaced_roles() {
        let rule = k8s::PolicyRule {
            verbs: vec!["get".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            ..k8s::PolicyRule::default()
        };
        let cluster_role = k8s::ClusterRole {
            metadata: ObjectMeta {
                name: Some("pod-reader".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![rule.clone()]),
            ..k8s::ClusterRole::default()
        };
        let role = k8s::Role {
            metadata: ObjectMeta {
                name: Some("deployer".into()),
                namespace: Some("web".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![rule]),
        };
        let set = role_set([&cluster_role], [&role]);
        assert!(set.contains("view"), "built-ins stay");
        assert!(set.contains("pod-reader"));
        assert!(set.contains("web/deployer"));
        let known = KnownRoles::of(&set);
        assert!(known.cluster_roles.contains("pod-reader"));
        assert!(
            known
                .roles
                .contains(&("web".to_owned(), "deployer".to_owned()))
        );
        let rules = set.get("pod-reader").expect("present").rules();
        assert_eq!(rules[0].resources, ["pods"]);
        assert_eq!(rules[0].api_groups, [""]);
    }
}
