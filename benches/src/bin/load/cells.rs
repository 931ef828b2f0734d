//! The load cells: one protocol, one concurrency, through the proxy or direct, measured for a
//! fixed window after a warm-up, with the CPU time each process spent in the window.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::client::{self, Protocol, Target};
use crate::peers::Peer;
use crate::processes::Process;
use crate::procfs::{self, CpuSample, CpuSpent};
use crate::{ProtocolArg, RunArgs, Setup, target};

/// Through the proxy, a peer, or straight to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Proxy,
    /// A second infra-proxy, the same but writing its audit log to a file (`--audit-ab`).
    ProxyAudit,
    /// A peer proxy (nginx, HAProxy) without token check or decision.
    Peer(Peer),
    Direct,
}

impl Via {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::ProxyAudit => "proxy+audit",
            Self::Peer(peer) => peer.name(),
            Self::Direct => "direct",
        }
    }
}

/// What a cell asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The small list ([`client::PATH`], about 400 bytes), again and again.
    Small,
    /// The large list ([`client::BULK_PATH`], `--bulk-mib`), one at a time.
    Bulk,
}

/// Where a cell's requests go: the via, its address and the PID whose CPU is its cost.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Through what.
    pub via: Via,
    /// Where to connect.
    pub address: std::net::SocketAddr,
    /// The proxy's (or peer's) PID; none for direct.
    pub pid: Option<u32>,
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The round (1-based).
    pub round: u32,
    /// Through the proxy or direct.
    pub via: Via,
    /// What it asked for.
    pub workload: Workload,
    /// Body bytes received in the window.
    pub bytes: u64,
    /// CPU time of the proxy's audit writer thread in the window (ns), when it has one.
    pub audit_writer_ns: Option<u64>,
    /// The protocol.
    pub protocol: Protocol,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Client connections they used.
    pub connections: usize,
    /// Requests that ran wholly inside the measured window.
    pub requests: u64,
    /// Requests that failed or answered other than 200.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The measured window.
    pub window: Duration,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// CPU time spent in the window.
    pub cpu: CpuSpent,
    /// How many times this pair was run again because the machine was busy (the least disturbed
    /// attempt is the one kept).
    pub reruns: u32,
}

impl Cell {
    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    /// `seconds` of CPU per request, in µs.
    pub fn per_request_us(&self, seconds: f64) -> f64 {
        if self.requests == 0 {
            return f64::NAN;
        }
        seconds * 1e6 / self.requests as f64
    }

    /// Cores' worth of CPU other processes used during the cell.
    pub fn other_cores(&self) -> f64 {
        self.cpu.other_cores(self.window)
    }

    /// Cores' worth of CPU the hypervisor took from this machine during the cell.
    pub fn steal_cores(&self) -> f64 {
        self.cpu.steal / self.window.as_secs_f64()
    }
}

/// Runs every cell of every round, each route in turn (direct last), rerunning disturbed
/// groups; then, with `--bulk-mib`, the bulk cells the same way.
pub async fn measure_cells(
    args: &RunArgs,
    setup: &Setup,
    routes: &[Route],
    upstream: &Process,
) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    let protocols: Vec<Protocol> = args
        .protocols
        .iter()
        .map(|p| match p {
            ProtocolArg::H1 => Protocol::Http1,
            ProtocolArg::H2 => Protocol::Http2,
        })
        .collect();
    for round in 1..=args.rounds {
        let mut matrix: Vec<(Protocol, usize, Workload)> = Vec::new();
        for &protocol in &protocols {
            for &concurrency in &args.concurrency {
                matrix.push((protocol, concurrency, Workload::Small));
            }
        }
        if args.bulk_mib > 0 {
            for &protocol in &protocols {
                matrix.push((protocol, 1, Workload::Bulk));
            }
        }
        for (protocol, concurrency, workload) in matrix {
            // Up to three attempts at the group; the least disturbed one is kept.
            let mut attempts: Vec<Vec<Cell>> = Vec::new();
            loop {
                let mut group = Vec::new();
                for route in routes {
                    let mut cell = measure_cell(
                        args,
                        setup,
                        &target(setup, route.address, protocol)?,
                        route,
                        upstream.pid(),
                        concurrency,
                        workload,
                    )
                    .await?;
                    cell.round = round;
                    eprintln!(
                        "round {round} {} x{concurrency}{} {:>11}: {:>8.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  proxy {:>5.1} µs/req  other processes {:.2} cores, steal {:.2} cores  errors {}",
                        protocol.name(),
                        if workload == Workload::Bulk {
                            " bulk"
                        } else {
                            ""
                        },
                        route.via.name(),
                        cell.rate(),
                        cell.p50_us,
                        cell.p99_us,
                        cell.per_request_us(cell.cpu.proxy),
                        cell.other_cores(),
                        cell.steal_cores(),
                        cell.errors,
                    );
                    group.push(cell);
                }
                let disturbance = disturbance(&group);
                attempts.push(group);
                if disturbance <= args.max_other_cores || attempts.len() == 3 {
                    break;
                }
                eprintln!(
                    "  other processes or the hypervisor took {disturbance:.2} cores during this group: running it again"
                );
            }
            let reruns = u32::try_from(attempts.len() - 1).unwrap_or(u32::MAX);
            let best = attempts
                .into_iter()
                .min_by(|a, b| disturbance(a).total_cmp(&disturbance(b)))
                .unwrap_or_default();
            for mut cell in best {
                cell.reruns = reruns;
                cells.push(cell);
            }
        }
    }
    Ok(cells)
}

