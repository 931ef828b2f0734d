//! infra-proxy with its embedded control plane (SQLite in a temporary folder), in front of the
//! stand-in apiserver: what `scripts/run` starts, for tests of the control API, the CLI and
//! sync.

use std::path::PathBuf;
use std::time::Duration;

use infra_proxy::app::{self, Running};
use infra_proxy::audit::FailMode;
use infra_proxy::config::{ControlArgs, IssuerArgs, LimitArgs, ServeArgs};
use serde_json::Value;

pub mod client;

pub use client::{Answer, Client, Refused, group_grant, user_grant};

use crate::apiserver::StandIn;
use crate::certs::{self, Ca};
use crate::kubectl::{Credentials, Kubectl};
use crate::proxy::{DESTINATION, upstream, upstream_of};
pub use infra_proxy::reconcile::ReconcileMode;

/// The bootstrap admin's password in every control harness.
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple-42";

/// How a control harness starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Trust these identity providers' CA (PEM file).
    pub provider_ca_file: Option<PathBuf>,
    /// Token lifetime in seconds (default 300).
    pub token_ttl_seconds: Option<u64>,
    /// `--request-pending-seconds` (default 86400).
    pub request_pending_seconds: Option<u64>,
    /// Provider re-check interval in seconds (default 900).
    pub provider_recheck_seconds: Option<u64>,
    /// Keep the store in a PostgreSQL server of its own instead of an SQLite file.
    pub postgres: bool,
    /// Share another harness's PostgreSQL store (its URL and root key file): a second control
    /// replica.
    pub replica_of: Option<(String, PathBuf)>,
    /// Requests a minute per client address on login, OIDC start and tokens (default 20).
    pub client_rate_per_minute: Option<u32>,
    /// Their burst (default 40).
    pub client_burst: Option<u32>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `--rbac-reconcile` (default here: off, the stand-in having no RBAC unless
    /// [`Options::enforce_rbac`]).
    pub rbac_reconcile: Option<ReconcileMode>,
    /// The stand-in authorizes with RBAC from its bindings, as a real cluster does.
    pub enforce_rbac: bool,
    /// `--audit-otlp-endpoint` (the receiver's CA goes in `provider_ca_file`).
    pub audit_otlp_endpoint: Option<String>,
    /// `--audit-otlp-header`s.
    pub audit_otlp_headers: Vec<String>,
}

/// A loopback address with a port that was free a moment ago. The control API's address is
/// also its tokens' issuer, so it must be known before it starts.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A stand-in apiserver and infra-proxy with the control plane in the same process.
#[derive(Debug)]
pub struct ControlHarness {
    /// Files of this run (database, root key, kubeconfig, policy, audit log).
    pub dir: tempfile::TempDir,
    /// The stand-in apiserver.
    pub standin: StandIn,
    /// The running proxy and control plane.
    pub proxy: Running,
    /// The CA of the serving certificate (proxy and control API).
    pub ca: Ca,
    /// The policy file.
    pub policy: PathBuf,
    /// An HTTP client that trusts the CA.
    pub http: reqwest::Client,
    /// The PostgreSQL server, when the store is there.
    pub postgres: Option<crate::postgres::Server>,
    /// How it was started, for [`Self::restart`] (boxed: it keeps the tests' futures small).
    args: Box<ServeArgs>,
}

impl ControlHarness {
    /// Starts with `policy` and the default options.
    pub async fn start(policy: &str) -> Self {
        Self::start_with(policy, Options::default()).await
    }

    /// Starts with `policy` and `options`.
    pub async fn start_with(policy: &str, options: Options) -> Self {
        certs::init_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut builder = StandIn::builder();
        if options.enforce_rbac {
            builder = builder.enforce_rbac();
        }
        let (standin, kubeconfig) = upstream_of(dir.path(), builder).await;
        let ca = Ca::new("infra test CA");
        let (cert, cert_key) = ca.localhost_cert().write_to(dir.path(), "serving");
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy).expect("write policy");
        let (postgres, database, root_key_file) = if let Some((url, key)) = options.replica_of {
            (None, url, Some(key))
        } else if options.postgres {
            let server = crate::postgres::Server::start();
            server.create_database("infra").await;
            let url = server.url("infra");
            (Some(server), url, Some(dir.path().join("root.key")))
        } else {
            let url = format!("sqlite:{}", dir.path().join("infra.db").display());
            (None, url, None)
        };
        let password_file = dir.path().join("admin-password");
        std::fs::write(&password_file, ADMIN_PASSWORD).expect("write admin password");

