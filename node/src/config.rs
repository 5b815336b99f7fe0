//! Node configuration: what to join, where to listen, and every limit with its safe default.

use std::path::PathBuf;
use std::time::Duration;

use cordon_membership::SessionConfig;
use cordon_protocol::NetworkName;
use libp2p::Multiaddr;

use cordon_host::clock::Clock;
use cordon_host::descriptor::Descriptor;

/// Default of [`NodeLimits::max_networks`]: networks one process joins or serves at once (one
/// Kademlia each).
pub const MAX_NETWORKS: usize = 4;

/// Bounds on everything the node holds for others. Each has a safe default.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Time a connection may stay open without a verified membership. Default 10 s.
    pub auth_timeout: Duration,
    /// Established connections in total. Default 512.
    pub max_connections: u32,
    /// Established connections per peer. Default 1: memberships are verified per connection
    /// and request-response spreads requests over a peer's connections, so a second connection
    /// (from a simultaneous dial) could carry a presentation meant for the first; the limit
    /// refuses the duplicate at establishment instead.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in the handshake. Default 64.
    pub max_pending_incoming: u32,
    /// Concurrent streams per request-response protocol and connection. Default 16.
    pub max_streams_per_protocol: usize,
    /// Token verifications queued or running at once; more are refused as rate limited.
    /// Default 64.
    pub max_pending_verifications: usize,
    /// Worker threads verifying tokens concurrently. Default 2.
    pub verify_workers: usize,
    /// Timeout of one request-response exchange. Default 10 s.
    pub request_timeout: Duration,
    /// Connections with no open stream are closed after this long. Default 120 s.
    pub idle_timeout: Duration,
    /// How often a node without a token polls its join request, and how often every node
    /// redials bootstrap peers of networks where it has no verified connection. Default 3 s.
    pub poll_interval: Duration,
    /// How often each network's Kademlia looks for more members while lookups keep finding
    /// new ones. Default 5 s.
    pub discovery_interval: Duration,
    /// The interval doubles after each lookup that finds nobody new, up to this. Default 60 s.
    pub max_discovery_interval: Duration,
    /// Addresses kept per peer. Default 8.
    pub max_addrs_per_peer: usize,
    /// Entries kept in the persisted address book. Default 1024.
    pub max_address_book: usize,
    /// Largest Kademlia message. Default 16 KiB.
    pub max_kad_packet_bytes: usize,
    /// Networks one process joins or serves at once. Default 4.
    pub max_networks: usize,
    /// Peers routed per network. Default 5,120 (Kademlia's own table capacity).
    pub max_routes_per_network: usize,
    /// Peers whose dial intent is remembered. Default 4,096.
    pub max_dial_intents: usize,
    /// `node call`s waiting, in flight or retried at once. Default 64.
    pub max_calls_in_flight: usize,
    /// How long a `node call` may take to reach its peer. Default 20 s.
    pub call_timeout: Duration,
    /// Longest wait between join attempts after repeated failures. Default 60 s.
    pub max_join_backoff: Duration,
    /// Seednode: join messages waiting for the join service's answer at once; more are
    /// refused as `rate_limited`. Default 256.
    pub max_pending_joins: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_connections_per_peer: 1,
            max_pending_incoming: 64,
            max_streams_per_protocol: 16,
            max_pending_verifications: 64,
            verify_workers: 2,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(3),
            discovery_interval: Duration::from_secs(5),
            max_discovery_interval: Duration::from_secs(60),
            max_addrs_per_peer: 8,
            max_address_book: 1024,
            max_kad_packet_bytes: 16 * 1024,
            max_networks: MAX_NETWORKS,
            max_routes_per_network: cordon_membership::session::DEFAULT_MAX_ROUTES_PER_NETWORK,
            max_dial_intents: cordon_membership::session::DEFAULT_MAX_DIAL_INTENTS,
            max_calls_in_flight: 64,
            call_timeout: Duration::from_secs(20),
            max_join_backoff: Duration::from_secs(60),
            max_pending_joins: 256,
        }
    }
}

impl NodeLimits {
    /// The session machine's share of the limits.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            auth_timeout: self.auth_timeout,
            max_routes_per_network: self.max_routes_per_network,
            max_dial_intents: self.max_dial_intents,
        }
    }
}

/// Which transport the swarm runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// TCP with nodelay (the daemons).
    #[default]
    Tcp,
    /// libp2p's in-memory transport (`/memory/<port>` addresses), for in-process tests: the
    /// same Noise and Yamux upgrades, no sockets.
    Memory,
}

/// Everything `run` needs besides the identity key.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory (identity, tokens, address book, control socket).
    pub data_dir: PathBuf,
    /// The access list and per-network settings.
    pub descriptor: Descriptor,
    /// Networks to join (a node) or serve (a seednode); each must be in the descriptor.
    pub networks: Vec<NetworkName>,
    /// Addresses to listen on. Default `/ip4/0.0.0.0/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Label sent with join requests (shown to operators).
    pub label: String,
    /// Invite code sent with join requests for `invite` networks.
    pub invite: Option<String>,
    /// Limits.
    pub limits: NodeLimits,
    /// Address of the Prometheus endpoint; `None` (the default) serves no metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// Connection-filter rules file (reloadable with `node reload`); `None`: no allow/deny
    /// rules, loopback exempt from per-IP limits.
    pub filter_file: Option<PathBuf>,
    /// Rate limits, per-IP caps and ban policy.
    pub rate_limits: crate::ratelimit::LimitsConfig,
    /// Datalog policy mapping roles to remote commands; `None`: the default policy.
    pub policy_file: Option<PathBuf>,
    /// The transport. Default TCP; in-process tests use the memory transport.
    pub transport: Transport,
    /// The time source. Default the system clocks.
    pub clock: Clock,
    /// Serve the owner-only control socket in the data directory. Default true; in-process
    /// tests talk to the node through its handle instead.
    pub control_socket: bool,
}

impl NodeConfig {
    /// A configuration with default listen address, label and limits.
    pub fn new(data_dir: PathBuf, descriptor: Descriptor, networks: Vec<NetworkName>) -> Self {
        Self {
            data_dir,
            descriptor,
            networks,
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")],
            label: String::new(),
            invite: None,
            limits: NodeLimits::default(),
            metrics: None,
            filter_file: None,
            rate_limits: crate::ratelimit::LimitsConfig::default(),
            policy_file: None,
            transport: Transport::Tcp,
            clock: Clock::system(),
            control_socket: true,
        }
    }
}
