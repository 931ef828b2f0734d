//! Sync end to end: revocation on the proxy in the control plane's process and on proxies in
//! other clusters (proxy-only mode, following the control API's sync stream), streams closed
//! when their user loses access, a restart with the control plane down, and failing closed when
//! the policy is stale. Latencies are measured and printed (`--nocapture`); the asserted bounds
//! are the (1 s for revocation, 5 s for open streams).

use std::time::{Duration, Instant};

use infra_tests::control::{ControlHarness, Options, RemoteProxy, client_for, status_of};
use infra_tests::proxy::{DESTINATION, http_get, wait_for};
use serde_json::json;

const PODS: &str = "/api/v1/namespaces/default/pods";
const PASSWORD: &str = "a-long-enough-passphrase";

async fn user(h: &ControlHarness, admin: &str, name: &str) -> String {
    let made = h.api(Some(admin)).create_user(name, Some(PASSWORD)).await;
    assert_eq!(made.map(|u| u.name), Ok(name.to_owned()));
    h.login(name, PASSWORD).await
}

/// suzie@example.com, a member of Engineering, logged in; answers her session key.
async fn engineer(h: &ControlHarness, admin: &str) -> String {
    let suzie = user(h, admin, "suzie@example.com").await;
    let api = h.api(Some(admin));
    assert_eq!(
        api.create_group("Engineering").await.map(|g| g.name),
        Ok("Engineering".to_owned())
    );
    assert_eq!(
        api.add_member("Engineering", "suzie@example.com").await,
        Ok(())
    );
    suzie
}

