//! Access requests on the plane: asking (checked against the rules, approved at once for whoever
//! is on call), reviewing (never one's own, only by a reviewer of a rule that still covers the
//! request), cancelling, revoking, and the sweep that expires and ends them on time. Every
//! change is audited in the store, published to the proxies when it moves a grant, and sent to
//! the notification targets.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use infra_api::{NewRequest, RequestEvent, RequestState, Source, Verdict};
use infra_authz::policy::requests::{
    Ask, MAX_APPROVALS, MAX_REQUEST_DURATION, OnCallSource, RequestRule, ResourcePattern, covering,
    subject_is,
};
use infra_authz::policy::{Resource, Subject, validate_role_name, validate_subject_name};

use crate::changes::ChangeError;
use crate::plane::ControlPlane;
use crate::store::{NewRequestRow, RequestOutcome, StoreError, StoredRequest};

/// The most requests one user may have pending at once.
pub const MAX_PENDING_PER_USER: u32 = 10;
/// The longest reason or comment, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

type Changed<T = ()> = Result<T, ChangeError>;

fn clean_text(what: &str, text: &str, required: bool) -> Changed<String> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(ChangeError::Invalid(format!(
            "give a {what} (an incident or ticket, for the reviewers and the audit trail)"
        )));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ChangeError::Invalid(format!(
            "the {what} is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(ChangeError::Invalid(format!(
            "the {what} may not contain control characters"
        )));
    }
    Ok(text.to_owned())
}

fn timestamp(at: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::MAX)
}

/// The request on the wire.
pub fn to_api(request: &StoredRequest) -> infra_api::AccessRequest {
    infra_api::AccessRequest {
        id: request.id,
        user: request.requester.clone(),
        role: request.role.clone(),
        resource: request.resource(),
        duration_seconds: request.duration.as_secs(),
        reason: request.reason.clone(),
        state: request.state,
        rule: request.rule.clone(),
        approvals_needed: request.approvals_needed,
        reviews: request
            .reviews
            .iter()
            .map(|r| infra_api::Review {
                reviewer: r.reviewer.clone(),
                verdict: r.verdict,
                comment: r.comment.clone(),
                at: timestamp(r.at),
            })
            .collect(),
        created_at: timestamp(request.created_at),
        pending_until: timestamp(request.pending_until),
        access_starts: request.access_starts.map(timestamp),
        access_ends: request.access_ends.map(timestamp),
        grant_id: request.grant_id,
        ended_by: request.ended_by.clone(),
        end_comment: request.end_comment.clone(),
        revision: request.revision,
    }
}

/// A rule on the wire.
pub fn rule_to_api(rule: &RequestRule) -> infra_api::RequestRuleBody {
    let subject = |s: &Subject| match s {
        Subject::User(u) => infra_api::SubjectRef {
            user: Some(u.clone()),
            group: None,
        },
        Subject::Group(g) => infra_api::SubjectRef {
            user: None,
            group: Some(g.clone()),
        },
    };
    infra_api::RequestRuleBody {
        name: rule.name.clone(),
        who: subject(&rule.who),
        roles: rule.roles.clone(),
        resources: rule.resources.iter().map(ToString::to_string).collect(),
        max_duration_seconds: rule.max_duration.as_secs(),
        reviewers: subject(&rule.reviewers),
        approvals: rule.approvals,
        on_call: rule.on_call.clone(),
    }
}

