//! The report: Markdown on stdout, with the machine, the date, the command, the load before and
//! after, every cell, the means, the watch memory and each goal's verdict.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cells::{Cell, Via, Workload};
use crate::client::Protocol;
use crate::procfs;
use crate::watches::Watches;
use crate::{ProtocolArg, RunArgs, Setup};
pub use infra_benches::command_output;

/// When and under what load the run ran.
#[derive(Debug)]
pub struct RunInfo {
    /// `date -u` at the start.
    pub date: String,
    /// `uptime` before the first cell.
    pub uptime_before: String,
    /// `uptime` after the last measurement.
    pub uptime_after: String,
    /// The run's duration.
    pub elapsed: Duration,
}

/// `uptime`'s line, or the load averages when it is missing.
pub fn uptime() -> String {
    let text = command_output("uptime", &[]);
    if text.is_empty() {
        format!("load average: {}", procfs::load_average())
    } else {
        text
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = command_output("uname", &["-r"]);
    format!(
        "{cpus} CPUs (nproc), {model} at {mhz} MHz, {:.1} GiB memory, Linux {kernel}",
        kib_to_gib(mem_kib)
    )
}

#[allow(
    clippy::cast_precision_loss,
    reason = "memory sizes are far below 2^52"
)]
fn kib_to_gib(kib: u64) -> f64 {
    kib as f64 / 1024.0 / 1024.0
}

/// The rounds whose proxy/direct pair for `protocol` and `concurrency` ran undisturbed (other
/// processes and steal within `limit` cores in both cells); all rounds when none did. The
/// second value says whether the rounds are the quiet ones.
pub fn quiet_rounds(
    cells: &[Cell],
    protocol: Protocol,
    concurrency: usize,
    workload: Workload,
    limit: f64,
) -> (Vec<u32>, bool) {
    let pairs: Vec<&Cell> = cells
        .iter()
        .filter(|c| {
            c.protocol == protocol && c.concurrency == concurrency && c.workload == workload
        })
        .collect();
    let mut all: Vec<u32> = pairs.iter().map(|c| c.round).collect();
    all.sort_unstable();
    all.dedup();
    let quiet: Vec<u32> = all
        .iter()
        .copied()
        .filter(|round| {
            pairs
                .iter()
                .filter(|c| c.round == *round)
                .all(|c| c.other_cores() + c.steal_cores() <= limit)
        })
        .collect();
    if quiet.is_empty() {
        (all, false)
    } else {
        (quiet, true)
    }
}

