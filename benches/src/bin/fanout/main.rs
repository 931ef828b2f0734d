//! `fanout`: what one small change costs the control plane when many proxies follow it (issue
//! 16, goal 6: "the control plane's cost follows the change, not the size of the installation").
//!
//! Two processes: this one (the simulated proxies and the administrator) and a child it starts
//! (`fanout serve`), which holds only the control plane — an SQLite store, `ControlPlane` and the
//! control API's router served over plain HTTP on loopback — so that the child's CPU time
//! (`/proc/<pid>/stat`, user + system) is the control plane's alone.
//!
//! ```text
//!   this process ── K × GET /api/sync/dest ──▶ child: control API ── SQLite
//!        └──────── PUT member / POST grant / POST logout / POST login ──▶
//! ```
//!
//! The child fills its store once per state folder (kept for the next run with the same sizes):
//! N users `u<i>` in 100 groups `g0`…`g99` (each user in two), M live sessions (access keys of
//! the users), group grants of `g0`…`g4` on the destination `dest` and of the other groups on
//! other destinations, and 100 user grants on `dest`. So about 7 % of the users are members of a
//! group that has a grant on `dest`.
//!
//! Each change is made alone, through the control API, and the run waits until every stream has
//! received a line that names what changed (the new member, the new grant's namespace, the ended
//! session's id, the new session's id) before the next:
//!
//! - **member**: `PUT /api/groups/g0/members/<new user>`;
//! - **grant**: `POST /api/grants`, `view` of `u1` on `dest.<new namespace>`;
//! - **logout**: `POST /api/logout` with one of the sessions made for it;
//! - **login**: `POST /api/login` with a password (hashed with cheap Argon2 parameters here, so
//!   that the hashing does not hide the fan-out). A control plane that does not tell proxies of
//!   logins sends nothing: the row says how many logins reached the streams within the wait.
//!
//! A sample is the time from the start of the API call until the last stream has the line.
//! Bytes are everything the streams received during the change, divided by the streams. CPU is
//! the child's CPU time over all changes of one kind divided by their number (the clock tick is
//! 10 ms; averaged over the changes). Then **sustained**: membership additions at a fixed rate
//! for some seconds, each timed the same way; the streams keep up when every change reaches
//! every stream and the last ones arrive as fast as the first.
//!
//! Run it with `benches/run-fanout.sh`; results in `benches/README.md`.

// Counts and byte totals become `f64` only for the report, far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

mod serve;
mod streams;

use serve::serve;
use streams::{ChildGuard, Run, Shared, follow};

const DESTINATION: &str = "dest";
const GROUPS: usize = 100;
const LOGIN_USER: &str = "bench-in";
const LOGOUT_USER: &str = "bench-out";
const PASSWORD: &str = "a-long-enough-passphrase";

