//! Impersonation asked by the client (`kubectl --as`, `--as-group`, `--as-uid`,
//! `--as-user-extra`), read from its `Impersonate-*` headers as the apiserver's impersonation
//! filter (v1.32) reads them:
//!
//! - `Impersonate-User`: its first value, when not empty (Go's `Header.Get`; more values are
//!   ignored, an empty one is no impersonation). A `system:serviceaccount:NS:NAME` user whose
//!   namespace is a DNS label and whose name is a DNS subdomain is a service account, checked as
//!   `impersonate` on `serviceaccounts` `NAME` in namespace `NS`; any other user as
//!   `impersonate` on `users`.
//! - `Impersonate-Group`: every value, each checked as `impersonate` on `groups`.
//! - `Impersonate-Extra-<key>`: every value, checked as `impersonate` on `userextras/<key>` in
//!   the group `authentication.k8s.io`, the value being the name. The key is what follows the
//!   prefix, lower-cased and percent-decoded (kept as it is when it does not decode).
//! - `Impersonate-Uid`: its first value, when not empty, checked as `impersonate` on `uids` in
//!   `authentication.k8s.io`.
//!
//! Groups, extras or a uid without a user are what the apiserver answers with a plain-text 500
//! (`requested [...] without impersonating a user`), and so does infra-proxy
//! ([`ImpersonationError::WithoutUser`]). Other `Impersonate-*` names mean nothing to the
//! apiserver and nothing here. None of these headers ever goes upstream as the client sent it:
//! the rewrite sets them from the identity that was decided.
//!
//! The impersonated identity ([`Requested::identity`]) is the apiserver's: the user, the groups
//! asked for (a service account without groups asked for gets `system:serviceaccounts` and
//! `system:serviceaccounts:NS`), and `system:authenticated` unless the groups already hold it or
//! `system:unauthenticated`; `system:anonymous` gets `system:unauthenticated` instead.
//!
//! Where this differs from the apiserver, it refuses: a value that is not UTF-8, an extra key
//! that does not decode to UTF-8, and more than [`MAX_VALUES`] values in all are a 400 (each
//! value costs a decision, and HTTP/2 lets a head carry thousands of small headers).

use http::Request;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use infra_authz::attributes::{Attributes, ResourceAttributes};
use infra_authz::decision::{Identity, go_quote, sanitize_html};

use crate::status::Refusal;

/// The most `Impersonate-*` values one request may carry.
pub const MAX_VALUES: usize = 64;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const AUTHENTICATION_VERSION: &str = "authentication.k8s.io/v1";
const ANONYMOUS: &str = "system:anonymous";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// One `Impersonate-Extra-<key>` header, with all its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// The header's name as it came (lower-cased): forwarded as it is, the apiserver derives the
    /// same key from it.
    pub header: HeaderName,
    /// The key, as the apiserver reads it.
    pub key: String,
    /// Its values, in order.
    pub values: Vec<String>,
}

/// What a client asks to impersonate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The user (never empty).
    pub user: String,
    /// The groups, in order, as given.
    pub groups: Vec<String>,
    /// The uid.
    pub uid: Option<String>,
    /// The extras, sorted by header name.
    pub extras: Vec<Extra>,
}

/// Why a client's `Impersonate-*` headers are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImpersonationError {
    /// Groups, extras or a uid without a user. `requests` lists them as the apiserver prints
    /// them (Go's `%v` of its `[]ObjectReference`).
    #[error("requested {requests} without impersonating a user")]
    WithoutUser {
        /// The list, `[{Group  g    } ...]`.
        requests: String,
    },
    /// A value (or an extra's key) that is not UTF-8.
    #[error("the {0} header does not hold UTF-8 text")]
    NotUtf8(String),
    /// More values than [`MAX_VALUES`].
    #[error(
        "too many Impersonate-* values ({0}): infra-proxy accepts at most {MAX_VALUES} in one request"
    )]
    TooMany(usize),
}

impl ImpersonationError {
    /// The answer to the client, as the apiserver gives it: `WithoutUser` is its plain-text 500
    /// (`responsewriters.InternalError`, which names the request URI); the others are a 400.
    pub fn refusal(&self, request_uri: &str) -> Refusal {
        match self {
            Self::WithoutUser { .. } => Refusal::Internal(sanitize_html(&format!(
                "Internal Server Error: {}: {self}",
                go_quote(request_uri)
            ))),
            Self::NotUtf8(_) | Self::TooMany(_) => Refusal::BadRequest(self.to_string()),
        }
    }
}

/// The impersonation `request` asks for, or its refusal (see [`requested`]).
pub fn requested_by<B>(request: &Request<B>) -> Result<Option<Requested>, Refusal> {
    requested(request.headers()).map_err(|error| {
        let uri = request
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        error.refusal(uri)
    })
}

