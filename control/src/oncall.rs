//! Who is on call: the on-call sources access requests auto-approve with.
//!
//! [`OnCallReader`] is the interface (who is on call now in a source, as email addresses);
//! PagerDuty is its first kind. Answers are cached for [`ON_CALL_CACHE`], so a burst of
//! requests asks the provider once; a failing provider approves nobody (the request waits for
//! its reviewers).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use infra_authz::policy::requests::{OnCallKind, OnCallSource};
use serde::Deserialize;

/// How long an on-call answer is reused.
pub const ON_CALL_CACHE: Duration = Duration::from_secs(30);

/// The largest answer read from an on-call provider.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Who is on call now in one source.
pub trait OnCallReader: Send + Sync {
    /// The email addresses of whoever is on call now, lower-cased.
    fn on_call<'a>(
        &'a self,
        http: &'a reqwest::Client,
        source: &'a OnCallSource,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>>;
}

/// PagerDuty's REST API v2: `GET /oncalls` for the schedule (or the escalation policy's first
/// level), with the users included so their email addresses come with the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PagerDuty;

#[derive(Deserialize)]
struct OnCalls {
    oncalls: Vec<OnCallEntry>,
}

#[derive(Deserialize)]
struct OnCallEntry {
    user: Option<PagerDutyUser>,
    #[serde(default)]
    escalation_level: Option<u32>,
}

#[derive(Deserialize)]
struct PagerDutyUser {
    #[serde(default)]
    email: Option<String>,
}

impl OnCallReader for PagerDuty {
    fn on_call<'a>(
        &'a self,
        http: &'a reqwest::Client,
        source: &'a OnCallSource,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>> {
        Box::pin(async move {
            let OnCallKind::PagerDuty {
                schedule_id,
                escalation_policy_id,
            } = &source.kind;
            let mut query: Vec<(&str, &str)> = vec![("include[]", "users"), ("limit", "100")];
            if let Some(id) = schedule_id {
                query.push(("schedule_ids[]", id));
            }
            if let Some(id) = escalation_policy_id {
                query.push(("escalation_policy_ids[]", id));
            }
            let url = format!("{}/oncalls", source.url);
            let response = http
                .get(&url)
                .query(&query)
                .header("Accept", "application/vnd.pagerduty+json;version=2")
                .header(
                    "Authorization",
                    format!("Token token={}", source.token.expose()),
                )
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "asking PagerDuty who is on call: {}",
                        chain(&e.without_url())
                    )
                })?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("PagerDuty answered {status} to GET /oncalls"));
            }
            let body = read_limited(response, MAX_ANSWER_BYTES).await?;
            let answer: OnCalls = serde_json::from_slice(&body).map_err(|e| {
                format!("PagerDuty's answer to GET /oncalls is not as documented: {e}")
            })?;
            let first_level_only = escalation_policy_id.is_some();
            Ok(answer
                .oncalls
                .into_iter()
                .filter(|entry| !first_level_only || entry.escalation_level.unwrap_or(1) == 1)
                .filter_map(|entry| entry.user?.email)
                .map(|email| email.to_lowercase())
                .collect())
        })
    }
}

/// An error with its causes, `: `-separated.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a response body of at most `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The on-call sources' answers, cached.
pub struct OnCall {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl std::fmt::Debug for OnCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnCall").finish_non_exhaustive()
    }
}

impl OnCall {
    /// Asks sources over `http`.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn reader(source: &OnCallSource) -> &'static dyn OnCallReader {
        match source.kind {
            OnCallKind::PagerDuty { .. } => &PagerDuty,
        }
    }

    /// Whether `user` (an email address, compared without case) is on call now in `source`.
    pub async fn is_on_call(&self, source: &OnCallSource, user: &str) -> Result<bool, String> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&source.name)
            .filter(|(at, _)| at.elapsed() < ON_CALL_CACHE)
            .map(|(_, who)| who.clone());
        let who = if let Some(who) = cached {
            who
        } else {
            let who = Self::reader(source).on_call(&self.http, source).await?;
            self.cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(source.name.clone(), (Instant::now(), who.clone()));
            who
        };
        let user = user.to_lowercase();
        Ok(who.contains(&user))
    }

    /// Forgets every cached answer (the policy file changed its sources).
    pub fn forget(&self) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}
