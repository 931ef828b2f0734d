//! Kubernetes request attributes, computed from method, path and query as the apiserver's
//! RequestInfo resolver computes them.
//!
//! [`parse`] reproduces `RequestInfoFactory.NewRequestInfo` of `k8s.io/apiserver` for the
//! kube-apiserver's configuration (API prefixes `api`, which has no group, and `apis`):
//!
//! 1. A path with fewer than three segments, or whose first segment is not `api` or `apis`, or
//!    `/apis/{group}/{version}` and shorter, is a non-resource request: the verb is the lower-cased
//!    method and the path is the (percent-decoded) request path, trailing slash included.
//! 2. Otherwise the group (for `apis`) and the version are taken. A segment `watch` or `proxy`
//!    right after the version is the verb (the deprecated verb-in-path forms); it must be followed
//!    by at least one more segment, or the apiserver fails the request. Without it the verb comes
//!    from the method: `POST` create, `GET`/`HEAD` get, `PUT` update, `PATCH` patch, `DELETE`
//!    delete, and the empty verb for any other method.
//! 3. `namespaces/{ns}` sets the namespace. When a third segment follows and is not a namespace
//!    subresource (`status`, `finalize`), the two segments are consumed and the rest names a
//!    namespaced resource; otherwise the request is for the namespace object itself, so
//!    `/api/v1/namespaces/{ns}` has resource `namespaces`, name `{ns}` and namespace `{ns}`.
//! 4. The remaining segments are `{resource}/{name}/{subresource}/...`; the legacy `proxy` verb
//!    takes no subresource.
//! 5. A `get` without a name is `list`, or `watch` when the first `watch` query value is anything
//!    but `0` or `false` (any case, the empty value included, as the apiserver's query decoding
//!    does). It then takes its name from the field selector when the selector requires
//!    `metadata.name` to equal a value that is a valid path segment name.
//! 6. A `delete` without a name is `deletecollection`.
//!
//! [`parse`] gives the resolver's verb and nothing else: a `GET` on the core group's
//! `pods/exec`, `pods/attach` or `pods/portforward` is `get` (the apiserver v1.32 decides it so;
//! a plain `GET` that is no upgrade is then answered by the apiserver itself, `400 Upgrade
//! request required`), a `POST` (how SPDY opens these streams) is `create`. One more decision
//! is the caller's to make, since only the caller knows whether the request is an upgrade:
//! [`Attributes::upgrade_create`] gives the `create` that must also be allowed for an upgrade
//! `GET` (how kubectl opens these streams over WebSocket). That is the rule of Kubernetes 1.35,
//! whose `AuthorizePodWebsocketUpgradeCreatePermission` feature gate (beta, on by default)
//! requires `create` besides `get` for such an upgrade; it is deliberately stricter than v1.32,
//! because opening a shell is a write, and a role that grants only `get pods/exec` must not
//! open one. infra-proxy's pipeline asks for both decisions for every upgrade.
//!
//! # Input, and what is refused
//!
//! `path` is the request path exactly as it arrived (still percent-encoded) and `query` the raw
//! query after `?`; the proxy must forward both unchanged, so that the apiserver sees what was
//! authorized. The apiserver's Go server decodes the path before the resolver splits it, so
//! [`parse`] decodes it the same way. It refuses ([`AttributesError`]):
//!
//! - what Go's HTTP server itself refuses with `400`: a method that is not an HTTP token, a
//!   request target that does not start with `/`, a control character, a malformed
//!   `%`-escape in the path;
//! - a path that could be read differently by another hop than by the apiserver: an encoded `/`
//!   (`%2F`, which the apiserver would split on, so `pods%2Fweb` would name `pods/web` while a
//!   hop that keeps the raw path sees one segment), an empty segment (`//`, which a hop may
//!   collapse and which the resolver would read as an empty group, version or name), a `.` or `..`
//!   segment, encoded or not (which a hop may resolve, turning `pods/../secrets` into `secrets`),
//!   a raw space, `?` or `#`, and a path that does not decode to UTF-8. No Kubernetes name can
//!   contain `/`, nor be `.` or `..`, so no valid request is lost;
//! - `watch` or `proxy` after the version with nothing after it (the apiserver fails these);
//! - a query with more than 10 000 parameters: Go releases with the `urlmaxqueryparams` limit
//!   drop every parameter of such a query (a field selector, a `watch=true`), older ones keep
//!   them all, and which one built the apiserver is not known here.
//!
//! Trailing slashes are not an error: the resolver trims them, and so does [`parse`].
//!
//! # Where the result can differ from the apiserver's, and why that is safe
//!
//! - The apiserver drops the field selector's name and reads `watch` more loosely when any
//!   list option fails to decode. [`parse`] detects a malformed field selector, `limit` or
//!   `timeoutSeconds` exactly, but not a malformed `labelSelector`: for such a request it may
//!   keep a name the apiserver would drop. The apiserver refuses that request with `400` when it
//!   decodes the same options to serve it, so nothing is served on a decision made with the name.
//! - A field selector value that is not UTF-8 gives no name here; a request without a name needs
//!   the broader grant, so this can only deny more.

use std::borrow::Cow;

/// What a request asks to do: the input of an authorization decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A request for an API resource (`/api/...` or `/apis/...` naming a resource).
    Resource(ResourceAttributes),
    /// Any other request: discovery, `/healthz`, `/version`, `/openapi/...`.
    NonResource(NonResourceAttributes),
}

/// A resource request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group; `""` is the core group.
    pub api_group: String,
    /// The API version (`v1`).
    pub api_version: String,
    /// The namespace, for a namespaced request.
    pub namespace: Option<String>,
    /// The resource (`pods`).
    pub resource: String,
    /// The subresource (`exec`, `status`, `log`).
    pub subresource: Option<String>,
    /// The object's name, when the request names one.
    pub name: Option<String>,
}

/// A non-resource request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NonResourceAttributes {
    /// The lower-cased HTTP method (`get`, `post`, ...).
    pub verb: String,
    /// The request path (`/healthz`).
    pub path: String,
}

impl Attributes {
    /// The verb the request is authorized for.
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource(n) => &n.verb,
        }
    }

    /// For an upgrade (WebSocket) `GET` of the core group's `pods/exec`, `pods/attach` or
    /// `pods/portforward`, which [`parse`] decides as `get`: the same request as `create`, which
    /// must be allowed as well (Kubernetes 1.35's rule; see the [module documentation](self)).
    /// `None` for any other request, a `POST` (already `create`) included. Only the caller
    /// knows whether a request is an upgrade, so it must ask this for every upgrade.
    pub fn upgrade_create(&self) -> Option<Self> {
        match self {
            Self::Resource(r)
                if r.verb == "get"
                    && r.api_group.is_empty()
                    && r.resource == "pods"
                    && matches!(
                        r.subresource.as_deref(),
                        Some("exec" | "attach" | "portforward")
                    ) =>
            {
                Some(Self::Resource(ResourceAttributes {
                    verb: "create".to_owned(),
                    ..r.clone()
                }))
            }
            _ => None,
        }
    }
}

