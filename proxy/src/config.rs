//! Command-line and environment configuration (clap). Every flag has an `INFRA_` variable.
//!
//! The types here only describe settings; `main.rs` checks them and builds the server, so a bad
//! configuration is refused before any port is bound.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use crate::audit::{FailMode, Format as AuditFormat};
use crate::reconcile::ReconcileMode;
use crate::server::Limits;

/// infra-proxy: Infra's TLS proxy in front of kube-apiserver.
#[derive(Debug, Parser)]
#[command(name = "infra-proxy", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: verify tokens, decide, and forward to the apiserver with impersonation.
    Serve(Box<ServeArgs>),
    /// Check a policy file and print its errors (exit 1) or a one-line summary (exit 0).
    Validate(ValidateArgs),
}

/// `infra-proxy validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The policy file to check.
    #[arg(long, env = "INFRA_POLICY")]
    pub policy: PathBuf,
}

/// `infra-proxy serve`.
#[derive(Debug, Args, Clone)]
///
/// Settings may also come from a YAML file given as `--config FILE` (or `INFRA_CONFIG`), keyed
/// by flag name (`destination: production`, `tls-cert: /etc/tls/tls.crt`); flags and `INFRA_`
/// variables take precedence over it. See [`with_config_file`].
pub struct ServeArgs {
    /// The name of the cluster this proxy fronts, as grants name it (`production`). Tokens must
    /// carry it as their audience.
    #[arg(long, env = "INFRA_DESTINATION")]
    pub destination: String,

    /// Address of the TLS listener kubectl connects to.
    #[arg(long, env = "INFRA_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,

    /// Serving certificate (PEM). Without it a self-signed certificate for localhost is made at
    /// start and its SHA-256 fingerprint printed.
    #[arg(long, env = "INFRA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "INFRA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Address of the admin listener (/healthz, /readyz, /metrics). Keep it private.
    #[arg(long, env = "INFRA_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// The policy file (access as code). Re-read when it changes; a broken file keeps the last
    /// good policy in force. Not with --control-url: then policy comes from the control plane.
    #[arg(long, env = "INFRA_POLICY", required_unless_present = "control_url")]
    pub policy: Option<PathBuf>,

    /// Kubeconfig for the apiserver. Without it, the in-cluster service account is used.
    #[arg(long, env = "INFRA_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Context of the kubeconfig to use (default: its current context).
    #[arg(long, env = "INFRA_CONTEXT", requires = "kubeconfig")]
    pub context: Option<String>,

    /// Keep RBAC bindings in the cluster that mirror this destination's grants (labelled
    /// `app.kubernetes.io/managed-by: infra`, annotated `infra.dev/destination`): `auto` (the
    /// default) when the proxy's credential may manage bindings, as it checks at start; `true`
    /// always (what is missing is reported); `false` never, and then the cluster's own bindings
    /// must allow what the grants allow. The cluster's ClusterRoles and Roles are watched and
    /// used for decisions in every mode where the credential may list them.
    #[arg(
        long,
        env = "INFRA_RBAC_RECONCILE",
        value_enum,
        default_value_t = ReconcileMode::Auto,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub rbac_reconcile: ReconcileMode,

    #[command(flatten)]
    pub issuers: IssuerArgs,

    #[command(flatten)]
    pub control: ControlArgs,

    /// Where to write the audit log: `stdout`, `off`, or a file path.
    #[arg(long, env = "INFRA_AUDIT_LOG", default_value = "stdout")]
    pub audit_log: String,

    /// What to do while the audit log cannot be written (a failed write, a full queue): `open`
    /// keeps serving, `closed` refuses requests (503) until it can be written again. Both count
    /// the events not recorded (`infra_proxy_audit_failures_total`) and show the failure in
    /// /readyz.
    #[arg(long, env = "INFRA_AUDIT_FAIL", value_enum, default_value_t = FailMode::Open)]
    pub audit_fail: FailMode,

