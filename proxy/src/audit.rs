//! The audit log: one event per request (the schema of [`infra_api::audit`]), recorded off the
//! request path.
//!
//! A request hands over what it learned (a [`Record`]: the values it already owns, moved, no
//! text built) by pushing it onto a bounded list under a lock; nothing wakes the writer. A
//! thread of its own takes the whole list every few milliseconds (swapping in the buffer it
//! emptied last time, so neither side allocates in the steady state), turns the records into
//! events, and writes them out in one go: as JSON lines to the file or standard output
//! (`--audit-log`), and to the control plane's audit trail when there is one ([`forward`]):
//! directly into the store for the proxy in the control plane's process, in batched POSTs for a
//! proxy of another cluster, through a bounded spool file while the control plane cannot be
//! reached ([`spool`]).
//!
//! When an event cannot be recorded (a failed write, a full queue, a full spool) the failure is
//! counted (`infra_proxy_audit_failures_total`), shown in `/readyz`, and with
//! `--audit-fail closed` requests are refused until events can be recorded again.

use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use infra_api::audit::Event;
use infra_authz::attributes::Attributes;
use infra_authz::decision::{Decision, Identity};
use prometheus_client::metrics::counter::Counter;

use crate::admin::Readiness;

pub mod forward;
mod line;
pub mod spool;

pub use forward::Forward;
pub use line::Line;

/// How often the writer takes what the requests queued.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// Which event of a request a [`Record`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// The one event of a request that is not long-running (or that failed before its stream
    /// opened).
    #[default]
    Whole,
    /// A long-running request's start: its response head was sent and the stream is open.
    Start,
    /// Its end, `open` after the start, under the event id `id`; `revoked` when infra-proxy
    /// closed it because its user lost access.
    End {
        /// The end event's own id (the audit id stays the request's).
        id: AuditId,
        /// How long the stream was open.
        open: Duration,
        /// Closed by infra-proxy because access was revoked.
        revoked: bool,
    },
}

/// What a request learned, for its audit event: values the request owned anyway, moved here.
/// The writer thread serializes its event straight from it ([`Record::line`]).
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request arrived.
    pub time: SystemTime,
    /// Its audit id (also the event's id).
    pub audit_id: AuditId,
    /// The client address.
    pub peer: SocketAddr,
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// Who asked.
    pub identity: Option<Identity>,
    /// Whom they impersonated, once allowed to.
    pub impersonated: Option<Identity>,
    /// Whether the request was forwarded upstream.
    pub forwarded: bool,
    /// What was asked.
    pub attrs: Option<Attributes>,
    /// The decision.
    pub decision: Option<Decision>,
    /// The status sent.
    pub code: u16,
    /// Time to the response head.
    pub latency: Duration,
    /// Which event of the request this is.
    pub part: Part,
}

impl Record {
    /// The end event of the long-running request this record started: `open` after its
    /// arrival, `revoked` when infra-proxy closed it.
    #[must_use]
    pub fn ended(mut self, open: Duration, revoked: bool) -> Self {
        self.time += open;
        self.part = Part::End {
            id: AuditId::next(),
            open,
            revoked,
        };
        self
    }
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
    /// Nowhere (benchmarks of the bare path).
    Off,
}

/// How audit lines are written to `--audit-log` (`--audit-format`); the control plane's trail
/// always takes Infra's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Infra's event schema (`docs/audit.md`).
    #[default]
    Infra,
    /// The Kubernetes audit format (`audit.k8s.io/v1` `Event`, level `Metadata`), as the
    /// apiserver's audit log, for tools that read those.
    Kubernetes,
}

/// What the proxy does while it cannot record requests (`--audit-fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailMode {
    /// Keep serving; the failure is counted and shown.
    #[default]
    Open,
    /// Refuse requests (503) until the audit log can be written again.
    Closed,
}

/// Who hears that the audit log fails, and what the proxy does then.
#[derive(Debug, Clone, Default)]
pub struct Reporting {
    /// Open or closed.
    pub mode: FailMode,
    /// Events not recorded (`infra_proxy_audit_failures_total`).
    pub failures: Counter,
    /// Events the control plane's audit trail took (`infra_proxy_audit_recorded_total`).
    pub recorded: Counter,
    /// Events put in the spool file while the control plane could not take them
    /// (`infra_proxy_audit_spooled_total`).
    pub spooled: Counter,
    /// Where the failure is shown (`[!] audit: ...` in `/readyz`).
    pub readiness: Option<Arc<Readiness>>,
    /// How lines are written to the log.
    pub format: Format,
}

