//! Wire details: a request with both `Content-Length` and `Transfer-Encoding` is refused and its
//! connection closed (request smuggling); HTTP/1.1 requests reach the apiserver in origin form
//! with its `Host`.

use std::time::Duration;

use infra_tests::apiserver::{RecordedRequest, StandIn};
use infra_tests::proxy::{Harness, https_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{EDITOR, HANG, POLICY, VIEWER, connect};

/// The hole: a request with both headers got 200 (hyper framed it by `Transfer-Encoding` and
/// the proxy forwarded it). It now gets 400 and the connection closes, so nothing the client
/// sent after the head (here a second, smuggled request) is read as anything. Written by hand
/// on a raw TLS socket, in both orders of the two headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_gets_400_and_the_connection_closes() {
    let h = Harness::start(POLICY).await;
    let token = h.token(EDITOR, &[], Duration::from_mins(5));
    let object = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"smuggled","namespace":"default"}}"#;
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let bytes = format!(
            "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\n\
             Host: localhost\r\n\
             Authorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n\
             {framing}\r\n\
             {:x}\r\n{object}\r\n0\r\n\r\n\
             GET /api/v1/namespaces/default/secrets HTTP/1.1\r\n\
             Host: localhost\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            object.len()
        );
        let mut tls = connect(&h, b"http/1.1").await;
        tls.write_all(bytes.as_bytes()).await.expect("written");
        let mut answer = Vec::new();
        tokio::time::timeout(HANG, tls.read_to_end(&mut answer))
            .await
            .expect("the proxy closes the connection")
            .expect("read to the end");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{framing}: {answer}");
        assert!(
            answer.contains("both Content-Length and Transfer-Encoding"),
            "{answer}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then the connection closed: {answer}"
        );
    }
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| r.method != "POST" && !r.path().ends_with("/secrets")),
        "neither request reached the apiserver"
    );
}

/// The hole: HTTP/1.1 requests went to the apiserver in absolute form
/// (`GET https://host/path`), which only proxies are sent. Pooled requests to an apiserver that
/// speaks only HTTP/1.1, and upgrades (always HTTP/1.1), now go in origin form with a `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_reach_the_apiserver_in_origin_form_with_a_host() {
    // Pooled: an apiserver that offers only HTTP/1.1.
    let h = Harness::start_custom(
        POLICY,
        StandIn::builder().http1_only(true),
        |issuers| issuers,
        |_| {},
    )
    .await;
    let token = h.token(VIEWER, &[], Duration::from_mins(5));
    let (status, body) = https_get(
        &h,
        "/api/v1/namespaces/default/configmaps?limit=5",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == "/api/v1/namespaces/default/configmaps")
        .expect("the list reached the apiserver");
    assert_eq!(list.version, http::Version::HTTP_11);
    assert_origin_form(&list, &h.standin, Some("limit=5"));

    // An upgrade: a WebSocket exec.
    let h = Harness::start(POLICY).await;
    h.standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        }))
        .expect("the pod is created");
    let token = h.token(EDITOR, &[], Duration::from_mins(5));
    let mut tls = connect(&h, b"http/1.1").await;
    tls.write_all(
        format!(
            "GET /api/v1/namespaces/default/pods/web/exec?command=true&stdout=true HTTP/1.1\r\n\
             Host: localhost\r\n\
             Authorization: Bearer {token}\r\n\
             Connection: Upgrade\r\n\
             Upgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("written");
    let mut head = [0_u8; 12];
    tokio::time::timeout(HANG, tls.read_exact(&mut head))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
    let exec = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path().ends_with("/pods/web/exec"))
        .expect("the exec reached the apiserver");
    assert_origin_form(&exec, &h.standin, Some("command=true&stdout=true"));
}

#[track_caller]
fn assert_origin_form(request: &RecordedRequest, standin: &StandIn, query: Option<&str>) {
    assert_eq!(request.version, http::Version::HTTP_11);
    assert!(
        request.target.scheme().is_none() && request.target.authority().is_none(),
        "sent in absolute form: {}",
        request.target
    );
    assert_eq!(request.query(), query);
    assert_eq!(
        request.header_values("host"),
        [standin.addr().to_string()],
        "one Host, the apiserver's"
    );
}
