//! Over HTTP: authentication, impersonation, discovery, object statuses, server-side apply.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use infra_tests::apiserver::Caller;
use serde_json::json;

use crate::{client, json_body, request, send, start};

#[tokio::test]
async fn a_caller_without_credentials_gets_a_401_status_and_is_recorded() {
    let standin = start().await;
    let client = client(&standin, None);
    let request = Request::get(format!("{}/api/v1/namespaces/default/pods", standin.url()))
        .header("authorization", "Bearer wrong")
        .body(Full::default())
        .expect("a valid request");
    let (status, _, body) = send(&client, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);
    let recorded = standin.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].caller, Caller::Anonymous);
    assert_eq!(recorded[0].header_values("authorization"), ["Bearer wrong"]);
}

#[tokio::test]
async fn a_client_certificate_authenticates_and_impersonation_is_honoured() {
    let standin = start().await;
    let cert = standin.client_cert("infra-proxy", &["proxies", "system:masters"]);
    let client = client(&standin, Some(&cert));
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let request = Request::post(format!(
        "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        standin.url()
    ))
    .header("content-type", "application/json")
    .header("impersonate-user", "alice@example.com")
    .header("impersonate-group", "eng")
    .header("impersonate-group", "ops")
    .body(json_body(&review))
    .expect("a valid request");
    let (status, _, body) = send(&client, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["userInfo"]["username"], "alice@example.com");
    assert_eq!(
        body["status"]["userInfo"]["groups"],
        json!(["eng", "ops", "system:authenticated"])
    );

    let recorded = standin.recorded();
    let last = recorded.last().expect("one request");
    assert_eq!(
        last.caller,
        Caller::ClientCert {
            user: "infra-proxy".to_owned(),
            groups: vec!["proxies".to_owned(), "system:masters".to_owned()],
        }
    );
    assert_eq!(last.header_values("impersonate-group"), ["eng", "ops"]);
    assert_eq!(
        last.header("impersonate-user").as_deref(),
        Some("alice@example.com")
    );
}

#[tokio::test]
async fn discovery_is_negotiated_like_the_apiserver() {
    let standin = start().await;
    let client = client(&standin, None);
    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (status, headers, body) = send(
        &client,
        request(&standin, Method::GET, "/apis")
            .header("accept", aggregated)
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(body["kind"], "APIGroupDiscoveryList");

    let (_, headers, body) = send(
        &client,
        request(&standin, Method::GET, "/apis")
            .header("accept", "application/json, */*")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["kind"], "APIGroupList");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, "/apis/apps/v1")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["groupVersion"], "apps/v1");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, "/apis/nope.example.com/v1/things")
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["reason"], "NotFound");
}

#[tokio::test]
async fn objects_are_created_conflicted_patched_and_deleted_with_real_statuses() {
    let standin = start().await;
    let client = client(&standin, None);
    let path = "/api/v1/namespaces/default/configmaps";
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}});

    let post = || {
        request(&standin, Method::POST, path)
            .header("content-type", "application/json")
            .body(json_body(&configmap))
            .expect("valid")
    };
    let (status, _, created) = send(&client, post()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let version: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion");

    let (status, _, body) = send(&client, post()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(body["message"], "configmaps \"settings\" already exists");
    assert_eq!(
        body["details"],
        json!({"name": "settings", "kind": "configmaps"})
    );

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!((version - 1).to_string());
    let (status, _, body) = send(
        &client,
        request(&standin, Method::PUT, &format!("{path}/settings"))
            .header("content-type", "application/json")
            .body(json_body(&stale))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "Conflict");

    let (status, _, patched) = send(
        &client,
        request(&standin, Method::PATCH, &format!("{path}/settings"))
            .header("content-type", "application/merge-patch+json")
            .body(json_body(&json!({"data": {"a": null, "b": "2"}})))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"], json!({"b": "2"}));
    assert_eq!(patched["metadata"]["uid"], created["metadata"]["uid"]);

    let (status, _, list) = send(
        &client,
        request(&standin, Method::GET, path)
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "ConfigMapList");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert_eq!(list["items"][0]["metadata"]["name"], "settings");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::DELETE, &format!("{path}/settings"))
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "Success");

    let (status, _, body) = send(
        &client,
        request(&standin, Method::GET, &format!("{path}/settings"))
            .body(Full::default())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "configmaps \"settings\" not found", "reason": "NotFound",
               "details": {"name": "settings", "kind": "configmaps"}, "code": 404})
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_yaml() {
    let standin = start().await;
    let client = client(&standin, None);
    let path = "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl&force=true";
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n";
    let apply = |body: &str| {
        request(&standin, Method::PATCH, path)
            .header("content-type", "application/apply-patch+yaml")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid")
    };
    let (status, _, created) = send(&client, apply(yaml)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"]["readyReplicas"], 2);
    let (status, _, updated) =
        send(&client, apply(&yaml.replace("replicas: 2", "replicas: 3"))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"]["replicas"], 3);
    assert_eq!(updated["metadata"]["generation"], 2);
}
