//! The apiserver side: where requests go, with which credential, over which connections.
//!
//! Normal requests share a pool of HTTP/2 connections. The pool counts the streams open on each
//! connection (a watch holds its stream until it ends) and dials another connection when every
//! connection is at its limit, so thousands of open watches never queue other requests behind
//! a full connection. HTTP/2 is driven with the `h2` crate directly: the request's own task
//! opens the stream and awaits the response (hyper's HTTP/2 client would spawn a task and pass
//! a channel message per request, the largest cost of the hop after the kernel's). If the apiserver does not speak HTTP/2 the same pool holds HTTP/1.1
//! connections, one request at a time each. Upgrades (exec, attach, port-forward) always get a
//! dedicated HTTP/1.1 connection.
//!
//! The upstream never follows redirects (we relay responses as they are) and never uses
//! `HTTPS_PROXY`: it dials the apiserver's address itself.

use std::fmt;
use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The error a body fails with: hyper's (HTTP/1.1, the listener) or h2's (upstream HTTP/2).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests and responses travel with.
pub type Body = BoxBody<Bytes, BodyError>;

/// How the proxy authenticates to the apiserver, besides a client certificate in the TLS config.
#[derive(Clone)]
pub enum Credential {
    /// Only the client certificate (or nothing).
    None,
    /// A fixed bearer token.
    Token(HeaderValue),
    /// A token file that rotates (the service-account token): re-read when it changes.
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The current `Bearer ...` value.
        current: Arc<ArcSwapOption<HeaderValue>>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile { path, .. } => write!(f, "TokenFile({})", path.display()),
        }
    }
}

impl Credential {
    /// A credential from a token file, read once now (failing if unreadable) and again every
    /// `every` after.
    pub fn token_file(path: PathBuf, every: Duration) -> Result<Self> {
        let current = Arc::new(ArcSwapOption::from_pointee(read_token(&path)?));
        let (p, c) = (path.clone(), Arc::clone(&current));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match read_token(&p) {
                    Ok(value) => c.store(Some(Arc::new(value))),
                    Err(error) => {
                        tracing::warn!(path = %p.display(), error = format!("{error:#}"), "cannot re-read the upstream token; keeping the previous one");
                    }
                }
            }
        });
        Ok(Self::TokenFile { path, current })
    }

    /// The `Authorization` value to send, if any.
    pub fn header(&self) -> Option<Arc<HeaderValue>> {
        match self {
            Self::None => None,
            Self::Token(value) => Some(Arc::new(value.clone())),
            Self::TokenFile { current, .. } => current.load_full(),
        }
    }
}

fn read_token(path: &PathBuf) -> Result<HeaderValue> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    bearer(token.trim())
}

