//! The access-request sections of the policy file: `requests` (who may ask for what, who
//! approves), `onCall` (where on-call schedules are read) and `notify` (who is told).

use std::collections::HashMap;
use std::time::Duration;

use super::{Checker, join};
use crate::duration;
use crate::policy::file::errors::{PolicyErrorKind, Position};
use crate::policy::file::yaml::{Located, Node, at};
use crate::policy::requests::{
    MAX_APPROVALS, MAX_REQUEST_DURATION, Notifier, NotifyKind, OnCallKind, OnCallSource,
    RequestRule, ResourcePattern,
};
use crate::policy::validate_role_name;

const RULE_KEYS: &[&str] = &[
    "name",
    "user",
    "group",
    "roles",
    "resources",
    "maxDuration",
    "reviewers",
    "approvals",
    "autoApprove",
];
const SUBJECT_KEYS: &[&str] = &["user", "group"];
const AUTO_KEYS: &[&str] = &["onCall"];
const ON_CALL_KEYS: &[&str] = &[
    "name",
    "kind",
    "scheduleID",
    "escalationPolicyID",
    "url",
    "tokenFrom",
];
const NOTIFY_KEYS: &[&str] = &["name", "kind", "url", "secret"];

/// PagerDuty's REST API.
const PAGERDUTY_API: &str = "https://api.pagerduty.com";

