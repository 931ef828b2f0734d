//! Issuing Infra's tokens.

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::Serialize;

use super::keys::{Algorithm, KeyError, SigningKey};
use super::verify::{Claims, MAX_TOKEN_BYTES};
use super::{b64url_encode, clip, unix_seconds};
use crate::policy::{NameError, validate_subject_name};

/// What a token is for: who, which destination, how long.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The user's id (`sub`).
    pub user_id: &'a str,
    /// The user's name (`name`), as grants and Kubernetes know it.
    pub name: &'a str,
    /// The user's groups.
    pub groups: &'a [String],
    /// The destination (`aud`).
    pub audience: &'a str,
    /// How long the token is valid, in whole seconds (at least one).
    pub ttl: Duration,
    /// The session (access key) the token was traded for (`sid`, `sid_at`), so that verifiers
    /// that know the live sessions can refuse a token whose session has ended.
    pub session: Option<SessionClaim<'a>>,
}

/// The session a token was traded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClaim<'a> {
    /// The session's id (the access key id).
    pub id: &'a str,
    /// When the session began, Unix seconds.
    pub started_at: u64,
}

/// A signed token, as sent in `Authorization: Bearer`. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token itself. Call only where it is sent, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// A freshly issued token and the claims in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: BearerToken,
    /// What it says.
    pub claims: Claims,
}

