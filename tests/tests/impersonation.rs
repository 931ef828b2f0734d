//! `kubectl --as` through infra-proxy, end to end: the real kubectl, over real TLS, through the
//! proxy to the stand-in apiserver. The caller's grants must allow each `impersonate` as the
//! apiserver checks it; the request is then decided by the impersonated identity's grants and
//! forwarded as it; refusals are worded as the apiserver words them; the audit line names both.
//!
//! Custom ClusterRoles come from the stand-in, read with `--rbac-reconcile` as in a cluster.

use std::time::Duration;

use infra_tests::proxy::{Harness, UPSTREAM_TOKEN, cluster_role, https_get, wait_for};
use serde_json::{Value, json};

/// May impersonate any user, and the group `eng`; may not read pods itself.
const SUZIE: &str = "suzie@example.com";
/// May read (`view`), and impersonate nobody.
const CARL: &str = "carl@example.com";
/// Whom suzie impersonates: may read.
const OTHER: &str = "other@example.com";
/// Has no grant at all.
const NOBODY: &str = "nobody@example.com";

const POLICY: &str = "
grants:
  - user: suzie@example.com
    role: impersonator
    resource: testing
  - user: carl@example.com
    role: view
    resource: testing
  - user: other@example.com
    role: view
    resource: testing
";

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn start() -> Harness {
    let impersonator = cluster_role(
        "impersonator",
        &json!([
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
            {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["eng"]},
        ]),
    );
    Harness::start_with_cluster_roles(POLICY, &[impersonator]).await
}

