//! A stand-in kube-apiserver that speaks the real wire formats, so that the real `kubectl` (and
//! our proxy) can talk to it.
//!
//! It serves HTTP/1.1 and HTTP/2 over TLS on `127.0.0.1:0` and has:
//!
//! - **discovery** captured from a real v1.32 apiserver (`tests/data/`): `/api`, `/apis` (legacy,
//!   or aggregated when `Accept` asks for `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`),
//!   `/api/v1`, `/apis/<group>[/<version>]`, `/version`, and minimal `/openapi/v3` documents
//!   that tell kubectl the server validates fields itself;
//! - an **object store** for every resource of that discovery (namespaces `default`,
//!   `kube-system`, `kube-public`, `kube-node-lease` exist from the start): get, list (label and
//!   field selectors, `limit`/`continue`), create, update (409 on a stale `resourceVersion`),
//!   patch (merge, JSON, strategic, server-side apply as create-or-merge), delete (with the
//!   uid and `resourceVersion` preconditions of its `DeleteOptions`),
//!   deletecollection, and the `status` subresource. `kubectl get` gets `Table`s;
//! - **watch** (`?watch=true`): newline-delimited JSON events, resumable from a
//!   `resourceVersion`, with `timeoutSeconds`, ending when the client goes away;
//! - **pod logs**, with `follow=true` streaming what [`StandIn::push_log`] adds;
//! - **exec, attach, port-forward** over WebSocket and SPDY: the `101 Switching Protocols` is
//!   answered here and the session is played by [`crate::upgrade`];
//! - `selfsubjectreviews` (`kubectl auth whoami`, answering the impersonated user) and the
//!   access reviews (`kubectl auth can-i`, always allowed);
//! - **RBAC**, when built with [`StandInBuilder::enforce_rbac`]: resource requests are
//!   authorized from the bindings and roles in its store, the default ClusterRoles of v1.32
//!   loaded, so a missing binding is a 403 as on a real cluster;
//! - **authentication of its caller**: a client certificate from its CA (or the one given to
//!   [`StandInBuilder::client_ca`]) or the static bearer token; anything else is a 401 `Status`.
//!   `Impersonate-User` / `Impersonate-Group` are honoured;
//! - a **record** of every request it received, for tests to assert header hygiene.

mod auth;
mod connection;
mod discovery;
mod logs;
mod objects;
mod patch;
mod rbac;
mod recorded;
mod request;
mod response;
mod review;
mod route;
mod select;
mod sessions;
mod status;
mod store;
mod streams;
mod table;
mod watches;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use auth::Caller;
use discovery::{DISCOVERY, ResourceInfo};
pub use recorded::RecordedRequest;
pub use status::Status;
use store::Store;
pub use streams::ActiveStreams;

use crate::certs::{self, Ca, IssuedCert};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body the stand-in reads, as the apiserver's limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The user a caller with the static bearer token is.
pub const TOKEN_USER: &str = "stand-in-admin";

/// How to start a [`StandIn`].
#[derive(Debug, Default)]
pub struct StandInBuilder {
    bearer_token: Option<String>,
    client_cas: Vec<CertificateDerOwned>,
    refuse_upgrades: bool,
    follow_tick: Option<Duration>,
    port_forward_target: Option<SocketAddr>,
    http1_only: bool,
    enforce_rbac: bool,
    stalls: Vec<(String, Duration)>,
}

type CertificateDerOwned = rustls_pki_types::CertificateDer<'static>;

impl StandInBuilder {
    /// Accept `Authorization: Bearer <token>` (as the user [`TOKEN_USER`], group
    /// `system:masters`).
    #[must_use]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Also accept client certificates signed by `ca` (those signed by the stand-in's own CA are
    /// always accepted).
    #[must_use]
    pub fn client_ca(mut self, ca: &Ca) -> Self {
        self.client_cas.push(ca.cert_der());
        self
    }

