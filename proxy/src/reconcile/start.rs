//! Starting RBAC work: ask the apiserver what the proxy's credential may do, then watch the
//! cluster's roles where it may, and keep bindings as `--rbac-reconcile` says.
//!
//! | `--rbac-reconcile` | may manage bindings | may list roles | runs |
//! | --- | --- | --- | --- |
//! | `auto` (default) | yes | yes | reconcile (roles watched) |
//! | `auto` | no | yes | roles watched; warning naming what is missing |
//! | `true` | any | any | reconcile; warning naming what is missing |
//! | `false` | any | yes | roles watched |
//! | any but `true` | any | no | built-in roles only; warning naming what is missing |
//!
//! `/readyz` fails (check `roles`) until the permission check has answered and, where roles are
//! watched, until their first full list is in force; it fails (check `impersonation`) while the
//! credential may not impersonate users and groups, since then every request would fail.

use std::sync::Arc;
use std::time::Duration;

use infra_authz::clock::Clock;

use super::permissions::{Permissions, list};
use super::{RbacStatus, ReconcileMode, runner};
use crate::admin::Readiness;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;

/// The first wait before asking again when the permission check fails; doubled up to a minute.
const CHECK_RETRY: Duration = Duration::from_secs(1);

/// Everything the RBAC task needs.
pub struct RbacTask {
    /// The Kubernetes client of the proxy's own credential.
    pub client: kube::Client,
    /// `--rbac-reconcile`.
    pub mode: ReconcileMode,
    /// The policy whose roles are put in force and whose grants are mirrored.
    pub handle: Arc<PolicyHandle>,
    /// Where the state shows.
    pub readiness: Arc<Readiness>,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Grant expiry.
    pub clock: Arc<dyn Clock>,
    /// Whether bindings are kept, for the words of a 403.
    pub status: Arc<RbacStatus>,
}

impl std::fmt::Debug for RbacTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacTask")
            .field("mode", &self.mode)
            .field("destination", &self.handle.destination())
            .finish_non_exhaustive()
    }
}

/// Starts the task; it runs until aborted.
pub fn spawn_rbac(task: RbacTask) -> tokio::task::JoinHandle<()> {
    task.readiness.set(
        "roles",
        Err("asking the apiserver what this proxy's credential may do".to_owned()),
    );
    tokio::spawn(run(task))
}

async fn run(task: RbacTask) {
    let permissions = check_until_answered(&task).await;
    let (reconcile, watch_roles, note) = choose(task.mode, &permissions);
    task.readiness.set(
        "impersonation",
        if permissions.impersonate.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "this proxy's credential may not {}: every request forwarded as its user would fail",
                list(&permissions.impersonate)
            ))
        },
    );
    task.status.set_reconciling(reconcile);
    if let Some(note) = &note {
        tracing::warn!(destination = %task.handle.destination(), "{note}");
    } else {
        tracing::info!(destination = %task.handle.destination(), reconcile, "the proxy's credential has every permission it needs");
    }
    task.readiness.warn("reconcile", note);
    if !reconcile && !watch_roles {
        task.readiness.set("roles", Ok(()));
        return;
    }
    runner::run(
        task.client,
        reconcile,
        reconcile || permissions.read_bindings.is_empty(),
        task.handle,
        task.readiness,
        task.metrics,
        task.clock,
    )
    .await;
}

async fn check_until_answered(task: &RbacTask) -> Permissions {
    let mut wait = CHECK_RETRY;
    loop {
        match Permissions::check(&task.client).await {
            Ok(permissions) => return permissions,
            Err(error) => {
                let text = format!(
                    "cannot ask the apiserver what this proxy's credential may do (retrying in {}s): {error}",
                    wait.as_secs()
                );
                tracing::warn!(destination = %task.handle.destination(), "{text}");
                task.readiness.set("roles", Err(text));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_mins(1));
            }
        }
    }
}

/// Whether to reconcile and to watch roles, and what to say about it (`None`: all is well).
fn choose(mode: ReconcileMode, permissions: &Permissions) -> (bool, bool, Option<String>) {
    let may_read_roles = permissions.read_roles.is_empty();
    let may_reconcile = permissions.reconcile.is_empty();
    let roles_note = (!may_read_roles).then(|| {
        format!(
            "decisions use the built-in roles only (view, edit, admin, cluster-admin): this proxy's credential may not {}, so grants naming the cluster's own roles allow nothing",
            list(&permissions.read_roles)
        )
    });
    match mode {
        ReconcileMode::On => {
            let note = (!may_reconcile).then(|| {
                format!(
                    "RBAC reconcile is on (--rbac-reconcile=true) but this proxy's credential may not {}: bindings it cannot write are reported in /readyz and the apiserver will refuse those grants' requests",
                    list(&permissions.reconcile)
                )
            });
            (true, true, note)
        }
        ReconcileMode::Auto if may_reconcile => (true, true, None),
        ReconcileMode::Auto => {
            let off = format!(
                "RBAC reconcile is off: this proxy's credential may not {} (--rbac-reconcile=auto turns it on only when it may). The apiserver will refuse what the grants allow unless the cluster has bindings of its own for Infra's users; give the credential these permissions, or set --rbac-reconcile=false to say that the cluster's bindings are managed elsewhere",
                list(&permissions.reconcile)
            );
            let note = match roles_note {
                Some(roles) => format!("{off}; {roles}"),
                None => off,
            };
            (false, may_read_roles, Some(note))
        }
        ReconcileMode::Off => (false, may_read_roles, roles_note),
    }
}

#[cfg(test)]
mod tests {
    use super::super::permissions::{IMPERSONATE, READ_ROLES, RECONCILE};
    use super::*;

    #[test]
    fn auto_reconciles_only_with_every_permission_and_says_what_is_missing() {
        let all = Permissions::default();
        assert_eq!(choose(ReconcileMode::Auto, &all), (true, true, None));
        assert_eq!(choose(ReconcileMode::Off, &all), (false, true, None));
        assert_eq!(choose(ReconcileMode::On, &all), (true, true, None));

        let no_bind = Permissions::from_missing(&[RECONCILE[12]]);
        let (reconcile, roles, note) = choose(ReconcileMode::Auto, &no_bind);
        assert!(!reconcile && roles);
        let note = note.expect("a note");
        assert!(
            note.contains("may not bind clusterroles.rbac.authorization.k8s.io"),
            "{note}"
        );
        let (reconcile, _, note) = choose(ReconcileMode::On, &no_bind);
        assert!(reconcile);
        assert!(note.expect("a note").contains("bind clusterroles"));
        assert_eq!(choose(ReconcileMode::Off, &no_bind), (false, true, None));

        let nothing = Permissions::from_missing(
            &IMPERSONATE
                .iter()
                .chain(&READ_ROLES)
                .chain(&RECONCILE)
                .copied()
                .collect::<Vec<_>>(),
        );
        let (reconcile, roles, note) = choose(ReconcileMode::Off, &nothing);
        assert!(!reconcile && !roles);
        assert!(note.expect("a note").contains("built-in roles only"));
        let (reconcile, roles, note) = choose(ReconcileMode::Auto, &nothing);
        assert!(!reconcile && !roles);
        let note = note.expect("a note");
        assert!(note.contains("RBAC reconcile is off") && note.contains("built-in roles only"));
    }
}
