//! What one client connection is doing: the requests (HTTP/2 streams) open on it now, and since
//! when it has had none, so that an idle connection can be closed; and, for HTTP/1.1, which
//! request the framing watcher refused ([`super::framing`]).
//!
//! A request counts from the moment hyper hands it to the service until its response body has
//! been sent or dropped, so an open watch or followed log keeps its connection busy however
//! quiet it is. Nothing here wakes a task per request: a request's start and end are two atomic
//! operations (and one clock read when the connection falls idle); only the connection's own
//! idle timer sleeps, once per idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::upstream::{Body, BodyError};

/// No request was flagged.
const NONE: u64 = u64::MAX;

/// One connection's requests.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Requests open now.
    open: AtomicUsize,
    /// Milliseconds from `epoch` to when `open` last fell to zero (0: never busy yet).
    idle_since_ms: AtomicU64,
    /// Requests handed to the service so far (their index, for [`Self::flagged`]).
    started: AtomicU64,
    /// The index of the request the HTTP/1.1 framing watcher found smuggling, or [`NONE`].
    flagged: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            flagged: AtomicU64::new(NONE),
        }
    }

    /// A request starts; it ends when the answer drops. Also answers the request's index.
    pub(super) fn begin(self: &Arc<Self>) -> (ActiveRequest, u64) {
        self.open.fetch_add(1, Ordering::AcqRel);
        let index = self.started.fetch_add(1, Ordering::AcqRel);
        (ActiveRequest(Arc::clone(self)), index)
    }

    /// Marks the request of this index (in order of arrival) as one to refuse.
    pub(super) fn flag(&self, index: u64) {
        self.flagged.store(index, Ordering::Release);
    }

    /// Whether the request of this index was flagged.
    pub(super) fn is_flagged(&self, index: u64) -> bool {
        self.flagged.load(Ordering::Acquire) == index
    }

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once the connection has had no open request for `timeout`.
    pub(super) async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = if self.open.load(Ordering::Acquire) == 0 {
                self.epoch
                    + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
                    + timeout
            } else {
                // Busy: look again a timeout from now (a long watch costs one wake-up per
                // timeout, not one per event).
                Instant::now() + timeout
            };
            tokio::time::sleep_until(deadline).await;
            if self.open.load(Ordering::Acquire) == 0
                && self
                    .since_epoch_ms()
                    .saturating_sub(self.idle_since_ms.load(Ordering::Acquire))
                    >= u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
            {
                return;
            }
        }
    }
}

/// One open request; dropping it ends the request.
#[derive(Debug)]
pub(super) struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            // `fetch_max`: of two requests ending at once, the later time stays.
            let now = self.0.since_epoch_ms();
            self.0.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        }
    }
}

/// A response whose body keeps its request open until it ends or is dropped.
pub(super) fn tracked(response: Response<Body>, active: ActiveRequest) -> Response<Tracked> {
    response.map(|inner| Tracked {
        inner,
        _active: active,
    })
}

/// A response body holding its request open.
pub(super) struct Tracked {
    inner: Body,
    _active: ActiveRequest,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_open_requests() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(90);

        // A request open for longer than the timeout keeps the connection busy.
        let (request, index) = activity.begin();
        assert_eq!(index, 0);
        let idle = tokio::time::timeout(Duration::from_secs(200), activity.idle(timeout)).await;
        assert!(idle.is_err(), "busy for 200 s, never idle");

        // Once it ends, the connection is idle a timeout later, and not before.
        drop(request);
        let started = Instant::now();
        activity.idle(timeout).await;
        assert_eq!(started.elapsed().as_secs(), 90);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_without_requests_is_idle_after_the_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle(Duration::from_secs(5)).await;
        assert_eq!(started.elapsed().as_secs(), 5);
    }

    #[test]
    fn only_the_flagged_request_is_refused() {
        let activity = Arc::new(Activity::new());
        let (_first, first) = activity.begin();
        let (_second, second) = activity.begin();
        activity.flag(1);
        assert!(!activity.is_flagged(first));
        assert!(activity.is_flagged(second));
    }
}
