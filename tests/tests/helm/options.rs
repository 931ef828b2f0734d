//! Optional parts: ingress, cert-manager, the metrics Service; and names cut to 63 characters.

use std::collections::BTreeSet;

use crate::{
    MODES, assert_valid_objects, env, objects, secret_names, service_ports, template, the,
};

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
fn the_audit_export_takes_its_endpoint_and_headers_from_values() {
    let objects = objects(&template(&[
        "control.auditOtlp.endpoint=https://otel-collector.observability:4318",
        "control.auditOtlp.headersSecret=otlp-headers",
    ]));
    assert_valid_objects(&objects);
    let env = env(&objects);
    assert_eq!(
        env["INFRA_AUDIT_OTLP_ENDPOINT"],
        "https://otel-collector.observability:4318"
    );
    assert_eq!(
        env["INFRA_AUDIT_OTLP_HEADERS"],
        "secret:otlp-headers/headers"
    );
    // By default there is no export.
    let env = crate::env(&crate::objects(&template(&[])));
    assert!(!env.contains_key("INFRA_AUDIT_OTLP_ENDPOINT"));
    assert!(!env.contains_key("INFRA_AUDIT_OTLP_HEADERS"));
}
