//! `revocation`: how long after an administrator revokes access every proxy refuses (issue 6:
//! "denied on every proxy within 1 second at p99, measured, three proxies").
//!
//! One process holds what `infra_tests::control` starts for the sync tests:
//!
//! ```text
//!   this client ──▶ control API ─┬─ in-process ─▶ proxy `testing` ──▶ stand-in apiserver
//!        │                        ├─ /api/sync ──▶ proxy `east` (proxy-only) ──▶ stand-in
//!        │                        └─ /api/sync ──▶ proxy `west` (proxy-only) ──▶ stand-in
//!        └──────── GET /api/v1/namespaces/default/pods, every 1–2 ms, on each proxy ─────▲
//! ```
//!
//! A user `suzie@example.com` is in group `Engineering`, which has `view` on all three
//! destinations. Each round removes and restores, one after the other:
//!
//! - **membership**: `DELETE /api/groups/Engineering/members/suzie@example.com` (one call, all
//!   three proxies must answer 403), then `PUT` it back;
//! - **grant**: `DELETE /api/grants/<id>` of each destination's grant, the three calls at once,
//!   each proxy timed from the start of its own grant's call (403), then the grants again;
//! - **session**: `POST /api/logout` of her session (one call, all three must answer 401), then
//!   a new login and new tokens;
//! - **approval** (issue 14, the other way round): `carl@example.com`, who has no grant, has
//!   asked for `view` on each destination (three access requests, under a request rule that
//!   names `admin` as reviewer); `POST /api/requests/<id>/approve` of the three at once, each
//!   proxy timed from the start of its own request's approval until it answers 200 to carl's
//!   token; then the requests are revoked (not timed) for the next round.
//!
//! A sample is the time from the start of the API call until the first answer of that proxy
//! with the refusal; the proxy is polled (keep-alive, one request at a time) with a 1 ms sleep
//! between answers, so a sample overstates the latency by at most one poll (the sleep, 1–2 ms
//! with tokio's timer, plus one request). The API call's own duration is recorded with it, so
//! the report shows how much of a sample is the call and how much is propagation.
//!
//! Run it with `benches/run-revocation.sh`; results in `benches/README.md`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use infra_benches::command_output;
use infra_tests::control::{ControlHarness, Options, RemoteProxy, client_for, status_of};
use infra_tests::proxy::DESTINATION;
use serde_json::{Value, json};

mod report;

use report::{Run, write_table};

const PODS: &str = "/api/v1/namespaces/default/pods";
const USER: &str = "suzie@example.com";
const PASSWORD: &str = "a-long-enough-passphrase";
const GROUP: &str = "Engineering";
const MEMBER: &str = "/api/groups/Engineering/members/suzie@example.com";
const ASKER: &str = "carl@example.com";

/// The request rule carl asks under.
const POLICY: &str = "requests:
  - name: bench
    user: carl@example.com
    roles: [view]
    resources: [testing, east, west]
    maxDuration: 1h
    reviewers: {user: admin}
";

/// Revocation latency on three proxies (one in the control plane's process, two proxy-only
/// proxies syncing over the control API). Markdown on stdout, progress on stderr.
#[derive(Debug, Parser)]
#[command(name = "revocation")]
struct Cli {
    /// Measured rounds; each revokes and restores a membership, the grants and the session.
    #[arg(long, env = "INFRA_REVOCATION_ROUNDS", default_value_t = 200)]
    rounds: u32,
    /// Rounds run first and not recorded (connections, caches, the database warm up).
    #[arg(long, env = "INFRA_REVOCATION_WARMUP", default_value_t = 5)]
    warmup: u32,
    /// The control plane's store.
    #[arg(long, env = "INFRA_REVOCATION_STORE", value_enum, default_value_t = StoreArg::Sqlite)]
    store: StoreArg,
    /// Sleep between two polls of a proxy, in milliseconds.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// Give up (and fail) when a proxy has not refused or accepted after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
    /// SQLite, then PostgreSQL, each with its own control plane and proxies.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Membership,
    Grant,
    Session,
    Approval,
}

impl Kind {
    const REVOCATIONS: [Kind; 3] = [Kind::Membership, Kind::Grant, Kind::Session];

    fn name(self) -> &'static str {
        match self {
            Kind::Membership => "group membership",
            Kind::Grant => "grant",
            Kind::Session => "session (logout)",
            Kind::Approval => "access request approved",
        }
    }
}

