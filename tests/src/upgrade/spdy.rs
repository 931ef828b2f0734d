//! The server side of SPDY/3 framing, as kubectl's moby/spdystream client speaks it.
//!
//! A control frame is `1 | version(15) | type(16) | flags(8) | length(24)` then its fields; a data
//! frame is `0 | stream id(31) | flags(8) | length(24)` then the data. Header blocks in SYN_STREAM,
//! SYN_REPLY and HEADERS are zlib streams seeded with the SPDY/3 dictionary; the compression
//! context lasts the whole connection (one per direction) and each block ends with a sync flush.
//! spdystream does no flow control, so WINDOW_UPDATE is parsed and ignored and never sent.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The only SPDY version kubectl speaks (its `Upgrade: SPDY/3.1` names 3.1, its frames say 3).
pub(crate) const VERSION: u16 = 3;

pub(crate) const TYPE_SYN_STREAM: u16 = 1;
pub(crate) const TYPE_SYN_REPLY: u16 = 2;
pub(crate) const TYPE_RST_STREAM: u16 = 3;
pub(crate) const TYPE_SETTINGS: u16 = 4;
pub(crate) const TYPE_PING: u16 = 6;
pub(crate) const TYPE_GOAWAY: u16 = 7;
pub(crate) const TYPE_HEADERS: u16 = 8;
pub(crate) const TYPE_WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status: the stream is not one we serve.
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the peer broke the protocol on this stream.
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;

/// A decompressed header block larger than this is refused (kubectl's are tens of bytes).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The data we put in one frame.
pub(crate) const MAX_DATA_FRAME: usize = 32 * 1024;

/// The zlib dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00 §2.6.10.1), byte for byte as in
/// moby/spdystream's `spdy/dictionary.go`; 1423 bytes, Adler-32 0xe3c6a7c2.
pub(crate) const DICTIONARY: &[u8; 1423] = &[
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68,
    0x65, 0x61, 0x64, 0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70,
    0x75, 0x74, 0x00, 0x00, 0x00, 0x06, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00,
    0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65,
    0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f,
    0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c,
    0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70,
    0x74, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00,
    0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68,
    0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x61, 0x63,
    0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x6f,
    0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10,
    0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67,
    0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x6f,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00, 0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74,
    0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00, 0x00, 0x00, 0x04, 0x66,
    0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08, 0x69,
    0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f,
    0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d,
    0x69, 0x66, 0x2d, 0x6e, 0x6f, 0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d,
    0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65,
    0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65,
    0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00,
    0x0c, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00,
    0x06, 0x70, 0x72, 0x61, 0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79,
    0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
    0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61,
    0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00,
    0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65,
    0x72, 0x00, 0x00, 0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c,
    0x65, 0x72, 0x00, 0x00, 0x00, 0x11, 0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65,
    0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61,
    0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61, 0x67, 0x65, 0x6e, 0x74,
    0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61, 0x00,
    0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77,
    0x77, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x06, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00,
    0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30,
    0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03, 0x75, 0x72,
    0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73,
    0x65, 0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65,
    0x70, 0x2d, 0x61, 0x6c, 0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69,
    0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31, 0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35,
    0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33, 0x30, 0x33, 0x33, 0x30, 0x34, 0x33,
    0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30, 0x35, 0x34, 0x30,
    0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34,
    0x31, 0x37, 0x35, 0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e,
    0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65,
    0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20,
    0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30, 0x31, 0x20, 0x4d, 0x6f,
    0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79, 0x34,
    0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30,
    0x31, 0x20, 0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30,
    0x33, 0x20, 0x46, 0x6f, 0x72, 0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e,
    0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64, 0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65,
    0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x45, 0x72, 0x72, 0x6f,
    0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20,
    0x55, 0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46,
    0x65, 0x62, 0x20, 0x4d, 0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a,
    0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20, 0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20,
    0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65, 0x63, 0x20, 0x30, 0x30, 0x3a, 0x30,
    0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65, 0x2c, 0x20, 0x57,
    0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x65, 0x64, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61,
    0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69, 0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d, 0x6c,
    0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74,
    0x2f, 0x6a, 0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c,
    0x69, 0x63, 0x70, 0x72, 0x69, 0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65,
    0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65, 0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64,
    0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75, 0x74, 0x66, 0x2d, 0x38, 0x63,
    0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35, 0x39, 0x2d,
    0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

/// A header block: lower-case names, values as sent (several values joined by NUL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(pub(crate) Vec<(String, String)>);

impl Headers {
    /// The value of `name`, compared without regard to case.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Settings are parsed as `(flags, id, value)` and otherwise ignored.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type we do not know, skipped as SPDY/3 says.
    UnknownControl {
        kind: u16,
    },
}

/// A frame the peer sent that SPDY/3 does not allow, or a header block that does not inflate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A control frame carried a version other than 3.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A control frame is shorter than its fixed fields.
    #[error("control frame of type {kind} too short: {len} bytes")]
    ShortFrame { kind: u16, len: usize },
    /// A header block is malformed after decompression.
    #[error("malformed header block")]
    BadHeaderBlock,
    /// A header block inflates to more than we accept.
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    /// zlib refused the header block.
    #[error("header block does not decompress: {0}")]
    Zlib(String),
}

