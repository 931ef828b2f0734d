//! `infra login`: pick a server, decide whether to trust its certificate, log in (password,
//! access key, or an OpenID Connect provider in the browser with PKCE and a loopback redirect),
//! save the session, and write the kubeconfig.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api::{Client, LoginRequest, LoginResponse};
use crate::args::LoginArgs;
use crate::commands::{Ctx, sync_access};
use crate::state::{Config, Server, Session, Trust, display_server, normalize_server};
use crate::tls;
use crate::ui::{self, HintExt};

const OTHER_SERVER: &str = "Connect to another server";
const WITH_PASSWORD: &str = "Login with username and password";
const WITH_KEY: &str = "Login with an access key";

pub async fn login(ctx: &Ctx, args: &LoginArgs) -> Result<()> {
    let mut config = ctx.home.config()?;
    let url = choose_server(ctx, &config, args)?;
    let trust = choose_trust(ctx, &config, &url, args).await?;
    let mut server = Server {
        url: url.clone(),
        trust,
        user: None,
    };
    let client = Client::new(&server, None)?;
    let answer = authenticate(ctx, &client, args).await?;

    server.user = Some(answer.user.clone());
    config.put_server(server.clone());
    config.current = Some(url.clone());
    ctx.home.save_config(&config)?;
    ctx.home.save_session(
        &url,
        Some(Session {
            user: answer.user.clone(),
            access_key: answer.access_key.clone(),
            expires_at: answer.expires_at,
        }),
    )?;
    // Tokens cached for whoever was logged in before.
    ctx.home.clear_tokens(&url)?;

    let client = Client::new(&server, Some(answer.access_key))?;
    let access = sync_access(ctx, &mut config, &client).await?;
    eprintln!("  Logged in as {}", answer.user);
    let mut destinations: Vec<&str> = access.iter().map(|a| a.destination.as_str()).collect();
    destinations.dedup();
    match destinations.len() {
        0 => eprintln!(
            "  You have no access to any destination yet; an admin can grant it with `infra grants add`."
        ),
        n => eprintln!(
            "  {n} destination{} in your kubeconfig: `infra list` shows them, `infra use NAME` switches kubectl to one.",
            if n == 1 { "" } else { "s" }
        ),
    }
    Ok(())
}

fn choose_server(ctx: &Ctx, config: &Config, args: &LoginArgs) -> Result<String> {
    if let Some(server) = &args.server {
        return normalize_server(server);
    }
    let hint = "name the server: `infra login SERVER`";
    if config.servers.is_empty() {
        let typed = ctx.prompt.input("Server", hint)?;
        return normalize_server(&typed);
    }
    let mut items: Vec<String> = config
        .servers
        .iter()
        .map(|s| display_server(&s.url).to_owned())
        .collect();
    items.push(OTHER_SERVER.to_owned());
    let default = config
        .current
        .as_ref()
        .and_then(|c| config.servers.iter().position(|s| &s.url == c))
        .unwrap_or(0);
    let chosen = ctx
        .prompt
        .select("Select a server", &items, default, hint)?;
    match config.servers.get(chosen) {
        Some(s) => Ok(s.url.clone()),
        None => normalize_server(&ctx.prompt.input("Server", hint)?),
    }
}

