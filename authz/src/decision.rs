//! Decisions: which grants cover a request, and whether their roles allow it.
//!
//! An [`Authorizer`] holds one destination's grants, indexed by user and by group, with each
//! grant's role resolved against a [`RoleSet`] once, when the authorizer is built. Its
//! [`Authorizer::decide`] takes the grants that name the identity's user or one of its groups,
//! keeps those whose scope covers the request and that are active at `now`, and allows when a
//! rule of one of their roles allows:
//!
//! - a grant on the destination (`production`) covers every namespace, cluster-scoped resources
//!   and non-resource URLs;
//! - a grant on a namespace (`production.web`) covers only resource requests in that namespace:
//!   never a cluster-scoped resource, never a non-resource URL.
//!
//! A deny is a value, [`Decision::Deny`], whose reason is worded as the apiserver words it
//! ([`forbidden_message`]); [`forbidden_status_message`] gives the message of the 403 `Status`.
//!
//! A [`DecisionCache`] remembers decisions per authorizer, identity and request; see its
//! documentation for how policy changes and grant expiry are handled.

use std::cmp::{max, min};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use crate::attributes::Attributes;
use crate::policy::Grant;
use crate::rbac::{Prepared, Role, RoleSet};

/// Who is asking: a user and the groups they belong to.
///
/// Cheap to clone (the names are shared) and cheap to hash: a fingerprint of the names is
/// computed once, at [`Identity::new`], and hashing writes only that. Build identities once per
/// verified token and reuse them.
#[derive(Clone)]
pub struct Identity {
    user: Arc<str>,
    groups: Arc<[Arc<str>]>,
    /// A hash of `user` and `groups`, so equal identities have equal fingerprints.
    fingerprint: u64,
}

/// The keys of [`Identity`] fingerprints, one set per process.
static FINGERPRINT_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl Identity {
    /// An identity of `user` in `groups`.
    pub fn new<G>(user: impl Into<Arc<str>>, groups: impl IntoIterator<Item = G>) -> Self
    where
        G: Into<Arc<str>>,
    {
        let user: Arc<str> = user.into();
        let groups: Arc<[Arc<str>]> = groups.into_iter().map(Into::into).collect();
        let fingerprint = FINGERPRINT_KEYS.hash_one((&*user, &*groups));
        Self {
            user,
            groups,
            fingerprint,
        }
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's groups.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &str> {
        self.groups.iter().map(|g| &**g)
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one identity share their names: compare pointers before contents.
        self.fingerprint == other.fingerprint
            && (Arc::ptr_eq(&self.user, &other.user) || self.user == other.user)
            && (Arc::ptr_eq(&self.groups, &other.groups) || self.groups == other.groups)
    }
}

impl Eq for Identity {}

impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The answer to "may this identity make this request?".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Allowed.
    Allow {
        /// The grant that allowed it: the first allowing grant found, looking at the user's
        /// grants first, then at each group's in the identity's order, each in the order the
        /// grants were given.
        grant: Arc<Grant>,
    },
    /// Denied. This is an answer, not an error.
    Deny {
        /// Why, worded as the apiserver words it ([`forbidden_message`]).
        reason: Arc<str>,
    },
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// The span of time over which a decision stays the same: from `from` (inclusive) until
/// `until` (exclusive); `None` is unbounded.
///
/// A decision changes only when a grant that covers the request starts or stops being active,
/// and grants only stop (at their `expires_at`). So a decision made at `now` holds from the
/// latest expiry at or before `now` to the earliest expiry after `now`, among the grants that
/// cover the request. The lower bound matters only if the clock is set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validity {
    /// The first instant the decision holds, if bounded.
    pub from: Option<SystemTime>,
    /// The first instant the decision may no longer hold, if bounded.
    pub until: Option<SystemTime>,
}

impl Validity {
    /// Unbounded both ways.
    pub const ALWAYS: Self = Self {
        from: None,
        until: None,
    };

    /// Whether `now` falls within.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.from.is_none_or(|from| from <= now) && self.until.is_none_or(|until| now < until)
    }
}

