//! The record of every request the stand-in received, for tests to assert header hygiene.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Uri, Version};

use super::auth::Caller;
use super::connection::Connection;
use super::{Shared, lock};

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: Uri,
    /// The request target as it came: over HTTP/1.1 in origin form (`/path?query`), or in
    /// absolute form (`https://host/path`) when written for a proxy; over HTTP/2 with the
    /// scheme and authority of its pseudo-headers.
    pub target: Uri,
    pub version: Version,
    /// Every header line, duplicates kept.
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// Who the caller authenticated as (before impersonation).
    pub caller: Caller,
    /// The body, for requests that are not upgrades.
    pub body: Bytes,
}

impl RecordedRequest {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Every value of a header, in order (lossy UTF-8).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The one value of a header, if there is exactly one.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.header_values(name).as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

pub(super) fn record(
    shared: &Shared,
    connection: &Connection,
    parts: &http::request::Parts,
    caller: &Caller,
    body: &Bytes,
) {
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.clone(), |pq| Uri::from(pq.clone()));
    lock(&shared.recorded).push(RecordedRequest {
        method: parts.method.clone(),
        uri,
        target: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        peer: connection.peer,
        caller: caller.clone(),
        body: body.clone(),
    });
    shared.recorded_count.send_modify(|count| *count += 1);
}
