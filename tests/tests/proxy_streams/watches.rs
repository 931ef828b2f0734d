//! Watches and followed logs through the proxy.

use http::Version;
use infra_tests::kubectl::{Credentials, Kubectl};
use infra_tests::proxy::{Harness, UPSTREAM_TOKEN, wait_for};

use crate::{
    DEFAULTS, EDITOR, EDITOR_GROUPS, HTTP1, POLICY, Running, assert_carries_only_our_identity,
    editor, pod, requests_for, run, start, streams,
};

/// `kubectl get pods -w`: each change is printed while kubectl runs, and killing kubectl ends
/// the watch at the apiserver.
async fn kubectl_watch_streams_each_change_and_ends_with_kubectl(env: &[(&str, &str)]) {
    let h = Harness::start(POLICY).await;
    h.standin.create(pod("first")).expect("created");
    let kubectl = editor(&h);
    let mut watch = Running::spawn(&kubectl, &["get", "pods", "-w"], env);
    assert!(watch.next_line().await.starts_with("NAME"));
    assert!(watch.next_line().await.starts_with("first"));

    streams(&h.standin, "the watch reaches the apiserver", |s| {
        s.watches == 1
    })
    .await;
    h.standin.create(pod("second")).expect("created");
    let line = watch.next_line().await;
    assert!(
        line.starts_with("second") && line.contains("Running"),
        "{line}"
    );
    h.standin
        .delete("v1", "Pod", "default", "first")
        .expect("deleted");
    let line = watch.next_line().await;
    assert!(line.starts_with("first"), "{line}");

    let request = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| {
            r.path() == "/api/v1/namespaces/default/pods"
                && r.query().is_some_and(|q| q.contains("watch=true"))
        })
        .expect("the watch reached the apiserver");
    assert_carries_only_our_identity(&request, EDITOR, EDITOR_GROUPS);

    watch.kill().await;
    streams(&h.standin, "the watch ends when kubectl goes away", |s| {
        s.watches == 0
    })
    .await;

    // The audit log has the watch's start and, once it closed, its end with how long it was
    // open, both under the request's audit id (the one the apiserver got).
    let audit_id = request
        .headers
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .expect("the apiserver got an audit id")
        .to_owned();
    let (start, end) = wait_for(|| async {
        let lines = h.audit_lines();
        let of = |stage: &str| {
            lines
                .iter()
                .find(|l| l["audit_id"] == audit_id.as_str() && l["stage"] == stage)
                .cloned()
        };
        Some((of("start")?, of("end")?))
    })
    .await;
    assert_eq!(start["verb"], "watch", "{start}");
    assert_eq!(start["id"], audit_id.as_str(), "{start}");
    assert_eq!(end["verb"], "watch", "{end}");
    assert_eq!(end["user"], EDITOR, "{end}");
    assert_ne!(end["id"], start["id"], "the end is an event of its own");
    assert!(end.get("reason").is_none(), "ended by its client: {end}");
    let open_ms = end["duration_ms"].as_u64().expect("a duration");
    let start_time: jiff::Timestamp = start["time"]
        .as_str()
        .expect("time")
        .parse()
        .expect("RFC 3339");
    let end_time: jiff::Timestamp = end["time"]
        .as_str()
        .expect("time")
        .parse()
        .expect("RFC 3339");
    let between = end_time.duration_since(start_time).as_millis();
    assert!(
        open_ms > 0 && (i128::from(open_ms) - between).abs() <= 1,
        "the end is the start plus the duration: {open_ms} ms, {between} ms apart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_over_http2_streams_changes_and_ends_with_kubectl() {
    Box::pin(kubectl_watch_streams_each_change_and_ends_with_kubectl(
        DEFAULTS,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_over_http1_streams_changes_and_ends_with_kubectl() {
    Box::pin(kubectl_watch_streams_each_change_and_ends_with_kubectl(
        HTTP1,
    ))
    .await;
}

/// The switch the HTTP/1.1 tests rely on really makes kubectl speak HTTP/1.1 (checked against
/// the stand-in, which records the version it was spoken to with). Go's own switch,
/// `GODEBUG=http2client=0`, does not: client-go sets up its HTTP/2 transport itself
/// (`k8s.io/apimachinery/pkg/util/net`), and only `DISABLE_HTTP2` stops it (kubectl v1.32.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_speaks_http1_when_told() {
    let h = Harness::start(POLICY).await;
    let direct = Kubectl::new(
        &h.standin.url(),
        h.standin.ca_pem(),
        &Credentials::Token(UPSTREAM_TOKEN.to_owned()),
    );
    let version_of = |env: &'static [(&'static str, &'static str)]| {
        let direct = &direct;
        let standin = &h.standin;
        async move {
            standin.clear_recorded();
            run(direct, &["get", "pods"], env, None).await.success();
            let request = standin
                .recorded()
                .into_iter()
                .find(|r| r.path() == "/api/v1/namespaces/default/pods")
                .expect("kubectl listed pods");
            request.version
        }
    };
    assert_eq!(version_of(DEFAULTS).await, Version::HTTP_2);
    assert_eq!(version_of(HTTP1).await, Version::HTTP_11);
}

/// `kubectl logs -f`: pushed lines arrive as they are pushed; killing kubectl ends the follow.
async fn kubectl_logs_follow_streams_lines_and_ends_with_kubectl(env: &[(&str, &str)]) {
    let h = start().await;
    h.standin.push_log("default", "web", "before");
    let kubectl = editor(&h);
    let mut logs = Running::spawn(&kubectl, &["logs", "-f", "web"], env);
    assert_eq!(logs.next_line().await, "before");
    streams(&h.standin, "the follow reaches the apiserver", |s| {
        s.log_follows == 1
    })
    .await;
    for line in ["one", "two", "three"] {
        h.standin.push_log("default", "web", line);
        assert_eq!(logs.next_line().await, line);
    }
    let request = requests_for(&h.standin, "log")
        .pop()
        .expect("the follow reached the apiserver");
    assert!(
        request.query().is_some_and(|q| q.contains("follow=true")),
        "{request:?}"
    );
    assert_carries_only_our_identity(&request, EDITOR, EDITOR_GROUPS);

    logs.kill().await;
    streams(&h.standin, "the follow ends when kubectl goes away", |s| {
        s.log_follows == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_over_http2_streams_lines_and_ends_with_kubectl() {
    Box::pin(kubectl_logs_follow_streams_lines_and_ends_with_kubectl(
        DEFAULTS,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_over_http1_streams_lines_and_ends_with_kubectl() {
    Box::pin(kubectl_logs_follow_streams_lines_and_ends_with_kubectl(
        HTTP1,
    ))
    .await;
}
