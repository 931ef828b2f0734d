//! The HTTP/1.1 framing watcher: refuses a request that carries both `Content-Length` and
//! `Transfer-Encoding` (the request-smuggling shape, RFC 9112 section 6.1).
//!
//! hyper frames such a request by `Transfer-Encoding`, as the RFC says, closes the connection
//! after it, and hands the service the request with its `Content-Length` removed, so the service
//! cannot tell it from a plain chunked request. This watcher reads what the client sends, as
//! hyper reads it, and follows the framing of each message (the head, then a body by
//! `Content-Length` or chunked encoding) with the parser hyper uses (`httparse`), so it knows
//! every request head. When a head has both headers it flags that request by its index; the
//! service answers that request 400 instead of handling it.
//!
//! The watcher never changes a byte and never decides framing: hyper does. When it meets
//! anything it does not follow (a malformed head or chunk line, which hyper refuses as well, a
//! head over the size limit, the bytes of an upgraded tunnel) it stops watching that connection.

use std::sync::Arc;

use super::activity::Activity;

/// Headers a head may have (hyper's default; a head with more is refused by hyper).
const MAX_HEADERS: usize = 100;

/// Where the watcher is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a request head.
    Head,
    /// Inside a body of this many more bytes.
    Length(u64),
    /// At a chunk size line.
    ChunkSize,
    /// Inside a chunk of this many more bytes.
    ChunkData(u64),
    /// At the line end after a chunk's data.
    ChunkEnd,
    /// Among the trailer lines after the last chunk.
    Trailers,
    /// Not watching any more.
    Off,
}

/// How a head says its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Smuggling,
    /// Something hyper refuses.
    Invalid,
}

/// Follows one HTTP/1.1 connection's requests.
#[derive(Debug)]
pub(super) struct HeadWatcher {
    activity: Arc<Activity>,
    state: State,
    /// The start of a head or line that has not fully arrived.
    pending: Vec<u8>,
    /// Heads seen so far.
    heads: u64,
    /// The longest head or line followed.
    max_line: usize,
}

impl HeadWatcher {
    /// A watcher for heads of at most `max_head` bytes, flagging requests in `activity`.
    pub(super) fn new(activity: Arc<Activity>, max_head: usize) -> Self {
        Self {
            activity,
            state: State::Head,
            pending: Vec::new(),
            heads: 0,
            max_line: max_head.saturating_add(1024),
        }
    }

    /// Follows the bytes just read from the client.
    pub(super) fn feed(&mut self, data: &[u8]) {
        if self.state == State::Off || data.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.follow(data);
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > self.max_line {
            self.stop();
            return;
        }
        // A head, a chunk line or a trailer line can only end at a line feed.
        if !data.contains(&b'\n') {
            return;
        }
        let joined = std::mem::take(&mut self.pending);
        self.follow(&joined);
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.pending = Vec::new();
    }

    /// Keeps `rest` until more arrives, or stops if it is already too long.
    fn wait_for_more(&mut self, rest: &[u8]) {
        if rest.len() > self.max_line {
            self.stop();
        } else {
            self.pending = rest.to_vec();
        }
    }

    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut request = httparse::Request::new(&mut headers);
                    match request.parse(data) {
                        Ok(httparse::Status::Complete(length)) => {
                            let index = self.heads;
                            self.heads += 1;
                            data = &data[length..];
                            self.state = match framing(&request) {
                                Framing::Length(0) => State::Head,
                                Framing::Length(n) => State::Length(n),
                                Framing::Chunked => State::ChunkSize,
                                Framing::Smuggling => {
                                    // hyper closes the connection after this request: nothing
                                    // after it is read as a request.
                                    self.activity.flag(index);
                                    State::Off
                                }
                                Framing::Invalid => State::Off,
                            };
                        }
                        Ok(httparse::Status::Partial) => return self.wait_for_more(data),
                        Err(_) => return self.stop(),
                    }
                }
                State::Length(n) | State::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    data = &data[take..];
                    let left = n - u64::try_from(take).unwrap_or(n);
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Head,
                        (State::Length(_), left) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkSize => match httparse::parse_chunk_size(data) {
                    Ok(httparse::Status::Complete((length, size))) => {
                        data = &data[length..];
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => return self.wait_for_more(data),
                    Err(_) => return self.stop(),
                },
                State::ChunkEnd => match data {
                    [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => {
                        data = rest;
                        self.state = State::ChunkSize;
                    }
                    [b'\r'] => return self.wait_for_more(data),
                    _ => return self.stop(),
                },
                State::Trailers => {
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        return self.wait_for_more(data);
                    };
                    let line = &data[..=end];
                    data = &data[end + 1..];
                    if line == b"\r\n" || line == b"\n" {
                        self.state = State::Head;
                    }
                }
            }
        }
    }
}

