//! Access requests end to end: the control API, the proxy in the control plane's process, the
//! real kubectl, SQLite and PostgreSQL. Ask, approve, use within a second, lose the access on
//! time with open streams closed; deny, cancel, revoke; self-approval and stale reviewers
//! refused; a quorum counted once per person; concurrent approvals making one grant (on two
//! replicas); a refusal that names the closest rule; a pending request surviving a restart;
//! signed webhooks retried after a failing receiver; on-call approval from a PagerDuty
//! stand-in.

use std::time::{Duration, Instant};

use infra_tests::control::{ControlHarness, Options, client_for, status_of};
use infra_tests::proxy::{DESTINATION, wait_for};
use serde_json::{Value, json};

mod notify;

const PASSWORD: &str = "a-long-enough-passphrase";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// Rules: Engineering may ask for view or edit on `testing` and its namespaces for up to 4h,
/// SRE approves; `admin` on a namespace needs two approvals.
fn policy(extra: &str) -> String {
    format!(
        "requests:
  - name: eng
    group: Engineering
    roles: [view, edit]
    resources: [{DESTINATION}, {DESTINATION}.*]
    maxDuration: 4h
    reviewers: {{group: SRE}}
  - name: quorum
    group: Engineering
    roles: [admin]
    resources: [{DESTINATION}.*]
    maxDuration: 1h
    reviewers: {{group: SRE}}
    approvals: 2
{extra}"
    )
}

async fn call(
    h: &ControlHarness,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    h.call(method, path, Some(key), body).await
}

/// Makes users (logged in) and groups; answers the session keys in the order of `users`.
async fn people(
    h: &ControlHarness,
    admin: &str,
    users: &[&str],
    groups: &[(&str, &[&str])],
) -> Vec<String> {
    let api = h.api(Some(admin));
    for user in users {
        assert!(
            api.create_user(user, Some(PASSWORD)).await.is_ok(),
            "{user}"
        );
    }
    for (group, members) in groups {
        assert!(api.create_group(group).await.is_ok(), "{group}");
        for member in *members {
            assert_eq!(api.add_member(group, member).await, Ok(()));
        }
    }
    let mut keys = Vec::new();
    for user in users {
        keys.push(h.login(user, PASSWORD).await);
    }
    keys
}

/// carl@example.com in Engineering, who may ask, and sam@example.com in SRE, who reviews, both
/// logged in: their session keys.
async fn requester_and_reviewer(h: &ControlHarness, admin: &str) -> (String, String) {
    let mut keys = people(
        h,
        admin,
        &["carl@example.com", "sam@example.com"],
        &[
            ("Engineering", &["carl@example.com"]),
            ("SRE", &["sam@example.com"]),
        ],
    )
    .await;
    let sam = keys.pop().expect("sam's key");
    let carl = keys.pop().expect("carl's key");
    (carl, sam)
}

async fn ask(
    h: &ControlHarness,
    key: &str,
    role: &str,
    resource: &str,
    seconds: u64,
) -> (u16, Value) {
    call(
        h,
        "POST",
        "/api/requests",
        key,
        Some(json!({"resource": resource, "role": role, "duration_seconds": seconds, "reason": "INC-1234"})),
    )
    .await
}

async fn act(
    h: &ControlHarness,
    key: &str,
    id: i64,
    action: &str,
    comment: Option<&str>,
) -> (u16, Value) {
    call(
        h,
        "POST",
        &format!("/api/requests/{id}/{action}"),
        key,
        Some(json!({ "comment": comment })),
    )
    .await
}

fn id_of(request: &Value) -> i64 {
    request["id"].as_i64().expect("an id")
}

/// The time until GET pods with `token` through `h`'s proxy answers `status`.
async fn time_until(h: &ControlHarness, token: &str, status: u16) -> Duration {
    let client = client_for(&h.ca);
    let started = Instant::now();
    wait_for(|| async {
        (status_of(&client, &h.proxy_url(), PODS, token).await == status).then_some(())
    })
    .await;
    started.elapsed()
}