/// A grant kept by an [`Authorizer`], with its role resolved.
#[derive(Debug)]
struct Resolved {
    grant: Arc<Grant>,
    /// `None` when the role is unknown: the grant allows nothing.
    role: Option<Arc<Role>>,
}

impl Resolved {
    /// Whether the grant's scope covers the request. A namespace grant covers only resource
    /// requests in that (non-empty) namespace.
    fn covers(&self, attrs: &Attributes) -> bool {
        match self.grant.resource.namespace.as_deref() {
            None => true,
            Some(ns) => {
                !ns.is_empty()
                    && matches!(attrs, Attributes::Resource(r) if r.namespace.as_deref() == Some(ns))
            }
        }
    }
}

/// Hands out a process-unique id to each [`Authorizer`], so that a [`DecisionCache`] never
/// mixes the answers of two authorizers, even if they were given the same generation.
static NEXT_AUTHORIZER_ID: AtomicU64 = AtomicU64::new(0);

/// One destination's grants, ready to decide requests.
///
/// Immutable: when grants or roles change, build a new one with a higher generation and swap it
/// in (for example behind an `ArcSwap` or `RwLock<Arc<_>>`).
pub struct Authorizer {
    /// Process-unique, from [`NEXT_AUTHORIZER_ID`].
    id: u64,
    generation: u64,
    destination: Box<str>,
    grants: Box<[Resolved]>,
    by_user: HashMap<Box<str>, Box<[usize]>>,
    by_group: HashMap<Box<str>, Box<[usize]>>,
    /// Every `expires_at` of the kept grants, sorted.
    expiries: Box<[SystemTime]>,
    /// What every authenticated identity may do, as the cluster's default bindings to
    /// `system:authenticated` allow it (see [`Authorizer::with_authenticated_roles`]).
    authenticated: Box<[Resolved]>,
}

impl Authorizer {
    /// Builds the authorizer of `destination` from all `grants` (those of other destinations and
    /// of the control resource `infra` are left out) and the roles they may name.
    pub fn new(
        destination: impl Into<Box<str>>,
        grants: &[Grant],
        roles: &RoleSet,
        generation: u64,
    ) -> Self {
        let destination = destination.into();
        let kept: Box<[Resolved]> = grants
            .iter()
            .filter(|g| *g.resource.destination == *destination && !g.resource.is_control())
            .map(|g| Resolved {
                grant: Arc::new(g.clone()),
                role: roles.get(&g.role).cloned(),
            })
            .collect();

        let mut by_user: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut by_group: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut unknown: HashMap<&str, usize> = HashMap::new();
        for (i, r) in kept.iter().enumerate() {
            let (index, name) = match &r.grant.subject {
                crate::policy::Subject::User(name) => (&mut by_user, name),
                crate::policy::Subject::Group(name) => (&mut by_group, name),
            };
            index.entry(Box::from(name.as_str())).or_default().push(i);
            if r.role.is_none() {
                *unknown.entry(&r.grant.role).or_default() += 1;
            }
        }
        for (role, grants) in unknown {
            tracing::warn!(
                destination = &*destination,
                role,
                grants,
                "grants name a role that does not exist; they allow nothing"
            );
        }
        let mut expiries: Vec<SystemTime> =
            kept.iter().filter_map(|r| r.grant.expires_at).collect();
        expiries.sort_unstable();

        Self {
            id: NEXT_AUTHORIZER_ID.fetch_add(1, Ordering::Relaxed),
            generation,
            destination,
            by_user: freeze(by_user),
            by_group: freeze(by_group),
            grants: kept,
            expiries: expiries.into_boxed_slice(),
            authenticated: Box::default(),
        }
    }

