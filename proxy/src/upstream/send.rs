//! Sending requests to the apiserver: over a pooled connection (HTTP/2 driven from the
//! request's own task, or HTTP/1.1), and upgrades over a dedicated HTTP/1.1 connection.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::pool::Sender;
use super::{Body, BodyError, Upstream, UpstreamError, boxed, with_guard};

impl Upstream {
    /// Sends a normal (non-upgrade) request over the pool. The response body keeps its stream
    /// slot until it ends or is dropped; dropping it cancels the upstream request.
    ///
    /// A pooled HTTP/2 connection the apiserver has sent away (GOAWAY: it is shutting down, or
    /// rebalancing clients with `--goaway-chance`) refuses new streams before anything is sent,
    /// while its open watches go on; the request then goes to another connection, or a new one.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        self.send_holding(request, ()).await
    }

    /// [`Self::send`], with `guard` held as long as the stream slot: until the response body
    /// ends or is dropped (or until the request fails or is dropped before its response).
    pub async fn send_holding<G: Send + Sync + Unpin + 'static>(
        &self,
        mut request: Request<Body>,
        guard: G,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut attempts = 0;
        let (slot, ready) = loop {
            let slot = self.slot().await?;
            let Sender::H2 { sender, closed } = &slot.0.sender else {
                break (slot, None);
            };
            match sender.clone().ready().await {
                Ok(ready) => break (slot, Some(ready)),
                Err(error) => {
                    closed.store(true, Ordering::Release);
                    attempts += 1;
                    if attempts == 3 {
                        return Err(error.into());
                    }
                    tracing::debug!(%error, "the apiserver sent a pooled connection away; using another");
                }
            }
        };
        let response = match (&slot.0.sender, ready) {
            (Sender::H2 { closed, .. }, Some(ready)) => {
                *request.version_mut() = http::Version::HTTP_2;
                let response = send_h2(ready, request).await;
                if let Err(error) = &response
                    && (error.is_io() || error.is_go_away())
                {
                    closed.store(true, Ordering::Release);
                }
                Ok::<_, UpstreamError>(response?)
            }
            (Sender::H1(sender), _) => {
                self.origin_form(&mut request);
                let mut sender = sender.lock().await;
                // A pooled HTTP/1.1 connection is handed out only when idle; wait for it to be
                // ready in case the previous response's end is still being read.
                sender.ready().await?;
                Ok(sender.send_request(request).await?.map(boxed))
            }
            // The loop above makes every HTTP/2 slot ready; never reached.
            (Sender::H2 { .. }, None) => Err(UpstreamError::Request(
                "an upstream HTTP/2 connection was not made ready".into(),
            )),
        }?;
        Ok(response.map(|body| with_guard(body, (slot, guard))))
    }

    /// Makes `request` an HTTP/1.1 request in origin form (`GET /path?query`, RFC 9112 section
    /// 3.2.1) with the apiserver's `Host`: hyper's HTTP/1.1 client writes the request target as
    /// it is given, and an absolute URI would go out in absolute form, which only proxies get.
    fn origin_form<B>(&self, request: &mut Request<B>) {
        *request.version_mut() = http::Version::HTTP_11;
        if let Some(authority) = self.base.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let origin = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *request.uri_mut() = http::Uri::from(origin);
    }

    /// Sends an upgrade request on a dedicated HTTP/1.1 connection. The caller splices only
    /// after a `101`.
    pub async fn send_upgrade(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.origin_form(&mut request);
        let tls = self.connect_tls(&self.upgrade_tls).await?;
        let (mut sender, connection) = http1::Builder::new().handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        Ok(sender.send_request(request).await?)
    }
}

/// Sends one request on a ready HTTP/2 connection handle from the calling task and awaits its
/// response head. A request body streams from a task of its own, within the stream's flow control.
async fn send_h2(
    mut sender: h2::client::SendRequest<Bytes>,
    request: Request<Body>,
) -> Result<Response<Body>, h2::Error> {
    let (parts, body) = request.into_parts();
    let end = body.is_end_stream();
    let (response, stream) = sender.send_request(Request::from_parts(parts, ()), end)?;
    // The body is piped from a task of its own. Until the response head arrives, that task
    // belongs to this request: if the request is given up (its deadline passed, its client
    // went away) the pipe stops too, and with both handles gone h2 resets the stream.
    let mut pipe =
        AbortOnDrop((!end).then(|| tokio::spawn(pipe_body(body, stream)).abort_handle()));
    let response = response.await?;
    // Answered: the rest of the body may still be wanted (or the apiserver resets the stream).
    pipe.0 = None;
    Ok(response.map(|recv| {
        H2Body {
            recv,
            data_done: false,
        }
        .boxed()
    }))
}

/// Aborts a task, if it still holds one, when dropped.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Copies a request body into its HTTP/2 stream as the stream's window allows. Ends the
/// stream when the body ends; resets it when the body fails (the client went away); stops
/// when the apiserver resets the stream.
async fn pipe_body(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _reset = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "request body failed: resetting the upstream stream");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    while !data.is_empty() {
                        stream.reserve_capacity(data.len());
                        match poll_fn(|cx| stream.poll_capacity(cx)).await {
                            Some(Ok(0)) => {}
                            Some(Ok(granted)) => {
                                let chunk = data.split_to(granted.min(data.len()));
                                if stream.send_data(chunk, false).is_err() {
                                    return;
                                }
                            }
                            Some(Err(_)) | None => return,
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                        return;
                    }
                }
            },
        }
    }
}

/// An upstream HTTP/2 response body. Each chunk handed on gives its bytes of window back to
/// the apiserver, so a slow client slows the apiserver's stream (and nothing else).
struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
