//! JSON Web Keys: the published key set, and the keys a verifier trusts from it.

use jsonwebtoken::DecodingKey;
use ring::digest;
use serde::{Deserialize, Serialize};

use super::keys::{Algorithm, SigningKey};
use super::{b64url_decode, b64url_encode, clip};

/// One JSON Web Key (RFC 7517), as published: only the public members Infra reads or writes.
///
/// Reading is lenient on purpose: any `kty` deserializes, unknown members (`x5c`, `key_ops`,
/// private members like `d`) are ignored, and [`TrustedKey::from_jwk`] decides whether the key
/// can be used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`, `EC`, `RSA` (or anything else, which is skipped).
    #[serde(default)]
    pub kty: String,
    /// Curve, for `OKP` (`Ed25519`) and `EC` (`P-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public key (`OKP`) or x coordinate (`EC`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// y coordinate (`EC`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Modulus (`RSA`), base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Exponent (`RSA`), base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Key id; tokens name their key with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The one algorithm this key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` or `enc`; keys marked `enc` are never used to verify.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwk {
    /// The public JWK of an Ed25519 key with raw public key `x` (base64url).
    pub(super) fn ed25519(x: String) -> Self {
        Self::signing(Self {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(x),
            alg: Some(Algorithm::EdDsa.as_str().into()),
            ..Self::default()
        })
    }

    /// The public JWK of a P-256 key with coordinates `x`, `y` (base64url).
    pub(super) fn p256(x: String, y: String) -> Self {
        Self::signing(Self {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(x),
            y: Some(y),
            alg: Some(Algorithm::Es256.as_str().into()),
            ..Self::default()
        })
    }

    fn signing(mut jwk: Self) -> Self {
        jwk.key_use = Some("sig".into());
        jwk.kid = jwk.thumbprint();
        jwk
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of the required members in lexicographic
    /// order, without white space. `None` for key types Infra does not know or missing members.
    pub fn thumbprint(&self) -> Option<String> {
        // Written by hand, not through a JSON map, so member order never depends on whether
        // serde_json's `preserve_order` feature happens to be on. The values are base64url or
        // fixed names, but go through the JSON string encoder all the same.
        let s = |v: &str| serde_json::Value::from(v).to_string();
        let canonical = match self.kty.as_str() {
            "OKP" => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                s(self.crv.as_deref()?),
                s(self.x.as_deref()?)
            ),
            "EC" => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                s(self.crv.as_deref()?),
                s(self.x.as_deref()?),
                s(self.y.as_deref()?)
            ),
            "RSA" => format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                s(self.e.as_deref()?),
                s(self.n.as_deref()?)
            ),
            _ => return None,
        };
        Some(b64url_encode(
            digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
        ))
    }
}

/// A JWK Set (RFC 7517 section 5): `{"keys": [...]}`.
///
/// Reading skips entries that are not JSON objects of the expected shape (with a warning) rather
/// than refusing the whole set: one odd key at an identity provider must not lock everyone out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "RawJwks")]
pub struct Jwks {
    /// The keys, in published order.
    pub keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl From<RawJwks> for Jwks {
    fn from(raw: RawJwks) -> Self {
        let keys = raw
            .keys
            .into_iter()
            .filter_map(|value| match serde_json::from_value::<Jwk>(value) {
                Ok(jwk) => Some(jwk),
                Err(err) => {
                    tracing::warn!(error = %err, "skipping a JWKS entry that is not a usable JWK");
                    None
                }
            })
            .collect();
        Self { keys }
    }
}

/// A JWK Set document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document is not JSON, or not an object with a `keys` array.
    #[error("not a JWK Set: {0}")]
    Json(String),
}

impl Jwks {
    /// Reads a JWK Set document.
    pub fn from_json(text: &str) -> Result<Self, JwksError> {
        serde_json::from_str(text).map_err(|err| JwksError::Json(err.to_string()))
    }

    /// Writes the document, for publishing at the JWKS URL.
    pub fn to_json(&self) -> String {
        // Invariant: serde_json fails only for maps with non-string keys or a `Serialize` impl
        // that errors; a `Jwks` is a list of structs of strings.
        serde_json::to_string(self).expect("a JWK Set always serializes")
    }

    /// The published set of some signing keys (typically the current and the previous one).
    pub fn from_signing_keys<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| k.public_jwk().clone()).collect(),
        }
    }

    /// The keys of this set that can verify tokens; the others are skipped with a log line.
    pub fn trusted_keys(&self) -> Vec<TrustedKey> {
        self.keys
            .iter()
            .filter_map(|jwk| match TrustedKey::from_jwk(jwk) {
                Ok(key) => Some(key),
                Err(err) => {
                    let kid = jwk.kid.as_deref().map(clip);
                    tracing::warn!(kid, kty = %clip(&jwk.kty), error = %err, "skipping a JWKS key");
                    None
                }
            })
            .collect()
    }
}

