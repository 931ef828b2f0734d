//! Port-forward through the proxy.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    DEFAULTS, EDITOR, EDITOR_GROUPS, HANG, PORTFORWARD_OVER_SPDY, Running,
    assert_carries_only_our_identity, editor, requests_for, start,
};

/// A TCP server on 127.0.0.1:0 that answers each connection with what it read, once the client
/// half-closes, prefixed so the test sees it came from here.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if conn.read_to_end(&mut received).await.is_ok() {
                    let _ = conn.write_all(b"echo: ").await;
                    let _ = conn.write_all(&received).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

async fn round_trip(local: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(local).await.expect("kubectl listens");
    conn.write_all(payload).await.expect("write");
    conn.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(HANG, conn.read_to_end(&mut answer))
        .await
        .expect("the answer comes")
        .expect("read");
    answer
}

async fn kubectl_port_forward_round_trips(env: &[(&str, &str)], upgrade: &str) {
    let h = start().await;
    h.standin.set_port_forward_target(echo_server().await);
    let kubectl = editor(&h);
    let mut forward = Running::spawn(
        &kubectl,
        &["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"],
        env,
    );
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let line = forward.next_line().await;
    let local: SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let _child = forward.drain_stdout();

    assert_eq!(round_trip(local, b"first").await, b"echo: first");
    let big = vec![b'x'; 300_000];
    let mut expected = b"echo: ".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(round_trip(local, &big).await, expected);

    let requests = requests_for(&h.standin, "portforward");
    assert_eq!(
        requests.len(),
        1,
        "one tunnel for every connection: {requests:?}"
    );
    assert!(
        requests[0]
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case(upgrade)),
        "{requests:?}"
    );
    assert_carries_only_our_identity(&requests[0], EDITOR, EDITOR_GROUPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_tunnelled_spdy() {
    kubectl_port_forward_round_trips(DEFAULTS, "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy() {
    kubectl_port_forward_round_trips(PORTFORWARD_OVER_SPDY, "SPDY/3.1").await;
}
