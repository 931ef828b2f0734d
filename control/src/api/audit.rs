//! `/api/audit`: the audit trail (see `docs/audit.md`) — searched a page at a time, followed as
//! events arrive, and fed by the proxies of other clusters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use infra_api::audit::{
    Batch, Event, EventPage, ExportStatus, Kind, MAX_BATCH_EVENTS, SCHEMA_VERSION,
};

use super::caller::Caller;
use super::extract::{Body, Params, ok, parse_time};
use super::{ApiError, ApiResult, Plane};
use crate::store::{AuditCursor, AuditFilter};

/// The largest ingest body: a full batch of large events.
pub const INGEST_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The default and the largest page.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// How often a follower looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// A follower gets an empty line when nothing came for this long (so proxies keep it open).
const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(15);
/// A follow stream ends after this long (the CLI reconnects), so that a revoked key stops
/// reading within this bound.
const FOLLOW_LIFETIME: Duration = Duration::from_hours(1);
/// At most this many follow streams at once, all callers together.
const MAX_FOLLOWERS: usize = 64;
/// The longest text a filter may carry.
const MAX_FILTER_CHARS: usize = 256;
/// The longest text any one field of an ingested event may carry (a path, a reason).
const MAX_FIELD_CHARS: usize = 8 * 1024;

static FOLLOWERS: AtomicUsize = AtomicUsize::new(0);

const FILTERS: [&str; 12] = [
    "user",
    "group",
    "destination",
    "namespace",
    "verb",
    "resource",
    "name",
    "decision",
    "kind",
    "since",
    "until",
    "q",
];

fn filter_of(params: &Params) -> ApiResult<AuditFilter> {
    let text = |key: &str| -> ApiResult<Option<String>> {
        match params.get(key) {
            Some(value) if value.chars().count() > MAX_FILTER_CHARS => Err(ApiError::bad_request(
                format!("{key} is longer than {MAX_FILTER_CHARS} characters"),
            )),
            Some(value) => Ok(Some(value.to_owned())),
            None => Ok(None),
        }
    };
    let micros = |key: &str| -> ApiResult<Option<i64>> {
        params
            .get(key)
            .map(|text| {
                let at = parse_time(key, text)?;
                let since = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_err(|_| ApiError::bad_request(format!("{key} is before 1970")))?;
                Ok(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
            })
            .transpose()
    };
    let kind = params
        .get("kind")
        .map(str::parse::<Kind>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    Ok(AuditFilter {
        user: text("user")?,
        group: text("group")?,
        destination: text("destination")?,
        namespace: text("namespace")?,
        verb: text("verb")?,
        resource: text("resource")?,
        name: text("name")?,
        decision: text("decision")?,
        kind,
        since_us: micros("since")?,
        until_us: micros("until")?,
        text: text("q")?,
    })
}

/// `GET /api/audit`: a page of events, newest first.
pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    caller.require_auditor()?;
    let mut allowed = FILTERS.to_vec();
    allowed.extend(["cursor", "limit"]);
    params.only(&allowed)?;
    let filter = filter_of(&params)?;
    let cursor = params
        .get("cursor")
        .map(|text| {
            AuditCursor::decode(text).ok_or_else(|| {
                ApiError::bad_request("cursor is not one this API gave (pass `next` as it is)")
            })
        })
        .transpose()?;
    let limit = match params.get("limit") {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number from 1 to {MAX_LIMIT}"))
            })?,
        None => DEFAULT_LIMIT,
    };
    let (items, next) = plane.store().query_audit(&filter, cursor, limit).await?;
    Ok(ok(EventPage {
        items,
        next: next.map(AuditCursor::encode),
    }))
}

/// Gives a follow stream's place back when the stream ends.
struct Follower;

