//! Connection filtering: operator allow/deny rules for peer ids and IP networks, per-IP
//! connection caps and rates, and bans, enforced by the [`ConnectionFilter`] behaviour.
//!
//! # Where each check runs
//!
//! | check | hook | cost to the remote before refusal |
//! |---|---|---|
//! | IP deny/allow rules, IP bans, per-IP cap, per-IP connection rate | `handle_pending_inbound_connection` | a TCP accept: no Noise handshake runs |
//! | the same IP checks again (rules or bans may have changed during the handshake), per-IP cap again (several handshakes from one IP may finish together) | `handle_established_inbound_connection` | the handshake |
//! | PeerId deny/allow rules, peer bans | `handle_established_{inbound,outbound}_connection`, and `handle_pending_outbound_connection` when the dial names a peer | the handshake (inbound); nothing (outbound with a known peer) |
//!
//! IP rules, caps, rates and IP bans apply to inbound connections only: they protect the
//! listener from remote hosts. Which addresses the node itself dials is decided by the dialer.
//!
//! # Semantics
//!
//! - A deny entry always wins. If an allow list is non-empty, only its entries pass.
//! - An inbound connection whose remote address holds no IP (e.g. the memory transport) matches
//!   no IP entry: it passes the deny list and fails a non-empty allow list.
//! - IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address, both in the
//!   rules and on connections. IPv6 networks never match IPv4 addresses.
//! - Per-IP caps, rates and bans count IPv4 addresses singly and IPv6 addresses per /64
//!   ([`IPV6_LIMIT_PREFIX`]): one IPv6 host usually owns a whole /64 and could otherwise rotate
//!   through it to escape every per-address limit.
//! - `unlimited_ips` are exempt from the per-IP cap, the per-IP rate and automatic IP bans (use it
//!   for a local test network on loopback, or a trusted proxy); deny rules and manual bans still
//!   apply to them.
//!
//! # Bounds
//!
//! Rule lists hold at most [`MAX_RULE_ENTRIES`] entries each. Connections, per-IP counters, the
//! per-IP rate limiter and both ban lists hold at most [`LimitsConfig::max_tracked_keys`] entries
//! each (default 10 000); when the connection table is full new connections are refused with
//! [`FilterReason::TrackingFull`]. At most [`MAX_QUEUED_EVENTS`] refusal events wait for the swarm
//! to take them; older ones are dropped and counted in [`FilterStatus::dropped_events`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
    task::{Context, Poll, Waker},
    time::Instant,
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, multiaddr::Protocol, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        behaviour::{AddressChange, ConnectionClosed, ConnectionEstablished},
        dummy,
    },
};
use serde::{Deserialize, Serialize};

use crate::ratelimit::{BanApplied, BanList, KeyedLimiter, LimitsConfig};

/// Most entries in each rule list.
pub const MAX_RULE_ENTRIES: usize = 10_000;

/// Largest filter rules file [`FilterRules::load`] reads (4 MiB).
pub const MAX_RULES_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Most refusal events queued for the swarm; older ones are dropped first.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// Most entries in each list of [`FilterStatus`].
pub const STATUS_MAX_ENTRIES: usize = 256;

/// IPv6 addresses are grouped by this prefix for per-IP caps, rates and bans.
pub const IPV6_LIMIT_PREFIX: u8 = 64;

// ---------------------------------------------------------------------------------------------
// Addresses and networks
// ---------------------------------------------------------------------------------------------

/// The IP address of a multiaddr (its first `/ip4` or `/ip6` component), IPv4-mapped IPv6
/// addresses given as IPv4. `None` for addresses without an IP (DNS names, memory transport).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip).to_canonical()),
        _ => None,
    })
}

/// The key per-IP limits and bans use for `ip`: the IPv4 address itself, or the IPv6 address's
/// /64 network ([`IPV6_LIMIT_PREFIX`]).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(IPV6_LIMIT_PREFIX))),
    }
}

/// The source prefix `ip` belongs to, for shares wider than one address: its IPv4 /24 or
/// IPv6 /48.
pub fn prefix_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(24))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(48))),
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Why a string is not an IP address or CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("not an IPv4 or IPv6 address")]
    BadAddress,
    /// The part after `/` is not a decimal number.
    #[error("the prefix length after '/' must be a decimal number")]
    BadPrefix,
    /// The prefix is longer than the address.
    #[error("prefix length {prefix} is longer than {max} bits")]
    PrefixTooLong {
        /// The prefix given.
        prefix: u16,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// The address has bits set past the prefix, so the entry is ambiguous (a host or the
    /// network?).
    #[error("address has bits set beyond the prefix; write the network as {network}")]
    HostBitsSet {
        /// The network the entry probably means.
        network: IpNet,
    },
}

