//! The audit log: one JSON line per request, written off the request path.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::mpsc;

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
    /// The identity sent upstream in `Impersonate-User`, when the request was forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
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

/// The audit log's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Event>>,
}

impl Audit {
    /// Starts the writer. Events queue up to `capacity`; beyond that they are dropped with a
    /// warning rather than slow every request (the count of dropped events is logged).
    pub fn start(sink: Sink, capacity: usize) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = match sink {
            Sink::Off => return Ok(Self { tx: None }),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<Event>(capacity);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                let mut buffer = Vec::with_capacity(64 * 1024);
                while let Some(event) = rx.blocking_recv() {
                    write_line(&mut buffer, &event);
                    // Drain what is queued, then write once.
                    while let Ok(event) = rx.try_recv() {
                        write_line(&mut buffer, &event);
                        if buffer.len() > 60 * 1024 {
                            break;
                        }
                    }
                    if let Err(error) = out.write_all(&buffer).and_then(|()| out.flush()) {
                        tracing::warn!(%error, "cannot write the audit log");
                    }
                    buffer.clear();
                }
            })?;
        Ok(Self { tx: Some(tx) })
    }

    /// Records one event.
    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            tracing::warn!("audit log queue full; an event was dropped");
        }
    }

    /// Whether events are recorded at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
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
