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
//!   access reviews (`kubectl auth can-i`, always allowed: the stand-in has no RBAC);
//! - **authentication of its caller**: a client certificate from its CA (or the one given to
//!   [`StandInBuilder::client_ca`]) or the static bearer token; anything else is a 401 `Status`.
//!   `Impersonate-User` / `Impersonate-Group` are honoured;
//! - a **record** of every request it received, for tests to assert header hygiene.

mod discovery;
mod patch;
mod request;
mod select;
mod status;
mod store;
mod table;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::certs::{self, Ca, IssuedCert};
use crate::upgrade::{self, ExecCommand, PortForwardTarget};
use discovery::{DISCOVERY, ResourceInfo};
use request::Query;
use select::Selector;
pub use status::Status;
use store::{Event, EventType, Store, WatchFrom};
use table::Include;

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
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

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
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(serve(
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

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: Uri,
    pub version: Version,
    /// Every header line, duplicates kept.
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// Who the caller authenticated as (before impersonation).
    pub caller: Caller,
    /// The body, for requests that are not upgrades.
    pub body: Bytes,
}

impl RecordedRequest {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Every value of a header, in order (lossy UTF-8).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The one value of a header, if there is exactly one.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.header_values(name).as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

/// How the caller of the stand-in authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// A client certificate: its CN and O.
    ClientCert { user: String, groups: Vec<String> },
    /// The static bearer token.
    BearerToken,
    /// Neither; such requests get a 401.
    Anonymous,
}

/// Long-running responses in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveStreams {
    pub watches: usize,
    pub log_follows: usize,
    /// Exec, attach and port-forward sessions.
    pub upgrades: usize,
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

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, acceptor.clone(), shared.clone()));
                }
                Err(error) => tracing::debug!(%error, "stand-in accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

#[derive(Debug, Clone)]
struct Connection {
    peer: SocketAddr,
    /// CN and O of the verified client certificate.
    cert: Option<(String, Vec<String>)>,
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "stand-in TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| certs::subject_user_and_groups(leaf));
    let connection = Connection { peer, cert };
    let mut go_away = shared.go_away.subscribe();
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &connection, request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        Ok(()) = go_away.changed() => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "stand-in connection ended with an error");
    }
}

/// The identity requests act as, after impersonation.
#[derive(Debug, Clone)]
struct User {
    name: String,
    groups: Vec<String>,
    extra: HashMap<String, Vec<String>>,
    uid: Option<String>,
}

async fn handle(
    shared: &Arc<Shared>,
    connection: &Connection,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let body = if upgrade.is_some() {
        Bytes::new()
    } else {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return respond_status(&parts.headers, &Status::too_large()),
        }
    };
    let caller = authenticate(shared, connection, &parts.headers);
    record(shared, connection, &parts, &caller, &body);

    let mut response = match user_of(&caller, &parts.headers) {
        Err(status) => status_response(&status),
        Ok(user) => {
            let context = Context {
                method: parts.method.clone(),
                version: parts.version,
                query: Query::parse(parts.uri.query()),
                headers: parts.headers.clone(),
                body,
                user,
                upgrade,
            };
            route(shared, parts.uri.path(), context)
                .unwrap_or_else(|status| status_response(&status))
        }
    };
    decorate(&parts.headers, response.headers_mut());
    response
}

/// Headers the apiserver puts on every answer.
fn decorate(request: &HeaderMap, response: &mut HeaderMap) {
    let audit_id = request.get("audit-id").cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value")
    });
    response.insert("audit-id", audit_id);
    response
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache, private"));
}

