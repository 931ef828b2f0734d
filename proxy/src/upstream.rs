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
//!
//! The parts: the body type (`upstream/body.rs`), the credential (`upstream/credential.rs`),
//! loading from a kubeconfig (`upstream/kubeconfig.rs`), the connection pool
//! (`upstream/pool.rs`) and the sending of requests (`upstream/send.rs`).

mod body;
mod credential;
mod kubeconfig;
mod pool;
mod send;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http::{HeaderValue, Uri};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use body::{Body, BodyError, TooLarge, boxed, empty, full, limited, with_guard};
pub use credential::{Credential, bearer};
pub use kubeconfig::{from_kube, kube_config};

use pool::PooledConnection;

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
}
