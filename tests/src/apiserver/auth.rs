//! Who a request acts as: how its caller authenticated (a client certificate or the static
//! bearer token), and the user it acts as after its `Impersonate-*` headers.

use std::collections::HashMap;

use http::header::{self, HeaderMap};

use super::connection::Connection;
use super::status::Status;
use super::{Shared, TOKEN_USER, request};

/// How the caller of the stand-in authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// A client certificate: its CN and O.
    ClientCert { user: String, groups: Vec<String> },
    /// The static bearer token.
    BearerToken,
    /// Neither; such requests get a 401.
    Anonymous,
}

/// The identity requests act as, after impersonation.
#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) name: String,
    pub(super) groups: Vec<String>,
    pub(super) extra: HashMap<String, Vec<String>>,
    pub(super) uid: Option<String>,
}

pub(super) fn authenticate(
    shared: &Shared,
    connection: &Connection,
    headers: &HeaderMap,
) -> Caller {
    if let Some((user, groups)) = &connection.cert {
        return Caller::ClientCert {
            user: user.clone(),
            groups: groups.clone(),
        };
    }
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let (Some(value), None, Some(token)) = (
        authorization.next(),
        authorization.next(),
        shared.bearer_token.as_deref(),
    ) && value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
    {
        return Caller::BearerToken;
    }
    Caller::Anonymous
}

pub(super) fn user_of(caller: &Caller, headers: &HeaderMap) -> Result<User, Status> {
    let (name, mut groups) = match caller {
        Caller::Anonymous => return Err(Status::unauthorized()),
        Caller::BearerToken => (TOKEN_USER.to_owned(), vec!["system:masters".to_owned()]),
        Caller::ClientCert { user, groups } => (user.clone(), groups.clone()),
    };
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let impersonated_user = values("impersonate-user");
    let impersonated_groups = values("impersonate-group");
    let impersonated_uid = values("impersonate-uid");
    let mut extra: HashMap<String, Vec<String>> = HashMap::new();
    for (header_name, value) in headers {
        if let Some(key) = header_name.as_str().strip_prefix("impersonate-extra-") {
            extra
                .entry(request::decode(key))
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let user = match impersonated_user.as_slice() {
        [] => {
            if !impersonated_groups.is_empty() || !extra.is_empty() || !impersonated_uid.is_empty()
            {
                return Err(Status::internal(
                    "Internal error occurred: requested impersonation of groups, extra or uid without impersonating a user",
                ));
            }
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".to_owned());
            }
            return Ok(User {
                name,
                groups,
                extra,
                uid: None,
            });
        }
        [user] => user.clone(),
        _ => {
            return Err(Status::bad_request(
                "only one Impersonate-User header is allowed",
            ));
        }
    };
    let mut groups = impersonated_groups;
    if user != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    Ok(User {
        name: user,
        groups,
        extra,
        uid: impersonated_uid.into_iter().next(),
    })
}
