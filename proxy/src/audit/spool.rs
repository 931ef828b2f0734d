//! The spool: a bounded file of JSON lines where audit events wait while the control plane
//! cannot take them, sent in order when it can again.
//!
//! Delivery is at least once: a batch leaves the spool only after the control plane took it,
//! and the file survives a restart (what it holds is sent after the next start). A batch sent
//! again — an answer lost, a restart before the spool was emptied — is stored once, since the
//! store keeps one event per id. A line that does not parse (the torn end of a write cut by a
//! crash) is skipped with a warning.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use infra_api::audit::{Event, MAX_BATCH_EVENTS};

/// The most bytes read for one batch.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    /// The file's length.
    len: u64,
    /// Where the lines not yet delivered start.
    offset: u64,
    /// Where the batch being sent ends.
    pending: u64,
}

impl Spool {
    /// Opens (or creates, mode 0600) the spool at `path`, holding at most `max_bytes`; what it
    /// holds from before is sent first.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            tracing::info!(path = %path.display(), bytes = len, "audit events in the spool from before; sending them first");
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            max_bytes,
            len,
            offset: 0,
            pending: 0,
        })
    }

    /// Whether everything in it was delivered.
    pub fn is_empty(&self) -> bool {
        self.offset >= self.len
    }

    /// Appends `lines` (whole JSON lines), or fails when they do not fit.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.len + lines.len() as u64 > self.max_bytes {
            return Err(io::Error::other(format!(
                "the spool file {} is full ({} bytes, --audit-spool-bytes)",
                self.path.display(),
                self.max_bytes
            )));
        }
        self.file.write_all(lines)?;
        self.file.flush()?;
        self.len += lines.len() as u64;
        Ok(())
    }

    /// The next batch to send: up to [`MAX_BATCH_EVENTS`] events (and their lines) from where
    /// delivery stands. [`Self::consumed`] marks it delivered.
    pub fn next_batch(&mut self) -> io::Result<(Vec<Event>, Vec<u8>)> {
        let want = usize::try_from(self.len - self.offset)
            .unwrap_or(usize::MAX)
            .min(MAX_BATCH_BYTES);
        let mut buffer = vec![0; want];
        self.file.read_exact_at(&mut buffer, self.offset)?;
        // Whole lines only; a line longer than a batch is not an event this proxy wrote.
        let end = match buffer.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None => buffer.len(),
        };
        let mut events = Vec::new();
        let mut lines = Vec::with_capacity(end);
        let mut taken = 0;
        for line in buffer[..end].split_inclusive(|&b| b == b'\n') {
            if events.len() == MAX_BATCH_EVENTS {
                break;
            }
            taken += line.len();
            match serde_json::from_slice::<Event>(line) {
                Ok(event) => {
                    events.push(event);
                    lines.extend_from_slice(line);
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable line of the audit spool");
                }
            }
        }
        self.pending = self.offset + taken as u64;
        Ok((events, lines))
    }

    /// Marks the last batch delivered; empties the file once everything is.
    pub fn consumed(&mut self) -> io::Result<()> {
        self.offset = self.pending.max(self.offset);
        if self.offset >= self.len {
            self.file.set_len(0)?;
            self.len = 0;
            self.offset = 0;
            self.pending = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_api::audit::{Kind, SCHEMA_VERSION};

    fn line(id: usize) -> Vec<u8> {
        let event = Event {
            schema: SCHEMA_VERSION,
            id: format!("e{id}"),
            kind: Kind::Request,
            ..Event::default()
        };
        let mut out = serde_json::to_vec(&event).expect("json");
        out.push(b'\n');
        out
    }

    #[test]
    fn a_spool_delivers_in_batches_survives_a_reopen_and_refuses_past_its_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path, 400_000).expect("open");
        assert!(spool.is_empty());
        for id in 0..1500 {
            spool.append(&line(id)).expect("append");
        }
        // A torn line at the end (a crash mid-write) is skipped, not fatal.
        spool.append(b"{\"schema\":1,\"id\n").expect("append");
        drop(spool);

        let mut spool = Spool::open(&path, 400_000).expect("reopen");
        assert!(!spool.is_empty(), "what was spooled survives a restart");
        let (first, _) = spool.next_batch().expect("batch");
        assert_eq!(first.len(), MAX_BATCH_EVENTS);
        assert_eq!(first[0].id, "e0");
        // Not delivered: the same batch again.
        let (again, _) = spool.next_batch().expect("batch");
        assert_eq!(again[0].id, "e0");
        spool.consumed().expect("consumed");
        let (second, lines) = spool.next_batch().expect("batch");
        assert_eq!(second.len(), 500);
        assert_eq!(second[0].id, "e1000");
        assert_eq!(
            lines
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            500
        );
        spool.consumed().expect("consumed");
        assert!(spool.is_empty());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);

        let mut small = Spool::open(&dir.path().join("small"), 100).expect("open");
        assert!(small.append(&line(1)).is_ok());
        assert!(small.append(&[b'x'; 100]).is_err(), "past its bound");
    }
}
