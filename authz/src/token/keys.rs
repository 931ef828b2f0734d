//! Signing keys: generated with `ring`, loaded from PKCS#8, named by their RFC 7638 thumbprint.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};

use super::b64url_encode;
use super::jwk::Jwk;
use crate::policy::Secret;

/// A JWS signature algorithm that Infra verifies.
///
/// Each trusted key is pinned to exactly one of these; HMAC (`HS*`) and `none` are deliberately
/// absent, and RSA-PSS is absent because no issuer we trust uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 (`EdDSA`), what Infra signs with by default.
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`), what most OIDC providers sign ID tokens with.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (`RS384`), only for an RSA key whose JWK says so.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (`RS512`), only for an RSA key whose JWK says so.
    Rs512,
}

impl Algorithm {
    /// The JOSE name (`alg` value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
        }
    }

    /// The algorithm of a JOSE `alg` name. Names are case-sensitive (RFC 7515 section 4.1.1).
    pub fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            "RS384" => Some(Self::Rs384),
            "RS512" => Some(Self::Rs512),
            _ => None,
        }
    }

    pub(super) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Rs384 => jsonwebtoken::Algorithm::RS384,
            Self::Rs512 => jsonwebtoken::Algorithm::RS512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm Infra signs its own tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// Ed25519: small, fast, deterministic signatures.
    #[default]
    EdDsa,
    /// ECDSA P-256 with SHA-256, for places that require NIST curves.
    Es256,
}

impl From<SigningAlgorithm> for Algorithm {
    fn from(alg: SigningAlgorithm) -> Self {
        match alg {
            SigningAlgorithm::EdDsa => Self::EdDsa,
            SigningAlgorithm::Es256 => Self::Es256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Algorithm::from(*self).fmt(f)
    }
}

/// Why a signing key could not be made or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The system's random number generator failed while generating a key.
    #[error("the system random number generator failed while generating a key")]
    Generate,
    /// The PEM text has no `PRIVATE KEY` block, or its body is not base64.
    #[error("not a PKCS#8 PEM private key: {0}")]
    Pem(&'static str),
    /// The PKCS#8 key is neither Ed25519 nor ECDSA P-256.
    #[error("the PKCS#8 key is neither Ed25519 nor ECDSA P-256")]
    UnsupportedKeyType,
    /// `ring` refused the PKCS#8 key; the text is ring's reason.
    #[error("the PKCS#8 key was refused: {0}")]
    Rejected(String),
    /// Signing failed (ECDSA needs randomness).
    #[error("signing failed")]
    Sign,
}

/// A PKCS#8 (DER) private key. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyDer(Vec<u8>);

impl PrivateKeyDer {
    /// The DER bytes. Call only where the key is stored (encrypted) or loaded.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pem(&self) -> Secret {
        let body = STANDARD.encode(&self.0);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Secret::new(pem)
    }
}

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyDer(<redacted>)")
    }
}

/// The `ring` key pair behind a [`SigningKey`].
enum KeyPair {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
}

/// A private key that signs Infra's tokens, with its `kid` and public [`Jwk`].
///
/// `Debug` shows the algorithm and `kid`, never the private key.
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    kid: String,
    jwk: Jwk,
    pair: KeyPair,
    pkcs8: PrivateKeyDer,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid())
            .field("private", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the system's random number generator.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let der = match algorithm {
            SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Loads a PKCS#8 DER key; the algorithm (Ed25519 or ECDSA P-256) comes from the key.
    ///
    /// Ed25519 keys may be PKCS#8 v1 (what `openssl genpkey` writes) or v2 (what `ring`
    /// writes, with the public key, which is then checked against the private one).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let ed = match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Ok(pair) => return Ok(Self::new(KeyPair::Ed25519(pair), der, rng)),
            Err(rejected) => rejected,
        };
        let ec = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            Ok(pair) => return Ok(Self::new(KeyPair::EcdsaP256(pair), der, rng)),
            Err(rejected) => rejected,
        };
        // Each attempt says `WrongAlgorithm` when the key is of another type; if one attempt
        // failed for another reason, the key was of that type and that reason is the answer.
        let (ed, ec) = (ed.to_string(), ec.to_string());
        if ed != "WrongAlgorithm" {
            Err(KeyError::Rejected(ed))
        } else if ec != "WrongAlgorithm" {
            Err(KeyError::Rejected(ec))
        } else {
            Err(KeyError::UnsupportedKeyType)
        }
    }

    /// Loads a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_to_der(pem)?;
        Self::from_pkcs8_der(&der)
    }

    fn new(pair: KeyPair, der: &[u8], rng: SystemRandom) -> Self {
        let (algorithm, jwk) = match &pair {
            KeyPair::Ed25519(pair) => (
                SigningAlgorithm::EdDsa,
                Jwk::ed25519(b64url_encode(pair.public_key().as_ref())),
            ),
            KeyPair::EcdsaP256(pair) => {
                // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                (
                    SigningAlgorithm::Es256,
                    Jwk::p256(b64url_encode(x), b64url_encode(y)),
                )
            }
        };
        Self {
            algorithm,
            // `Jwk::ed25519` and `Jwk::p256` always set the kid (their thumbprint is defined).
            kid: jwk.kid.clone().unwrap_or_default(),
            jwk,
            pair,
            pkcs8: PrivateKeyDer(der.to_vec()),
            rng,
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The key id: the base64url SHA-256 thumbprint of the public JWK (RFC 7638).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, ready to publish in a [`Jwks`](super::Jwks).
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The private key as PKCS#8 DER, to store (encrypted at rest).
    pub fn pkcs8(&self) -> &PrivateKeyDer {
        &self.pkcs8
    }

    /// Signs `message` (the JWS signing input), giving the raw JWS signature bytes.
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            KeyPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            KeyPair::EcdsaP256(pair) => pair
                .sign(&self.rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
        }
    }
}

/// The DER body of the first `PRIVATE KEY` PEM block.
pub(super) fn pem_to_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let (_, rest) = pem
        .split_once("-----BEGIN PRIVATE KEY-----")
        .ok_or(KeyError::Pem("no `-----BEGIN PRIVATE KEY-----` line"))?;
    let (body, _) = rest
        .split_once("-----END PRIVATE KEY-----")
        .ok_or(KeyError::Pem("no `-----END PRIVATE KEY-----` line"))?;
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(body)
        .map_err(|_| KeyError::Pem("the body is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::test_support::{EC_OPENSSL_PEM, ED25519_OPENSSL_PEM, RSA_2048_PEM};

    #[test]
    fn generated_keys_carry_their_thumbprint_as_kid() {
        for alg in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let key = SigningKey::generate(alg).expect("generate");
            assert_eq!(key.algorithm(), alg);
            let jwk = key.public_jwk();
            assert_eq!(jwk.kid.as_deref(), Some(key.kid()));
            assert_eq!(jwk.thumbprint().as_deref(), Some(key.kid()));
            assert_eq!(jwk.alg.as_deref(), Some(Algorithm::from(alg).as_str()));
            assert_eq!(jwk.key_use.as_deref(), Some("sig"));
            assert_eq!(key.kid().len(), 43, "base64url of 32 bytes");
        }
    }

    #[test]
    fn pkcs8_der_and_pem_round_trip() {
        for alg in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let key = SigningKey::generate(alg).expect("generate");
            let again = SigningKey::from_pkcs8_der(key.pkcs8().expose()).expect("der");
            assert_eq!(again.kid(), key.kid());
            let pem = key.pkcs8().to_pem();
            let again = SigningKey::from_pkcs8_pem(pem.expose()).expect("pem");
            assert_eq!(again.kid(), key.kid());
            assert_eq!(again.public_jwk(), key.public_jwk());
        }
    }

    #[test]
    fn keys_written_by_openssl_load() {
        let ed = SigningKey::from_pkcs8_pem(ED25519_OPENSSL_PEM).expect("openssl ed25519 (v1)");
        assert_eq!(ed.algorithm(), SigningAlgorithm::EdDsa);
        let ec = SigningKey::from_pkcs8_pem(EC_OPENSSL_PEM).expect("openssl P-256");
        assert_eq!(ec.algorithm(), SigningAlgorithm::Es256);
    }

    #[test]
    fn other_keys_are_refused() {
        assert_eq!(
            SigningKey::from_pkcs8_pem(RSA_2048_PEM).map(|_| ()),
            Err(KeyError::UnsupportedKeyType)
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem("hello").map(|_| ()),
            Err(KeyError::Pem("no `-----BEGIN PRIVATE KEY-----` line"))
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----"
            )
            .map(|_| ()),
            Err(KeyError::Pem("the body is not base64"))
        );
        assert!(matches!(
            SigningKey::from_pkcs8_der(b"not a key"),
            Err(KeyError::Rejected(_) | KeyError::UnsupportedKeyType)
        ));
    }

    #[test]
    fn private_material_never_debug_prints() {
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).expect("generate");
        let pem = key.pkcs8().to_pem();
        let body_line = pem.expose().lines().nth(1).expect("a body line");
        for shown in [
            format!("{key:?}"),
            format!("{:?}", key.pkcs8()),
            format!("{pem:?}"),
        ] {
            assert!(shown.contains("redacted"), "{shown}");
            assert!(!shown.contains(body_line), "{shown}");
        }
        assert!(format!("{key:?}").contains(key.kid()));
    }
}
