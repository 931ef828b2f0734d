//! The exporter: follows the store's audit trail in export order (see
//! `store::audit_exports`) and sends it to the OTLP receiver in batches (up to [`BATCH`] events,
//! or what came within [`POLL`]), at least once:
//!
//! - the position moves, in the store, only after the receiver took the batch, so a restart or
//!   another replica sends again at most the batch that was in flight;
//! - 429, 502, 503, 504 and no answer are retried, the same batch, with a doubling wait from
//!   [`RETRY_BASE`] to [`RETRY_MAX`] (or the receiver's `Retry-After`, up to [`RETRY_AFTER_MAX`]),
//!   for as long as it takes: later events wait (in the store) behind it;
//! - any other refusal drops the batch (counted, the receiver's message logged), and so does
//!   `partial_success` for the records it names;
//! - one replica exports at a time, the holder of the store's lease ([`LEASE`]), renewed while
//!   it works; the others stand by and take over when it runs out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra_api::audit::Event;
use infra_authz::clock::Clock;
use tokio::sync::watch;

use super::{Answer, OtlpConfig};
use crate::oidc::describe;
use crate::store::{ExportPosition, Store, StoreError};

/// The export's name in the store.
pub const NAME: &str = "otlp";
/// The most events one export request carries.
pub const BATCH: u32 = 512;
/// How often the exporter looks for new events when it has sent everything.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a replica's lease lasts without being renewed.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a standing-by replica tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_secs(3);
/// The first wait before a retry; each next doubles, up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest wait between retries of our own choosing.
pub const RETRY_MAX: Duration = Duration::from_mins(1);
/// The longest `Retry-After` obeyed.
pub const RETRY_AFTER_MAX: Duration = Duration::from_mins(10);
/// Failed attempts in a row after which `/readyz` warns.
pub const WARN_AFTER_FAILURES: u64 = 3;

/// What the export is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not started yet.
    #[default]
    Starting,
    /// This replica exports.
    Exporting,
    /// Another replica exports; this one takes over if it stops.
    Standby,
    /// Stopped (the process is stopping).
    Stopped,
}

impl Mode {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Exporting => "exporting",
            Self::Standby => "standby",
            Self::Stopped => "stopped",
        }
    }
}

/// What this replica's exporter did since it started.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// What it does now.
    pub mode: Mode,
    /// Failed attempts in a row (0: the last one worked).
    pub failures_in_a_row: u64,
    /// The last failure, and when.
    pub last_error: Option<(String, SystemTime)>,
    /// When a batch was last taken by the receiver.
    pub last_export: Option<SystemTime>,
    /// The position after the last batch taken.
    pub after: ExportPosition,
}

