//! infra-proxy's limits on clients, end to end over real TLS and real sockets: idle connections
//! close, connections over the caps are closed at accept, slow heads are cut, the apiserver has a
//! deadline, each user a number of requests in flight, heads and bodies a size; requests with
//! both `Content-Length` and `Transfer-Encoding` are refused; HTTP/1.1 requests reach the
//! apiserver in origin form; an audit log that cannot be written is counted, shown, and with
//! `--audit-fail closed` refuses requests.
//!
//! Each test starts its own proxy and stand-in apiserver on 127.0.0.1:0, with the limits it is
//! about set small. Timeouts bound hangs; where a test is about time, it says what it measures.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use infra_tests::certs;
use infra_tests::proxy::Harness;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

mod audit;
mod connections;
mod sizes;
mod upstream;
mod wire;

/// A guard against hangs.
const HANG: Duration = Duration::from_secs(20);

/// May edit the whole destination.
const EDITOR: &str = "carl@example.com";
/// May view it.
const VIEWER: &str = "suzie@example.com";

const POLICY: &str = "
grants:
  - user: carl@example.com
    role: edit
    resource: testing
  - user: suzie@example.com
    role: view
    resource: testing
";

type Tls = tokio_rustls::client::TlsStream<TcpStream>;
type ClientBody = UnsyncBoxBody<Bytes, Infallible>;

/// A TLS connection to the proxy offering `alpn`; fails when the proxy closes it first.
async fn try_connect(h: &Harness, alpn: &[u8]) -> std::io::Result<Tls> {
    let mut config = certs::client_config(&h.ca, None);
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(h.proxy.address).await?;
    tokio::time::timeout(
        HANG,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().expect("a DNS name"), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("the TLS handshake hung"))?
}

async fn connect(h: &Harness, alpn: &[u8]) -> Tls {
    try_connect(h, alpn).await.expect("TLS handshake")
}

/// An HTTP/2 connection to the proxy that pings it every 200 ms (and answers its pings), and
/// the task driving it, which ends when the connection closes.
async fn h2(
    h: &Harness,
) -> (
    hyper::client::conn::http2::SendRequest<ClientBody>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = connect(h, b"h2").await;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

/// An HTTP/1.1 connection to the proxy, and the task driving it.
async fn h1(
    h: &Harness,
) -> (
    hyper::client::conn::http1::SendRequest<ClientBody>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = connect(h, b"http/1.1").await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(connection))
}

/// A request of `user` (with a fresh token) to `path` on the proxy.
fn request(h: &Harness, method: &str, path: &str, user: &str) -> http::request::Builder {
    let token = h.token(user, &[], Duration::from_mins(5));
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {token}"))
}

fn get(h: &Harness, path: &str, user: &str) -> Request<ClientBody> {
    request(h, "GET", path, user)
        .body(empty())
        .expect("a valid request")
}

fn empty() -> ClientBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body the test sends piece by piece, and that stays open until the sender is dropped.
fn streamed() -> (tokio::sync::mpsc::Sender<Bytes>, ClientBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|data| (Ok::<_, Infallible>(hyper::body::Frame::data(data)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

/// The whole body, as text.
async fn text(response: Response<Incoming>) -> String {
    let body = tokio::time::timeout(HANG, response.into_body().collect())
        .await
        .expect("the body arrives")
        .expect("the body is readable")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The `Status` body of a refusal.
fn status_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

/// `n` characters that do not compress much (HPACK would shrink a run of one letter).
fn incompressible(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[usize::try_from(state % 62).expect("small")])
        })
        .collect()
}

/// A config map of `size` bytes of data, as JSON.
fn config_map(name: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"blob": incompressible(size)},
    }))
    .expect("JSON")
}
