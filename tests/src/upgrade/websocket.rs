//! The server side of RFC 6455 framing: enough to talk to kubectl's gorilla/websocket client.
//!
//! Frames from the client are masked (RFC 6455 §5.3; an unmasked one is accepted too, this is a
//! test stand-in), frames from us are not. Fragmented messages are reassembled, pings are handed
//! to the caller to answer, and no extension is negotiated, so any RSV bit is an error.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close status 1000: the purpose of the connection was fulfilled.
pub(crate) const CLOSE_NORMAL: u16 = 1000;

/// The largest message (and so frame) we accept; kubectl's messages are at most 32 KiB.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// One frame on the wire, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

/// A frame or a message the peer sent that RFC 6455 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// An RSV bit was set, but no extension was negotiated.
    #[error("reserved bits set in a frame header although no extension was negotiated")]
    ReservedBits,
    /// The opcode is not one RFC 6455 defines.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame was fragmented or longer than 125 bytes.
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControlFrame,
    /// A 64-bit length had its most significant bit set.
    #[error("frame length with the most significant bit set")]
    BadLength,
    /// A frame or a reassembled message is larger than we accept.
    #[error("message of at least {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// A continuation frame arrived with no fragmented message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new data frame arrived before the fragmented message in progress was finished.
    #[error("new data frame in the middle of a fragmented message")]
    InterleavedMessage,
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when `buf` does not hold a whole frame
/// yet, otherwise the frame (unmasked) and how many bytes it took.
pub(crate) fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || b1 & 0x7F > 125 {
                return Err(FrameError::BadControlFrame);
            }
        }
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    let masked = b1 & 0x80 != 0;
    let (len, rest) = match b1 & 0x7F {
        126 => {
            let Some((len, rest)) = rest.split_first_chunk::<2>() else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes(*len)), rest)
        }
        127 => {
            let Some((len, rest)) = rest.split_first_chunk::<8>() else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(*len);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, rest)
        }
        short => (u64::from(short), rest),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= MAX_MESSAGE)
        .ok_or(FrameError::TooLarge(len))?;
    let (mask, rest) = if masked {
        let Some((mask, rest)) = rest.split_first_chunk::<4>() else {
            return Ok(None);
        };
        (Some(*mask), rest)
    } else {
        (None, rest)
    };
    let Some(payload) = rest.get(..len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    let used = buf.len() - rest.len() + len;
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        used,
    )))
}

/// Encodes one frame; `mask` is `None` for frames a server sends.
pub(crate) fn encode_frame(
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        // The casts are in range: each arm bounds the length.
        len @ 0..=125 => out.push(mask_bit | u8::try_from(len).unwrap_or(125)),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 0x7E);
            out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 0x7F);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[body..], mask);
    }
    out
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A whole binary message, as one unfragmented frame from the server.
pub(crate) fn binary(payload: &[u8]) -> Vec<u8> {
    encode_frame(true, OP_BINARY, payload, None)
}

/// A binary message of a channel protocol: the channel byte, then the data.
pub(crate) fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    binary(&payload)
}

/// A close frame with a status code and no reason.
pub(crate) fn close(code: u16) -> Vec<u8> {
    encode_frame(true, OP_CLOSE, &code.to_be_bytes(), None)
}

/// The answer to a ping: a pong with the same application data.
pub(crate) fn pong(payload: &[u8]) -> Vec<u8> {
    encode_frame(true, OP_PONG, payload, None)
}

