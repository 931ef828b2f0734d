//! The `infra` CLI end to end: the real binary against infra-proxy with its embedded control plane
//! (real TLS, real SQLite) in front of the stand-in apiserver, and the real kubectl through the
//! kubeconfig the CLI wrote, its credential plugin being the CLI itself.
//!
//! The binary is this package's own (cargo builds it before these tests and passes its path as
//! `CARGO_BIN_EXE_infra`); `INFRA_TESTS_CLI` names another one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness, Options};
use infra_tests::oidc::{INFRA_TEST, OidcProvider};
use infra_tests::proxy::{DESTINATION, make_executable, wait_for};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const POLICY: &str = "grants: []\n";
const SUZIE: &str = "suzie@example.com";
const SUZIE_PASSWORD: &str = "a-long-enough-passphrase";

fn infra_binary() -> PathBuf {
    // Cargo builds this package's binary before its integration tests and names it here.
    std::env::var_os("INFRA_TESTS_CLI")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_infra")), PathBuf::from)
}

/// One person at one machine: their `~/.infra`, kubeconfig and home folder.
#[derive(Debug)]
struct Person {
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Person {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("infra-cli-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kube").join("config")
    }

    fn kubeconfig_json(&self) -> Value {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig written");
        serde_saphyr::from_str(&text).expect("kubeconfig parses")
    }

    fn command(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("INFRA_HOME", self.dir.path().join(".infra"))
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run_program(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: &str,
    ) -> Run {
        let mut child = self
            .command(program, args, env)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_mins(1), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} did not finish in a minute", program.display()))
            .expect("ran");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn infra(&self, args: &[&str]) -> Run {
        self.infra_with(args, &[], "").await
    }

    async fn infra_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        self.run_program(&infra_binary(), args, env, stdin).await
    }

    async fn kubectl(&self, args: &[&str]) -> Run {
        let kubectl = PathBuf::from(infra_tests::kubectl::program());
        let kubectl = if kubectl.components().count() > 1 {
            kubectl
        } else {
            which(&kubectl)
        };
        self.run_program(&kubectl, args, &[], "").await
    }

    /// Logs in with a password, trusting the harness's CA.
    async fn login(&self, h: &ControlHarness, user: &str, password: &str) -> Run {
        let ca = self.dir.path().join("ca.pem");
        std::fs::write(&ca, h.ca.cert_pem()).expect("write CA");
        self.infra_with(
            &[
                "login",
                &h.control_url(),
                "--tls-trusted-cert",
                ca.to_str().expect("utf-8 path"),
                "--user",
                user,
                "--non-interactive",
            ],
            &[("INFRA_PASSWORD", password)],
            "",
        )
        .await
    }
}

fn which(program: &Path) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} is not on PATH", program.display()))
}

