//! Logins through an OpenID Connect provider, with and without a browser, and a session ended
//! elsewhere.

use std::time::Duration;

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness, Options};
use infra_tests::oidc::{INFRA_TEST, OidcProvider};
use infra_tests::proxy::{DESTINATION, make_executable, wait_for};
use serde_json::{Value, json};

use crate::{POLICY, Person, SUZIE, SUZIE_PASSWORD, admin_with_suzie, infra_binary};

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
