//! Reading and writing objects: get, update, patch and delete of one object (or its status),
//! and list, create and deletecollection on a collection, with pagination.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::discovery::ResourceInfo;
use super::request::{self, Query};
use super::response::{json_response, table_response};
use super::route::{Context, Target, check_verb, parse_body, storage_namespace};
use super::select::Selector;
use super::status::{self, Status};
use super::table::{self, Include};
use super::watches::watch;
use super::{Body, Shared, patch};

/// GET, PUT, PATCH, DELETE of one object (or its status).
pub(super) fn object_request(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    name: &str,
    status_only: bool,
    context: &Context,
) -> Result<Response<Body>, Status> {
    let info = &target.info;
    let namespace = storage_namespace(target);
    let store = &shared.store;
    match context.method {
        Method::GET | Method::HEAD => {
            check_verb(target, "get")?;
            let object = store.get(info, namespace, name)?;
            Ok(object_response(StatusCode::OK, info, object, context))
        }
        Method::PUT => {
            check_verb(target, "update")?;
            let body = parse_body(context)?;
            let object = store.update(info, namespace, name, body, status_only)?;
            Ok(object_response(StatusCode::OK, info, object, context))
        }
        Method::PATCH => {
            check_verb(target, "patch")?;
            let content_type = context
                .header("content-type")
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let patch = parse_body(context)?;
            let (object, created) = store.patch(info, namespace, name, status_only, |current| {
                apply_patch(info, name, &content_type, current, &patch)
            })?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(object_response(code, info, object, context))
        }
        Method::DELETE => {
            check_verb(target, "delete")?;
            check_preconditions(info, &store.get(info, namespace, name)?, context)?;
            let deleted = store.delete(info, namespace, name)?;
            if info.group.is_empty() && matches!(info.resource.as_str(), "pods" | "namespaces") {
                Ok(object_response(StatusCode::OK, info, deleted, context))
            } else {
                let uid = deleted["metadata"]["uid"].as_str().unwrap_or_default();
                Ok(json_response(
                    StatusCode::OK,
                    &status::success(&info.resource, &info.group, name, uid),
                ))
            }
        }
        _ => Err(Status::method_not_allowed(
            context.method.as_str(),
            &info.resource,
        )),
    }
}

/// The `preconditions` (uid, `resourceVersion`) of a delete's `DeleteOptions` body: a 409
/// `Conflict` when the stored object is not the one the client meant.
fn check_preconditions(
    info: &ResourceInfo,
    current: &Value,
    context: &Context,
) -> Result<(), Status> {
    if context.body.is_empty() {
        return Ok(());
    }
    let options = parse_body(context)?;
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    for (field, key) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(wanted) = options["preconditions"][key].as_str()
            && current["metadata"][field].as_str() != Some(wanted)
        {
            return Err(Status::conflict(&info.resource, &info.group, name));
        }
    }
    Ok(())
}

fn apply_patch(
    info: &ResourceInfo,
    name: &str,
    content_type: &str,
    current: Option<Value>,
    patch: &Value,
) -> Result<Value, Status> {
    let Some(mut object) = current else {
        return if content_type == "application/apply-patch+yaml" {
            Ok(patch.clone())
        } else {
            Err(Status::not_found(&info.resource, &info.group, name))
        };
    };
    match content_type {
        "application/merge-patch+json" => patch::merge(&mut object, patch),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            patch::strategic(&mut object, patch);
        }
        "application/json-patch+json" => patch::json_patch(&mut object, patch)
            .map_err(|e| Status::invalid(&info.resource, &info.group, name, &e))?,
        other => return Err(Status::unsupported_media_type(other)),
    }
    Ok(object)
}

/// GET (list or watch), POST, DELETE (deletecollection) on a collection.
pub(super) fn collection_request(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    context: &Context,
) -> Result<Response<Body>, Status> {
    let info = &target.info;
    let selector = Selector::parse(
        context.query.get("labelSelector"),
        context.query.get("fieldSelector"),
    )?;
    match context.method {
        Method::GET | Method::HEAD if context.query.flag("watch") => {
            check_verb(target, "watch")?;
            Ok(watch(shared, target, selector, context))
        }
        Method::GET | Method::HEAD => {
            check_verb(target, "list")?;
            let (items, version) = shared.store.list(info, target.namespace);
            let items: Vec<Value> = items.into_iter().filter(|o| selector.matches(o)).collect();
            let (page, next) = paginate(items, &context.query)?;
            let mut meta = json!({"resourceVersion": version.to_string()});
            if let Some((token, remaining)) = next {
                meta["continue"] = json!(token);
                meta["remainingItemCount"] = json!(remaining);
            }
            if let Some(table_version) = request::wants_table(&context.accept()) {
                let include = Include::parse(context.query.get("includeObject"));
                let table = table::table(
                    info,
                    &page,
                    &meta,
                    table_version,
                    include,
                    SystemTime::now(),
                );
                return Ok(table_response(table_version, &table));
            }
            Ok(json_response(StatusCode::OK, &list(info, &meta, page)))
        }
        Method::POST => {
            check_verb(target, "create")?;
            let namespace = target.namespace.unwrap_or_default();
            let object = shared.store.create(info, namespace, parse_body(context)?)?;
            Ok(object_response(StatusCode::CREATED, info, object, context))
        }
        Method::DELETE => {
            check_verb(target, "deletecollection")?;
            let (items, version) = shared.store.list(info, target.namespace);
            let mut deleted = Vec::new();
            for item in items.into_iter().filter(|o| selector.matches(o)) {
                let namespace = item["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                if let Ok(object) = shared.store.delete(info, namespace, name) {
                    deleted.push(object);
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &list(
                    info,
                    &json!({"resourceVersion": version.to_string()}),
                    deleted,
                ),
            ))
        }
        _ => Err(Status::method_not_allowed(
            context.method.as_str(),
            &info.resource,
        )),
    }
}

/// A `<Kind>List`; its items carry no `kind`/`apiVersion`, as the apiserver's do not.
fn list(info: &ResourceInfo, meta: &Value, items: Vec<Value>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(object) = item.as_object_mut() {
                object.remove("kind");
                object.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// `limit` and `continue`: the token is the key of the last object sent.
/// A page of a list, and the `continue` token and `remainingItemCount` when more follow.
type Page = (Vec<Value>, Option<(String, usize)>);

fn paginate(items: Vec<Value>, query: &Query) -> Result<Page, Status> {
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let mut items = items;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let after = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::bad_request("continue key is not valid"))?;
        items.retain(|o| key(o) > after);
    }
    let limit = query
        .number("limit")
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l > 0);
    match limit {
        Some(limit) if items.len() > limit => {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().map(key).unwrap_or_default();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last);
            Ok((items, Some((token, remaining))))
        }
        _ => Ok((items, None)),
    }
}

/// A single object, as JSON or (for `kubectl get`) as a one-row `Table`.
fn object_response(
    code: StatusCode,
    info: &ResourceInfo,
    object: Value,
    context: &Context,
) -> Response<Body> {
    if context.method == Method::GET
        && let Some(table_version) = request::wants_table(&context.accept())
    {
        let include = Include::parse(context.query.get("includeObject"));
        let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
        let table = table::table(
            info,
            &[object],
            &meta,
            table_version,
            include,
            SystemTime::now(),
        );
        return table_response(table_version, &table);
    }
    json_response(code, &object)
}
