//! Tokens: the short-lived JWTs the control plane issues and infra-proxy verifies.
//!
//! The pieces, in the order a token lives through them:
//!
//! - [`SigningKey`]: an Ed25519 (default) or ECDSA P-256 key pair, generated with `ring` or
//!   loaded from PKCS#8. Its `kid` is the RFC 7638 thumbprint of its public [`Jwk`]. The private
//!   half only leaves through [`PrivateKeyDer`] and [`Secret`](crate::policy::Secret), whose
//!   `Debug` is redacted.
//! - [`Issuer`]: signs [`Claims`] (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `name`,
//!   `groups`) for one destination, valid for a TTL from a `now` the caller passes in.
//! - [`Jwks`]: the published key set, read leniently (keys Infra cannot use are skipped, not
//!   fatal) and written in the RFC 7517 shape.
//! - [`Verifier`]: trusts keys by `kid`, each pinned to exactly one algorithm, and refuses
//!   everything else with its own [`TokenError`] variant. [`Verifier::verify`] checks Infra's own
//!   tokens; [`Verifier::verify_mapped`] maps an external OIDC issuer's ID token to a
//!   [`TokenIdentity`] through a [`ClaimMapping`], as the apiserver's `--oidc-*` flags do.
//! - [`TokenCache`]: verified tokens, so a repeated bearer token costs a hash lookup and not a
//!   signature check; every hit re-checks `exp` and `nbf` against the caller's `now`.
//!
//! # What the verifier refuses, in order
//!
//! 1. more than [`MAX_TOKEN_BYTES`] (before any parsing or base64 decoding);
//! 2. anything but three dot-separated base64url parts with a JSON object header, and a header
//!    that names a member twice (in any object, at any depth);
//! 3. `alg: none` (any case), then any HMAC algorithm (the public key would be the HMAC secret:
//!    the classic key-confusion attack), then algorithms Infra does not support;
//! 4. a `crit` header (no extension is understood);
//! 5. a missing `kid` (keys are chosen by `kid`, never by trying them all), an unknown `kid`;
//! 6. a header `alg` other than the one the key is pinned to;
//! 7. a bad signature; then, and only on signed claims: a claim named twice (in any object, at
//!    any depth: JSON parsers disagree on which one wins), missing claims, the wrong `iss`, an
//!    `aud` (string or array) without this destination, `exp`/`nbf` outside the leeway, user
//!    and group names that break the rule for names
//!    ([`validate_name`](crate::policy::validate_name): length, control and invisible format
//!    characters, edge white space, NFC), and `system:` user or group names.
//!
//! Time is always a parameter (`now: SystemTime`): `jsonwebtoken` reads the system clock for its
//! own `exp`/`nbf` checks, so those are switched off and done here instead.

mod cache;
mod issue;
mod jwk;
mod keys;
mod verify;

#[cfg(test)]
mod test_support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use cache::{TokenCache, TokenCacheConfig};
pub use issue::{BearerToken, IssueError, IssuedToken, Issuer, SessionClaim, TokenRequest};
pub use jwk::{Jwk, JwkError, Jwks, JwksError, TrustedKey};
pub use keys::{Algorithm, KeyError, PrivateKeyDer, SigningAlgorithm, SigningKey};
pub use verify::{
    ClaimMapping, Claims, DEFAULT_LEEWAY, MAX_LEEWAY, MAX_TOKEN_BYTES, TokenError, TokenIdentity,
    VerifiedToken, Verifier, VerifierBuilder, VerifierError,
};

/// Base64url without padding, as JOSE uses everywhere.
fn b64url_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url without padding: padding, other alphabets and non-canonical trailing bits
/// are refused, so each token has exactly one byte form.
fn b64url_decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Whole seconds since the Unix epoch; 0 for times before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// At most 64 characters of untrusted text, for error messages and logs.
fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