async fn choose_trust(ctx: &Ctx, config: &Config, url: &str, args: &LoginArgs) -> Result<Trust> {
    if args.insecure_skip_tls_verify {
        ui::warn(
            "--insecure-skip-tls-verify: the server's certificate is not checked. Anyone on the \
             network path can pose as the server and capture your password, access key and session.",
        );
        return Ok(Trust::InsecureSkipVerify);
    }
    if let Some(file) = &args.tls_trusted_cert {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("reading --tls-trusted-cert {}", file.display()))?;
        tls::parse_pem_certs(&pem)
            .with_context(|| format!("--tls-trusted-cert {}", file.display()))?;
        return Ok(Trust::Certificate { pem });
    }
    if let Some(fp) = &args.tls_trusted_fingerprint {
        return Ok(Trust::Fingerprint {
            sha256: tls::parse_fingerprint(fp)?,
            pem: None,
        });
    }
    let previous = config.server(url).map(|s| s.trust.clone());
    let candidate = previous.clone().unwrap_or(Trust::System);
    if candidate == Trust::InsecureSkipVerify {
        ui::warn(format!(
            "the certificate of {} is not checked (saved with --insecure-skip-tls-verify)",
            display_server(url)
        ));
        return Ok(candidate);
    }
    let parsed = url::Url::parse(url).with_context(|| format!("server URL {url}"))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port().unwrap_or(443);
    let probe = tls::probe(&host, port, &candidate).await?;
    let why = match &probe.verdict {
        Ok(()) => return Ok(candidate),
        Err(error) => tls::untrusted_reason(error),
    };
    let cert = probe
        .chain
        .first()
        .ok_or_else(|| anyhow!("{} sent no certificate", display_server(url)))?;
    let description = tls::describe(cert)?;
    if matches!(
        previous,
        Some(Trust::Fingerprint { .. } | Trust::Certificate { .. })
    ) {
        ui::warn(format!(
            "the certificate of {} is not the one you trusted before ({why}). If nobody changed it \
             on purpose, someone may be posing as the server.",
            display_server(url)
        ));
    }
    eprintln!(
        "The certificate of {} is not trusted: {why}\n{description}",
        display_server(url)
    );
    let hint = format!(
        "compare the fingerprint with what the server's admin gives you, then pass \
         --tls-trusted-fingerprint {}",
        description.sha256
    );
    if !ctx.prompt.confirm("Trust this certificate?", &hint)? {
        return Err(ui::hint(
            anyhow!("the certificate of {} was not trusted", display_server(url)),
            "with the server's CA certificate: --tls-trusted-cert FILE",
        ));
    }
    Ok(Trust::Fingerprint {
        sha256: description.sha256,
        pem: Some(tls::to_pem(cert)),
    })
}

enum Method {
    Password(String),
    Key(String),
    Provider(String),
}

async fn authenticate(ctx: &Ctx, client: &Client, args: &LoginArgs) -> Result<LoginResponse> {
    let method = if let Some(key) = &args.key {
        Method::Key(key.clone())
    } else if let Some(user) = &args.user {
        Method::Password(user.clone())
    } else if let Some(provider) = &args.provider {
        Method::Provider(provider.clone())
    } else {
        let providers = client
            .providers_public()
            .await
            .with_context(|| format!("listing the identity providers of {}", client.server()))?;
        let mut items: Vec<String> = providers
            .iter()
            .map(|p| {
                let host = url::Url::parse(&p.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| p.url.clone());
                format!("{} ({host})", p.name)
            })
            .collect();
        items.push(WITH_PASSWORD.to_owned());
        items.push(WITH_KEY.to_owned());
        let chosen = ctx.prompt.select(
            "Select an identity provider",
            &items,
            0,
            "pass --provider NAME, --user NAME (password in INFRA_PASSWORD), or INFRA_ACCESS_KEY",
        )?;
        match providers.get(chosen) {
            Some(p) => Method::Provider(p.name.clone()),
            None if chosen == providers.len() => {
                Method::Password(ctx.prompt.input("Username", "pass --user NAME")?)
            }
            None => Method::Key(ctx.prompt.password(
                "Access key",
                false,
                "set INFRA_ACCESS_KEY",
            )?),
        }
    };
    let request = match method {
        Method::Key(key) => LoginRequest::AccessKey(key),
        Method::Password(name) => {
            let password = match std::env::var("INFRA_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ if args.password_stdin => ui::read_stdin_line("the password")?,
                _ => ctx.prompt.password(
                    "Password",
                    false,
                    "set INFRA_PASSWORD or pass --password-stdin",
                )?,
            };
            LoginRequest::Password { name, password }
        }
        Method::Provider(provider) => {
            return oidc(client, &provider, args.no_browser).await;
        }
    };
    client
        .login(&request)
        .await
        .with_context(|| format!("logging in to {}", display_server(client.server())))
}

/// A PKCE verifier (64 characters of base64url from 48 random bytes) and its S256 challenge.
pub fn pkce() -> Result<(String, String)> {
    let mut bytes = [0u8; 48];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow!("no randomness from the system"))?;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = challenge(&verifier);
    Ok((verifier, challenge))
}

pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn oidc(client: &Client, provider: &str, no_browser: bool) -> Result<LoginResponse> {
    let (verifier, challenge) = pkce()?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listening on 127.0.0.1 for the browser's redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let start = client
        .login_oidc(provider, &redirect_uri, &challenge)
        .await
        .with_context(|| format!("starting the login with {provider}"))?;
    eprintln!("  Logging in with {provider}...");
    if no_browser {
        eprintln!(
            "  Open this URL in a browser on this machine:\n\n  {}\n",
            start.authorize_url
        );
    } else if let Err(e) = open_browser(&start.authorize_url) {
        ui::warn(format!("cannot open a browser: {e:#}"));
        eprintln!(
            "  Open this URL in a browser on this machine:\n\n  {}\n",
            start.authorize_url
        );
    }
    let spinner = indicatif::ProgressBar::new_spinner().with_message("waiting for the browser");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let code = tokio::time::timeout(
        Duration::from_mins(5),
        wait_for_callback(&listener, &start.state),
    )
    .await;
    spinner.finish_and_clear();
    let code = code
        .map_err(|_| anyhow!("the browser did not come back within 5 minutes"))
        .hint("run `infra login` again; with --no-browser it prints the URL to open")??;
    client
        .login(&LoginRequest::Oidc {
            state: start.state,
            code,
            code_verifier: verifier,
        })
        .await
        .with_context(|| format!("logging in with {provider}"))
}

