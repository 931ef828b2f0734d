//! The audit trail exported as OpenTelemetry logs over OTLP/HTTP (`--audit-otlp-endpoint`),
//! received by a real OTLP receiver that decodes each export with the official protobuf
//! definitions (`tests/otlp/receiver.py`, PyPI `opentelemetry-proto`): kubectl's requests through
//! the proxy, allowed and denied, and the control plane's changes arrive with their attributes;
//! a receiver that fails (503) and recovers loses nothing, the retries counted and `/readyz`
//! warning meanwhile; a restart goes on from the position kept in the store; on PostgreSQL two
//! replicas export one at a time, and the other takes over when the first stops.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use infra_tests::certs::Ca;
use infra_tests::control::{ControlHarness, Options, client_for, status_of};
use infra_tests::otlp::{Receiver, ReceiverOptions};
use infra_tests::proxy::{DESTINATION, http_get};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const POLICY: &str =
    "grants:\n  - user: suzie@example.com\n    role: view\n    resource: testing.default\n";
const ALLOWED: &str = "/api/v1/namespaces/default/pods";
const DENIED: &str = "/api/v1/namespaces/kube-system/pods";

/// Waits up to `seconds` for `check` to answer something.
async fn wait_up_to<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A receiver with its own CA, and the options of a harness that exports to it.
struct Setup {
    receiver: Receiver,
    options: Options,
    _dir: tempfile::TempDir,
    fail_file: PathBuf,
}

