//! Port-forward sessions: over SPDY (a pair of streams per forwarded connection), over SPDY
//! tunnelled in WebSocket binary messages (kubectl 1.31+), and over kubelet's WebSocket channel
//! protocol (a data and an error channel per port, each opened by the port number in two
//! little-endian bytes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::websocket::{self, Event};
use super::{PortForwardTarget, spdy};

/// How long we wait, once done, for the client to hang up.
const GRACE: Duration = Duration::from_secs(30);
const BUF: usize = 32 * 1024;

pub(crate) async fn serve_spdy<IO>(io: IO, target: PortForwardTarget)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (session, mut incoming) = spdy::Session::start(io);
    let sender = session.sender.clone();
    // Error streams by request id, waiting for their data stream.
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    let mut pumps = JoinSet::new();
    while let Some(stream) = incoming.recv().await {
        while pumps.try_join_next().is_some() {}
        let kind = stream.headers.get("streamtype").unwrap_or_default();
        // Clients before requestID existed sent one pair per port at a time.
        let request = stream
            .headers
            .get("requestid")
            .or_else(|| stream.headers.get("port"))
            .unwrap_or_default()
            .to_owned();
        let answered = match kind {
            "error" => {
                error_streams.insert(request, stream.id);
                sender.reply(stream.id).await
            }
            "data" => {
                let replied = sender.reply(stream.id).await;
                let error = error_streams.remove(&request);
                pumps.spawn(forward(sender.clone(), stream, error, target.upstream));
                replied
            }
            _ => sender.reset(stream.id, spdy::RST_PROTOCOL_ERROR).await,
        };
        if answered.is_err() {
            break;
        }
    }
    pumps.shutdown().await;
    drop(sender);
    session.finish(GRACE).await;
}

/// Forwards one connection: the data stream to and from a new TCP connection to `upstream`.
/// When the upstream closes, our side of the data stream and of the error stream end (FIN), and
/// kubectl finishes the connection.
async fn forward(
    sender: spdy::Sender,
    stream: spdy::IncomingStream,
    error: Option<u32>,
    upstream: SocketAddr,
) {
    let spdy::IncomingStream {
        id,
        headers,
        mut data,
    } = stream;
    let tcp = match TcpStream::connect(upstream).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let port = headers.get("port").unwrap_or("?");
            if let Some(error) = error {
                let message = format!("error forwarding port {port} to pod stand-in: {e}");
                let _ = sender.data(error, Bytes::from(message)).await;
                let _ = sender.fin(error).await;
            }
            let _ = sender.fin(id).await;
            return;
        }
    };
    let (mut from_upstream, mut to_upstream) = tcp.into_split();
    let inbound = async {
        while let Some(chunk) = data.recv().await {
            if to_upstream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_upstream.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0; BUF];
        loop {
            match from_upstream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender
                        .data(id, Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sender.fin(id).await;
        if let Some(error) = error {
            let _ = sender.fin(error).await;
        }
    };
    tokio::join!(inbound, outbound);
}

pub(crate) async fn serve_tunnelled_spdy<IO>(io: IO, target: PortForwardTarget)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inner, outer) = tokio::io::duplex(64 * 1024);
    tokio::join!(bridge(io, outer), serve_spdy(inner, target));
}

