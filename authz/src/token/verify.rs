//! Verifying tokens: Infra's own, and ID tokens of external OIDC issuers.

mod claims;
mod error;
mod unique_keys;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use serde_json::{Map, Value};

use self::claims::{check_name, missing, string_claim, string_items, time_claim};
use self::unique_keys::{NotUnique, check_unique_keys};
use super::jwk::{Jwks, TrustedKey};
use super::keys::Algorithm;
use super::{b64url_decode, clip, unix_seconds};

pub(super) use claims::check_times;
pub use claims::{ClaimMapping, Claims, TokenIdentity, VerifiedToken};
pub use error::TokenError;

/// The largest token accepted, in bytes. Checked before any parsing or base64 decoding.
///
/// Infra's tokens are a few hundred bytes (about 40 more per group); ID tokens with long
/// group lists stay well under this. The apiserver's own limit on a header line is larger, so
/// this is the tighter bound.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The default clock skew allowed on `exp` and `nbf`: 30 seconds.
///
/// The issuer and the proxy are different machines. NTP keeps them within a second when it
/// works; 30 s absorbs a node whose clock drifts for a while, and bounds the harm the other
/// way: an expired token works at most 30 s longer. (go-jose, under Kubernetes service account
/// tokens, allows 60 s.)
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway a [`Verifier`] accepts: 5 minutes. More would make short-lived tokens
/// long-lived.
pub const MAX_LEEWAY: Duration = Duration::from_mins(5);

/// A [`Verifier`] that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// The expected issuer is empty.
    #[error("the expected issuer is empty")]
    EmptyIssuer,
    /// No key to verify with: every token would be refused.
    #[error("no usable key to verify tokens with")]
    NoKeys,
    /// Two different keys share a `kid`, so a token's key would be ambiguous.
    #[error("two different keys have kid {0:?}")]
    DuplicateKid(String),
    /// The leeway is over [`MAX_LEEWAY`].
    #[error("a leeway of {0:?} is more than the {max:?} allowed", max = MAX_LEEWAY)]
    LeewayTooLarge(Duration),
}

/// Gives every verifier its own id, so a [`TokenCache`](super::TokenCache) never answers for a
/// verifier with other keys or settings than the one that filled the entry.
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// Checks tokens of one issuer against its trusted keys. Immutable: rotating keys means building
/// a new verifier (which also retires what a cache learned from the old one).
#[derive(Debug)]
pub struct Verifier {
    id: u64,
    issuer: String,
    keys: HashMap<String, TrustedKey>,
    leeway: u64,
    mapping: ClaimMapping,
}

/// Builds a [`Verifier`].
#[derive(Debug)]
pub struct VerifierBuilder {
    issuer: String,
    keys: Vec<TrustedKey>,
    leeway: Duration,
    mapping: ClaimMapping,
}

impl VerifierBuilder {
    /// Trusts the usable keys of a JWK Set; keys that cannot be used are skipped with a log
    /// line (see [`Jwks::trusted_keys`]).
    #[must_use]
    pub fn trust_jwks(mut self, jwks: &Jwks) -> Self {
        self.keys.extend(jwks.trusted_keys());
        self
    }

    /// Trusts one key.
    #[must_use]
    pub fn trust_key(mut self, key: TrustedKey) -> Self {
        self.keys.push(key);
        self
    }

    /// The clock skew allowed on `exp` and `nbf`, in whole seconds; [`DEFAULT_LEEWAY`] unless
    /// set, at most [`MAX_LEEWAY`].
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How [`Verifier::verify_mapped`] turns claims into a user and groups.
    #[must_use]
    pub fn claim_mapping(mut self, mapping: ClaimMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The verifier. The same key given twice is kept once; two different keys with one `kid`
    /// are refused.
    pub fn build(self) -> Result<Verifier, VerifierError> {
        if self.issuer.is_empty() {
            return Err(VerifierError::EmptyIssuer);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(VerifierError::LeewayTooLarge(self.leeway));
        }
        let mut keys = HashMap::with_capacity(self.keys.len());
        for key in self.keys {
            match keys.entry(key.kid().to_owned()) {
                Entry::Vacant(slot) => {
                    slot.insert(key);
                }
                Entry::Occupied(known) => {
                    let known: &TrustedKey = known.get();
                    if known.jwk() != key.jwk() || known.algorithm() != key.algorithm() {
                        return Err(VerifierError::DuplicateKid(clip(key.kid())));
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(VerifierError::NoKeys);
        }
        Ok(Verifier {
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            issuer: self.issuer,
            keys,
            leeway: self.leeway.as_secs(),
            mapping: self.mapping,
        })
    }
}

/// The JOSE header members the verifier reads. Others (`typ`, `cty`, and `jku`, `jwk`, `x5u`,
/// `x5c`, which would let the token choose its own key) are ignored.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

const NOT_A_HEADER: TokenError =
    TokenError::Malformed("the header is not a JOSE header (JSON object)");

/// Claims every Infra token carries; `jsonwebtoken` checks their presence.
const INFRA_REQUIRED: &[&str] = &["iss", "sub", "aud", "exp", "nbf"];
/// Claims every ID token must carry for Infra (OpenID Connect requires them too).
const MAPPED_REQUIRED: &[&str] = &["iss", "aud", "exp"];

impl Verifier {
    /// Starts a verifier for tokens whose `iss` is `issuer`.
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            keys: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            mapping: ClaimMapping::default(),
        }
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway)
    }

    /// The claim mapping [`Self::verify_mapped`] uses.
    pub fn claim_mapping(&self) -> &ClaimMapping {
        &self.mapping
    }

    /// The trusted key with this `kid`.
    pub fn key(&self, kid: &str) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    /// Verifies one of Infra's own tokens for destination `audience` at time `now`.
    ///
    /// Besides the signature, `iss`, `aud`, `exp` and `nbf`, every claim Infra issues must be
    /// there with its type (`iat`, `jti`, `name`, `groups` as an array), no claim may be named
    /// twice, and every user and group name must keep the rule for names
    /// ([`validate_subject_name`](crate::policy::validate_subject_name)), which refuses
    /// `system:` names too.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<VerifiedToken, TokenError> {
        let (key, claims) = self.check_signed(token, audience, INFRA_REQUIRED)?;
        let exp = time_claim(&claims, "exp")?.ok_or_else(|| missing("exp"))?;
        let nbf = time_claim(&claims, "nbf")?.ok_or_else(|| missing("nbf"))?;
        let iat = time_claim(&claims, "iat")?.ok_or_else(|| missing("iat"))?;
        check_times(exp, Some(nbf), unix_seconds(now), self.leeway)?;
        let sub = string_claim(&claims, "sub")?;
        let name = string_claim(&claims, "name")?;
        let jti = string_claim(&claims, "jti")?;
        let groups = match claims.get("groups") {
            None => return Err(missing("groups")),
            Some(Value::Array(items)) => string_items(items, "groups")?,
            Some(_) => return Err(TokenError::InvalidClaim("groups".into())),
        };
        let sid = match claims.get("sid") {
            None | Some(Value::Null) => None,
            Some(Value::String(sid)) => Some(sid.clone()),
            Some(_) => return Err(TokenError::InvalidClaim("sid".into())),
        };
        let sid_at = time_claim(&claims, "sid_at")?;
        check_name(&sub)?;
        check_name(&name)?;
        for group in &groups {
            check_name(group)?;
        }
        Ok(VerifiedToken {
            kid: key.kid().to_owned(),
            algorithm: key.algorithm(),
            claims: Claims {
                iss: self.issuer.clone(),
                sub,
                aud: audience.to_owned(),
                exp,
                nbf,
                iat,
                jti,
                name,
                groups,
                sid,
                sid_at,
            },
        })
    }