/// Why a request's attributes cannot be computed. Each of these requests is refused, never
/// authorized; see the [module documentation](self) for why each is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributesError {
    /// The method is empty or has a character that an HTTP token cannot have.
    #[error("the request method is not an HTTP token")]
    InvalidMethod,
    /// The path does not start with `/`.
    #[error("the request path does not start with '/'")]
    RelativePath,
    /// The path has a control character, a space, `?` or `#`.
    #[error("the request path contains a control character, a space, '?' or '#'")]
    InvalidPathCharacter,
    /// The query has a control character.
    #[error("the request query contains a control character")]
    InvalidQueryCharacter,
    /// A `%` in the path is not followed by two hexadecimal digits.
    #[error("the request path has a '%' that is not followed by two hexadecimal digits")]
    InvalidPercentEncoding,
    /// The path has an encoded `/` (`%2F`).
    #[error("the request path contains an encoded '/' (%2F)")]
    EncodedSlash,
    /// The percent-decoded path is not UTF-8.
    #[error("the request path does not decode to UTF-8")]
    PathNotUtf8,
    /// The path has an empty segment (`//`) before its trailing slashes.
    #[error("the request path has an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("the request path has a '.' or '..' segment")]
    DotSegment,
    /// A `watch` or `proxy` segment after the API version is not followed by a resource.
    #[error("the '{verb}' path segment is not followed by a resource")]
    MissingResource {
        /// The verb segment: `watch` or `proxy`.
        verb: &'static str,
    },
    /// The query has more parameters than Go's URL parser accepts.
    #[error("the request query has more than {MAX_QUERY_PARAMETERS} parameters")]
    TooManyQueryParameters,
}

/// Go's `net/url` limit on the number of query parameters (`&`-separated pieces).
const MAX_QUERY_PARAMETERS: usize = 10_000;

/// Computes the attributes of a request as the kube-apiserver would, from its method, its raw
/// (still percent-encoded) path and its raw query (without the `?`). See the [module
/// documentation](self) for the rules and for what is refused, and
/// [`Attributes::upgrade_create`] for the second decision an upgrade needs.
///
/// Allocates only the strings of the result, plus a decoded copy of the path or of a query value
/// when they contain escapes.
pub fn parse(method: &str, path: &str, query: Option<&str>) -> Result<Attributes, AttributesError> {
    if !is_token(method) {
        return Err(AttributesError::InvalidMethod);
    }
    let decoded = decode_path(path)?;
    let query = query.unwrap_or("");
    check_query(query)?;

    // `decoded` starts with '/'. The resolver trims slashes at both ends; a leading "//" is
    // refused below as an empty segment instead.
    let trimmed = decoded.trim_end_matches('/');
    let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
    let count = validate_segments(body)?;

    match resource_attributes(method, body, count, query)? {
        Some(resource) => Ok(Attributes::Resource(resource)),
        None => Ok(Attributes::NonResource(NonResourceAttributes {
            // `method` is a token, so ASCII: this is Go's strings.ToLower.
            verb: method.to_ascii_lowercase(),
            path: decoded.into_owned(),
        })),
    }
}

/// The resolver's resource branch; `None` for a non-resource request. `body` is the path
/// without its leading and trailing slashes, `count` its number of segments (0 for an empty
/// body), all of them already checked to be non-empty.
fn resource_attributes(
    method: &str,
    body: &str,
    count: usize,
    query: &str,
) -> Result<Option<ResourceAttributes>, AttributesError> {
    let mut parts = Segments::new(body, count);
    if parts.len() < 3 {
        return Ok(None);
    }
    let api_group = match parts.next() {
        Some("api") => "",
        Some("apis") => {
            // Group and version, and at least one more segment.
            if parts.len() < 3 {
                return Ok(None);
            }
            parts.next().unwrap_or_default()
        }
        _ => return Ok(None),
    };
    let api_version = parts.next().unwrap_or_default();

    let mut verb = match parts.peek(0) {
        Some(special @ ("watch" | "proxy")) => {
            let special = if special == "watch" { "watch" } else { "proxy" };
            if parts.len() < 2 {
                return Err(AttributesError::MissingResource { verb: special });
            }
            parts.next();
            special
        }
        _ => match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        },
    };

    let mut namespace = None;
    if parts.peek(0) == Some("namespaces") && parts.len() > 1 {
        namespace = parts.peek(1);
        if parts.len() > 2 && !matches!(parts.peek(2), Some("status" | "finalize")) {
            parts.next();
            parts.next();
        }
    }

    // Invariant: at least one segment is left here. There were at least three segments with
    // `api` (four with `apis`, checked above), of which the prefix, group and version took all
    // but one; the verb segment was taken only with another after it, and the namespace's two
    // only with a third after them.
    let resource = parts.next().unwrap_or_default();
    let mut name = parts.next().map(Cow::Borrowed);
    let subresource = if verb == "proxy" { None } else { parts.next() };

    if name.is_none() && verb == "get" {
        let list = ListQuery::parse(query);
        verb = if list.watch { "watch" } else { "list" };
        name = list.name.map(Cow::Owned);
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection";
    }
    Ok(Some(ResourceAttributes {
        verb: verb.to_owned(),
        api_group: api_group.to_owned(),
        api_version: api_version.to_owned(),
        namespace: namespace.map(str::to_owned),
        resource: resource.to_owned(),
        subresource: subresource.map(str::to_owned),
        name: name.map(Cow::into_owned),
    }))
}

/// A cursor over the segments of a path, knowing how many are left.
struct Segments<'a> {
    iter: std::str::Split<'a, char>,
    remaining: usize,
}

impl<'a> Segments<'a> {
    fn new(body: &'a str, count: usize) -> Self {
        Self {
            iter: body.split('/'),
            remaining: count,
        }
    }

    fn len(&self) -> usize {
        self.remaining
    }

    fn peek(&self, n: usize) -> Option<&'a str> {
        if n < self.remaining {
            self.iter.clone().nth(n)
        } else {
            None
        }
    }

    fn next(&mut self) -> Option<&'a str> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.iter.next()
    }
}

