//! The decision cache: decisions remembered per authorizer, identity and request, keyed by a
//! fast seeded hash.

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Authorizer, Decision, Identity, Validity};
use crate::attributes::Attributes;

/// A hasher for keys that are already well-mixed `u64` hashes: it passes them through.
#[derive(Debug, Clone, Copy, Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; mixes anything else in rather than dropping it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The 64-bit multiply of `a` and `b`, folded: the high half xor the low half.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    let [low, high] = [product, product >> 64].map(|half| {
        // Keeping the low 64 bits is the point: the two halves are folded together.
        #[allow(clippy::cast_possible_truncation)]
        let half = half as u64;
        half
    });
    low ^ high
}

/// A fast keyed hash for cache keys (folded multiplies, in the style of foldhash), seeded at
/// random per cache.
///
/// Each field of a request is hashed in its own lane: the lanes are independent chains of
/// multiplies that the processor runs side by side, and most fields take one multiply. This is
/// several times cheaper than SipHash over the many short strings of a request. It is not
/// collision-resistant against someone who knows the seeds, and need not be: the cache checks
/// the full question of every hit, so a collision costs a fresh decision, never a wrong one;
/// the random seeds keep collisions from being aimed.
#[derive(Debug, Clone, Copy)]
struct KeySeeds {
    lanes: [u64; 8],
    multiplier: u64,
}

impl KeySeeds {
    /// Random seeds, from the standard library's per-process random keys.
    fn random() -> Self {
        let state = RandomState::new();
        let mut lanes = [0; 8];
        for (lane, i) in lanes.iter_mut().zip(0u64..) {
            *lane = state.hash_one(i);
        }
        Self {
            lanes,
            // Odd, so that multiplying loses no bits.
            multiplier: state.hash_one(u64::MAX) | 1,
        }
    }

    /// The hash of `bytes` in lane `LANE`.
    fn lane<const LANE: usize>(&self, bytes: &[u8]) -> u64 {
        let mut h = self.lanes[LANE] ^ (bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            h = folded_multiply(h ^ short_word(chunk), self.multiplier);
        }
        folded_multiply(h ^ short_word(chunks.remainder()), self.multiplier)
    }

    /// Folds three independent values into one hash.
    fn combine(&self, a: u64, b: u64, c: u64) -> u64 {
        folded_multiply(a ^ b.rotate_left(21) ^ c.rotate_left(42), self.multiplier)
    }
}

/// Up to 8 bytes as one word, read without a variable-length copy (which would call
/// `memcpy`): 1 to 3 bytes as their first, middle and last byte, 4 to 7 as two overlapping
/// 4-byte reads. For a given length the word determines the bytes, so two strings of equal
/// length are equal exactly when their words are. Longer slices give their first 8 bytes.
fn short_word(bytes: &[u8]) -> u64 {
    fn u32_at(bytes: &[u8], at: usize) -> u64 {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
    }
    let n = bytes.len();
    match (bytes.first(), bytes.get(n / 2), bytes.last()) {
        _ if n >= 8 => bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes),
        _ if n >= 4 => u32_at(bytes, 0) | (u32_at(bytes, n - 4) << 32),
        (Some(&first), Some(&middle), Some(&last)) => {
            u64::from(first) | (u64::from(middle) << 8) | (u64::from(last) << 16)
        }
        _ => 0,
    }
}

/// String equality, without a `memcmp` call for strings of up to 8 bytes (most request fields).
fn same_str(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && if a.len() <= 8 {
            short_word(a.as_bytes()) == short_word(b.as_bytes())
        } else {
            a == b
        }
}