    /// Verifies an external issuer's ID token for `audience` (its client id) at time `now`, and
    /// maps its claims to a user and groups with this verifier's [`ClaimMapping`].
    ///
    /// `iss`, `aud` and `exp` are required, `nbf` is checked when present, no claim may be
    /// named twice, and the mapped names (after their prefixes) must keep the rule for names
    /// ([`validate_subject_name`](crate::policy::validate_subject_name)): one user or group
    /// that breaks it refuses the token.
    pub fn verify_mapped(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<TokenIdentity, TokenError> {
        let (_, claims) = self.check_signed(token, audience, MAPPED_REQUIRED)?;
        let exp = time_claim(&claims, "exp")?.ok_or_else(|| missing("exp"))?;
        let nbf = time_claim(&claims, "nbf")?;
        check_times(exp, nbf, unix_seconds(now), self.leeway)?;

        let mapping = &self.mapping;
        let username = string_claim(&claims, &mapping.username_claim)?;
        if mapping.username_claim == "email" {
            // As the apiserver does: an email the provider has not verified is not an identity.
            match claims.get("email_verified") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => return Err(TokenError::EmailNotVerified),
                Some(_) => return Err(TokenError::InvalidClaim("email_verified".into())),
            }
        }
        let user = format!("{}{username}", mapping.username_prefix);
        check_name(&user)?;

        let groups = match claims.get(&mapping.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(group)) => vec![group.clone()],
            Some(Value::Array(items)) => string_items(items, &mapping.groups_claim)?,
            Some(_) => return Err(TokenError::InvalidClaim(clip(&mapping.groups_claim))),
        };
        let groups: Vec<String> = groups
            .into_iter()
            .map(|group| format!("{}{group}", mapping.groups_prefix))
            .collect();
        for group in &groups {
            check_name(group)?;
        }
        let session = match claims.get("sid") {
            None | Some(Value::Null) => None,
            Some(Value::String(sid)) => Some(sid.clone()),
            Some(_) => return Err(TokenError::InvalidClaim("sid".into())),
        };
        let session_started = time_claim(&claims, "sid_at")?;
        Ok(TokenIdentity {
            user,
            groups,
            exp,
            nbf,
            session,
            session_started,
        })
    }

    /// Everything up to and including the signature, `iss` and `aud`; gives the key and the
    /// (now authentic) claims.
    fn check_signed(
        &self,
        token: &str,
        audience: &str,
        required: &[&str],
    ) -> Result<(&TrustedKey, Map<String, Value>), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "a JWT has three parts separated by dots",
            ));
        };
        let header =
            b64url_decode(header).ok_or(TokenError::Malformed("the header is not base64url"))?;
        // The header chooses the key and the algorithm, so it is held to one meaning before
        // anything in it is read, signature or not.
        match check_unique_keys(&header) {
            Ok(()) => {}
            Err(NotUnique::Duplicate(key)) => return Err(duplicate("header", &key)),
            Err(NotUnique::NotJson) => return Err(NOT_A_HEADER),
        }
        let header: Header = serde_json::from_slice(&header).map_err(|_| NOT_A_HEADER)?;
        let alg = header
            .alg
            .ok_or(TokenError::Malformed("the header has no `alg`"))?;
        let alg = classify_alg(&alg)?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKid(clip(&kid)))?;
        if alg != key.algorithm() {
            return Err(TokenError::AlgorithmMismatch {
                kid: key.kid().to_owned(),
                expected: key.algorithm(),
                got: alg,
            });
        }

        // Nothing left to jsonwebtoken's defaults: one algorithm, the claims that must be
        // there, `iss` and `aud`, and its clock-reading `exp`/`nbf` checks off (done here
        // against the `now` we are given).
        let pinned = key.algorithm().to_jsonwebtoken();
        let mut validation = Validation::new(pinned);
        validation.algorithms = vec![pinned];
        validation.set_required_spec_claims(required);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.validate_aud = true;
        validation.sub = None;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.reject_tokens_expiring_in_less_than = 0;
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(
            token,
            key.decoding_key(),
            &validation,
        ) {
            Ok(data) => {
                // The signature verified, and serde_json kept the last of any repeated claim:
                // refuse the token if there was one, before any claim is used.
                unique_claims(payload)?;
                data.claims
            }
            Err(err) => {
                let kind = err.kind();
                // A repeated claim explains a failure better than what jsonwebtoken made of it,
                // but only an authentic payload is looked at.
                if signed_payload(kind, token, key) {
                    unique_claims(payload)?;
                }
                // jsonwebtoken says "missing" for a claim it cannot parse as well. It checks
                // claims only after the signature, so the payload is authentic: look for
                // ourselves.
                match kind {
                    ErrorKind::MissingRequiredClaim(claim) if payload_has(payload, claim) => {
                        return Err(TokenError::InvalidClaim(clip(claim)));
                    }
                    kind => return Err(from_jsonwebtoken(kind, key)),
                }
            }
        };

        // jsonwebtoken also takes an array `iss`, and an `aud` or `iss` of another type as
        // absent; hold them to RFC 7519 here.
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(TokenError::WrongIssuer),
            Some(_) => return Err(TokenError::InvalidClaim("iss".into())),
            None => return Err(missing("iss")),
        }
        match claims.get("aud") {
            Some(Value::String(aud)) if aud == audience => {}
            Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
                if !auds.iter().any(|aud| aud.as_str() == Some(audience)) {
                    return Err(TokenError::WrongAudience);
                }
            }
            Some(Value::String(_)) => return Err(TokenError::WrongAudience),
            Some(_) => return Err(TokenError::InvalidClaim("aud".into())),
            None => return Err(missing("aud")),
        }
        Ok((key, claims))
    }
}

