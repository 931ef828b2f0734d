//! `token`: the JWT verifier ([`infra_authz::token::Verifier`] and its [`TokenCache`]) with a
//! fixed key set: the Ed25519, P-256 and RSA fixtures of `authz/src/token/test_support.rs`.
//!
//! Two verifiers check every input at a fixed `now` ([`NOW`]): Infra's own (`verify`, keys
//! Ed25519 and P-256) and an external issuer's (`verify_mapped`, keys RSA and Ed25519, usernames
//! from a verified `email` with prefix `oidc:`), each directly and through a cache.
//!
//! Input: a mode byte, then
//!
//! - mode 0 (raw): the bearer token itself (bytes read lossily as UTF-8). The fuzzer cannot
//!   sign, so nothing may verify but the fixture's own seed tokens: **an accepted token's signed
//!   part must be one the fixture signed** ([`seed_tokens`]).
//! - mode 1 (signed): a key byte (0 Ed25519, 1 P-256, 2 RSA) and the token's claims JSON; with a
//!   `0xFF` byte in it, what precedes it is the JOSE header JSON instead of the key's own
//!   (`{"alg":..,"kid":..}`). The harness signs header and claims with that key, so the fuzzer
//!   reaches the claim checks behind the signature. **An accepted token names the key that
//!   signed it** (no key confusion), and its claims are what the verifier promises.
//!
//! Invariants, for either verifier:
//!
//! - never panics (`VerifiedToken::expires_at` included);
//! - the cache answers what the verifier answers, on a miss and on the hit after it;
//! - an accepted token: `iss` is the issuer, `aud` names the audience, `now` is before
//!   `exp + leeway` and not before `nbf - leeway`, every user and group name is valid (no
//!   `system:`), and the claims are those of the signed payload.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use infra_authz::policy::validate_subject_name;
use infra_authz::token::{
    ClaimMapping, DEFAULT_LEEWAY, Jwk, Jwks, SigningKey, TokenCache, TokenCacheConfig, TokenError,
    TokenIdentity, TrustedKey, VerifiedToken, Verifier,
};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Map, Value, json};

use crate::show;

/// The Ed25519 fixture of `authz/src/token/test_support.rs` (`openssl genpkey`, PKCS#8 v1).
const ED25519_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBb+BoCw1xFsCSmq2YhED7kRTmem3bx9c0z+HQlObSoZ
-----END PRIVATE KEY-----
";

/// The P-256 fixture of `authz/src/token/test_support.rs`.
const EC_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi20XYPjX268trDoP
67NCDksKUA2Ph0Whzlvhm0psC2ChRANCAAQVMqHTiRoPSXU1Q24iEYU2/FBLFQ+a
EYtneZ5/s5dtJzjn91DBveowm2lBNNppDiVN+refg8GI+Lnzlwfj07cD
-----END PRIVATE KEY-----
";

/// The RSA-2048 fixture of `authz/src/token/test_support.rs`. A test key: it protects nothing.
const RSA_PEM: &str = "\
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

/// The issuer both verifiers expect.
pub const ISSUER: &str = "https://infra.example.com";
/// The audience both verifiers check for.
pub const AUDIENCE: &str = "production";
/// The RSA fixture's `kid`.
pub const RSA_KID: &str = "rsa-fixture";
/// When the seed tokens were issued: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;
/// The fixed "now" of every check: a minute after [`T0`].
pub const NOW: u64 = T0 + 60;

