//! infra-proxy between the real kubectl and the stand-in apiserver: a harness that starts
//! both (over real TLS, on 127.0.0.1:0), with a token issuer whose keys the proxy trusts.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use infra_authz::token::{Issuer, Jwks, SigningAlgorithm, SigningKey, TokenRequest};
use infra_proxy::app::{self, Running};
use infra_proxy::audit::FailMode;
use infra_proxy::config::{ControlArgs, IssuerArgs, LimitArgs, ServeArgs};

use crate::apiserver::{StandIn, StandInBuilder};
use crate::certs::{self, Ca};
use crate::kubectl::{Credentials, Kubectl};

pub const ISSUER: &str = "https://infra.test";
pub const DESTINATION: &str = "testing";
pub const UPSTREAM_TOKEN: &str = "infra-proxy-upstream-credential";

/// A stand-in apiserver, a token issuer, and infra-proxy between them.
#[derive(Debug)]
pub struct Harness {
    /// Files of this run (kubeconfig, keys, policy, audit log).
    pub dir: tempfile::TempDir,
    /// The stand-in apiserver.
    pub standin: StandIn,
    /// The running proxy.
    pub proxy: Running,
    /// The issuer whose keys the proxy trusts.
    pub issuer: Issuer,
    /// The CA of the proxy's serving certificate.
    pub ca: Ca,
    /// The policy file.
    pub policy: PathBuf,
}

impl Harness {
    /// Starts a stand-in and a proxy deciding with `policy`.
    pub async fn start(policy: &str) -> Self {
        Self::start_with_issuers(policy, |infra| infra).await
    }

    /// Starts a stand-in and a proxy deciding with `policy` that trusts the issuers `issuers`
    /// answers when given the default ones (this harness's Infra issuer with its JWKS file):
    /// keep them and add the `oidc_*` settings, or replace them.
    pub async fn start_with_issuers(
        policy: &str,
        issuers: impl FnOnce(IssuerArgs) -> IssuerArgs,
    ) -> Self {
        Self::start_custom(policy, StandIn::builder(), issuers, |_| {}).await
    }

    /// Starts a stand-in and a proxy deciding with `policy`, whose settings `configure` changes
    /// (limits, audit) before it starts.
    pub async fn start_with(policy: &str, configure: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::start_custom(policy, StandIn::builder(), |infra| infra, configure).await
    }

