//! `jwks`: JWK Set documents ([`infra_authz::token::Jwks::from_json`]), as a proxy reads them
//! from a snapshot or an external issuer publishes them, and the keys a verifier takes from
//! them.
//!
//! Input: the document's bytes (read lossily as UTF-8).
//!
//! Invariants:
//!
//! - never panics;
//! - a set that reads writes out and reads back to itself;
//! - every key it trusts is for signatures, has its JWK's non-empty `kid`, and is pinned to the
//!   one algorithm of its key type (`OKP` EdDSA, `EC` ES256, `RSA` the JWK's `alg` or RS256),
//!   and reading its JWK again trusts the same key;
//! - a verifier of it can be built exactly when it trusts a key (and no two keys share a kid);
//! - such a verifier accepts the fixture's Ed25519 seed token only if the set holds that very
//!   key: a set cannot make the verifier accept a signature by a key it does not hold.

use infra_authz::token::{Algorithm, Jwks, TrustedKey, Verifier, VerifierError};

use crate::show;
use crate::token::{AUDIENCE, ISSUER, NOW, ed25519_public_x, eddsa_seed};

/// The `jwks` target.
pub fn jwks(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(jwks) = Jwks::from_json(&text) else {
        return;
    };
    let context = |what: &str| format!("{what}\nset: {jwks:?}\ninput: {}", show(data));
    let written = jwks.to_json();
    assert_eq!(
        Jwks::from_json(&written).as_ref(),
        Ok(&jwks),
        "{}",
        context(&format!("the set does not read back from {written}"))
    );

    let trusted = jwks.trusted_keys();
    for key in &trusted {
        let jwk = key.jwk();
        assert!(
            !key.kid().is_empty() && jwk.kid.as_deref() == Some(key.kid()),
            "{}",
            context("a trusted key without its kid")
        );
        assert!(
            jwk.key_use.as_deref().is_none_or(|u| u == "sig"),
            "{}",
            context("a key not for signatures is trusted")
        );
        let pinned = match (jwk.kty.as_str(), key.algorithm()) {
            ("OKP", Algorithm::EdDsa) | ("EC", Algorithm::Es256) => true,
            ("RSA", alg @ (Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512)) => {
                jwk.alg.as_deref().unwrap_or("RS256") == alg.as_str()
            }
            _ => false,
        };
        assert!(pinned, "{}", context("a key pinned to another algorithm"));
        if let Some(alg) = &jwk.alg {
            assert_eq!(
                alg,
                key.algorithm().as_str(),
                "{}",
                context("the pin differs from the JWK's alg")
            );
        }
        let again = TrustedKey::from_jwk(jwk)
            .unwrap_or_else(|e| panic!("{}", context(&format!("a trusted JWK reads as {e}"))));
        assert_eq!(
            (again.kid(), again.algorithm()),
            (key.kid(), key.algorithm()),
            "{}",
            context("reading a trusted JWK again")
        );
        let _ = jwk.thumbprint();
    }

    let verifier = Verifier::builder(ISSUER).trust_jwks(&jwks).build();
    match &verifier {
        Err(VerifierError::NoKeys) => {
            assert!(trusted.is_empty(), "{}", context("keys, but NoKeys"));
        }
        Err(VerifierError::DuplicateKid(_)) => {}
        Err(other) => panic!("{}", context(&format!("unexpected {other}"))),
        Ok(verifier) => {
            assert!(
                !trusted.is_empty(),
                "{}",
                context("a verifier without keys")
            );
            check_seed(verifier, &jwks, &context);
        }
    }
}

/// The Ed25519 seed token verifies only if `jwks` holds its key.
fn check_seed(verifier: &Verifier, jwks: &Jwks, context: &dyn Fn(&str) -> String) {
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW);
    if let Ok(verified) = verifier.verify(eddsa_seed(), AUDIENCE, now) {
        let key = verifier.key(&verified.kid).map(TrustedKey::jwk);
        let ours = ed25519_public_x();
        assert!(
            key.is_some_and(|k| k.kty == "OKP" && k.x.as_deref() == Some(ours))
                && jwks.keys.iter().any(|k| k.x.as_deref() == Some(ours)),
            "{}",
            context("the seed token verified with a key that is not the fixture's")
        );
    }
}
