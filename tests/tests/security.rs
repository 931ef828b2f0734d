//! What a hostile tester found in the control plane, each a regression test named after what
//! broke: guesses slipping past the lockout under concurrency (on one control plane and across
//! replicas), anonymous clients locking out `admin`, no rate limits on the anonymous routes,
//! unbounded names and passwords stored or hashed, and logins, failed logins and token issues
//! missing from the audit trail. Clients at other addresses are played through a trusted proxy
//! (`--trusted-proxy 127.0.0.1`) naming them in `X-Forwarded-For`.

use std::time::Duration;

use infra_tests::control::{ControlHarness, Options};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";

fn behind_a_proxy(options: Options) -> Options {
    Options {
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("a CIDR")],
        ..options
    }
}

async fn make_user(h: &ControlHarness, admin: &str, name: &str) {
    let (status, body) = h
        .call(
            "POST",
            "/api/users",
            Some(admin),
            Some(json!({"name": name, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A password login of `name` from `client` (an address a trusted proxy names).
async fn login_from(
    h: &ControlHarness,
    client: &str,
    name: &str,
    password: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    h.call_with(
        "POST",
        "/api/login",
        None,
        Some(json!({"password": {"name": name, "password": password}})),
        &[("x-forwarded-for", client)],
    )
    .await
}

/// Every event of the control plane's audit trail.
async fn audit_events(h: &ControlHarness) -> Vec<infra_control::store::AuditEvent> {
    h.proxy
        .control
        .as_ref()
        .expect("a control plane")
        .store()
        .list_audit(0, 100_000)
        .await
        .expect("the audit trail")
}

/// How many password guesses at `name` were checked (each failed check is audited).
async fn checked_guesses(h: &ControlHarness, name: &str) -> usize {
    let events = audit_events(h).await;
    events
        .iter()
        .filter(|e| e.action == "user.login.failed" && e.target == format!("user {name:?}"))
        .count()
}

async fn concurrent_wrong_logins(h: &ControlHarness, name: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = h.http.clone();
        let url = format!("{}/api/login", h.control_url());
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("x-forwarded-for", format!("198.51.100.{}", i % 200 + 1))
                .json(&json!({"password": {"name": name, "password": "wrong-guess-00000"}}))
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("the task"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_wrong_logins_check_at_most_five_guesses() {
    let h = ControlHarness::start_with(
        "grants: []\n",
        behind_a_proxy(Options {
            client_burst: Some(1000),
            ..Options::default()
        }),
    )
    .await;
    let admin = h.admin().await;
    make_user(&h, &admin, "victim@example.com").await;
    let statuses = concurrent_wrong_logins(&h, "victim@example.com", 30).await;
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let locked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(wrong + locked, 30, "{statuses:?}");
    assert!(
        wrong <= 5,
        "at most 5 guesses checked, not {wrong}: {statuses:?}"
    );
    assert_eq!(checked_guesses(&h, "victim@example.com").await, wrong);
    // The right password is refused now too (from an address she never used).
    let (status, body, headers) =
        login_from(&h, "203.0.113.50", "victim@example.com", PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "locked");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_on_two_replicas_check_at_most_five_guesses() {
    let options = behind_a_proxy(Options {
        postgres: true,
        client_burst: Some(1000),
        ..Options::default()
    });
    let a = ControlHarness::start_with("grants: []\n", options.clone()).await;
    let b = ControlHarness::start_with(
        "grants: []\n",
        Options {
            postgres: false,
            replica_of: Some(a.store_of()),
            ..options
        },
    )
    .await;
    let admin = a.admin().await;
    make_user(&a, &admin, "victim@example.com").await;
    let (on_a, on_b) = tokio::join!(
        concurrent_wrong_logins(&a, "victim@example.com", 30),
        concurrent_wrong_logins(&b, "victim@example.com", 30)
    );
    let wrong = on_a.iter().chain(&on_b).filter(|s| **s == 401).count();
    assert!(
        wrong <= 5,
        "at most 5 guesses checked across replicas, not {wrong}: {on_a:?} {on_b:?}"
    );
    assert_eq!(checked_guesses(&a, "victim@example.com").await, wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_cannot_lock_admin_out_of_where_admin_logs_in() {
    let h = ControlHarness::start_with("grants: []\n", behind_a_proxy(Options::default())).await;
    // The admin logs in from their usual address.
    let (status, body, _) = login_from(
        &h,
        "192.0.2.10",
        "admin",
        infra_tests::control::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Strangers guess until the account is locked for everyone but the usual address.
    let mut refused = Vec::new();
    for i in 0..8 {
        let (status, _, _) =
            login_from(&h, &format!("203.0.113.{i}"), "admin", "not-the-password-1").await;
        refused.push(status);
    }
    assert_eq!(&refused[..5], &[401; 5], "{refused:?}");
    assert_eq!(&refused[5..], &[429; 3], "{refused:?}");
    // From the usual address the admin still logs in.
    let (status, body, _) = login_from(
        &h,
        "192.0.2.10",
        "admin",
        infra_tests::control::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(
        status, 200,
        "the owner's usual address is not locked: {body}"
    );
    let admin = body["access_key"].as_str().expect("a session").to_owned();
    // From a new address they would wait; an admin unlock lets them in, and is audited.
    let (status, _, _) = login_from(
        &h,
        "198.51.100.1",
        "admin",
        infra_tests::control::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(status, 429);
    let (status, body) = h
        .call("DELETE", "/api/users/admin/lockout", Some(&admin), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body, _) = login_from(
        &h,
        "198.51.100.1",
        "admin",
        infra_tests::control::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(status, 200, "after the unlock: {body}");
    let events = audit_events(&h).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "user.unlock" && e.actor == "admin"),
        "the unlock is audited"
    );
    // Only admins unlock.
    make_user(&h, &admin, "mallory@example.com").await;
    let mallory = h.login("mallory@example.com", PASSWORD).await;
    let (status, _) = h
        .call("DELETE", "/api/users/admin/lockout", Some(&mallory), None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_oidc_start_and_tokens_are_rate_limited_per_client_address() {
    let h = ControlHarness::start_with(
        "grants: []\n",
        behind_a_proxy(Options {
            client_rate_per_minute: Some(20),
            client_burst: Some(10),
            ..Options::default()
        }),
    )
    .await;
    let admin = h.admin().await;
    let token_from = |client: &'static str| {
        let h = &h;
        let admin = admin.clone();
        async move {
            h.call_with(
                "POST",
                "/api/tokens",
                Some(&admin),
                Some(json!({"destination": "testing"})),
                &[("x-forwarded-for", client)],
            )
            .await
        }
    };
    // The admin's own login above took one of 127.0.0.1's allowance, not 192.0.2.77's.
    for _ in 0..10 {
        let (status, body, _) = token_from("192.0.2.77").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, headers) = token_from("192.0.2.77").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_requests");
    let wait: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=4).contains(&wait), "Retry-After {wait}");
    // Another address has its own allowance, and logins share the same budget per address.
    let (status, body, _) = token_from("192.0.2.78").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = login_from(&h, "192.0.2.77", "admin", "wrong-password-0000").await;
    assert_eq!(status, 429, "logins count against the same address");
    let (status, body, _) = h
        .call_with(
            "POST",
            "/api/login/oidc",
            None,
            Some(json!({"provider": "none", "redirect_uri": "http://127.0.0.1:1/cb", "code_challenge": "x"})),
            &[("x-forwarded-for", "192.0.2.77")],
        )
        .await;
    assert_eq!(status, 429, "OIDC start too: {body}");
    // After the refill, the address may ask again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, body, _) = token_from("192.0.2.77").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_user_names_and_passwords_are_refused_before_any_work() {
    let h = ControlHarness::start_with("grants: []\n", behind_a_proxy(Options::default())).await;
    let admin = h.admin().await;
    let before = audit_events(&h).await.len();
    // 1.9 MB of name: past the body limit, read no further.
    let (status, body, _) = login_from(&h, "192.0.2.1", &"a".repeat(1_900_000), "x").await;
    assert_eq!(status, 413, "{body}");
    // Within the body limit, but longer than any name Infra keeps: refused, nothing counted.
    let (status, body, _) = login_from(&h, "192.0.2.2", &"b".repeat(300), PASSWORD).await;
    assert_eq!(status, 400, "{body}");
    // A 50 KB password is refused unhashed.
    let started = std::time::Instant::now();
    let (status, body, _) = login_from(&h, "192.0.2.3", "admin", &"c".repeat(50_000)).await;
    assert_eq!(status, 400, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let after = audit_events(&h).await.len();
    assert_eq!(after, before, "nothing was counted or recorded");
    let (status, body) = h
        .call(
            "POST",
            "/api/users",
            Some(&admin),
            Some(json!({"name": "d".repeat(300)})),
        )
        .await;
    assert_eq!(status, 400, "a 300-byte user name: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_failed_logins_and_token_issues_are_audited() {
    let h = ControlHarness::start_with("grants: []\n", behind_a_proxy(Options::default())).await;
    let admin = h.admin().await;
    let (status, _, _) = login_from(&h, "192.0.2.9", "admin", "not-the-password-1").await;
    assert_eq!(status, 401);
    let (status, _) = h
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"access_key": "nope.nope"})),
        )
        .await;
    assert_eq!(status, 401);
    let _token = h.token(&admin).await;
    let events = audit_events(&h).await;
    let has = |action: &str, detail: &str| {
        events
            .iter()
            .any(|e| e.action == action && e.detail.contains(detail))
    };
    assert!(has("user.login", "password"), "{events:#?}");
    assert!(has("user.login.failed", "192.0.2.9"), "{events:#?}");
    assert!(has("user.login.failed", "access key"), "{events:#?}");
    assert!(has("token.issue", "session"), "{events:#?}");
}
