//! Access requests with the real `infra` binary: a user asks and waits, a reviewer finds the
//! request in their pending list and approves it, the wait returns, and kubectl works at once
//! through the context the CLI added, with no new `infra login`.

use std::time::Duration;

use infra_tests::control::ControlHarness;
use infra_tests::proxy::{DESTINATION, wait_for};
use serde_json::Value;

use crate::{Person, admin_with_suzie};

const PASSWORD: &str = "another-long-passphrase";

fn policy() -> String {
    format!(
        "requests:
  - name: eng
    group: Engineering
    roles: [view]
    resources: [{DESTINATION}.*]
    maxDuration: 4h
    reviewers: {{group: SRE}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_wait_approve_and_kubectl_works_without_a_new_login() {
    let h = ControlHarness::start(&policy()).await;
    let admin = admin_with_suzie(&h).await;
    for user in ["carl@example.com", "sam@example.com"] {
        admin
            .infra_with(
                &["users", "add", user, "--password-stdin"],
                &[],
                &format!("{PASSWORD}\n"),
            )
            .await
            .ok();
    }
    for (user, group) in [
        ("carl@example.com", "Engineering"),
        ("sam@example.com", "SRE"),
    ] {
        admin.infra(&["groups", "add", group]).await.ok();
        admin.infra(&["groups", "adduser", user, group]).await.ok();
    }
    let carl = Person::new();
    carl.login(&h, "carl@example.com", PASSWORD).await.ok();
    let sam = Person::new();
    sam.login(&h, "sam@example.com", PASSWORD).await.ok();

    // Outside the rules: refused, with the closest rule named.
    let refused = carl
        .infra(&[
            "request",
            DESTINATION,
            "--role",
            "edit",
            "--for",
            "2h",
            "--reason",
            "INC-1",
        ])
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("rule \"eng\""),
        "{}",
        refused.stderr
    );

    let resource = format!("{DESTINATION}.default");
    let waiting = carl
        .command(
            &crate::infra_binary(),
            &[
                "request", &resource, "--role", "view", "--for", "1h", "--reason", "INC-1234",
                "--wait",
            ],
            &[],
        )
        .spawn()
        .expect("infra request starts");

    // The reviewer finds it pending and approves it.
    let id = wait_for(|| async {
        let list = sam
            .infra(&["requests", "list", "--pending", "-o", "json"])
            .await
            .ok();
        let list: Value = serde_json::from_str(&list.stdout).expect("JSON");
        list.as_array()
            .and_then(|items| items.first())
            .and_then(|r| r["id"].as_i64())
    })
    .await;
    let table = sam.infra(&["requests", "list", "--pending"]).await.ok();
    assert!(table.stdout.contains("INC-1234"), "{}", table.stdout);
    // Nobody approves their own.
    let own = carl.infra(&["requests", "approve", &id.to_string()]).await;
    assert_ne!(own.code, 0);
    assert!(own.stderr.contains("your own request"), "{}", own.stderr);
    sam.infra(&["requests", "approve", &id.to_string(), "--comment", "ok"])
        .await
        .ok();

    let waited = tokio::time::timeout(Duration::from_secs(20), waiting.wait_with_output())
        .await
        .expect("--wait returns once approved")
        .expect("ran");
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{stderr}");
    assert!(stderr.contains("Approved: view on"), "{stderr}");

    // kubectl works with what the CLI wrote, no new login.
    let pods = carl
        .kubectl(&[
            "--context",
            &format!("infra:{DESTINATION}"),
            "get",
            "pods",
            "-n",
            "default",
        ])
        .await;
    assert_eq!(pods.code, 0, "{}", pods.stderr);
    let mine = carl.infra(&["requests", "list"]).await.ok();
    assert!(mine.stdout.contains("approved until"), "{}", mine.stdout);
    let shown = carl
        .infra(&["requests", "show", &id.to_string()])
        .await
        .ok();
    assert!(
        shown.stdout.contains("approved by sam@example.com"),
        "{}",
        shown.stdout
    );
}
