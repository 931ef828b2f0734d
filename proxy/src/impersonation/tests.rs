use http::StatusCode;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    headers
}

/// `(group, resource, subresource, namespace, name)` of a check.
type Check = (String, String, Option<String>, Option<String>, String);

fn resource(attrs: &Attributes) -> &ResourceAttributes {
    match attrs {
        Attributes::Resource(r) => r,
        Attributes::NonResource(_) => panic!("an impersonate check is a resource request"),
    }
}

/// The checks `requested` asks for.
fn checks(requested: &Requested) -> Vec<Check> {
    requested
        .checks()
        .iter()
        .map(|check| {
            let r = resource(check);
            assert_eq!(r.verb, "impersonate");
            assert_eq!(r.api_version, "v1");
            (
                r.api_group.clone(),
                r.resource.clone(),
                r.subresource.clone(),
                r.namespace.clone(),
                r.name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn check(
    group: &str,
    resource: &str,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: &str,
) -> Check {
    (
        group.to_owned(),
        resource.to_owned(),
        subresource.map(str::to_owned),
        namespace.map(str::to_owned),
        name.to_owned(),
    )
}

#[test]
fn no_impersonation_headers_ask_for_nothing() {
    assert_eq!(requested(&map(&[("authorization", "Bearer x")])), Ok(None));
    // An empty user is no user, as Go's `len(Header.Get(...)) > 0` reads it.
    assert_eq!(requested(&map(&[("impersonate-user", "")])), Ok(None));
    assert_eq!(
        requested(&map(&[("impersonate-user", ""), ("impersonate-uid", "")])),
        Ok(None)
    );
    // Names the apiserver does not read mean nothing (and are never forwarded).
    assert_eq!(
        requested(&map(&[("impersonate-something-new", "x")])),
        Ok(None)
    );
}

#[test]
fn a_user_its_groups_extras_and_uid_are_each_checked_in_the_apiservers_order() {
    let asked = requested(&map(&[
        ("Impersonate-Uid", "1234"),
        ("Impersonate-Extra-Scopes", "view"),
        ("Impersonate-Group", "eng"),
        ("Impersonate-User", "someone-else"),
        ("Impersonate-Group", "ops"),
        ("Impersonate-Extra-Scopes", "edit"),
        ("Impersonate-Extra-acme.com%2Fproject", "p1"),
    ]))
    .expect("valid")
    .expect("impersonation");
    assert_eq!(asked.user, "someone-else");
    assert_eq!(asked.groups, ["eng", "ops"]);
    assert_eq!(asked.uid.as_deref(), Some("1234"));
    let auth = AUTHENTICATION_GROUP;
    assert_eq!(
        checks(&asked),
        [
            check("", "users", None, None, "someone-else"),
            check("", "groups", None, None, "eng"),
            check("", "groups", None, None, "ops"),
            check(auth, "userextras", Some("acme.com/project"), None, "p1"),
            check(auth, "userextras", Some("scopes"), None, "view"),
            check(auth, "userextras", Some("scopes"), None, "edit"),
            check(auth, "uids", None, None, "1234"),
        ]
    );
    assert_eq!(
        asked.extras[0].header.as_str(),
        "impersonate-extra-acme.com%2fproject"
    );
}

#[test]
fn repeated_users_and_uids_take_the_first_value_as_go_does() {
    let asked = requested(&map(&[
        ("impersonate-user", "first"),
        ("impersonate-user", "second"),
        ("impersonate-uid", "u1"),
        ("impersonate-uid", "u2"),
    ]))
    .expect("valid")
    .expect("impersonation");
    assert_eq!(
        (asked.user.as_str(), asked.uid.as_deref()),
        ("first", Some("u1"))
    );
    assert_eq!(asked.checks().len(), 2);
    // An empty first value is no user, whatever follows.
    assert_eq!(
        requested(&map(&[
            ("impersonate-user", ""),
            ("impersonate-user", "admin")
        ])),
        Ok(None)
    );
}

#[test]
fn empty_groups_and_extra_values_are_still_asked_for() {
    let asked = requested(&map(&[
        ("impersonate-user", "u"),
        ("impersonate-group", ""),
        ("impersonate-extra-", "v"),
        ("impersonate-extra-k", ""),
    ]))
    .expect("valid")
    .expect("impersonation");
    assert_eq!(
        checks(&asked),
        [
            check("", "users", None, None, "u"),
            check("", "groups", None, None, ""),
            // An empty key is the resource itself.
            check(AUTHENTICATION_GROUP, "userextras", None, None, "v"),
            check(AUTHENTICATION_GROUP, "userextras", Some("k"), None, ""),
        ]
    );
    assert_eq!(
        asked.identity().groups().collect::<Vec<_>>(),
        ["", AUTHENTICATED]
    );
}

#[test]
fn service_accounts_are_checked_in_their_namespace_and_get_their_groups() {
    let asked = requested(&map(&[(
        "impersonate-user",
        "system:serviceaccount:web:deployer",
    )]))
    .expect("valid")
    .expect("impersonation");
    assert_eq!(
        checks(&asked),
        [check("", "serviceaccounts", None, Some("web"), "deployer")]
    );
    let identity = asked.identity();
    assert_eq!(identity.user(), "system:serviceaccount:web:deployer");
    assert_eq!(
        identity.groups().collect::<Vec<_>>(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:web",
            "system:authenticated"
        ]
    );
    // Groups asked for replace the service account's.
    let asked = requested(&map(&[
        ("impersonate-user", "system:serviceaccount:web:deployer"),
        ("impersonate-group", "g"),
    ]))
    .expect("valid")
    .expect("impersonation");
    assert_eq!(
        asked.identity().groups().collect::<Vec<_>>(),
        ["g", "system:authenticated"]
    );
    // What SplitUsername refuses is a user named so.
    for user in [
        "system:serviceaccount:web",
        "system:serviceaccount:web:a:b",
        "system:serviceaccount:Web:deployer",
        "system:serviceaccount::deployer",
        "system:serviceaccount:web:",
        "system:serviceaccount:web:-x",
        "system:serviceaccount:web:a..b",
    ] {
        let asked = requested(&map(&[("impersonate-user", user)]))
            .expect("valid")
            .expect("impersonation");
        assert_eq!(
            checks(&asked),
            [check("", "users", None, None, user)],
            "{user}"
        );
    }
    assert_eq!(
        service_account("system:serviceaccount:kube-system:a.b-c"),
        Some(("kube-system", "a.b-c"))
    );
}

#[test]
fn the_impersonated_identity_gets_the_apiservers_groups() {
    let identity = |pairs: &[(&str, &str)]| {
        let asked = requested(&map(pairs))
            .expect("valid")
            .expect("impersonation");
        let identity = asked.identity();
        (
            identity.user().to_owned(),
            identity.groups().map(str::to_owned).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        identity(&[("impersonate-user", "other")]),
        ("other".to_owned(), vec![AUTHENTICATED.to_owned()])
    );
    assert_eq!(
        identity(&[("impersonate-user", "other"), ("impersonate-group", "a")]).1,
        ["a", AUTHENTICATED]
    );
    assert_eq!(
        identity(&[
            ("impersonate-user", "other"),
            ("impersonate-group", AUTHENTICATED),
            ("impersonate-group", "a")
        ])
        .1,
        [AUTHENTICATED, "a"]
    );
    assert_eq!(
        identity(&[
            ("impersonate-user", "other"),
            ("impersonate-group", UNAUTHENTICATED)
        ])
        .1,
        [UNAUTHENTICATED]
    );
    assert_eq!(
        identity(&[("impersonate-user", ANONYMOUS)]).1,
        [UNAUTHENTICATED]
    );
    assert_eq!(
        identity(&[("impersonate-user", ANONYMOUS), ("impersonate-group", "a")]).1,
        ["a", UNAUTHENTICATED]
    );
}

#[test]
fn groups_extras_or_a_uid_without_a_user_are_the_apiservers_500() {
    let error = requested(&map(&[
        ("impersonate-group", "system:masters"),
        ("impersonate-extra-scopes", "all"),
        ("impersonate-uid", "1234"),
    ]))
    .expect_err("no user");
    assert_eq!(
        error.to_string(),
        "requested [{Group  system:masters    } {UserExtra  all  authentication.k8s.io/v1  scopes} {UID  1234  authentication.k8s.io/v1  }] without impersonating a user"
    );
    let refusal = error.refusal("/api/v1/namespaces/default/pods?limit=500");
    assert_eq!(refusal.code(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        refusal.message(),
        "Internal Server Error: \"/api/v1/namespaces/default/pods?limit=500\": requested [{Group  system:masters    } {UserExtra  all  authentication.k8s.io/v1  scopes} {UID  1234  authentication.k8s.io/v1  }] without impersonating a user"
    );
    // The apiserver's sanitizer: no HTML.
    let error = requested(&map(&[("impersonate-group", "<b>&")])).expect_err("no user");
    assert_eq!(
        error.refusal("/x").message(),
        "Internal Server Error: \"/x\": requested [{Group  &lt;b&gt;&amp;    }] without impersonating a user"
    );
    for pairs in [
        &[("impersonate-group", "")][..],
        &[("impersonate-user", ""), ("impersonate-extra-k", "v")],
        &[("impersonate-uid", "u")],
    ] {
        assert!(
            matches!(
                requested(&map(pairs)),
                Err(ImpersonationError::WithoutUser { .. })
            ),
            "{pairs:?}"
        );
    }
}

#[test]
fn too_many_values_are_refused_before_anything_is_decided() {
    let mut pairs = vec![("impersonate-user", "u")];
    pairs.extend(std::iter::repeat_n(
        ("impersonate-group", "g"),
        MAX_VALUES - 1,
    ));
    let asked = requested(&map(&pairs))
        .expect("valid")
        .expect("impersonation");
    assert_eq!(asked.checks().len(), MAX_VALUES);
    pairs.push(("impersonate-extra-k", "v"));
    let error = requested(&map(&pairs)).expect_err("too many");
    assert_eq!(error, ImpersonationError::TooMany(MAX_VALUES + 1));
    assert_eq!(error.refusal("/").code(), StatusCode::BAD_REQUEST);
}

#[test]
fn values_that_are_not_utf8_are_refused() {
    let mut headers = map(&[("impersonate-user", "u")]);
    headers.append(
        "impersonate-group",
        HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
    );
    assert_eq!(
        requested(&headers),
        Err(ImpersonationError::NotUtf8("impersonate-group".to_owned()))
    );
    let headers = map(&[("impersonate-user", "u"), ("impersonate-extra-%ff", "v")]);
    assert!(matches!(
        requested(&headers),
        Err(ImpersonationError::NotUtf8(_))
    ));
}

#[test]
fn extra_keys_decode_as_go_path_unescape() {
    assert_eq!(extra_key("scopes").as_deref(), Some("scopes"));
    assert_eq!(
        extra_key("acme.com%2fproject").as_deref(),
        Some("acme.com/project")
    );
    assert_eq!(extra_key("a+b").as_deref(), Some("a+b"));
    // A malformed escape keeps the key as it came.
    assert_eq!(extra_key("a%zzb").as_deref(), Some("a%zzb"));
    assert_eq!(extra_key("a%2").as_deref(), Some("a%2"));
    assert_eq!(extra_key("%c3%a9").as_deref(), Some("é"));
    assert_eq!(extra_key("%ff"), None);
}

#[test]
fn requested_by_names_the_request_uri() {
    let request = http::Request::get("https://proxy.example/api/v1/pods?watch=1")
        .header("impersonate-group", "g")
        .body(())
        .expect("a request");
    let refusal = requested_by(&request).expect_err("no user");
    assert!(
        refusal
            .message()
            .starts_with("Internal Server Error: \"/api/v1/pods?watch=1\": requested"),
        "{}",
        refusal.message()
    );
}
