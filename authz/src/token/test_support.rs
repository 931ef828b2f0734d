//! Fixtures and helpers shared by the token tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{RsaEncoding, RsaKeyPair};
use serde_json::{Value, json};

use super::issue::sign_compact;
use super::keys::pem_to_der;
use super::{
    Issuer, Jwk, Jwks, SigningAlgorithm, SigningKey, TokenRequest, Verifier, b64url_encode,
};

/// A 2048-bit RSA key, made once with `openssl genpkey -algorithm RSA -pkeyopt
/// rsa_keygen_bits:2048`, to sign RS256 tokens as an external identity provider would. A test
/// fixture: it protects nothing.
pub const RSA_2048_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCp4grSH1YxG90C
n7qyxcujAHPk6eULlRvljj2/ArO7HqdNM8epTTdbjdouJhmvZYz3vofEDlJFS/e2
sfdteG5isS6668jNTvfbDRt3pS8FFhr/Hebi3chQPADry6GN+AjkXGO15o5c2d3S
XM0JCepBoXrMRI2AKfRQPxzz581UmkRiS5UdX11cyv4oD65dP9LCdrEe4gvicdez
yZfrKAWx4plHSumZCEKyYkbNO9ZMrpJRJlUh/5B1sOgXHN3GfymL+cljGpAAvdok
tca9VESViA+AaKDTBgOwyE7BF22+q1nBKfiNH01mkydULOl53ecLDBAG/VJDmmAR
wb3lFfBfAgMBAAECggEACixHkpqeyjUNcI1JHFB858dsqT4aYa2trHrulqQeSCvH
P/fEUo6VrI1bjdzpN9ggb2uA7MwgwBaTAGU62FrYXV+X2UiqTyUV8Y+g3/LL1IWk
2zcaruYyCx/0vCoHBB3gxnAD5o4mY0gGoQS+oHZwCTsWw+mtAYpBn5aP8MkmQhUb
pCP6RazJGFpo53269QrdrvIpIzWWssrOtHmP/FjHx7iryoIg9I1c8m/hOapFMwnX
edfzCnHY+VVvUeVKGWPV7g6OkItJ6srJsa98PprKmhSPNxrAl7uE6ZiBmIyK/FAL
+03vUO9/bojnpTtbl5MWEysgNrUqCdBPyLmXNZsCyQKBgQDun685b+qCSCz0RruA
8CptDxs3ljKzFqW/iKUJJ704TLITT47tbqgpytV36wjTr44shWoakZxYCHHIyFsw
Eq6t1gc5LivyhzZIBywgaBp1VxOjKU3F7pJZj13m+qKu7400RAfKhTaC6yDsg5Bj
T0LKx4CiI4NtcWkDwdoiz//wNwKBgQC2QOxes2vebk9aWXGAlAFr+Z8dNSQ/TGZ2
3anLiDwvstm7em4qoYg27ITW3xnfVg3vrr6utxO1dpShY8lX8bkcDl6LswBDQTBj
3kBupvVNo0qwRJTTGSa/WxXaal+CpIUHjq+ok4QuL6AkCk7pD7gQNkoj9bdbtNk6
EDbuZwjdGQKBgQC/GclVoWhYf/7ofoEJaM1BW/i7EqF1xSxmcMNiyp2CKgHu7ycS
xS0NkzBUAjmmdhDRXOM1demUoualGrfUjxGvjBlq1KxDZb+1/XB8X4LY+Cx03c44
NrCj4uob4htJJ/WYpubqbLbUMAPFBjQrJD3kcdN1hiVqD4o/hQ7yFEvvDwKBgGQk
JDycxYaAgiWYw97sdCOKEz2PN414Q0zI20U0ZC2pTi3PRb0y6I+VQiB2kda/iATM
tYV2nuO0dlJ/a+Bgt1+NHbIQ9vH9XcNiGXEzV9IDCUT1Sfj79uhp+gX7MOOt1lKi
ui4ccCKYlJt49obk1jRCQFal6sv/AOUAh85S2vHxAoGAUBGmD7eUbRZTvR43MuiM
He7/wVE3/UWU+0nlfIPnuA2z5UvZgLGRr1sxvK4FpBuxiKZ+a/saWG8jhXhvWMIn
ljQOQveJhVrloSNZ8LYqTSu9bGoCAl0/RvH5Ex7/SJMEKg8P+mjCdWpoU6uaAZkq
rVNNd77/+NBEE9RLmng7LTc=
-----END PRIVATE KEY-----
";

