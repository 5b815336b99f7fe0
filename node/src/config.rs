//! Node configuration: what to join, where to listen, and every limit with its safe default.
//!
//! [`NodeConfig`] is what [`crate::run`] takes. [`DaemonFile`] is the config file both daemons
//! read (`node.toml`; `seednode.toml` adds a `[seednode]` table): every key optional with the
//! default its doc names, unknown keys refused, every limit range-checked, relative paths
//! resolved against the file's directory. Command-line flags override the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_host::audit::AuditConfig;
use cordon_host::config::{ConfigError, Invalid, duration_in_range, in_range, read_toml, resolve};
use cordon_host::control::ControlLimits;
use cordon_membership::{SessionConfig, VerifierConfig};
use cordon_protocol::{Limits, NetworkName};
use libp2p::Multiaddr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use cordon_host::clock::Clock;
use cordon_host::descriptor::Descriptor;

use crate::invite::InviteCode;
use crate::metrics::MetricsServerConfig;
use crate::ratelimit::LimitsConfig;
use crate::rpc::{PolicyConfig, RecordStoreConfig};

/// Default of [`NodeLimits::max_networks`]: networks one process joins or serves at once (one
/// Kademlia each).
pub const MAX_NETWORKS: usize = 4;

/// Bounds on everything the node holds for others (config section `[limits]`). Each has a
/// safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeLimits {
    /// Time a connection may stay open without a verified membership. Default 10 s.
    #[serde(with = "cordon_host::config::duration")]
    pub auth_timeout: Duration,
    /// Established connections in total. Default 512.
    pub max_connections: u32,
    /// Connected peers a node aims to hold at most. Past it, the housekeeping second closes
    /// the least recently used connections it can spare: proven, idle for `request_timeout`,
    /// awaited by no request of ours, and kept neither by us (`keep_per_bucket`) nor by the
    /// peer. A target, not a cap (spared connections may exceed it); `max_connections` is the
    /// cap. Bounds memory per node whatever the size of the network. Default 128.
    pub connection_budget: usize,
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
    /// Of those, most from one source address (IPv4 address, IPv6 /64) at once: presentations
    /// that cannot be decided without signature checks (no cached verdict) from that source
    /// are refused as rate limited past it. Connections we dialed are not counted. Default 8.
    pub verifications_per_address: usize,
    /// Of those, most from one source prefix (IPv4 /24, IPv6 /48) at once. Default 32, so
    /// one prefix never holds more than half the queue.
    pub verifications_per_prefix: usize,
    /// Worker threads verifying tokens concurrently. Default 2.
    pub verify_workers: usize,
    /// Timeout of one request-response exchange. Default 10 s.
    #[serde(with = "cordon_host::config::duration")]
    pub request_timeout: Duration,
    /// Connections with no open stream are closed after this long. Default 120 s.
    #[serde(with = "cordon_host::config::duration")]
    pub idle_timeout: Duration,
    /// Verified connections each network keeps open per bucket of its routing table; every
    /// other connection closes after `idle_timeout` without a stream. A kept connection
    /// exchanges revocation heads every half `idle_timeout`, which keeps it open on both ends
    /// and heals a lost revocation push. `0` keeps none. Default 2.
    pub keep_per_bucket: usize,
    /// How often each connection is pinged (round-trip time, and traffic that keeps NAT and
    /// firewall state of a quiet connection; a ping does not keep a connection open, and a failed
    /// one closes nothing). Each ping wakes both ends of every connection, so at a few hundred
    /// connections per process it is a large part of the idle cost. Default 60 s.
    #[serde(with = "cordon_host::config::duration")]
    pub ping_interval: Duration,
    /// How often a node without a token polls its join request, and how often every node
    /// redials bootstrap peers of networks where it has no verified connection. Default 3 s.
    #[serde(with = "cordon_host::config::duration")]
    pub poll_interval: Duration,
    /// How often each network's Kademlia looks for more members while lookups keep finding
    /// new ones. Default 5 s.
    #[serde(with = "cordon_host::config::duration")]
    pub discovery_interval: Duration,
    /// The interval doubles after each lookup that finds nobody new, up to this. Default 60 s.
    #[serde(with = "cordon_host::config::duration")]
    pub max_discovery_interval: Duration,
    /// Addresses kept per peer. Default 8.
    pub max_addrs_per_peer: usize,
    /// Entries kept in the persisted address book. Default 1024.
    pub max_address_book: usize,
    /// Largest Kademlia message. Default 16 KiB.
    pub max_kad_packet_bytes: usize,
    /// Entries per Kademlia bucket (`k`), per network. A proven member that does not fit a full
    /// bucket stays a member (served, answered, swept on revocation) but is not in the table;
    /// lookups find it through the members whose tables hold it. Smaller buckets mean a smaller
    /// table and fewer connections kept per node, and lookups of a few more hops. Default 20.
    pub kad_bucket_size: usize,
    /// Members a Kademlia lookup asks at once (`alpha`). Default 3.
    pub kad_parallelism: usize,
    /// How long one Kademlia lookup may run. Default 10 s.
    #[serde(with = "cordon_host::config::duration")]
    pub kad_query_timeout: Duration,
    /// Networks one process joins or serves at once. Default 4.
    pub max_networks: usize,
    /// Peers routed per network. Default 5,120 (Kademlia's own table capacity).
    pub max_routes_per_network: usize,
    /// Peers whose dial intent is remembered. Default 4,096.
    pub max_dial_intents: usize,
    /// `node call`s waiting, in flight or retried at once. Default 64.
    pub max_calls_in_flight: usize,
    /// How long a `node call` may take to reach its peer. Default 20 s.
    #[serde(with = "cordon_host::config::duration")]
    pub call_timeout: Duration,
    /// Longest wait between join attempts after repeated failures. Default 60 s.
    #[serde(with = "cordon_host::config::duration")]
    pub max_join_backoff: Duration,
    /// Seednode: join messages waiting for the join service's answer at once; more are
    /// refused as `rate_limited`. Default 256.
    pub max_pending_joins: usize,
    /// Live revocation entries kept per signer of a network; a head whose set is larger is
    /// refused. Default 100000 (about 4 MB of state).
    pub max_revocations_per_signer: usize,
    /// Revocation requests (syncs, pushes, announces) in flight at once; more are not sent,
    /// and the next connection or announce repeats them. Default 1024.
    pub max_revocation_requests: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(10),
            max_connections: 512,
            connection_budget: 128,
            max_connections_per_peer: 1,
            max_pending_incoming: 64,
            max_streams_per_protocol: 16,
            max_pending_verifications: 64,
            verifications_per_address: 8,
            verifications_per_prefix: 32,
            verify_workers: 2,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(60),
            keep_per_bucket: 2,
            poll_interval: Duration::from_secs(3),
            discovery_interval: Duration::from_secs(5),
            max_discovery_interval: Duration::from_secs(60),
            max_addrs_per_peer: 8,
            max_address_book: 1024,
            max_kad_packet_bytes: 16 * 1024,
            kad_bucket_size: 20,
            kad_parallelism: 3,
            kad_query_timeout: Duration::from_secs(10),
            max_networks: MAX_NETWORKS,
            max_routes_per_network: cordon_membership::session::DEFAULT_MAX_ROUTES_PER_NETWORK,
            max_dial_intents: cordon_membership::session::DEFAULT_MAX_DIAL_INTENTS,
            max_calls_in_flight: 64,
            call_timeout: Duration::from_secs(20),
            max_join_backoff: Duration::from_secs(60),
            max_pending_joins: 256,
            max_revocations_per_signer: 100_000,
            max_revocation_requests: 1024,
        }
    }
}

