//! The proxy's side of one sync stream: open it, check each line and apply it (see
//! [`super`]).

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use infra_authz::clock::Clock;

use super::{Message, PROTOCOL, SyncState, register};

pub(super) async fn follow(
    http: &reqwest::Client,
    remote: &super::Remote,
    state: &SyncState,
    handle: &crate::policy::PolicyHandle,
    clock: &dyn Clock,
) -> Result<()> {
    // Registration (where users reach this proxy, its CA, what it reports of its cluster) is
    // renewed every minute; a refusal of it must not keep the proxy from its policy.
    if let Err(error) = register(http, remote, handle).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "registering with the control plane failed; following its policy anyway"
        );
    }
    let base = remote.control_url.trim_end_matches('/');
    let mut response = http
        .get(format!(
            "{base}/api/sync/{}?protocol={PROTOCOL}",
            remote.destination
        ))
        .bearer_auth(remote.access_key.expose())
        .send()
        .await
        .context("opening the sync stream")?;
    if !response.status().is_success() {
        bail!(
            "the control plane refused the sync stream: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut buffer: Vec<u8> = Vec::new();
    let mut reader = StreamReader::new(&remote.destination);
    let save = |state: &SyncState| {
        if let Err(error) = state.persist_if_due(Duration::ZERO) {
            tracing::warn!(error = format!("{error:#}"), "cannot save the policy");
        }
    };
    loop {
        // Deltas are saved at most every SAVE_EVERY while they keep coming, and as soon as
        // the stream is quiet (or ends).
        let chunk = match tokio::time::timeout(SAVE_WHEN_QUIET, response.chunk()).await {
            Err(_) => {
                save(state);
                continue;
            }
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(error)) => {
                save(state);
                return Err(error).context("reading the sync stream");
            }
        };
        buffer.extend_from_slice(&chunk);
        if buffer.len() > 64 * 1024 * 1024 {
            bail!("a sync message is larger than 64 MiB");
        }
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            reader.line(&line[..line.len() - 1], state, handle, clock.now())?;
        }
    }
    save(state);
    Ok(())
}

/// Saves what the proxy holds at most this often while deltas arrive.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// And as soon as the stream has been quiet this long.
const SAVE_WHEN_QUIET: Duration = Duration::from_millis(50);

/// The proxy's side of one sync stream: checks each line and applies it.
#[derive(Debug)]
pub struct StreamReader<'a> {
    destination: &'a str,
    /// A snapshot has come on this stream.
    started: bool,
}

impl<'a> StreamReader<'a> {
    /// A reader for a new stream of `destination`'s policy.
    pub fn new(destination: &'a str) -> Self {
        Self {
            destination,
            started: false,
        }
    }

    /// Applies one line (without its newline). An error ends the stream: a line that does not
    /// parse (an unknown message, another protocol), a snapshot of another destination or
    /// protocol, or a message that does not follow the last one (a [`Gap`]: the proxy refuses
    /// to decide until it has a new snapshot).
    pub fn line(
        &mut self,
        line: &[u8],
        state: &SyncState,
        handle: &crate::policy::PolicyHandle,
        now: SystemTime,
    ) -> Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let message: Message =
            serde_json::from_slice(line).context("a sync message does not parse")?;
        match message {
            Message::Snapshot(snapshot) => {
                if snapshot.protocol != PROTOCOL {
                    bail!(
                        "the control plane speaks sync protocol {}, this proxy {PROTOCOL}",
                        snapshot.protocol
                    );
                }
                if snapshot.destination != self.destination {
                    bail!(
                        "the control plane sent the policy of {:?}, not {:?}",
                        snapshot.destination,
                        self.destination
                    );
                }
                let (generation, seq, grants) =
                    (snapshot.generation, snapshot.seq, snapshot.grants.len());
                state.apply_stream_snapshot(*snapshot, handle, now);
                self.started = true;
                tracing::info!(
                    generation,
                    seq,
                    grants,
                    "snapshot from the control plane in force"
                );
                if let Err(error) = state.persist_if_due(Duration::ZERO) {
                    tracing::warn!(error = format!("{error:#}"), "cannot save the snapshot");
                }
            }
            Message::Delta(delta) => {
                if !self.started {
                    state.mark_gap();
                    bail!("the control plane sent a delta before a snapshot");
                }
                let seq = delta.seq;
                state.apply_delta(delta, handle, now)?;
                tracing::debug!(seq, "delta from the control plane in force");
                if let Err(error) = state.persist_if_due(SAVE_EVERY) {
                    tracing::warn!(error = format!("{error:#}"), "cannot save the policy");
                }
            }
            Message::Heartbeat(seq) => {
                if !self.started {
                    bail!("the control plane sent a heartbeat before a snapshot");
                }
                state.check_heartbeat(seq)?;
                if let Err(error) = state.persist_if_due(Duration::ZERO) {
                    tracing::warn!(error = format!("{error:#}"), "cannot save the policy");
                }
                state.touch_file(now);
            }
        }
        state.contact(now);
        Ok(())
    }
}
