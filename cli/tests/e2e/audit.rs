//! The audit trail end to end, on SQLite and on PostgreSQL: kubectl requests through two proxies
//! (the control plane's own and one in another cluster) in `infra audit` with the grant that
//! allowed each or the reason for the denial, control-plane changes with their actor; a proxy
//! whose control plane is down spools, restarts, and delivers everything once when it returns;
//! `infra audit --follow` sees a new request as it happens.

use std::time::{Duration, Instant};

use infra_api::audit::Event;
use infra_tests::control::{ControlHarness, Options, RemoteProxy, client_for, status_of};
use infra_tests::proxy::{DESTINATION, wait_for};
use tokio::io::AsyncBufReadExt as _;

use crate::{POLICY, Person, SUZIE, SUZIE_PASSWORD, admin_with_suzie};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn harness(postgres: bool) -> ControlHarness {
    ControlHarness::start_with(
        POLICY,
        Options {
            postgres,
            ..Options::default()
        },
    )
    .await
}

/// A connector's access key, for proxies in other clusters.
async fn connector_key(admin: &Person) -> String {
    admin
        .infra_with(
            &["users", "add", "proxies@infra", "--password-stdin"],
            &[],
            &format!("{SUZIE_PASSWORD}\n"),
        )
        .await
        .ok();
    admin
        .infra(&[
            "grants",
            "add",
            "proxies@infra",
            "infra",
            "--role",
            "connector",
        ])
        .await
        .ok();
    let key = admin
        .infra(&["keys", "add", "east", "--user", "proxies@infra"])
        .await
        .ok();
    key.stdout.trim().to_owned()
}

