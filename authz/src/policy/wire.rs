//! Grants as the sync stream carries them ([`infra_api::sync::WireGrant`]), to and from the
//! policy model.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra_api::sync::WireGrant;

use super::{Grant, Resource, Subject};

impl From<&Grant> for WireGrant {
    fn from(grant: &Grant) -> Self {
        let (user, group) = match &grant.subject {
            Subject::User(name) => (Some(name.clone()), None),
            Subject::Group(name) => (None, Some(name.clone())),
        };
        Self {
            user,
            group,
            role: grant.role.clone(),
            resource: grant.resource.to_string(),
            expires_at: grant.expires_at.map(unix),
        }
    }
}

impl TryFrom<&WireGrant> for Grant {
    type Error = String;

    /// The grant, if it is well formed.
    fn try_from(wire: &WireGrant) -> Result<Self, Self::Error> {
        let subject = match (&wire.user, &wire.group) {
            (Some(user), None) => Subject::User(user.clone()),
            (None, Some(group)) => Subject::Group(group.clone()),
            _ => return Err("a grant names neither or both of user and group".to_owned()),
        };
        Ok(Self {
            subject,
            role: wire.role.clone(),
            resource: wire
                .resource
                .parse::<Resource>()
                .map_err(|e| format!("grant resource: {e}"))?,
            expires_at: wire
                .expires_at
                .map(|s| {
                    UNIX_EPOCH
                        .checked_add(Duration::from_secs(s))
                        .ok_or_else(|| format!("grant expiry {s} is past what a time can hold"))
                })
                .transpose()?,
        })
    }
}

/// Unix seconds of `at` (0 before the epoch).
pub fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_survives_the_wire() {
        let grant = Grant {
            subject: Subject::Group("Engineering".into()),
            role: "edit".into(),
            resource: "production.web".parse().expect("resource"),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        };
        let wire = WireGrant::from(&grant);
        assert_eq!(wire.group.as_deref(), Some("Engineering"));
        assert_eq!(Grant::try_from(&wire), Ok(grant));
    }

    #[test]
    fn a_grant_expiring_past_the_end_of_time_is_refused_not_a_panic() {
        let wire = WireGrant {
            user: Some("a".into()),
            group: None,
            role: "view".into(),
            resource: "c".into(),
            expires_at: Some(u64::MAX),
        };
        assert!(Grant::try_from(&wire).is_err());
    }

    #[test]
    fn a_grant_naming_both_subjects_is_refused() {
        let wire = WireGrant {
            user: Some("a".into()),
            group: Some("b".into()),
            role: "view".into(),
            resource: "c".into(),
            expires_at: None,
        };
        assert!(Grant::try_from(&wire).is_err());
    }
}
