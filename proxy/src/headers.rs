//! Header hygiene: what a client may not send, and what the apiserver receives instead.
//!
//! Pipeline steps 2 (one bearer token) and 6 (rewrite). The apiserver trusts `Impersonate-*`
//! from us, so nothing identity-shaped from the client may reach it as the client sent it: the
//! client's `Authorization`, `Impersonate-*` (read and decided by [`crate::impersonation`], then
//! set here from the decided identity only), `X-Remote-*` (the request-header authenticator's
//! names), `X-Forwarded-*`, `Forwarded`, `X-Real-Ip`. Hop-by-hop headers and every name listed
//! in `Connection` are dropped as RFC 9110 requires.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::impersonation::Extra;
use crate::status::Refusal;

/// The group every authenticated identity is in, as the apiserver adds it for its own users.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
/// The group of unauthenticated requests: an identity in it does not get
/// [`SYSTEM_AUTHENTICATED`].
pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";

/// Header names that only describe one hop, never forwarded as they are.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Returns the bearer token of a request that carries exactly one `Authorization: Bearer`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::Unauthorized);
    };
    if values.next().is_some() {
        return Err(Refusal::BadRequest(
            "more than one Authorization header".to_owned(),
        ));
    }
    let value = value.to_str().map_err(|_| Refusal::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Unauthorized);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(Refusal::Unauthorized);
    }
    Ok(token)
}

/// Whether a header name carries client identity or forwarding claims we never pass on.
fn is_identity_header(name: &str) -> bool {
    name == "authorization"
        || name == "forwarded"
        || name == "x-real-ip"
        || name == "audit-id"
        || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
        || name.starts_with("x-forwarded-")
}

/// What the apiserver is told about the request, besides what the client sent.
#[derive(Debug)]
pub struct Upstream<'a> {
    /// The identity to impersonate.
    pub user: &'a str,
    /// Its groups. `system:authenticated` is added here unless they hold it or
    /// `system:unauthenticated`, as the apiserver's impersonation adds it.
    pub groups: &'a [&'a str],
    /// Its uid (`Impersonate-Uid`), when the client impersonates one.
    pub uid: Option<&'a str>,
    /// Its extras (`Impersonate-Extra-*`), when the client impersonates some.
    pub extras: &'a [Extra],
    /// Our own credential for the apiserver, when it is a bearer token.
    pub authorization: Option<&'a HeaderValue>,
    /// The real client address.
    pub peer: IpAddr,
    /// The audit id shared with the apiserver.
    pub audit_id: &'a str,
    /// Whether this is an upgrade (exec, attach, port-forward), whose `Connection: Upgrade` and
    /// `Upgrade` must survive.
    pub upgrade: bool,
}

