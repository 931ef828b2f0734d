//! The pool of apiserver connections: dialling (TCP, TLS, then an HTTP/2 or HTTP/1.1
//! handshake), keeping HTTP/2 connections alive with pings, and handing out stream slots.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Body, Upstream, UpstreamError};

/// One pooled connection and the streams open on it.
pub(super) struct PooledConnection {
    pub(super) sender: Sender,
    in_flight: AtomicUsize,
}

/// A pooled connection's request handle.
pub(super) enum Sender {
    H2 {
        sender: h2::client::SendRequest<Bytes>,
        /// Set when the connection's task ends (the socket closed, a GOAWAY drained, a ping
        /// unanswered) or a request on it fails at the connection level.
        closed: Arc<AtomicBool>,
    },
    H1(tokio::sync::Mutex<http1::SendRequest<Body>>),
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("h2", &matches!(self.sender, Sender::H2 { .. }))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl PooledConnection {
    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H2 { closed, .. } => closed.load(Ordering::Acquire),
            Sender::H1(s) => s.try_lock().is_ok_and(|s| s.is_closed()),
        }
    }

    fn capacity(&self, max: usize) -> usize {
        match self.sender {
            Sender::H2 { .. } => max,
            Sender::H1(_) => 1,
        }
    }
}

/// Marks one stream in use on a pooled connection until dropped.
pub(super) struct StreamSlot(pub(super) Arc<PooledConnection>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Receive window of each upstream HTTP/2 stream (hyper's client default).
const H2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Receive window of a whole upstream HTTP/2 connection (hyper's client default).
const H2_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Bytes of request body buffered per stream before the sender waits (hyper's default).
const H2_MAX_SEND_BUFFER: usize = 1024 * 1024;
/// How often an upstream HTTP/2 connection is pinged, and how long an answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Pings the apiserver every [`H2_PING_INTERVAL`]; returns when a ping goes unanswered for
/// [`H2_PING_TIMEOUT`] (the connection is then dropped, failing its streams), and never while
/// the connection answers. Without a ping handle (h2 gives it once) it never returns.
async fn keep_alive(ping: Option<h2::PingPong>) {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(H2_PING_INTERVAL).await;
        match tokio::time::timeout(H2_PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection failed: its own future reports that.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_elapsed) => return,
        }
    }
}

impl Upstream {
    /// The number of pooled connections (for metrics and tests).
    pub fn pooled_connections(&self) -> usize {
        self.lock_pool().len()
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Arc<PooledConnection>>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_slot(&self) -> Option<StreamSlot> {
        let mut pool = self.lock_pool();
        pool.retain(|c| !c.is_closed());
        let max = self.settings.max_streams_per_connection;
        let best = pool
            .iter()
            .filter(|c| c.in_flight.load(Ordering::Acquire) < c.capacity(max))
            .min_by_key(|c| c.in_flight.load(Ordering::Acquire))?;
        best.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(StreamSlot(Arc::clone(best)))
    }

    pub(super) async fn slot(&self) -> Result<StreamSlot, UpstreamError> {
        if let Some(slot) = self.take_slot() {
            return Ok(slot);
        }
        // One dial at a time: whoever waited here re-checks the pool first.
        let _dialing = self.dialing.lock().await;
        if let Some(slot) = self.take_slot() {
            return Ok(slot);
        }
        // Dialling is rare; boxing it keeps every request's future small.
        let connection = Arc::new(Box::pin(self.dial_pooled()).await?);
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        self.lock_pool().push(Arc::clone(&connection));
        Ok(StreamSlot(connection))
    }

    pub(super) async fn connect_tls(
        &self,
        tls: &TlsConnector,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let address = self.address.clone();
        let fail = |reason: String| UpstreamError::Connect {
            address: address.clone(),
            reason,
        };
        let connect = async {
            let tcp = TcpStream::connect(&self.address)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
            tls.connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| fail(e.to_string()))
        };
        tokio::time::timeout(self.settings.connect_timeout, connect)
            .await
            .map_err(|_| fail("timed out".to_owned()))?
    }

    async fn dial_pooled(&self) -> Result<PooledConnection, UpstreamError> {
        let tls = self.connect_tls(&self.pooled_tls).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let sender = if h2 {
            let (sender, mut connection) = h2::client::Builder::new()
                .enable_push(false)
                .initial_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .max_send_buffer_size(H2_MAX_SEND_BUFFER)
                .handshake::<_, Bytes>(tls)
                .await?;
            let closed = Arc::new(AtomicBool::new(false));
            let ping = connection.ping_pong();
            let ended = Arc::clone(&closed);
            tokio::spawn(async move {
                let alive = keep_alive(ping);
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "upstream HTTP/2 connection ended");
                        }
                    }
                    () = alive => {
                        tracing::warn!("the apiserver did not answer a ping within {} s: closing the connection", H2_PING_TIMEOUT.as_secs());
                    }
                }
                ended.store(true, Ordering::Release);
            });
            Sender::H2 { sender, closed }
        } else {
            let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/1.1 connection ended");
                }
            });
            Sender::H1(tokio::sync::Mutex::new(sender))
        };
        tracing::debug!(address = %self.address, h2, "dialled the apiserver");
        Ok(PooledConnection {
            sender,
            in_flight: AtomicUsize::new(0),
        })
    }
}