/// An IPv4 or IPv6 network: an address and a prefix length, host bits zero.
///
/// Written `a.b.c.d/n` or `x:y::z/n`; a bare address is a single host (/32 or /128). An
/// IPv4-mapped IPv6 network with a prefix of at least 96 is stored as the IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network `addr/prefix`; fails if the prefix is too long or `addr` has host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError::PrefixTooLong {
                prefix: prefix.into(),
                max,
            });
        }
        let network = Self::truncate(addr, prefix);
        if network != addr {
            return Err(CidrError::HostBitsSet {
                network: Self {
                    addr: network,
                    prefix,
                },
            });
        }
        Ok(Self { addr, prefix })
    }

    /// The single-host network of `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    fn truncate(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(prefix))),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress)?;
        let prefix = match prefix {
            None => {
                return Ok(Self::host(addr));
            }
            Some(p) if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(CidrError::BadPrefix);
            }
            Some(p) => p.parse::<u16>().map_err(|_| CidrError::BadPrefix)?,
        };
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        match u8::try_from(prefix) {
            Ok(prefix) if prefix <= max => Self::new(addr, prefix),
            _ => Err(CidrError::PrefixTooLong { prefix, max }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// Why filter rules could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterRulesError {
    /// The file could not be read.
    #[error("cannot read filter rules {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The file is larger than [`MAX_RULES_FILE_BYTES`].
    #[error("filter rules {} is {size} bytes, at most {MAX_RULES_FILE_BYTES} allowed", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("invalid filter rules: {0}")]
    Syntax(#[from] toml::de::Error),
    /// An IP entry is neither an address nor a CIDR network.
    #[error("{list}: {entry:?} is not a valid IP address or CIDR network: {cause}")]
    BadIp {
        /// The list (`deny_ips`, `allow_ips`, `unlimited_ips`).
        list: &'static str,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        cause: CidrError,
    },
    /// A peer entry is not a peer id.
    #[error("{list}: {entry:?} is not a valid peer id ({reason})")]
    BadPeer {
        /// The list (`deny_peers`, `allow_peers`).
        list: &'static str,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A list has more than [`MAX_RULE_ENTRIES`] entries.
    #[error("{list} has {count} entries, at most {MAX_RULE_ENTRIES} allowed")]
    TooMany {
        /// The list.
        list: &'static str,
        /// Its length.
        count: usize,
    },
    /// A rule in a file is invalid.
    #[error("{}: {cause}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        cause: Box<FilterRulesError>,
    },
}

/// The TOML form of [`FilterRules`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRules {
    deny_peers: Vec<String>,
    allow_peers: Vec<String>,
    deny_ips: Vec<String>,
    allow_ips: Vec<String>,
    unlimited_ips: Vec<String>,
}

/// Operator rules for which peers and source addresses may connect.
///
/// TOML (every list optional, empty by default):
///
/// ```toml
/// deny_peers = ["12D3KooW..."]        # refused at establishment, both directions
/// allow_peers = []                    # if non-empty, only these peers
/// deny_ips = ["10.0.0.0/8", "192.168.1.7", "::1/128"]   # inbound, before the handshake
/// allow_ips = []                      # if non-empty, only these source networks
/// unlimited_ips = ["127.0.0.0/8"]     # exempt from per-IP caps, rates and automatic bans
/// ```
///
/// The default rules let everything through. See the [module documentation](self) for the
/// semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRules", into = "RawRules")]
pub struct FilterRules {
    deny_peers: HashSet<PeerId>,
    allow_peers: HashSet<PeerId>,
    deny_ips: Vec<IpNet>,
    allow_ips: Vec<IpNet>,
    unlimited_ips: Vec<IpNet>,
}

impl TryFrom<RawRules> for FilterRules {
    type Error = FilterRulesError;

    fn try_from(raw: RawRules) -> Result<Self, Self::Error> {
        fn peers(
            list: &'static str,
            entries: Vec<String>,
        ) -> Result<HashSet<PeerId>, FilterRulesError> {
            if entries.len() > MAX_RULE_ENTRIES {
                return Err(FilterRulesError::TooMany {
                    list,
                    count: entries.len(),
                });
            }
            entries
                .into_iter()
                .map(|entry| match entry.parse::<PeerId>() {
                    Ok(peer) => Ok(peer),
                    Err(e) => Err(FilterRulesError::BadPeer {
                        list,
                        reason: e.to_string(),
                        entry,
                    }),
                })
                .collect()
        }
        fn nets(list: &'static str, entries: Vec<String>) -> Result<Vec<IpNet>, FilterRulesError> {
            if entries.len() > MAX_RULE_ENTRIES {
                return Err(FilterRulesError::TooMany {
                    list,
                    count: entries.len(),
                });
            }
            let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
            let mut seen = HashSet::with_capacity(entries.len());
            for entry in entries {
                match entry.parse::<IpNet>() {
                    Ok(net) => {
                        if seen.insert(net) {
                            nets.push(net);
                        }
                    }
                    Err(source) => {
                        return Err(FilterRulesError::BadIp {
                            list,
                            entry,
                            cause: source,
                        });
                    }
                }
            }
            Ok(nets)
        }
        Ok(Self {
            deny_peers: peers("deny_peers", raw.deny_peers)?,
            allow_peers: peers("allow_peers", raw.allow_peers)?,
            deny_ips: nets("deny_ips", raw.deny_ips)?,
            allow_ips: nets("allow_ips", raw.allow_ips)?,
            unlimited_ips: nets("unlimited_ips", raw.unlimited_ips)?,
        })
    }
}

impl From<FilterRules> for RawRules {
    fn from(rules: FilterRules) -> Self {
        let mut deny_peers: Vec<String> = rules.deny_peers.iter().map(PeerId::to_string).collect();
        let mut allow_peers: Vec<String> =
            rules.allow_peers.iter().map(PeerId::to_string).collect();
        deny_peers.sort();
        allow_peers.sort();
        let nets = |nets: &[IpNet]| nets.iter().map(IpNet::to_string).collect();
        Self {
            deny_peers,
            allow_peers,
            deny_ips: nets(&rules.deny_ips),
            allow_ips: nets(&rules.allow_ips),
            unlimited_ips: nets(&rules.unlimited_ips),
        }
    }
}

impl FilterRules {
    /// Parses and validates rules from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, FilterRulesError> {
        let raw: RawRules = toml::from_str(text)?;
        Self::try_from(raw)
    }

    /// Reads, parses and validates a rules file. Errors name the file, the list and the entry.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FilterRulesError> {
        let path = path.as_ref();
        let read_err = |source| FilterRulesError::Read {
            path: path.to_owned(),
            cause: source,
        };
        let size = fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_RULES_FILE_BYTES {
            return Err(FilterRulesError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let text = fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml_str(&text).map_err(|source| FilterRulesError::InFile {
            path: path.to_owned(),
            cause: Box::new(source),
        })
    }

    /// Adds `peer` to the deny list.
    pub fn with_deny_peer(mut self, peer: PeerId) -> Self {
        self.deny_peers.insert(peer);
        self
    }

    /// Adds `peer` to the allow list.
    pub fn with_allow_peer(mut self, peer: PeerId) -> Self {
        self.allow_peers.insert(peer);
        self
    }

    /// Adds `net` to the IP deny list.
    pub fn with_deny_ip(mut self, net: IpNet) -> Self {
        if !self.deny_ips.contains(&net) {
            self.deny_ips.push(net);
        }
        self
    }

    /// Adds `net` to the IP allow list.
    pub fn with_allow_ip(mut self, net: IpNet) -> Self {
        if !self.allow_ips.contains(&net) {
            self.allow_ips.push(net);
        }
        self
    }

    /// Exempts `net` from per-IP caps, rates and automatic bans.
    pub fn with_unlimited_ip(mut self, net: IpNet) -> Self {
        if !self.unlimited_ips.contains(&net) {
            self.unlimited_ips.push(net);
        }
        self
    }

    /// Whether `peer` may connect under these rules.
    pub fn check_peer(&self, peer: &PeerId) -> Result<(), FilterReason> {
        if self.deny_peers.contains(peer) {
            Err(FilterReason::DeniedPeer)
        } else if !self.allow_peers.is_empty() && !self.allow_peers.contains(peer) {
            Err(FilterReason::NotAllowedPeer)
        } else {
            Ok(())
        }
    }

    /// Whether a connection from `ip` (`None`: the address holds no IP) may connect.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), FilterReason> {
        let listed = |nets: &[IpNet]| ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip)));
        if listed(&self.deny_ips) {
            Err(FilterReason::DeniedIp)
        } else if !self.allow_ips.is_empty() && !listed(&self.allow_ips) {
            Err(FilterReason::NotAllowedIp)
        } else {
            Ok(())
        }
    }

    /// Whether `ip` is exempt from per-IP caps, rates and automatic bans.
    pub fn is_unlimited(&self, ip: IpAddr) -> bool {
        self.unlimited_ips.iter().any(|n| n.contains(ip))
    }

    /// The number of entries in each list.
    pub fn counts(&self) -> RuleCounts {
        RuleCounts {
            deny_peers: self.deny_peers.len(),
            allow_peers: self.allow_peers.len(),
            deny_ips: self.deny_ips.len(),
            allow_ips: self.allow_ips.len(),
            unlimited_ips: self.unlimited_ips.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and status
// ---------------------------------------------------------------------------------------------

/// Why the filter refused a connection. Also the error inside the [`ConnectionDenied`] the swarm
/// reports (`ConnectionDenied::downcast_ref::<FilterReason>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FilterReason {
    /// The remote IP is in `deny_ips`.
    #[error("remote IP is denied")]
    DeniedIp,
    /// `allow_ips` is non-empty and the remote IP is not in it.
    #[error("remote IP is not in the allow list")]
    NotAllowedIp,
    /// The remote peer is in `deny_peers`.
    #[error("peer is denied")]
    DeniedPeer,
    /// `allow_peers` is non-empty and the remote peer is not in it.
    #[error("peer is not in the allow list")]
    NotAllowedPeer,
    /// The remote peer or IP is banned.
    #[error("peer or IP is banned")]
    Banned,
    /// The remote IP already has the maximum of established inbound connections.
    #[error("too many connections from this IP")]
    IpConnectionCap,
    /// The remote IP opens connections faster than its rate allows.
    #[error("connection rate from this IP exceeded")]
    IpRateLimited,
    /// The filter's connection table is full ([`LimitsConfig::max_tracked_keys`]).
    #[error("connection table full")]
    TrackingFull,
}

impl FilterReason {
    /// A stable code for audit records and metrics labels (`denied_ip`, `banned`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DeniedIp => "denied_ip",
            Self::NotAllowedIp => "not_allowed_ip",
            Self::DeniedPeer => "denied_peer",
            Self::NotAllowedPeer => "not_allowed_peer",
            Self::Banned => "banned",
            Self::IpConnectionCap => "ip_connection_cap",
            Self::IpRateLimited => "ip_rate_limited",
            Self::TrackingFull => "tracking_full",
        }
    }
}

