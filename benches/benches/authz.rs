//! Criterion micro-benchmarks of `infra-authz`'s hot path: decisions (cached and not, over
//! policies of 10 to 100,000 grants), token verification (cached and not, Ed25519 and ES256)
//! and request-attribute parsing.
//!
//! Everything is built outside the timed loop; each timed closure makes exactly the call a
//! proxy makes per request. Run with `cargo bench -p infra-benches --bench authz`; results and
//! how to read them are in `benches/README.md`.

use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use infra_authz::attributes::{self, Attributes};
use infra_authz::decision::{Authorizer, DecisionCache, Identity};
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::RoleSet;
use infra_authz::token::{
    Issuer, Jwks, SigningAlgorithm, SigningKey, TokenCache, TokenCacheConfig, TokenIdentity,
    TokenRequest, VerifiedToken, Verifier,
};

/// The destination every grant is on.
const DESTINATION: &str = "production";
/// The issuer of the benchmark tokens.
const ISSUER: &str = "https://infra.example.com";
/// A fixed "now": 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;
/// The policy sizes of the uncached decision benchmark.
const GRANT_COUNTS: [usize; 3] = [10, 1_000, 100_000];
/// Roles the filler grants cycle through.
const ROLES: [&str; 3] = ["view", "edit", "admin"];

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn grant(subject: Subject, role: &str, namespace: Option<&str>) -> Grant {
    Grant {
        subject,
        role: role.to_owned(),
        resource: match namespace {
            None => Resource::destination(DESTINATION),
            Some(ns) => Resource::namespace(DESTINATION, ns),
        },
        expires_at: None,
    }
}

/// The identity that asks: a user with a few groups.
fn identity() -> Identity {
    Identity::new("suzie@example.com", ["dev", "oncall", "all-staff"])
}

/// `total` grants on [`DESTINATION`]. Four concern [`identity`], whatever `total` is: a user
/// grant on another namespace, the `dev` group's `edit` on namespace `web` (which allows the
/// request), the `oncall` group's `view` on the whole destination, and the `all-staff` group's
/// `view` on namespace `docs`. The rest are filler over many other users and groups (a user
/// per 2 grants, a group per 10), a quarter of them destination-wide, the others over 200
/// namespaces, cycling through `view`, `edit` and `admin`; one in ten expires in a day.
fn grants(total: usize) -> Vec<Grant> {
    let mut grants = vec![
        grant(
            Subject::User("suzie@example.com".into()),
            "view",
            Some("billing"),
        ),
        grant(Subject::Group("dev".into()), "edit", Some("web")),
        grant(Subject::Group("oncall".into()), "view", None),
        grant(Subject::Group("all-staff".into()), "view", Some("docs")),
    ];
    let filler = total.saturating_sub(grants.len());
    for i in 0..filler {
        let subject = if i % 2 == 0 {
            Subject::User(format!("user-{}@example.com", i / 2))
        } else {
            Subject::Group(format!("group-{}", i / 10))
        };
        let namespace = (i % 4 != 0).then(|| format!("ns-{}", i % 200));
        let mut g = grant(subject, ROLES[i % ROLES.len()], namespace.as_deref());
        if i % 10 == 0 {
            g.expires_at = Some(at(T0 + 86_400));
        }
        grants.push(g);
    }
    // The identity's grants spread through the policy, not all at its start.
    let middle = grants.len() / 2;
    grants.rotate_left(middle);
    grants
}

/// List pods in namespace `web`: allowed by the `dev` group's grant.
fn list_pods() -> Attributes {
    attributes::parse("GET", "/api/v1/namespaces/web/pods", None).expect("a valid request")
}

fn decisions(c: &mut Criterion) {
    let roles = RoleSet::builtin();
    assert!(roles.contains("view") && roles.contains("edit") && roles.contains("admin"));
    let who = identity();
    let attrs = list_pods();
    let now = at(T0);

    let mut group = c.benchmark_group("decision");
    for total in GRANT_COUNTS {
        let authorizer = Authorizer::new(DESTINATION, &grants(total), &roles, 1);
        assert_eq!(authorizer.grants().count(), total);
        let decision = authorizer.decide(&who, &attrs, now);
        assert!(decision.is_allowed(), "{decision:?}");
        group.bench_with_input(
            BenchmarkId::new("uncached", total),
            &authorizer,
            |b, authorizer| {
                b.iter(|| authorizer.decide(black_box(&who), black_box(&attrs), black_box(now)));
            },
        );
    }

    // The largest policy again, for the deny and the cache hits below.
    let authorizer = Authorizer::new(DESTINATION, &grants(100_000), &roles, 1);

    // For comparison: a deny, from an identity no grant names (the reason is formatted).
    let stranger = Identity::new("mallory@example.com", ["contractors"]);
    assert!(!authorizer.decide(&stranger, &attrs, now).is_allowed());
    group.bench_function(BenchmarkId::new("uncached-deny", 100_000), |b| {
        b.iter(|| authorizer.decide(black_box(&stranger), black_box(&attrs), black_box(now)));
    });

    // A hit: the same identity and request again.
    let cache = DecisionCache::new(10_000);
    assert!(
        cache
            .get_or_decide(&authorizer, &who, &attrs, now)
            .is_allowed()
    );
    group.bench_function(BenchmarkId::new("cached", 100_000), |b| {
        b.iter(|| {
            cache.get_or_decide(
                black_box(&authorizer),
                black_box(&who),
                black_box(&attrs),
                black_box(now),
            )
        });
    });

    // The same hit in a cache that also holds 10,000 other identities' decisions, so the
    // lookup no longer stays in the CPU caches by itself.
    let full = DecisionCache::new(20_000);
    for i in 0..10_000 {
        let other = Identity::new(format!("user-{i}@example.com"), ["dev"]);
        full.get_or_decide(&authorizer, &other, &attrs, now);
    }
    assert!(
        full.get_or_decide(&authorizer, &who, &attrs, now)
            .is_allowed()
    );
    group.bench_function(BenchmarkId::new("cached-10k-entries", 100_000), |b| {
        b.iter(|| {
            full.get_or_decide(
                black_box(&authorizer),
                black_box(&who),
                black_box(&attrs),
                black_box(now),
            )
        });
    });

    // The floor under a hit: a bare moka lookup, keyed and hashed as the decision cache is (a
    // precomputed u64 through a pass-through hasher), in a cache of the same size.
    let bare: moka::sync::Cache<u64, Arc<u64>, BuildHasherDefault<PassThrough>> =
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .build_with_hasher(BuildHasherDefault::default());
    let key = 0x9e37_79b9_7f4a_7c15_u64;
    bare.insert(key, Arc::new(1));
    group.bench_function("moka-get-u64", |b| {
        b.iter(|| bare.get(black_box(&key)));
    });
    group.finish();
}

