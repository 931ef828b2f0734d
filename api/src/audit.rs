//! The audit trail's one event schema (see `docs/audit.md`), shared by the proxies that record
//! requests, the control plane that records its own actions and stores everything, and the CLI
//! that reads it back.
//!
//! One flat object for every kind of event: what a kind does not have is left out of the JSON.
//! `schema` is [`SCHEMA_VERSION`]; a reader refuses nothing it does not know (new optional
//! fields may come), and a change that is not backwards compatible gets a new version.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The version of the event schema this code writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The most events one ingest request may carry (`POST /api/audit/events`).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// A request through a proxy, allowed or denied.
    #[default]
    Request,
    /// A login to the control plane, succeeded or failed.
    Login,
    /// A token issued for a destination.
    Token,
    /// A session ended (logout).
    Session,
    /// A change to what the control plane keeps (users, groups, members, grants, keys,
    /// providers, destinations, access requests, ...).
    Change,
    /// A policy file reload, applied or refused.
    Policy,
}

impl Kind {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Login => "login",
            Self::Token => "token",
            Self::Session => "session",
            Self::Change => "change",
            Self::Policy => "policy",
        }
    }

    /// The kind of a control-plane action (`login.password`, `grant.create`): its first word
    /// when that names a kind, else [`Kind::Change`], so that every new action the store records
    /// is in the trail as a change without more work.
    pub fn of_action(action: &str) -> Self {
        if action.starts_with("user.login") {
            return Self::Login;
        }
        match action.split('.').next().unwrap_or_default() {
            "login" => Self::Login,
            "token" => Self::Token,
            "session" | "logout" => Self::Session,
            "policy" => Self::Policy,
            _ => Self::Change,
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "request" => Self::Request,
            "login" => Self::Login,
            "token" => Self::Token,
            "session" => Self::Session,
            "change" => Self::Change,
            "policy" => Self::Policy,
            other => {
                return Err(format!(
                    "unknown kind {other:?}: request, login, token, session, change or policy"
                ));
            }
        })
    }
}

/// Which part of a long-running request (watch, followed logs, exec, attach, port-forward) an
/// event records: such a request has two events with the same `audit_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stage {
    /// The response began (the stream is open): written when the response head was sent.
    Start,
    /// The stream ended: written when it closed, with its `duration_ms`.
    End,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    /// The schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The event's unique id (a UUID): the store keeps one event per id, so a batch sent twice
    /// is stored once.
    pub id: String,
    /// When it happened (a request: when it arrived).
    pub time: Timestamp,
    /// What it records.
    pub kind: Kind,
    /// Who: the requesting user, or the control-plane actor (for a failed login, the name
    /// tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's groups (requests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The destination (the proxy's cluster; for a token, the one it is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The control-plane action (`grant.create`, `user.login`, `request.approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// What the action was done to (`user "alice@example.com"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// More about the action, when there is more (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The audit id of a request, shared with the apiserver (`Audit-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    /// The identity the request acted as upstream, or the one the client impersonated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    /// The impersonated identity's groups, when the client impersonated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impersonated_groups: Vec<String>,
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Kubernetes verb (`get`, `list`, `watch`, `delete`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// The API group (`""` for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `allow` or `deny` for requests and policy reloads (`none` when the request never
    /// reached a decision); `success` or `failure` for logins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The grant that allowed the request (`admin to user "alice" on prod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Why a request was denied, a login failed or a policy file was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The HTTP status sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Time to the response head, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// The client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The SHA-256 of a policy file (hex), for reloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// For a long-running request: its start or its end (absent for other requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// How long a long-running request was open, in milliseconds (on its `end` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A change's object before it (updates and deletes), as the control API shows it; never
    /// a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    /// A change's object after it (creations and updates), as the control API shows it;
    /// never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

/// `POST /api/audit/events`: a proxy's batch of request events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Up to [`MAX_BATCH_EVENTS`] events.
    pub events: Vec<Event>,
}

/// The answer to an ingest: how many events were new (the others were stored before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ingested {
    /// Events stored now.
    pub stored: u64,
    /// Events already stored (sent again after a lost answer).
    pub duplicates: u64,
}

