//! Discovery, from documents captured from a real kube-apiserver v1.32 (`tests/data/`), and the
//! resource registry the object store is built on: every resource the real server lists can be
//! stored, with its kind, scope and verbs as the real server has them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};

pub const VERSION: &str = include_str!("../../data/version.json");
pub const API: &str = include_str!("../../data/api.json");
pub const API_V1: &str = include_str!("../../data/api-v1.json");
pub const APIS: &str = include_str!("../../data/apis.json");
pub const API_AGGREGATED: &str = include_str!("../../data/api-aggregated-v2.json");
pub const APIS_AGGREGATED: &str = include_str!("../../data/apis-aggregated-v2.json");

/// The media type of aggregated discovery, as kubectl 1.30+ asks for it and as the apiserver
/// answers it.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One resource of one group version.
#[derive(Debug)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    /// The plural name, as in the path.
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub subresources: Vec<String>,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// Everything derived from the captured discovery documents.
#[derive(Debug)]
pub struct Discovery {
    resources: HashMap<(String, String, String), Arc<ResourceInfo>>,
    /// `APIResourceList` per group version, for `/apis/<group>/<version>`.
    resource_lists: HashMap<(String, String), String>,
    /// `APIGroup` per group, for `/apis/<group>`.
    groups: HashMap<String, String>,
    /// The OpenAPI v3 index and its per-group-version documents, keyed by `api/v1`, `apis/apps/v1`.
    openapi_index: String,
    openapi_docs: HashMap<String, String>,
}

pub static DISCOVERY: LazyLock<Discovery> = LazyLock::new(Discovery::load);

impl Discovery {
    fn load() -> Self {
        let mut this = Self {
            resources: HashMap::new(),
            resource_lists: HashMap::new(),
            groups: HashMap::new(),
            openapi_index: String::new(),
            openapi_docs: HashMap::new(),
        };
        for doc in [API_AGGREGATED, APIS_AGGREGATED] {
            let doc: Value = serde_json::from_str(doc).expect("the captured discovery is JSON");
            for group in doc["items"].as_array().expect("discovery has items") {
                this.load_group(group);
            }
        }
        let apis: Value = serde_json::from_str(APIS).expect("the captured /apis is JSON");
        for group in apis["groups"].as_array().expect("/apis has groups") {
            let mut group = group.clone();
            let name = group["name"].as_str().unwrap_or_default().to_owned();
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            this.groups.insert(name, group.to_string());
        }
        this.build_openapi();
        this
    }

    fn load_group(&mut self, group: &Value) {
        let group_name = group["metadata"]["name"].as_str().unwrap_or_default();
        for version in group["versions"].as_array().into_iter().flatten() {
            let version_name = version["version"].as_str().unwrap_or_default();
            let group_version = if group_name.is_empty() {
                version_name.to_owned()
            } else {
                format!("{group_name}/{version_name}")
            };
            let mut list = Vec::new();
            for resource in version["resources"].as_array().into_iter().flatten() {
                let name = resource["resource"].as_str().unwrap_or_default().to_owned();
                let namespaced = resource["scope"] == "Namespaced";
                let kind = resource["responseKind"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let verbs = strings(&resource["verbs"]);
                let subresources: Vec<&Value> = resource["subresources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .collect();

                let mut entry = json!({
                    "name": name,
                    "singularName": resource["singularResource"],
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": verbs,
                });
                for key in ["shortNames", "categories"] {
                    if let Some(value) = resource.get(key) {
                        entry[key] = value.clone();
                    }
                }
                list.push(entry);
                for sub in &subresources {
                    let mut entry = json!({
                        "name": format!("{name}/{}", sub["subresource"].as_str().unwrap_or_default()),
                        "singularName": "",
                        "namespaced": namespaced,
                        "kind": sub["responseKind"]["kind"],
                        "verbs": sub["verbs"],
                    });
                    for key in ["group", "version"] {
                        let value = &sub["responseKind"][key];
                        if value.as_str().is_some_and(|v| !v.is_empty()) {
                            entry[key] = value.clone();
                        }
                    }
                    list.push(entry);
                }

                let info = ResourceInfo {
                    group: group_name.to_owned(),
                    version: version_name.to_owned(),
                    resource: name.clone(),
                    kind,
                    namespaced,
                    verbs,
                    subresources: subresources
                        .iter()
                        .filter_map(|s| s["subresource"].as_str().map(str::to_owned))
                        .collect(),
                };
                self.resources.insert(
                    (group_name.to_owned(), version_name.to_owned(), name),
                    Arc::new(info),
                );
            }
            let list = json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": list,
            });
            self.resource_lists.insert(
                (group_name.to_owned(), version_name.to_owned()),
                list.to_string(),
            );
        }
    }

