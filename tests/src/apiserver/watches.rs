//! Watches (`?watch=true`): newline-delimited JSON events, resumable from a `resourceVersion`,
//! with `timeoutSeconds`, ending when the client goes away.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::discovery::ResourceInfo;
use super::request;
use super::response::streaming;
use super::route::{Context, Target};
use super::select::Selector;
use super::status::Status;
use super::store::{self, Event, EventType, WatchFrom};
use super::streams::StreamGuard;
use super::table::{self, Include};
use super::{Body, Shared};

struct WatchEncoder {
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    selector: Selector,
    table: Option<&'static str>,
    include: Include,
}

impl WatchEncoder {
    /// The line for a change, or `None` when the watch does not see it.
    fn encode(&self, event: &Event) -> Option<Bytes> {
        if !store::is_for(event, &self.info, self.namespace.as_deref()) {
            return None;
        }
        let now = self.selector.matches(&event.object);
        let kind = match event.kind {
            EventType::Added | EventType::Deleted => now.then_some(event.kind),
            EventType::Modified => {
                let before = event
                    .previous
                    .as_ref()
                    .is_some_and(|p| self.selector.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }?;
        Some(self.line(kind.as_str(), &event.object))
    }

    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let object = match self.table {
            Some(version) => {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                table::table(
                    &self.info,
                    std::slice::from_ref(object),
                    &meta,
                    version,
                    self.include,
                    SystemTime::now(),
                )
            }
            None => object.clone(),
        };
        event_line(kind, &object)
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

struct WatchState {
    first: VecDeque<Bytes>,
    events: broadcast::Receiver<Arc<Event>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    encoder: WatchEncoder,
    ended: bool,
    _guard: Option<StreamGuard>,
}

pub(super) fn watch(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    selector: Selector,
    context: &Context,
) -> Response<Body> {
    let query = &context.query;
    let send_initial = query.flag("sendInitialEvents");
    let from = match query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(version) if version > 0 && !send_initial => WatchFrom::After(version),
        _ => WatchFrom::Current,
    };
    let encoder = WatchEncoder {
        info: target.info.clone(),
        namespace: target.namespace.map(str::to_owned),
        selector,
        table: request::wants_table(&context.accept()),
        include: Include::parse(query.get("includeObject")),
    };
    let (first, events) = shared.store.watch(&target.info, target.namespace, from);
    let mut first: VecDeque<Bytes> = first.iter().filter_map(|e| encoder.encode(e)).collect();
    if send_initial {
        let bookmark = json!({
            "kind": target.info.kind,
            "apiVersion": target.info.api_version(),
            "metadata": {
                "resourceVersion": shared.store.current_version().to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        first.push_back(event_line("BOOKMARK", &bookmark));
    }
    let deadline = query
        .number("timeoutSeconds")
        .map(|s| Box::pin(tokio::time::sleep(Duration::from_secs(s))));
    let state = WatchState {
        first,
        events,
        deadline,
        encoder,
        ended: false,
        // The proxy's own watches (of roles and bindings) are not the users' streams.
        _guard: (!context.own).then(|| StreamGuard::new(&shared.streams, |s| &mut s.watches)),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(line) = state.first.pop_front() {
            return Some((line, state));
        }
        if state.ended {
            return None;
        }
        loop {
            let received = tokio::select! {
                received = state.events.recv() => received,
                () = until(&mut state.deadline) => return None,
            };
            match received {
                Ok(event) => {
                    if let Some(line) = state.encoder.encode(&event) {
                        return Some((line, state));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.ended = true;
                    let status = Status::expired("too old resource version").to_json();
                    return Some((event_line("ERROR", &status), state));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    streaming(StatusCode::OK, "application/json", stream)
}

async fn until(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}
