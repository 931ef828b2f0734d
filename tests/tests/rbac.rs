//! RBAC reconcile against the stand-in apiserver: bindings that mirror the grants, that leave
//! everything not Infra's alone, replicas that agree, the cluster's own roles in the proxy's
//! decisions, and an apiserver that refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::Method;
use infra_authz::attributes::{self, Attributes};
use infra_authz::decision::Identity;
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::RoleSet;
use infra_proxy::admin::Readiness;
use infra_proxy::metrics::Metrics;
use infra_proxy::policy::PolicyHandle;
use infra_proxy::reconcile::{self, RoleKind};
use infra_tests::apiserver::StandIn;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const TOKEN: &str = "rbac-reconcile-token";
const DEST: &str = "production";
const RBAC: &str = "rbac.authorization.k8s.io/v1";

/// Long enough for anything that works, short enough that a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

fn grant(subject: Subject, role: &str, resource: Resource) -> Grant {
    Grant {
        subject,
        role: role.to_owned(),
        resource,
        expires_at: None,
    }
}

fn eng() -> Subject {
    Subject::Group("eng".to_owned())
}

fn carl() -> Subject {
    Subject::User("carl@example.com".to_owned())
}

/// One proxy's side: its policy, readiness and metrics, and its reconciler.
struct Proxy {
    handle: Arc<PolicyHandle>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a reconciler of `grants` against `standin`, authenticating with `token`, through
    /// a kubeconfig as `infra-proxy serve --kubeconfig` reads it.
    async fn start(standin: &StandIn, token: &str, grants: &[Grant]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kubeconfig = write_kubeconfig(dir.path(), standin, token);
        let client = reconcile::client(Some(&kubeconfig), Some("stand-in"))
            .await
            .expect("a client from the kubeconfig");
        let handle = Arc::new(PolicyHandle::new(DEST, grants, RoleSet::builtin()));
        let readiness = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::new());
        let task = reconcile::spawn(
            client,
            Arc::clone(&handle),
            Arc::clone(&readiness),
            Arc::clone(&metrics),
        );
        Self {
            handle,
            readiness,
            metrics,
            task,
            _dir: dir,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} in\n{text}"))
    }

    fn readyz(&self) -> String {
        self.readiness.report().1
    }

    fn allows(&self, user: &str, groups: &[&str], path: &str) -> bool {
        let attrs: Attributes = attributes::parse("GET", path, None).expect("a resource path");
        self.handle
            .decide(
                &Identity::new(user, groups.iter().copied()),
                &attrs,
                SystemTime::now(),
            )
            .0
            .is_allowed()
    }
}

fn write_kubeconfig(dir: &Path, standin: &StandIn, token: &str) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(standin.ca_pem());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: infra-proxy\n  user:\n    token: {token}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: infra-proxy\ncurrent-context: stand-in\n",
        standin.url()
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).expect("writing the kubeconfig");
    path
}

