//! Notifications of access requests' changes: every change of state is POSTed to each target of
//! the policy file's `notify:` list, off the request's path.
//!
//! - `webhook`: the [`RequestEvent`] as JSON, signed. `Infra-Signature: t=<unix seconds>,v1=<hex>`
//!   where the hex is HMAC-SHA256 with the target's secret over `<t>.<body>`; `Infra-Event-Id`
//!   names the event (a retry repeats it, with a new `t`). A receiver recomputes the MAC,
//!   compares in constant time, and refuses a `t` more than [`SIGNATURE_TOLERANCE`] away from
//!   its clock.
//! - `slack`: a Slack incoming webhook's payload (`text` and `blocks`) showing the request and
//!   the exact `infra requests approve|deny ID` commands. Nothing changes state on a GET, so a
//!   chat tool's link preview can do nothing.
//!
//! A delivery is retried with exponential backoff ([`ATTEMPTS`] attempts from
//! [`RETRY_BASE`]); it never blocks or fails the request's change. Counts and the last error per
//! target are kept for the API (`GET /api/request-notifications`), `/readyz` and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use infra_api::{NotificationTarget, RequestEvent};
use infra_authz::policy::requests::{Notifier, NotifyKind};
use ring::hmac;

/// How far a webhook's signature time may be from the receiver's clock.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_mins(5);
/// Attempts per delivery.
pub const ATTEMPTS: u32 = 6;
/// The wait before the first retry; each next one doubles it.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Deliveries waiting or under way at once; beyond, new ones are dropped and counted.
const MAX_QUEUED: usize = 1000;

/// The signature header's value for `body` sent at `t` (Unix seconds) with `secret`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(t.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={t},v1={}", hex::encode(context.sign().as_ref()))
}

/// What one target's deliveries did.
#[derive(Debug, Clone, Default)]
struct Status {
    delivered: u64,
    failed_attempts: u64,
    dropped: u64,
    retrying: u64,
    last_error: Option<(String, SystemTime)>,
    last_delivered: Option<SystemTime>,
}

/// The notification targets and their deliveries.
pub struct Notifications {
    http: reqwest::Client,
    targets: ArcSwap<Vec<Notifier>>,
    status: Mutex<HashMap<String, Status>>,
    queued: AtomicUsize,
    retry_base: Duration,
    clock: Arc<dyn infra_authz::clock::Clock>,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("targets", &self.targets.load().len())
            .finish_non_exhaustive()
    }
}

fn to_timestamp(at: SystemTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::try_from(at).ok()
}

impl Notifications {
    /// No targets yet; deliveries go over `http`, retried from `retry_base`, timed by `clock`.
    pub fn new(
        http: reqwest::Client,
        retry_base: Duration,
        clock: Arc<dyn infra_authz::clock::Clock>,
    ) -> Self {
        Self {
            http,
            targets: ArcSwap::from_pointee(Vec::new()),
            status: Mutex::new(HashMap::new()),
            queued: AtomicUsize::new(0),
            retry_base,
            clock,
        }
    }

