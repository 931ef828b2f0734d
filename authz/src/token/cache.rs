//! A cache of verified tokens, so a repeated bearer token costs a lookup, not a signature check.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moka::Equivalent;

use super::unix_seconds;
use super::verify::{
    MAX_TOKEN_BYTES, TokenError, TokenIdentity, VerifiedToken, Verifier, check_times,
};

/// Sizing of a [`TokenCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheConfig {
    /// The most tokens kept; the least useful are evicted first. Default 10 000 (each entry is
    /// about the size of its token, typically under 2 KiB).
    pub max_entries: u64,
    /// How long an entry may stay at most, whatever its token says: an upper bound for
    /// eviction only, on the real clock. Validity is decided by `exp` against the `now` of
    /// each check. Default one hour, the usual lifetime of an ID token; Infra's own tokens
    /// live minutes.
    pub max_lifetime: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_lifetime: Duration::from_hours(1),
        }
    }
}

/// Tokens that verified, with what they verified to.
///
/// # Expiry
///
/// An entry remembers its token's `exp` and `nbf`; every hit checks them against the `now`
/// passed in, with the verifier's leeway, by the same rule as a fresh check (so a cached answer
/// is the answer a fresh check would give). A hit past `exp` is refused with
/// [`TokenError::Expired`] and dropped. An entry also remembers the [`Verifier`] that filled it
/// and the audience it was checked for; a different verifier (new keys) or audience is a miss.
///
/// Refusals are never cached: a bad token is checked, and refused, every time. The cheap
/// refusals (size, shape, `alg`, `kid`) come before any signature work.
///
/// # Key, and why a hit is fast
///
/// Entries are keyed by the token's signature segment: 86 characters for EdDSA and ES256, 342
/// for RS256, where the token is often 1 KiB or more. A hit costs moka's SipHash over that
/// segment, moka's lookup and bookkeeping (most of the cost), and one pass over the token to
/// compare it with the stored one. Keying by the SHA-256 of the token would add about half a
/// microsecond per KiB on every request, even with the SHA extensions; keying by the whole
/// token would SipHash all of it.
///
/// The signature identifies the token in practice: it covers the header and the claims,
/// including a random 128-bit `jti`, and only the key's holder can make one. The full
/// comparison makes that exact: a token that reuses another's signature with other claims is a
/// miss and goes through full verification (where it fails).
///
/// Both comparisons (the key's, inside the map, and the whole token's) run in constant time.
/// A map keyed by SHA-256 digests would not need that, as timing could only reveal digest
/// prefixes; keyed by the signature, a timing difference would reveal how much of a cached
/// token's signature, then claims, a guess got right.
pub struct TokenCache<T> {
    entries: moka::sync::Cache<SignatureKey, Arc<Entry<T>>>,
}

impl<T> fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the entries: they hold bearer tokens.
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

struct Entry<T> {
    token: Box<str>,
    audience: Box<str>,
    verifier: u64,
    exp: u64,
    nbf: Option<u64>,
    value: Arc<T>,
}

/// The owned key: a token's signature segment.
struct SignatureKey(Box<str>);

impl Hash for SignatureKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash as `SignatureQuery` does: as a `str`.
        self.0.as_ref().hash(state);
    }
}

impl PartialEq for SignatureKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for SignatureKey {}

/// The borrowed key used to look up, so a hit allocates nothing.
struct SignatureQuery<'a>(&'a str);

impl Hash for SignatureQuery<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<SignatureKey> for SignatureQuery<'_> {
    fn equivalent(&self, key: &SignatureKey) -> bool {
        constant_time_eq(self.0.as_bytes(), key.0.as_bytes())
    }
}

