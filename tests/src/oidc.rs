//! A real OpenID Connect provider for the tests: the certified `oidc-provider` package from npm,
//! run on the machine's Node.js from `tests/oidc/server.mjs`, over HTTPS on 127.0.0.1:0 with a
//! certificate from a test CA.
//!
//! [`OidcProvider::id_token`] gets an ID token the way a user's client does: the authorization
//! code flow with PKCE, following the provider's redirects, posting its login form, and
//! exchanging the code at the token endpoint with the client's secret.
//!
//! The provider's packages are installed by `npm ci` in `tests/oidc` (`scripts/test` does it
//! before the tests). When they are missing, [`OidcProvider::start`] runs `npm ci` itself, once,
//! under a lock file so that test processes running side by side do not install over each
//! other; if that fails it panics saying what to run.
//!
//! `node` and `npm` are taken from `PATH`, or from `INFRA_TESTS_NODE` and `INFRA_TESTS_NPM`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::certs::{self, Ca};

/// A client registered at the provider (`server.mjs` has the same list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OidcClient {
    /// `client_id`, the `aud` of the ID tokens it gets.
    pub id: &'static str,
    /// `client_secret` (HTTP Basic at the token endpoint).
    pub secret: &'static str,
}

/// The client the proxy is configured for (`--oidc-audience infra-test`).
pub const INFRA_TEST: OidcClient = OidcClient {
    id: "infra-test",
    secret: "infra-test-secret",
};

/// Another application of the same organisation: its ID tokens are for another audience.
pub const OTHER_APP: OidcClient = OidcClient {
    id: "other-app",
    secret: "other-app-secret",
};

/// The redirect URI both clients use: a loopback address nothing listens on. The flow stops at
/// the redirect to it and reads the code from the URL, as a CLI's local listener would.
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// The directory's users: (email, password). Suzie is in Engineering and Design, Carl in
/// Engineering; the third user's email is not verified (`email_verified: false`).
pub const SUZIE: (&str, &str) = ("suzie@example.com", "suzie-password");
pub const CARL: (&str, &str) = ("carl@example.com", "carl-password");
pub const UNVERIFIED: (&str, &str) = ("unverified@example.com", "unverified-password");

/// At most this many redirects and form posts in one login.
const MAX_STEPS: usize = 16;

