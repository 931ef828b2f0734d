//! Open long-running requests (watches, followed logs, exec, attach, port-forward), so that a
//! user who loses access also loses the streams they already have: after every policy change
//! each one is decided again, with its token checked against the sessions in force, and the
//! ones no longer allowed are closed. A stream is kept under its caller's token, even when the
//! caller impersonates someone (`kubectl --as`): the caller's right to impersonate is decided
//! again as well, so revoking the caller closes it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use infra_authz::clock::Clock;
use tokio::sync::watch;

use crate::access::{Access, Outcome};
use crate::authn::Authenticator;
use crate::policy::PolicyHandle;
use crate::upstream::{Body, BodyError};

struct Entry {
    token: String,
    access: Access,
    close: watch::Sender<bool>,
}

/// The open long-running requests.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("open", &self.len())
            .finish()
    }
}

/// What is done when a stream ends (its audit event), told whether infra-proxy closed it
/// because its user lost access. Filled in once the stream's response has begun; a stream that
/// never began (its request failed) ends with nothing to do.
#[derive(Clone, Default)]
pub struct OnEnd(Arc<Mutex<Option<EndAction>>>);

type EndAction = Box<dyn FnOnce(bool) + Send>;

impl OnEnd {
    /// Does `action` when the stream ends (replacing what was set before).
    pub fn set(&self, action: impl FnOnce(bool) + Send + 'static) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(action));
    }

    /// Does what was set, once.
    fn run(&self, revoked: bool) {
        let action = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(action) = action {
            action(revoked);
        }
    }
}

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

/// Keeps a stream registered while it lives; closing it is asked through [`Registration::closed`].
#[derive(Debug)]
pub struct Registration {
    streams: Arc<Streams>,
    id: u64,
    closed: watch::Receiver<bool>,
    on_end: OnEnd,
}

impl Registration {
    /// Where to put what is done when this stream ends.
    pub fn on_end(&self) -> OnEnd {
        self.on_end.clone()
    }

    /// Resolves when the stream must be closed (its user lost access).
    pub async fn closed(&mut self) {
        while !*self.closed.borrow_and_update() {
            if self.closed.changed().await.is_err() {
                // The registry is gone: never close for that reason.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.on_end.run(*self.closed.borrow());
        self.streams
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Streams {
    /// Registers a stream of the bearer of `token` doing `access`.
    pub fn register(self: &Arc<Self>, token: &str, access: Access) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id,
                Entry {
                    token: token.to_owned(),
                    access,
                    close,
                },
            );
        Registration {
            streams: Arc::clone(self),
            id,
            closed,
            on_end: OnEnd::default(),
        }
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides every open stream again; closes those no longer allowed. Returns how many.
    pub async fn recheck(
        &self,
        authn: &Authenticator,
        policy: &PolicyHandle,
        clock: &dyn Clock,
    ) -> usize {
        let open: Vec<(u64, String, Access)> = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(id, e)| (*id, e.token.clone(), e.access.clone()))
            .collect();
        let now = clock.now();
        let mut closed = 0;
        for (id, token, access) in open {
            let allowed = match authn.authenticate(&token, now).await {
                Ok(identity) => matches!(
                    access.decide(policy, &identity, now, None),
                    Outcome::Allowed { .. }
                ),
                Err(_) => false,
            };
            if !allowed
                && let Some(entry) = self
                    .open
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&id)
            {
                let _ = entry.close.send(true);
                closed += 1;
            }
        }
        closed
    }

    /// Re-checks after every change of the grants in force, and every `every` (tokens expire,
    /// grants lapse).
    pub fn spawn_rechecks(
        self: &Arc<Self>,
        authn: Arc<Authenticator>,
        policy: Arc<PolicyHandle>,
        clock: Arc<dyn Clock>,
        every: Duration,
    ) {
        let this = Arc::clone(self);
        let mut changes = policy.subscribe_grants();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(every) => {}
                }
                if this.is_empty() {
                    continue;
                }
                let closed = this.recheck(&authn, &policy, clock.as_ref()).await;
                if closed > 0 {
                    tracing::info!(closed, "closed streams of users who lost access");
                }
            }
        });
    }
}

/// A response body that ends when `registration` says the stream must close.
pub fn closable(body: Body, registration: Registration) -> Body {
    let closed = Box::pin(async move {
        let mut registration = registration;
        registration.closed().await;
        registration
    });
    Closable {
        inner: body,
        closed: Some(closed),
    }
    .boxed()
}

type ClosedFuture = Pin<Box<dyn std::future::Future<Output = Registration> + Send + Sync>>;

struct Closable {
    inner: Body,
    closed: Option<ClosedFuture>,
}

impl hyper::body::Body for Closable {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(closed) = self.closed.as_mut()
            && closed.as_mut().poll(cx).is_ready()
        {
            self.closed = None;
            return Poll::Ready(None);
        }
        if self.closed.is_none() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}
