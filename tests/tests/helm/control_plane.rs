//! The control plane: the default on SQLite, generated Secrets kept, PostgreSQL mode.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{MODES, container, env, find, objects, service_ports, set, template, text, the};

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
