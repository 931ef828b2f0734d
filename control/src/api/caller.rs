//! Who is calling: the bearer access key, the user and groups behind it, and the role their
//! grants on `infra` give them (own things only, view, admin; connector).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, header, request::Parts};
use infra_authz::policy::{CONTROL_RESOURCE, Secret, Subject};

use super::{ApiError, ApiResult};
use crate::plane::ControlPlane;
use crate::store::{AccessKey, KeyError, User};

/// What the caller may do with the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Access {
    /// Only their own things.
    Own,
    /// Read everything.
    View,
    /// Change everything.
    Admin,
}

/// A signed-in caller.
#[derive(Debug)]
pub(super) struct Caller {
    pub(super) user: User,
    pub(super) key: AccessKey,
    pub(super) groups: Vec<String>,
    pub(super) access: Access,
    /// May register destinations and receive their policy (role `connector`, or `admin`).
    pub(super) connector: bool,
    /// May read the audit trail (role `auditor`, `view` or `admin`).
    pub(super) auditor: bool,
}

impl Caller {
    pub(super) fn require(&self, access: Access) -> ApiResult<()> {
        if self.access >= access {
            Ok(())
        } else {
            let role = if access == Access::Admin {
                "admin"
            } else {
                "view"
            };
            Err(ApiError::forbidden(format!(
                "user {:?} needs role {role:?} on resource {CONTROL_RESOURCE:?} for this",
                self.user.name
            )))
        }
    }

    pub(super) fn require_auditor(&self) -> ApiResult<()> {
        if self.auditor || self.access >= Access::View {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {:?} needs role \"auditor\", \"view\" or \"admin\" on resource {CONTROL_RESOURCE:?} to read the audit trail",
                self.user.name
            )))
        }
    }

    pub(super) fn is(&self, name: &str) -> bool {
        self.user.name == name
    }

    pub(super) fn require_connector(&self) -> ApiResult<()> {
        if self.connector || self.access == Access::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {:?} needs role \"connector\" (or \"admin\") on resource {CONTROL_RESOURCE:?} for this",
                self.user.name
            )))
        }
    }
}

impl FromRequestParts<Arc<ControlPlane>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        plane: &Arc<ControlPlane>,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(&parts.headers)?;
        let now = plane.now();
        let (key, user) = plane
            .store()
            .authenticate_access_key(&key, now)
            .await
            .map_err(|e| match e {
                KeyError::Store(store) => ApiError::from(store),
                other => ApiError::unauthorized(format!("{other}; run `infra login`")),
            })?;
        let groups = plane.store().groups_of(&user.name).await?;
        let (access, connector, auditor) = control_access(plane, &user.name, &groups).await?;
        Ok(Self {
            user,
            key,
            groups,
            access,
            connector,
            auditor,
        })
    }
}

fn bearer(headers: &HeaderMap) -> ApiResult<Secret> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthorized(
            "sign in first: send `Authorization: Bearer <access key>` (run `infra login`)",
        ));
    };
    let text = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not a bearer key"))?;
    Ok(Secret::new(text))
}

/// The caller's role on resource `infra`, from their grants and their groups' grants: the
/// access, and whether they are a connector and an auditor.
async fn control_access(
    plane: &ControlPlane,
    user: &str,
    groups: &[String],
) -> ApiResult<(Access, bool, bool)> {
    let mut access = Access::Own;
    let mut connector = false;
    let mut auditor = false;
    for stored in plane
        .store()
        .list_grants_on(CONTROL_RESOURCE, plane.now())
        .await?
    {
        let grant = stored.grant;
        if !grant.resource.is_control() || !subject_matches(&grant.subject, user, groups) {
            continue;
        }
        connector |= grant.role == "connector";
        auditor |= grant.role == "auditor";
        access = access.max(match grant.role.as_str() {
            "admin" => Access::Admin,
            "view" => Access::View,
            _ => Access::Own,
        });
    }
    Ok((access, connector, auditor))
}

pub(super) fn subject_matches(subject: &Subject, user: &str, groups: &[String]) -> bool {
    match subject {
        Subject::User(name) => name == user,
        Subject::Group(name) => groups.iter().any(|g| g == name),
    }
}