/// The most CPU other processes and the hypervisor (steal) took during either cell of a pair,
/// in cores.
fn disturbance(pair: &[Cell]) -> f64 {
    pair.iter()
        .map(|c| c.other_cores() + c.steal_cores())
        .fold(0.0, f64::max)
}

/// Measures one cell against `target` on `route`.
pub async fn measure_cell(
    args: &RunArgs,
    setup: &Setup,
    target: &Target,
    route: &Route,
    upstream_pid: u32,
    concurrency: usize,
    workload: Workload,
) -> Result<Cell> {
    let proxy_pid = route.pid;
    let path = match workload {
        Workload::Small => client::PATH,
        Workload::Bulk => client::BULK_PATH,
    };
    let target = Arc::new(target.clone());
    // Connections: one per request in flight over HTTP/1.1; a few shared ones over HTTP/2.
    let connections = match target.protocol {
        Protocol::Http1 => concurrency,
        Protocol::Http2 => args.h2_connections.clamp(1, concurrency.max(1)),
    };
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(target.connect().await?);
    }
    let mut workers = Vec::with_capacity(concurrency);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    if target.protocol == Protocol::Http1 {
        for sender in senders {
            workers.push(tokio::spawn(client::worker(
                Arc::clone(&target),
                path,
                sender,
                measure_from,
                end,
            )));
        }
    } else {
        for i in 0..concurrency {
            let sender = senders[i % connections]
                .share()
                .context("HTTP/2 senders are shared")?;
            workers.push(tokio::spawn(client::worker(
                Arc::clone(&target),
                path,
                sender,
                measure_from,
                end,
            )));
        }
        drop(senders);
    }
    tokio::time::sleep_until(measure_from).await;
    let writer = |pid: Option<u32>| pid.and_then(|pid| procfs::thread_cpu_ns(pid, "audit"));
    let writer_before = writer(proxy_pid);
    let before = CpuSample::take(proxy_pid, upstream_pid)?;
    let perf = match (&args.perf_dir, proxy_pid) {
        (Some(dir), Some(pid)) => {
            let label = format!(
                "{}-{}-x{concurrency}{}",
                route.via.name(),
                match target.protocol {
                    Protocol::Http1 => "h1",
                    Protocol::Http2 => "h2",
                },
                if workload == Workload::Bulk {
                    "-bulk"
                } else {
                    ""
                }
            );
            Some(start_perf(dir, pid, &label, args.seconds)?)
        }
        _ => None,
    };
    tokio::time::sleep_until(end).await;
    let after = CpuSample::take(proxy_pid, upstream_pid)?;
    let writer_after = writer(proxy_pid);
    let mut latencies = Vec::new();
    let mut bytes = 0;
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let result = worker.await.context("a load worker panicked")?;
        latencies.extend(result.latencies);
        bytes += result.bytes;
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    if let Some(mut perf) = perf {
        let _ = perf.wait();
    }
    latencies.sort_unstable();
    Ok(Cell {
        round: 0,
        via: route.via,
        workload,
        bytes,
        audit_writer_ns: writer_before
            .zip(writer_after)
            .map(|(b, a)| a.saturating_sub(b)),
        protocol: target.protocol,
        concurrency,
        connections,
        requests: u64::try_from(latencies.len()).unwrap_or(u64::MAX),
        errors,
        first_error,
        window: end - measure_from,
        p50_us: percentile_us(&latencies, 50),
        p99_us: percentile_us(&latencies, 99),
        cpu: CpuSpent::between(before, after, setup.ticks),
        reruns: 0,
    })
}

/// `perf record` of the proxy for the measured window.
pub fn start_perf(
    dir: &std::path::Path,
    pid: u32,
    label: &str,
    seconds: f64,
) -> Result<std::process::Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("{label}.perf.data"));
    std::process::Command::new("perf")
        .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .args(["--", "sleep"])
        .arg(format!("{seconds}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf (apt-get install linux-perf)")
}

/// The `percent` percentile of sorted nanoseconds, in µs.
#[allow(
    clippy::cast_precision_loss,
    reason = "latencies in ns are far below 2^52"
)]
pub fn percentile_us(sorted: &[u64], percent: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    sorted[index] as f64 / 1000.0
}
