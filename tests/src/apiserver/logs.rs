//! Pod logs: what [`StandIn::push_log`](super::StandIn::push_log) added, whole or followed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use tokio::sync::broadcast;

use super::request;
use super::response::{full, streaming};
use super::route::{Context, Target, storage_namespace};
use super::status::Status;
use super::streams::StreamGuard;
use super::{Body, Shared, lock};

struct LogState {
    first: VecDeque<Bytes>,
    lines: broadcast::Receiver<Arc<(String, String, String)>>,
    namespace: String,
    pod: String,
    timestamps: bool,
    tick: Option<tokio::time::Interval>,
    ticks: u64,
    _guard: StreamGuard,
}

fn log_line(line: &str, timestamps: bool) -> Bytes {
    if timestamps {
        Bytes::from(format!("{} {line}\n", request::rfc3339(SystemTime::now())))
    } else {
        Bytes::from(format!("{line}\n"))
    }
}

pub(super) fn pod_log(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    pod: &str,
    context: &Context,
) -> Result<Response<Body>, Status> {
    if !matches!(context.method, Method::GET | Method::HEAD) {
        return Err(Status::method_not_allowed(
            context.method.as_str(),
            "pods/log",
        ));
    }
    let namespace = storage_namespace(target);
    shared.store.get(&target.info, namespace, pod)?;
    let timestamps = context.query.flag("timestamps");
    let key = (namespace.to_owned(), pod.to_owned());
    let (mut lines, receiver) = {
        let logs = lock(&shared.logs);
        (
            logs.get(&key).cloned().unwrap_or_default(),
            shared.log_lines.subscribe(),
        )
    };
    if let Some(tail) = context
        .query
        .number("tailLines")
        .and_then(|t| usize::try_from(t).ok())
    {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let first: VecDeque<Bytes> = lines.iter().map(|l| log_line(l, timestamps)).collect();
    if !context.query.flag("follow") {
        let body: Vec<u8> = first.into_iter().flat_map(|b| b.to_vec()).collect();
        return Ok(full(StatusCode::OK, "text/plain", Bytes::from(body)));
    }
    let tick = shared.follow_tick.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let state = LogState {
        first,
        lines: receiver,
        namespace: key.0,
        pod: key.1,
        timestamps,
        tick,
        ticks: 0,
        _guard: StreamGuard::new(&shared.streams, |s| &mut s.log_follows),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(line) = state.first.pop_front() {
            return Some((line, state));
        }
        loop {
            tokio::select! {
                received = state.lines.recv() => match received {
                    Ok(entry) if entry.0 == state.namespace && entry.1 == state.pod => {
                        let line = log_line(&entry.2, state.timestamps);
                        return Some((line, state));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = next_tick(&mut state.tick) => {
                    state.ticks += 1;
                    let line = log_line(&format!("tick {}", state.ticks), state.timestamps);
                    return Some((line, state));
                }
            }
        }
    });
    Ok(streaming(StatusCode::OK, "text/plain", stream))
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
