//! infra-proxy in kube-oidc-proxy mode, with a real OpenID Connect provider (`oidc-provider` on
//! Node.js, see `tests/oidc`): ID tokens got through the real authorization code flow, used by
//! the real kubectl, through the proxy to the stand-in apiserver.
//!
//! Each test starts its own provider, stand-in and proxy on 127.0.0.1:0.

use std::time::{Duration, Instant};

use base64::Engine as _;
use infra_proxy::authn::REFETCH_INTERVAL;
use infra_proxy::config::IssuerArgs;
use infra_tests::kubectl::{Credentials, Kubectl};
use infra_tests::oidc::{CARL, INFRA_TEST, OTHER_APP, OidcProvider, SUZIE, UNVERIFIED};
use infra_tests::proxy::{Harness, https_get};
use serde_json::Value;

/// How the proxy maps the provider's claims (`--oidc-*` flags).
struct Mapping {
    username_claim: &'static str,
    username_prefix: &'static str,
    groups_prefix: &'static str,
}

/// The usual setup: the user is the (verified) email, groups are prefixed `oidc:`.
const EMAIL_AND_PREFIXED_GROUPS: Mapping = Mapping {
    username_claim: "email",
    username_prefix: "",
    groups_prefix: "oidc:",
};

const ENGINEERING_VIEWS: &str = "
grants:
  - group: oidc:Engineering
    role: view
    resource: testing
";

/// The proxy's flags for `provider`, with `mapping`.
fn oidc_args(provider: &OidcProvider, mapping: &Mapping) -> IssuerArgs {
    IssuerArgs {
        oidc_issuer_url: Some(provider.issuer().to_owned()),
        oidc_audience: Some(INFRA_TEST.id.to_owned()),
        oidc_username_claim: mapping.username_claim.to_owned(),
        oidc_username_prefix: mapping.username_prefix.to_owned(),
        oidc_groups_claim: "groups".to_owned(),
        oidc_groups_prefix: mapping.groups_prefix.to_owned(),
        issuer_ca_file: Some(provider.ca_file().to_owned()),
        ..IssuerArgs::default()
    }
}

/// A stand-in and a proxy that trusts only `provider`.
async fn proxy_for(provider: &OidcProvider, policy: &str, mapping: &Mapping) -> Harness {
    let args = oidc_args(provider, mapping);
    Harness::start_with_issuers(policy, |_infra| args).await
}

fn kubectl_with(h: &Harness, id_token: &str) -> Kubectl {
    Kubectl::new(
        &h.url(),
        h.ca.cert_pem(),
        &Credentials::Token(id_token.to_owned()),
    )
}

/// `GET /api/v1/namespaces/default/pods` with `token`; answers the status and body.
async fn list_pods(h: &Harness, token: &str) -> (u16, String) {
    https_get(
        h,
        "/api/v1/namespaces/default/pods",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("JWT parts are base64url");
    serde_json::from_slice(&bytes).expect("JWT header and payload are JSON")
}

fn kid_of(token: &str) -> String {
    decode_part(token, 0)["kid"]
        .as_str()
        .expect("the provider names its key")
        .to_owned()
}

/// `token` with its header's `kid` replaced: the payload and signature are the provider's, so
/// the proxy looks the key up (and misses) before the signature could fail.
fn with_kid(token: &str, kid: &str) -> String {
    let mut header = decode_part(token, 0);
    header["kid"] = Value::from(kid);
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&header).expect("JSON serializes"));
    let (_, rest) = token.split_once('.').expect("a JWT has three parts");
    format!("{header}.{rest}")
}

/// Sends `count` requests at once, each with a token naming a `kid` nobody has; asserts that
/// every one is refused with 401.
async fn flood_with_made_up_kids(h: &Harness, token: &str, count: usize) {
    let requests = (0..count).map(|i| {
        let forged = with_kid(token, &format!("made-up-{i}-{}", uuid::Uuid::new_v4()));
        async move { list_pods(h, &forged).await }
    });
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 401, "a token naming an unknown key: {body}");
    }
}

