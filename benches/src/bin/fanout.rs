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

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

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

// ----------------------------------------------------------------------------------------------
// The child: the control plane alone.

async fn serve(
    state_dir: &Path,
    users: usize,
    sessions: usize,
    logouts: usize,
    ready: &Path,
) -> Result<()> {
    use infra_authz::clock::SystemClock;
    use infra_authz::policy::{Grant, Policy, Resource, Subject};
    use infra_control::crypto::RootKeySource;
    use infra_control::passwords::Passwords;
    use infra_control::store::{KeyKind, NewAccessKey};
    use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig};

    let dir = state_dir.join(format!("u{users}-s{sessions}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let filled = dir.join("filled");
    let config = StoreConfig {
        passwords: Passwords::new(256, 1, 1),
        initialize: true,
        max_connections: 8,
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("root.key")),
        )
    };
    let store = Store::open(&config).await.context("opening the store")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut control = ControlConfig::new(format!("http://{addr}"));
    control.anonymous_per_minute = 1_000_000;
    control.anonymous_burst = 1_000_000;
    let plane = ControlPlane::start(store, control, &Policy::default(), Arc::new(SystemClock))
        .await
        .context("starting the control plane")?;
    let store = plane.store();
    let now = SystemTime::now();
    let actor = "bench";
    if !filled.exists() {
        let started = Instant::now();
        for g in 0..GROUPS {
            store.create_group(actor, &format!("g{g}"), now).await?;
        }
        let grant = |subject: Subject, resource: &str| -> Result<Grant> {
            Ok(Grant {
                subject,
                role: "view".into(),
                resource: resource
                    .parse::<Resource>()
                    .map_err(|e| anyhow::anyhow!("{resource}: {e}"))?,
                expires_at: None,
            })
        };
        for g in 0..GROUPS {
            let resource = if g < 5 {
                DESTINATION.to_owned()
            } else {
                format!("other{}", g % 10)
            };
            store
                .create_grant(
                    actor,
                    &grant(Subject::Group(format!("g{g}")), &resource)?,
                    now,
                )
                .await?;
        }
        for i in 0..users {
            let name = format!("u{i}");
            store.create_user(actor, &name, now).await?;
            store
                .add_member(actor, &format!("g{}", i % GROUPS), &name, now)
                .await?;
            store
                .add_member(
                    actor,
                    &format!("g{}", (i / GROUPS + 1 + i) % GROUPS),
                    &name,
                    now,
                )
                .await?;
            if i < 100 {
                store
                    .create_grant(
                        actor,
                        &grant(Subject::User(name), &format!("{DESTINATION}.ns{i}"))?,
                        now,
                    )
                    .await?;
            }
            if i % 10_000 == 9_999 {
                eprintln!("  {} users ({:.0?})", i + 1, started.elapsed());
            }
        }
        for i in 0..sessions {
            store
                .create_access_key(
                    actor,
                    &format!("u{}", i % users.max(1)),
                    &NewAccessKey::session(now),
                    now,
                )
                .await?;
            if i % 20_000 == 19_999 {
                eprintln!("  {} sessions ({:.0?})", i + 1, started.elapsed());
            }
        }
        for user in [LOGIN_USER, LOGOUT_USER] {
            store.create_user(actor, user, now).await?;
        }
        store
            .set_password(
                actor,
                LOGIN_USER,
                &infra_authz::policy::Secret::new(PASSWORD.to_owned()),
                now,
            )
            .await?;
        std::fs::write(&filled, b"")?;
        eprintln!("store filled in {:.1?}", started.elapsed());
    }
    let (_, admin) = store
        .create_access_key(
            actor,
            infra_control::plane::BOOTSTRAP_ADMIN,
            &NewAccessKey {
                name: format!("bench-{}", std::process::id()),
                kind: KeyKind::Api,
                expires_at: None,
                inactivity_timeout: None,
            },
            now,
        )
        .await?;
    let mut logout_keys = Vec::with_capacity(logouts);
    for _ in 0..logouts {
        let (_, key) = store
            .create_access_key(actor, LOGOUT_USER, &NewAccessKey::session(now), now)
            .await?;
        logout_keys.push(key.expose().to_owned());
    }
    let router = infra_control::api::router(Arc::clone(&plane));
    let ready_text = json!({
        "url": format!("http://{addr}"),
        "admin": admin.expose(),
        "logouts": logout_keys,
    });
    let tmp = ready.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&ready_text)?)?;
    std::fs::rename(&tmp, ready)?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
                request
                    .extensions_mut()
                    .insert(infra_control::api::PeerAddr(peer));
                let router = router.clone();
                async move {
                    let request = request.map(axum::body::Body::new);
                    tower::ServiceExt::oneshot(router, request).await
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

// ----------------------------------------------------------------------------------------------
// The parent: the proxies' streams and the administrator.

/// Something a change put on the wire, which every stream must see.
#[derive(Debug)]
struct Marker {
    id: u64,
    finder: memchr::memmem::Finder<'static>,
    start: Instant,
    remaining: AtomicUsize,
    /// The latest arrival so far, in nanoseconds after `start`.
    last: AtomicU64,
    done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Shared {
    pending: RwLock<Vec<Arc<Marker>>>,
    bytes: AtomicU64,
    lines: AtomicU64,
    connected: AtomicUsize,
    /// The run is over: streams ending now are no news.
    finished: std::sync::atomic::AtomicBool,
}

async fn follow(http: reqwest::Client, url: String, key: String, shared: Arc<Shared>) {
    let mut response = match http.get(&url).bearer_auth(&key).send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            eprintln!("stream refused: {}", response.status());
            return;
        }
        Err(error) => {
            eprintln!("stream failed: {error}");
            return;
        }
    };
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut first = true;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                if !shared.finished.load(Ordering::Acquire) {
                    eprintln!("a stream ended");
                }
                return;
            }
            Err(error) => {
                if !shared.finished.load(Ordering::Acquire) {
                    eprintln!("a stream failed: {error}");
                }
                return;
            }
        };
        shared
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        buffer.extend_from_slice(&chunk);
        while let Some(end) = memchr::memchr(b'\n', &buffer) {
            let at = Instant::now();
            let line = &buffer[..end];
            shared.lines.fetch_add(1, Ordering::Relaxed);
            if first {
                first = false;
                shared.connected.fetch_add(1, Ordering::Release);
            }
            let pending: Vec<Arc<Marker>> = shared
                .pending
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for marker in pending {
                if !seen.contains(&marker.id) && marker.finder.find(line).is_some() {
                    seen.insert(marker.id);
                    let nanos =
                        u64::try_from(at.duration_since(marker.start).as_nanos()).unwrap_or(0);
                    marker.last.fetch_max(nanos, Ordering::AcqRel);
                    if marker.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        marker.done.notify_one();
                    }
                }
            }
            buffer.drain(..=end);
        }
    }
}