impl NodeLimits {
    /// Checks every bound is usable: nothing disabled, nothing unbounded.
    pub fn validate(&self) -> Result<(), Invalid> {
        let secs = Duration::from_secs;
        let millis = Duration::from_millis;
        duration_in_range("auth_timeout", self.auth_timeout, secs(1), secs(3600))?;
        in_range("max_connections", self.max_connections, 1, 1_000_000)?;
        in_range("connection_budget", self.connection_budget, 1, 1_000_000)?;
        in_range(
            "max_connections_per_peer",
            self.max_connections_per_peer,
            1,
            16,
        )?;
        in_range(
            "max_pending_incoming",
            self.max_pending_incoming,
            1,
            100_000,
        )?;
        in_range(
            "max_streams_per_protocol",
            self.max_streams_per_protocol,
            1,
            1024,
        )?;
        in_range(
            "max_pending_verifications",
            self.max_pending_verifications,
            1,
            100_000,
        )?;
        in_range(
            "verifications_per_prefix",
            self.verifications_per_prefix,
            1,
            self.max_pending_verifications,
        )?;
        in_range(
            "verifications_per_address",
            self.verifications_per_address,
            1,
            self.verifications_per_prefix,
        )?;
        in_range("verify_workers", self.verify_workers, 1, 256)?;
        duration_in_range("request_timeout", self.request_timeout, secs(1), secs(600))?;
        duration_in_range("idle_timeout", self.idle_timeout, secs(1), secs(86_400))?;
        duration_in_range("ping_interval", self.ping_interval, secs(1), secs(3600))?;
        in_range("keep_per_bucket", self.keep_per_bucket, 0, 256)?;
        duration_in_range("poll_interval", self.poll_interval, millis(100), secs(3600))?;
        duration_in_range(
            "discovery_interval",
            self.discovery_interval,
            millis(100),
            secs(3600),
        )?;
        duration_in_range(
            "max_discovery_interval",
            self.max_discovery_interval,
            self.discovery_interval,
            secs(86_400),
        )?;
        in_range("max_addrs_per_peer", self.max_addrs_per_peer, 1, 64)?;
        in_range("max_address_book", self.max_address_book, 1, 1_000_000)?;
        in_range(
            "max_kad_packet_bytes",
            self.max_kad_packet_bytes,
            1024,
            16 << 20,
        )?;
        in_range("kad_bucket_size", self.kad_bucket_size, 1, 256)?;
        in_range("kad_parallelism", self.kad_parallelism, 1, 32)?;
        duration_in_range(
            "kad_query_timeout",
            self.kad_query_timeout,
            secs(1),
            secs(600),
        )?;
        in_range("max_networks", self.max_networks, 1, 64)?;
        in_range(
            "max_routes_per_network",
            self.max_routes_per_network,
            1,
            1_000_000,
        )?;
        in_range("max_dial_intents", self.max_dial_intents, 1, 1_000_000)?;
        in_range("max_calls_in_flight", self.max_calls_in_flight, 1, 100_000)?;
        duration_in_range("call_timeout", self.call_timeout, secs(1), secs(600))?;
        duration_in_range(
            "max_join_backoff",
            self.max_join_backoff,
            self.poll_interval,
            secs(86_400),
        )?;
        in_range("max_pending_joins", self.max_pending_joins, 1, 100_000)?;
        in_range(
            "max_revocations_per_signer",
            self.max_revocations_per_signer,
            16,
            10_000_000,
        )?;
        in_range(
            "max_revocation_requests",
            self.max_revocation_requests,
            16,
            100_000,
        )
    }

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
    /// The file `descriptor` was read from, re-read by `node reload`; `None` when it was handed
    /// over in memory (in-process tests).
    pub descriptor_file: Option<PathBuf>,
    /// Networks to join (a node) or serve (a seednode); each must be in the descriptor.
    pub networks: Vec<NetworkName>,
    /// Addresses to listen on. Default `/ip4/0.0.0.0/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Label sent with join requests (shown to operators).
    pub label: String,
    /// Invite codes by network, each sent only to its network's seednodes with the first
    /// join request (never with a renewal).
    pub invites: BTreeMap<NetworkName, InviteCode>,
    /// Limits.
    pub limits: NodeLimits,
    /// Address of the Prometheus endpoint; `None` (the default) serves no metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// The metrics endpoint's bounds.
    pub metrics_server: MetricsServerConfig,
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
    /// Token verification limits.
    pub verifier: VerifierConfig,
    /// Message size bounds.
    pub protocol: Limits,
    /// Audit-log size and rotation.
    pub audit: AuditConfig,
    /// Record-store bounds.
    pub records: RecordStoreConfig,
    /// Authorization-policy evaluation limits.
    pub authorization: PolicyConfig,
    /// Control-socket bounds.
    pub control: ControlLimits,
}