    /// The format of --audit-log's lines: `infra` (Infra's event schema, docs/audit.md) or
    /// `kubernetes` (the apiserver's `audit.k8s.io/v1` Event, for tools that read its log).
    #[arg(long, env = "INFRA_AUDIT_FORMAT", value_enum, default_value_t = AuditFormat::Infra)]
    pub audit_format: AuditFormat,

    /// With a control plane (here or at --control-url) every event also goes to its audit
    /// trail; while the control plane cannot take them, events wait in this file (mode 0600)
    /// and are sent when it can again, across restarts.
    #[arg(
        long,
        env = "INFRA_AUDIT_SPOOL",
        default_value = "infra-audit-spool.ndjson"
    )]
    pub audit_spool: PathBuf,

    /// The most bytes the spool file holds; beyond, events are lost (counted, shown in
    /// /readyz) and with `--audit-fail closed` requests are refused.
    #[arg(long, env = "INFRA_AUDIT_SPOOL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub audit_spool_bytes: u64,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Streams per upstream HTTP/2 connection before another connection is opened.
    #[arg(long, env = "INFRA_UPSTREAM_MAX_STREAMS", default_value_t = 100)]
    pub upstream_max_streams: usize,

    /// Seconds to finish open requests after SIGTERM before closing them.
    #[arg(long, env = "INFRA_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Worker threads of the runtime (default: one per CPU). On small machines shared with other
    /// work, fewer threads spend less CPU per request on cross-thread wake-ups.
    #[arg(long, env = "INFRA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "INFRA_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Limits on clients: connections, idle time, time for the apiserver to answer, requests in
/// flight per user, body size. The defaults are [`Limits::default`]'s.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Seconds a client connection may stay open with no request in flight (HTTP/2: no open
    /// stream) before it is closed. An open watch, followed log or exec keeps its connection.
    #[arg(
        long,
        env = "INFRA_IDLE_TIMEOUT",
        default_value_t = Limits::default().idle_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_timeout_seconds: u64,

    /// Client connections open at once (0: no limit); beyond it new connections are closed as
    /// they are accepted.
    #[arg(long, env = "INFRA_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,

    /// Client connections open at once from one client address (0: no limit).
    #[arg(
        long,
        env = "INFRA_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = Limits::default().max_connections_per_client
    )]
    pub max_connections_per_client: usize,

    /// Seconds the apiserver has to start answering a request that is not long-running, as its
    /// own --request-timeout; then 504. Watches, logs, exec, attach, port-forward and proxied
    /// requests have no deadline.
    #[arg(
        long,
        env = "INFRA_REQUEST_TIMEOUT",
        default_value_t = Limits::default().request_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub request_timeout_seconds: u64,

    /// Requests one user may have in flight at once, long-running ones included while they are
    /// open (0: no limit); beyond it: 429 with Retry-After.
    #[arg(
        long,
        env = "INFRA_MAX_REQUESTS_IN_FLIGHT_PER_USER",
        default_value_t = Limits::default().max_requests_in_flight_per_user
    )]
    pub max_requests_in_flight_per_user: usize,

    /// Largest request body in bytes (above the apiserver's own 3 MiB); beyond it: 413. Bodies
    /// proxied to a pod, service or node stream and are not limited.
    #[arg(
        long,
        env = "INFRA_MAX_REQUEST_BODY_BYTES",
        default_value_t = Limits::default().max_request_body_bytes,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_request_body_bytes: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            idle_timeout_seconds: limits.idle_timeout.as_secs(),
            max_connections: limits.max_connections,
            max_connections_per_client: limits.max_connections_per_client,
            request_timeout_seconds: limits.request_timeout.as_secs(),
            max_requests_in_flight_per_user: limits.max_requests_in_flight_per_user,
            max_request_body_bytes: limits.max_request_body_bytes,
        }
    }
}

impl LimitArgs {
    /// The limits these flags set, the others at their defaults.
    pub fn limits(&self) -> Limits {
        Limits {
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_seconds),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            request_timeout: std::time::Duration::from_secs(self.request_timeout_seconds),
            max_requests_in_flight_per_user: self.max_requests_in_flight_per_user,
            max_request_body_bytes: self.max_request_body_bytes,
            ..Limits::default()
        }
    }
}

