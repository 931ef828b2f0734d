//! Who is on the other end of a connection: the client's address (the peer's, or behind
//! trusted proxies the one they name) and the key limits and lockouts count it under, and the
//! per-address rate limit of the anonymous routes.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use ipnet::IpNet;

/// The address of a connection's peer, as the listener accepted it. Whoever serves the router
/// puts it in each request's extensions; without it the client is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client of a request: its address, and the key it is counted under (an IPv4 address, or
/// the /64 of an IPv6 address, which one subscriber usually holds whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address, when known.
    pub ip: Option<IpAddr>,
    /// What limits and lockouts count it under; empty when unknown.
    pub key: String,
}

impl ClientAddr {
    /// The client at `ip`.
    pub fn new(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let key = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        };
        Self { ip: Some(ip), key }
    }

    /// A client whose address is not known (a router used without a listener).
    pub fn unknown() -> Self {
        Self {
            ip: None,
            key: String::new(),
        }
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` values: the peer, unless
    /// it is one of `trusted` proxies; then the right-most address the proxies name that is not
    /// itself a trusted proxy (the left part of the header is the client's to write, and lies).
    pub fn resolve(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> Self {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return Self::new(peer);
        }
        let named: Vec<IpAddr> = forwarded_for
            .iter()
            .flat_map(|value| value.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .collect();
        named
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .map_or_else(|| Self::new(peer), |ip| Self::new(*ip))
    }
}

type KeyedLimiter = RateLimiter<
    String,
    governor::state::keyed::DashMapStateStore<String>,
    governor::clock::DefaultClock,
>;

/// Per-client-address limits on what anonymous clients can make the control plane do: log in
/// (each guess costs an Argon2id hash), start OIDC logins (each is kept in the store) and trade
/// sessions for tokens.
#[derive(Debug)]
pub struct Throttle {
    limiter: KeyedLimiter,
}

impl Throttle {
    /// `per_minute` requests a minute per client address, in bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::dashmap(Quota::per_minute(rate).allow_burst(burst)),
        }
    }

    /// Takes one request of `client`'s allowance, or says how long until the next one.
    pub fn check(&self, client: &ClientAddr) -> Result<(), Duration> {
        self.limiter.check_key(&client.key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Forgets clients whose allowance is full again (keeps memory bounded by the busy ones).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            ClientAddr::new(ip("2001:db8:1:2:aaaa::1")).key,
            "2001:db8:1:2::/64"
        );
        assert_eq!(ClientAddr::new(ip("::ffff:192.0.2.7")).key, "192.0.2.7");
        assert_eq!(ClientAddr::new(ip("192.0.2.7")).key, "192.0.2.7");
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        // An untrusted peer's header is ignored: it would let anyone pick their address.
        assert_eq!(
            ClientAddr::resolve(ip("198.51.100.9"), &["203.0.113.5"], &trusted).key,
            "198.51.100.9"
        );
        // A trusted proxy's: the right-most address that is not a trusted proxy.
        assert_eq!(
            ClientAddr::resolve(
                ip("10.1.2.3"),
                &["1.1.1.1, 203.0.113.5", "10.9.9.9"],
                &trusted
            )
            .key,
            "203.0.113.5"
        );
        // Garbage or only proxies: the peer itself.
        assert_eq!(
            ClientAddr::resolve(ip("10.1.2.3"), &["not an address"], &trusted).key,
            "10.1.2.3"
        );
    }

    #[test]
    fn the_throttle_allows_a_burst_then_refuses_with_a_wait() {
        let throttle = Throttle::new(20, 40);
        let client = ClientAddr::new(ip("192.0.2.1"));
        for _ in 0..40 {
            assert!(throttle.check(&client).is_ok());
        }
        let wait = throttle.check(&client).expect_err("the burst is spent");
        assert!(wait <= Duration::from_secs(3), "{wait:?}");
        // Another address has its own allowance.
        assert!(throttle.check(&ClientAddr::new(ip("192.0.2.2"))).is_ok());
    }
}
