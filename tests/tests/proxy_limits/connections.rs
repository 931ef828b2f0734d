//! Connections: idle ones close, busy ones (an open watch) do not, connections over the caps are
//! closed at accept, and a head that never ends is cut after the header timeout.

use std::time::{Duration, Instant};

use infra_tests::proxy::{Harness, wait_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{EDITOR, HANG, POLICY, VIEWER, connect, get, h1, h2, text, try_connect};

/// The hole: 300 idle HTTP/2 connections, answering pings, stayed open past 100 s. A connection
/// with no open stream is now closed after the idle timeout, pings or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    let h = Harness::start_with(POLICY, |args| args.limits.idle_timeout_seconds = 2).await;
    let (mut sender, connection) = h2(&h).await;

    // Busy for longer than the timeout, one request every half second: not idle.
    let busy = Instant::now();
    let mut idle = Instant::now();
    while busy.elapsed() < Duration::from_secs(4) {
        let response = sender
            .send_request(get(&h, "/version", VIEWER))
            .await
            .expect("the connection is still open");
        assert_eq!(response.status(), 200);
        text(response).await;
        idle = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!connection.is_finished(), "a busy connection stays open");

    // Then idle, answering pings: closed after the timeout.
    let ended = tokio::time::timeout(HANG, connection)
        .await
        .expect("the proxy closes an idle connection")
        .expect("the connection task ran");
    let after = idle.elapsed();
    assert!(ended.is_ok(), "closed cleanly (GOAWAY): {ended:?}");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(8),
        "closed {after:?} after its last stream, with an idle timeout of 2 s"
    );
}

/// The same for an HTTP/1.1 connection kept alive between requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let h = Harness::start_with(POLICY, |args| args.limits.idle_timeout_seconds = 1).await;
    let (mut sender, connection) = h1(&h).await;
    let response = sender
        .send_request(get(&h, "/version", VIEWER))
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    text(response).await;
    // Well before the header timeout (10 s), which would close it too.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the proxy closes an idle keep-alive connection")
        .expect("the connection task ran")
        .expect("closed cleanly");
}

/// A watch is a stream that stays open, quiet or not: its connection is not idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_an_open_watch_is_not_idle() {
    let h = Harness::start_with(POLICY, |args| args.limits.idle_timeout_seconds = 1).await;
    let (mut sender, connection) = h2(&h).await;
    let response = sender
        .send_request(get(
            &h,
            "/api/v1/namespaces/default/configmaps?watch=true",
            VIEWER,
        ))
        .await
        .expect("the watch starts");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    // Three idle timeouts without an event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connection.is_finished(), "the watch keeps its connection");
    h.standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "late", "namespace": "default"},
        }))
        .expect("created");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"late\"") {
        let frame = tokio::time::timeout(HANG, http_body_util::BodyExt::frame(&mut body))
            .await
            .expect("the event arrives")
            .expect("the watch is open")
            .expect("the watch is readable");
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }

    // Once the watch ends, the connection is idle, and closed.
    drop(body);
    tokio::time::timeout(HANG, connection)
        .await
        .expect("closed once idle")
        .expect("the connection task ran")
        .expect("closed cleanly");
}

/// Connections beyond the per-client cap are closed as they are accepted (no TLS handshake);
/// a place comes back when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_limit_are_closed_at_accept() {
    let h = Harness::start_with(POLICY, |args| {
        args.limits.max_connections_per_client = 2;
    })
    .await;
    over_the_limit_closed_at_accept(&h).await;
}

/// The same with the cap on all connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_global_limit_are_closed_at_accept() {
    let h = Harness::start_with(POLICY, |args| {
        args.limits.max_connections = 2;
        args.limits.max_connections_per_client = 0;
    })
    .await;
    over_the_limit_closed_at_accept(&h).await;
}

async fn over_the_limit_closed_at_accept(h: &Harness) {
    let (mut first, first_connection) = h1(h).await;
    let _second = connect(h, b"h2").await;
    let third = try_connect(h, b"h2").await;
    assert!(third.is_err(), "a third connection is closed at accept");

    // The admitted connections are served.
    let response = first
        .send_request(get(h, "/version", EDITOR))
        .await
        .expect("an admitted connection is served");
    assert_eq!(response.status(), 200);
    text(response).await;

    // The first one's place comes back once the proxy has seen it close.
    drop(first);
    let _ = first_connection.await;
    let (mut sender, _connection) = wait_for(|| async {
        let tls = try_connect(h, b"http/1.1").await.ok()?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .ok()?;
        Some((sender, tokio::spawn(connection)))
    })
    .await;
    let response = sender
        .send_request(get(h, "/version", EDITOR))
        .await
        .expect("the new connection is served");
    assert_eq!(response.status(), 200);
}

/// A slowloris head (one header line a second, never the blank line) is cut after the header
/// timeout, 10 s (it was 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_after_10_seconds() {
    let h = Harness::start(POLICY).await;
    let mut tls = connect(&h, b"http/1.1").await;
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("written");
    let started = Instant::now();
    let mut buffer = [0_u8; 1024];
    loop {
        tokio::select! {
            read = tls.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                // hyper may say 408 before it closes.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if tls.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the slow head is still read after 25 s"
        );
    }
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_secs(9) && cut < Duration::from_secs(15),
        "cut after {cut:?}"
    );
}