    /// Also allows what a cluster's default bindings allow every authenticated user: the
    /// [`AUTHENTICATED_ROLES`](crate::rbac::AUTHENTICATED_ROLES) found in `roles` (discovery,
    /// `/version`, self-reviews). A [`Decision::Allow`] from these names a grant to the group
    /// `system:authenticated`. Kept apart from the grants so that policy alone never allows
    /// them by accident, and so tests of grants can leave them out.
    #[must_use]
    pub fn with_authenticated_roles(mut self, roles: &RoleSet) -> Self {
        self.authenticated = crate::rbac::AUTHENTICATED_ROLES
            .iter()
            .filter_map(|name| {
                let role = roles.get(name)?;
                Some(Resolved {
                    grant: Arc::new(Grant {
                        subject: crate::policy::Subject::Group("system:authenticated".into()),
                        role: (*name).to_owned(),
                        resource: crate::policy::Resource::destination(&*self.destination),
                        expires_at: None,
                    }),
                    role: Some(Arc::clone(role)),
                })
            })
            .collect();
        self
    }

    /// The generation this authorizer was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The destination it decides for.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The grants it kept: those of its destination.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().map(|r| &*r.grant)
    }

    /// The kept grants whose role is not in the [`RoleSet`]: they allow nothing.
    pub fn grants_with_unknown_role(&self) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(|r| r.role.is_none())
            .map(|r| &*r.grant)
    }

    /// The earliest instant after `now` at which one of the kept grants expires.
    pub fn next_expiry_after(&self, now: SystemTime) -> Option<SystemTime> {
        let after = self.expiries.partition_point(|at| *at <= now);
        self.expiries.get(after).copied()
    }

    /// Decides whether `identity` may make the request `attrs` at `now`.
    pub fn decide(&self, identity: &Identity, attrs: &Attributes, now: SystemTime) -> Decision {
        self.decide_with_validity(identity, attrs, now).0
    }

    /// [`Authorizer::decide`], and the span of time over which the same call would give the
    /// same answer.
    pub fn decide_with_validity(
        &self,
        identity: &Identity,
        attrs: &Attributes,
        now: SystemTime,
    ) -> (Decision, Validity) {
        let request = Prepared::new(attrs);
        let mut validity = Validity::ALWAYS;
        let mut allowed: Option<&Resolved> = None;

        let user = self.by_user.get(identity.user()).map(|v| &**v);
        let groups = identity
            .groups
            .iter()
            .filter_map(|g| self.by_group.get(&**g).map(|v| &**v));
        for &i in user.into_iter().chain(groups).flatten() {
            // Indices come from enumerating `grants` in `new`; `get` keeps this panic-free.
            let Some(resolved) = self.grants.get(i) else {
                continue;
            };
            if !resolved.covers(attrs) {
                continue;
            }
            if let Some(at) = resolved.grant.expires_at {
                if at <= now {
                    validity.from = max(validity.from, Some(at));
                    continue;
                }
                validity.until = Some(validity.until.map_or(at, |until| min(until, at)));
            }
            if allowed.is_none()
                && resolved
                    .role
                    .as_ref()
                    .is_some_and(|role| role.allows_prepared(request))
            {
                allowed = Some(resolved);
            }
        }

        if allowed.is_none() {
            allowed = self.authenticated.iter().find(|resolved| {
                resolved
                    .role
                    .as_ref()
                    .is_some_and(|role| role.allows_prepared(request))
            });
        }
        let decision = match allowed {
            Some(resolved) => Decision::Allow {
                grant: Arc::clone(&resolved.grant),
            },
            None => Decision::Deny {
                reason: forbidden_message(identity.user(), attrs).into(),
            },
        };
        (decision, validity)
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("destination", &self.destination)
            .field("generation", &self.generation)
            .field("grants", &self.grants.len())
            .finish_non_exhaustive()
    }
}

/// Turns the build-time index into its compact read-only form.
fn freeze(index: HashMap<Box<str>, Vec<usize>>) -> HashMap<Box<str>, Box<[usize]>> {
    index
        .into_iter()
        .map(|(k, v)| (k, v.into_boxed_slice()))
        .collect()
}