/// `Bearer <token>` as a sensitive header value.
pub fn bearer(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow!("the upstream token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Settings of the upstream connection pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Streams this proxy opens on one HTTP/2 connection before it dials another. Kept below
    /// the apiserver's own limit (Go's default is 250 per connection).
    pub max_streams_per_connection: usize,
    /// Time to connect (TCP and TLS).
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 100,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The apiserver.
pub struct Upstream {
    /// `https://host:port`, with no path.
    base: Uri,
    /// `host:port` to dial.
    address: String,
    server_name: ServerName<'static>,
    /// TLS with ALPN h2 and http/1.1, for pooled connections.
    pooled_tls: TlsConnector,
    /// TLS with ALPN http/1.1 only, for upgrades.
    upgrade_tls: TlsConnector,
    credential: Credential,
    /// The `Authorization` value of a fixed token, made once (requests share it).
    fixed_token: Option<Arc<HeaderValue>>,
    settings: PoolSettings,
    pool: Mutex<Vec<Arc<PooledConnection>>>,
    dialing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("address", &self.address)
            .field("credential", &self.credential)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct PooledConnection {
    sender: Sender,
    in_flight: AtomicUsize,
}

enum Sender {
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
struct StreamSlot(Arc<PooledConnection>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What went wrong talking to the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting (TCP or TLS) failed or timed out.
    #[error("cannot connect to the apiserver at {address}: {reason}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// The request failed on an established connection.
    #[error("the apiserver connection failed: {0}")]
    Request(#[source] BodyError),
}

impl From<hyper::Error> for UpstreamError {
    fn from(error: hyper::Error) -> Self {
        Self::Request(error.into())
    }
}

impl From<h2::Error> for UpstreamError {
    fn from(error: h2::Error) -> Self {
        Self::Request(error.into())
    }
}

impl Upstream {
    /// An upstream at `url` with `tls` (CA and client certificate already in it).
    pub fn new(
        url: &Uri,
        tls_server_name: Option<&str>,
        tls: ClientConfig,
        credential: Credential,
        settings: PoolSettings,
    ) -> Result<Self> {
        if url.scheme_str() != Some("https") {
            bail!("the apiserver URL {url} is not https");
        }
        let host = url
            .host()
            .ok_or_else(|| anyhow!("the apiserver URL {url} has no host"))?;
        let port = url.port_u16().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let address = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let name = tls_server_name.unwrap_or(bare).to_owned();
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| anyhow!("{name:?} is not a valid TLS server name"))?;
        let base = Uri::builder()
            .scheme("https")
            .authority(url.authority().map_or(host, |a| a.as_str()))
            .path_and_query("/")
            .build()
            .context("building the apiserver base URL")?;

        let mut pooled = tls.clone();
        pooled.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut upgrade = tls;
        upgrade.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(Self {
            base,
            address,
            server_name,
            pooled_tls: TlsConnector::from(Arc::new(pooled)),
            upgrade_tls: TlsConnector::from(Arc::new(upgrade)),
            fixed_token: match &credential {
                Credential::Token(_) => credential.header(),
                Credential::None | Credential::TokenFile { .. } => None,
            },
            credential,
            settings,
            pool: Mutex::new(Vec::new()),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    /// The credential to put on each request.
    pub fn credential(&self) -> Option<Arc<HeaderValue>> {
        match &self.credential {
            Credential::Token(_) => self.fixed_token.clone(),
            Credential::None | Credential::TokenFile { .. } => self.credential.header(),
        }
    }

    /// The absolute URI for a request path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        Ok(Uri::from_parts(parts)?)
    }

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

    async fn slot(&self) -> Result<StreamSlot, UpstreamError> {
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

    async fn connect_tls(
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

    /// Sends a normal (non-upgrade) request over the pool. The response body keeps its stream
    /// slot until it ends or is dropped; dropping it cancels the upstream request.
    ///
    /// A pooled HTTP/2 connection the apiserver has sent away (GOAWAY: it is shutting down, or
    /// rebalancing clients with `--goaway-chance`) refuses new streams before anything is sent,
    /// while its open watches go on; the request then goes to another connection, or a new one.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let mut attempts = 0;
        let (slot, ready) = loop {
            let slot = self.slot().await?;
            let Sender::H2 { sender, closed } = &slot.0.sender else {
                break (slot, None);
            };
            match sender.clone().ready().await {
                Ok(ready) => break (slot, Some(ready)),
                Err(error) => {
                    closed.store(true, Ordering::Release);
                    attempts += 1;
                    if attempts == 3 {
                        return Err(error.into());
                    }
                    tracing::debug!(%error, "the apiserver sent a pooled connection away; using another");
                }
            }
        };
        let response = match (&slot.0.sender, ready) {
            (Sender::H2 { closed, .. }, Some(ready)) => {
                *request.version_mut() = http::Version::HTTP_2;
                let response = send_h2(ready, request).await;
                if let Err(error) = &response
                    && (error.is_io() || error.is_go_away())
                {
                    closed.store(true, Ordering::Release);
                }
                Ok::<_, UpstreamError>(response?)
            }
            (Sender::H1(sender), _) => {
                *request.version_mut() = http::Version::HTTP_11;
                if let Some(authority) = self.base.authority()
                    && let Ok(host) = HeaderValue::from_str(authority.as_str())
                {
                    request.headers_mut().insert(http::header::HOST, host);
                }
                let mut sender = sender.lock().await;
                // A pooled HTTP/1.1 connection is handed out only when idle; wait for it to be
                // ready in case the previous response's end is still being read.
                sender.ready().await?;
                Ok(sender.send_request(request).await?.map(boxed))
            }
            // The loop above makes every HTTP/2 slot ready; never reached.
            (Sender::H2 { .. }, None) => Err(UpstreamError::Request(
                "an upstream HTTP/2 connection was not made ready".into(),
            )),
        }?;
        Ok(response.map(|body| with_guard(body, slot)))
    }

    /// Sends an upgrade request on a dedicated HTTP/1.1 connection. The caller splices only
    /// after a `101`.
    pub async fn send_upgrade(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        *request.version_mut() = http::Version::HTTP_11;
        if let Some(authority) = self.base.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let tls = self.connect_tls(&self.upgrade_tls).await?;
        let (mut sender, connection) = http1::Builder::new().handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        Ok(sender.send_request(request).await?)
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

/// Sends one request on a ready HTTP/2 connection handle from the calling task and awaits its
/// response head. A request body streams from a task of its own, within the stream's flow control.
async fn send_h2(
    mut sender: h2::client::SendRequest<Bytes>,
    request: Request<Body>,
) -> Result<Response<Body>, h2::Error> {
    let (parts, body) = request.into_parts();
    let end = body.is_end_stream();
    let (response, stream) = sender.send_request(Request::from_parts(parts, ()), end)?;
    if !end {
        tokio::spawn(pipe_body(body, stream));
    }
    let response = response.await?;
    Ok(response.map(|recv| {
        H2Body {
            recv,
            data_done: false,
        }
        .boxed()
    }))
}

/// Copies a request body into its HTTP/2 stream as the stream's window allows. Ends the
/// stream when the body ends; resets it when the body fails (the client went away); stops
/// when the apiserver resets the stream.
async fn pipe_body(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _reset = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "request body failed: resetting the upstream stream");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    while !data.is_empty() {
                        stream.reserve_capacity(data.len());
                        match poll_fn(|cx| stream.poll_capacity(cx)).await {
                            Some(Ok(0)) => {}
                            Some(Ok(granted)) => {
                                let chunk = data.split_to(granted.min(data.len()));
                                if stream.send_data(chunk, false).is_err() {
                                    return;
                                }
                            }
                            Some(Err(_)) | None => return,
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                        return;
                    }
                }
            },
        }
    }
}

/// An upstream HTTP/2 response body. Each chunk handed on gives its bytes of window back to
/// the apiserver, so a slow client slows the apiserver's stream (and nothing else).
struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The apiserver connection settings of a kubeconfig (path and context) or, with neither, of
/// the in-cluster service account.
pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: context.map(str::to_owned),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig given and not running in a cluster (no service account found)",
        )?,
    })
}

/// Loads the apiserver connection from a kubeconfig (path and context) or, with neither, the
/// in-cluster service account.
pub async fn from_kube(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
    settings: PoolSettings,
) -> Result<Upstream> {
    use kube::client::ConfigExt as _;

    let config = kube_config(kubeconfig, context).await?;
    let tls = config
        .rustls_client_config()
        .context("building TLS settings for the apiserver")?;
    let auth = &config.auth_info;
    let credential = if let Some(file) = &auth.token_file {
        Credential::token_file(PathBuf::from(file), Duration::from_mins(1))?
    } else if let Some(token) = &auth.token {
        use secrecy::ExposeSecret as _;
        Credential::Token(bearer(token.expose_secret())?)
    } else if auth.exec.is_some() || auth.auth_provider.is_some() {
        bail!(
            "the kubeconfig user authenticates with an exec plugin or auth provider; infra-proxy needs a client certificate, a token or a token file for the apiserver"
        );
    } else {
        Credential::None
    };
    Upstream::new(
        &config.cluster_url,
        config.tls_server_name.as_deref(),
        tls,
        credential,
        settings,
    )
}

/// A body that is all here.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Any hyper body, boxed.
pub fn boxed(body: Incoming) -> Body {
    body.map_err(BodyError::from).boxed()
}

/// A body that holds `guard` until it ends or is dropped.
pub fn with_guard<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Holding {
        inner: body,
        _guard: guard,
    }
    .boxed()
}

/// A body that holds a guard (a pool slot, a gauge) until it ends or is dropped.
struct Holding<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> hyper::body::Body for Holding<B, G>
where
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service-account token rotates on disk; the credential follows it.
    #[tokio::test(start_paused = true)]
    async fn a_rotated_token_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("infra-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, "first\n").expect("write");
        let credential =
            Credential::token_file(path.clone(), Duration::from_mins(1)).expect("readable");
        let value = |c: &Credential| {
            c.header()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .expect("a value")
        };
        assert_eq!(value(&credential), "Bearer first");

        std::fs::write(&path, "second\n").expect("write");
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(value(&credential), "Bearer second");

        // An unreadable file keeps the last good token.
        std::fs::remove_file(&path).expect("remove");
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(value(&credential), "Bearer second");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn credentials_never_print_their_token() {
        let credential = Credential::Token(bearer("s3cr3t").expect("header"));
        assert!(!format!("{credential:?}").contains("s3cr3t"));
    }
}