/// The compressing side of a connection's header context: we compress what we send.
#[derive(Debug)]
pub(crate) struct HeaderCompressor(Compress);

impl HeaderCompressor {
    pub(crate) fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream accepts a dictionary");
        Self(deflate)
    }

    /// The compressed form of one header block, ending with a sync flush.
    pub(crate) fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block;
        loop {
            let before = self.0.total_in();
            // Compressing into a Vec cannot fail for a stream we created ourselves.
            self.0
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            let consumed = usize::try_from(self.0.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            // zlib's rule: the flush is complete once a call leaves output space unused.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// The inflating side of a connection's header context: we decompress what the client sends.
#[derive(Debug)]
pub(crate) struct HeaderDecompressor(Decompress);

impl HeaderDecompressor {
    pub(crate) fn new() -> Self {
        Self(Decompress::new(true))
    }

    /// Inflates one compressed header block; the dictionary is supplied when zlib asks for it.
    pub(crate) fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            let (in_before, out_before) = (self.0.total_in(), self.0.total_out());
            let result = self
                .0
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.0.total_in() - in_before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            let progressed = consumed > 0 || self.0.total_out() > out_before;
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Zlib("header stream ended".to_owned()));
                }
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if out.len() >= MAX_HEADER_BLOCK {
                        return Err(FrameError::HeaderBlockTooLarge);
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(FrameError::Zlib("no progress".to_owned()));
                    }
                    out.reserve(out.capacity().max(64));
                }
                Err(error) if error.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Zlib(e.to_string()))?;
                }
                Err(error) => return Err(FrameError::Zlib(error.to_string())),
            }
        }
    }
}