impl NodeConfig {
    /// A configuration with default listen address, label and limits.
    pub fn new(data_dir: PathBuf, descriptor: Descriptor, networks: Vec<NetworkName>) -> Self {
        Self {
            data_dir,
            descriptor,
            descriptor_file: None,
            networks,
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")],
            label: String::new(),
            invites: BTreeMap::new(),
            limits: NodeLimits::default(),
            metrics: None,
            metrics_server: MetricsServerConfig::default(),
            filter_file: None,
            rate_limits: crate::ratelimit::LimitsConfig::default(),
            policy_file: None,
            transport: Transport::Tcp,
            clock: Clock::system(),
            control_socket: true,
            verifier: VerifierConfig::default(),
            protocol: Limits::default(),
            audit: AuditConfig::default(),
            records: RecordStoreConfig::default(),
            authorization: PolicyConfig::default(),
            control: ControlLimits::default(),
        }
    }
}

/// Token verification limits (config section `[verifier]`): the datalog limits and the token
/// size cap the verifier applies to every presented token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierLimits {
    /// Largest token accepted, in bytes. Default 4096.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on expiry and issue times. Default 60 s.
    #[serde(with = "cordon_host::config::duration")]
    pub clock_skew: Duration,
    /// Datalog: most facts. Default 64.
    pub max_facts: u64,
    /// Datalog: most iterations. Default 8.
    pub max_iterations: u64,
    /// Datalog: longest evaluation. Default 10 ms.
    #[serde(with = "cordon_host::config::duration")]
    pub max_datalog_time: Duration,
    /// Verdicts kept in the cache. Default 4096.
    pub cache_capacity: usize,
    /// Delegations kept verified. Default 64; 0 verifies every token in full.
    pub delegation_cache: usize,
}

