//! Which addresses a verified member may have us route to it. A member's claimed listen
//! addresses (identify) and the addresses we reached it at go into its network's Kademlia table
//! and the address book, and from there to every member that asks: an address that is not
//! Cordon's to dial, or that points into the receivers' own hosts and LANs, would turn members
//! into dialers of whatever a member names.
//!
//! So an address is kept only if Cordon can dial it (`/ip4|ip6/<ip>/tcp/<port>`, optionally
//! `/p2p/<id>`; `/memory/<n>` on the in-process transport) and its IP is one a network accepts:
//! never unspecified, multicast or broadcast; loopback, link-local, private (RFC 1918, fc00::/7)
//! and shared (100.64.0.0/10) ranges only in a network whose descriptor sets
//! `private_addresses = true` (a LAN, or every node on one host as in the demo and the tests).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cordon_protocol::NetworkName;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// See the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// The in-process memory transport: `/memory` addresses instead of TCP.
    memory: bool,
    /// Networks whose descriptor sets `private_addresses`.
    private: BTreeSet<NetworkName>,
}

/// Where an IP address points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Reachable across the internet.
    Public,
    /// This host, its link, or a private network.
    Private,
    /// Nothing one dials: unspecified, multicast, broadcast.
    Never,
}

fn scope_v4(ip: Ipv4Addr) -> Scope {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || a == 0 {
        Scope::Never
    } else if ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
    {
        Scope::Private
    } else {
        Scope::Public
    }
}

fn scope_v6(ip: Ipv6Addr) -> Scope {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return scope_v4(v4);
    }
    if ip.is_unspecified() || ip.is_multicast() {
        Scope::Never
    } else if ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local() {
        Scope::Private
    } else {
        Scope::Public
    }
}

fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => scope_v6(v6),
    }
}

impl AddressPolicy {
    /// A policy for a node on the memory transport (`memory`) or TCP, where `private` are the
    /// networks that accept private-range addresses.
    pub fn new(memory: bool, private: impl IntoIterator<Item = NetworkName>) -> Self {
        Self {
            memory,
            private: private.into_iter().collect(),
        }
    }

    /// Replaces the networks accepting private addresses (a reloaded descriptor).
    pub fn set_private(&mut self, private: impl IntoIterator<Item = NetworkName>) {
        self.private = private.into_iter().collect();
    }

    /// The scope of `addr` if Cordon can dial it; `None` if it cannot.
    fn dialable(&self, addr: &Multiaddr) -> Option<Scope> {
        let mut parts = addr.iter();
        let scope = match (parts.next()?, self.memory) {
            (Protocol::Memory(port), true) if port != 0 => Scope::Public,
            (Protocol::Ip4(ip), false) => scope_v4(ip),
            (Protocol::Ip6(ip), false) => scope_v6(ip),
            _ => return None,
        };
        if !self.memory && !matches!(parts.next(), Some(Protocol::Tcp(port)) if port != 0) {
            return None;
        }
        match (parts.next(), parts.next()) {
            (None, _) | (Some(Protocol::P2p(_)), None) => Some(scope),
            _ => None,
        }
    }

    /// Whether `addr` may go into `network`'s table and address book.
    pub fn accepts(&self, addr: &Multiaddr, network: &NetworkName) -> bool {
        match self.dialable(addr) {
            Some(Scope::Public) => true,
            Some(Scope::Private) => self.private.contains(network),
            Some(Scope::Never) | None => false,
        }
    }

    /// Whether some network here may accept `addr` (kept for the peer until it is routed).
    pub fn accepts_any(&self, addr: &Multiaddr) -> bool {
        match self.dialable(addr) {
            Some(Scope::Public) => true,
            Some(Scope::Private) => !self.private.is_empty(),
            Some(Scope::Never) | None => false,
        }
    }
}

/// Whether `ip` is in a loopback, link-local, private or shared range (for messages).
pub fn is_private(ip: IpAddr) -> bool {
    scope(ip) == Scope::Private
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_dialable_public_addresses_pass_by_default() {
        let policy = AddressPolicy::new(false, [net("lab")]);
        let main = net("mainnet");
        let peer = "/p2p/12D3KooWJTvREY3MrZANbEkoBoFApqVn8newCLFq6iYNxGmJ7r9W";
        for ok in [
            "/ip4/203.0.113.7/tcp/4001".to_owned(),
            format!("/ip4/198.51.100.1/tcp/4001{peer}"),
            "/ip6/2001:db8::1/tcp/4001".to_owned(),
        ] {
            assert!(policy.accepts(&addr(&ok), &main), "{ok}");
        }
        for private in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/10.1.2.3/tcp/4001",
            "/ip4/172.16.0.1/tcp/4001",
            "/ip4/192.168.1.1/tcp/4001",
            "/ip4/169.254.1.1/tcp/4001",
            "/ip4/100.64.0.1/tcp/4001",
            "/ip6/::1/tcp/4001",
            "/ip6/fd00::1/tcp/4001",
            "/ip6/fe80::1/tcp/4001",
            "/ip6/::ffff:10.0.0.1/tcp/4001",
        ] {
            assert!(!policy.accepts(&addr(private), &main), "{private}");
            assert!(policy.accepts(&addr(private), &net("lab")), "{private}");
            assert!(is_private(match addr(private).iter().next().unwrap() {
                Protocol::Ip4(ip) => IpAddr::V4(ip),
                Protocol::Ip6(ip) => IpAddr::V6(ip),
                _ => unreachable!(),
            }));
        }
        for never in [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/224.0.0.1/tcp/4001",
            "/ip4/255.255.255.255/tcp/4001",
            "/ip6/::/tcp/4001",
            "/ip4/203.0.113.7/tcp/0",
            "/ip4/203.0.113.7/udp/4001/quic-v1",
            "/ip4/203.0.113.7/tcp/4001/ws",
            "/dns4/example.org/tcp/4001",
            "/memory/42",
            "/ip4/203.0.113.7/tcp/4001/p2p-circuit",
        ] {
            assert!(!policy.accepts(&addr(never), &net("lab")), "{never}");
            assert!(!policy.accepts_any(&addr(never)), "{never}");
        }
    }

    #[test]
    fn the_memory_transport_takes_memory_addresses_only() {
        let policy = AddressPolicy::new(true, []);
        assert!(policy.accepts(&addr("/memory/42"), &net("mainnet")));
        assert!(!policy.accepts(&addr("/memory/0"), &net("mainnet")));
        assert!(!policy.accepts(&addr("/ip4/203.0.113.7/tcp/4001"), &net("mainnet")));
    }

    #[test]
    fn private_addresses_pass_where_some_network_takes_them() {
        let mut policy = AddressPolicy::new(false, []);
        let local = addr("/ip4/127.0.0.1/tcp/4001");
        assert!(!policy.accepts_any(&local));
        policy.set_private([net("lab")]);
        assert!(policy.accepts_any(&local));
        assert!(!policy.accepts(&local, &net("mainnet")));
    }
}
