//! `/api/sync/{destination}?protocol=2`: the policy of a destination as a stream of JSON lines
//! for its proxy (see [`infra_api::sync`]): a snapshot now, a delta for each change that concerns
//! the destination, a new snapshot when a change has no delta (or the stream fell behind),
//! heartbeats between.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use infra_api::sync::{Change, Delta, Message, PROTOCOL, SyncQuery, WireGrant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::caller::Caller;
use super::{ApiError, ApiResult, Plane};
use crate::plane::{CachedSnapshot, ControlPlane, Event, Published};

/// How often the sync stream says it is alive when nothing changes.
const SYNC_HEARTBEAT: Duration = Duration::from_secs(15);
/// The most events one delta gathers (those already waiting when the first arrives).
const DELTA_BATCH: usize = 256;

/// The policy of a destination as a stream of JSON lines. For proxies in other clusters.
pub(super) async fn stream(
    State(plane): Plane,
    caller: Caller,
    Path(destination): Path<String>,
    Query(query): Query<SyncQuery>,
) -> ApiResult {
    caller.require_connector()?;
    infra_authz::policy::validate_dns_label(&destination)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    if query.protocol != Some(PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "this control plane speaks sync protocol {PROTOCOL} (`?protocol={PROTOCOL}`); run the infra-proxy of the control plane's version"
        )));
    }
    let rx = lines(plane, destination).await?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The lines of `destination`'s sync stream (each with its newline), as `GET /api/sync` sends
