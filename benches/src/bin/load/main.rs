//! `load`: the end-to-end load harness. It measures, in one run and alternating cell by cell,
//! the same load client (a) through infra-proxy to a minimal upstream and (b) straight to that
//! upstream, and how much memory the proxy spends per idle watch.
//!
//! Three processes, so each one's CPU is counted apart (from `/proc/PID/stat`):
//!
//! ```text
//!   load run (client) ──TLS──▶ infra-proxy serve (release binary) ──TLS, h2 pool──▶ load upstream
//!           └─────────────────────────── direct ─────────────────────────────────────▲
//! ```
//!
//! Every request carries `Authorization: Bearer <token>`, a real token of a real issuer whose
//! keys the proxy reads from a JWKS file, and the proxy's policy grants `view`, so each proxied
//! request is verified (from the token cache), decided (from the decision cache), rewritten with
//! `Impersonate-*` headers and forwarded. The audit log is off.
//!
//! Run it with `benches/run-load.sh` (builds release, raises the open-files limit); the results
//! and how to read them are in `benches/README.md`.

mod cells;
mod client;
mod peers;
mod pki;
mod processes;
mod procfs;
mod report;
mod report_peers;
mod upstream;
mod watches;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::HeaderValue;
use infra_authz::token::{Issuer, Jwks, SigningAlgorithm, SigningKey, TokenRequest};

use crate::cells::{Route, Via};
use crate::client::{Protocol, Target};
use crate::peers::{Peer, PeerFiles};
use crate::processes::ProxyFiles;
use crate::report::RunInfo;

const DESTINATION: &str = "bench";
const ISSUER: &str = "https://infra.bench";
const USER: &str = "bench@example.com";
const UPSTREAM_TOKEN: &str = "infra-proxy-upstream-credential";
const POLICY: &str = "\
grants:
  - user: bench@example.com
    role: view
    resource: bench
";

/// End-to-end load harness for infra-proxy.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark and print the results (Markdown) on stdout.
    Run(RunArgs),
    /// Serve as the upstream (started by `run`; not for direct use).
    #[command(hide = true)]
    Upstream(UpstreamArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    H1,
    H2,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The infra-proxy binary (default: `infra-proxy` beside this binary, i.e. target/release).
    #[arg(long, env = "INFRA_LOAD_PROXY_BIN")]
    pub proxy_bin: Option<PathBuf>,

    /// Measured seconds per cell.
    #[arg(long, env = "INFRA_LOAD_SECONDS", default_value_t = 6.0)]
    pub seconds: f64,

    /// Warm-up seconds per cell (requests sent, not counted).
    #[arg(long, env = "INFRA_LOAD_WARMUP", default_value_t = 1.0)]
    pub warmup: f64,

    /// Rounds of the whole matrix; each round alternates proxy and direct per cell.
    #[arg(long, env = "INFRA_LOAD_ROUNDS", default_value_t = 2)]
    pub rounds: u32,

    /// Concurrent requests per cell: keep-alive connections over HTTP/1.1, streams over HTTP/2.
    #[arg(long, env = "INFRA_LOAD_CONCURRENCY", value_delimiter = ',', default_values_t = [1_usize, 64])]
    pub concurrency: Vec<usize>,

    /// Protocols to measure.
    #[arg(
        long,
        env = "INFRA_LOAD_PROTOCOLS",
        value_delimiter = ',',
        default_value = "h1,h2"
    )]
    pub protocols: Vec<ProtocolArg>,

    /// HTTP/2 connections the streams of a cell are spread over.
    #[arg(long, env = "INFRA_LOAD_H2_CONNECTIONS", default_value_t = 1)]
    pub h2_connections: usize,

    /// Idle watches to open through a fresh proxy, and straight to a fresh upstream as the
    /// baseline, for the memory figure (0: skip).
    #[arg(long, env = "INFRA_LOAD_WATCHES", default_value_t = 10_000)]
    pub watches: usize,

    /// Worker threads of the load client's runtime.
    #[arg(long, env = "INFRA_LOAD_CLIENT_THREADS", default_value_t = 2)]
    pub client_threads: usize,

    /// Worker threads of the upstream's runtime (default: 1 when it is pinned to one CPU, so
    /// that its threads do not take turns on that CPU, else 2).
    #[arg(long, env = "INFRA_LOAD_UPSTREAM_THREADS")]
    pub upstream_threads: Option<usize>,

    /// Rerun a proxy/direct pair (at most twice) when other processes, or the hypervisor
    /// (steal), took more than this many cores during it.
    #[arg(long, env = "INFRA_LOAD_MAX_OTHER_CORES", default_value_t = 0.2)]
    pub max_other_cores: f64,

    /// Worker threads of infra-proxy's runtime, through `TOKIO_WORKER_THREADS` (default: its
    /// own default, one per CPU).
    #[arg(long, env = "INFRA_LOAD_PROXY_WORKER_THREADS")]
    pub proxy_worker_threads: Option<usize>,

    /// Record a `perf` profile of the proxy during each proxied cell into this directory
    /// (perf's own cost then shows in the numbers: use it for a separate run).
    #[arg(long, env = "INFRA_LOAD_PERF_DIR")]
    pub perf_dir: Option<PathBuf>,

    /// Also measure a second infra-proxy that writes its audit log to a file, cell by cell
    /// beside the first (audit off): the cost of auditing, as a same-run A/B.
    #[arg(long, env = "INFRA_LOAD_AUDIT_AB")]
    pub audit_ab: bool,

    /// Skip the load cells (measure only the watch memory).
    #[arg(long)]
    pub skip_cells: bool,

    /// Do not measure the peers (nginx and HAProxy, measured beside infra-proxy when installed).
    #[arg(long, env = "INFRA_LOAD_NO_PEERS")]
    pub no_peers: bool,

    /// CPUs (a `taskset -c` list) for infra-proxy and the peers, each in turn; `none` to not
    /// pin. Default: the last CPU when there are two or more.
    #[arg(long, env = "INFRA_LOAD_PROXY_CPUS")]
    pub proxy_cpus: Option<String>,

    /// CPUs for the upstream; `none` to not pin. Default: all but the last when there are two
    /// or more. The load client is not pinned.
    #[arg(long, env = "INFRA_LOAD_UPSTREAM_CPUS")]
    pub upstream_cpus: Option<String>,

    /// Size of the bulk list (`GET /api/v1/pods`) in MiB; bulk cells fetch it one at a time per
    /// protocol, through every route (0: no bulk cells).
    #[arg(long, env = "INFRA_LOAD_BULK_MIB", default_value_t = 16)]
    pub bulk_mib: usize,
}