/// Carries a byte stream in WebSocket binary messages: what the client sends goes into
/// `tunnel`, what `tunnel` yields goes out as one message per read.
async fn bridge<IO>(io: IO, tunnel: DuplexStream)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let mut writer = tokio::spawn(websocket::write_loop(write, frames_rx));
    {
        let (mut tunnel_read, mut tunnel_write) = tokio::io::split(tunnel);
        let inbound = async {
            let mut reader = websocket::Reader::new(read);
            loop {
                match reader.next().await {
                    Ok(Some(Event::Message { payload, .. })) => {
                        if tunnel_write.write_all(&payload).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(Event::Ping(data))) => {
                        let _ = frames.send(websocket::pong(&data)).await;
                    }
                    Ok(Some(Event::Pong)) => {}
                    Ok(Some(Event::Close(_)) | None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "port-forward websocket read ended");
                        break;
                    }
                }
            }
            let _ = tunnel_write.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0; BUF];
            loop {
                match tunnel_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if frames.send(websocket::binary(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = frames.send(websocket::close(websocket::CLOSE_NORMAL)).await;
        };
        let (mut inbound, mut outbound) = (pin!(inbound), pin!(outbound));
        tokio::select! {
            // The client left: the SPDY side sees the tunnel end, finishes, and ends `outbound`.
            () = &mut inbound => outbound.await,
            // The SPDY side finished and we sent a close: give the client time to answer it.
            () = &mut outbound => {
                let _ = tokio::time::timeout(GRACE, inbound).await;
            }
        }
    }
    drop(frames);
    if tokio::time::timeout(GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

pub(crate) async fn serve_channels<IO>(io: IO, ports: Vec<u16>, target: PortForwardTarget)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let mut writer = tokio::spawn(websocket::write_loop(write, frames_rx));
    // Channel numbers are one byte: at most 128 ports, as kubelet's byte arithmetic allows.
    let ports: Vec<u16> = ports.into_iter().take(128).collect();
    let mut to_upstream = Vec::new();
    let mut pumps = JoinSet::new();
    for (data_channel, port) in (0u8..=254).step_by(2).zip(&ports) {
        let _ = frames
            .send(websocket::channel_message(
                data_channel,
                &port.to_le_bytes(),
            ))
            .await;
        let _ = frames
            .send(websocket::channel_message(
                data_channel + 1,
                &port.to_le_bytes(),
            ))
            .await;
        let (tx, rx) = mpsc::unbounded_channel();
        to_upstream.push(tx);
        pumps.spawn(forward_channel(
            data_channel,
            *port,
            rx,
            frames.clone(),
            target.upstream,
        ));
    }
    let mut reader = websocket::Reader::new(read);
    let mut all_done = ports.is_empty();
    if all_done {
        let _ = frames.send(websocket::close(websocket::CLOSE_NORMAL)).await;
    }
    loop {
        let event = tokio::select! {
            event = reader.next() => event,
            Some(_) = pumps.join_next(), if !all_done => {
                if pumps.is_empty() {
                    // Every upstream closed: so does the session, as kubelet's does.
                    all_done = true;
                    let _ = frames.send(websocket::close(websocket::CLOSE_NORMAL)).await;
                }
                continue;
            }
            () = tokio::time::sleep(GRACE), if all_done => break,
        };
        match event {
            Ok(Some(Event::Message { payload, .. })) => {
                if let [channel, data @ ..] = payload.as_slice()
                    && channel % 2 == 0
                    && !data.is_empty()
                    && let Some(tx) = to_upstream.get(usize::from(channel / 2))
                {
                    let _ = tx.send(Bytes::copy_from_slice(data));
                }
            }
            Ok(Some(Event::Ping(data))) => {
                let _ = frames.send(websocket::pong(&data)).await;
            }
            Ok(Some(Event::Pong)) => {}
            Ok(Some(Event::Close(_)) | None) => break,
            Err(error) => {
                tracing::debug!(%error, "port-forward websocket read ended");
                break;
            }
        }
    }
    drop(to_upstream);
    pumps.shutdown().await;
    drop(frames);
    if tokio::time::timeout(GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Forwards one port of the channel protocol until the upstream closes.
async fn forward_channel(
    data_channel: u8,
    port: u16,
    mut from_client: mpsc::UnboundedReceiver<Bytes>,
    frames: mpsc::Sender<Vec<u8>>,
    upstream: SocketAddr,
) {
    let tcp = match TcpStream::connect(upstream).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod stand-in: {e}");
            let _ = frames
                .send(websocket::channel_message(
                    data_channel + 1,
                    message.as_bytes(),
                ))
                .await;
            return;
        }
    };
    let (mut from_upstream, mut to_upstream) = tcp.into_split();
    let inbound = async {
        while let Some(chunk) = from_client.recv().await {
            if to_upstream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_upstream.shutdown().await;
        // Keep waiting: the client may still read what the upstream sends.
        std::future::pending::<()>().await;
    };
    let outbound = async {
        let mut buf = vec![0; BUF];
        loop {
            match from_upstream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = websocket::channel_message(data_channel, &buf[..n]);
                    if frames.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = outbound => {}
        () = inbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::test_client::{HANG, SpdyClient, WsClient, echo_server};
    use crate::upgrade::websocket::{OP_BINARY, OP_CLOSE};
    use bytes::{Buf, BytesMut};

    /// One forwarded connection as kubectl makes it: the error stream (half-closed at once),
    /// the data stream, the payload, a FIN; returns (data, error) as the server sent them.
    async fn forward_once<IO>(
        client: &mut SpdyClient<IO>,
        first_id: u32,
        payload: &[u8],
    ) -> (Vec<u8>, Vec<u8>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let request = (first_id / 4).to_string();
        let (error, data) = (first_id, first_id + 2);
        let headers = |kind| {
            [
                ("streamType", kind),
                ("port", "8080"),
                ("requestID", request.as_str()),
            ]
        };
        client.open(error, &headers("error")).await;
        client
            .send(&spdy::Frame::Data {
                stream_id: error,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        client.open(data, &headers("data")).await;
        client
            .send(&spdy::Frame::Data {
                stream_id: data,
                fin: true,
                data: Bytes::copy_from_slice(payload),
            })
            .await;
        let mut got = client.data_until_fin(&[data, error]).await;
        let error_text = got.pop().expect("error stream").1;
        (got.pop().expect("data stream").1, error_text)
    }

    #[tokio::test]
    async fn spdy_streams_reach_the_upstream_and_back() {
        tokio::time::timeout(HANG, async {
            let upstream = echo_server().await;
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_spdy(server, PortForwardTarget { upstream }));
            let mut client = SpdyClient::new(client);
            assert_eq!(
                forward_once(&mut client, 1, b"hello").await,
                (b"hello".to_vec(), Vec::new())
            );
            let big = vec![0xA5; 200_000];
            assert_eq!(forward_once(&mut client, 5, &big).await, (big, Vec::new()));
            drop(client);
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn spdy_reports_an_unreachable_upstream_on_the_error_stream() {
        tokio::time::timeout(HANG, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let upstream = listener.local_addr().expect("address");
            drop(listener);
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_spdy(server, PortForwardTarget { upstream }));
            let mut client = SpdyClient::new(client);
            let (data, error) = forward_once(&mut client, 1, b"x").await;
            assert!(data.is_empty());
            let error = String::from_utf8(error).expect("utf-8");
            assert!(error.starts_with("error forwarding port 8080"), "{error}");
            drop(client);
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn spdy_tunnelled_in_websocket_messages() {
        tokio::time::timeout(HANG, async {
            let upstream = echo_server().await;
            let (server, ws_client) = tokio::io::duplex(64 * 1024);
            let session =
                tokio::spawn(serve_tunnelled_spdy(server, PortForwardTarget { upstream }));
            // The client side of the tunnel: SPDY bytes in masked binary messages.
            let (spdy_io, tunnel) = tokio::io::duplex(64 * 1024);
            let client_bridge = tokio::spawn(async move {
                let (mut ws_read, mut ws_write) = tokio::io::split(ws_client);
                let (mut tunnel_read, mut tunnel_write) = tokio::io::split(tunnel);
                let up = async move {
                    let mut buf = vec![0; 4096];
                    loop {
                        let n = tunnel_read.read(&mut buf).await.expect("readable");
                        if n == 0 {
                            let close = websocket::encode_frame(
                                true,
                                OP_CLOSE,
                                &1000u16.to_be_bytes(),
                                Some([1, 2, 3, 4]),
                            );
                            let _ = ws_write.write_all(&close).await;
                            return;
                        }
                        let frame =
                            websocket::encode_frame(true, OP_BINARY, &buf[..n], Some([9, 9, 9, 9]));
                        ws_write.write_all(&frame).await.expect("writable");
                    }
                };
                let down = async move {
                    let mut buf = BytesMut::new();
                    loop {
                        while let Some((frame, used)) =
                            websocket::decode_frame(&buf).expect("valid")
                        {
                            buf.advance(used);
                            if frame.opcode != OP_BINARY {
                                return frame.opcode;
                            }
                            tunnel_write
                                .write_all(&frame.payload)
                                .await
                                .expect("writable");
                        }
                        if ws_read.read_buf(&mut buf).await.expect("readable") == 0 {
                            return 0xFF;
                        }
                    }
                };
                let ((), last) = tokio::join!(up, down);
                last
            });
            let mut client = SpdyClient::new(spdy_io);
            assert_eq!(
                forward_once(&mut client, 1, b"through the tunnel").await,
                (b"through the tunnel".to_vec(), Vec::new())
            );
            drop(client);
            assert_eq!(
                client_bridge.await.expect("bridge ends"),
                OP_CLOSE,
                "the server closes the websocket"
            );
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn channel_protocol_announces_ports_and_forwards() {
        tokio::time::timeout(HANG, async {
            let upstream = echo_server().await;
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_channels(
                server,
                vec![8080, 9090],
                PortForwardTarget { upstream },
            ));
            let mut client = WsClient::new(client);
            let mut opening = Vec::new();
            for _ in 0..4 {
                opening.push(client.frame().await.expect("port announcement").payload);
            }
            assert_eq!(
                opening,
                [
                    vec![0, 0x90, 0x1F],
                    vec![1, 0x90, 0x1F],
                    vec![2, 0x82, 0x23],
                    vec![3, 0x82, 0x23]
                ]
            );
            client.binary(b"\x02second port").await;
            assert_eq!(
                client.frame().await.expect("echo").payload,
                b"\x02second port"
            );
            client.binary(b"\x00first port").await;
            assert_eq!(
                client.frame().await.expect("echo").payload,
                b"\x00first port"
            );
            client.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
            while client.frame().await.is_some() {}
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }
}