/// RFC 9110 `token`: what Go's HTTP server requires of a method.
fn is_token(method: &str) -> bool {
    !method.is_empty()
        && method.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Checks the raw path and percent-decodes it as Go's `net/url` does for `URL.Path`, refusing
/// an encoded `/`. Borrows when there is nothing to decode.
fn decode_path(path: &str) -> Result<Cow<'_, str>, AttributesError> {
    if !path.starts_with('/') {
        return Err(AttributesError::RelativePath);
    }
    let mut escapes = false;
    for b in path.bytes() {
        match b {
            0..=0x20 | 0x7f | b'?' | b'#' => return Err(AttributesError::InvalidPathCharacter),
            b'%' => escapes = true,
            _ => {}
        }
    }
    if !escapes {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let byte = escaped_byte(bytes, i).ok_or(AttributesError::InvalidPercentEncoding)?;
            if byte == b'/' {
                return Err(AttributesError::EncodedSlash);
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| AttributesError::PathNotUtf8)
}

/// The byte that `%XY` at `at` stands for, or `None` if `X` and `Y` are not both hex digits.
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Refuses what Go's HTTP server refuses in a query, and a query whose parameters Go may drop.
fn check_query(query: &str) -> Result<(), AttributesError> {
    let mut separators = 0_usize;
    for b in query.bytes() {
        match b {
            0..=0x1f | 0x7f => return Err(AttributesError::InvalidQueryCharacter),
            b'&' => separators += 1,
            _ => {}
        }
    }
    if separators >= MAX_QUERY_PARAMETERS {
        return Err(AttributesError::TooManyQueryParameters);
    }
    Ok(())
}

/// Counts the segments of `body` (a path without its leading and trailing slashes), refusing
/// empty, `.` and `..` segments.
fn validate_segments(body: &str) -> Result<usize, AttributesError> {
    if body.is_empty() {
        return Ok(0);
    }
    let mut count = 0;
    for segment in body.split('/') {
        match segment {
            "" => return Err(AttributesError::EmptySegment),
            "." | ".." => return Err(AttributesError::DotSegment),
            _ => count += 1,
        }
    }
    Ok(count)
}

/// What a collection `get` takes from its query: the apiserver decodes the query into its list
/// options and reads `watch` and the field selector from them.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    watch: bool,
    name: Option<String>,
}