async fn standin() -> StandIn {
    let standin = StandIn::builder().bearer_token(TOKEN).start().await;
    for name in ["web", "api"] {
        standin
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .expect("creating a namespace");
    }
    standin
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn name_of(namespace: Option<&str>, subject: &Subject, kind: RoleKind, role: &str) -> String {
    reconcile::binding_name(DEST, namespace, subject, kind, role)
}

fn cluster_binding(standin: &StandIn, name: &str) -> Option<Value> {
    standin.get(RBAC, "ClusterRoleBinding", "", name)
}

fn binding(standin: &StandIn, namespace: &str, name: &str) -> Option<Value> {
    standin.get(RBAC, "RoleBinding", namespace, name)
}

/// Requests that change RBAC objects.
fn rbac_writes(standin: &StandIn) -> Vec<String> {
    standin
        .recorded()
        .into_iter()
        .filter(|r| r.method != Method::GET && r.path().contains("rbac.authorization.k8s.io"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect()
}

fn version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("a stored object has a resourceVersion")
        .to_owned()
}

fn labelled(name: &str, destination: &str) -> Value {
    json!({
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "infra"},
            "annotations": {"infra.dev/destination": destination},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "old@example.com"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_mirror_the_grants_of_this_destination_and_go_with_them() {
    let standin = standin().await;
    let grants = vec![
        grant(eng(), "view", Resource::destination(DEST)),
        grant(carl(), "edit", Resource::namespace(DEST, "web")),
        grant(carl(), "admin", Resource::destination("infra")),
        grant(carl(), "admin", Resource::destination("staging")),
    ];
    let proxy = Proxy::start(&standin, TOKEN, &grants).await;

    let cluster = name_of(None, &eng(), RoleKind::ClusterRole, "view");
    let web = name_of(Some("web"), &carl(), RoleKind::ClusterRole, "edit");
    eventually("both bindings exist", || {
        cluster_binding(&standin, &cluster).is_some() && binding(&standin, "web", &web).is_some()
    })
    .await;

    let crb = cluster_binding(&standin, &cluster).expect("the ClusterRoleBinding");
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})
    );
    assert_eq!(
        crb["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "eng"}])
    );
    assert_eq!(
        crb["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "infra"
    );
    assert_eq!(
        crb["metadata"]["annotations"]["infra.dev/destination"],
        DEST
    );
    assert!(cluster.starts_with("infra:view:group:"), "{cluster}");

    let rb = binding(&standin, "web", &web).expect("the RoleBinding");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"})
    );
    assert_eq!(
        rb["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carl@example.com"}])
    );
    assert_eq!(rb["metadata"]["annotations"]["infra.dev/destination"], DEST);

    // Nothing for the control resource or another destination: two creates in all.
    let creates: Vec<String> = rbac_writes(&standin)
        .into_iter()
        .filter(|w| w.starts_with("POST"))
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");

    // The grant goes, and its binding with it; the other stays.
    proxy.handle.replace(&grants[..1]);
    eventually("the RoleBinding is deleted", || {
        binding(&standin, "web", &web).is_none()
    })
    .await;
    assert!(cluster_binding(&standin, &cluster).is_some());
    assert!(!proxy.readyz().contains("[!] rbac"), "{}", proxy.readyz());
    assert!(proxy.metric("infra_proxy_reconcile_errors_total") < 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_infra_does_not_own_are_never_touched() {
    let standin = standin().await;
    let wanted = name_of(None, &eng(), RoleKind::ClusterRole, "view");
    // Someone else's binding, with the very name Infra wants, but without Infra's label.
    let squatter = standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": wanted},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
        }))
        .expect("creating the unlabelled binding");
    // Someone else's, named like Infra's, unwanted.
    let lookalike = standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": {"name": "infra:view:user:deadbeef", "namespace": "web"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dora"}],
        }))
        .expect("creating the look-alike");
    // Infra's, but another destination's.
    let staging = standin
        .create(labelled("infra:view:user:0badf00d", "staging"))
        .expect("creating the other destination's binding");
    // This destination's, no longer wanted.
    standin
        .create(labelled("infra:view:user:5ca1ab1e", DEST))
        .expect("creating a stale binding");

    let proxy = Proxy::start(
        &standin,
        TOKEN,
        &[grant(eng(), "view", Resource::destination(DEST))],
    )
    .await;
    eventually("the stale binding is deleted", || {
        cluster_binding(&standin, "infra:view:user:5ca1ab1e").is_none()
    })
    .await;
    eventually("the taken name is reported", || {
        proxy.readyz().contains("is not this destination's")
    })
    .await;

    let now = cluster_binding(&standin, &wanted).expect("the squatter stays");
    assert_eq!(
        version(&now),
        version(&squatter),
        "the squatter is unchanged"
    );
    assert_eq!(now["subjects"][0]["name"], "mallory");
    let now = binding(&standin, "web", "infra:view:user:deadbeef").expect("the look-alike stays");
    assert_eq!(version(&now), version(&lookalike));
    let now = cluster_binding(&standin, "infra:view:user:0badf00d").expect("staging's stays");
    assert_eq!(version(&now), version(&staging));
    assert!(proxy.metric("infra_proxy_reconcile_errors_total") >= 1.0);

    // Only the stale one was ever written to.
    let writes = rbac_writes(&standin);
    assert!(
        writes.iter().all(|w| w.ends_with("5ca1ab1e")
            || (w.starts_with("POST") && w.ends_with("clusterrolebindings"))),
        "{writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_one_destination_converge_without_flapping() {
    let standin = standin().await;
    let grants = vec![
        grant(eng(), "view", Resource::destination(DEST)),
        grant(carl(), "edit", Resource::namespace(DEST, "web")),
        grant(carl(), "view", Resource::namespace(DEST, "api")),
    ];
    let one = Proxy::start(&standin, TOKEN, &grants).await;
    let two = Proxy::start(&standin, TOKEN, &grants).await;
    let cluster = name_of(None, &eng(), RoleKind::ClusterRole, "view");
    let web = name_of(Some("web"), &carl(), RoleKind::ClusterRole, "edit");
    let api = name_of(Some("api"), &carl(), RoleKind::ClusterRole, "view");
    eventually("every binding exists", || {
        cluster_binding(&standin, &cluster).is_some()
            && binding(&standin, "web", &web).is_some()
            && binding(&standin, "api", &api).is_some()
    })
    .await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    standin.clear_recorded();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rbac_writes(&standin),
        Vec::<String>::new(),
        "no writes once converged"
    );

    // A change on both: each wants the same, and they settle again.
    for proxy in [&one, &two] {
        proxy.handle.replace(&grants[..2]);
    }
    eventually("the api binding is deleted", || {
        binding(&standin, "api", &api).is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    standin.clear_recorded();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rbac_writes(&standin),
        Vec::<String>::new(),
        "no writes once converged"
    );
    for proxy in [&one, &two] {
        assert!(!proxy.readyz().contains("[!] rbac"), "{}", proxy.readyz());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_own_roles_decide_and_a_missing_role_is_reported() {
    let standin = standin().await;
    let grants = vec![
        grant(carl(), "widget-reader", Resource::namespace(DEST, "web")),
        grant(eng(), "deployer", Resource::namespace(DEST, "web")),
    ];
    let proxy = Proxy::start(&standin, TOKEN, &grants).await;
    let widgets = "/apis/example.com/v1/namespaces/web/widgets";
    let deployments = "/apis/apps/v1/namespaces/web/deployments/site";

    eventually("both unknown roles are counted", || {
        proxy.metric("infra_proxy_grants_unknown_role") > 1.5
    })
    .await;
    assert!(
        proxy.readyz().contains("widget-reader") && proxy.readyz().contains("deployer"),
        "{}",
        proxy.readyz()
    );
    assert!(!proxy.allows("carl@example.com", &[], widgets));

    // A custom ClusterRole appears: the grant allows what its rules allow, and no more.
    standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "widget-reader"},
            "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}],
        }))
        .expect("creating the ClusterRole");
    eventually("the ClusterRole decides", || {
        proxy.allows("carl@example.com", &[], widgets)
    })
    .await;
    assert!(!proxy.allows("carl@example.com", &[], deployments));
    assert!(!proxy.allows(
        "carl@example.com",
        &[],
        "/apis/example.com/v1/namespaces/api/widgets"
    ));

    // A Role of the namespace appears: the binding refers to it, and the proxy decides with it.
    standin
        .create(json!({
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": "deployer", "namespace": "web"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        }))
        .expect("creating the Role");
    let role_binding = name_of(Some("web"), &eng(), RoleKind::Role, "deployer");
    eventually("the RoleBinding refers to the Role", || {
        binding(&standin, "web", &role_binding).is_some()
    })
    .await;
    let rb = binding(&standin, "web", &role_binding).expect("the RoleBinding");
    assert_eq!(rb["roleRef"]["kind"], "Role");
    let to_cluster_role = name_of(Some("web"), &eng(), RoleKind::ClusterRole, "deployer");
    eventually("the binding to the missing ClusterRole is gone", || {
        binding(&standin, "web", &to_cluster_role).is_none()
    })
    .await;
    eventually("the Role decides", || {
        proxy.allows("dora", &["eng"], deployments)
    })
    .await;
    assert!(!proxy.allows("dora", &["eng"], widgets));
    eventually("no unknown role is left", || {
        proxy.metric("infra_proxy_grants_unknown_role") < 0.5
    })
    .await;
    assert!(!proxy.readyz().contains("[!] roles"), "{}", proxy.readyz());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_that_refuses_is_retried_and_nothing_is_deleted() {
    let standin = standin().await;
    standin
        .create(labelled("infra:view:user:5ca1ab1e", DEST))
        .expect("creating a stale binding");
    let proxy = Proxy::start(
        &standin,
        "a-token-without-rights",
        &[grant(eng(), "view", Resource::destination(DEST))],
    )
    .await;
    eventually("the failure is reported", || {
        proxy.readyz().contains("RBAC reconcile failing")
    })
    .await;
    let first = proxy.metric("infra_proxy_reconcile_errors_total");
    assert!(first >= 1.0);
    eventually("the watches are retried", || {
        proxy.metric("infra_proxy_reconcile_errors_total") > first
    })
    .await;
    assert!(
        cluster_binding(&standin, "infra:view:user:5ca1ab1e").is_some(),
        "nothing it could not confirm is deleted"
    );
    assert_eq!(rbac_writes(&standin), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_apiserver_is_reported_and_retried() {
    let standin = standin().await;
    let grants = vec![
        grant(eng(), "view", Resource::destination(DEST)),
        grant(carl(), "edit", Resource::destination(DEST)),
    ];
    let proxy = Proxy::start(&standin, TOKEN, &grants).await;
    let kept = name_of(None, &carl(), RoleKind::ClusterRole, "edit");
    eventually("the bindings exist", || {
        cluster_binding(&standin, &kept).is_some()
    })
    .await;
    standin.shutdown().await;
    proxy.handle.replace(&grants[..1]);
    eventually("the failure is reported", || {
        proxy.readyz().contains("RBAC reconcile failing")
    })
    .await;
    let first = proxy.metric("infra_proxy_reconcile_errors_total");
    eventually("it is retried", || {
        proxy.metric("infra_proxy_reconcile_errors_total") > first
    })
    .await;
    assert!(cluster_binding(&standin, &kept).is_some());
}
