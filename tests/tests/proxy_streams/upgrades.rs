//! Raw upgrades: what kubectl cannot be made to send.

use std::fmt::Write as _;
use std::sync::Arc;

use infra_tests::certs;
use infra_tests::proxy::Harness;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::{
    EDITOR, EDITOR_GROUPS, EXEC_PATH, HANG, TOKEN_TTL, WEBSOCKET_ACCEPT, WEBSOCKET_KEY,
    assert_carries_only_our_identity, requests_for, start, streams,
};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the proxy that speaks HTTP/1.1.
async fn connect(h: &Harness) -> Tls {
    let mut config = certs::client_config(&h.ca, None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(h.proxy.address)
        .await
        .expect("the proxy listens");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("a DNS name"), tcp)
        .await
        .expect("TLS handshake")
}

/// A WebSocket exec request head (v5 channel protocol) with `extra` header lines.
fn websocket_exec(token: &str, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET {EXEC_PATH} HTTP/1.1\r\n\
         Host: localhost\r\n\
         Authorization: Bearer {token}\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
    );
    if !extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: Upgrade\r\n");
    }
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Reads a response head, up to and including the blank line, and no further.
async fn read_head(tls: &mut Tls) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(HANG, tls.read(&mut byte))
            .await
            .expect("the proxy answers")
            .expect("the connection is readable");
        assert_ne!(
            read,
            0,
            "the connection ended inside a response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("a response head is ASCII")
}

/// The value of a header in a response head (names compared without case).
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads what is left until the proxy closes the connection. A close without TLS close_notify,
/// or a reset because we wrote after the close, count as closed too.
async fn read_until_closed(tls: &mut Tls) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(HANG, tls.read(&mut buffer))
            .await
            .expect("the proxy closes the connection");
        match read {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&buffer[..n]),
            Err(error) => {
                assert!(
                    matches!(
                        error.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ),
                    "{error}"
                );
                return rest;
            }
        }
    }
}

