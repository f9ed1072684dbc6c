//! Who a request comes from, and the per-client limit on proposals.
//!
//! The client is the TCP peer ([`Peer`], which [`super::server`] puts in every request's
//! extensions), except when the peer is a trusted proxy: then it is the last entry of
//! `X-Forwarded-For`, the address the proxy itself saw (nginx's `$proxy_add_x_forwarded_for`
//! and Caddy's `reverse_proxy` append it). The trusted proxies are `[http] trusted_proxies`
//! (addresses and networks), by default the loopback addresses only: convenor listens on
//! `127.0.0.1` behind a reverse proxy on the same host. Entries before the
//! last are whatever the client wrote and are never read. From any other peer the header is
//! ignored, so a client reaching convenor directly cannot pick its own key.
//!
//! IPv6 clients are counted by their /64 (one host usually holds a whole /64 and can pick any
//! address in it); IPv4 clients by their address.
//!
//! [`ClientLimiter`] counts stored proposals per client over a sliding window, in memory: no
//! client address is written to disk (the proposals' store keeps none), and a restart forgets
//! the counts (the per-address and per-meeting limits, counted from the store, survive it). It
//! records only proposals that were stored, and those are capped per meeting and window, so it
//! holds at most that many entries; each check first drops every entry older than the window.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use axum::http::HeaderMap;
use jiff::{SignedDuration, Timestamp};

use crate::model::ProxyNet;

/// The TCP peer of a request's connection, put into each request's extensions by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Whether `peer` is a trusted proxy, whose `X-Forwarded-For` is believed: in one of
/// `proxies` (`[http] trusted_proxies`, loopback by default), taken canonically (an
/// IPv4-mapped IPv6 peer as its IPv4 address).
pub fn trusted_proxy(peer: IpAddr, proxies: &[ProxyNet]) -> bool {
    proxies.iter().any(|net| net.contains(peer))
}

/// The client's address: the last `X-Forwarded-For` entry when `peer` is a trusted proxy (one
/// of `proxies`) and that entry is an address (with or without a port), else `peer` itself.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[ProxyNet]) -> IpAddr {
    if !trusted_proxy(peer, proxies) {
        return peer.to_canonical();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| parse_entry(last.trim()))
        .unwrap_or(peer)
        .to_canonical()
}

/// One `X-Forwarded-For` entry: `addr`, `addr:port`, `[v6]` or `[v6]:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
}

/// What a client is counted under: its IPv4 address, or its IPv6 address's /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of client address `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Stored proposals per client within a sliding window (see the module docs).
#[derive(Debug)]
pub struct ClientLimiter {
    window: SignedDuration,
    seen: HashMap<ClientKey, VecDeque<Timestamp>>,
}