        let args = ServeArgs {
            destination: DESTINATION.to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls_cert: Some(cert),
            tls_key: Some(cert_key),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            policy: Some(policy_path.clone()),
            kubeconfig: Some(kubeconfig),
            context: None,
            issuers: IssuerArgs::default(),
            control: ControlArgs {
                control_listen: Some(free_port()),
                database,
                root_key_file,
                admin_password_file: Some(password_file),
                control_public_url: None,
                public_url: None,
                token_ttl_seconds: options.token_ttl_seconds.unwrap_or(300),
                request_pending_seconds: options.request_pending_seconds.unwrap_or(86_400),
                provider_recheck_seconds: options.provider_recheck_seconds.unwrap_or(900),
                provider_ca_file: options.provider_ca_file,
                oidc_redirect_uris: Vec::new(),
                trusted_proxies: options.trusted_proxies.clone(),
                client_rate_per_minute: options.client_rate_per_minute.unwrap_or(20),
                client_burst: options.client_burst.unwrap_or(40),
                control_url: None,
                access_key_file: None,
                control_ca_file: None,
                snapshot_file: dir.path().join("snapshot.json"),
                staleness_seconds: 900,
                audit_retention: Duration::from_hours(24 * 90),
                audit_otlp_endpoint: options.audit_otlp_endpoint.clone(),
                audit_otlp_headers: options.audit_otlp_headers.clone(),
            },
            audit_log: dir.path().join("audit.log").display().to_string(),
            audit_fail: FailMode::Open,
            audit_format: infra_proxy::audit::Format::Infra,
            audit_spool: dir.path().join("audit-spool.ndjson"),
            audit_spool_bytes: 64 * 1024 * 1024,
            limits: LimitArgs::default(),
            upstream_max_streams: 100,
            rbac_reconcile: options.rbac_reconcile.unwrap_or(ReconcileMode::Off),
            shutdown_grace_seconds: 1,
            worker_threads: None,
            log_format: "text".to_owned(),
        };
        // The control address is chosen before the start (it is the tokens' issuer); another
        // test may take the port in between, so try again with another.
        let mut args = args;
        let mut attempts = 0;
        let proxy = loop {
            match app::start(args.clone()).await {
                Ok(proxy) => break proxy,
                Err(error)
                    if attempts < 5
                        && format!("{error:#}").contains("binding the control listener") =>
                {
                    attempts += 1;
                    args.control.control_listen = Some(free_port());
                }
                Err(error) => panic!("infra-proxy starts: {error:#}"),
            }
        };
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA"),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self {
            dir,
            standin,
            proxy,
            ca,
            policy: policy_path,
            http,
            postgres,
            args: Box::new(args),
        }
    }

    /// Stops the control plane and its proxy (their listeners close; open connections get a
    /// moment to finish).
    pub async fn stop(&self) {
        self.proxy.drain.drain(Duration::from_millis(200)).await;
    }

    /// Starts the control plane and its proxy again on the same store, policy file and control
    /// address (after [`Self::stop`]).
    pub async fn restart(&mut self) {
        self.proxy = app::start((*self.args).clone())
            .await
            .expect("infra-proxy starts again");
    }

    /// The store's database URL and root key file, for [`Options::replica_of`] (PostgreSQL
    /// harnesses only).
    pub fn store_of(&self) -> (String, PathBuf) {
        let server = self.postgres.as_ref().expect("a PostgreSQL harness");
        (server.url("infra"), self.dir.path().join("root.key"))
    }

    /// The control API's URL.
    pub fn control_url(&self) -> String {
        format!(
            "https://{}",
            self.proxy.control_address.expect("control listener")
        )
    }

    /// The proxy's URL.
    pub fn proxy_url(&self) -> String {
        format!("https://{}", self.proxy.address)
    }

    /// Calls the control API: `method` `path` with `key` as bearer and `body` as JSON. Answers
    /// the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, value, _) = self.call_with(method, path, key, body, &[]).await;
        (status, value)
    }

    /// [`Self::call`] with extra request `headers`; answers the response headers too.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.control_url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control API answers");
        let status = response.status().as_u16();
        let answer_headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value, answer_headers)
    }

    /// The typed control API client of the holder of `key` (none: anonymous).
    pub fn api(&self, key: Option<&str>) -> Client {
        Client::new(self.http.clone(), self.control_url(), key)
    }

    /// Logs in with a password; answers the session key.
    pub async fn login(&self, name: &str, password: &str) -> String {
        match self.api(None).login(name, password).await {
            Ok(answer) => answer.access_key,
            Err(refused) => panic!("login of {name}: {refused:?}"),
        }
    }

    /// The bootstrap admin's session key.
    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// A token for this destination, traded for `key`.
    pub async fn token(&self, key: &str) -> String {
        match self.api(Some(key)).token(DESTINATION).await {
            Ok(answer) => answer.token,
            Err(refused) => panic!("token: {refused:?}"),
        }
    }

    /// A kubectl whose kubeconfig holds a token traded for `key`.
    pub async fn kubectl_with(&self, key: &str) -> Kubectl {
        let token = self.token(key).await;
        Kubectl::new(
            &self.proxy_url(),
            self.ca.cert_pem(),
            &Credentials::Token(token),
        )
    }

    /// Replaces the policy file as editors do.
    pub fn write_policy(&self, text: &str) {
        let tmp = self.policy.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, &self.policy).expect("rename policy");
    }
}