/// Events of [`ConnectionFilter`], for audit and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterEvent {
    /// A connection was refused.
    Refused {
        /// The remote peer, once known (`None` before the handshake).
        peer: Option<PeerId>,
        /// The refused connection.
        connection: ConnectionId,
        /// The remote address (for an outbound dial, the first address to be dialed, or empty).
        addr: Multiaddr,
        /// Why.
        reason: FilterReason,
    },
}

/// What a ban applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanTarget {
    /// A peer id.
    Peer(PeerId),
    /// An IPv4 address or an IPv6 /64 network (see [`limit_key`]).
    Ip(IpAddr),
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(peer) => write!(f, "peer {peer}"),
            Self::Ip(ip) => write!(f, "ip {ip}"),
        }
    }
}

/// An established connection that current rules or bans would refuse; its owner should close it
/// (`Swarm::close_connection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedConnection {
    /// The remote peer.
    pub peer: PeerId,
    /// The connection.
    pub connection: ConnectionId,
    /// Its remote address.
    pub remote_addr: Multiaddr,
    /// Why it would be refused now.
    pub reason: FilterReason,
}

/// The number of entries in each rule list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounts {
    /// `deny_peers`.
    pub deny_peers: usize,
    /// `allow_peers`.
    pub allow_peers: usize,
    /// `deny_ips`.
    pub deny_ips: usize,
    /// `allow_ips`.
    pub allow_ips: usize,
    /// `unlimited_ips`.
    pub unlimited_ips: usize,
}

/// Kind of a [`BanStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanKind {
    /// A peer id.
    Peer,
    /// An IP (IPv6: a /64).
    Ip,
}

/// One active ban in [`FilterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanStatus {
    /// Peer or IP.
    pub kind: BanKind,
    /// The peer id or IP address.
    pub target: String,
    /// Milliseconds until the ban ends.
    pub expires_in_ms: u64,
}

/// Established inbound connections from one IP key in [`FilterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpStatus {
    /// The IPv4 address or IPv6 /64 network address.
    pub ip: String,
    /// Established inbound connections from it.
    pub connections: u32,
}

/// A snapshot of the filter for `node status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterStatus {
    /// Entries per rule list.
    pub rules: RuleCounts,
    /// Active bans, soonest to end first, at most [`STATUS_MAX_ENTRIES`].
    pub bans: Vec<BanStatus>,
    /// Active bans in total.
    pub active_bans: usize,
    /// Established connections tracked (both directions).
    pub tracked_connections: usize,
    /// IPs with established inbound connections, most connections first, at most
    /// [`STATUS_MAX_ENTRIES`].
    pub tracked_ips: Vec<IpStatus>,
    /// IPs with established inbound connections in total.
    pub tracked_ips_total: usize,
    /// IPs tracked by the connection-rate limiter.
    pub rate_limited_ips: usize,
    /// Peers and IPs with failure records or bans.
    pub failure_records: usize,
    /// Refusal events dropped because the queue was full.
    pub dropped_events: u64,
}

// ---------------------------------------------------------------------------------------------
// The behaviour
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Tracked {
    peer: PeerId,
    remote: Multiaddr,
    /// The [`limit_key`] of the remote IP, for inbound connections with an IP.
    inbound_key: Option<IpAddr>,
    inbound: bool,
}

/// A [`NetworkBehaviour`] that refuses connections by operator rules, per-IP caps and rates, and
/// bans. It has no protocol of its own ([`dummy::ConnectionHandler`]); put it first in a derived
/// behaviour so refused connections reach nothing else. See the [module documentation](self).
///
/// The swarm hooks read the clock once (`Instant::now()`) and hand it to the same logic the owner
/// methods use, which take `now` explicitly where it matters.
pub struct ConnectionFilter {
    rules: FilterRules,
    connections_per_ip: u32,
    max_tracked: usize,
    peer_bans: BanList<PeerId>,
    ip_bans: BanList<IpAddr>,
    ip_rate: KeyedLimiter<IpAddr>,
    /// Established connections, at most `max_tracked`.
    connections: HashMap<ConnectionId, Tracked>,
    /// Established inbound connections per [`limit_key`]; at most one key per connection.
    inbound_per_ip: HashMap<IpAddr, u32>,
    /// At most [`MAX_QUEUED_EVENTS`].
    events: VecDeque<FilterEvent>,
    dropped_events: u64,
    waker: Option<Waker>,
}

