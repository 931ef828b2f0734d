//! The TLS listener: accept, handshake with a deadline, serve HTTP/1.1 or HTTP/2 by ALPN, and
//! drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::upstream::Body;

/// Limits that protect the listener from slow or abusive clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before we close its connection (rapid reset).
    pub max_pending_accept_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 1024 * 1024,
            // The apiserver's own default, so watches behave as they would without us.
            max_concurrent_streams: 250,
            max_pending_accept_reset_streams: 20,
        }
    }
}

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

    fn started(&self) -> bool {
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
        if drain.started() {
            break;
        }
        let _ = tcp.set_nodelay(true);
        drain.open.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(Arc::clone(&drain.open));
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let stop = drain.signal.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            serve_connection(tcp, peer, acceptor, limits, stop, handler).await;
        });
    }
}

async fn serve_connection<H, F>(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    limits: Limits,
    stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
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
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        // Boxed: the connection task's future holds room for the larger of its branches, and
        // an HTTP/2 connection's state would otherwise be paid by every HTTP/1.1 connection.
        Box::pin(serve_h2(io, peer, limits, stop, handler)).await;
    } else {
        serve_h1(io, peer, limits, stop, handler).await;
    }
}

type Io = TokioIo<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

async fn serve_h2<H, F>(
    io: Io,
    peer: SocketAddr,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // `map` wraps the handler's future without holding a second copy of it (an `async` block
    // here doubled the per-request future). hyper spawns each stream's future as a task of its
    // own, allocated per stream anyway, so it is not boxed again.
    let service =
        service_fn(move |request| futures_util::FutureExt::map(handler(request, peer), infallible));
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
    }
}

/// A handler's answer as the `Result` hyper's services give (a named function: the closure
/// `Ok` does not meet the body error's `'static` bound in higher-ranked position).
#[allow(clippy::unnecessary_wraps)]
fn infallible(response: Response<Body>) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(response)
}

async fn serve_h1<H, F>(
    io: Io,
    peer: SocketAddr,
    limits: Limits,
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
    let service = service_fn(move |request| {
        futures_util::FutureExt::map(Box::pin(handler(request, peer)), infallible)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(peer, result),
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(peer, connection.await);
        }
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