fn respond_status(request: &HeaderMap, status: &Status) -> Response<Body> {
    let mut response = status_response(status);
    decorate(request, response.headers_mut());
    response
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

fn authenticate(shared: &Shared, connection: &Connection, headers: &HeaderMap) -> Caller {
    if let Some((user, groups)) = &connection.cert {
        return Caller::ClientCert {
            user: user.clone(),
            groups: groups.clone(),
        };
    }
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let (Some(value), None, Some(token)) = (
        authorization.next(),
        authorization.next(),
        shared.bearer_token.as_deref(),
    ) && value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
    {
        return Caller::BearerToken;
    }
    Caller::Anonymous
}

fn record(
    shared: &Shared,
    connection: &Connection,
    parts: &http::request::Parts,
    caller: &Caller,
    body: &Bytes,
) {
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.clone(), |pq| Uri::from(pq.clone()));
    lock(&shared.recorded).push(RecordedRequest {
        method: parts.method.clone(),
        uri,
        version: parts.version,
        headers: parts.headers.clone(),
        peer: connection.peer,
        caller: caller.clone(),
        body: body.clone(),
    });
    shared.recorded_count.send_modify(|count| *count += 1);
}

fn user_of(caller: &Caller, headers: &HeaderMap) -> Result<User, Status> {
    let (name, mut groups) = match caller {
        Caller::Anonymous => return Err(Status::unauthorized()),
        Caller::BearerToken => (TOKEN_USER.to_owned(), vec!["system:masters".to_owned()]),
        Caller::ClientCert { user, groups } => (user.clone(), groups.clone()),
    };
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let impersonated_user = values("impersonate-user");
    let impersonated_groups = values("impersonate-group");
    let impersonated_uid = values("impersonate-uid");
    let mut extra: HashMap<String, Vec<String>> = HashMap::new();
    for (header_name, value) in headers {
        if let Some(key) = header_name.as_str().strip_prefix("impersonate-extra-") {
            extra
                .entry(request::decode(key))
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let user = match impersonated_user.as_slice() {
        [] => {
            if !impersonated_groups.is_empty() || !extra.is_empty() || !impersonated_uid.is_empty()
            {
                return Err(Status::internal(
                    "Internal error occurred: requested impersonation of groups, extra or uid without impersonating a user",
                ));
            }
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".to_owned());
            }
            return Ok(User {
                name,
                groups,
                extra,
                uid: None,
            });
        }
        [user] => user.clone(),
        _ => {
            return Err(Status::bad_request(
                "only one Impersonate-User header is allowed",
            ));
        }
    };
    let mut groups = impersonated_groups;
    if user != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    Ok(User {
        name: user,
        groups,
        extra,
        uid: impersonated_uid.into_iter().next(),
    })
}

/// Everything a handler needs of the request.
struct Context {
    method: Method,
    version: Version,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
    user: User,
    upgrade: Option<OnUpgrade>,
}

impl Context {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn accept(&self) -> String {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn route(shared: &Arc<Shared>, path: &str, context: Context) -> Result<Response<Body>, Status> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let read_only = matches!(context.method, Method::GET | Method::HEAD);
    let aggregated = discovery::wants_aggregated(&context.accept());
    match segments.as_slice() {
        ["version"] if read_only => Ok(json_text(StatusCode::OK, discovery::VERSION)),
        ["healthz" | "livez" | "readyz"] if read_only => Ok(plain(StatusCode::OK, "ok")),
        ["api"] if read_only && aggregated => Ok(aggregated_response(discovery::API_AGGREGATED)),
        ["api"] if read_only => Ok(json_text(StatusCode::OK, discovery::API)),
        ["apis"] if read_only && aggregated => Ok(aggregated_response(discovery::APIS_AGGREGATED)),
        ["apis"] if read_only => Ok(json_text(StatusCode::OK, discovery::APIS)),
        ["api", "v1"] if read_only => Ok(json_text(StatusCode::OK, discovery::API_V1)),
        ["apis", group] if read_only => DISCOVERY
            .group(group)
            .map(|g| json_text(StatusCode::OK, g))
            .ok_or_else(Status::no_route),
        ["apis", group, version] if read_only => DISCOVERY
            .resource_list(group, version)
            .map(|l| json_text(StatusCode::OK, l))
            .ok_or_else(Status::no_route),
        ["openapi", "v3"] if read_only => Ok(json_text(StatusCode::OK, DISCOVERY.openapi_index())),
        ["openapi", "v3", rest @ ..] if read_only => DISCOVERY
            .openapi_doc(&rest.join("/"))
            .map(|d| json_text(StatusCode::OK, d))
            .ok_or_else(Status::no_route),
        ["api", "v1", rest @ ..] => resource(shared, "", "v1", rest, context),
        ["apis", group, version, rest @ ..] => resource(shared, group, version, rest, context),
        _ => Err(Status::no_route()),
    }
}

/// A request for a resource: where it points.
struct Target<'a> {
    info: Arc<ResourceInfo>,
    /// `None`: across all namespaces (lists and watches only), or a cluster-scoped resource.
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    context: Context,
) -> Result<Response<Body>, Status> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if !(tail.is_empty() && matches!(*resource, "status" | "finalize")) =>
        {
            (Some(*ns), &rest[2..])
        }
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return Err(Status::no_route()),
    };
    let info = DISCOVERY
        .resource(group, version, resource)
        .ok_or_else(Status::no_route)?;
    if (info.namespaced && namespace.is_none() && name.is_some())
        || (!info.namespaced && namespace.is_some())
        || subresource.is_some_and(|s| !info.subresources.iter().any(|x| x == s))
    {
        return Err(Status::no_route());
    }
    let target = Target {
        info,
        namespace,
        name,
        subresource,
    };
    if let Some(response) = review(&target, &context)? {
        return Ok(response);
    }
    match (target.subresource, target.name) {
        (Some("log"), Some(pod)) if target.info.resource == "pods" => {
            pod_log(shared, &target, pod, &context)
        }
        (Some(sub @ ("exec" | "attach" | "portforward")), Some(pod))
            if target.info.resource == "pods" =>
        {
            upgrade_session(shared, &target, pod, sub, context)
        }
        (Some("status"), Some(name)) => object_request(shared, &target, name, true, &context),
        (Some(sub), _) => Err(Status::method_not_allowed(
            context.method.as_str(),
            &format!("{}/{sub}", target.info.resource),
        )),
        (None, Some(name)) => object_request(shared, &target, name, false, &context),
        (None, None) => collection_request(shared, &target, &context),
    }
}