impl fmt::Debug for ConnectionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionFilter")
            .field("rules", &self.rules.counts())
            .field("connections", &self.connections.len())
            .field("ip_bans", &self.ip_bans.len())
            .field("peer_bans", &self.peer_bans.len())
            .finish_non_exhaustive()
    }
}

impl ConnectionFilter {
    /// A filter enforcing `rules` and the connection and ban limits of `limits` (validate it
    /// first with [`LimitsConfig::validate`]; a zero `connections_per_ip` refuses every inbound
    /// connection).
    pub fn new(rules: FilterRules, limits: &LimitsConfig) -> Self {
        let max_tracked = limits.max_tracked_keys.max(1);
        Self {
            rules,
            connections_per_ip: limits.connections_per_ip,
            max_tracked,
            peer_bans: BanList::new(limits.ban_policy()),
            ip_bans: BanList::new(limits.ban_policy()),
            ip_rate: KeyedLimiter::new(limits.connection_rate_per_ip, max_tracked),
            connections: HashMap::new(),
            inbound_per_ip: HashMap::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            waker: None,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &FilterRules {
        &self.rules
    }

    /// Replaces the rules (hot reload). They apply to every connection from now on; the returned
    /// list holds the established connections the new rules refuse, which the owner should close.
    pub fn set_rules(&mut self, rules: FilterRules) -> Vec<RefusedConnection> {
        self.rules = rules;
        self.collect_refused(|tracked| self.rules_verdict(tracked))
    }

    /// Bans `peer` until `until` (replacing any ban it had; an `until` in the past lifts it).
    /// Returns its established connections, which the owner should close.
    pub fn ban_peer(&mut self, peer: PeerId, until: Instant) -> Vec<RefusedConnection> {
        self.peer_bans.ban(&peer, until, Instant::now());
        self.collect_refused(|t| (t.peer == peer).then_some(FilterReason::Banned))
    }

    /// Bans inbound connections from `ip` until `until` (for IPv6, from its whole /64; see
    /// [`limit_key`]). Returns the established inbound connections from it, which the owner
    /// should close.
    pub fn ban_ip(&mut self, ip: IpAddr, until: Instant) -> Vec<RefusedConnection> {
        let key = limit_key(ip);
        self.ip_bans.ban(&key, until, Instant::now());
        self.collect_refused(|t| (t.inbound_key == Some(key)).then_some(FilterReason::Banned))
    }

    /// Lifts `peer`'s ban; returns whether it had one.
    pub fn unban_peer(&mut self, peer: &PeerId) -> bool {
        self.peer_bans.unban(peer)
    }

    /// Lifts the ban of `ip` (for IPv6, of its /64); returns whether it had one.
    pub fn unban_ip(&mut self, ip: IpAddr) -> bool {
        self.ip_bans.unban(&limit_key(ip))
    }

    /// Records a failed authentication (e.g. a membership presentation refused) by `peer` from
    /// `ip`, and returns the bans it triggered ([`LimitsConfig::ban_threshold`] failures within
    /// [`LimitsConfig::ban_window`] ban for [`LimitsConfig::ban_duration`]). IPs in
    /// `unlimited_ips` are never banned automatically. New connections of a banned target are
    /// refused; close its existing ones (see [`ConnectionFilter::refused_connections`]).
    pub fn record_auth_failure(
        &mut self,
        peer: PeerId,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Vec<BanApplied<BanTarget>> {
        let mut applied = Vec::new();
        if let Some(ban) = self.peer_bans.record_failure(&peer, now) {
            applied.push(BanApplied {
                key: BanTarget::Peer(ban.key),
                until: ban.until,
            });
        }
        if let Some(ip) = ip.filter(|ip| !self.rules.is_unlimited(*ip))
            && let Some(ban) = self.ip_bans.record_failure(&limit_key(ip), now)
        {
            applied.push(BanApplied {
                key: BanTarget::Ip(ban.key),
                until: ban.until,
            });
        }
        for ban in &applied {
            match ban.key {
                BanTarget::Peer(peer) => {
                    tracing::info!(%peer, "peer banned after repeated authentication failures");
                }
                BanTarget::Ip(ip) => {
                    tracing::info!(%ip, "IP banned after repeated authentication failures");
                }
            }
        }
        applied
    }

    /// The remote IP of an established connection, if it has one.
    pub fn remote_ip(&self, connection: ConnectionId) -> Option<IpAddr> {
        self.connections
            .get(&connection)
            .and_then(|t| ip_of(&t.remote))
    }

    /// Whether `target` is banned at `now`, and until when.
    pub fn is_banned(&self, target: BanTarget, now: Instant) -> Option<Instant> {
        match target {
            BanTarget::Peer(peer) => self.peer_bans.is_banned(&peer, now),
            BanTarget::Ip(ip) => self.ip_bans.is_banned(&limit_key(ip), now),
        }
    }

    /// Removes bans that ended by `now` and returns their targets (to audit `ban_lifted`); also
    /// forgets idle rate-limiter entries and aged-out failure records. Call it periodically.
    pub fn lift_expired(&mut self, now: Instant) -> Vec<BanTarget> {
        self.ip_rate.prune_idle(now);
        let peers = self.peer_bans.lift_expired(now);
        let ips = self.ip_bans.lift_expired(now);
        peers
            .into_iter()
            .map(BanTarget::Peer)
            .chain(ips.into_iter().map(BanTarget::Ip))
            .collect()
    }

    /// Every established connection that the current rules or bans in force at `now` would
    /// refuse (e.g. after [`ConnectionFilter::record_auth_failure`] applied a ban).
    pub fn refused_connections(&self, now: Instant) -> Vec<RefusedConnection> {
        self.collect_refused(|tracked| {
            self.rules_verdict(tracked).or_else(|| {
                let peer_banned = self.peer_bans.is_banned(&tracked.peer, now).is_some();
                let ip_banned = tracked
                    .inbound_key
                    .is_some_and(|key| self.ip_bans.is_banned(&key, now).is_some());
                (peer_banned || ip_banned).then_some(FilterReason::Banned)
            })
        })
    }

    /// A snapshot for status output.
    pub fn status(&self) -> FilterStatus {
        self.status_at(Instant::now())
    }

    /// A snapshot for status output, with ban expiries relative to `now`.
    pub fn status_at(&self, now: Instant) -> FilterStatus {
        let remaining = |until: Instant| {
            u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        };
        let mut bans: Vec<(Instant, BanStatus)> = self
            .peer_bans
            .bans()
            .filter(|(_, until)| now < *until)
            .map(|(peer, until)| {
                (
                    until,
                    BanStatus {
                        kind: BanKind::Peer,
                        target: peer.to_string(),
                        expires_in_ms: remaining(until),
                    },
                )
            })
            .chain(
                self.ip_bans
                    .bans()
                    .filter(|(_, until)| now < *until)
                    .map(|(ip, until)| {
                        (
                            until,
                            BanStatus {
                                kind: BanKind::Ip,
                                target: ip.to_string(),
                                expires_in_ms: remaining(until),
                            },
                        )
                    }),
            )
            .collect();
        bans.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.target.cmp(&b.1.target)));
        let active_bans = bans.len();
        let mut ips: Vec<IpStatus> = self
            .inbound_per_ip
            .iter()
            .map(|(ip, n)| IpStatus {
                ip: ip.to_string(),
                connections: *n,
            })
            .collect();
        ips.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| a.ip.cmp(&b.ip))
        });
        ips.truncate(STATUS_MAX_ENTRIES);
        FilterStatus {
            rules: self.rules.counts(),
            bans: bans
                .into_iter()
                .take(STATUS_MAX_ENTRIES)
                .map(|(_, b)| b)
                .collect(),
            active_bans,
            tracked_connections: self.connections.len(),
            tracked_ips: ips,
            tracked_ips_total: self.inbound_per_ip.len(),
            rate_limited_ips: self.ip_rate.len(),
            failure_records: self.peer_bans.len() + self.ip_bans.len(),
            dropped_events: self.dropped_events,
        }
    }

    // --- pure checks, handed `now` ---

    fn rules_verdict(&self, tracked: &Tracked) -> Option<FilterReason> {
        self.rules.check_peer(&tracked.peer).err().or_else(|| {
            if tracked.inbound {
                self.rules.check_ip(ip_of(&tracked.remote)).err()
            } else {
                None
            }
        })
    }

    fn collect_refused(
        &self,
        verdict: impl Fn(&Tracked) -> Option<FilterReason>,
    ) -> Vec<RefusedConnection> {
        self.connections
            .iter()
            .filter_map(|(id, tracked)| {
                verdict(tracked).map(|reason| RefusedConnection {
                    peer: tracked.peer,
                    connection: *id,
                    remote_addr: tracked.remote.clone(),
                    reason,
                })
            })
            .collect()
    }

    /// IP checks without the rate limiter: rules, ban, cap.
    fn check_ip_admission(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), FilterReason> {
        self.rules.check_ip(ip)?;
        let Some(ip) = ip else {
            return Ok(());
        };
        let key = limit_key(ip);
        if self.ip_bans.is_banned(&key, now).is_some() {
            return Err(FilterReason::Banned);
        }
        if !self.rules.is_unlimited(ip)
            && self.inbound_per_ip.get(&key).copied().unwrap_or(0) >= self.connections_per_ip
        {
            return Err(FilterReason::IpConnectionCap);
        }
        Ok(())
    }

    fn check_pending_inbound(
        &mut self,
        remote: &Multiaddr,
        now: Instant,
    ) -> Result<(), FilterReason> {
        let ip = ip_of(remote);
        self.check_ip_admission(ip, now)?;
        if let Some(ip) = ip.filter(|ip| !self.rules.is_unlimited(*ip)) {
            self.ip_rate
                .check(&limit_key(ip), now)
                .map_err(|_| FilterReason::IpRateLimited)?;
        }
        Ok(())
    }

    fn check_peer_admission(&self, peer: &PeerId, now: Instant) -> Result<(), FilterReason> {
        self.rules.check_peer(peer)?;
        if self.peer_bans.is_banned(peer, now).is_some() {
            return Err(FilterReason::Banned);
        }
        Ok(())
    }

    fn check_established(
        &self,
        peer: &PeerId,
        inbound_remote: Option<&Multiaddr>,
        now: Instant,
    ) -> Result<(), FilterReason> {
        if let Some(remote) = inbound_remote {
            self.check_ip_admission(ip_of(remote), now)?;
        }
        self.check_peer_admission(peer, now)?;
        if self.connections.len() >= self.max_tracked {
            return Err(FilterReason::TrackingFull);
        }
        Ok(())
    }

    fn refuse(
        &mut self,
        peer: Option<PeerId>,
        connection: ConnectionId,
        addr: Multiaddr,
        reason: FilterReason,
    ) -> ConnectionDenied {
        tracing::debug!(
            peer = ?peer,
            %connection,
            %addr,
            reason = reason.as_str(),
            "connection refused by filter"
        );
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(FilterEvent::Refused {
            peer,
            connection,
            addr,
            reason,
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        ConnectionDenied::new(reason)
    }

    fn track(&mut self, connection: ConnectionId, peer: PeerId, endpoint: &ConnectedPoint) {
        let inbound = endpoint.is_listener();
        let remote = endpoint.get_remote_address().clone();
        let inbound_key = if inbound {
            ip_of(&remote).map(limit_key)
        } else {
            None
        };
        if let Some(key) = inbound_key {
            *self.inbound_per_ip.entry(key).or_insert(0) += 1;
        }
        if let Some(old) = self.connections.insert(
            connection,
            Tracked {
                peer,
                remote,
                inbound_key,
                inbound,
            },
        ) {
            // Not expected (ids are unique); keep the counters exact anyway.
            self.release_ip(old.inbound_key);
        }
    }

    fn untrack(&mut self, connection: ConnectionId) {
        if let Some(old) = self.connections.remove(&connection) {
            self.release_ip(old.inbound_key);
        }
    }

    fn release_ip(&mut self, key: Option<IpAddr>) {
        let Some(key) = key else { return };
        if let Some(n) = self.inbound_per_ip.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_ip.remove(&key);
            }
        }
    }
}