/// The apiserver's `forbiddenMessage`: what a denied request was not allowed to do.
///
/// - `User "u" cannot get path "/healthz"`
/// - `User "u" cannot list resource "pods" in API group "" in the namespace "web"`
/// - `User "u" cannot list resource "nodes" in API group "" at the cluster scope`
///
/// The resource includes `/subresource` when there is one. Strings are quoted as Go's `%q`
/// quotes them.
pub fn forbidden_message(user: &str, attrs: &Attributes) -> String {
    match attrs {
        Attributes::NonResource(n) => format!(
            "User {} cannot {} path {}",
            go_quote(user),
            n.verb,
            go_quote(&n.path)
        ),
        Attributes::Resource(r) => {
            let resource = match r.subresource.as_deref() {
                Some(sub) if !sub.is_empty() => format!("{}/{sub}", r.resource),
                _ => r.resource.clone(),
            };
            let start = format!(
                "User {} cannot {} resource {} in API group {}",
                go_quote(user),
                r.verb,
                go_quote(&resource),
                go_quote(&r.api_group)
            );
            match r.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => {
                    format!("{start} in the namespace {}", go_quote(ns))
                }
                _ => format!("{start} at the cluster scope"),
            }
        }
    }
}

/// The message of the 403 `Status` the apiserver sends for a denied request, as its
/// `responsewriters.Forbidden` and `errors.NewForbidden` build it:
///
/// - `pods "foo" is forbidden: User "u" cannot get resource "pods" in API group "" in the namespace "ns"`
/// - `deployments.apps is forbidden: User "u" cannot list resource "deployments" in API group "apps" ...`
/// - `forbidden: User "u" cannot get path "/healthz"` (non-resource requests)
///
/// `reason` is the authorizer's reason; when not empty it is appended as `: reason`. As the
/// apiserver does, `&`, `<` and `>` in the [`forbidden_message`] part are written as HTML
/// entities, so the message never looks like HTML.
pub fn forbidden_status_message(user: &str, attrs: &Attributes, reason: &str) -> String {
    let message = sanitize_html(&forbidden_message(user, attrs));
    let error = if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    };
    let (group, resource, name) = match attrs {
        Attributes::Resource(r) => (
            r.api_group.as_str(),
            r.resource.as_str(),
            r.name.as_deref().unwrap_or(""),
        ),
        Attributes::NonResource(_) => ("", "", ""),
    };
    if group.is_empty() && resource.is_empty() {
        return format!("forbidden: {error}");
    }
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        format!("{qualified} is forbidden: {error}")
    } else {
        format!("{qualified} {} is forbidden: {error}", go_quote(name))
    }
}

/// The apiserver's sanitizer: `&`, `<`, `>` as HTML entities.
fn sanitize_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Quotes `s` as Go's `%q` (`strconv.Quote`) does: in double quotes, with `"` and `\` escaped,
/// `\a \b \f \n \r \t \v` for those controls, and `\xNN`, `\uNNNN` or `\UNNNNNNNN` for other
/// characters Go does not consider printable.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            // Writing to a `String` cannot fail.
            c if u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