impl ListQuery {
    fn parse(query: &str) -> Self {
        // Go's url.ParseQuery keeps, for each key, the values in order; the list options take
        // the first. A piece with ';' or with a bad escape is dropped, so the next value with
        // the same key becomes the first.
        let mut watch = None;
        let mut field_selector = None;
        let mut limit = None;
        let mut timeout_seconds = None;
        for piece in query.split('&') {
            if piece.is_empty() || piece.contains(';') {
                continue;
            }
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            let Some(key) = query_unescape(key) else {
                continue;
            };
            let slot = match &*key {
                b"watch" => &mut watch,
                b"fieldSelector" => &mut field_selector,
                b"limit" => &mut limit,
                b"timeoutSeconds" => &mut timeout_seconds,
                _ => continue,
            };
            if slot.is_some() {
                continue;
            }
            if let Some(value) = query_unescape(value) {
                *slot = Some(value);
            }
        }

        // The list options that can fail to decode: the two integers and the field selector
        // (the label selector is not checked; see the module documentation).
        let integers_ok = [&limit, &timeout_seconds]
            .into_iter()
            .all(|value| value.as_deref().is_none_or(parses_as_i64));
        let selector = match field_selector.as_deref() {
            Some(selector) => parse_field_selector(selector),
            None => Ok(None),
        };
        match selector {
            Ok(name) if integers_ok => Self {
                // The list options' boolean: false only for "0" and for "false" under Unicode
                // simple case folding (strings.EqualFold).
                watch: watch
                    .as_deref()
                    .is_some_and(|v| v != b"0" && !equal_fold_false(v)),
                name: name.and_then(valid_name),
            },
            _ => Self {
                // The options did not decode: the apiserver keeps no name and reads `watch` on
                // its own, lower-casing it.
                watch: watch
                    .as_deref()
                    .is_some_and(|v| v != b"0" && !v.eq_ignore_ascii_case(b"false")),
                name: None,
            },
        }
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XY` a byte; `None` for a malformed escape.
fn query_unescape(s: &str) -> Option<Cow<'_, [u8]>> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                out.push(escaped_byte(bytes, i)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

/// Go's `strconv.ParseInt(s, 10, 64)` succeeds.
fn parses_as_i64(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|s| s.parse::<i64>().is_ok())
}

/// `strings.EqualFold(v, "false")`: the only non-ASCII letter that folds to one of `false` is
/// `ſ` (U+017F LATIN SMALL LETTER LONG S), which folds to `s`.
fn equal_fold_false(v: &[u8]) -> bool {
    let Ok(v) = std::str::from_utf8(v) else {
        return false;
    };
    let mut chars = v.chars();
    for want in ['f', 'a', 'l', 's', 'e'] {
        match chars.next() {
            Some(c) if c.to_ascii_lowercase() == want || (want == 's' && c == '\u{17f}') => {}
            _ => return false,
        }
    }
    chars.next().is_none()
}

/// The value the field selector requires `metadata.name` to equal, if any, as
/// `fields.ParseSelector` then `RequiresExactMatch("metadata.name")` compute it; `Err` when the
/// selector does not parse.
///
/// The terms are comma-separated (a backslash escapes the next character). Each non-empty term
/// is `field op value` split at the first operator (`!=`, then `==`, then `=`, tried at each
/// position), and its value must unescape. Go sorts the raw terms and takes the first `=`/`==`
/// term on the field; that is the smallest such raw term, so no sorting is needed here.
fn parse_field_selector(selector: &[u8]) -> Result<Option<Cow<'_, [u8]>>, ()> {
    let mut best: Option<(&[u8], Cow<'_, [u8]>)> = None;
    for term in split_terms(selector) {
        if term.is_empty() {
            continue;
        }
        let (field, equality, raw_value) = split_term(term).ok_or(())?;
        let value = unescape_selector_value(raw_value)?;
        if equality
            && field == b"metadata.name"
            && best.as_ref().is_none_or(|(smallest, _)| term < *smallest)
        {
            best = Some((term, value));
        }
    }
    Ok(best.map(|(_, value)| value))
}

/// The terms of a field selector: split at commas that no backslash escapes.
fn split_terms(selector: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut escaped = false;
    selector.split(move |&b| {
        if escaped {
            escaped = false;
            false
        } else if b == b'\\' {
            escaped = true;
            false
        } else {
            b == b','
        }
    })
}

/// `(field, is an equality, raw value)` of a term, split at its first operator.
fn split_term(term: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    (0..term.len()).find_map(|i| {
        let (field, rest) = term.split_at(i);
        if let Some(value) = rest.strip_prefix(b"!=") {
            Some((field, false, value))
        } else if let Some(value) = rest.strip_prefix(b"==") {
            Some((field, true, value))
        } else {
            rest.strip_prefix(b"=").map(|value| (field, true, value))
        }
    })
}

/// A field selector value with its escapes (`\\`, `\,`, `\=`) resolved; `Err` for another
/// escape, a lone trailing backslash, or an unescaped `,` or `=`.
fn unescape_selector_value(raw: &[u8]) -> Result<Cow<'_, [u8]>, ()> {
    if !raw.iter().any(|&b| matches!(b, b'\\' | b',' | b'=')) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut escaped = false;
    for &b in raw {
        match (escaped, b) {
            (true, b'\\' | b',' | b'=') => {
                out.push(b);
                escaped = false;
            }
            (true, _) | (false, b',' | b'=') => return Err(()),
            (false, b'\\') => escaped = true,
            (false, _) => out.push(b),
        }
    }
    if escaped {
        return Err(());
    }
    Ok(Cow::Owned(out))
}

/// The name the resolver takes from a field selector: non-empty, a valid path segment name
/// (not `.` or `..`, without `/` or `%`), and here also UTF-8.
/// The name a list or watch is authorized for when its field selector is `raw` (unescaped), as
/// [`parse`] finds it: the value the selector requires `metadata.name` to equal, when that is a
/// valid name. For an access review, whose field selector comes apart from any query.
pub fn field_selector_name(raw: &str) -> Option<String> {
    parse_field_selector(raw.as_bytes())
        .ok()
        .flatten()
        .and_then(valid_name)
}

fn valid_name(value: Cow<'_, [u8]>) -> Option<String> {
    let name = String::from_utf8(value.into_owned()).ok()?;
    let valid = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Expected = Result<Attributes, AttributesError>;

    /// A resource request's attributes, in the order `verb group version namespace resource
    /// subresource name`.
    #[expect(clippy::unnecessary_wraps, reason = "a row of a table of results")]
    fn res(
        verb: &str,
        group: &str,
        version: &str,
        namespace: Option<&str>,
        resource: &str,
        subresource: Option<&str>,
        name: Option<&str>,
    ) -> Expected {
        Ok(Attributes::Resource(ResourceAttributes {
            verb: verb.to_owned(),
            api_group: group.to_owned(),
            api_version: version.to_owned(),
            namespace: namespace.map(str::to_owned),
            resource: resource.to_owned(),
            subresource: subresource.map(str::to_owned),
            name: name.map(str::to_owned),
        }))
    }

    #[expect(clippy::unnecessary_wraps, reason = "a row of a table of results")]
    fn non(verb: &str, path: &str) -> Expected {
        Ok(Attributes::NonResource(NonResourceAttributes {
            verb: verb.to_owned(),
            path: path.to_owned(),
        }))
    }

    fn check(cases: &[(&str, &str, Option<&str>, Expected)]) {
        for (method, path, query, want) in cases {
            assert_eq!(
                &parse(method, path, *query),
                want,
                "{method} {path} ? {query:?}"
            );
        }
    }

    const NS: Option<&str> = Some("ns");

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn core_group() {
        check(&[
            ("GET", "/api/v1/pods", None, res("list", "", "v1", None, "pods", None, None)),
            ("GET", "/api/v1/namespaces/ns/pods", None, res("list", "", "v1", NS, "pods", None, None)),
            ("GET", "/api/v1/namespaces/ns/pods/web", None, res("get", "", "v1", NS, "pods", None, Some("web"))),
            ("HEAD", "/api/v1/namespaces/ns/pods/web", None, res("get", "", "v1", NS, "pods", None, Some("web"))),
            ("HEAD", "/api/v1/namespaces/ns/pods", None, res("list", "", "v1", NS, "pods", None, None)),
            ("POST", "/api/v1/namespaces/ns/pods", None, res("create", "", "v1", NS, "pods", None, None)),
            ("PUT", "/api/v1/namespaces/ns/pods/web", None, res("update", "", "v1", NS, "pods", None, Some("web"))),
            ("PATCH", "/api/v1/namespaces/ns/pods/web", None, res("patch", "", "v1", NS, "pods", None, Some("web"))),
            ("DELETE", "/api/v1/namespaces/ns/pods/web", None, res("delete", "", "v1", NS, "pods", None, Some("web"))),
            ("DELETE", "/api/v1/namespaces/ns/pods", None, res("deletecollection", "", "v1", NS, "pods", None, None)),
            ("DELETE", "/api/v1/nodes", None, res("deletecollection", "", "v1", None, "nodes", None, None)),
            // Cluster-scoped.
            ("GET", "/api/v1/nodes", None, res("list", "", "v1", None, "nodes", None, None)),
            ("GET", "/api/v1/nodes/n1", None, res("get", "", "v1", None, "nodes", None, Some("n1"))),
            ("GET", "/api/v1/persistentvolumes/pv", None, res("get", "", "v1", None, "persistentvolumes", None, Some("pv"))),
            // Methods the resolver does not map give the empty verb; methods are case-sensitive.
            ("OPTIONS", "/api/v1/pods", None, res("", "", "v1", None, "pods", None, None)),
            ("get", "/api/v1/pods/x", None, res("", "", "v1", None, "pods", None, Some("x"))),
            ("CONNECT", "/api/v1/namespaces/ns/pods/web", None, res("", "", "v1", NS, "pods", None, Some("web"))),
            // Segments past the subresource are not interpreted.
            ("GET", "/api/v1/namespaces/ns/pods/web/log/extra/more", None, res("get", "", "v1", NS, "pods", Some("log"), Some("web"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn named_groups() {
        check(&[
            ("GET", "/apis/apps/v1/deployments", None, res("list", "apps", "v1", None, "deployments", None, None)),
            ("GET", "/apis/apps/v1/namespaces/ns/deployments", None, res("list", "apps", "v1", NS, "deployments", None, None)),
            ("GET", "/apis/apps/v1/namespaces/ns/deployments/web", None, res("get", "apps", "v1", NS, "deployments", None, Some("web"))),
            ("POST", "/apis/apps/v1/namespaces/ns/deployments", None, res("create", "apps", "v1", NS, "deployments", None, None)),
            ("DELETE", "/apis/apps/v1/namespaces/ns/deployments", None, res("deletecollection", "apps", "v1", NS, "deployments", None, None)),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", None, res("list", "rbac.authorization.k8s.io", "v1", None, "clusterroles", None, None)),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", None, res("get", "rbac.authorization.k8s.io", "v1", None, "clusterroles", None, Some("admin"))),
            ("PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/w.example.com/status", None, res("update", "apiextensions.k8s.io", "v1", None, "customresourcedefinitions", Some("status"), Some("w.example.com"))),
            ("GET", "/apis/example.com/v1beta1/namespaces/ns/widgets/w", None, res("get", "example.com", "v1beta1", NS, "widgets", None, Some("w"))),
            // A group named like the core resources is still a group.
            ("GET", "/apis/api/v1/pods", None, res("list", "api", "v1", None, "pods", None, None)),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn subresources() {
        check(&[
            ("GET", "/api/v1/namespaces/ns/pods/p/status", None, res("get", "", "v1", NS, "pods", Some("status"), Some("p"))),
            ("PATCH", "/api/v1/namespaces/ns/pods/p/status", None, res("patch", "", "v1", NS, "pods", Some("status"), Some("p"))),
            ("PUT", "/api/v1/nodes/n1/status", None, res("update", "", "v1", None, "nodes", Some("status"), Some("n1"))),
            ("GET", "/apis/apps/v1/namespaces/ns/deployments/d/scale", None, res("get", "apps", "v1", NS, "deployments", Some("scale"), Some("d"))),
            ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", None, res("update", "apps", "v1", NS, "deployments", Some("scale"), Some("d"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/log", Some("container=c&follow=true"), res("get", "", "v1", NS, "pods", Some("log"), Some("p"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/proxy", None, res("get", "", "v1", NS, "pods", Some("proxy"), Some("p"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/proxy/metrics/x", None, res("get", "", "v1", NS, "pods", Some("proxy"), Some("p"))),
            ("POST", "/api/v1/namespaces/ns/services/https:svc:443/proxy/a", None, res("create", "", "v1", NS, "services", Some("proxy"), Some("https:svc:443"))),
            ("GET", "/api/v1/nodes/n1/proxy/stats/summary", None, res("get", "", "v1", None, "nodes", Some("proxy"), Some("n1"))),
            ("POST", "/api/v1/namespaces/ns/pods/p/eviction", None, res("create", "", "v1", NS, "pods", Some("eviction"), Some("p"))),
            ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token", None, res("create", "", "v1", NS, "serviceaccounts", Some("token"), Some("sa"))),
            ("POST", "/api/v1/namespaces/ns/pods/p/binding", None, res("create", "", "v1", NS, "pods", Some("binding"), Some("p"))),
            ("PATCH", "/api/v1/namespaces/ns/pods/p/ephemeralcontainers", None, res("patch", "", "v1", NS, "pods", Some("ephemeralcontainers"), Some("p"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/resize", None, res("get", "", "v1", NS, "pods", Some("resize"), Some("p"))),
            ("POST", "/apis/example.com/v1/namespaces/ns/widgets/w/frobnicate", None, res("create", "example.com", "v1", NS, "widgets", Some("frobnicate"), Some("w"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn exec_attach_portforward_take_the_resolvers_verb() {
        for sub in ["exec", "attach", "portforward"] {
            let path = format!("/api/v1/namespaces/ns/pods/p/{sub}");
            for (method, verb) in [("GET", "get"), ("HEAD", "get"), ("POST", "create"), ("PUT", "update"), ("DELETE", "delete"), ("OPTIONS", "")] {
                assert_eq!(
                    parse(method, &path, Some("command=sh&stdin=true&tty=true")),
                    res(verb, "", "v1", NS, "pods", Some(sub), Some("p")),
                    "{method} {path}"
                );
            }
        }
        check(&[
            ("GET", "/apis/example.com/v1/namespaces/ns/pods/p/exec", None, res("get", "example.com", "v1", NS, "pods", Some("exec"), Some("p"))),
            ("GET", "/api/v1/nodes/n1/proxy", None, res("get", "", "v1", None, "nodes", Some("proxy"), Some("n1"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/proxy", None, res("get", "", "v1", NS, "pods", Some("proxy"), Some("p"))),
            ("GET", "/api/v1/namespaces/ns/pods/p/log", None, res("get", "", "v1", NS, "pods", Some("log"), Some("p"))),
            // A pod named "exec" is not the subresource.
            ("GET", "/api/v1/namespaces/ns/pods/exec", None, res("get", "", "v1", NS, "pods", None, Some("exec"))),
        ]);
    }

    #[test]
    fn an_upgrade_get_of_a_pod_stream_also_needs_create() {
        let upgrade_create = |method: &str, path: &str| {
            parse(method, path, None)
                .expect("a valid path")
                .upgrade_create()
        };
        for sub in ["exec", "attach", "portforward"] {
            let path = format!("/api/v1/namespaces/ns/pods/p/{sub}");
            assert_eq!(
                upgrade_create("GET", &path).map(Ok),
                Some(res("create", "", "v1", NS, "pods", Some(sub), Some("p"))),
                "{path}"
            );
            // A POST is already `create`: nothing more to ask.
            assert_eq!(upgrade_create("POST", &path), None, "{path}");
        }
        for path in [
            "/apis/example.com/v1/namespaces/ns/pods/p/exec",
            "/api/v1/namespaces/ns/pods/p/log",
            "/api/v1/namespaces/ns/pods/p/proxy",
            "/api/v1/namespaces/ns/pods/exec",
            "/api/v1/namespaces/ns/pods",
            "/healthz",
        ] {
            assert_eq!(upgrade_create("GET", path), None, "{path}");
        }
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn watch_from_the_query() {
        let watch = res("watch", "", "v1", NS, "pods", None, None);
        let list = res("list", "", "v1", NS, "pods", None, None);
        let path = "/api/v1/namespaces/ns/pods";
        for (query, want) in [
            ("watch=true", &watch),
            ("watch=1", &watch),
            ("watch=t", &watch),
            ("watch=TRUE", &watch),
            // The apiserver's boolean is true for anything but "0" and "false": unlike
            // strconv.ParseBool, "yes", "no" and the empty value all watch.
            ("watch=yes", &watch),
            ("watch=no", &watch),
            ("watch=", &watch),
            ("watch", &watch),
            ("watch=00", &watch),
            ("watch=0", &list),
            ("watch=false", &list),
            ("watch=FALSE", &list),
            ("watch=False", &list),
            // strings.EqualFold folds 'ſ' (U+017F) to 's'.
            ("watch=fal%C5%BFe", &list),
            // Decoded keys and values.
            ("wat%63h=1", &watch),
            ("watch=fal%73e", &list),
            ("watch=%74rue", &watch),
            // The first value counts.
            ("watch=true&watch=false", &watch),
            ("watch=false&watch=true", &list),
            // A piece with ';' or a bad escape is dropped, so the next value is the first.
            ("watch=1;x=y", &list),
            ("watch=1;x=y&watch=0", &list),
            ("watch=%zz&watch=1", &watch),
            ("resourceVersion=10&allowWatchBookmarks=true&watch=1&timeoutSeconds=300", &watch),
            ("labelSelector=app%3Dweb", &list),
            ("", &list),
        ] {
            assert_eq!(&parse("GET", path, Some(query)), want, "?{query}");
        }
        assert_eq!(parse("GET", path, None), list);
        check(&[
            // The query is read only for a collection get.
            ("GET", "/api/v1/namespaces/ns/pods/p", Some("watch=true"), res("get", "", "v1", NS, "pods", None, Some("p"))),
            ("DELETE", "/api/v1/namespaces/ns/pods", Some("watch=true"), res("deletecollection", "", "v1", NS, "pods", None, None)),
            ("GET", "/apis/apps/v1/deployments", Some("watch=1"), res("watch", "apps", "v1", None, "deployments", None, None)),
            ("HEAD", "/api/v1/nodes", Some("watch=1"), res("watch", "", "v1", None, "nodes", None, None)),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn watch_from_the_legacy_path_prefix() {
        check(&[
            ("GET", "/api/v1/watch/pods", None, res("watch", "", "v1", None, "pods", None, None)),
            ("GET", "/api/v1/watch/namespaces/ns/pods", None, res("watch", "", "v1", NS, "pods", None, None)),
            ("GET", "/api/v1/watch/namespaces/ns/pods/p", None, res("watch", "", "v1", NS, "pods", None, Some("p"))),
            ("GET", "/api/v1/watch/nodes/n1", None, res("watch", "", "v1", None, "nodes", None, Some("n1"))),
            ("GET", "/apis/apps/v1/watch/namespaces/ns/deployments/d", None, res("watch", "apps", "v1", NS, "deployments", None, Some("d"))),
            ("GET", "/api/v1/watch/namespaces", None, res("watch", "", "v1", None, "namespaces", None, None)),
            ("GET", "/api/v1/watch/namespaces/ns", None, res("watch", "", "v1", NS, "namespaces", None, NS)),
            // The verb in the path wins over the method, and the query is not read.
            ("POST", "/api/v1/watch/pods", None, res("watch", "", "v1", None, "pods", None, None)),
            ("GET", "/api/v1/watch/namespaces/ns/pods", Some("fieldSelector=metadata.name%3Dp"), res("watch", "", "v1", NS, "pods", None, None)),
            ("GET", "/api/v1/watch/pods", Some("watch=false"), res("watch", "", "v1", None, "pods", None, None)),
            // With nothing after it the apiserver fails the request.
            ("GET", "/api/v1/watch", None, Err(AttributesError::MissingResource { verb: "watch" })),
            ("GET", "/api/v1/watch/", None, Err(AttributesError::MissingResource { verb: "watch" })),
            ("GET", "/apis/apps/v1/watch", None, Err(AttributesError::MissingResource { verb: "watch" })),
            // `/apis/apps/watch` is too short to be a resource request.
            ("GET", "/apis/apps/watch", None, non("get", "/apis/apps/watch")),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn proxy_from_the_legacy_path_prefix() {
        check(&[
            ("GET", "/api/v1/proxy/namespaces/ns/pods/p", None, res("proxy", "", "v1", NS, "pods", None, Some("p"))),
            // The legacy proxy verb takes no subresource.
            ("GET", "/api/v1/proxy/namespaces/ns/pods/p/healthz/x", None, res("proxy", "", "v1", NS, "pods", None, Some("p"))),
            ("PUT", "/api/v1/proxy/nodes/n1/stats", None, res("proxy", "", "v1", None, "nodes", None, Some("n1"))),
            ("GET", "/api/v1/proxy/pods", None, res("proxy", "", "v1", None, "pods", None, None)),
            ("GET", "/api/v1/proxy", None, Err(AttributesError::MissingResource { verb: "proxy" })),
            ("GET", "/apis/apps/v1/proxy//", None, Err(AttributesError::MissingResource { verb: "proxy" })),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn name_from_the_field_selector() {
        let path = "/api/v1/namespaces/ns/pods";
        let named = |verb: &str, name: &str| res(verb, "", "v1", NS, "pods", None, Some(name));
        let list = res("list", "", "v1", NS, "pods", None, None);
        let watch = res("watch", "", "v1", NS, "pods", None, None);
        for (query, want) in [
            ("fieldSelector=metadata.name%3Dweb", named("list", "web")),
            // Go's query parser splits a piece at its first '='.
            ("fieldSelector=metadata.name=web", named("list", "web")),
            ("fieldSelector=metadata.name%3D%3Dweb", named("list", "web")),
            ("fieldSelector=metadata.name%3Dweb&watch=1", named("watch", "web")),
            ("watch=true&fieldSelector=metadata.name%3Dweb&resourceVersion=0", named("watch", "web")),
            // More terms: the apiserver still finds the name (RequiresExactMatch on an AND of
            // terms returns the first matching term after sorting).
            ("fieldSelector=metadata.name%3Dweb%2Cmetadata.namespace%3Dns", named("list", "web")),
            ("fieldSelector=spec.nodeName%3Dn1%2Cmetadata.name%3Dweb", named("list", "web")),
            ("fieldSelector=metadata.name%3Db%2Cmetadata.name%3Da", named("list", "a")),
            ("fieldSelector=metadata.name%3Db%2Cmetadata.name%3D%3Da", named("list", "a")),
            ("fieldSelector=metadata.name%21%3Dx%2Cmetadata.name%3Dweb", named("list", "web")),
            ("fieldSelector=%2C%2Cmetadata.name%3Dweb%2C", named("list", "web")),
            // Escapes in the value.
            ("fieldSelector=metadata.name%3Da%5C%2Cb", named("list", "a,b")),
            ("fieldSelector=metadata.name%3Dweb+1", named("list", "web 1")),
            ("fieldSelector=metadata.name%3Dweb&limit=500&timeoutSeconds=-1", named("list", "web")),
            // The first fieldSelector counts.
            ("fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db", named("list", "a")),
            // No name.
            ("fieldSelector=metadata.name%21%3Dweb", list.clone()),
            ("fieldSelector=status.phase%3DRunning", list.clone()),
            ("fieldSelector=metadata.namespace%3Dns", list.clone()),
            ("fieldSelector=metadata.name%3D", list.clone()),
            ("fieldSelector=", list.clone()),
            ("fieldSelector=metadata.name%3D..", list.clone()),
            ("fieldSelector=metadata.name%3Da%2Fb", list.clone()),
            ("fieldSelector=metadata.name%3Da%25b", list.clone()),
            ("fieldSelector=metadata.name%3D%FF", list.clone()),
            ("fieldselector=metadata.name%3Dweb", list.clone()),
            // A selector that does not parse: no name, for any term.
            ("fieldSelector=metadata.name", list.clone()),
            ("fieldSelector=metadata.name%3Da%3Db", list.clone()),
            ("fieldSelector=metadata.name%3Da%5C", list.clone()),
            ("fieldSelector=metadata.name%3Da%5Cx", list.clone()),
            ("fieldSelector=metadata.name%3Dweb%2Cbogus", list.clone()),
            // Other list options that do not decode drop the name too.
            ("fieldSelector=metadata.name%3Dweb&limit=ten", list.clone()),
            ("fieldSelector=metadata.name%3Dweb&timeoutSeconds=", list.clone()),
            ("fieldSelector=metadata.name%3Dweb&limit=99999999999999999999", list.clone()),
            ("fieldSelector=metadata.name%3Dweb&watch=1&limit=x", watch.clone()),
            // ... and make `watch` read by lower-casing, where 'ſ' is not 's'.
            ("watch=fal%C5%BFe&limit=x", watch.clone()),
            ("watch=FALSE&limit=x", list.clone()),
        ] {
            assert_eq!(parse("GET", path, Some(query)), want, "?{query}");
        }
        check(&[
            // Only a collection get reads the selector.
            ("DELETE", path, Some("fieldSelector=metadata.name%3Dweb"), res("deletecollection", "", "v1", NS, "pods", None, None)),
            ("GET", "/api/v1/namespaces/ns/pods/p", Some("fieldSelector=metadata.name%3Dq"), res("get", "", "v1", NS, "pods", None, Some("p"))),
            ("GET", "/api/v1/nodes", Some("fieldSelector=metadata.name%3Dn1"), res("list", "", "v1", None, "nodes", None, Some("n1"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn namespace_paths() {
        let ns = |verb: &str, name: Option<&str>, sub: Option<&str>| {
            res(verb, "", "v1", name, "namespaces", sub, name)
        };
        check(&[
            ("GET", "/api/v1/namespaces", None, res("list", "", "v1", None, "namespaces", None, None)),
            ("POST", "/api/v1/namespaces", None, res("create", "", "v1", None, "namespaces", None, None)),
            ("GET", "/api/v1/namespaces", Some("watch=1"), res("watch", "", "v1", None, "namespaces", None, None)),
            // The namespace object: the apiserver sets its namespace to its own name.
            ("GET", "/api/v1/namespaces/kube-system", None, ns("get", Some("kube-system"), None)),
            ("DELETE", "/api/v1/namespaces/kube-system", None, ns("delete", Some("kube-system"), None)),
            ("PUT", "/api/v1/namespaces/x/status", None, ns("update", Some("x"), Some("status"))),
            ("GET", "/api/v1/namespaces/x/status", None, ns("get", Some("x"), Some("status"))),
            ("PUT", "/api/v1/namespaces/x/finalize", None, ns("update", Some("x"), Some("finalize"))),
            ("GET", "/api/v1/namespaces/x/status/more", None, ns("get", Some("x"), Some("status"))),
            // Anything else after the name is a namespaced resource.
            ("GET", "/api/v1/namespaces/x/pods", None, res("list", "", "v1", Some("x"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/x/namespaces", None, res("list", "", "v1", Some("x"), "namespaces", None, None)),
            ("GET", "/api/v1/namespaces/x/namespaces/y", None, res("get", "", "v1", Some("x"), "namespaces", None, Some("y"))),
            // A namespace named like a namespace subresource.
            ("GET", "/api/v1/namespaces/status", None, ns("get", Some("status"), None)),
            ("GET", "/apis/example.com/v1/namespaces/x", None, res("get", "example.com", "v1", Some("x"), "namespaces", None, Some("x"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn non_resource_requests() {
        check(&[
            ("GET", "/healthz", None, non("get", "/healthz")),
            ("GET", "/healthz/etcd", None, non("get", "/healthz/etcd")),
            ("GET", "/livez", Some("verbose"), non("get", "/livez")),
            ("GET", "/readyz", None, non("get", "/readyz")),
            ("GET", "/version", None, non("get", "/version")),
            ("GET", "/metrics", None, non("get", "/metrics")),
            ("GET", "/openapi/v2", None, non("get", "/openapi/v2")),
            ("GET", "/openapi/v3", None, non("get", "/openapi/v3")),
            ("GET", "/openapi/v3/apis/apps/v1", Some("hash=abc"), non("get", "/openapi/v3/apis/apps/v1")),
            ("GET", "/", None, non("get", "/")),
            ("GET", "/api", None, non("get", "/api")),
            ("GET", "/api/v1", None, non("get", "/api/v1")),
            ("GET", "/apis", None, non("get", "/apis")),
            ("GET", "/apis/apps", None, non("get", "/apis/apps")),
            ("GET", "/apis/apps/v1", None, non("get", "/apis/apps/v1")),
            ("GET", "/apis/rbac.authorization.k8s.io/v1", None, non("get", "/apis/rbac.authorization.k8s.io/v1")),
            ("POST", "/healthz", None, non("post", "/healthz")),
            ("HEAD", "/version", None, non("head", "/version")),
            ("PROPFIND", "/version", None, non("propfind", "/version")),
            ("get", "/version", None, non("get", "/version")),
            // The path is kept as the apiserver has it: decoded, trailing slash included.
            ("GET", "/healthz/", None, non("get", "/healthz/")),
            ("GET", "/apis/apps/v1/", None, non("get", "/apis/apps/v1/")),
            ("GET", "/api/", None, non("get", "/api/")),
            ("GET", "//", None, non("get", "//")),
            ("GET", "/health%7A", None, non("get", "/healthz")),
            // Not an API prefix (which is case-sensitive).
            ("GET", "/API/v1/pods", None, non("get", "/API/v1/pods")),
            ("GET", "/foo/v1/pods/p", None, non("get", "/foo/v1/pods/p")),
            ("GET", "/logs/kube-apiserver.log", None, non("get", "/logs/kube-apiserver.log")),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn trailing_slashes_are_trimmed() {
        check(&[
            ("GET", "/api/v1/pods/", None, res("list", "", "v1", None, "pods", None, None)),
            ("GET", "/api/v1/namespaces/ns/pods/web///", None, res("get", "", "v1", NS, "pods", None, Some("web"))),
            ("GET", "/apis/apps/v1/namespaces/ns/deployments/d/scale/", None, res("get", "apps", "v1", NS, "deployments", Some("scale"), Some("d"))),
            ("GET", "/api/v1/namespaces/x/", None, res("get", "", "v1", Some("x"), "namespaces", None, Some("x"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn percent_encoding_is_decoded_as_the_apiserver_decodes_it() {
        check(&[
            ("GET", "/api/v1/namespaces/ns/pods/w%65b", None, res("get", "", "v1", NS, "pods", None, Some("web"))),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin", None, res("get", "rbac.authorization.k8s.io", "v1", None, "clusterroles", None, Some("system:admin"))),
            ("GET", "/%61pi/v1/pods", None, res("list", "", "v1", None, "pods", None, None)),
            // '+' is not a space in a path.
            ("GET", "/api/v1/namespaces/ns/pods/a+b", None, res("get", "", "v1", NS, "pods", None, Some("a+b"))),
            ("GET", "/api/v1/namespaces/ns/pods/a%25b", None, res("get", "", "v1", NS, "pods", None, Some("a%b"))),
            ("GET", "/api/v1/namespaces/ns/pods/%C3%A9", None, res("get", "", "v1", NS, "pods", None, Some("é"))),
            ("GET", "/api/v1/namespaces/ns/pods/é", None, res("get", "", "v1", NS, "pods", None, Some("é"))),
        ]);
    }

    #[test]
    #[rustfmt::skip] // One row per line: these are tables.
    fn malformed_paths_are_refused() {
        use AttributesError as E;
        check(&[
            ("GET", "api/v1/pods", None, Err(E::RelativePath)),
            ("GET", "", None, Err(E::RelativePath)),
            ("GET", "*", None, Err(E::RelativePath)),
            ("GET", "http://host/api/v1/pods", None, Err(E::RelativePath)),
            ("GET", "/api//v1/pods", None, Err(E::EmptySegment)),
            ("GET", "//api/v1/pods", None, Err(E::EmptySegment)),
            ("GET", "/api/v1/namespaces//pods", None, Err(E::EmptySegment)),
            ("GET", "/healthz//x", None, Err(E::EmptySegment)),
            ("GET", "/api/v1/namespaces/ns/pods/../secrets", None, Err(E::DotSegment)),
            ("GET", "/api/v1/./pods", None, Err(E::DotSegment)),
            ("GET", "/api/v1/pods/..", None, Err(E::DotSegment)),
            ("GET", "/api/v1/pods/../", None, Err(E::DotSegment)),
            ("GET", "/healthz/../api/v1/secrets", None, Err(E::DotSegment)),
            ("GET", "/api/v1/namespaces/ns/pods/%2e%2e/x", None, Err(E::DotSegment)),
            ("GET", "/api/v1/namespaces/ns/pods/.%2E", None, Err(E::DotSegment)),
            ("GET", "/api/v1/namespaces/ns/pods/%2E", None, Err(E::DotSegment)),
            // An encoded '/' must not be able to change which resource is named.
            ("GET", "/api/v1/namespaces/ns/pods%2Fweb", None, Err(E::EncodedSlash)),
            ("GET", "/api/v1/namespaces/ns/secrets%2fx/../pods", None, Err(E::EncodedSlash)),
            ("GET", "/api/v1/namespaces/ns/pods/p/proxy/a%2Fb", None, Err(E::EncodedSlash)),
            ("GET", "/api/v1/pods/%zz", None, Err(E::InvalidPercentEncoding)),
            ("GET", "/api/v1/pods/%4", None, Err(E::InvalidPercentEncoding)),
            ("GET", "/api/v1/pods/%", None, Err(E::InvalidPercentEncoding)),
            ("GET", "/api/v1/pods/%%41", None, Err(E::InvalidPercentEncoding)),
            ("GET", "/api/v1/pods/%FF", None, Err(E::PathNotUtf8)),
            ("GET", "/api/v1/pods/%C3", None, Err(E::PathNotUtf8)),
            ("GET", "/api/v1/pods/a b", None, Err(E::InvalidPathCharacter)),
            ("GET", "/api/v1/pods\n", None, Err(E::InvalidPathCharacter)),
            ("GET", "/api/v1/pods\0", None, Err(E::InvalidPathCharacter)),
            ("GET", "/api/v1/pods\x7f", None, Err(E::InvalidPathCharacter)),
            ("GET", "/api/v1/pods?watch=1", None, Err(E::InvalidPathCharacter)),
            ("GET", "/api/v1/pods#x", None, Err(E::InvalidPathCharacter)),
            ("", "/api/v1/pods", None, Err(E::InvalidMethod)),
            ("GE T", "/api/v1/pods", None, Err(E::InvalidMethod)),
            ("GET\r\n", "/api/v1/pods", None, Err(E::InvalidMethod)),
            ("GÉT", "/healthz", None, Err(E::InvalidMethod)),
            ("GET", "/api/v1/pods", Some("watch=1\n"), Err(E::InvalidQueryCharacter)),
        ]);
    }

    #[test]
    fn a_query_with_more_parameters_than_go_parses_is_refused() {
        let path = "/api/v1/namespaces/ns/pods";
        let mut query = "&".repeat(MAX_QUERY_PARAMETERS - 2);
        query.push_str("fieldSelector=metadata.name%3Dweb&watch=1");
        assert_eq!(
            parse("GET", path, Some(&query)),
            res("watch", "", "v1", NS, "pods", None, Some("web")),
        );
        query.insert(0, '&');
        assert_eq!(
            parse("GET", path, Some(&query)),
            Err(AttributesError::TooManyQueryParameters)
        );
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            AttributesError::MissingResource { verb: "watch" }.to_string(),
            "the 'watch' path segment is not followed by a resource"
        );
        assert_eq!(
            AttributesError::TooManyQueryParameters.to_string(),
            "the request query has more than 10000 parameters"
        );
    }

    #[test]
    fn verb_accessor() {
        let attributes = parse("GET", "/api/v1/pods", Some("watch=1")).expect("a valid path");
        assert_eq!(attributes.verb(), "watch");
        let attributes = parse("PUT", "/healthz", None).expect("a valid path");
        assert_eq!(attributes.verb(), "put");
    }

    /// Paths built from the pieces that matter to the resolver, malformed ones included.
    fn path() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "api",
            "apis",
            "v1",
            "apps",
            "namespaces",
            "ns",
            "pods",
            "web",
            "watch",
            "proxy",
            "status",
            "finalize",
            "exec",
            "attach",
            "log",
            "healthz",
            "",
            ".",
            "..",
            "%2F",
            "%2e",
            "%41",
            "a%",
            "%zz",
            "%FF",
            "a+b",
            "é",
        ]);
        prop::collection::vec(segment, 0..9).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    fn query() -> impl Strategy<Value = Option<String>> {
        let piece = prop::sample::select(vec![
            "watch=1",
            "watch=0",
            "watch=false",
            "watch",
            "watch=%zz",
            "w;x",
            "",
            "fieldSelector=metadata.name%3Dweb",
            "fieldSelector=metadata.name=a,metadata.name=b",
            "fieldSelector=metadata.name%3Da%5C",
            "fieldSelector=x",
            "limit=1",
            "limit=x",
            "timeoutSeconds=5",
        ]);
        prop::option::of(prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.join("&")))
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"
            ])
            .prop_map(str::to_owned),
            "[A-Za-z!-~]{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(method in ".*", path in ".*", query in proptest::option::of(".*")) {
            let _ = parse(&method, &path, query.as_deref());
        }

        #[test]
        fn never_panics_on_path_like_input(method in method(), path in path(), query in query()) {
            let _ = parse(&method, &path, query.as_deref());
        }

        #[test]
        fn never_panics_on_arbitrary_paths_with_a_valid_prefix(rest in "[/%.a-z0-9\\\\]{0,24}", query in ".*") {
            let _ = parse("GET", &format!("/api/v1/{rest}"), Some(&query));
            let _ = parse("GET", "/api/v1/pods", Some(&format!("fieldSelector={rest}")));
        }

        /// A trailing slash changes nothing, except that a non-resource path keeps it (the
        /// apiserver matches non-resource URLs on the path as sent).
        #[test]
        fn stable_under_a_trailing_slash(method in method(), path in path(), query in query()) {
            let plain = parse(&method, &path, query.as_deref());
            let slashed = parse(&method, &format!("{path}/"), query.as_deref());
            match (plain, slashed) {
                (Ok(Attributes::NonResource(a)), Ok(Attributes::NonResource(b))) => {
                    prop_assert_eq!(a.verb, b.verb);
                    prop_assert_eq!(format!("{}/", a.path), b.path);
                }
                (a, b) => prop_assert_eq!(a, b),
            }
        }

        /// No path that parses names a resource through a segment holding a '/'.
        #[test]
        fn no_attribute_holds_a_slash(method in method(), path in path(), query in query()) {
            if let Ok(Attributes::Resource(r)) = parse(&method, &path, query.as_deref()) {
                for part in [Some(&r.api_group), Some(&r.api_version), r.namespace.as_ref(), Some(&r.resource), r.subresource.as_ref(), r.name.as_ref()].into_iter().flatten() {
                    prop_assert!(!part.contains('/'), "{:?}", r);
                    prop_assert!(part != "." && part != "..", "{:?}", r);
                }
                prop_assert!(!r.resource.is_empty());
            }
        }
    }
}