impl NetworkBehaviour for ConnectionFilter {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = FilterEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let now = Instant::now();
        self.check_pending_inbound(remote_addr, now)
            .map_err(|reason| self.refuse(None, connection_id, remote_addr.clone(), reason))
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let now = Instant::now();
        self.check_established(&peer, Some(remote_addr), now)
            .map_err(|reason| {
                self.refuse(Some(peer), connection_id, remote_addr.clone(), reason)
            })?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer {
            let now = Instant::now();
            if let Err(reason) = self.check_peer_admission(&peer, now) {
                let addr = addresses.first().cloned().unwrap_or_else(Multiaddr::empty);
                return Err(self.refuse(Some(peer), connection_id, addr, reason));
            }
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let now = Instant::now();
        self.check_established(&peer, None, now)
            .map_err(|reason| self.refuse(Some(peer), connection_id, addr.clone(), reason))?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Tracked here, not in `handle_established_*`: a later behaviour of a composition may
            // still deny the connection, and no `ConnectionClosed` follows then.
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => self.track(connection_id, peer_id, endpoint),
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.untrack(connection_id);
            }
            FromSwarm::AddressChange(AddressChange {
                peer_id,
                connection_id,
                new,
                ..
            }) if self.connections.contains_key(&connection_id) => {
                self.untrack(connection_id);
                self.track(connection_id, peer_id, new);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::Rate;

    const SEC: Duration = Duration::from_secs(1);

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // --- CIDR ---

    #[test]
    fn cidr_parses_hosts_and_networks() {
        assert_eq!(
            net("192.168.1.7"),
            IpNet::new(ip("192.168.1.7"), 32).unwrap()
        );
        assert_eq!(net("::1"), IpNet::new(ip("::1"), 128).unwrap());
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(net("::1/128").prefix_len(), 128);
        assert_eq!(net("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(net("::/0").prefix_len(), 0);
    }

    #[test]
    fn cidr_rejects_malformed_entries() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "010.0.0.1",
            "example.org",
            "10.0.0.0 /8",
            " 10.0.0.1",
        ] {
            assert_eq!(bad.parse::<IpNet>(), Err(CidrError::BadAddress), "{bad:?}");
        }
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "::/1000",
            "::/x",
        ] {
            assert_eq!(bad.parse::<IpNet>(), Err(CidrError::BadPrefix), "{bad:?}");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert_eq!(
            "::/129".parse::<IpNet>(),
            Err(CidrError::PrefixTooLong {
                prefix: 129,
                max: 128
            })
        );
        assert_eq!(
            "10.0.0.0/256".parse::<IpNet>(),
            Err(CidrError::PrefixTooLong {
                prefix: 256,
                max: 32
            })
        );
        let err = "10.1.2.3/8".parse::<IpNet>().unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBitsSet {
                network: net("10.0.0.0/8")
            }
        );
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        assert!("2001:db8::1/64".parse::<IpNet>().is_err());
    }

