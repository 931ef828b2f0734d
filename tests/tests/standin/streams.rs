//! Over HTTP: watches, followed logs, shutdown, and exec upgrades.

use std::fmt::Write as _;

use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use infra_tests::apiserver::StandIn;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{HttpsClient, PATIENCE, TOKEN, client, http1_client, pod, request, send, start};

/// Reads one newline-terminated watch event from a response body.
struct Lines {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl Lines {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("each line is JSON"));
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("the next event arrives")?
                .expect("the stream stays up");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

async fn watch_events(client: &HttpsClient, standin: &StandIn, query: &str) -> Lines {
    let response = client
        .request(
            request(
                standin,
                Method::GET,
                &format!("/api/v1/namespaces/default/pods?{query}"),
            )
            .body(Full::default())
            .expect("valid"),
        )
        .await
        .expect("the watch starts");
    assert_eq!(response.status(), StatusCode::OK);
    Lines {
        body: response.into_body(),
        buffer: Vec::new(),
    }
}

#[tokio::test]
async fn a_watch_streams_changes_and_ends_when_its_client_goes_away() {
    let standin = start().await;
    let existing = standin.create(pod("first")).expect("created");
    let client = client(&standin, None);

    let mut events = watch_events(&client, &standin, "watch=true&labelSelector=app%3Dweb").await;
    let event = events.next().await.expect("the current pod");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "first");
    assert_eq!(event["object"]["kind"], "Pod");
    standin.wait_for_streams(|s| s.watches == 1).await;