/// The keys, verifiers and caches, made once.
struct Fixture {
    ed: SigningKey,
    ec: SigningKey,
    ed_pair: Ed25519KeyPair,
    ec_pair: EcdsaKeyPair,
    rsa_pair: RsaKeyPair,
    rng: SystemRandom,
    infra: Verifier,
    external: Verifier,
    infra_cache: TokenCache<VerifiedToken>,
    external_cache: TokenCache<TokenIdentity>,
    seeds: Vec<(&'static str, String)>,
    known: HashSet<String>,
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    // Invariant: the fixtures above are valid base64.
    STANDARD.decode(body).expect("a fixture PEM")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Invariant (for every `expect` here): the fixtures are valid keys of their kinds.
        let rng = SystemRandom::new();
        let ed = SigningKey::from_pkcs8_pem(ED25519_PEM).expect("Ed25519 fixture");
        let ec = SigningKey::from_pkcs8_pem(EC_PEM).expect("P-256 fixture");
        let ed_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(ed.pkcs8().expose()).expect("Ed25519 pair");
        let ec_pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.pkcs8().expose(), &rng)
                .expect("P-256 pair");
        let rsa_pair = RsaKeyPair::from_pkcs8(&pem_to_der(RSA_PEM)).expect("RSA pair");
        let public = PublicKeyComponents::<Vec<u8>>::from(rsa_pair.public());
        let rsa_jwk = Jwk {
            kty: "RSA".into(),
            n: Some(b64(&public.n)),
            e: Some(b64(&public.e)),
            kid: Some(RSA_KID.into()),
            alg: Some("RS256".into()),
            key_use: Some("sig".into()),
            ..Jwk::default()
        };
        let jwks = Jwks::from_signing_keys([&ed, &ec]);
        let infra = Verifier::builder(ISSUER)
            .trust_jwks(&Jwks::from_json(&jwks.to_json()).expect("the fixture JWKS"))
            .build()
            .expect("Infra verifier");
        let external = Verifier::builder(ISSUER)
            .trust_key(TrustedKey::from_jwk(&rsa_jwk).expect("RSA fixture JWK"))
            .trust_key(TrustedKey::from_jwk(ed.public_jwk()).expect("Ed25519 JWK"))
            .claim_mapping(ClaimMapping {
                username_claim: "email".into(),
                username_prefix: "oidc:".into(),
                groups_claim: "groups".into(),
                groups_prefix: "oidc:".into(),
            })
            .build()
            .expect("external verifier");
        let mut fixture = Fixture {
            ed,
            ec,
            ed_pair,
            ec_pair,
            rsa_pair,
            rng,
            infra,
            external,
            infra_cache: TokenCache::new(TokenCacheConfig::default()),
            external_cache: TokenCache::new(TokenCacheConfig::default()),
            seeds: Vec::new(),
            known: HashSet::new(),
        };
        fixture.seeds = seed_tokens_of(&fixture);
        fixture.known = fixture
            .seeds
            .iter()
            .filter_map(|(_, token)| token.rsplit_once('.').map(|(input, _)| input.to_owned()))
            .collect();
        fixture
    })
}

/// The claims of the seed tokens: Infra's for Suzie, valid from [`T0`] for five minutes.
fn infra_claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "u-42", "aud": AUDIENCE,
        "exp": T0 + 300, "nbf": T0, "iat": T0,
        "jti": "AAAAAAAAAAAAAAAAAAAAAA",
        "name": "suzie@example.com", "groups": ["Engineering"],
        "sid": "ak-1", "sid_at": T0 - 100,
    })
}

/// An external issuer's ID token claims for Suzie.
fn external_claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "00u1", "aud": [AUDIENCE, "other"],
        "exp": T0 + 3600, "iat": T0,
        "email": "suzie@example.com", "email_verified": true,
        "groups": ["Engineering", "Everyone"],
    })
}

/// The key a signed-mode input chooses.
#[derive(Clone, Copy)]
enum Key {
    Ed25519,
    P256,
    Rsa,
}

impl Key {
    fn from_byte(b: u8) -> Self {
        match b % 3 {
            0 => Self::Ed25519,
            1 => Self::P256,
            _ => Self::Rsa,
        }
    }

    fn kid(self, fixture: &Fixture) -> &str {
        match self {
            Self::Ed25519 => fixture.ed.kid(),
            Self::P256 => fixture.ec.kid(),
            Self::Rsa => RSA_KID,
        }
    }

    fn header(self, fixture: &Fixture) -> String {
        let alg = match self {
            Self::Ed25519 => "EdDSA",
            Self::P256 => "ES256",
            Self::Rsa => "RS256",
        };
        json!({"alg": alg, "kid": self.kid(fixture), "typ": "JWT"}).to_string()
    }

