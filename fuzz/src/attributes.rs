//! `attributes`: Kubernetes request attributes from a method and a request target
//! ([`infra_authz::attributes::parse`]).
//!
//! Input: `METHOD SP TARGET`, as on an HTTP/1.1 request line (no space: all of it is the
//! method and the target is empty). The target is used twice:
//!
//! - raw: split at its first `?` into path and query, as written;
//! - as the proxy sees it: parsed by `http` (what hyper does with a request line or an
//!   HTTP/2 `:path`), then `parse(method, uri.path(), uri.query())` as `pipeline.rs` calls it.
//!
//! Invariants:
//!
//! - never panics, and gives the same answer twice;
//! - an accepted method is an HTTP token; a non-resource verb is the lower-cased method and its
//!   path starts with `/`;
//! - no attribute of a resource request is empty (but the core group), holds a `/`, or is `.`
//!   or `..`; the verb is one the apiserver computes; the core group's `pods/exec`, `attach`
//!   and `portforward` take the resolver's verb (`get` for a `GET`, `create` for a `POST`), and
//!   `upgrade_create` asks `create` of exactly those that are `get`, and of nothing else;
//! - a path with an encoded `/` (`%2F`) is refused;
//! - a trailing `/` changes nothing (but a non-resource path, which keeps it);
//! - percent-encoding every byte of an accepted path (but its `/`) changes nothing: the
//!   apiserver decodes before it splits;
//! - the path and query the proxy forwards (`uri_for` re-parses `path_and_query`) are the ones
//!   that were authorized.

use infra_authz::attributes::{Attributes, parse};

use crate::show;

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "",
];

/// The `attributes` target.
pub fn attributes(data: &[u8]) {
    let (method, target) = match data.iter().position(|&b| b == b' ') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let method_text = String::from_utf8_lossy(method);
    let target_text = String::from_utf8_lossy(target);

    // Raw: the target as written.
    let (path, query) = match target_text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*target_text, None),
    };
    let _ = check(&method_text, path, query, data);

    // As the proxy sees it: what `http` makes of the method and the target.
    let (Ok(method), Ok(uri)) = (
        http::Method::from_bytes(method),
        http::Uri::try_from(target),
    ) else {
        return;
    };
    let authorized = check(method.as_str(), uri.path(), uri.query(), data);
    if authorized.is_ok() {
        // `pipeline.rs` forwards `path_and_query` (or "/"), re-parsed by `Upstream::uri_for`.
        let forwarded = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let reparsed: http::uri::PathAndQuery = forwarded.parse().unwrap_or_else(|e| {
            panic!(
                "an authorized request's path and query {forwarded:?} do not parse again: {e}\ninput: {}",
                show(data)
            )
        });
        assert_eq!(
            (reparsed.path(), reparsed.query()),
            (uri.path(), uri.query()),
            "the apiserver would see another path or query than was authorized\ninput: {}",
            show(data)
        );
    }
}

/// Parses and checks every invariant of one `(method, path, query)`; gives the result.
fn check(
    method: &str,
    path: &str,
    query: Option<&str>,
    data: &[u8],
) -> Result<Attributes, infra_authz::attributes::AttributesError> {
    let result = parse(method, path, query);
    let context = || {
        format!(
            "method {method:?} path {path:?} query {query:?} -> {result:?}\ninput: {}",
            show(data)
        )
    };
    assert_eq!(
        parse(method, path, query),
        result,
        "not deterministic: {}",
        context()
    );
    if path.to_ascii_lowercase().contains("%2f") {
        assert!(
            result.is_err(),
            "an encoded '/' was accepted: {}",
            context()
        );
    }
    let Ok(attributes) = &result else {
        return result;
    };
    assert!(
        !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
        "a method that is not an HTTP token was accepted: {}",
        context()
    );
    match attributes {
        Attributes::NonResource(n) => {
            assert_eq!(
                n.verb,
                method.to_ascii_lowercase(),
                "non-resource verb: {}",
                context()
            );
            assert!(n.path.starts_with('/'), "non-resource path: {}", context());
        }
        Attributes::Resource(r) => {
            assert!(
                VERBS.contains(&r.verb.as_str()),
                "unknown verb: {}",
                context()
            );
            let parts = [
                Some(&r.api_version),
                r.namespace.as_ref(),
                Some(&r.resource),
                r.subresource.as_ref(),
                r.name.as_ref(),
            ];
            for part in parts.into_iter().flatten() {
                assert!(
                    !part.is_empty() && !part.contains('/') && part != "." && part != "..",
                    "attribute {part:?}: {}",
                    context()
                );
            }
            assert!(
                !r.api_group.contains('/') && r.api_group != "." && r.api_group != "..",
                "group: {}",
                context()
            );
            let pod_stream = r.api_group.is_empty()
                && r.resource == "pods"
                && matches!(
                    r.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward")
                );
            // (`watch` is the verb of the deprecated `/watch/` paths, whatever the method.)
            if pod_stream && method == "POST" {
                assert!(
                    matches!(r.verb.as_str(), "create" | "watch"),
                    "a pod stream POST: {}",
                    context()
                );
            }
            if pod_stream && matches!(method, "GET" | "HEAD") {
                assert!(
                    matches!(r.verb.as_str(), "get" | "watch"),
                    "a pod stream GET: {}",
                    context()
                );
            }
            let create = attributes.upgrade_create();
            assert_eq!(
                create.is_some(),
                pod_stream && r.verb == "get",
                "upgrade_create: {}",
                context()
            );
            if let Some(Attributes::Resource(c)) = create {
                assert_eq!(
                    (
                        c.verb.as_str(),
                        &c.resource,
                        &c.subresource,
                        &c.name,
                        &c.namespace
                    ),
                    ("create", &r.resource, &r.subresource, &r.name, &r.namespace),
                    "upgrade_create: {}",
                    context()
                );
            }
        }
    }

    // A trailing slash changes nothing, but the path a non-resource request keeps.
    let slashed = parse(method, &format!("{path}/"), query);
    match (attributes, &slashed) {
        (Attributes::NonResource(a), Ok(Attributes::NonResource(b))) => {
            assert_eq!(
                (format!("{}/", a.path), &a.verb),
                (b.path.clone(), &b.verb),
                "a trailing slash changed the answer: {}",
                context()
            );
        }
        (a, b) => assert_eq!(
            Ok(a),
            b.as_ref(),
            "a trailing slash changed the answer: {}",
            context()
        ),
    }

    // Percent-encoding the path (but its slashes) changes nothing.
    if !path.contains('%') {
        let encoded: String = path
            .bytes()
            .map(|b| {
                if b == b'/' {
                    "/".to_owned()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        assert_eq!(
            parse(method, &encoded, query).as_ref(),
            Ok(attributes),
            "percent-encoding the path {encoded:?} changed the answer: {}",
            context()
        );
    }
    result
}
