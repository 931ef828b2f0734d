//! `audit_store`: the audit trail's store, measured on SQLite and on PostgreSQL (a server this
//! program starts in a temporary folder, as the tests do):
//!
//! - **ingest**: events per second stored through `Store::record_audit_events` in batches of
//!   1000 — what `POST /api/audit/events` does with a proxy's batch once it has parsed it (the
//!   HTTP and JSON parsing in front of it are not in this figure);
//! - **query**: `Store::query_audit` by user and a one-day time range (a page of 100, newest
//!   first) over the events stored, median and worst of 50 different users and days.
//!
//! Run: `cargo run --release -p infra-benches --bin audit_store -- --fill 1000000`; results in
//! `benches/README.md`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use infra_api::audit::{Event, Kind, SCHEMA_VERSION};
use infra_authz::policy::Secret;
use infra_control::Store;
use infra_control::crypto::RootKeySource;
use infra_control::store::{AuditFilter, StoreConfig};

/// The audit trail's store: ingest rate and query time.
#[derive(Debug, Parser)]
struct Args {
    /// Events stored in all (the ingest is measured over all of them, in batches of 1000).
    #[arg(long, default_value_t = 1_000_000)]
    fill: usize,
    /// Which databases: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    databases: Vec<String>,
}

const USERS: usize = 1000;
const DESTINATIONS: usize = 20;
const SPREAD_DAYS: i64 = 30;
const DAY_US: i64 = 86_400 * 1_000_000;
const T0_US: i64 = 1_780_000_000 * 1_000_000;

/// Event `i` of the fill: users, destinations and times spread evenly over 30 days.
fn event(i: usize) -> Event {
    let i64i = i64::try_from(i).unwrap_or(i64::MAX);
    let user = format!("user-{}@example.com", i % USERS);
    Event {
        schema: SCHEMA_VERSION,
        id: format!("bench-{i:012}"),
        time: jiff::Timestamp::from_microsecond(
            T0_US + (i64i * 2_591_000) % (SPREAD_DAYS * DAY_US),
        )
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        kind: Kind::Request,
        user: Some(user.clone()),
        groups: vec!["engineering".into(), format!("team-{}", i % 37)],
        destination: Some(format!("cluster-{}", i % DESTINATIONS)),
        audit_id: Some(format!("bench-{i:012}")),
        method: Some("GET".into()),
        path: Some(format!("/api/v1/namespaces/ns-{}/pods", i % 50)),
        verb: Some("list".into()),
        api_group: Some(String::new()),
        resource: Some("pods".into()),
        namespace: Some(format!("ns-{}", i % 50)),
        decision: Some("allow".into()),
        grant: Some(format!(
            "view to user {user:?} on cluster-{}",
            i % DESTINATIONS
        )),
        code: Some(200),
        latency_us: Some(1800),
        source_ip: Some("10.1.2.3".into()),
        user_agent: Some("kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07".into()),
        ..Event::default()
    }
}

#[allow(clippy::print_stdout, reason = "the results are this command's output")]
async fn measure(name: &str, store: &Store, fill: usize) -> Result<()> {
    // Ingest.
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut built = Duration::ZERO;
    for start in (0..fill).step_by(1000) {
        let building = Instant::now();
        batch.clear();
        batch.extend((start..(start + 1000).min(fill)).map(event));
        built += building.elapsed();
        store.record_audit_events(&batch).await?;
        if start % 100_000 == 0 && start > 0 {
            eprintln!("{name}: {start} events stored");
        }
    }
    let storing = started.elapsed().saturating_sub(built);
    #[allow(clippy::cast_precision_loss, reason = "event counts far below 2^52")]
    let rate = fill as f64 / storing.as_secs_f64();
    println!("| {name} | ingest | {fill} events in batches of 1000 | {rate:.0} events/s |");

    // Query: a user and one day, 50 times.
    let mut times = Vec::new();
    for k in 0..50_i64 {
        let user = format!("user-{}@example.com", (k * 131) % i64::try_from(USERS)?);
        let day = k % SPREAD_DAYS;
        let filter = AuditFilter {
            user: Some(user),
            since_us: Some(T0_US + day * DAY_US),
            until_us: Some(T0_US + (day + 1) * DAY_US),
            ..AuditFilter::default()
        };
        let asked = Instant::now();
        let (page, _) = store.query_audit(&filter, None, 100).await?;
        times.push(asked.elapsed());
        if k == 0 {
            eprintln!("{name}: a query found {} events", page.len());
        }
    }
    times.sort();
    println!(
        "| {name} | query by user and one day, page of 100 | over {fill} events | median {:.2} ms, worst {:.2} ms |",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    for database in &args.databases {
        let dir = tempfile::tempdir().context("temp dir")?;
        let root_key = RootKeySource::File(dir.path().join("root.key"));
        match database.as_str() {
            "sqlite" => {
                let config = StoreConfig::sqlite(dir.path().join("infra.db"), root_key);
                let store = Store::open(&config).await?;
                measure("SQLite", &store, args.fill).await?;
            }
            "postgres" => {
                let server = infra_tests::postgres::Server::start();
                server.create_database("bench").await;
                let config = StoreConfig::postgres(Secret::new(server.url("bench")), root_key);
                let store = Store::open(&config).await?;
                measure("PostgreSQL", &store, args.fill).await?;
            }
            other => anyhow::bail!("unknown database {other:?}: sqlite or postgres"),
        }
    }
    Ok(())
}