fn storage_namespace<'a>(target: &Target<'a>) -> &'a str {
    target.namespace.unwrap_or_default()
}

fn check_verb(target: &Target<'_>, verb: &str) -> Result<(), Status> {
    if target.info.allows(verb) {
        Ok(())
    } else {
        Err(Status::method_not_allowed(verb, &target.info.resource))
    }
}

/// The create-only review resources, answered from the caller's identity.
fn review(target: &Target<'_>, context: &Context) -> Result<Option<Response<Body>>, Status> {
    let info = &target.info;
    let kind = match (info.group.as_str(), info.resource.as_str()) {
        ("authentication.k8s.io", "selfsubjectreviews" | "tokenreviews")
        | (
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews"
            | "subjectaccessreviews"
            | "localsubjectaccessreviews",
        ) => info.resource.as_str(),
        _ => return Ok(None),
    };
    if context.method != Method::POST || target.name.is_some() {
        return Err(Status::method_not_allowed(context.method.as_str(), kind));
    }
    // kubectl's typed client sends reviews as protobuf; the answer depends on the caller only,
    // so such a body is not read (and the answer is JSON, which the client accepts too).
    let mut object = if context
        .header("content-type")
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        json!({})
    } else {
        parse_body(context)?
    };
    object["apiVersion"] = json!(info.api_version());
    object["kind"] = json!(info.kind);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]["creationTimestamp"] = Value::Null;
    let user = &context.user;
    object["status"] = match kind {
        "selfsubjectreviews" => {
            let mut user_info = json!({"username": user.name, "groups": user.groups});
            if let Some(uid) = &user.uid {
                user_info["uid"] = json!(uid);
            }
            if !user.extra.is_empty() {
                user_info["extra"] = json!(user.extra);
            }
            json!({"userInfo": user_info})
        }
        "tokenreviews" => json!({"authenticated": false, "user": {}}),
        "selfsubjectrulesreviews" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        _ => json!({"allowed": true, "reason": "the stand-in apiserver allows everything"}),
    };
    Ok(Some(json_response(StatusCode::CREATED, &object)))
}