fn duplicate(part: &'static str, key: &str) -> TokenError {
    TokenError::DuplicateKey {
        part,
        key: clip(key),
    }
}

/// Refuses a (signature-checked) payload that names a claim twice, in any object at any depth.
fn unique_claims(payload: &str) -> Result<(), TokenError> {
    let json =
        b64url_decode(payload).ok_or(TokenError::Malformed("the payload is not base64url"))?;
    match check_unique_keys(&json) {
        Ok(()) => Ok(()),
        Err(NotUnique::Duplicate(key)) => Err(duplicate("claims", &key)),
        Err(NotUnique::NotJson) => Err(TokenError::Malformed(
            "the payload is not a claims set (JSON object)",
        )),
    }
}

/// Whether jsonwebtoken failed with `kind` on an authentic payload: it validates claims only
/// after the signature; its JSON, base64 and UTF-8 errors can come from the header (before the
/// signature) or from the payload (after), so for those the signature is checked again. That
/// second check happens only for tokens refused anyway.
fn signed_payload(kind: &ErrorKind, token: &str, key: &TrustedKey) -> bool {
    match kind {
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidSubject
        | ErrorKind::ExpiredSignature
        | ErrorKind::ImmatureSignature => true,
        ErrorKind::Json(_) | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            token.rsplit_once('.').is_some_and(|(message, signature)| {
                jsonwebtoken::crypto::verify(
                    signature,
                    message.as_bytes(),
                    key.decoding_key(),
                    key.algorithm().to_jsonwebtoken(),
                )
                .unwrap_or(false)
            })
        }
        _ => false,
    }
}

/// Whether the (signature-checked) payload has member `claim`, whatever its type.
fn payload_has(payload: &str, claim: &str) -> bool {
    b64url_decode(payload)
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|claims| claims.contains_key(claim))
}

/// `none` and HMAC first, each with its own refusal; then the algorithms Infra knows.
fn classify_alg(alg: &str) -> Result<Algorithm, TokenError> {
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsigned);
    }
    if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs")) {
        return Err(TokenError::SymmetricAlgorithm(clip(alg)));
    }
    Algorithm::from_jose_name(alg).ok_or_else(|| TokenError::UnsupportedAlgorithm(clip(alg)))
}

fn from_jsonwebtoken(kind: &ErrorKind, key: &TrustedKey) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(clip(claim)),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::InvalidClaim(clip(claim)),
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => TokenError::UnusableKey(key.kid().to_owned()),
        // Base64, JSON and UTF-8 errors, and whatever a later jsonwebtoken adds.
        _ => TokenError::Malformed("the payload or signature is not base64url JSON"),
    }
}

#[cfg(test)]
mod tests {
    use ring::hmac;
    use ring::signature::{RSA_PKCS1_SHA256, RSA_PKCS1_SHA384};
    use serde_json::json;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::policy::MAX_NAME_BYTES;
    use crate::policy::NameError;
    use crate::token::test_support::{
        AUDIENCE, ISSUER, T0, at, forge, forge_raw, forge_with, infra_claims, issuer, part,
        request, rsa_fixture_jwk, rsa_sign, verifier_for,
    };
    use crate::token::{Issuer, Jwk, SigningAlgorithm, SigningKey, b64url_encode};

    const BOTH: [SigningAlgorithm; 2] = [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256];

    fn setup(alg: SigningAlgorithm) -> (Issuer, Verifier) {
        let issuer = issuer(alg);
        let verifier = verifier_for(&[issuer.signing_key()]);
        (issuer, verifier)
    }

    fn header(key: &SigningKey) -> Value {
        json!({"alg": Algorithm::from(key.algorithm()).as_str(), "typ": "JWT", "kid": key.kid()})
    }

    /// Verifies a token with these claims, signed properly by the verifier's key.
    fn verify_claims(claims: &Value) -> Result<VerifiedToken, TokenError> {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        verifier.verify(&forge(key, &header(key), claims), AUDIENCE, at(T0))
    }

