//! A server-side SPDY connection: a writer task that sends frames in order, a reader task that
//! hands the client's new streams and their data over and answers PINGs, and the `Sender` any
//! task uses.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Frame, HeaderCompressor, HeaderDecompressor, Headers, MAX_DATA_FRAME, RST_REFUSED_STREAM,
    decode_frame, encode_frame,
};

/// A stream the client opened with SYN_STREAM.
#[derive(Debug)]
pub(crate) struct IncomingStream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    /// The stream's data; ends when the client half-closes (FIN) or resets the stream, or the
    /// connection ends.
    pub(crate) data: mpsc::UnboundedReceiver<Bytes>,
}

/// Sends frames on the connection, in order, from any task. Every method fails only when the
/// connection's writer is gone.
#[derive(Debug, Clone)]
pub(crate) struct Sender(mpsc::Sender<Frame>);

/// The connection's writer is gone (the connection failed or was closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SPDY connection closed")]
pub struct Closed;

impl Sender {
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Closed> {
        self.0.send(frame).await.map_err(|_| Closed)
    }

    /// Accepts a stream the client opened.
    pub(crate) async fn reply(&self, stream_id: u32) -> Result<(), Closed> {
        self.send(Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::default(),
        })
        .await
    }

    /// Sends data, split into frames of at most [`MAX_DATA_FRAME`] bytes.
    pub(crate) async fn data(&self, stream_id: u32, mut data: Bytes) -> Result<(), Closed> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.send(Frame::Data {
                stream_id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes our side of a stream: an empty data frame with FIN.
    pub(crate) async fn fin(&self, stream_id: u32) -> Result<(), Closed> {
        self.send(Frame::Data {
            stream_id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    pub(crate) async fn reset(&self, stream_id: u32, status: u32) -> Result<(), Closed> {
        self.send(Frame::RstStream { stream_id, status }).await
    }
}

/// One SPDY connection, server side: frames go out through `sender`; the client's new streams
/// arrive on the receiver [`Session::start`] returns. PINGs are answered here.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) sender: Sender,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    pub(crate) fn start<IO>(io: IO) -> (Self, mpsc::UnboundedReceiver<IncomingStream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (frames_tx, frames_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let sender = Sender(frames_tx);
        let writer = tokio::spawn(write_loop(write, frames_rx));
        let reader = tokio::spawn(read_loop(read, sender.clone(), incoming_tx));
        let session = Self {
            sender,
            reader,
            writer,
        };
        (session, incoming)
    }

    /// Ends the session once we have sent all we mean to: waits up to `grace` for the client to
    /// hang up (it does once it has read everything), then shuts our side down once every
    /// [`Sender`] clone is gone.
    pub(crate) async fn finish(self, grace: Duration) {
        let Self {
            sender,
            mut reader,
            mut writer,
        } = self;
        if tokio::time::timeout(grace, &mut reader).await.is_err() {
            reader.abort();
        }
        drop(sender);
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut io: W, mut frames: mpsc::Receiver<Frame>) {
    let mut compressor = HeaderCompressor::new();
    while let Some(frame) = frames.recv().await {
        let bytes = encode_frame(&frame, &mut compressor);
        let written = async {
            io.write_all(&bytes).await?;
            io.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "SPDY write failed");
            return;
        }
    }
    let _ = io.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut io: R,
    sender: Sender,
    incoming: mpsc::UnboundedSender<IncomingStream>,
) {
    let mut decompressor = HeaderDecompressor::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streams: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    loop {
        let frame = match decode_frame(&buf, &mut decompressor) {
            Ok(Some((frame, used))) => {
                buf.advance(used);
                frame
            }
            Ok(None) => match io.read_buf(&mut buf).await {
                Ok(0) => return,
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%error, "SPDY read failed");
                    return;
                }
            },
            Err(error) => {
                tracing::debug!(%error, "SPDY protocol error from the client");
                let _ = sender
                    .send(Frame::GoAway {
                        last_good_stream_id: streams.keys().copied().max().unwrap_or(0),
                        status: 1,
                    })
                    .await;
                return;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => {
                let (tx, data) = mpsc::unbounded_channel();
                if !fin {
                    streams.insert(stream_id, tx);
                }
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data,
                };
                if incoming.send(stream).is_err() {
                    // Nobody accepts streams any more: refuse it.
                    let _ = sender.reset(stream_id, RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() {
                        let _ = tx.send(data);
                    }
                    if fin {
                        streams.remove(&stream_id);
                    }
                }
            }
            Frame::RstStream { stream_id, .. }
            | Frame::Headers {
                stream_id,
                fin: true,
                ..
            } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Client pings have odd ids; echo them. We never ping, so ignore even ones.
                if id % 2 == 1 && sender.send(Frame::Ping { id }).await.is_err() {
                    return;
                }
            }
            Frame::GoAway { .. } => return,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::UnknownControl { .. } => {}
        }
    }
}
