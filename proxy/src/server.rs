//! The TLS listener: admit (connection limits), handshake with a deadline, serve HTTP/1.1 or
//! HTTP/2 by ALPN, close idle connections, and drain on shutdown.
//!
//! The parts: admission at accept and the connection's stream (`server/admission.rs`), what
//! each connection is doing, for its idle timeout (`server/activity.rs`), and the HTTP/1.1
//! framing watcher that refuses request smuggling (`server/framing.rs`).

mod activity;
mod admission;
mod framing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::status::Refusal;
use crate::upstream::Body;
use activity::{Activity, tracked};
use admission::{Admission, Conn, Refused};
use framing::HeadWatcher;

/// Limits that protect the proxy from slow, greedy or abusive clients: the listener's (accept,
/// handshake, headers, idle connections) and the request pipeline's (upstream deadline,
/// requests in flight per user, body size). A count of 0 means no limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send a request's headers (HTTP/1.1), and for a kept-alive HTTP/1.1 connection
    /// to start its next request.
    pub header_read_timeout: Duration,
    /// A connection with no open request (HTTP/2: no open stream) for this long is closed. An
    /// open watch, followed log or tunnel keeps its connection open.
    pub idle_timeout: Duration,
    /// Client connections open at once on one listener; beyond, new ones are closed at accept.
    pub max_connections: usize,
    /// Client connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Largest request head (HTTP/1.1 head, HTTP/2 header list); beyond: 431.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before we close its connection (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Time the apiserver has to answer a request that is not long-running with its response
    /// head; beyond: 504. What the apiserver treats as long-running (watches, logs, exec,
    /// attach, port-forward, proxy) has no deadline.
    pub request_timeout: Duration,
    /// Requests one user may have in flight at the apiserver at once (long-running ones count
    /// while open); beyond: 429.
    pub max_requests_in_flight_per_user: usize,
    /// Largest request body (but those of upgrades and proxied requests, which stream); beyond:
    /// 413.
    pub max_request_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 10_000,
            max_connections_per_client: 256,
            max_header_bytes: 64 * 1024,
            // The apiserver's own default, so watches behave as they would without us.
            max_concurrent_streams: 250,
            max_pending_accept_reset_streams: 20,
            // The apiserver's own --request-timeout.
            request_timeout: Duration::from_mins(1),
            max_requests_in_flight_per_user: 100,
            // Above the apiserver's own 3 MiB, so it is the apiserver that answers what it
            // would refuse anyway.
            max_request_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Room hyper may use to read an HTTP/1.1 connection (a head is bounded by
/// [`Limits::max_header_bytes`]; bodies stream through it).
const H1_READ_BUFFER: usize = 1024 * 1024;

/// How long an idle connection that was asked to close may take to do so.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How often the listener says that it refuses connections over its limits.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Tells connections to drain, and waits for them.
#[derive(Debug, Clone)]
pub struct Drain {
    signal: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self {
            signal: watch::channel(false).0,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Asks every connection to finish its requests and close, and waits up to `grace`.
    /// Returns the number of connections still open when the wait ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.signal.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open()
    }

    /// Waits until the drain starts.
    pub async fn started(&self) {
        let mut signal = self.signal.subscribe();
        let _ = signal.wait_for(|started| *started).await;
    }

    fn has_started(&self) -> bool {
        *self.signal.borrow()
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `handler` on `listener` until the drain starts.
pub async fn serve<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    drain: Drain,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut stop = drain.signal.subscribe();
    let admission = Arc::new(Admission::new(
        limits.max_connections,
        limits.max_connections_per_client,
    ));
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if drain.has_started() {
            break;
        }
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                // Closed before any TLS work.
                drop(tcp);
                refusals.count(refused, &admission, &limits);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        drain.open.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(Arc::clone(&drain.open));
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let stop = drain.signal.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            serve_connection(tls, admitted, peer, limits, stop, handler).await;
        });
    }
}

/// Connections refused at accept, said in a warning at most every [`REFUSAL_WARNING_EVERY`].
#[derive(Debug, Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<tokio::time::Instant>,
}

impl Refusals {
    fn count(&mut self, refused: Refused, admission: &Admission, limits: &Limits) {
        self.since_warning += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_warning
            .is_some_and(|last| now.duration_since(last) < REFUSAL_WARNING_EVERY)
        {
            return;
        }
        let (limit, which) = match refused {
            Refused::Total => (limits.max_connections, "--max-connections"),
            Refused::PerClient => (
                limits.max_connections_per_client,
                "--max-connections-per-client",
            ),
        };
        tracing::warn!(
            refused = self.since_warning,
            open = admission.open(),
            limit,
            "refusing new connections over the limit of {which}"
        );
        self.since_warning = 0;
        self.last_warning = Some(now);
    }
}

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
type Io = TokioIo<Conn<Tls>>;

