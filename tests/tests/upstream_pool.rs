//! The upstream pool against the stand-in apiserver over real TLS and HTTP/2: open watches
//! hold their streams, and when a connection's streams run out the pool dials another, so
//! other requests never queue behind the watches.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt as _;
use infra_proxy::upstream::{self, Credential, PoolSettings, Upstream};
use infra_tests::apiserver::StandIn;
use infra_tests::certs;

const TOKEN: &str = "pool-test-token";

fn get(upstream: &Upstream, path: &str) -> Request<upstream::Body> {
    let mut request = Request::get(upstream.uri_for(path).expect("uri"))
        .body(upstream::empty())
        .expect("request");
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        upstream::bearer(TOKEN).expect("header"),
    );
    request
}

/// A pool in front of `standin`, with its bearer token.
fn pool_for(standin: &StandIn, settings: PoolSettings) -> Upstream {
    let url: http::Uri = standin.url().parse().expect("url");
    Upstream::new(
        &url,
        Some("localhost"),
        standin.client_config(None),
        Credential::Token(upstream::bearer(TOKEN).expect("header")),
        settings,
    )
    .expect("upstream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_a_connections_streams_open_another_connection() {
    certs::init_crypto();
    let standin = StandIn::builder().bearer_token(TOKEN).start().await;
    let pool = pool_for(
        &standin,
        PoolSettings {
            max_streams_per_connection: 2,
            ..PoolSettings::default()
        },
    );

    // Three watches: two fill the first connection, the third needs a second one.
    let mut watches = Vec::new();
    for _ in 0..3 {
        let response = pool
            .send(get(&pool, "/api/v1/namespaces/default/pods?watch=true"))
            .await
            .expect("watch");
        assert_eq!(response.status(), 200);
        watches.push(response);
    }
    standin.wait_for_streams(|s| s.watches == 3).await;
    assert_eq!(pool.pooled_connections(), 2);

    // A plain request still goes through at once, on the connection with room.
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        pool.send(get(&pool, "/api/v1/namespaces/default/configmaps")),
    )
    .await
    .expect("not stalled behind the watches")
    .expect("list");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(body.starts_with(b"{"), "a JSON list");
    assert_eq!(pool.pooled_connections(), 2);

    // Every request went over HTTP/2.
    assert!(
        standin
            .recorded()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2)
    );

    // Dropping the watches cancels them upstream and frees their streams.
    drop(watches);
    standin.wait_for_streams(|s| s.watches == 0).await;
}

/// Bodies larger than HTTP/2's windows (64 KiB for a stream at the start, the stand-in's
/// defaults) cross the pooled connection whole, both ways: the request body is sent as the
/// apiserver's window allows, and the response's window is given back as it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_flow_control_windows_arrive_whole() {
    certs::init_crypto();
    let standin = StandIn::builder().bearer_token(TOKEN).start().await;
    let pool = pool_for(&standin, PoolSettings::default());

    // 2.5 MiB of data that is not the same byte over and over.
    let data: String = (0..2_500_000_u32)
        .map(|i| char::from(b'a' + u8::try_from(i * 7 % 26).expect("a letter")))
        .collect();
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        "data": {"blob": data},
    });
    let mut create = Request::post(
        pool.uri_for("/api/v1/namespaces/default/configmaps")
            .expect("uri"),
    )
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(upstream::full(serde_json::to_vec(&object).expect("JSON")))
    .expect("request");
    create.headers_mut().insert(
        http::header::AUTHORIZATION,
        upstream::bearer(TOKEN).expect("header"),
    );
    let (status, body) = whole(&pool, create).await;
    assert_eq!(
        status,
        201,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );

    let (status, body) = whole(
        &pool,
        get(&pool, "/api/v1/namespaces/default/configmaps/big"),
    )
    .await;
    assert_eq!(status, 200);
    let got: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(got["data"]["blob"].as_str().map(str::len), Some(data.len()));
    assert!(got["data"]["blob"] == data, "the same bytes came back");
    assert!(
        standin
            .recorded()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2)
    );
}

/// Sends `request` and reads the whole response, within 30 s (a body stuck on flow control
/// would otherwise wait forever).
async fn whole(
    pool: &Upstream,
    request: Request<upstream::Body>,
) -> (http::StatusCode, bytes::Bytes) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let response = pool.send(request).await.expect("the request is answered");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    })
    .await
    .expect("the exchange finishes within 30 s")
}

/// An apiserver that sends its connections away (GOAWAY: shutting down, or `--goaway-chance`)
/// finishes the streams it has, takes no new ones on them: the pool's next request goes to a
/// new connection instead of failing, and the open watch on the old one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_apiserver_sends_away_is_replaced_without_failing_a_request() {
    certs::init_crypto();
    let standin = StandIn::builder().bearer_token(TOKEN).start().await;
    let pool = pool_for(&standin, PoolSettings::default());
    let watch = pool
        .send(get(&pool, "/api/v1/namespaces/default/pods?watch=true"))
        .await
        .expect("watch");
    assert_eq!(watch.status(), 200);
    standin.wait_for_streams(|s| s.watches == 1).await;
    assert_eq!(pool.pooled_connections(), 1);

    standin.go_away();
    // Time for the GOAWAY to reach the pool's connection. (A request already on its way when
    // the GOAWAY arrives can still fail: only a connection known to be sent away is skipped.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let (status, _) = whole(&pool, get(&pool, "/api/v1/namespaces/default/configmaps")).await;
        assert_eq!(
            status, 200,
            "the request went to a connection that takes it"
        );
    }
    assert_eq!(
        pool.pooled_connections(),
        1,
        "the sent-away connection left the pool; the new one is in it"
    );

    // The watch on the sent-away connection is still open, and still delivers.
    standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "after-goaway", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .expect("the pod is created");
    let mut body = watch.into_body();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("watch frame").into_data() {
                seen.extend_from_slice(&data);
                if String::from_utf8_lossy(&seen).contains("after-goaway") {
                    return seen;
                }
            }
        }
        seen
    })
    .await
    .expect("the event arrives on the old connection");
    assert!(String::from_utf8_lossy(&event).contains("ADDED"));
}