impl ClientLimiter {
    /// A limiter counting over `window`.
    pub fn new(window: SignedDuration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// Forgets everything older than the window at `now`.
    fn prune(&mut self, now: Timestamp) {
        let since = now.checked_sub(self.window).unwrap_or(now);
        self.seen.retain(|_, times| {
            while times.front().is_some_and(|t| *t < since) {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// How many proposals `client` had stored within the window before `now`.
    pub fn count(&mut self, client: ClientKey, now: Timestamp) -> usize {
        self.prune(now);
        self.seen.get(&client).map_or(0, VecDeque::len)
    }

    /// Records a proposal stored for `client` at `now`.
    pub fn record(&mut self, client: ClientKey, now: Timestamp) {
        self.seen.entry(client).or_default().push_back(now);
    }

    /// The clients currently held (for tests of the bound).
    pub fn clients(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_client_is_the_peer_unless_a_loopback_proxy_names_it_last_in_x_forwarded_for() {
        let cases: &[(&str, &[&str], &str)] = &[
            // A trusted (loopback) peer: the last entry of the last header line.
            ("127.0.0.1", &["203.0.113.7"], "203.0.113.7"),
            ("127.0.0.1", &["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
            ("127.0.0.1", &["198.51.100.1", "203.0.113.7"], "203.0.113.7"),
            ("127.0.0.1", &["203.0.113.7:5555"], "203.0.113.7"),
            ("::1", &["2001:db8::1"], "2001:db8::1"),
            ("::1", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("::1", &["[2001:db8::1]"], "2001:db8::1"),
            ("::ffff:127.0.0.1", &["203.0.113.7"], "203.0.113.7"),
            ("127.0.0.2", &["203.0.113.7"], "203.0.113.7"),
            ("127.0.0.1", &["::ffff:203.0.113.7"], "203.0.113.7"),
            // The client's own forgeries before the last entry are not read.
            ("127.0.0.1", &["10.0.0.1, not-an-ip"], "127.0.0.1"),
            // No header, or a last entry that is no address: the proxy itself.
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["unknown"], "127.0.0.1"),
            ("127.0.0.1", &[""], "127.0.0.1"),
            // An untrusted peer: its header is ignored.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            ("2001:db8::9", &["198.51.100.1"], "2001:db8::9"),
            ("10.0.0.2", &["127.0.0.1"], "10.0.0.2"),
            ("::ffff:203.0.113.9", &["127.0.0.1"], "203.0.113.9"),
        ];
        for (peer, xff, want) in cases {
            let mut h = HeaderMap::new();
            for v in *xff {
                h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
            }
            assert_eq!(
                client_ip(ip(peer), &h, &ProxyNet::LOOPBACK),
                ip(want),
                "{peer} {xff:?}"
            );
        }
    }

    #[test]
    fn trusted_proxies_parse_as_addresses_and_networks() {
        let ok: &[(&str, &str)] = &[
            ("10.0.0.5", "10.0.0.5/32"),
            ("192.168.0.0/24", "192.168.0.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::ffff:10.0.0.5", "10.0.0.5/32"),
        ];
        for (text, want) in ok {
            let net = ProxyNet::parse(text).expect(text);
            assert_eq!(net.to_string(), *want, "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("proxy.example.org", "is not an address or network"),
            ("10.0.0.0/33", "the prefix length must be 0 to 32"),
            ("2001:db8::/129", "the prefix length must be 0 to 128"),
            ("10.0.0.0/", "the prefix length"),
            ("10.0.0.0/+8", "the prefix length"),
            ("10.0.0.0/x", "the prefix length"),
            ("192.168.0.5/24", "the network is `192.168.0.0/24`"),
            ("", "is not an address"),
        ];
        for (text, want) in bad {
            let err = ProxyNet::parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn configured_proxies_replace_loopback_and_others_are_clients() {
        let proxies: Vec<ProxyNet> = ["10.0.0.5", "192.168.0.0/24", "2001:db8:1::/48"]
            .iter()
            .map(|t| ProxyNet::parse(t).expect("net"))
            .collect();
        let cases: &[(&str, &str)] = &[
            ("10.0.0.5", "203.0.113.7"),
            ("::ffff:10.0.0.5", "203.0.113.7"),
            ("192.168.0.1", "203.0.113.7"),
            ("192.168.0.255", "203.0.113.7"),
            ("2001:db8:1:ffff::1", "203.0.113.7"),
            // Outside the list, loopback included: the header is ignored.
            ("10.0.0.6", "10.0.0.6"),
            ("192.168.1.1", "192.168.1.1"),
            ("2001:db8:2::1", "2001:db8:2::1"),
            ("127.0.0.1", "127.0.0.1"),
        ];
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        for (peer, want) in cases {
            assert_eq!(client_ip(ip(peer), &h, &proxies), ip(want), "{peer}");
        }
        // An empty list trusts no one.
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_ne!(
            ClientKey::of(ip("203.0.113.1")),
            ClientKey::of(ip("203.0.113.2"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:203.0.113.1")),
            ClientKey::of(ip("203.0.113.1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn counts_slide_with_the_window_and_old_clients_are_forgotten() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("t0");
        let hour = SignedDuration::from_hours(1);
        let mut l = ClientLimiter::new(hour);
        let a = ClientKey::of(ip("203.0.113.1"));
        let b = ClientKey::of(ip("203.0.113.2"));
        l.record(a, t0);
        l.record(a, t0 + SignedDuration::from_mins(30));
        l.record(b, t0 + SignedDuration::from_mins(10));
        assert_eq!(l.count(a, t0 + SignedDuration::from_mins(59)), 2);
        assert_eq!(
            l.count(a, t0 + hour),
            2,
            "the window's first instant counts"
        );
        assert_eq!(l.count(a, t0 + hour + SignedDuration::from_secs(1)), 1);
        assert_eq!(l.clients(), 2);
        assert_eq!(l.count(a, t0 + SignedDuration::from_mins(91)), 0);
        assert_eq!(
            l.clients(),
            0,
            "clients with nothing in the window are dropped"
        );
    }
}
