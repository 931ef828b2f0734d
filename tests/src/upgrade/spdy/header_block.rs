//! Header blocks: the per-connection zlib contexts (seeded with the SPDY/3 dictionary) that
//! compress what we send and inflate what the client sends, and the block's name/value layout.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{DICTIONARY, FrameError, Headers, MAX_HEADER_BLOCK};

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

pub(super) fn put_len(out: &mut Vec<u8>, len: usize) {
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