/// Whether two requests get the same decision for the same identity, as far as the request
/// goes: everything [`Authorizer::decide`] reads is equal. The API version is not read (RBAC
/// has no say on versions), and an empty subresource, namespace or name is the same as none,
/// as it is to the apiserver.
fn same_question(a: &Attributes, b: &Attributes) -> bool {
    fn part(s: Option<&String>) -> &str {
        s.map_or("", String::as_str)
    }
    match (a, b) {
        (Attributes::Resource(a), Attributes::Resource(b)) => {
            same_str(&a.verb, &b.verb)
                && same_str(&a.resource, &b.resource)
                && same_str(&a.api_group, &b.api_group)
                && same_str(part(a.name.as_ref()), part(b.name.as_ref()))
                && same_str(part(a.namespace.as_ref()), part(b.namespace.as_ref()))
                && same_str(part(a.subresource.as_ref()), part(b.subresource.as_ref()))
        }
        (Attributes::NonResource(a), Attributes::NonResource(b)) => {
            same_str(&a.verb, &b.verb) && same_str(&a.path, &b.path)
        }
        _ => false,
    }
}

/// A cached decision, with everything needed to check that it answers the question asked.
#[derive(Debug)]
struct Entry {
    authorizer: u64,
    generation: u64,
    identity: Identity,
    attrs: Attributes,
    decision: Decision,
    validity: Validity,
}

/// A bounded in-memory cache of decisions.
///
/// **Key.** Entries are keyed by a fast 64-bit hash, seeded at random per cache, of the
/// authorizer's id and generation, the identity's fingerprint and the request attributes that
/// decide (all but the API version). Each entry keeps the full identity and attributes, and a
/// hit is used only if they answer the same question ([`Identity`] equality and the private
/// `same_question`); a collision costs a fresh decision, never a wrong one. A hit allocates
/// nothing and clones two `Arc`s.
///
/// **Policy changes.** The generation and the authorizer's process-unique id are in the key,
/// so a new [`Authorizer`] (a new generation) makes every old entry unreachable at once; the
/// old entries then age out under the size bound. [`DecisionCache::clear`] drops them
/// eagerly.
///
/// **Expiry.** Grants expire, and a cached Allow must not outlive the grant that allowed it.
/// Each entry stores the [`Validity`] that [`Authorizer::decide_with_validity`] computed: the
/// span between the latest expiry at or before the decision's `now` and the earliest expiry
/// after it, among the grants that covered the request. Within that span the set of active
/// grants that matter does not change, so neither does the decision; outside it the entry is
/// decided afresh and replaced. This was chosen over one authorizer-wide "valid until the next
/// expiry of any grant" because an expiring grant of one user then does not flush everyone
/// else's decisions; it costs two time comparisons per hit.
///
/// **Size.** Bounded by entry count: no weigher, so each entry weighs 1. An entry is about 300
/// to 500 bytes (the request attributes' strings, the identity's names shared with the token
/// cache, the moka bookkeeping), so 100,000 entries are roughly 30 to 50 MiB.
pub struct DecisionCache {
    entries: moka::sync::Cache<u64, Arc<Entry>, BuildHasherDefault<PassThroughHasher>>,
    keys: KeySeeds,
}

