//! Prometheus metrics, served by the admin listener at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP status code sent to the client.
    pub code: u16,
    /// `allow`, `deny`, or `none` when the request never reached a decision.
    pub decision: &'static str,
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `token` or `decision`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Every metric the proxy keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by status code and decision.
    pub requests: Family<RequestLabels, Counter>,
    /// `requests` for code 200 and decision `allow`, resolved once.
    requests_ok_allowed: Counter,
    /// Time to the response head, in seconds.
    pub latency: Histogram,
    /// Token cache lookups: hits and misses, resolved once.
    pub token_cache: [Counter; 2],
    /// Decision cache lookups: hits and misses, resolved once.
    pub decision_cache: [Counter; 2],
    /// Upgraded streams (exec, attach, port-forward) open now.
    pub open_upgrades: Gauge,
    /// Watches and followed logs open now.
    pub open_watches: Gauge,
    /// Policy reloads that failed (the previous policy stayed in force).
    pub policy_reload_failures: Counter,
    /// The generation of the policy in force.
    pub policy_generation: Gauge,
    /// RBAC reconcile failures: a watch, a write or a read of the cluster's bindings and roles.
    pub reconcile_errors: Counter,
    /// Grants of this destination naming a role that exists nowhere (not built in, no
    /// ClusterRole of the cluster, no Role of the grant's namespace).
    pub grants_unknown_role: Gauge,
    /// RBAC bindings made outside Infra that name users or groups of this destination's grants.
    pub outside_bindings: Gauge,
    /// Seconds since the control plane was last heard from (proxy-only mode; -1: never).
    pub snapshot_age: Gauge,
    /// Long-running streams closed because their user lost access.
    pub streams_revoked: Counter,
    /// Audit events not recorded: dropped on a full queue, or lost in a failed write.
    pub audit_failures: Counter,
    /// Failed attempts to deliver access requests' notifications (the control plane's).
    pub notification_failures: Gauge,
    /// Notifications given up after every retry failed.
    pub notifications_dropped: Gauge,
    /// Audit events the control plane's audit trail took.
    pub audit_recorded: Counter,
    /// Audit events put in the spool file while the control plane could not take them.
    pub audit_spooled: Counter,
    /// Audit events the OTLP receiver took (this replica's export).
    pub audit_otlp_exported: Counter,
    /// Failed OTLP export attempts that were retried.
    pub audit_otlp_retries: Counter,
    /// Audit events the OTLP receiver refused for good.
    pub audit_otlp_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("infra_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by HTTP status code and authorization decision",
            requests.clone(),
        );
        let requests_ok_allowed = requests
            .get_or_create(&RequestLabels {
                code: 200,
                decision: "allow",
            })
            .clone();
        let latency = Histogram::new([
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response head",
            latency.clone(),
        );
        let cache_family = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Token and decision cache lookups",
            cache_family.clone(),
        );
        let resolve = |cache: &'static str| {
            [true, false].map(|hit| {
                cache_family
                    .get_or_create(&CacheLabels {
                        cache,
                        result: if hit { "hit" } else { "miss" },
                    })
                    .clone()
            })
        };
        let token_cache = resolve("token");
        let decision_cache = resolve("decision");
        let open_upgrades = Gauge::default();
        registry.register(
            "open_upgrades",
            "Upgraded streams (exec, attach, port-forward) open now",
            open_upgrades.clone(),
        );
        let open_watches = Gauge::default();
        registry.register(
            "open_watches",
            "Watches and followed logs open now",
            open_watches.clone(),
        );
        let policy_reload_failures = Counter::default();
        registry.register(
            "policy_reload_failures",
            "Policy reloads that failed; the previous policy stayed in force",
            policy_reload_failures.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "The generation of the policy in force",
            policy_generation.clone(),
        );
        let reconcile_errors = Counter::default();
        registry.register(
            "reconcile_errors",
            "RBAC reconcile failures (watches, reads and writes of bindings and roles)",
            reconcile_errors.clone(),
        );
        let grants_unknown_role = Gauge::default();
        registry.register(
            "grants_unknown_role",
            "Grants naming a role that exists nowhere in the cluster",
            grants_unknown_role.clone(),
        );
        let outside_bindings = Gauge::default();
        registry.register(
            "outside_bindings",
            "RBAC bindings not made by Infra that name users or groups of its grants (not honoured by the proxy)",
            outside_bindings.clone(),
        );
        let snapshot_age = Gauge::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the control plane was last heard from (-1: never, or not synced)",
            snapshot_age.clone(),
        );
        let streams_revoked = Counter::default();
        registry.register(
            "streams_revoked",
            "Long-running streams closed because their user lost access",
            streams_revoked.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_failures",
            "Audit events not recorded: dropped on a full queue, or lost in a failed write",
            audit_failures.clone(),
        );
        let notification_failures = Gauge::default();
        registry.register(
            "request_notification_failures",
            "Failed attempts to deliver access requests' notifications since the control plane started",
            notification_failures.clone(),
        );
        let notifications_dropped = Gauge::default();
        registry.register(
            "request_notifications_dropped",
            "Access requests' notifications given up after every retry failed",
            notifications_dropped.clone(),
        );
        let audit_recorded = Counter::default();
        registry.register(
            "audit_recorded",
            "Audit events the control plane's audit trail took",
            audit_recorded.clone(),
        );
        let audit_spooled = Counter::default();
        registry.register(
            "audit_spooled",
            "Audit events put in the spool file while the control plane could not take them",
            audit_spooled.clone(),
        );
        let audit_otlp_exported = Counter::default();
        registry.register(
            "audit_otlp_exported",
            "Audit events the OTLP receiver took from this replica's export",
            audit_otlp_exported.clone(),
        );
        let audit_otlp_retries = Counter::default();
        registry.register(
            "audit_otlp_retries",
            "Failed OTLP export attempts (429, 502, 503, 504, no answer) that were retried",
            audit_otlp_retries.clone(),
        );
        let audit_otlp_dropped = Counter::default();
        registry.register(
            "audit_otlp_dropped",
            "Audit events the OTLP receiver refused for good (not exported; still in the store)",
            audit_otlp_dropped.clone(),
        );
        Self {
            registry,
            requests,
            requests_ok_allowed,
            latency,
            token_cache,
            decision_cache,
            open_upgrades,
            open_watches,
            policy_reload_failures,
            policy_generation,
            reconcile_errors,
            grants_unknown_role,
            outside_bindings,
            snapshot_age,
            streams_revoked,
            audit_failures,
            notification_failures,
            notifications_dropped,
            audit_recorded,
            audit_spooled,
            audit_otlp_exported,
            audit_otlp_retries,
            audit_otlp_dropped,
        }
    }

    /// Counts a finished request. The common answer (200, allowed) has its counter resolved
    /// once, so most requests skip the family's lock and label hashing.
    pub fn count_request(&self, code: u16, decision: &'static str) {
        if code == 200 && decision == "allow" {
            self.requests_ok_allowed.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels { code, decision })
                .inc();
        }
    }

    /// Counts a lookup in `cache` (one of the resolved pairs above).
    pub fn cache_lookup(&self, cache: &[Counter; 2], hit: bool) {
        cache[usize::from(!hit)].inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Holds a gauge up while alive.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Raises `gauge` until the guard drops.
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
