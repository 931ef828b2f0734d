//! Sizes: request heads over 64 KiB get 431, request bodies over the limit get 413, and neither
//! reaches the apiserver. (The stand-in accepts heads up to 1 MB and bodies up to 3 MiB, as the
//! apiserver does, so whatever is refused here was refused by the proxy.)

use bytes::Bytes;
use infra_tests::proxy::Harness;

use crate::{
    EDITOR, HANG, POLICY, VIEWER, config_map, full, get, h1, h2, incompressible, request,
    status_of, streamed, text,
};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The hole: 480 KB of headers reached the apiserver; only 2 MB got 431. Heads are now capped at
/// 64 KiB, over HTTP/1.1 (hyper's head limit) and HTTP/2 (the header list limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_64_kib_get_431_and_never_reach_the_apiserver() {
    let h = Harness::start(POLICY).await;
    for http2 in [false, true] {
        let mut answered_431 = false;
        for (size, refused) in [(48 * 1024, false), (100_000, true), (480_000, true)] {
            let mut request = get(&h, CONFIGMAPS, VIEWER);
            request.headers_mut().insert(
                "x-big",
                incompressible(size).parse().expect("a header value"),
            );
            let answer = if http2 {
                let (mut sender, _connection) = h2(&h).await;
                tokio::time::timeout(HANG, sender.send_request(request)).await
            } else {
                let (mut sender, _connection) = h1(&h).await;
                tokio::time::timeout(HANG, sender.send_request(request)).await
            }
            .expect("answered");
            match (refused, answer) {
                (false, Ok(response)) => assert_eq!(response.status(), 200, "{size} B"),
                (true, Ok(response)) => {
                    assert_eq!(response.status(), 431, "{size} B");
                    answered_431 = true;
                }
                // The proxy does not read the rest of a head over the limit: over HTTP/1.1 the
                // client may see the connection reset (the 431 lost) when it closes; over
                // HTTP/2 a header block far over the limit ends the connection (h2 refuses
                // more CONTINUATION frames than the limit needs).
                (true, Err(error)) => {
                    assert!(!http2 || size > 100_000, "{size} B over HTTP/2: {error}");
                }
                (false, Err(error)) => panic!("{size} B over HTTP/2 {http2}: {error}"),
            }
        }
        assert!(
            answered_431 || !http2,
            "HTTP/2 answers 431 just over the limit"
        );
    }
    let largest = h
        .standin
        .recorded()
        .iter()
        .filter_map(|r| r.header("x-big"))
        .map(|v| v.len())
        .max();
    assert_eq!(largest, Some(48 * 1024), "only the small heads reached it");
}

/// A body whose `Content-Length` is over the limit is refused at once, before anything is
/// forwarded (and before the client sends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_gets_413_before_it_is_forwarded() {
    let h = Harness::start_with(POLICY, |args| {
        args.limits.max_request_body_bytes = 1024 * 1024;
    })
    .await;
    for http2 in [false, true] {
        // The body is announced, and held back: the answer cannot wait for it.
        let (_hold, body) = streamed();
        let request = request(&h, "POST", CONFIGMAPS, EDITOR)
            .header("content-type", "application/json")
            .header("content-length", 2 * 1024 * 1024)
            .body(body)
            .expect("a request");
        let response = if http2 {
            let (mut sender, _connection) = h2(&h).await;
            tokio::time::timeout(HANG, sender.send_request(request)).await
        } else {
            let (mut sender, _connection) = h1(&h).await;
            tokio::time::timeout(HANG, sender.send_request(request)).await
        }
        .expect("answered without the body")
        .expect("a response");
        assert_eq!(response.status(), 413, "HTTP/2 {http2}");
        let status = status_of(&text(response).await);
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("limit is 1048576")),
            "{status}"
        );
    }

    // Under the limit, a body goes through.
    let (mut sender, _connection) = h2(&h).await;
    let response = sender
        .send_request(
            request(&h, "POST", CONFIGMAPS, EDITOR)
                .header("content-type", "application/json")
                .body(full(config_map("small", 512 * 1024)))
                .expect("a request"),
        )
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    let posts: Vec<_> = h
        .standin
        .recorded()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "only the small body reached the apiserver");
}

/// A body without a length (chunked over HTTP/1.1, no `Content-Length` over HTTP/2) that grows
/// past the limit is cut: the upstream request is aborted, and the client gets 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_growing_over_the_limit_is_cut_and_gets_413() {
    let h = Harness::start_with(POLICY, |args| {
        args.limits.max_request_body_bytes = 1024 * 1024;
    })
    .await;
    for http2 in [false, true] {
        let (tx, body) = streamed();
        let request = request(&h, "POST", CONFIGMAPS, EDITOR)
            .header("content-type", "application/json")
            .body(body)
            .expect("a request");
        let answer = if http2 {
            let (mut sender, _connection) = h2(&h).await;
            tokio::spawn(sender.send_request(request))
        } else {
            let (mut sender, _connection) = h1(&h).await;
            tokio::spawn(sender.send_request(request))
        };
        // 1 MiB and a little more, then nothing: the body stays open.
        let object = config_map("big", 2 * 1024 * 1024);
        for piece in object[..1024 * 1024 + 4096].chunks(64 * 1024) {
            tx.send(Bytes::copy_from_slice(piece))
                .await
                .expect("the body is read");
        }
        let response = tokio::time::timeout(HANG, answer)
            .await
            .expect("answered while the body is still open")
            .expect("the request task ran")
            .expect("a response");
        assert_eq!(response.status(), 413, "HTTP/2 {http2}");
        let status = status_of(&text(response).await);
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        drop(tx);
    }
    assert!(
        h.standin.recorded().iter().all(|r| r.method != "POST"),
        "no cut body reached the apiserver whole"
    );
}
