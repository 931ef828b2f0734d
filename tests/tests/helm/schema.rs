//! The values schema: refusals, combinations it cannot express, and values.yaml and the README
//! agreeing with it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{PROXY_ONLY, chart, template_error};

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
