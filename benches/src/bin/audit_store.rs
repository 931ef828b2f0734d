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
    /// The events' times: `arrival` (in the order they are stored, spread evenly over 30 days,
    /// as events reach the control plane a few at a time from the proxies) or `scattered` (each
    /// batch's events anywhere in the 30 days, the worst case for the time indexes).
    #[arg(long, default_value = "arrival")]
    order: Order,
    /// The events' ids: `random` (v4 UUIDs, as the control plane's own events have) or `proxy`
    /// (as a proxy makes its audit ids: per thread a random start and then one up, here for 8
    /// threads of each of the 20 destinations).
    #[arg(long, default_value = "random")]
    ids: Ids,
    /// How many send batches at once (1: one after the other, the time to make the events not
    /// counted; more: as several proxies send, everything counted).
    #[arg(long, default_value_t = 8)]
    senders: usize,
}

/// How the events' ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Ids {
    /// Random v4 UUIDs.
    Random,
    /// As infra-proxy's audit ids.
    Proxy,
}

/// Id `i` as [`Ids`] says.
fn id(i: usize, ids: Ids) -> String {
    match ids {
        Ids::Random => uuid::Uuid::new_v4().to_string(),
        Ids::Proxy => {
            // A fixed random start for each of 160 threads, then one up per event of it.
            let thread = (i % (DESTINATIONS * 8)) as u64;
            let high = thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let low = 0x5851_F42D_4C95_7F2D_u64.wrapping_mul(thread + 1)
                + (i / (DESTINATIONS * 8)) as u64;
            uuid::Builder::from_random_bytes(uuid::Uuid::from_u64_pair(high, low).into_bytes())
                .into_uuid()
                .to_string()
        }
    }
}

/// How the events' times follow their order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Order {
    /// Times grow with arrival.
    Arrival,
    /// Times scattered over the whole span.
    Scattered,
}

const USERS: usize = 1000;
const DESTINATIONS: usize = 20;
const SPREAD_DAYS: i64 = 30;
const DAY_US: i64 = 86_400 * 1_000_000;
const T0_US: i64 = 1_780_000_000 * 1_000_000;

/// Event `i` of `fill`: users, destinations and times spread evenly over 30 days, in `order`.
/// Ids are random (v4 UUIDs), as the proxies' are across threads and processes.
fn event(i: usize, fill: usize, order: Order, ids: Ids) -> Event {
    let i64i = i64::try_from(i).unwrap_or(i64::MAX);
    let user = format!("user-{}@example.com", i % USERS);
    let span = SPREAD_DAYS * DAY_US;
    let offset = match order {
        Order::Arrival => i64i * (span / i64::try_from(fill.max(1)).unwrap_or(1)),
        Order::Scattered => (i64i * 2_591_000) % span,
    };
    Event {
        schema: SCHEMA_VERSION,
        id: id(i, ids),
        time: jiff::Timestamp::from_microsecond(T0_US + offset)
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
async fn measure(name: &str, store: &Store, args: &Args) -> Result<()> {
    let (fill, order, ids) = (args.fill, args.order, args.ids);
    // Ingest.
    let senders = args.senders.max(1);
    let started = Instant::now();
    let storing = if senders == 1 {
        let mut batch = Vec::with_capacity(1000);
        let mut built = Duration::ZERO;
        for start in (0..fill).step_by(1000) {
            let building = Instant::now();
            batch.clear();
            batch.extend((start..(start + 1000).min(fill)).map(|i| event(i, fill, order, ids)));
            built += building.elapsed();
            store.record_audit_events(&batch).await?;
            if start % 100_000 == 0 && start > 0 {
                eprintln!("{name}: {start} events stored");
            }
        }
        started.elapsed().saturating_sub(built)
    } else {
        // Senders at once, as proxies send: sender k sends batches k, k + senders, ... Their
        // making of the events (as the control plane's parsing of them would) is in the time.
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..senders {
            let store = store.clone();
            tasks.spawn(async move {
                let mut batch = Vec::with_capacity(1000);
                for start in (k * 1000..fill).step_by(1000 * senders) {
                    batch.clear();
                    batch.extend(
                        (start..(start + 1000).min(fill)).map(|i| event(i, fill, order, ids)),
                    );
                    store.record_audit_events(&batch).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        started.elapsed()
    };
    #[allow(clippy::cast_precision_loss, reason = "event counts far below 2^52")]
    let rate = fill as f64 / storing.as_secs_f64();
    println!(
        "| {name} | ingest, times in {order:?} order, {ids:?} ids, {senders} senders | {fill} events in batches of 1000 | {rate:.0} events/s |"
    );

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
        "| {name} | query by user and one day, page of 100 ({order:?}) | over {fill} events | median {:.2} ms, worst {:.2} ms |",
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
                measure("SQLite", &store, &args).await?;
            }
            "postgres" => {
                let server = infra_tests::postgres::Server::start();
                server.create_database("bench").await;
                let config = StoreConfig::postgres(Secret::new(server.url("bench")), root_key);
                let store = Store::open(&config).await?;
                measure("PostgreSQL", &store, &args).await?;
            }
            other => anyhow::bail!("unknown database {other:?}: sqlite or postgres"),
        }
    }
    Ok(())
}