/// A rule from the wire, checked as the policy file checks it.
pub fn rule_from_api(
    body: &infra_api::RequestRuleBody,
    on_call: &[OnCallSource],
) -> Result<RequestRule, String> {
    infra_authz::policy::validate_name(&body.name).map_err(|e| format!("name: {e}"))?;
    let subject = |what: &str, s: &infra_api::SubjectRef| -> Result<Subject, String> {
        match (&s.user, &s.group) {
            (Some(u), None) => {
                validate_subject_name(u).map_err(|e| format!("{what}: {e}"))?;
                Ok(Subject::User(u.clone()))
            }
            (None, Some(g)) => {
                validate_subject_name(g).map_err(|e| format!("{what}: {e}"))?;
                Ok(Subject::Group(g.clone()))
            }
            _ => Err(format!("{what}: give exactly one of user and group")),
        }
    };
    if body.roles.is_empty() || body.resources.is_empty() {
        return Err("roles and resources may not be empty".into());
    }
    for role in &body.roles {
        validate_role_name(role).map_err(|e| format!("roles: {e}"))?;
    }
    let resources = body
        .resources
        .iter()
        .map(|r| {
            r.parse::<ResourcePattern>()
                .map_err(|e| format!("resources: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_duration = Duration::from_secs(body.max_duration_seconds);
    if max_duration.is_zero() || max_duration > MAX_REQUEST_DURATION {
        return Err(format!(
            "max_duration_seconds must be from 1 to {}",
            MAX_REQUEST_DURATION.as_secs()
        ));
    }
    if !(1..=MAX_APPROVALS).contains(&body.approvals) {
        return Err(format!("approvals must be from 1 to {MAX_APPROVALS}"));
    }
    if let Some(source) = &body.on_call
        && !on_call.iter().any(|s| s.name == *source)
    {
        return Err(format!(
            "on_call: no on-call source is named {source:?} (sources are declared in the policy file)"
        ));
    }
    Ok(RequestRule {
        name: body.name.clone(),
        who: subject("who", &body.who)?,
        roles: body.roles.clone(),
        resources,
        max_duration,
        reviewers: subject("reviewers", &body.reviewers)?,
        approvals: body.approvals,
        on_call: body.on_call.clone(),
    })
}

/// The commands that act on a request in `state`.
fn commands(request: &StoredRequest) -> Vec<String> {
    match request.state {
        RequestState::Pending => vec![
            format!("infra requests approve {}", request.id),
            format!("infra requests deny {} --comment \"...\"", request.id),
        ],
        RequestState::Approved => vec![format!("infra requests revoke {}", request.id)],
        _ => Vec::new(),
    }
}

impl ControlPlane {
    /// Every request rule: the policy file's, then the API's.
    pub async fn request_rules(&self) -> Result<Vec<(RequestRule, Source)>, StoreError> {
        let settings = self.request_settings.load_full();
        let mut rules: Vec<(RequestRule, Source)> = settings
            .rules
            .iter()
            .map(|r| (r.clone(), Source::File))
            .collect();
        for (name, body) in self.store().list_request_rules().await? {
            let parsed = serde_json::from_str::<infra_api::RequestRuleBody>(&body)
                .map_err(|e| e.to_string())
                .and_then(|body| rule_from_api(&body, &settings.on_call));
            match parsed {
                Ok(rule) => rules.push((rule, Source::Api)),
                Err(error) => {
                    // A rule naming an on-call source the file no longer declares, say: it
                    // covers nothing until fixed, and says so.
                    tracing::warn!(rule = %name, error = %error, "a request rule is not in force");
                }
            }
        }
        Ok(rules)
    }

    /// Every request rule, without where it came from.
    async fn rules_in_force(&self) -> Result<Vec<RequestRule>, StoreError> {
        Ok(self
            .request_rules()
            .await?
            .into_iter()
            .map(|(rule, _)| rule)
            .collect())
    }

    /// Makes a request rule through the API.
    pub async fn create_request_rule(
        &self,
        actor: &str,
        body: &infra_api::RequestRuleBody,
    ) -> Changed<RequestRule> {
        let settings = self.request_settings.load_full();
        let rule = rule_from_api(body, &settings.on_call).map_err(ChangeError::Invalid)?;
        if settings.rules.iter().any(|r| r.name == rule.name) {
            return Err(ChangeError::FileOwned(
                self.file_owned_message(&format!("request rule {:?}", rule.name)),
            ));
        }
        let json = serde_json::to_string(&rule_to_api(&rule))
            .map_err(|e| ChangeError::Internal(e.into()))?;
        self.store()
            .create_request_rule(actor, &rule.name, &json, self.now())
            .await?;
        Ok(rule)
    }

    /// Removes a request rule made through the API.
    pub async fn delete_request_rule(&self, actor: &str, name: &str) -> Changed {
        if self
            .request_settings
            .load()
            .rules
            .iter()
            .any(|r| r.name == name)
        {
            return Err(ChangeError::FileOwned(
                self.file_owned_message(&format!("request rule {name:?}")),
            ));
        }
        self.store()
            .delete_request_rule(actor, name, self.now())
            .await?;
        Ok(())
    }

    /// The rules that cover `request` as its requester stands now.
    async fn covering_now(&self, request: &StoredRequest) -> Changed<Vec<RequestRule>> {
        let groups = self.store().groups_of(&request.requester).await?;
        let resource = Resource {
            destination: request.destination.clone(),
            namespace: request.namespace.clone(),
        };
        let rules = self.rules_in_force().await?;
        let ask = Ask {
            user: &request.requester,
            groups: &groups,
            role: &request.role,
            resource: &resource,
            duration: request.duration,
        };
        match covering(&rules, &ask) {
            Ok(found) => Ok(found.into_iter().cloned().collect()),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Whether `reviewer` (with `groups`) may review `request` now: not its requester, and a
    /// reviewer of a rule that still covers it.
    pub async fn may_review(
        &self,
        reviewer: &str,
        groups: &[String],
        request: &StoredRequest,
    ) -> Changed<bool> {
        if reviewer == request.requester {
            return Ok(false);
        }
        Ok(self
            .covering_now(request)
            .await?
            .iter()
            .any(|rule| subject_is(&rule.reviewers, reviewer, groups)))
    }

    /// Asks for access: refused unless a rule covers it (the refusal names the closest rule);
    /// approved at once when a covering rule's on-call source has the requester on call.
    pub async fn ask(
        self: &Arc<Self>,
        user: &str,
        groups: &[String],
        new: &NewRequest,
    ) -> Changed<StoredRequest> {
        let resource: Resource = new
            .resource
            .parse()
            .map_err(|e| ChangeError::Invalid(format!("resource: {e}")))?;
        if resource.is_control() {
            return Err(ChangeError::Invalid(
                "access to `infra` (the control API) cannot be asked for; an admin grants it"
                    .into(),
            ));
        }
        validate_role_name(&new.role).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let duration = Duration::from_secs(new.duration_seconds);
        if duration.is_zero() || duration > MAX_REQUEST_DURATION {
            return Err(ChangeError::Invalid(format!(
                "duration_seconds must be from 1 to {}",
                MAX_REQUEST_DURATION.as_secs()
            )));
        }
        let reason = clean_text("reason", &new.reason, true)?;
        let rules = self.rules_in_force().await?;
        let ask = Ask {
            user,
            groups,
            role: &new.role,
            resource: &resource,
            duration,
        };
        let found = covering(&rules, &ask).map_err(ChangeError::Forbidden)?;
        let rule = found[0];
        let approvals_needed = found.iter().map(|r| r.approvals).min().unwrap_or(1);
        let subject = Subject::User(user.to_owned());
        if let Some(held) = self
            .store()
            .find_grant(&subject, &new.role, &resource)
            .await?
            .filter(|g| g.grant.is_active(self.now()))
        {
            return Err(ChangeError::Invalid(format!(
                "you already have role {:?} on {resource} (grant {})",
                new.role, held.id
            )));
        }
        let now = self.now();
        let request = self
            .store()
            .create_request(
                &NewRequestRow {
                    requester: user,
                    role: &new.role,
                    destination: &resource.destination,
                    namespace: resource.namespace.as_deref(),
                    duration,
                    reason: &reason,
                    rule: &rule.name,
                    approvals_needed,
                    pending_until: now + self.config().request_pending_for,
                    max_pending: MAX_PENDING_PER_USER,
                },
                now,
            )
            .await?;
        self.notify(user, &request);
        // On call in a covering rule's source: approved at once.
        let settings = self.request_settings.load_full();
        for rule in &found {
            let Some(name) = &rule.on_call else {
                continue;
            };
            let Some(source) = settings.on_call.iter().find(|s| s.name == *name) else {
                continue;
            };
            match self.on_call.is_on_call(source, user).await {
                Ok(true) => {
                    let reviewer = format!("on-call:{name}");
                    let comment = format!("{user} is on call in {name:?}");
                    return self
                        .decide(&reviewer, request.id, Verdict::Approve, &comment, true)
                        .await;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(source = %name, error = %error, "could not read who is on call; the request waits for its reviewers");
                }
            }
        }
        Ok(request)
    }

    /// Records a review and publishes what it changed.
    async fn decide(
        self: &Arc<Self>,
        reviewer: &str,
        id: i64,
        verdict: Verdict,
        comment: &str,
        decisive: bool,
    ) -> Changed<StoredRequest> {
        let outcome = self
            .store()
            .review_request(reviewer, id, verdict, comment, decisive, self.now())
            .await?;
        Ok(match outcome {
            RequestOutcome::Recorded(request) => request,
            RequestOutcome::Decided(request) => {
                if request.state == RequestState::Approved {
                    // A delta of this destination's grants to its proxies.
                    self.grants_changed(&request.destination);
                }
                self.notify(reviewer, &request);
                request
            }
        })
    }

    /// A reviewer's verdict on request `id`.
    pub async fn review(
        self: &Arc<Self>,
        reviewer: &str,
        groups: &[String],
        id: i64,
        verdict: Verdict,
        comment: Option<&str>,
    ) -> Changed<StoredRequest> {
        let comment = clean_text("comment", comment.unwrap_or(""), verdict == Verdict::Deny)?;
        let request = self.store().get_request(id).await?;
        if request.requester == reviewer {
            return Err(ChangeError::Forbidden(format!(
                "you cannot review your own request {id}; its reviewers do"
            )));
        }
        if request.state != RequestState::Pending {
            return Err(StoreError::WrongState {
                what: format!("request {id} is {}, not pending", request.state),
            }
            .into());
        }
        if !self.may_review(reviewer, groups, &request).await? {
            return Err(ChangeError::Forbidden(format!(
                "user {reviewer:?} is not a reviewer of request {id}: no request rule that covers it now has them among its reviewers"
            )));
        }
        self.decide(reviewer, id, verdict, &comment, false).await
    }

    /// The requester takes back their pending request `id`.
    pub async fn cancel_request(
        self: &Arc<Self>,
        user: &str,
        id: i64,
        comment: Option<&str>,
    ) -> Changed<StoredRequest> {
        let comment = clean_text("comment", comment.unwrap_or(""), false)?;
        let request = self.store().get_request(id).await?;
        if request.requester != user {
            return Err(ChangeError::Forbidden(format!(
                "only its requester cancels request {id}; a reviewer denies it"
            )));
        }
        let request = self
            .store()
            .end_request(user, id, RequestState::Pending, &comment, self.now())
            .await?;
        self.notify(user, &request);
        Ok(request)
    }

    /// Ends the approved request `id` early: its grant goes, and every proxy cuts its access.
    /// By its requester, a reviewer of a rule covering it, or an admin (`admin`).
    pub async fn revoke_request(
        self: &Arc<Self>,
        actor: &str,
        groups: &[String],
        admin: bool,
        id: i64,
        comment: Option<&str>,
    ) -> Changed<StoredRequest> {
        let comment = clean_text("comment", comment.unwrap_or(""), false)?;
        let request = self.store().get_request(id).await?;
        let allowed =
            admin || request.requester == actor || self.may_review(actor, groups, &request).await?;
        if !allowed {
            return Err(ChangeError::Forbidden(format!(
                "user {actor:?} may not revoke request {id}: its requester, its reviewers and admins may"
            )));
        }
        let request = self
            .store()
            .end_request(actor, id, RequestState::Approved, &comment, self.now())
            .await?;
        self.grants_changed(&request.destination);
        self.notify(actor, &request);
        Ok(request)
    }

    fn notify(self: &Arc<Self>, actor: &str, request: &StoredRequest) {
        let event = RequestEvent {
            id: uuid::Uuid::new_v4().to_string(),
            kind: format!("access_request.{}", request.state),
            at: timestamp(self.now()),
            actor: actor.to_owned(),
            request: to_api(request),
            commands: commands(request),
        };
        self.notifications.publish(&event);
    }

    /// Expires undecided requests and ends approved ones on time, every [`SWEEP_EVERY`].
    pub fn spawn_request_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else {
                    break;
                };
                match this.store().sweep_requests(this.now()).await {
                    Ok(swept) => {
                        for id in swept.expired.iter().chain(&swept.ended) {
                            if let Ok(request) = this.store().get_request(*id).await {
                                if request.state == RequestState::Ended {
                                    // The grant lapsed on its own at the proxies; the delta
                                    // brings their list in step before the purge.
                                    this.grants_changed(&request.destination);
                                }
                                this.notify("infra", &request);
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "sweeping access requests failed");
                    }
                }
            }
        });
    }

    /// The notification targets' deliveries.
    pub fn notification_status(&self) -> Vec<infra_api::NotificationTarget> {
        self.notifications.status()
    }

    /// What is failing in notifications, for `/readyz`.
    pub fn notification_problems(&self) -> Vec<String> {
        self.notifications.problems()
    }
}