/// A running provider; the Node.js process is killed when this is dropped (and exits by itself
/// if the test process goes away, when its stdin closes).
#[derive(Debug)]
pub struct OidcProvider {
    issuer: String,
    ca: Ca,
    ca_file: PathBuf,
    http: reqwest::Client,
    stderr: Arc<Mutex<String>>,
    // Held, not used: dropping them kills the process and closes its stdin.
    _child: Child,
    _stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Installs the provider's packages if needed, starts it and waits (at most 30 s) until it
    /// listens.
    pub async fn start() -> Self {
        certs::init_crypto();
        let root = package_dir();
        ensure_installed(&root).await;

        let dir = tempfile::Builder::new()
            .prefix("infra-oidc-")
            .tempdir()
            .expect("the temporary directory is writable");
        let ca = Ca::new("oidc-provider test CA");
        let (cert, key) = ca.localhost_cert().write_to(dir.path(), "oidc");
        let ca_file = dir.path().join("oidc-ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).expect("the temporary directory is writable");

        let mut child = Command::new(node())
            .arg("server.mjs")
            .current_dir(&root)
            .env("OIDC_TLS_CERT", &cert)
            .env("OIDC_TLS_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (set INFRA_TESTS_NODE?): {e}", node()));
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pipe = child.stderr.take().expect("stderr was piped");
        tokio::spawn(collect_lines(stderr_pipe, Arc::clone(&stderr)));

        let stdout = child.stdout.take().expect("stdout was piped");
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Ok(ready) = serde_json::from_str::<Value>(&line)
                    && let Some(issuer) = ready.get("issuer").and_then(Value::as_str)
                {
                    return Some(issuer.to_owned());
                }
            }
            None
        };
        let issuer = tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "the OIDC provider (node tests/oidc/server.mjs) did not say it listens within 30 s; its stderr:\n{}",
                    lock(&stderr)
                )
            });
        // Keep reading stdout so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = http_client(&ca, false).expect("an HTTP client with the test CA builds");
        Self {
            issuer,
            ca,
            ca_file,
            http,
            stderr,
            _child: child,
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// The issuer, `https://127.0.0.1:<port>` (no trailing slash), as its tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CA of the provider's serving certificate.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The CA of the provider's serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A file holding [`Self::ca_pem`], for `--issuer-ca-file`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// What the provider wrote on stderr so far (for assertion messages).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// An ID token of `user` for the [`INFRA_TEST`] client.
    pub async fn id_token(&self, user: &str, password: &str) -> String {
        self.id_token_for(INFRA_TEST, user, password).await
    }

    /// An ID token of `user` for `client`, got through the authorization code flow with PKCE
    /// and the provider's login form, in a browser session of its own.
    pub async fn id_token_for(&self, client: OidcClient, user: &str, password: &str) -> String {
        match self.login(client, user, password).await {
            Ok(token) => token,
            Err(error) => panic!(
                "logging {user} in at the OIDC provider for {}: {error:#}\nthe provider's stderr:\n{}",
                client.id,
                self.stderr()
            ),
        }
    }

    /// Signs `user` in at the provider the way a browser opened at `authorize_url` would (an
    /// authorization URL that someone else, such as `infra login`, built): follows the
    /// provider's redirects with a fresh cookie jar, posts its login form, and stops at the first
    /// redirect that leaves the provider. Answers that redirect's URL (the client's callback,
    /// with `code` and `state`, or `error`), without visiting it.
    pub async fn sign_in(&self, authorize_url: &str, user: &str, password: &str) -> Url {
        match self.follow_away(authorize_url, user, password).await {
            Ok(url) => url,
            Err(error) => panic!(
                "signing {user} in at the OIDC provider from {authorize_url}: {error:#}\nthe provider's stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// [`Self::sign_in`], answering an error instead of panicking (a refused password, a
    /// disabled account).
    pub async fn try_sign_in(&self, start: &Url, user: &str, password: &str) -> Result<Url> {
        let browser = http_client(&self.ca, true)?;
        let issuer = Url::parse(&self.issuer).context("the issuer is a URL")?;
        drive(&browser, start.clone(), user, password, |next| {
            next.origin() != issuer.origin()
        })
        .await
    }

    async fn follow_away(&self, authorize_url: &str, user: &str, password: &str) -> Result<Url> {
        let start = Url::parse(authorize_url).context("the authorization URL")?;
        self.try_sign_in(&start, user, password).await
    }

    /// How many times the provider's JWKS has been fetched (`GET /jwks`), by anyone.
    pub async fn jwks_requests(&self) -> u64 {
        let url = format!("{}/test/jwks-count", self.issuer);
        let answer = self.admin_json(self.http.get(&url)).await;
        answer["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{url} answered {answer}"))
    }

    /// Makes the provider sign with a new key from now on; the old keys stay in its JWKS.
    /// Answers the new key's `kid`.
    pub async fn rotate_keys(&self) -> String {
        let url = format!("{}/test/rotate-keys", self.issuer);
        let answer = self.admin_json(self.http.post(&url)).await;
        answer["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("{url} answered {answer}"))
            .to_owned()
    }

    /// Makes the provider publish only the key it signs with, as after a key compromise.
    /// Answers that key's `kid`.
    pub async fn retire_old_keys(&self) -> String {
        let url = format!("{}/test/retire-old-keys", self.issuer);
        let answer = self.admin_json(self.http.post(&url)).await;
        answer["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("{url} answered {answer}"))
            .to_owned()
    }

    async fn admin_json(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.expect("the OIDC provider answers");
        assert!(
            response.status().is_success(),
            "the OIDC provider answered {}",
            response.status()
        );
        response
            .json()
            .await
            .expect("the OIDC provider answers JSON")
    }

    async fn login(&self, client: OidcClient, user: &str, password: &str) -> Result<String> {
        // A fresh cookie jar: a browser that has no session at the provider yet.
        let browser = http_client(&self.ca, true)?;
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer);
        let discovery: Value = get_json(&browser, &discovery_url).await?;
        let endpoint = |name: &str| {
            discovery[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{discovery_url} has no {name}"))
        };
        let authorization_endpoint = endpoint("authorization_endpoint")?;
        let token_endpoint = endpoint("token_endpoint")?;

        // PKCE (RFC 7636): a random verifier, its SHA-256 as the challenge.
        let verifier = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        let state = uuid::Uuid::new_v4().simple().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let start = Url::parse_with_params(
            &authorization_endpoint,
            [
                ("response_type", "code"),
                ("client_id", client.id),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid email profile groups"),
                ("state", state.as_str()),
                ("nonce", nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .with_context(|| format!("building the authorization URL from {authorization_endpoint}"))?;

        let callback = drive(&browser, start, user, password, |next| {
            next.as_str().starts_with(REDIRECT_URI)
        })
        .await?;
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        if let Some(error) = param("error") {
            bail!(
                "the provider redirected with error {error}: {}",
                param("error_description").unwrap_or_default()
            );
        }
        ensure!(
            param("state").as_deref() == Some(state.as_str()),
            "the redirect carries another state: {callback}"
        );
        ensure!(
            param("iss").as_deref() == Some(self.issuer.as_str()),
            "the redirect names another issuer (RFC 9207): {callback}"
        );
        let code = param("code").ok_or_else(|| anyhow!("no code in {callback}"))?;

        let response = browser
            .post(&token_endpoint)
            .basic_auth(client.id, Some(client.secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .with_context(|| format!("POST {token_endpoint}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer of {token_endpoint}"))?;
        ensure!(
            status.is_success(),
            "POST {token_endpoint}: {status}: {body}"
        );
        let tokens: Value = serde_json::from_str(&body)
            .with_context(|| format!("parsing the answer of {token_endpoint}: {body}"))?;
        tokens["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{token_endpoint} answered no id_token: {body}"))
    }
}

/// A browser at the provider: follows redirects from `start` and posts the login form (once)
/// until a redirect goes where `leaves` says the provider is left; answers that URL, unvisited.
async fn drive(
    browser: &reqwest::Client,
    start: Url,
    user: &str,
    password: &str,
    leaves: impl Fn(&Url) -> bool,
) -> Result<Url> {
    let mut url = start;
    let mut response = browser
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let mut logged_in = false;
    for _ in 0..MAX_STEPS {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("{status} from {url} without a Location"))?;
            let next = url
                .join(location)
                .with_context(|| format!("{url} redirected to {location:?}"))?;
            if leaves(&next) {
                return Ok(next);
            }
            url = next;
            response = browser
                .get(url.clone())
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            continue;
        }
        let body = response
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        if status == StatusCode::UNAUTHORIZED && body.contains("Invalid email or password") {
            bail!("the provider refused the password of {user}");
        }
        ensure!(status == StatusCode::OK, "{url} answered {status}: {body}");
        ensure!(!logged_in, "the provider asked for the login a second time");
        let action =
            form_action(&body).ok_or_else(|| anyhow!("{url} shows no form to post: {body}"))?;
        url = url
            .join(&action)
            .with_context(|| format!("the form of {url} posts to {action:?}"))?;
        response = browser
            .post(url.clone())
            .form(&[("login", user), ("password", password)])
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        logged_in = true;
    }
    bail!("no redirect away from the provider after {MAX_STEPS} steps (last: {url})")
}

/// An HTTPS client that trusts only `ca`, follows no redirects, and keeps cookies if asked.
fn http_client(ca: &Ca, cookies: bool) -> Result<reqwest::Client> {
    let root =
        reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).context("parsing the test CA")?;
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    ensure!(status.is_success(), "GET {url}: {status}");
    response
        .json()
        .await
        .with_context(|| format!("parsing {url}"))
}

/// The `action` of the first `<form>` in `html`.
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let form = &form[..form.find('>')?];
    let value = &form[form.find("action=\"")? + "action=\"".len()..];
    Some(value[..value.find('"')?].replace("&amp;", "&"))
}

fn lock(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    text.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends the lines of `pipe` to `into`, keeping at most the last 64 KiB.
async fn collect_lines(pipe: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    const KEEP: usize = 64 * 1024;
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = lock(&into);
        text.push_str(&line);
        text.push('\n');
        if text.len() > KEEP {
            let mut cut = text.len() - KEEP;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
        }
    }
}

/// `tests/oidc`, where `server.mjs` and its `package-lock.json` are.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

fn node() -> String {
    std::env::var("INFRA_TESTS_NODE").unwrap_or_else(|_| "node".to_owned())
}

fn npm() -> String {
    std::env::var("INFRA_TESTS_NPM").unwrap_or_else(|_| "npm".to_owned())
}

/// Whether `npm ci` finished in `root` for the `oidc-provider` its lock file pins.
fn installed(root: &Path) -> bool {
    let read = |path: PathBuf| -> Option<Value> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    };
    let pinned = read(root.join("package-lock.json")).and_then(|lock| {
        lock["packages"]["node_modules/oidc-provider"]["version"]
            .as_str()
            .map(str::to_owned)
    });
    let present = read(root.join("node_modules/oidc-provider/package.json"))
        .and_then(|package| package["version"].as_str().map(str::to_owned));
    // npm writes its hidden lock file last, so its presence means the install finished.
    root.join("node_modules/.package-lock.json").is_file() && pinned.is_some() && pinned == present
}

/// Runs `npm ci` in `root` unless it has been done, one process at a time.
async fn ensure_installed(root: &Path) {
    if installed(root) {
        return;
    }
    let lock_path = std::env::temp_dir().join("infra-tests-oidc-npm-ci.lock");
    let lock_file = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
        file
    })
    .await
    .expect("the lock task does not panic");
    // Another test process may have installed while we waited for the lock.
    if installed(root) {
        return;
    }
    let hint = "hint: run `(cd tests/oidc && npm ci --no-audit --no-fund)`, as scripts/test does";
    let run = Command::new(npm())
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_mins(5), run)
        .await
        .unwrap_or_else(|_| panic!("`npm ci` in {} took over 5 minutes\n{hint}", root.display()))
        .unwrap_or_else(|e| {
            panic!(
                "tests/oidc is not installed and {} cannot be run: {e}\n{hint}",
                npm()
            )
        });
    assert!(
        output.status.success() && installed(root),
        "tests/oidc is not installed and `npm ci` failed ({}):\n{}\n{hint}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    drop(lock_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_forms_action_is_found() {
        let html = r#"<h1>x</h1><form method="post" action="/interaction/abc/login?a=1&amp;b=2" autocomplete="off"><input name="login"></form>"#;
        assert_eq!(
            form_action(html).as_deref(),
            Some("/interaction/abc/login?a=1&b=2")
        );
        assert_eq!(form_action("<p>no form</p>"), None);
    }
}