/// `GET /api/audit/export`: the audit trail's export as OpenTelemetry logs over OTLP.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExportStatus {
    /// Whether this control plane exports (`--audit-otlp-endpoint`).
    pub configured: bool,
    /// Where the logs go (the receiver's logs URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What this replica's exporter does: `starting`, `exporting`, `standby` (another replica
    /// exports), `stopped`, or `off`.
    pub mode: String,
    /// Events the receiver took, all replicas together, since the export began.
    pub exported: u64,
    /// Events the receiver refused for good (they stay in the store).
    pub dropped: u64,
    /// Failed attempts of this replica that were retried, since it started.
    pub retried: u64,
    /// Failed attempts in a row (0: the last one worked).
    pub failures_in_a_row: u64,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Timestamp>,
    /// When this replica's receiver last took a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_export_at: Option<Timestamp>,
}

/// `GET /api/audit`: one page of events, newest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub items: Vec<Event>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An event in the Kubernetes audit format (`audit.k8s.io/v1` `Event`, level `Metadata`), as the
/// apiserver writes to its audit log, so tools that read those read Infra's request events.
/// Built by [`Event::to_kubernetes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesEvent {
    /// `Event`.
    pub kind: String,
    /// `audit.k8s.io/v1`.
    pub api_version: String,
    /// `Metadata`: no request or response bodies.
    pub level: String,
    /// The audit id (the same the apiserver got).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `ResponseComplete`, or `ResponseStarted` for a long-running request.
    pub stage: String,
    /// The request path.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The Kubernetes verb (lower case).
    pub verb: String,
    /// Who asked.
    pub user: KubernetesUser,
    /// Whom they impersonated (`kubectl --as`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<KubernetesUser>,
    /// The client address.
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// What the request was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<KubernetesObjectRef>,
    /// The answer's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<KubernetesStatus>,
    /// When the request arrived (RFC 3339, microseconds).
    pub request_received_timestamp: String,
    /// When this stage was reached.
    pub stage_timestamp: String,
    /// `authorization.k8s.io/decision` (`allow`, `forbid`) and `authorization.k8s.io/reason`,
    /// as the apiserver writes them, and `infra.dev/destination`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesUser {
    /// The user name.
    pub username: String,
    /// The groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesObjectRef {
    /// The resource.
    pub resource: String,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API group (absent for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// The subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

/// `meta/v1` `Status`, as much as an audit event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesStatus {
    /// Always empty.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The HTTP status.
    pub code: u16,
}

