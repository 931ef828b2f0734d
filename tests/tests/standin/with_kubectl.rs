//! With the real kubectl: reads, apply, auth, logs and exec, watch, port-forward.

use infra_tests::apiserver::StandIn;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::{PATIENCE, TOKEN, kubectl, pod, start};

#[tokio::test]
async fn kubectl_reads_version_discovery_and_tables() {
    let standin = start().await;
    standin.create(pod("web-1")).expect("created");
    let kubectl = kubectl(&standin);

    let version = kubectl.run(&["get", "--raw", "/version"]).await.success();
    let version: Value = serde_json::from_str(&version.stdout).expect("JSON");
    assert_eq!(version["gitVersion"], "v1.32.13");

    let resources = kubectl.run(&["api-resources"]).await.success();
    assert!(
        resources
            .stdout
            .lines()
            .any(|l| l.starts_with("deployments ") && l.contains("apps/v1")),
        "{}",
        resources.stdout
    );
    assert!(
        resources
            .stdout
            .lines()
            .any(|l| l.starts_with("pods ") && l.contains(" po ")),
        "{}",
        resources.stdout
    );

    let pods = kubectl.run(&["get", "pods"]).await.success();
    let lines: Vec<&str> = pods.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("STATUS"),
        "{}",
        pods.stdout
    );
    assert!(
        lines[1].starts_with("web-1") && lines[1].contains("1/1") && lines[1].contains("Running"),
        "{}",
        pods.stdout
    );

    let namespaces = kubectl
        .run(&["get", "namespaces", "-o", "name"])
        .await
        .success();
    assert!(
        namespaces.stdout.contains("namespace/kube-system"),
        "{}",
        namespaces.stdout
    );

    let missing = kubectl.run(&["get", "pod", "nope"]).await.failure();
    assert!(
        missing.stderr.contains("pods \"nope\" not found"),
        "{}",
        missing.stderr
    );

    // Discovery went the aggregated way.
    let discovery = standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == "/apis")
        .expect("kubectl asked for /apis");
    assert!(discovery.header_values("accept")[0].contains("as=APIGroupDiscoveryList"));
}

#[tokio::test]
async fn kubectl_apply_creates_configures_and_deletes() {
    let standin = start().await;
    let kubectl = kubectl(&standin);
    let manifest = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
";
    let created = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(manifest))
        .await
        .success();
    assert_eq!(created.stderr, "", "no warnings, e.g. about OpenAPI");
    assert!(
        created.stdout.contains("deployment.apps/web created"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("configmap/settings created"),
        "{}",
        created.stdout
    );
    let stored = standin
        .get("apps/v1", "Deployment", "default", "web")
        .expect("stored");
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let changed = manifest
        .replace("nginx:1.27", "nginx:1.28")
        .replace("replicas: 1", "replicas: 3");
    let configured = kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&changed))
        .await
        .success();
    assert!(
        configured.stdout.contains("deployment.apps/web configured"),
        "{}",
        configured.stdout
    );
    assert!(
        configured.stdout.contains("configmap/settings unchanged"),
        "{}",
        configured.stdout
    );
    let stored = standin
        .get("apps/v1", "Deployment", "default", "web")
        .expect("stored");
    assert_eq!(stored["spec"]["replicas"], 3);
    let container = &stored["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    assert_eq!(
        container["ports"][0]["containerPort"], 80,
        "the strategic merge kept the ports"
    );

    let deployments = kubectl.run(&["get", "deployments"]).await.success();
    assert!(
        deployments
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("3/3")),
        "{}",
        deployments.stdout
    );

    let server_side = kubectl
        .run_with_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&changed.replace("mode: fast", "mode: slow")),
        )
        .await
        .success();
    assert!(
        server_side
            .stdout
            .contains("configmap/settings serverside-applied"),
        "{}",
        server_side.stdout
    );
    let stored = standin
        .get("v1", "ConfigMap", "default", "settings")
        .expect("stored");
    assert_eq!(stored["data"]["mode"], "slow");

    let deleted = kubectl
        .run(&["delete", "configmap", "settings"])
        .await
        .success();
    assert!(
        deleted.stdout.contains("configmap \"settings\" deleted"),
        "{}",
        deleted.stdout
    );
    assert!(
        standin
            .get("v1", "ConfigMap", "default", "settings")
            .is_none()
    );
}

#[tokio::test]
async fn kubectl_auth_whoami_and_can_i() {
    let standin = start().await;
    let kubectl = kubectl(&standin);
    let whoami = kubectl
        .run(&["auth", "whoami", "-o", "json"])
        .await
        .success();
    let whoami: Value = serde_json::from_str(&whoami.stdout).expect("JSON");
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        infra_tests::apiserver::TOKEN_USER
    );

    let can_i = kubectl
        .run(&["auth", "can-i", "delete", "pods"])
        .await
        .success();
    assert_eq!(can_i.stdout.trim(), "yes");
}