    /// The most general start: the stand-in from `standin` (its bearer token is set here), the
    /// issuers as [`Self::start_with_issuers`] takes them, the settings as [`Self::start_with`].
    pub async fn start_custom(
        policy: &str,
        standin: StandInBuilder,
        issuers: impl FnOnce(IssuerArgs) -> IssuerArgs,
        configure: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        certs::init_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let (standin, kubeconfig) = upstream_of(dir.path(), standin).await;

        // The issuer's keys, published as a JWKS file.
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).expect("key");
        let jwks = Jwks::from_signing_keys([&key]);
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks.to_json()).expect("write jwks");
        let issuer = Issuer::new(ISSUER, key).expect("issuer");

        // The proxy's serving certificate, from a CA kubectl trusts.
        let ca = Ca::new("infra-proxy test CA");
        let (cert, cert_key) = ca.localhost_cert().write_to(dir.path(), "proxy");

        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy).expect("write policy");

        let mut args = ServeArgs {
            destination: DESTINATION.to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls_cert: Some(cert),
            tls_key: Some(cert_key),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            policy: Some(policy_path.clone()),
            kubeconfig: Some(kubeconfig),
            context: None,
            issuers: issuers(IssuerArgs {
                issuer: Some(ISSUER.to_owned()),
                jwks_file: Some(jwks_file),
                ..IssuerArgs::default()
            }),
            control: ControlArgs::default(),
            audit_log: dir.path().join("audit.log").display().to_string(),
            audit_fail: FailMode::Open,
            audit_format: infra_proxy::audit::Format::Infra,
            audit_spool: dir.path().join("audit-spool.ndjson"),
            audit_spool_bytes: 64 * 1024 * 1024,
            limits: LimitArgs::default(),
            upstream_max_streams: 100,
            rbac_reconcile: infra_proxy::reconcile::ReconcileMode::Off,
            shutdown_grace_seconds: 1,
            worker_threads: None,
            log_format: "text".to_owned(),
        };
        configure(&mut args);
        let proxy = app::start(args).await.expect("infra-proxy starts");
        Self {
            dir,
            standin,
            proxy,
            issuer,
            ca,
            policy: policy_path,
        }
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.proxy.address)
    }

    /// A token of `user` in `groups` for this destination.
    pub fn token(&self, user: &str, groups: &[&str], ttl: Duration) -> String {
        self.token_issued_at(user, groups, ttl, SystemTime::now())
    }

    /// A token of `user` in `groups` for this destination, issued at `at` (in the past for an
    /// expired one).
    pub fn token_issued_at(
        &self,
        user: &str,
        groups: &[&str],
        ttl: Duration,
        at: SystemTime,
    ) -> String {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        self.issuer
            .issue(
                &TokenRequest {
                    user_id: user,
                    name: user,
                    groups: &groups,
                    audience: DESTINATION,
                    ttl,
                    session: None,
                },
                at,
            )
            .expect("issue")
            .token
            .expose()
            .to_owned()
    }

    /// A kubectl whose kubeconfig holds a token of `user`.
    pub fn kubectl_as(&self, user: &str, groups: &[&str]) -> Kubectl {
        let token = self.token(user, groups, Duration::from_mins(5));
        Kubectl::new(&self.url(), self.ca.cert_pem(), &Credentials::Token(token))
    }

    /// The audit log, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Starts a stand-in and a proxy deciding with `policy` and `--rbac-reconcile`, with the
    /// ClusterRoles `roles` (JSON objects) in the stand-in; returns once the proxy decides with
    /// them (no grant names an unknown role).
    pub async fn start_with_cluster_roles(policy: &str, roles: &[serde_json::Value]) -> Self {
        let h = Self::start_with(policy, |args| {
            args.rbac_reconcile = infra_proxy::reconcile::ReconcileMode::On;
        })
        .await;
        for role in roles {
            h.standin
                .create(role.clone())
                .expect("the stand-in stores the ClusterRole");
        }
        let policy = std::sync::Arc::clone(&h.proxy.proxy.policy);
        wait_for(|| {
            let known = policy.unknown_roles().is_empty();
            async move { known.then_some(()) }
        })
        .await;
        h
    }

    /// Replaces the policy file as editors do.
    pub fn write_policy(&self, text: &str) {
        // Write beside and rename, as editors and ConfigMap updates do.
        let tmp = self.policy.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, &self.policy).expect("rename policy");
    }
}

/// A ClusterRole object named `name` with `rules` (a JSON list of RBAC rules).
pub fn cluster_role(name: &str, rules: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    })
}

/// A stand-in apiserver that accepts [`UPSTREAM_TOKEN`], and a kubeconfig for it in `dir`: what
/// a proxy in front of it is started with.
pub async fn upstream(dir: &Path) -> (StandIn, PathBuf) {
    upstream_of(dir, StandIn::builder()).await
}

/// [`upstream`], from a stand-in built by `builder`.
pub async fn upstream_of(dir: &Path, builder: StandInBuilder) -> (StandIn, PathBuf) {
    let standin = builder.bearer_token(UPSTREAM_TOKEN).start().await;
    let upstream_kubeconfig = Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::Token(UPSTREAM_TOKEN.to_owned()),
    );
    let kubeconfig = dir.join("upstream-kubeconfig");
    std::fs::copy(upstream_kubeconfig.kubeconfig(), &kubeconfig).expect("copy kubeconfig");
    (standin, kubeconfig)
}

/// Polls `check` until it gives a value (at most 20 s).
pub async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP GET; answers the body.
pub async fn http_get(url: &str) -> String {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url.parse().expect("url");
    let authority = uri.authority().expect("authority").to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get(uri.path())
        .header("host", authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A GET over real TLS to the proxy with exactly `headers`; answers the status and body.
pub async fn https_get(h: &Harness, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    https_request(
        h,
        "GET",
        path,
        headers,
        http_body_util::Empty::<bytes::Bytes>::new(),
    )
    .await
}

/// A request with `method` and `body` over real TLS to the proxy with exactly `headers` (and
/// the body's length); answers the status and body.
pub async fn https_send(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let body = http_body_util::Full::new(bytes::Bytes::from(body));
    https_request(h, method, path, headers, body).await
}

/// One HTTP/1.1 request over real TLS to the proxy, with `body` as hyper sends it.
async fn https_request<B>(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> (u16, String)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let mut config = certs::client_config(&h.ca, None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.proxy.address)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(body).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// chmod 755.
pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut permissions = std::fs::metadata(path).expect("stat").permissions();
    permissions.set_mode(0o755);
    std::fs::set_permissions(path, permissions).expect("chmod");
}