/// The admin, logged in, with suzie created.
async fn admin_with_suzie(h: &ControlHarness) -> Person {
    let admin = Person::new();
    admin.login(h, "admin", ADMIN_PASSWORD).await.ok();
    admin
        .infra_with(
            &["users", "add", SUZIE, "--password-stdin"],
            &[],
            &format!("{SUZIE_PASSWORD}\n"),
        )
        .await
        .ok();
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_list_use_kubectl_grants_and_logout() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    let grants = admin.infra(&["grants", "list", "-o", "json"]).await.ok();
    let grants: Value = serde_json::from_str(&grants.stdout).expect("grants JSON");
    assert!(
        grants
            .as_array()
            .expect("array")
            .iter()
            .any(|g| g["user"] == SUZIE && g["role"] == "view" && g["resource"] == DESTINATION),
        "{grants}"
    );
    let table = admin.infra(&["grants", "list"]).await.ok();
    assert!(table.stdout.starts_with("USER ("), "{}", table.stdout);

    // Suzie logs in; her kubeconfig gets the destination, with the CLI as credential plugin.
    let suzie = Person::new();
    let login = suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    assert!(
        login.stderr.contains(&format!("Logged in as {SUZIE}")),
        "{}",
        login.stderr
    );
    let kc = suzie.kubeconfig_json();
    let name = format!("infra:{DESTINATION}");
    let user = kc["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == name.as_str())
        .expect("an infra user entry");
    assert_eq!(
        user["user"]["exec"]["args"],
        json!(["tokens", "--destination", DESTINATION])
    );
    assert!(
        !std::fs::read_to_string(suzie.kubeconfig())
            .expect("kubeconfig")
            .contains("token:"),
        "no secret in the kubeconfig"
    );

    let list = suzie.infra(&["list"]).await.ok();
    assert!(
        list.stdout.contains(DESTINATION) && list.stdout.contains("view"),
        "{}",
        list.stdout
    );

    let used = suzie.infra(&["use", DESTINATION]).await.ok();
    assert!(used.stderr.contains("Switched context"), "{}", used.stderr);
    assert_eq!(suzie.kubeconfig_json()["current-context"], name.as_str());

    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();

    // A cached token: two plugin calls (by two processes, as two kubectl runs are) print the
    // same token. The shell keeps itself between the test and the plugin: `; exit $?` stops it
    // from exec'ing the plugin in its place.
    let binary = infra_binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    let plugin_call = [
        "-c",
        "\"$0\" tokens --destination \"$1\"; exit $?",
        binary,
        DESTINATION,
    ];
    let first = suzie
        .run_program(Path::new("/bin/sh"), &plugin_call, &[], "")
        .await
        .ok();
    let second = suzie
        .run_program(Path::new("/bin/sh"), &plugin_call, &[], "")
        .await
        .ok();
    let credential: Value = serde_json::from_str(&first.stdout).expect("ExecCredential");
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert!(credential["status"]["expirationTimestamp"].is_string());
    assert_eq!(
        first.stdout, second.stdout,
        "the second call is served from the cache"
    );

    // The grant goes: kubectl is denied.
    admin
        .infra(&["grants", "remove", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    wait_for(|| async {
        let out = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
        (out.code != 0).then_some(())
    })
    .await;

    // Logging out removes Infra's entries; a copy of the old kubeconfig gets the re-login message.
    let stale = suzie.dir.path().join("stale-kubeconfig");
    std::fs::copy(suzie.kubeconfig(), &stale).expect("copy");
    suzie.infra(&["logout"]).await.ok();
    let kc = suzie.kubeconfig_json();
    assert!(
        !serde_json::to_string(&kc).expect("json").contains("infra:"),
        "logout removes Infra's entries: {kc}"
    );
    let out = suzie
        .run_program(
            &which(Path::new(&infra_tests::kubectl::program())),
            &[
                "--kubeconfig",
                stale.to_str().expect("utf-8"),
                "--context",
                &name,
                "get",
                "pods",
            ],
            &[],
            "",
        )
        .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("infra login"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_an_access_key_and_whoami() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    let key = admin
        .infra(&["keys", "add", "ci", "--user", SUZIE])
        .await
        .ok();
    let key = key.stdout.trim().to_owned();
    assert!(key.contains('.'), "an id.secret key: {key}");

    let ci = Person::new();
    let ca = ci.dir.path().join("ca.pem");
    std::fs::write(&ca, h.ca.cert_pem()).expect("write CA");
    ci.infra_with(
        &[
            "login",
            &h.control_url(),
            "--tls-trusted-cert",
            ca.to_str().expect("utf-8"),
            "--non-interactive",
        ],
        &[("INFRA_ACCESS_KEY", &key)],
        "",
    )
    .await
    .ok();
    let me = ci.infra(&["whoami", "-o", "json"]).await.ok();
    let me: Value = serde_json::from_str(&me.stdout).expect("whoami JSON");
    assert_eq!(me["name"], SUZIE);

    let keys = admin
        .infra(&["keys", "list", "--user", SUZIE, "-o", "json"])
        .await
        .ok();
    assert!(keys.stdout.contains("\"ci\""), "{}", keys.stdout);
    admin
        .infra(&["keys", "remove", "ci", "--user", SUZIE])
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_certificate_is_refused_without_a_prompt() {
    let h = ControlHarness::start(POLICY).await;
    let someone = Person::new();
    let out = someone
        .infra_with(
            &[
                "login",
                &h.control_url(),
                "--user",
                "admin",
                "--non-interactive",
            ],
            &[("INFRA_PASSWORD", ADMIN_PASSWORD)],
            "",
        )
        .await;
    assert_eq!(
        out.code, 2,
        "a prompt that may not be shown is a usage error: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SHA-256:"),
        "the certificate is shown: {}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("--tls-trusted-fingerprint"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_failures_exit_1() {
    let someone = Person::new();
    let out = someone.infra(&["grants", "add", "--role", "view"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = someone.infra(&["list"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: not logged in"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: run `infra login SERVER`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_grant_lapses() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&[
            "grants",
            "add",
            SUZIE,
            DESTINATION,
            "--role",
            "view",
            "--for",
            "8s",
        ])
        .await
        .ok();
    let listed = admin.infra(&["grants", "list"]).await.ok();
    assert!(listed.stdout.contains("EXPIRES"), "{}", listed.stdout);

    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    suzie.infra(&["use", DESTINATION]).await.ok();
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();
    wait_for(|| async {
        let out = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
        (out.code != 0).then_some(())
    })
    .await;
}

impl Person {
    /// Starts `infra login` with the provider `example` of [`with_provider`], non-interactive,
    /// trusting the harness's CA, with `BROWSER` a shell script of `browser_script`.
    fn oidc_login(
        &self,
        h: &ControlHarness,
        browser_script: &str,
        extra: &[&str],
    ) -> tokio::process::Child {
        let browser = self.dir.path().join("browser");
        std::fs::write(&browser, browser_script).expect("write the browser script");
        make_executable(&browser);
        let ca = self.dir.path().join("ca.pem");
        std::fs::write(&ca, h.ca.cert_pem()).expect("write CA");
        let control_url = h.control_url();
        let mut args = vec![
            "login",
            &control_url,
            "--tls-trusted-cert",
            ca.to_str().expect("utf-8 path"),
            "--provider",
            "example",
            "--non-interactive",
        ];
        args.extend_from_slice(extra);
        let mut login = self
            .command(
                &infra_binary(),
                &args,
                &[("BROWSER", browser.to_str().expect("utf-8 path"))],
            )
            .spawn()
            .expect("infra login starts");
        drop(login.stdin.take());
        login
    }
}

/// The test provider, and Infra with it added by the admin (`infra providers add`) and its
/// Engineering group granted view on the destination (`infra grants add`).
async fn with_provider() -> (OidcProvider, ControlHarness) {
    let provider = OidcProvider::start().await;
    let h = ControlHarness::start_with(
        POLICY,
        Options {
            provider_ca_file: Some(provider.ca_file().into()),
            ..Options::default()
        },
    )
    .await;
    let admin = Person::new();
    admin.login(&h, "admin", ADMIN_PASSWORD).await.ok();
    admin
        .infra_with(
            &[
                "providers",
                "add",
                "example",
                "--url",
                provider.issuer(),
                "--client-id",
                INFRA_TEST.id,
                "--client-secret-stdin",
            ],
            &[],
            &format!("{}\n", INFRA_TEST.secret),
        )
        .await
        .ok();
    admin
        .infra(&[
            "grants",
            "add",
            "-g",
            "Engineering",
            DESTINATION,
            "--role",
            "view",
        ])
        .await
        .ok();
    (provider, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_an_oidc_provider_in_the_browser() {
    let (provider, h) = with_provider().await;
    // Suzie's "browser" writes down the URL it was asked to open.
    let suzie = Person::new();
    let opened = suzie.dir.path().join("browser-url");
    let login = suzie.oidc_login(
        &h,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
            opened.display()
        ),
        &[],
    );

    let authorize_url = wait_for(|| async {
        std::fs::read_to_string(&opened)
            .ok()
            .map(|url| url.trim().to_owned())
    })
    .await;
    assert!(
        authorize_url.starts_with(&format!("{}/", provider.issuer())),
        "the browser is sent to the provider: {authorize_url}"
    );
    // At the provider: suzie signs in; it sends the browser back to the CLI's loopback listener.
    let callback = provider
        .sign_in(
            &authorize_url,
            infra_tests::oidc::SUZIE.0,
            infra_tests::oidc::SUZIE.1,
        )
        .await;
    assert_eq!(callback.scheme(), "http", "{callback}");
    assert_eq!(callback.host_str(), Some("127.0.0.1"), "{callback}");
    assert_eq!(callback.path(), "/callback", "{callback}");
    let page = reqwest::get(callback.clone())
        .await
        .expect("the CLI's loopback listener answers");
    assert_eq!(page.status(), 200, "{callback}");
    let page = page.text().await.expect("page");
    assert!(page.contains("You are logged in"), "{page}");

    let out = tokio::time::timeout(Duration::from_mins(1), login.wait_with_output())
        .await
        .expect("infra login finishes after the callback")
        .expect("infra login ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Logging in with example"), "{stderr}");
    assert!(
        stderr.contains(&format!("Logged in as {SUZIE}")),
        "{stderr}"
    );

    logged_in_through_the_provider(&suzie).await;
}

/// Suzie, logged in through the provider: she is its user with its groups, her group's grant
/// lists the destination, and kubectl reaches it.
async fn logged_in_through_the_provider(suzie: &Person) {
    let me = suzie.infra(&["whoami", "-o", "json"]).await.ok();
    let me: Value = serde_json::from_str(&me.stdout).expect("whoami JSON");
    assert_eq!(me["name"], SUZIE);
    assert!(
        me["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("Engineering")),
        "the provider's groups: {me}"
    );
    let list = suzie.infra(&["list"]).await.ok();
    assert!(
        list.stdout.contains(DESTINATION) && list.stdout.contains("view"),
        "{}",
        list.stdout
    );
    suzie.infra(&["use", DESTINATION]).await.ok();
    wait_for(|| async {
        let out = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
        (out.code == 0).then_some(())
    })
    .await;
}

/// `--no-browser`: no browser is started; the URL is printed, opened elsewhere (here, by the
/// test's HTTP client on the same machine), and the provider's redirect reaches the CLI's
/// loopback listener as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_an_oidc_provider_without_a_browser() {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
    let (provider, h) = with_provider().await;
    let suzie = Person::new();
    // A browser that must not be started: it would leave a file behind.
    let started = suzie.dir.path().join("browser-started");
    let mut login = suzie.oidc_login(
        &h,
        &format!("#!/bin/sh\ntouch '{}'\n", started.display()),
        &["--no-browser"],
    );
    let mut stderr = BufReader::new(login.stderr.take().expect("stderr"));

    // The URL is on a line of its own on stderr.
    let mut printed = String::new();
    let authorize_url = tokio::time::timeout(Duration::from_mins(1), async {
        loop {
            let mut line = String::new();
            let read = stderr.read_line(&mut line).await.expect("stderr reads");
            assert!(read > 0, "infra login ended without a URL:\n{printed}");
            printed.push_str(&line);
            if line.trim().starts_with(provider.issuer()) {
                return line.trim().to_owned();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no URL printed within a minute:\n{printed}"));
    assert!(printed.contains("Open this URL in a browser"), "{printed}");

    let callback = provider
        .sign_in(
            &authorize_url,
            infra_tests::oidc::SUZIE.0,
            infra_tests::oidc::SUZIE.1,
        )
        .await;
    assert_eq!(callback.host_str(), Some("127.0.0.1"), "{callback}");
    let page = reqwest::get(callback.clone())
        .await
        .expect("the CLI's loopback listener answers");
    assert_eq!(page.status(), 200, "{callback}");

    let status = tokio::time::timeout(Duration::from_mins(1), login.wait())
        .await
        .expect("infra login finishes after the callback")
        .expect("infra login ran");
    stderr
        .read_to_string(&mut printed)
        .await
        .expect("the rest of stderr");
    assert_eq!(status.code(), Some(0), "{printed}");
    assert!(
        printed.contains(&format!("Logged in as {SUZIE}")),
        "{printed}"
    );
    assert!(!started.exists(), "--no-browser started the browser anyway");
    logged_in_through_the_provider(&suzie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_elsewhere_makes_kubectl_say_to_log_in() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    suzie.infra(&["use", DESTINATION]).await.ok();
    // The token is now cached: kubectl works without asking the control plane.
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();

    // An admin ends suzie's session (her laptop was stolen). Her cached token is refused by the
    // proxy at once; kubectl runs the plugin again, which asks the control plane, which says the
    // session is gone.
    let keys = admin
        .infra(&["keys", "list", "--user", SUZIE, "-o", "json"])
        .await
        .ok();
    let keys: Value = serde_json::from_str(&keys.stdout).expect("keys JSON");
    for key in keys.as_array().expect("array") {
        let id = key["id"].as_str().expect("id");
        admin
            .infra(&["keys", "remove", id, "--user", SUZIE])
            .await
            .ok();
    }
    let denied = suzie.kubectl(&["get", "pods", "-n", "default"]).await;
    assert_ne!(denied.code, 0);
    assert!(
        denied.stderr.contains("infra login"),
        "kubectl shows the plugin's advice: {}",
        denied.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clusters_one_login_a_context_each() {
    let h = ControlHarness::start(POLICY).await;
    let admin = admin_with_suzie(&h).await;
    // A second cluster, `east`, whose proxy follows this control plane with a connector's key.
    admin
        .infra_with(
            &["users", "add", "proxies@infra", "--password-stdin"],
            &[],
            &format!("{SUZIE_PASSWORD}\n"),
        )
        .await
        .ok();
    admin
        .infra(&[
            "grants",
            "add",
            "proxies@infra",
            "infra",
            "--role",
            "connector",
        ])
        .await
        .ok();
    let key = admin
        .infra(&["keys", "add", "east", "--user", "proxies@infra"])
        .await
        .ok();
    let key = key.stdout.trim().to_owned();
    let east = infra_tests::control::RemoteProxy::start(&h, "east", &key, 900, None).await;
    wait_for(|| async {
        let list = admin.infra(&["destinations", "list", "-o", "json"]).await;
        list.stdout.contains("\"east\"").then_some(())
    })
    .await;
    admin
        .infra(&["grants", "add", SUZIE, DESTINATION, "--role", "view"])
        .await
        .ok();
    admin
        .infra(&["grants", "add", SUZIE, "east.default", "--role", "edit"])
        .await
        .ok();

    let suzie = Person::new();
    suzie.login(&h, SUZIE, SUZIE_PASSWORD).await.ok();
    let list = suzie.infra(&["list"]).await.ok();
    assert!(
        list.stdout.contains(DESTINATION) && list.stdout.contains("east"),
        "{}",
        list.stdout
    );
    let contexts: Vec<String> = suzie.kubeconfig_json()["contexts"]
        .as_array()
        .expect("contexts")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        contexts.contains(&format!("infra:{DESTINATION}")),
        "{contexts:?}"
    );
    assert!(contexts.contains(&"infra:east".to_owned()), "{contexts:?}");

    // Each context reaches its own cluster with a token for it.
    suzie.infra(&["use", "east.default"]).await.ok();
    suzie.kubectl(&["get", "pods"]).await.ok();
    assert!(
        east.standin
            .recorded()
            .iter()
            .any(|r| r.path() == "/api/v1/namespaces/default/pods"),
        "the request reached east's apiserver"
    );
    suzie.infra(&["use", DESTINATION]).await.ok();
    suzie.kubectl(&["get", "pods", "-n", "default"]).await.ok();
    // Her view grant on testing does not let her into east's other namespaces.
    suzie.infra(&["use", "east"]).await.ok();
    let denied = suzie.kubectl(&["get", "pods", "-n", "kube-system"]).await;
    assert_ne!(denied.code, 0, "{}", denied.stderr);
    assert!(denied.stderr.contains("forbidden"), "{}", denied.stderr);
}
