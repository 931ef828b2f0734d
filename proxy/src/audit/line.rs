//! A request's audit line, serialized straight from its [`Record`]: the writer thread turns each
//! record into a [`Line`] of borrowed values (no string is built: names, paths and groups are
//! the record's own, the audit id is encoded on the stack, the grant and the address are written
//! by their `Display`) and serde writes it into the batch's reused buffer.
//!
//! A [`Line`] has the fields of [`infra_api::audit::Event`] that a request event can carry, in
//! the same order and with the same names, so its JSON *is* an `Event`'s (the tests parse one and
//! compare). [`Record::line`] is the one place that says which record field fills which event
//! field: a new field is one line there and one field here. Where an owned [`Event`] is needed
//! (the control plane in this process, the Kubernetes format) the writer parses the line back.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use infra_api::audit::{Event, Kind, SCHEMA_VERSION, Stage};
use infra_authz::attributes::Attributes;
use infra_authz::decision::{Decision, Identity};
use infra_authz::policy::Grant;
use serde::{Serialize, Serializer};

use super::{AuditId, Part, Record};

/// One request event, borrowed from its record. Field order and names follow
/// [`infra_api::audit::Event`]; fields a request never has (`action`, `target`, `detail`,
/// `hash`) are left out, as `Event` leaves them out when empty.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    schema: u32,
    id: Id,
    time: jiff::Timestamp,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Groups::is_empty")]
    groups: Groups<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Groups::is_empty")]
    impersonated_groups: Groups<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verb: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subresource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<GrantText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
}

/// Why an end event's stream ended, when infra-proxy ended it.
const REVOKED: &str =
    "closed by infra-proxy: the user no longer has access (revoked, expired or logged out)";

impl Record {
    /// The event of this record, for `destination`, ready to serialize.
    pub fn line<'a>(&'a self, destination: &'a str) -> Line<'a> {
        let audit_id = Id::of(self.audit_id);
        // A long-running request's end is an event of its own, under the request's audit id.
        let (id, stage, duration_ms) = match self.part {
            Part::Whole => (audit_id, None, None),
            Part::Start => (audit_id, Some(Stage::Start), None),
            Part::End { id, open, .. } => (
                Id::of(id),
                Some(Stage::End),
                Some(u64::try_from(open.as_millis()).unwrap_or(u64::MAX)),
            ),
        };
        let resource = match &self.attrs {
            Some(Attributes::Resource(r)) => Some(r),
            _ => None,
        };
        let verb = match &self.attrs {
            Some(Attributes::Resource(r)) => Some(r.verb.as_str()),
            Some(Attributes::NonResource(n)) => Some(n.verb.as_str()),
            None => None,
        };
        // The identity the request acted as upstream: the impersonated one, else the caller's
        // own once forwarded.
        let acting = self
            .impersonated
            .as_ref()
            .or(self.identity.as_ref().filter(|_| self.forwarded));
        Line {
            schema: SCHEMA_VERSION,
            id,
            time: jiff::Timestamp::try_from(self.time).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            kind: Kind::Request,
            user: self.identity.as_ref().map(Identity::user),
            groups: Groups(self.identity.as_ref()),
            destination: Some(destination),
            audit_id: Some(audit_id),
            impersonated_user: acting.map(Identity::user),
            impersonated_groups: Groups(self.impersonated.as_ref()),
            method: Some(self.method.as_str()),
            path: Some(&self.path),
            verb,
            api_group: resource.map(|r| r.api_group.as_str()),
            resource: resource.map(|r| r.resource.as_str()),
            subresource: resource.and_then(|r| r.subresource.as_deref()),
            namespace: resource.and_then(|r| r.namespace.as_deref()),
            name: resource.and_then(|r| r.name.as_deref()),
            decision: Some(match &self.decision {
                Some(Decision::Allow { .. }) => "allow",
                Some(_) => "deny",
                None => "none",
            }),
            grant: match &self.decision {
                Some(Decision::Allow { grant }) => Some(GrantText(grant)),
                _ => None,
            },
            reason: match (&self.decision, self.part) {
                (_, Part::End { revoked: true, .. }) => Some(REVOKED),
                (Some(Decision::Deny { reason }), _) => Some(reason),
                _ => None,
            },
            code: Some(self.code),
            latency_us: Some(u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX)),
            source_ip: Some(self.peer.ip()),
            user_agent: self
                .user_agent
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes())),
            stage,
            duration_ms,
        }
    }

    /// The event of this record as an owned [`Event`] (tests and rare paths; the writer
    /// serializes [`Self::line`]).
    pub fn event(&self, destination: &str) -> Event {
        let json = serde_json::to_vec(&self.line(destination)).unwrap_or_default();
        serde_json::from_slice(&json).unwrap_or_default()
    }
}