/// Opens `url` with `$BROWSER` (the URL as its last argument, or in place of `%s`), or the
/// system's browser.
fn open_browser(url: &str) -> Result<()> {
    if let Some(browser) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        let mut words = browser.split_whitespace();
        let program = words.next().unwrap_or_default();
        let mut args: Vec<String> = words.map(str::to_owned).collect();
        if args.iter().any(|a| a.contains("%s")) {
            for a in &mut args {
                *a = a.replace("%s", url);
            }
        } else {
            args.push(url.to_owned());
        }
        std::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("running BROWSER={browser:?}"))?;
        return Ok(());
    }
    open::that_detached(url).context("opening the system's browser")
}

/// Answers requests on the loopback listener until the redirect to `/callback` arrives; returns
/// its `code` once its `state` is the expected one.
async fn wait_for_callback(listener: &TcpListener, state: &str) -> Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await.context("accepting the redirect")?;
        let Ok(Ok(head)) =
            tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream)).await
        else {
            continue;
        };
        let outcome = callback_outcome(&head, state);
        let (status, page) = match &outcome {
            Callback::Other => ("404 Not Found", "Not found.".to_owned()),
            Callback::Code(_) => (
                "200 OK",
                "You are logged in to Infra. You can close this tab and return to the terminal."
                    .to_owned(),
            ),
            Callback::Failed(why) => ("400 Bad Request", format!("Login failed: {why}")),
        };
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Infra</title><p>{}</p>\n",
            html_escape(&page)
        );
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
             connection: close\r\ncache-control: no-store\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        match outcome {
            Callback::Other => {}
            Callback::Code(code) => return Ok(code),
            Callback::Failed(why) => bail!("the identity provider's answer: {why}"),
        }
    }
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Callback {
    Other,
    Code(String),
    Failed(String),
}

fn callback_outcome(head: &str, state: &str) -> Callback {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        return Callback::Other;
    };
    let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
        return Callback::Other;
    };
    if url.path() != "/callback" {
        return Callback::Other;
    }
    let get = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = get("error") {
        let description = get("error_description").unwrap_or_default();
        return Callback::Failed(format!("{error} {description}").trim().to_owned());
    }
    if get("state").as_deref() != Some(state) {
        return Callback::Failed("the state does not match this login".to_owned());
    }
    match get("code") {
        Some(code) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Failed("no code in the redirect".to_owned()),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_verifier_and_challenge() {
        let (verifier, challenge) = pkce().expect("pkce");
        assert!((43..=128).contains(&verifier.len()));
        assert!(
            verifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(challenge, super::challenge(&verifier));
        // RFC 7636, appendix B.
        assert_eq!(
            super::challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(pkce().expect("pkce").0, verifier);
    }

    #[test]
    fn the_callback_needs_the_right_state() {
        let head = |target: &str| format!("GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        assert_eq!(
            callback_outcome(&head("/callback?code=abc&state=s1"), "s1"),
            Callback::Code("abc".into())
        );
        assert!(matches!(
            callback_outcome(&head("/callback?code=abc&state=evil"), "s1"),
            Callback::Failed(_)
        ));
        assert_eq!(
            callback_outcome(&head("/callback?error=access_denied&state=s1"), "s1"),
            Callback::Failed("access_denied".into())
        );
        assert_eq!(
            callback_outcome(&head("/favicon.ico"), "s1"),
            Callback::Other
        );
    }

    #[tokio::test]
    async fn the_loopback_listener_returns_the_code() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let browser = tokio::spawn(async move {
            for target in ["/favicon.ico", "/callback?state=st&code=the-code"] {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                s.write_all(format!("GET {target} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                    .await
                    .expect("write");
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.expect("read");
                assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            }
        });
        let code = wait_for_callback(&listener, "st").await.expect("code");
        assert_eq!(code, "the-code");
        browser.await.expect("browser");
    }
}
