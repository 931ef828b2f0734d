//! The stand-in apiserver on its own: its wire formats, checked with a plain HTTP client and
//! with the real kubectl, before the proxy sits in between.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infra_tests::apiserver::{Caller, StandIn};
use infra_tests::certs::IssuedCert;
use infra_tests::kubectl::{Credentials, Kubectl};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

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

// ---------------------------------------------------------------------------------------------
// HTTP

#[tokio::test]
async fn a_caller_without_credentials_gets_a_401_status_and_is_recorded() {
    let standin = start().await;
    let client = client(&standin, None);
    let request = Request::get(format!("{}/api/v1/namespaces/default/pods", standin.url()))
        .header("authorization", "Bearer wrong")
        .body(Full::default())
        .expect("a valid request");
    let (status, _, body) = send(&client, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);
    let recorded = standin.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].caller, Caller::Anonymous);
    assert_eq!(recorded[0].header_values("authorization"), ["Bearer wrong"]);
}

#[tokio::test]
async fn a_client_certificate_authenticates_and_impersonation_is_honoured() {
    let standin = start().await;
    let cert = standin.client_cert("infra-proxy", &["proxies", "system:masters"]);
    let client = client(&standin, Some(&cert));
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let request = Request::post(format!(
        "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        standin.url()
    ))
    .header("content-type", "application/json")
    .header("impersonate-user", "alice@example.com")
    .header("impersonate-group", "eng")
    .header("impersonate-group", "ops")
    .body(json_body(&review))
    .expect("a valid request");
    let (status, _, body) = send(&client, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["userInfo"]["username"], "alice@example.com");
    assert_eq!(
        body["status"]["userInfo"]["groups"],
        json!(["eng", "ops", "system:authenticated"])
    );

    let recorded = standin.recorded();
    let last = recorded.last().expect("one request");
    assert_eq!(
        last.caller,
        Caller::ClientCert {
            user: "infra-proxy".to_owned(),
            groups: vec!["proxies".to_owned(), "system:masters".to_owned()],
        }
    );
    assert_eq!(last.header_values("impersonate-group"), ["eng", "ops"]);
    assert_eq!(
        last.header("impersonate-user").as_deref(),
        Some("alice@example.com")
    );
}

#[tokio::test]
async fn discovery_is_negotiated_like_the_apiserver() {
    let standin = start().await;
    let client = client(&standin, None);
    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (status, headers, body) = send(
        &client,
        request(&standin, Method::GET, "/apis")
            .header("accept", aggregated)
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(body["kind"], "APIGroupDiscoveryList");

    let (_, headers, body) = send(
        &client,
        request(&standin, Method::GET, "/apis")
            .header("accept", "application/json, */*")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["kind"], "APIGroupList");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, "/apis/apps/v1")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["groupVersion"], "apps/v1");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, "/apis/nope.example.com/v1/things")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["reason"], "NotFound");
}

