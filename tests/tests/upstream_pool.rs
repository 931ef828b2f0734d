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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_a_connections_streams_open_another_connection() {
    certs::init_crypto();
    let standin = StandIn::builder().bearer_token(TOKEN).start().await;
    let url: http::Uri = standin.url().parse().expect("url");
    let pool = Upstream::new(
        &url,
        Some("localhost"),
        standin.client_config(None),
        Credential::Token(upstream::bearer(TOKEN).expect("header")),
        PoolSettings {
            max_streams_per_connection: 2,
            ..PoolSettings::default()
        },
    )
    .expect("upstream");

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