/// Equality whose time depends on the lengths only (which are public: a signature's length is
/// fixed by its algorithm). The OR of XORs has no early exit, and compiles to vector code.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl<T: Send + Sync + 'static> TokenCache<T> {
    /// An empty cache.
    pub fn new(config: TokenCacheConfig) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.max_lifetime)
                .build(),
        }
    }

    /// Drops every entry (for example when the keys change).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// How many tokens are cached (approximate: moka applies writes in batches).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// [`Verifier::verify_mapped`], with the identity turned into a `T` by `into` once, when
    /// the token is first verified; a hit answers the stored `T` without calling `into`. The
    /// `bool` says whether the answer came from the cache (for hit-ratio metrics).
    pub fn verify_mapped_into(
        &self,
        verifier: &Verifier,
        token: &str,
        audience: &str,
        now: SystemTime,
        into: impl FnOnce(TokenIdentity) -> T,
    ) -> Result<(Arc<T>, bool), TokenError> {
        let mut missed = false;
        let value = self.get_or_verify(verifier, token, audience, now, || {
            missed = true;
            let identity = verifier.verify_mapped(token, audience, now)?;
            let (exp, nbf) = (identity.exp, identity.nbf);
            Ok((into(identity), exp, nbf))
        })?;
        Ok((value, !missed))
    }

    /// The cached answer for `token`, or `verify`'s, which is cached when it is a success.
    /// `verify` gives the value with its `exp` and `nbf`.
    fn get_or_verify(
        &self,
        verifier: &Verifier,
        token: &str,
        audience: &str,
        now: SystemTime,
        verify: impl FnOnce() -> Result<(T, u64, Option<u64>), TokenError>,
    ) -> Result<Arc<T>, TokenError> {
        // Before hashing anything: never spend work on an oversized token.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let signature = token
            .rsplit_once('.')
            .map_or("", |(_, signature)| signature);
        if !signature.is_empty()
            && let Some(entry) = self.entries.get(&SignatureQuery(signature))
            && entry.verifier == verifier.id()
            && *entry.audience == *audience
            && constant_time_eq(entry.token.as_bytes(), token.as_bytes())
        {
            let checked = check_times(
                entry.exp,
                entry.nbf,
                unix_seconds(now),
                verifier.leeway_secs(),
            );
            if let Err(err) = checked {
                if matches!(err, TokenError::Expired { .. }) {
                    self.entries.invalidate(&SignatureQuery(signature));
                }
                return Err(err);
            }
            return Ok(Arc::clone(&entry.value));
        }

        let (value, exp, nbf) = verify()?;
        let value = Arc::new(value);
        self.entries.insert(
            SignatureKey(signature.into()),
            Arc::new(Entry {
                token: token.into(),
                audience: audience.into(),
                verifier: verifier.id(),
                exp,
                nbf,
                value: Arc::clone(&value),
            }),
        );
        Ok(value)
    }
}

impl TokenCache<VerifiedToken> {
    /// [`Verifier::verify`], answered from the cache when this token was verified before by
    /// this verifier for this audience and has not expired at `now`.
    pub fn verify(
        &self,
        verifier: &Verifier,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        self.get_or_verify(verifier, token, audience, now, || {
            let verified = verifier.verify(token, audience, now)?;
            let (exp, nbf) = (verified.claims.exp, verified.claims.nbf);
            Ok((verified, exp, Some(nbf)))
        })
    }
}

