//! Long-running and upgraded requests through infra-proxy, end to end: the real kubectl (and raw
//! HTTP clients where kubectl cannot say what we want to check), over real TLS, through the
//! proxy, to the stand-in apiserver. Watches and followed logs stream as they happen and end when
//! their client goes away; exec, attach, cp and port-forward work over WebSocket and SPDY; an
//! upgrade the apiserver refuses never becomes a tunnel.
//!
//! Each test starts its own proxy and stand-in on 127.0.0.1:0. Timeouts here only bound hangs;
//! no assertion depends on timing.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infra_tests::apiserver::{ActiveStreams, Caller, RecordedRequest, StandIn};
use infra_tests::certs;
use infra_tests::kubectl::{Credentials, Kubectl, Output};
use infra_tests::proxy::{Harness, UPSTREAM_TOKEN};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout};

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

// ---------------------------------------------------------------------------------------------
// Watches and followed logs

/// `kubectl get pods -w`: each change is printed while kubectl runs, and killing kubectl ends
/// the watch at the apiserver.
async fn kubectl_watch_streams_each_change_and_ends_with_kubectl(env: &[(&str, &str)]) {
    let h = Harness::start(POLICY).await;
    h.standin.create(pod("first")).expect("created");
    let kubectl = editor(&h);
    let mut watch = Running::spawn(&kubectl, &["get", "pods", "-w"], env);
    assert!(watch.next_line().await.starts_with("NAME"));
    assert!(watch.next_line().await.starts_with("first"));

    streams(&h.standin, "the watch reaches the apiserver", |s| {
        s.watches == 1
    })
    .await;
    h.standin.create(pod("second")).expect("created");
    let line = watch.next_line().await;
    assert!(
        line.starts_with("second") && line.contains("Running"),
        "{line}"
    );
    h.standin
        .delete("v1", "Pod", "default", "first")
        .expect("deleted");
    let line = watch.next_line().await;
    assert!(line.starts_with("first"), "{line}");

    let request = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| {
            r.path() == "/api/v1/namespaces/default/pods"
                && r.query().is_some_and(|q| q.contains("watch=true"))
        })
        .expect("the watch reached the apiserver");
    assert_carries_only_our_identity(&request, EDITOR, EDITOR_GROUPS);

    watch.kill().await;
    streams(&h.standin, "the watch ends when kubectl goes away", |s| {
        s.watches == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_over_http2_streams_changes_and_ends_with_kubectl() {
    kubectl_watch_streams_each_change_and_ends_with_kubectl(DEFAULTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_over_http1_streams_changes_and_ends_with_kubectl() {
    kubectl_watch_streams_each_change_and_ends_with_kubectl(HTTP1).await;
}

/// The switch the HTTP/1.1 tests rely on really makes kubectl speak HTTP/1.1 (checked against
/// the stand-in, which records the version it was spoken to with). Go's own switch,
/// `GODEBUG=http2client=0`, does not: client-go sets up its HTTP/2 transport itself
/// (`k8s.io/apimachinery/pkg/util/net`), and only `DISABLE_HTTP2` stops it (kubectl v1.32.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_speaks_http1_when_told() {
    let h = Harness::start(POLICY).await;
    let direct = Kubectl::new(
        &h.standin.url(),
        h.standin.ca_pem(),
        &Credentials::Token(UPSTREAM_TOKEN.to_owned()),
    );
    let version_of = |env: &'static [(&'static str, &'static str)]| {
        let direct = &direct;
        let standin = &h.standin;
        async move {
            standin.clear_recorded();
            run(direct, &["get", "pods"], env, None).await.success();
            let request = standin
                .recorded()
                .into_iter()
                .find(|r| r.path() == "/api/v1/namespaces/default/pods")
                .expect("kubectl listed pods");
            request.version
        }
    };
    assert_eq!(version_of(DEFAULTS).await, Version::HTTP_2);
    assert_eq!(version_of(HTTP1).await, Version::HTTP_11);
}

/// `kubectl logs -f`: pushed lines arrive as they are pushed; killing kubectl ends the follow.
async fn kubectl_logs_follow_streams_lines_and_ends_with_kubectl(env: &[(&str, &str)]) {
    let h = start().await;
    h.standin.push_log("default", "web", "before");
    let kubectl = editor(&h);
    let mut logs = Running::spawn(&kubectl, &["logs", "-f", "web"], env);
    assert_eq!(logs.next_line().await, "before");
    streams(&h.standin, "the follow reaches the apiserver", |s| {
        s.log_follows == 1
    })
    .await;
    for line in ["one", "two", "three"] {
        h.standin.push_log("default", "web", line);
        assert_eq!(logs.next_line().await, line);
    }
    let request = requests_for(&h.standin, "log")
        .pop()
        .expect("the follow reached the apiserver");
    assert!(
        request.query().is_some_and(|q| q.contains("follow=true")),
        "{request:?}"
    );
    assert_carries_only_our_identity(&request, EDITOR, EDITOR_GROUPS);

    logs.kill().await;
    streams(&h.standin, "the follow ends when kubectl goes away", |s| {
        s.log_follows == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_over_http2_streams_lines_and_ends_with_kubectl() {
    kubectl_logs_follow_streams_lines_and_ends_with_kubectl(DEFAULTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_over_http1_streams_lines_and_ends_with_kubectl() {
    kubectl_logs_follow_streams_lines_and_ends_with_kubectl(HTTP1).await;
}

// ---------------------------------------------------------------------------------------------
// Exec, attach, cp

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket_and_spdy_carries_only_our_identity() {
    let h = start().await;
    let kubectl = editor(&h);
    for (env, upgrade) in [(DEFAULTS, "websocket"), (EXEC_OVER_SPDY, "SPDY/3.1")] {
        h.standin.clear_recorded();
        let (out, runs) =
            run_counted(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None).await;
        let out = out.success();
        assert_eq!(out.stdout, "hi\n", "env {env:?}");
        let requests = requests_for(&h.standin, "exec");
        assert_eq!(
            requests.len(),
            runs,
            "one upgrade per run, env {env:?}: {requests:?}"
        );
        let exec = requests.last().expect("the exec reached the apiserver");
        assert_eq!(exec.version, Version::HTTP_11, "upgrades go over HTTP/1.1");
        assert!(
            exec.header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case(upgrade)),
            "env {env:?}: {exec:?}"
        );
        assert_carries_only_our_identity(exec, EDITOR, EDITOR_GROUPS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_stdin_and_exit_codes_pass_through() {
    let h = start().await;
    let kubectl = editor(&h);
    let input = b"line one\nline two\n";
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(
            &kubectl,
            &["exec", "-i", "web", "--", "cat"],
            env,
            Some(input),
        )
        .await
        .success();
        assert_eq!(out.stdout.as_bytes(), input, "env {env:?}");

        let out = run(
            &kubectl,
            &["exec", "web", "--", "sh", "-c", "exit 3"],
            env,
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(3), "env {env:?}: {out:?}");
        assert!(
            out.stderr.contains("command terminated with exit code 3"),
            "env {env:?}: {out:?}"
        );

        let out = run(
            &kubectl,
            &["exec", "web", "--", "stderr-echo", "oops"],
            env,
            None,
        )
        .await
        .success();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", "oops\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_kubectl_exec_ends_the_session_at_the_apiserver() {
    let h = start().await;
    let kubectl = editor(&h);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let mut command = kubectl.command(&["exec", "-i", "web", "--", "cat"]);
        command.envs(env.iter().copied()).stdin(Stdio::piped());
        command.stderr(Stdio::null());
        let mut child = command.spawn().expect("kubectl runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        stdin.write_all(b"still here\n").await.expect("written");
        let line = tokio::time::timeout(HANG, stdout.next_line())
            .await
            .expect("cat answers")
            .expect("readable")
            .expect("kubectl is running");
        assert_eq!(line, "still here", "env {env:?}");
        streams(&h.standin, "the session is open", |s| s.upgrades == 1).await;
        // stdin stays open: only kubectl going away can end the session.
        child.kill().await.expect("kubectl stops");
        streams(&h.standin, "the session ends when kubectl goes away", |s| {
            s.upgrades == 0
        })
        .await;
        drop(stdin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_and_cp_work_through_the_proxy() {
    let h = start().await;
    let kubectl = editor(&h);
    let mut attaches = 0;
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let (out, runs) =
            run_counted(&kubectl, &["attach", "-i", "web"], env, Some(b"attached\n")).await;
        attaches += runs;
        let out = out.success();
        assert!(out.stdout.ends_with("attached\n"), "env {env:?}: {out:?}");

        let local = kubectl.dir().join("fetched.txt");
        let local_arg = local.to_str().expect("a UTF-8 temporary path");
        run(
            &kubectl,
            &["cp", "web:/tmp/remote.txt", local_arg],
            env,
            None,
        )
        .await
        .success();
        let fetched = std::fs::read_to_string(&local).expect("kubectl wrote the file");
        assert_eq!(fetched, "contents of /tmp/remote.txt\n", "env {env:?}");

        let upload = kubectl.dir().join("up.txt");
        std::fs::write(&upload, "12345").expect("the temporary directory is writable");
        let upload_arg = upload.to_str().expect("a UTF-8 temporary path");
        let out = run(&kubectl, &["cp", upload_arg, "web:/tmp/"], env, None)
            .await
            .success();
        // The stand-in's tar lists what it received on stderr.
        assert!(out.stderr.contains("x up.txt 5"), "env {env:?}: {out:?}");
    }
    let attach = requests_for(&h.standin, "attach");
    assert_eq!(attach.len(), attaches, "one upgrade per run: {attach:?}");
    for request in &attach {
        assert_carries_only_our_identity(request, EDITOR, EDITOR_GROUPS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_kubectls_forbidden_message_for_exec_and_the_apiserver_never_sees_it() {
    let h = start().await;
    let kubectl = h.kubectl_as(VIEWER, &[]);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .failure();
        assert!(
            out.stderr.contains(&format!(
                "pods \"web\" is forbidden: User \"{VIEWER}\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
            )),
            "env {env:?}: {}",
            out.stderr
        );
        let out = run(&kubectl, &["attach", "web"], env, None).await.failure();
        assert!(
            out.stderr
                .contains("cannot create resource \"pods/attach\" in API group \"\""),
            "env {env:?}: {}",
            out.stderr
        );
    }
    // The viewer may read the pod (kubectl does before it execs), nothing more.
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| !r.path().ends_with("/exec") && !r.path().ends_with("/attach")),
        "a denied upgrade never reaches the apiserver"
    );
    assert_eq!(h.standin.active_streams(), ActiveStreams::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_refused_by_the_apiserver_shows_its_status() {
    let h = start().await;
    h.standin.set_refuse_upgrades(true);
    let kubectl = editor(&h);
    for env in [DEFAULTS, EXEC_OVER_SPDY] {
        let out = run(&kubectl, &["exec", "web", "--", "echo", "hi"], env, None)
            .await
            .failure();
        assert!(
            out.stderr.contains(&format!(
                "pods \"web\" is forbidden: User \"{EDITOR}\" cannot create resource \"pods/exec\""
            )),
            "env {env:?}: {}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "env {env:?}");
    }
    assert_eq!(h.standin.active_streams().upgrades, 0);
}

// ---------------------------------------------------------------------------------------------
// Port-forward

/// A TCP server on 127.0.0.1:0 that answers each connection with what it read, once the client
/// half-closes, prefixed so the test sees it came from here.
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

async fn kubectl_port_forward_round_trips(env: &[(&str, &str)], upgrade: &str) {
    let h = start().await;
    h.standin.set_port_forward_target(echo_server().await);
    let kubectl = editor(&h);
    let mut forward = Running::spawn(
        &kubectl,
        &["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"],
        env,
    );
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let line = forward.next_line().await;
    let local: SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let _child = forward.drain_stdout();

    assert_eq!(round_trip(local, b"first").await, b"echo: first");
    let big = vec![b'x'; 300_000];
    let mut expected = b"echo: ".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(round_trip(local, &big).await, expected);

    let requests = requests_for(&h.standin, "portforward");
    assert_eq!(
        requests.len(),
        1,
        "one tunnel for every connection: {requests:?}"
    );
    assert!(
        requests[0]
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case(upgrade)),
        "{requests:?}"
    );
    assert_carries_only_our_identity(&requests[0], EDITOR, EDITOR_GROUPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_tunnelled_spdy() {
    kubectl_port_forward_round_trips(DEFAULTS, "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy() {
    kubectl_port_forward_round_trips(PORTFORWARD_OVER_SPDY, "SPDY/3.1").await;
}

// ---------------------------------------------------------------------------------------------
// Raw upgrades: what kubectl cannot be made to send

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the proxy that speaks HTTP/1.1.
async fn connect(h: &Harness) -> Tls {
    let mut config = certs::client_config(&h.ca, None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(h.proxy.address)
        .await
        .expect("the proxy listens");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("a DNS name"), tcp)
        .await
        .expect("TLS handshake")
}

/// A WebSocket exec request head (v5 channel protocol) with `extra` header lines.
fn websocket_exec(token: &str, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET {EXEC_PATH} HTTP/1.1\r\n\
         Host: localhost\r\n\
         Authorization: Bearer {token}\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
    );
    if !extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: Upgrade\r\n");
    }
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Reads a response head, up to and including the blank line, and no further.
async fn read_head(tls: &mut Tls) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(HANG, tls.read(&mut byte))
            .await
            .expect("the proxy answers")
            .expect("the connection is readable");
        assert_ne!(
            read,
            0,
            "the connection ended inside a response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("a response head is ASCII")
}

/// The value of a header in a response head (names compared without case).
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads what is left until the proxy closes the connection. A close without TLS close_notify,
/// or a reset because we wrote after the close, count as closed too.
async fn read_until_closed(tls: &mut Tls) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(HANG, tls.read(&mut buffer))
            .await
            .expect("the proxy closes the connection");
        match read {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&buffer[..n]),
            Err(error) => {
                assert!(
                    matches!(
                        error.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ),
                    "{error}"
                );
                return rest;
            }
        }
    }
}

/// What a client might write after its upgrade request: a request the proxy's own credential
/// would authorize if it were spliced onto the apiserver connection.
fn smuggled(token: &str) -> String {
    format!(
        "GET /api/v1/namespaces/default/secrets HTTP/1.1\r\n\
         Host: localhost\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_refused_upstream_is_relayed_and_never_becomes_a_tunnel() {
    let h = start().await;
    h.standin.set_refuse_upgrades(true);
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);

    // Bytes sent right behind the upgrade request, before any answer (the CVE-2018-1002105
    // shape: a client that assumes the upgrade worked).
    let mut tls = connect(&h).await;
    let mut sent = websocket_exec(&token, &[]);
    sent.push_str(&smuggled(&token));
    tls.write_all(sent.as_bytes()).await.expect("sent");
    let answer = read_until_closed(&mut tls).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closes: {answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head_value(head, "sec-websocket-accept").is_none(), "{head}");
    assert!(head_value(head, "upgrade").is_none(), "{head}");
    let status: Value = serde_json::from_str(body).expect("the apiserver's Status");
    assert_eq!(status["reason"], "Forbidden", "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot create resource \"pods/exec\"")),
        "{status}"
    );

    // Bytes sent after the refusal arrived.
    let mut tls = connect(&h).await;
    tls.write_all(websocket_exec(&token, &[]).as_bytes())
        .await
        .expect("sent");
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(
        head_value(&head, "sec-websocket-accept").is_none(),
        "{head}"
    );
    // The write may already fail if the proxy closed first; either way nothing is forwarded.
    let _ = tls.write_all(smuggled(&token).as_bytes()).await;
    let _ = tls.flush().await;
    let rest = read_until_closed(&mut tls).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("HTTP/1.1"),
        "only the refusal's body: {rest}"
    );

    let recorded = h.standin.recorded();
    assert_eq!(
        recorded
            .iter()
            .filter(|r| r.path().ends_with("/pods/web/exec"))
            .count(),
        2,
        "{recorded:?}"
    );
    assert!(
        recorded.iter().all(|r| !r.path().contains("/secrets")),
        "no request was smuggled behind a refused upgrade: {recorded:?}"
    );
    assert_eq!(h.standin.active_streams().upgrades, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_upgrade_is_relayed_intact_and_carries_only_our_identity() {
    let h = start().await;
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    let mut tls = connect(&h).await;
    let request = websocket_exec(
        &token,
        &[
            ("Connection", "Upgrade, X-Hop"),
            ("X-Hop", "must not be forwarded"),
            ("X-Remote-User", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("X-Remote-Extra-Scopes", "all"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "http"),
            ("Forwarded", "for=10.0.0.1;host=evil.example"),
            ("X-Real-Ip", "10.0.0.1"),
            ("Audit-Id", "chosen-by-the-client"),
        ],
    );
    tls.write_all(request.as_bytes()).await.expect("sent");
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        head_value(&head, "sec-websocket-accept"),
        Some(WEBSOCKET_ACCEPT),
        "{head}"
    );
    assert_eq!(
        head_value(&head, "sec-websocket-protocol"),
        Some("v5.channel.k8s.io"),
        "{head}"
    );
    assert!(
        head_value(&head, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{head}"
    );

    // The tunnel carries the session: a binary frame on channel 1 (stdout) with "hi\n".
    let mut session = Vec::new();
    let mut buffer = [0u8; 1024];
    while !session.windows(4).any(|w| w == b"\x01hi\n") {
        let read = tokio::time::timeout(HANG, tls.read(&mut buffer))
            .await
            .expect("the session's output arrives")
            .expect("readable");
        assert_ne!(read, 0, "the tunnel ended early: {session:?}");
        session.extend_from_slice(&buffer[..read]);
    }
    drop(tls);

    let exec = requests_for(&h.standin, "exec")
        .pop()
        .expect("the exec reached the apiserver");
    assert_carries_only_our_identity(&exec, EDITOR, EDITOR_GROUPS);
    assert_eq!(exec.header_values("x-hop"), Vec::<String>::new());
    assert_ne!(
        exec.header("audit-id").as_deref(),
        Some("chosen-by-the-client")
    );
    assert_eq!(
        exec.header("sec-websocket-key").as_deref(),
        Some(WEBSOCKET_KEY)
    );
    assert_eq!(exec.header("upgrade").as_deref(), Some("websocket"));
    assert!(
        exec.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{exec:?}"
    );
    assert_eq!(
        exec.header("host"),
        Some(h.standin.addr().to_string()),
        "the apiserver's own authority"
    );
    streams(&h.standin, "the session ends with its client", |s| {
        s.upgrades == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_impersonation_headers_is_refused_and_never_forwarded() {
    let h = start().await;
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    for name in ["Impersonate-User", "impersonate-group", "Impersonate-Uid"] {
        let mut tls = connect(&h).await;
        tls.write_all(websocket_exec(&token, &[(name, "system:admin")]).as_bytes())
            .await
            .expect("sent");
        let head = read_head(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{name}: {head}");
        assert!(
            head_value(&head, "sec-websocket-accept").is_none(),
            "{head}"
        );
    }
    assert!(requests_for(&h.standin, "exec").is_empty());
}

// ---------------------------------------------------------------------------------------------
// A client that goes away

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client(h: &Harness, http2: bool) -> HttpsClient {
    let mut config = certs::client_config(&h.ca, None);
    // hyper-rustls sets ALPN itself, from the versions enabled.
    config.alpn_protocols.clear();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.build()
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A raw watch through the proxy ends at the apiserver when its client drops it: on HTTP/2 by
/// resetting the stream (the connection stays up), on HTTP/1.1 by closing the connection.
async fn a_dropped_watch_ends_upstream(http2: bool) {
    let h = start().await;
    let client = client(&h, http2);
    let token = h.token(EDITOR, EDITOR_GROUPS, TOKEN_TTL);
    let response = tokio::time::timeout(
        HANG,
        client.request(
            Request::get(format!(
                "{}/api/v1/namespaces/default/pods?watch=true",
                h.url()
            ))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .expect("a valid request"),
        ),
    )
    .await
    .expect("the proxy answers")
    .expect("the watch starts");
    assert_eq!(response.status(), StatusCode::OK);
    let expected = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    assert_eq!(response.version(), expected);
    streams(&h.standin, "the watch reaches the apiserver", |s| {
        s.watches == 1
    })
    .await;

    h.standin.create(pod("second")).expect("created");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while !String::from_utf8_lossy(&buffer).contains("\"second\"") {
        let frame = tokio::time::timeout(HANG, body.frame())
            .await
            .expect("the event arrives")
            .expect("the watch is open")
            .expect("the watch stays up");
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }

    drop(body);
    streams(&h.standin, "the watch ends when its client drops it", |s| {
        s.watches == 0
    })
    .await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_http2_watch_ends_upstream() {
    a_dropped_watch_ends_upstream(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_http1_watch_ends_upstream() {
    a_dropped_watch_ends_upstream(false).await;
}
