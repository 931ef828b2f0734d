//! The report's comparison with the peers (nginx, HAProxy) of the same run: CPU per request at
//! the highest concurrency, the added p50 at the lowest, and the bulk list; each with the goal
//! of issue 16 it answers.

use std::fmt::Write as _;

use crate::RunArgs;
use crate::cells::{Cell, Via, Workload};
use crate::client::Protocol;
use crate::peers::Peer;
use crate::report::{mean, quiet_rounds};

/// The routes measured in this run, in the order of the tables (direct left out).
fn routes(cells: &[Cell]) -> Vec<Via> {
    let mut vias = vec![Via::Proxy, Via::ProxyAudit];
    vias.extend(Peer::ALL.map(Via::Peer));
    vias.retain(|via| cells.iter().any(|c| c.via == *via));
    vias
}

fn protocols(cells: &[Cell]) -> Vec<Protocol> {
    [Protocol::Http1, Protocol::Http2]
        .into_iter()
        .filter(|p| cells.iter().any(|c| c.protocol == *p))
        .collect()
}

/// Means over the quiet rounds of one kind of cell.
struct Means<'a> {
    cells: &'a [Cell],
    rounds: Vec<u32>,
    kind: (Protocol, usize, Workload),
}

impl<'a> Means<'a> {
    /// The means, and the rounds they are over as text (`*` when none was quiet).
    fn new(args: &RunArgs, cells: &'a [Cell], kind: (Protocol, usize, Workload)) -> (Self, String) {
        let (rounds, quiet) = quiet_rounds(cells, kind.0, kind.1, kind.2, args.max_other_cores);
        let text = format!(
            "{}{}",
            rounds
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if quiet { "" } else { " *" }
        );
        (
            Self {
                cells,
                rounds,
                kind,
            },
            text,
        )
    }

    fn of(&self, via: Via, f: &dyn Fn(&Cell) -> f64) -> f64 {
        mean(self.cells, &self.rounds, via, self.kind, f)
    }
}