    #[test]
    fn issue_then_verify_round_trips_for_ed25519_and_es256() {
        for alg in BOTH {
            let clock = ManualClock::at_unix(T0);
            let (issuer, verifier) = setup(alg);
            let groups = vec!["Engineering".to_owned(), "Support".to_owned()];
            let issued = issuer.issue(&request(&groups), clock.now()).expect("issue");
            let token = issued.token.expose();
            let verified = verifier
                .verify(token, AUDIENCE, clock.now())
                .expect("verify");
            assert_eq!(verified.claims, issued.claims);
            assert_eq!(verified.kid, issuer.signing_key().kid());
            assert_eq!(verified.algorithm, Algorithm::from(alg));
            assert_eq!(verified.user(), "suzie@example.com");
            assert_eq!(verified.groups(), groups.as_slice());
            assert_eq!(verified.claims.iss, ISSUER);
            assert_eq!(verified.claims.sub, "u-42");
            assert_eq!(verified.claims.aud, AUDIENCE);
            assert_eq!(
                (
                    verified.claims.iat,
                    verified.claims.nbf,
                    verified.claims.exp
                ),
                (T0, T0, T0 + 300)
            );
            assert_eq!(verified.expires_at(), at(T0 + 300));
            assert_eq!(verified.claims.jti.len(), 22, "128 bits in base64url");
            let header: Value =
                serde_json::from_slice(&b64url_decode(part(token, 0)).expect("b64")).expect("json");
            assert_eq!(header, self::header(issuer.signing_key()));
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let kid = issuer.signing_key().kid();
        let claims = infra_claims(T0);
        for none in ["none", "None", "NONE", "nOnE"] {
            let unsigned = forge_with(&json!({"alg": none, "kid": kid}), &claims, |_| Vec::new());
            assert!(unsigned.ends_with('.'));
            assert_eq!(
                verifier.verify(&unsigned, AUDIENCE, at(T0)),
                Err(TokenError::Unsigned)
            );
            // Not even with a real signature attached.
            let signed = forge(
                issuer.signing_key(),
                &json!({"alg": none, "kid": kid}),
                &claims,
            );
            assert_eq!(
                verifier.verify(&signed, AUDIENCE, at(T0)),
                Err(TokenError::Unsigned)
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // The key-confusion attack: the attacker knows the public key and uses it as the HMAC
        // secret, hoping the verifier feeds the same bytes to HMAC.
        for alg in BOTH {
            let (issuer, verifier) = setup(alg);
            let key = issuer.signing_key();
            let jwk = key.public_jwk();
            let x = jwk.x.clone().expect("x");
            let raw = b64url_decode(&x).expect("b64");
            let secrets: [Vec<u8>; 3] = [
                raw,
                x.into_bytes(),
                serde_json::to_vec(jwk).expect("jwk json"),
            ];
            for secret in secrets {
                for (name, hmac_alg) in [
                    ("HS256", hmac::HMAC_SHA256),
                    ("HS384", hmac::HMAC_SHA384),
                    ("HS512", hmac::HMAC_SHA512),
                ] {
                    let token = forge_with(
                        &json!({"alg": name, "typ": "JWT", "kid": key.kid()}),
                        &infra_claims(T0),
                        |input| {
                            hmac::sign(&hmac::Key::new(hmac_alg, &secret), input)
                                .as_ref()
                                .to_vec()
                        },
                    );
                    assert_eq!(
                        verifier.verify(&token, AUDIENCE, at(T0)),
                        Err(TokenError::SymmetricAlgorithm(name.into()))
                    );
                }
            }
        }
    }

    #[test]
    fn a_header_alg_other_than_the_keys_is_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let ed_kid = issuer.signing_key().kid();
        // The attacker signs ES256 with a key of their own and names the trusted EdDSA key.
        let attacker = SigningKey::generate(SigningAlgorithm::Es256).expect("generate");
        let token = forge(
            &attacker,
            &json!({"alg": "ES256", "typ": "JWT", "kid": ed_kid}),
            &infra_claims(T0),
        );
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::AlgorithmMismatch {
                kid: ed_kid.to_owned(),
                expected: Algorithm::EdDsa,
                got: Algorithm::Es256,
            })
        );
        let token = forge_with(
            &json!({"alg": "RS256", "kid": ed_kid}),
            &infra_claims(T0),
            |_| vec![1; 256],
        );
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::AlgorithmMismatch {
                kid: ed_kid.to_owned(),
                expected: Algorithm::EdDsa,
                got: Algorithm::Rs256,
            })
        );
    }

    #[test]
    fn unsupported_algorithms_are_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        for alg in ["PS256", "ES384", "ES512", "Ed25519", "eddsa", "RSA-OAEP"] {
            let token = forge(
                issuer.signing_key(),
                &json!({"alg": alg, "kid": issuer.signing_key().kid()}),
                &infra_claims(T0),
            );
            assert_eq!(
                verifier.verify(&token, AUDIENCE, at(T0)),
                Err(TokenError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let (_, verifier) = setup(SigningAlgorithm::EdDsa);
        // Same issuer name, a key nobody published.
        let stranger = issuer(SigningAlgorithm::EdDsa);
        let issued = stranger.issue(&request(&[]), at(T0)).expect("issue");
        assert_eq!(
            verifier.verify(issued.token.expose(), AUDIENCE, at(T0)),
            Err(TokenError::UnknownKid(
                stranger.signing_key().kid().to_owned()
            ))
        );
    }

    #[test]
    fn a_missing_kid_is_refused_even_with_one_trusted_key() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let token = forge(
            issuer.signing_key(),
            &json!({"alg": "EdDSA", "typ": "JWT"}),
            &infra_claims(T0),
        );
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::MissingKid)
        );
    }

    #[test]
    fn a_critical_header_is_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        let token = forge(
            key,
            &json!({"alg": "EdDSA", "kid": key.kid(), "crit": ["b64"], "b64": false}),
            &infra_claims(T0),
        );
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::CriticalHeader)
        );
    }

    #[test]
    fn the_wrong_issuer_is_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        let mut claims = infra_claims(T0);
        claims["iss"] = json!("https://evil.example.com");
        let token = forge(key, &header(key), &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::WrongIssuer)
        );
        claims["iss"] = json!([ISSUER]);
        let token = forge(key, &header(key), &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::InvalidClaim("iss".into()))
        );
        claims.as_object_mut().expect("object").remove("iss");
        let token = forge(key, &header(key), &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::MissingClaim("iss".into()))
        );
    }

    #[test]
    fn the_wrong_or_a_missing_audience_is_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::Es256);
        let issued = issuer.issue(&request(&[]), at(T0)).expect("issue");
        assert_eq!(
            verifier.verify(issued.token.expose(), "staging", at(T0)),
            Err(TokenError::WrongAudience)
        );

        let key = issuer.signing_key();
        let mut claims = infra_claims(T0);
        claims["aud"] = json!(["staging", AUDIENCE]);
        let token = forge(key, &header(key), &claims);
        let verified = verifier
            .verify(&token, AUDIENCE, at(T0))
            .expect("array aud");
        assert_eq!(verified.claims.aud, AUDIENCE);
        assert_eq!(
            verifier.verify(&token, "development", at(T0)),
            Err(TokenError::WrongAudience)
        );
        claims["aud"] = json!([]);
        let token = forge(key, &header(key), &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::WrongAudience)
        );
        claims.as_object_mut().expect("object").remove("aud");
        let token = forge(key, &header(key), &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::MissingClaim("aud".into()))
        );
    }

    #[test]
    fn an_expired_token_is_refused_after_the_leeway() {
        let clock = ManualClock::at_unix(T0);
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        assert_eq!(verifier.leeway(), DEFAULT_LEEWAY);
        let issued = issuer.issue(&request(&[]), clock.now()).expect("issue");
        let token = issued.token.expose();
        clock.advance(Duration::from_secs(300 + 29));
        assert!(
            verifier.verify(token, AUDIENCE, clock.now()).is_ok(),
            "within the leeway"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            verifier.verify(token, AUDIENCE, clock.now()),
            Err(TokenError::Expired {
                exp: T0 + 300,
                now: T0 + 330
            })
        );

        let strict = Verifier::builder(ISSUER)
            .trust_key(TrustedKey::from_jwk(issuer.signing_key().public_jwk()).expect("key"))
            .leeway(Duration::ZERO)
            .build()
            .expect("verifier");
        assert!(strict.verify(token, AUDIENCE, at(T0 + 299)).is_ok());
        assert_eq!(
            strict.verify(token, AUDIENCE, at(T0 + 300)),
            Err(TokenError::Expired {
                exp: T0 + 300,
                now: T0 + 300
            })
        );
    }

    #[test]
    fn a_token_from_the_future_is_refused_beyond_the_leeway() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        // The issuer's clock runs 100 s ahead of the proxy's.
        let issued = issuer.issue(&request(&[]), at(T0 + 100)).expect("issue");
        let token = issued.token.expose();
        assert_eq!(
            verifier.verify(token, AUDIENCE, at(T0)),
            Err(TokenError::NotYetValid {
                nbf: T0 + 100,
                now: T0
            })
        );
        assert!(
            verifier.verify(token, AUDIENCE, at(T0 + 70)).is_ok(),
            "within the leeway"
        );
    }

    #[test]
    fn a_token_over_16_kib_is_refused_before_parsing() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        let mut claims = infra_claims(T0);
        claims["padding"] = json!("x".repeat(13 * 1024));
        // Properly signed, otherwise valid, and 17 KiB and more once base64url-encoded.
        let token = forge(key, &header(key), &claims);
        assert!(token.len() > 17 * 1024, "{}", token.len());
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES
            })
        );
        let junk = "!".repeat(17 * 1024);
        assert_eq!(
            verifier.verify(&junk, AUDIENCE, at(T0)),
            Err(TokenError::TooLarge {
                len: 17 * 1024,
                max: MAX_TOKEN_BYTES
            })
        );
        // The limit itself is fine as far as size goes.
        let at_limit = "a".repeat(MAX_TOKEN_BYTES);
        assert!(matches!(
            verifier.verify(&at_limit, AUDIENCE, at(T0)),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        let good = issuer.issue(&request(&[]), at(T0)).expect("issue");
        let good = good.token.expose();
        let (h, p, s) = (part(good, 0), part(good, 1), part(good, 2));
        let cases = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.{s}"),
            format!("{h}={p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{}.{p}.{s}", b64url_encode("not json")),
            format!("{}.{p}.{s}", b64url_encode("[1,2]")),
            format!("{}.{p}.{s}", b64url_encode(r#"{"kid":"x"}"#)),
            format!("{}.{p}.{s}", b64url_encode(r#"{"alg":7}"#)),
            format!(" {good}"),
            // Signed, but the payload is not JSON.
            super::super::issue::sign_compact(key, header(key).to_string().as_bytes(), b"not json")
                .expect("sign"),
            // Signed, but the payload is a JSON array.
            forge(key, &header(key), &json!(["iss", ISSUER])),
        ];
        for token in &cases {
            let result = verifier.verify(token, AUDIENCE, at(T0));
            assert!(
                matches!(result, Err(TokenError::Malformed(_))),
                "{token:?}: {result:?}"
            );
        }
    }

    #[test]
    fn a_bad_signature_is_refused() {
        for alg in BOTH {
            let (issuer, verifier) = setup(alg);
            let one = issuer.issue(&request(&[]), at(T0)).expect("issue");
            let admins = vec!["Admins".to_owned()];
            let two = issuer.issue(&request(&admins), at(T0)).expect("issue");
            let (one, two) = (one.token.expose(), two.token.expose());
            // Claims of one token with the signature of another.
            let spliced = format!("{}.{}.{}", part(one, 0), part(two, 1), part(one, 2));
            assert_eq!(
                verifier.verify(&spliced, AUDIENCE, at(T0)),
                Err(TokenError::BadSignature)
            );
            // No signature, or a short one.
            for signature in ["", "AAAA"] {
                let token = format!("{}.{}.{signature}", part(one, 0), part(one, 1));
                assert_eq!(
                    verifier.verify(&token, AUDIENCE, at(T0)),
                    Err(TokenError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn system_names_in_the_claims_are_refused() {
        for (claim, value) in [
            ("name", json!("system:admin")),
            ("sub", json!("system:kube-controller-manager")),
            ("groups", json!(["Engineering", "system:masters"])),
        ] {
            let mut claims = infra_claims(T0);
            claims[claim] = value.clone();
            let reserved = match &value {
                Value::String(name) => name.clone(),
                _ => "system:masters".to_owned(),
            };
            assert_eq!(
                verify_claims(&claims),
                Err(TokenError::ReservedName(reserved))
            );
        }
        let mut claims = infra_claims(T0);
        claims["groups"] = json!([""]);
        assert_eq!(
            verify_claims(&claims),
            Err(TokenError::InvalidName(NameError::Empty))
        );
    }

    #[test]
    fn infra_claims_must_all_be_there_with_their_types() {
        for claim in ["sub", "exp", "nbf", "iat", "jti", "name", "groups"] {
            let mut claims = infra_claims(T0);
            claims.as_object_mut().expect("object").remove(claim);
            assert_eq!(
                verify_claims(&claims),
                Err(TokenError::MissingClaim(claim.into())),
                "{claim}"
            );
        }
        for (claim, value) in [
            ("exp", json!(1.7e9)),
            ("exp", json!("1700000300")),
            ("aud", json!(7)),
            ("iss", json!(null)),
            ("nbf", json!(-1)),
            ("iat", json!(null)),
            ("groups", json!("Engineering")),
            ("groups", json!([1])),
            ("name", json!("")),
            ("jti", json!(7)),
        ] {
            let mut claims = infra_claims(T0);
            claims[claim] = value;
            assert_eq!(
                verify_claims(&claims),
                Err(TokenError::InvalidClaim(claim.into())),
                "{claim}"
            );
        }
    }

    /// A verifier of `https://idp.example.com` tokens for client `kubernetes`, trusting the
    /// RSA fixture with this `alg` in its JWK.
    fn idp_verifier(alg: Option<&str>, mapping: ClaimMapping) -> Verifier {
        let jwks = Jwks {
            keys: vec![rsa_fixture_jwk(alg)],
        };
        let jwks = Jwks::from_json(&jwks.to_json()).expect("jwks");
        Verifier::builder("https://idp.example.com")
            .trust_jwks(&jwks)
            .claim_mapping(mapping)
            .build()
            .expect("verifier")
    }

    fn id_token_claims() -> Value {
        json!({
            "iss": "https://idp.example.com",
            "aud": "kubernetes",
            "sub": "00u1abcd",
            "email": "carl@example.com",
            "email_verified": true,
            "groups": ["Everyone", "Engineering"],
            "iat": T0,
            "exp": T0 + 3600,
        })
    }

    fn email_mapping() -> ClaimMapping {
        ClaimMapping {
            username_claim: "email".into(),
            username_prefix: "okta:".into(),
            groups_claim: "groups".into(),
            groups_prefix: "okta:".into(),
        }
    }

    #[test]
    fn rs256_id_tokens_verify_and_map() {
        let verifier = idp_verifier(None, email_mapping());
        assert_eq!(
            verifier.key("rsa-fixture").map(TrustedKey::algorithm),
            Some(Algorithm::Rs256)
        );
        let header = json!({"alg": "RS256", "kid": "rsa-fixture", "typ": "JWT"});
        let token = forge_with(&header, &id_token_claims(), |input| {
            rsa_sign(&RSA_PKCS1_SHA256, input)
        });
        let identity = verifier
            .verify_mapped(&token, "kubernetes", at(T0))
            .expect("verify");
        assert_eq!(identity.user, "okta:carl@example.com");
        assert_eq!(identity.groups, ["okta:Everyone", "okta:Engineering"]);
        assert_eq!((identity.exp, identity.nbf), (T0 + 3600, None));

        // Infra's own check wants Infra's claims.
        assert_eq!(
            verifier.verify(&token, "kubernetes", at(T0)),
            Err(TokenError::MissingClaim("nbf".into()))
        );

        let mut tampered = id_token_claims();
        tampered["email"] = json!("admin@example.com");
        let spliced = format!(
            "{}.{}.{}",
            part(&token, 0),
            b64url_encode(tampered.to_string()),
            part(&token, 2)
        );
        assert_eq!(
            verifier.verify_mapped(&spliced, "kubernetes", at(T0)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verifier.verify_mapped(&token, "kubernetes", at(T0 + 3600 + 30)),
            Err(TokenError::Expired {
                exp: T0 + 3600,
                now: T0 + 3630
            })
        );
    }

    #[test]
    fn an_rsa_key_verifies_only_its_pinned_algorithm() {
        let rs256 = idp_verifier(None, ClaimMapping::default());
        let rs384 = idp_verifier(Some("RS384"), ClaimMapping::default());
        let header = json!({"alg": "RS384", "kid": "rsa-fixture"});
        let token = forge_with(&header, &id_token_claims(), |input| {
            rsa_sign(&RSA_PKCS1_SHA384, input)
        });
        assert_eq!(
            rs256.verify_mapped(&token, "kubernetes", at(T0)),
            Err(TokenError::AlgorithmMismatch {
                kid: "rsa-fixture".into(),
                expected: Algorithm::Rs256,
                got: Algorithm::Rs384,
            })
        );
        let identity = rs384
            .verify_mapped(&token, "kubernetes", at(T0))
            .expect("RS384 key, RS384 token");
        assert_eq!(identity.user, "00u1abcd", "the default mapping uses `sub`");
        for alg in ["HS256", "EdDSA", "ES256", "PS256"] {
            let token = forge_with(
                &json!({"alg": alg, "kid": "rsa-fixture"}),
                &id_token_claims(),
                |input| rsa_sign(&RSA_PKCS1_SHA256, input),
            );
            assert!(
                rs256.verify_mapped(&token, "kubernetes", at(T0)).is_err(),
                "{alg}"
            );
        }
    }

    /// An ID token with these claims, from an Ed25519-signing identity provider.
    fn mapped(claims: &Value, mapping: ClaimMapping) -> Result<TokenIdentity, TokenError> {
        let idp = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let verifier = Verifier::builder("https://idp.example.com")
            .trust_key(TrustedKey::from_jwk(idp.public_jwk()).expect("key"))
            .claim_mapping(mapping)
            .build()
            .expect("verifier");
        let token = forge(&idp, &header(&idp), claims);
        verifier.verify_mapped(&token, "kubernetes", at(T0))
    }

    #[test]
    fn an_unverified_email_is_refused_as_username() {
        let mut claims = id_token_claims();
        claims["email_verified"] = json!(false);
        assert_eq!(
            mapped(&claims, email_mapping()),
            Err(TokenError::EmailNotVerified)
        );
        // Only when the email is the username.
        assert!(mapped(&claims, ClaimMapping::default()).is_ok());
        claims["email_verified"] = json!("true");
        assert_eq!(
            mapped(&claims, email_mapping()),
            Err(TokenError::InvalidClaim("email_verified".into()))
        );
        claims
            .as_object_mut()
            .expect("object")
            .remove("email_verified");
        assert!(
            mapped(&claims, email_mapping()).is_ok(),
            "absent is accepted"
        );
        claims.as_object_mut().expect("object").remove("email");
        assert_eq!(
            mapped(&claims, email_mapping()),
            Err(TokenError::MissingClaim("email".into()))
        );
    }

    #[test]
    fn mapped_groups_take_a_string_an_array_or_nothing() {
        let mapping = ClaimMapping {
            groups_claim: "roles".into(),
            ..ClaimMapping::default()
        };
        let mut claims = id_token_claims();
        claims["roles"] = json!("Admins");
        let identity = mapped(&claims, mapping.clone()).expect("string");
        assert_eq!(identity.groups, ["Admins"]);
        claims["roles"] = json!(["Admins", "Ops"]);
        let identity = mapped(&claims, mapping.clone()).expect("array");
        assert_eq!(identity.groups, ["Admins", "Ops"]);
        claims.as_object_mut().expect("object").remove("roles");
        let identity = mapped(&claims, mapping.clone()).expect("none");
        assert!(identity.groups.is_empty());
        claims["roles"] = json!({"a": 1});
        assert_eq!(
            mapped(&claims, mapping),
            Err(TokenError::InvalidClaim("roles".into()))
        );
    }

    #[test]
    fn mapped_system_names_are_refused_unless_prefixed() {
        let mut claims = id_token_claims();
        claims["groups"] = json!(["Everyone", "system:masters"]);
        assert_eq!(
            mapped(&claims, ClaimMapping::default()),
            Err(TokenError::ReservedName("system:masters".into()))
        );
        let identity = mapped(&claims, email_mapping()).expect("prefixed");
        assert_eq!(identity.groups, ["okta:Everyone", "okta:system:masters"]);
        let mut claims = id_token_claims();
        claims["sub"] = json!("system:anonymous");
        assert_eq!(
            mapped(&claims, ClaimMapping::default()),
            Err(TokenError::ReservedName("system:anonymous".into()))
        );
    }

    #[test]
    fn a_verifier_needs_an_issuer_keys_and_a_small_leeway() {
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let trusted = TrustedKey::from_jwk(key.public_jwk()).expect("key");
        assert_eq!(
            Verifier::builder(ISSUER).build().map(|_| ()),
            Err(VerifierError::NoKeys)
        );
        assert_eq!(
            Verifier::builder("")
                .trust_key(trusted.clone())
                .build()
                .map(|_| ()),
            Err(VerifierError::EmptyIssuer)
        );
        assert_eq!(
            Verifier::builder(ISSUER)
                .trust_key(trusted.clone())
                .leeway(Duration::from_secs(301))
                .build()
                .map(|_| ()),
            Err(VerifierError::LeewayTooLarge(Duration::from_secs(301)))
        );
        // The same key twice (two overlapping key sets) is fine; another key under its kid is not.
        assert!(
            Verifier::builder(ISSUER)
                .trust_key(trusted.clone())
                .trust_key(trusted.clone())
                .build()
                .is_ok()
        );
        let other = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let impostor = Jwk {
            kid: Some(key.kid().to_owned()),
            ..other.public_jwk().clone()
        };
        assert_eq!(
            Verifier::builder(ISSUER)
                .trust_key(trusted)
                .trust_key(TrustedKey::from_jwk(&impostor).expect("key"))
                .build()
                .map(|_| ()),
            Err(VerifierError::DuplicateKid(key.kid().to_owned()))
        );
    }

    #[test]
    fn untrusted_text_in_errors_is_clipped() {
        let (_, verifier) = setup(SigningAlgorithm::EdDsa);
        let kid = "k".repeat(1000);
        let token = forge_with(&json!({"alg": "EdDSA", "kid": kid}), &json!({}), |_| {
            vec![0; 64]
        });
        let Err(TokenError::UnknownKid(shown)) = verifier.verify(&token, AUDIENCE, at(T0)) else {
            panic!("expected UnknownKid");
        };
        assert!(shown.len() < 80, "{shown}");
    }

    /// Infra's usual claims as JSON text, with `extra` members written after them (which may
    /// repeat one of them).
    fn infra_claims_and(extra: &str) -> String {
        let claims = infra_claims(T0).to_string();
        let open = claims.strip_suffix('}').expect("an object");
        format!("{open},{extra}}}")
    }

    /// Verifies a token whose header and claims are these JSON texts, signed properly by the
    /// verifier's key; `KID` in the header stands for the key's id.
    fn verify_raw(header: &str, claims: &str) -> Result<VerifiedToken, TokenError> {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let key = issuer.signing_key();
        let header = header.replace("KID", key.kid());
        verifier.verify(&forge_raw(key, &header, claims), AUDIENCE, at(T0))
    }

    const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"KID"}"#;

    fn repeated(part: &'static str, key: &str) -> TokenError {
        TokenError::DuplicateKey {
            part,
            key: key.to_owned(),
        }
    }

    #[test]
    fn a_token_with_two_name_claims_is_refused() {
        // The issuer signed "suzie@example.com" first and "admin@example.com" second;
        // serde_json alone keeps the last.
        let claims = infra_claims_and(r#""name":"admin@example.com""#);
        assert!(claims.contains(r#""name":"suzie@example.com""#), "{claims}");
        assert_eq!(verify_raw(HEADER, &claims), Err(repeated("claims", "name")));
        // The raw helper signs what the usual helpers sign, so only the repetition is refused.
        assert!(verify_raw(HEADER, &infra_claims(T0).to_string()).is_ok());
    }

    #[test]
    fn every_repeated_claim_is_refused_even_with_the_same_value() {
        let usual = infra_claims(T0);
        for (claim, value) in usual.as_object().expect("an object") {
            let claims = infra_claims_and(&format!("{claim:?}:{value}"));
            assert_eq!(
                verify_raw(HEADER, &claims),
                Err(repeated("claims", claim)),
                "{claims}"
            );
        }
        let claims = infra_claims_and(r#""sid":"k1","sid":"k2""#);
        assert_eq!(verify_raw(HEADER, &claims), Err(repeated("claims", "sid")));
    }

    #[test]
    fn a_claim_repeated_under_an_escaped_name_is_refused() {
        let claims = infra_claims_and(r#""n\u0061me":"admin@example.com""#);
        assert_eq!(verify_raw(HEADER, &claims), Err(repeated("claims", "name")));
    }

    #[test]
    fn a_duplicate_key_nested_in_a_claim_is_refused() {
        for (extra, key) in [
            (r#""address":{"country":"NL","country":"US"}"#, "country"),
            (r#""roles":[{"a":1},{"b":{"c":1,"c":2}}]"#, "c"),
        ] {
            let claims = infra_claims_and(extra);
            assert_eq!(
                verify_raw(HEADER, &claims),
                Err(repeated("claims", key)),
                "{claims}"
            );
        }
        // The same name in different objects is no repetition.
        let claims = infra_claims_and(r#""address":{"name":"home"}"#);
        assert!(verify_raw(HEADER, &claims).is_ok());
    }

    #[test]
    fn a_duplicate_key_in_the_jwt_header_is_refused() {
        let claims = infra_claims(T0).to_string();
        for (header, key) in [
            (
                r#"{"alg":"EdDSA","kid":"KID","x-note":"a","x-note":"b"}"#,
                "x-note",
            ),
            (
                r#"{"alg":"EdDSA","typ":"JWT","typ":"JWT","kid":"KID"}"#,
                "typ",
            ),
            (r#"{"alg":"EdDSA","kid":"KID","kid":"KID"}"#, "kid"),
            (r#"{"alg":"EdDSA","alg":"EdDSA","kid":"KID"}"#, "alg"),
            (
                r#"{"alg":"EdDSA","kid":"KID","jwk":{"kty":"OKP","kty":"EC"}}"#,
                "kty",
            ),
        ] {
            assert_eq!(
                verify_raw(header, &claims),
                Err(repeated("header", key)),
                "{header}"
            );
        }
    }

    #[test]
    fn a_forged_token_with_a_repeated_claim_is_refused_for_its_signature() {
        let (issuer, verifier) = setup(SigningAlgorithm::EdDsa);
        let kid = issuer.signing_key().kid();
        let attacker = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let header = HEADER.replace("KID", kid);
        let claims = infra_claims_and(r#""name":"admin@example.com""#);
        let token = forge_raw(&attacker, &header, &claims);
        assert_eq!(
            verifier.verify(&token, AUDIENCE, at(T0)),
            Err(TokenError::BadSignature),
            "unsigned claims are not read"
        );
    }

    /// An ID token whose claims are this JSON text, from an Ed25519-signing identity provider.
    fn mapped_raw(claims: &str, mapping: ClaimMapping) -> Result<TokenIdentity, TokenError> {
        let idp = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let verifier = Verifier::builder("https://idp.example.com")
            .trust_key(TrustedKey::from_jwk(idp.public_jwk()).expect("key"))
            .claim_mapping(mapping)
            .build()
            .expect("verifier");
        let header = header(&idp).to_string();
        verifier.verify_mapped(&forge_raw(&idp, &header, claims), "kubernetes", at(T0))
    }

    #[test]
    fn an_id_token_with_two_email_or_groups_claims_is_refused() {
        let usual = id_token_claims().to_string();
        let open = usual.strip_suffix('}').expect("an object");
        for (extra, key) in [
            (r#""email":"admin@example.com""#, "email"),
            (r#""groups":["Admins"]"#, "groups"),
            (r#""email_verified":false"#, "email_verified"),
            (r#""aud":"kubernetes""#, "aud"),
        ] {
            let claims = format!("{open},{extra}}}");
            assert_eq!(
                mapped_raw(&claims, email_mapping()),
                Err(repeated("claims", key)),
                "{claims}"
            );
        }
        assert!(mapped_raw(&usual, email_mapping()).is_ok());
    }

    const BIDI_USER: &str = "moc.elpmaxe@\u{202E}nimda";

    #[test]
    fn a_token_naming_a_user_with_bidi_overrides_is_refused() {
        let mut claims = infra_claims(T0);
        claims["name"] = json!(BIDI_USER);
        let err = verify_claims(&claims).expect_err("bidi override");
        assert_eq!(
            err,
            TokenError::InvalidName(NameError::FormatCharacter {
                name: BIDI_USER.into(),
                character: '\u{202E}'
            })
        );
        assert!(err.to_string().contains("U+202E"), "{err}");
        for invisible in ["suzie\u{2066}@example.com", "\u{200B}suzie@example.com"] {
            claims["name"] = json!(invisible);
            assert!(
                matches!(
                    verify_claims(&claims),
                    Err(TokenError::InvalidName(NameError::FormatCharacter { .. }))
                ),
                "{invisible:?}"
            );
        }
    }

    #[test]
    fn a_token_naming_a_5000_character_user_is_refused() {
        let mut claims = infra_claims(T0);
        claims["name"] = json!("a".repeat(5000));
        let err = verify_claims(&claims).expect_err("too long");
        assert!(
            matches!(
                &err,
                TokenError::InvalidName(NameError::TooLong { len: 5000, .. })
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("5000 bytes"), "{message}");
        assert!(message.len() < 200, "{message}");
        claims["name"] = json!("a".repeat(MAX_NAME_BYTES));
        assert!(verify_claims(&claims).is_ok(), "the limit itself is fine");
    }

    #[test]
    fn a_token_expiring_past_the_year_9999_is_refused_not_a_panic() {
        // Such an exp verified, and reading its expiry overflowed SystemTime (found by fuzzing).
        let mut claims = infra_claims(T0);
        claims["exp"] = json!(1_u64 << 63);
        let err = verify_claims(&claims).expect_err("past the end of time");
        assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");
        claims["exp"] = json!(T0 + 300);
        let verified = verify_claims(&claims).expect("a normal expiry");
        assert_eq!(
            verified.expires_at(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(T0 + 300)
        );
    }

    #[test]
    fn a_token_with_a_group_breaking_the_name_rule_is_refused() {
        for group in [
            "Admins\u{202D}".to_owned(),
            "g".repeat(5000),
            "Engineering ".to_owned(),
            "Zoe\u{301}".to_owned(),
            "a\u{85}b".to_owned(),
        ] {
            let mut claims = infra_claims(T0);
            claims["groups"] = json!(["Engineering", group]);
            assert!(
                matches!(verify_claims(&claims), Err(TokenError::InvalidName(_))),
                "{group:?}"
            );
        }
    }

    #[test]
    fn a_token_naming_a_user_not_in_nfc_or_with_edge_white_space_is_refused() {
        let mut claims = infra_claims(T0);
        claims["name"] = json!("Zoe\u{301}@example.com");
        assert_eq!(
            verify_claims(&claims),
            Err(TokenError::InvalidName(NameError::NotNormalized(
                "Zoe\u{301}@example.com".into()
            )))
        );
        claims["name"] = json!("suzie@example.com\u{A0}");
        assert_eq!(
            verify_claims(&claims),
            Err(TokenError::InvalidName(NameError::SurroundingWhiteSpace(
                "suzie@example.com\u{A0}".into()
            )))
        );
    }

    #[test]
    fn an_id_token_naming_a_user_with_bidi_overrides_is_refused() {
        let mut claims = id_token_claims();
        claims["email"] = json!(BIDI_USER);
        assert_eq!(
            mapped(&claims, email_mapping()),
            Err(TokenError::InvalidName(NameError::FormatCharacter {
                name: format!("okta:{BIDI_USER}"),
                character: '\u{202E}'
            }))
        );
        let mut claims = id_token_claims();
        claims["groups"] = json!(["Everyone", "Eng\u{2067}ineering"]);
        assert!(matches!(
            mapped(&claims, email_mapping()),
            Err(TokenError::InvalidName(NameError::FormatCharacter { .. }))
        ));
    }

    #[test]
    fn an_id_token_naming_a_5000_character_user_or_group_is_refused() {
        let mut claims = id_token_claims();
        claims["sub"] = json!("u".repeat(5000));
        assert!(matches!(
            mapped(&claims, ClaimMapping::default()),
            Err(TokenError::InvalidName(NameError::TooLong {
                len: 5000,
                ..
            }))
        ));
        let mut claims = id_token_claims();
        claims["groups"] = json!(["Everyone", "g".repeat(5000)]);
        assert!(matches!(
            mapped(&claims, email_mapping()),
            Err(TokenError::InvalidName(NameError::TooLong {
                len: 5005,
                ..
            }))
        ));
    }

    #[test]
    fn mapped_names_are_judged_with_their_prefix() {
        // 251 bytes on their own, 256 with `okta:`; one more is too many.
        let mut claims = id_token_claims();
        claims["email"] = json!(format!("{}@example.com", "c".repeat(239)));
        assert!(mapped(&claims, email_mapping()).is_ok());
        claims["email"] = json!(format!("{}@example.com", "c".repeat(240)));
        assert!(matches!(
            mapped(&claims, email_mapping()),
            Err(TokenError::InvalidName(NameError::TooLong { len: 257, .. }))
        ));
        assert!(
            mapped(&claims, ClaimMapping::default()).is_ok(),
            "sub is used"
        );
    }
}
