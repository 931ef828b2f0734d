//! RBAC reconcile: bindings in the cluster that mirror this destination's grants, so that the
//! apiserver agrees with the proxy's decision for the identity it impersonates; and the cluster's
//! own ClusterRoles and Roles, so that the proxy decides with their real rules.
//!
//! ```text
//! grants (PolicyHandle) ─┐
//! watch ClusterRoles ────┤                         ┌─ create / replace the bindings it wants
//! watch Roles ───────────┼─▶ desired bindings ─────┤
//! watch every binding ───┘   (pure: `desired`)     └─ delete Infra's bindings it no longer wants
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
//! - Only bindings with Infra's label and this destination's annotation, as the watch of every
//!   binding saw them, are ever replaced or deleted, and nothing is deleted before that watch has
//!   listed them once. The others that name users or groups of the grants are reported
//!   (`reconcile/outside.rs`).
//!   Deletes carry the uid and `resourceVersion` seen as preconditions.
//! - Kept in step on every change of the grants, of the watched objects, at the next expiry of
//!   a grant, and every five minutes; failures are retried with exponential backoff (up to
//!   30 seconds) and shown in `/readyz` and `infra_proxy_reconcile_errors_total`.
//!
//! The parts: the pure desired state (in `reconcile/desired.rs`), the writes that
//! bring one binding there (`reconcile/apply.rs`), and the running reconciler with its watches
//! and loop (`reconcile/runner.rs`).

mod apply;
mod desired;
mod outside;
mod permissions;
mod runner;
mod start;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

pub use desired::{
    Desired, DesiredBinding, KnownRoles, RoleKind, binding_name, desired, owned_by, role_set,
};
pub use outside::outside_bindings;
pub use permissions::{Needed, Permissions};
pub use runner::{client, spawn, spawn_with_clock};
pub use start::{RbacTask, spawn_rbac};

/// Whether infra-proxy keeps RBAC bindings that mirror the grants (`--rbac-reconcile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReconcileMode {
    /// When the proxy's credential may manage bindings (checked at start).
    #[default]
    Auto,
    /// Always; what the credential lacks is reported.
    #[value(name = "true", alias = "on")]
    On,
    /// Never: the cluster's own bindings must allow what the grants allow.
    #[value(name = "false", alias = "off")]
    Off,
}

/// What the proxy knows of its RBAC reconcile, for the words of a 403 the cluster gives to a
/// request Infra allowed. Starts unknown (the permission check has not answered yet).
#[derive(Debug, Default)]
pub struct RbacStatus {
    /// 0 unknown, 1 reconciling, 2 not reconciling.
    state: AtomicU8,
}

impl RbacStatus {
    /// Records whether bindings are being kept.
    pub fn set_reconciling(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Release);
    }

    /// `Some(true)` when bindings are kept, `Some(false)` when not, `None` before the start-up
    /// check has answered.
    pub fn reconciling(&self) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Why the cluster may refuse what Infra allowed, for the `Status` message and the log.
    pub fn hint(&self) -> &'static str {
        match self.reconciling() {
            Some(false) => {
                "RBAC reconcile is off (--rbac-reconcile), so the cluster needs a binding of its own that allows this for the user; turn reconcile on, or add that binding"
            }
            Some(true) => {
                "the binding infra-proxy keeps for this grant is not in the cluster yet or could not be written (see infra-proxy's /readyz and its log)"
            }
            None => {
                "infra-proxy has not yet learned what its credential may do in the cluster; no binding for this grant exists yet"
            }
        }
    }
}

/// The label every binding Infra makes carries (with [`MANAGED_BY`]); the watches select it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "infra";
/// The annotation naming the destination whose grants a binding mirrors. A proxy touches only
/// bindings that carry its own destination here.
pub const DESTINATION_ANNOTATION: &str = "infra.dev/destination";

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