#[tokio::test]
async fn objects_are_created_conflicted_patched_and_deleted_with_real_statuses() {
    let standin = start().await;
    let client = client(&standin, None);
    let path = "/api/v1/namespaces/default/configmaps";
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}});

    let post = || {
        request(&standin, Method::POST, path)
            .header("content-type", "application/json")
            .body(json_body(&configmap))
            .expect("valid")
    };
    let (status, _, created) = send(&client, post()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let version: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion");

    let (status, _, body) = send(&client, post()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(body["message"], "configmaps \"settings\" already exists");
    assert_eq!(
        body["details"],
        json!({"name": "settings", "kind": "configmaps"})
    );

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!((version - 1).to_string());
    let (status, _, body) = send(
        &client,
        request(&standin, Method::PUT, &format!("{path}/settings"))
            .header("content-type", "application/json")
            .body(json_body(&stale))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "Conflict");

    let (status, _, patched) = send(
        &client,
        request(&standin, Method::PATCH, &format!("{path}/settings"))
            .header("content-type", "application/merge-patch+json")
            .body(json_body(&json!({"data": {"a": null, "b": "2"}})))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"], json!({"b": "2"}));
    assert_eq!(patched["metadata"]["uid"], created["metadata"]["uid"]);

    let (status, _, list) = send(
        &client,
        request(&standin, Method::GET, path)
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "ConfigMapList");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert_eq!(list["items"][0]["metadata"]["name"], "settings");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::DELETE, &format!("{path}/settings"))
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "Success");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, &format!("{path}/settings"))
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "configmaps \"settings\" not found", "reason": "NotFound",
               "details": {"name": "settings", "kind": "configmaps"}, "code": 404})
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_yaml() {
    let standin = start().await;
    let client = client(&standin, None);
    let path = "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl&force=true";
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n";
    let apply = |body: &str| {
        request(&standin, Method::PATCH, path)
            .header("content-type", "application/apply-patch+yaml")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid")
    };
    let (status, _, created) = send(&client, apply(yaml)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"]["readyReplicas"], 2);
    let (status, _, updated) =
        send(&client, apply(&yaml.replace("replicas: 2", "replicas: 3"))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["replicas"], 3);
    assert_eq!(updated["metadata"]["generation"], 2);
}

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

// ---------------------------------------------------------------------------------------------
// kubectl

#[tokio::test]
async fn kubectl_reads_version_discovery_and_tables() {
    let standin = start().await;
    standin.create(pod("web-1")).expect("created");
    let kubectl = kubectl(&standin);

    let version = kubectl.run(&["get", "--raw", "/version"]).await.success();
    let version: Value = serde_json::from_str(&version.stdout).expect("JSON");
    assert_eq!(version["gitVersion"], "v1.32.13");

    let resources = kubectl.run(&["api-resources"]).await.success();
    assert!(
        resources
            .stdout
            .lines()
            .any(|l| l.starts_with("deployments ") && l.contains("apps/v1")),
        "{}",
        resources.stdout
    );
    assert!(
        resources
            .stdout
            .lines()
            .any(|l| l.starts_with("pods ") && l.contains(" po ")),
        "{}",
        resources.stdout
    );

    let pods = kubectl.run(&["get", "pods"]).await.success();
    let lines: Vec<&str> = pods.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("STATUS"),
        "{}",
        pods.stdout
    );
    assert!(
        lines[1].starts_with("web-1") && lines[1].contains("1/1") && lines[1].contains("Running"),
        "{}",
        pods.stdout
    );

    let namespaces = kubectl
        .run(&["get", "namespaces", "-o", "name"])
        .await
        .success();
    assert!(
        namespaces.stdout.contains("namespace/kube-system"),
        "{}",
        namespaces.stdout
    );

    let missing = kubectl.run(&["get", "pod", "nope"]).await.failure();
    assert!(
        missing.stderr.contains("pods \"nope\" not found"),
        "{}",
        missing.stderr
    );

    // Discovery went the aggregated way.
    let discovery = standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == "/apis")
        .expect("kubectl asked for /apis");
    assert!(discovery.header_values("accept")[0].contains("as=APIGroupDiscoveryList"));
}

#[tokio::test]
async fn kubectl_apply_creates_configures_and_deletes() {
    let standin = start().await;
    let kubectl = kubectl(&standin);
    let manifest = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
";
    let created = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(manifest))
        .await
        .success();
    assert_eq!(created.stderr, "", "no warnings, e.g. about OpenAPI");
    assert!(
        created.stdout.contains("deployment.apps/web created"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("configmap/settings created"),
        "{}",
        created.stdout
    );
    let stored = standin
        .get("apps/v1", "Deployment", "default", "web")
        .expect("stored");
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let changed = manifest
        .replace("nginx:1.27", "nginx:1.28")
        .replace("replicas: 1", "replicas: 3");
    let configured = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&changed))
        .await
        .success();
    assert!(
        configured.stdout.contains("deployment.apps/web configured"),
        "{}",
        configured.stdout
    );
    assert!(
        configured.stdout.contains("configmap/settings unchanged"),
        "{}",
        configured.stdout
    );
    let stored = standin
        .get("apps/v1", "Deployment", "default", "web")
        .expect("stored");
    assert_eq!(stored["spec"]["replicas"], 3);
    let container = &stored["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    assert_eq!(
        container["ports"][0]["containerPort"], 80,
        "the strategic merge kept the ports"
    );

    let deployments = kubectl.run(&["get", "deployments"]).await.success();
    assert!(
        deployments
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("3/3")),
        "{}",
        deployments.stdout
    );

    let server_side = kubectl
        .run_with_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&changed.replace("mode: fast", "mode: slow")),
        )
        .await
        .success();
    assert!(
        server_side
            .stdout
            .contains("configmap/settings serverside-applied"),
        "{}",
        server_side.stdout
    );
    let stored = standin
        .get("v1", "ConfigMap", "default", "settings")
        .expect("stored");
    assert_eq!(stored["data"]["mode"], "slow");

    let deleted = kubectl
        .run(&["delete", "configmap", "settings"])
        .await
        .success();
    assert!(
        deleted.stdout.contains("configmap \"settings\" deleted"),
        "{}",
        deleted.stdout
    );
    assert!(
        standin
            .get("v1", "ConfigMap", "default", "settings")
            .is_none()
    );
}

