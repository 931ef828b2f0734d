//! `headers`: the proxy's request header checks and rewrites ([`infra_proxy::headers`]):
//! `bearer_token`, `rewrite` and `clean_response`, and the client's impersonation
//! ([`infra_proxy::impersonation::requested`]).
//!
//! Input: a flags byte (bit 0: an upgrade; bit 1: the proxy has its own bearer credential;
//! bit 2: the first header's value is also one of the token's groups; bit 3: the client is on
//! IPv6), then header lines `name: value` separated by `\n`. Names and values that `http`
//! refuses are skipped, as hyper would never deliver them; everything else is appended in order
//! (repeated names included) to a request's `HeaderMap`.
//!
//! Invariants:
//!
//! - never panics;
//! - `bearer_token` gives a token only for exactly one `Authorization` whose scheme is `Bearer`
//!   (any case), and that token is non-empty and trimmed; two `Authorization` headers are a 400;
//! - `requested` asks for an impersonation exactly when the first `Impersonate-User` is not
//!   empty, answers "without a user" exactly when it is and a group, an extra or a uid is
//!   asked for, and refuses more than `MAX_VALUES` values; it asks for one check per value;
//! - after `rewrite` (with the impersonated identity, its uid and extras, when one is asked
//!   for), the identity headers are ours alone: one `Impersonate-User` (the user),
//!   `Impersonate-Group` (the groups, then `system:authenticated` unless they hold it or
//!   `system:unauthenticated`), the uid and extras given and no others, one `X-Forwarded-For`
//!   (the peer), one `Audit-Id`, our `Authorization` or none; no other `Impersonate-*`, `X-Remote-*`,
//!   `X-Forwarded-*`, `Forwarded`, `X-Real-Ip` or `Host`; no hop-by-hop header (an upgrade keeps
//!   `Upgrade` and gets `Connection: Upgrade`); no header named in a client `Connection`
//!   (RFC 9110 7.6.1); and every other client header is forwarded unchanged;
//! - `clean_response` drops the same hop-by-hop and `Connection`-named headers from a response
//!   and nothing else, and leaves an upgrade's response as it is.

use std::collections::HashSet;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use infra_proxy::headers::{
    SYSTEM_AUTHENTICATED, SYSTEM_UNAUTHENTICATED, Upstream, bearer_token, clean_response, rewrite,
};
use infra_proxy::impersonation::{Extra, ImpersonationError, MAX_VALUES, Requested, requested};
use infra_proxy::status::Refusal;

use crate::show;

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

/// The headers `rewrite` sets itself.
const SET_BY_REWRITE: [&str; 6] = [
    "authorization",
    "impersonate-user",
    "impersonate-group",
    "x-forwarded-for",
    "audit-id",
    "connection",
];

const USER: &str = "suzie@example.com";
const AUDIT_ID: &str = "0b7c7f3e-8c1d-4a53-9b0f-0c3a4bd1e2f0";
const OUR_TOKEN: &str = "Bearer proxy-service-account-token";

/// The `headers` target.
pub fn headers(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let upgrade = flags & 1 != 0;
    let ours = (flags & 2 != 0).then(|| HeaderValue::from_static(OUR_TOKEN));
    let peer: IpAddr = if flags & 8 != 0 {
        "2001:db8::7".parse().unwrap_or(IpAddr::from([0; 16]))
    } else {
        IpAddr::from([203, 0, 113, 7])
    };

    let mut request = http::Request::new(());
    let mut first_value = None;
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(&[][..], |start| &value[start..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            first_value.get_or_insert_with(|| value.as_bytes().to_vec());
            request.headers_mut().append(name, value);
        }
    }
    let client = request.headers().clone();
    let context = |what: &str| format!("{what}\nclient headers: {client:?}\ninput: {}", show(data));

    check_bearer(&client, &context);
    let asked = check_requested(&client, &context);

    let extra = (flags & 4 != 0)
        .then(|| String::from_utf8_lossy(first_value.as_deref().unwrap_or_default()).into_owned());
    let impersonated = asked.as_ref().map(Requested::identity);
    let (user, groups): (&str, Vec<&str>) = if let Some(identity) = &impersonated {
        (identity.user(), identity.groups().collect())
    } else {
        let mut groups = vec!["Engineering"];
        groups.extend(extra.as_deref());
        (USER, groups)
    };
    let uid = asked.as_ref().and_then(|r| r.uid.as_deref());
    let extras: &[Extra] = asked.as_ref().map_or(&[], |r| &r.extras);
    let mut rewritten = client.clone();
    let result = rewrite(
        &mut rewritten,
        &Upstream {
            user,
            groups: &groups,
            uid,
            extras,
            authorization: ours.as_ref(),
            peer,
            audit_id: AUDIT_ID,
            upgrade,
        },
    );
    let sent = Sent {
        user,
        groups: &groups,
        uid,
        extras,
    };
    match result {
        Ok(()) => check_rewritten(
            &client,
            &rewritten,
            &sent,
            ours.as_ref(),
            peer,
            upgrade,
            &context,
        ),
        Err(refusal) => assert!(
            matches!(refusal, Refusal::BadRequest(_))
                && std::iter::once(user)
                    .chain(groups.iter().copied())
                    .chain(uid)
                    .chain(
                        extras
                            .iter()
                            .flat_map(|e| e.values.iter().map(String::as_str))
                    )
                    .any(|v| HeaderValue::from_bytes(v.as_bytes()).is_err()),
            "{}",
            context(&format!("rewrite refused a valid identity: {refusal:?}"))
        ),
    }

    for upgrade in [false, true] {
        let mut response = client.clone();
        clean_response(&mut response, upgrade);
        if upgrade {
            assert_eq!(
                response,
                client,
                "{}",
                context("an upgrade's response was changed")
            );
        } else {
            check_stripped(&client, &response, false, &[], &context);
        }
    }
}

