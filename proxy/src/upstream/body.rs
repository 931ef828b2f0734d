//! Request and response bodies as they travel between the client and the apiserver: the one
//! boxed body type and its constructors.

use std::pin::Pin;
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