async fn setup(receiver: ReceiverOptions, headers: Vec<String>) -> Setup {
    infra_tests::certs::init_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("OTLP receiver CA");
    let ca_file = dir.path().join("otlp-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let fail_file = dir.path().join("receiver-down");
    let receiver = Receiver::start(
        &ca,
        dir.path(),
        &ReceiverOptions {
            fail_while: Some(fail_file.clone()),
            ..receiver
        },
    )
    .await;
    let options = Options {
        provider_ca_file: Some(ca_file),
        audit_otlp_endpoint: Some(receiver.endpoint()),
        audit_otlp_headers: headers,
        ..Options::default()
    };
    Setup {
        receiver,
        options,
        _dir: dir,
        fail_file,
    }
}

/// Every event id in the store (`GET /api/audit`, all pages).
async fn stored_ids(h: &ControlHarness, admin: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = h
            .call(
                "GET",
                &format!("/api/audit?limit=1000{cursor}"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for event in page["items"].as_array().expect("items") {
            ids.push(event["id"].as_str().expect("id").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

/// How often the receiver took each event id.
fn received(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for record in receiver.records() {
        let id = record["attributes"]["log.record.uid"]
            .as_str()
            .expect("log.record.uid")
            .to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Waits until the receiver took every event of the store; answers the ids.
async fn all_exported(h: &ControlHarness, admin: &str, receiver: &Receiver) -> Vec<String> {
    wait_up_to(40, "every stored event at the receiver", || async move {
        let ids = stored_ids(h, admin).await;
        let got = received(receiver);
        ids.iter().all(|id| got.contains_key(id)).then_some(ids)
    })
    .await
}

async fn create_user(h: &ControlHarness, admin: &str, name: &str) {
    let created = h.api(Some(admin)).create_user(name, Some(PASSWORD)).await;
    assert!(created.is_ok(), "{name}: {created:?}");
}

/// The replicas (`service.instance.id`) whose exports the receiver took.
fn instances(receiver: &Receiver) -> HashSet<String> {
    receiver
        .records()
        .iter()
        .map(|r| {
            r["resource"]["service.instance.id"]
                .as_str()
                .expect("instance")
                .to_owned()
        })
        .collect()
}

/// The event ids of the harness's SQLite store in arrival order.
async fn arrival_order(h: &ControlHarness) -> Vec<String> {
    use sqlx::Row as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(h.dir.path().join("infra.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("the store opens");
    let rows = sqlx::query("SELECT event_id FROM audit_events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("the trail reads");
    pool.close().await;
    rows.iter()
        .map(|row| row.try_get("event_id").expect("an id"))
        .collect()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn record_where(records: &[Value], check: impl Fn(&Value) -> bool) -> Option<&Value> {
    records.iter().find(|record| check(record))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_changes_arrive_decoded_with_their_attributes() {
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key_file = key_dir.path().join("otlp-key");
    std::fs::write(&key_file, "k-123\n").expect("write key");
    let s = setup(
        ReceiverOptions {
            keep_headers: vec!["x-api-key".to_owned()],
            ..ReceiverOptions::default()
        },
        vec![format!("x-api-key=file:{}", key_file.display())],
    )
    .await;
    let h = ControlHarness::start_with(POLICY, s.options.clone()).await;
    let admin = h.admin().await;
    create_user(&h, &admin, "suzie@example.com").await;
    let suzie = h.login("suzie@example.com", PASSWORD).await;
    let token = h.token(&suzie).await;
    let client = client_for(&h.ca);
    assert_eq!(
        status_of(&client, &h.proxy_url(), ALLOWED, &token).await,
        200
    );
    assert_eq!(
        status_of(&client, &h.proxy_url(), DENIED, &token).await,
        403
    );

    let ids = all_exported(&h, &admin, &s.receiver).await;
    let records = s.receiver.records();
    // Nothing twice, and in the store's order (its arrival numbers).
    let counts = received(&s.receiver);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let exported: Vec<String> = records
        .iter()
        .map(|r| {
            r["attributes"]["log.record.uid"]
                .as_str()
                .expect("uid")
                .to_owned()
        })
        .collect();
    let mut in_store = arrival_order(&h).await;
    in_store.retain(|id| exported.contains(id));
    assert_eq!(exported[..in_store.len()], in_store[..]);
    assert!(ids.iter().all(|id| in_store.contains(id)));

    for record in &records {
        assert_eq!(record["resource"]["service.name"], "infra", "{record}");
        assert!(record["resource"]["service.instance.id"].is_string());
        assert_eq!(
            record["scope"],
            json!({"name": "infra.audit", "version": "1"})
        );
        assert_eq!(record["headers"]["x-api-key"], "k-123");
        // The body is the event itself, and the record's time is the event's.
        let body: Value =
            serde_json::from_str(record["body"].as_str().expect("a text body")).expect("JSON");
        assert_eq!(body["id"], record["attributes"]["log.record.uid"]);
        assert_eq!(
            record["event_name"],
            format!("infra.audit.{}", body["kind"].as_str().expect("kind"))
        );
        let time = jiff::Timestamp::from_nanosecond(i128::from(
            record["time_unix_nano"].as_u64().expect("time"),
        ))
        .expect("time");
        assert_eq!(
            time.to_string(),
            body["time"].as_str().expect("time"),
            "{record}"
        );
        assert!(record["observed_time_unix_nano"].as_u64() >= record["time_unix_nano"].as_u64());
    }

    let allowed = record_where(&records, |r| r["attributes"]["url.path"] == ALLOWED)
        .expect("the allowed request");
    let a = &allowed["attributes"];
    assert_eq!(allowed["event_name"], "infra.audit.request");
    assert_eq!(allowed["severity_text"], "INFO");
    assert_eq!(allowed["severity_number"], 9);
    assert_eq!(a["user.name"], "suzie@example.com");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["k8s.namespace.name"], "default");
    assert_eq!(a["infra.k8s.verb"], "list");
    assert_eq!(a["infra.k8s.resource"], "pods");
    assert_eq!(a["infra.decision"], "allow");
    assert_eq!(a["infra.destination"], DESTINATION);
    assert_eq!(a["client.address"], "127.0.0.1");
    assert!(a["infra.audit_id"].is_string(), "{a}");
    assert!(
        a["infra.grant"]
            .as_str()
            .is_some_and(|g| g.contains("view")),
        "{a}"
    );
    assert!(a["infra.latency_us"].is_i64(), "{a}");

    let denied = record_where(&records, |r| r["attributes"]["url.path"] == DENIED)
        .expect("the denied request");
    let d = &denied["attributes"];
    assert_eq!(denied["severity_text"], "WARN");
    assert_eq!(denied["severity_number"], 13);
    assert_eq!(d["infra.decision"], "deny");
    assert_eq!(d["http.response.status_code"], 403);
    assert_eq!(d["k8s.namespace.name"], "kube-system");
    assert!(d["infra.reason"].is_string(), "{d}");

    let change = record_where(&records, |r| {
        r["attributes"]["infra.action"] == "user.create"
            && r["attributes"]["infra.target"] == "user \"suzie@example.com\""
    })
    .expect("the user's creation");
    assert_eq!(change["event_name"], "infra.audit.change");
    assert_eq!(change["severity_text"], "INFO");
    assert_eq!(change["attributes"]["user.name"], "admin");
    assert_eq!(
        change["attributes"]["infra.target"],
        "user \"suzie@example.com\""
    );
    let login =
        record_where(&records, |r| r["event_name"] == "infra.audit.login").expect("a login");
    assert_eq!(login["attributes"]["infra.decision"], "success");

    // The API and the metrics say so.
    let (status, export) = h.call("GET", "/api/audit/export", Some(&admin), None).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["configured"], true);
    assert_eq!(export["mode"], "exporting");
    assert_eq!(
        export["url"],
        format!("https://localhost:{}/v1/logs", s.receiver.port)
    );
    assert!(
        export["exported"].as_u64() >= Some(ids.len() as u64),
        "{export}"
    );
    let metrics_url = format!("http://{}/metrics", h.proxy.admin_address);
    wait_up_to(20, "the exported counter", || async {
        metric(
            &http_get(&metrics_url).await,
            "infra_proxy_audit_otlp_exported_total",
        )
        .filter(|n| *n >= 1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_loses_nothing_and_the_retries_are_counted() {
    let s = setup(
        ReceiverOptions {
            fail_first: 2,
            ..ReceiverOptions::default()
        },
        Vec::new(),
    )
    .await;
    let h = ControlHarness::start_with(POLICY, s.options.clone()).await;
    let admin = h.admin().await;
    all_exported(&h, &admin, &s.receiver).await;
    let statuses = s.receiver.statuses();
    assert_eq!(&statuses[..3], &[503, 503, 200], "{statuses:?}");

    // Down for a while: the export retries, /readyz warns, nothing is lost.
    std::fs::write(&s.fail_file, "").expect("receiver down");
    for n in 0..20 {
        create_user(&h, &admin, &format!("user{n}@example.com")).await;
    }
    let readyz = format!("http://{}/readyz", h.proxy.admin_address);
    let warning = wait_up_to(40, "the export's warning", || async {
        let text = http_get(&readyz).await;
        text.lines()
            .find(|line| line.starts_with("[!] audit export:"))
            .map(str::to_owned)
    })
    .await;
    assert!(warning.contains("503"), "{warning}");
    let (_, export) = h.call("GET", "/api/audit/export", Some(&admin), None).await;
    assert!(export["failures_in_a_row"].as_u64() >= Some(3), "{export}");
    assert!(
        export["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{export}"
    );
    std::fs::remove_file(&s.fail_file).expect("receiver back");
    let ids = all_exported(&h, &admin, &s.receiver).await;
    let counts = received(&s.receiver);
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&1)),
        "{counts:?}"
    );
    wait_up_to(20, "the warning to go", || async {
        (!http_get(&readyz).await.contains("[!] audit export")).then_some(())
    })
    .await;
    let failed = s.receiver.statuses().iter().filter(|s| **s == 503).count();
    let failed = f64::from(u32::try_from(failed).expect("a count"));
    let metrics_url = format!("http://{}/metrics", h.proxy.admin_address);
    wait_up_to(20, "the retries counter", || async {
        metric(
            &http_get(&metrics_url).await,
            "infra_proxy_audit_otlp_retries_total",
        )
        .filter(|n| *n >= failed)
    })
    .await;
    let (_, export) = h.call("GET", "/api/audit/export", Some(&admin), None).await;
    assert_eq!(export["failures_in_a_row"], 0, "{export}");
    assert_eq!(export["dropped"], 0, "{export}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_partial_successes_are_dropped_and_counted_and_the_export_goes_on() {
    let s = setup(
        ReceiverOptions {
            refuse_first: 1,
            partial_first: 1,
            ..ReceiverOptions::default()
        },
        Vec::new(),
    )
    .await;
    let h = ControlHarness::start_with(POLICY, s.options.clone()).await;
    let admin = h.admin().await;
    // The first export is refused for good (400): dropped, not retried; the next is taken
    // with one record rejected; the export goes on.
    wait_up_to(20, "a refusal and a partial success", || async {
        let statuses = s.receiver.statuses();
        (statuses.len() >= 2).then_some(())
    })
    .await;
    create_user(&h, &admin, "later@example.com").await;
    wait_up_to(20, "the later event", || async {
        s.receiver
            .records()
            .iter()
            .any(|r| r["attributes"]["infra.target"] == "user \"later@example.com\"")
            .then_some(())
    })
    .await;
    let statuses = s.receiver.statuses();
    assert_eq!(&statuses[..2], &[400, 200], "{statuses:?}");
    assert!(statuses.iter().all(|s| *s != 503), "{statuses:?}");
    let (_, export) = h.call("GET", "/api/audit/export", Some(&admin), None).await;
    let dropped = export["dropped"].as_u64().expect("dropped");
    assert!(dropped >= 2, "{export}");
    assert_eq!(export["retried"], 0, "{export}");
    assert_eq!(export["failures_in_a_row"], 0, "{export}");
    // What the receiver refused is not in what it took; everything else is.
    let ids = stored_ids(&h, &admin).await;
    let counts = received(&s.receiver);
    let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(
        u64::try_from(missing).expect("a count") + 1,
        dropped,
        "the refused batch is missing, and the partial success's record was taken but counted"
    );
    let metrics_url = format!("http://{}/metrics", h.proxy.admin_address);
    let expected = f64::from(u32::try_from(dropped).expect("a count"));
    wait_up_to(20, "the dropped counter", || async {
        metric(
            &http_get(&metrics_url).await,
            "infra_proxy_audit_otlp_dropped_total",
        )
        .filter(|n| *n >= expected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_goes_on_from_the_stored_position() {
    let s = setup(ReceiverOptions::default(), Vec::new()).await;
    let mut h = ControlHarness::start_with(POLICY, s.options.clone()).await;
    let admin = h.admin().await;
    create_user(&h, &admin, "before@example.com").await;
    let before = all_exported(&h, &admin, &s.receiver).await;

    // The receiver goes down; events made meanwhile wait in the store, across a restart.
    std::fs::write(&s.fail_file, "").expect("receiver down");
    create_user(&h, &admin, "during@example.com").await;
    wait_up_to(20, "a refused export", || async {
        s.receiver.statuses().contains(&503).then_some(())
    })
    .await;
    h.stop().await;
    h.restart().await;
    std::fs::remove_file(&s.fail_file).expect("receiver back");
    let admin = h.admin().await;
    create_user(&h, &admin, "after@example.com").await;
    let all = all_exported(&h, &admin, &s.receiver).await;
    assert!(
        all.len() > before.len() + 2,
        "{} {}",
        all.len(),
        before.len()
    );
    let counts = received(&s.receiver);
    // What was taken before the restart is not sent again: the export went on from the
    // position in the store.
    for id in &before {
        assert_eq!(counts.get(id), Some(&1), "{id} was sent again");
    }
    let during = s
        .receiver
        .records()
        .into_iter()
        .find(|r| r["attributes"]["infra.target"] == "user \"during@example.com\"");
    assert!(
        during.is_some(),
        "the event made while the receiver was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_one_replica_exports_and_another_takes_over() {
    let s = setup(ReceiverOptions::default(), Vec::new()).await;
    let a = ControlHarness::start_with(
        POLICY,
        Options {
            postgres: true,
            ..s.options.clone()
        },
    )
    .await;
    let b = ControlHarness::start_with(
        POLICY,
        Options {
            replica_of: Some(a.store_of()),
            ..s.options.clone()
        },
    )
    .await;
    let admin_a = a.admin().await;
    let admin_b = b.admin().await;
    let modes = || async {
        let (_, on_a) = a
            .call("GET", "/api/audit/export", Some(&admin_a), None)
            .await;
        let (_, on_b) = b
            .call("GET", "/api/audit/export", Some(&admin_b), None)
            .await;
        (on_a["mode"].clone(), on_b["mode"].clone())
    };
    let (exporter, standby) = wait_up_to(30, "one exporter and one standby", || async {
        match modes().await {
            (on_a, on_b) if on_a == "exporting" && on_b == "standby" => Some((&a, &b)),
            (on_a, on_b) if on_a == "standby" && on_b == "exporting" => Some((&b, &a)),
            _ => None,
        }
    })
    .await;
    for n in 0..5 {
        create_user(&a, &admin_a, &format!("a{n}@example.com")).await;
        create_user(&b, &admin_b, &format!("b{n}@example.com")).await;
    }
    let ids = all_exported(&a, &admin_a, &s.receiver).await;
    let counts = received(&s.receiver);
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&1)),
        "{counts:?}"
    );
    let replicas = instances(&s.receiver);
    assert_eq!(replicas.len(), 1, "one replica exported: {replicas:?}");

    // The exporting replica stops: the other takes over and goes on from the same position.
    exporter.stop().await;
    let admin = standby.admin().await;
    wait_up_to(30, "the standby to take over", || async {
        let (_, export) = standby
            .call("GET", "/api/audit/export", Some(&admin), None)
            .await;
        (export["mode"] == "exporting").then_some(())
    })
    .await;
    create_user(standby, &admin, "later@example.com").await;
    let all = all_exported(standby, &admin, &s.receiver).await;
    let counts = received(&s.receiver);
    assert!(
        all.iter().all(|id| counts.get(id) == Some(&1)),
        "{counts:?}"
    );
    let replicas = instances(&s.receiver);
    assert_eq!(
        replicas.len(),
        2,
        "the other replica exported next: {replicas:?}"
    );
}