struct Run {
    http: reqwest::Client,
    url: String,
    admin: String,
    shared: Arc<Shared>,
    streams: usize,
    next_id: AtomicU64,
    child: u32,
    tick: f64,
}

impl Run {
    fn marker(&self, needle: &str, start: Instant) -> Arc<Marker> {
        let marker = Arc::new(Marker {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            finder: memchr::memmem::Finder::new(needle.as_bytes()).into_owned(),
            start,
            remaining: AtomicUsize::new(self.streams),
            last: AtomicU64::new(0),
            done: tokio::sync::Notify::new(),
        });
        self.shared
            .pending
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&marker));
        marker
    }

    fn forget(&self, marker: &Marker) {
        self.shared
            .pending
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|m| m.id != marker.id);
    }

    /// Waits until every stream saw `marker` or `timeout` passed: the time the last stream saw
    /// it, if all did.
    async fn wait(&self, marker: &Marker, timeout: Duration) -> Option<Duration> {
        let deadline = marker.start + timeout;
        while marker.remaining.load(Ordering::Acquire) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(50)), marker.done.notified())
                    .await;
        }
        self.forget(marker);
        (marker.remaining.load(Ordering::Acquire) == 0)
            .then(|| Duration::from_nanos(marker.last.load(Ordering::Acquire)))
    }

    /// The child's CPU time so far, in seconds.
    fn cpu(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child)) else {
            return f64::NAN;
        };
        // Fields after the command's closing parenthesis: utime is the 14th, stime the 15th.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            return f64::NAN;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => (user + system) / self.tick,
            _ => f64::NAN,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Kills the control plane when the run ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let sync_url = format!("{url}/api/sync/{DESTINATION}");
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
