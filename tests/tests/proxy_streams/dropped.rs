//! A client that goes away: its watch ends upstream.

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infra_tests::certs;
use infra_tests::proxy::Harness;

use crate::{EDITOR, EDITOR_GROUPS, HANG, TOKEN_TTL, pod, start, streams};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client(h: &Harness, http2: bool) -> HttpsClient {
    let mut config = certs::client_config(&h.ca, None);
    // hyper-rustls sets ALPN itself, from the versions enabled.
    config.alpn_protocols.clear();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.build()
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A raw watch through the proxy ends at the apiserver when its client drops it: on HTTP/2 by
/// resetting the stream (the connection stays up), on HTTP/1.1 by closing the connection.
async fn a_dropped_watch_ends_upstream(http2: bool) {
    let h = start().await;
    let client = client(&h, http2);
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    let response = tokio::time::timeout(
        HANG,
        client.request(
            Request::get(format!(
                "{}/api/v1/namespaces/default/pods?watch=true",
                h.url()
            ))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .expect("a valid request"),
        ),
    )
    .await
    .expect("the proxy answers")
    .expect("the watch starts");
    assert_eq!(response.status(), StatusCode::OK);
    let expected = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    assert_eq!(response.version(), expected);
    streams(&h.standin, "the watch reaches the apiserver", |s| {
        s.watches == 1
    })
    .await;

    h.standin.create(pod("second")).expect("created");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while !String::from_utf8_lossy(&buffer).contains("\"second\"") {
        let frame = tokio::time::timeout(HANG, body.frame())
            .await
            .expect("the event arrives")
            .expect("the watch is open")
            .expect("the watch stays up");
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }

    drop(body);
    streams(&h.standin, "the watch ends when its client drops it", |s| {
        s.watches == 0
    })
    .await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_http2_watch_ends_upstream() {
    a_dropped_watch_ends_upstream(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_http1_watch_ends_upstream() {
    a_dropped_watch_ends_upstream(false).await;
}