/// An Ed25519 key from `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key).
pub const ED25519_OPENSSL_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBb+BoCw1xFsCSmq2YhED7kRTmem3bx9c0z+HQlObSoZ
-----END PRIVATE KEY-----
";

/// A P-256 key from `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
pub const EC_OPENSSL_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi20XYPjX268trDoP
67NCDksKUA2Ph0Whzlvhm0psC2ChRANCAAQVMqHTiRoPSXU1Q24iEYU2/FBLFQ+a
EYtneZ5/s5dtJzjn91DBveowm2lBNNppDiVN+refg8GI+Lnzlwfj07cD
-----END PRIVATE KEY-----
";

/// A fixed "now": 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;
pub const ISSUER: &str = "https://infra.example.com";
pub const AUDIENCE: &str = "production";

/// `secs` seconds after the Unix epoch.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn issuer(alg: SigningAlgorithm) -> Issuer {
    Issuer::new(ISSUER, SigningKey::generate(alg).expect("generate")).expect("issuer")
}

/// A verifier of `ISSUER` that trusts these keys, through their published JWKS.
pub fn verifier_for(keys: &[&SigningKey]) -> Verifier {
    let jwks =
        Jwks::from_json(&Jwks::from_signing_keys(keys.iter().copied()).to_json()).expect("jwks");
    Verifier::builder(ISSUER)
        .trust_jwks(&jwks)
        .build()
        .expect("verifier")
}

/// Suzie, for `AUDIENCE`, for five minutes.
pub fn request(groups: &[String]) -> TokenRequest<'_> {
    TokenRequest {
        user_id: "u-42",
        name: "suzie@example.com",
        groups,
        audience: AUDIENCE,
        ttl: Duration::from_mins(5),
        session: None,
    }
}

/// A complete set of Infra claims, valid from `now` for five minutes.
pub fn infra_claims(now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "u-42",
        "aud": AUDIENCE,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "AAAAAAAAAAAAAAAAAAAAAA",
        "name": "suzie@example.com",
        "groups": ["Engineering"],
    })
}

/// A compact JWS of any header and claims, with the signature `sign` makes over the signing
/// input.
pub fn forge_with(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64url_encode(header.to_string()),
        b64url_encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64url_encode(signature))
}

/// A compact JWS of any header and claims, properly signed with `key`.
pub fn forge(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_compact(
        key,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
    .expect("sign")
}

/// A compact JWS of a header and claims written as JSON text, exactly as given (so they can
/// hold what `serde_json::Value` cannot, such as a repeated member), properly signed with `key`.
pub fn forge_raw(key: &SigningKey, header: &str, claims: &str) -> String {
    sign_compact(key, header.as_bytes(), claims.as_bytes()).expect("sign")
}

pub fn rsa_key_pair() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(&pem_to_der(RSA_2048_PEM).expect("pem")).expect("rsa key")
}

/// The public JWK of the RSA fixture, `kid` `rsa-fixture`, with `alg` if given.
pub fn rsa_fixture_jwk(alg: Option<&str>) -> Jwk {
    let public = PublicKeyComponents::<Vec<u8>>::from(rsa_key_pair().public());
    Jwk {
        kty: "RSA".into(),
        n: Some(b64url_encode(&public.n)),
        e: Some(b64url_encode(&public.e)),
        kid: Some("rsa-fixture".into()),
        alg: alg.map(str::to_owned),
        key_use: Some("sig".into()),
        ..Jwk::default()
    }
}

/// An RSA signature by the fixture key.
pub fn rsa_sign(encoding: &'static dyn RsaEncoding, message: &[u8]) -> Vec<u8> {
    let pair = rsa_key_pair();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(encoding, &SystemRandom::new(), message, &mut signature)
        .expect("rsa sign");
    signature
}

/// Part `index` (0 header, 1 payload, 2 signature) of a compact JWS.
pub fn part(token: &str, index: usize) -> &str {
    token.split('.').nth(index).expect("three parts")
}