async fn approved_within_a_second_then_ended(postgres: bool) {
    let h = ControlHarness::start_with(
        &policy(""),
        Options {
            postgres,
            ..Options::default()
        },
    )
    .await;
    h.standin
        .create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        }))
        .expect("the pod is created");
    let admin = h.admin().await;
    let (carl, sam) = requester_and_reviewer(&h, &admin).await;
    let (carl, sam) = (&carl, &sam);
    let token = h.token(carl).await;
    let client = client_for(&h.ca);
    assert_eq!(status_of(&client, &h.proxy_url(), PODS, &token).await, 403);

    let (status, request) = ask(&h, carl, "edit", &format!("{DESTINATION}.default"), 6).await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["state"], "pending");
    assert_eq!(request["rule"], "eng");
    let id = id_of(&request);
    // Pending is not access.
    assert_eq!(status_of(&client, &h.proxy_url(), PODS, &token).await, 403);

    let approved_at = Instant::now();
    let (status, request) = act(&h, sam, id, "approve", Some("go ahead")).await;
    assert_eq!(status, 200, "{request}");
    assert_eq!(request["state"], "approved");
    time_until(&h, &token, 200).await;
    let allowed = approved_at.elapsed();
    eprintln!("kubectl allowed {allowed:?} after the approval");
    assert!(allowed < Duration::from_secs(1), "{allowed:?}");

    // The grant shows whose it is, and only the request ends it.
    let grant_id = request["grant_id"].as_i64().expect("a grant");
    let (_, grant) = call(&h, "GET", &format!("/api/grants/{grant_id}"), &admin, None).await;
    assert_eq!(grant["source"], "request", "{grant}");
    assert_eq!(grant["request_id"], id);
    let (status, refused) = call(
        &h,
        "DELETE",
        &format!("/api/grants/{grant_id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "request_owned");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("infra requests revoke {id}"))
    );

    // An open watch and an open exec close when the access runs out, and the request ends.
    let kubectl = h.kubectl_with(carl).await;
    let mut watch = kubectl
        .command(&["get", "pods", "-n", "default", "--watch"])
        .spawn()
        .expect("kubectl get --watch starts");
    let mut command = kubectl.command(&["exec", "-i", "web", "-n", "default", "--", "cat"]);
    command.stdin(std::process::Stdio::piped());
    let mut exec = command.spawn().expect("kubectl exec starts");
    h.standin
        .wait_for_streams(|s| s.watches >= 1 && s.upgrades >= 1)
        .await;
    h.standin
        .wait_for_streams(|s| s.watches == 0 && s.upgrades == 0)
        .await;
    let exited = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await;
    assert!(exited.is_ok(), "kubectl's watch ended at expiry");
    let exited = tokio::time::timeout(Duration::from_secs(10), exec.wait()).await;
    assert!(exited.is_ok(), "kubectl exec ended at expiry");
    assert_eq!(status_of(&client, &h.proxy_url(), PODS, &token).await, 403);
    let ended = wait_for(|| async {
        let (_, r) = call(&h, "GET", &format!("/api/requests/{id}"), carl, None).await;
        (r["state"] == "ended").then_some(r)
    })
    .await;
    assert_eq!(ended["ended_by"], "infra");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_is_access_within_a_second_and_ends_on_time() {
    approved_within_a_second_then_ended(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_is_access_within_a_second_and_ends_on_time_on_postgresql() {
    approved_within_a_second_then_ended(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cancel_and_revoke() {
    let h = ControlHarness::start(&policy("")).await;
    h.standin
        .create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        }))
        .expect("the pod is created");
    let admin = h.admin().await;
    let (carl, sam) = requester_and_reviewer(&h, &admin).await;
    let (carl, sam) = (&carl, &sam);
    let resource = format!("{DESTINATION}.default");

    // Deny: a comment is required; one denial ends it.
    let (_, request) = ask(&h, carl, "view", &resource, 600).await;
    let id = id_of(&request);
    let (status, _) = act(&h, sam, id, "deny", None).await;
    assert_eq!(status, 400);
    let (status, denied) = act(&h, sam, id, "deny", Some("not during the freeze")).await;
    assert_eq!(status, 200, "{denied}");
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["reviews"][0]["comment"], "not during the freeze");
    let (status, _) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 409);

    // Cancel: only the requester, only while pending.
    let (_, request) = ask(&h, carl, "view", &resource, 600).await;
    let id = id_of(&request);
    let (status, _) = act(&h, sam, id, "cancel", None).await;
    assert_eq!(status, 403);
    let (status, cancelled) = act(&h, carl, id, "cancel", None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (status, _) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 409);

    // Revoke: the access and an open exec end at once.
    let (_, request) = ask(&h, carl, "edit", &resource, 3600).await;
    let id = id_of(&request);
    // A second open request for the same role and resource is refused.
    let (status, twice) = ask(&h, carl, "edit", &resource, 3600).await;
    assert_eq!(status, 409, "{twice}");
    let (status, _) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 200);
    let kubectl = h.kubectl_with(carl).await;
    wait_for(|| async {
        kubectl
            .run(&["get", "pods", "-n", "default"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    let mut command = kubectl.command(&["exec", "-i", "web", "-n", "default", "--", "cat"]);
    command.stdin(std::process::Stdio::piped());
    let mut exec = command.spawn().expect("kubectl exec starts");
    h.standin.wait_for_streams(|s| s.upgrades >= 1).await;
    let started = Instant::now();
    let (status, revoked) = act(&h, sam, id, "revoke", Some("done")).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["state"], "ended");
    assert_eq!(revoked["ended_by"], "sam@example.com");
    let exited = tokio::time::timeout(Duration::from_secs(10), exec.wait()).await;
    eprintln!("exec closed {:?} after the revocation", started.elapsed());
    assert!(exited.is_ok(), "kubectl exec ended");
    assert!(
        !kubectl
            .run(&["get", "pods", "-n", "default"])
            .await
            .status
            .success()
    );
    // The requester sees the whole history.
    let (_, mine) = call(&h, "GET", "/api/requests", carl, None).await;
    let states: Vec<&str> = mine["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert_eq!(states, ["ended", "cancelled", "denied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_request_and_reviewers_must_be_reviewers_now() {
    let h = ControlHarness::start(&policy("")).await;
    let admin = h.admin().await;
    let keys = people(
        &h,
        &admin,
        &["sam@example.com", "sue@example.com", "dave@example.com"],
        &[
            ("Engineering", &["sam@example.com"]),
            ("SRE", &["sam@example.com", "sue@example.com"]),
        ],
    )
    .await;
    let (sam, sue, dave) = (&keys[0], &keys[1], &keys[2]);
    let (_, request) = ask(&h, sam, "view", DESTINATION, 600).await;
    let id = id_of(&request);

    let (status, own) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 403, "{own}");
    assert!(
        own["message"]
            .as_str()
            .unwrap_or("")
            .contains("your own request")
    );
    let (status, _) = act(&h, dave, id, "approve", None).await;
    assert_eq!(status, 403);
    // sue may review it: it is on her pending list, not on dave's nor on sam's.
    let pending = |key: String| {
        let h = &h;
        async move {
            let (_, list) = call(h, "GET", "/api/requests?pending=true", &key, None).await;
            list["items"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(pending(sue.clone()).await, 1);
    assert_eq!(pending(dave.clone()).await, 0);
    assert_eq!(pending(sam.clone()).await, 0);
    // Once out of SRE, sue no longer reviews it.
    let (status, _) = call(
        &h,
        "DELETE",
        "/api/groups/SRE/members/sue@example.com",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, stale) = act(&h, sue, id, "approve", None).await;
    assert_eq!(status, 403, "{stale}");
    assert_eq!(pending(sue.clone()).await, 0);
    // dave may not read it either.
    let (status, _) = call(&h, "GET", &format!("/api/requests/{id}"), dave, None).await;
    assert_eq!(status, 403);
}

/// A request nobody decides expires after `--request-pending-seconds`, and can no longer be
/// approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_expires_undecided() {
    let h = ControlHarness::start_with(
        &policy(""),
        Options {
            request_pending_seconds: Some(2),
            ..Options::default()
        },
    )
    .await;
    let admin = h.admin().await;
    let (carl, sam) = requester_and_reviewer(&h, &admin).await;
    let (carl, sam) = (&carl, &sam);
    let (_, request) = ask(&h, carl, "view", DESTINATION, 600).await;
    let id = id_of(&request);
    let expired = wait_for(|| async {
        let (_, r) = call(&h, "GET", &format!("/api/requests/{id}"), carl, None).await;
        (r["state"] == "expired").then_some(r)
    })
    .await;
    assert!(expired["grant_id"].is_null(), "{expired}");
    let (status, late) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 409, "{late}");
    // Expired is not open: the same access may be asked for again.
    let (status, again) = ask(&h, carl, "view", DESTINATION, 600).await;
    assert_eq!(status, 201, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_counts_each_reviewer_once() {
    let h = ControlHarness::start(&policy("")).await;
    let admin = h.admin().await;
    let keys = people(
        &h,
        &admin,
        &["carl@example.com", "sam@example.com", "sue@example.com"],
        &[
            ("Engineering", &["carl@example.com"]),
            ("SRE", &["sam@example.com", "sue@example.com"]),
        ],
    )
    .await;
    let (carl, sam, sue) = (&keys[0], &keys[1], &keys[2]);
    let (status, request) = ask(&h, carl, "admin", &format!("{DESTINATION}.default"), 600).await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["approvals_needed"], 2);
    let id = id_of(&request);
    let (status, once) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 200);
    assert_eq!(once["state"], "pending");
    let (status, twice) = act(&h, sam, id, "approve", None).await;
    assert_eq!(status, 409, "{twice}");
    let (status, done) = act(&h, sue, id, "approve", None).await;
    assert_eq!(status, 200);
    assert_eq!(done["state"], "approved");
    assert_eq!(done["reviews"].as_array().map(Vec::len), Some(2));
}

/// Twenty reviewers approve one request at once, half of them on each of two control
/// replicas sharing one PostgreSQL database: exactly one approval makes the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_on_two_replicas_make_one_grant() {
    let a = ControlHarness::start_with(
        &policy(""),
        Options {
            postgres: true,
            ..Options::default()
        },
    )
    .await;
    let b = ControlHarness::start_with(
        &policy(""),
        Options {
            replica_of: Some(a.store_of()),
            ..Options::default()
        },
    )
    .await;
    let admin = a.admin().await;
    let reviewers: Vec<String> = (0..20).map(|i| format!("sre{i}@example.com")).collect();
    let mut users: Vec<&str> = vec!["carl@example.com"];
    users.extend(reviewers.iter().map(String::as_str));
    let sre: Vec<&str> = reviewers.iter().map(String::as_str).collect();
    let keys = people(
        &a,
        &admin,
        &users,
        &[("Engineering", &["carl@example.com"]), ("SRE", &sre)],
    )
    .await;
    let (_, request) = ask(&a, &keys[0], "edit", DESTINATION, 600).await;
    let id = id_of(&request);
    let mut calls = Vec::new();
    for (i, key) in keys[1..].iter().enumerate() {
        let h = if i % 2 == 0 { &a } else { &b };
        calls.push(act(h, key, id, "approve", None));
    }
    let answers = futures_util::future::join_all(calls).await;
    let approved = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((approved, refused), (1, 19), "{answers:?}");
    let (_, grants) = call(&a, "GET", "/api/grants?user=carl@example.com", &admin, None).await;
    assert_eq!(grants["total"], 1, "{grants}");
    let (_, request) = call(&b, "GET", &format!("/api/requests/{id}"), &admin, None).await;
    assert_eq!(request["reviews"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outside_the_rules_names_the_closest_rule() {
    let h = ControlHarness::start(&policy("")).await;
    let admin = h.admin().await;
    let keys = people(
        &h,
        &admin,
        &["carl@example.com", "dave@example.com"],
        &[("Engineering", &["carl@example.com"])],
    )
    .await;
    let (carl, dave) = (&keys[0], &keys[1]);
    let message = |answer: &Value| answer["message"].as_str().unwrap_or("").to_owned();

    let (status, too_long) = ask(&h, carl, "edit", DESTINATION, 8 * 3600).await;
    assert_eq!(status, 403, "{too_long}");
    assert!(message(&too_long).contains("rule \"eng\""), "{too_long}");
    assert!(
        message(&too_long).contains("8h is longer than its 4h"),
        "{too_long}"
    );

    let (status, whole) = ask(&h, carl, "admin", DESTINATION, 600).await;
    assert_eq!(status, 403);
    // Two rules are one difference away; the first is named, with what differs.
    assert!(message(&whole).contains("rule \"eng\""), "{whole}");
    assert!(
        message(&whole).contains("role \"admin\" is not among its roles (view, edit)"),
        "{whole}"
    );

    let (status, outsider) = ask(&h, dave, "view", DESTINATION, 600).await;
    assert_eq!(status, 403);
    assert!(
        message(&outsider).contains("members of group \"Engineering\""),
        "{outsider}"
    );

    let (status, control) = ask(&h, carl, "admin", "infra", 600).await;
    assert_eq!(status, 400, "{control}");
    let (status, _) = call(
        &h,
        "POST",
        "/api/requests",
        carl,
        Some(
            json!({"resource": DESTINATION, "role": "view", "duration_seconds": 60, "reason": " "}),
        ),
    )
    .await;
    assert_eq!(status, 400, "a reason is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_survives_a_restart_and_is_approved_on_another_replica() {
    let mut a = ControlHarness::start_with(
        &policy(""),
        Options {
            postgres: true,
            ..Options::default()
        },
    )
    .await;
    let admin = a.admin().await;
    let (carl, sam) = requester_and_reviewer(&a, &admin).await;
    let (carl, sam) = (&carl, &sam);
    let (_, request) = ask(&a, carl, "view", DESTINATION, 600).await;
    let id = id_of(&request);
    a.stop().await;
    a.restart().await;
    let b = ControlHarness::start_with(
        &policy(""),
        Options {
            replica_of: Some(a.store_of()),
            ..Options::default()
        },
    )
    .await;
    let (status, approved) = act(&b, sam, id, "approve", None).await;
    assert_eq!(status, 200, "{approved}");
    // Replica a's proxy lets carl in: the grant made on b reached it.
    let token = a.token(carl).await;
    let waited = time_until(&a, &token, 200).await;
    eprintln!("replica a's proxy allowed carl {waited:?} after b's approval was seen");
}
