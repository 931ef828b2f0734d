//! The upstream: a minimal, fast stand-in for kube-apiserver, so the upstream is never what
//! limits a run. TLS with ALPN `h2` and `http/1.1`; every request gets the same small pod list,
//! except a watch (`watch=true` in the query), which gets its headers and then nothing, ever.
//! It checks nothing: no credential, no impersonation headers.
//!
//! It runs as its own process (`load upstream ...`) so its CPU time is counted apart from the
//! load client's and the proxy's. It prints `listening <address>` on stdout, and exits when its
//! standard input closes, so it never outlives the harness that started it.

use std::convert::Infallible;
use std::io::Read as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The answer to every list: a one-pod `PodList`, about 400 bytes, as a small list would be.
const POD_LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1000"},"items":[{"metadata":{"name":"web-5d4f8b7c9-abcde","namespace":"default","uid":"6f1c2a9e-1111-4a3b-9c0d-000000000001","resourceVersion":"999","creationTimestamp":"2025-01-01T00:00:00Z","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:1.27"}],"nodeName":"node-1"},"status":{"phase":"Running","podIP":"10.0.0.7"}}]}"#;

/// Streams one HTTP/2 connection may carry: the proxy spreads 10,000 watches over its pool
/// (100 streams a connection by default), and a direct client may open more.
const MAX_STREAMS: u32 = 1_000;

/// A large list (`GET /api/v1/pods`, all namespaces) of at least `bytes`: the same pod, renamed,
/// as many times as it takes.
fn bulk_list(bytes: usize) -> Bytes {
    let pod = r#"{"metadata":{"name":"web-5d4f8b7c9-NNNNNNNN","namespace":"default","uid":"6f1c2a9e-1111-4a3b-9c0d-000000000001","resourceVersion":"999","creationTimestamp":"2025-01-01T00:00:00Z","labels":{"app":"web","tier":"frontend"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-01-01T00:00:00Z"}},"spec":{"containers":[{"name":"web","image":"nginx:1.27","ports":[{"containerPort":80,"protocol":"TCP"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}}],"nodeName":"node-1"},"status":{"phase":"Running","podIP":"10.0.0.7"}}"#;
    let mut out = String::with_capacity(bytes + pod.len() + 200);
    out.push_str(
        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1000"},"items":["#,
    );
    let mut i = 0_u64;
    while out.len() < bytes {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&pod.replace("NNNNNNNN", &format!("{i:08}")));
        i += 1;
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// Serves until standard input closes; `GET` of [`crate::client::BULK_PATH`] answers a list of
/// at least `bulk_bytes`.
pub fn run(cert: &Path, key: &Path, threads: usize, bulk_bytes: usize) -> Result<()> {
    let tls = TlsAcceptor::from(crate::pki::server_config(cert, key)?);
    // The harness holds our stdin open; when it goes (it ended, or it died), so do we.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0_u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the upstream runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let address = listener.local_addr().context("the listener's address")?;
        announce(&format!("listening {address}"));
        let body = Bytes::from_static(POD_LIST.as_bytes());
        let bulk = bulk_list(bulk_bytes);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors and the like: let the peer retry.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let body = body.clone();
            let bulk = bulk.clone();
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(stream);
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = if request.uri().path() == crate::client::BULK_PATH {
                        bulk.clone()
                    } else {
                        body.clone()
                    };
                    async move { Ok::<_, Infallible>(answer(&request, body)) }
                });
                // A connection's end (the peer closed it) is not news.
                if h2 {
                    let _ = http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(MAX_STREAMS)
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = http1::Builder::new().serve_connection(io, service).await;
                }
            });
        }
    })
}

#[allow(
    clippy::print_stdout,
    reason = "the harness reads the upstream's address from its stdout"
)]
fn announce(line: &str) {
    println!("{line}");
}

type Reply = Either<Full<Bytes>, Forever>;

fn answer(request: &Request<Incoming>, body: Bytes) -> Response<Reply> {
    let watch = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let body = if watch {
        Either::Right(Forever)
    } else {
        Either::Left(Full::new(body))
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A watch's body: open, and never a byte more.
#[derive(Debug)]
pub struct Forever;

impl hyper::body::Body for Forever {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
