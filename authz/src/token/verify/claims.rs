//! What a verified token says: the claims of Infra's own tokens, the identity mapped from an
//! external issuer's ID token, and the readers that hold each claim to its type and rules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TokenError;
use crate::policy::{NameError, validate_subject_name};
use crate::token::clip;
use crate::token::keys::Algorithm;

/// The claims of an Infra token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The issuer: the control plane's URL.
    pub iss: String,
    /// The user's id.
    pub sub: String,
    /// The destination the token is for. A verified token whose `aud` was an array holds the
    /// member that matched.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// A unique id (128 random bits, base64url), for audit.
    pub jti: String,
    /// The user's name: what grants and `Impersonate-User` use.
    pub name: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The session (access key id) the token was traded for, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When that session began, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid_at: Option<u64>,
}

/// An Infra token whose signature and claims have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedToken {
    /// The key that signed it.
    pub kid: String,
    /// The algorithm it was signed with.
    pub algorithm: Algorithm,
    /// Its claims.
    pub claims: Claims,
}

impl VerifiedToken {
    /// The user as Kubernetes will see it (`Impersonate-User`).
    pub fn user(&self) -> &str {
        &self.claims.name
    }

    /// The user's groups (`Impersonate-Group`).
    pub fn groups(&self) -> &[String] {
        &self.claims.groups
    }

    /// When the token expires (without the leeway). The verifier refuses an `exp` past what a
    /// `SystemTime` holds, so this cannot overflow; it saturates all the same.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.claims.exp))
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(MAX_TIME_CLAIM))
    }
}

/// The identity in an external issuer's ID token, after the [`ClaimMapping`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenIdentity {
    /// The username, with its prefix.
    pub user: String,
    /// The groups, each with the groups prefix.
    pub groups: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds, if the token has one.
    pub nbf: Option<u64>,
    /// The `sid` claim (the session the token was traded for), if the token has one.
    pub session: Option<String>,
    /// When the session began (`sid_at`), Unix seconds, if the token says.
    pub session_started: Option<u64>,
}

/// How an external issuer's claims become a Kubernetes user and groups; the same knobs as the
/// apiserver's `--oidc-username-claim`, `--oidc-username-prefix`, `--oidc-groups-claim` and
/// `--oidc-groups-prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The claim that holds the username: `sub` by default, commonly `email`. With `email`, a
    /// token whose `email_verified` is present and not `true` is refused.
    pub username_claim: String,
    /// Put in front of every username (for example `okta:`), so names from one issuer cannot
    /// collide with another's.
    pub username_prefix: String,
    /// The claim that holds the groups, a string or an array of strings: `groups` by default.
    /// A token without it has no groups.
    pub groups_claim: String,
    /// Put in front of every group name.
    pub groups_prefix: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            username_claim: "sub".into(),
            username_prefix: String::new(),
            groups_claim: "groups".into(),
            groups_prefix: String::new(),
        }
    }
}

/// The expiry and not-before rule, shared with the cache so that a cached answer is the answer
/// a fresh check would give. Valid while `now < exp + leeway` and `nbf <= now + leeway`.
/// The latest time a token may name: the end of year 9999 (RFC 3339's last year), far beyond any
/// real expiry and well inside what a `SystemTime` holds.
pub(in crate::token) const MAX_TIME_CLAIM: u64 = 253_402_300_799;

pub(in crate::token) fn check_times(
    exp: u64,
    nbf: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<(), TokenError> {
    if exp > MAX_TIME_CLAIM || nbf.is_some_and(|nbf| nbf > MAX_TIME_CLAIM) {
        return Err(TokenError::Malformed("a time claim is past the year 9999"));
    }
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp, now });
    }
    if let Some(nbf) = nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(TokenError::NotYetValid { nbf, now });
    }
    Ok(())
}

pub(super) fn missing(claim: &str) -> TokenError {
    TokenError::MissingClaim(clip(claim))
}

/// A NumericDate claim, in whole seconds (fractions and negative numbers are refused).
pub(super) fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| TokenError::InvalidClaim(clip(name))),
    }
}

/// A non-empty string claim.
pub(super) fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, TokenError> {
    match claims.get(name) {
        None => Err(missing(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(TokenError::InvalidClaim(clip(name))),
    }
}

pub(super) fn string_items(items: &[Value], name: &str) -> Result<Vec<String>, TokenError> {
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| TokenError::InvalidClaim(clip(name)))
        })
        .collect()
}

pub(super) fn check_name(name: &str) -> Result<(), TokenError> {
    validate_subject_name(name).map_err(|err| match err {
        NameError::Reserved(name) => TokenError::ReservedName(clip(&name)),
        other => TokenError::InvalidName(other),
    })
}