/// `infra audit ARGS -o json`, parsed.
async fn audit(admin: &Person, args: &[&str]) -> Vec<Event> {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--limit", "1000"]);
    let run = admin.infra(&all).await.ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

async fn requests_on_two_proxies_with_their_grant(postgres: bool) {
    let h = harness(postgres).await;
    let admin = admin_with_suzie(&h).await;
    let key = connector_key(&admin).await;
    let east = RemoteProxy::start(&h, "east", &key, 900, None).await;
    wait_for(|| async {
        let list = admin.infra(&["destinations", "list", "-o", "json"]).await;
        list.stdout.contains("\"east\"").then_some(())
    })
    .await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    admin
        .infra(&["grants", "add", SUZIE, "east.default", "--role", "edit"])
        .await
        .ok();

    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    suzie.infra(&["use", "east.default"]).await.ok();
    suzie.kubectl(&["get", "pods"]).await.ok();
    suzie.infra(&["use", DESTINATION]).await.ok();
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();
    let denied = suzie
        .kubectl(&["delete", "pod", "web-1", "-n", "default"])
        .await;
    assert_ne!(denied.code, 0, "view does not delete: {}", denied.stdout);

    // Both proxies' requests, in one place.
    let events = wait_for(|| async {
        let events = audit(&admin, &["--user", SUZIE, "--kind", "request"]).await;
        let east = events
            .iter()
            .any(|e| e.destination.as_deref() == Some("east"));
        let denied = events.iter().any(|e| e.decision.as_deref() == Some("deny"));
        (east && denied).then_some(events)
    })
    .await;
    let listed = |destination: &str| {
        events
            .iter()
            .find(|e| {
                e.destination.as_deref() == Some(destination)
                    && e.verb.as_deref() == Some("list")
                    && e.resource.as_deref() == Some("pods")
            })
            .unwrap_or_else(|| panic!("no list of pods on {destination} in {events:#?}"))
    };
    let on_east = listed("east");
    assert_eq!(
        on_east.grant.as_deref(),
        Some("edit to user \"suzie@example.com\" on east.default"),
        "{on_east:?}"
    );
    assert_eq!(on_east.code, Some(200));
    assert!(
        on_east
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("kubectl"))
    );
    let here = listed(DESTINATION);
    assert_eq!(
        here.grant.as_deref(),
        Some("view to user \"suzie@example.com\" on testing"),
        "{here:?}"
    );
    let refused = events
        .iter()
        .find(|e| e.decision.as_deref() == Some("deny"))
        .expect("the denial");
    assert_eq!(refused.verb.as_deref(), Some("delete"));
    assert_eq!(refused.name.as_deref(), Some("web-1"));
    assert_eq!(refused.code, Some(403));
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot delete")),
        "{refused:?}"
    );
    assert_eq!(refused.grant, None);

    // --denied, in the table.
    let table = admin
        .infra(&["audit", "--user", SUZIE, "--denied"])
        .await
        .ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", table.stdout);
    assert!(lines[0].starts_with("TIME"), "{}", table.stdout);
    assert!(
        lines[1].contains("delete")
            && lines[1].contains("pods/web-1")
            && lines[1].ends_with("deny"),
        "{}",
        table.stdout
    );

    // Control-plane changes with their actor, and the logins.
    let changes = audit(&admin, &["--kind", "change", "--verb", "grant.create"]).await;
    assert!(
        changes.iter().any(|e| e.user.as_deref() == Some("admin")
            && e.target
                .as_deref()
                .is_some_and(|t| t.contains("suzie@example.com"))),
        "{changes:#?}"
    );
    let logins = audit(&admin, &["--kind", "login", "--user", SUZIE]).await;
    assert!(
        logins
            .iter()
            .any(|e| e.decision.as_deref() == Some("success")),
        "{logins:#?}"
    );
    drop(east);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_requests_on_two_proxies_appear_with_their_grant() {
    Box::pin(requests_on_two_proxies_with_their_grant(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_requests_on_two_proxies_appear_with_their_grant() {
    Box::pin(requests_on_two_proxies_with_their_grant(true)).await;
}

async fn east_events(admin: &Person) -> Vec<Event> {
    audit(admin, &["--destination", "east", "--kind", "request"]).await
}

/// A proxy of destination `east` syncing with `key` (its arguments changed by `configure`),
/// where suzie may view, with suzie's token and a client; returns once suzie is served.
async fn east_serving_suzie(
    h: &ControlHarness,
    admin: &Person,
    key: &str,
    snapshot: std::path::PathBuf,
    configure: impl FnOnce(&mut infra_tests::infra_proxy::config::ServeArgs),
) -> (RemoteProxy, String, reqwest::Client) {
    let east = Box::pin(RemoteProxy::start_with(
        h,
        "east",
        key,
        900,
        Some(snapshot),
        configure,
    ))
    .await;
    admin
        .infra(&["grants", "add", SUZIE, "east", "--role", "view"])
        .await
        .ok();
    let session = h.login(SUZIE, SUZIE_PASSWORD).await;
    let token = match h.api(Some(&session)).token("east").await {
        Ok(answer) => answer.token,
        Err(refused) => panic!("a token for east: {refused:?}"),
    };
    let client = client_for(&east.ca);
    wait_for(|| async {
        (status_of(&client, &east.url(), PODS, &token).await == 200).then_some(())
    })
    .await;
    (east, token, client)
}

async fn spooled_while_the_control_plane_is_away(postgres: bool) {
    let mut h = harness(postgres).await;
    let admin = admin_with_suzie(&h).await;
    let key = connector_key(&admin).await;
    let files = tempfile::tempdir().expect("dir");
    let snapshot = files.path().join("snapshot.json");
    let (east, token, client) =
        east_serving_suzie(&h, &admin, &key, snapshot.clone(), |_| {}).await;
    wait_for(|| async { (!east_events(&admin).await.is_empty()).then_some(()) }).await;
    // What was sent before has arrived (a send takes milliseconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = east_events(&admin).await.len();

    // The control plane goes away: east keeps serving on its snapshot, and spools.
    h.stop().await;
    for _ in 0..5 {
        assert_eq!(status_of(&client, &east.url(), PODS, &token).await, 200);
    }
    let spool = files.path().join("audit-spool.ndjson");
    wait_for(|| async {
        let lines = std::fs::read_to_string(&spool)
            .unwrap_or_default()
            .lines()
            .count();
        (lines == 5).then_some(())
    })
    .await;
    // east stops, and another east starts on the same files, still without its control plane.
    east.proxy.drain.drain(Duration::from_millis(100)).await;
    east.proxy.proxy.audit.close().await;
    drop(east);
    let east = RemoteProxy::start(&h, "east", &key, 900, Some(snapshot)).await;
    let client = client_for(&east.ca);
    for _ in 0..2 {
        assert_eq!(status_of(&client, &east.url(), PODS, &token).await, 200);
    }
    wait_for(|| async {
        let lines = std::fs::read_to_string(&spool)
            .unwrap_or_default()
            .lines()
            .count();
        (lines == 7).then_some(())
    })
    .await;

    // The control plane returns: everything arrives, once.
    h.restart().await;
    let events = wait_for(|| async {
        let events = east_events(&admin).await;
        (events.len() >= before + 7).then_some(events)
    })
    .await;
    assert_eq!(events.len(), before + 7, "nothing lost, nothing twice");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.audit_id.clone()).collect();
    assert_eq!(ids.len(), events.len());
    wait_for(|| async {
        let left = std::fs::metadata(&spool).map_or(0, |m| m.len());
        (left == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_proxy_spools_while_the_control_plane_is_down_and_delivers_once() {
    Box::pin(spooled_while_the_control_plane_is_away(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_proxy_spools_while_the_control_plane_is_down_and_delivers_once() {
    Box::pin(spooled_while_the_control_plane_is_away(true)).await;
}

/// `--audit-fail closed` on a proxy whose control plane is away: it serves while its spool has
/// room, answers 503 once the spool is full (nothing it cannot record is done), and serves again
/// when the control plane is back and the spool has been delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_requests_with_audit_fail_closed_until_it_is_delivered() {
    let mut h = harness(false).await;
    let admin = admin_with_suzie(&h).await;
    let key = connector_key(&admin).await;
    let files = tempfile::tempdir().expect("dir");
    let snapshot = files.path().join("snapshot.json");
    // Room for a few events (one is about 600 bytes).
    let (east, token, client) = east_serving_suzie(&h, &admin, &key, snapshot, |args| {
        args.audit_fail = infra_tests::infra_proxy::audit::FailMode::Closed;
        args.audit_spool_bytes = 4096;
    })
    .await;

    h.stop().await;
    // Served until the spool is full, then refused.
    let refused = wait_for(|| async {
        let status = status_of(&client, &east.url(), PODS, &token).await;
        (status == 503).then_some(status)
    })
    .await;
    assert_eq!(refused, 503);
    let forwarded = east.standin.recorded().len();
    for _ in 0..3 {
        assert_eq!(status_of(&client, &east.url(), PODS, &token).await, 503);
    }
    assert_eq!(
        east.standin.recorded().len(),
        forwarded,
        "a refused request never reaches the apiserver"
    );
    let spool =
        std::fs::read_to_string(files.path().join("audit-spool.ndjson")).unwrap_or_default();
    let spooled: std::collections::HashSet<String> = spool
        .lines()
        .map(|line| {
            serde_json::from_str::<Event>(line)
                .expect("a spooled event")
                .id
        })
        .collect();
    assert!(
        !spooled.is_empty() && spool.len() <= 4096,
        "{} bytes",
        spool.len()
    );
    let readyz =
        infra_tests::proxy::http_get(&format!("http://{}/readyz", east.proxy.admin_address)).await;
    assert!(
        readyz.contains("[!] audit:") && readyz.contains("refusing requests (--audit-fail closed)"),
        "{readyz}"
    );

    // The control plane returns: the spool is delivered and requests are served again.
    h.restart().await;
    wait_for(|| async {
        (status_of(&client, &east.url(), PODS, &token).await == 200).then_some(())
    })
    .await;
    // Every spooled event reaches the trail.
    wait_for(|| async {
        let stored: std::collections::HashSet<String> = east_events(&admin)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        spooled.is_subset(&stored).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_sees_a_new_request_as_it_happens() {
    let h = harness(false).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    let session = h.login(SUZIE, SUZIE_PASSWORD).await;
    let token = h.token(&session).await;
    let mut follow = admin
        .command(
            &crate::infra_binary(),
            &["audit", "--follow", "-o", "json", "--kind", "request"],
            &[],
        )
        .spawn()
        .expect("infra audit --follow");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    // Give the stream a moment to open, then make a request nobody made before.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = client_for(&h.ca);
    let path = "/api/v1/namespaces/follow-me/pods";
    let asked = Instant::now();
    assert_eq!(status_of(&client, &h.proxy_url(), path, &token).await, 200);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.expect("a line") {
            let event: Event = serde_json::from_str(&line).expect("an event a line");
            if event.path.as_deref() == Some(path) {
                return asked.elapsed();
            }
        }
        panic!("infra audit --follow ended");
    })
    .await
    .expect("--follow printed the request");
    eprintln!("infra audit --follow printed the request {seen:?} after it was made");
    assert!(seen < Duration::from_secs(5), "{seen:?}");
    let _ = follow.kill().await;
}
