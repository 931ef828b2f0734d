//! The control API end to end: infra-proxy with its embedded control plane (real TLS, real
//! SQLite), the stand-in apiserver, and the real kubectl with tokens the control plane issued.

use infra_tests::control::{ADMIN_PASSWORD, ControlHarness, Options};
use infra_tests::proxy::{DESTINATION, http_get, wait_for};
use serde_json::json;

const POLICY: &str = "grants:\n  - group: Engineering\n    role: view\n    resource: testing\n";

/// Where the store is: every scenario runs on both.
#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

async fn start(policy: &str, db: Db) -> ControlHarness {
    ControlHarness::start_with(
        policy,
        Options {
            postgres: matches!(db, Db::Postgres),
            ..Options::default()
        },
    )
    .await
}

/// A test per scenario and database: `scenario::sqlite` and `scenario::postgres`.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::Db::Postgres).await;
            }
        }
    )*};
}

on_both!(
    first_start_makes_an_admin_who_can_manage_infra,
    a_grant_made_through_the_api_lets_kubectl_in_and_its_removal_shuts_it_out,
    the_api_is_authorized_by_grants_on_infra,
    login_by_access_key_logout_and_lockout,
    the_policy_file_owns_what_it_declares,
    errors_pages_and_conflicts_are_json,
    tokens_are_short_lived_jwts_for_one_destination_verified_by_the_published_keys,
);

async fn first_start_makes_an_admin_who_can_manage_infra(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;

    let (status, me) = h.call("GET", "/api/me", Some(&admin), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "admin");
    assert_eq!(me["admin"], true);

    // The bootstrap grant is there, made by Infra itself; the file's grant says where it is from.
    let (status, grants) = h.call("GET", "/api/grants", Some(&admin), None).await;
    assert_eq!(status, 200, "{grants}");
    let items = grants["items"].as_array().expect("items");
    assert!(items.iter().any(|g| g["user"] == "admin"
        && g["role"] == "admin"
        && g["resource"] == "infra"
        && g["source"] == "api"));
    assert!(
        items
            .iter()
            .any(|g| g["group"] == "Engineering" && g["source"] == "file")
    );
    assert_eq!(grants["total"], 2);
}