    standin.create(pod("second")).expect("created");
    let event = events.next().await.expect("the new pod");
    assert_eq!(
        (
            event["type"].as_str(),
            event["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("second"))
    );

    // Leaving the selector is a DELETED for this watch.
    let mut relabelled = pod("second");
    relabelled["metadata"]["labels"] = json!({"app": "db"});
    standin.apply(relabelled).expect("updated");
    let event = events.next().await.expect("the change");
    assert_eq!(event["type"], "DELETED");

    // A watch from a version replays only what came after it.
    let version = existing["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_owned();
    let mut resumed = watch_events(
        &client,
        &standin,
        &format!("watch=1&resourceVersion={version}"),
    )
    .await;
    let event = resumed.next().await.expect("a replayed change");
    assert_eq!(event["object"]["metadata"]["name"], "second");
    assert_eq!(event["type"], "ADDED");
    let event = resumed.next().await.expect("a replayed change");
    assert_eq!(event["type"], "MODIFIED");

    drop(events);
    drop(resumed);
    tokio::time::timeout(PATIENCE, standin.wait_for_streams(|s| s.watches == 0))
        .await
        .expect("both watches end when their client goes away");
}

#[tokio::test]
async fn an_http1_watch_is_chunked_and_ends_when_its_client_goes_away() {
    let standin = start().await;
    let client = http1_client(&standin);
    let response = client
        .request(
            request(
                &standin,
                Method::GET,
                "/api/v1/namespaces/default/pods?watch=true",
            )
            .body(Full::default())
            .expect("valid"),
        )
        .await
        .expect("the watch starts");
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut events = Lines {
        body: response.into_body(),
        buffer: Vec::new(),
    };
    standin.wait_for_streams(|s| s.watches == 1).await;
    standin.create(pod("web")).expect("created");
    let event = events.next().await.expect("the new pod");
    assert_eq!(event["type"], "ADDED");
    let recorded = standin
        .wait_for_request(|r| r.query() == Some("watch=true"))
        .await;
    assert_eq!(recorded.version, http::Version::HTTP_11);

    drop(events);
    drop(client);
    tokio::time::timeout(PATIENCE, standin.wait_for_streams(|s| s.watches == 0))
        .await
        .expect("the watch ends when its client goes away");
}

#[tokio::test]
async fn shutdown_closes_connections_and_ends_streams() {
    let standin = start().await;
    standin.create(pod("web")).expect("created");
    let client = client(&standin, None);
    let mut events = watch_events(&client, &standin, "watch=true").await;
    events.next().await.expect("the current pod");
    let response = client
        .request(
            request(
                &standin,
                Method::GET,
                "/api/v1/namespaces/default/pods/web/log?follow=true",
            )
            .body(Full::default())
            .expect("valid"),
        )
        .await
        .expect("the follow starts");
    standin
        .wait_for_streams(|s| s.watches == 1 && s.log_follows == 1)
        .await;

    tokio::time::timeout(PATIENCE, standin.shutdown())
        .await
        .expect("shutdown finishes");
    tokio::time::timeout(
        PATIENCE,
        standin.wait_for_streams(|s| s.watches == 0 && s.log_follows == 0),
    )
    .await
    .expect("the streams end with their connections");
    let ended = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("the client sees the end");
    assert!(ended.is_err(), "the stream was cut, not completed");
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout_seconds() {
    let standin = start().await;
    let client = client(&standin, None);
    let mut events = watch_events(&client, &standin, "watch=true&timeoutSeconds=1").await;
    assert!(
        events.next().await.is_none(),
        "the stream ends without events"
    );
}

#[tokio::test]
async fn following_logs_streams_pushed_lines() {
    let standin = start().await;
    standin.create(pod("web")).expect("created");
    standin.push_log("default", "web", "one");
    let client = client(&standin, None);
    let (status, headers, body) = send(
        &client,
        request(
            &standin,
            Method::GET,
            "/api/v1/namespaces/default/pods/web/log",
        )
        .body(Full::default())
        .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, json!("one\n"));

    let response = client
        .request(
            request(
                &standin,
                Method::GET,
                "/api/v1/namespaces/default/pods/web/log?follow=true",
            )
            .body(Full::default())
            .expect("valid"),
        )
        .await
        .expect("the follow starts");
    let mut body = response.into_body();
    let mut next_chunk = async || {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("a line arrives")
            .expect("the stream is open")
            .expect("the stream stays up");
        frame.into_data().expect("data")
    };
    assert_eq!(next_chunk().await, "one\n");
    standin.push_log("default", "web", "two");
    assert_eq!(next_chunk().await, "two\n");
    drop(body);
    tokio::time::timeout(PATIENCE, standin.wait_for_streams(|s| s.log_follows == 0))
        .await
        .expect("the follow ends with its client");

    let (status, _, body) = send(
        &client,
        request(
            &standin,
            Method::GET,
            "/api/v1/namespaces/default/pods/nope/log",
        )
        .body(Full::default())
        .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "pods \"nope\" not found");
}

/// Sends a raw HTTP/1.1 upgrade request over TLS and answers the status line and headers.
async fn raw_upgrade(standin: &StandIn, path: &str, headers: &[(&str, &str)]) -> String {
    let config = std::sync::Arc::new({
        let mut config = standin.client_config(None);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    });
    let tcp = tokio::net::TcpStream::connect(standin.addr())
        .await
        .expect("connects");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().expect("a DNS name"), tcp)
        .await
        .expect("TLS");
    let mut head =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.expect("sent");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(PATIENCE, tls.read(&mut byte))
            .await
            .expect("an answer")
            .expect("readable");
        if read == 0 {
            break;
        }
        response.push(byte[0]);
    }
    String::from_utf8_lossy(&response).to_lowercase()
}

const WEBSOCKET_EXEC: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    (
        "sec-websocket-protocol",
        "v4.channel.k8s.io, v5.channel.k8s.io",
    ),
];

#[tokio::test]
async fn exec_upgrades_answer_101_with_the_negotiated_protocol_unless_refused() {
    let standin = start().await;
    standin.create(pod("web")).expect("created");
    let path = "/api/v1/namespaces/default/pods/web/exec?command=echo&command=hi&stdout=true";

    let head = raw_upgrade(&standin, path, WEBSOCKET_EXEC).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-protocol: v5.channel.k8s.io"),
        "{head}"
    );

    let head = raw_upgrade(
        &standin,
        path,
        &[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ],
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );

    standin.set_refuse_upgrades(true);
    let head = raw_upgrade(&standin, path, WEBSOCKET_EXEC).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(!head.contains("sec-websocket-accept"), "{head}");
}