impl Drop for Follower {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /api/audit/stream`: events as they arrive, one JSON line each, from now on.
pub(super) async fn stream(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    caller.require_auditor()?;
    params.only(&FILTERS)?;
    let filter = filter_of(&params)?;
    if FOLLOWERS.fetch_add(1, Ordering::AcqRel) >= MAX_FOLLOWERS {
        FOLLOWERS.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::too_many_requests(
            format!("{MAX_FOLLOWERS} audit streams are open already; try again later"),
            Duration::from_secs(10),
        ));
    }
    let follower = Follower;
    let mut after = plane.store().audit_follow_start().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let _follower = follower;
        let ends = tokio::time::Instant::now() + FOLLOW_LIFETIME;
        let mut quiet_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < ends {
            match plane.store().follow_audit(&filter, after, 500).await {
                Ok(events) if !events.is_empty() => {
                    let mut lines = Vec::new();
                    for (position, event) in events {
                        after = position;
                        if serde_json::to_writer(&mut lines, &event).is_ok() {
                            lines.push(b'\n');
                        }
                    }
                    if tx.send(lines.into()).await.is_err() {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "following the audit trail failed");
                    return;
                }
            }
            if quiet_since.elapsed() >= FOLLOW_KEEPALIVE {
                if tx.send(bytes::Bytes::from_static(b"\n")).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
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

/// Refuses an event a proxy may not send, or one too large to keep.
fn check(event: &Event) -> ApiResult<()> {
    if event.schema != SCHEMA_VERSION {
        return Err(ApiError::bad_request(format!(
            "event {:?} has schema {}; this control plane reads schema {SCHEMA_VERSION}",
            event.id, event.schema
        )));
    }
    if event.kind != Kind::Request {
        return Err(ApiError::bad_request(format!(
            "event {:?} is of kind {:?}: proxies send requests only",
            event.id,
            event.kind.as_str()
        )));
    }
    if event.id.is_empty() || event.id.len() > 128 {
        return Err(ApiError::bad_request(
            "every event needs an id of 1 to 128 characters",
        ));
    }
    let texts = [
        &event.user,
        &event.destination,
        &event.path,
        &event.reason,
        &event.grant,
        &event.user_agent,
        &event.name,
    ];
    let groups = event.groups.iter().map(String::len).sum::<usize>();
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_FIELD_CHARS))
        || groups > MAX_FIELD_CHARS
    {
        return Err(ApiError::bad_request(format!(
            "event {:?} has a field longer than {MAX_FIELD_CHARS} bytes",
            event.id
        )));
    }
    Ok(())
}

/// `POST /api/audit/events`: a proxy's batch of request events; those stored before (a batch
/// sent again) are skipped.
pub(super) async fn ingest(
    State(plane): Plane,
    caller: Caller,
    Body(batch): Body<Batch>,
) -> ApiResult {
    caller.require_connector()?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events, not {}",
            batch.events.len()
        )));
    }
    for event in &batch.events {
        check(event)?;
    }
    let ingested = plane.store().record_audit_events(&batch.events).await?;
    Ok(ok(ingested))
}

/// `GET /api/audit/export`: what the audit trail's OTLP export does.
pub(super) async fn export(State(plane): Plane, caller: Caller) -> ApiResult {
    caller.require_auditor()?;
    let Some(exporter) = plane.audit_export() else {
        return Ok(ok(ExportStatus {
            mode: "off".to_owned(),
            ..ExportStatus::default()
        }));
    };
    let state = plane
        .store()
        .export_state(crate::otlp::exporter::NAME)
        .await?;
    let status = exporter.status();
    let at = |time: SystemTime| jiff::Timestamp::try_from(time).ok();
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(ok(ExportStatus {
        configured: true,
        url: Some(exporter.url().to_string()),
        mode: status.mode.as_str().to_owned(),
        exported: count(state.exported),
        dropped: count(state.dropped),
        retried: exporter.retried.load(Ordering::Relaxed),
        failures_in_a_row: status.failures_in_a_row,
        last_error: status.last_error.as_ref().map(|(error, _)| error.clone()),
        last_error_at: status.last_error.and_then(|(_, time)| at(time)),
        last_export_at: status.last_export.and_then(at),
    }))
}