    /// Minimal OpenAPI v3 documents: one PATCH operation per patchable resource, declaring the
    /// `fieldValidation` parameter. That is what kubectl reads to learn that the server
    /// validates fields itself, so `kubectl apply` and `kubectl create` need no schema.
    /// Schemas are left out; kubectl then computes strategic merge patches from its built-in
    /// types, as it does against servers without OpenAPI.
    fn build_openapi(&mut self) {
        let mut by_group_version: HashMap<String, Vec<&Arc<ResourceInfo>>> = HashMap::new();
        for info in self.resources.values() {
            let key = if info.group.is_empty() {
                format!("api/{}", info.version)
            } else {
                format!("apis/{}/{}", info.group, info.version)
            };
            by_group_version.entry(key).or_default().push(info);
        }
        let mut index = serde_json::Map::new();
        for (key, infos) in by_group_version {
            let mut paths = serde_json::Map::new();
            for info in infos.iter().filter(|i| i.allows("patch")) {
                let path = if info.namespaced {
                    format!("/{key}/namespaces/{{namespace}}/{}/{{name}}", info.resource)
                } else {
                    format!("/{key}/{}/{{name}}", info.resource)
                };
                paths.insert(
                    path,
                    json!({"patch": {
                        "operationId": format!("patch{}", info.kind),
                        "x-kubernetes-action": "patch",
                        "x-kubernetes-group-version-kind": {
                            "group": info.group, "version": info.version, "kind": info.kind,
                        },
                        "parameters": [
                            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
                        ],
                        "responses": {"200": {"description": "OK"}},
                    }}),
                );
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.32.13"},
                "paths": paths,
                "components": {"schemas": {}},
            })
            .to_string();
            let hash = short_hash(&doc);
            index.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
            self.openapi_docs.insert(key, doc);
        }
        self.openapi_index = json!({"paths": index}).to_string();
    }

    pub fn resource(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Option<Arc<ResourceInfo>> {
        self.resources
            .get(&(group.to_owned(), version.to_owned(), resource.to_owned()))
            .cloned()
    }

    /// A resource by group and plural name, in whichever version is served.
    pub fn resource_any_version(&self, group: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .values()
            .find(|info| info.group == group && info.resource == resource)
            .cloned()
    }

    /// The resource of a kind (`Pod` in `v1`), for objects given to the stand-in directly.
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .values()
            .find(|info| info.api_version() == api_version && info.kind == kind)
            .cloned()
    }

    pub fn resource_list(&self, group: &str, version: &str) -> Option<&str> {
        if group.is_empty() && version == "v1" {
            return Some(API_V1);
        }
        self.resource_lists
            .get(&(group.to_owned(), version.to_owned()))
            .map(String::as_str)
    }

    pub fn group(&self, group: &str) -> Option<&str> {
        self.groups.get(group).map(String::as_str)
    }

    pub fn openapi_index(&self) -> &str {
        &self.openapi_index
    }

    /// The document for `api/v1` or `apis/apps/v1`.
    pub fn openapi_doc(&self, key: &str) -> Option<&str> {
        self.openapi_docs.get(key).map(String::as_str)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn short_hash(text: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(text.as_bytes());
    digest.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02X}");
        out
    })
}

/// Whether an `Accept` header asks for aggregated discovery v2 (in any position of its list).
pub fn wants_aggregated(accept: &str) -> bool {
    super::request::media_ranges(accept).any(|range| {
        range.essence == "application/json"
            && range.param("g") == Some("apidiscovery.k8s.io")
            && range.param("v") == Some("v2")
            && range.param("as") == Some("APIGroupDiscoveryList")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_knows_pods_and_deployments() {
        let pods = DISCOVERY
            .resource("", "v1", "pods")
            .expect("pods are in v1");
        assert_eq!(pods.kind, "Pod");
        assert!(pods.namespaced);
        assert!(pods.subresources.iter().any(|s| s == "exec"));
        let deployments = DISCOVERY
            .resource("apps", "v1", "deployments")
            .expect("deployments are in apps/v1");
        assert_eq!(deployments.api_version(), "apps/v1");
        let namespaces = DISCOVERY
            .resource("", "v1", "namespaces")
            .expect("namespaces");
        assert!(!namespaces.namespaced);
    }

    #[test]
    fn derived_resource_list_has_subresources() {
        let list: Value = serde_json::from_str(
            DISCOVERY
                .resource_list("apps", "v1")
                .expect("apps/v1 is served"),
        )
        .expect("JSON");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/scale"));
    }

    #[test]
    fn aggregated_is_recognised_in_kubectl_accept() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(wants_aggregated(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }
}