    /// Refuse every exec, attach and port-forward with a 403 `Status` instead of a 101.
    #[must_use]
    pub fn refuse_upgrades(mut self, refuse: bool) -> Self {
        self.refuse_upgrades = refuse;
        self
    }

    /// While following logs, also send a line `tick <n>` this often.
    #[must_use]
    pub fn follow_tick(mut self, every: Duration) -> Self {
        self.follow_tick = Some(every);
        self
    }

    /// Where the pods' forwarded ports lead (a TCP server the test started).
    #[must_use]
    pub fn port_forward_target(mut self, upstream: SocketAddr) -> Self {
        self.port_forward_target = Some(upstream);
        self
    }

    /// From the start, hold requests whose path starts with `prefix` for `delay` (as
    /// [`StandIn::stall`]).
    #[must_use]
    pub fn stall(mut self, prefix: &str, delay: Duration) -> Self {
        self.stalls.push((prefix.to_owned(), delay));
        self
    }

    /// Authorize resource requests with RBAC from the bindings and roles in the store, as a
    /// real apiserver does (the default ClusterRoles of v1.32 are loaded); see `rbac`.
    #[must_use]
    pub fn enforce_rbac(mut self) -> Self {
        self.enforce_rbac = true;
        self
    }

    /// Offer only HTTP/1.1 in ALPN (as an apiserver behind an HTTP/1.1-only load balancer).
    #[must_use]
    pub fn http1_only(mut self, only: bool) -> Self {
        self.http1_only = only;
        self
    }