/// The audit lines of the pod lists of `user`, once they are written.
async fn audited_lists(h: &Harness, user: &str) -> Vec<Value> {
    wait_for(|| {
        let lines: Vec<Value> = h
            .audit_lines()
            .into_iter()
            .filter(|l| l["path"] == PODS && l["user"] == user)
            .collect();
        async move { (!lines.is_empty()).then_some(lines) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_is_decided_by_the_impersonated_users_grants_and_forwarded_as_them() {
    let h = start().await;
    let kubectl = h.kubectl_as(SUZIE, &[]);

    // suzie may not list pods herself; other may, and suzie may impersonate other.
    let out = kubectl
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(
        out.stderr
            .contains(&format!("User \"{SUZIE}\" cannot list resource \"pods\"")),
        "{}",
        out.stderr
    );
    kubectl
        .run(&["get", "pods", "-n", "default", "--as", OTHER])
        .await
        .success();
    let list = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == PODS)
        .expect("the list reached the apiserver");
    assert_eq!(
        list.header_values("authorization"),
        [format!("Bearer {UPSTREAM_TOKEN}")]
    );
    assert_eq!(list.header_values("impersonate-user"), [OTHER]);
    assert_eq!(
        list.header_values("impersonate-group"),
        ["system:authenticated"]
    );
    // The audit writer takes its queue every 10 ms: wait for the allowed line itself, not
    // only for the earlier denied one.
    let line = wait_for(|| {
        let found = h
            .audit_lines()
            .into_iter()
            .find(|l| l["path"] == PODS && l["user"] == SUZIE && l["decision"] == "allow");
        async move { found }
    })
    .await;
    assert_eq!(line["impersonated_user"], OTHER, "{line}");
    assert_eq!(
        line["impersonated_groups"],
        json!(["system:authenticated"]),
        "{line}"
    );
    assert_eq!(line["code"], 200, "{line}");
    assert!(
        line["grant"]
            .as_str()
            .is_some_and(|r| r.contains(OTHER) && r.contains("view")),
        "decided by other's grant: {line}"
    );

    // The apiserver answers who the request acted as.
    let out = kubectl
        .run(&["auth", "whoami", "--as", OTHER])
        .await
        .success();
    assert!(
        out.stdout.contains(OTHER) && !out.stdout.contains(SUZIE),
        "{}",
        out.stdout
    );

    // A group suzie may impersonate goes upstream with the user.
    h.standin.clear_recorded();
    kubectl
        .run(&[
            "get",
            "pods",
            "-n",
            "default",
            "--as",
            OTHER,
            "--as-group",
            "eng",
        ])
        .await
        .success();
    let list = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == PODS)
        .expect("the list reached the apiserver");
    assert_eq!(list.header_values("impersonate-user"), [OTHER]);
    assert_eq!(
        list.header_values("impersonate-group"),
        ["eng", "system:authenticated"]
    );

    // Someone suzie may impersonate but who may not list pods: the apiserver's 403, naming them.
    h.standin.clear_recorded();
    let out = kubectl
        .run(&["get", "pods", "-n", "default", "--as", NOBODY])
        .await
        .failure();
    assert!(
        out.stderr.contains(&format!(
            "pods is forbidden: User \"{NOBODY}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        )),
        "{}",
        out.stderr
    );
    assert!(
        h.standin.recorded().iter().all(|r| r.path() != PODS),
        "a denied list never reaches the apiserver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonating_without_the_right_is_the_apiservers_403_and_nothing_is_forwarded() {
    let h = start().await;

    // carl may read, but not impersonate. (`--raw`: kubectl shows a refused discovery as
    // "Forbidden: unknown", against the apiserver too.)
    let carl = h.kubectl_as(CARL, &[]);
    carl.run(&["get", "pods", "-n", "default"]).await.success();
    h.standin.clear_recorded();
    let out = carl
        .run(&["get", "--raw", PODS, "--as", OTHER])
        .await
        .failure();
    assert!(
        out.stderr.contains(&format!(
            "users \"{OTHER}\" is forbidden: User \"{CARL}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        )),
        "{}",
        out.stderr
    );

    // suzie may impersonate other, but not the group system:masters.
    let suzie = h.kubectl_as(SUZIE, &[]);
    let out = suzie
        .run(&[
            "get",
            "--raw",
            PODS,
            "--as",
            OTHER,
            "--as-group",
            "system:masters",
        ])
        .await
        .failure();
    assert!(
        out.stderr.contains(&format!(
            "groups \"system:masters\" is forbidden: User \"{SUZIE}\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
        )),
        "{}",
        out.stderr
    );
    // Nor a uid.
    let out = suzie
        .run(&["get", "--raw", PODS, "--as", OTHER, "--as-uid", "1234"])
        .await
        .failure();
    assert!(
        out.stderr.contains(&format!(
            "uids.authentication.k8s.io \"1234\" is forbidden: User \"{SUZIE}\" cannot impersonate resource \"uids\" in API group \"authentication.k8s.io\" at the cluster scope"
        )),
        "{}",
        out.stderr
    );

    // A group without a user (kubectl refuses to send that; a raw client can): the apiserver's
    // plain-text 500.
    let token = h.token(SUZIE, &[], Duration::from_mins(1));
    let bearer = format!("Bearer {token}");
    let (status, body) = https_get(
        &h,
        PODS,
        &[("authorization", &bearer), ("impersonate-group", "eng")],
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body,
        format!(
            "Internal Server Error: \"{PODS}\": requested [{{Group  eng    }}] without impersonating a user\n"
        )
    );

    assert!(
        h.standin.recorded().iter().all(|r| r.path() != PODS),
        "no refused request reaches the apiserver: {:?}",
        h.standin.recorded()
    );
    let refused = audited_lists(&h, CARL)
        .await
        .into_iter()
        .find(|l| l["code"] == 403)
        .expect("the refusal is audited");
    assert_eq!(refused["decision"], "deny", "{refused}");
    assert!(refused.get("impersonated_user").is_none(), "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("users \"{OTHER}\" is forbidden"))),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_as_someone_else_closes_when_the_caller_loses_access() {
    // other keeps its grant; suzie, who impersonates other, loses hers.
    Box::pin(watch_as_other_closes_after(
        "
grants:
  - user: other@example.com
    role: view
    resource: testing
",
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_as_someone_else_closes_when_they_lose_access() {
    // suzie keeps the right to impersonate; other, whom she impersonates, loses its grant.
    Box::pin(watch_as_other_closes_after(
        "
grants:
  - user: suzie@example.com
    role: impersonator
    resource: testing
",
    ))
    .await;
}

/// Opens `kubectl get pods --watch --as other` as suzie, puts `policy` in force, and waits for
/// the watch to be closed upstream.
async fn watch_as_other_closes_after(policy: &str) {
    let h = start().await;
    let kubectl = h.kubectl_as(SUZIE, &[]);
    let mut command = kubectl.command(&["get", "pods", "-n", "default", "--watch", "--as", OTHER]);
    command.stderr(std::process::Stdio::null());
    // The RBAC reconcile's own watches of the stand-in are open already.
    let before = h.standin.active_streams().watches;
    let mut child = command.spawn().expect("kubectl runs");
    let patience = Duration::from_secs(30);
    tokio::time::timeout(
        patience,
        h.standin.wait_for_streams(|s| s.watches == before + 1),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the watch is not open: {:?}",
            h.audit_lines()
                .iter()
                .map(|l| format!("{} {} {}", l["path"], l["code"], l["reason"]))
                .collect::<Vec<_>>()
        )
    });
    h.write_policy(policy);
    tokio::time::timeout(
        patience,
        h.standin.wait_for_streams(|s| s.watches == before),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the watch is closed when the access it was decided on is lost: {:?}",
            h.standin.active_streams()
        )
    });
    // Its end is in the audit log, saying infra-proxy closed it.
    let end = infra_tests::proxy::wait_for(|| async {
        h.audit_lines()
            .into_iter()
            .find(|l| l["verb"] == "watch" && l["stage"] == "end")
    })
    .await;
    assert_eq!(end["user"], SUZIE, "{end}");
    assert_eq!(end["impersonated_user"], OTHER, "{end}");
    assert!(end["duration_ms"].is_u64(), "{end}");
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer has access")),
        "{end}"
    );
    let _ = child.kill().await;
}