/// What a client might write after its upgrade request: a request the proxy's own credential
/// would authorize if it were spliced onto the apiserver connection.
fn smuggled(token: &str) -> String {
    format!(
        "GET /api/v1/namespaces/default/secrets HTTP/1.1\r\n\
         Host: localhost\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_refused_upstream_is_relayed_and_never_becomes_a_tunnel() {
    let h = start().await;
    h.standin.set_refuse_upgrades(true);
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);

    // Bytes sent right behind the upgrade request, before any answer (the CVE-2018-1002105
    // shape: a client that assumes the upgrade worked).
    let mut tls = connect(&h).await;
    let mut sent = websocket_exec(&token, &[]);
    sent.push_str(&smuggled(&token));
    tls.write_all(sent.as_bytes()).await.expect("sent");
    let answer = read_until_closed(&mut tls).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closes: {answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head_value(head, "sec-websocket-accept").is_none(), "{head}");
    assert!(head_value(head, "upgrade").is_none(), "{head}");
    let status: Value = serde_json::from_str(body).expect("the apiserver's Status");
    assert_eq!(status["reason"], "Forbidden", "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot create resource \"pods/exec\"")),
        "{status}"
    );

    // Bytes sent after the refusal arrived.
    let mut tls = connect(&h).await;
    tls.write_all(websocket_exec(&token, &[]).as_bytes())
        .await
        .expect("sent");
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(
        head_value(&head, "sec-websocket-accept").is_none(),
        "{head}"
    );
    // The write may already fail if the proxy closed first; either way nothing is forwarded.
    let _ = tls.write_all(smuggled(&token).as_bytes()).await;
    let _ = tls.flush().await;
    let rest = read_until_closed(&mut tls).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("HTTP/1.1"),
        "only the refusal's body: {rest}"
    );

    let recorded = h.standin.recorded();
    assert_eq!(
        recorded
            .iter()
            .filter(|r| r.path().ends_with("/pods/web/exec"))
            .count(),
        2,
        "{recorded:?}"
    );
    assert!(
        recorded.iter().all(|r| !r.path().contains("/secrets")),
        "no request was smuggled behind a refused upgrade: {recorded:?}"
    );
    assert_eq!(h.standin.active_streams().upgrades, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_upgrade_is_relayed_intact_and_carries_only_our_identity() {
    let h = start().await;
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    let mut tls = connect(&h).await;
    let request = websocket_exec(
        &token,
        &[
            ("Connection", "Upgrade, X-Hop"),
            ("X-Hop", "must not be forwarded"),
            ("X-Remote-User", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("X-Remote-Extra-Scopes", "all"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "http"),
            ("Forwarded", "for=10.0.0.1;host=evil.example"),
            ("X-Real-Ip", "10.0.0.1"),
            ("Audit-Id", "chosen-by-the-client"),
        ],
    );
    tls.write_all(request.as_bytes()).await.expect("sent");
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        head_value(&head, "sec-websocket-accept"),
        Some(WEBSOCKET_ACCEPT),
        "{head}"
    );
    assert_eq!(
        head_value(&head, "sec-websocket-protocol"),
        Some("v5.channel.k8s.io"),
        "{head}"
    );
    assert!(
        head_value(&head, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{head}"
    );

    // The tunnel carries the session: a binary frame on channel 1 (stdout) with "hi\n".
    let mut session = Vec::new();
    let mut buffer = [0u8; 1024];
    while !session.windows(4).any(|w| w == b"\x01hi\n") {
        let read = tokio::time::timeout(HANG, tls.read(&mut buffer))
            .await
            .expect("the session's output arrives")
            .expect("readable");
        assert_ne!(read, 0, "the tunnel ended early: {session:?}");
        session.extend_from_slice(&buffer[..read]);
    }
    drop(tls);

    let exec = requests_for(&h.standin, "exec")
        .pop()
        .expect("the exec reached the apiserver");
    assert_carries_only_our_identity(&exec, EDITOR, EDITOR_GROUPS);
    assert_eq!(exec.header_values("x-hop"), Vec::<String>::new());
    assert_ne!(
        exec.header("audit-id").as_deref(),
        Some("chosen-by-the-client")
    );
    assert_eq!(
        exec.header("sec-websocket-key").as_deref(),
        Some(WEBSOCKET_KEY)
    );
    assert_eq!(exec.header("upgrade").as_deref(), Some("websocket"));
    assert!(
        exec.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{exec:?}"
    );
    assert_eq!(
        exec.header("host"),
        Some(h.standin.addr().to_string()),
        "the apiserver's own authority"
    );
    streams(&h.standin, "the session ends with its client", |s| {
        s.upgrades == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_impersonation_its_user_may_not_do_is_refused_and_never_forwarded() {
    let h = start().await;
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    // `edit` may impersonate service accounts, not users; a group or uid without a user is the
    // apiserver's 500.
    for (name, status) in [
        ("Impersonate-User", "403"),
        ("impersonate-group", "500"),
        ("Impersonate-Uid", "500"),
    ] {
        let mut tls = connect(&h).await;
        tls.write_all(websocket_exec(&token, &[(name, "system:admin")]).as_bytes())
            .await
            .expect("sent");
        let head = read_head(&mut tls).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {head}"
        );
        assert!(
            head_value(&head, "sec-websocket-accept").is_none(),
            "{head}"
        );
        let length: usize = head_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .expect("a refusal has a length");
        let mut body = vec![0; length];
        tokio::time::timeout(HANG, tls.read_exact(&mut body))
            .await
            .expect("the body arrives")
            .expect("readable");
        let body = String::from_utf8_lossy(&body);
        let why = if status == "403" {
            r#"users \"system:admin\" is forbidden: User \"carl@example.com\" cannot impersonate resource \"users\""#
        } else {
            "without impersonating a user"
        };
        assert!(body.contains(why), "{name}: {body}");
    }
    assert!(requests_for(&h.standin, "exec").is_empty());
}
