//! The real `kubectl` runs `exec`, `attach`, `cp` and `port-forward` against the stand-in apiserver,
//! over each transport it knows: WebSocket (its default since 1.30 for exec, 1.31 for
//! port-forward, where SPDY rides inside WebSocket messages) and plain SPDY (forced with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` / `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`).

use std::net::SocketAddr;
use std::time::Duration;

use infra_tests::apiserver::StandIn;
use infra_tests::kubectl::{Credentials, Kubectl};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A guard against hangs only; no test asserts on timing.
const HANG: Duration = Duration::from_mins(1);

/// The env var that turns kubectl's WebSocket exec off (so it speaks SPDY).
const EXEC_OVER_SPDY: (&str, &str) = ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
/// The env var that turns kubectl's WebSocket port-forward off (so it speaks plain SPDY).
const PORTFORWARD_OVER_SPDY: (&str, &str) = ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");

struct Cluster {
    stand_in: StandIn,
    kubectl: Kubectl,
}

/// A stand-in with one running pod, `web`, forwarding its ports to `upstream`.
async fn cluster(upstream: Option<SocketAddr>) -> Cluster {
    let mut builder = StandIn::builder();
    if let Some(upstream) = upstream {
        builder = builder.port_forward_target(upstream);
    }
    let stand_in = builder.start().await;
    stand_in
        .create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        }))
        .expect("the pod is created");
    let cert = stand_in.client_cert("tester", &["system:masters"]);
    let kubectl = Kubectl::new(
        &stand_in.url(),
        stand_in.ca_pem(),
        &Credentials::ClientCert(cert),
    );
    Cluster { stand_in, kubectl }
}

/// The upgrade header and negotiated-protocol headers of the requests to `subresource`.
fn upgrades(stand_in: &StandIn, subresource: &str) -> Vec<(String, Vec<String>)> {
    stand_in
        .recorded()
        .into_iter()
        .filter(|r| r.path().ends_with(&format!("/pods/web/{subresource}")))
        .map(|r| {
            let upgrade = r.header("upgrade").unwrap_or_default();
            let protocols = if upgrade.eq_ignore_ascii_case("websocket") {
                r.header_values("sec-websocket-protocol")
            } else {
                r.header_values("x-stream-protocol-version")
            };
            (upgrade, protocols)
        })
        .collect()
}

#[tokio::test]
async fn exec_echo_over_websocket_v5() {
    let Cluster { stand_in, kubectl } = cluster(None).await;
    let out = kubectl
        .run_with(&["exec", "web", "--", "echo", "hi", "there"], &[], None)
        .await
        .success();
    assert_eq!(out.stdout, "hi there\n");
    let upgrades = upgrades(&stand_in, "exec");
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].0, "websocket");
    assert!(
        upgrades[0]
            .1
            .iter()
            .any(|p| p.contains("v5.channel.k8s.io")),
        "{upgrades:?}"
    );
}

#[tokio::test]
async fn exec_stdin_reaches_the_command_and_ends_it() {
    let Cluster {
        stand_in: _stand_in,
        kubectl,
    } = cluster(None).await;
    let input = b"line one\nline two\n";
    for env in [&[][..], &[EXEC_OVER_SPDY][..]] {
        let out = kubectl
            .run_with(&["exec", "-i", "web", "--", "cat"], env, Some(input))
            .await
            .success();
        assert_eq!(out.stdout.as_bytes(), input, "env {env:?}");
    }
}

#[tokio::test]
async fn exec_exit_codes_and_stderr_propagate() {
    let Cluster {
        stand_in: _stand_in,
        kubectl,
    } = cluster(None).await;
    for env in [&[][..], &[EXEC_OVER_SPDY][..]] {
        let out = kubectl
            .run_with(&["exec", "web", "--", "sh", "-c", "exit 3"], env, None)
            .await;
        assert_eq!(out.status.code(), Some(3), "env {env:?}: {out:?}");
        assert!(
            out.stderr.contains("command terminated with exit code 3"),
            "env {env:?}: {out:?}"
        );

        let out = kubectl
            .run_with(&["exec", "web", "--", "false"], env, None)
            .await;
        assert_eq!(out.status.code(), Some(1), "env {env:?}: {out:?}");

        let out = kubectl
            .run_with(&["exec", "web", "--", "stderr-echo", "oops"], env, None)
            .await
            .success();
        assert_eq!(out.stdout, "", "env {env:?}");
        assert_eq!(out.stderr, "oops\n", "env {env:?}");
    }
}

#[tokio::test]
async fn exec_over_spdy_when_websockets_are_off() {
    let Cluster { stand_in, kubectl } = cluster(None).await;
    let out = kubectl
        .run_with(
            &["exec", "web", "--", "echo", "spdy"],
            &[EXEC_OVER_SPDY],
            None,
        )
        .await
        .success();
    assert_eq!(out.stdout, "spdy\n");
    let upgrades = upgrades(&stand_in, "exec");
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].0, "SPDY/3.1");
    assert!(
        upgrades[0].1.iter().any(|p| p == "v5.channel.k8s.io"),
        "{upgrades:?}"
    );
}

