//! Access keys: `<id>.<secret>`.
//!
//! The id (9 random bytes, 12 characters of URL-safe base64) names the key and is stored as is;
//! the secret (32 random bytes, 43 characters of URL-safe base64) is stored only as its SHA-256,
//! and compared in constant time. Neither alphabet holds `.`, so the first `.` splits the two.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use infra_authz::policy::Secret;

/// How many random bytes make a key id.
const ID_BYTES: usize = 9;
/// How many random bytes make a key secret.
pub const SECRET_BYTES: usize = 32;
/// The length of a stored secret hash.
pub const HASH_LEN: usize = 32;

/// A session key lapses this long after it was made.
pub const SESSION_EXPIRY: Duration = Duration::from_hours(30 * 24);
/// A session key lapses when unused for this long.
pub const SESSION_INACTIVITY: Duration = Duration::from_hours(3 * 24);

/// A freshly made access key: its id, the whole `<id>.<secret>` to hand to the user once, and
/// the hash to store. `Debug` never shows the secret.
pub struct NewKey {
    /// The public id.
    pub id: String,
    /// `<id>.<secret>`, shown to the user once and never stored.
    pub key: Secret,
    /// SHA-256 of the secret part, what the store keeps.
    pub hash: [u8; HASH_LEN],
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot make an access key: the random number generator failed")]
pub struct GenerateError;

/// Makes a new key.
pub fn generate(rng: &SystemRandom) -> Result<NewKey, GenerateError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id).map_err(|_| GenerateError)?;
    rng.fill(&mut secret).map_err(|_| GenerateError)?;
    let id = URL_SAFE_NO_PAD.encode(id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_secret(&secret);
    Ok(NewKey {
        key: Secret::new(format!("{id}.{secret}")),
        id,
        hash,
    })
}

/// A presented key, split into its parts. `Debug` never shows the secret.
pub struct Presented<'a> {
    /// The id part.
    pub id: &'a str,
    secret: &'a str,
}

impl fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<'a> Presented<'a> {
    /// Splits `<id>.<secret>`; `None` when it does not have that shape.
    pub fn parse(key: &'a str) -> Option<Self> {
        let (id, secret) = key.split_once('.')?;
        let shaped = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // Generous bounds: ids and secrets made elsewhere (the policy file) may be longer.
        (shaped(id, 64) && shaped(secret, 256)).then_some(Self { id, secret })
    }

    /// SHA-256 of the secret part, as the store keeps it.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        hash_secret(self.secret)
    }

    /// Whether the secret part hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        bool::from(hash_secret(self.secret).as_slice().ct_eq(stored))
    }
}

/// SHA-256 of a key's secret part. The secret is 256 random bits, so a fast hash is enough; a
/// password hash would only slow every request.
pub fn hash_secret(secret: &str) -> [u8; HASH_LEN] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let key = generate(&SystemRandom::new()).expect("key");
        let text = key.key.expose();
        let (id, secret) = text.split_once('.').expect("a dot");
        assert_eq!(id, key.id);
        assert_eq!(id.len(), 12);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(secret).expect("base64").len(),
            SECRET_BYTES
        );
        let presented = Presented::parse(text).expect("parses");
        assert!(presented.matches(&key.hash));
        assert!(!format!("{key:?}").contains(secret));
        assert!(!format!("{presented:?}").contains(secret));
    }

    #[test]
    fn wrong_or_malformed_keys_do_not_match() {
        let key = generate(&SystemRandom::new()).expect("key");
        let other = generate(&SystemRandom::new()).expect("key");
        let wrong = format!(
            "{}.{}",
            key.id,
            other.key.expose().split_once('.').expect("dot").1
        );
        assert!(!Presented::parse(&wrong).expect("parses").matches(&key.hash));
        for bad in ["", ".", "abc", "abc.", ".abc", "a b.c", "abc.d\u{e9}f"] {
            assert!(Presented::parse(bad).is_none(), "{bad:?}");
        }
        assert!(!Presented::parse("a.b").expect("parses").matches(&[0u8; 3]));
    }
}