/// Rewrites a client's headers in place into what goes upstream.
///
/// Fails only when an identity value cannot be a header value (a control character), which the
/// token verifier already refuses; the check here keeps that invariant local.
pub fn rewrite(headers: &mut HeaderMap, upstream: &Upstream<'_>) -> Result<(), Refusal> {
    // Host is the upstream's, set by the client that dials it.
    strip_hop_by_hop(headers, upstream.upgrade, |name| {
        name == "host" || is_identity_header(name)
    });

    if upstream.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    if let Some(authorization) = upstream.authorization {
        let mut value = authorization.clone();
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    headers.insert(
        HeaderName::from_static("impersonate-user"),
        identity_value(upstream.user)?,
    );
    let group_header = HeaderName::from_static("impersonate-group");
    for group in upstream.groups {
        headers.append(group_header.clone(), identity_value(group)?);
    }
    if !upstream
        .groups
        .iter()
        .any(|g| *g == SYSTEM_AUTHENTICATED || *g == SYSTEM_UNAUTHENTICATED)
    {
        headers.append(group_header, HeaderValue::from_static(SYSTEM_AUTHENTICATED));
    }
    if let Some(uid) = upstream.uid {
        headers.insert(
            HeaderName::from_static("impersonate-uid"),
            identity_value(uid)?,
        );
    }
    for extra in upstream.extras {
        for value in &extra.values {
            headers.append(extra.header.clone(), identity_value(value)?);
        }
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_str(&upstream.peer.to_string())
            .map_err(|_| Refusal::BadRequest("bad peer address".to_owned()))?,
    );
    headers.insert(
        HeaderName::from_static("audit-id"),
        HeaderValue::from_str(upstream.audit_id)
            .map_err(|_| Refusal::BadRequest("bad audit id".to_owned()))?,
    );
    Ok(())
}

fn identity_value(name: &str) -> Result<HeaderValue, Refusal> {
    HeaderValue::from_bytes(name.as_bytes()).map_err(|_| {
        Refusal::BadRequest("the identity in the token cannot be sent as a header".to_owned())
    })
}

/// Strips hop-by-hop headers from a response on its way back to the client.
pub fn clean_response(headers: &mut HeaderMap, upgrade: bool) {
    if !upgrade {
        strip_hop_by_hop(headers, false, |_| false);
    }
}

/// Removes the hop-by-hop headers, every name listed in `Connection`, and the names `also`
/// picks. With `upgrade`, the `Upgrade` header and `Connection`'s `upgrade` token survive
/// (`Connection` itself is set again by the caller).
///
/// One pass over the names present finds what to remove (most requests carry none of it),
/// instead of a hashed lookup per name that might be there.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, also: impl Fn(&str) -> bool) {
    let mut listed: Vec<HeaderName> = Vec::new();
    // Read as bytes: a value with obs-text (0x80-0xFF) still names the headers around it, and
    // skipping the whole value would forward them.
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || (upgrade && token.eq_ignore_ascii_case(b"upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(&token.to_ascii_lowercase()) {
                listed.push(name);
            }
        }
    }
    listed.extend(
        headers
            .keys()
            .filter(|name| {
                let name = name.as_str();
                HOP_BY_HOP.contains(&name) || (!upgrade && name == "upgrade") || also(name)
            })
            .cloned(),
    );
    for name in listed {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn upstream<'a>(groups: &'a [&'a str], authorization: Option<&'a HeaderValue>) -> Upstream<'a> {
        Upstream {
            user: "suzie@example.com",
            groups,
            authorization,
            peer: IpAddr::from([127, 0, 0, 9]),
            audit_id: "0b7c7f3e-audit",
            upgrade: false,
            uid: None,
            extras: &[],
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            bearer_token(&map(&[("authorization", "Bearer abc")])),
            Ok("abc")
        );
        assert_eq!(
            bearer_token(&map(&[("authorization", "bearer abc")])),
            Ok("abc")
        );
        assert_eq!(bearer_token(&map(&[])), Err(Refusal::Unauthorized));
        assert_eq!(
            bearer_token(&map(&[("authorization", "Basic YTpi")])),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            bearer_token(&map(&[("authorization", "Bearer ")])),
            Err(Refusal::Unauthorized)
        );
        assert!(matches!(
            bearer_token(&map(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn impersonated_identities_go_upstream_with_the_apiservers_groups() {
        let extras = [Extra {
            header: HeaderName::from_static("impersonate-extra-acme.com%2fproject"),
            key: "acme.com/project".to_owned(),
            values: vec!["a".to_owned(), "b".to_owned()],
        }];
        for (groups, sent) in [
            (vec!["g"], vec!["g", SYSTEM_AUTHENTICATED]),
            (
                vec!["g", SYSTEM_AUTHENTICATED],
                vec!["g", SYSTEM_AUTHENTICATED],
            ),
            (vec![SYSTEM_UNAUTHENTICATED], vec![SYSTEM_UNAUTHENTICATED]),
        ] {
            let mut headers = map(&[
                ("impersonate-user", "client-chosen"),
                ("impersonate-uid", "client-uid"),
                ("impersonate-extra-acme.com%2fproject", "client-extra"),
                ("impersonate-extra-other", "x"),
            ]);
            let mut target = upstream(&groups, None);
            target.uid = Some("1234");
            target.extras = &extras;
            rewrite(&mut headers, &target).expect("rewrite");
            let got = |name: &str| -> Vec<&str> {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().expect("ascii"))
                    .collect()
            };
            assert_eq!(got("impersonate-user"), ["suzie@example.com"]);
            assert_eq!(got("impersonate-group"), sent);
            assert_eq!(got("impersonate-uid"), ["1234"]);
            assert_eq!(got("impersonate-extra-acme.com%2fproject"), ["a", "b"]);
            assert!(headers.get("impersonate-extra-other").is_none());
        }
    }

    #[test]
    fn rewrite_table() {
        let groups = vec!["Engineering", "Ops"];
        let credential = HeaderValue::from_static("Bearer upstream-credential");
        let mut headers = map(&[
            ("authorization", "Bearer client-token"),
            ("host", "proxy.example.com"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-remote-user", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("x-remote-extra-scopes", "all"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("audit-id", "client-chosen"),
            (
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
            ("content-type", "application/apply-patch+yaml"),
            ("user-agent", "kubectl/v1.32.4"),
            ("kubectl-command", "kubectl get"),
        ]);
        rewrite(&mut headers, &upstream(&groups, Some(&credential))).expect("rewrite");

        let got = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect()
        };
        assert_eq!(got("authorization"), ["Bearer upstream-credential"]);
        assert_eq!(got("impersonate-user"), ["suzie@example.com"]);
        assert_eq!(
            got("impersonate-group"),
            ["Engineering", "Ops", SYSTEM_AUTHENTICATED]
        );
        assert_eq!(got("x-forwarded-for"), ["127.0.0.9"]);
        assert_eq!(got("audit-id"), ["0b7c7f3e-audit"]);
        for gone in [
            "host",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "x-remote-user",
            "x-remote-group",
            "x-remote-extra-scopes",
            "x-forwarded-host",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} survived");
        }
        assert_eq!(
            got("accept"),
            ["application/json;as=Table;v=v1;g=meta.k8s.io,application/json"]
        );
        assert_eq!(got("content-type"), ["application/apply-patch+yaml"]);
        assert_eq!(got("kubectl-command"), ["kubectl get"]);
    }

    #[test]
    fn headers_named_in_a_connection_value_with_obs_text_are_stripped() {
        // A byte of 0x80 or more in the value used to make it unreadable as text, so the
        // headers it named went upstream (found by fuzzing).
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \x80junk").expect("obs-text is a valid value"),
        );
        headers.insert("x-secret", HeaderValue::from_static("s3cr3t"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        clean_response(&mut headers, false);
        assert!(headers.get("x-secret").is_none(), "{headers:?}");
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-kept").is_some());
    }

    #[test]
    fn upgrades_keep_their_upgrade_headers() {
        let groups = Vec::new();
        let mut headers = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]);
        let mut target = upstream(&groups, None);
        target.upgrade = true;
        rewrite(&mut headers, &target).expect("rewrite");
        assert_eq!(
            headers.get("connection").map(HeaderValue::as_bytes),
            Some(&b"Upgrade"[..])
        );
        assert_eq!(
            headers.get("upgrade").map(HeaderValue::as_bytes),
            Some(&b"websocket"[..])
        );
        assert!(headers.get("sec-websocket-key").is_some());
        assert!(headers.get("authorization").is_none());
    }

    proptest! {
        /// Whatever the client sends, the only identity headers upstream are ours.
        #[test]
        fn no_client_identity_header_reaches_upstream(
            names in proptest::collection::vec(
                prop_oneof![
                    Just("authorization".to_owned()),
                    Just("impersonate-user".to_owned()),
                    Just("impersonate-group".to_owned()),
                    Just("x-remote-user".to_owned()),
                    Just("x-remote-group".to_owned()),
                    Just("x-forwarded-for".to_owned()),
                    Just("forwarded".to_owned()),
                    Just("x-real-ip".to_owned()),
                    Just("audit-id".to_owned()),
                    Just("connection".to_owned()),
                    "[a-z][a-z0-9-]{0,20}",
                    "(x-remote-|x-forwarded-|impersonate-)[a-z-]{0,10}",
                ],
                0..16,
            ),
            values in proptest::collection::vec("[ -~]{0,30}", 16),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(values.iter()) {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                    headers.append(n, v);
                }
            }
            let groups = vec!["g"];
            let credential = HeaderValue::from_static("Bearer ours");
            rewrite(&mut headers, &upstream(&groups, Some(&credential))).expect("rewrite");
            for (name, value) in &headers {
                let name = name.as_str();
                if is_identity_header(name) {
                    let ours = match name {
                        "authorization" => value == "Bearer ours",
                        "impersonate-user" => value == "suzie@example.com",
                        "impersonate-group" => value == "g" || value == SYSTEM_AUTHENTICATED,
                        "x-forwarded-for" => value == "127.0.0.9",
                        "audit-id" => value == "0b7c7f3e-audit",
                        _ => false,
                    };
                    prop_assert!(ours, "{} = {:?} reached upstream", name, value);
                }
            }
            prop_assert_eq!(headers.get_all("impersonate-user").iter().count(), 1);
            prop_assert_eq!(headers.get_all("authorization").iter().count(), 1);
        }
    }
}
