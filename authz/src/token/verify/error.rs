//! Why a token is refused: one [`TokenError`] variant for each refusal the verifier makes.

use crate::policy::NameError;
use crate::token::keys::Algorithm;

/// Why a token was refused. Every refusal becomes a 401 `Status`, so kubectl fetches a new one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES); it was not parsed
    /// at all.
    #[error("the token is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a compact JWS: three base64url parts, a JSON object header with an
    /// `alg`, a JSON object payload.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The header says `alg: none` (in any case): an unsigned token.
    #[error("the token is unsigned (`alg: none`)")]
    Unsigned,
    /// The header names an HMAC algorithm. Never accepted: with a public key as the HMAC secret
    /// anyone could sign (the key-confusion attack).
    #[error("the token uses the symmetric algorithm {0:?}, which is never accepted")]
    SymmetricAlgorithm(String),
    /// The header names an algorithm Infra does not verify.
    #[error("the token's algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    /// The header or the claims name one member twice, in any object at any depth. Parsers
    /// disagree on which of the two wins, so neither is believed.
    #[error("the member {key:?} appears more than once in the token's {part}")]
    DuplicateKey {
        /// `"header"` or `"claims"`.
        part: &'static str,
        /// The repeated member name (clipped).
        key: String,
    },
    /// The header has a `crit` member: it relies on an extension Infra does not understand.
    #[error("the token's header has critical extensions, which are not understood")]
    CriticalHeader,
    /// The header has no `kid`. Keys are chosen by `kid`, never by trying each one.
    #[error("the token's header names no key (`kid`)")]
    MissingKid,
    /// No trusted key has the header's `kid`.
    #[error("the token's key {0:?} is not trusted")]
    UnknownKid(String),
    /// The header's `alg` is not the one algorithm the key is pinned to.
    #[error("key {kid:?} verifies only {expected}, but the token says {got}")]
    AlgorithmMismatch {
        /// The key.
        kid: String,
        /// The key's algorithm.
        expected: Algorithm,
        /// The token's.
        got: Algorithm,
    },
    /// The trusted key could not be used to verify (it should have been refused when loaded).
    #[error("key {0:?} cannot verify signatures")]
    UnusableKey(String),
    /// The signature does not verify with the key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// A claim the token must carry is absent.
    #[error("the token has no {0:?} claim")]
    MissingClaim(String),
    /// A claim has the wrong JSON type or form (times must be whole seconds).
    #[error("the token's {0:?} claim has the wrong type or form")]
    InvalidClaim(String),
    /// `iss` is not this verifier's issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not name this destination.
    #[error("the token is not meant for this destination")]
    WrongAudience,
    /// `now` is at or past `exp` plus the leeway.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`, in Unix seconds.
        exp: u64,
        /// The time of the check, in Unix seconds.
        now: u64,
    },
    /// `now` plus the leeway is before `nbf`.
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`, in Unix seconds.
        nbf: u64,
        /// The time of the check, in Unix seconds.
        now: u64,
    },
    /// A user or group name starts with `system:`, which only Kubernetes may use.
    #[error("the token names {0:?}, and `system:` names are reserved for Kubernetes")]
    ReservedName(String),
    /// A user or group name breaks the rule for names
    /// ([`validate_name`](crate::policy::validate_name)); the message says which rule.
    #[error("the token names an invalid user or group: {0}")]
    InvalidName(NameError),
    /// The username is the `email` claim and `email_verified` is false.
    #[error("the token's email address is not verified")]
    EmailNotVerified,
}
