//! Request and response bodies as they travel between the client and the apiserver: the one
//! boxed body type and its constructors.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming, SizeHint};

/// The error a body fails with: hyper's (HTTP/1.1, the listener) or h2's (upstream HTTP/2).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests and responses travel with.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body that is all here.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Any hyper body, boxed.
pub fn boxed(body: Incoming) -> Body {
    body.map_err(BodyError::from).boxed()
}

/// A request body cut off after `limit` bytes: the frame that goes over fails the body (so the
/// upstream request is aborted: its stream reset, or its HTTP/1.1 connection closed) and sets
/// `exceeded`, for the caller to answer 413.
pub fn limited(body: Incoming, limit: u64, exceeded: Arc<AtomicBool>) -> Body {
    Limited {
        inner: body,
        limit,
        left: limit,
        exceeded,
    }
    .boxed()
}

/// The error of a body that went over its limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct TooLarge {
    /// The limit.
    pub limit: u64,
}

struct Limited {
    inner: Incoming,
    limit: u64,
    left: u64,
    exceeded: Arc<AtomicBool>,
}

impl hyper::body::Body for Limited {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let length = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if length > self.left {
                        self.exceeded.store(true, Ordering::Release);
                        self.left = 0;
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(TooLarge { limit }.into())));
                    }
                    self.left -= length;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that holds `guard` until it ends or is dropped.
pub fn with_guard<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Holding {
        inner: body,
        _guard: guard,
    }
    .boxed()
}

/// A body that holds a guard (a pool slot, a gauge) until it ends or is dropped.
struct Holding<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> hyper::body::Body for Holding<B, G>
where
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