/// them: for the proxy in the control plane's process, which follows the same protocol.
pub async fn lines(
    plane: Arc<ControlPlane>,
    destination: String,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<bytes::Bytes>> {
    // Subscribed before the snapshot is built: no event after it is missed.
    let events = plane.subscribe_events();
    let first = plane.stream_snapshot(&destination).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(follow(plane, destination, events, first, tx));
    Ok(rx)
}

/// What the proxy at the other end holds: its destination's grants (as of the last message) and
/// the groups they name.
struct View {
    /// The `seq` of the last message sent.
    seq: u64,
    grants: Arc<Vec<WireGrant>>,
    groups: BTreeSet<String>,
}

impl View {
    fn of(seq: u64, grants: Arc<Vec<WireGrant>>) -> Self {
        let groups = named_groups(&grants);
        Self {
            seq,
            grants,
            groups,
        }
    }
}

fn named_groups(grants: &[WireGrant]) -> BTreeSet<String> {
    grants.iter().filter_map(|g| g.group.clone()).collect()
}

/// What one or more events mean for the proxy: nothing, changes, or a new snapshot.
#[derive(Default)]
struct Outcome {
    changes: Vec<Change>,
    /// The `seq` the changes bring the proxy to.
    seq: Option<u64>,
    snapshot: bool,
}

async fn follow(
    plane: Arc<ControlPlane>,
    destination: String,
    mut events: tokio::sync::broadcast::Receiver<Arc<Published>>,
    first: Arc<CachedSnapshot>,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    if tx.send(first.line.clone()).await.is_err() {
        return;
    }
    let mut view = View::of(first.seq, Arc::clone(&first.grants));
    loop {
        let mut outcome = Outcome::default();
        tokio::select! {
            received = events.recv() => {
                match received {
                    Ok(published) => consider(&destination, &mut view, &published, &mut outcome),
                    Err(RecvError::Lagged(_)) => outcome.snapshot = true,
                    Err(RecvError::Closed) => return,
                }
                // Whatever else is already waiting goes in the same message.
                for _ in 0..DELTA_BATCH {
                    match events.try_recv() {
                        Ok(published) => consider(&destination, &mut view, &published, &mut outcome),
                        Err(TryRecvError::Lagged(_)) => outcome.snapshot = true,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
            }
            () = tokio::time::sleep(SYNC_HEARTBEAT) => {
                if let Ok(known) = plane.store().get_destination(&destination).await {
                    let _ = plane
                        .store()
                        .touch_destination(&destination, &known.version, plane.now())
                        .await;
                }
                let Some(line) = message_line(&Message::Heartbeat(view.seq)) else {
                    return;
                };
                if tx.send(line).await.is_err() {
                    return;
                }
                continue;
            }
        }
        if outcome.snapshot {
            let snapshot = match plane.stream_snapshot(&destination).await {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "building a snapshot failed");
                    return;
                }
            };
            view = View::of(snapshot.seq, Arc::clone(&snapshot.grants));
            if tx.send(snapshot.line.clone()).await.is_err() {
                return;
            }
        } else if let Some(seq) = outcome.seq
            && !outcome.changes.is_empty()
        {
            let delta = Message::Delta(Delta {
                after: view.seq,
                seq,
                changes: outcome.changes,
            });
            view.seq = seq;
            let Some(line) = message_line(&delta) else {
                return;
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
}

/// Adds what `published` means for `destination`'s proxy to `outcome`, and keeps `view` (the
/// grants) in step.
fn consider(destination: &str, view: &mut View, published: &Published, outcome: &mut Outcome) {
    if published.seq <= view.seq || outcome.snapshot {
        // In the snapshot already, or a snapshot follows anyway.
        return;
    }
    match &published.event {
        Event::Everything => outcome.snapshot = true,
        Event::Member {
            user,
            group,
            groups,
        } => {
            if view.groups.contains(group) {
                outcome.changes.push(Change::Member {
                    user: user.clone(),
                    groups: groups
                        .iter()
                        .filter(|g| view.groups.contains(*g))
                        .cloned()
                        .collect(),
                });
                outcome.seq = Some(published.seq);
            }
        }
        Event::Grants {
            destination: changed,
            grants,
        } => {
            if changed != destination {
                return;
            }
            if named_groups(grants) != view.groups {
                // A group gained or lost its last grant here: its members come with a snapshot.
                outcome.snapshot = true;
                return;
            }
            let (removed, added) = difference(&view.grants, grants);
            view.grants = Arc::clone(grants);
            if !removed.is_empty() || !added.is_empty() {
                outcome.changes.push(Change::Grants { removed, added });
                outcome.seq = Some(published.seq);
            }
        }
        Event::Ended(sessions) => {
            outcome.changes.push(Change::Ended(sessions.clone()));
            outcome.seq = Some(published.seq);
        }
    }
}

/// The grants of `old` not in `new`, and of `new` not in `old`, counting repeats.
fn difference(old: &[WireGrant], new: &[WireGrant]) -> (Vec<WireGrant>, Vec<WireGrant>) {
    let mut count: HashMap<&WireGrant, i64> = HashMap::new();
    for grant in old {
        *count.entry(grant).or_default() += 1;
    }
    for grant in new {
        *count.entry(grant).or_default() -= 1;
    }
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for (grant, n) in count {
        for _ in 0..n.max(0) {
            removed.push(grant.clone());
        }
        for _ in 0..(-n).max(0) {
            added.push(grant.clone());
        }
    }
    removed.sort_by(|a, b| (&a.resource, &a.role).cmp(&(&b.resource, &b.role)));
    added.sort_by(|a, b| (&a.resource, &a.role).cmp(&(&b.resource, &b.role)));
    (removed, added)
}

fn message_line(message: &Message) -> Option<bytes::Bytes> {
    match serde_json::to_vec(message) {
        Ok(mut line) => {
            line.push(b'\n');
            Some(line.into())
        }
        Err(error) => {
            tracing::error!(%error, "encoding a sync message failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: &str, resource: &str) -> WireGrant {
        WireGrant {
            user: Some(user.into()),
            group: None,
            role: "view".into(),
            resource: resource.into(),
            expires_at: None,
        }
    }

    #[test]
    fn grant_differences_count_repeats() {
        let a = grant("a", "d");
        let b = grant("b", "d");
        let (removed, added) = difference(
            &[a.clone(), a.clone(), b.clone()],
            &[a.clone(), b.clone(), grant("c", "d.x")],
        );
        assert_eq!(removed, vec![a]);
        assert_eq!(added, vec![grant("c", "d.x")]);
    }
}