impl Checker<'_> {
    fn request_error(&mut self, node: &Located, path: &str, message: String) {
        self.error(at(node), path, PolicyErrorKind::Request(message));
    }

    fn strings<'n>(&mut self, node: &'n Located, path: &str) -> Option<Vec<(String, &'n Located)>> {
        let items = self.list(node, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push((s.to_owned(), item)),
                None => ok = false,
            }
        }
        if ok && out.is_empty() {
            self.request_error(node, path, "the list is empty".into());
            return None;
        }
        ok.then_some(out)
    }

    fn duration(&mut self, node: &Located, path: &str) -> Option<Duration> {
        let text = self.string(node, path)?;
        match duration::parse(text) {
            Ok(d) if d <= MAX_REQUEST_DURATION => Some(d),
            Ok(_) => {
                let message = format!(
                    "{text:?} is longer than the {} a request may last",
                    duration::format(MAX_REQUEST_DURATION)
                );
                self.request_error(node, path, message);
                None
            }
            Err(why) => {
                self.request_error(node, path, why);
                None
            }
        }
    }

    pub(super) fn requests(
        &mut self,
        items: &[Located],
        on_call: &[OnCallSource],
    ) -> Vec<RequestRule> {
        let mut rules = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("requests[{i}]");
            let Some(fields) = self.fields(item, &path, RULE_KEYS) else {
                continue;
            };
            let name = match fields.get("name") {
                Some(node) => self
                    .string(node, &join(&path, "name"))
                    .map(str::to_owned)
                    .and_then(|name| self.valid_name(node, &join(&path, "name"), name))
                    .filter(|name| {
                        self.first_of(&mut seen, "request rule", name, node, &join(&path, "name"))
                    }),
                None => Some(format!("requests[{i}]")),
            };
            let who = self.subject(&fields, &path);
            let roles = self.required(&fields, &path, "roles").and_then(|node| {
                let roles_path = join(&path, "roles");
                let roles = self.strings(node, &roles_path)?;
                let mut ok = true;
                for (j, (role, item)) in roles.iter().enumerate() {
                    if let Err(e) = validate_role_name(role) {
                        self.error(
                            at(item),
                            &format!("{roles_path}[{j}]"),
                            PolicyErrorKind::Name(e),
                        );
                        ok = false;
                    }
                }
                ok.then(|| roles.into_iter().map(|(r, _)| r).collect::<Vec<_>>())
            });
            let resources = self.required(&fields, &path, "resources").and_then(|node| {
                let resources_path = join(&path, "resources");
                let items = self.strings(node, &resources_path)?;
                let mut ok = true;
                let mut patterns = Vec::new();
                for (j, (text, item)) in items.iter().enumerate() {
                    match text.parse::<ResourcePattern>() {
                        Ok(p) => patterns.push(p),
                        Err(e) => {
                            let item_path = format!("{resources_path}[{j}]");
                            self.error(at(item), &item_path, PolicyErrorKind::Name(e));
                            ok = false;
                        }
                    }
                }
                ok.then_some(patterns)
            });
            let max_duration = self
                .required(&fields, &path, "maxDuration")
                .and_then(|node| self.duration(node, &join(&path, "maxDuration")));
            let reviewers = self.required(&fields, &path, "reviewers").and_then(|node| {
                let reviewers_path = join(&path, "reviewers");
                let sub = self.fields(node, &reviewers_path, SUBJECT_KEYS)?;
                self.subject(&sub, &reviewers_path)
            });
            let approvals = match fields.get("approvals") {
                None => Some(1),
                Some(node) => {
                    let approvals_path = join(&path, "approvals");
                    match node.value {
                        Node::Int(Some(n)) if (1..=i64::from(MAX_APPROVALS)).contains(&n) => {
                            u32::try_from(n).ok()
                        }
                        Node::Int(_) => {
                            let message =
                                format!("approvals must be a number from 1 to {MAX_APPROVALS}");
                            self.request_error(node, &approvals_path, message);
                            None
                        }
                        ref other => {
                            let found = other.kind();
                            let kind = PolicyErrorKind::WrongType {
                                expected: "an integer",
                                found,
                            };
                            self.error(at(node), &approvals_path, kind);
                            None
                        }
                    }
                }
            };
            let auto = match fields.get("autoApprove") {
                None => Some(None),
                Some(node) => {
                    let auto_path = join(&path, "autoApprove");
                    self.fields(node, &auto_path, AUTO_KEYS).and_then(|sub| {
                        let source_node = self.required(&sub, &auto_path, "onCall")?;
                        let source_path = join(&auto_path, "onCall");
                        let source = self.string(source_node, &source_path)?;
                        if on_call.iter().any(|s| s.name == source) {
                            Some(Some(source.to_owned()))
                        } else {
                            let known: Vec<&str> =
                                on_call.iter().map(|s| s.name.as_str()).collect();
                            let message = format!(
                                "no on-call source is named {source:?} (declared under onCall: {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            );
                            self.request_error(source_node, &source_path, message);
                            None
                        }
                    })
                }
            };
            if let (
                Some(name),
                Some(who),
                Some(roles),
                Some(resources),
                Some(max_duration),
                Some(reviewers),
                Some(approvals),
                Some(on_call),
            ) = (
                name,
                who,
                roles,
                resources,
                max_duration,
                reviewers,
                approvals,
                auto,
            ) {
                rules.push(RequestRule {
                    name,
                    who,
                    roles,
                    resources,
                    max_duration,
                    reviewers,
                    approvals,
                    on_call,
                });
            }
        }
        rules
    }

    pub(super) fn on_call(&mut self, items: &[Located]) -> Vec<OnCallSource> {
        let mut sources = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("onCall[{i}]");
            let Some(fields) = self.fields(item, &path, ON_CALL_KEYS) else {
                continue;
            };
            let name = self
                .token(&fields, &path, "name", "the on-call source name")
                .filter(|name| match fields.get("name") {
                    Some(node) => self.first_of(
                        &mut seen,
                        "on-call source",
                        name,
                        node,
                        &join(&path, "name"),
                    ),
                    None => true,
                });
            let kind = self.required(&fields, &path, "kind").and_then(|node| {
                let kind_path = join(&path, "kind");
                match self.string(node, &kind_path)? {
                    "pagerduty" => Some(()),
                    other => {
                        let message =
                            format!("unknown on-call kind {other:?}; the kinds are: pagerduty");
                        self.request_error(node, &kind_path, message);
                        None
                    }
                }
            });
            let id = |checker: &mut Self, key: &'static str| {
                fields.get(key).and_then(|node| {
                    let id_path = join(&path, key);
                    let id = checker.string(node, &id_path)?;
                    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        Some(id.to_owned())
                    } else {
                        let message = format!("{key} must be a PagerDuty id (letters and digits)");
                        checker.request_error(node, &id_path, message);
                        None
                    }
                })
            };
            let schedule_id = id(self, "scheduleID");
            let escalation_policy_id = id(self, "escalationPolicyID");
            let target_ok = match (fields.get("scheduleID"), fields.get("escalationPolicyID")) {
                (Some(_), Some(node)) => {
                    let message = "give one of scheduleID and escalationPolicyID".to_owned();
                    self.request_error(node, &path, message);
                    false
                }
                (None, None) => {
                    let message = "give scheduleID or escalationPolicyID".to_owned();
                    self.error(fields.at, &path, PolicyErrorKind::Request(message));
                    false
                }
                (Some(_), None) => schedule_id.is_some(),
                (None, Some(_)) => escalation_policy_id.is_some(),
            };
            let url = match fields.get("url") {
                None => Some(PAGERDUTY_API.to_owned()),
                Some(node) => {
                    let url_path = join(&path, "url");
                    self.string(node, &url_path).and_then(|url| {
                        if url.starts_with("https://") {
                            Some(url.trim_end_matches('/').to_owned())
                        } else {
                            let message = "the URL must start with https://".to_owned();
                            self.request_error(node, &url_path, message);
                            None
                        }
                    })
                }
            };
            let token = self
                .required(&fields, &path, "tokenFrom")
                .and_then(|node| self.secret(node, &join(&path, "tokenFrom")));
            if let (Some(name), Some(()), true, Some(url), Some(token)) =
                (name, kind, target_ok, url, token)
            {
                sources.push(OnCallSource {
                    name,
                    kind: OnCallKind::PagerDuty {
                        schedule_id,
                        escalation_policy_id,
                    },
                    url,
                    token,
                });
            }
        }
        sources
    }

    pub(super) fn notify(&mut self, items: &[Located]) -> Vec<Notifier> {
        let mut targets = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("notify[{i}]");
            let Some(fields) = self.fields(item, &path, NOTIFY_KEYS) else {
                continue;
            };
            let name = self
                .token(&fields, &path, "name", "the notification target name")
                .filter(|name| match fields.get("name") {
                    Some(node) => self.first_of(
                        &mut seen,
                        "notification target",
                        name,
                        node,
                        &join(&path, "name"),
                    ),
                    None => true,
                });
            let kind = self.required(&fields, &path, "kind").and_then(|node| {
                let kind_path = join(&path, "kind");
                match self.string(node, &kind_path)? {
                    "webhook" => Some(NotifyKind::Webhook),
                    "slack" => Some(NotifyKind::Slack),
                    other => {
                        let message = format!(
                            "unknown notification kind {other:?}; the kinds are: webhook, slack"
                        );
                        self.request_error(node, &kind_path, message);
                        None
                    }
                }
            });
            let url = self.required(&fields, &path, "url").and_then(|node| {
                let url_path = join(&path, "url");
                let url = self.secret(node, &url_path)?;
                if url.expose().starts_with("https://") {
                    Some(url)
                } else {
                    // The URL may be a credential (a Slack webhook's is): not repeated.
                    let message = "the URL must start with https://".to_owned();
                    self.request_error(node, &url_path, message);
                    None
                }
            });
            let secret = fields
                .get("secret")
                .map(|node| self.secret(node, &join(&path, "secret")));
            let secret = match (kind, secret) {
                (Some(NotifyKind::Webhook), None) => {
                    let message =
                        "a webhook needs `secret`, the key its receiver checks signatures with"
                            .to_owned();
                    self.error(fields.at, &path, PolicyErrorKind::Request(message));
                    None
                }
                (_, None) => Some(None),
                (_, Some(secret)) => secret.map(Some),
            };
            if let (Some(name), Some(kind), Some(url), Some(secret)) = (name, kind, url, secret) {
                targets.push(Notifier {
                    name,
                    kind,
                    url,
                    secret,
                });
            }
        }
        targets
    }
}