async fn ok(
    h: &ControlHarness,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) {
    let (status, answer) = h.call(method, path, Some(key), body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
}

/// A new access key named `name` of the holder of `key` (for a proxy in another cluster).
async fn access_key(h: &ControlHarness, key: &str, name: &str) -> String {
    match h.api(Some(key)).create_key(name, None).await {
        Ok(made) => made.key.expect("a new key shows its secret"),
        Err(refused) => panic!("a new access key: {refused:?}"),
    }
}

async fn token_for(h: &ControlHarness, key: &str, destination: &str) -> String {
    match h.api(Some(key)).token(destination).await {
        Ok(answer) => answer.token,
        Err(refused) => panic!("a token for {destination}: {refused:?}"),
    }
}

/// Polls until `GET PODS` at `base` answers `want`; answers how long it took.
async fn time_until(client: &reqwest::Client, base: &str, token: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = status_of(client, base, PODS, token).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{base} still answers {status}, not {want}, after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_membership_a_session_or_a_user_takes_effect_on_the_proxy_at_once() {
    let h = ControlHarness::start(
        "grants:\n  - group: Engineering\n    role: view\n    resource: testing\n",
    )
    .await;
    let admin = h.admin().await;
    let suzie = engineer(&h, &admin).await;
    let token = h.token(&suzie).await;
    let client = client_for(&h.ca);
    let proxy = h.proxy_url();
    time_until(&client, &proxy, &token, 200).await;

    // The token says Engineering; the snapshot no longer does.
    ok(
        &h,
        "DELETE",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    let membership = time_until(&client, &proxy, &token, 403).await;
    // And back, with the same token.
    ok(
        &h,
        "PUT",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    time_until(&client, &proxy, &token, 200).await;

    // Logging out ends the session the token was traded for.
    ok(&h, "POST", "/api/logout", &suzie, None).await;
    let logout = time_until(&client, &proxy, &token, 401).await;

    // Deleting the user ends every session.
    let again = h.login("suzie@example.com", PASSWORD).await;
    let token = h.token(&again).await;
    time_until(&client, &proxy, &token, 200).await;
    ok(&h, "DELETE", "/api/users/suzie@example.com", &admin, None).await;
    let deleted = time_until(&client, &proxy, &token, 401).await;

    eprintln!(
        "in-process revocation: membership {membership:?}, logout {logout:?}, user deletion {deleted:?}"
    );
    for latency in [membership, logout, deleted] {
        assert!(latency < Duration::from_secs(1), "{latency:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_watches_of_a_user_who_lost_access_are_closed() {
    let h = ControlHarness::start("grants: []\n").await;
    let admin = h.admin().await;
    let suzie = user(&h, &admin, "suzie@example.com").await;
    let (status, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": "suzie@example.com", "role": "view", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let kubectl = h.kubectl_with(&suzie).await;
    wait_for(|| async {
        kubectl
            .run(&["get", "pods", "-n", "default"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    let mut watch = kubectl
        .command(&["get", "pods", "-n", "default", "--watch"])
        .spawn()
        .expect("kubectl get --watch starts");
    h.standin.wait_for_streams(|s| s.watches >= 1).await;

    let id = grant["id"].as_i64().expect("id");
    let started = Instant::now();
    ok(&h, "DELETE", &format!("/api/grants/{id}"), &admin, None).await;
    h.standin.wait_for_streams(|s| s.watches == 0).await;
    let closed = started.elapsed();
    let exited = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await;
    eprintln!("watch closed {closed:?} after the grant was removed; kubectl: {exited:?}");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    assert!(exited.is_ok(), "kubectl's watch ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_follow_one_control_plane() {
    let h = ControlHarness::start("grants: []\n").await;
    let admin = h.admin().await;
    // The proxies of the other clusters sign in as a connector.
    let connector = user(&h, &admin, "connector@infra").await;
    ok(
        &h,
        "POST",
        "/api/grants",
        &admin,
        Some(json!({"user": "connector@infra", "role": "connector", "resource": "infra"})),
    )
    .await;
    let key = access_key(&h, &connector, "proxies").await;
    let east = RemoteProxy::start(&h, "east", &key, 900, None).await;
    let west = RemoteProxy::start(&h, "west", &key, 900, None).await;

    // Both register themselves; the CLI's "my access" lists every destination.
    let destinations = wait_for(|| async {
        let (_, list) = h.call("GET", "/api/destinations", Some(&admin), None).await;
        let names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["connected"] == true)
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        (names.len() == 3).then_some(names)
    })
    .await;
    assert!(
        destinations.contains(&"east".to_owned()),
        "{destinations:?}"
    );

    let suzie = user(&h, &admin, "suzie@example.com").await;
    ok(
        &h,
        "POST",
        "/api/groups",
        &admin,
        Some(json!({"name": "Engineering"})),
    )
    .await;
    for resource in [DESTINATION, "east", "west"] {
        ok(
            &h,
            "POST",
            "/api/grants",
            &admin,
            Some(json!({"group": "Engineering", "role": "view", "resource": resource})),
        )
        .await;
    }
    let (_, access) = h.call("GET", "/api/me/access", Some(&suzie), None).await;
    assert_eq!(access["total"], 0, "not yet a member: {access}");

    let proxies = [
        (
            h.proxy_url(),
            client_for(&h.ca),
            token_for(&h, &suzie, DESTINATION).await,
        ),
        (
            east.url(),
            client_for(&east.ca),
            token_for(&h, &suzie, "east").await,
        ),
        (
            west.url(),
            client_for(&west.ca),
            token_for(&h, &suzie, "west").await,
        ),
    ];
    // A token for one destination is no good at another's proxy.
    assert_eq!(
        status_of(&proxies[1].1, &proxies[1].0, PODS, &proxies[2].2).await,
        401
    );

    let mut latencies = Vec::new();
    for _ in 0..10 {
        ok(
            &h,
            "PUT",
            "/api/groups/Engineering/members/suzie@example.com",
            &admin,
            None,
        )
        .await;
        for (url, client, token) in &proxies {
            time_until(client, url, token, 200).await;
        }
        ok(
            &h,
            "DELETE",
            "/api/groups/Engineering/members/suzie@example.com",
            &admin,
            None,
        )
        .await;
        let waits = proxies
            .iter()
            .map(|(url, client, token)| time_until(client, url, token, 403));
        latencies.extend(futures_util::future::join_all(waits).await);
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "revocation on 3 proxies (1 in-process, 2 synced over the API), {} samples: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        latencies.len()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    drop((east, west));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarts_on_its_saved_policy_while_the_control_plane_is_down_and_fails_closed_when_stale()
 {
    let h = ControlHarness::start("grants: []\n").await;
    let admin = h.admin().await;
    let key = access_key(&h, &admin, "east proxy").await;
    let east = RemoteProxy::start(&h, "east", &key, 900, None).await;
    let suzie = user(&h, &admin, "suzie@example.com").await;
    ok(
        &h,
        "POST",
        "/api/grants",
        &admin,
        Some(json!({"user": "suzie@example.com", "role": "view", "resource": "east"})),
    )
    .await;
    let token = token_for(&h, &suzie, "east").await;
    let client = client_for(&east.ca);
    time_until(&client, &east.url(), &token, 200).await;
    let saved = east.dir.path().join("snapshot.json");
    assert!(saved.exists());

    // The control plane goes away; a second proxy of `east` starts from the saved snapshot.
    h.proxy.drain.drain(Duration::from_millis(200)).await;
    let restarted = RemoteProxy::start(&h, "east", &key, 10, Some(saved)).await;
    let started = Instant::now();
    let client = client_for(&restarted.ca);
    let first = client
        .get(format!("{}{PODS}", restarted.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    let status = first.status().as_u16();
    let body = first.text().await.unwrap_or_default();
    assert_eq!(status, 200, "the saved policy is in force: {body}");

    // Beyond the staleness bound it refuses, says why, and /readyz says so too.
    let response = wait_for(|| async {
        let response = client
            .get(format!("{}{PODS}", restarted.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answer");
        (response.status() == 503).then_some(response)
    })
    .await;
    eprintln!("failed closed {:?} after start", started.elapsed());
    let status: serde_json::Value = response.json().await.expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .expect("message")
            .contains("has not heard from the control plane"),
        "{status}"
    );
    let ready = http_get(&format!("http://{}/readyz", restarted.proxy.admin_address)).await;
    assert!(ready.contains("control-plane"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_replicas_on_postgresql_learn_of_each_others_changes() {
    let policy = "grants:\n  - group: Engineering\n    role: view\n    resource: testing\n";
    let a = ControlHarness::start_with(
        policy,
        Options {
            postgres: true,
            ..Options::default()
        },
    )
    .await;
    let b = ControlHarness::start_with(
        policy,
        Options {
            replica_of: Some(a.store_of()),
            ..Options::default()
        },
    )
    .await;
    let admin = a.admin().await;
    let suzie = engineer(&a, &admin).await;

    // Suzie's session was made on replica a; replica b's proxy knows it and her group.
    let token = token_for(&b, &suzie, DESTINATION).await;
    let client = client_for(&b.ca);
    time_until(&client, &b.proxy_url(), &token, 200).await;

    // Changes made on a reach b's proxy: a membership, then the session itself.
    ok(
        &a,
        "DELETE",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    let membership = time_until(&client, &b.proxy_url(), &token, 403).await;
    ok(
        &a,
        "PUT",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    time_until(&client, &b.proxy_url(), &token, 200).await;
    ok(&a, "POST", "/api/logout", &suzie, None).await;
    let logout = time_until(&client, &b.proxy_url(), &token, 401).await;
    eprintln!("replica to replica: membership {membership:?}, logout {logout:?}");
    assert!(membership < Duration::from_secs(1), "{membership:?}");
    assert!(logout < Duration::from_secs(1), "{logout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_catch_up_when_the_control_plane_returns() {
    let mut h = ControlHarness::start("grants: []\n").await;
    let admin = h.admin().await;
    let key = access_key(&h, &admin, "east proxy").await;
    let east = RemoteProxy::start(&h, "east", &key, 900, None).await;
    let suzie = user(&h, &admin, "suzie@example.com").await;
    let token = token_for(&h, &suzie, "east").await;
    let client = client_for(&east.ca);
    time_until(&client, &east.url(), &token, 403).await;

    // While the control plane is down, east keeps deciding with what it has; an admin edits the
    // policy file, which the control plane reads when it returns.
    h.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&client, &east.url(), PODS, &token).await, 403);
    h.write_policy("grants:\n  - user: suzie@example.com\n    role: view\n    resource: east\n");
    h.restart().await;
    let caught_up = time_until(&client, &east.url(), &token, 200).await;
    eprintln!("east was current {caught_up:?} after the control plane returned");
    assert!(caught_up < Duration::from_mins(1), "{caught_up:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_session_of_a_user_who_lost_access_is_closed() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let h = ControlHarness::start("grants: []\n").await;
    h.standin
        .create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        }))
        .expect("the pod is created");
    let admin = h.admin().await;
    let suzie = user(&h, &admin, "suzie@example.com").await;
    let (status, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": "suzie@example.com", "role": "edit", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let kubectl = h.kubectl_with(&suzie).await;
    let mut command = kubectl.command(&["exec", "-i", "web", "--", "cat"]);
    command.stdin(std::process::Stdio::piped());
    let mut child = command.spawn().expect("kubectl exec starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    stdin.write_all(b"still here\n").await.expect("written");
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .expect("cat answers")
        .expect("readable");
    assert_eq!(line.as_deref(), Some("still here"));
    h.standin.wait_for_streams(|s| s.upgrades == 1).await;

    let id = grant["id"].as_i64().expect("id");
    let started = Instant::now();
    ok(&h, "DELETE", &format!("/api/grants/{id}"), &admin, None).await;
    h.standin.wait_for_streams(|s| s.upgrades == 0).await;
    let closed = started.elapsed();
    let exited = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    eprintln!("exec session closed {closed:?} after the grant was removed; kubectl: {exited:?}");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    assert!(exited.is_ok(), "kubectl exec ended");
    drop(stdin);
}