/// Sends `token` every 250 ms until the proxy lets it in (200) rather than refusing it (401), at
/// most [`REFETCH_INTERVAL`] and 15 s more; answers when the accepted try began.
async fn wait_until_accepted(h: &Harness, token: &str) -> Instant {
    let deadline = Instant::now() + REFETCH_INTERVAL + Duration::from_secs(15);
    loop {
        let began = Instant::now();
        let (status, body) = list_pods(h, token).await;
        if status == 200 {
            return began;
        }
        assert_eq!(status, 401, "{body}");
        assert!(
            Instant::now() < deadline,
            "the token's key was not fetched within {REFETCH_INTERVAL:?} and 15 s more"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Impersonate-* headers of the first pod list the stand-in saw.
fn impersonation(h: &Harness) -> (Vec<String>, Vec<String>) {
    let list = h
        .standin
        .recorded()
        .into_iter()
        .find(|r| r.path() == "/api/v1/namespaces/default/pods")
        .expect("the list reached the apiserver");
    (
        list.header_values("impersonate-user"),
        list.header_values("impersonate-group"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_the_provider_works_with_kubectl_and_its_groups_are_prefixed() {
    let provider = OidcProvider::start().await;
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    let id_token = provider.id_token(SUZIE.0, SUZIE.1).await;
    let claims = decode_part(&id_token, 1);
    assert_eq!(claims["aud"], INFRA_TEST.id);
    assert_eq!(
        claims["email"], SUZIE.0,
        "the ID token itself carries the email"
    );

    let out = kubectl_with(&h, &id_token)
        .run(&["get", "pods", "-n", "default"])
        .await
        .success();
    assert!(
        out.stdout.contains("NAME") || out.stderr.contains("No resources found"),
        "{out:?}"
    );
    let (user, groups) = impersonation(&h);
    assert_eq!(user, ["suzie@example.com"]);
    assert_eq!(
        groups,
        ["oidc:Engineering", "oidc:Design", "system:authenticated"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_prefix_is_put_in_front_of_the_email_and_groups_can_go_unprefixed() {
    let provider = OidcProvider::start().await;
    let policy = "
grants:
  - user: corp:suzie@example.com
    role: view
    resource: testing
";
    let mapping = Mapping {
        username_claim: "email",
        username_prefix: "corp:",
        groups_prefix: "",
    };
    let h = proxy_for(&provider, policy, &mapping).await;
    let id_token = provider.id_token(SUZIE.0, SUZIE.1).await;
    kubectl_with(&h, &id_token)
        .run(&["get", "pods", "-n", "default"])
        .await
        .success();
    let (user, groups) = impersonation(&h);
    assert_eq!(user, ["corp:suzie@example.com"]);
    assert_eq!(groups, ["Engineering", "Design", "system:authenticated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_matching_grant_gets_kubectls_forbidden_message() {
    let provider = OidcProvider::start().await;
    let policy = "
grants:
  - group: oidc:Design
    role: view
    resource: testing
";
    let h = proxy_for(&provider, policy, &EMAIL_AND_PREFIXED_GROUPS).await;
    let id_token = provider.id_token(CARL.0, CARL.1).await;
    let out = kubectl_with(&h, &id_token)
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(
        out.stderr.contains(
            "Error from server (Forbidden): pods is forbidden: User \"carl@example.com\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        out.stderr
    );
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| !r.path().contains("/pods")),
        "a denied request never reaches the apiserver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_the_provider_has_not_verified_is_refused_with_401() {
    let provider = OidcProvider::start().await;
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    let id_token = provider.id_token(UNVERIFIED.0, UNVERIFIED.1).await;
    assert_eq!(decode_part(&id_token, 1)["email_verified"], false);

    let (status, body) = list_pods(&h, &id_token).await;
    assert_eq!(status, 401, "{body}");
    let status: Value = serde_json::from_str(&body).expect("a Status object");
    assert_eq!(status["reason"], "Unauthorized");
    let out = kubectl_with(&h, &id_token)
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(
        out.stderr.contains("You must be logged in to the server"),
        "{}",
        out.stderr
    );
    assert!(
        h.standin
            .recorded()
            .iter()
            .all(|r| !r.path().contains("/pods")),
        "an unauthenticated request never reaches the apiserver"
    );

    // The same token is good when the user is not named by the email: the 401 above is the
    // unverified email's, not anything else's.
    let by_subject = Mapping {
        username_claim: "sub",
        ..EMAIL_AND_PREFIXED_GROUPS
    };
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &by_subject).await;
    let (status, body) = list_pods(&h, &id_token).await;
    assert_eq!(status, 200, "{body}");
    let (user, _) = impersonation(&h);
    assert_eq!(user, ["u-unverified"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_client_is_refused_with_401() {
    let provider = OidcProvider::start().await;
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    let other = provider.id_token_for(OTHER_APP, SUZIE.0, SUZIE.1).await;
    assert_eq!(decode_part(&other, 1)["aud"], OTHER_APP.id);
    let (status, body) = list_pods(&h, &other).await;
    assert_eq!(status, 401, "{body}");
    let out = kubectl_with(&h, &other)
        .run(&["get", "pods", "-n", "default"])
        .await
        .failure();
    assert!(
        out.stderr.contains("You must be logged in to the server"),
        "{}",
        out.stderr
    );

    // The same user with a token for this proxy's client is let in.
    let ours = provider.id_token(SUZIE.0, SUZIE.1).await;
    let (status, body) = list_pods(&h, &ours).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infra_tokens_and_oidc_id_tokens_are_both_accepted_when_both_issuers_are_trusted() {
    let provider = OidcProvider::start().await;
    let args = oidc_args(&provider, &EMAIL_AND_PREFIXED_GROUPS);
    let policy = "
grants:
  - group: oidc:Engineering
    role: view
    resource: testing
  - user: mallory@example.com
    role: view
    resource: testing
";
    let h = Harness::start_with_issuers(policy, |infra| IssuerArgs {
        issuer: infra.issuer,
        jwks_file: infra.jwks_file,
        ..args
    })
    .await;

    let id_token = provider.id_token(CARL.0, CARL.1).await;
    let (status, body) = list_pods(&h, &id_token).await;
    assert_eq!(status, 200, "{body}");
    let infra_token = h.token("mallory@example.com", &[], Duration::from_mins(5));
    let (status, body) = list_pods(&h, &infra_token).await;
    assert_eq!(status, 200, "{body}");

    let users: Vec<Vec<String>> = h
        .standin
        .recorded()
        .iter()
        .filter(|r| r.path() == "/api/v1/namespaces/default/pods")
        .map(|r| r.header_values("impersonate-user"))
        .collect();
    assert_eq!(
        users,
        [["carl@example.com"], ["mallory@example.com"]],
        "each token is verified by its own issuer and mapped its own way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_naming_unknown_keys_right_after_a_fetch_do_not_make_the_proxy_refetch() {
    let provider = OidcProvider::start().await;
    let started = Instant::now();
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    assert_eq!(
        provider.jwks_requests().await,
        1,
        "the proxy fetches the keys once at start"
    );
    let id_token = provider.id_token(SUZIE.0, SUZIE.1).await;

    flood_with_made_up_kids(&h, &id_token, 50).await;
    // The start fetch was after `started`: while the interval since then has not run out, no
    // made-up kid may cause a fetch. (On a machine so slow that it has, one is allowed.)
    let allowed = if started.elapsed() < REFETCH_INTERVAL {
        1
    } else {
        2
    };
    let fetched = provider.jwks_requests().await;
    assert!(
        fetched <= allowed,
        "50 tokens with made-up kids made {} JWKS fetches within {REFETCH_INTERVAL:?} of the last",
        fetched - 1
    );

    // The real token still works, from the keys already loaded.
    let (status, body) = list_pods(&h, &id_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(provider.jwks_requests().await, fetched);
}

/// The one slow test: it waits out the refetch interval (10 s) once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_the_refetch_interval_allows_and_only_once() {
    let provider = OidcProvider::start().await;
    let started = Instant::now();
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    assert_eq!(provider.jwks_requests().await, 1);
    let old_token = provider.id_token(SUZIE.0, SUZIE.1).await;
    let (status, body) = list_pods(&h, &old_token).await;
    assert_eq!(status, 200, "{body}");

    let new_kid = provider.rotate_keys().await;
    let new_token = provider.id_token(CARL.0, CARL.1).await;
    assert_eq!(
        kid_of(&new_token),
        new_kid,
        "the provider signs with its new key"
    );
    assert_ne!(kid_of(&old_token), new_kid);

    // Within the interval of the start fetch the proxy does not fetch again: the new key is
    // unknown to it, so the token is refused (kubectl would ask for credentials again).
    let (status, _) = list_pods(&h, &new_token).await;
    if started.elapsed() < REFETCH_INTERVAL {
        assert_eq!(status, 401, "a token signed by a key not fetched yet");
        assert_eq!(provider.jwks_requests().await, 1);
    }

    // Once the interval has run out, the first token naming the new key makes the proxy fetch
    // the keys, and it is let in. Every try before that was refused without a fetch.
    let accepted_try_began = wait_until_accepted(&h, &new_token).await;
    assert_eq!(
        provider.jwks_requests().await,
        2,
        "exactly one fetch for the new key, however many tries were refused before it"
    );

    // A flood of made-up kids right after that fetch makes no other.
    flood_with_made_up_kids(&h, &new_token, 50).await;
    if accepted_try_began.elapsed() < REFETCH_INTERVAL {
        assert_eq!(provider.jwks_requests().await, 2);
    }

    // Old and new keys are both trusted: the provider still publishes the old one.
    for token in [&old_token, &new_token] {
        let (status, body) = list_pods(&h, token).await;
        assert_eq!(status, 200, "{body}");
    }
    let out = kubectl_with(&h, &new_token)
        .run(&["get", "pods", "-n", "default"])
        .await
        .success();
    assert!(
        out.stdout.contains("NAME") || out.stderr.contains("No resources found"),
        "{out:?}"
    );
}

/// A key the provider stopped publishing must stop verifying once the proxy has fetched the
/// keys again (the apiserver's OIDC authenticator replaces its key set on every fetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_provider_retired_is_not_trusted_after_the_next_fetch() {
    let provider = OidcProvider::start().await;
    let h = proxy_for(&provider, ENGINEERING_VIEWS, &EMAIL_AND_PREFIXED_GROUPS).await;
    let old_token = provider.id_token(SUZIE.0, SUZIE.1).await;
    let (status, body) = list_pods(&h, &old_token).await;
    assert_eq!(status, 200, "{body}");

    // The proxy learns the next key (and still has the old one).
    provider.rotate_keys().await;
    let new_token = provider.id_token(CARL.0, CARL.1).await;
    wait_until_accepted(&h, &new_token).await;
    assert_eq!(provider.jwks_requests().await, 2);

    // The provider retires the old key; the next fetch the proxy makes (here, for a made-up
    // kid once the interval allows) sees a JWKS without it.
    provider.retire_old_keys().await;
    let deadline = Instant::now() + REFETCH_INTERVAL + Duration::from_secs(15);
    while provider.jwks_requests().await < 3 {
        flood_with_made_up_kids(&h, &new_token, 1).await;
        assert!(
            Instant::now() < deadline,
            "the proxy did not fetch the keys again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let (status, body) = list_pods(&h, &old_token).await;
    assert_eq!(
        status, 401,
        "a token signed with a key the issuer no longer publishes, after a fetch: {body}"
    );
    let (status, body) = list_pods(&h, &new_token).await;
    assert_eq!(status, 200, "{body}");
}
