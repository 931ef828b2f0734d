//! An audit log that cannot be written (`/dev/full`): counted in
//! `infra_proxy_audit_failures_total` and shown in `/readyz` either way; with `--audit-fail
//! closed` requests are refused with 503 meanwhile.

use std::time::Duration;

use infra_proxy::audit::FailMode;
use infra_tests::proxy::{Harness, http_get, https_get, wait_for};

use crate::{POLICY, VIEWER, status_of};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The number after `name ` in a metrics exposition.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The hole: a proxy whose audit log failed kept serving, and said nothing. With
/// `--audit-fail closed` it now answers 503 while it cannot record, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_log_refuses_requests_with_audit_fail_closed() {
    let h = Harness::start_with(POLICY, |args| {
        args.audit_log = "/dev/full".to_owned();
        args.audit_fail = FailMode::Closed;
    })
    .await;
    let bearer = format!("Bearer {}", h.token(VIEWER, &[], Duration::from_mins(5)));
    // The first request's line is what fails to be written; from then on, requests are refused.
    let body = wait_for(|| async {
        let (status, body) = https_get(&h, CONFIGMAPS, &[("authorization", &bearer)]).await;
        (status == 503).then_some(body)
    })
    .await;
    let status = status_of(&body);
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("audit log") && m.contains("--audit-fail closed")),
        "{body}"
    );
    let forwarded = h.standin.recorded().len();
    let (status, _) = https_get(&h, CONFIGMAPS, &[("authorization", &bearer)]).await;
    assert_eq!(status, 503, "still refused");
    assert_eq!(
        h.standin.recorded().len(),
        forwarded,
        "a refused request never reaches the apiserver"
    );

    let readyz = http_get(&format!("http://{}/readyz", h.proxy.admin_address)).await;
    assert!(
        readyz.contains("[!] audit: cannot write the audit log")
            && readyz.contains("refusing requests (--audit-fail closed)"),
        "{readyz}"
    );
    // The writer takes its queue every 10 ms: the refused requests' events fail too.
    wait_for(|| async {
        let metrics = http_get(&format!("http://{}/metrics", h.proxy.admin_address)).await;
        metric(&metrics, "infra_proxy_audit_failures_total")
            .is_some_and(|n| n >= 2.0)
            .then_some(())
    })
    .await;
}

/// With `--audit-fail open` (the default) the proxy keeps serving, and the failure is counted
/// and shown all the same; the proxy stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_log_is_counted_and_shown_with_audit_fail_open() {
    let h = Harness::start_with(POLICY, |args| {
        args.audit_log = "/dev/full".to_owned();
    })
    .await;
    let bearer = format!("Bearer {}", h.token(VIEWER, &[], Duration::from_mins(5)));
    for _ in 0..3 {
        let (status, body) = https_get(&h, CONFIGMAPS, &[("authorization", &bearer)]).await;
        assert_eq!(status, 200, "{body}");
    }
    let admin = h.proxy.admin_address;
    let metrics = wait_for(|| async {
        let metrics = http_get(&format!("http://{admin}/metrics")).await;
        metric(&metrics, "infra_proxy_audit_failures_total")
            .is_some_and(|n| n >= 3.0)
            .then_some(metrics)
    })
    .await;
    assert!(metrics.contains("infra_proxy_audit_failures_total"));
    let readyz = wait_for(|| async {
        let readyz = http_get(&format!("http://{admin}/readyz")).await;
        readyz.contains("[!] audit:").then_some(readyz)
    })
    .await;
    assert!(
        readyz.contains("cannot write the audit log")
            && readyz.contains("serving anyway (--audit-fail open)"),
        "{readyz}"
    );
    let (status, _) = https_get(&h, CONFIGMAPS, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "still serving");
}