impl Default for VerifierLimits {
    fn default() -> Self {
        Self::from(&VerifierConfig::default())
    }
}

impl From<&VerifierConfig> for VerifierLimits {
    fn from(c: &VerifierConfig) -> Self {
        Self {
            max_token_bytes: c.max_token_bytes,
            clock_skew: c.clock_skew,
            max_facts: c.max_facts,
            max_iterations: c.max_iterations,
            max_datalog_time: c.max_datalog_time,
            cache_capacity: c.cache_capacity,
            delegation_cache: c.delegation_cache,
        }
    }
}

impl From<&VerifierLimits> for VerifierConfig {
    fn from(l: &VerifierLimits) -> Self {
        Self {
            max_token_bytes: l.max_token_bytes,
            clock_skew: l.clock_skew,
            max_facts: l.max_facts,
            max_iterations: l.max_iterations,
            max_datalog_time: l.max_datalog_time,
            cache_capacity: l.cache_capacity,
            delegation_cache: l.delegation_cache,
        }
    }
}

impl VerifierLimits {
    /// Checks the limits: a token of 512 B to 64 KiB, a skew up to 1 h, 16 to 10,000 facts
    /// (a membership needs about 20), 1 to 100 iterations, 1 ms to 1 s, a cache up to 10^6,
    /// up to 65,536 known delegations.
    pub fn validate(&self) -> Result<(), Invalid> {
        in_range("max_token_bytes", self.max_token_bytes, 512, 65_536)?;
        duration_in_range(
            "clock_skew",
            self.clock_skew,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
        in_range("max_facts", self.max_facts, 16, 10_000)?;
        in_range("max_iterations", self.max_iterations, 1, 100)?;
        duration_in_range(
            "max_datalog_time",
            self.max_datalog_time,
            Duration::from_millis(1),
            Duration::from_secs(1),
        )?;
        in_range("cache_capacity", self.cache_capacity, 0, 1_000_000)?;
        in_range("delegation_cache", self.delegation_cache, 0, 65_536)
    }
}

/// A config file's daemon-specific table. A node has none: [`NoSeednode`] refuses a
/// `[seednode]` table; the seednode supplies its own.
pub trait Section: DeserializeOwned + Default + Clone {
    /// Checks the table's values (keys relative to the table).
    fn validate(&self) -> Result<(), Invalid>;
    /// Makes the table's relative paths relative to the config file's directory.
    fn resolve_paths(&mut self, file: &Path);
    /// Whether the table does not exist for this daemon (not written out).
    fn absent(&self) -> bool {
        false
    }
}

/// The `[seednode]` table of a plain node's config: there is none, and one is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoSeednode;

impl<'de> Deserialize<'de> for NoSeednode {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a [seednode] table belongs in a seednode's config file, not a node's",
        ))
    }
}