/// An audit id in its hyphenated form, on the stack.
#[derive(Clone, Copy)]
struct Id([u8; 36]);

impl Id {
    fn of(id: AuditId) -> Self {
        let mut buffer = [0; 36];
        id.encode(&mut buffer);
        Self(buffer)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An identity's groups, as a JSON array; none when there is no identity.
#[derive(Debug)]
struct Groups<'a>(Option<&'a Identity>);

impl Groups<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_none_or(|identity| identity.groups().len() == 0)
    }
}

impl Serialize for Groups<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.into_iter().flat_map(Identity::groups))
    }
}

/// The grant that allowed a request, as `<role> to <subject> on <resource>`, written straight
/// into the line.
#[derive(Debug)]
struct GrantText<'a>(&'a Grant);

impl fmt::Display for GrantText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to {} on {}",
            self.0.role, self.0.subject, self.0.resource
        )
    }
}

impl Serialize for GrantText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use http::{HeaderValue, Method};
    use infra_authz::attributes::{NonResourceAttributes, ResourceAttributes};
    use infra_authz::policy::{Resource, Subject};

    use super::*;
    use crate::audit::AuditId;

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_765_000_000_123_456_789),
            audit_id: AuditId::next(),
            peer: "[2001:db8::7]:40000".parse().expect("an address"),
            method: Method::GET,
            path: "/api/v1/namespaces/web/pods/web-0".to_owned(),
            user_agent: Some(
                HeaderValue::from_bytes("kubectl/v1.34 \"quoted\" \\ ü".as_bytes())
                    .expect("a value"),
            ),
            identity: Some(Identity::new("suzie@example.com", ["dev", "oncall"])),
            impersonated: None,
            forwarded: true,
            attrs: Some(Attributes::Resource(ResourceAttributes {
                verb: "get".into(),
                api_group: String::new(),
                api_version: "v1".into(),
                namespace: Some("web".into()),
                resource: "pods".into(),
                subresource: Some("log".into()),
                name: Some("web-0".into()),
            })),
            decision: Some(Decision::Allow {
                grant: Arc::new(Grant {
                    subject: Subject::Group("dev".into()),
                    role: "edit".into(),
                    resource: Resource::namespace("prod", "web"),
                    expires_at: None,
                }),
            }),
            code: 200,
            latency: Duration::from_micros(1234),
            part: Part::Whole,
        }
    }

    /// The event as the writer built it field by field before it serialized from the record.
    fn expected(record: &Record, destination: &str) -> Event {
        let audit_id = record.audit_id.to_string();
        let (id, stage, duration_ms) = match record.part {
            Part::Whole => (audit_id.clone(), None, None),
            Part::Start => (audit_id.clone(), Some(Stage::Start), None),
            Part::End { id, open, .. } => (
                id.to_string(),
                Some(Stage::End),
                Some(u64::try_from(open.as_millis()).expect("small")),
            ),
        };
        let mut event = Event {
            schema: SCHEMA_VERSION,
            audit_id: Some(audit_id),
            id,
            stage,
            duration_ms,
            time: jiff::Timestamp::try_from(record.time).expect("a time"),
            kind: Kind::Request,
            destination: Some(destination.to_owned()),
            method: Some(record.method.as_str().to_owned()),
            path: Some(record.path.clone()),
            source_ip: Some(record.peer.ip().to_string()),
            user_agent: record
                .user_agent
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            code: Some(record.code),
            latency_us: Some(u64::try_from(record.latency.as_micros()).expect("small")),
            decision: Some(
                match &record.decision {
                    Some(Decision::Allow { .. }) => "allow",
                    Some(_) => "deny",
                    None => "none",
                }
                .to_owned(),
            ),
            ..Event::default()
        };
        if let Some(identity) = &record.identity {
            event.user = Some(identity.user().to_owned());
            event.groups = identity.groups().map(str::to_owned).collect();
            if record.forwarded {
                event.impersonated_user = Some(identity.user().to_owned());
            }
        }
        if let Some(impersonated) = &record.impersonated {
            event.impersonated_user = Some(impersonated.user().to_owned());
            event.impersonated_groups = impersonated.groups().map(str::to_owned).collect();
        }
        match &record.attrs {
            Some(Attributes::Resource(r)) => {
                event.verb = Some(r.verb.clone());
                event.api_group = Some(r.api_group.clone());
                event.resource = Some(r.resource.clone());
                event.subresource.clone_from(&r.subresource);
                event.namespace.clone_from(&r.namespace);
                event.name.clone_from(&r.name);
            }
            Some(Attributes::NonResource(n)) => event.verb = Some(n.verb.clone()),
            None => {}
        }
        match &record.decision {
            Some(Decision::Allow { grant }) => {
                event.grant = Some(format!(
                    "{} to {} on {}",
                    grant.role, grant.subject, grant.resource
                ));
            }
            Some(Decision::Deny { reason }) => event.reason = Some(reason.to_string()),
            _ => {}
        }
        if let Part::End { revoked: true, .. } = record.part {
            event.reason = Some(REVOKED.to_owned());
        }
        event
    }

    fn assert_same(record: &Record) {
        let line = serde_json::to_string(&record.line("prod")).expect("serializes");
        let event = expected(record, "prod");
        assert_eq!(
            line,
            serde_json::to_string(&event).expect("serializes"),
            "the line is the event, byte for byte"
        );
        assert_eq!(record.event("prod"), event);
    }

    #[test]
    fn a_line_is_the_event_of_its_record_byte_for_byte() {
        let mut record = record();
        assert_same(&record);

        // Impersonating (kubectl --as), denied, another address, no user agent.
        record.impersonated = Some(Identity::new("bob@example.com", ["ops"]));
        record.decision = Some(Decision::Deny {
            reason: "pods \"web-0\" is forbidden: \"no\"".into(),
        });
        record.code = 403;
        record.peer = "127.0.0.1:5".parse().expect("an address");
        record.user_agent = None;
        assert_same(&record);

        // Not authenticated: no identity, no attributes, no decision.
        record.identity = None;
        record.impersonated = None;
        record.attrs = None;
        record.decision = None;
        record.forwarded = false;
        record.code = 401;
        assert_same(&record);

        // A non-resource request of a user with no groups, not forwarded.
        record.identity = Some(Identity::new("x", Vec::<String>::new()));
        record.attrs = Some(Attributes::NonResource(NonResourceAttributes {
            verb: "get".into(),
            path: "/apis".into(),
        }));
        record.method = Method::from_bytes(b"PROPFIND").expect("a method");
        assert_same(&record);

        // A user agent that is not UTF-8.
        record.user_agent = Some(HeaderValue::from_bytes(b"agent \xff").expect("a value"));
        assert_same(&record);
    }

    #[test]
    fn a_long_running_request_has_a_start_and_an_end_under_its_audit_id() {
        let start = Record {
            part: Part::Start,
            ..record()
        };
        assert_same(&start);
        let end = start.clone().ended(Duration::from_millis(90_500), false);
        assert_same(&end);
        let (start_event, end_event) = (start.event("prod"), end.event("prod"));
        assert_eq!(start_event.stage, Some(Stage::Start));
        assert_eq!(end_event.stage, Some(Stage::End));
        assert_eq!(end_event.audit_id, start_event.audit_id);
        assert_ne!(end_event.id, start_event.id);
        assert_eq!(end_event.duration_ms, Some(90_500));
        assert_eq!(
            end_event.time.as_millisecond() - start_event.time.as_millisecond(),
            90_500
        );
        assert_eq!(end_event.reason, None);
        // Closed by infra-proxy on lost access: said so.
        let revoked = start.ended(Duration::from_secs(3), true);
        assert_same(&revoked);
        assert!(
            revoked
                .event("prod")
                .reason
                .is_some_and(|r| r.contains("no longer has access"))
        );
    }
}
