//! Counting the long-running responses in progress: watches, log follows, and exec, attach
//! and port-forward sessions.

use tokio::sync::watch;

/// Long-running responses in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveStreams {
    pub watches: usize,
    pub log_follows: usize,
    /// Exec, attach and port-forward sessions.
    pub upgrades: usize,
}

/// Counts a long-running response while it lives.
pub(super) struct StreamGuard {
    streams: watch::Sender<ActiveStreams>,
    field: fn(&mut ActiveStreams) -> &mut usize,
}

impl StreamGuard {
    pub(super) fn new(
        streams: &watch::Sender<ActiveStreams>,
        field: fn(&mut ActiveStreams) -> &mut usize,
    ) -> Self {
        streams.send_modify(|s| *field(s) += 1);
        Self {
            streams: streams.clone(),
            field,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let field = self.field;
        self.streams.send_modify(|s| *field(s) -= 1);
    }
}