#[allow(clippy::cast_precision_loss, reason = "byte counts are below 2^52")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// Writes the peer tables into `out` and their goals into `goals`.
pub fn section(args: &RunArgs, cells: &[Cell], out: &mut String, goals: &mut Vec<String>) {
    let vias = routes(cells);
    if !vias.iter().any(|v| matches!(v, Via::Peer(_))) {
        return;
    }
    let top = args.concurrency.iter().copied().max().unwrap_or(64);
    let low = args.concurrency.iter().copied().min().unwrap_or(1);
    let names: Vec<&str> = vias.iter().map(|v| v.name()).collect();

    let _ = writeln!(
        out,
        "\nPeers, same run: CPU per request (µs) of the process in the path at {top} concurrent, means of the quiet rounds; the upstream's CPU per request in brackets (nginx speaks HTTP/1.1 to it, the others HTTP/2); the last columns are each peer's CPU per request over infra-proxy's:\n"
    );
    let header: Vec<String> = names.iter().map(|n| format!("{n} µs/req")).collect();
    let ratios: Vec<String> = vias
        .iter()
        .filter_map(|v| match v {
            Via::Peer(p) => Some(format!("{} / infra-proxy", p.name())),
            _ => None,
        })
        .collect();
    let _ = writeln!(
        out,
        "| protocol | rounds | {} | {} |",
        header.join(" | "),
        ratios.join(" | ")
    );
    let _ = writeln!(
        out,
        "| --- | --- |{}",
        " ---: |".repeat(header.len() + ratios.len())
    );
    for protocol in protocols(cells) {
        let (means, rounds) = Means::new(args, cells, (protocol, top, Workload::Small));
        let m = |via, f: &dyn Fn(&Cell) -> f64| means.of(via, f);
        let cpu = |via| m(via, &|c| c.per_request_us(c.cpu.proxy));
        let infra = cpu(Via::Proxy);
        let row: Vec<String> = vias
            .iter()
            .map(|&v| {
                format!(
                    "{:.1} ({:.1})",
                    cpu(v),
                    m(v, &|c| c.per_request_us(c.cpu.upstream))
                )
            })
            .collect();
        let mut ratio_cells = Vec::new();
        for peer in Peer::ALL {
            let peer_cpu = cpu(Via::Peer(peer));
            if peer_cpu.is_nan() {
                continue;
            }
            ratio_cells.push(format!("{:.2}", peer_cpu / infra));
            if peer == Peer::Nginx {
                let ratio = infra / peer_cpu;
                goals.push(format!(
                    "Proxy CPU per request (token, decision, impersonation; audit off) ≤ 0.85× nginx's at {top} concurrent, {}: {infra:.1} against {peer_cpu:.1} µs, {ratio:.2}×: {}",
                    protocol.name(),
                    if ratio <= 0.85 { "**pass**" } else { "**miss**" }
                ));
                let audited = cpu(Via::ProxyAudit);
                if !audited.is_nan() {
                    let ratio = audited / peer_cpu;
                    goals.push(format!(
                        "The same with the audit log on (to a file), {}: {audited:.1} against {peer_cpu:.1} µs, {ratio:.2}×: {}",
                        protocol.name(),
                        if ratio <= 0.85 { "**pass**" } else { "**miss**" }
                    ));
                }
            }
        }
        let _ = writeln!(
            out,
            "| {} | {rounds} | {} | {} |",
            protocol.name(),
            row.join(" | "),
            ratio_cells.join(" | ")
        );
    }

    let _ = writeln!(
        out,
        "\nPeers, same run: p50 latency at {low} concurrent (µs; added = p50 through it − p50 direct), means of the quiet rounds:\n"
    );
    let _ = writeln!(
        out,
        "| protocol | rounds | direct p50 | {} |",
        names
            .iter()
            .map(|n| format!("{n} p50 (added)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "| --- | --- | ---: |{}", " ---: |".repeat(names.len()));
    for protocol in protocols(cells) {
        let (means, rounds) = Means::new(args, cells, (protocol, low, Workload::Small));
        let m = |via, f: &dyn Fn(&Cell) -> f64| means.of(via, f);
        let direct = m(Via::Direct, &|c| c.p50_us);
        let added = |via| m(via, &|c| c.p50_us) - direct;
        let row: Vec<String> = vias
            .iter()
            .map(|&v| format!("{:.1} ({:+.1})", m(v, &|c| c.p50_us), added(v)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {rounds} | {direct:.1} | {} |",
            protocol.name(),
            row.join(" | ")
        );
        let nginx = added(Via::Peer(Peer::Nginx));
        if !nginx.is_nan() {
            let infra = added(Via::Proxy);
            goals.push(format!(
                "Added p50 at {low} connection ≤ nginx's, {}: {infra:+.1} against {nginx:+.1} µs: {}",
                protocol.name(),
                if infra <= nginx {
                    "**pass**"
                } else {
                    "**miss**"
                }
            ));
        }
    }

    if !cells.iter().any(|c| c.workload == Workload::Bulk) {
        return;
    }
    let _ = writeln!(
        out,
        "\nBulk, same run: `GET {}` ({} MiB list), one at a time; MiB/s, the ratio to direct, and CPU per MiB (µs) of the process in the path and of the upstream:\n",
        crate::client::BULK_PATH,
        args.bulk_mib
    );
    let _ = writeln!(
        out,
        "| protocol | via | rounds | MiB/s | ratio to direct | CPU µs/MiB | upstream CPU µs/MiB |"
    );
    let _ = writeln!(out, "| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for protocol in protocols(cells) {
        let (means, rounds) = Means::new(args, cells, (protocol, 1, Workload::Bulk));
        let m = |via, f: &dyn Fn(&Cell) -> f64| means.of(via, f);
        let rate = |via| m(via, &|c| mib(c.bytes) / c.window.as_secs_f64());
        let per_mib = |via, f: fn(&Cell) -> f64| m(via, &|c| f(c) * 1e6 / mib(c.bytes));
        let direct = rate(Via::Direct);
        let direct_upstream = per_mib(Via::Direct, |c| c.cpu.upstream);
        for &via in vias.iter().chain([Via::Direct].iter()) {
            let r = rate(via);
            let up = per_mib(via, |c| c.cpu.upstream);
            let own = if via == Via::Direct {
                "–".to_owned()
            } else {
                format!("{:.0}", per_mib(via, |c| c.cpu.proxy))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {rounds} | {r:.0} | {:.2} | {own} | {up:.0} |",
                protocol.name(),
                via.name(),
                r / direct
            );
            if via == Via::Proxy {
                goals.push(format!(
                    "Bulk list through infra-proxy ≥ 0.95× direct, {}: {:.2}×: {}; upstream CPU per MiB no worse than direct: {up:.0} against {direct_upstream:.0} µs/MiB: {}",
                    protocol.name(),
                    r / direct,
                    if r / direct >= 0.95 { "**pass**" } else { "**miss**" },
                    if up <= direct_upstream { "**pass**" } else { "**miss**" }
                ));
            }
        }
    }
}