/// The exporter of one replica.
pub struct Exporter {
    store: Store,
    http: reqwest::Client,
    config: OtlpConfig,
    clock: Arc<dyn Clock>,
    /// This replica, as the lease's holder and `service.instance.id`.
    replica: String,
    status: Mutex<Status>,
    /// Events the receiver took.
    pub exported: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Events refused for good.
    pub dropped: AtomicU64,
    stop: watch::Sender<bool>,
    /// Set when [`Self::run`] has ended (the lease let go).
    finished: watch::Sender<bool>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("config", &self.config)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why a delivery ended without the receiver taking the batch.
enum Interrupted {
    /// The process is stopping.
    Stopped,
    /// Another replica holds the lease now.
    LostLease,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Interrupted {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl Exporter {
    /// The exporter of `replica`, sending to `config` over `http`.
    pub fn new(
        store: Store,
        http: reqwest::Client,
        config: OtlpConfig,
        clock: Arc<dyn Clock>,
        replica: String,
    ) -> Self {
        Self {
            store,
            http,
            config,
            clock,
            replica,
            status: Mutex::new(Status::default()),
            exported: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stop: watch::channel(false).0,
            finished: watch::channel(false).0,
        }
    }

    /// Where the export goes.
    pub fn url(&self) -> &url::Url {
        &self.config.url
    }

    /// What it did and does.
    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// What is failing, for `/readyz` (a warning: requests are served, and events wait in the
    /// store).
    pub fn problem(&self) -> Option<String> {
        let status = self.lock();
        if status.failures_in_a_row < WARN_AFTER_FAILURES {
            return None;
        }
        let error = status
            .last_error
            .as_ref()
            .map_or("", |(error, _)| error.as_str());
        Some(format!(
            "the audit export to {} failed {} times in a row (events wait in the store): {error}",
            self.config.url, status.failures_in_a_row
        ))
    }

    /// Stops the export (the lease is let go, so another replica takes over at once).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until [`Self::run`] has ended, after [`Self::stop`].
    pub async fn stopped(&self) {
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|finished| *finished).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failed(&self, why: &str) {
        let mut status = self.lock();
        status.failures_in_a_row += 1;
        status.last_error = Some((why.to_owned(), self.clock.now()));
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn lease_until(&self) -> i64 {
        millis(self.clock.now() + LEASE)
    }

    /// Waits `wait`; answers `false` when the export is stopped meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        let mut stop = self.stop.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }

    /// Runs until [`Self::stop`].
    pub async fn run(self: Arc<Self>) {
        tracing::info!(url = %self.config.url, "exporting the audit trail over OTLP");
        while !*self.stop.borrow() {
            let now = self.clock.now();
            match self
                .store
                .take_export_lease(NAME, &self.replica, millis(now), self.lease_until())
                .await
            {
                Ok(true) => match self.export().await {
                    Interrupted::Stopped => break,
                    Interrupted::LostLease => {
                        tracing::info!("another replica took the audit export over");
                        self.set_mode(Mode::Standby);
                    }
                    Interrupted::Store(error) => {
                        tracing::warn!(%error, "the audit export cannot read or move on in the store");
                        self.failed(&format!("{error}"));
                        if !self.pause(STANDBY_POLL).await {
                            break;
                        }
                    }
                },
                Ok(false) => {
                    self.set_mode(Mode::Standby);
                    if !self.pause(STANDBY_POLL).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the audit export cannot take its lease");
                    self.failed(&format!("{error}"));
                    if !self.pause(STANDBY_POLL).await {
                        break;
                    }
                }
            }
        }
        self.set_mode(Mode::Stopped);
        if let Err(error) = self.store.release_export_lease(NAME, &self.replica).await {
            tracing::warn!(%error, "the audit export could not let go of its lease");
        }
        self.finished.send_replace(true);
    }

    /// Exports while this replica holds the lease.
    async fn export(&self) -> Interrupted {
        let mut after = match self.store.export_state(NAME).await {
            Ok(state) => state.after,
            Err(error) => return Interrupted::Store(error),
        };
        {
            let mut status = self.lock();
            status.mode = Mode::Exporting;
            status.after = after;
        }
        let mut renewed = self.clock.now();
        loop {
            let batch = match self.store.audit_after(after, BATCH).await {
                Ok(batch) => batch,
                Err(error) => return Interrupted::Store(error),
            };
            let Some(&(last, _)) = batch.last() else {
                // Nothing new: renew the lease now and then, and look again.
                if self.clock.now().duration_since(renewed).unwrap_or_default() >= LEASE / 3 {
                    match self.renew().await {
                        Ok(()) => renewed = self.clock.now(),
                        Err(interrupted) => return interrupted,
                    }
                }
                if !self.pause(POLL).await {
                    return Interrupted::Stopped;
                }
                continue;
            };
            let full = batch.len() == BATCH as usize;
            let events: Vec<&Event> = batch.iter().map(|(_, event)| event).collect();
            let (exported, dropped) = match self.deliver(&events).await {
                Ok(counts) => counts,
                Err(interrupted) => return interrupted,
            };
            match self
                .store
                .advance_export(
                    NAME,
                    &self.replica,
                    last,
                    exported,
                    dropped,
                    self.lease_until(),
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => return Interrupted::LostLease,
                Err(error) => return Interrupted::Store(error),
            }
            renewed = self.clock.now();
            after = last;
            self.exported.fetch_add(exported, Ordering::Relaxed);
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            {
                let mut status = self.lock();
                status.after = after;
                status.last_export = Some(renewed);
            }
            if !full && !self.pause(POLL).await {
                return Interrupted::Stopped;
            }
        }
    }

    async fn renew(&self) -> Result<(), Interrupted> {
        let now = self.clock.now();
        if self
            .store
            .take_export_lease(NAME, &self.replica, millis(now), self.lease_until())
            .await?
        {
            Ok(())
        } else {
            Err(Interrupted::LostLease)
        }
    }

    /// Sends `events` until the receiver takes them or refuses them for good; answers how many
    /// it took and how many it refused.
    async fn deliver(&self, events: &[&Event]) -> Result<(u64, u64), Interrupted> {
        let count = events.len() as u64;
        let mut wait = RETRY_BASE;
        loop {
            let now = self.clock.now();
            let body = super::encode(&super::request(events.iter().copied(), &self.replica, now));
            let answer = self.send(body, now).await;
            if *self.stop.borrow() {
                return Err(Interrupted::Stopped);
            }
            match answer {
                Answer::Accepted { rejected, message } => {
                    self.lock().failures_in_a_row = 0;
                    let rejected = rejected.min(count);
                    if rejected > 0 {
                        tracing::warn!(rejected, message = %message, "the OTLP receiver refused some audit events");
                    } else if !message.is_empty() {
                        tracing::info!(message = %message, "the OTLP receiver took the audit events, and said");
                    }
                    return Ok((count - rejected, rejected));
                }
                Answer::Refused { why } => {
                    tracing::error!(events = count, error = %why, "the OTLP receiver refused audit events; they are dropped from the export (they stay in the store)");
                    self.failed(&why);
                    return Ok((0, count));
                }
                Answer::Retry { after, why } => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    self.failed(&why);
                    let pause = after.map_or(wait, |after| after.min(RETRY_AFTER_MAX));
                    tracing::warn!(error = %why, retry_in = ?pause, "the audit export failed; retrying");
                    wait = (wait * 2).min(RETRY_MAX);
                    // Keep the lease through long waits.
                    let mut left = pause;
                    while !left.is_zero() {
                        let step = left.min(LEASE / 3);
                        if !self.pause(step).await {
                            return Err(Interrupted::Stopped);
                        }
                        left -= step;
                        self.renew().await?;
                    }
                    self.renew().await?;
                }
            }
        }
    }

    /// One POST of `body` at `now`, and what its answer means.
    async fn send(&self, body: Vec<u8>, now: SystemTime) -> Answer {
        let mut request = self
            .http
            .post(self.config.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        for (name, value) in &self.config.headers {
            request = request.header(name.clone(), value.clone());
        }
        let mut stop = self.stop.subscribe();
        let response = tokio::select! {
            response = request.send() => response,
            _ = stop.wait_for(|stopped| *stopped) => {
                return Answer::Retry { after: None, why: "stopping".to_owned() };
            }
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Answer::Retry {
                    after: None,
                    why: format!("no answer from the receiver: {}", describe(&error)),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) if status.is_success() => {
                // Taken, but the answer was cut: count it as taken (a partial success would
                // be lost, not the events).
                tracing::warn!(error = %describe(&error), "the OTLP receiver's answer was cut");
                bytes::Bytes::new()
            }
            Err(error) => {
                return Answer::Retry {
                    after: None,
                    why: format!("the receiver's answer was cut: {}", describe(&error)),
                };
            }
        };
        super::answer(status, retry_after.as_deref(), &body, now)
    }
}