/// Why a JWK cannot be used to verify tokens. Reading a JWKS skips such keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The key is marked for another use than signatures (`"use": "enc"`).
    #[error("the key is for {0:?}, not for signatures")]
    NotForSignatures(String),
    /// The key has no `kid`; tokens choose their key by `kid`, so it could never be chosen.
    #[error("the key has no `kid`")]
    MissingKid,
    /// A symmetric (`oct`) key: a shared secret is never trusted to verify tokens.
    #[error("symmetric (`oct`) keys are never trusted")]
    SymmetricKey,
    /// A key type Infra does not verify with.
    #[error("unsupported key type {0:?}")]
    UnsupportedKeyType(String),
    /// A curve Infra does not verify with (only `Ed25519` for `OKP`, `P-256` for `EC`).
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(String),
    /// The key's `alg` is not one this key type may be pinned to.
    #[error("a {kty} key may not be used with `alg` {alg:?}")]
    AlgorithmNotAllowed {
        /// The key type.
        kty: &'static str,
        /// The `alg` the key asked for.
        alg: String,
    },
    /// A member the key type needs is absent.
    #[error("the key has no `{0}`")]
    MissingParameter(&'static str),
    /// A member is not base64url, or has the wrong length or value.
    #[error("the key's `{0}` is malformed")]
    InvalidParameter(&'static str),
    /// The public key is not a valid point of its curve.
    #[error("the public key is not valid for its curve")]
    InvalidPublicKey,
    /// An RSA modulus outside 2048..=4096 bits.
    #[error("an RSA modulus of {0} bits; 2048 to 4096 are accepted")]
    RsaKeySize(usize),
}

/// A public key a [`Verifier`](super::Verifier) trusts: its `kid` and the one algorithm it is
/// pinned to.
///
/// Pinning follows the key type, never the token: an `OKP` Ed25519 key verifies only `EdDSA`,
/// an `EC` P-256 key only `ES256`, an `RSA` key only the `alg` its JWK names (`RS256` when it
/// names none; `RS384` and `RS512` when it says so).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    kid: String,
    algorithm: Algorithm,
    jwk: Jwk,
    key: DecodingKey,
}

impl TrustedKey {
    /// The key of a JWK, if Infra can verify with it.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        if let Some(key_use) = jwk.key_use.as_deref().filter(|u| *u != "sig") {
            return Err(JwkError::NotForSignatures(clip(key_use)));
        }
        let (algorithm, key) = match jwk.kty.as_str() {
            "OKP" => okp_key(jwk)?,
            "EC" => ec_key(jwk)?,
            "RSA" => rsa_key(jwk)?,
            "oct" => return Err(JwkError::SymmetricKey),
            other => return Err(JwkError::UnsupportedKeyType(clip(other))),
        };
        let kid = jwk
            .kid
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or(JwkError::MissingKid)?;
        Ok(Self {
            kid,
            algorithm,
            jwk: jwk.clone(),
            key,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The JWK the key came from.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The pinned algorithm of a key type: `alg` must be absent or exactly `only`.
fn pinned(kty: &'static str, alg: Option<&str>, only: Algorithm) -> Result<Algorithm, JwkError> {
    match alg {
        None => Ok(only),
        Some(alg) if alg == only.as_str() => Ok(only),
        Some(alg) => Err(JwkError::AlgorithmNotAllowed {
            kty,
            alg: clip(alg),
        }),
    }
}

/// Decodes base64url member `name`, which must be `len` bytes long (any length if `None`).
fn member(
    value: Option<&str>,
    name: &'static str,
    len: Option<usize>,
) -> Result<Vec<u8>, JwkError> {
    let value = value.ok_or(JwkError::MissingParameter(name))?;
    let bytes = b64url_decode(value).ok_or(JwkError::InvalidParameter(name))?;
    match len {
        Some(len) if bytes.len() != len => Err(JwkError::InvalidParameter(name)),
        _ => Ok(bytes),
    }
}

/// `jsonwebtoken` builds its verifier (and parses the key) on every call; doing it once here
/// refuses a bad key when it is loaded, not on each request.
fn probe(key: &DecodingKey, alg: Algorithm) -> Result<(), JwkError> {
    jsonwebtoken::crypto::verify("", b"", key, alg.to_jsonwebtoken())
        .map(|_| ())
        .map_err(|_| JwkError::InvalidPublicKey)
}

fn okp_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), JwkError> {
    match jwk.crv.as_deref() {
        Some("Ed25519") => {}
        Some(other) => return Err(JwkError::UnsupportedCurve(clip(other))),
        None => return Err(JwkError::MissingParameter("crv")),
    }
    let alg = pinned("OKP", jwk.alg.as_deref(), Algorithm::EdDsa)?;
    // Exactly 32 bytes: jsonwebtoken slices the first 32 bytes of the key and would panic on
    // fewer.
    let x = member(jwk.x.as_deref(), "x", Some(32))?;
    let key = DecodingKey::from_ed_components(&b64url_encode(x))
        .map_err(|_| JwkError::InvalidParameter("x"))?;
    probe(&key, alg)?;
    Ok((alg, key))
}

fn ec_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), JwkError> {
    match jwk.crv.as_deref() {
        Some("P-256") => {}
        Some(other) => return Err(JwkError::UnsupportedCurve(clip(other))),
        None => return Err(JwkError::MissingParameter("crv")),
    }
    let alg = pinned("EC", jwk.alg.as_deref(), Algorithm::Es256)?;
    let x = member(jwk.x.as_deref(), "x", Some(32))?;
    let y = member(jwk.y.as_deref(), "y", Some(32))?;
    let key = DecodingKey::from_ec_components(&b64url_encode(x), &b64url_encode(y))
        .map_err(|_| JwkError::InvalidPublicKey)?;
    probe(&key, alg)?;
    Ok((alg, key))
}