    #[test]
    fn cidr_edge_prefixes() {
        let all4 = net("0.0.0.0/0");
        assert!(all4.contains(ip("0.0.0.0")) && all4.contains(ip("255.255.255.255")));
        assert!(!all4.contains(ip("::1")));
        let all6 = net("::/0");
        assert!(
            all6.contains(ip("::")) && all6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))
        );
        assert!(
            !all6.contains(ip("10.0.0.1")),
            "IPv6 networks never match IPv4"
        );
        let host4 = net("192.168.1.7/32");
        assert!(host4.contains(ip("192.168.1.7")));
        assert!(!host4.contains(ip("192.168.1.6")) && !host4.contains(ip("192.168.1.8")));
        let host6 = net("::1/128");
        assert!(
            host6.contains(ip("::1")) && !host6.contains(ip("::2")) && !host6.contains(ip("::"))
        );
        let n8 = net("10.0.0.0/8");
        assert!(n8.contains(ip("10.255.255.255")) && !n8.contains(ip("11.0.0.0")));
        let n31 = net("10.0.0.2/31");
        assert!(n31.contains(ip("10.0.0.3")) && !n31.contains(ip("10.0.0.1")));
        let n1 = net("128.0.0.0/1");
        assert!(n1.contains(ip("200.1.1.1")) && !n1.contains(ip("127.255.255.255")));
        let n127 = net("2001:db8::/127");
        assert!(n127.contains(ip("2001:db8::1")) && !n127.contains(ip("2001:db8::2")));
        let n64 = net("2001:db8:1:2::/64");
        assert!(n64.contains(ip("2001:db8:1:2:ffff::1")) && !n64.contains(ip("2001:db8:1:3::")));
    }

    #[test]
    fn cidr_v4_mapped_is_v4() {
        // Mapped rules become IPv4 rules.
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:192.168.1.7"), net("192.168.1.7/32"));
        assert_eq!(net("::ffff:0:0/96"), net("0.0.0.0/0"));
        // Mapped addresses match IPv4 rules.
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("::/0").contains(ip("::ffff:10.1.2.3")));
        assert_eq!(
            ip_of(&"/ip6/::ffff:10.1.2.3/tcp/1".parse().unwrap()),
            Some(ip("10.1.2.3"))
        );
        assert_eq!(limit_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn ip_of_and_limit_key() {
        assert_eq!(
            ip_of(&"/ip4/1.2.3.4/tcp/5".parse().unwrap()),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(ip_of(&"/ip6/::1/tcp/5".parse().unwrap()), Some(ip("::1")));
        assert_eq!(ip_of(&"/dns4/example.org/tcp/5".parse().unwrap()), None);
        assert_eq!(ip_of(&"/memory/5".parse().unwrap()), None);
        assert_eq!(limit_key(ip("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(limit_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    // --- Rules ---

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn rules_parse_from_toml() {
        let (a, b) = (peer(), peer());
        let rules = FilterRules::from_toml_str(&format!(
            r#"
            deny_peers = ["{a}"]
            allow_peers = ["{b}", "{a}"]
            deny_ips = ["10.0.0.0/8", "192.168.1.7", "::1/128", "10.0.0.0/8"]
            allow_ips = []
            unlimited_ips = ["127.0.0.0/8"]
            "#
        ))
        .unwrap();
        assert_eq!(
            rules.counts(),
            RuleCounts {
                deny_peers: 1,
                allow_peers: 2,
                deny_ips: 3,
                allow_ips: 0,
                unlimited_ips: 1
            }
        );
        assert_eq!(
            rules.check_peer(&a),
            Err(FilterReason::DeniedPeer),
            "deny wins"
        );
        assert_eq!(rules.check_peer(&b), Ok(()));
        assert_eq!(rules.check_peer(&peer()), Err(FilterReason::NotAllowedPeer));
        assert_eq!(
            rules.check_ip(Some(ip("10.9.9.9"))),
            Err(FilterReason::DeniedIp)
        );
        assert_eq!(rules.check_ip(Some(ip("::1"))), Err(FilterReason::DeniedIp));
        assert_eq!(rules.check_ip(Some(ip("192.168.1.8"))), Ok(()));
        assert_eq!(rules.check_ip(None), Ok(()));
        assert!(rules.is_unlimited(ip("127.0.0.2")) && !rules.is_unlimited(ip("::1")));
        // Round trip through TOML.
        let text = toml::to_string(&rules).unwrap();
        assert_eq!(FilterRules::from_toml_str(&text).unwrap(), rules);
        // Empty rules pass everything.
        let empty = FilterRules::from_toml_str("").unwrap();
        assert_eq!(empty, FilterRules::default());
        assert_eq!(empty.check_peer(&a), Ok(()));
        assert_eq!(empty.check_ip(None), Ok(()));
    }

    #[test]
    fn rules_allow_lists() {
        let rules = FilterRules::default()
            .with_allow_ip(net("192.168.0.0/16"))
            .with_deny_ip(net("192.168.1.7"));
        assert_eq!(rules.check_ip(Some(ip("192.168.3.3"))), Ok(()));
        assert_eq!(
            rules.check_ip(Some(ip("192.168.1.7"))),
            Err(FilterReason::DeniedIp)
        );
        assert_eq!(
            rules.check_ip(Some(ip("10.0.0.1"))),
            Err(FilterReason::NotAllowedIp)
        );
        assert_eq!(
            rules.check_ip(None),
            Err(FilterReason::NotAllowedIp),
            "fail closed"
        );
    }

    #[test]
    fn rules_errors_name_the_entry() {
        let err =
            FilterRules::from_toml_str(r#"deny_ips = ["10.0.0.0/8", "10.0.0.0/33"]"#).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                FilterRulesError::BadIp {
                    list: "deny_ips",
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("deny_ips") && text.contains("10.0.0.0/33") && text.contains("32"),
            "{text}"
        );

        let err = FilterRules::from_toml_str(r#"allow_peers = ["not-a-peer"]"#).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("allow_peers") && text.contains("not-a-peer"),
            "{text}"
        );

        let err = FilterRules::from_toml_str(r#"deny_ip = ["10.0.0.0/8"]"#).unwrap_err();
        assert!(err.to_string().contains("deny_ip"), "{err}");
        let err = FilterRules::from_toml_str(r#"deny_ips = "10.0.0.0/8""#).unwrap_err();
        assert!(matches!(err, FilterRulesError::Syntax(_)), "{err}");

        let many: Vec<String> = (0..=MAX_RULE_ENTRIES)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256 % 256, i % 256))
            .collect();
        let err =
            FilterRules::from_toml_str(&format!("allow_ips = [{}]", many.join(","))).unwrap_err();
        assert!(
            matches!(
                err,
                FilterRulesError::TooMany {
                    list: "allow_ips",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rules_load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter.toml");
        std::fs::write(&path, "deny_ips = [\"300.1.1.1\"]\n").unwrap();
        let err = FilterRules::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("filter.toml") && text.contains("300.1.1.1"),
            "{text}"
        );
        std::fs::write(&path, "deny_ips = [\"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(FilterRules::load(&path).unwrap().counts().deny_ips, 1);
        let err = FilterRules::load(dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(err, FilterRulesError::Read { .. }), "{err}");
    }

    // --- Behaviour logic with a fake clock ---

    fn limits() -> LimitsConfig {
        LimitsConfig {
            connections_per_ip: 2,
            connection_rate_per_ip: Rate::new(3, 1.0),
            ban_threshold: 2,
            ban_window: 60 * SEC,
            ban_duration: 10 * SEC,
            ..LimitsConfig::default()
        }
    }

    fn addr(ip: &str, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/tcp/{port}").parse().unwrap()
    }

    fn establish_inbound(
        filter: &mut ConnectionFilter,
        id: usize,
        peer: PeerId,
        remote: Multiaddr,
    ) {
        filter.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &ConnectedPoint::Listener {
                local_addr: addr("127.0.0.1", 1),
                send_back_addr: remote,
            },
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    fn close(filter: &mut ConnectionFilter, id: usize, peer: PeerId, remote: Multiaddr) {
        filter.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &ConnectedPoint::Listener {
                local_addr: addr("127.0.0.1", 1),
                send_back_addr: remote,
            },
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn per_ip_cap_counts_established_inbound() {
        let t0 = Instant::now();
        let mut filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let remote = addr("192.0.2.1", 1000);
        for id in 0..2 {
            assert_eq!(filter.check_pending_inbound(&remote, t0), Ok(()));
            establish_inbound(&mut filter, id, peer(), remote.clone());
        }
        assert_eq!(
            filter.check_pending_inbound(&remote, t0),
            Err(FilterReason::IpConnectionCap)
        );
        assert_eq!(
            filter.check_established(&peer(), Some(&remote), t0),
            Err(FilterReason::IpConnectionCap)
        );
        // Another IP is unaffected; an outbound connection is never capped.
        assert_eq!(
            filter.check_pending_inbound(&addr("192.0.2.2", 1), t0),
            Ok(())
        );
        assert_eq!(filter.check_established(&peer(), None, t0), Ok(()));
        close(&mut filter, 0, peer(), remote.clone());
        assert_eq!(filter.check_established(&peer(), Some(&remote), t0), Ok(()));
        assert_eq!(
            filter.status_at(t0).tracked_ips[0],
            IpStatus {
                ip: "192.0.2.1".into(),
                connections: 1
            }
        );
        close(&mut filter, 1, peer(), remote);
        assert!(filter.inbound_per_ip.is_empty() && filter.connections.is_empty());
    }

    #[test]
    fn per_ip_rate_limits_new_connections() {
        let t0 = Instant::now();
        let mut filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let remote = addr("192.0.2.1", 1000);
        for _ in 0..3 {
            assert_eq!(filter.check_pending_inbound(&remote, t0), Ok(()));
        }
        assert_eq!(
            filter.check_pending_inbound(&remote, t0),
            Err(FilterReason::IpRateLimited)
        );
        assert_eq!(filter.check_pending_inbound(&remote, t0 + SEC), Ok(()));
        // IPv6: one bucket per /64.
        let a: Multiaddr = "/ip6/2001:db8::1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip6/2001:db8::ffff/tcp/1".parse().unwrap();
        let c: Multiaddr = "/ip6/2001:db8:0:1::1/tcp/1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(filter.check_pending_inbound(&a, t0), Ok(()));
        }
        assert_eq!(
            filter.check_pending_inbound(&b, t0),
            Err(FilterReason::IpRateLimited)
        );
        assert_eq!(filter.check_pending_inbound(&c, t0), Ok(()));
    }

    #[test]
    fn unlimited_ips_skip_cap_rate_and_auto_ban_but_not_deny() {
        let t0 = Instant::now();
        let rules = FilterRules::default().with_unlimited_ip(net("127.0.0.0/8"));
        let mut filter = ConnectionFilter::new(rules.clone(), &limits());
        let remote = addr("127.0.0.1", 1000);
        for id in 0..10 {
            assert_eq!(filter.check_pending_inbound(&remote, t0), Ok(()));
            establish_inbound(&mut filter, id, peer(), remote.clone());
        }
        let p = peer();
        for _ in 0..5 {
            for ban in filter.record_auth_failure(p, Some(ip("127.0.0.1")), t0) {
                assert_eq!(ban.key, BanTarget::Peer(p));
            }
        }
        assert!(
            filter
                .is_banned(BanTarget::Ip(ip("127.0.0.1")), t0)
                .is_none()
        );
        assert!(filter.is_banned(BanTarget::Peer(p), t0).is_some());
        filter.set_rules(rules.with_deny_ip(net("127.0.0.1")));
        assert_eq!(
            filter.check_pending_inbound(&remote, t0),
            Err(FilterReason::DeniedIp)
        );
    }

    #[test]
    fn auth_failures_ban_peer_and_ip_until_expiry() {
        let t0 = Instant::now();
        let mut filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let (p, remote) = (peer(), addr("192.0.2.9", 4000));
        assert!(
            filter
                .record_auth_failure(p, Some(ip("192.0.2.9")), t0)
                .is_empty()
        );
        let bans = filter.record_auth_failure(p, Some(ip("192.0.2.9")), t0 + SEC);
        let until = t0 + 11 * SEC;
        assert_eq!(
            bans,
            vec![
                BanApplied {
                    key: BanTarget::Peer(p),
                    until
                },
                BanApplied {
                    key: BanTarget::Ip(ip("192.0.2.9")),
                    until
                },
            ]
        );
        assert_eq!(
            filter.check_pending_inbound(&remote, t0 + 2 * SEC),
            Err(FilterReason::Banned)
        );
        assert_eq!(
            filter.check_peer_admission(&p, t0 + 2 * SEC),
            Err(FilterReason::Banned)
        );
        let status = filter.status_at(t0 + SEC);
        assert_eq!(status.active_bans, 2);
        assert!(status.bans.iter().all(|b| b.expires_in_ms == 10_000));
        // Expiry: no longer refused, and lifted exactly once.
        assert_eq!(filter.check_pending_inbound(&remote, until), Ok(()));
        assert_eq!(filter.check_peer_admission(&p, until), Ok(()));
        let mut lifted = filter.lift_expired(until);
        lifted.sort_by_key(|t| matches!(t, BanTarget::Ip(_)));
        assert_eq!(
            lifted,
            vec![BanTarget::Peer(p), BanTarget::Ip(ip("192.0.2.9"))]
        );
        assert!(filter.lift_expired(until).is_empty());
        assert_eq!(filter.status_at(until).active_bans, 0);
    }

    #[test]
    fn manual_bans_and_unban_return_affected_connections() {
        let t0 = Instant::now();
        let mut filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let (p, q) = (peer(), peer());
        establish_inbound(&mut filter, 1, p, addr("192.0.2.1", 1));
        establish_inbound(&mut filter, 2, q, addr("192.0.2.2", 1));
        let refused = filter.ban_peer(p, t0 + 3600 * SEC);
        assert_eq!(refused.len(), 1);
        assert_eq!(
            (refused[0].peer, refused[0].reason),
            (p, FilterReason::Banned)
        );
        let refused = filter.ban_ip(ip("192.0.2.2"), t0 + 3600 * SEC);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].connection, ConnectionId::new_unchecked(2));
        assert_eq!(filter.refused_connections(t0).len(), 2);
        assert!(filter.unban_peer(&p) && filter.unban_ip(ip("192.0.2.2")));
        assert!(!filter.unban_peer(&p));
        assert!(filter.refused_connections(t0).is_empty());
    }

    #[test]
    fn set_rules_reports_connections_the_new_rules_refuse() {
        let mut filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let (p, q, r) = (peer(), peer(), peer());
        establish_inbound(&mut filter, 1, p, addr("10.1.1.1", 1));
        establish_inbound(&mut filter, 2, q, addr("192.0.2.2", 1));
        filter.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: r,
            connection_id: ConnectionId::new_unchecked(3),
            endpoint: &ConnectedPoint::Dialer {
                address: addr("10.2.2.2", 1),
                role_override: Endpoint::Dialer,
                port_use: PortUse::Reuse,
            },
            failed_addresses: &[],
            other_established: 0,
        }));
        let mut refused = filter.set_rules(
            FilterRules::default()
                .with_deny_ip(net("10.0.0.0/8"))
                .with_deny_peer(q),
        );
        refused.sort_by_key(|c| c.connection);
        let got: Vec<_> = refused.iter().map(|c| (c.peer, c.reason)).collect();
        // The outbound connection to 10.2.2.2 is not subject to IP rules.
        assert_eq!(
            got,
            vec![(p, FilterReason::DeniedIp), (q, FilterReason::DeniedPeer)]
        );
        assert!(filter.set_rules(FilterRules::default()).is_empty());
        let allow = filter.set_rules(FilterRules::default().with_allow_peer(p));
        assert_eq!(allow.len(), 2);
        assert!(
            allow
                .iter()
                .all(|c| c.reason == FilterReason::NotAllowedPeer)
        );
    }

    #[test]
    fn connection_table_is_capped() {
        let t0 = Instant::now();
        let mut filter = ConnectionFilter::new(
            FilterRules::default(),
            &LimitsConfig {
                max_tracked_keys: 2,
                connections_per_ip: 100,
                ..limits()
            },
        );
        establish_inbound(&mut filter, 1, peer(), addr("192.0.2.1", 1));
        establish_inbound(&mut filter, 2, peer(), addr("192.0.2.2", 1));
        assert_eq!(
            filter.check_established(&peer(), None, t0),
            Err(FilterReason::TrackingFull)
        );
    }

    #[test]
    fn refusal_events_are_bounded() {
        let mut filter = ConnectionFilter::new(
            FilterRules::default().with_deny_ip(net("0.0.0.0/0")),
            &limits(),
        );
        for i in 0..(MAX_QUEUED_EVENTS + 10) {
            let remote = addr("192.0.2.1", 1);
            let denied = filter
                .handle_pending_inbound_connection(ConnectionId::new_unchecked(i), &remote, &remote)
                .unwrap_err();
            assert_eq!(
                denied.downcast_ref::<FilterReason>(),
                Some(&FilterReason::DeniedIp)
            );
        }
        assert_eq!(filter.events.len(), MAX_QUEUED_EVENTS);
        assert_eq!(filter.status().dropped_events, 10);
        let Some(FilterEvent::Refused {
            connection, peer, ..
        }) = filter.events.front()
        else {
            panic!("no event");
        };
        assert_eq!(
            (*connection, *peer),
            (ConnectionId::new_unchecked(10), None)
        );
    }

    #[test]
    fn status_serializes() {
        let filter = ConnectionFilter::new(FilterRules::default(), &limits());
        let json = serde_json::to_value(filter.status()).unwrap();
        assert_eq!(json["rules"]["deny_ips"], 0);
        assert_eq!(json["bans"], serde_json::json!([]));
        assert_eq!(
            serde_json::to_value(FilterReason::IpConnectionCap).unwrap(),
            "ip_connection_cap"
        );
        assert_eq!(FilterReason::IpConnectionCap.as_str(), "ip_connection_cap");
    }
}