impl TokenCache<TokenIdentity> {
    /// [`Verifier::verify_mapped`], answered from the cache when this token was verified
    /// before by this verifier for this audience and has not expired at `now`.
    pub fn verify_mapped(
        &self,
        verifier: &Verifier,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Arc<TokenIdentity>, TokenError> {
        self.get_or_verify(verifier, token, audience, now, || {
            let identity = verifier.verify_mapped(token, audience, now)?;
            let (exp, nbf) = (identity.exp, identity.nbf);
            Ok((identity, exp, nbf))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::token::keys::SigningAlgorithm;
    use crate::token::test_support::{
        AUDIENCE, ISSUER, T0, at, forge, issuer, part, request, verifier_for,
    };
    use crate::token::{ClaimMapping, SigningKey, TrustedKey};

    fn cache<T: Send + Sync + 'static>() -> TokenCache<T> {
        TokenCache::new(TokenCacheConfig::default())
    }

    #[test]
    fn a_hit_returns_the_same_claims() {
        let clock = ManualClock::at_unix(T0);
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let verifier = verifier_for(&[issuer.signing_key()]);
        let cache = cache();
        let groups = vec!["Engineering".to_owned()];
        let issued = issuer.issue(&request(&groups), clock.now()).expect("issue");
        let token = issued.token.expose();

        let first = cache
            .verify(&verifier, token, AUDIENCE, clock.now())
            .expect("miss");
        clock.advance(Duration::from_mins(1));
        let second = cache
            .verify(&verifier, token, AUDIENCE, clock.now())
            .expect("hit");
        assert!(Arc::ptr_eq(&first, &second), "served from the cache");
        assert_eq!(second.claims, issued.claims);
        assert_eq!(
            *second,
            verifier
                .verify(token, AUDIENCE, clock.now())
                .expect("fresh")
        );
        cache.entries.run_pending_tasks();
        assert_eq!(cache.entry_count(), 1);
        assert!(!format!("{cache:?}").contains(token));
    }

    #[test]
    fn a_cached_token_is_refused_after_it_expires() {
        let clock = ManualClock::at_unix(T0);
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let verifier = verifier_for(&[issuer.signing_key()]);
        let cache = cache();
        let issued = issuer.issue(&request(&[]), clock.now()).expect("issue");
        let token = issued.token.expose();
        cache
            .verify(&verifier, token, AUDIENCE, clock.now())
            .expect("miss");

        // Still cached; the leeway applies as in a fresh check.
        clock.set(at(T0 + 300 + 29));
        assert!(
            cache
                .verify(&verifier, token, AUDIENCE, clock.now())
                .is_ok()
        );
        clock.set(at(T0 + 300 + 30));
        let expired = TokenError::Expired {
            exp: T0 + 300,
            now: T0 + 330,
        };
        assert_eq!(
            cache.verify(&verifier, token, AUDIENCE, clock.now()),
            Err(expired.clone())
        );
        assert_eq!(
            verifier.verify(token, AUDIENCE, clock.now()),
            Err(expired),
            "the cached answer is the fresh one"
        );
        // And it stays refused.
        assert!(
            cache
                .verify(&verifier, token, AUDIENCE, clock.now())
                .is_err()
        );
    }

    #[test]
    fn a_cached_token_is_refused_before_nbf_if_the_clock_goes_back() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let verifier = verifier_for(&[issuer.signing_key()]);
        let cache = cache();
        let issued = issuer.issue(&request(&[]), at(T0)).expect("issue");
        let token = issued.token.expose();
        cache
            .verify(&verifier, token, AUDIENCE, at(T0))
            .expect("miss");
        assert_eq!(
            cache.verify(&verifier, token, AUDIENCE, at(T0 - 31)),
            Err(TokenError::NotYetValid {
                nbf: T0,
                now: T0 - 31
            })
        );
    }

    #[test]
    fn failures_are_not_cached() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let verifier = verifier_for(&[issuer.signing_key()]);
        let cache: TokenCache<VerifiedToken> = cache();
        let issued = issuer.issue(&request(&[]), at(T0)).expect("issue");
        let token = issued.token.expose();
        for _ in 0..2 {
            assert_eq!(
                cache.verify(&verifier, token, "staging", at(T0)),
                Err(TokenError::WrongAudience)
            );
        }
        cache.entries.run_pending_tasks();
        assert_eq!(cache.entry_count(), 0);
        // Once it verified for its own audience, it is still refused for another.
        cache
            .verify(&verifier, token, AUDIENCE, at(T0))
            .expect("verify");
        assert_eq!(
            cache.verify(&verifier, token, "staging", at(T0)),
            Err(TokenError::WrongAudience)
        );
        let oversized = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            cache.verify(&verifier, &oversized, AUDIENCE, at(T0)),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_token_reusing_a_cached_signature_is_not_a_hit() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let verifier = verifier_for(&[issuer.signing_key()]);
        let cache = cache();
        let issued = issuer.issue(&request(&[]), at(T0)).expect("issue");
        let token = issued.token.expose();
        cache
            .verify(&verifier, token, AUDIENCE, at(T0))
            .expect("verify");

        let key = issuer.signing_key();
        let mut claims = serde_json::to_value(&issued.claims).expect("claims");
        claims["groups"] = json!(["Admins"]);
        let other = forge(
            key,
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}),
            &claims,
        );
        let spliced = format!("{}.{}.{}", part(&other, 0), part(&other, 1), part(token, 2));
        assert_eq!(
            cache.verify(&verifier, &spliced, AUDIENCE, at(T0)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_new_verifier_does_not_inherit_the_old_ones_entries() {
        let issuer = issuer(SigningAlgorithm::EdDsa);
        let old = verifier_for(&[issuer.signing_key()]);
        let cache = cache();
        let issued = issuer.issue(&request(&[]), at(T0)).expect("issue");
        let token = issued.token.expose();
        cache.verify(&old, token, AUDIENCE, at(T0)).expect("verify");

        // The key was rotated out: the cached answer must not outlive it.
        let rotated = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let new = verifier_for(&[&rotated]);
        assert_eq!(
            cache.verify(&new, token, AUDIENCE, at(T0)),
            Err(TokenError::UnknownKid(
                issuer.signing_key().kid().to_owned()
            ))
        );
    }

    #[test]
    fn mapped_identities_are_cached_too() {
        let idp = SigningKey::generate(SigningAlgorithm::Es256).expect("generate");
        let verifier = Verifier::builder("https://idp.example.com")
            .trust_key(TrustedKey::from_jwk(idp.public_jwk()).expect("key"))
            .claim_mapping(ClaimMapping {
                username_prefix: "idp:".into(),
                ..ClaimMapping::default()
            })
            .build()
            .expect("verifier");
        let claims = json!({
            "iss": "https://idp.example.com", "aud": "kubernetes", "sub": "carl",
            "exp": T0 + 3600, "groups": "Ops",
        });
        let token = forge(&idp, &json!({"alg": "ES256", "kid": idp.kid()}), &claims);
        let cache = cache();
        let first = cache
            .verify_mapped(&verifier, &token, "kubernetes", at(T0))
            .expect("miss");
        let second = cache
            .verify_mapped(&verifier, &token, "kubernetes", at(T0 + 10))
            .expect("hit");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(second.user, "idp:carl");
        assert_eq!(second.groups, ["Ops"]);
        assert!(matches!(
            cache.verify_mapped(&verifier, &token, "kubernetes", at(T0 + 3630)),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(verifier.issuer(), "https://idp.example.com");
        assert_ne!(verifier.issuer(), ISSUER);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
