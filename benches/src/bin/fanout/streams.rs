//! The parent process of `fanout`: the simulated proxies' streams, the markers they look for,
//! and the administrator's calls.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Something a change put on the wire, which every stream must see.
#[derive(Debug)]
pub(crate) struct Marker {
    pub(crate) id: u64,
    pub(crate) finder: memchr::memmem::Finder<'static>,
    pub(crate) start: Instant,
    pub(crate) remaining: AtomicUsize,
    /// The latest arrival so far, in nanoseconds after `start`.
    pub(crate) last: AtomicU64,
    pub(crate) done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) pending: RwLock<Vec<Arc<Marker>>>,
    pub(crate) bytes: AtomicU64,
    pub(crate) lines: AtomicU64,
    pub(crate) connected: AtomicUsize,
    /// The run is over: streams ending now are no news.
    pub(crate) finished: std::sync::atomic::AtomicBool,
}

pub(crate) async fn follow(http: reqwest::Client, url: String, key: String, shared: Arc<Shared>) {
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

pub(crate) struct Run {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) streams: usize,
    pub(crate) next_id: AtomicU64,
    pub(crate) child: u32,
    pub(crate) tick: f64,
}

impl Run {
    pub(crate) fn marker(&self, needle: &str, start: Instant) -> Arc<Marker> {
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

    pub(crate) fn forget(&self, marker: &Marker) {
        self.shared
            .pending
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|m| m.id != marker.id);
    }

    /// Waits until every stream saw `marker` or `timeout` passed: the time the last stream saw
    /// it, if all did.
    pub(crate) async fn wait(&self, marker: &Marker, timeout: Duration) -> Option<Duration> {
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
    pub(crate) fn cpu(&self) -> f64 {
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

    pub(crate) async fn call(
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
pub(crate) struct ChildGuard(pub(crate) std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