    /// The compact JWS of `header` and `claims` (bytes as they are), signed with this key.
    fn sign(self, fixture: &Fixture, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = match self {
            Self::Ed25519 => fixture.ed_pair.sign(input.as_bytes()).as_ref().to_vec(),
            // Invariant (both): signing with a valid key only fails when the RNG does.
            Self::P256 => fixture
                .ec_pair
                .sign(&fixture.rng, input.as_bytes())
                .expect("P-256 signature")
                .as_ref()
                .to_vec(),
            Self::Rsa => {
                let mut signature = vec![0; fixture.rsa_pair.public().modulus_len()];
                fixture
                    .rsa_pair
                    .sign(
                        &RSA_PKCS1_SHA256,
                        &fixture.rng,
                        input.as_bytes(),
                        &mut signature,
                    )
                    .expect("RSA signature");
                signature
            }
        };
        format!("{input}.{}", b64(signature))
    }
}

fn seed_tokens_of(fixture: &Fixture) -> Vec<(&'static str, String)> {
    let infra = infra_claims().to_string();
    let external = external_claims().to_string();
    [
        ("eddsa-infra", Key::Ed25519, &infra),
        ("es256-infra", Key::P256, &infra),
        ("rs256-external", Key::Rsa, &external),
        ("eddsa-external", Key::Ed25519, &external),
    ]
    .into_iter()
    .map(|(name, key, claims)| {
        (
            name,
            key.sign(fixture, key.header(fixture).as_bytes(), claims.as_bytes()),
        )
    })
    .collect()
}

/// The fixture's seed tokens, by name: what `corpus/token/raw-*` holds (after the mode byte 0).
/// The only tokens a raw-mode input may get accepted (the P-256 one's signature differs each
/// time; its signed part does not).
pub fn seed_tokens() -> &'static [(&'static str, String)] {
    &fixture().seeds
}

/// The Ed25519 seed token (Infra's claims).
pub(crate) fn eddsa_seed() -> &'static str {
    fixture()
        .seeds
        .iter()
        .find(|(name, _)| *name == "eddsa-infra")
        .map_or("", |(_, token)| token)
}

/// The fixture Ed25519 key's public `x` (base64url).
pub(crate) fn ed25519_public_x() -> &'static str {
    fixture().ed.public_jwk().x.as_deref().unwrap_or_default()
}

/// The `token` target.
pub fn token(data: &[u8]) {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        check(fixture, &token, None, data);
    } else {
        let Some((&key, rest)) = rest.split_first() else {
            return;
        };
        let key = Key::from_byte(key);
        let own_header = key.header(fixture);
        let (header, claims) = match rest.iter().position(|&b| b == 0xFF) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (own_header.as_bytes(), rest),
        };
        let token = key.sign(fixture, header, claims);
        check(fixture, &token, Some(key.kid(fixture)), data);
    }
}

