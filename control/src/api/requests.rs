//! `/api/requests`: ask for access, review, cancel and revoke requests; `/api/request-rules`:
//! who may ask for what; `/api/request-notifications`: how deliveries to notification targets
//! fare. Every change is a POST: nothing changes state on a GET, which chat tools fetch to
//! preview links.

use axum::extract::{Path, State};
use infra_api::{NewRequest, RequestComment, RequestRuleBody, RequestState, Verdict};
use infra_authz::policy::requests::subject_is;

use super::caller::{Access, Caller};
use super::extract::{Body, Params, created, no_content, ok, page};
use super::{ApiError, ApiResult, Plane};
use crate::requests::{rule_to_api, to_api};

fn request_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("request id {id:?} is not a number")))
}

fn flag(params: &Params, key: &str) -> ApiResult<bool> {
    match params.get(key) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} must be true or false, not {other:?}"
        ))),
    }
}

/// `GET /api/requests`: one's own requests; `?pending=true`, the pending requests one may
/// review; `?all=true` or `?user=` someone else, every request (role `view`). `?state=` filters.
pub(super) async fn list(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&["state", "user", "pending", "all"])?;
    let state = params
        .get("state")
        .map(|s| {
            RequestState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state must be one of pending, approved, denied, cancelled, expired, ended; not {s:?}"
                ))
            })
        })
        .transpose()?;
    let pending = flag(&params, "pending")?;
    let all = flag(&params, "all")?;
    let user = params.get("user");
    let store = plane.store();
    let items = if pending {
        let mut mine = Vec::new();
        let filter = crate::store::RequestFilter {
            requester: user,
            state: Some(RequestState::Pending),
        };
        for request in store.list_requests(&filter).await? {
            if plane
                .may_review(&caller.user.name, &caller.groups, &request)
                .await?
            {
                mine.push(request);
            }
        }
        mine
    } else {
        let requester = match (all, user) {
            (false, None) => Some(caller.user.name.as_str()),
            (false, Some(u)) if caller.is(u) => Some(u),
            (_, u) => {
                caller.require(Access::View)?;
                u
            }
        };
        store
            .list_requests(&crate::store::RequestFilter { requester, state })
            .await?
    };
    page(&params, items.iter().map(to_api).collect())
}

/// `POST /api/requests`: ask for access.
pub(super) async fn create(
    State(plane): Plane,
    caller: Caller,
    Body(new): Body<NewRequest>,
) -> ApiResult {
    let request = plane.ask(&caller.user.name, &caller.groups, &new).await?;
    Ok(created(to_api(&request)))
}

/// `GET /api/requests/{id}`: its requester, its reviewers and role `view` may read it.
pub(super) async fn get(State(plane): Plane, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let request = plane.store().get_request(request_id(&id)?).await?;
    if !caller.is(&request.requester)
        && !plane
            .may_review(&caller.user.name, &caller.groups, &request)
            .await?
    {
        caller.require(Access::View)?;
    }
    Ok(ok(to_api(&request)))
}

async fn review(
    plane: Plane,
    caller: Caller,
    id: &str,
    verdict: Verdict,
    body: RequestComment,
) -> ApiResult {
    let State(plane) = plane;
    let request = plane
        .review(
            &caller.user.name,
            &caller.groups,
            request_id(id)?,
            verdict,
            body.comment.as_deref(),
        )
        .await?;
    Ok(ok(to_api(&request)))
}

/// `POST /api/requests/{id}/approve`.
pub(super) async fn approve(
    plane: Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RequestComment>,
) -> ApiResult {
    review(plane, caller, &id, Verdict::Approve, body).await
}

/// `POST /api/requests/{id}/deny` (a comment is required).
pub(super) async fn deny(
    plane: Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RequestComment>,
) -> ApiResult {
    review(plane, caller, &id, Verdict::Deny, body).await
}

/// `POST /api/requests/{id}/cancel`: the requester takes a pending request back.
pub(super) async fn cancel(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RequestComment>,
) -> ApiResult {
    let request = plane
        .cancel_request(&caller.user.name, request_id(&id)?, body.comment.as_deref())
        .await?;
    Ok(ok(to_api(&request)))
}

/// `POST /api/requests/{id}/revoke`: ends an approved request's access now.
pub(super) async fn revoke(
    State(plane): Plane,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RequestComment>,
) -> ApiResult {
    let request = plane
        .revoke_request(
            &caller.user.name,
            &caller.groups,
            caller.access == Access::Admin,
            request_id(&id)?,
            body.comment.as_deref(),
        )
        .await?;
    Ok(ok(to_api(&request)))
}

/// `GET /api/request-rules`: the rules one may ask under (every rule, with role `view`).
pub(super) async fn list_rules(State(plane): Plane, caller: Caller, params: Params) -> ApiResult {
    params.only(&[])?;
    let everything = caller.require(Access::View).is_ok();
    let items = plane
        .request_rules()
        .await?
        .into_iter()
        .filter(|(rule, _)| everything || subject_is(&rule.who, &caller.user.name, &caller.groups))
        .map(|(rule, source)| infra_api::RequestRule {
            description: rule.describe(),
            rule: rule_to_api(&rule),
            source,
        })
        .collect();
    page(&params, items)
}

/// `POST /api/request-rules` (role `admin`).
pub(super) async fn create_rule(
    State(plane): Plane,
    caller: Caller,
    Body(body): Body<RequestRuleBody>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    let rule = plane.create_request_rule(&caller.user.name, &body).await?;
    Ok(created(infra_api::RequestRule {
        description: rule.describe(),
        rule: rule_to_api(&rule),
        source: infra_api::Source::Api,
    }))
}

/// `DELETE /api/request-rules/{name}` (role `admin`).
pub(super) async fn delete_rule(
    State(plane): Plane,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Access::Admin)?;
    plane.delete_request_rule(&caller.user.name, &name).await?;
    Ok(no_content())
}

/// `GET /api/request-notifications` (role `view`).
pub(super) async fn notifications(
    State(plane): Plane,
    caller: Caller,
    params: Params,
) -> ApiResult {
    params.only(&[])?;
    caller.require(Access::View)?;
    page(&params, plane.notification_status())
}