async fn a_grant_made_through_the_api_lets_kubectl_in_and_its_removal_shuts_it_out(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;
    let (status, body) = h
        .call(
            "POST",
            "/api/users",
            Some(&admin),
            Some(json!({"name": "suzie@example.com", "password": "a-long-enough-passphrase"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["has_password"], true);

    let suzie = h
        .login("suzie@example.com", "a-long-enough-passphrase")
        .await;
    let kubectl = h.kubectl_with(&suzie).await;
    let denied = kubectl.run(&["get", "pods", "-n", "default"]).await;
    assert!(!denied.status.success(), "no grant yet: {denied:?}");
    assert!(
        denied.stderr.contains("forbidden"),
        "kubectl shows the apiserver's wording: {}",
        denied.stderr
    );

    let (status, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": "suzie@example.com", "role": "view", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let allowed = wait_for(|| async {
        let out = kubectl.run(&["get", "pods", "-n", "default"]).await;
        out.status.success().then_some(out)
    })
    .await;
    assert!(allowed.status.success());

    // The same grant again is a conflict, not a duplicate.
    let (status, body) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"user": "suzie@example.com", "role": "view", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict");

    // "My access" lists the destination with its URL and CA for the kubeconfig.
    let (status, access) = h.call("GET", "/api/me/access", Some(&suzie), None).await;
    assert_eq!(status, 200, "{access}");
    let item = &access["items"][0];
    assert_eq!(item["destination"], DESTINATION);
    assert_eq!(item["role"], "view");
    assert_eq!(item["url"], h.proxy_url());
    assert!(
        item["ca_pem"]
            .as_str()
            .expect("ca")
            .contains("BEGIN CERTIFICATE")
    );

    let id = grant["id"].as_i64().expect("id");
    let (status, _) = h
        .call("DELETE", &format!("/api/grants/{id}"), Some(&admin), None)
        .await;
    assert_eq!(status, 204);
    wait_for(|| async {
        (!kubectl
            .run(&["get", "pods", "-n", "default"])
            .await
            .status
            .success())
        .then_some(())
    })
    .await;
}

async fn the_api_is_authorized_by_grants_on_infra(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;
    for (name, role) in [
        ("viewer@example.com", Some("view")),
        ("nobody@example.com", None),
    ] {
        let (status, body) = h
            .call(
                "POST",
                "/api/users",
                Some(&admin),
                Some(json!({"name": name, "password": "a-long-enough-passphrase"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        if let Some(role) = role {
            let (status, body) = h
                .call(
                    "POST",
                    "/api/grants",
                    Some(&admin),
                    Some(json!({"user": name, "role": role, "resource": "infra"})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    }
    let viewer = h
        .login("viewer@example.com", "a-long-enough-passphrase")
        .await;
    let nobody = h
        .login("nobody@example.com", "a-long-enough-passphrase")
        .await;

    // view reads, but does not change.
    assert_eq!(
        h.call("GET", "/api/users", Some(&viewer), None).await.0,
        200
    );
    let (status, body) = h
        .call(
            "POST",
            "/api/groups",
            Some(&viewer),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(body["message"].as_str().expect("message").contains("admin"));

    // Without a grant: only one's own things.
    assert_eq!(
        h.call("GET", "/api/users", Some(&nobody), None).await.0,
        403
    );
    assert_eq!(
        h.call("GET", "/api/users/nobody@example.com", Some(&nobody), None)
            .await
            .0,
        200
    );
    assert_eq!(
        h.call("GET", "/api/users/viewer@example.com", Some(&nobody), None)
            .await
            .0,
        403
    );
    let (status, key) = h
        .call(
            "POST",
            "/api/keys",
            Some(&nobody),
            Some(json!({"name": "laptop"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().expect("key shown once");
    assert!(secret.starts_with(key["id"].as_str().expect("id")));
    let (status, keys) = h.call("GET", "/api/keys", Some(&nobody), None).await;
    assert_eq!(status, 200);
    assert!(
        keys["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|k| k.get("key").is_none()),
        "a listed key never shows its secret: {keys}"
    );
    // Another user's keys are not theirs to list.
    assert_eq!(
        h.call("GET", "/api/keys?user=admin", Some(&nobody), None)
            .await
            .0,
        403
    );

    // No key, a bad key: 401 with a JSON error.
    let (status, body) = h.call("GET", "/api/me", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    let (status, _) = h.call("GET", "/api/me", Some("abc.def"), None).await;
    assert_eq!(status, 401);
}

async fn login_by_access_key_logout_and_lockout(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;
    let (status, key) = h
        .call(
            "POST",
            "/api/keys",
            Some(&admin),
            Some(json!({"name": "ci", "user": "admin"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, session) = h
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"access_key": key["key"]})),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let session = session["access_key"]
        .as_str()
        .expect("session key")
        .to_owned();
    assert_eq!(h.call("GET", "/api/me", Some(&session), None).await.0, 200);
    assert_eq!(
        h.call("POST", "/api/logout", Some(&session), None).await.0,
        204
    );
    assert_eq!(h.call("GET", "/api/me", Some(&session), None).await.0, 401);

    // A wrong password and an unknown user get the same answer; five failures lock the name.
    let attempt = |name: &'static str, password: &'static str| {
        let h = &h;
        async move {
            h.call(
                "POST",
                "/api/login",
                None,
                Some(json!({"password": {"name": name, "password": password}})),
            )
            .await
        }
    };
    let wrong = attempt("admin", "not-the-password-at-all").await;
    let unknown = attempt("ghost@example.com", "not-the-password-at-all").await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown);
    for _ in 0..4 {
        attempt("admin", "not-the-password-at-all").await;
    }
    let (status, body) = attempt("admin", ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "locked even with the right password: {body}");
    assert_eq!(body["code"], "locked");
}

async fn the_policy_file_owns_what_it_declares(db: Db) {
    let h = start(
        "groups:\n  - name: Engineering\n    members: [carl@example.com]\ngrants:\n  - group: Engineering\n    role: view\n    resource: testing\n",
        db,
    )
    .await;
    let admin = h.admin().await;
    let (status, grants) = h
        .call("GET", "/api/grants?group=Engineering", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let id = grants["items"][0]["id"].as_i64().expect("file grant");
    let (status, body) = h
        .call("DELETE", &format!("/api/grants/{id}"), Some(&admin), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "file_owned");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("policy file"),
        "{body}"
    );
    let (status, body) = h
        .call(
            "DELETE",
            "/api/groups/Engineering/members/carl@example.com",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // Editing the file: the old grant goes, the new one comes (owned by the file), the group
    // goes. A reload is applied step by step (new grants first), so wait for its end.
    h.write_policy("grants:\n  - user: carl@example.com\n    role: edit\n    resource: testing\n");
    wait_for(|| async {
        let (_, grants) = h.call("GET", "/api/grants", Some(&admin), None).await;
        let items = grants["items"].as_array().cloned().unwrap_or_default();
        let added = items.iter().any(|g| {
            g["user"] == "carl@example.com" && g["role"] == "edit" && g["source"] == "file"
        });
        let removed = !items.iter().any(|g| g["group"] == "Engineering");
        (added && removed).then_some(())
    })
    .await;
    wait_for(|| async {
        (h.call("GET", "/api/groups/Engineering", Some(&admin), None)
            .await
            .0
            == 404)
            .then_some(())
    })
    .await;

    // A broken file changes nothing; nor does a well-formed one the store would refuse (a
    // password below the policy's length): neither its removals nor its additions happen.
    let in_force = || async {
        let (_, grants) = h.call("GET", "/api/grants", Some(&admin), None).await;
        grants["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|g| g["source"] == "file")
            .map(|g| format!("{} {} {}", g["user"], g["role"], g["resource"]))
            .collect::<Vec<_>>()
    };
    let before = in_force().await;
    assert_eq!(before.len(), 1, "{before:?}");
    h.write_policy("grants:\n  - user: carl@example.com\n    role: [\n");
    // Once the proxy has read the broken file, it warns that the previous policy stays in force.
    wait_for(|| async {
        let ready = http_get(&format!("http://{}/readyz?verbose", h.proxy.admin_address)).await;
        ready.contains("[!] policy").then_some(())
    })
    .await;
    assert_eq!(in_force().await, before);
    h.write_policy(
        "users:\n  - name: dave@example.com\n    password: short\ngrants:\n  - user: dave@example.com\n    role: view\n    resource: testing\n",
    );
    let ready = wait_for(|| async {
        let ready = http_get(&format!("http://{}/readyz?verbose", h.proxy.admin_address)).await;
        ready.contains("dave@example.com").then_some(ready)
    })
    .await;
    assert!(ready.contains("password"), "{ready}");
    assert_eq!(
        in_force().await,
        before,
        "the refused file changed the store"
    );
    let (status, _) = h
        .call("GET", "/api/users/dave@example.com", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
}

async fn errors_pages_and_conflicts_are_json(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;
    for n in 0..5 {
        let (status, body) = h
            .call(
                "POST",
                "/api/groups",
                Some(&admin),
                Some(json!({"name": format!("team-{n}")})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, page) = h
        .call("GET", "/api/groups?limit=2&page=2", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 5);
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["page"], 2);

    let (status, body) = h
        .call("GET", "/api/groups?colour=blue", Some(&admin), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_request");
    let (status, body) = h
        .call(
            "POST",
            "/api/groups",
            Some(&admin),
            Some(json!({"name": "x", "extra": 1})),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");
    let (status, body) = h.call("GET", "/api/nothing-here", Some(&admin), None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");

    // A stale revision is a conflict.
    let (_, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"group": "team-1", "role": "edit", "resource": "testing.web"})),
        )
        .await;
    let id = grant["id"].as_i64().expect("id");
    let revision = grant["revision"].as_i64().expect("revision");
    let update =
        |revision: i64| json!({"expires_at": "2099-01-01T00:00:00Z", "revision": revision});
    let (status, body) = h
        .call(
            "PUT",
            &format!("/api/grants/{id}"),
            Some(&admin),
            Some(update(revision)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_at"], "2099-01-01T00:00:00Z");
    let (status, body) = h
        .call(
            "PUT",
            &format!("/api/grants/{id}"),
            Some(&admin),
            Some(update(revision)),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

async fn tokens_are_short_lived_jwts_for_one_destination_verified_by_the_published_keys(db: Db) {
    let h = start(POLICY, db).await;
    let admin = h.admin().await;
    let (status, issued) = h
        .call(
            "POST",
            "/api/tokens",
            Some(&admin),
            Some(json!({"destination": DESTINATION})),
        )
        .await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().expect("token");
    let (status, jwks) = h.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(status, 200);
    let jwks = infra_authz::token::Jwks::from_json(&jwks.to_string()).expect("JWKS");
    let verifier = infra_authz::token::Verifier::builder(h.control_url())
        .trust_jwks(&jwks)
        .build()
        .expect("verifier");
    let claims = verifier
        .verify(token, DESTINATION, std::time::SystemTime::now())
        .expect("the token verifies with the published keys")
        .claims;
    assert_eq!(claims.name, "admin");
    assert_eq!(claims.aud, DESTINATION);
    assert!(claims.exp - claims.iat <= 300, "five minutes by default");
    // For another destination's proxy it is no good.
    assert!(
        verifier
            .verify(token, "production", std::time::SystemTime::now())
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_of_a_role_the_cluster_lacks_says_so() {
    let h = start(POLICY, Db::Sqlite).await;
    let admin = h.admin().await;
    let (status, grant) = h
        .call(
            "POST",
            "/api/grants",
            Some(&admin),
            Some(json!({"group": "Engineering", "role": "deployer", "resource": DESTINATION})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let id = grant["id"].as_i64().expect("id");
    // The proxy reports what its cluster lacks with its heartbeat (every 30 s; at once after a
    // restart of the control plane): the grant says so.
    h.stop().await;
    let mut h = h;
    h.restart().await;
    let problem = wait_for(|| async {
        let (_, grant) = h
            .call("GET", &format!("/api/grants/{id}"), Some(&admin), None)
            .await;
        grant["problem"].as_str().map(str::to_owned)
    })
    .await;
    assert!(problem.contains("deployer"), "{problem}");
    let (_, destinations) = h.call("GET", "/api/destinations", Some(&admin), None).await;
    assert_eq!(
        destinations["items"][0]["unknown_roles"],
        json!(["deployer"])
    );
    // A built-in role has no problem.
    let (_, grants) = h
        .call("GET", "/api/grants?role=view", Some(&admin), None)
        .await;
    assert!(grants["items"][0]["problem"].is_null(), "{grants}");
}