impl Section for NoSeednode {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
    fn resolve_paths(&mut self, _: &Path) {}
    fn absent(&self) -> bool {
        true
    }
}

/// A daemon's config file: `node.toml` (`S` = [`NoSeednode`]) or `seednode.toml` (with its
/// `[seednode]` table). Every key is optional; what the command line does not give, the file
/// does, and what neither gives is the default named on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    bound(serialize = "S: Section + Serialize", deserialize = "S: Section")
)]
pub struct DaemonFile<S> {
    /// The data directory (`node init --data`). Required here or as `--data`.
    pub data: Option<PathBuf>,
    /// The network descriptor file. Required here or as `--networks`.
    pub descriptor: Option<PathBuf>,
    /// Networks to join. A node needs at least one (here or `--network`); a seednode serves
    /// the networks of its delegations.
    pub networks: Vec<NetworkName>,
    /// Addresses to listen on. Default `["/ip4/0.0.0.0/tcp/0"]`.
    pub listen: Vec<String>,
    /// Label sent with join requests. Default: `node-` and the end of the PeerId.
    pub label: String,
    /// `[invites]`: invite codes by network (`mainnet = "CODE"`), each sent only to that
    /// network's seednodes with the first join request. Default none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub invites: BTreeMap<NetworkName, InviteCode>,
    /// `[invite_files]`: files holding an invite code, by network (`mainnet = "PATH"`; the
    /// file must be private to its owner). Default none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub invite_files: BTreeMap<NetworkName, PathBuf>,
    /// Prometheus endpoint, e.g. `"127.0.0.1:9464"`. Default: no metrics.
    pub metrics: Option<SocketAddr>,
    /// Connection-filter rules file, re-read by `node reload`. Default: no rules; loopback
    /// exempt from the per-IP limits.
    pub filter: Option<PathBuf>,
    /// Datalog policy mapping roles to remote commands. Default: the built-in policy.
    pub policy: Option<PathBuf>,
    /// `[limits]`: connections, sessions, verification, discovery, calls.
    pub limits: NodeLimits,
    /// `[rate_limits]`: remote-command rates, per-IP caps and rates, bans.
    pub rate_limits: LimitsConfig,
    /// `[verifier]`: token size and datalog limits.
    pub verifier: VerifierLimits,
    /// `[protocol]`: message size bounds (both sides of a connection should agree).
    pub protocol: Limits,
    /// `[audit]`: audit-log size and rotation.
    pub audit: AuditConfig,
    /// `[records]`: the record store's bounds.
    pub records: RecordStoreConfig,
    /// `[authorization]`: the policy's evaluation limits.
    pub authorization: PolicyConfig,
    /// `[control]`: the control socket's bounds.
    pub control: ControlLimits,
    /// `[metrics_server]`: the metrics endpoint's bounds.
    pub metrics_server: MetricsServerConfig,
    /// `[seednode]`: a seednode's own settings.
    #[serde(skip_serializing_if = "Section::absent")]
    pub seednode: S,
}

