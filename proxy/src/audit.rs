//! The audit log: one JSON line per request, written off the request path.
//!
//! Requests hand their event to a bounded queue; a thread of its own writes the queue out in
//! batches. When it cannot (a failed write, a full queue) the failure is counted
//! (`infra_proxy_audit_failures_total`), shown in `/readyz`, and with `--audit-fail closed`
//! requests are refused until the log can be written again.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::admin::Readiness;

/// One audit event.
#[derive(Debug, Default, Serialize)]
pub struct Event {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// The audit id, shared with the apiserver.
    pub audit_id: String,
    /// The authenticated user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The identity the request acts as: the one sent upstream in `Impersonate-User` when the
    /// request was forwarded (the user itself, or whom it impersonates), and, when the client
    /// impersonates (`kubectl --as`), the impersonated user once the user may impersonate it,
    /// forwarded or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    /// The impersonated identity's groups, when the client impersonates (those the apiserver
    /// gives it, `system:authenticated` included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub impersonated_groups: Vec<String>,
    /// The client address.
    pub source_ip: String,
    /// This proxy's destination.
    pub destination: String,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The authorization verb.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// API group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Subresource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `allow`, `deny`, or `none` when no decision was reached.
    pub decision: &'static str,
    /// Why: the grant that allowed, or the refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The status code sent to the client.
    pub code: u16,
    /// Time to the response head, in microseconds.
    pub latency_us: u64,
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
    /// Where the failure is shown (`[!] audit: ...` in `/readyz`).
    pub readiness: Option<Arc<Readiness>>,
}

/// The audit log's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Event>>,
    health: Arc<Health>,
}

/// How the audit log fares, shared by the senders and the writer. While all is well nothing
/// here is written: a request reads one flag (and only with `--audit-fail closed`), the writer
/// reads two per batch it writes.
#[derive(Debug)]
struct Health {
    reporting: Reporting,
    /// The last write failed, or the writer is gone; cleared by the next write that succeeds.
    write_failing: AtomicBool,
    /// Events were dropped on a full queue since the writer last caught up.
    dropping: AtomicBool,
    /// Why the last write failed.
    last_error: Mutex<String>,
}

impl Health {
    /// Shows the state in `/readyz` (called when it changes, never per request).
    fn show(&self) {
        let Some(readiness) = &self.reporting.readiness else {
            return;
        };
        let mut problems = Vec::new();
        if self.write_failing.load(Ordering::Acquire) {
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
        let warning = (!problems.is_empty()).then(|| {
            let then = match self.reporting.mode {
                FailMode::Open => "serving anyway (--audit-fail open)",
                FailMode::Closed => "refusing requests (--audit-fail closed)",
            };
            format!("{}; {then}", problems.join("; "))
        });
        readiness.warn("audit", warning);
    }

    fn write_failed(&self, error: &std::io::Error, events: u64) {
        self.reporting.failures.inc_by(events);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            format!("cannot write the audit log: {error}");
        if !self.write_failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "cannot write the audit log");
            self.show();
        }
    }

    /// A batch was written; `caught_up` says whether the queue is empty (asked only after
    /// events were dropped).
    fn wrote(&self, caught_up: impl FnOnce() -> bool) {
        let mut changed = false;
        if self.write_failing.load(Ordering::Relaxed) {
            self.write_failing.store(false, Ordering::Release);
            tracing::info!("the audit log is written again");
            changed = true;
        }
        if self.dropping.load(Ordering::Relaxed) && caught_up() {
            self.dropping.store(false, Ordering::Release);
            changed = true;
        }
        if changed {
            self.show();
        }
    }
}

impl Audit {
    /// Starts the writer. Events queue up to `capacity`; beyond that they are dropped with a
    /// warning rather than slow every request. Events that are dropped, and those whose write
    /// failed, are counted and shown as `reporting` says; with [`FailMode::Closed`] requests are
    /// refused meanwhile ([`Self::refuses`]).
    pub fn start(sink: Sink, capacity: usize, reporting: Reporting) -> std::io::Result<Self> {
        let health = Arc::new(Health {
            reporting,
            write_failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
        });
        let mut out: Box<dyn Write + Send> = match sink {
            Sink::Off => return Ok(Self { tx: None, health }),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<Event>(capacity);
        let writer = Arc::clone(&health);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                let mut buffer = Vec::with_capacity(64 * 1024);
                while let Some(event) = rx.blocking_recv() {
                    write_line(&mut buffer, &event);
                    let mut events = 1;
                    // Drain what is queued, then write once.
                    while let Ok(event) = rx.try_recv() {
                        write_line(&mut buffer, &event);
                        events += 1;
                        if buffer.len() > 60 * 1024 {
                            break;
                        }
                    }
                    match out.write_all(&buffer).and_then(|()| out.flush()) {
                        Ok(()) => writer.wrote(|| rx.is_empty()),
                        Err(error) => writer.write_failed(&error, events),
                    }
                    buffer.clear();
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            health,
        })
    }

    /// Records one event.
    pub fn record(&self, event: Event) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.health.reporting.failures.inc();
                tracing::warn!("audit log queue full; an event was dropped");
                if !self.health.dropping.swap(true, Ordering::AcqRel) {
                    self.health.show();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.health.reporting.failures.inc();
                "the audit log writer stopped".clone_into(
                    &mut self
                        .health
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                if !self.health.write_failing.swap(true, Ordering::AcqRel) {
                    tracing::error!("the audit log writer stopped");
                    self.health.show();
                }
            }
        }
    }

    /// Whether events are recorded at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether a request must be refused because it could not be recorded: with
    /// `--audit-fail closed`, while the last write failed or the queue is full.
    pub fn refuses(&self) -> bool {
        self.health.reporting.mode == FailMode::Closed
            && self.tx.as_ref().is_some_and(|tx| {
                self.health.write_failing.load(Ordering::Acquire) || tx.capacity() == 0
            })
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

fn write_line(buffer: &mut Vec<u8>, event: &Event) {
    if serde_json::to_writer(&mut *buffer, event).is_ok() {
        buffer.push(b'\n');
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
