//! Admission at accept: how many client connections are open, in all and per client address,
//! and the connection type that holds its place until its socket closes.
//!
//! A connection over a limit is closed as soon as it is accepted, before any TLS work. Its place
//! is held by the socket itself ([`Conn`]), so a connection that became an exec or port-forward
//! tunnel (which outlives hyper's connection task) still counts.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::HeadWatcher;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The listener holds its maximum of connections.
    Total,
    /// The client's address holds its maximum.
    PerClient,
}

/// The open connections of one listener.
#[derive(Debug)]
pub(super) struct Admission {
    /// 0: no limit.
    max_total: usize,
    /// 0: no limit.
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub(super) fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            max_total,
            max_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for a connection from `client`, if there is one.
    pub(super) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        // An IPv4 client reached over an IPv6 socket is the same client.
        let client = client.to_canonical();
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if self.max_total > 0 && before >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        if self.max_per_client > 0 {
            let mut per_client = self.lock();
            let open = per_client.entry(client).or_insert(0);
            if *open >= self.max_per_client {
                drop(per_client);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerClient);
            }
            *open += 1;
        }
        Ok(Admitted {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.admission.max_per_client > 0 {
            let mut per_client = self.admission.lock();
            if let Some(open) = per_client.get_mut(&self.client) {
                *open -= 1;
                if *open == 0 {
                    per_client.remove(&self.client);
                }
            }
        }
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection's stream: holds its place until it is dropped (with the tunnel it may
/// become), and shows what an HTTP/1.1 client sends to the framing watcher.
pub(super) struct Conn<T> {
    io: T,
    watcher: Option<HeadWatcher>,
    _admitted: Admitted,
}

impl<T> Conn<T> {
    pub(super) fn new(io: T, admitted: Admitted, watcher: Option<HeadWatcher>) -> Self {
        Self {
            io,
            watcher,
            _admitted: admitted,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watcher)) = (&read, this.watcher.as_mut()) {
            watcher.feed(&buf.filled()[before..]);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_beyond_the_limits_are_refused_and_places_come_back() {
        let admission = Arc::new(Admission::new(3, 2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = admission.admit(a).expect("room");
        let _second = admission.admit(a).expect("room");
        assert_eq!(admission.admit(a).err(), Some(Refused::PerClient));
        // The same client over an IPv6 socket is still the same client.
        assert_eq!(
            admission
                .admit(IpAddr::V6(
                    std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()
                ))
                .err(),
            Some(Refused::PerClient)
        );
        let _third = admission.admit(b).expect("another client has room");
        assert_eq!(admission.admit(b).err(), Some(Refused::Total));
        assert_eq!(admission.open(), 3);
        drop(first);
        assert_eq!(admission.open(), 2);
        let _again = admission.admit(a).expect("a place came back");
    }

    #[test]
    fn zero_means_no_limit() {
        let admission = Arc::new(Admission::new(0, 0));
        let client: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..1000)
            .map(|_| admission.admit(client).expect("no limit"))
            .collect();
        assert_eq!(admission.open(), 1000);
        drop(held);
        assert_eq!(admission.open(), 0);
        assert!(admission.lock().is_empty());
    }
}
