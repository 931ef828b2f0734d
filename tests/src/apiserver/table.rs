//! Server-side printing: the `meta.k8s.io` `Table` that `kubectl get` asks for, with the
//! columns the apiserver prints for the kinds tests use and the default columns for the rest.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::discovery::ResourceInfo;
use super::request::{human_duration, parse_rfc3339};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// A `Table` of `objects`. `list_meta` becomes the table's `metadata`.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_meta: &Value,
    version: &str,
    include: Include,
    now: SystemTime,
) -> Value {
    let columns = columns(info);
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": cells(info, object, now)});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": object["metadata"],
                    });
                }
                Include::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

fn name_column() -> Value {
    column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.",
    )
}

fn age_column() -> Value {
    column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

fn columns(info: &ResourceInfo) -> Vec<Value> {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
            ),
            column(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_column(),
        ],
        ("apps", "deployments") => vec![
            name_column(),
            column("Ready", "string", "", "Number of the pod with ready state"),
            column(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            column(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age_column(),
        ],
        ("", "configmaps") => vec![
            name_column(),
            column(
                "Data",
                "string",
                "",
                "Data contains the configuration data.",
            ),
            age_column(),
        ],
        ("", "secrets") => vec![
            name_column(),
            column(
                "Type",
                "string",
                "",
                "Used to facilitate programmatic handling of secret data.",
            ),
            column("Data", "string", "", "Data contains the secret data."),
            age_column(),
        ],
        ("", "namespaces") => vec![
            name_column(),
            column("Status", "string", "", "The status of the namespace"),
            age_column(),
        ],
        _ => vec![
            name_column(),
            column(
                "Created At",
                "date",
                "",
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
    }
}

fn cells(info: &ResourceInfo, object: &Value, now: SystemTime) -> Vec<Value> {
    let name = object["metadata"]["name"].clone();
    let age = || {
        let created = object["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse_rfc3339)
            .unwrap_or(now);
        json!(human_duration(
            now.duration_since(created).unwrap_or(Duration::ZERO)
        ))
    };
    let count = |field: &str| object[field].as_object().map_or(0, serde_json::Map::len);
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => {
            let statuses = object["status"]["containerStatuses"].as_array();
            let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: u64 = statuses.map_or(0, |s| {
                s.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
            });
            let phase = object["status"]["phase"].as_str().unwrap_or("Pending");
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts.to_string()),
                age(),
            ]
        }
        ("apps", "deployments") => {
            let status = &object["status"];
            let number = |v: &Value| v.as_u64().unwrap_or(0);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    number(&status["readyReplicas"]),
                    number(&object["spec"]["replicas"])
                )),
                json!(number(&status["updatedReplicas"])),
                json!(number(&status["availableReplicas"])),
                age(),
            ]
        }
        ("", "configmaps") => vec![name, json!(count("data") + count("binaryData")), age()],
        ("", "secrets") => vec![name, object["type"].clone(), json!(count("data")), age()],
        ("", "namespaces") => vec![name, object["status"]["phase"].clone(), age()],
        _ => vec![name, object["metadata"]["creationTimestamp"].clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::super::discovery::DISCOVERY;
    use super::*;

    #[test]
    fn pod_rows_read_like_kubectl_get() {
        let pods = DISCOVERY.resource("", "v1", "pods").expect("pods");
        let now = SystemTime::now();
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": super::super::request::rfc3339(now)},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 0}]},
        });
        let t = table(
            &pods,
            &[pod],
            &json!({"resourceVersion": "7"}),
            "v1",
            Include::Metadata,
            now,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "1/2", "Running", "1", "0s"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
