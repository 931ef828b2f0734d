//! Proxy-only mode: sync from the control plane, autoscaling, no policy file, the control CA.

use serde_json::Value;

use crate::{
    MODES, PROXY_ONLY, container, env, find, objects, render, secret_names, service_ports, set,
    template, the, volume,
};

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
    assert_eq!(
        env["INFRA_AUDIT_SPOOL"],
        "/var/lib/infra/audit-spool.ndjson"
    );
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
    assert_eq!(
        env["INFRA_AUDIT_SPOOL"],
        "/var/lib/infra/audit-spool.ndjson"
    );
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