/// A hasher that passes a `u64` through, as the decision cache's keys are already hashes.
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// An issuer and a verifier that trusts its key through the published JWKS, and a token of
/// the issuer for [`DESTINATION`], issued at [`T0`] for five minutes.
fn token_setup(alg: SigningAlgorithm) -> (Verifier, String) {
    let key = SigningKey::generate(alg).expect("a fresh key");
    let jwks = Jwks::from_json(&Jwks::from_signing_keys([&key]).to_json()).expect("a JWKS");
    let verifier = Verifier::builder(ISSUER)
        .trust_jwks(&jwks)
        .build()
        .expect("a verifier");
    let issuer = Issuer::new(ISSUER, key).expect("an issuer");
    let groups = [
        "dev".to_owned(),
        "oncall".to_owned(),
        "all-staff".to_owned(),
    ];
    let request = TokenRequest {
        user_id: "u-42",
        name: "suzie@example.com",
        groups: &groups,
        audience: DESTINATION,
        ttl: Duration::from_mins(5),
        session: None,
    };
    let issued = issuer.issue(&request, at(T0)).expect("a token");
    (verifier, issued.token.expose().to_owned())
}

fn tokens(c: &mut Criterion) {
    let now = at(T0 + 10);
    let mut group = c.benchmark_group("token");
    for (name, alg) in [
        ("EdDSA", SigningAlgorithm::EdDsa),
        ("ES256", SigningAlgorithm::Es256),
    ] {
        let (verifier, token) = token_setup(alg);
        verifier
            .verify(&token, DESTINATION, now)
            .expect("the token verifies");
        verifier
            .verify_mapped(&token, DESTINATION, now)
            .expect("the token verifies mapped");

        group.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| verifier.verify(black_box(&token), black_box(DESTINATION), black_box(now)));
        });
        group.bench_function(BenchmarkId::new("verify_mapped", name), |b| {
            b.iter(|| {
                verifier.verify_mapped(black_box(&token), black_box(DESTINATION), black_box(now))
            });
        });

        let cache: TokenCache<VerifiedToken> = TokenCache::new(TokenCacheConfig::default());
        cache
            .verify(&verifier, &token, DESTINATION, now)
            .expect("the token verifies");
        group.bench_function(BenchmarkId::new("cached-verify", name), |b| {
            b.iter(|| {
                cache.verify(
                    black_box(&verifier),
                    black_box(&token),
                    black_box(DESTINATION),
                    black_box(now),
                )
            });
        });

        let mapped: TokenCache<TokenIdentity> = TokenCache::new(TokenCacheConfig::default());
        mapped
            .verify_mapped(&verifier, &token, DESTINATION, now)
            .expect("the token verifies mapped");
        group.bench_function(BenchmarkId::new("cached-verify_mapped", name), |b| {
            b.iter(|| {
                mapped.verify_mapped(
                    black_box(&verifier),
                    black_box(&token),
                    black_box(DESTINATION),
                    black_box(now),
                )
            });
        });
    }

    // The floor under a hit: a bare moka lookup keyed by an 86-character string (an EdDSA or
    // ES256 signature segment), with moka's default SipHash and a time-to-live, as the token
    // cache is built.
    let (_, token) = token_setup(SigningAlgorithm::EdDsa);
    let signature = token.rsplit_once('.').expect("a compact JWS").1;
    assert_eq!(signature.len(), 86);
    let bare: moka::sync::Cache<Box<str>, Arc<u64>> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_hours(1))
        .build();
    bare.insert(signature.into(), Arc::new(1));
    group.bench_function("moka-get-str86", |b| {
        b.iter(|| bare.get(black_box(signature)));
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let requests: [(&str, &str, &str, Option<&str>); 4] = [
        ("get-pod", "GET", "/api/v1/namespaces/web/pods/web-0", None),
        (
            "list-pods-watch",
            "GET",
            "/api/v1/namespaces/web/pods",
            Some("watch=true&resourceVersion=12345&labelSelector=app%3Dweb"),
        ),
        (
            "exec",
            "POST",
            "/api/v1/namespaces/web/pods/web-0/exec",
            Some("command=sh&command=-c&command=ls&container=app&stdin=true&stdout=true&tty=true"),
        ),
        ("non-resource-apis", "GET", "/apis", None),
    ];
    let mut group = c.benchmark_group("attributes");
    for (name, method, path, query) in requests {
        attributes::parse(method, path, query).expect("a valid request");
        group.bench_function(name, |b| {
            b.iter(|| attributes::parse(black_box(method), black_box(path), black_box(query)));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decisions, tokens, parsing
}
criterion_main!(benches);