/// What the peer sent, after reassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A whole data message.
    Message { binary: bool, payload: Vec<u8> },
    /// A ping, to be answered with [`pong`].
    Ping(Vec<u8>),
    /// A pong (kubectl's answer to pings we never send; ignored).
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why reading from the peer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading the socket failed.
    #[error("reading the websocket connection")]
    Io(#[from] std::io::Error),
    /// The peer broke the framing rules.
    #[error("websocket protocol error")]
    Frame(#[from] FrameError),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads frames from the client and reassembles messages.
#[derive(Debug)]
pub(crate) struct Reader<R> {
    io: R,
    buf: BytesMut,
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            partial: None,
        }
    }

    /// The next event, or `None` when the peer closed the connection between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Event>, ReadError> {
        loop {
            let Some(frame) = self.next_frame().await? else {
                return Ok(None);
            };
            match frame.opcode {
                OP_PING => return Ok(Some(Event::Ping(frame.payload))),
                OP_PONG => return Ok(Some(Event::Pong)),
                OP_CLOSE => {
                    let code = frame
                        .payload
                        .first_chunk::<2>()
                        .map(|code| u16::from_be_bytes(*code));
                    return Ok(Some(Event::Close(code)));
                }
                OP_CONTINUATION => {
                    let Some((opcode, mut payload)) = self.partial.take() else {
                        return Err(FrameError::UnexpectedContinuation.into());
                    };
                    if payload.len() + frame.payload.len() > MAX_MESSAGE {
                        return Err(FrameError::TooLarge(
                            (payload.len() + frame.payload.len()) as u64,
                        )
                        .into());
                    }
                    payload.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return Ok(Some(Event::Message {
                            binary: opcode == OP_BINARY,
                            payload,
                        }));
                    }
                    self.partial = Some((opcode, payload));
                }
                opcode => {
                    if self.partial.is_some() {
                        return Err(FrameError::InterleavedMessage.into());
                    }
                    if frame.fin {
                        return Ok(Some(Event::Message {
                            binary: opcode == OP_BINARY,
                            payload: frame.payload,
                        }));
                    }
                    self.partial = Some((opcode, frame.payload));
                }
            }
        }
    }

    async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf)? {
                self.buf.advance(used);
                return Ok(Some(frame));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() && self.partial.is_none() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Writes encoded frames (or any bytes) in order until every sender is gone, then shuts the
/// connection down for writing. Stops early, dropping the rest, if a write fails.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(frame) = frames.recv().await {
        let written = async {
            io.write_all(&frame).await?;
            io.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "websocket write failed");
            return;
        }
    }
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_client_frame_decodes_to_its_payload() {
        let frame = encode_frame(true, OP_BINARY, b"\x00hello", Some([1, 2, 3, 4]));
        assert_eq!(frame[1], 0x80 | 6, "mask bit and length");
        assert_ne!(&frame[6..], b"\x00hello", "payload is masked on the wire");
        let (decoded, used) = decode_frame(&frame).expect("valid").expect("complete");
        assert_eq!(used, frame.len());
        assert_eq!(
            decoded,
            Frame {
                fin: true,
                opcode: OP_BINARY,
                payload: b"\x00hello".to_vec()
            }
        );
    }

    #[test]
    fn lengths_use_the_16_and_64_bit_forms() {
        for len in [0, 125, 126, 65_535, 65_536, 200_000] {
            let payload = vec![7u8; len];
            let frame = encode_frame(true, OP_BINARY, &payload, Some([9, 8, 7, 6]));
            let (decoded, used) = decode_frame(&frame).expect("valid").expect("complete");
            assert_eq!(used, frame.len(), "length {len}");
            assert_eq!(decoded.payload, payload, "length {len}");
            let server = encode_frame(true, OP_BINARY, &payload, None);
            let (decoded, _) = decode_frame(&server).expect("valid").expect("complete");
            assert_eq!(decoded.payload, payload, "unmasked, length {len}");
        }
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        let frame = encode_frame(true, OP_BINARY, &[5u8; 300], Some([1, 1, 1, 1]));
        for cut in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        assert_eq!(decode_frame(&[0xC2, 0]), Err(FrameError::ReservedBits));
        assert_eq!(decode_frame(&[0x83, 0]), Err(FrameError::UnknownOpcode(3)));
        assert_eq!(decode_frame(&[0x09, 0]), Err(FrameError::BadControlFrame));
        assert_eq!(decode_frame(&[0x89, 126]), Err(FrameError::BadControlFrame));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(decode_frame(&huge), Err(FrameError::BadLength));
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(decode_frame(&big), Err(FrameError::TooLarge(1 << 40)));
    }

    #[tokio::test]
    async fn reader_reassembles_fragments_around_a_ping() {
        let mut wire = Vec::new();
        wire.extend(encode_frame(
            false,
            OP_BINARY,
            b"\x01ab",
            Some([1, 2, 3, 4]),
        ));
        wire.extend(encode_frame(true, OP_PING, b"hb", Some([4, 3, 2, 1])));
        wire.extend(encode_frame(
            false,
            OP_CONTINUATION,
            b"cd",
            Some([0, 0, 0, 1]),
        ));
        wire.extend(encode_frame(
            true,
            OP_CONTINUATION,
            b"ef",
            Some([5, 5, 5, 5]),
        ));
        wire.extend(encode_frame(
            true,
            OP_CLOSE,
            &1000u16.to_be_bytes(),
            Some([1, 2, 3, 4]),
        ));
        let mut reader = Reader::new(&wire[..]);
        assert_eq!(
            reader.next().await.expect("ping"),
            Some(Event::Ping(b"hb".to_vec()))
        );
        assert_eq!(
            reader.next().await.expect("message"),
            Some(Event::Message {
                binary: true,
                payload: b"\x01abcdef".to_vec()
            })
        );
        assert_eq!(
            reader.next().await.expect("close"),
            Some(Event::Close(Some(1000)))
        );
        assert_eq!(reader.next().await.expect("eof"), None);
    }

    #[tokio::test]
    async fn reader_rejects_a_continuation_without_a_start() {
        let wire = encode_frame(true, OP_CONTINUATION, b"x", Some([1, 2, 3, 4]));
        let mut reader = Reader::new(&wire[..]);
        assert!(matches!(
            reader.next().await,
            Err(ReadError::Frame(FrameError::UnexpectedContinuation))
        ));
    }

    #[tokio::test]
    async fn reader_reports_a_frame_cut_short() {
        let wire = encode_frame(true, OP_BINARY, b"abcdef", Some([1, 2, 3, 4]));
        let mut reader = Reader::new(&wire[..wire.len() - 1]);
        assert!(matches!(reader.next().await, Err(ReadError::Truncated)));
    }
}