#[tokio::test]
async fn kubectl_auth_whoami_and_can_i() {
    let standin = start().await;
    let kubectl = kubectl(&standin);
    let whoami = kubectl
        .run(&["auth", "whoami", "-o", "json"])
        .await
        .success();
    let whoami: Value = serde_json::from_str(&whoami.stdout).expect("JSON");
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        infra_tests::apiserver::TOKEN_USER
    );

    let can_i = kubectl
        .run(&["auth", "can-i", "delete", "pods"])
        .await
        .success();
    assert_eq!(can_i.stdout.trim(), "yes");
}

#[tokio::test]
async fn kubectl_logs_and_exec() {
    let standin = start().await;
    standin.create(pod("web")).expect("created");
    standin.push_log("default", "web", "started");
    let kubectl = kubectl(&standin);
    let logs = kubectl.run(&["logs", "web"]).await.success();
    assert_eq!(logs.stdout, "started\n");

    let exec = kubectl
        .run(&["exec", "web", "--", "echo", "hello", "world"])
        .await
        .success();
    assert_eq!(exec.stdout, "hello world\n");
    let exec = kubectl
        .run_with_stdin(&["exec", "-i", "web", "--", "cat"], Some("piped\n"))
        .await
        .success();
    assert_eq!(exec.stdout, "piped\n");
    let failed = kubectl.run(&["exec", "web", "--", "false"]).await.failure();
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);

    // The SPDY fallback.
    let spdy = kubectl
        .command(&["exec", "web", "--", "echo", "over", "spdy"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .output()
        .await
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&spdy.stdout),
        "over spdy\n",
        "{}",
        String::from_utf8_lossy(&spdy.stderr)
    );
    let upgrades: Vec<String> = standin
        .recorded()
        .iter()
        .filter(|r| r.path().ends_with("/exec"))
        .map(|r| r.header_values("upgrade").join(","))
        .collect();
    assert_eq!(
        upgrades.last().map(String::as_str),
        Some("SPDY/3.1"),
        "{upgrades:?}"
    );
    assert!(
        upgrades.iter().any(|u| u.eq_ignore_ascii_case("websocket")),
        "{upgrades:?}"
    );

    standin.set_refuse_upgrades(true);
    let refused = kubectl
        .run(&["exec", "web", "--", "echo", "no"])
        .await
        .failure();
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
}

#[tokio::test]
async fn kubectl_get_watch_prints_each_change_as_it_happens() {
    let standin = start().await;
    standin.create(pod("first")).expect("created");
    let kubectl = kubectl(&standin);
    let mut child = kubectl
        .command(&["get", "pods", "-w", "--request-timeout=60s"])
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("kubectl prints the next line")
            .expect("stdout is readable")
            .expect("kubectl is still running")
    };
    assert!(next_line().await.starts_with("NAME"));
    assert!(next_line().await.starts_with("first"));

    standin.wait_for_streams(|s| s.watches == 1).await;
    standin.create(pod("second")).expect("created");
    let line = next_line().await;
    assert!(
        line.starts_with("second") && line.contains("Running"),
        "{line}"
    );

    standin
        .delete("v1", "Pod", "default", "first")
        .expect("deleted");
    let line = next_line().await;
    assert!(line.starts_with("first"), "{line}");

    child.kill().await.expect("kubectl stops");
    tokio::time::timeout(PATIENCE, standin.wait_for_streams(|s| s.watches == 0))
        .await
        .expect("the watch ends when kubectl goes away");
}

/// A TCP server on 127.0.0.1:0 that echoes what it reads, for port-forward.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn port_forward_round_trip(websockets: bool) {
    let echo = echo_server().await;
    let standin = StandIn::builder()
        .bearer_token(TOKEN)
        .port_forward_target(echo)
        .start()
        .await;
    standin.create(pod("web")).expect("created");
    let kubectl = kubectl(&standin);
    let mut child = kubectl
        .command(&["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("kubectl says where it listens")
        .expect("readable")
        .expect("kubectl runs");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let mut socket = tokio::net::TcpStream::connect(local)
        .await
        .expect("connects");
    socket.write_all(b"ping\n").await.expect("sent");
    let mut answer = [0u8; 5];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut answer))
        .await
        .expect("the echo comes back")
        .expect("readable");
    assert_eq!(&answer, b"ping\n");
    let request = standin
        .recorded()
        .into_iter()
        .find(|r| r.path().ends_with("/portforward"))
        .expect("kubectl asked to port-forward");
    let expected = if websockets { "websocket" } else { "SPDY/3.1" };
    assert!(request.header_values("upgrade")[0].eq_ignore_ascii_case(expected));
    child.kill().await.expect("kubectl stops");
}

#[tokio::test]
async fn kubectl_port_forward_over_websocket() {
    port_forward_round_trip(true).await;
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    port_forward_round_trip(false).await;
}