/// Control-plane fan-out: K simulated proxy streams on `GET /api/sync/dest`, one change at a
/// time. Markdown on stdout, progress on stderr.
#[derive(Debug, Parser)]
#[command(name = "fanout")]
struct Cli {
    #[command(subcommand)]
    serve: Option<Serve>,
    /// Users in the store.
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    /// Live sessions in the store.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Simulated proxy streams.
    #[arg(long, default_value_t = 300)]
    streams: usize,
    /// Changes of each kind (member, grant, logout).
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Logins.
    #[arg(long, default_value_t = 5)]
    logins: usize,
    /// How long to wait for a login to reach the streams, in seconds.
    #[arg(long, default_value_t = 2.0)]
    login_wait: f64,
    /// How long to wait for any other change to reach every stream, in seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Membership additions a second in the sustained phase (0: skip it).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long the sustained phase lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    sustain: u64,
    /// Where the child keeps its store (filled once per set of sizes, reused after).
    #[arg(long, default_value = "/tmp/infra-fanout")]
    state_dir: PathBuf,
    /// A label for the table (for example the commit).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Subcommand)]
enum Serve {
    /// The control plane (started by the benchmark itself).
    Serve {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        users: usize,
        #[arg(long)]
        sessions: usize,
        /// Sessions to make for the logouts.
        #[arg(long)]
        logouts: usize,
        /// Where to write the address and keys when ready.
        #[arg(long)]
        ready: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("a runtime")?;
    match cli.serve {
        Some(Serve::Serve {
            state_dir,
            users,
            sessions,
            logouts,
            ready,
        }) => runtime.block_on(serve(&state_dir, users, sessions, logouts, &ready)),
        None => runtime.block_on(run(&cli)),
    }
}

/// The samples of one kind of change.
#[derive(Debug, Default)]
struct Samples {
    kind: &'static str,
    latencies: Vec<Duration>,
    missed: usize,
    bytes: u64,
    cpu: f64,
    count: usize,
}

impl Samples {
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        Some(sorted[index])
    }
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn human_bytes(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{:.2} MB", bytes / 1e6)
    } else if bytes >= 1e3 {
        format!("{:.1} KB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let run_id = std::process::id();
    std::fs::create_dir_all(&cli.state_dir)?;
    let ready = cli.state_dir.join(format!("ready-{run_id}.json"));
    let _ = std::fs::remove_file(&ready);
    let logouts = cli.changes;
    let mut child = ChildGuard(
        std::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--state-dir")
            .arg(&cli.state_dir)
            .arg("--users")
            .arg(cli.users.to_string())
            .arg("--sessions")
            .arg(cli.sessions.to_string())
            .arg("--logouts")
            .arg(logouts.to_string())
            .arg("--ready")
            .arg(&ready)
            .spawn()
            .context("starting the control plane")?,
    );
    let pid = child.0.id();
    let started = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.0.try_wait()? {
            bail!("the control plane exited: {status}");
        }
        ensure!(
            started.elapsed() < Duration::from_mins(30),
            "the control plane did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_json: Value = serde_json::from_slice(&std::fs::read(&ready)?)?;
    let _ = std::fs::remove_file(&ready);
    let url = ready_json["url"].as_str().context("url")?.to_owned();
    let admin = ready_json["admin"].as_str().context("admin")?.to_owned();
    let mut logout_keys: Vec<String> = ready_json["logouts"]
        .as_array()
        .context("logouts")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let tick = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(64)
        .build()?;
    let shared = Arc::new(Shared::default());
    let run = Run {
        http: http.clone(),
        url: url.clone(),
        admin: admin.clone(),
        shared: Arc::clone(&shared),
        streams: cli.streams,
        next_id: AtomicU64::new(0),
        child: pid,
        tick,
    };
    eprintln!(
        "control plane up (pid {pid}) after {:.1?}; opening {} streams",
        started.elapsed(),
        cli.streams
    );
    let cpu_start = run.cpu();
    let opened = Instant::now();
    // The query names the protocol; a control plane of the first protocol ignores it.
    let sync_url = format!("{url}/api/sync/{DESTINATION}?protocol=2");
    for _ in 0..cli.streams {
        tokio::spawn(follow(
            http.clone(),
            sync_url.clone(),
            admin.clone(),
            Arc::clone(&shared),
        ));
    }
    while shared.connected.load(Ordering::Acquire) < cli.streams {
        ensure!(
            opened.elapsed() < Duration::from_mins(10),
            "only {} of {} streams got their first line",
            shared.connected.load(Ordering::Acquire),
            cli.streams
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = opened.elapsed();
    let connect_bytes = shared.bytes.load(Ordering::Acquire);
    let connect_cpu = run.cpu() - cpu_start;
    eprintln!(
        "{} streams current after {:.2?}: first message {} per stream, control-plane CPU {:.2} s",
        cli.streams,
        connect_time,
        human_bytes(connect_bytes as f64 / cli.streams as f64),
        connect_cpu
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let timeout = Duration::from_secs_f64(cli.timeout);
    let mut results = Vec::new();
    for kind in ["member", "grant", "logout", "login"] {
        let count = if kind == "login" {
            cli.logins
        } else {
            cli.changes
        };
        let mut samples = Samples {
            kind,
            count,
            ..Samples::default()
        };
        let cpu_before = run.cpu();
        let bytes_before = shared.bytes.load(Ordering::Acquire);
        for i in 0..count {
            let start = Instant::now();
            let name = format!("n{run_id}x{i}");
            let marker = match kind {
                "member" => {
                    let marker = run.marker(&format!("\"{name}\""), start);
                    run.call(
                        reqwest::Method::PUT,
                        &format!("/api/groups/g0/members/{name}"),
                        &admin,
                        None,
                    )
                    .await?;
                    marker
                }
                "grant" => {
                    let marker = run.marker(&format!("{DESTINATION}.{name}"), start);
                    run.call(
                        reqwest::Method::POST,
                        "/api/grants",
                        &admin,
                        Some(json!({"user": "u1", "role": "view", "resource": format!("{DESTINATION}.{name}")})),
                    )
                    .await?;
                    marker
                }
                "logout" => {
                    let key = logout_keys.pop().context("out of logout sessions")?;
                    let id = key.split('.').next().unwrap_or_default().to_owned();
                    let marker = run.marker(&format!("\"{id}\""), start);
                    run.call(reqwest::Method::POST, "/api/logout", &key, None)
                        .await?;
                    marker
                }
                _ => {
                    let login = infra_api::LoginRequest::Password {
                        name: LOGIN_USER.to_owned(),
                        password: PASSWORD.to_owned(),
                    };
                    // The new session's id is known only from the answer: the marker starts at
                    // the call, and is looked for from the answer on.
                    let answer = run
                        .call(
                            reqwest::Method::POST,
                            "/api/login",
                            "",
                            Some(serde_json::to_value(&login)?),
                        )
                        .await?;
                    let key = answer["access_key"].as_str().unwrap_or_default();
                    let id = key.split('.').next().unwrap_or_default().to_owned();
                    run.marker(&format!("\"{id}\""), start)
                }
            };
            let wait = if kind == "login" {
                Duration::from_secs_f64(cli.login_wait)
            } else {
                timeout
            };
            match run.wait(&marker, wait).await {
                Some(latency) => samples.latencies.push(latency),
                None => samples.missed += 1,
            }
        }
        // Whatever is still on its way for these changes counts for them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        samples.bytes = shared.bytes.load(Ordering::Acquire) - bytes_before;
        samples.cpu = run.cpu() - cpu_before;
        eprintln!(
            "{kind}: {} of {count} reached every stream; p50 {} s, max {} s; {:.3} s CPU a change",
            samples.latencies.len(),
            seconds(samples.percentile(0.5)),
            seconds(samples.percentile(1.0)),
            samples.cpu / count.max(1) as f64
        );
        results.push(samples);
    }

    // Sustained: membership additions at a fixed rate.
    let mut sustained = None;
    if cli.rate > 0 && cli.sustain > 0 {
        let total = usize::try_from(u64::from(cli.rate) * cli.sustain).unwrap_or(usize::MAX);
        let every = Duration::from_secs_f64(1.0 / f64::from(cli.rate));
        let cpu_before = run.cpu();
        let bytes_before = shared.bytes.load(Ordering::Acquire);
        let begun = Instant::now();
        let run = Arc::new(run);
        let mut tasks = Vec::with_capacity(total);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..total {
            tick.tick().await;
            let run = Arc::clone(&run);
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let name = format!("s{run_id}x{i}");
                let marker = run.marker(&format!("\"{name}\""), start);
                let called = run
                    .call(
                        reqwest::Method::PUT,
                        &format!("/api/groups/g1/members/{name}"),
                        &run.admin,
                        None,
                    )
                    .await;
                let latency = run.wait(&marker, timeout).await;
                (called.is_ok(), latency)
            }));
        }
        let issued_in = begun.elapsed();
        let mut samples = Samples {
            kind: "sustained member",
            count: total,
            ..Samples::default()
        };
        let mut failed = 0;
        let mut first_half = Vec::new();
        let mut second_half = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let (ok, latency) = task.await?;
            if !ok {
                failed += 1;
            }
            match latency {
                Some(latency) => {
                    samples.latencies.push(latency);
                    if i < total / 2 {
                        first_half.push(latency);
                    } else {
                        second_half.push(latency);
                    }
                }
                None => samples.missed += 1,
            }
        }
        let all_done = begun.elapsed();
        samples.bytes = shared.bytes.load(Ordering::Acquire) - bytes_before;
        samples.cpu = Arc::clone(&run).cpu() - cpu_before;
        let mean = |v: &[Duration]| {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
        };
        eprintln!(
            "sustained: {total} changes issued in {issued_in:.2?} ({:.0}/s), all current after {all_done:.2?}; {failed} calls failed; mean latency first half {:.3} s, second half {:.3} s",
            total as f64 / issued_in.as_secs_f64(),
            mean(&first_half),
            mean(&second_half),
        );
        sustained = Some((
            samples,
            total as f64 / issued_in.as_secs_f64(),
            all_done,
            failed,
            mean(&first_half),
            mean(&second_half),
        ));
    }

    shared.finished.store(true, Ordering::Release);
    drop(child);

    let mut out = String::new();
    writeln!(
        out,
        "fanout {}: {} users, {} live sessions, {} streams on `{DESTINATION}`",
        cli.label, cli.users, cli.sessions, cli.streams
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "first message: {} per stream, all {} streams current after {:.2} s, control-plane CPU {:.2} s",
        human_bytes(connect_bytes as f64 / cli.streams as f64),
        cli.streams,
        connect_time.as_secs_f64(),
        connect_cpu
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| change | n | reached all streams | all streams current, p50 / p99 / max (s) | bytes per stream per change | control-plane CPU per change |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
    let row = |out: &mut String, s: &Samples| -> Result<()> {
        let per_change = s.count.max(1) as f64;
        writeln!(
            out,
            "| {} | {} | {} | {} / {} / {} | {} | {:.1} ms |",
            s.kind,
            s.count,
            s.latencies.len(),
            seconds(s.percentile(0.5)),
            seconds(s.percentile(0.99)),
            seconds(s.percentile(1.0)),
            human_bytes(s.bytes as f64 / cli.streams as f64 / per_change),
            s.cpu / per_change * 1000.0
        )?;
        Ok(())
    };
    for samples in &results {
        row(&mut out, samples)?;
    }
    if let Some((samples, rate, _, _, _, _)) = &sustained {
        let mut samples = Samples {
            kind: "sustained member",
            latencies: samples.latencies.clone(),
            missed: samples.missed,
            bytes: samples.bytes,
            cpu: samples.cpu,
            count: samples.count,
        };
        samples.kind = if *rate > 0.0 {
            "sustained member"
        } else {
            samples.kind
        };
        row(&mut out, &samples)?;
    }
    if let Some((samples, rate, all_done, failed, first, second)) = &sustained {
        writeln!(out)?;
        writeln!(
            out,
            "sustained: {} membership additions at {:.0}/s ({} s); {} reached every stream, {} did not, {} API calls failed; every stream current {:.2} s after the first; mean time to all streams {:.3} s in the first half, {:.3} s in the second",
            samples.count,
            rate,
            cli.sustain,
            samples.latencies.len(),
            samples.missed,
            failed,
            all_done.as_secs_f64(),
            first,
            second
        )?;
    }
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    Ok(())
}
