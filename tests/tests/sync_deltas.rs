//! The sync stream's protocol as a proxy reads it off the wire (`GET /api/sync/{destination}`,
//! protocol 2): a scoped snapshot, then deltas in sequence for the changes that concern the
//! destination only, nothing for a login, and changes made on one PostgreSQL replica reaching
//! the streams of another. The proxy's side (gaps, deltas for users it had not heard of) is in
//! `proxy/src/sync.rs`'s tests; revocation end to end in `sync.rs`.

use std::time::Duration;

use infra_tests::control::{ControlHarness, Options};
use infra_tests::proxy::DESTINATION;
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const POLICY: &str = "grants:\n  - group: Engineering\n    role: view\n    resource: testing\n";

/// The lines of one sync stream.
struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    async fn open(h: &ControlHarness, key: &str) -> Self {
        let response = h
            .http
            .get(format!(
                "{}/api/sync/{DESTINATION}?protocol=2",
                h.control_url()
            ))
            .bearer_auth(key)
            .send()
            .await
            .expect("the sync stream");
        assert_eq!(response.status(), 200);
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next line that is not a heartbeat.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let value: Value = serde_json::from_slice(&line).expect("a JSON line");
                if value.get("heartbeat").is_none() {
                    return value;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a line within 10 s")
                .expect("the stream reads")
                .expect("the stream goes on");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

async fn ok(h: &ControlHarness, method: &str, path: &str, key: &str, body: Option<Value>) {
    let (status, answer) = h.call(method, path, Some(key), body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
}

fn id_of(key: &str) -> String {
    key.split('.').next().expect("<id>.<secret>").to_owned()
}

async fn deltas_follow_the_changes_of_the_destination_only(options: Options) {
    let h = ControlHarness::start_with(POLICY, options).await;
    let admin = h.admin().await;
    for group in ["Engineering", "Other"] {
        ok(
            &h,
            "POST",
            "/api/groups",
            &admin,
            Some(json!({"name": group})),
        )
        .await;
    }
    for name in ["suzie@example.com", "carl@example.com"] {
        ok(
            &h,
            "POST",
            "/api/users",
            &admin,
            Some(json!({"name": name, "password": PASSWORD})),
        )
        .await;
    }
    ok(
        &h,
        "PUT",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    ok(
        &h,
        "PUT",
        "/api/groups/Other/members/carl@example.com",
        &admin,
        None,
    )
    .await;

    // A proxy of another protocol is refused.
    let (status, body) = h
        .call(
            "GET",
            &format!("/api/sync/{DESTINATION}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("protocol"), "{body}");

    let mut stream = Stream::open(&h, &admin).await;
    let first = stream.next().await;
    let snapshot = &first["snapshot"];
    assert_eq!(snapshot["protocol"], 2, "{first}");
    assert!(snapshot.get("sessions").is_none(), "no live sessions");
    let members = snapshot["members"].as_object().expect("members");
    assert_eq!(
        members.get("suzie@example.com"),
        Some(&json!(["Engineering"]))
    );
    assert!(
        !members.contains_key("carl@example.com"),
        "carl is in no group a grant of {DESTINATION} names: {first}"
    );
    let seq = snapshot["seq"].as_u64().expect("seq");

    // A login is no news; carl joining Engineering is, with only the groups that matter here.
    let carl = h.login("carl@example.com", PASSWORD).await;
    ok(
        &h,
        "PUT",
        "/api/groups/Engineering/members/carl@example.com",
        &admin,
        None,
    )
    .await;
    let joined = stream.next().await;
    assert_eq!(
        joined["delta"]["after"], seq,
        "the next message after the snapshot is this delta (nothing for the login): {joined}"
    );
    assert_eq!(
        joined["delta"]["changes"],
        json!([{"member": {"user": "carl@example.com", "groups": ["Engineering"]}}]),
        "{joined}"
    );
    let joined_seq = joined["delta"]["seq"].as_u64().expect("seq");
    assert!(joined_seq > seq);

    // A group no grant here names is no news; the logout of a session the stream never
    // mentioned is.
    ok(
        &h,
        "DELETE",
        "/api/groups/Other/members/carl@example.com",
        &admin,
        None,
    )
    .await;
    ok(&h, "POST", "/api/logout", &carl, None).await;
    let ended = stream.next().await;
    assert_eq!(ended["delta"]["after"], joined_seq, "{ended}");
    assert_eq!(
        ended["delta"]["changes"],
        json!([{"ended": {(id_of(&carl)): "carl@example.com"}}]),
        "{ended}"
    );

    // A grant: the grant itself, not the list.
    ok(
        &h,
        "POST",
        "/api/grants",
        &admin,
        Some(json!({"user": "carl@example.com", "role": "edit", "resource": "testing.db"})),
    )
    .await;
    let granted = stream.next().await;
    assert_eq!(
        granted["delta"]["changes"],
        json!([{"grants": {"added": [{"user": "carl@example.com", "role": "edit", "resource": "testing.db"}]}}]),
        "{granted}"
    );
    // A grant to a group no other grant names brings a snapshot with the group's members.
    ok(
        &h,
        "POST",
        "/api/grants",
        &admin,
        Some(json!({"group": "Other", "role": "view", "resource": "testing"})),
    )
    .await;
    let again = stream.next().await;
    assert!(again.get("snapshot").is_some(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_the_changes_of_the_destination_only_on_sqlite() {
    deltas_follow_the_changes_of_the_destination_only(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_the_changes_of_the_destination_only_on_postgresql() {
    deltas_follow_the_changes_of_the_destination_only(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
}

/// Proxies take sessions they never heard of: a control plane that restarts must still name
/// the sessions that ended before.
async fn a_restarted_control_plane_still_names_the_sessions_that_ended(options: Options) {
    let mut h = ControlHarness::start_with(POLICY, options).await;
    let admin = h.admin().await;
    ok(
        &h,
        "POST",
        "/api/users",
        &admin,
        Some(json!({"name": "suzie@example.com", "password": PASSWORD})),
    )
    .await;
    let suzie = h.login("suzie@example.com", PASSWORD).await;
    ok(&h, "POST", "/api/logout", &suzie, None).await;
    // The store keeps it (written beside the event); give that write a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop().await;
    h.restart().await;
    let mut stream = Stream::open(&h, &admin).await;
    let first = stream.next().await;
    assert_eq!(
        first["snapshot"]["ended"][id_of(&suzie)],
        "suzie@example.com",
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_still_names_the_sessions_that_ended_on_sqlite() {
    a_restarted_control_plane_still_names_the_sessions_that_ended(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_still_names_the_sessions_that_ended_on_postgresql() {
    a_restarted_control_plane_still_names_the_sessions_that_ended(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_streams_of_the_other() {
    let a = ControlHarness::start_with(
        POLICY,
        Options {
            postgres: true,
            ..Options::default()
        },
    )
    .await;
    let b = ControlHarness::start_with(
        POLICY,
        Options {
            replica_of: Some(a.store_of()),
            ..Options::default()
        },
    )
    .await;
    let admin = a.admin().await;
    ok(
        &a,
        "POST",
        "/api/users",
        &admin,
        Some(json!({"name": "suzie@example.com", "password": PASSWORD})),
    )
    .await;
    ok(
        &a,
        "POST",
        "/api/groups",
        &admin,
        Some(json!({"name": "Engineering"})),
    )
    .await;
    let mut stream = Stream::open(&b, &admin).await;
    let first = stream.next().await;
    let seq = first["snapshot"]["seq"].as_u64().expect("seq");
    let suzie = a.login("suzie@example.com", PASSWORD).await;
    ok(
        &a,
        "PUT",
        "/api/groups/Engineering/members/suzie@example.com",
        &admin,
        None,
    )
    .await;
    let joined = stream.next().await;
    assert_eq!(joined["delta"]["after"], seq, "{joined}");
    assert_eq!(
        joined["delta"]["changes"],
        json!([{"member": {"user": "suzie@example.com", "groups": ["Engineering"]}}]),
        "{joined}"
    );
    ok(&a, "POST", "/api/logout", &suzie, None).await;
    let ended = stream.next().await;
    assert_eq!(
        ended["delta"]["changes"],
        json!([{"ended": {(id_of(&suzie)): "suzie@example.com"}}]),
        "{ended}"
    );
}
