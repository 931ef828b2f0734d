//! Stand-ins for what the control plane calls out to about access requests, over real TLS (a
//! test CA the control plane is told to trust):
//!
//! - a **webhook receiver** and a **Slack incoming webhook**: record every POST (headers and
//!   body) and answer the statuses they are scripted to (then 200), as a receiver that is down
//!   for a while does;
//! - **PagerDuty's REST API v2** `GET /oncalls`: answers the documented response shape
//!   (`{"oncalls": [{"user": {..., "email": ...}, "schedule": {...}, "escalation_level": 1,
//!   ...}], "limit", "offset", "more", "total"}`, users expanded by `include[]=users`) for
//!   whoever the test puts on call, and refuses a request without the API token
//!   (`Authorization: Token token=<token>`) with 401 as PagerDuty does.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

use crate::certs::{Ca, server_config};

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// The headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    failures: Vec<(String, VecDeque<u16>)>,
    on_call: Vec<String>,
    token: String,
}

/// The stand-in server.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Hooks {
    /// Starts serving HTTPS with a certificate of `ca` for `localhost` and `127.0.0.1`;
    /// `token` is the PagerDuty API token it expects.
    pub async fn start(ca: &Ca, token: &str) -> Self {
        crate::certs::init_crypto();
        let mut config = server_config(&ca.localhost_cert(), None);
        // This stand-in speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, hyper::Error>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    /// The URL of `path` here.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// The next `n` POSTs to `path` are answered `status` (a receiver that is down).
    pub fn fail_next(&self, path: &str, n: usize, status: u16) {
        let mut state = self.state.lock().expect("lock");
        state
            .failures
            .push((path.to_owned(), std::iter::repeat_n(status, n).collect()));
    }

    /// Who is on call now (email addresses).
    pub fn set_on_call(&self, emails: &[&str]) {
        self.state.lock().expect("lock").on_call = emails.iter().map(|e| (*e).to_owned()).collect();
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }
}

fn respond(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

async fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let received = Received {
        method,
        uri,
        headers,
        body,
    };
    let mut state = state.lock().expect("lock");
    state.received.push(received.clone());
    if received.method == "GET" && received.uri.starts_with("/oncalls") {
        let expected = format!("Token token={}", state.token);
        if received.header("authorization") != Some(expected.as_str()) {
            return respond(
                401,
                r#"{"error":{"message":"Unauthorized","code":2006}}"#.to_owned(),
            );
        }
        let oncalls: Vec<serde_json::Value> = state
            .on_call
            .iter()
            .enumerate()
            .map(|(i, email)| {
                serde_json::json!({
                    "escalation_policy": {"id": "PEP0001", "type": "escalation_policy_reference", "summary": "Primary"},
                    "escalation_level": 1,
                    "schedule": {"id": "P123ABC", "type": "schedule_reference", "summary": "Primary on-call"},
                    "user": {
                        "id": format!("PUSR{i:03}"),
                        "type": "user",
                        "summary": email,
                        "name": email,
                        "email": email,
                        "self": format!("https://api.pagerduty.com/users/PUSR{i:03}"),
                        "html_url": format!("https://example.pagerduty.com/users/PUSR{i:03}")
                    },
                    "start": "2026-12-07T00:00:00Z",
                    "end": "2026-12-08T00:00:00Z"
                })
            })
            .collect();
        let total = oncalls.len();
        return respond(
            200,
            serde_json::json!({
                "oncalls": oncalls, "limit": 100, "offset": 0, "more": false, "total": total
            })
            .to_string(),
        );
    }
    let status = state
        .failures
        .iter_mut()
        .find(|(path, _)| *path == received.uri)
        .and_then(|(_, queue)| queue.pop_front())
        .unwrap_or(200);
    respond(status, "{}".to_owned())
}
