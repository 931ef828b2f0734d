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

/// The fields of `audit.k8s.io/v1` `Event` (k8s.io/apiserver, `pkg/apis/audit/v1/types.go`),
/// with `kind` and `apiVersion`; of its `ObjectReference`; and of `authentication/v1` `UserInfo`.
const K8S_EVENT_FIELDS: [&str; 18] = [
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
];
const K8S_OBJECT_REF_FIELDS: [&str; 8] = [
    "resource",
    "namespace",
    "name",
    "uid",
    "apiGroup",
    "apiVersion",
    "resourceVersion",
    "subresource",
];
const K8S_USER_FIELDS: [&str; 4] = ["username", "uid", "groups", "extra"];

/// Checks `line` against `audit.k8s.io/v1` `Event`: the required fields present with values of
/// their type and enums, no field the type does not have.
fn check_k8s_event(line: &serde_json::Value) {
    let object = line.as_object().expect("an object");
    for key in object.keys() {
        assert!(K8S_EVENT_FIELDS.contains(&key.as_str()), "{key} in {line}");
    }
    assert_eq!(line["kind"], "Event");
    assert_eq!(line["apiVersion"], "audit.k8s.io/v1");
    assert!(
        ["None", "Metadata", "Request", "RequestResponse"]
            .contains(&line["level"].as_str().unwrap_or_default()),
        "{line}"
    );
    assert!(
        [
            "RequestReceived",
            "ResponseStarted",
            "ResponseComplete",
            "Panic"
        ]
        .contains(&line["stage"].as_str().unwrap_or_default()),
        "{line}"
    );
    for key in ["auditID", "requestURI", "verb"] {
        assert!(
            line[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}: {line}"
        );
    }
    for user in ["user", "impersonatedUser"] {
        if let Some(user) = line.get(user) {
            for key in user.as_object().expect("UserInfo").keys() {
                assert!(K8S_USER_FIELDS.contains(&key.as_str()), "{key} in {line}");
            }
        }
    }
    assert!(line["user"]["username"].is_string(), "{line}");
    if let Some(reference) = line.get("objectRef") {
        for key in reference.as_object().expect("ObjectReference").keys() {
            assert!(
                K8S_OBJECT_REF_FIELDS.contains(&key.as_str()),
                "{key} in {line}"
            );
        }
    }
    for key in ["requestReceivedTimestamp", "stageTimestamp"] {
        let text = line[key].as_str().expect("a MicroTime");
        assert!(text.parse::<jiff::Timestamp>().is_ok(), "{key}: {text}");
    }
    assert!(line["responseStatus"]["code"].is_u64(), "{line}");
    if let Some(annotations) = line.get("annotations") {
        assert!(
            annotations
                .as_object()
                .expect("a map")
                .values()
                .all(serde_json::Value::is_string),
            "{line}"
        );
    }
}

/// `--audit-format kubernetes`: the audit log is the apiserver's format, so tools that read an
/// apiserver's audit log read infra-proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_format_kubernetes_writes_audit_k8s_io_v1_events() {
    let h = Harness::start_with(POLICY, |args| {
        args.audit_format = infra_proxy::audit::Format::Kubernetes;
    })
    .await;
    let bearer = format!("Bearer {}", h.token(VIEWER, &[], Duration::from_mins(5)));
    let (status, _) = https_get(&h, CONFIGMAPS, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    let (status, _) = https_get(
        &h,
        "/api/v1/namespaces/kube-system/secrets/db",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 403);
    let log = h.dir.path().join("audit.log");
    let lines: Vec<serde_json::Value> = wait_for(|| async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    for line in &lines {
        check_k8s_event(line);
    }
    let allowed = &lines[0];
    assert_eq!(allowed["verb"], "list");
    assert_eq!(allowed["objectRef"]["resource"], "configmaps");
    assert_eq!(allowed["objectRef"]["namespace"], "default");
    assert_eq!(allowed["user"]["username"], VIEWER);
    assert_eq!(allowed["responseStatus"]["code"], 200);
    assert_eq!(
        allowed["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(
        allowed["annotations"]["authorization.k8s.io/reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("infra: allowed by the grant of view to user")),
        "{allowed}"
    );
    let denied = &lines[1];
    assert_eq!(denied["verb"], "get");
    assert_eq!(denied["objectRef"]["name"], "db");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}
