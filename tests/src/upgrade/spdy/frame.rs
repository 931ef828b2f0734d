//! Frames: encoding each SPDY/3 frame to its bytes, and decoding frames from the front of a
//! buffer.

use bytes::Bytes;

use super::header_block::put_len;
use super::{
    FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, FrameError, HeaderCompressor, HeaderDecompressor,
    TYPE_GOAWAY, TYPE_HEADERS, TYPE_PING, TYPE_RST_STREAM, TYPE_SETTINGS, TYPE_SYN_REPLY,
    TYPE_SYN_STREAM, TYPE_WINDOW_UPDATE, VERSION, decode_header_block, encode_header_block,
};

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

/// Encodes a frame; header blocks go through `compressor`, which must see every block sent on
/// the connection in order.
pub(crate) fn encode_frame(frame: &Frame, compressor: &mut HeaderCompressor) -> Vec<u8> {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin,
            unidirectional,
            headers,
        } => {
            let mut body = Vec::new();
            body.extend_from_slice(&(stream_id & 0x7FFF_FFFF).to_be_bytes());
            body.extend_from_slice(&(associated_to & 0x7FFF_FFFF).to_be_bytes());
            body.push((priority & 0x07) << 5);
            body.push(0);
            body.extend(compressor.compress(&encode_header_block(headers)));
            let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
            control(TYPE_SYN_STREAM, flags, &body)
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        }
        | Frame::Headers {
            stream_id,
            fin,
            headers,
        } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let mut body = (stream_id & 0x7FFF_FFFF).to_be_bytes().to_vec();
            body.extend(compressor.compress(&encode_header_block(headers)));
            control(kind, flag(*fin, FLAG_FIN), &body)
        }
        Frame::RstStream { stream_id, status } => control(
            TYPE_RST_STREAM,
            0,
            &two_words(*stream_id & 0x7FFF_FFFF, *status),
        ),
        Frame::Settings { entries } => {
            let mut body = Vec::new();
            put_len(&mut body, entries.len());
            for (flags, id, value) in entries {
                body.push(*flags);
                body.extend_from_slice(&id.to_be_bytes()[1..]);
                body.extend_from_slice(&value.to_be_bytes());
            }
            control(TYPE_SETTINGS, 0, &body)
        }
        Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => control(
            TYPE_GOAWAY,
            0,
            &two_words(*last_good_stream_id & 0x7FFF_FFFF, *status),
        ),
        Frame::WindowUpdate { stream_id, delta } => control(
            TYPE_WINDOW_UPDATE,
            0,
            &two_words(*stream_id & 0x7FFF_FFFF, *delta & 0x7FFF_FFFF),
        ),
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let mut out = Vec::with_capacity(data.len() + 8);
            out.extend_from_slice(&(stream_id & 0x7FFF_FFFF).to_be_bytes());
            out.push(flag(*fin, FLAG_FIN));
            out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::UnknownControl { kind } => control(*kind, 0, &[]),
    }
}

fn two_words(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out[4..].copy_from_slice(&b.to_be_bytes());
    out
}

fn word(body: &[u8], at: usize) -> u32 {
    body.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when `buf` does not hold a whole frame
/// yet, otherwise the frame and how many bytes it took. Header blocks go through `decompressor`,
/// which must see every block received on the connection in order.
pub(crate) fn decode_frame(
    buf: &[u8],
    decompressor: &mut HeaderDecompressor,
) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<8>() else {
        return Ok(None);
    };
    let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
    let Some(body) = buf.get(8..8 + len) else {
        return Ok(None);
    };
    let flags = head[4];
    let fin = flags & FLAG_FIN != 0;
    let used = 8 + len;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let data = Bytes::copy_from_slice(body);
        return Ok(Some((
            Frame::Data {
                stream_id,
                fin,
                data,
            },
            used,
        )));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7FFF;
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |n: usize| {
        if len < n {
            Err(FrameError::ShortFrame { kind, len })
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need(10)?;
            Frame::SynStream {
                stream_id: word(body, 0) & 0x7FFF_FFFF,
                associated_to: word(body, 4) & 0x7FFF_FFFF,
                priority: body[8] >> 5,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers: decode_header_block(&decompressor.decompress(&body[10..])?)?,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(4)?;
            let stream_id = word(body, 0) & 0x7FFF_FFFF;
            let headers = decode_header_block(&decompressor.decompress(&body[4..])?)?;
            if kind == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    fin,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    fin,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => {
            need(8)?;
            Frame::RstStream {
                stream_id: word(body, 0) & 0x7FFF_FFFF,
                status: word(body, 4),
            }
        }
        TYPE_SETTINGS => {
            need(4)?;
            let entries = body[4..]
                .chunks_exact(8)
                .take(word(body, 0) as usize)
                .map(|e| (e[0], word(e, 0) & 0x00FF_FFFF, word(e, 4)))
                .collect();
            Frame::Settings { entries }
        }
        TYPE_PING => {
            need(4)?;
            Frame::Ping { id: word(body, 0) }
        }
        TYPE_GOAWAY => {
            need(4)?;
            Frame::GoAway {
                last_good_stream_id: word(body, 0) & 0x7FFF_FFFF,
                status: word(body, 4),
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(8)?;
            Frame::WindowUpdate {
                stream_id: word(body, 0) & 0x7FFF_FFFF,
                delta: word(body, 4) & 0x7FFF_FFFF,
            }
        }
        kind => Frame::UnknownControl { kind },
    };
    Ok(Some((frame, used)))
}
