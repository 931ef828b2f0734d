//! The memory figure: idle watches held open through a fresh proxy, one client connection
//! each, and the proxy's resident memory before, with the connections open, and with a watch on
//! each. The same is measured on a fresh upstream (direct), the same tokio-rustls + hyper
//! HTTP/1.1 server stack without the proxy's pipeline or its upstream stream, as the baseline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::cells::{self, Cell, Route, Via, Workload};
use crate::client::{self, Protocol};
use crate::{RunArgs, Setup, processes, procfs, target};

/// The watch phase: through the proxy, and direct.
#[derive(Debug, Clone)]
pub struct Watches {
    /// Through a fresh infra-proxy.
    pub proxy: WatchMemory,
    /// Straight to a fresh upstream.
    pub direct: WatchMemory,
}

/// What one server's watch phase measured.
#[derive(Debug, Clone)]
pub struct WatchMemory {
    /// Connections opened (TLS and HTTP/1.1 handshakes done).
    pub connected: usize,
    /// Watches open (response head received).
    pub opened: usize,
    /// Connections or watches that failed.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// The server's RSS before (warmed).
    pub rss_before_kib: u64,
    /// With the connections open and idle.
    pub rss_connected_kib: u64,
    /// With a watch on each connection.
    pub rss_open_kib: u64,
    /// 2 s after the client closed them all.
    pub rss_closed_kib: u64,
    /// Time to open them all.
    pub open_seconds: f64,
    /// The server's CPU time spent opening them.
    pub cpu_seconds: f64,
    /// Short GETs (HTTP/1.1, 64 concurrent) through the server before the watches were opened
    /// and while they were open (the proxy only).
    pub short_gets: Option<(Cell, Cell)>,
}

impl WatchMemory {
    #[allow(clippy::cast_precision_loss, reason = "KiB counts are far below 2^52")]
    /// RSS per idle connection, KiB.
    pub fn kib_per_connection(&self) -> f64 {
        if self.connected == 0 {
            return f64::NAN;
        }
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64 / self.connected as f64
    }

    #[allow(clippy::cast_precision_loss, reason = "KiB counts are far below 2^52")]
    /// RSS per idle watch (its connection included), KiB.
    pub fn kib_per_watch(&self) -> f64 {
        if self.opened == 0 {
            return f64::NAN;
        }
        self.rss_open_kib.saturating_sub(self.rss_before_kib) as f64 / self.opened as f64
    }
}

/// Opens `args.watches` watches through a fresh proxy, then straight to a fresh upstream.
pub async fn measure_watches(args: &RunArgs, setup: &Setup, upstream_pid: u32) -> Result<Watches> {
    // Fresh processes, so the figures are not blurred by memory the load cells left in an
    // allocator.
    // Not pinned: the memory figures compare with the unpinned bare stack (and earlier runs).
    let files = processes::ProxyFiles {
        cpus: None,
        ..setup.files.clone()
    };
    let proxy = processes::start_proxy(&files, &setup.dir.join("proxy-watches.log"))?;
    eprintln!(
        "watches: infra-proxy pid {} on {}",
        proxy.pid(),
        proxy.address
    );
    let through_proxy = measure(args, setup, &proxy, Some(upstream_pid)).await?;
    drop(proxy);
    let upstream = processes::start_upstream(
        &setup.pki.cert,
        &setup.pki.key,
        args.upstream_threads.unwrap_or(2),
        None,
        0,
    )?;
    eprintln!(
        "watches: upstream pid {} on {}",
        upstream.pid(),
        upstream.address
    );
    let direct = measure(args, setup, &upstream, None).await?;
    Ok(Watches {
        proxy: through_proxy,
        direct,
    })
}

/// A short-GET cell (HTTP/1.1, 64 concurrent) through `server`.
async fn short_gets(
    args: &RunArgs,
    setup: &Setup,
    server: &processes::Process,
    upstream_pid: u32,
) -> Result<Cell> {
    let route = Route {
        via: Via::Proxy,
        address: server.address,
        pid: Some(server.pid()),
    };
    cells::measure_cell(
        args,
        setup,
        &target(setup, server.address, Protocol::Http1)?,
        &route,
        upstream_pid,
        64,
        Workload::Small,
    )
    .await
}

