//! The decide step: every decision one request needs, in the apiserver's order, so that no
//! caller can leave one out.
//!
//! 1. When the client impersonates (`kubectl --as`), each `impersonate` check of
//!    [`Requested::checks`] as the caller; the first refusal answers, in the apiserver's words
//!    (`users "other" is forbidden: User "suzie" cannot impersonate resource "users" ...`).
//! 2. The request as the identity it acts as: the impersonated one, or the caller.
//! 3. For an upgrade, the `create` of [`Attributes::upgrade_create`] as that identity too
//!    (exec, attach, port-forward over WebSocket: Kubernetes 1.35's rule).
//!
//! The pipeline decides an [`Access`] once per request; the stream registry keeps it and
//! decides it again, with the caller's token, whenever policy changes.

use std::sync::Arc;
use std::time::SystemTime;

use infra_authz::attributes::Attributes;
use infra_authz::decision::{Decision, Identity, forbidden_status_message};

use crate::impersonation::Requested;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::status::Refusal;

/// What a request is decided on.
#[derive(Debug, Clone)]
pub struct Access {
    /// Its attributes, as [`infra_authz::attributes::parse`] computes them.
    pub attrs: Attributes,
    /// Whether it is an upgrade (WebSocket or SPDY).
    pub upgrade: bool,
    /// The impersonation the client asks for.
    pub impersonation: Option<Requested>,
}

/// The answer.
#[derive(Debug)]
pub enum Outcome {
    /// Every decision allowed.
    Allowed {
        /// The identity the request acts as (sent upstream).
        acting: Identity,
        /// The decision of the request itself.
        decision: Decision,
    },
    /// One did not.
    Denied {
        /// The impersonated identity, when the caller was allowed to impersonate it.
        acting: Option<Identity>,
        /// The denial (its reason names what was refused).
        decision: Decision,
        /// The 403 for the client.
        refusal: Refusal,
    },
}

impl Access {
    /// Decides for `caller` at `now`, counting cache hits in `metrics` when given.
    pub fn decide(
        &self,
        policy: &PolicyHandle,
        caller: &Identity,
        now: SystemTime,
        metrics: Option<&Metrics>,
    ) -> Outcome {
        let decide = |identity: &Identity, attrs: &Attributes| {
            let (decision, hit) = policy.decide(identity, attrs, now);
            if let Some(metrics) = metrics {
                metrics.cache_lookup(&metrics.decision_cache, hit);
            }
            decision
        };
        let impersonated = match &self.impersonation {
            None => None,
            Some(requested) => {
                for check in requested.checks() {
                    if !decide(caller, &check).is_allowed() {
                        let refusal = forbidden(caller.user(), &check);
                        return Outcome::Denied {
                            acting: None,
                            decision: Decision::Deny {
                                reason: Arc::from(refusal.message()),
                            },
                            refusal,
                        };
                    }
                }
                Some(requested.identity())
            }
        };
        let acting = impersonated.as_ref().unwrap_or(caller);
        let create = if self.upgrade {
            self.attrs.upgrade_create()
        } else {
            None
        };
        let decision = decide(acting, &self.attrs);
        if !decision.is_allowed() {
            let refusal = forbidden(acting.user(), &self.attrs);
            return Outcome::Denied {
                acting: impersonated,
                decision,
                refusal,
            };
        }
        if let Some(create) = create {
            let created = decide(acting, &create);
            if !created.is_allowed() {
                let refusal = forbidden(acting.user(), &create);
                return Outcome::Denied {
                    acting: impersonated,
                    decision: created,
                    refusal,
                };
            }
        }
        Outcome::Allowed {
            acting: impersonated.unwrap_or_else(|| caller.clone()),
            decision,
        }
    }
}

/// The apiserver's 403 for `user` refused `attrs`.
pub fn forbidden(user: &str, attrs: &Attributes) -> Refusal {
    let (group, kind, name) = match attrs {
        Attributes::Resource(r) => (
            r.api_group.clone(),
            r.resource.clone(),
            r.name.clone().unwrap_or_default(),
        ),
        Attributes::NonResource(_) => (String::new(), String::new(), String::new()),
    };
    Refusal::Forbidden {
        message: forbidden_status_message(user, attrs, ""),
        group,
        kind,
        name,
    }
}

#[cfg(test)]
mod tests;
