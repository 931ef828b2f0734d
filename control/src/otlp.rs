//! The audit trail as OpenTelemetry logs over OTLP/HTTP (`--audit-otlp-endpoint`,
//! `docs/audit.md`): the configuration, the mapping of an [`Event`] to a log record, and what a
//! receiver's answer means. The exporter that follows the store and sends is [`exporter`].
//!
//! Mapping (one log record per event, all in one resource and one scope):
//!
//! - resource: `service.name` = `infra`, `service.version`, `service.instance.id` (the replica);
//!   scope `infra.audit`, version = the event schema ([`SCHEMA_VERSION`]);
//! - `time_unix_nano` = the event's time; `observed_time_unix_nano` = when it was exported;
//! - `event_name` = `infra.audit.<kind>`;
//! - severity `WARN` when the decision is `deny`, `none` or `failure` (a refusal, a failed
//!   login, a refused policy file), else `INFO`;
//! - body = the event as its JSON line (schema 1, exactly what `GET /api/audit` answers), so
//!   nothing is lost in translation;
//! - attributes: OpenTelemetry semantic-convention names where there is one (`user.name`,
//!   `http.request.method`, `url.path`, `http.response.status_code`, `client.address`,
//!   `user_agent.original`, `k8s.namespace.name`, `log.record.uid` = the event id), `infra.*`
//!   for the rest.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use http::{HeaderName, HeaderValue, StatusCode};
use infra_api::audit::{Event, SCHEMA_VERSION};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

pub mod exporter;

/// The scope name of the log records.
pub const SCOPE: &str = "infra.audit";
/// The path the logs signal takes under the base endpoint (the OTLP/HTTP spec's rule for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const LOGS_PATH: &str = "v1/logs";

/// Where and how to export.
#[derive(Clone)]
pub struct OtlpConfig {
    /// The logs URL: the base endpoint and `v1/logs`.
    pub url: url::Url,
    /// Headers sent with every export (API keys: their values are marked sensitive and never
    /// shown).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("url", &self.url.as_str())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl OtlpConfig {
    /// The export to the base `endpoint` (`https://collector:4318`; the logs go to its path and
    /// `v1/logs`), with `headers` given as `NAME=VALUE`, the value literal or `env:VAR` or
    /// `file:PATH` (the file's content less one trailing newline). Errors never show a value.
    pub fn parse(endpoint: &str, headers: &[String]) -> Result<Self> {
        Ok(Self {
            url: logs_url(endpoint)?,
            headers: headers
                .iter()
                .map(|header| parse_header(header))
                .collect::<Result<_>>()?,
        })
    }
}

/// The logs URL of the base `endpoint`.
pub fn logs_url(endpoint: &str) -> Result<url::Url> {
    let mut url = url::Url::parse(endpoint)
        .with_context(|| format!("--audit-otlp-endpoint {endpoint:?} is not a URL"))?;
    if url.scheme() != "https" {
        bail!("--audit-otlp-endpoint must be an https:// URL, not {endpoint:?}");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "--audit-otlp-endpoint must not hold credentials; send them with --audit-otlp-header"
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--audit-otlp-endpoint must not have a query or fragment");
    }
    let path = url.path();
    let path = if path.ends_with('/') {
        format!("{path}{LOGS_PATH}")
    } else {
        format!("{path}/{LOGS_PATH}")
    };
    url.set_path(&path);
    Ok(url)
}

fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = header.split_once('=') else {
        bail!("--audit-otlp-header must be NAME=VALUE");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("--audit-otlp-header {:?} is not a header name", name.trim()))?;
    let value = if let Some(var) = value.strip_prefix("env:") {
        std::env::var(var).with_context(|| {
            format!("--audit-otlp-header {name}: environment variable {var:?} is not set")
        })?
    } else if let Some(path) = value.strip_prefix("file:") {
        use infra_authz::policy::file::SecretSource as _;
        let text = infra_authz::policy::file::EnvSecrets
            .read_file(std::path::Path::new(path))
            .with_context(|| format!("--audit-otlp-header {name}: reading {path:?}"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        text.strip_suffix('\r').unwrap_or(text).to_owned()
    } else {
        value.to_owned()
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| anyhow::anyhow!("--audit-otlp-header {name}: the value is not valid"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

fn text(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    }
}

fn attribute(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn nanos(time: jiff::Timestamp) -> u64 {
    u64::try_from(time.as_nanosecond()).unwrap_or(0)
}

/// Whether `event` records a refusal or a failure (severity `WARN`).
pub fn is_warning(event: &Event) -> bool {
    matches!(event.decision.as_deref(), Some("deny" | "none" | "failure"))
}

/// The log record of `event`, exported at `observed`.
pub fn log_record(event: &Event, observed: SystemTime) -> LogRecord {
    let mut attributes = Vec::with_capacity(16);
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            attributes.push(attribute(key, text(value)));
        }
    };
    put("log.record.uid", &Some(event.id.clone()));
    put("infra.kind", &Some(event.kind.as_str().to_owned()));
    put("user.name", &event.user);
    put("infra.destination", &event.destination);
    put("infra.action", &event.action);
    put("infra.target", &event.target);
    put("infra.detail", &event.detail);
    put("infra.audit_id", &event.audit_id);
    put("infra.impersonated.user", &event.impersonated_user);
    put("http.request.method", &event.method);
    put("url.path", &event.path);
    put("infra.k8s.verb", &event.verb);
    put("infra.k8s.api_group", &event.api_group);
    put("infra.k8s.resource", &event.resource);
    put("infra.k8s.subresource", &event.subresource);
    put("k8s.namespace.name", &event.namespace);
    put("infra.k8s.name", &event.name);
    put("infra.decision", &event.decision);
    put("infra.grant", &event.grant);
    put("infra.reason", &event.reason);
    put("client.address", &event.source_ip);
    put("user_agent.original", &event.user_agent);
    put("infra.policy.hash", &event.hash);
    let mut list = |key: &str, values: &[String]| {
        if !values.is_empty() {
            let values = values.iter().map(|v| text(v)).collect();
            attributes.push(attribute(
                key,
                AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
                },
            ));
        }
    };
    list("infra.user.groups", &event.groups);
    list("infra.impersonated.groups", &event.impersonated_groups);
    let int = |value: i64| AnyValue {
        value: Some(any_value::Value::IntValue(value)),
    };
    if let Some(code) = event.code {
        attributes.push(attribute("http.response.status_code", int(i64::from(code))));
    }
    if let Some(latency) = event.latency_us {
        attributes.push(attribute(
            "infra.latency_us",
            int(i64::try_from(latency).unwrap_or(i64::MAX)),
        ));
    }
    let (severity, severity_text) = if is_warning(event) {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    let observed = jiff::Timestamp::try_from(observed).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    LogRecord {
        time_unix_nano: nanos(event.time),
        observed_time_unix_nano: nanos(observed),
        severity_number: severity as i32,
        severity_text: severity_text.to_owned(),
        body: Some(text(&serde_json::to_string(event).unwrap_or_default())),
        attributes,
        event_name: format!("infra.audit.{}", event.kind.as_str()),
        ..LogRecord::default()
    }
}

/// The export request of `events` (in this order), from replica `instance`, at `observed`.
pub fn request<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    instance: &str,
    observed: SystemTime,
) -> ExportLogsServiceRequest {
    let resource = Resource {
        attributes: vec![
            attribute("service.name", text("infra")),
            attribute("service.version", text(env!("CARGO_PKG_VERSION"))),
            attribute("service.instance.id", text(instance)),
        ],
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: SCOPE.to_owned(),
        version: SCHEMA_VERSION.to_string(),
        ..InstrumentationScope::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope),
                log_records: events
                    .into_iter()
                    .map(|event| log_record(event, observed))
                    .collect(),
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// What a receiver's answer to an export means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken; `rejected` of the records refused for good (`partial_success`), with the
    /// receiver's `message` (which may also be a warning with none rejected).
    Accepted {
        /// Records the receiver refused.
        rejected: u64,
        /// What it said, if anything.
        message: String,
    },
    /// Not now (429, 502, 503, 504, or no answer): send the same again, after `after` when the
    /// receiver said (`Retry-After`).
    Retry {
        /// The receiver's wait.
        after: Option<Duration>,
        /// Why, for the log and the API.
        why: String,
    },
    /// Refused for good (any other status): the batch is dropped, and counted.
    Refused {
        /// Why: the status and the receiver's message.
        why: String,
    },
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer: its message is what a log wants.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The receiver's words in an error `body`: the `google.rpc.Status` message, else the text (at
/// most 300 characters).
fn message_of(body: &[u8]) -> String {
    if let Ok(status) = RpcStatus::decode(body)
        && !status.message.is_empty()
    {
        return status.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    text.chars().take(300).collect()
}

/// `Retry-After`: seconds, or an HTTP date (then the wait from `now`).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let now = jiff::Timestamp::try_from(now).ok()?;
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// What the answer `status`, with `retry_after` (the header) and `body`, to an export at `now`
/// means (OTLP/HTTP: 429, 502, 503 and 504 are retried; other errors are not).
pub fn answer(
    status: StatusCode,
    retry_after_header: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Answer {
    if status.is_success() {
        let partial = ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|response| response.partial_success)
            .unwrap_or_default();
        return Answer::Accepted {
            rejected: u64::try_from(partial.rejected_log_records).unwrap_or(0),
            message: partial.error_message,
        };
    }
    let message = message_of(body);
    let why = if message.is_empty() {
        format!("the receiver answered {status}")
    } else {
        format!("the receiver answered {status}: {message}")
    };
    match status.as_u16() {
        429 | 502 | 503 | 504 => Answer::Retry {
            after: retry_after_header.and_then(|value| retry_after(value, now)),
            why,
        },
        _ => Answer::Refused { why },
    }
}

/// The protobuf body of `request`.
pub fn encode(request: &ExportLogsServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

#[cfg(test)]
mod tests;