fn parse_body(context: &Context) -> Result<Value, Status> {
    let content_type = context.header("content-type");
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "application/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(&context.body)
                .map_err(|_| Status::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))
        }
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => serde_json::from_slice(&context.body).map_err(|e| {
            Status::bad_request(format!(
                "Object 'Kind' is missing in '{}': {e}",
                String::from_utf8_lossy(&context.body)
            ))
        }),
        other => Err(Status::unsupported_media_type(other)),
    }
}

/// GET, PUT, PATCH, DELETE of one object (or its status).
fn object_request(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    name: &str,
    status_only: bool,
    context: &Context,
) -> Result<Response<Body>, Status> {
    let info = &target.info;
    let namespace = storage_namespace(target);
    let store = &shared.store;
    match context.method {
        Method::GET | Method::HEAD => {
            check_verb(target, "get")?;
            let object = store.get(info, namespace, name)?;
            Ok(object_response(StatusCode::OK, info, object, context))
        }
        Method::PUT => {
            check_verb(target, "update")?;
            let body = parse_body(context)?;
            let object = store.update(info, namespace, name, body, status_only)?;
            Ok(object_response(StatusCode::OK, info, object, context))
        }
        Method::PATCH => {
            check_verb(target, "patch")?;
            let content_type = context
                .header("content-type")
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let patch = parse_body(context)?;
            let (object, created) = store.patch(info, namespace, name, status_only, |current| {
                apply_patch(info, name, &content_type, current, &patch)
            })?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(object_response(code, info, object, context))
        }
        Method::DELETE => {
            check_verb(target, "delete")?;
            check_preconditions(info, &store.get(info, namespace, name)?, context)?;
            let deleted = store.delete(info, namespace, name)?;
            if info.group.is_empty() && matches!(info.resource.as_str(), "pods" | "namespaces") {
                Ok(object_response(StatusCode::OK, info, deleted, context))
            } else {
                let uid = deleted["metadata"]["uid"].as_str().unwrap_or_default();
                Ok(json_response(
                    StatusCode::OK,
                    &status::success(&info.resource, &info.group, name, uid),
                ))
            }
        }
        _ => Err(Status::method_not_allowed(
            context.method.as_str(),
            &info.resource,
        )),
    }
}

/// The `preconditions` (uid, `resourceVersion`) of a delete's `DeleteOptions` body: a 409
/// `Conflict` when the stored object is not the one the client meant.
fn check_preconditions(
    info: &ResourceInfo,
    current: &Value,
    context: &Context,
) -> Result<(), Status> {
    if context.body.is_empty() {
        return Ok(());
    }
    let options = parse_body(context)?;
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    for (field, key) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(wanted) = options["preconditions"][key].as_str()
            && current["metadata"][field].as_str() != Some(wanted)
        {
            return Err(Status::conflict(&info.resource, &info.group, name));
        }
    }
    Ok(())
}

fn apply_patch(
    info: &ResourceInfo,
    name: &str,
    content_type: &str,
    current: Option<Value>,
    patch: &Value,
) -> Result<Value, Status> {
    let Some(mut object) = current else {
        return if content_type == "application/apply-patch+yaml" {
            Ok(patch.clone())
        } else {
            Err(Status::not_found(&info.resource, &info.group, name))
        };
    };
    match content_type {
        "application/merge-patch+json" => patch::merge(&mut object, patch),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            patch::strategic(&mut object, patch);
        }
        "application/json-patch+json" => patch::json_patch(&mut object, patch)
            .map_err(|e| Status::invalid(&info.resource, &info.group, name, &e))?,
        other => return Err(Status::unsupported_media_type(other)),
    }
    Ok(object)
}

