//! The load client: hyper over tokio-rustls, keep-alive, every request with the bearer token.
//! The same client, with the same requests, measures the proxy and the upstream direct.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The request every cell sends: a namespaced list, as `kubectl get pods` does.
pub const PATH: &str = "/api/v1/namespaces/default/pods";

/// The bulk cells' request: all pods of all namespaces, a large list (`--bulk-mib`).
pub const BULK_PATH: &str = "/api/v1/pods";

/// HTTP/1.1 or HTTP/2 (chosen by ALPN, one protocol offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1: one request at a time per connection.
    Http1,
    /// HTTP/2: many streams on one connection.
    Http2,
}

impl Protocol {
    /// The ALPN name.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::Http1 => b"http/1.1",
            Self::Http2 => b"h2",
        }
    }

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// Where a cell sends its requests, and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address to dial.
    pub address: SocketAddr,
    /// TLS, with the protocol's ALPN.
    pub tls: Arc<ClientConfig>,
    /// The protocol.
    pub protocol: Protocol,
    /// `Bearer <token>`.
    pub authorization: HeaderValue,
}

/// One connection's request sender.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1: one request at a time, one task owns it.
    Http1(http1::SendRequest<Empty<Bytes>>),
    /// HTTP/2: each stream's task holds a clone.
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Target {
    /// Dials one connection.
    pub async fn connect(&self) -> Result<Sender> {
        let tcp = TcpStream::connect(self.address)
            .await
            .with_context(|| format!("connecting to {}", self.address))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let name = ServerName::try_from("localhost").context("server name")?;
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.address))?;
        let io = TokioIo::new(tls);
        match self.protocol {
            Protocol::Http1 => {
                let (sender, connection) =
                    http1::handshake(io).await.context("HTTP/1.1 handshake")?;
                tokio::spawn(connection);
                Ok(Sender::Http1(sender))
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .context("HTTP/2 handshake")?;
                tokio::spawn(connection);
                Ok(Sender::Http2(sender))
            }
        }
    }

    /// A request for `path_and_query` with the token.
    pub fn request(&self, path_and_query: &str) -> Result<Request<Empty<Bytes>>> {
        let builder = match self.protocol {
            // Origin form and a Host header, as kubectl sends over HTTP/1.1.
            Protocol::Http1 => Request::get(path_and_query).header(header::HOST, "localhost"),
            // HTTP/2 carries the authority in the URI (`:authority`).
            Protocol::Http2 => Request::get(
                Uri::builder()
                    .scheme("https")
                    .authority(format!("localhost:{}", self.address.port()))
                    .path_and_query(path_and_query)
                    .build()
                    .context("request URI")?,
            ),
        };
        builder
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .context("building the request")
    }
}

impl Sender {
    /// Another sender on the same connection, for one more concurrent stream (HTTP/2 only).
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::Http1(_) => None,
            Self::Http2(sender) => Some(Self::Http2(sender.clone())),
        }
    }

    /// Sends one request and waits for its response head.
    pub async fn send(&mut self, request: Request<Empty<Bytes>>) -> Result<Response<Incoming>> {
        match self {
            Self::Http1(sender) => {
                sender.ready().await.context("connection closed")?;
                sender.send_request(request).await.context("request failed")
            }
            Self::Http2(sender) => {
                sender.ready().await.context("connection closed")?;
                sender.send_request(request).await.context("request failed")
            }
        }
    }
}

/// What one worker measured.
#[derive(Debug, Default)]
pub struct WorkerResult {
    /// Latencies (ns) of requests started and finished inside the measured window.
    pub latencies: Vec<u64>,
    /// Body bytes of those requests.
    pub bytes: u64,
    /// Requests that failed or answered other than 200.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

/// Sends requests back to back on `sender` until `end`; keeps the latencies of those that ran
/// wholly inside `[measure_from, end]`.
pub async fn worker(
    target: Arc<Target>,
    path: &'static str,
    mut sender: Sender,
    measure_from: Instant,
    end: Instant,
) -> WorkerResult {
    let mut result = WorkerResult {
        latencies: Vec::with_capacity(200_000),
        ..WorkerResult::default()
    };
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        match one(&target, path, &mut sender).await {
            Ok(bytes) => {
                let finished = Instant::now();
                if started >= measure_from && finished <= end {
                    result.bytes += bytes;
                    let nanos = finished.duration_since(started).as_nanos();
                    result
                        .latencies
                        .push(u64::try_from(nanos).unwrap_or(u64::MAX));
                }
            }
            Err(error) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(format!("{error:#}"));
                }
                // A broken connection fails at once and for good: do not spin on it.
                if result.errors > 100 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}

/// One request; the body's length. The body is read frame by frame and not kept (a bulk
/// list is many MiB).
async fn one(target: &Target, path: &str, sender: &mut Sender) -> Result<u64> {
    let response = sender.send(target.request(path)?).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = 0_u64;
    let mut start = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the body")?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            if status != StatusCode::OK && start.len() < 200 {
                start.extend_from_slice(&data[..data.len().min(200)]);
            }
        }
    }
    if status != StatusCode::OK {
        bail!("answered {status}: {}", String::from_utf8_lossy(&start));
    }
    Ok(bytes)
}

/// An open watch: its connection and its response, whose body is never read.
#[derive(Debug)]
pub struct OpenWatch {
    _sender: Sender,
    _response: Response<Incoming>,
}

/// Starts a watch on `sender`'s connection and waits for its response head.
pub async fn start_watch(target: &Target, mut sender: Sender) -> Result<OpenWatch> {
    let response = sender
        .send(target.request(&format!("{PATH}?watch=true"))?)
        .await?;
    if response.status() != StatusCode::OK {
        bail!("the watch answered {}", response.status());
    }
    Ok(OpenWatch {
        _sender: sender,
        _response: response,
    })
}