    /// Binds `127.0.0.1:0` and serves until the [`StandIn`] is dropped or shut down.
    pub async fn start(self) -> StandIn {
        certs::init_crypto();
        let ca = Ca::new("stand-in kube-apiserver CA");
        let serving = ca.localhost_cert();
        let mut roots = ca.root_store();
        for cert in self.client_cas {
            roots
                .add(cert)
                .expect("a CA certificate made by rcgen parses");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .expect("a root store with CAs makes a verifier");
        let mut tls = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(serving.cert_chain(), serving.private_key())
            .expect("an rcgen key matches its certificate");
        tls.alpn_protocols = if self.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0 works");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (streams, _) = watch::channel(ActiveStreams::default());
        let shared = Arc::new(Shared {
            bearer_token: self.bearer_token,
            refuse_upgrades: AtomicBool::new(self.refuse_upgrades),
            follow_tick: self.follow_tick,
            port_forward_target: Mutex::new(self.port_forward_target),
            store: Store::new(),
            recorded: Mutex::new(Vec::new()),
            recorded_count: watch::channel(0).0,
            logs: Mutex::new(HashMap::new()),
            log_lines: broadcast::channel(1024).0,
            streams,
            sessions: Mutex::new(JoinSet::new()),
            go_away: watch::channel(0).0,
            stalls: Mutex::new(self.stalls),
            stalled: watch::channel(0).0,
            handling: watch::channel(0).0,
            enforce_rbac: self.enforce_rbac,
        });
        if self.enforce_rbac {
            load_default_cluster_roles(&shared.store);
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(connection::serve(
            listener,
            TlsAcceptor::from(Arc::new(tls)),
            shared.clone(),
            shutdown_rx,
        ));
        tracing::debug!(%addr, "stand-in apiserver listening");
        StandIn {
            addr,
            ca,
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
        }
    }
}

/// A running stand-in apiserver. Dropping it stops it and closes every connection.
pub struct StandIn {
    addr: SocketAddr,
    ca: Ca,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    bearer_token: Option<String>,
    refuse_upgrades: AtomicBool,
    follow_tick: Option<Duration>,
    port_forward_target: Mutex<Option<SocketAddr>>,
    store: Store,
    recorded: Mutex<Vec<RecordedRequest>>,
    recorded_count: watch::Sender<usize>,
    /// (namespace, pod) -> lines
    logs: Mutex<HashMap<(String, String), Vec<String>>>,
    log_lines: broadcast::Sender<Arc<(String, String, String)>>,
    streams: watch::Sender<ActiveStreams>,
    sessions: Mutex<JoinSet<()>>,
    /// Counts [`StandIn::go_away`] calls: each open connection watches it.
    go_away: watch::Sender<u64>,
    /// Path prefixes whose requests wait this long before they are answered.
    stalls: Mutex<Vec<(String, Duration)>>,
    /// Requests waiting in a stall now.
    stalled: watch::Sender<usize>,
    /// Requests being handled now (from their head until their answer's head, or until their
    /// client gives up).
    handling: watch::Sender<usize>,
    /// Authorize resource requests with RBAC from the stored bindings (see `rbac`).
    enforce_rbac: bool,
}

/// Every ClusterRole of a fresh v1.32 cluster, as captured from one.
const DEFAULT_CLUSTER_ROLES: &str = include_str!("../../authz/data/all-default-clusterroles.yaml");

fn load_default_cluster_roles(store: &Store) {
    let list: Value =
        serde_saphyr::from_str(DEFAULT_CLUSTER_ROLES).expect("the captured roles parse");
    for mut role in list["items"].as_array().cloned().unwrap_or_default() {
        if let Some(meta) = role["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.remove("uid");
            meta.remove("creationTimestamp");
        }
        let (info, namespace) = resource_of(&role).expect("a ClusterRole");
        store
            .create(&info, &namespace, role)
            .expect("a fresh store takes the default roles");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only after a panic in a failing test; the data is still what it was.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StandIn {
    pub fn builder() -> StandInBuilder {
        StandInBuilder::default()
    }

    /// A stand-in with the defaults: client certificates from its CA only.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that issued the serving certificate (for `localhost` and `127.0.0.1`); client
    /// certificates it issues are accepted.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A client certificate the stand-in accepts: CN `user`, O `groups`.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> IssuedCert {
        self.ca.client_cert(user, groups)
    }

    /// A rustls client configuration that trusts the stand-in, optionally with a client
    /// certificate.
    pub fn client_config(&self, cert: Option<&IssuedCert>) -> rustls::ClientConfig {
        certs::client_config(&self.ca, cert)
    }

    pub fn bearer_token(&self) -> Option<&str> {
        self.shared.bearer_token.as_deref()
    }

    /// Every request received so far, in order of arrival.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).clone()
    }

    pub fn clear_recorded(&self) {
        lock(&self.shared.recorded).clear();
    }

    /// Waits until a request that satisfies `matches` has been received, and answers it.
    pub async fn wait_for_request(
        &self,
        matches: impl Fn(&RecordedRequest) -> bool,
    ) -> RecordedRequest {
        let mut changed = self.shared.recorded_count.subscribe();
        loop {
            if let Some(found) = lock(&self.shared.recorded).iter().find(|r| matches(r)) {
                return found.clone();
            }
            changed
                .changed()
                .await
                .expect("the stand-in lives as long as this borrow");
        }
    }

    /// The long-running responses in progress now.
    pub fn active_streams(&self) -> ActiveStreams {
        *self.shared.streams.borrow()
    }

    /// Waits until the long-running responses in progress satisfy `condition` (for example,
    /// that every watch ended after its client went away).
    pub async fn wait_for_streams(&self, condition: impl Fn(ActiveStreams) -> bool) {
        let mut streams = self.shared.streams.subscribe();
        streams
            .wait_for(|s| condition(*s))
            .await
            .expect("the stand-in lives as long as this borrow");
    }

    /// Creates an object as a `POST` would (`apiVersion` and `kind` say where; the namespace
    /// defaults to `default`). Watches see it.
    pub fn create(&self, object: Value) -> Result<Value, Status> {
        let (info, namespace) = resource_of(&object)?;
        self.shared.store.create(&info, &namespace, object)
    }

    /// Creates the object, or replaces the stored one (keeping its identity): a test's way to
    /// make watches see `ADDED` or `MODIFIED`.
    pub fn apply(&self, mut object: Value) -> Result<Value, Status> {
        let (info, namespace) = resource_of(&object)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        match self.shared.store.get(&info, &namespace, &name) {
            Ok(_) => self
                .shared
                .store
                .update(&info, &namespace, &name, object, false),
            Err(_) => self.shared.store.create(&info, &namespace, object),
        }
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let info = DISCOVERY.resource_for_kind(api_version, kind)?;
        self.shared.store.get(&info, namespace, name).ok()
    }

    /// Deletes an object (watches see `DELETED`); answers it if it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let info = DISCOVERY.resource_for_kind(api_version, kind)?;
        self.shared.store.delete(&info, namespace, name).ok()
    }

    /// Appends a line to a pod's log; followers get it at once.
    pub fn push_log(&self, namespace: &str, pod: &str, line: &str) {
        let mut logs = lock(&self.shared.logs);
        logs.entry((namespace.to_owned(), pod.to_owned()))
            .or_default()
            .push(line.to_owned());
        // Sent under the lock, so a follower that read the lines under it misses nothing.
        let _ = self.shared.log_lines.send(Arc::new((
            namespace.to_owned(),
            pod.to_owned(),
            line.to_owned(),
        )));
    }

    /// Refuse (or again allow) exec, attach and port-forward.
    pub fn set_refuse_upgrades(&self, refuse: bool) {
        self.shared.refuse_upgrades.store(refuse, Ordering::SeqCst);
    }

    /// Where forwarded ports lead from now on.
    pub fn set_port_forward_target(&self, upstream: SocketAddr) {
        *lock(&self.shared.port_forward_target) = Some(upstream);
    }

    /// From now on, requests whose path starts with `prefix` are recorded, then wait `delay`
    /// before they are answered (an apiserver stuck on etcd, a slow admission webhook).
    pub fn stall(&self, prefix: &str, delay: Duration) {
        lock(&self.shared.stalls).push((prefix.to_owned(), delay));
    }

    /// Requests waiting in a stall now: one whose client gave up is no longer waiting.
    pub fn stalled(&self) -> usize {
        *self.shared.stalled.borrow()
    }

    /// Waits until the number of requests waiting in a stall satisfies `condition`.
    pub async fn wait_for_stalled(&self, condition: impl Fn(usize) -> bool) {
        let mut stalled = self.shared.stalled.subscribe();
        stalled
            .wait_for(|n| condition(*n))
            .await
            .expect("the stand-in lives as long as this borrow");
    }

    /// Waits until the number of requests being handled (from their head until their answer's
    /// head: reading a body, or stalled) satisfies `condition`.
    pub async fn wait_for_handling(&self, condition: impl Fn(usize) -> bool) {
        let mut handling = self.shared.handling.subscribe();
        handling
            .wait_for(|n| condition(*n))
            .await
            .expect("the stand-in lives as long as this borrow");
    }

    /// Sends every open connection away as an apiserver that shuts down, or rebalances with
    /// `--goaway-chance`, does: HTTP/2 connections get a GOAWAY and finish the streams they
    /// have (an open watch keeps going) but take no new ones; HTTP/1.1 connections close once
    /// idle. New connections are still accepted.
    pub fn go_away(&self) {
        self.shared.go_away.send_modify(|n| *n += 1);
    }

    /// Stops accepting, closes every connection and ends every session, and waits until the
    /// listener and the connections are gone. The stand-in can still be inspected afterwards
    /// (recorded requests, [`Self::wait_for_streams`]).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        lock(&self.shared.sessions).abort_all();
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = lock(&self.task).take() {
            // Aborting drops the connection set, which aborts every connection.
            task.abort();
        }
        lock(&self.shared.sessions).abort_all();
    }
}

fn resource_of(object: &Value) -> Result<(Arc<ResourceInfo>, String), Status> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let info = DISCOVERY
        .resource_for_kind(api_version, kind)
        .ok_or_else(|| Status::bad_request(format!("no resource for {api_version} {kind}")))?;
    let namespace = if info.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    };
    Ok((info, namespace))
}