/// Where events go besides the local log: the control plane's audit trail, through a spool.
#[derive(Debug)]
pub struct Trail {
    /// Sends a batch to the control plane.
    pub forward: Arc<dyn Forward>,
    /// Where events wait while it cannot be reached.
    pub spool: spool::Spool,
}

/// The audit log's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    queue: Option<Arc<Queue>>,
    health: Arc<Health>,
}

/// The records waiting for the writer.
#[derive(Debug)]
struct Queue {
    records: Mutex<Vec<Record>>,
    capacity: usize,
    /// Set when the last sender is gone or [`Audit::close`] is called: the writer writes what
    /// is left and stops.
    closed: AtomicBool,
    /// The writer thread, for [`Audit::close`] to wait for.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Audit {
    fn drop(&mut self) {
        // The writer holds one reference; when only it and this one are left, this is the last
        // sender.
        if let Some(queue) = &self.queue
            && Arc::strong_count(queue) == 2
        {
            queue.closed.store(true, Ordering::Release);
        }
    }
}

/// How the audit log fares, shared by the senders and the writer. While all is well nothing
/// here is written: a request reads one flag (and only with `--audit-fail closed`), the writer
/// reads a few per batch it writes.
#[derive(Debug)]
struct Health {
    reporting: Reporting,
    /// The last write failed; cleared by the next write that succeeds.
    write_failing: AtomicBool,
    /// Events were dropped on a full queue since the writer last caught up.
    dropping: AtomicBool,
    /// The control plane cannot be reached and the spool is full: events are lost.
    spool_full: AtomicBool,
    /// The control plane cannot be reached; events are spooled.
    spooling: AtomicBool,
    /// The queue is full (requests are refused with `--audit-fail closed`).
    queue_full: AtomicBool,
    /// Why the last write or send failed.
    last_error: Mutex<String>,
}

impl Health {
    /// Shows the state in `/readyz` (called when it changes, never per request).
    fn show(&self) {
        let Some(readiness) = &self.reporting.readiness else {
            return;
        };
        let mut problems = Vec::new();
        if self.write_failing.load(Ordering::Acquire) || self.spool_full.load(Ordering::Acquire) {
            problems.push(
                self.last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            );
        }
        if self.dropping.load(Ordering::Acquire) {
            problems.push("the audit queue is full: events are dropped".to_owned());
        }
        let warning = if problems.is_empty() {
            self.spooling.load(Ordering::Acquire).then(|| {
                "the control plane does not take audit events; they are kept in the spool file until it does".to_owned()
            })
        } else {
            let then = match self.reporting.mode {
                FailMode::Open => "serving anyway (--audit-fail open)",
                FailMode::Closed => "refusing requests (--audit-fail closed)",
            };
            Some(format!("{}; {then}", problems.join("; ")))
        };
        readiness.warn("audit", warning);
    }

    fn set_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn write_failed(&self, error: &std::io::Error, events: u64) {
        self.reporting.failures.inc_by(events);
        self.set_error(format!("cannot write the audit log: {error}"));
        if !self.write_failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "cannot write the audit log");
            self.show();
        }
    }

    /// Sets `flag` to `on`, showing the change if there is one.
    fn flag(&self, flag: &AtomicBool, on: bool) {
        if flag.load(Ordering::Relaxed) != on {
            flag.store(on, Ordering::Release);
            self.show();
        }
    }
}