/// How hyper frames a request with these headers (`proto/h1/role.rs`, `Server::parse`).
fn framing(request: &httparse::Request<'_, '_>) -> Framing {
    let http11 = request.version == Some(1);
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut content_length: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Chunked must be the last encoding of the last line.
            chunked = std::str::from_utf8(header.value).is_ok_and(|value| {
                value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if header.name.eq_ignore_ascii_case("content-length") {
            if transfer_encoding {
                return Framing::Smuggling;
            }
            let Some(length) = digits(header.value) else {
                return Framing::Invalid;
            };
            if content_length.is_some_and(|previous| previous != length) {
                return Framing::Invalid;
            }
            content_length = Some(length);
        }
    }
    match (transfer_encoding, content_length) {
        (true, _) if !http11 || !chunked => Framing::Invalid,
        (true, Some(_)) => Framing::Smuggling,
        (true, None) => Framing::Chunked,
        (false, length) => Framing::Length(length.unwrap_or(0)),
    }
}

/// A `Content-Length` value: decimal digits only.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0_u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index of the flagged request, if any, after `stream` arrives in one read and after it
    /// arrives split at every byte (the same answer each way).
    fn flagged(stream: &[u8]) -> Option<u64> {
        let whole = run(&[stream]);
        for at in 1..stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(run(&[a, b]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "a byte at a time");
        whole
    }

    fn run(reads: &[&[u8]]) -> Option<u64> {
        let activity = Arc::new(Activity::new());
        let mut watcher = HeadWatcher::new(Arc::clone(&activity), 64 * 1024);
        for read in reads {
            watcher.feed(read);
        }
        (0..8).find(|&index| activity.is_flagged(index))
    }

    #[test]
    fn both_content_length_and_transfer_encoding_are_flagged_in_either_order() {
        assert_eq!(
            flagged(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Some(0)
        );
        assert_eq!(
            flagged(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
            Some(0)
        );
    }

    #[test]
    fn a_smuggling_request_after_others_is_flagged_by_its_index() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(flagged(stream), Some(3));
    }

    #[test]
    fn bodies_that_look_like_heads_are_not_read_as_heads() {
        let inner = "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}\
             POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n\
             GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            inner.len(),
            inner.len(),
        );
        assert_eq!(flagged(stream.as_bytes()), None);
    }

    #[test]
    fn what_hyper_refuses_stops_the_watch_without_flagging() {
        for stream in [
            &b"POST /a HTTP/1.1\r\nContent-Length: 4x\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x16\x03\x01 not http at all",
        ] {
            assert_eq!(flagged(stream), None, "{}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"4194304"), Some(4_194_304));
        assert_eq!(digits(b""), None);
        assert_eq!(digits(b"+4"), None);
        assert_eq!(digits(b"99999999999999999999999"), None);
    }

    #[test]
    fn an_overlong_head_stops_the_watch() {
        let activity = Arc::new(Activity::new());
        let mut watcher = HeadWatcher::new(Arc::clone(&activity), 8192);
        watcher.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..100 {
            watcher.feed(&[b'a'; 100]);
        }
        assert_eq!(watcher.state, State::Off);
        assert!(watcher.pending.is_empty());
    }
}