impl<S: Default> Default for DaemonFile<S> {
    fn default() -> Self {
        Self {
            data: None,
            descriptor: None,
            networks: Vec::new(),
            listen: vec!["/ip4/0.0.0.0/tcp/0".to_owned()],
            label: String::new(),
            invites: BTreeMap::new(),
            invite_files: BTreeMap::new(),
            metrics: None,
            filter: None,
            policy: None,
            limits: NodeLimits::default(),
            rate_limits: LimitsConfig::default(),
            verifier: VerifierLimits::default(),
            protocol: Limits::default(),
            audit: AuditConfig::default(),
            records: RecordStoreConfig::default(),
            authorization: PolicyConfig::default(),
            control: ControlLimits::default(),
            metrics_server: MetricsServerConfig::default(),
            seednode: S::default(),
        }
    }
}

/// The node's config file.
pub type NodeFile = DaemonFile<NoSeednode>;

impl<S: Section> DaemonFile<S> {
    /// Reads `path`, resolves its relative paths against its directory and checks every value.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut file: Self = read_toml(path)?;
        for p in [
            &mut file.data,
            &mut file.descriptor,
            &mut file.filter,
            &mut file.policy,
        ]
        .into_iter()
        .flatten()
        {
            *p = resolve(path, p);
        }
        for p in file.invite_files.values_mut() {
            *p = resolve(path, p);
        }
        file.seednode.resolve_paths(path);
        file.validate().map_err(|e| e.in_file(path))?;
        Ok(file)
    }

    /// Checks every value (keys named in full, e.g. `limits.max_connections`).
    pub fn validate(&self) -> Result<(), Invalid> {
        for addr in &self.listen {
            addr.parse::<Multiaddr>().map_err(|e| {
                Invalid::new("listen", format!("{addr:?} is not a multiaddr ({e})"))
            })?;
        }
        for (network, code) in &self.invites {
            InviteCode::new(code.expose(), self.protocol.max_invite_bytes)
                .map_err(|e| Invalid::new(format!("invites.{network}"), e))?;
            if self.invite_files.contains_key(network) {
                return Err(Invalid::new(
                    format!("invite_files.{network}"),
                    "the network also has a code in [invites]; keep one of the two",
                ));
            }
        }
        self.limits.validate().map_err(|e| e.within("limits"))?;
        self.rate_limits
            .validate()
            .map_err(|e| Invalid::new("rate_limits", e.to_string()))?;
        self.verifier.validate().map_err(|e| e.within("verifier"))?;
        self.protocol
            .validate()
            .map_err(|(key, reason)| Invalid::new(key, reason).within("protocol"))?;
        self.audit.validate().map_err(|e| e.within("audit"))?;
        self.records.validate().map_err(|e| e.within("records"))?;
        self.authorization
            .validate()
            .map_err(|e| e.within("authorization"))?;
        self.control.validate().map_err(|e| e.within("control"))?;
        self.metrics_server
            .validate()
            .map_err(|e| e.within("metrics_server"))?;
        self.seednode.validate().map_err(|e| e.within("seednode"))
    }

    /// The node configuration this file describes, with the descriptor loaded. `networks`
    /// overrides the file's list (a seednode passes its delegations' networks). Fails with
    /// the fix when a required value is missing or the descriptor does not list a network.
    pub fn node_config(
        &self,
        source: &str,
        networks: Option<Vec<NetworkName>>,
    ) -> anyhow::Result<NodeConfig> {
        let (path, descriptor) = self.descriptor(source)?;
        self.node_config_with(&path, descriptor, networks, source)
    }

    /// The descriptor file this config names, loaded.
    pub fn descriptor(&self, source: &str) -> anyhow::Result<(PathBuf, Descriptor)> {
        let path = self.descriptor.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no network descriptor: set `descriptor` in {source} or pass --networks"
            )
        })?;
        let descriptor = Descriptor::load(&path)?;
        Ok((path, descriptor))
    }

    /// The invite codes by network, files read. An invite for a network this process does not
    /// join is refused: it would never be sent, and is likely a typo.
    fn invites(
        &self,
        networks: &[NetworkName],
        source: &str,
    ) -> anyhow::Result<BTreeMap<NetworkName, InviteCode>> {
        let max = self.protocol.max_invite_bytes;
        let mut invites = BTreeMap::new();
        for (network, code) in &self.invites {
            let code = InviteCode::new(code.expose(), max)
                .map_err(|e| anyhow::anyhow!("invite for {network} in {source}: {e}"))?;
            invites.insert(network.clone(), code);
        }
        for (network, path) in &self.invite_files {
            let code = InviteCode::read(path, max)
                .map_err(|e| anyhow::anyhow!("invite file for {network} in {source}: {e}"))?;
            invites.insert(network.clone(), code);
        }
        for network in invites.keys() {
            anyhow::ensure!(
                networks.contains(network),
                "an invite is given for {network}, which this node does not join (it joins {}); \
                 an invite is bound to its network",
                networks
                    .iter()
                    .map(NetworkName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(invites)
    }

    /// [`DaemonFile::node_config`] with the descriptor already loaded from `descriptor_path`.
    pub fn node_config_with(
        &self,
        descriptor_path: &Path,
        descriptor: Descriptor,
        networks: Option<Vec<NetworkName>>,
        source: &str,
    ) -> anyhow::Result<NodeConfig> {
        let data = self.data.clone().ok_or_else(|| {
            anyhow::anyhow!("no data directory: set `data` in {source} or pass --data")
        })?;
        let networks = networks.unwrap_or_else(|| self.networks.clone());
        anyhow::ensure!(
            !networks.is_empty(),
            "no network to join: set `networks` in {source} or pass --network"
        );
        for n in &networks {
            anyhow::ensure!(
                descriptor.network(n).is_some(),
                "network {n} is not in {}; add a [[network]] entry for it",
                descriptor_path.display()
            );
        }
        anyhow::ensure!(
            networks.len() <= self.limits.max_networks,
            "{} networks given, but limits.max_networks is {}",
            networks.len(),
            self.limits.max_networks
        );
        let invites = self.invites(&networks, source)?;
        let mut config = NodeConfig::new(data, descriptor, networks);
        config.invites = invites;
        config.descriptor_file = Some(descriptor_path.to_owned());
        config.listen = self
            .listen
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        config.label = self.label.clone();
        config.limits = self.limits.clone();
        config.metrics = self.metrics;
        config.filter_file = self.filter.clone();
        config.rate_limits = self.rate_limits.clone();
        config.policy_file = self.policy.clone();
        config.verifier = VerifierConfig::from(&self.verifier);
        config.protocol = self.protocol.clone();
        config.audit = self.audit.clone();
        config.records = self.records.clone();
        config.authorization = self.authorization.clone();
        config.control = self.control.clone();
        config.metrics_server = self.metrics_server.clone();
        Ok(config)
    }
}

/// The `run` flags both daemons share; each overrides the config file's value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonFlags {
    /// Config file (TOML; see node.example.toml / seednode.example.toml). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (created by `init`). Overrides `data`.
    #[arg(long, env = "CORDON_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Network descriptor file (the access list). Overrides `descriptor`.
    #[arg(long, value_name = "FILE")]
    pub networks: Option<PathBuf>,
    /// Address to listen on; repeat for several. Overrides `listen`.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Label shown to operators. Overrides `label`.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464). Overrides `metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Connection-filter rules file, re-read by `node reload`. Overrides `filter`.
    #[arg(long, value_name = "FILE")]
    pub filter: Option<PathBuf>,
    /// Rate limits, per-IP caps and ban policy (TOML, the `[rate_limits]` keys at top level).
    /// Replaces the file's `[rate_limits]`.
    #[arg(long, value_name = "FILE")]
    pub limits: Option<PathBuf>,
}

impl DaemonFlags {
    /// The config file (or the defaults without `--config`) with these flags applied and every
    /// value checked; also returns how to name the source in messages.
    pub fn load<S: Section>(&self) -> anyhow::Result<(DaemonFile<S>, String)> {
        let (mut file, source) = match &self.config {
            Some(path) => (DaemonFile::<S>::load(path)?, path.display().to_string()),
            None => (DaemonFile::<S>::default(), "the config file".to_owned()),
        };
        if let Some(data) = &self.data {
            file.data = Some(data.clone());
        }
        if let Some(networks) = &self.networks {
            file.descriptor = Some(networks.clone());
        }
        if !self.listen.is_empty() {
            file.listen = self.listen.iter().map(ToString::to_string).collect();
        }
        if let Some(label) = &self.label {
            file.label = label.clone();
        }
        if self.metrics.is_some() {
            file.metrics = self.metrics;
        }
        if let Some(filter) = &self.filter {
            file.filter = Some(filter.clone());
        }
        if let Some(path) = &self.limits {
            file.rate_limits = LimitsConfig::load(path).map_err(anyhow::Error::msg)?;
        }
        file.validate()
            .map_err(|e| anyhow::anyhow!("{e} (after applying the command-line flags)"))?;
        Ok((file, source))
    }
}

/// Checks what a configuration refers to without starting anything: the data directory and
/// its identity key, the filter and policy files. Returns a one-line summary.
pub fn check(config: &NodeConfig) -> anyhow::Result<String> {
    let (_, identity) = cordon_host::datadir::DataDir::open(&config.data_dir)?;
    if let Some(path) = &config.filter_file {
        crate::filter::FilterRules::load(path)?;
    }
    if let Some(path) = &config.policy_file {
        crate::rpc::Policy::from_file(path, &config.authorization)?;
    }
    Ok(format!(
        "configuration ok: peer {} joins {} from {}",
        identity.peer_id(),
        config
            .networks
            .iter()
            .map(NetworkName::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        config.data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../node.example.toml");

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        let example: NodeFile = cordon_host::config::parse_toml(Path::new("x"), EXAMPLE).unwrap();
        let expected = NodeFile {
            data: Some("mynode".into()),
            descriptor: Some("networks.toml".into()),
            networks: vec!["mainnet".parse().unwrap()],
            ..NodeFile::default()
        };
        assert_eq!(example, expected);
        let missing =
            cordon_host::config::undocumented_keys(&NodeFile::default(), EXAMPLE).unwrap();
        assert!(
            missing.is_empty(),
            "keys missing from node.example.toml: {missing:?}"
        );
        assert_eq!(NodeFile::default().validate(), Ok(()));
    }

    #[test]
    fn wrong_keys_types_and_ranges_are_named() {
        let err = |text: &str| {
            let file: Result<NodeFile, _> =
                cordon_host::config::parse_toml(Path::new("n.toml"), text);
            match file {
                Err(e) => e.to_string(),
                Ok(f) => f
                    .validate()
                    .map(|()| String::new())
                    .unwrap_or_else(|e| e.to_string()),
            }
        };
        let e = err("[limits]\nmax_conections = 5\n");
        assert!(
            e.contains("limits.max_conections") && e.contains("max_connections"),
            "{e}"
        );
        let e = err("[limits]\nmax_connections = \"many\"\n");
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
        let e = err("[limits]\nmax_connections = 0\n");
        assert_eq!(
            e,
            "limits.max_connections must be between 1 and 1000000, got 0"
        );
        let e = err("[verifier]\nmax_datalog_time = \"5s\"\n");
        assert!(
            e.starts_with("verifier.max_datalog_time must be between"),
            "{e}"
        );
        let e = err("[protocol]\nmax_tokens_per_message = 0\n");
        assert!(e.starts_with("protocol.max_tokens_per_message"), "{e}");
        let e = err("listen = [\"not an address\"]\n");
        assert!(e.starts_with("listen "), "{e}");
        let e = err("[seednode]\ndelegations = []\n");
        assert!(e.contains("seednode's config file"), "{e}");
        let e = err("[rate_limits]\nconnections_per_ip = 0\n");
        assert!(
            e.contains("rate_limits") && e.contains("connections_per_ip"),
            "{e}"
        );
    }
}
