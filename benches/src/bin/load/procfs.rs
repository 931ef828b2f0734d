//! What `/proc` says about a process and the machine: CPU ticks, resident memory, load, limits.
//! Read as text, without libc.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 on Linux as built).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// User plus system CPU ticks of process `pid`, all its threads.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may hold spaces: count fields after its end.
    let after = text
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("{path} has no command name"))?
        .1;
    // After the name come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("{path}: field {} is missing", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// CPU time, in ns, of the thread of process `pid` named `name` (`/proc/PID/task/*/comm`),
/// from its `schedstat` (nanosecond resolution, unlike the clock ticks of `stat`).
pub fn thread_cpu_ns(pid: u32, name: &str) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow!("{path} has no VmRSS line"))
}

/// The machine's CPU ticks, all CPUs, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    /// Processes: user, nice and system time.
    pub processes: u64,
    /// Interrupts and softirqs: with loopback TCP, mostly the receiving side of every
    /// packet, which the kernel charges to no process.
    pub interrupts: u64,
    /// Stolen by the hypervisor for other guests.
    pub steal: u64,
}

/// The machine's CPU ticks now.
pub fn machine_ticks() -> Result<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Ok(MachineTicks {
        processes: get(0) + get(1) + get(2),
        interrupts: get(5) + get(6),
        steal: get(7),
    })
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// The soft limit on open files of this process (inherited by the processes it starts).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// A sample of CPU counters for the processes of a run and the machine.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// The proxy's ticks (0 when no proxy is in the path).
    pub proxy: u64,
    /// The upstream's ticks.
    pub upstream: u64,
    /// This process's (the load client's) ticks.
    pub client: u64,
    /// The machine's.
    pub machine: MachineTicks,
}

impl CpuSample {
    /// Samples now.
    pub fn take(proxy: Option<u32>, upstream: u32) -> Result<Self> {
        Ok(Self {
            proxy: proxy.map(cpu_ticks).transpose()?.unwrap_or(0),
            upstream: cpu_ticks(upstream)?,
            client: cpu_ticks(std::process::id())?,
            machine: machine_ticks()?,
        })
    }
}

/// CPU spent between two samples, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSpent {
    /// By the proxy.
    pub proxy: f64,
    /// By the upstream.
    pub upstream: f64,
    /// By the load client.
    pub client: f64,
    /// By other processes (other builds and tests, the kernel's own threads).
    pub other: f64,
    /// In interrupts and softirqs (charged to no process; with loopback TCP mostly the
    /// receiving side of the run's own packets).
    pub interrupts: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl CpuSpent {
    /// The CPU spent from `before` to `after`.
    #[allow(
        clippy::cast_precision_loss,
        reason = "tick counts of a run are far below 2^52"
    )]
    pub fn between(before: CpuSample, after: CpuSample, ticks_per_second: u64) -> Self {
        let secs = |b: u64, a: u64| a.saturating_sub(b) as f64 / ticks_per_second as f64;
        let proxy = secs(before.proxy, after.proxy);
        let upstream = secs(before.upstream, after.upstream);
        let client = secs(before.client, after.client);
        let processes = secs(before.machine.processes, after.machine.processes);
        Self {
            proxy,
            upstream,
            client,
            other: (processes - proxy - upstream - client).max(0.0),
            interrupts: secs(before.machine.interrupts, after.machine.interrupts),
            steal: secs(before.machine.steal, after.machine.steal),
        }
    }

    /// Cores' worth of CPU used by other processes over `window`.
    pub fn other_cores(&self, window: Duration) -> f64 {
        self.other / window.as_secs_f64()
    }
}
