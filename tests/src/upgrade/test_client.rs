//! Minimal clients for the unit tests of the sessions: the client side of WebSocket and SPDY
//! framing over an in-memory pipe, and a TCP echo server to forward ports to.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;

use super::{spdy, websocket};

/// Every test's guard against hanging: the tests assert on content, never on timing.
pub(crate) const HANG: Duration = Duration::from_secs(20);

/// The client end of a WebSocket connection (masks what it sends).
#[derive(Debug)]
pub(crate) struct WsClient {
    io: DuplexStream,
    buf: BytesMut,
}

impl WsClient {
    pub(crate) fn new(io: DuplexStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let frame = websocket::encode_frame(true, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]));
        self.io.write_all(&frame).await.expect("pipe open");
    }

    pub(crate) async fn binary(&mut self, payload: &[u8]) {
        self.send(websocket::OP_BINARY, payload).await;
    }

    /// The next frame from the server, or `None` at the end of the connection.
    pub(crate) async fn frame(&mut self) -> Option<websocket::Frame> {
        loop {
            if let Some((frame, used)) = websocket::decode_frame(&self.buf).expect("valid frame") {
                self.buf.advance(used);
                return Some(frame);
            }
            if self
                .io
                .read_buf(&mut self.buf)
                .await
                .expect("pipe readable")
                == 0
            {
                return None;
            }
        }
    }
}

/// The client end of a SPDY connection.
#[derive(Debug)]
pub(crate) struct SpdyClient<IO> {
    io: IO,
    buf: BytesMut,
    compressor: spdy::HeaderCompressor,
    decompressor: spdy::HeaderDecompressor,
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> SpdyClient<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            compressor: spdy::HeaderCompressor::new(),
            decompressor: spdy::HeaderDecompressor::new(),
        }
    }

    pub(crate) async fn send(&mut self, frame: &spdy::Frame) {
        let bytes = spdy::encode_frame(frame, &mut self.compressor);
        self.io.write_all(&bytes).await.expect("connection open");
    }

    /// Opens stream `id` with these headers and waits for the server's SYN_REPLY.
    pub(crate) async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        let headers = spdy::Headers(
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self.send(&spdy::Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers,
        })
        .await;
        match self.frame().await {
            Some(spdy::Frame::SynReply { stream_id, .. }) => assert_eq!(stream_id, id),
            other => panic!("expected SYN_REPLY for {id}, got {other:?}"),
        }
    }

    /// The next frame from the server, or `None` at the end of the connection.
    pub(crate) async fn frame(&mut self) -> Option<spdy::Frame> {
        loop {
            if let Some((frame, used)) =
                spdy::decode_frame(&self.buf, &mut self.decompressor).expect("valid frame")
            {
                self.buf.advance(used);
                return Some(frame);
            }
            if self.io.read_buf(&mut self.buf).await.expect("readable") == 0 {
                return None;
            }
        }
    }

    /// Collects data per stream until every stream in `ids` has ended (FIN).
    pub(crate) async fn data_until_fin(&mut self, ids: &[u32]) -> Vec<(u32, Vec<u8>)> {
        let mut open: Vec<u32> = ids.to_vec();
        let mut data: Vec<(u32, Vec<u8>)> = ids.iter().map(|id| (*id, Vec::new())).collect();
        while !open.is_empty() {
            match self.frame().await.expect("frames until every FIN") {
                spdy::Frame::Data {
                    stream_id,
                    fin,
                    data: bytes,
                } => {
                    if let Some((_, buf)) = data.iter_mut().find(|(id, _)| *id == stream_id) {
                        buf.extend_from_slice(&bytes);
                    }
                    if fin {
                        open.retain(|id| *id != stream_id);
                    }
                }
                spdy::Frame::Ping { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
        data
    }
}

/// A TCP server on 127.0.0.1:0 that echoes each connection until the client half-closes, then
/// closes.
pub(crate) async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = conn.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}
