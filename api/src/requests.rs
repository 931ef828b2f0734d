//! Access requests (`/api/requests`), the rules that say who may ask for what
//! (`/api/request-rules`), the notification targets' delivery state
//! (`/api/request-notifications`), and the body a webhook receives.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Source;

/// Where a request is in its life: `pending → approved | denied | cancelled | expired`, and
/// `approved → ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for reviews.
    Pending,
    /// Approved: its grant is in force until `access_ends`.
    Approved,
    /// A reviewer denied it.
    Denied,
    /// The requester took it back before it was decided.
    Cancelled,
    /// Nobody decided it in time.
    Expired,
    /// Its access ended: its time ran out, or it was revoked.
    Ended,
}

impl RequestState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Approved,
        Self::Denied,
        Self::Cancelled,
        Self::Expired,
        Self::Ended,
    ];

    /// The name on the wire (and in the store).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Ended => "ended",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Approved.
    Approve,
    /// Denied.
    Deny,
}

impl Verdict {
    /// The name on the wire (and in the store).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// One review of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Who reviewed (`on-call:<source>` for an automatic approval).
    pub reviewer: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What they said.
    pub comment: String,
    /// When.
    pub at: Timestamp,
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// The store's id.
    pub id: i64,
    /// Who asked.
    pub user: String,
    /// The role asked for.
    pub role: String,
    /// `destination` or `destination.namespace`.
    pub resource: String,
    /// How long the access lasts once approved, in seconds.
    pub duration_seconds: u64,
    /// Why, as the requester wrote it.
    pub reason: String,
    /// The state.
    pub state: RequestState,
    /// The rule that covered it when it was made.
    pub rule: String,
    /// How many distinct approvals it needs.
    pub approvals_needed: u32,
    /// The reviews so far.
    pub reviews: Vec<Review>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it expires if nobody decides it.
    pub pending_until: Timestamp,
    /// When its access began.
    pub access_starts: Option<Timestamp>,
    /// When its access ends (or ended).
    pub access_ends: Option<Timestamp>,
    /// The grant its approval made.
    pub grant_id: Option<i64>,
    /// Who ended it (cancelled, revoked; `infra` when its time ran out).
    pub ended_by: Option<String>,
    /// What they said.
    pub end_comment: Option<String>,
    /// The revision.
    pub revision: i64,
}

/// A new access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// `destination` or `destination.namespace`.
    pub resource: String,
    /// The role.
    pub role: String,
    /// How long, in seconds.
    pub duration_seconds: u64,
    /// Why (an incident, a ticket).
    pub reason: String,
}

/// A review, cancellation or revocation, with an optional comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestComment {
    /// What the reviewer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    /// A user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Who may ask for what, and who approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRuleBody {
    /// The rule's name.
    pub name: String,
    /// Who may ask.
    pub who: SubjectRef,
    /// The roles they may ask for.
    pub roles: Vec<String>,
    /// Where: `destination`, `destination.*` (any one namespace) or `destination.namespace`.
    pub resources: Vec<String>,
    /// The longest access they may ask for, in seconds.
    pub max_duration_seconds: u64,
    /// Who approves.
    pub reviewers: SubjectRef,
    /// How many distinct approvals a request needs.
    #[serde(default = "one")]
    pub approvals: u32,
    /// The on-call source (declared in the policy file) whose on-call person is approved at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call: Option<String>,
}

fn one() -> u32 {
    1
}

/// A rule as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRule {
    /// The rule.
    #[serde(flatten)]
    pub rule: RequestRuleBody,
    /// Who owns it.
    pub source: Source,
    /// The rule in one line.
    pub description: String,
}

/// A notification target's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationTarget {
    /// The target's name.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: String,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Deliveries given up after every retry failed.
    pub dropped: u64,
    /// Deliveries waiting for a retry.
    pub retrying: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<Timestamp>,
    /// The last success.
    pub last_delivered_at: Option<Timestamp>,
}

/// What a webhook receives: one request's change of state.
///
/// Signed: the `Infra-Signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256>`, the MAC
/// over `<t>.<body>` with the target's secret. A receiver recomputes it, compares in constant
/// time, and refuses a `t` more than 5 minutes from its clock (a replay). `Infra-Event-Id`
/// repeats `id`: a retry sends the same id again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// Unique per event (retries repeat it).
    pub id: String,
    /// `access_request.<state>` (`access_request.pending` for a new request).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened.
    pub at: Timestamp,
    /// Who made it.
    pub actor: String,
    /// The request after the change.
    pub request: AccessRequest,
    /// The commands that act on it.
    pub commands: Vec<String>,
}