/// The mean of `f` over the cells of `rounds` matching `via`, `protocol` and `concurrency`.
#[allow(clippy::cast_precision_loss, reason = "a handful of rounds")]
pub fn mean(
    cells: &[Cell],
    rounds: &[u32],
    via: Via,
    (protocol, concurrency, workload): (Protocol, usize, Workload),
    f: impl Fn(&Cell) -> f64,
) -> f64 {
    let values: Vec<f64> = cells
        .iter()
        .filter(|c| {
            c.via == via
                && c.protocol == protocol
                && c.concurrency == concurrency
                && c.workload == workload
                && rounds.contains(&c.round)
        })
        .map(f)
        .collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// A goal's verdict, with by how much.
fn at_most(measured: f64, limit: f64, unit: &str) -> String {
    if measured.is_nan() {
        return "not measured".to_owned();
    }
    if measured <= limit {
        format!(
            "**pass** ({measured:.1} {unit}, {:.1} {unit} under)",
            limit - measured
        )
    } else {
        format!(
            "**miss** ({measured:.1} {unit}, {:.1} {unit} over: {:.2}× the goal)",
            measured - limit,
            measured / limit
        )
    }
}

/// The whole report, Markdown.
pub fn report(
    args: &RunArgs,
    setup: &Setup,
    cells: &[Cell],
    watches: Option<&Watches>,
    context: &RunInfo,
) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(out, "- **Machine:** {}", machine());
    let _ = writeln!(out, "- **Date:** {}", context.date);
    let _ = writeln!(out, "- **Command:** `{}`", command.join(" "));
    let _ = writeln!(
        out,
        "- **Proxy:** `{} {}`",
        setup.files.binary.display(),
        setup.files.args().join(" ")
    );
    let _ = writeln!(
        out,
        "- **Setup:** {} s measured after {} s warm-up per cell, {} round(s), proxy and direct alternating; client runtime {} threads, upstream runtime {} threads, infra-proxy runtime {}; HTTP/2 cells spread their streams over {} connection(s); clock ticks {} per s",
        args.seconds,
        args.warmup,
        args.rounds,
        args.client_threads,
        args.upstream_threads(),
        args.proxy_worker_threads.map_or_else(
            || "its default (one worker per CPU)".to_owned(),
            |n| format!("{n} threads (TOKIO_WORKER_THREADS)")
        ),
        args.h2_connections,
        setup.ticks
    );
    let _ = writeln!(
        out,
        "- **Requests:** `GET {}` with `Authorization: Bearer` + a {}-byte EdDSA JWT (user and 2 groups), policy granting `view`; every proxied request is authenticated (token cache), decided (decision cache), rewritten with `Impersonate-*` and forwarded; audit log off",
        crate::client::PATH,
        setup.authorization.len().saturating_sub("Bearer ".len())
    );
    let _ = writeln!(
        out,
        "- **Source:** `git describe --always --dirty` = `{}`",
        command_output("git", &["describe", "--always", "--dirty"])
    );
    let (proxy_cpus, upstream_cpus) = args.pinning();
    let _ = writeln!(
        out,
        "- **Peers and pinning:** {}; infra-proxy and each peer on CPU(s) `{}`, the upstream on `{}`, the load client unpinned (`taskset -c`)",
        if args.no_peers {
            "peers not measured (--no-peers)".to_owned()
        } else {
            crate::peers::Peer::ALL
                .map(|p| format!("{}: `{}`", p.name(), p.version()))
                .join(", ")
        },
        proxy_cpus.as_deref().unwrap_or("any"),
        upstream_cpus.as_deref().unwrap_or("any"),
    );
    let _ = writeln!(out, "- **Load before:** `{}`", context.uptime_before);
    let _ = writeln!(out, "- **Load after:** `{}`", context.uptime_after);
    let _ = writeln!(
        out,
        "- **Run time:** {:.0} s",
        context.elapsed.as_secs_f64()
    );
    let _ = writeln!(out);

    if !cells.is_empty() {
        let _ = writeln!(
            out,
            "| round | protocol | concurrent | connections | via | requests/s | p50 µs | p99 µs | proxy CPU µs/req | upstream CPU µs/req | client CPU µs/req | softirq µs/req | other processes, cores | steal, cores | ratio to direct (req/s) | errors |"
        );
        let _ = writeln!(
            out,
            "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for cell in cells {
            let direct = cells.iter().find(|d| {
                d.via == Via::Direct
                    && d.round == cell.round
                    && d.protocol == cell.protocol
                    && d.concurrency == cell.concurrency
                    && d.workload == cell.workload
            });
            let ratio = direct.map_or(f64::NAN, |d| cell.rate() / d.rate());
            let proxy_cpu = if cell.via == Via::Direct {
                "–".to_owned()
            } else {
                format!("{:.1}", cell.per_request_us(cell.cpu.proxy))
            };
            let rerun = if cell.reruns > 0 {
                format!(" (best of {})", cell.reruns + 1)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {}{rerun} | {}{} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {proxy_cpu} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
                cell.round,
                cell.protocol.name(),
                if cell.workload == Workload::Bulk {
                    " bulk"
                } else {
                    ""
                },
                cell.concurrency,
                cell.connections,
                cell.via.name(),
                cell.rate(),
                cell.p50_us,
                cell.p99_us,
                cell.per_request_us(cell.cpu.upstream),
                cell.per_request_us(cell.cpu.client),
                cell.per_request_us(cell.cpu.interrupts),
                cell.other_cores(),
                cell.steal_cores(),
                ratio,
                cell.errors,
            );
        }
        for cell in cells.iter().filter(|c| c.first_error.is_some()) {
            let _ = writeln!(
                out,
                "\nErrors in round {} {} x{} {}: first: {}",
                cell.round,
                cell.protocol.name(),
                cell.concurrency,
                cell.via.name(),
                cell.first_error.as_deref().unwrap_or_default()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Means over the rounds whose pair ran undisturbed (other processes + steal ≤ {} cores in both cells; all rounds, marked *, where none did); the goals are judged on these:\n",
            args.max_other_cores
        );
        let _ = writeln!(
            out,
            "| protocol | concurrent | rounds | proxy req/s | direct req/s | ratio | proxy p50 µs | direct p50 µs | added p50 µs | proxy p99 µs | direct p99 µs | proxy CPU µs/req |"
        );
        let _ = writeln!(
            out,
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
    }
    let mut goals = Vec::new();
    for protocol in args.protocols.iter().map(|p| match p {
        ProtocolArg::H1 => Protocol::Http1,
        ProtocolArg::H2 => Protocol::Http2,
    }) {
        for &concurrency in &args.concurrency {
            if cells.is_empty() {
                break;
            }
            let (rounds, quiet) = quiet_rounds(
                cells,
                protocol,
                concurrency,
                Workload::Small,
                args.max_other_cores,
            );
            let rounds_text = format!(
                "{}{}",
                rounds
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if quiet { "" } else { " *" }
            );
            let m = |via, f: &dyn Fn(&Cell) -> f64| {
                mean(
                    cells,
                    &rounds,
                    via,
                    (protocol, concurrency, Workload::Small),
                    f,
                )
            };
            let proxy_rate = m(Via::Proxy, &Cell::rate);
            let direct_rate = m(Via::Direct, &Cell::rate);
            let proxy_p50 = m(Via::Proxy, &|c| c.p50_us);
            let direct_p50 = m(Via::Direct, &|c| c.p50_us);
            let proxy_cpu = m(Via::Proxy, &|c| c.per_request_us(c.cpu.proxy));
            let _ = writeln!(
                out,
                "| {} | {concurrency} | {rounds_text} | {proxy_rate:.0} | {direct_rate:.0} | {:.2} | {proxy_p50:.1} | {direct_p50:.1} | {:.1} | {:.1} | {:.1} | {proxy_cpu:.1} |",
                protocol.name(),
                proxy_rate / direct_rate,
                proxy_p50 - direct_p50,
                m(Via::Proxy, &|c| c.p99_us),
                m(Via::Direct, &|c| c.p99_us),
            );
            let audited_cpu = m(Via::ProxyAudit, &|c| c.per_request_us(c.cpu.proxy));
            if !audited_cpu.is_nan() {
                #[allow(clippy::cast_precision_loss, reason = "ns of a cell are below 2^52")]
                let writer = m(Via::ProxyAudit, &|c| {
                    c.audit_writer_ns
                        .map_or(f64::NAN, |ns| c.per_request_us(ns as f64 / 1e9))
                });
                goals.push(format!(
                    "Audit on (to a file) costs ≤ 3 µs of proxy CPU per request over audit off at {concurrency} concurrent, {}: {:.1} vs {proxy_cpu:.1} µs, {} (of which the audit writer thread: {writer:.2} µs per request, from its schedstat)",
                    protocol.name(),
                    audited_cpu,
                    at_most(audited_cpu - proxy_cpu, 3.0, "µs")
                ));
            }
        }
    }
    if !cells.is_empty() {
        crate::report_peers::section(args, cells, &mut out, &mut goals);
    }
    if let Some(w) = watches {
        let (p, d) = (&w.proxy, &w.direct);
        #[allow(clippy::cast_precision_loss, reason = "counts below 2^52")]
        let cpu_per_watch =
            |m: &crate::watches::WatchMemory| m.cpu_seconds * 1e6 / m.opened.max(1) as f64;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Idle watches (`GET {}?watch=true`, HTTP/1.1, one client connection each, opened 64 at a time; the upstream sends the head and then nothing), through a fresh infra-proxy and, as the baseline, straight to a fresh upstream (the same tokio-rustls + hyper HTTP/1.1 server stack):\n",
            crate::client::PATH
        );
        let _ = writeln!(out, "| | infra-proxy | direct to the upstream |");
        let _ = writeln!(out, "| --- | ---: | ---: |");
        let _ = writeln!(
            out,
            "| watches open / failed | {} / {} | {} / {} |",
            p.opened, p.failed, d.opened, d.failed
        );
        let _ = writeln!(
            out,
            "| time to open them | {:.1} s | {:.1} s |",
            p.open_seconds, d.open_seconds
        );
        let _ = writeln!(
            out,
            "| server CPU per watch opened (TLS handshake, and for the proxy token, decision, upstream stream) | {:.0} µs | {:.0} µs |",
            cpu_per_watch(p),
            cpu_per_watch(d)
        );
        let _ = writeln!(
            out,
            "| RSS before (warmed) | {} KiB | {} KiB |",
            p.rss_before_kib, d.rss_before_kib
        );
        let _ = writeln!(
            out,
            "| RSS with the connections open and idle (TLS + HTTP/1.1 handshake, no request) | {} KiB | {} KiB |",
            p.rss_connected_kib, d.rss_connected_kib
        );
        let _ = writeln!(
            out,
            "| RSS with a watch on each connection (2 s later) | {} KiB | {} KiB |",
            p.rss_open_kib, d.rss_open_kib
        );
        let _ = writeln!(
            out,
            "| RSS 2 s after the client closed them all | {} KiB | {} KiB |",
            p.rss_closed_kib, d.rss_closed_kib
        );
        let _ = writeln!(
            out,
            "| **per idle connection** | {:.1} KiB | {:.1} KiB |",
            p.kib_per_connection(),
            d.kib_per_connection()
        );
        let _ = writeln!(
            out,
            "| **per idle watch (connection included)** | **{:.1} KiB** | {:.1} KiB |",
            p.kib_per_watch(),
            d.kib_per_watch()
        );
        for (name, m) in [("proxy", p), ("direct", d)] {
            if let Some(error) = &m.first_error {
                let _ = writeln!(out, "\nFirst watch error ({name}): {error}");
            }
        }
        if let Some((before, during)) = &p.short_gets {
            let _ = writeln!(
                out,
                "\nShort GETs through the same proxy (HTTP/1.1, 64 concurrent, {} s): before the watches were opened {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, proxy CPU {:.1} µs/req; with the {} watches open {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, proxy CPU {:.1} µs/req",
                args.seconds,
                before.rate(),
                before.p50_us,
                before.p99_us,
                before.per_request_us(before.cpu.proxy),
                p.opened,
                during.rate(),
                during.p50_us,
                during.p99_us,
                during.per_request_us(during.cpu.proxy),
            );
            let ratio = during.p99_us / before.p99_us;
            goals.push(format!(
                "Short-GET p99 with {} idle watches open within +10 % of none: {:.1} against {:.1} µs, {:+.1} %: {}",
                p.opened,
                during.p99_us,
                before.p99_us,
                (ratio - 1.0) * 100.0,
                if ratio <= 1.1 { "**pass**" } else { "**miss**" }
            ));
        }
        goals.push(format!(
            "Proxy memory ≤ 0.8× the bare hyper stack per idle watch: {:.1} KiB against {:.1} KiB, {:.2}×: {}",
            p.kib_per_watch(),
            d.kib_per_watch(),
            p.kib_per_watch() / d.kib_per_watch(),
            if p.kib_per_watch() <= 0.8 * d.kib_per_watch() {
                "**pass**"
            } else {
                "**miss**"
            }
        ));
    }
    let _ = writeln!(out, "\nGoals:\n");
    for goal in goals {
        let _ = writeln!(out, "- {goal}");
    }
    out
}