impl RunArgs {
    /// The upstream's worker threads for the load cells.
    pub fn upstream_threads(&self) -> usize {
        self.upstream_threads
            .unwrap_or_else(|| match self.pinning().1.as_deref() {
                Some(list) if list.parse::<usize>().is_ok() => 1,
                _ => 2,
            })
    }

    /// The CPU lists to pin the proxies and the upstream to, if any.
    pub fn pinning(&self) -> (Option<String>, Option<String>) {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let pick = |given: &Option<String>, default: String| match given.as_deref() {
            Some("none") => None,
            Some(list) => Some(list.to_owned()),
            None => (cpus >= 2).then_some(default),
        };
        (
            pick(&self.proxy_cpus, format!("{}", cpus - 1)),
            pick(
                &self.upstream_cpus,
                if cpus > 2 {
                    format!("0-{}", cpus - 2)
                } else {
                    "0".to_owned()
                },
            ),
        )
    }
}

#[derive(Debug, Args)]
struct UpstreamArgs {
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 0)]
    bulk_bytes: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Upstream(args) => {
            upstream::run(&args.cert, &args.key, args.threads, args.bulk_bytes)
        }
        Command::Run(args) => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a run sets up once. `Debug` leaves the token out.
pub struct Setup {
    /// Removed (with everything in it) when the run ends.
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub pki: pki::Pki,
    pub files: ProxyFiles,
    pub authorization: HeaderValue,
    pub ticks: u64,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn run(args: &RunArgs) -> Result<()> {
    if args.seconds <= 0.0 || args.warmup < 0.0 || args.rounds == 0 {
        bail!("--seconds must be positive and --rounds at least 1");
    }
    let needed = u64::try_from(args.watches).unwrap_or(u64::MAX) + 200;
    if args.watches > 0
        && let Some(limit) = procfs::open_files_limit()
        && limit < needed
    {
        bail!(
            "{} watches need about {needed} open files but the limit is {limit}\nhint: run under `bash -c 'ulimit -n 20000; ...'` (benches/run-load.sh does), or give --watches {}",
            args.watches,
            limit.saturating_sub(200)
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let setup = setup(args)?;
    let (_, upstream_cpus) = args.pinning();
    let upstream = processes::start_upstream(
        &setup.pki.cert,
        &setup.pki.key,
        args.upstream_threads(),
        upstream_cpus.as_deref(),
        args.bulk_mib * 1024 * 1024,
    )?;
    eprintln!("upstream pid {} on {}", upstream.pid(), upstream.address);
    write_kubeconfig(&setup, upstream.address)?;

    let uptime_before = report::uptime();
    let date = report::command_output("date", &["-u"]);
    let started = std::time::Instant::now();
    let mut cells = Vec::new();
    if !args.skip_cells {
        // Every process here is stopped (by its own PID) when its handle drops.
        let mut processes = Vec::new();
        let mut routes = Vec::new();
        let proxy = processes::start_proxy(&setup.files, &setup.dir.join("proxy.log"))?;
        eprintln!("infra-proxy pid {} on {}", proxy.pid(), proxy.address);
        routes.push(Route {
            via: Via::Proxy,
            address: proxy.address,
            pid: Some(proxy.pid()),
        });
        processes.push(proxy);
        if args.audit_ab {
            let files = ProxyFiles {
                audit_log: Some(setup.dir.join("audit.log")),
                ..setup.files.clone()
            };
            let audited = processes::start_proxy(&files, &setup.dir.join("proxy-audit.log"))?;
            eprintln!(
                "infra-proxy (audit to a file) pid {} on {}",
                audited.pid(),
                audited.address
            );
            routes.push(Route {
                via: Via::ProxyAudit,
                address: audited.address,
                pid: Some(audited.pid()),
            });
            processes.push(audited);
        }
        if !args.no_peers {
            for peer in Peer::ALL {
                if peer.binary().is_none() {
                    eprintln!("{} is not installed: not measured", peer.name());
                    continue;
                }
                let process = peers::start(
                    peer,
                    &PeerFiles {
                        dir: &setup.dir,
                        cert: &setup.pki.cert,
                        key: &setup.pki.key,
                        ca: &setup.pki.ca,
                        upstream: upstream.address,
                        cpus: setup.files.cpus.as_deref(),
                    },
                )?;
                eprintln!(
                    "{} pid {} on {}",
                    peer.name(),
                    process.pid(),
                    process.address
                );
                routes.push(Route {
                    via: Via::Peer(peer),
                    address: process.address,
                    pid: Some(process.pid()),
                });
                processes.push(process);
            }
        }
        routes.push(Route {
            via: Via::Direct,
            address: upstream.address,
            pid: None,
        });
        cells = runtime.block_on(cells::measure_cells(args, &setup, &routes, &upstream))?;
        drop(processes);
    }
    let watches = if args.watches > 0 {
        Some(runtime.block_on(watches::measure_watches(args, &setup, upstream.pid()))?)
    } else {
        None
    };
    let uptime_after = report::uptime();
    let report = report::report(
        args,
        &setup,
        &cells,
        watches.as_ref(),
        &RunInfo {
            date,
            uptime_before,
            uptime_after,
            elapsed: started.elapsed(),
        },
    );
    emit(&report);
    drop(upstream);
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
fn emit(report: &str) {
    print!("{report}");
}

fn setup(args: &RunArgs) -> Result<Setup> {
    pki::init_crypto();
    let temp = tempfile::Builder::new()
        .prefix("infra-load-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = temp.path().to_owned();
    let pki = pki::Pki::generate(&dir)?;

    let key = SigningKey::generate(SigningAlgorithm::EdDsa).context("generating a signing key")?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, Jwks::from_signing_keys([&key]).to_json())
        .with_context(|| format!("writing {}", jwks.display()))?;
    let issuer = Issuer::new(ISSUER, key).context("making the issuer")?;
    let groups = vec!["Engineering".to_owned(), "Everyone".to_owned()];
    let token = issuer
        .issue(
            &TokenRequest {
                user_id: USER,
                name: USER,
                groups: &groups,
                audience: DESTINATION,
                ttl: Duration::from_hours(2),
                session: None,
            },
            SystemTime::now(),
        )
        .context("issuing the token")?;
    let authorization = HeaderValue::from_str(&format!("Bearer {}", token.token.expose()))
        .context("the token as a header value")?;

    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).with_context(|| format!("writing {}", policy.display()))?;

    let binary = match &args.proxy_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("infra-proxy"),
    };
    Ok(Setup {
        files: ProxyFiles {
            binary,
            destination: DESTINATION.to_owned(),
            issuer: ISSUER.to_owned(),
            jwks,
            policy,
            kubeconfig: dir.join("kubeconfig"),
            cert: pki.cert.clone(),
            key: pki.key.clone(),
            worker_threads: args.proxy_worker_threads,
            audit_log: None,
            cpus: args.pinning().0,
        },
        _dir: temp,
        dir,
        pki,
        authorization,
        ticks: procfs::clock_ticks_per_second(),
    })
}

/// Writes the proxy's kubeconfig for the upstream at `address`.
fn write_kubeconfig(setup: &Setup, address: std::net::SocketAddr) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "upstream", "cluster": {
            "server": format!("https://{address}"),
            "certificate-authority": setup.pki.ca.display().to_string(),
        }}],
        "users": [{"name": "proxy", "user": {"token": UPSTREAM_TOKEN}}],
        "contexts": [{"name": "upstream", "context": {"cluster": "upstream", "user": "proxy"}}],
        "current-context": "upstream",
    });
    let path = &setup.files.kubeconfig;
    std::fs::write(path, config.to_string()).with_context(|| format!("writing {}", path.display()))
}

pub fn target(setup: &Setup, address: std::net::SocketAddr, protocol: Protocol) -> Result<Target> {
    Ok(Target {
        address,
        tls: setup.pki.client_config(protocol.alpn())?,
        protocol,
        authorization: setup.authorization.clone(),
    })
}