///
/// Rust's standard library has no Unicode category tables, so this refuses what it can name:
/// controls, white space other than `' '`, the format characters (category Cf), private use
/// and noncharacters. Unassigned code points, which Go also escapes, pass through.
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let n = u32::from(c);
    let format = matches!(
        n,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private_use = matches!(n, 0xE000..=0xF8FF | 0xF_0000..=0x10_FFFF);
    let noncharacter = matches!(n, 0xFDD0..=0xFDEF) || n & 0xFFFE == 0xFFFE;
    !(format || private_use || noncharacter)
}

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
    use crate::attributes::{NonResourceAttributes, ResourceAttributes};
    use crate::policy::{Resource, Subject};

    const DEST: &str = "production";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn grant(subject: Subject, role: &str, resource: Resource) -> Grant {
        Grant {
            subject,
            role: role.into(),
            resource,
            expires_at: None,
        }
    }

    fn user(name: &str) -> Subject {
        Subject::User(name.into())
    }

    fn group(name: &str) -> Subject {
        Subject::Group(name.into())
    }

    fn cluster() -> Resource {
        Resource::destination(DEST)
    }

    fn ns(namespace: &str) -> Resource {
        Resource::namespace(DEST, namespace)
    }

    fn res(verb: &str, resource: &str, namespace: Option<&str>) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: String::new(),
            api_version: "v1".into(),
            namespace: namespace.map(Into::into),
            resource: resource.into(),
            subresource: None,
            name: None,
        })
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource(NonResourceAttributes {
            verb: verb.into(),
            path: path.into(),
        })
    }

    fn authorizer(grants: &[Grant]) -> Authorizer {
        Authorizer::new(DEST, grants, &RoleSet::builtin(), 1)
    }

    fn suzie() -> Identity {
        Identity::new("suzie@example.com", ["Engineering", "Everyone"])
    }

    #[test]
    fn every_authenticated_user_may_discover_and_review_itself() {
        let bare = authorizer(&[]);
        let with = authorizer(&[]).with_authenticated_roles(&RoleSet::builtin());
        let review = Attributes::Resource(ResourceAttributes {
            verb: "create".into(),
            api_group: "authentication.k8s.io".into(),
            api_version: "v1".into(),
            namespace: None,
            resource: "selfsubjectreviews".into(),
            subresource: None,
            name: None,
        });
        for attrs in [
            url("get", "/api"),
            url("get", "/apis/apps/v1"),
            url("get", "/version"),
            url("get", "/openapi/v3"),
            review,
        ] {
            assert!(
                !bare.decide(&suzie(), &attrs, at(0)).is_allowed(),
                "{attrs:?}"
            );
            match with.decide(&suzie(), &attrs, at(0)) {
                Decision::Allow { grant } => {
                    assert_eq!(grant.subject, group("system:authenticated"), "{attrs:?}");
                }
                other => panic!("{attrs:?}: {other:?}"),
            }
        }
        for attrs in [
            res("list", "pods", Some("web")),
            url("post", "/api"),
            url("get", "/metrics"),
        ] {
            assert!(
                !with.decide(&suzie(), &attrs, at(0)).is_allowed(),
                "{attrs:?}"
            );
        }
    }

    #[test]
    fn no_grants_deny_with_the_apiservers_words() {
        let authz = authorizer(&[]);
        let decision = authz.decide(&suzie(), &res("list", "pods", Some("web")), at(0));
        assert_eq!(
            decision,
            Decision::Deny {
                reason:
                    "User \"suzie@example.com\" cannot list resource \"pods\" in API group \"\" \
                         in the namespace \"web\""
                        .into()
            }
        );
    }

    #[test]
    fn user_and_group_grants_allow() {
        let by_user = grant(user("suzie@example.com"), "view", cluster());
        let by_group = grant(group("Engineering"), "edit", ns("web"));
        let authz = authorizer(&[by_user.clone(), by_group.clone()]);
        let get = res("get", "pods", Some("web"));
        assert_eq!(
            authz.decide(&suzie(), &get, at(0)),
            Decision::Allow {
                grant: Arc::new(by_user)
            }
        );
        let create = res("create", "pods", Some("web"));
        assert_eq!(
            authz.decide(&suzie(), &create, at(0)),
            Decision::Allow {
                grant: Arc::new(by_group)
            }
        );
        // Not in Engineering: only the user grant applies, and that is for someone else.
        let other = Identity::new("carl@example.com", ["Everyone"]);
        assert!(!authz.decide(&other, &get, at(0)).is_allowed());
        let engineer = Identity::new("carl@example.com", ["Engineering"]);
        assert!(authz.decide(&engineer, &create, at(0)).is_allowed());
        assert!(
            !authz
                .decide(&engineer, &res("create", "pods", Some("db")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn a_user_grant_does_not_match_a_group_of_the_same_name() {
        let authz = authorizer(&[grant(group("suzie"), "view", cluster())]);
        let alone = Identity::new("suzie", Vec::<String>::new());
        assert!(
            !authz
                .decide(&alone, &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn namespace_grants_cover_only_their_namespace() {
        let authz = authorizer(&[grant(user("suzie@example.com"), "cluster-admin", ns("web"))]);
        let me = suzie();
        assert!(
            authz
                .decide(&me, &res("delete", "pods", Some("web")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("delete", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("get", "nodes", None), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &res("get", "nodes", Some("")), at(0))
                .is_allowed()
        );
        assert!(
            !authz
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn cluster_grants_cover_everything() {
        let authz = authorizer(&[grant(user("suzie@example.com"), "cluster-admin", cluster())]);
        let me = suzie();
        assert!(
            authz
                .decide(&me, &res("delete", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&me, &res("get", "nodes", None), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
        let view = authorizer(&[grant(user("suzie@example.com"), "view", cluster())]);
        assert!(
            view.decide(&me, &res("list", "namespaces", None), at(0))
                .is_allowed()
        );
        assert!(
            !view
                .decide(&me, &url("get", "/healthz"), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn grants_expire_at_their_instant() {
        let mut g = grant(user("suzie@example.com"), "view", cluster());
        g.expires_at = Some(at(100));
        let authz = authorizer(&[g]);
        let get = res("get", "pods", Some("web"));
        let (decision, validity) = authz.decide_with_validity(&suzie(), &get, at(99));
        assert!(decision.is_allowed());
        assert_eq!(
            validity,
            Validity {
                from: None,
                until: Some(at(100))
            }
        );
        let (decision, validity) = authz.decide_with_validity(&suzie(), &get, at(100));
        assert!(!decision.is_allowed());
        assert_eq!(
            validity,
            Validity {
                from: Some(at(100)),
                until: None
            }
        );
        assert_eq!(authz.next_expiry_after(at(0)), Some(at(100)));
        assert_eq!(authz.next_expiry_after(at(100)), None);
    }

    #[test]
    fn other_destinations_and_the_control_resource_are_ignored() {
        let grants = [
            grant(
                user("suzie@example.com"),
                "cluster-admin",
                Resource::destination("staging"),
            ),
            grant(
                user("suzie@example.com"),
                "cluster-admin",
                Resource::namespace("staging", "web"),
            ),
            grant(
                user("suzie@example.com"),
                "admin",
                Resource::destination("infra"),
            ),
        ];
        let authz = authorizer(&grants);
        assert_eq!(authz.grants().count(), 0);
        assert!(
            !authz
                .decide(&suzie(), &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );
        // Even a destination called `infra` gets no control grants.
        let infra = Authorizer::new("infra", &grants, &RoleSet::builtin(), 1);
        assert_eq!(infra.grants().count(), 0);
    }

    #[test]
    fn unknown_roles_allow_nothing_and_are_listed() {
        let unknown = grant(user("suzie@example.com"), "no-such-role", cluster());
        let known = grant(user("suzie@example.com"), "view", ns("web"));
        let authz = authorizer(&[unknown.clone(), known]);
        assert_eq!(
            authz.grants_with_unknown_role().collect::<Vec<_>>(),
            vec![&unknown]
        );
        assert!(
            !authz
                .decide(&suzie(), &res("get", "pods", Some("db")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&suzie(), &res("get", "pods", Some("web")), at(0))
                .is_allowed()
        );

        // A ClusterRole of the cluster makes it known.
        let mut roles = RoleSet::builtin();
        roles.insert(crate::rbac::ClusterRole {
            name: "no-such-role".into(),
            rules: vec![crate::rbac::PolicyRule {
                verbs: vec!["get".into()],
                api_groups: vec![String::new()],
                resources: vec!["pods".into()],
                ..Default::default()
            }],
        });
        let authz = Authorizer::new(DEST, &[unknown], &roles, 2);
        assert_eq!(authz.grants_with_unknown_role().count(), 0);
        assert!(
            authz
                .decide(&suzie(), &res("get", "pods", Some("db")), at(0))
                .is_allowed()
        );
    }

    #[test]
    fn many_grants_are_indexed() {
        let mut grants: Vec<Grant> = (0..100_000)
            .map(|i| grant(user(&format!("user{i}@example.com")), "view", ns("web")))
            .collect();
        grants.push(grant(group("Engineering"), "edit", ns("web")));
        let authz = authorizer(&grants);
        let get = res("get", "pods", Some("web"));
        let someone = Identity::new("user99999@example.com", Vec::<String>::new());
        assert!(authz.decide(&someone, &get, at(0)).is_allowed());
        assert!(
            !authz
                .decide(&someone, &res("create", "pods", Some("web")), at(0))
                .is_allowed()
        );
        assert!(
            authz
                .decide(&suzie(), &res("create", "pods", Some("web")), at(0))
                .is_allowed()
        );
        let stranger = Identity::new("stranger", ["Strangers"]);
        assert!(!authz.decide(&stranger, &get, at(0)).is_allowed());
    }

    #[test]
    fn forbidden_messages_read_like_the_apiservers() {
        let u = "u";
        assert_eq!(
            forbidden_message(u, &url("get", "/healthz")),
            r#"User "u" cannot get path "/healthz""#
        );
        assert_eq!(
            forbidden_message(u, &res("list", "pods", Some("ns"))),
            r#"User "u" cannot list resource "pods" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            forbidden_message(u, &res("list", "nodes", None)),
            r#"User "u" cannot list resource "nodes" at the cluster scope"#
                .replace("at the", r#"in API group "" at the"#)
        );
        let exec = Attributes::Resource(ResourceAttributes {
            verb: "create".into(),
            api_group: String::new(),
            api_version: "v1".into(),
            namespace: Some("ns".into()),
            resource: "pods".into(),
            subresource: Some("exec".into()),
            name: Some("foo".into()),
        });
        assert_eq!(
            forbidden_message(u, &exec),
            r#"User "u" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            forbidden_status_message(u, &exec, ""),
            r#"pods "foo" is forbidden: User "u" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        let deployments = Attributes::Resource(ResourceAttributes {
            verb: "list".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            namespace: None,
            resource: "deployments".into(),
            subresource: None,
            name: None,
        });
        assert_eq!(
            forbidden_status_message(u, &deployments, "no grant"),
            r#"deployments.apps is forbidden: User "u" cannot list resource "deployments" in API group "apps" at the cluster scope: no grant"#
        );
        assert_eq!(
            forbidden_status_message(u, &url("get", "/healthz"), ""),
            r#"forbidden: User "u" cannot get path "/healthz""#
        );
        assert_eq!(
            forbidden_status_message("a<b>&c", &url("get", "/x"), "r<"),
            r#"forbidden: User "a&lt;b&gt;&amp;c" cannot get path "/x": r<"#
        );
    }

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
    fn quoting_follows_go() {
        assert_eq!(go_quote(""), r#""""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(go_quote("\u{0}\u{7f}"), r#""\x00\x7f""#);
        assert_eq!(go_quote("é日本"), "\"é日本\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{85}"), r#""\u00a0\u200b\u0085""#);
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
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

    fn subject() -> impl Strategy<Value = Subject> {
        prop_oneof![
            (0..3u8).prop_map(|i| Subject::User(format!("u{i}"))),
            (0..3u8).prop_map(|i| Subject::Group(format!("g{i}"))),
        ]
    }

    fn resource() -> impl Strategy<Value = Resource> {
        prop_oneof![
            Just(Resource::destination(DEST)),
            Just(Resource::namespace(DEST, "ns1")),
            Just(Resource::namespace(DEST, "ns2")),
            Just(Resource::destination("staging")),
            Just(Resource::namespace("staging", "ns1")),
            Just(Resource::destination("infra")),
        ]
    }

    fn any_grant() -> impl Strategy<Value = Grant> {
        let role = prop_oneof![
            Just("view"),
            Just("edit"),
            Just("admin"),
            Just("cluster-admin"),
            Just("unknown"),
        ];
        (
            subject(),
            role,
            resource(),
            proptest::option::of((0..10u64).prop_map(at)),
        )
            .prop_map(|(subject, role, resource, expires_at)| Grant {
                subject,
                role: role.into(),
                resource,
                expires_at,
            })
    }

    fn namespace_grant() -> impl Strategy<Value = Grant> {
        any_grant().prop_filter("a namespace grant", |g| g.resource.namespace.is_some())
    }

    fn identity() -> impl Strategy<Value = Identity> {
        (0..3u8, proptest::collection::vec(0..4u8, 0..3)).prop_map(|(u, gs)| {
            Identity::new(format!("u{u}"), gs.into_iter().map(|g| format!("g{g}")))
        })
    }

    fn attributes() -> impl Strategy<Value = Attributes> {
        let verb = prop_oneof![
            Just("get"),
            Just("list"),
            Just("create"),
            Just("delete"),
            Just("escalate")
        ];
        let resource = prop_oneof![
            Just(("", "pods")),
            Just(("", "secrets")),
            Just(("", "nodes")),
            Just(("apps", "deployments")),
            Just(("rbac.authorization.k8s.io", "rolebindings")),
        ];
        // Empty parts and other versions too: the cache treats them as the apiserver does.
        let subresource = proptest::option::of(prop_oneof![
            Just("exec"),
            Just("log"),
            Just("scale"),
            Just("")
        ]);
        let namespace =
            proptest::option::of(prop_oneof![Just("ns1"), Just("ns2"), Just("ns3"), Just("")]);
        let name = proptest::option::of(prop_oneof![Just("a"), Just("")]);
        let version = prop_oneof![Just("v1"), Just("v1beta1")];
        let resource_request = (
            verb.clone(),
            resource,
            subresource,
            namespace,
            name,
            version,
        )
            .prop_map(
                |(verb, (group, resource), subresource, namespace, name, version)| {
                    Attributes::Resource(ResourceAttributes {
                        verb: verb.into(),
                        api_group: group.into(),
                        api_version: version.into(),
                        namespace: namespace.map(Into::into),
                        resource: resource.into(),
                        subresource: subresource.map(Into::into),
                        name: name.map(Into::into),
                    })
                },
            );
        let path = prop_oneof![Just("/healthz"), Just("/version"), Just("/api")];
        let url_request = (verb, path).prop_map(|(verb, path)| url(verb, path));
        prop_oneof![3 => resource_request, 1 => url_request]
    }

    fn queries() -> impl Strategy<Value = Vec<(Identity, Attributes, SystemTime)>> {
        proptest::collection::vec((identity(), attributes(), (0..12u64).prop_map(at)), 1..24)
    }

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

        #[test]
        fn removing_a_grant_never_widens_access(
            grants in proptest::collection::vec(any_grant(), 1..12),
            remove in any::<prop::sample::Index>(),
            queries in queries(),
        ) {
            let before = authorizer(&grants);
            let mut fewer = grants.clone();
            fewer.remove(remove.index(grants.len()));
            let after = authorizer(&fewer);
            for (identity, attrs, now) in &queries {
                if after.decide(identity, attrs, *now).is_allowed() {
                    prop_assert!(before.decide(identity, attrs, *now).is_allowed());
                }
            }
        }

        #[test]
        fn the_order_of_grants_does_not_matter(
            (grants, shuffled) in proptest::collection::vec(any_grant(), 0..12)
                .prop_flat_map(|g| (Just(g.clone()), Just(g).prop_shuffle())),
            queries in queries(),
        ) {
            let one = authorizer(&grants);
            let other = authorizer(&shuffled);
            for (identity, attrs, now) in &queries {
                prop_assert_eq!(
                    one.decide(identity, attrs, *now).is_allowed(),
                    other.decide(identity, attrs, *now).is_allowed()
                );
            }
        }

        #[test]
        fn a_namespace_grant_never_allows_cluster_scope_nor_urls(
            grants in proptest::collection::vec(namespace_grant(), 0..12),
            queries in queries(),
        ) {
            let authz = authorizer(&grants);
            for (identity, attrs, now) in &queries {
                let cluster_scoped = match attrs {
                    Attributes::Resource(r) => r.namespace.as_deref().is_none_or(str::is_empty),
                    Attributes::NonResource(_) => true,
                };
                if cluster_scoped {
                    prop_assert!(!authz.decide(identity, attrs, *now).is_allowed());
                }
            }
        }
    }
}
