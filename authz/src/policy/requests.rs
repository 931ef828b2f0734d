//! Access requests: who may ask for which role where and for how long, who approves, and the
//! on-call schedules and notification targets they use.
//!
//! A [`RequestRule`] lets a user or the members of a group ask for one of its roles on one of
//! its resources for at most its longest duration; its reviewers approve (a number of distinct
//! approvals), and the person on call in its on-call source is approved at once. Whether a
//! request is covered is decided here ([`covering`]), with a refusal that names the rule that
//! came closest and what it would take; the control plane stores and reviews requests.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use super::{CONTROL_RESOURCE, NameError, Resource, Secret, Subject, validate_dns_label};
use crate::duration;

/// The longest any rule may let access last (30 days).
pub const MAX_REQUEST_DURATION: Duration = Duration::from_hours(30 * 24);

/// The most distinct approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 10;

/// Which resources a rule covers: a whole destination (`production`), any one namespace of it
/// (`production.*`), or one namespace (`production.web`). `production` does not cover its
/// namespaces, nor `production.*` the whole destination: each is asked for as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourcePattern {
    /// The whole destination.
    Destination(String),
    /// Any one namespace of the destination.
    AnyNamespace(String),
    /// One namespace of the destination.
    Namespace(String, String),
}

impl ResourcePattern {
    /// Whether the pattern covers `resource`.
    pub fn matches(&self, resource: &Resource) -> bool {
        match (self, &resource.namespace) {
            (Self::Destination(d), None) | (Self::AnyNamespace(d), Some(_)) => {
                *d == resource.destination
            }
            (Self::Namespace(d, ns), Some(theirs)) => *d == resource.destination && ns == theirs,
            _ => false,
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Destination(d) => f.write_str(d),
            Self::AnyNamespace(d) => write!(f, "{d}.*"),
            Self::Namespace(d, ns) => write!(f, "{d}.{ns}"),
        }
    }
}

impl FromStr for ResourcePattern {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |why: String| NameError::Resource {
            value: s.to_owned(),
            why,
        };
        let pattern = if let Some(destination) = s.strip_suffix(".*") {
            validate_dns_label(destination).map_err(|why| refuse(format!("destination {why}")))?;
            Self::AnyNamespace(destination.to_owned())
        } else {
            let resource: Resource = s.parse()?;
            match resource.namespace {
                Some(ns) => Self::Namespace(resource.destination, ns),
                None => Self::Destination(resource.destination),
            }
        };
        let destination = match &pattern {
            Self::Destination(d) | Self::AnyNamespace(d) | Self::Namespace(d, _) => d,
        };
        if destination == CONTROL_RESOURCE {
            return Err(refuse(format!(
                "`{CONTROL_RESOURCE}` (the control API) cannot be asked for; grant it instead"
            )));
        }
        Ok(pattern)
    }
}

/// Who may ask for what, and who approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRule {
    /// The rule's name, unique among rules.
    pub name: String,
    /// Who may ask: a user, or the members of a group.
    pub who: Subject,
    /// The roles they may ask for.
    pub roles: Vec<String>,
    /// Where.
    pub resources: Vec<ResourcePattern>,
    /// The longest access they may ask for.
    pub max_duration: Duration,
    /// Who approves: a user, or the members of a group (never the requester).
    pub reviewers: Subject,
    /// How many distinct reviewers must approve.
    pub approvals: u32,
    /// The on-call source whose current on-call person is approved at once.
    pub on_call: Option<String>,
}

impl RequestRule {
    /// One line for people: `group "Engineering" may ask for edit, admin on production,
    /// production.* for at most 4h; group "SRE" approves (1)`.
    pub fn describe(&self) -> String {
        let resources: Vec<String> = self.resources.iter().map(ToString::to_string).collect();
        let mut text = format!(
            "{} may ask for {} on {} for at most {}; {} approves ({})",
            self.who,
            self.roles.join(", "),
            resources.join(", "),
            duration::format(self.max_duration),
            self.reviewers,
            self.approvals,
        );
        if let Some(source) = &self.on_call {
            let _ = write!(
                text,
                "; whoever is on call in {source:?} is approved at once"
            );
        }
        text
    }
}