/// Reads the client's `Impersonate-*` headers; `None` when they ask for no impersonation.
pub fn requested(headers: &HeaderMap) -> Result<Option<Requested>, ImpersonationError> {
    let count = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("impersonate-"))
        .count();
    if count > MAX_VALUES {
        return Err(ImpersonationError::TooMany(count));
    }
    let first = |name: &'static str| -> Result<Option<String>, ImpersonationError> {
        match headers.get(name) {
            Some(value) => Ok(Some(text(name, value)?).filter(|v| !v.is_empty())),
            None => Ok(None),
        }
    };
    let user = first(USER)?;
    let uid = first(UID)?;
    let groups = headers
        .get_all(GROUP)
        .iter()
        .map(|value| text(GROUP, value))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extras: Vec<Extra> = Vec::new();
    for name in headers.keys() {
        let Some(encoded) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        let values = headers
            .get_all(name)
            .iter()
            .map(|value| text(name.as_str(), value))
            .collect::<Result<Vec<_>, _>>()?;
        extras.push(Extra {
            header: name.clone(),
            key: extra_key(encoded)
                .ok_or_else(|| ImpersonationError::NotUtf8(name.as_str().to_owned()))?,
            values,
        });
    }
    extras.sort_by(|a, b| a.header.as_str().cmp(b.header.as_str()));

    let Some(user) = user else {
        if groups.is_empty() && extras.is_empty() && uid.is_none() {
            return Ok(None);
        }
        return Err(ImpersonationError::WithoutUser {
            requests: go_references(&groups, &extras, uid.as_deref()),
        });
    };
    Ok(Some(Requested {
        user,
        groups,
        uid,
        extras,
    }))
}

impl Requested {
    /// Every `impersonate` request the caller must be allowed, in the apiserver's order: the
    /// user, each group, each extra value, the uid.
    pub fn checks(&self) -> Vec<Attributes> {
        let mut checks = Vec::with_capacity(2 + self.groups.len() + self.extras.len());
        checks.push(match service_account(&self.user) {
            Some((namespace, name)) => {
                impersonate("", "serviceaccounts", None, Some(namespace), name)
            }
            None => impersonate("", "users", None, None, &self.user),
        });
        for group in &self.groups {
            checks.push(impersonate("", "groups", None, None, group));
        }
        for extra in &self.extras {
            let key = Some(extra.key.as_str()).filter(|k| !k.is_empty());
            for value in &extra.values {
                checks.push(impersonate(
                    AUTHENTICATION_GROUP,
                    "userextras",
                    key,
                    None,
                    value,
                ));
            }
        }
        if let Some(uid) = &self.uid {
            checks.push(impersonate(AUTHENTICATION_GROUP, "uids", None, None, uid));
        }
        checks
    }

    /// The identity the request acts as once every check allowed it, with the groups the
    /// apiserver gives it.
    pub fn identity(&self) -> Identity {
        let mut groups: Vec<String> = match service_account(&self.user) {
            Some((namespace, _)) if self.groups.is_empty() => vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            _ => self.groups.clone(),
        };
        if self.user == ANONYMOUS {
            if !groups.iter().any(|g| g == UNAUTHENTICATED) {
                groups.push(UNAUTHENTICATED.to_owned());
            }
        } else if !groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
        {
            groups.push(AUTHENTICATED.to_owned());
        }
        Identity::new(self.user.as_str(), groups)
    }
}

/// The attributes of one `impersonate` check.
fn impersonate(
    group: &str,
    resource: &str,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: &str,
) -> Attributes {
    Attributes::Resource(ResourceAttributes {
        verb: "impersonate".to_owned(),
        api_group: group.to_owned(),
        api_version: "v1".to_owned(),
        namespace: namespace.map(str::to_owned),
        resource: resource.to_owned(),
        subresource: subresource.map(str::to_owned),
        name: Some(name.to_owned()),
    })
}

fn text(name: &str, value: &HeaderValue) -> Result<String, ImpersonationError> {
    std::str::from_utf8(value.as_bytes())
        .map(str::to_owned)
        .map_err(|_| ImpersonationError::NotUtf8(name.to_owned()))
}

/// The apiserver's extra key: percent-decoded as Go's `url.PathUnescape` decodes (kept as it
/// is when an escape is malformed); `None` when the decoded bytes are not UTF-8.
fn extra_key(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|h| (*h as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                // Both are hexadecimal digits, so the byte fits.
                (Some(high), Some(low)) => {
                    decoded.push(u8::try_from(high * 16 + low).unwrap_or_default());
                    i += 3;
                }
                _ => return Some(encoded.to_owned()),
            }
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `(namespace, name)` when `user` is a service account's user name, as the apiserver's
/// `serviceaccount.SplitUsername` decides.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (is_dns_label(namespace) && !name.contains(':') && is_dns_subdomain(name))
        .then_some((namespace, name))
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

/// What the apiserver prints for its impersonation requests: Go's `%v` of a
/// `[]ObjectReference` (fields `Kind Namespace Name UID APIVersion ResourceVersion FieldPath`).
fn go_references(groups: &[String], extras: &[Extra], uid: Option<&str>) -> String {
    let reference = |kind: &str, name: &str, api_version: &str, field_path: &str| {
        format!("{{{kind}  {name}  {api_version}  {field_path}}}")
    };
    let mut items: Vec<String> = groups
        .iter()
        .map(|group| reference("Group", group, "", ""))
        .collect();
    for extra in extras {
        for value in &extra.values {
            items.push(reference(
                "UserExtra",
                value,
                AUTHENTICATION_VERSION,
                &extra.key,
            ));
        }
    }
    if let Some(uid) = uid {
        items.push(reference("UID", uid, AUTHENTICATION_VERSION, ""));
    }
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests;