/// The identity `rewrite` is asked to send.
struct Sent<'a> {
    user: &'a str,
    groups: &'a [&'a str],
    uid: Option<&'a str>,
    extras: &'a [Extra],
}

/// Checks `requested` against the headers; answers the impersonation it asks for.
fn check_requested(client: &HeaderMap, context: &dyn Fn(&str) -> String) -> Option<Requested> {
    let values = client
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("impersonate-"))
        .count();
    let first_user = client
        .get("impersonate-user")
        .is_some_and(|v| !v.as_bytes().is_empty());
    let others = client.contains_key("impersonate-group")
        || client
            .keys()
            .any(|n| n.as_str().starts_with("impersonate-extra-"))
        || client
            .get("impersonate-uid")
            .is_some_and(|v| !v.as_bytes().is_empty());
    match requested(client) {
        Ok(Some(asked)) => {
            assert!(
                first_user && values <= MAX_VALUES,
                "{}",
                context(&format!("an impersonation without a user: {asked:?}"))
            );
            let checks = 1
                + asked.groups.len()
                + asked.extras.iter().map(|e| e.values.len()).sum::<usize>()
                + usize::from(asked.uid.is_some());
            assert_eq!(asked.checks().len(), checks, "{}", context("checks"));
            Some(asked)
        }
        Ok(None) => {
            assert!(
                !first_user && !others,
                "{}",
                context("an impersonation was ignored")
            );
            None
        }
        Err(ImpersonationError::WithoutUser { .. }) => {
            assert!(
                !first_user && others,
                "{}",
                context("without a user, wrongly")
            );
            None
        }
        Err(ImpersonationError::TooMany(n)) => {
            assert!(n > MAX_VALUES && n == values, "{}", context("too many"));
            None
        }
        Err(error) => {
            assert!(
                client
                    .iter()
                    .any(|(n, v)| n.as_str().starts_with("impersonate-")
                        && (std::str::from_utf8(v.as_bytes()).is_err()
                            || n.as_str().contains('%'))),
                "{}",
                context(&format!("refused: {error}"))
            );
            None
        }
    }
}

fn check_bearer(client: &HeaderMap, context: &dyn Fn(&str) -> String) {
    let values: Vec<&HeaderValue> = client.get_all(http::header::AUTHORIZATION).iter().collect();
    match bearer_token(client) {
        Ok(token) => {
            let value = values
                .first()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let scheme = value.split(' ').next().unwrap_or_default();
            assert!(
                values.len() == 1
                    && scheme.eq_ignore_ascii_case("bearer")
                    && !token.is_empty()
                    && token.trim_matches(' ') == token
                    && value.contains(token),
                "{}",
                context(&format!("bearer_token gave {token:?}"))
            );
        }
        Err(Refusal::BadRequest(_)) => {
            assert!(
                values.len() > 1,
                "{}",
                context("a 400 for one Authorization")
            );
        }
        Err(Refusal::Unauthorized) => {
            assert!(
                values.len() <= 1,
                "{}",
                context("a 401 for two Authorizations")
            );
        }
        Err(other) => panic!(
            "{}",
            context(&format!("bearer_token refused with {other:?}"))
        ),
    }
}