/// The embedded control plane: login, users, groups, grants, tokens. Enabled by
/// `--control-listen`.
#[derive(Debug, Args, Clone, Default)]
pub struct ControlArgs {
    /// Serve the control API (what the `infra` CLI talks to) on this address, and run the control
    /// plane in this process. Its tokens are then trusted without any --issuer.
    #[arg(long, env = "INFRA_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,

    /// The control plane's database: `sqlite:PATH` (one file, the default) or
    /// `postgres://USER:PASSWORD@HOST/DB` (several control replicas).
    #[arg(
        long,
        env = "INFRA_DATABASE",
        default_value = "sqlite:infra.db",
        hide_env_values = true
    )]
    pub database: String,

    /// File holding the root key that encrypts secrets at rest (created, mode 0600, on first
    /// start). Alternatively put the key in `INFRA_ROOT_KEY` (base64). Default: `infra.key` next
    /// to an SQLite database.
    #[arg(long, env = "INFRA_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,

    /// On a first start, give the bootstrap user `admin` the password in this file instead of a
    /// random one printed once.
    #[arg(long, env = "INFRA_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,

    /// The control API's URL as users and proxies reach it; also the issuer of its tokens.
    /// Default: `https://` and --control-listen.
    #[arg(long, env = "INFRA_CONTROL_PUBLIC_URL")]
    pub control_public_url: Option<String>,

    /// This proxy's URL as users reach it, registered for the kubeconfig the CLI writes.
    /// Default: `https://` and --listen.
    #[arg(long, env = "INFRA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How long the tokens the control plane issues are valid, in seconds.
    #[arg(long, env = "INFRA_TOKEN_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub token_ttl_seconds: u64,

    /// How long an access request waits for its reviewers before it expires, in seconds.
    #[arg(long, env = "INFRA_REQUEST_PENDING", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub request_pending_seconds: u64,

    /// How long a provider's word about a user holds, in seconds, before the next token makes
    /// the control plane ask the provider again.
    #[arg(long, env = "INFRA_PROVIDER_RECHECK", default_value_t = 900)]
    pub provider_recheck_seconds: u64,

    /// Extra CA certificates (PEM) to trust for identity providers.
    #[arg(long, env = "INFRA_PROVIDER_CA_FILE")]
    pub provider_ca_file: Option<PathBuf>,

    /// Proxy-only mode: take policy and token keys from the control plane at this URL (another
    /// cluster's `--control-public-url`), registering this destination there.
    #[arg(long, env = "INFRA_CONTROL_URL", conflicts_with = "control_listen")]
    pub control_url: Option<String>,

    /// The access key (`<id>.<secret>`) of a user with role `connector` on `infra`, for
    /// --control-url. Alternatively put the key itself in `INFRA_ACCESS_KEY`.
    #[arg(long, env = "INFRA_ACCESS_KEY_FILE")]
    pub access_key_file: Option<PathBuf>,

    /// Extra CA certificates (PEM) to trust for --control-url.
    #[arg(long, env = "INFRA_CONTROL_CA_FILE")]
    pub control_ca_file: Option<PathBuf>,

    /// Where a proxy-only proxy keeps the last policy snapshot (mode 0600), to start and serve
    /// while the control plane is down.
    #[arg(
        long,
        env = "INFRA_SNAPSHOT_FILE",
        default_value = "infra-snapshot.json"
    )]
    pub snapshot_file: PathBuf,

    /// After this many seconds without a word from the control plane, a proxy-only proxy
    /// refuses requests (503) rather than decide with stale policy.
    #[arg(long, env = "INFRA_STALENESS", default_value_t = 900)]
    pub staleness_seconds: u64,

    /// How long the control plane keeps audit events (`90d`, `12h`, `30m`, `45s`); older ones
    /// are removed every minute, a batch at a time.
    #[arg(long, env = "INFRA_AUDIT_RETENTION", default_value = "90d", value_parser = parse_retention)]
    pub audit_retention: std::time::Duration,

    /// Export the audit trail (every proxy's requests and the control plane's actions) as
    /// OpenTelemetry logs over OTLP/HTTP to this base endpoint (`https://collector:4318`): the
    /// logs are POSTed to its path and `v1/logs`. https only; the system roots and
    /// --provider-ca-file are trusted.
    #[arg(long, env = "INFRA_AUDIT_OTLP_ENDPOINT", requires = "control_listen")]
    pub audit_otlp_endpoint: Option<String>,

    /// A header sent with every OTLP export, `NAME=VALUE`; the value may be `env:VAR` or
    /// `file:PATH` (for an API key). Repeatable.
    #[arg(
        long = "audit-otlp-header",
        env = "INFRA_AUDIT_OTLP_HEADERS",
        value_delimiter = ',',
        hide_env_values = true,
        requires = "audit_otlp_endpoint"
    )]
    pub audit_otlp_headers: Vec<String>,

    /// A redirect URI (exact) OIDC logins may use besides loopback ones. Repeatable.
    #[arg(
        long = "oidc-redirect-uri",
        env = "INFRA_OIDC_REDIRECT_URIS",
        value_delimiter = ','
    )]
    pub oidc_redirect_uris: Vec<String>,

    /// A proxy (load balancer, ingress) in front of the control API, as a CIDR (`10.0.0.0/8`) or
    /// an address: only from these peers is `X-Forwarded-For` believed to name the client, whose
    /// address rate limits and login lockouts count. Repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "INFRA_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Requests a minute each client address may make of the anonymous and costly routes of
    /// the control API (log in, start an OIDC login, trade a session for a token); beyond,
    /// 429 with `Retry-After`.
    #[arg(long, env = "INFRA_CLIENT_RATE_PER_MINUTE", default_value_t = 20)]
    pub client_rate_per_minute: u32,

    /// How many of those requests a client address may make at once before the rate applies.
    #[arg(long, env = "INFRA_CLIENT_BURST", default_value_t = 40)]
    pub client_burst: u32,
}

