//! Per-client limits on what strangers can spend (docs/security.md): who "a client" is, what each
//! rate limit guards and what its refusal says, and how the broker's connection caps decide.
//!
//! The counting is done elsewhere: request rates by Cloudflare's Workers Rate Limiting binding (one
//! per guarded route, declared in `wrangler/edge.toml`), open sockets by the broker's runtime. What
//! is decided from the counts is here, so that it is the same in every worker and tested natively.

use std::net::IpAddr;

/// The key of a request whose address is missing or unreadable. Such requests share one budget:
/// a missing address never buys a fresh one.
pub const UNKNOWN_NETWORK: &str = "unknown";

/// The window every rate limit counts over, in seconds (the binding allows 10 or 60), and so the
/// `Retry-After` of a refusal: the window is fixed, so by then it has turned over.
pub const PERIOD_S: u32 = 60;

/// The network a request comes from, the key its limits are counted under. An IPv4 address is its
/// own network; an IPv6 address counts by its /64, the block one subscriber is usually given, so
/// that walking through the addresses of one block buys nothing. `ip` is the `CF-Connecting-IP`
/// header, which Cloudflare sets on every request (a client cannot choose it).
pub fn network_of(ip: Option<&str>) -> String {
    match ip.map(str::trim).map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
        Some(Ok(IpAddr::V6(v6))) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => UNKNOWN_NETWORK.to_owned(),
    }
}

/// A route whose use is rate-limited per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// `POST /login`: each one stores a sign-in in progress and asks the person's server.
    SignIn,
    /// `POST /status`: each one reads D1 and may write to a repository (the account also has its
    /// own budget, `Config::writes_per_minute`).
    Write,
    /// `GET /ws`: each one wakes the broker and may replay up to its log's capacity.
    Connect,
}

impl Guarded {
    pub const ALL: [Guarded; 3] = [Guarded::SignIn, Guarded::Write, Guarded::Connect];

    /// The name of its `[[ratelimits]]` binding in edge's wrangler config.
    pub fn binding(self) -> &'static str {
        match self {
            Guarded::SignIn => "SIGN_IN_LIMIT",
            Guarded::Write => "WRITE_LIMIT",
            Guarded::Connect => "SOCKET_LIMIT",
        }
    }

    /// What a refused request is told (with a 429 and `Retry-After`).
    pub fn refusal(self) -> &'static str {
        match self {
            Guarded::SignIn => {
                "Too many sign-ins from your network. Please wait a minute and try again."
            }
            Guarded::Write => {
                "Too many status changes from your network. Please wait a minute and try again."
            }
            Guarded::Connect => {
                "Too many live connections opened from your network. Please wait a minute."
            }
        }
    }
}

/// The broker's caps on open sockets: per network, and in all (Cloudflare allows 32,768 per
/// object; the cap keeps the broker below it with a clear refusal instead of the runtime's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketCaps {
    pub per_network: usize,
    pub total: usize,
}

impl SocketCaps {
    pub const DEFAULT: SocketCaps = SocketCaps {
        per_network: 100,
        total: 30_000,
    };

    /// Whether one more socket from a network that holds `from_network` of the `total` open ones
    /// may be kept.
    pub fn admit(&self, from_network: usize, total: usize) -> Admission {
        if total >= self.total {
            Admission::BrokerFull
        } else if from_network >= self.per_network {
            Admission::NetworkFull
        } else {
            Admission::Admitted
        }
    }
}

/// The broker's answer to a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// This network holds its share: the socket is closed with [`crate::wire::close::TRY_AGAIN_LATER`].
    NetworkFull,
    /// The broker holds all it may: closed the same way, with another reason.
    BrokerFull,
}

impl Admission {
    /// The close reason sent with [`crate::wire::close::TRY_AGAIN_LATER`] (at most 123 bytes, the
    /// WebSocket limit), `None` when admitted.
    pub fn close_reason(self) -> Option<&'static str> {
        match self {
            Admission::Admitted => None,
            Admission::NetworkFull => Some("too many live connections from your network"),
            Admission::BrokerFull => Some("the live feed is full"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(network_of(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(network_of(Some(" 203.0.113.7 ")), "203.0.113.7");
        assert_eq!(
            network_of(Some("2001:db8:aa:bb:1:2:3:4")),
            "2001:db8:aa:bb::/64"
        );
        // Two addresses of one /64 are one network; the next /64 is another.
        assert_eq!(
            network_of(Some("2001:0db8:00aa:00bb:ffff::1")),
            network_of(Some("2001:db8:aa:bb::9"))
        );
        assert_ne!(
            network_of(Some("2001:db8:aa:bb::1")),
            network_of(Some("2001:db8:aa:bc::1"))
        );
        // An IPv4 address written as IPv6 is still that IPv4 address.
        assert_eq!(network_of(Some("::ffff:203.0.113.7")), "203.0.113.7");
    }

    #[test]
    fn a_missing_or_unreadable_address_shares_one_budget() {
        for ip in [None, Some(""), Some("localhost"), Some("1.2.3.4, 5.6.7.8")] {
            assert_eq!(network_of(ip), UNKNOWN_NETWORK, "{ip:?}");
        }
    }

    #[test]
    fn the_broker_admits_within_both_caps() {
        let caps = SocketCaps {
            per_network: 2,
            total: 5,
        };
        assert_eq!(caps.admit(0, 0), Admission::Admitted);
        assert_eq!(caps.admit(1, 4), Admission::Admitted);
        assert_eq!(caps.admit(2, 2), Admission::NetworkFull);
        assert_eq!(caps.admit(0, 5), Admission::BrokerFull);
        // Full is full, whoever asks.
        assert_eq!(caps.admit(2, 5), Admission::BrokerFull);
    }

    #[test]
    fn every_refusal_fits_its_frame() {
        for admission in [Admission::NetworkFull, Admission::BrokerFull] {
            let reason = admission.close_reason().unwrap();
            assert!(reason.len() <= 123, "{reason}");
        }
        assert_eq!(Admission::Admitted.close_reason(), None);
        let names: Vec<_> = Guarded::ALL.iter().map(|g| g.binding()).collect();
        assert_eq!(names, ["SIGN_IN_LIMIT", "WRITE_LIMIT", "SOCKET_LIMIT"]);
    }
}