#[tokio::test]
async fn attach_with_stdin() {
    let Cluster {
        stand_in: _stand_in,
        kubectl,
    } = cluster(None).await;
    for env in [&[][..], &[EXEC_OVER_SPDY][..]] {
        let out = kubectl
            .run_with(&["attach", "-i", "web"], env, Some(b"attached\n"))
            .await
            .success();
        assert!(out.stdout.ends_with("attached\n"), "env {env:?}: {out:?}");
    }
}

#[tokio::test]
async fn cp_from_and_to_the_pod() {
    let Cluster {
        stand_in: _stand_in,
        kubectl,
    } = cluster(None).await;
    for env in [&[][..], &[EXEC_OVER_SPDY][..]] {
        let local = kubectl.dir().join("fetched.txt");
        let local_arg = local.to_str().expect("a UTF-8 temporary path");
        kubectl
            .run_with(&["cp", "web:/tmp/remote.txt", local_arg], env, None)
            .await
            .success();
        let fetched = std::fs::read_to_string(&local).expect("kubectl wrote the file");
        assert_eq!(fetched, "contents of /tmp/remote.txt\n", "env {env:?}");

        let upload = kubectl.dir().join("up.txt");
        std::fs::write(&upload, "12345").expect("the temporary directory is writable");
        let upload_arg = upload.to_str().expect("a UTF-8 temporary path");
        let out = kubectl
            .run_with(&["cp", upload_arg, "web:/tmp/"], env, None)
            .await
            .success();
        // The stand-in's tar lists what it received on stderr.
        assert!(out.stderr.contains("x up.txt 5"), "env {env:?}: {out:?}");
    }
}

/// A TCP server on 127.0.0.1:0 that answers each connection with what it read, once the
/// client half-closes, prefixed so the test sees it came from here.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if conn.read_to_end(&mut received).await.is_ok() {
                    let _ = conn.write_all(b"echo: ").await;
                    let _ = conn.write_all(&received).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// Runs `kubectl port-forward pod/web :8080` until its local port is known; the process ends
/// when the returned child is dropped.
async fn port_forward(
    kubectl: &Kubectl,
    env: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr) {
    let mut command =
        kubectl.command(&["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"]);
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("kubectl runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(HANG, async {
        while let Some(line) = lines.next_line().await.expect("kubectl's stdout") {
            // "Forwarding from 127.0.0.1:PORT -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from ") {
                let local = rest.split(" -> ").next().expect("an address");
                return local.parse::<SocketAddr>().expect("a socket address");
            }
        }
        panic!("kubectl port-forward ended without forwarding");
    })
    .await
    .expect("kubectl port-forward starts");
    // Keep draining stdout ("Handling connection for …") so kubectl never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn round_trip(local: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(local).await.expect("kubectl listens");
    conn.write_all(payload).await.expect("write");
    conn.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(HANG, conn.read_to_end(&mut answer))
        .await
        .expect("the answer comes")
        .expect("read");
    answer
}

#[tokio::test]
async fn port_forward_over_websocket_tunnelled_spdy() {
    let upstream = echo_server().await;
    let Cluster { stand_in, kubectl } = cluster(Some(upstream)).await;
    let (_child, local) = port_forward(&kubectl, &[]).await;
    assert_eq!(round_trip(local, b"first").await, b"echo: first");
    let big = vec![b'x'; 300_000];
    let mut expected = b"echo: ".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(round_trip(local, &big).await, expected);
    let upgrades = upgrades(&stand_in, "portforward");
    assert_eq!(
        upgrades.len(),
        1,
        "one connection for every forwarded one: {upgrades:?}"
    );
    assert_eq!(upgrades[0].0, "websocket");
    assert!(
        upgrades[0]
            .1
            .iter()
            .any(|p| p.contains("SPDY/3.1+portforward.k8s.io")),
        "{upgrades:?}"
    );
}

#[tokio::test]
async fn port_forward_over_spdy_when_websockets_are_off() {
    let upstream = echo_server().await;
    let Cluster { stand_in, kubectl } = cluster(Some(upstream)).await;
    let (_child, local) = port_forward(&kubectl, &[PORTFORWARD_OVER_SPDY]).await;
    assert_eq!(round_trip(local, b"one").await, b"echo: one");
    assert_eq!(round_trip(local, b"two").await, b"echo: two");
    let upgrades = upgrades(&stand_in, "portforward");
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].0, "SPDY/3.1");
    assert_eq!(upgrades[0].1, ["portforward.k8s.io"]);
}