/// The watch phase on `server`; with `upstream_pid` (the proxy), also a short-GET cell before
/// the watches and one while they are open.
async fn measure(
    args: &RunArgs,
    setup: &Setup,
    server: &processes::Process,
    upstream_pid: Option<u32>,
) -> Result<WatchMemory> {
    let pid = server.pid();
    let target = Arc::new(target(setup, server.address, Protocol::Http1)?);
    // Warm it: the upstream pool's first connection, the token and decision caches.
    let mut sender = target.connect().await?;
    for _ in 0..200 {
        let response = sender.send(target.request(client::PATH)?).await?;
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .context("reading a warm-up body")?;
    }
    drop(sender);
    let gets_before = match upstream_pid {
        Some(upstream) => Some(short_gets(args, setup, server, upstream).await?),
        None => None,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = procfs::rss_kib(pid)?;
    let cpu_before = procfs::cpu_ticks(pid)?;

    // Phase 1: the connections (TLS and HTTP/1.1 handshakes), idle. The proxy closes a
    // connection that sends no request head within 30 s, so phase 2 follows at once.
    let started = Instant::now();
    let mut failed = 0;
    let mut first_error = None;
    let connections = run_bounded(args.watches, {
        let target = Arc::clone(&target);
        move |_| {
            let target = Arc::clone(&target);
            async move { target.connect().await }
        }
    })
    .await;
    let mut senders = Vec::with_capacity(args.watches);
    for result in connections {
        match result {
            Ok(sender) => senders.push(sender),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let rss_connected_kib = procfs::rss_kib(pid)?;
    let connected = senders.len();

    // Phase 2: a watch on each connection.
    let requested = Instant::now();
    let senders: Vec<std::sync::Mutex<Option<client::Sender>>> = senders
        .into_iter()
        .map(|s| std::sync::Mutex::new(Some(s)))
        .collect();
    let senders = Arc::new(senders);
    let watches = run_bounded(connected, {
        let target = Arc::clone(&target);
        let senders = Arc::clone(&senders);
        move |i| {
            let target = Arc::clone(&target);
            let sender = senders[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            async move {
                let sender = sender.context("each connection carries one watch")?;
                client::start_watch(&target, sender).await
            }
        }
    })
    .await;
    let mut open = Vec::with_capacity(connected);
    for result in watches {
        match result {
            Ok(watch) => open.push(watch),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let request_seconds = requested.elapsed().as_secs_f64();
    eprintln!(
        "watches: {connected} connections in {connect_seconds:.1} s, {} watches open in {request_seconds:.1} s, {failed} failed",
        open.len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open_kib = procfs::rss_kib(pid)?;
    let cpu_after = procfs::cpu_ticks(pid)?;
    let opened = open.len();
    let short_gets = match (upstream_pid, gets_before) {
        (Some(upstream), Some(before)) => {
            let during = short_gets(args, setup, server, upstream).await?;
            eprintln!(
                "watches: short GETs p99 {:.1} µs with {opened} watches open, {:.1} µs before",
                during.p99_us, before.p99_us
            );
            Some((before, during))
        }
        _ => None,
    };
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed_kib = procfs::rss_kib(pid)?;
    #[allow(clippy::cast_precision_loss, reason = "tick counts are small")]
    let cpu_seconds = cpu_after.saturating_sub(cpu_before) as f64 / setup.ticks as f64;
    Ok(WatchMemory {
        connected,
        opened,
        failed,
        first_error,
        rss_before_kib,
        rss_connected_kib,
        rss_open_kib,
        rss_closed_kib,
        open_seconds: connect_seconds + request_seconds,
        cpu_seconds,
        short_gets,
    })
}

/// Runs `task(i)` for `i` in `0..count`, at most 64 at a time (each with a 20 s limit), and
/// answers the results in order.
async fn run_bounded<T, F, Fut>(count: usize, task: F) -> Vec<Result<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let future = task(i);
        handles.push(tokio::spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(20), future).await;
            drop(permit);
            result.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 20 s")))
        }));
    }
    let mut results = Vec::with_capacity(count);
    for handle in handles {
        results.push(
            handle
                .await
                .unwrap_or_else(|error| Err(anyhow::anyhow!("the task failed: {error}"))),
        );
    }
    results
}
