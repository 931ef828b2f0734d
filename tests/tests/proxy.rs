//! infra-proxy end to end: the real kubectl, through infra-proxy over real TLS, to the stand-in
//! apiserver. Each test starts its own proxy and stand-in on 127.0.0.1:0.

use std::time::{Duration, SystemTime};

use infra_authz::token::{Issuer, SigningAlgorithm, SigningKey, TokenRequest};
use infra_tests::kubectl::{Credentials, Kubectl};
use infra_tests::proxy::{
    DESTINATION, Harness, ISSUER, UPSTREAM_TOKEN, http_get, https_get, make_executable, wait_for,
};

const VIEW_POLICY: &str = "
grants:
  - user: suzie@example.com
    role: view
    resource: testing
  - group: Engineering
    role: edit
    resource: testing.web
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_works_and_the_apiserver_sees_only_our_identity_headers() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("suzie@example.com", &["Design"]);
    let out = kubectl
        .run(&["get", "pods", "-n", "default"])
        .await
        .success();
    assert!(
        out.stdout.contains("NAME") || out.stderr.contains("No resources found"),
        "{out:?}"
    );

    let list = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == "/api/v1/namespaces/default/pods")
        .expect("the list reached the apiserver");
    assert_eq!(
        list.header_values("authorization"),
        [format!("Bearer {UPSTREAM_TOKEN}")],
        "only the proxy's credential reaches the apiserver"
    );
    assert_eq!(
        list.header_values("impersonate-user"),
        ["suzie@example.com"]
    );
    assert_eq!(
        list.header_values("impersonate-group"),
        ["Design", "system:authenticated"]
    );
    assert_eq!(list.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(list.header_values("audit-id").len(), 1);
    let audit_id = list.header("audit-id").expect("audit id");

    // The audit log has the same id, the identity and the decision (once the line is written).
    let event = wait_for(|| async {
        h.audit_lines()
            .into_iter()
            .find(|e| e["audit_id"] == audit_id.as_str())
    })
    .await;
    assert_eq!(event["user"], "suzie@example.com");
    assert_eq!(event["verb"], "list");
    assert_eq!(event["resource"], "pods");
    assert_eq!(event["decision"], "allow");
    assert_eq!(event["code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_grants_gets_kubectls_usual_forbidden_message() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("mallory@example.com", &[]);
    let out = kubectl
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(
        out.stderr.contains(
            "Error from server (Forbidden): pods is forbidden: User \"mallory@example.com\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        out.stderr
    );
    let out = kubectl
        .run(&["get", "secret", "db", "-n", "web"])
        .await
        .failure();
    assert!(
        out.stderr.contains(
            "secrets \"db\" is forbidden: User \"mallory@example.com\" cannot get resource \"secrets\" in API group \"\" in the namespace \"web\""
        ),
        "{}",
        out.stderr
    );
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| !r.path().contains("/pods") && !r.path().contains("/secrets")),
        "a denied request never reaches the apiserver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_grant_covers_only_its_namespace() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("carl@example.com", &["Engineering"]);
    kubectl
        .run(&["get", "configmaps", "-n", "web"])
        .await
        .success();
    let out = kubectl
        .run(&["get", "configmaps", "-n", "default"])
        .await
        .failure();
    assert!(out.stderr.contains("(Forbidden)"), "{}", out.stderr);
    let out = kubectl.run(&["get", "nodes"]).await.failure();
    assert!(
        out.stderr
            .contains("cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_kubectl_asks_for_credentials() {
    let h = Harness::start(VIEW_POLICY).await;
    // No token at all: a 401 Status, as the apiserver answers. (kubectl itself, with no
    // credentials configured, prompts for a password instead of showing it.)
    let (status, body) = https_get(&h, "/api/v1/namespaces/default/pods", &[]).await;
    assert_eq!(status, 401);
    let body: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let (status, _) = https_get(
        &h,
        "/api/v1/namespaces/default/pods",
        &[("authorization", "Basic c3V6aWU6aHVudGVyMg==")],
    )
    .await;
    assert_eq!(status, 401);
    let token = h.token("suzie@example.com", &[], Duration::from_mins(1));
    let (status, body) = https_get(
        &h,
        "/api/v1/namespaces/default/pods",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("authorization", &format!("Bearer {token}")),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");

    for credentials in [
        Credentials::Token("not-a-jwt".to_owned()),
        // A token from an issuer the proxy does not trust.
        Credentials::Token({
            let other = Issuer::new(
                ISSUER,
                SigningKey::generate(SigningAlgorithm::EdDsa).expect("key"),
            )
            .expect("issuer");
            other
                .issue(
                    &TokenRequest {
                        user_id: "suzie@example.com",
                        name: "suzie@example.com",
                        groups: &[],
                        audience: DESTINATION,
                        ttl: Duration::from_mins(1),
                        session: None,
                    },
                    SystemTime::now(),
                )
                .expect("issue")
                .token
                .expose()
                .to_owned()
        }),
        // An expired token.
        Credentials::Token(h.token_issued_at(
            "suzie@example.com",
            &[],
            Duration::from_mins(1),
            SystemTime::now() - Duration::from_hours(1),
        )),
    ] {
        let kubectl = Kubectl::new(&h.url(), h.ca.cert_pem(), &credentials);
        let out = kubectl.run(&["get", "pods"]).await.failure();
        assert!(
            out.stderr.contains("You must be logged in to the server")
                || out.stderr.contains("Unauthorized"),
            "{credentials:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_without_the_right_to_impersonate_is_refused_and_never_forwarded() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("suzie@example.com", &[]);
    let out = kubectl
        .run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods",
            "--as",
            "admin",
            "--as-group",
            "system:masters",
        ])
        .await
        .failure();
    assert!(
        out.stderr.contains(
            "users \"admin\" is forbidden: User \"suzie@example.com\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{}",
        out.stderr
    );
    // Every spelling, straight over HTTP: a user is checked (403), a group, uid or extra
    // without a user is the apiserver's 500, and a name the apiserver does not read is ignored.
    let token = h.token("suzie@example.com", &[], Duration::from_mins(1));
    let bearer = format!("Bearer {token}");
    for (name, status) in [
        ("Impersonate-User", 403),
        ("IMPERSONATE-USER", 403),
        ("impersonate-group", 500),
        ("IMPERSONATE-UID", 500),
        ("Impersonate-Extra-Scopes", 500),
        ("Impersonate-Whatever-Comes-Next", 200),
    ] {
        let (got, body) = https_get(
            &h,
            "/api/v1/namespaces/default/pods",
            &[("authorization", &bearer), (name, "admin")],
        )
        .await;
        assert_eq!(got, status, "{name}: {body}");
    }
    // (The proxy's own readiness check of /version goes as itself.)
    for request in h
        .standin
        .recorded()
        .iter()
        .filter(|r| r.path() != "/version")
    {
        assert_eq!(
            request.header_values("impersonate-user"),
            ["suzie@example.com"],
            "{request:?}"
        );
        assert!(
            request
                .headers
                .iter()
                .all(|(name, _)| !name.as_str().starts_with("impersonate-")
                    || name == "impersonate-user"
                    || name == "impersonate-group"),
            "{request:?}"
        );
    }
}

/// An expired token makes kubectl run its credential plugin again, and the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_makes_kubectl_run_its_exec_plugin_again() {
    let h = Harness::start(VIEW_POLICY).await;
    // The plugin prints whatever token is in `token` and counts its runs.
    let plugin = h.dir.path().join("plugin.sh");
    let token_file = h.dir.path().join("token");
    let runs = h.dir.path().join("runs");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho run >> {runs}\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"%s\"}}}}' \"$(cat {token})\"\n",
            runs = runs.display(),
            token = token_file.display()
        ),
    )
    .expect("write plugin");
    make_executable(&plugin);

    let expired = h.token_issued_at(
        "suzie@example.com",
        &[],
        Duration::from_mins(1),
        SystemTime::now() - Duration::from_hours(1),
    );
    std::fs::write(&token_file, expired).expect("write token");
    let kubectl = Kubectl::new(
        &h.url(),
        h.ca.cert_pem(),
        &Credentials::Exec {
            command: plugin.display().to_string(),
            args: Vec::new(),
            env: Vec::new(),
        },
    );
    // First run: 401 with the expired token; kubectl re-runs the plugin once and fails again.
    kubectl.run(&["get", "pods"]).await.failure();
    let first = std::fs::read_to_string(&runs)
        .expect("runs")
        .lines()
        .count();
    assert!(
        first >= 2,
        "kubectl re-ran its plugin after a 401 ({first} runs)"
    );

    // With a fresh token behind the plugin, the same kubeconfig works.
    std::fs::write(
        &token_file,
        h.token("suzie@example.com", &[], Duration::from_mins(5)),
    )
    .expect("write token");
    kubectl.run(&["get", "pods"]).await.success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_whoami_and_api_resources_work() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("suzie@example.com", &["Design"]);
    let out = kubectl.run(&["api-resources"]).await.success();
    assert!(out.stdout.contains("deployments"), "{}", out.stdout);
    let out = kubectl.run(&["version", "-o", "json"]).await.success();
    assert!(out.stdout.contains("serverVersion"), "{}", out.stdout);
    let out = kubectl
        .run(&["auth", "whoami", "-o", "json"])
        .await
        .success();
    assert!(out.stdout.contains("suzie@example.com"), "{}", out.stdout);
    assert!(out.stdout.contains("Design"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_server_side_apply_and_delete_go_through() {
    let h = Harness::start(
        "
grants:
  - user: carl@example.com
    role: edit
    resource: testing
",
    )
    .await;
    let kubectl = h.kubectl_as("carl@example.com", &[]);
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  color: blue\n";
    kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(manifest))
        .await
        .success();
    let out = kubectl
        .run(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await
        .success();
    assert!(out.stdout.contains("blue"), "{}", out.stdout);
    kubectl
        .run_with_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(&manifest.replace("blue", "green")),
        )
        .await
        .success();
    let out = kubectl
        .run(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await
        .success();
    assert!(out.stdout.contains("green"), "{}", out.stdout);
    let patch = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("server-side apply sends a PATCH");
    assert_eq!(
        patch.header("content-type").as_deref(),
        Some("application/apply-patch+yaml")
    );
    kubectl
        .run(&["delete", "configmap", "settings", "-n", "default"])
        .await
        .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_file_keeps_the_previous_policy() {
    let h = Harness::start(VIEW_POLICY).await;
    let kubectl = h.kubectl_as("suzie@example.com", &[]);
    kubectl.run(&["get", "pods"]).await.success();

    h.write_policy(
        "grants:\n  - user: suzie@example.com\n    role: view\n    resource: Bad Resource\n",
    );
    let admin = format!("http://{}/readyz", h.proxy.admin_address);
    let report = wait_for(|| async {
        let body = http_get(&admin).await;
        body.contains("previous policy stays in force")
            .then_some(body)
    })
    .await;
    assert!(
        report.contains("policy.yaml:4:15: grants[0].resource"),
        "the located error is shown: {report}"
    );
    kubectl.run(&["get", "pods"]).await.success();

    // A good change takes effect: suzie loses access.
    h.write_policy("grants: []\n");
    wait_for(|| async {
        let out = kubectl.run(&["get", "pods"]).await;
        (!out.status.success() && out.stderr.contains("(Forbidden)")).then_some(())
    })
    .await;
    let metrics = http_get(&format!("http://{}/metrics", h.proxy.admin_address)).await;
    assert!(
        metrics.contains("infra_proxy_policy_reload_failures_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_requests_then_refuses_new_connections() {
    let h = Harness::start(VIEW_POLICY).await;
    h.standin
        .create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        }))
        .expect("the pod is created");
    let kubectl = h.kubectl_as("suzie@example.com", &[]);
    // A followed log holds its request open while the drain starts.
    let mut follow = kubectl
        .command(&["logs", "-f", "web", "-n", "default"])
        .spawn()
        .expect("kubectl runs");
    tokio::time::timeout(
        Duration::from_secs(20),
        h.standin.wait_for_streams(|s| s.log_follows == 1),
    )
    .await
    .expect("the follow reaches the apiserver");

    // Draining asks every connection to finish; the follow is still open when the grace ends.
    let left = h.proxy.drain.drain(Duration::from_millis(300)).await;
    assert_eq!(left, 1, "the open follow outlives a short grace period");

    // New connections are refused once the drain has started.
    let refused = tokio::net::TcpStream::connect(h.proxy.address).await;
    match refused {
        Err(_) => {}
        Ok(stream) => {
            // The listener may have accepted before noticing; then the connection is closed
            // without a TLS handshake.
            let mut buf = [0_u8; 1];
            stream.readable().await.expect("readable");
            assert!(matches!(stream.try_read(&mut buf), Ok(0) | Err(_)));
        }
    }
    follow.kill().await.expect("kill kubectl");
    h.standin.wait_for_streams(|s| s.log_follows == 0).await;
}

/// A token signed by the key the proxy trusts, whose header and claims are these JSON texts
/// exactly as written (`KID` stands for the key's id): what an issuer that repeats a claim or
/// names an unruly user would sign. `Issuer` itself refuses to issue such names.
fn signed_raw(h: &Harness, header: &str, claims: &str) -> String {
    use base64::Engine as _;
    let key = h.issuer.signing_key();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.pkcs8().expose())
        .expect("the harness signs with Ed25519");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = header.replace("KID", key.kid());
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tokens_with_repeated_members_or_unruly_names_get_401_and_go_no_further() {
    let h = Harness::start(VIEW_POLICY).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let header = r#"{"alg":"EdDSA","typ":"JWT","kid":"KID"}"#;
    let claims = |name: &str, groups: &str, extra: &str| {
        format!(
            r#"{{"iss":{ISSUER:?},"sub":"u-1","aud":{DESTINATION:?},"exp":{},"nbf":{now},"iat":{now},"jti":"AAAAAAAAAAAAAAAAAAAAAA","name":{name},"groups":{groups}{extra}}}"#,
            now + 60
        )
    };
    let path = "/api/v1/namespaces/default/pods";
    let h = &h;
    let get = move |token: String| async move {
        https_get(h, path, &[("authorization", &format!("Bearer {token}"))]).await
    };

    // The raw signer makes tokens the proxy accepts; suzie may view.
    let good = signed_raw(h, header, &claims(r#""suzie@example.com""#, "[]", ""));
    let (status, body) = get(good).await;
    assert_eq!(status, 200, "{body}");

    let refused = [
        // Two `name` claims: the first names nobody with a grant, the second (which serde_json
        // alone would keep) suzie.
        (
            header.to_owned(),
            claims(
                r#""nobody@example.com""#,
                "[]",
                r#","name":"suzie@example.com""#,
            ),
        ),
        // A repeated member in the header.
        (
            r#"{"alg":"EdDSA","kid":"KID","x-note":"a","x-note":"b"}"#.to_owned(),
            claims(r#""suzie@example.com""#, "[]", ""),
        ),
        // A bidirectional override in the user name.
        (
            header.to_owned(),
            claims(r#""moc.elpmaxe@\u202Eeizus""#, "[]", ""),
        ),
        // A 5,000-character user name.
        (
            header.to_owned(),
            claims(&format!("{:?}", "s".repeat(5000)), "[]", ""),
        ),
        // A group name with a bidirectional isolate.
        (
            header.to_owned(),
            claims(r#""suzie@example.com""#, r#"["Engineering\u2066"]"#, ""),
        ),
    ];
    for (header, claims) in refused {
        let (status, body) = get(signed_raw(h, &header, &claims)).await;
        assert_eq!(status, 401, "{header} {claims}: {body}");
    }
    let forwarded = h
        .standin
        .recorded()
        .into_iter()
        .filter(|r| r.path() == path)
        .count();
    assert_eq!(
        forwarded, 1,
        "only the good token's request reached the apiserver"
    );
}