/// GET (list or watch), POST, DELETE (deletecollection) on a collection.
fn collection_request(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    context: &Context,
) -> Result<Response<Body>, Status> {
    let info = &target.info;
    let selector = Selector::parse(
        context.query.get("labelSelector"),
        context.query.get("fieldSelector"),
    )?;
    match context.method {
        Method::GET | Method::HEAD if context.query.flag("watch") => {
            check_verb(target, "watch")?;
            Ok(watch(shared, target, selector, context))
        }
        Method::GET | Method::HEAD => {
            check_verb(target, "list")?;
            let (items, version) = shared.store.list(info, target.namespace);
            let items: Vec<Value> = items.into_iter().filter(|o| selector.matches(o)).collect();
            let (page, next) = paginate(items, &context.query)?;
            let mut meta = json!({"resourceVersion": version.to_string()});
            if let Some((token, remaining)) = next {
                meta["continue"] = json!(token);
                meta["remainingItemCount"] = json!(remaining);
            }
            if let Some(table_version) = request::wants_table(&context.accept()) {
                let include = Include::parse(context.query.get("includeObject"));
                let table = table::table(
                    info,
                    &page,
                    &meta,
                    table_version,
                    include,
                    SystemTime::now(),
                );
                return Ok(table_response(table_version, &table));
            }
            Ok(json_response(StatusCode::OK, &list(info, &meta, page)))
        }
        Method::POST => {
            check_verb(target, "create")?;
            let namespace = target.namespace.unwrap_or_default();
            let object = shared.store.create(info, namespace, parse_body(context)?)?;
            Ok(object_response(StatusCode::CREATED, info, object, context))
        }
        Method::DELETE => {
            check_verb(target, "deletecollection")?;
            let (items, version) = shared.store.list(info, target.namespace);
            let mut deleted = Vec::new();
            for item in items.into_iter().filter(|o| selector.matches(o)) {
                let namespace = item["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                if let Ok(object) = shared.store.delete(info, namespace, name) {
                    deleted.push(object);
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &list(
                    info,
                    &json!({"resourceVersion": version.to_string()}),
                    deleted,
                ),
            ))
        }
        _ => Err(Status::method_not_allowed(
            context.method.as_str(),
            &info.resource,
        )),
    }
}

/// A `<Kind>List`; its items carry no `kind`/`apiVersion`, as the apiserver's do not.
fn list(info: &ResourceInfo, meta: &Value, items: Vec<Value>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(object) = item.as_object_mut() {
                object.remove("kind");
                object.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// `limit` and `continue`: the token is the key of the last object sent.
/// A page of a list, and the `continue` token and `remainingItemCount` when more follow.
type Page = (Vec<Value>, Option<(String, usize)>);

fn paginate(items: Vec<Value>, query: &Query) -> Result<Page, Status> {
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let mut items = items;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let after = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::bad_request("continue key is not valid"))?;
        items.retain(|o| key(o) > after);
    }
    let limit = query
        .number("limit")
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l > 0);
    match limit {
        Some(limit) if items.len() > limit => {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().map(key).unwrap_or_default();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last);
            Ok((items, Some((token, remaining))))
        }
        _ => Ok((items, None)),
    }
}

/// A single object, as JSON or (for `kubectl get`) as a one-row `Table`.
fn object_response(
    code: StatusCode,
    info: &ResourceInfo,
    object: Value,
    context: &Context,
) -> Response<Body> {
    if context.method == Method::GET
        && let Some(table_version) = request::wants_table(&context.accept())
    {
        let include = Include::parse(context.query.get("includeObject"));
        let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
        let table = table::table(
            info,
            &[object],
            &meta,
            table_version,
            include,
            SystemTime::now(),
        );
        return table_response(table_version, &table);
    }
    json_response(code, &object)
}

