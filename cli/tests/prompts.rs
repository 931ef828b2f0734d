//! The `infra` CLI's interactive prompts, driven through a pseudo-terminal as a person at a
//! terminal would answer them: the certificate trust question, the identity provider list, the
//! username and password prompts, and the saved-server list of a second `infra login`.
//!
//! The real binary (this package's, or the one `INFRA_TESTS_CLI` names) runs in a pty of its own
//! against infra-proxy with its embedded control plane, with `INFRA_HOME` and `KUBECONFIG` in a
//! temporary folder and `NO_COLOR=1` (dialoguer's plain theme). ANSI escapes (cursor moves of
//! the prompts) are stripped from what the tests read.

use std::path::{Path, PathBuf};
use std::process::Command;

use infra_tests::control::ControlHarness;
use infra_tests::proxy::DESTINATION;
use rexpect::process::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::PtySession;
use serde_json::{Value, json};

const POLICY: &str = "grants: []\n";
const SUZIE: &str = "suzie@example.com";
const SUZIE_PASSWORD: &str = "a-long-enough-passphrase";
/// How long one expected answer of the CLI may take.
const TIMEOUT_MS: u64 = 30_000;
const DOWN: &str = "\x1b[B";
const UP: &str = "\x1b[A";
const ENTER: &str = "\r";

fn infra_binary() -> PathBuf {
    // Cargo builds this package's binary before its integration tests and names it here.
    std::env::var_os("INFRA_TESTS_CLI")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_infra")), PathBuf::from)
}

/// One person's machine: `~/.infra` and the kubeconfig, in a temporary folder.
#[derive(Debug)]
struct Laptop {
    dir: tempfile::TempDir,
}

impl Laptop {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("infra-pty-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join(".infra")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kube").join("config")
    }

    /// `infra ARGS` in a pseudo-terminal of its own.
    fn spawn(&self, args: &[&str]) -> Terminal {
        let mut command = Command::new(infra_binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("INFRA_HOME", self.home())
            .env("KUBECONFIG", self.kubeconfig())
            .env("NO_COLOR", "1")
            .env("TERM", "xterm-256color");
        let session = rexpect::session::spawn_with_options(
            command,
            Options::new()
                .timeout_ms(Some(TIMEOUT_MS))
                .strip_ansi_escape_codes(true),
        )
        .expect("infra starts in a pty");
        Terminal {
            session,
            seen: String::new(),
        }
    }
}

/// The terminal the CLI runs in, and everything it showed so far (for failure messages).
struct Terminal {
    session: PtySession,
    seen: String,
}

impl Terminal {
    /// Waits until the CLI shows `text`; answers what it showed up to there.
    #[track_caller]
    fn expect(&mut self, text: &str) -> String {
        match self.session.exp_string(text) {
            Ok(before) => {
                self.seen.push_str(&before);
                self.seen.push_str(text);
                before
            }
            Err(error) => panic!(
                "the CLI did not show {text:?}: {error}\nwhat it showed before:\n{}",
                self.seen
            ),
        }
    }

    /// Types keys (no Enter unless they include it).
    fn keys(&mut self, keys: &str) {
        self.session.send(keys).expect("typing");
        self.session.flush().expect("typing");
    }

    /// Types a line and Enter.
    fn line(&mut self, line: &str) {
        self.keys(&format!("{line}{ENTER}"));
    }

    /// Waits for the CLI to exit; answers its exit code and the rest of what it showed.
    fn exit(mut self) -> (i32, String) {
        let rest = match self.session.exp_eof() {
            Ok(rest) => rest,
            Err(error) => panic!(
                "the CLI did not exit: {error}\nwhat it showed:\n{}",
                self.seen
            ),
        };
        self.seen.push_str(&rest);
        let code = match self.session.process().wait().expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("the CLI did not exit normally: {other:?}\n{}", self.seen),
        };
        (code, self.seen)
    }
}