/// What is asked: by whom (and their groups), which role where, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The requester.
    pub user: &'a str,
    /// The requester's groups.
    pub groups: &'a [String],
    /// The role.
    pub role: &'a str,
    /// Where.
    pub resource: &'a Resource,
    /// For how long.
    pub duration: Duration,
}

/// Whether `subject` is `user` or one of `groups`.
pub fn subject_is(subject: &Subject, user: &str, groups: &[String]) -> bool {
    match subject {
        Subject::User(name) => name == user,
        Subject::Group(name) => groups.iter().any(|g| g == name),
    }
}

/// What keeps `rule` from covering `ask`, each part worded for the requester.
fn misses(rule: &RequestRule, ask: &Ask<'_>) -> Vec<String> {
    let mut misses = Vec::new();
    if !subject_is(&rule.who, ask.user, ask.groups) {
        misses.push(match &rule.who {
            Subject::User(name) => format!("it is for user {name:?}"),
            Subject::Group(name) => format!("it is for members of group {name:?}"),
        });
    }
    if !rule.roles.iter().any(|r| r == ask.role) {
        misses.push(format!(
            "role {:?} is not among its roles ({})",
            ask.role,
            rule.roles.join(", ")
        ));
    }
    if !rule.resources.iter().any(|p| p.matches(ask.resource)) {
        let resources: Vec<String> = rule.resources.iter().map(ToString::to_string).collect();
        misses.push(format!(
            "{} is not among its resources ({})",
            ask.resource,
            resources.join(", ")
        ));
    }
    if ask.duration > rule.max_duration {
        misses.push(format!(
            "{} is longer than its {} (ask for {} or less)",
            duration::format(ask.duration),
            duration::format(rule.max_duration),
            duration::format(rule.max_duration),
        ));
    }
    misses
}

/// The rules that cover `ask`, in order; when none does, why: the rule that came closest (the
/// fewest differences) and what differs.
pub fn covering<'r>(
    rules: &'r [RequestRule],
    ask: &Ask<'_>,
) -> Result<Vec<&'r RequestRule>, String> {
    let mut closest: Option<(&RequestRule, Vec<String>)> = None;
    let mut covering = Vec::new();
    for rule in rules {
        let misses = misses(rule, ask);
        if misses.is_empty() {
            covering.push(rule);
        } else if closest.as_ref().is_none_or(|(_, m)| misses.len() < m.len()) {
            closest = Some((rule, misses));
        }
    }
    if !covering.is_empty() {
        return Ok(covering);
    }
    let asked = format!(
        "role {:?} on {} for {}",
        ask.role,
        ask.resource,
        duration::format(ask.duration)
    );
    Err(match closest {
        None => format!(
            "no request rule lets anyone ask for access ({asked} asked); an admin adds rules under `requests:` in the policy file or with the API"
        ),
        Some((rule, misses)) => format!(
            "no request rule covers {asked} for user {:?}; the closest, rule {:?} ({}), would cover it but {}",
            ask.user,
            rule.name,
            rule.describe(),
            misses.join("; and ")
        ),
    })
}

/// Where an on-call source reads who is on call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCallKind {
    /// PagerDuty's REST API (`GET /oncalls`), for a schedule or an escalation policy.
    PagerDuty {
        /// A schedule's id (`P123ABC`).
        schedule_id: Option<String>,
        /// An escalation policy's id: its first level's on-call.
        escalation_policy_id: Option<String>,
    },
}

/// An on-call source: who is on call now, as a list of email addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCallSource {
    /// The source's name, which rules refer to.
    pub name: String,
    /// What it reads.
    pub kind: OnCallKind,
    /// The API's base URL (`https://api.pagerduty.com` unless given).
    pub url: String,
    /// The API token.
    pub token: Secret,
}

