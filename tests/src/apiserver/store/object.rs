//! Shaping an object for storage: its type meta, its name (or `generateName`) and namespace,
//! what an update keeps of the stored object, and what controllers and admission would fill in.

use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::apiserver::discovery::ResourceInfo;
use crate::apiserver::request::rfc3339;
use crate::apiserver::status::Status;

pub(super) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was made an object just above")
}

pub(super) fn set_type_meta(info: &ResourceInfo, object: &mut Value) -> Result<(), Status> {
    if !object.is_object() {
        return Err(Status::bad_request(
            "the body of the request is not an object",
        ));
    }
    let api_version = info.api_version();
    match object["apiVersion"].as_str() {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(have) if have == api_version => {}
        Some(have) => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({have}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match object["kind"].as_str() {
        None | Some("") => object["kind"] = json!(info.kind),
        Some(have) if have == info.kind => {}
        Some(have) => {
            return Err(Status::bad_request(format!(
                "the kind in the data ({have}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    Ok(())
}

pub(super) fn prepare_name(info: &ResourceInfo, object: &mut Value) -> Result<String, Status> {
    /// The characters of generated name suffixes, as the apiserver picks them.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    if let Some(name) = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        return Ok(name.to_owned());
    }
    let Some(prefix) = object["metadata"]["generateName"].as_str() else {
        return Err(Status::invalid(
            &info.resource,
            &info.group,
            "",
            "metadata.name: Required value: name or generateName is required",
        ));
    };
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let name = format!("{prefix}{suffix}");
    metadata_mut(object).insert("name".into(), json!(name));
    Ok(name)
}

pub(super) fn set_namespace(
    info: &ResourceInfo,
    namespace: &str,
    object: &mut Value,
) -> Result<(), Status> {
    if !info.namespaced {
        metadata_mut(object).remove("namespace");
        return Ok(());
    }
    match object["metadata"]["namespace"].as_str() {
        None | Some("") => {
            metadata_mut(object).insert("namespace".into(), json!(namespace));
            Ok(())
        }
        Some(ns) if ns == namespace => Ok(()),
        Some(_) => Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// The stored form of an update: identity and creation kept from `current`, status kept or
/// taken as the (sub)resource says, generation bumped when the spec changed.
pub(super) fn merge_update(
    info: &ResourceInfo,
    current: &Value,
    mut object: Value,
    status_only: bool,
) -> Value {
    let has_status = info.subresources.iter().any(|s| s == "status");
    if status_only {
        let status = object.get("status").cloned();
        object = current.clone();
        match status {
            Some(status) => object["status"] = status,
            None => {
                if let Some(o) = object.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if has_status {
        match current.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(o) = object.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for field in ["uid", "creationTimestamp", "generation"] {
        match current["metadata"].get(field) {
            Some(value) => {
                metadata_mut(&mut object).insert(field.into(), value.clone());
            }
            None => {
                metadata_mut(&mut object).remove(field);
            }
        }
    }
    // The version is the stored one until the write gives the next.
    if let Some(rv) = current["metadata"].get("resourceVersion") {
        metadata_mut(&mut object).insert("resourceVersion".into(), rv.clone());
    }
    if object.get("spec") != current.get("spec") && object.get("spec").is_some() {
        let generation = current["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
        metadata_mut(&mut object).insert("generation".into(), json!(generation));
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    defaults(info, &name, &mut object, Some(current), SystemTime::now());
    object
}

/// What controllers and admission would fill in, for the kinds tests look at: pods run,
/// deployments are available, namespaces are active, secrets carry `data`.
pub(super) fn defaults(
    info: &ResourceInfo,
    name: &str,
    object: &mut Value,
    current: Option<&Value>,
    now: SystemTime,
) {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => {
            if object["status"]["phase"].is_string() {
                return;
            }
            let started = current
                .and_then(|c| c["status"]["startTime"].as_str().map(str::to_owned))
                .unwrap_or_else(|| rfc3339(now));
            let statuses: Vec<Value> = object["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "",
                        "ready": true, "started": true, "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    })
                })
                .collect();
            object["status"] = json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "hostIP": "10.0.0.1",
                "podIP": "10.244.0.10",
                "startTime": started,
                "containerStatuses": statuses,
            });
        }
        ("apps", "deployments") => {
            let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
            if object["spec"]["replicas"].is_null() && object.get("spec").is_some() {
                object["spec"]["replicas"] = json!(replicas);
            }
            object["status"] = json!({
                "observedGeneration": object["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
            });
        }
        ("", "namespaces") => {
            object["status"] = json!({"phase": "Active"});
            if object["spec"]["finalizers"].is_null() {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "secrets") => {
            if let Some(Value::Object(string_data)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                for (key, value) in string_data {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(value.as_str().unwrap_or_default());
                    object["data"][key] = json!(encoded);
                }
            }
            if object["type"].is_null() {
                object["type"] = json!("Opaque");
            }
        }
        _ => {}
    }
}