impl Audit {
    /// Starts the writer for the proxy of `destination`. Events queue up to `capacity`; beyond
    /// that they are dropped rather than slow every request. They go to `sink` and, when given,
    /// to the control plane's `trail`. Events that are dropped, and those whose write failed,
    /// are counted and shown as `reporting` says; with [`FailMode::Closed`] requests are refused
    /// meanwhile ([`Self::refuses`]).
    pub fn start(
        sink: Sink,
        trail: Option<Trail>,
        destination: &str,
        capacity: usize,
        reporting: Reporting,
    ) -> std::io::Result<Self> {
        let health = Arc::new(Health {
            reporting,
            write_failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            spool_full: AtomicBool::new(false),
            spooling: AtomicBool::new(false),
            queue_full: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
        });
        let out: Option<Box<dyn Write + Send>> = match sink {
            Sink::Off => None,
            Sink::Stdout => Some(Box::new(std::io::stdout())),
            Sink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        if out.is_none() && trail.is_none() {
            return Ok(Self {
                queue: None,
                health,
            });
        }
        let queue = Arc::new(Queue {
            records: Mutex::new(Vec::with_capacity(capacity.min(4096))),
            capacity,
            closed: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let mut writer = Writer {
            queue: Arc::clone(&queue),
            health: Arc::clone(&health),
            destination: destination.to_owned(),
            out,
            trail,
            lines: Vec::with_capacity(64 * 1024),
            sink_lines: Vec::new(),
            events: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run())?;
        *queue.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(Self {
            queue: Some(queue),
            health,
        })
    }

    /// Records one request.
    pub fn record(&self, record: Record) {
        let Some(queue) = &self.queue else {
            return;
        };
        let mut records = queue.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() < queue.capacity {
            records.push(record);
            return;
        }
        drop(records);
        self.health.reporting.failures.inc();
        if !self.health.queue_full.swap(true, Ordering::AcqRel) {
            tracing::warn!("audit queue full; events are dropped");
        }
        if !self.health.dropping.swap(true, Ordering::AcqRel) {
            self.health.show();
        }
    }

    /// Stops recording at shutdown: the writer writes (or spools) what is queued and stops;
    /// answers once it has. Requests recorded after this are lost.
    pub async fn close(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        queue.closed.store(true, Ordering::Release);
        let thread = queue
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Whether events are recorded at all.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether a request must be refused because it could not be recorded: with
    /// `--audit-fail closed`, while the last write failed, the queue is full, or the control
    /// plane cannot be reached and the spool is full.
    pub fn refuses(&self) -> bool {
        self.health.reporting.mode == FailMode::Closed
            && self.queue.is_some()
            && (self.health.write_failing.load(Ordering::Acquire)
                || self.health.queue_full.load(Ordering::Acquire)
                || self.health.spool_full.load(Ordering::Acquire))
    }
}

/// The writer thread's state.
struct Writer {
    queue: Arc<Queue>,
    health: Arc<Health>,
    destination: String,
    out: Option<Box<dyn Write + Send>>,
    trail: Option<Trail>,
    /// The JSON lines of the batch, reused.
    lines: Vec<u8>,
    /// The lines for the log when they are in another format, reused.
    sink_lines: Vec<u8>,
    /// The events of the batch (for the store in this process), reused.
    events: Vec<Event>,
}

impl Writer {
    fn run(&mut self) {
        let mut batch: Vec<Record> = Vec::with_capacity(self.queue.capacity.min(4096));
        loop {
            let closed = self.queue.closed.load(Ordering::Acquire);
            {
                let mut records = self
                    .queue
                    .records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                std::mem::swap(&mut *records, &mut batch);
            }
            if self.health.queue_full.load(Ordering::Relaxed) {
                self.health.queue_full.store(false, Ordering::Release);
            }
            if !batch.is_empty() {
                self.write(&batch);
                batch.clear();
            } else if self.health.dropping.load(Ordering::Relaxed) {
                self.health.flag(&self.health.dropping, false);
            }
            if let Some(trail) = &mut self.trail {
                drain_spool(trail, &self.health);
            }
            if closed {
                return;
            }
            std::thread::sleep(FLUSH_EVERY);
        }
    }

    fn write(&mut self, batch: &[Record]) {
        self.lines.clear();
        self.sink_lines.clear();
        self.events.clear();
        let kubernetes = self.health.reporting.format == Format::Kubernetes && self.out.is_some();
        let events = self
            .trail
            .as_ref()
            .is_some_and(|t| t.forward.wants_events());
        for record in batch {
            let start = self.lines.len();
            if serde_json::to_writer(&mut self.lines, &record.line(&self.destination)).is_err() {
                self.lines.truncate(start);
                continue;
            }
            if kubernetes || events {
                // The rare consumers of owned events read the line back.
                if let Ok(event) = serde_json::from_slice::<Event>(&self.lines[start..]) {
                    if kubernetes
                        && let Some(k8s) = event.to_kubernetes()
                        && serde_json::to_writer(&mut self.sink_lines, &k8s).is_ok()
                    {
                        self.sink_lines.push(b'\n');
                    }
                    if events {
                        self.events.push(event);
                    }
                }
            }
            self.lines.push(b'\n');
        }
        let count = batch.len() as u64;
        if let Some(out) = &mut self.out {
            let lines = if kubernetes {
                &self.sink_lines
            } else {
                &self.lines
            };
            match out.write_all(lines).and_then(|()| out.flush()) {
                Ok(()) => {
                    if self.health.write_failing.load(Ordering::Relaxed) {
                        tracing::info!("the audit log is written again");
                        self.health.flag(&self.health.write_failing, false);
                    }
                }
                Err(error) => self.health.write_failed(&error, count),
            }
        }
        if let Some(trail) = &mut self.trail {
            // Straight to the control plane when nothing waits in the spool, else behind it.
            let sent = trail.spool.is_empty()
                && match trail.forward.send(&self.events, &self.lines) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::debug!(%error, "sending audit events failed; spooling");
                        self.health
                            .set_error(format!("cannot send audit events: {error}"));
                        false
                    }
                };
            if sent {
                self.health.reporting.recorded.inc_by(count);
                return;
            }
            match trail.spool.append(&self.lines) {
                Ok(()) => {
                    self.health.reporting.spooled.inc_by(count);
                    self.health.flag(&self.health.spooling, true);
                    self.health.flag(&self.health.spool_full, false);
                }
                Err(error) => {
                    self.health.reporting.failures.inc_by(count);
                    let text = self
                        .health
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    self.health
                        .set_error(format!("{text}; and cannot spool them: {error}"));
                    if !self.health.spool_full.load(Ordering::Relaxed) {
                        tracing::warn!(%error, "audit events lost: the control plane does not take them and the spool cannot keep them");
                    }
                    self.health.flag(&self.health.spool_full, true);
                }
            }
        }
    }
}

/// Sends what waits in the spool, a batch at a time, until it is empty or a send fails.
fn drain_spool(trail: &mut Trail, health: &Health) {
    while !trail.spool.is_empty() {
        let (events, lines) = match trail.spool.next_batch() {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "reading the audit spool failed");
                return;
            }
        };
        match trail.forward.send(&events, &lines) {
            Ok(()) => {
                health.reporting.recorded.inc_by(events.len() as u64);
                if let Err(error) = trail.spool.consumed() {
                    tracing::warn!(%error, "emptying the audit spool failed");
                    return;
                }
            }
            Err(error) => {
                health.set_error(format!("cannot send audit events: {error}"));
                return;
            }
        }
    }
    if health.spooling.load(Ordering::Relaxed) {
        tracing::info!("the audit spool is delivered");
        health.flag(&health.spooling, false);
        health.flag(&health.spool_full, false);
    }
}