#[tokio::test]
async fn kubectl_logs_and_exec() {
    let standin = start().await;
    standin.create(pod("web")).expect("created");
    standin.push_log("default", "web", "started");
    let kubectl = kubectl(&standin);
    let logs = kubectl.run(&["logs", "web"]).await.success();
    assert_eq!(logs.stdout, "started\n");

    let exec = kubectl
        .run(&["exec", "web", "--", "echo", "hello", "world"])
        .await
        .success();
    assert_eq!(exec.stdout, "hello world\n");
    let exec = kubectl
        .run_with_stdin(&["exec", "-i", "web", "--", "cat"], Some("piped\n"))
        .await
        .success();
    assert_eq!(exec.stdout, "piped\n");
    let failed = kubectl.run(&["exec", "web", "--", "false"]).await.failure();
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);

    // The SPDY fallback.
    let spdy = kubectl
        .command(&["exec", "web", "--", "echo", "over", "spdy"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .output()
        .await
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&spdy.stdout),
        "over spdy\n",
        "{}",
        String::from_utf8_lossy(&spdy.stderr)
    );
    let upgrades: Vec<String> = standin
        .recorded()
        .iter()
        .filter(|r| r.path().ends_with("/exec"))
        .map(|r| r.header_values("upgrade").join(","))
        .collect();
    assert_eq!(
        upgrades.last().map(String::as_str),
        Some("SPDY/3.1"),
        "{upgrades:?}"
    );
    assert!(
        upgrades.iter().any(|u| u.eq_ignore_ascii_case("websocket")),
        "{upgrades:?}"
    );

    standin.set_refuse_upgrades(true);
    let refused = kubectl
        .run(&["exec", "web", "--", "echo", "no"])
        .await
        .failure();
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
}

#[tokio::test]
async fn kubectl_get_watch_prints_each_change_as_it_happens() {
    let standin = start().await;
    standin.create(pod("first")).expect("created");
    let kubectl = kubectl(&standin);
    let mut child = kubectl
        .command(&["get", "pods", "-w", "--request-timeout=60s"])
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("kubectl prints the next line")
            .expect("stdout is readable")
            .expect("kubectl is still running")
    };
    assert!(next_line().await.starts_with("NAME"));
    assert!(next_line().await.starts_with("first"));

    standin.wait_for_streams(|s| s.watches == 1).await;
    standin.create(pod("second")).expect("created");
    let line = next_line().await;
    assert!(
        line.starts_with("second") && line.contains("Running"),
        "{line}"
    );

    standin
        .delete("v1", "Pod", "default", "first")
        .expect("deleted");
    let line = next_line().await;
    assert!(line.starts_with("first"), "{line}");

    child.kill().await.expect("kubectl stops");
    tokio::time::timeout(PATIENCE, standin.wait_for_streams(|s| s.watches == 0))
        .await
        .expect("the watch ends when kubectl goes away");
}

/// A TCP server on 127.0.0.1:0 that echoes what it reads, for port-forward.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn port_forward_round_trip(websockets: bool) {
    let echo = echo_server().await;
    let standin = StandIn::builder()
        .bearer_token(TOKEN)
        .port_forward_target(echo)
        .start()
        .await;
    standin.create(pod("web")).expect("created");
    let kubectl = kubectl(&standin);
    let mut child = kubectl
        .command(&["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("kubectl says where it listens")
        .expect("readable")
        .expect("kubectl runs");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let mut socket = tokio::net::TcpStream::connect(local)
        .await
        .expect("connects");
    socket.write_all(b"ping\n").await.expect("sent");
    let mut answer = [0u8; 5];
    tokio::time::timeout(PATIENCE, socket.read_exact(&mut answer))
        .await
        .expect("the echo comes back")
        .expect("readable");
    assert_eq!(&answer, b"ping\n");
    let request = standin
        .recorded()
        .into_iter()
        .find(|r| r.path().ends_with("/portforward"))
        .expect("kubectl asked to port-forward");
    let expected = if websockets { "websocket" } else { "SPDY/3.1" };
    assert!(request.header_values("upgrade")[0].eq_ignore_ascii_case(expected));
    child.kill().await.expect("kubectl stops");
}

#[tokio::test]
async fn kubectl_port_forward_over_websocket() {
    port_forward_round_trip(true).await;
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    port_forward_round_trip(false).await;
}