/// The names listed in the client's `Connection` headers, read from their bytes as RFC 9110
/// lists them (comma-separated, optional white space around), lower-cased.
fn connection_listed(client: &HeaderMap) -> HashSet<HeaderName> {
    client
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| {
            let token = token.trim_ascii();
            (!token.is_empty()).then(|| HeaderName::from_bytes(token).ok())?
        })
        .collect()
}

/// The client headers left out of `after` must be exactly the hop-by-hop ones, the ones a
/// `Connection` names, and the ones `also_dropped` names; the others are unchanged.
fn check_stripped(
    client: &HeaderMap,
    after: &HeaderMap,
    upgrade: bool,
    also_dropped: &[&dyn Fn(&str) -> bool],
    context: &dyn Fn(&str) -> String,
) {
    let listed = connection_listed(client);
    for name in client.keys() {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) || (n == "upgrade" && !upgrade);
        let named = listed.contains(name) && !(upgrade && n == "upgrade");
        let dropped = hop || named || also_dropped.iter().any(|f| f(n));
        if dropped {
            // `rewrite` sets `Impersonate-*` itself; `check_rewritten` checks each one.
            if !SET_BY_REWRITE.contains(&n) && !n.starts_with("impersonate-") {
                assert!(
                    !after.contains_key(name),
                    "{}",
                    context(&format!(
                        "{n} was forwarded (hop-by-hop or named in Connection)"
                    ))
                );
            }
        } else {
            let before: Vec<_> = client.get_all(name).iter().collect();
            let now: Vec<_> = after.get_all(name).iter().collect();
            assert_eq!(now, before, "{}", context(&format!("{n} was changed")));
        }
    }
}

fn is_identity(name: &str) -> bool {
    name == "authorization"
        || name == "forwarded"
        || name == "x-real-ip"
        || name == "audit-id"
        || name == "host"
        || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
        || name.starts_with("x-forwarded-")
}

fn check_rewritten(
    client: &HeaderMap,
    after: &HeaderMap,
    sent: &Sent<'_>,
    ours: Option<&HeaderValue>,
    peer: IpAddr,
    upgrade: bool,
    context: &dyn Fn(&str) -> String,
) {
    let all = |name: &str| -> Vec<Vec<u8>> {
        after
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    };
    let bytes =
        |items: &[&str]| -> Vec<Vec<u8>> { items.iter().map(|s| s.as_bytes().to_vec()).collect() };
    let mut want_groups: Vec<&str> = sent.groups.to_vec();
    if !want_groups
        .iter()
        .any(|g| *g == SYSTEM_AUTHENTICATED || *g == SYSTEM_UNAUTHENTICATED)
    {
        want_groups.push(SYSTEM_AUTHENTICATED);
    }
    let peer = peer.to_string();
    let authorization: Vec<Vec<u8>> = ours.map(|v| v.as_bytes().to_vec()).into_iter().collect();
    let uid: Vec<&str> = sent.uid.into_iter().collect();
    let mut expected = vec![
        ("impersonate-user", bytes(&[sent.user])),
        ("impersonate-group", bytes(&want_groups)),
        ("impersonate-uid", bytes(&uid)),
        ("x-forwarded-for", bytes(&[peer.as_str()])),
        ("audit-id", bytes(&[AUDIT_ID])),
        ("authorization", authorization),
        (
            "connection",
            if upgrade {
                bytes(&["Upgrade"])
            } else {
                Vec::new()
            },
        ),
    ];
    for extra in sent.extras {
        let values: Vec<&str> = extra.values.iter().map(String::as_str).collect();
        expected.push((extra.header.as_str(), bytes(&values)));
    }
    for (name, want) in &expected {
        assert_eq!(
            &all(name),
            want,
            "{}",
            context(&format!("after rewrite, {name}"))
        );
    }
    for name in after.keys() {
        let n = name.as_str();
        assert!(
            !is_identity(n) || expected.iter().any(|(e, _)| *e == n),
            "{}",
            context(&format!("client identity header {n} was forwarded"))
        );
        assert!(
            !HOP_BY_HOP.contains(&n) || (upgrade && n == "connection"),
            "{}",
            context(&format!("hop-by-hop header {n} was forwarded"))
        );
        assert!(
            upgrade || n != "upgrade",
            "{}",
            context("Upgrade forwarded on a plain request")
        );
    }
    check_stripped(client, after, upgrade, &[&is_identity], context);
}
