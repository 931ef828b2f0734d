//! The stand-in apiserver on its own: its wire formats, checked with a plain HTTP client and
//! with the real kubectl, before the proxy sits in between.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infra_tests::apiserver::StandIn;
use infra_tests::certs::IssuedCert;
use infra_tests::kubectl::{Credentials, Kubectl};
use serde_json::{Value, json};

mod api;
mod streams;
mod with_kubectl;

const TOKEN: &str = "stand-in-test-token";

/// Long enough for anything that works, short enough that a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that speaks HTTP/2 (ALPN `h2`, as kubectl does).
fn client(standin: &StandIn, cert: Option<&IssuedCert>) -> HttpsClient {
    let mut config = standin.client_config(cert);
    // hyper-rustls sets ALPN itself, from the versions enabled below.
    config.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A client that speaks HTTP/1.1 only.
fn http1_client(standin: &StandIn) -> HttpsClient {
    let mut config = standin.client_config(None);
    config.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

fn request(standin: &StandIn, method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("{}{path}", standin.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
}

async fn send(
    client: &HttpsClient,
    request: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Value) {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the stand-in answers")
        .expect("the request reaches the stand-in");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives")
        .to_bytes();
    let value =
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    (status, headers, value)
}

fn json_body(value: &Value) -> Full<Bytes> {
    Full::new(Bytes::from(
        serde_json::to_vec(value).expect("JSON serializes"),
    ))
}

async fn start() -> StandIn {
    StandIn::builder().bearer_token(TOKEN).start().await
}

fn kubectl(standin: &StandIn) -> Kubectl {
    Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::Token(TOKEN.to_owned()),
    )
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
    })
}