/// Runs the blocking pty conversation `talk` off the runtime's worker threads (the control
/// plane serves on them).
async fn converse<T: Send + 'static>(talk: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(talk)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Suzie, with a password and a view grant on the destination; answers an access key of hers.
async fn suzie(h: &ControlHarness) -> String {
    let admin = h.admin().await;
    let (status, body) = h
        .call(
            "POST",
            "/api/users",
            Some(&admin),
            Some(json!({"name": SUZIE, "password": SUZIE_PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "adding suzie: {body}");
    let (status, body) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": SUZIE, "role": "view", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "granting suzie: {body}");
    let (status, body) = h
        .call(
            "POST",
            "/api/keys",
            Some(&admin),
            Some(json!({"name": "laptop", "user": SUZIE})),
        )
        .await;
    assert_eq!(status, 201, "a key for suzie: {body}");
    body["key"].as_str().expect("key shown once").to_owned()
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).expect("JSON")
    } else {
        serde_saphyr::from_str(&text).expect("YAML")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_the_certificate_pick_password_then_pick_the_saved_server() {
    let h = ControlHarness::start(POLICY).await;
    let key = suzie(&h).await;
    let laptop = Laptop::new();
    let url = h.control_url();
    let server = url.trim_start_matches("https://").to_owned();

    let laptop = converse(move || {
        // First login: an unknown certificate, shown and trusted; the password method.
        let mut t = laptop.spawn(&["login", &url]);
        t.expect(&format!("The certificate of {server} is not trusted"));
        t.expect("Subject:");
        t.expect("Issuer:");
        t.expect("infra test CA");
        t.expect("Valid from:");
        t.expect("Valid until:");
        let fingerprint = t.expect("Trust this certificate?");
        let fingerprint = fingerprint
            .lines()
            .find_map(|l| l.trim().strip_prefix("SHA-256:"))
            .unwrap_or_else(|| panic!("a SHA-256 fingerprint line in {fingerprint:?}"))
            .trim()
            .to_owned();
        assert_eq!(
            fingerprint.split(':').count(),
            32,
            "32 bytes as hex pairs: {fingerprint}"
        );
        t.keys("y");
        t.expect("Select an identity provider");
        t.expect("Login with username and password");
        t.expect("Login with an access key");
        // Down to the access key and back up: the arrow keys move the choice.
        t.keys(DOWN);
        t.keys(UP);
        t.keys(ENTER);
        t.expect("Username");
        t.line(SUZIE);
        t.expect("Password");
        t.line(SUZIE_PASSWORD);
        t.expect(&format!("Logged in as {SUZIE}"));
        let (code, shown) = t.exit();
        assert_eq!(code, 0, "{shown}");
        assert!(
            !shown.contains(SUZIE_PASSWORD),
            "the password is not echoed: {shown}"
        );

        let config = read_json(&laptop.home().join("config.json"));
        assert_eq!(config["current"], url.as_str(), "{config}");
        let trust = &config["servers"][0]["trust"];
        assert_eq!(trust["kind"], "fingerprint", "{config}");
        assert_eq!(
            trust["sha256"],
            fingerprint.replace(':', "").to_lowercase(),
            "the fingerprint shown is the one saved: {config}"
        );
        let kubeconfig = read_json(&laptop.kubeconfig());
        let name = format!("infra:{DESTINATION}");
        assert!(
            kubeconfig["contexts"]
                .as_array()
                .expect("contexts")
                .iter()
                .any(|c| c["name"] == name.as_str()),
            "{kubeconfig}"
        );

        // Second login, no argument: the saved server is offered first, its certificate is
        // trusted already, and the access key is one arrow down the provider list.
        let mut t = laptop.spawn(&["login"]);
        t.expect("Select a server");
        t.expect(&server);
        t.expect("Connect to another server");
        t.keys(ENTER);
        t.expect("Select an identity provider");
        t.expect("Login with an access key");
        t.keys(DOWN);
        t.keys(ENTER);
        t.expect("Access key");
        t.line(&key);
        t.expect(&format!("Logged in as {SUZIE}"));
        let (code, shown) = t.exit();
        assert_eq!(code, 0, "{shown}");
        assert!(
            !shown.contains("not trusted"),
            "the trusted certificate is not asked about again: {shown}"
        );
        assert!(!shown.contains(&key), "the key is not echoed: {shown}");
        laptop
    })
    .await;

    // The session works: a non-interactive command as suzie.
    let out = tokio::process::Command::new(infra_binary())
        .args(["whoami", "-o", "json"])
        .env_clear()
        .env("HOME", laptop.dir.path())
        .env("INFRA_HOME", laptop.home())
        .env("KUBECONFIG", laptop.kubeconfig())
        .output()
        .await
        .expect("whoami runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: Value = serde_json::from_slice(&out.stdout).expect("whoami JSON");
    assert_eq!(me["name"], SUZIE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_saves_nothing() {
    let h = ControlHarness::start(POLICY).await;
    let laptop = Laptop::new();
    let url = h.control_url();

    converse(move || {
        // No saved server and no argument: the CLI asks for one.
        let mut t = laptop.spawn(&["login"]);
        t.expect("Server");
        t.line(&url);
        t.expect("is not trusted");
        t.expect("SHA-256:");
        t.expect("Trust this certificate?");
        t.keys("n");
        t.expect("error: the certificate of");
        t.expect("was not trusted");
        t.expect("hint: with the server's CA certificate: --tls-trusted-cert FILE");
        let (code, shown) = t.exit();
        assert_eq!(code, 1, "{shown}");
        for file in ["config.json", "sessions.json"] {
            assert!(
                !laptop.home().join(file).exists(),
                "{file} is not written: {shown}"
            );
        }
        assert!(!laptop.kubeconfig().exists(), "no kubeconfig: {shown}");
    })
    .await;
}