/// A CIDR, or one address (as its /32 or /128).
/// A retention: a whole number and a unit, `s`, `m`, `h` or `d`.
fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: s, m, h or d (90d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number (90d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: s, m, h or d (90d)")),
    };
    number
        .checked_mul(unit)
        .filter(|&secs| secs > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a usable retention"))
}

fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

/// Which token issuers are trusted. At least one is required.
#[derive(Debug, Args, Clone, Default)]
pub struct IssuerArgs {
    /// Issuer (`iss`) of tokens signed by the keys in --jwks-file or --jwks-url.
    #[arg(long, env = "INFRA_ISSUER")]
    pub issuer: Option<String>,

    /// A JWKS file with the issuer's public keys, re-read when it changes.
    #[arg(long, env = "INFRA_JWKS_FILE", requires = "issuer")]
    pub jwks_file: Option<PathBuf>,

    /// A JWKS URL with the issuer's public keys (fetched at start, and again at most every
    /// 10 seconds when a token names an unknown key).
    #[arg(long, env = "INFRA_JWKS_URL", requires = "issuer")]
    pub jwks_url: Option<String>,

    /// An external OpenID Connect issuer whose ID tokens are accepted (as kube-oidc-proxy does).
    #[arg(long, env = "INFRA_OIDC_ISSUER_URL", requires = "oidc_audience")]
    pub oidc_issuer_url: Option<String>,

    /// The audience (client id) ID tokens must carry.
    #[arg(long, env = "INFRA_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// The claim that names the user.
    #[arg(long, env = "INFRA_OIDC_USERNAME_CLAIM", default_value = "email")]
    pub oidc_username_claim: String,

    /// Prefix added to user names from the OIDC issuer.
    #[arg(long, env = "INFRA_OIDC_USERNAME_PREFIX", default_value = "")]
    pub oidc_username_prefix: String,

    /// The claim that lists the user's groups.
    #[arg(long, env = "INFRA_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,

    /// Prefix added to group names from the OIDC issuer.
    #[arg(long, env = "INFRA_OIDC_GROUPS_PREFIX", default_value = "")]
    pub oidc_groups_prefix: String,

    /// A PEM file of CA certificates for the OIDC issuer and JWKS URL, in addition to the
    /// system's roots.
    #[arg(long, env = "INFRA_ISSUER_CA_FILE")]
    pub issuer_ca_file: Option<PathBuf>,
}

/// The command line with the settings of `serve --config FILE` (or `INFRA_CONFIG`) put in front
/// of the given flags, so that flags and environment variables win over the file.
///
/// Every key must be a flag of `serve`; its value a string, number or boolean (`true` sets a
/// switch). A key given as a flag too, or whose `INFRA_` variable is set, is skipped: the flag
/// or variable wins.
pub fn with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(serve_at) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    // Take `--config FILE` out: clap never sees it.
    let mut path: Option<PathBuf> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut iter = args[serve_at + 1..].iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            path = Some(PathBuf::from(
                iter.next()
                    .ok_or_else(|| "--config needs a file".to_owned())?,
            ));
        } else if let Some(value) = text.strip_prefix("--config=") {
            path = Some(PathBuf::from(value));
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(path) = path.or_else(|| std::env::var_os("INFRA_CONFIG").map(PathBuf::from)) else {
        let mut out = args[..=serve_at].to_vec();
        out.extend(rest);
        return Ok(out);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading the config file {}: {e}", path.display()))?;
    let settings: BTreeMap<String, serde_json::Value> =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;

    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .ok_or_else(|| "the serve command is missing".to_owned())?;
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in settings {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .ok_or_else(|| format!("{}: unknown setting {key:?}", path.display()))?;
        let flag = format!("--{key}");
        let given = rest.iter().any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        if given
            || arg
                .get_env()
                .is_some_and(|name| std::env::var_os(name).is_some())
        {
            continue;
        }
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "{}: setting {key:?} must be a string, number or boolean",
                    path.display()
                ));
            }
        };
        injected.push(flag.into());
        injected.push(value.into());
    }
    let mut out = args[..=serve_at].to_vec();
    out.extend(injected);
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_config_file_fills_in_what_flags_do_not_say() {
        let dir = std::env::temp_dir().join(format!("infra-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("proxy.yaml");
        std::fs::write(
            &file,
            "destination: production\npolicy: /etc/infra/policy.yaml\nupstream-max-streams: 50\nlisten: 0.0.0.0:8443\n",
        )
        .expect("write");
        let args = with_config_file(os(&[
            "infra-proxy",
            "serve",
            "--config",
            &file.display().to_string(),
            "--listen",
            "127.0.0.1:9443",
        ]))
        .expect("config");
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.destination, "production");
        assert_eq!(serve.upstream_max_streams, 50);
        assert_eq!(
            serve.listen,
            "127.0.0.1:9443".parse::<SocketAddr>().expect("addr"),
            "the flag wins over the file"
        );

        std::fs::write(&file, "destinaton: production\n").expect("write");
        let error = with_config_file(os(&[
            "infra-proxy",
            "serve",
            "--config",
            &file.display().to_string(),
        ]))
        .expect_err("a typo is refused");
        assert!(error.contains("unknown setting \"destinaton\""), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limit_flags_default_to_the_limits_defaults() {
        let cli = Cli::try_parse_from(os(&[
            "infra-proxy",
            "serve",
            "--destination",
            "production",
            "--policy",
            "policy.yaml",
        ]))
        .expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        let parsed = serve.limits.limits();
        let default = LimitArgs::default().limits();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Limits::default()));
        assert_eq!(serve.audit_fail, FailMode::Open);

        let cli = Cli::try_parse_from(os(&[
            "infra-proxy",
            "serve",
            "--destination",
            "production",
            "--policy",
            "policy.yaml",
            "--audit-fail",
            "closed",
            "--max-requests-in-flight-per-user",
            "0",
            "--idle-timeout-seconds",
            "5",
        ]))
        .expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.audit_fail, FailMode::Closed);
        let limits = serve.limits.limits();
        assert_eq!(limits.max_requests_in_flight_per_user, 0);
        assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(5));
    }
}
