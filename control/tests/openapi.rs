//! `control/openapi.yaml` against the control API as built: the document names exactly the routes
//! in `api::ROUTES`, every operation is complete and every `$ref` resolves, and the real router
//! (on a control plane over a temporary SQLite store) serves every one of those routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use infra_authz::clock::SystemClock;
use infra_authz::policy::Policy;
use infra_control::api::{self, OPENAPI, ROUTES};
use infra_control::crypto::RootKeySource;
use infra_control::passwords::Passwords;
use infra_control::{ControlConfig, ControlPlane, Store, StoreConfig};
use serde_json::Value;
use tower::ServiceExt as _;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The message of the router's fallback, which answers paths it does not know.
const FALLBACK_MESSAGE: &str = "no such API route";

fn document() -> Value {
    serde_saphyr::from_str(OPENAPI).expect("control/openapi.yaml is YAML")
}

fn paths(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["paths"].as_object().expect("`paths` is a mapping")
}

/// Every (method, path) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in paths(doc) {
        let item = item.as_object().expect("a path item is a mapping");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

fn routes() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect()
}

fn show(set: &BTreeSet<&(String, String)>) -> String {
    set.iter()
        .map(|(method, path)| format!("  {} {path}", method.to_uppercase()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn document_is_openapi_3_1() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string(), "info.title");
    assert!(doc["info"]["version"].is_string(), "info.version");
    let scheme = &doc["components"]["securitySchemes"]["accessKey"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
}

#[test]
fn documented_routes_are_exactly_the_routes() {
    let doc = document();
    let documented = documented(&doc);
    let routes = routes();
    assert_eq!(routes.len(), ROUTES.len(), "ROUTES names a route twice");
    let missing: BTreeSet<_> = routes.difference(&documented).collect();
    let extra: BTreeSet<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "control/openapi.yaml and api::ROUTES differ\n\
         in ROUTES, not in the document:\n{}\n\
         in the document, not in ROUTES:\n{}",
        show(&missing),
        show(&extra),
    );
}

#[test]
fn every_operation_is_complete() {
    let doc = document();
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, item) in paths(&doc) {
        let item = item.as_object().expect("a path item is a mapping");
        for (method, op) in item.iter().filter(|(k, _)| METHODS.contains(&k.as_str())) {
            let at = format!("{} {path}", method.to_uppercase());
            match op["operationId"].as_str() {
                Some(id) if !ids.insert(id.to_owned()) => {
                    problems.push(format!("{at}: operationId {id:?} used twice"));
                }
                Some(_) => {}
                None => problems.push(format!("{at}: no operationId")),
            }
            if op["summary"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{at}: no summary"));
            }
            match op["responses"].as_object() {
                Some(responses) if !responses.is_empty() => {
                    if !responses.keys().any(|code| code.starts_with('2')) {
                        problems.push(format!("{at}: no 2xx response"));
                    }
                }
                _ => problems.push(format!("{at}: no responses")),
            }
            if op
                .get("security")
                .is_some_and(|s| s != &Value::Array(vec![]))
            {
                problems.push(format!("{at}: security is neither absent nor []"));
            }
            // Every path parameter in the template is declared, on the path or the operation.
            let declared: BTreeSet<&str> = item
                .get("parameters")
                .into_iter()
                .chain(op.get("parameters"))
                .flat_map(|p| p.as_array().expect("parameters is a list"))
                .filter_map(|p| resolve(&doc, p))
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in path_params(path) {
                if !declared.contains(name) {
                    problems.push(format!("{at}: path parameter {name:?} not declared"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A parameter, through its `$ref` if it has one.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc.pointer(reference.strip_prefix('#')?),
        None => Some(value),
    }
}

fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => out.push(reference),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|child| refs(child, out)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "expected many $refs, found {}", all.len());
    let broken: Vec<&str> = all
        .into_iter()
        .filter(|reference| {
            reference
                .strip_prefix('#')
                .is_none_or(|pointer| doc.pointer(pointer).is_none())
        })
        .collect();
    assert!(
        broken.is_empty(),
        "$refs that resolve to nothing: {broken:?}"
    );
}

#[test]
fn every_schema_is_used() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    let used: BTreeSet<&str> = all.into_iter().collect();
    let components = doc["components"].as_object().expect("components");
    let mut unused = Vec::new();
    for kind in ["schemas", "parameters", "responses"] {
        for name in components[kind]
            .as_object()
            .expect("a component map")
            .keys()
        {
            let reference = format!("#/components/{kind}/{name}");
            if !used.contains(reference.as_str()) {
                unused.push(reference);
            }
        }
    }
    assert!(unused.is_empty(), "components no $ref uses: {unused:?}");
}

/// A path with its parameters filled with sample values.
fn sample(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{name}" => "sample",
            "{user}" => "someone",
            "{id}" => "1",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn plane(dir: &std::path::Path) -> Arc<ControlPlane> {
    let config = StoreConfig {
        passwords: Passwords::new(256, 1, 1),
        ..StoreConfig::sqlite(
            dir.join("infra.db"),
            RootKeySource::File(dir.join("root.key")),
        )
    };
    let store = Store::open(&config).await.expect("open the store");
    ControlPlane::start(
        store,
        ControlConfig::new("https://127.0.0.1:1"),
        &Policy::default(),
        Arc::new(SystemClock),
    )
    .await
    .expect("start the control plane")
}

async fn send(router: &axum::Router, method: &str, uri: &str) -> (StatusCode, String) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
    let body = if method == Method::GET || method == Method::DELETE {
        Body::empty()
    } else {
        Body::from("{}")
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_router_serves_every_route() {
    let dir = tempfile::tempdir().expect("temp dir");
    let router = api::router(plane(dir.path()).await);

    // The fallback is what an unknown path gets; make sure this test can tell it apart.
    let (status, body) = send(&router, "get", "/api/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains(FALLBACK_MESSAGE), "fallback answered {body}");

    let doc = document();
    let mut problems = Vec::new();
    for (method, path) in ROUTES {
        let uri = sample(path);
        let (status, body) = send(&router, method, &uri).await;
        let at = format!("{} {path} ({uri})", method.to_uppercase());
        let fallback = status == StatusCode::NOT_FOUND && body.contains(FALLBACK_MESSAGE);
        if fallback || status == StatusCode::METHOD_NOT_ALLOWED {
            problems.push(format!("{at}: not served: {status} {body}"));
            continue;
        }
        // Without a key (and with an empty body), the answer is one the document lists.
        let responses = &doc["paths"][*path][*method]["responses"];
        if responses.get(status.as_str()).is_none() {
            problems.push(format!("{at}: answered {status}, not documented: {body}"));
        }
    }
    assert!(
        problems.is_empty(),
        "routes in ROUTES the router does not serve as documented:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn the_router_serves_this_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let router = api::router(plane(dir.path()).await);
    let request = Request::builder()
        .uri("/api/openapi.yaml")
        .body(Body::empty())
        .expect("a request");
    let response = router.oneshot(request).await.expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/yaml"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    assert_eq!(
        bytes,
        OPENAPI.as_bytes(),
        "GET /api/openapi.yaml serves the document"
    );
    let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("read control/openapi.yaml");
    assert_eq!(on_disk, OPENAPI, "the served text is the file's");
}
