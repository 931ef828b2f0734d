//! The apiserver side: where requests go, with which credential, over which connections.
//!
//! Normal requests share a pool of HTTP/2 connections. The pool counts the streams open on each
//! connection (a watch holds its stream until it ends) and dials another connection when every
//! connection is at its limit, so thousands of open watches never queue other requests behind
//! a full connection. If the apiserver does not speak HTTP/2 the same pool holds HTTP/1.1
//! connections, one request at a time each. Upgrades (exec, attach, port-forward) always get a
//! dedicated HTTP/1.1 connection.
//!
//! The upstream never follows redirects (we relay responses as they are) and never uses
//! `HTTPS_PROXY`: it dials the apiserver's address itself.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The body type requests and responses travel with.
pub type Body = BoxBody<Bytes, hyper::Error>;

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
    H2(http2::SendRequest<Body>),
    H1(tokio::sync::Mutex<http1::SendRequest<Body>>),
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("h2", &matches!(self.sender, Sender::H2(_)))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl PooledConnection {
    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H2(s) => s.is_closed(),
            Sender::H1(s) => s.try_lock().is_ok_and(|s| s.is_closed()),
        }
    }

    fn capacity(&self, max: usize) -> usize {
        match self.sender {
            Sender::H2(_) => max,
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
    Request(#[source] hyper::Error),
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
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .adaptive_window(true)
                .handshake(io)
                .await
                .map_err(UpstreamError::Request)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/2 connection ended");
                }
            });
            Sender::H2(sender)
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(UpstreamError::Request)?;
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
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let slot = self.slot().await?;
        let response = match &slot.0.sender {
            Sender::H2(sender) => {
                *request.version_mut() = http::Version::HTTP_2;
                let mut sender = sender.clone();
                sender.send_request(request).await
            }
            Sender::H1(sender) => {
                *request.version_mut() = http::Version::HTTP_11;
                if let Some(authority) = self.base.authority()
                    && let Ok(host) = HeaderValue::from_str(authority.as_str())
                {
                    request.headers_mut().insert(http::header::HOST, host);
                }
                let mut sender = sender.lock().await;
                // A pooled HTTP/1.1 connection is handed out only when idle; wait for it to be
                // ready in case the previous response's end is still being read.
                sender.ready().await.map_err(UpstreamError::Request)?;
                sender.send_request(request).await
            }
        }
        .map_err(UpstreamError::Request)?;
        Ok(response.map(|body| {
            Holding {
                inner: body,
                _guard: slot,
            }
            .boxed()
        }))
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
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Request)
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
    body.boxed()
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
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