/// Why a token was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The issuer (`iss`) is empty.
    #[error("the issuer is empty")]
    EmptyIssuer,
    /// The destination (`aud`) is empty.
    #[error("the destination (audience) is empty")]
    EmptyAudience,
    /// The TTL is under one second.
    #[error("a token must be valid for at least one second")]
    InvalidTtl,
    /// A user or group name starts with `system:`, which only Kubernetes may use.
    #[error("{0:?} starts with `system:`, which is reserved for Kubernetes")]
    ReservedName(String),
    /// A user or group name is empty or holds control characters.
    #[error("invalid user or group name")]
    InvalidName(#[source] NameError),
    /// The token would be larger than verifiers accept (too many groups).
    #[error("the token would be {len} bytes, more than the {max} verifiers accept")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The system random number generator failed (for `jti`).
    #[error("the system random number generator failed")]
    Random,
    /// Signing failed.
    #[error("signing the token failed")]
    Sign(#[source] KeyError),
}

/// Signs Infra's tokens: an issuer name (`iss`) and the current signing key.
#[derive(Debug)]
pub struct Issuer {
    name: String,
    key: SigningKey,
    rng: SystemRandom,
}

/// The JOSE header Infra writes.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

impl Issuer {
    /// An issuer named `issuer` (the control plane's URL) that signs with `key`.
    pub fn new(issuer: impl Into<String>, key: SigningKey) -> Result<Self, IssueError> {
        let name = issuer.into();
        if name.is_empty() {
            return Err(IssueError::EmptyIssuer);
        }
        Ok(Self {
            name,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The issuer name (`iss`).
    pub fn issuer(&self) -> &str {
        &self.name
    }

    /// The key tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues a token valid from `now` for `request.ttl`.
    ///
    /// Refuses `system:` users and groups (and empty or control-character names): such a
    /// token would be refused by every verifier anyway.
    pub fn issue(
        &self,
        request: &TokenRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedToken, IssueError> {
        if request.audience.is_empty() {
            return Err(IssueError::EmptyAudience);
        }
        let ttl = request.ttl.as_secs();
        if ttl == 0 {
            return Err(IssueError::InvalidTtl);
        }
        check_name(request.user_id)?;
        check_name(request.name)?;
        for group in request.groups {
            check_name(group)?;
        }

        let mut jti = [0_u8; 16];
        self.rng.fill(&mut jti).map_err(|_| IssueError::Random)?;
        let now = unix_seconds(now);
        let claims = Claims {
            iss: self.name.clone(),
            sub: request.user_id.to_owned(),
            aud: request.audience.to_owned(),
            exp: now.saturating_add(ttl),
            nbf: now,
            iat: now,
            jti: b64url_encode(jti),
            name: request.name.to_owned(),
            groups: request.groups.to_vec(),
            sid: request.session.map(|s| s.id.to_owned()),
            sid_at: request.session.map(|s| s.started_at),
        };
        let header = Header {
            alg: Algorithm::from(self.key.algorithm()).as_str(),
            typ: "JWT",
            kid: self.key.kid(),
        };
        // Invariant: the header and claims are structs of strings, numbers and a list of
        // strings, which serde_json always serializes.
        let header = serde_json::to_vec(&header).expect("a JOSE header always serializes");
        let body = serde_json::to_vec(&claims).expect("token claims always serialize");
        let token = sign_compact(&self.key, &header, &body).map_err(IssueError::Sign)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(IssueError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        Ok(IssuedToken {
            token: BearerToken(token),
            claims,
        })
    }
}

/// The compact JWS of a serialized header and claims, signed with `key`.
pub(super) fn sign_compact(
    key: &SigningKey,
    header: &[u8],
    claims: &[u8],
) -> Result<String, KeyError> {
    let mut token = b64url_encode(header);
    token.push('.');
    token.push_str(&b64url_encode(claims));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64url_encode(signature));
    Ok(token)
}

fn check_name(name: &str) -> Result<(), IssueError> {
    validate_subject_name(name).map_err(|err| match err {
        NameError::Reserved(name) => IssueError::ReservedName(clip(&name)),
        other => IssueError::InvalidName(other),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::token::keys::SigningAlgorithm;
    use crate::token::test_support::{AUDIENCE, T0, issuer, request};

    #[test]
    fn system_names_are_never_issued() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let masters = vec!["Engineering".to_owned(), "system:masters".to_owned()];
        assert_eq!(
            issuer.issue(&request(&masters), SystemTime::UNIX_EPOCH),
            Err(IssueError::ReservedName("system:masters".into()))
        );
        let admin = TokenRequest {
            name: "system:admin",
            ..request(&[])
        };
        assert_eq!(
            issuer.issue(&admin, SystemTime::UNIX_EPOCH),
            Err(IssueError::ReservedName("system:admin".into()))
        );
        let node = TokenRequest {
            user_id: "system:node:n1",
            ..request(&[])
        };
        assert_eq!(
            issuer.issue(&node, SystemTime::UNIX_EPOCH),
            Err(IssueError::ReservedName("system:node:n1".into()))
        );
        let control = vec!["a\nb".to_owned()];
        assert_eq!(
            issuer.issue(&request(&control), SystemTime::UNIX_EPOCH),
            Err(IssueError::InvalidName(NameError::ControlCharacter(
                "a\nb".into()
            )))
        );
    }

    #[test]
    fn requests_without_audience_or_lifetime_are_refused() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let now = ManualClock::at_unix(T0).now();
        let no_audience = TokenRequest {
            audience: "",
            ..request(&[])
        };
        assert_eq!(
            issuer.issue(&no_audience, now),
            Err(IssueError::EmptyAudience)
        );
        let instant = TokenRequest {
            ttl: Duration::from_millis(999),
            ..request(&[])
        };
        assert_eq!(issuer.issue(&instant, now), Err(IssueError::InvalidTtl));
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        assert_eq!(
            Issuer::new("", key).map(|_| ()),
            Err(IssueError::EmptyIssuer)
        );
    }

    #[test]
    fn tokens_the_verifier_would_refuse_for_size_are_not_issued() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let groups: Vec<String> = (0..1000).map(|i| format!("group-{i:04}")).collect();
        let Err(IssueError::TooLarge { len, max }) =
            issuer.issue(&request(&groups), SystemTime::UNIX_EPOCH)
        else {
            panic!("expected TooLarge");
        };
        assert!(len > max);
        assert_eq!(max, MAX_TOKEN_BYTES);
    }

    #[test]
    fn each_token_has_its_own_jti_and_a_redacted_debug() {
        let issuer = issuer(SigningAlgorithm::Es256);
        let now = ManualClock::at_unix(T0).now();
        let jtis: HashSet<String> = (0..50)
            .map(|_| issuer.issue(&request(&[]), now).expect("issue").claims.jti)
            .collect();
        assert_eq!(jtis.len(), 50);
        let issued = issuer.issue(&request(&[]), now).expect("issue");
        assert_eq!(issued.claims.aud, AUDIENCE);
        let shown = format!("{issued:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains(issued.token.expose()), "{shown}");
        assert!(!format!("{issuer:?}").contains("PRIVATE"));
    }
}