/// Serializes a header block (before compression).
pub(crate) fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    put_len(&mut out, headers.0.len());
    for (name, value) in &headers.0 {
        put_len(&mut out, name.len());
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        put_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Parses a decompressed header block.
pub(crate) fn decode_header_block(mut block: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(block: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        let len = take_u32(block)? as usize;
        if block.len() < len {
            return Err(FrameError::BadHeaderBlock);
        }
        let (value, rest) = block.split_at(len);
        *block = rest;
        Ok(value)
    }
    fn take_u32(block: &mut &[u8]) -> Result<u32, FrameError> {
        let (n, rest) = block
            .split_first_chunk::<4>()
            .ok_or(FrameError::BadHeaderBlock)?;
        *block = rest;
        Ok(u32::from_be_bytes(*n))
    }
    let count = take_u32(&mut block)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut block)?;
        let value = take(&mut block)?;
        let name = std::str::from_utf8(name).map_err(|_| FrameError::BadHeaderBlock)?;
        let value = std::str::from_utf8(value).map_err(|_| FrameError::BadHeaderBlock)?;
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    if !block.is_empty() {
        return Err(FrameError::BadHeaderBlock);
    }
    Ok(Headers(headers))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        let (mut a, mut b) = (1u32, 0u32);
        for byte in DICTIONARY {
            a = (a + u32::from(*byte)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(b << 16 | a, 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_round_trip_through_one_context() {
        let mut compressor = HeaderCompressor::new();
        let mut decompressor = HeaderDecompressor::new();
        let blocks = [
            headers(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ]),
            headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            headers(&[]),
            headers(&[("x-multi", "a\0b"), ("streamtype", "stdout")]),
        ];
        let mut first = true;
        for block in &blocks {
            let compressed = compressor.compress(&encode_header_block(block));
            if first {
                // zlib header with FDICT, then the dictionary's Adler-32.
                assert_eq!(compressed[0] & 0x0F, 8, "deflate");
                assert_ne!(compressed[1] & 0x20, 0, "FDICT set");
                assert_eq!(&compressed[2..6], &0xe3c6_a7c2u32.to_be_bytes());
                first = false;
            }
            assert!(compressed.ends_with(&[0, 0, 0xFF, 0xFF]), "sync flush");
            let plain = decompressor.decompress(&compressed).expect("inflates");
            assert_eq!(&decode_header_block(&plain).expect("parses"), block);
        }
    }

    #[test]
    fn inflates_blocks_from_reference_zlib() {
        // Two consecutive blocks from C zlib (level 9, the SPDY dictionary, sync flush), as Go's
        // compress/zlib writes them for kubectl.
        let first = [
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
            0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86, 0x14, 0xcb, 0x45, 0xe0,
            0x1c, 0x60, 0x61, 0x60, 0x61, 0x00, 0xa4, 0x39, 0x8b, 0x20, 0xd1, 0x98, 0x09, 0x4a,
            0xde, 0x8c, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let second = [
            0xc2, 0xaa, 0x19, 0x54, 0x0e, 0x25, 0x12, 0xd6, 0x0b, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut decompressor = HeaderDecompressor::new();
        let plain = decompressor.decompress(&first).expect("inflates");
        assert_eq!(
            decode_header_block(&plain).expect("parses"),
            headers(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0")
            ])
        );
        let plain = decompressor.decompress(&second).expect("inflates");
        assert_eq!(
            decode_header_block(&plain).expect("parses"),
            headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        );
    }

    #[test]
    fn frames_round_trip() {
        let mut compressor = HeaderCompressor::new();
        let mut decompressor = HeaderDecompressor::new();
        let frames = [
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 2,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream_id: 5,
                status: RST_PROTOCOL_ERROR,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65_536)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: headers(&[("a", "b")]),
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1024,
            },
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend(encode_frame(frame, &mut compressor));
        }
        let mut at = 0;
        for frame in &frames {
            let (decoded, used) = decode_frame(&wire[at..], &mut decompressor)
                .expect("valid")
                .expect("complete");
            assert_eq!(&decoded, frame);
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn wire_layout_matches_spdy3() {
        let mut compressor = HeaderCompressor::new();
        let ping = encode_frame(&Frame::Ping { id: 9 }, &mut compressor);
        assert_eq!(ping, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9]);
        let data = encode_frame(
            &Frame::Data {
                stream_id: 5,
                fin: true,
                data: Bytes::from_static(b"ab"),
            },
            &mut compressor,
        );
        assert_eq!(data, [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn incomplete_and_bad_frames() {
        let mut compressor = HeaderCompressor::new();
        let wire = encode_frame(
            &Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "stdin")]),
            },
            &mut compressor,
        );
        for cut in 0..wire.len() {
            let mut decompressor = HeaderDecompressor::new();
            assert_eq!(decode_frame(&wire[..cut], &mut decompressor), Ok(None));
        }
        let mut decompressor = HeaderDecompressor::new();
        assert_eq!(
            decode_frame(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1], &mut decompressor),
            Err(FrameError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode_frame(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0], &mut decompressor),
            Err(FrameError::ShortFrame { kind: 3, len: 2 })
        );
        // A SYN_STREAM whose header block is not zlib.
        let garbage = [
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ];
        assert!(matches!(
            decode_frame(&garbage, &mut decompressor),
            Err(FrameError::Zlib(_))
        ));
    }

    #[test]
    fn malformed_header_blocks_are_errors() {
        assert_eq!(
            decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']),
            Err(FrameError::BadHeaderBlock)
        );
        assert_eq!(
            decode_header_block(&[0, 0]),
            Err(FrameError::BadHeaderBlock)
        );
        assert_eq!(
            decode_header_block(&[0, 0, 0, 0, 1]),
            Err(FrameError::BadHeaderBlock)
        );
    }
}