impl DecisionCache {
    /// A cache of at most `max_entries` decisions.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .name("infra-decisions")
                .max_capacity(max_entries)
                .build_with_hasher(BuildHasherDefault::default()),
            keys: KeySeeds::random(),
        }
    }

    /// The cached decision for `identity` and `attrs` under `authorizer` at `now`, or a fresh
    /// one (which is then cached).
    pub fn get_or_decide(
        &self,
        authorizer: &Authorizer,
        identity: &Identity,
        attrs: &Attributes,
        now: SystemTime,
    ) -> Decision {
        self.lookup(authorizer, identity, attrs, now).0
    }

    /// As [`DecisionCache::get_or_decide`], and whether the answer came from the cache (for
    /// hit-ratio metrics).
    pub fn lookup(
        &self,
        authorizer: &Authorizer,
        identity: &Identity,
        attrs: &Attributes,
        now: SystemTime,
    ) -> (Decision, bool) {
        let key = self.key(authorizer, identity, attrs);
        if let Some(entry) = self.entries.get(&key)
            && entry.authorizer == authorizer.id
            && entry.generation == authorizer.generation
            && entry.validity.contains(now)
            && entry.identity == *identity
            && same_question(&entry.attrs, attrs)
        {
            return (entry.decision.clone(), true);
        }
        let (decision, validity) = authorizer.decide_with_validity(identity, attrs, now);
        self.entries.insert(
            key,
            Arc::new(Entry {
                authorizer: authorizer.id,
                generation: authorizer.generation,
                identity: identity.clone(),
                attrs: attrs.clone(),
                decision: decision.clone(),
                validity,
            }),
        );
        (decision, false)
    }

    /// The cache key: a hash of what the decision depends on, as [`same_question`] compares it.
    fn key(&self, authorizer: &Authorizer, identity: &Identity, attrs: &Attributes) -> u64 {
        let k = &self.keys;
        let who = folded_multiply(
            authorizer.id ^ k.lanes[0],
            (authorizer.generation ^ identity.fingerprint) | 1,
        );
        match attrs {
            Attributes::Resource(r) => {
                let what = folded_multiply(
                    k.lane::<1>(r.verb.as_bytes()),
                    k.lane::<2>(r.resource.as_bytes()) | 1,
                );
                let group = k.lane::<3>(r.api_group.as_bytes());
                let sub = k.lane::<4>(r.subresource.as_deref().unwrap_or("").as_bytes());
                let ns = k.lane::<5>(r.namespace.as_deref().unwrap_or("").as_bytes());
                let name = k.lane::<6>(r.name.as_deref().unwrap_or("").as_bytes());
                let rest =
                    folded_multiply(group ^ sub.rotate_left(32), (ns ^ name.rotate_left(17)) | 1);
                k.combine(who, what, rest)
            }
            Attributes::NonResource(n) => {
                let verb = k.lane::<1>(n.verb.as_bytes());
                let path = k.lane::<7>(n.path.as_bytes());
                k.combine(who, verb, path)
            }
        }
    }

    /// How many decisions are cached (approximately: moka applies writes in batches).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Drops every cached decision.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

