//! What access requests call out to: signed webhooks retried after a failing receiver, a Slack
//! payload with the commands, a failing target in /readyz and the metrics, and on-call approval
//! from a PagerDuty stand-in.

use infra_tests::certs::Ca;
use infra_tests::control::{ControlHarness, Options};
use infra_tests::hooks::Hooks;
use infra_tests::proxy::{DESTINATION, http_get, wait_for};
use serde_json::Value;

use super::{ask, call, id_of, people, policy, time_until};

/// The documented check a webhook receiver makes: `Infra-Signature: t=<t>,v1=<hex>`, the
/// HMAC-SHA256 over `<t>.<body>`, compared in constant time, `t` within 5 minutes.
fn verify(secret: &str, signature: &str, body: &[u8], now: u64) -> bool {
    let Some((t, mac)) = signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let Ok(t) = t.parse::<u64>() else {
        return false;
    };
    if now.abs_diff(t) > 300 {
        return false;
    }
    let Ok(mac) = hex_decode(mac) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &mac).is_ok()
}

fn hex_decode(text: &str) -> Result<Vec<u8>, ()> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or(())
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_retried_and_slack_gets_the_commands() {
    let ca = Ca::new("hooks CA");
    let hooks = Hooks::start(&ca, "unused").await;
    let secrets = tempfile::tempdir().expect("dir");
    let secret_file = secrets.path().join("hook-secret");
    std::fs::write(&secret_file, "hook-secret-value\n").expect("write");
    let ca_file = secrets.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write");
    let extra = format!(
        "notify:
  - name: hook
    kind: webhook
    url: {}
    secret: file:{}
  - name: chat
    kind: slack
    url: {}
",
        hooks.url("/hook"),
        secret_file.display(),
        hooks.url("/slack")
    );
    // The receiver is down for the first two deliveries; Slack is down for good.
    hooks.fail_next("/hook", 2, 503);
    hooks.fail_next("/slack", 1000, 500);
    let h = ControlHarness::start_with(
        &policy(&extra),
        Options {
            provider_ca_file: Some(ca_file),
            ..Options::default()
        },
    )
    .await;
    let admin = h.admin().await;
    let keys = people(
        &h,
        &admin,
        &["carl@example.com"],
        &[("Engineering", &["carl@example.com"])],
    )
    .await;
    let (_, request) = ask(&h, &keys[0], "view", DESTINATION, 600).await;
    let id = id_of(&request);

    let delivered = wait_for(|| async {
        let got: Vec<_> = hooks
            .received()
            .into_iter()
            .filter(|r| r.uri == "/hook")
            .collect();
        (got.len() >= 3).then_some(got)
    })
    .await;
    // Three attempts of one event: the same id, each signed anew, the last one accepted.
    let ids: Vec<&str> = delivered
        .iter()
        .filter_map(|r| r.header("infra-event-id"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    for attempt in &delivered {
        let signature = attempt.header("infra-signature").expect("signed");
        assert!(
            verify("hook-secret-value", signature, &attempt.body, unix_now()),
            "{signature}"
        );
        // A wrong secret, a changed body and an old timestamp all fail the check.
        assert!(!verify(
            "other-secret",
            signature,
            &attempt.body,
            unix_now()
        ));
        let mut changed = attempt.body.clone();
        changed.push(b' ');
        assert!(!verify(
            "hook-secret-value",
            signature,
            &changed,
            unix_now()
        ));
        assert!(!verify(
            "hook-secret-value",
            signature,
            &attempt.body,
            unix_now() + 600
        ));
    }
    let event: Value = serde_json::from_slice(&delivered[2].body).expect("JSON");
    assert_eq!(event["type"], "access_request.pending");
    assert_eq!(event["request"]["id"], id);
    assert_eq!(event["actor"], "carl@example.com");

    let slack =
        wait_for(|| async { hooks.received().into_iter().find(|r| r.uri == "/slack") }).await;
    // A failing target shows in /readyz (a warning: requests go on) and in the metrics.
    let admin_url = format!("http://{}", h.proxy.admin_address);
    let readyz = wait_for(|| async {
        let report = http_get(&format!("{admin_url}/readyz")).await;
        report.contains("[!] notifications").then_some(report)
    })
    .await;
    assert!(readyz.contains("notification target \"chat\""), "{readyz}");
    assert!(readyz.contains("readyz check passed"), "{readyz}");
    let metrics = http_get(&format!("{admin_url}/metrics")).await;
    assert!(
        metrics.contains("infra_proxy_request_notification_failures ")
            && !metrics.contains("infra_proxy_request_notification_failures 0"),
        "{metrics}"
    );
    assert!(slack.header("infra-signature").is_none());
    let payload: Value = serde_json::from_slice(&slack.body).expect("JSON");
    let text = payload.to_string();
    assert!(
        text.contains(&format!("infra requests approve {id}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("infra requests deny {id}")),
        "{text}"
    );
    assert!(
        payload["text"]
            .as_str()
            .unwrap_or("")
            .contains("carl@example.com")
    );

    let (_, targets) = call(&h, "GET", "/api/request-notifications", &admin, None).await;
    let hook = targets["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["name"] == "hook"))
        .expect("the hook target")
        .clone();
    assert_eq!(hook["delivered"], 1, "{hook}");
    assert_eq!(hook["failed_attempts"], 2, "{hook}");
    assert!(
        hook["last_error"].as_str().unwrap_or("").contains("503"),
        "{hook}"
    );
    assert!(
        !hook.to_string().contains(&hooks.url("/hook")),
        "the URL is not shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_is_on_call_is_approved_at_once_and_nobody_else() {
    let ca = Ca::new("pagerduty CA");
    let pagerduty = Hooks::start(&ca, "pd-token-value").await;
    pagerduty.set_on_call(&["Carl@Example.com"]);
    let secrets = tempfile::tempdir().expect("dir");
    let token_file = secrets.path().join("pd-token");
    std::fs::write(&token_file, "pd-token-value\n").expect("write");
    let ca_file = secrets.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write");
    let policy = format!(
        "requests:
  - name: on-call
    group: Engineering
    roles: [edit]
    resources: [{DESTINATION}]
    maxDuration: 2h
    reviewers: {{group: SRE}}
    autoApprove: {{onCall: pagerduty-primary}}
onCall:
  - name: pagerduty-primary
    kind: pagerduty
    scheduleID: P123ABC
    url: {}
    tokenFrom: file:{}
",
        pagerduty.url(""),
        token_file.display()
    );
    let h = ControlHarness::start_with(
        &policy,
        Options {
            provider_ca_file: Some(ca_file),
            ..Options::default()
        },
    )
    .await;
    let admin = h.admin().await;
    let keys = people(
        &h,
        &admin,
        &["carl@example.com", "dave@example.com"],
        &[("Engineering", &["carl@example.com", "dave@example.com"])],
    )
    .await;
    let (carl, dave) = (&keys[0], &keys[1]);
    let (status, request) = ask(&h, carl, "edit", DESTINATION, 3600).await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["state"], "approved", "{request}");
    assert_eq!(
        request["reviews"][0]["reviewer"],
        "on-call:pagerduty-primary"
    );
    let token = h.token(carl).await;
    let allowed = time_until(&h, &token, 200).await;
    eprintln!("on-call access allowed after {allowed:?}");

    // dave is not on call: his request waits for a reviewer.
    let (status, request) = ask(&h, dave, "edit", DESTINATION, 3600).await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["state"], "pending", "{request}");
    let asked: Vec<_> = pagerduty
        .received()
        .into_iter()
        .filter(|r| r.uri.starts_with("/oncalls"))
        .collect();
    assert!(!asked.is_empty());
    assert!(
        asked[0].uri.contains("schedule_ids%5B%5D=P123ABC"),
        "{}",
        asked[0].uri
    );
    assert_eq!(
        asked[0].header("accept"),
        Some("application/vnd.pagerduty+json;version=2")
    );
}
