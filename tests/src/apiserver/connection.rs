//! Serving connections: the TLS handshake, HTTP/1.1 or HTTP/2, GOAWAY when asked, and each
//! request from its bytes to its answer (authenticated, recorded, routed, decorated).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::auth::{Caller, authenticate, user_of};
use super::recorded::record;
use super::request::Query;
use super::response::status_response;
use super::route::{Context, route};
use super::status::Status;
use super::{Body, MAX_BODY, Shared, lock};
use crate::certs;

/// Go's `http.DefaultMaxHeaderBytes`, the apiserver's limit on a request head.
const MAX_HEAD: usize = 1 << 20;

pub(super) async fn serve(
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
pub(super) struct Connection {
    pub(super) peer: SocketAddr,
    /// CN and O of the verified client certificate.
    pub(super) cert: Option<(String, Vec<String>)>,
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
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The apiserver's (Go's) limits on request heads, 1 MB, not hyper's smaller defaults: what
    // a proxy in front lets through must reach it.
    builder.http1().max_buf_size(MAX_HEAD + 64 * 1024);
    builder
        .http2()
        .max_header_list_size(u32::try_from(MAX_HEAD).expect("1 MB fits"));
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

async fn handle(
    shared: &Arc<Shared>,
    connection: &Connection,
    mut request: Request<Incoming>,
) -> Response<Body> {
    shared.handling.send_modify(|n| *n += 1);
    let _handling = Handling(shared.clone());
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
    let own = is_own(&caller, &parts);
    if !own {
        record(shared, connection, &parts, &caller, &body);
    }
    let stall = lock(&shared.stalls)
        .iter()
        .find(|(prefix, _)| parts.uri.path().starts_with(prefix.as_str()))
        .map(|(_, delay)| *delay);
    if let Some(delay) = stall {
        // Counted while waiting; a client that gives up drops this future, and the count.
        shared.stalled.send_modify(|n| *n += 1);
        let _waiting = Stalled(shared.clone());
        tokio::time::sleep(delay).await;
    }

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
                own,
            };
            route(shared, parts.uri.path(), context)
                .unwrap_or_else(|status| status_response(&status))
        }
    };
    decorate(&parts.headers, response.headers_mut());
    response
}

/// Whether infra-proxy made the request for itself, with its own credential and no
/// impersonation: the permission check at its start (`selfsubjectaccessreviews`) and its lists
/// and watches of roles and bindings (its writes of bindings are recorded). Tests count the requests and streams the proxy forwards
/// for users; these are not among them. Only these paths qualify, so a user's request forwarded
/// without impersonation (a bug) is still recorded.
fn is_own(caller: &Caller, parts: &http::request::Parts) -> bool {
    let path = parts.uri.path();
    !matches!(caller, Caller::Anonymous)
        && !parts
            .headers
            .keys()
            .any(|name| name.as_str().starts_with("impersonate-"))
        && ((parts.method == http::Method::GET
            && path.starts_with("/apis/rbac.authorization.k8s.io/"))
            || (parts.method == http::Method::POST
                && path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
}

/// A request being handled; counted until dropped.
struct Handling(Arc<Shared>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.send_modify(|n| *n -= 1);
    }
}

/// A request waiting in a stall; counted until dropped.
struct Stalled(Arc<Shared>);

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.stalled.send_modify(|n| *n -= 1);
    }
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
