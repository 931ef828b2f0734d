//! Long-running and upgraded requests through infra-proxy, end to end: the real kubectl (and raw
//! HTTP clients where kubectl cannot say what we want to check), over real TLS, through the
//! proxy, to the stand-in apiserver. Watches and followed logs stream as they happen and end when
//! their client goes away; exec, attach, cp and port-forward work over WebSocket and SPDY; an
//! upgrade the apiserver refuses never becomes a tunnel.
//!
//! Each test starts its own proxy and stand-in on 127.0.0.1:0. Timeouts here only bound hangs;
//! no assertion depends on timing.

use std::process::Stdio;
use std::time::Duration;

use infra_tests::apiserver::{ActiveStreams, Caller, RecordedRequest, StandIn};
use infra_tests::kubectl::{Kubectl, Output};
use infra_tests::proxy::{Harness, UPSTREAM_TOKEN};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout};

mod dropped;
mod exec;
mod exec_verbs;
mod port_forward;
mod upgrades;
mod watches;

/// A guard against hangs only; no test asserts on timing.
const HANG: Duration = Duration::from_mins(1);
/// How long the tokens of the raw clients live.
const TOKEN_TTL: Duration = Duration::from_mins(5);

/// The user with `edit` on the whole destination: exec, attach, port-forward are allowed.
const EDITOR: &str = "carl@example.com";
/// The editor's groups, as its token carries them.
const EDITOR_GROUPS: &[&str] = &["Engineering"];
/// The user with only `view`.
const VIEWER: &str = "suzie@example.com";

const POLICY: &str = "
grants:
  - user: carl@example.com
    role: edit
    resource: testing
  - user: suzie@example.com
    role: view
    resource: testing
";

/// client-go's switch for kubectl's HTTP/2 client (Go's `GODEBUG=http2client=0` does not turn it
/// off; see `kubectl_speaks_http1_when_told`).
const HTTP1: &[(&str, &str)] = &[("DISABLE_HTTP2", "true")];
/// kubectl's defaults: HTTP/2 for normal requests, WebSocket for exec and port-forward.
const DEFAULTS: &[(&str, &str)] = &[];
/// Exec, attach and cp over SPDY instead of WebSocket.
const EXEC_OVER_SPDY: &[(&str, &str)] = &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
/// Port-forward over plain SPDY instead of SPDY tunnelled in WebSocket.
const PORTFORWARD_OVER_SPDY: &[(&str, &str)] = &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")];

/// The exec request of the raw upgrade tests.
const EXEC_PATH: &str =
    "/api/v1/namespaces/default/pods/web/exec?command=echo&command=hi&stdout=true";
/// RFC 6455's sample key, and the accept value that belongs to it.
const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WEBSOCKET_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    })
}

/// A proxy and stand-in with the pod `web`.
async fn start() -> Harness {
    let h = Harness::start(POLICY).await;
    h.standin.create(pod("web")).expect("the pod is created");
    h
}

fn editor(h: &Harness) -> Kubectl {
    h.kubectl_as(EDITOR, EDITOR_GROUPS)
}

/// Waits (bounded) until the stand-in's long-running responses satisfy `condition`.
async fn streams(standin: &StandIn, what: &str, condition: impl Fn(ActiveStreams) -> bool) {
    tokio::time::timeout(HANG, standin.wait_for_streams(condition))
        .await
        .unwrap_or_else(|_| panic!("{what}: now {:?}", standin.active_streams()));
}

/// What kubectl v1.32 logs when it drops a WebSocket message of an exec, attach or cp session.
/// client-go starts reading the connection before it has registered its streams
/// (`wsStreamCreator.readDemuxLoop` runs beside `streamer.stream`), and a message that arrives in
/// between is discarded with this log line. A real apiserver's output comes long after its `101`;
/// the stand-in's comes right behind it, and through the proxy it can reach kubectl in the same
/// read as the `101`, so on a loaded machine kubectl now and then loses a session's first
/// output, stderr or exit status. That is kubectl's race, not the proxy's: a run that shows this
/// line is run again, and any other failure fails the test.
const CLIENT_GO_STREAM_RACE: &str = "Unknown stream id";

/// Attempts at a kubectl run that lost a message to [`CLIENT_GO_STREAM_RACE`].
const ATTEMPTS: usize = 3;

/// Runs kubectl with extra environment and optional stdin, to the end.
async fn run(
    kubectl: &Kubectl,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Output {
    run_counted(kubectl, args, env, stdin).await.0
}

/// [`run`], also answering how many times kubectl ran (more than once only after it lost a
/// message to [`CLIENT_GO_STREAM_RACE`]), for tests that count the requests it made.
async fn run_counted(
    kubectl: &Kubectl,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> (Output, usize) {
    for attempt in 1..=ATTEMPTS {
        let output = kubectl.run_with(args, env, stdin).await;
        if !output.stderr.contains(CLIENT_GO_STREAM_RACE) {
            return (output, attempt);
        }
    }
    panic!("kubectl {args:?} lost a message to client-go's stream race {ATTEMPTS} times in a row")
}

/// A kubectl that keeps running (watch, follow, port-forward), read line by line as it prints.
struct Running {
    child: Child,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn spawn(kubectl: &Kubectl, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = kubectl.command(args);
        command.envs(env.iter().copied());
        // Nobody reads its stderr here; a null one can never fill up and block it.
        command.stderr(Stdio::null());
        let mut child = command.spawn().expect("kubectl runs");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        Self { child, stdout }
    }

    /// The next line kubectl prints, while it is still running.
    async fn next_line(&mut self) -> String {
        tokio::time::timeout(HANG, self.stdout.next_line())
            .await
            .expect("kubectl prints the next line")
            .expect("kubectl's stdout is readable")
            .expect("kubectl is still running")
    }

    /// Keeps reading stdout in the background ("Handling connection for …") so kubectl never
    /// blocks on it; answers the process, which is killed when dropped.
    fn drain_stdout(self) -> Child {
        let Self { child, mut stdout } = self;
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        child
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("kubectl stops");
    }
}

/// The requests the stand-in received for a subresource of the pod `web`.
fn requests_for(standin: &StandIn, subresource: &str) -> Vec<RecordedRequest> {
    let suffix = format!("/pods/web/{subresource}");
    standin
        .recorded()
        .into_iter()
        .filter(|r| r.path().ends_with(&suffix))
        .collect()
}

/// The proxy's identity headers, and only those, on a request that reached the stand-in.
#[track_caller]
fn assert_carries_only_our_identity(request: &RecordedRequest, user: &str, groups: &[&str]) {
    assert_eq!(request.caller, Caller::BearerToken, "{request:?}");
    assert_eq!(
        request.header_values("authorization"),
        [format!("Bearer {UPSTREAM_TOKEN}")],
        "only the proxy's own credential reaches the apiserver"
    );
    assert_eq!(request.header_values("impersonate-user"), [user]);
    let mut expected: Vec<&str> = groups.to_vec();
    expected.push("system:authenticated");
    assert_eq!(request.header_values("impersonate-group"), expected);
    assert_eq!(request.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(request.header_values("audit-id").len(), 1, "{request:?}");
    for (name, _) in &request.headers {
        let name = name.as_str();
        assert!(
            !(name.starts_with("x-remote-")
                || (name.starts_with("x-forwarded-") && name != "x-forwarded-for")
                || name == "forwarded"
                || name == "x-real-ip"
                || (name.starts_with("impersonate-")
                    && name != "impersonate-user"
                    && name != "impersonate-group")),
            "{name} reached the apiserver: {request:?}"
        );
    }
}
