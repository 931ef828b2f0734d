//! Which verbs exec needs through the proxy, with custom roles: `get` for a plain `GET` (as the
//! apiserver v1.32 decides it), `create` for SPDY's `POST`, and both for a WebSocket upgrade
//! `GET` (Kubernetes 1.35's rule), so that a role with only `get pods/exec` opens no shell.

use http::Method;
use infra_tests::proxy::{Harness, cluster_role, https_get, wait_for};
use serde_json::{Value, json};

use crate::{
    DEFAULTS, EXEC_OVER_SPDY, EXEC_PATH, TOKEN_TTL, WEBSOCKET_KEY, pod, requests_for, run,
};

/// `get pods/exec` only.
const GETTER: &str = "getter@example.com";
/// `create pods/exec` only.
const CREATOR: &str = "creator@example.com";
/// Both.
const BOTH: &str = "both@example.com";

const POLICY: &str = "
grants:
  - user: getter@example.com
    role: exec-get
    resource: testing
  - user: creator@example.com
    role: exec-create
    resource: testing
  - user: both@example.com
    role: exec-both
    resource: testing
";

/// A role that may read pods (kubectl does before it execs) and do `verbs` on `pods/exec`.
fn exec_role(name: &str, verbs: &[&str]) -> Value {
    cluster_role(
        name,
        &json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": verbs},
        ]),
    )
}

async fn start() -> Harness {
    let roles = [
        exec_role("exec-get", &["get"]),
        exec_role("exec-create", &["create"]),
        exec_role("exec-both", &["get", "create"]),
    ];
    let h = Harness::start_with_cluster_roles(POLICY, &roles).await;
    h.standin.create(pod("web")).expect("the pod is created");
    h
}

/// A raw WebSocket upgrade `GET` of [`EXEC_PATH`] by `user`: its status and body.
async fn websocket_exec(h: &Harness, user: &str) -> (u16, String) {
    let bearer = format!("Bearer {}", h.token(user, &[], TOKEN_TTL));
    https_get(
        h,
        EXEC_PATH,
        &[
            ("authorization", &bearer),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", WEBSOCKET_KEY),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ],
    )
    .await
}

fn forbidden(user: &str, verb: &str) -> String {
    format!(
        "pods \\\"web\\\" is forbidden: User \\\"{user}\\\" cannot {verb} resource \\\"pods/exec\\\" in API group \\\"\\\" in the namespace \\\"default\\\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_get_pods_exec_opens_no_shell_but_a_plain_get_is_decided_as_get() {
    let h = start().await;
    let kubectl = h.kubectl_as(GETTER, &[]);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .failure();
        assert!(
            out.stderr.contains(&format!(
                "User \"{GETTER}\" cannot create resource \"pods/exec\""
            )),
            "env {env:?}: {}",
            out.stderr
        );
    }
    let (status, body) = websocket_exec(&h, GETTER).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&forbidden(GETTER, "create")), "{body}");
    assert!(
        requests_for(&h.standin, "exec").is_empty(),
        "no exec upgrade reached the apiserver"
    );

    // A GET that is no upgrade is `get`, as v1.32 decides it: forwarded, for the apiserver to
    // answer.
    let bearer = format!("Bearer {}", h.token(GETTER, &[], TOKEN_TTL));
    let (status, body) = https_get(&h, EXEC_PATH, &[("authorization", &bearer)]).await;
    assert_ne!(status, 403, "{body}");
    let plain = requests_for(&h.standin, "exec");
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0].method, Method::GET);
    assert!(plain[0].header("upgrade").is_none(), "{plain:?}");
    let audited = wait_for(|| {
        let line = h.audit_lines().into_iter().find(|l| {
            l["user"] == GETTER && l["subresource"] == "exec" && l["decision"] == "allow"
        });
        async move { line }
    })
    .await;
    assert_eq!(audited["verb"], "get", "{audited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_create_pods_exec_execs_over_spdy_but_not_over_websocket() {
    let h = start().await;
    let kubectl = h.kubectl_as(CREATOR, &[]);
    // kubectl's default tries WebSocket first and, refused, falls back to SPDY.
    for env in [EXEC_OVER_SPDY, DEFAULTS] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .success();
        assert_eq!(out.stdout, "hi\n", "env {env:?}");
    }
    let (status, body) = websocket_exec(&h, CREATOR).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&forbidden(CREATOR, "get")), "{body}");
    let execs = requests_for(&h.standin, "exec");
    assert!(!execs.is_empty());
    for exec in &execs {
        assert_eq!(exec.method, Method::POST, "only SPDY got through: {exec:?}");
        assert!(
            exec.header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1")),
            "{exec:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_get_and_create_pods_exec_execs_over_both() {
    let h = start().await;
    let kubectl = h.kubectl_as(BOTH, &[]);
    for (env, upgrade) in [(DEFAULTS, "websocket"), (EXEC_OVER_SPDY, "SPDY/3.1")] {
        h.standin.clear_recorded();
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .success();
        assert_eq!(out.stdout, "hi\n", "env {env:?}");
        let execs = requests_for(&h.standin, "exec");
        assert!(
            execs.iter().any(|e| e
                .header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case(upgrade))),
            "env {env:?}: {execs:?}"
        );
    }
}
