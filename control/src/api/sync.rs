//! `/api/sync/{destination}`: the policy of a destination as a stream of JSON lines for its
//! proxy (see [`infra_api::sync`]): a snapshot now and after every change, heartbeats between.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use infra_api::sync::Message;

use super::caller::Caller;
use super::{ApiError, ApiResult, Plane};

/// How often the sync stream says it is alive when nothing changes.
const SYNC_HEARTBEAT: Duration = Duration::from_secs(15);
/// How often it sends the whole snapshot even when nothing changed (expiries, and tokens newer
/// than the last snapshot).
const SYNC_REFRESH: Duration = Duration::from_mins(1);

/// The policy of a destination as a stream of JSON lines: a snapshot now and after every change,
/// heartbeats between. For proxies in other clusters.
pub(super) async fn stream(
    State(plane): Plane,
    caller: Caller,
    Path(destination): Path<String>,
) -> ApiResult {
    caller.require_connector()?;
    infra_authz::policy::validate_dns_label(&destination)
        .map_err(|why| ApiError::bad_request(format!("destination {why}")))?;
    let first = plane.snapshot(&destination).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let mut changes = plane.subscribe();
    changes.mark_unchanged();
    tokio::spawn(async move {
        let mut next = Some(first);
        loop {
            let snapshot = match next.take() {
                Some(snapshot) => snapshot,
                None => match plane.snapshot(&destination).await {
                    Ok(snapshot) => snapshot,
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "building a snapshot failed");
                        return;
                    }
                },
            };
            let Some(line) = message_line(&Message::Snapshot(Box::new(snapshot))) else {
                return;
            };
            if tx.send(line).await.is_err() {
                return;
            }
            let refresh_at = tokio::time::Instant::now() + SYNC_REFRESH;
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                    () = tokio::time::sleep(SYNC_HEARTBEAT) => {
                        if tokio::time::Instant::now() >= refresh_at {
                            break;
                        }
                        if let Ok(known) = plane.store().get_destination(&destination).await {
                            let _ = plane
                                .store()
                                .touch_destination(&destination, &known.version, plane.now())
                                .await;
                        }
                        let Some(line) = message_line(&Message::Heartbeat(
                            *changes.borrow(),
                        )) else {
                            return;
                        };
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
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
