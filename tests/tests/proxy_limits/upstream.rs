//! Toward the apiserver: a deadline for the response head of requests that are not long-running
//! (watches keep none), and a number of requests in flight per user.

use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use infra_tests::proxy::{Harness, https_get, wait_for};

use crate::{EDITOR, HANG, POLICY, VIEWER, get, h2, request, status_of, streamed, text};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The hole: a request whose apiserver stalled 40 s waited 40 s. It now gets 504 with the
/// apiserver's wording after the request timeout, and the stalled upstream request is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_apiserver_gets_504_after_the_request_timeout() {
    let h = Harness::start_with(POLICY, |args| args.limits.request_timeout_seconds = 1).await;
    h.standin.stall(CONFIGMAPS, Duration::from_secs(40));
    let token = h.token(VIEWER, &[], Duration::from_mins(5));
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        https_get(
            &h,
            CONFIGMAPS,
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await
    .expect("answered long before the apiserver would");
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    let status = status_of(&body);
    assert_eq!(status["reason"], "Timeout");
    assert_eq!(status["code"], 504);
    assert!(
        status["message"].as_str().is_some_and(
            |m| m.contains("the server was unable to return a response in the time allotted")
        ),
        "{body}"
    );
    // The proxy gave the upstream request up (its stream was reset).
    tokio::time::timeout(HANG, h.standin.wait_for_stalled(|n| n == 0))
        .await
        .expect("the stalled upstream request is cancelled");
}

/// A request whose body is still coming when the deadline passes is given up whole: the body
/// stops being piped and the upstream stream is reset, though the client keeps its body open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_sending_its_body_at_the_deadline_is_cancelled_upstream() {
    let h = Harness::start_with(POLICY, |args| args.limits.request_timeout_seconds = 1).await;
    let (mut sender, _connection) = h2(&h).await;
    let (tx, body) = streamed();
    let answer = tokio::spawn(
        sender.send_request(
            request(&h, "POST", CONFIGMAPS, EDITOR)
                .header("content-type", "application/json")
                .body(body)
                .expect("a request"),
        ),
    );
    tx.send(bytes::Bytes::from_static(b"{\"apiVersion\":"))
        .await
        .expect("the body is read");
    tokio::time::timeout(HANG, h.standin.wait_for_handling(|n| n == 1))
        .await
        .expect("the apiserver is reading the body");
    let response = tokio::time::timeout(HANG, answer)
        .await
        .expect("answered at the deadline")
        .expect("the request task ran")
        .expect("a response");
    assert_eq!(response.status(), 504);
    tokio::time::timeout(HANG, h.standin.wait_for_handling(|n| n == 0))
        .await
        .expect("the upstream request is cancelled while the client still holds its body");
    drop(tx);
}

/// Long-running requests keep no total timeout: a watch outlives the request timeout and still
/// gets its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_outlive_the_request_timeout() {
    let h = Harness::start_with(POLICY, |args| args.limits.request_timeout_seconds = 1).await;
    let (mut sender, _connection) = h2(&h).await;
    let response = sender
        .send_request(get(&h, &format!("{CONFIGMAPS}?watch=true"), VIEWER))
        .await
        .expect("the watch starts");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "after-the-timeout", "namespace": "default"},
        }))
        .expect("created");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("after-the-timeout") {
        let frame = tokio::time::timeout(HANG, body.frame())
            .await
            .expect("the event arrives")
            .expect("the watch is open")
            .expect("the watch is readable");
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }
}

/// What the apiserver treats as long-running has no deadline here either: a request proxied to
/// a pod may take longer than the request timeout to start answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_has_no_deadline() {
    let h = Harness::start_with(POLICY, |args| args.limits.request_timeout_seconds = 1).await;
    let path = "/api/v1/namespaces/default/pods/web/proxy/slow";
    h.standin.stall(path, Duration::from_secs(3));
    let token = h.token(EDITOR, &[], Duration::from_mins(5));
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        HANG,
        https_get(&h, path, &[("authorization", &format!("Bearer {token}"))]),
    )
    .await
    .expect("answered");
    // The stand-in has no pod to proxy to: what matters is that its answer came through.
    assert_ne!(status, 504, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// The hole: one user could take every upstream stream. Beyond the limit a user's requests get
/// 429 with `Retry-After: 1` (watches count while open); other users are not affected; a place
/// comes back when a request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_in_flight_limit_gets_429_and_others_do_not() {
    let h = Harness::start_with(POLICY, |args| {
        args.limits.max_requests_in_flight_per_user = 2;
    })
    .await;
    let (mut sender, _connection) = h2(&h).await;
    let mut watches = Vec::new();
    for _ in 0..2 {
        let response = sender
            .send_request(get(&h, &format!("{CONFIGMAPS}?watch=true"), EDITOR))
            .await
            .expect("the watch starts");
        assert_eq!(response.status(), 200);
        watches.push(response);
    }
    tokio::time::timeout(HANG, h.standin.wait_for_streams(|s| s.watches == 2))
        .await
        .expect("both watches reach the apiserver");

    let response = sender
        .send_request(get(&h, CONFIGMAPS, EDITOR))
        .await
        .expect("answered");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let status = status_of(&text(response).await);
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);

    // Another user is served.
    let response = sender
        .send_request(get(&h, CONFIGMAPS, VIEWER))
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    text(response).await;

    // A watch ends: its place comes back.
    watches.pop();
    wait_for(|| async {
        let response = sender
            .clone()
            .send_request(get(&h, CONFIGMAPS, EDITOR))
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}