/// infra-proxy in proxy-only mode in front of a stand-in apiserver of its own: it takes its
/// policy and token keys from a control harness (`--control-url`), as a proxy in another
/// cluster does.
#[derive(Debug)]
pub struct RemoteProxy {
    /// Files of this proxy (snapshot, kubeconfig, audit log).
    pub dir: tempfile::TempDir,
    /// Its stand-in apiserver.
    pub standin: StandIn,
    /// The running proxy.
    pub proxy: Running,
    /// The CA of its serving certificate.
    pub ca: Ca,
    /// Its destination name.
    pub destination: String,
}

impl RemoteProxy {
    /// Starts a proxy of `destination` syncing from `control` with a connector's `access_key`;
    /// it refuses to decide after `staleness_seconds` without word from the control plane, and
    /// keeps its snapshot at `snapshot_file` (default: in its own folder) and its audit spool
    /// beside it (`audit-spool.ndjson`).
    pub async fn start(
        control: &ControlHarness,
        destination: &str,
        access_key: &str,
        staleness_seconds: u64,
        snapshot_file: Option<PathBuf>,
    ) -> Self {
        Self::start_with(
            control,
            destination,
            access_key,
            staleness_seconds,
            snapshot_file,
            |_| {},
        )
        .await
    }

    /// [`Self::start`], with its arguments changed by `configure` first.
    pub async fn start_with(
        control: &ControlHarness,
        destination: &str,
        access_key: &str,
        staleness_seconds: u64,
        snapshot_file: Option<PathBuf>,
        configure: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        certs::init_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let (standin, kubeconfig) = upstream(dir.path()).await;
        let ca = Ca::new(&format!("{destination} CA"));
        let (cert, cert_key) = ca.localhost_cert().write_to(dir.path(), "serving");
        let control_ca = dir.path().join("control-ca.pem");
        std::fs::write(&control_ca, control.ca.cert_pem()).expect("write control CA");
        let key_file = dir.path().join("access-key");
        std::fs::write(&key_file, access_key).expect("write access key");
        let spool = snapshot_file.as_ref().map_or_else(
            || dir.path().join("audit-spool.ndjson"),
            |file| file.with_file_name("audit-spool.ndjson"),
        );
        let mut args = ServeArgs {
            destination: destination.to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls_cert: Some(cert),
            tls_key: Some(cert_key),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            policy: None,
            kubeconfig: Some(kubeconfig),
            context: None,
            issuers: IssuerArgs::default(),
            control: ControlArgs {
                control_listen: None,
                database: String::new(),
                root_key_file: None,
                admin_password_file: None,
                control_public_url: None,
                public_url: None,
                token_ttl_seconds: 300,
                request_pending_seconds: 86_400,
                provider_recheck_seconds: 900,
                provider_ca_file: None,
                oidc_redirect_uris: Vec::new(),
                trusted_proxies: Vec::new(),
                client_rate_per_minute: 20,
                client_burst: 40,
                control_url: Some(control.control_url()),
                access_key_file: Some(key_file),
                control_ca_file: Some(control_ca),
                snapshot_file: snapshot_file.unwrap_or_else(|| dir.path().join("snapshot.json")),
                staleness_seconds,
                audit_retention: Duration::from_hours(24 * 90),
                audit_otlp_endpoint: None,
                audit_otlp_headers: Vec::new(),
            },
            audit_log: "off".to_owned(),
            audit_fail: FailMode::Open,
            audit_format: infra_proxy::audit::Format::Infra,
            audit_spool: spool,
            audit_spool_bytes: 64 * 1024 * 1024,
            limits: LimitArgs::default(),
            upstream_max_streams: 100,
            rbac_reconcile: infra_proxy::reconcile::ReconcileMode::Off,
            shutdown_grace_seconds: 1,
            worker_threads: None,
            log_format: "text".to_owned(),
        };
        configure(&mut args);
        let proxy = app::start(args)
            .await
            .expect("proxy-only infra-proxy starts");
        Self {
            dir,
            standin,
            proxy,
            ca,
            destination: destination.to_owned(),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.proxy.address)
    }
}

/// An HTTPS client for a proxy whose serving certificate `ca` signed.
pub fn client_for(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// The status of `GET path` at `base` with `token`.
pub async fn status_of(client: &reqwest::Client, base: &str, path: &str, token: &str) -> u16 {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}