impl Event {
    /// This request event in the Kubernetes audit format; `None` for control-plane events,
    /// which have no Kubernetes equivalent.
    pub fn to_kubernetes(&self) -> Option<KubernetesEvent> {
        if self.kind != Kind::Request {
            return None;
        }
        let format = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        // An end event's time is the stream's end; the request arrived `duration_ms` before.
        let (received, stage_time) = if self.stage == Some(Stage::End) {
            let open = jiff::SignedDuration::from_millis(
                i64::try_from(self.duration_ms.unwrap_or(0)).unwrap_or(i64::MAX),
            );
            (self.time.checked_sub(open).unwrap_or(self.time), self.time)
        } else {
            let answered = self
                .latency_us
                .and_then(|us| {
                    self.time
                        .checked_add(jiff::SignedDuration::from_micros(i64::try_from(us).ok()?))
                        .ok()
                })
                .unwrap_or(self.time);
            (self.time, answered)
        };
        let impersonated_user = self
            .impersonated_user
            .as_ref()
            .filter(|u| Some(*u) != self.user.as_ref())
            .map(|u| KubernetesUser {
                username: u.clone(),
                groups: self.impersonated_groups.clone(),
            });
        let mut annotations = std::collections::BTreeMap::new();
        match self.decision.as_deref() {
            Some("allow") => {
                annotations.insert(
                    "authorization.k8s.io/decision".to_owned(),
                    "allow".to_owned(),
                );
                if let Some(grant) = &self.grant {
                    annotations.insert(
                        "authorization.k8s.io/reason".to_owned(),
                        format!("infra: allowed by the grant of {grant}"),
                    );
                }
            }
            Some("deny") => {
                annotations.insert(
                    "authorization.k8s.io/decision".to_owned(),
                    "forbid".to_owned(),
                );
                if let Some(reason) = &self.reason {
                    annotations.insert("authorization.k8s.io/reason".to_owned(), reason.clone());
                }
            }
            _ => {}
        }
        if let Some(destination) = &self.destination {
            annotations.insert("infra.dev/destination".to_owned(), destination.clone());
        }
        Some(KubernetesEvent {
            kind: "Event".to_owned(),
            api_version: "audit.k8s.io/v1".to_owned(),
            level: "Metadata".to_owned(),
            audit_id: self.audit_id.clone().unwrap_or_else(|| self.id.clone()),
            stage: if self.stage == Some(Stage::Start) {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            }
            .to_owned(),
            request_uri: self.path.clone().unwrap_or_default(),
            verb: self.verb.clone().unwrap_or_default(),
            user: KubernetesUser {
                username: self
                    .user
                    .clone()
                    .unwrap_or_else(|| "system:anonymous".to_owned()),
                groups: self.groups.clone(),
            },
            impersonated_user,
            source_ips: self.source_ip.clone().into_iter().collect(),
            user_agent: self.user_agent.clone(),
            object_ref: self.resource.as_ref().map(|resource| KubernetesObjectRef {
                resource: resource.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                api_group: self.api_group.clone().filter(|g| !g.is_empty()),
                subresource: self.subresource.clone(),
            }),
            response_status: self.code.map(|code| KubernetesStatus {
                metadata: std::collections::BTreeMap::new(),
                code,
            }),
            request_received_timestamp: format(received),
            stage_timestamp: format(stage_time),
            annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_running_request_is_response_started_then_response_complete_in_kubernetes_form() {
        let start = Event {
            schema: SCHEMA_VERSION,
            id: "a1".into(),
            audit_id: Some("a1".into()),
            time: "2026-12-07T10:00:00Z".parse().expect("time"),
            kind: Kind::Request,
            verb: Some("watch".into()),
            resource: Some("pods".into()),
            code: Some(200),
            latency_us: Some(2000),
            stage: Some(Stage::Start),
            ..Event::default()
        };
        let end = Event {
            id: "e1".into(),
            time: "2026-12-07T10:05:00Z".parse().expect("time"),
            stage: Some(Stage::End),
            duration_ms: Some(300_000),
            ..start.clone()
        };
        let started = start.to_kubernetes().expect("a request");
        assert_eq!(started.stage, "ResponseStarted");
        assert_eq!(
            started.request_received_timestamp,
            "2026-12-07T10:00:00.000000Z"
        );
        assert_eq!(started.stage_timestamp, "2026-12-07T10:00:00.002000Z");
        let ended = end.to_kubernetes().expect("a request");
        assert_eq!(ended.stage, "ResponseComplete");
        assert_eq!(ended.audit_id, "a1", "the same audit id as its start");
        assert_eq!(
            ended.request_received_timestamp,
            "2026-12-07T10:00:00.000000Z"
        );
        assert_eq!(ended.stage_timestamp, "2026-12-07T10:05:00.000000Z");
        // Other requests are complete in one event.
        let whole = Event {
            stage: None,
            ..start
        };
        assert_eq!(
            whole.to_kubernetes().expect("a request").stage,
            "ResponseComplete"
        );
    }

    #[test]
    fn the_kind_of_an_action_is_its_first_word_or_a_change() {
        assert_eq!(Kind::of_action("user.login"), Kind::Login);
        assert_eq!(Kind::of_action("user.login.failed"), Kind::Login);
        assert_eq!(Kind::of_action("user.create"), Kind::Change);
        assert_eq!(Kind::of_action("token.issue"), Kind::Token);
        assert_eq!(Kind::of_action("session.end"), Kind::Session);
        assert_eq!(Kind::of_action("policy.reload"), Kind::Policy);
        assert_eq!(Kind::of_action("grant.create"), Kind::Change);
        assert_eq!(Kind::of_action("request.approve"), Kind::Change);
        assert_eq!(Kind::of_action(""), Kind::Change);
    }

    #[test]
    fn an_event_leaves_out_what_its_kind_does_not_have() {
        let event = Event {
            schema: SCHEMA_VERSION,
            id: "e1".into(),
            time: Timestamp::UNIX_EPOCH,
            kind: Kind::Change,
            user: Some("admin".into()),
            action: Some("grant.create".into()),
            ..Event::default()
        };
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"schema": 1, "id": "e1", "time": "1970-01-01T00:00:00Z",
                "kind": "change", "user": "admin", "action": "grant.create"})
        );
        let back: Event = serde_json::from_value(json).expect("parse");
        assert_eq!(back, event);
    }
}
