//! A proxy-only build (`--no-default-features`): no control plane in this process. The same
//! functions as [`super::embedded`], over a type with no values, so `start` reads the same in
//! both builds; asking for the control plane is refused before anything is bound.

// The same signatures as the embedded module's (async, fallible), so `start` reads the same in
// both builds; here they have nothing to wait for and cannot fail.
#![allow(clippy::unused_async, clippy::unnecessary_wraps)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use infra_authz::clock::Clock;
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::policy::{FileOwner, PolicyHandle};
use crate::server::{Drain, Limits};
use crate::sync::SyncState;
use crate::tls::CertResolver;

/// No control plane: this type has no values.
#[derive(Debug)]
pub enum Embedded {}

/// Refuses `--control-listen`: this binary has no control plane.
pub async fn start(
    args: &ServeArgs,
    _policy: &infra_authz::policy::Policy,
    _clock: Arc<dyn Clock>,
) -> Result<Option<Embedded>> {
    if args.control.control_listen.is_some() {
        bail!(
            "this infra-proxy is built without the control plane (proxy only): run the control plane elsewhere and give its URL with --control-url, or use the full build"
        );
    }
    Ok(None)
}

/// Never called: there is no control plane.
pub fn issuer(plane: &Embedded) -> String {
    match *plane {}
}

/// Never called: there is no control plane.
pub async fn in_process_sync(
    plane: &Embedded,
    _destination: &str,
    _handle: &PolicyHandle,
) -> Result<Arc<SyncState>> {
    match *plane {}
}

/// Never called: there is no control plane.
pub fn spawn_notification_reports(
    plane: &Embedded,
    _readiness: Arc<crate::admin::Readiness>,
    _metrics: Arc<crate::metrics::Metrics>,
) {
    match *plane {}
}

/// Never called: there is no control plane.
pub fn spawn_audit_export_reports(
    plane: &Embedded,
    _readiness: Arc<crate::admin::Readiness>,
    _metrics: Arc<crate::metrics::Metrics>,
) {
    match *plane {}
}

/// Never called: there is no control plane.
#[allow(clippy::unused_async)]
pub async fn stop(plane: &Embedded) {
    match *plane {}
}

/// Never called: there is no control plane.
pub fn audit_forward(plane: &Embedded) -> Arc<dyn crate::audit::Forward> {
    match *plane {}
}

/// Never called: there is no control plane.
pub fn file_owner(plane: &Embedded) -> Arc<dyn FileOwner> {
    match *plane {}
}

/// Never called: there is no control plane.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    plane: &Embedded,
    _listener: TcpListener,
    _resolver: &Arc<CertResolver>,
    _drain: Drain,
    _handle: Arc<PolicyHandle>,
    _sync: Arc<SyncState>,
    _name: &str,
    _public_url: String,
    _limits: Limits,
) -> Result<()> {
    match *plane {}
}

/// No certificate is kept: that is the embedded control plane's store's.
pub fn kept_certificate(_args: &ServeArgs) -> Result<Option<(PathBuf, PathBuf)>> {
    Ok(None)
}