/// One proxy's refusal after one API call.
#[derive(Debug, Clone, Copy)]
struct Sample {
    kind: Kind,
    /// 0: the proxy in the control plane's process; 1, 2: the proxy-only proxies.
    proxy: usize,
    /// From the start of the API call to the proxy's first refusal.
    latency: Duration,
    /// The API call's own duration (request sent to answer read).
    call: Duration,
}

/// One proxy as the client sees it.
#[derive(Debug)]
struct Target {
    name: String,
    url: String,
    client: reqwest::Client,
    token: String,
}

struct Bench {
    h: ControlHarness,
    // Kept for their lifetime: the proxy-only proxies and their stand-ins.
    _remotes: Vec<RemoteProxy>,
    admin: String,
    session: String,
    targets: Vec<Target>,
    /// The same proxies with carl's tokens (the requester).
    askers: Vec<Target>,
    /// carl's session.
    asker: String,
    /// The id of each destination's grant to `Engineering`, in `targets` order.
    grants: Vec<i64>,
    poll: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match Box::pin(run(&cli)).await {
        Ok(report) => {
            emit(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("revocation: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
fn emit(report: &str) {
    print!("{report}");
}

async fn run(cli: &Cli) -> Result<String> {
    ensure!(cli.rounds > 0, "--rounds must be at least 1");
    let stores: &[bool] = match cli.store {
        StoreArg::Sqlite => &[false],
        StoreArg::Postgres => &[true],
        StoreArg::Both => &[false, true],
    };
    let mut report = String::new();
    let command: Vec<String> = std::env::args().collect();
    writeln!(report, "Command: `{}`\n", command.join(" "))?;
    for &postgres in stores {
        let store = if postgres { "PostgreSQL" } else { "SQLite" };
        eprintln!("revocation: starting the control plane ({store}) and three proxies");
        let mut bench = Box::pin(Bench::start(postgres, cli)).await?;
        for round in 0..cli.warmup {
            bench
                .round()
                .await
                .with_context(|| format!("warm-up round {round}"))?;
        }
        let date = command_output("date", &["-u"]);
        let before = command_output("uptime", &[]);
        let started = Instant::now();
        let mut samples = Vec::new();
        for round in 0..cli.rounds {
            samples.extend(
                bench
                    .round()
                    .await
                    .with_context(|| format!("round {round}"))?,
            );
            if (round + 1) % 25 == 0 {
                eprintln!(
                    "revocation: {store}: {} of {} rounds ({:.0?})",
                    round + 1,
                    cli.rounds,
                    started.elapsed()
                );
            }
        }
        let elapsed = started.elapsed();
        let after = command_output("uptime", &[]);
        let names: Vec<&str> = bench.targets.iter().map(|t| t.name.as_str()).collect();
        write_table(
            &mut report,
            &Run {
                store,
                rounds: cli.rounds,
                warmup: cli.warmup,
                poll_ms: cli.poll_ms,
                proxies: &names,
                date: &date,
                before: &before,
                after: &after,
                elapsed,
            },
            &samples,
        )?;
        drop(bench);
    }
    Ok(report)
}

impl Bench {
    async fn start(postgres: bool, cli: &Cli) -> Result<Self> {
        // Every round logs in again and trades tokens from one address: the per-address limit
        // on anonymous and token calls (a defence measured elsewhere) is lifted here.
        let options = Options {
            postgres,
            client_rate_per_minute: Some(1_000_000),
            client_burst: Some(1_000_000),
            ..Options::default()
        };
        let h = ControlHarness::start_with(POLICY, options).await;
        let admin = h.admin().await;

        // The proxies of the other clusters sign in as a connector, as in the README.
        let connector = create_user(&h, &admin, "connector@infra").await?;
        ok(
            &h,
            "POST",
            "/api/grants",
            &admin,
            Some(json!({"user": "connector@infra", "role": "connector", "resource": "infra"})),
        )
        .await?;
        let key = ok(
            &h,
            "POST",
            "/api/keys",
            &connector,
            Some(json!({"name": "proxies"})),
        )
        .await?;
        let key = key["key"].as_str().context("no key")?.to_owned();
        let east = RemoteProxy::start(&h, "east", &key, 900, None).await;
        let west = RemoteProxy::start(&h, "west", &key, 900, None).await;
        let timeout = Duration::from_secs(cli.timeout_seconds);
        let started = Instant::now();
        loop {
            let (_, list) = h.call("GET", "/api/destinations", Some(&admin), None).await;
            let connected = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["connected"] == true)
                .count();
            if connected == 3 {
                break;
            }
            ensure!(
                started.elapsed() < timeout,
                "the proxy-only proxies did not connect: {list}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        create_user(&h, &admin, USER).await?;
        ok(
            &h,
            "POST",
            "/api/groups",
            &admin,
            Some(json!({"name": GROUP})),
        )
        .await?;
        let destinations = [DESTINATION, "east", "west"];
        let mut grants = Vec::new();
        for resource in destinations {
            grants.push(grant(&h, &admin, resource).await?);
        }
        ok(&h, "PUT", MEMBER, &admin, None).await?;
        let session = h.login(USER, PASSWORD).await;
        let asker = create_user(&h, &admin, ASKER).await?;
        let cas = [&h.ca, &east.ca, &west.ca];
        let urls = [h.proxy_url(), east.url(), west.url()];
        let mut targets = Vec::new();
        let mut askers = Vec::new();
        for ((name, ca), url) in destinations.into_iter().zip(cas).zip(urls) {
            targets.push(Target {
                name: name.to_owned(),
                url: url.clone(),
                client: client_for(ca),
                token: token_for(&h, &session, name).await?,
            });
            askers.push(Target {
                name: name.to_owned(),
                url,
                client: client_for(ca),
                token: token_for(&h, &asker, name).await?,
            });
        }
        let bench = Self {
            h,
            _remotes: vec![east, west],
            admin,
            session,
            targets,
            askers,
            asker,
            grants,
            poll: Duration::from_millis(cli.poll_ms),
            timeout,
        };
        bench.all_answer(200).await?;
        Ok(bench)
    }

    /// One round: revoke and restore a membership, the grants, the session.
    async fn round(&mut self) -> Result<Vec<Sample>> {
        let mut samples = Vec::with_capacity(9);

        // (a) The group membership: one call, every proxy.
        samples.extend(
            self.timed_everywhere(Kind::Membership, 403, async {
                ok(&self.h, "DELETE", MEMBER, &self.admin, None).await
            })
            .await?,
        );
        ok(&self.h, "PUT", MEMBER, &self.admin, None).await?;
        self.all_answer(200).await?;

        // (b) Each destination's grant, the three calls at once, each timed on its proxy.
        let this: &Self = self;
        let per_proxy = this
            .targets
            .iter()
            .zip(&self.grants)
            .map(|(target, id)| async move {
                let start = Instant::now();
                let path = format!("/api/grants/{id}");
                let call = async {
                    ok(&this.h, "DELETE", &path, &this.admin, None).await?;
                    Ok::<_, anyhow::Error>(start.elapsed())
                };
                let (call, latency) = tokio::join!(call, this.refuses(target, start, 403));
                Ok::<_, anyhow::Error>((call?, latency?))
            });
        let results = futures_util::future::join_all(per_proxy).await;
        for (proxy, result) in results.into_iter().enumerate() {
            let (call, latency) = result?;
            samples.push(Sample {
                kind: Kind::Grant,
                proxy,
                latency,
                call,
            });
        }
        let mut grants = Vec::new();
        for target in &self.targets {
            grants.push(grant(&self.h, &self.admin, &target.name).await?);
        }
        self.grants = grants;
        self.all_answer(200).await?;

        // (c) The session: logout, every proxy; then a new login and new tokens.
        samples.extend(
            self.timed_everywhere(Kind::Session, 401, async {
                ok(&self.h, "POST", "/api/logout", &self.session, None).await
            })
            .await?,
        );
        self.session = self.h.login(USER, PASSWORD).await;
        for target in &mut self.targets {
            target.token = token_for(&self.h, &self.session, &target.name).await?;
        }
        self.all_answer(200).await?;

        // (d) Access requests: carl asks for view on each destination (not timed); the three
        // approvals at once, each timed on its proxy until carl is let in; then revoked.
        let mut ids = Vec::new();
        for target in &self.askers {
            let request = ok(
                &self.h,
                "POST",
                "/api/requests",
                &self.asker,
                Some(json!({"resource": target.name, "role": "view", "duration_seconds": 3600, "reason": "bench"})),
            )
            .await?;
            ids.push(request["id"].as_i64().context("a request id")?);
        }
        let this: &Self = self;
        let per_proxy = this.askers.iter().zip(&ids).map(|(target, id)| async move {
            let start = Instant::now();
            let path = format!("/api/requests/{id}/approve");
            let call = async {
                ok(&this.h, "POST", &path, &this.admin, Some(json!({}))).await?;
                Ok::<_, anyhow::Error>(start.elapsed())
            };
            let (call, latency) = tokio::join!(call, this.answers(target, start, 200, 403));
            Ok::<_, anyhow::Error>((call?, latency?))
        });
        let results = futures_util::future::join_all(per_proxy).await;
        for (proxy, result) in results.into_iter().enumerate() {
            let (call, latency) = result?;
            samples.push(Sample {
                kind: Kind::Approval,
                proxy,
                latency,
                call,
            });
        }
        for id in ids {
            let path = format!("/api/requests/{id}/revoke");
            ok(&self.h, "POST", &path, &self.admin, Some(json!({}))).await?;
        }
        for target in &self.askers {
            let start = Instant::now();
            self.answers(target, start, 403, 200).await?;
        }
        Ok(samples)
    }

    /// Polls every proxy at once until each answers `want`; answers each one's time since
    /// `start`.
    /// Makes `call` (one change at the control plane) and, from its start, waits for every
    /// proxy to answer `want`: a sample per proxy, with the call's own time.
    async fn timed_everywhere(
        &self,
        kind: Kind,
        want: u16,
        call: impl std::future::Future<Output = Result<Value>>,
    ) -> Result<Vec<Sample>> {
        let start = Instant::now();
        let call = async {
            call.await?;
            Ok::<_, anyhow::Error>(start.elapsed())
        };
        let (call, refused) = tokio::join!(call, self.all_refuse(start, want));
        let call = call?;
        Ok(refused?
            .into_iter()
            .enumerate()
            .map(|(proxy, latency)| Sample {
                kind,
                proxy,
                latency,
                call,
            })
            .collect())
    }

    async fn all_refuse(&self, start: Instant, want: u16) -> Result<Vec<Duration>> {
        let waits = self.targets.iter().map(|t| self.refuses(t, start, want));
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .collect()
    }

    /// Polls `target` until it answers `want`; answers the time since `start`.
    async fn refuses(&self, target: &Target, start: Instant, want: u16) -> Result<Duration> {
        self.answers(target, start, want, 200).await
    }

    /// Polls `target`, which answers `before`, until it answers `want`; answers the time since
    /// `start`.
    async fn answers(
        &self,
        target: &Target,
        start: Instant,
        want: u16,
        before: u16,
    ) -> Result<Duration> {
        loop {
            let status = status_of(&target.client, &target.url, PODS, &target.token).await;
            if status == want {
                return Ok(start.elapsed());
            }
            if status != before {
                bail!(
                    "{} answered {status} while we waited for {want}",
                    target.name
                );
            }
            ensure!(
                start.elapsed() < self.timeout,
                "{} still answers {status}, not {want}, after {:?}",
                target.name,
                self.timeout
            );
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until every proxy answers `want` again (after a restore; not measured).
    async fn all_answer(&self, want: u16) -> Result<()> {
        for target in &self.targets {
            let start = Instant::now();
            loop {
                let status = status_of(&target.client, &target.url, PODS, &target.token).await;
                if status == want {
                    break;
                }
                ensure!(
                    start.elapsed() < self.timeout,
                    "{} still answers {status}, not {want}, after {:?}",
                    target.name,
                    self.timeout
                );
                tokio::time::sleep(self.poll).await;
            }
        }
        Ok(())
    }
}

/// Calls the control API and insists on a 2xx; answers the body.
async fn ok(
    h: &ControlHarness,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Result<Value> {
    let (status, answer) = h.call(method, path, Some(key), body).await;
    ensure!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    Ok(answer)
}

async fn create_user(h: &ControlHarness, admin: &str, name: &str) -> Result<String> {
    ok(
        h,
        "POST",
        "/api/users",
        admin,
        Some(json!({"name": name, "password": PASSWORD})),
    )
    .await?;
    Ok(h.login(name, PASSWORD).await)
}

/// Grants `Engineering` `view` on `resource`; answers the grant's id.
async fn grant(h: &ControlHarness, admin: &str, resource: &str) -> Result<i64> {
    let body = ok(
        h,
        "POST",
        "/api/grants",
        admin,
        Some(json!({"group": GROUP, "role": "view", "resource": resource})),
    )
    .await?;
    body["id"].as_i64().context("a grant without an id")
}

async fn token_for(h: &ControlHarness, key: &str, destination: &str) -> Result<String> {
    let body = ok(
        h,
        "POST",
        "/api/tokens",
        key,
        Some(json!({"destination": destination})),
    )
    .await?;
    Ok(body["token"].as_str().context("no token")?.to_owned())
}