impl fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::attributes::ResourceAttributes;
    use crate::decision::test_support::{
        DEST, any_grant, at, authorizer, cluster, grant, group, ns, queries, res, suzie, user,
    };
    use crate::policy::Grant;
    use crate::rbac::RoleSet;

    #[test]
    fn short_strings_compare_exactly() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "aa",
            "abc",
            "acb",
            "aab",
            "abcd",
            "abdc",
            "abcde",
            "abcdf",
            "xbcde",
            "abcdefg",
            "abcdefh",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "abcdefghj",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_str(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_cache_answers_and_forgets_on_a_new_generation() {
        let cache = DecisionCache::new(1_000);
        let grants = [grant(user("suzie@example.com"), "view", cluster())];
        let first = authorizer(&grants);
        let get = res("get", "pods", Some("web"));
        assert!(
            cache
                .get_or_decide(&first, &suzie(), &get, at(0))
                .is_allowed()
        );
        assert!(
            cache
                .get_or_decide(&first, &suzie(), &get, at(0))
                .is_allowed()
        );
        let second = Authorizer::new(DEST, &[], &RoleSet::builtin(), 2);
        assert!(
            !cache
                .get_or_decide(&second, &suzie(), &get, at(0))
                .is_allowed()
        );
        // Even an authorizer that reuses a generation gets its own answers.
        let reused = Authorizer::new(DEST, &[], &RoleSet::builtin(), 1);
        assert!(
            !cache
                .get_or_decide(&reused, &suzie(), &get, at(0))
                .is_allowed()
        );
    }

    #[test]
    fn a_cached_allow_does_not_outlive_its_grant() {
        let cache = DecisionCache::new(1_000);
        let mut g = grant(user("suzie@example.com"), "view", cluster());
        g.expires_at = Some(at(100));
        let authz = authorizer(&[g]);
        let get = res("get", "pods", Some("web"));
        assert!(
            cache
                .get_or_decide(&authz, &suzie(), &get, at(50))
                .is_allowed()
        );
        assert!(
            cache
                .get_or_decide(&authz, &suzie(), &get, at(99))
                .is_allowed()
        );
        assert!(
            !cache
                .get_or_decide(&authz, &suzie(), &get, at(100))
                .is_allowed()
        );
        // And a clock set back sees the grant again.
        assert!(
            cache
                .get_or_decide(&authz, &suzie(), &get, at(99))
                .is_allowed()
        );
    }

    #[test]
    fn regression_cache_keys_distinguish_similar_requests() {
        let cache = DecisionCache::new(1_000);
        let authz = authorizer(&[grant(user("suzie@example.com"), "view", ns("web"))]);
        let me = suzie();
        assert!(
            cache
                .get_or_decide(&authz, &me, &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
        assert!(
            !cache
                .get_or_decide(&authz, &me, &res("get", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            !cache
                .get_or_decide(&authz, &me, &res("create", "pods", Some("web")), at(0))
                .is_allowed()
        );
        let other = Identity::new("carl@example.com", ["Engineering", "Everyone"]);
        assert!(
            !cache
                .get_or_decide(&authz, &other, &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
    }

    /// Times a cache hit. Run with
    /// `cargo test --release -p infra-authz --lib cache_hit_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a test; run by hand in release mode"]
    fn cache_hit_timing() {
        /// The best time per call of `f` over several runs, so other load on the machine
        /// distorts it less.
        fn time(mut f: impl FnMut()) -> Duration {
            let n = 200_000u32;
            (0..7)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    start.elapsed() / n
                })
                .min()
                .unwrap_or_default()
        }
        let grants: Vec<Grant> = (0..10_000)
            .map(|i| grant(group(&format!("group{i}")), "edit", ns("web")))
            .collect();
        let authz = authorizer(&grants);
        let cache = DecisionCache::new(100_000);
        let me = Identity::new("suzie@example.com", ["group1", "group2", "Everyone"]);
        let attrs = Attributes::Resource(ResourceAttributes {
            verb: "get".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            namespace: Some("web".into()),
            resource: "deployments".into(),
            subresource: None,
            name: Some("frontend".into()),
        });
        let now = at(0);
        assert!(cache.get_or_decide(&authz, &me, &attrs, now).is_allowed());
        let hit = time(|| {
            std::hint::black_box(cache.get_or_decide(
                &authz,
                &me,
                std::hint::black_box(&attrs),
                now,
            ));
        });
        let fresh = time(|| {
            std::hint::black_box(authz.decide(&me, std::hint::black_box(&attrs), now));
        });
        let denied = res("escalate", "nodes", None);
        let deny_hit = time(|| {
            std::hint::black_box(cache.get_or_decide(
                &authz,
                &me,
                std::hint::black_box(&denied),
                now,
            ));
        });
        eprintln!(
            "cache hit: {hit:?}; deny hit: {deny_hit:?}; uncached allow: {fresh:?} (best of 7 x 200,000)"
        );
    }

    // Property tests over a small world, so that grants and requests meet often.

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_cached_decision_equals_a_fresh_one(
            grants in proptest::collection::vec(any_grant(), 0..12),
            queries in queries(),
            instants in proptest::collection::vec(
                proptest::collection::vec((0..12u64).prop_map(at), 1..6),
                24,
            ),
        ) {
            let authz = authorizer(&grants);
            let cache = DecisionCache::new(64);
            // Each question at several instants, forwards and backwards in time, so that the
            // cache is asked about instants other than the one it decided at.
            for ((identity, attrs, _), nows) in queries.iter().zip(&instants) {
                for now in nows.iter().chain(queries.iter().map(|q| &q.2)) {
                    let fresh = authz.decide(identity, attrs, *now);
                    let cached = cache.get_or_decide(&authz, identity, attrs, *now);
                    prop_assert_eq!(cached, fresh);
                }
            }
        }
    }
}