async fn serve_connection<H, F>(
    tls: Tls,
    admitted: admission::Admitted,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(Activity::new());
    // HTTP/2 frames every message itself (and refuses `Transfer-Encoding`): only HTTP/1.1
    // needs its framing watched.
    let watcher = (!h2).then(|| HeadWatcher::new(Arc::clone(&activity), limits.max_header_bytes));
    let io = TokioIo::new(Conn::new(tls, admitted, watcher));
    if h2 {
        // Boxed: the connection task's future holds room for the larger of its branches, and
        // an HTTP/2 connection's state would otherwise be paid by every HTTP/1.1 connection.
        Box::pin(serve_h2(io, peer, limits, activity, stop, handler)).await;
    } else {
        serve_h1(io, peer, limits, activity, stop, handler).await;
    }
}

async fn serve_h2<H, F>(
    io: Io,
    peer: SocketAddr,
    limits: Limits,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // `map` wraps the handler's future without holding a second copy of it (an `async` block
    // here doubled the per-request future). hyper spawns each stream's future as a task of its
    // own, allocated per stream anyway, so it is not boxed again.
    let requests = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let (active, _) = requests.begin();
        let answer = futures_util::future::join(handler(request, peer), std::future::ready(active));
        futures_util::FutureExt::map(answer, answered)
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_mins(1))
        .adaptive_window(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(peer, result),
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(peer, connection.await);
        }
        () = activity.idle(limits.idle_timeout) => {
            tracing::debug!(%peer, "closing an idle HTTP/2 connection");
            // GOAWAY; with no stream open the connection ends at once.
            connection.as_mut().graceful_shutdown();
            closed_in_time(peer, tokio::time::timeout(IDLE_CLOSE_GRACE, connection).await);
        }
    }
}

/// A handler's answer as the `Result` hyper's services give, its body holding the request open
/// (a named function: a closure does not meet the body error's `'static` bound in higher-ranked
/// position; the request is carried beside the answer by `join` with a ready future for that).
#[allow(clippy::unnecessary_wraps)]
fn answered(
    (response, active): (Response<Body>, activity::ActiveRequest),
) -> Result<Response<activity::Tracked>, std::convert::Infallible> {
    Ok(tracked(response, active))
}

async fn serve_h1<H, F>(
    io: Io,
    peer: SocketAddr,
    limits: Limits,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // hyper's HTTP/1.1 server keeps room for one request future per connection from the
    // connection's start, and moves each request's future into it. Boxed, that room is a
    // pointer: an idle connection does not hold a request future's worth of memory, and a
    // request costs one allocation instead of a copy of the whole future.
    let requests = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let (active, index) = requests.begin();
        let answer = if requests.is_flagged(index) {
            Either::Left(Box::pin(smuggling_refused(peer)))
        } else {
            Either::Right(Box::pin(handler(request, peer)))
        };
        let answer = futures_util::future::join(answer, std::future::ready(active));
        futures_util::FutureExt::map(answer, answered)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(H1_READ_BUFFER.max(limits.max_header_bytes).max(8192));
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(peer, result),
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(peer, connection.await);
        }
        // hyper's header read timeout already closes a kept-alive connection that does not
        // start its next request in time; this is the same rule as HTTP/2's, for when the
        // header timeout is the longer.
        () = activity.idle(limits.idle_timeout) => {
            tracing::debug!(%peer, "closing an idle HTTP/1.1 connection");
            connection.as_mut().graceful_shutdown();
            closed_in_time(peer, tokio::time::timeout(IDLE_CLOSE_GRACE, connection).await);
        }
    }
}

/// The answer to a request with both `Content-Length` and `Transfer-Encoding`: 400, and the
/// connection closes after it (hyper closes it too), so nothing the client sent after the head
/// is read as anything.
// `async`: its future and the handler's are the two sides of one `Either`; a `Ready` there
// trips the compiler's higher-ranked lifetime check of the body's error type.
#[allow(clippy::unused_async)]
async fn smuggling_refused(peer: SocketAddr) -> Response<Body> {
    tracing::warn!(%peer, "refused a request with both Content-Length and Transfer-Encoding");
    let mut response = Refusal::BadRequest(
        "the request has both Content-Length and Transfer-Encoding; infra-proxy refuses such requests (RFC 9112, section 6.1)".to_owned(),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Logs how a connection asked to close because it was idle ended: by itself, or dropped.
fn closed_in_time(
    peer: SocketAddr,
    ended: Result<Result<(), hyper::Error>, tokio::time::error::Elapsed>,
) {
    if let Ok(result) = ended {
        log_end(peer, result);
    } else {
        tracing::debug!(%peer, "an idle connection did not close in time; dropped");
    }
}

/// Resolves once the drain has started (or the drain is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
