//! The benchmark's Markdown report: nearest-rank statistics per kind of change and per kind of
//! proxy, and the verdicts against the issues' goals.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use super::{Kind, Sample};

/// What one store's run was.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) store: &'a str,
    pub(crate) rounds: u32,
    pub(crate) warmup: u32,
    pub(crate) poll_ms: u64,
    pub(crate) proxies: &'a [&'a str],
    pub(crate) date: &'a str,
    pub(crate) before: &'a str,
    pub(crate) after: &'a str,
    pub(crate) elapsed: Duration,
}

/// Nearest-rank statistics of a set of durations.
#[derive(Debug)]
struct Stats {
    count: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut values: Vec<Duration>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |p: usize| values[(values.len() * p).div_ceil(100).max(1) - 1];
        Some(Self {
            count: values.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: values[values.len() - 1],
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(out: &mut String, kind: &str, what: &str, values: Vec<Duration>) -> Result<Option<Stats>> {
    let Some(s) = Stats::of(values) else {
        return Ok(None);
    };
    writeln!(
        out,
        "| {kind} | {what} | {} | {} | {} | {} | {} |",
        s.count,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    )?;
    Ok(Some(s))
}

pub(crate) fn write_table(out: &mut String, run: &Run<'_>, samples: &[Sample]) -> Result<()> {
    writeln!(out, "### {}\n", run.store)?;
    writeln!(
        out,
        "- Date: {} ({} measured rounds after {} warm-up rounds, {:.1} s)",
        run.date,
        run.rounds,
        run.warmup,
        run.elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "- Proxies: `{}` (in the control plane's process), {} (proxy-only, synced over `/api/sync`)",
        run.proxies[0],
        run.proxies[1..]
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    )?;
    writeln!(
        out,
        "- Poll: one request at a time per proxy, {} ms sleep between answers",
        run.poll_ms
    )?;
    writeln!(out, "- Load before: {}", run.before)?;
    writeln!(out, "- Load after: {}\n", run.after)?;
    writeln!(
        out,
        "| Revoked | Measured | Samples | p50 | p90 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|"
    )?;
    let mut overall = None;
    let groups: Vec<(&str, Vec<&Sample>)> = Kind::REVOCATIONS
        .iter()
        .map(|k| (k.name(), samples.iter().filter(|s| s.kind == *k).collect()))
        .chain(std::iter::once(("**all kinds**", samples.iter().collect())))
        .collect();
    for (name, group) in &groups {
        let all = row(
            out,
            name,
            "refused, all 3 proxies",
            group.iter().map(|s| s.latency).collect(),
        )?;
        row(
            out,
            name,
            "refused, in-process proxy",
            group
                .iter()
                .filter(|s| s.proxy == 0)
                .map(|s| s.latency)
                .collect(),
        )?;
        row(
            out,
            name,
            "refused, 2 synced proxies",
            group
                .iter()
                .filter(|s| s.proxy > 0)
                .map(|s| s.latency)
                .collect(),
        )?;
        row(
            out,
            name,
            "refused after the API answered, all 3",
            group
                .iter()
                .map(|s| s.latency.saturating_sub(s.call))
                .collect(),
        )?;
        // One call per membership or session revocation (shared by the 3 proxies); one per
        // proxy for grants.
        let calls: Vec<Duration> = group
            .iter()
            .filter(|s| s.kind == Kind::Grant || s.proxy == 0)
            .map(|s| s.call)
            .collect();
        row(out, name, "the API call itself", calls)?;
        if name.starts_with("**") {
            overall = all;
        }
    }
    if let Some(s) = overall {
        let verdict = if s.p99 <= Duration::from_secs(1) {
            "pass"
        } else {
            "**miss**"
        };
        writeln!(
            out,
            "\nGoal (issue 6): refused on every proxy within 1 s at p99: p99 {} over {} samples: {verdict}.\n",
            ms(s.p99),
            s.count
        )?;
    }
    let approvals: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind == Kind::Approval)
        .collect();
    writeln!(
        out,
        "| Approved | Measured | Samples | p50 | p90 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|"
    )?;
    let name = Kind::Approval.name();
    let all = row(
        out,
        name,
        "allowed, all 3 proxies",
        approvals.iter().map(|s| s.latency).collect(),
    )?;
    row(
        out,
        name,
        "allowed, in-process proxy",
        approvals
            .iter()
            .filter(|s| s.proxy == 0)
            .map(|s| s.latency)
            .collect(),
    )?;
    row(
        out,
        name,
        "allowed, 2 synced proxies",
        approvals
            .iter()
            .filter(|s| s.proxy > 0)
            .map(|s| s.latency)
            .collect(),
    )?;
    row(
        out,
        name,
        "the approve call itself",
        approvals.iter().map(|s| s.call).collect(),
    )?;
    if let Some(s) = all {
        let verdict = if s.p99 <= Duration::from_millis(100) {
            "pass"
        } else {
            "**miss**"
        };
        writeln!(
            out,
            "\nGoal (issue 14): kubectl allowed on every proxy within 100 ms of the approve call at p99: p99 {} over {} samples: {verdict}.\n",
            ms(s.p99),
            s.count
        )?;
    }
    Ok(())
}