fn rsa_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), JwkError> {
    let alg = match jwk.alg.as_deref() {
        None | Some("RS256") => Algorithm::Rs256,
        Some("RS384") => Algorithm::Rs384,
        Some("RS512") => Algorithm::Rs512,
        Some(other) => {
            return Err(JwkError::AlgorithmNotAllowed {
                kty: "RSA",
                alg: clip(other),
            });
        }
    };
    let n = member(jwk.n.as_deref(), "n", None)?;
    let e = member(jwk.e.as_deref(), "e", None)?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n.first().map_or(0, |first| {
        (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize)
    });
    if !(2048..=4096).contains(&bits) {
        return Err(JwkError::RsaKeySize(bits));
    }
    // An odd exponent in 3..2^33, the range the RSA implementation accepts.
    let exponent = if e.len() <= 8 {
        e.iter().fold(0_u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        0
    };
    if !(3..1 << 33).contains(&exponent) || exponent % 2 == 0 {
        return Err(JwkError::InvalidParameter("e"));
    }
    Ok((alg, DecodingKey::from_rsa_raw_components(n, e)))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keys::SigningAlgorithm;
    use crate::token::test_support::rsa_fixture_jwk;

    fn keys() -> (SigningKey, SigningKey) {
        (
            SigningKey::generate(SigningAlgorithm::EdDsa).expect("ed25519"),
            SigningKey::generate(SigningAlgorithm::Es256).expect("p256"),
        )
    }

    #[test]
    fn jwks_write_read_round_trip() {
        let (ed, ec) = keys();
        let jwks = Jwks::from_signing_keys([&ed, &ec]);
        let text = jwks.to_json();
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        let first = &value["keys"][0];
        assert_eq!(first["kty"], "OKP");
        assert_eq!(first["crv"], "Ed25519");
        assert_eq!(first["alg"], "EdDSA");
        assert_eq!(first["use"], "sig");
        assert_eq!(first["kid"], ed.kid());
        assert!(first.get("y").is_none());
        let second = &value["keys"][1];
        assert_eq!(second["kty"], "EC");
        assert_eq!(second["crv"], "P-256");
        assert_eq!(second["alg"], "ES256");
        assert!(second["x"].is_string() && second["y"].is_string());

        let read = Jwks::from_json(&text).expect("read back");
        assert_eq!(read, jwks);
        let trusted = read.trusted_keys();
        assert_eq!(trusted.len(), 2);
        assert_eq!(trusted[0].kid(), ed.kid());
        assert_eq!(trusted[0].algorithm(), Algorithm::EdDsa);
        assert_eq!(trusted[1].kid(), ec.kid());
        assert_eq!(trusted[1].algorithm(), Algorithm::Es256);
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 section 3.1.
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            ),
            e: Some("AQAB".into()),
            alg: Some("RS256".into()),
            kid: Some("2011-04-29".into()),
            ..Jwk::default()
        };
        assert_eq!(
            jwk.thumbprint().as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(Jwk::default().thumbprint(), None);
    }

    #[test]
    fn reading_skips_keys_it_cannot_use() {
        let (ed, _) = keys();
        let ed_json = serde_json::to_value(ed.public_jwk()).expect("jwk");
        let rsa = serde_json::to_value(rsa_fixture_jwk(None)).expect("jwk");
        let text = serde_json::json!({"keys": [
            ed_json,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"},
            {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA", "kid": "p384"},
            {"kty": "AKP", "alg": "ML-DSA-44", "pub": "AAAA", "kid": "pq"},
            {"kty": "RSA", "n": rsa["n"], "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": 7},
            "not an object",
            rsa,
        ]})
        .to_string();
        let jwks = Jwks::from_json(&text).expect("lenient read");
        assert_eq!(jwks.keys.len(), 7, "the two non-JWK entries are dropped");
        let trusted = jwks.trusted_keys();
        let kids: Vec<_> = trusted.iter().map(TrustedKey::kid).collect();
        assert_eq!(kids, [ed.kid(), "rsa-fixture"]);
        assert_eq!(
            trusted[1].algorithm(),
            Algorithm::Rs256,
            "absent alg on RSA is RS256"
        );
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert!(matches!(Jwks::from_json("{}"), Err(JwksError::Json(_))));
        assert!(matches!(Jwks::from_json("[]"), Err(JwksError::Json(_))));
        assert_eq!(Jwks::from_json(r#"{"keys":[]}"#), Ok(Jwks::default()));
    }

    #[test]
    fn each_key_type_is_pinned_to_its_algorithm() {
        let (ed, ec) = keys();
        let with_alg = |jwk: &Jwk, alg: &str| Jwk {
            alg: Some(alg.into()),
            ..jwk.clone()
        };
        assert_eq!(
            TrustedKey::from_jwk(&with_alg(ed.public_jwk(), "ES256")).map(|_| ()),
            Err(JwkError::AlgorithmNotAllowed {
                kty: "OKP",
                alg: "ES256".into()
            })
        );
        assert_eq!(
            TrustedKey::from_jwk(&with_alg(ec.public_jwk(), "EdDSA")).map(|_| ()),
            Err(JwkError::AlgorithmNotAllowed {
                kty: "EC",
                alg: "EdDSA".into()
            })
        );
        let rsa = rsa_fixture_jwk(None);
        for (alg, pinned) in [
            ("RS256", Algorithm::Rs256),
            ("RS384", Algorithm::Rs384),
            ("RS512", Algorithm::Rs512),
        ] {
            let key = TrustedKey::from_jwk(&with_alg(&rsa, alg)).expect("rsa");
            assert_eq!(key.algorithm(), pinned);
        }
        for alg in ["HS256", "PS256", "none", "rs256"] {
            assert_eq!(
                TrustedKey::from_jwk(&with_alg(&rsa, alg)).map(|_| ()),
                Err(JwkError::AlgorithmNotAllowed {
                    kty: "RSA",
                    alg: alg.into()
                })
            );
        }
        // Without `alg`, OKP and EC keys take the one algorithm of their type.
        let bare = Jwk {
            alg: None,
            ..ec.public_jwk().clone()
        };
        assert_eq!(
            TrustedKey::from_jwk(&bare).map(|k| k.algorithm()),
            Ok(Algorithm::Es256)
        );
    }

    #[test]
    fn bad_key_material_is_refused() {
        let (ed, ec) = keys();
        let short = Jwk {
            x: Some(b64url_encode([7_u8; 31])),
            ..ed.public_jwk().clone()
        };
        assert_eq!(
            TrustedKey::from_jwk(&short).map(|_| ()),
            Err(JwkError::InvalidParameter("x"))
        );
        let off_curve = Jwk {
            y: Some(b64url_encode([1_u8; 32])),
            ..ec.public_jwk().clone()
        };
        assert_eq!(
            TrustedKey::from_jwk(&off_curve).map(|_| ()),
            Err(JwkError::InvalidPublicKey)
        );
        let no_kid = Jwk {
            kid: None,
            ..ed.public_jwk().clone()
        };
        assert_eq!(
            TrustedKey::from_jwk(&no_kid).map(|_| ()),
            Err(JwkError::MissingKid)
        );
        let small_rsa = Jwk {
            n: Some(b64url_encode([0xC5_u8; 128])),
            ..rsa_fixture_jwk(None)
        };
        assert_eq!(
            TrustedKey::from_jwk(&small_rsa).map(|_| ()),
            Err(JwkError::RsaKeySize(1024))
        );
        let even_e = Jwk {
            e: Some(b64url_encode([1_u8, 0, 0])),
            ..rsa_fixture_jwk(None)
        };
        assert_eq!(
            TrustedKey::from_jwk(&even_e).map(|_| ()),
            Err(JwkError::InvalidParameter("e"))
        );
        let enc = Jwk {
            key_use: Some("enc".into()),
            ..rsa_fixture_jwk(None)
        };
        assert_eq!(
            TrustedKey::from_jwk(&enc).map(|_| ()),
            Err(JwkError::NotForSignatures("enc".into()))
        );
    }
}