// ---------------------------------------------------------------------------------------------
// Watch

/// Counts a long-running response while it lives.
struct StreamGuard {
    streams: watch::Sender<ActiveStreams>,
    field: fn(&mut ActiveStreams) -> &mut usize,
}

impl StreamGuard {
    fn new(
        streams: &watch::Sender<ActiveStreams>,
        field: fn(&mut ActiveStreams) -> &mut usize,
    ) -> Self {
        streams.send_modify(|s| *field(s) += 1);
        Self {
            streams: streams.clone(),
            field,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let field = self.field;
        self.streams.send_modify(|s| *field(s) -= 1);
    }
}

struct WatchEncoder {
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    selector: Selector,
    table: Option<&'static str>,
    include: Include,
}

impl WatchEncoder {
    /// The line for a change, or `None` when the watch does not see it.
    fn encode(&self, event: &Event) -> Option<Bytes> {
        if !store::is_for(event, &self.info, self.namespace.as_deref()) {
            return None;
        }
        let now = self.selector.matches(&event.object);
        let kind = match event.kind {
            EventType::Added | EventType::Deleted => now.then_some(event.kind),
            EventType::Modified => {
                let before = event
                    .previous
                    .as_ref()
                    .is_some_and(|p| self.selector.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }?;
        Some(self.line(kind.as_str(), &event.object))
    }

    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let object = match self.table {
            Some(version) => {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                table::table(
                    &self.info,
                    std::slice::from_ref(object),
                    &meta,
                    version,
                    self.include,
                    SystemTime::now(),
                )
            }
            None => object.clone(),
        };
        event_line(kind, &object)
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

struct WatchState {
    first: VecDeque<Bytes>,
    events: broadcast::Receiver<Arc<Event>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    encoder: WatchEncoder,
    ended: bool,
    _guard: StreamGuard,
}

fn watch(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    selector: Selector,
    context: &Context,
) -> Response<Body> {
    let query = &context.query;
    let send_initial = query.flag("sendInitialEvents");
    let from = match query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(version) if version > 0 && !send_initial => WatchFrom::After(version),
        _ => WatchFrom::Current,
    };
    let encoder = WatchEncoder {
        info: target.info.clone(),
        namespace: target.namespace.map(str::to_owned),
        selector,
        table: request::wants_table(&context.accept()),
        include: Include::parse(query.get("includeObject")),
    };
    let (first, events) = shared.store.watch(&target.info, target.namespace, from);
    let mut first: VecDeque<Bytes> = first.iter().filter_map(|e| encoder.encode(e)).collect();
    if send_initial {
        let bookmark = json!({
            "kind": target.info.kind,
            "apiVersion": target.info.api_version(),
            "metadata": {
                "resourceVersion": shared.store.current_version().to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        first.push_back(event_line("BOOKMARK", &bookmark));
    }
    let deadline = query
        .number("timeoutSeconds")
        .map(|s| Box::pin(tokio::time::sleep(Duration::from_secs(s))));
    let state = WatchState {
        first,
        events,
        deadline,
        encoder,
        ended: false,
        _guard: StreamGuard::new(&shared.streams, |s| &mut s.watches),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(line) = state.first.pop_front() {
            return Some((line, state));
        }
        if state.ended {
            return None;
        }
        loop {
            let received = tokio::select! {
                received = state.events.recv() => received,
                () = until(&mut state.deadline) => return None,
            };
            match received {
                Ok(event) => {
                    if let Some(line) = state.encoder.encode(&event) {
                        return Some((line, state));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.ended = true;
                    let status = Status::expired("too old resource version").to_json();
                    return Some((event_line("ERROR", &status), state));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    streaming(StatusCode::OK, "application/json", stream)
}

async fn until(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

struct LogState {
    first: VecDeque<Bytes>,
    lines: broadcast::Receiver<Arc<(String, String, String)>>,
    namespace: String,
    pod: String,
    timestamps: bool,
    tick: Option<tokio::time::Interval>,
    ticks: u64,
    _guard: StreamGuard,
}

fn log_line(line: &str, timestamps: bool) -> Bytes {
    if timestamps {
        Bytes::from(format!("{} {line}\n", request::rfc3339(SystemTime::now())))
    } else {
        Bytes::from(format!("{line}\n"))
    }
}

fn pod_log(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    pod: &str,
    context: &Context,
) -> Result<Response<Body>, Status> {
    if !matches!(context.method, Method::GET | Method::HEAD) {
        return Err(Status::method_not_allowed(
            context.method.as_str(),
            "pods/log",
        ));
    }
    let namespace = storage_namespace(target);
    shared.store.get(&target.info, namespace, pod)?;
    let timestamps = context.query.flag("timestamps");
    let key = (namespace.to_owned(), pod.to_owned());
    let (mut lines, receiver) = {
        let logs = lock(&shared.logs);
        (
            logs.get(&key).cloned().unwrap_or_default(),
            shared.log_lines.subscribe(),
        )
    };
    if let Some(tail) = context
        .query
        .number("tailLines")
        .and_then(|t| usize::try_from(t).ok())
    {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let first: VecDeque<Bytes> = lines.iter().map(|l| log_line(l, timestamps)).collect();
    if !context.query.flag("follow") {
        let body: Vec<u8> = first.into_iter().flat_map(|b| b.to_vec()).collect();
        return Ok(full(StatusCode::OK, "text/plain", Bytes::from(body)));
    }
    let tick = shared.follow_tick.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let state = LogState {
        first,
        lines: receiver,
        namespace: key.0,
        pod: key.1,
        timestamps,
        tick,
        ticks: 0,
        _guard: StreamGuard::new(&shared.streams, |s| &mut s.log_follows),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(line) = state.first.pop_front() {
            return Some((line, state));
        }
        loop {
            tokio::select! {
                received = state.lines.recv() => match received {
                    Ok(entry) if entry.0 == state.namespace && entry.1 == state.pod => {
                        let line = log_line(&entry.2, state.timestamps);
                        return Some((line, state));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = next_tick(&mut state.tick) => {
                    state.ticks += 1;
                    let line = log_line(&format!("tick {}", state.ticks), state.timestamps);
                    return Some((line, state));
                }
            }
        }
    });
    Ok(streaming(StatusCode::OK, "text/plain", stream))
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Exec, attach, port-forward

fn upgrade_session(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    pod: &str,
    subresource: &str,
    mut context: Context,
) -> Result<Response<Body>, Status> {
    let namespace = storage_namespace(target);
    let resource = format!("pods/{subresource}");
    if !matches!(context.method, Method::GET | Method::POST) {
        return Err(Status::method_not_allowed(
            context.method.as_str(),
            &resource,
        ));
    }
    shared.store.get(&target.info, namespace, pod)?;
    if shared.refuse_upgrades.load(Ordering::SeqCst) {
        return Err(Status::forbidden(
            &context.user.name,
            "create",
            &resource,
            "",
            pod,
            Some(namespace),
        ));
    }
    let Some(on_upgrade) = context.upgrade.take() else {
        return Err(Status::bad_request("Upgrade request required"));
    };
    if context.version != Version::HTTP_11 {
        return Err(Status::bad_request("Upgrade request required"));
    }
    let upgrade_to = context.header("upgrade").to_owned();
    let values = |name: &str| -> Vec<String> {
        context
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let portforward = subresource == "portforward";
    let target_addr = *lock(&shared.port_forward_target);
    let forward_to = if portforward {
        Some(PortForwardTarget {
            upstream: target_addr.ok_or_else(|| {
                Status::internal("the stand-in has no port-forward target: see StandInBuilder::port_forward_target")
            })?,
        })
    } else {
        None
    };
    let command = ExecCommand {
        command: context.query.all("command"),
        stdin: context.query.flag("stdin"),
        tty: context.query.flag("tty"),
    };
    let ports: Vec<u16> = context
        .query
        .all("ports")
        .iter()
        .flat_map(|p| {
            p.split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|p| p.parse().ok())
        .collect();

    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    let session: Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    if upgrade_to.eq_ignore_ascii_case("websocket") {
        let key = context.header("sec-websocket-key").to_owned();
        if key.is_empty() || context.header("sec-websocket-version") != "13" {
            return Err(Status::bad_request(
                "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            ));
        }
        let supported = if portforward {
            upgrade::PORTFORWARD_WS_PROTOCOLS
        } else {
            upgrade::EXEC_WS_PROTOCOLS
        };
        let offered = values("sec-websocket-protocol");
        let protocol = upgrade::select_protocol(&offered, supported).ok_or_else(|| {
            Status::bad_request(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
            ))
        })?;
        response = response
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header("sec-websocket-accept", upgrade::websocket_accept(&key))
            .header("sec-websocket-protocol", protocol);
        session = match forward_to {
            Some(forward_to) => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_websocket_portforward(io, protocol, ports, forward_to).await;
            })),
            None => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_websocket_exec(io, protocol, command).await;
            })),
        };
    } else if upgrade_to.eq_ignore_ascii_case(upgrade::SPDY_UPGRADE) {
        let supported: &[&'static str] = if portforward {
            &[upgrade::PORTFORWARD_SPDY_PROTOCOL]
        } else {
            upgrade::EXEC_SPDY_PROTOCOLS
        };
        let offered = values("x-stream-protocol-version");
        let protocol = upgrade::select_protocol(&offered, supported).ok_or_else(|| {
            Status::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
            )
        })?;
        response = response
            .header(header::UPGRADE, upgrade::SPDY_UPGRADE)
            .header(header::CONNECTION, "Upgrade")
            .header("x-stream-protocol-version", protocol);
        session = match forward_to {
            Some(forward_to) => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_spdy_portforward(io, forward_to).await;
            })),
            None => Box::pin(with_upgraded(on_upgrade, move |io| async move {
                upgrade::serve_spdy_exec(io, protocol, command).await;
            })),
        };
    } else {
        return Err(Status::bad_request(format!(
            "unsupported upgrade: {upgrade_to:?}"
        )));
    }
    let guard = StreamGuard::new(&shared.streams, |s| &mut s.upgrades);
    lock(&shared.sessions).spawn(async move {
        let _guard = guard;
        session.await;
    });
    Ok(response.body(empty()).expect("the 101 headers are valid"))
}

async fn with_upgraded<F, Fut>(on_upgrade: OnUpgrade, session: F)
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match on_upgrade.await {
        Ok(upgraded) => session(TokioIo::new(upgraded)).await,
        Err(error) => tracing::debug!(%error, "stand-in upgrade failed"),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("static headers are valid")
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

fn plain(code: StatusCode, text: &'static str) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", text)
}

fn json_text(code: StatusCode, text: &str) -> Response<Body> {
    full(code, "application/json", text.to_owned())
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

fn aggregated_response(text: &'static str) -> Response<Body> {
    let mut response = full(StatusCode::OK, discovery::AGGREGATED_V2, text);
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn table_response(version: &str, table: &Value) -> Response<Body> {
    full(
        StatusCode::OK,
        &format!("application/json;as=Table;v={version};g=meta.k8s.io"),
        serde_json::to_vec(table).expect("JSON values serialize"),
    )
}

fn status_response(status: &Status) -> Response<Body> {
    json_response(status.code, &status.to_json())
}

fn streaming(
    code: StatusCode,
    content_type: &str,
    stream: impl futures_util::Stream<Item = Bytes> + Send + 'static,
) -> Response<Body> {
    let body = StreamBody::new(stream.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))));
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.boxed_unsync())
        .expect("static headers are valid")
}