    /// The targets from now on (the policy file's `notify:`).
    pub fn set_targets(&self, targets: Vec<Notifier>) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.retain(|name, _| targets.iter().any(|t| t.name == *name));
        for target in &targets {
            status.entry(target.name.clone()).or_default();
        }
        self.targets.store(Arc::new(targets));
    }

    /// Each target's deliveries.
    pub fn status(&self) -> Vec<NotificationTarget> {
        let status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.targets
            .load()
            .iter()
            .map(|target| {
                let s = status.get(&target.name).cloned().unwrap_or_default();
                NotificationTarget {
                    name: target.name.clone(),
                    kind: match target.kind {
                        NotifyKind::Webhook => "webhook",
                        NotifyKind::Slack => "slack",
                    }
                    .to_owned(),
                    delivered: s.delivered,
                    failed_attempts: s.failed_attempts,
                    dropped: s.dropped,
                    retrying: s.retrying,
                    last_error: s.last_error.as_ref().map(|(e, _)| e.clone()),
                    last_error_at: s.last_error.as_ref().and_then(|(_, at)| to_timestamp(*at)),
                    last_delivered_at: s.last_delivered.and_then(to_timestamp),
                }
            })
            .collect()
    }

    /// What is failing, for `/readyz`: the targets whose last delivery was given up.
    pub fn problems(&self) -> Vec<String> {
        self.status()
            .into_iter()
            .filter(|t| t.dropped > 0 || t.retrying > 0)
            .map(|t| {
                format!(
                    "notification target {:?}: {} dropped, {} retrying, last error: {}",
                    t.name,
                    t.dropped,
                    t.retrying,
                    t.last_error.unwrap_or_default()
                )
            })
            .collect()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Status)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(status.entry(name.to_owned()).or_default());
    }

    /// Sends `event` to every target, in the background.
    pub fn publish(self: &Arc<Self>, event: &RequestEvent) {
        let targets = self.targets.load_full();
        for target in targets.iter() {
            if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                self.update(&target.name, |s| {
                    s.dropped += 1;
                    s.last_error = Some((
                        "too many deliveries queued; this one was dropped".to_owned(),
                        self.clock.now(),
                    ));
                });
                continue;
            }
            let body = match target.kind {
                NotifyKind::Webhook => serde_json::to_vec(event),
                NotifyKind::Slack => serde_json::to_vec(&slack_payload(event)),
            };
            let Ok(body) = body else {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                continue;
            };
            let this = Arc::clone(self);
            let target = target.clone();
            let event_id = event.id.clone();
            tokio::spawn(async move {
                this.deliver(&target, &event_id, body).await;
                this.queued.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    async fn deliver(&self, target: &Notifier, event_id: &str, body: Vec<u8>) {
        let mut wait = self.retry_base;
        for attempt in 1..=ATTEMPTS {
            match self.attempt(target, event_id, &body).await {
                Ok(()) => {
                    self.update(&target.name, |s| {
                        s.delivered += 1;
                        s.last_delivered = Some(self.clock.now());
                        if attempt > 1 {
                            s.retrying = s.retrying.saturating_sub(1);
                        }
                    });
                    return;
                }
                Err(error) => {
                    tracing::warn!(target = %target.name, attempt, error = %error, "a notification was not delivered");
                    let last = attempt == ATTEMPTS;
                    self.update(&target.name, |s| {
                        s.failed_attempts += 1;
                        s.last_error = Some((error, self.clock.now()));
                        if attempt == 1 && !last {
                            s.retrying += 1;
                        }
                        if last {
                            s.dropped += 1;
                            if attempt > 1 {
                                s.retrying = s.retrying.saturating_sub(1);
                            }
                        }
                    });
                    if last {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }

    async fn attempt(&self, target: &Notifier, event_id: &str, body: &[u8]) -> Result<(), String> {
        let mut request = self
            .http
            .post(target.url.expose())
            .header("Content-Type", "application/json")
            .header("Infra-Event-Id", event_id)
            .body(body.to_vec());
        if let Some(secret) = &target.secret {
            let t = self
                .clock
                .now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            request = request.header(
                "Infra-Signature",
                signature(secret.expose().as_bytes(), t, body),
            );
        }
        // The URL may be a credential: errors name the target, never the URL.
        let response = request
            .send()
            .await
            .map_err(|e| format!("sending failed: {}", crate::oncall::chain(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the target answered {status}"))
        }
    }
}

/// A Slack incoming webhook's payload for `event`.
pub fn slack_payload(event: &RequestEvent) -> serde_json::Value {
    let r = &event.request;
    let minutes = r.duration_seconds / 60;
    let headline = format!(
        "Access request {} is {}: {} asks for {} on {} for {} min (\"{}\")",
        r.id,
        r.state,
        r.user,
        r.role,
        r.resource,
        minutes,
        r.reason.replace(['<', '>', '&'], "")
    );
    let mut blocks = vec![serde_json::json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": headline},
    })];
    if !event.commands.is_empty() {
        let commands: Vec<String> = event.commands.iter().map(|c| format!("`{c}`")).collect();
        blocks.push(serde_json::json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": commands.join("  ")}],
        }));
    }
    serde_json::json!({ "text": headline, "blocks": blocks })
}