/// A request's audit id, sent to the apiserver in `Audit-Id` and written in the audit line: a
/// UUID in the version 4 layout, made without a system call per request.
///
/// Each thread draws a random UUID from the OS once (`Uuid::new_v4`); after that its ids keep the
/// random upper 64 bits and count up in the lower 62 (the variant takes the other two). So the
/// ids of one thread never repeat (for 2^62 requests), and ids of different threads and
/// processes differ in their random upper bits, as two v4 UUIDs would. An audit id needs to be
/// unique, not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditId(uuid::Uuid);

impl AuditId {
    /// The next id of this thread.
    pub fn next() -> Self {
        thread_local! {
            static NEXT: Cell<(u64, u64)> = Cell::new(uuid::Uuid::new_v4().as_u64_pair());
        }
        let (high, low) = NEXT.with(|next| {
            let (high, low) = next.get();
            next.set((high, low.wrapping_add(1)));
            (high, low)
        });
        let bytes = uuid::Uuid::from_u64_pair(high, low).into_bytes();
        // Sets the version (4) and variant bits, as `new_v4` does.
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The hyphenated lower-case form, written into `buffer`.
    pub fn encode<'b>(&self, buffer: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buffer)
    }
}

impl std::fmt::Display for AuditId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_ids_are_v4_uuids_that_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let mut buffer = [0; 36];
            let id = AuditId::next().encode(&mut buffer).to_owned();
            let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert!(seen.insert(id.clone()), "{id} repeated");
        }
        let other = std::thread::spawn(|| AuditId::next().to_string())
            .join()
            .expect("the thread ran");
        assert!(!seen.contains(&other), "{other} repeated on another thread");
    }
}