/// Checks `token` with both verifiers; `signer` is the kid of the key that signed it, when the
/// harness did.
fn check(fixture: &Fixture, token: &str, signer: Option<&str>, data: &[u8]) {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let context = |what: &str| format!("{what}\ntoken: {token}\ninput: {}", show(data));

    // The cache's miss verifies a second time: that answer must be the same (deterministic).
    let direct = fixture.infra.verify(token, AUDIENCE, now);
    for attempt in ["miss", "hit"] {
        let cached = fixture
            .infra_cache
            .verify(&fixture.infra, token, AUDIENCE, now)
            .map(|v| (*v).clone());
        assert!(
            same_answer(&cached, &direct),
            "{}",
            context(&format!(
                "the cache ({attempt}) disagrees with the verifier: {cached:?}, {direct:?}"
            ))
        );
    }
    if let Ok(verified) = &direct {
        let claims = accepted(fixture, token, signer, &verified.kid, &context);
        let c = &verified.claims;
        assert!(
            c.iss == ISSUER && c.aud == AUDIENCE,
            "{}",
            context("iss or aud")
        );
        in_time(c.exp, Some(c.nbf), &context);
        for name in [&c.sub, &c.name].into_iter().chain(&c.groups) {
            valid_name(name, &context);
        }
        assert_eq!(
            (claims.get("sub"), claims.get("name"), claims.get("exp")),
            (
                Some(&Value::from(c.sub.as_str())),
                Some(&Value::from(c.name.as_str())),
                Some(&Value::from(c.exp))
            ),
            "{}",
            context("the verified claims are not the signed ones")
        );
        // Public API on a verified token: must not panic either.
        let _ = verified.expires_at();
    }

    let direct = fixture.external.verify_mapped(token, AUDIENCE, now);
    for attempt in ["miss", "hit"] {
        let cached = fixture
            .external_cache
            .verify_mapped(&fixture.external, token, AUDIENCE, now)
            .map(|v| (*v).clone());
        assert!(
            same_answer(&cached, &direct),
            "{}",
            context(&format!(
                "the mapped cache ({attempt}) disagrees: {cached:?}, {direct:?}"
            ))
        );
    }
    if let Ok(identity) = &direct {
        let header = part_json(token, 0).unwrap_or_default();
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let claims = accepted(fixture, token, signer, kid, &context);
        in_time(identity.exp, identity.nbf, &context);
        assert!(
            identity.user.starts_with("oidc:")
                && identity.groups.iter().all(|g| g.starts_with("oidc:")),
            "{}",
            context("a mapped name without its prefix")
        );
        for name in std::iter::once(&identity.user).chain(&identity.groups) {
            valid_name(name, &context);
        }
        assert_eq!(
            claims.get("email").and_then(Value::as_str),
            identity.user.strip_prefix("oidc:"),
            "{}",
            context("the mapped user is not the signed email")
        );
        assert!(
            matches!(claims.get("email_verified"), None | Some(Value::Bool(true))),
            "{}",
            context("an unverified email was mapped")
        );
    }
}

/// Whether two answers for one token agree: the same verified token, or the same refusal. A
/// token with several required claims missing or malformed is refused for one of them, and
/// which one varies from call to call (jsonwebtoken checks them in the order of a `HashSet`;
/// docs/fuzzing.md): any two such refusals agree.
fn same_answer<T: PartialEq>(a: &Result<T, TokenError>, b: &Result<T, TokenError>) -> bool {
    let claim =
        |e: &TokenError| matches!(e, TokenError::MissingClaim(_) | TokenError::InvalidClaim(_));
    match (a, b) {
        (Err(x), Err(y)) if claim(x) && claim(y) => true,
        _ => a == b,
    }
}

/// What every accepted token must be: signed by the key it names (and, in raw mode, signed by
/// the fixture at all). Gives its signed claims.
fn accepted(
    fixture: &Fixture,
    token: &str,
    signer: Option<&str>,
    kid: &str,
    context: &dyn Fn(&str) -> String,
) -> Map<String, Value> {
    if let Some(signer) = signer {
        assert_eq!(
            kid,
            signer,
            "{}",
            context("a token was accepted under another key than the one that signed it")
        );
    } else {
        let input = token.rsplit_once('.').map_or("", |(input, _)| input);
        assert!(
            fixture.known.contains(input),
            "{}",
            context("a token the fixture never signed was accepted")
        );
    }
    part_json(token, 1).unwrap_or_else(|| panic!("{}", context("accepted claims are not JSON")))
}

/// Part `index` of a compact JWS, decoded as a JSON object.
fn part_json(token: &str, index: usize) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(index)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn in_time(exp: u64, nbf: Option<u64>, context: &dyn Fn(&str) -> String) {
    let leeway = DEFAULT_LEEWAY.as_secs();
    assert!(
        NOW < exp.saturating_add(leeway) && nbf.is_none_or(|nbf| nbf <= NOW + leeway),
        "{}",
        context("accepted outside exp/nbf")
    );
}

fn valid_name(name: &str, context: &dyn Fn(&str) -> String) {
    assert!(
        validate_subject_name(name).is_ok(),
        "{}",
        context(&format!("accepted name {name:?}"))
    );
}