/// The payload a notification target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// A JSON body signed with HMAC-SHA256 over the timestamp and the body.
    Webhook,
    /// A Slack incoming webhook's payload (`text` and `blocks`).
    Slack,
}

/// A target told of every access request's change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    /// The target's name.
    pub name: String,
    /// What it receives.
    pub kind: NotifyKind,
    /// Where to POST (a secret: a Slack webhook's URL is its credential).
    pub url: Secret,
    /// The key that signs a webhook's body.
    pub secret: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RequestRule {
        RequestRule {
            name: "eng-prod".into(),
            who: Subject::Group("Engineering".into()),
            roles: vec!["edit".into(), "admin".into()],
            resources: vec![
                "production".parse().expect("pattern"),
                "production.*".parse().expect("pattern"),
            ],
            max_duration: Duration::from_hours(4),
            reviewers: Subject::Group("SRE".into()),
            approvals: 1,
            on_call: None,
        }
    }

    fn ask<'a>(groups: &'a [String], role: &'a str, resource: &'a Resource, hours: u64) -> Ask<'a> {
        Ask {
            user: "carl",
            groups,
            role,
            resource,
            duration: Duration::from_hours(hours),
        }
    }

    #[test]
    fn patterns_match_as_written() {
        let whole: ResourcePattern = "production".parse().expect("pattern");
        let any: ResourcePattern = "production.*".parse().expect("pattern");
        let one: ResourcePattern = "production.web".parse().expect("pattern");
        let web = Resource::namespace("production", "web");
        let db = Resource::namespace("production", "db");
        let cluster = Resource::destination("production");
        assert!(whole.matches(&cluster) && !whole.matches(&web));
        assert!(any.matches(&web) && any.matches(&db) && !any.matches(&cluster));
        assert!(one.matches(&web) && !one.matches(&db) && !one.matches(&cluster));
        assert!(!any.matches(&Resource::namespace("staging", "web")));
        for bad in ["infra", "infra.*", "Prod.*", ".*", "prod.*.*", "prod.we b"] {
            assert!(bad.parse::<ResourcePattern>().is_err(), "{bad}");
        }
        assert_eq!(any.to_string(), "production.*");
    }

    #[test]
    fn a_request_inside_a_rule_is_covered() {
        let rules = [rule()];
        let groups = vec!["Engineering".to_owned()];
        let web = Resource::namespace("production", "web");
        let found = covering(&rules, &ask(&groups, "edit", &web, 2)).expect("covered");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "eng-prod");
    }

    #[test]
    fn a_refusal_names_the_closest_rule_and_what_differs() {
        let other = RequestRule {
            name: "ops".into(),
            who: Subject::Group("Ops".into()),
            roles: vec!["view".into()],
            resources: vec!["staging".parse().expect("pattern")],
            ..rule()
        };
        let rules = [other, rule()];
        let groups = vec!["Engineering".to_owned()];
        let web = Resource::namespace("production", "web");
        let why = covering(&rules, &ask(&groups, "edit", &web, 8)).expect_err("too long");
        assert!(why.contains("rule \"eng-prod\""), "{why}");
        assert!(why.contains("8h is longer than its 4h"), "{why}");
        assert!(!why.contains("Ops"), "{why}");
        let why = covering(&rules, &ask(&[], "edit", &web, 1)).expect_err("not a member");
        assert!(why.contains("members of group \"Engineering\""), "{why}");
        let why = covering(&rules, &ask(&groups, "cluster-admin", &web, 1)).expect_err("role");
        assert!(why.contains("role \"cluster-admin\" is not among"), "{why}");
        let why = covering(&[], &ask(&groups, "edit", &web, 1)).expect_err("no rules");
        assert!(why.contains("no request rule lets anyone"), "{why}");
    }
}
