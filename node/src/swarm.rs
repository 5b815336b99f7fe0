//! Swarm assembly: TCP + Noise + Yamux, the composed behaviour, one gated Kademlia per network.
//!
//! Composition order matters: connection limits come first so a refused connection never
//! reaches the protocols; every Kademlia instance sits behind a [`Gated`] wrapper so that no
//! kad stream is negotiated on a connection whose membership of that network is unverified.

use std::num::NonZeroUsize;

use cordon_protocol::{
    JOIN_PROTOCOL, JoinCodec, Limits, MEMBERSHIP_PROTOCOL, MembershipCodec, NetworkName,
    RPC_PROTOCOL, RpcCodec, kad_protocol,
};
use libp2p::kad::store::MemoryStore;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Swarm, connection_limits, identify, kad, noise, ping, request_response, tcp, yamux};

use crate::config::{MAX_NETWORKS, NodeLimits};
use crate::filter::{ConnectionFilter, FilterRules};
use crate::gate::Gated;
use crate::ratelimit::LimitsConfig;

/// Identify protocol version string: peers on other overlays are told apart by it.
pub const IDENTIFY_PROTOCOL: &str = "/cordon/id/1";

/// A gated Kademlia instance for one network.
pub type NetworkKad = Gated<kad::Behaviour<MemoryStore>>;

/// The node's composed behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// IP/PeerId rules, per-IP caps and rates, bans: first, so a refused connection reaches
    /// nothing else (IP rules run before the Noise handshake).
    pub filter: ConnectionFilter,
    /// Connection caps.
    pub limits: connection_limits::Behaviour,
    /// `/cordon/membership/1`: token presentation on every connection.
    pub membership: request_response::Behaviour<MembershipCodec>,
    /// `/cordon/join/1`: join requests, status polls, token delivery.
    pub join: request_response::Behaviour<JoinCodec>,
    /// `/cordon/rpc/1`: remote commands, closed until the peer proved a network.
    pub rpc: Gated<request_response::Behaviour<RpcCodec>>,
    /// Identify (listen addresses of verified peers feed Kademlia).
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Kademlia slot 0 (the first network).
    pub kad0: Toggle<NetworkKad>,
    /// Kademlia slot 1.
    pub kad1: Toggle<NetworkKad>,
    /// Kademlia slot 2.
    pub kad2: Toggle<NetworkKad>,
    /// Kademlia slot 3.
    pub kad3: Toggle<NetworkKad>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

impl Behaviour {
    /// The Kademlia instance of slot `i`, if that slot is in use.
    pub fn kad(&mut self, slot: usize) -> Option<&mut NetworkKad> {
        match slot {
            0 => self.kad0.as_mut(),
            1 => self.kad1.as_mut(),
            2 => self.kad2.as_mut(),
            3 => self.kad3.as_mut(),
            _ => None,
        }
    }
}

fn network_kad(local: libp2p::PeerId, network: &NetworkName, limits: &NodeLimits) -> NetworkKad {
    let mut cfg = kad::Config::new(kad_protocol(network));
    cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
    cfg.set_max_packet_size(limits.max_kad_packet_bytes);
    cfg.set_periodic_bootstrap_interval(None);
    // Records arriving by PUT_VALUE are handed to the event loop, which keeps only those that
    // verify (signature, ownership, no replay); kad stores nothing by itself.
    cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
    cfg.set_query_timeout(limits.request_timeout);
    if let Some(k) = NonZeroUsize::new(20) {
        cfg.set_replication_factor(k);
    }
    let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), cfg);
    // Serve queries from verified peers even before any external address is confirmed
    // (loopback and private deployments); the gate decides who may ask.
    kad.set_mode(Some(kad::Mode::Server));
    Gated::new(kad)
}

/// Builds the swarm for `networks` (at most [`MAX_NETWORKS`]).
pub fn build(
    keypair: libp2p::identity::Keypair,
    networks: &[NetworkName],
    limits: &NodeLimits,
) -> anyhow::Result<Swarm<Behaviour>> {
    build_with(
        keypair,
        networks,
        limits,
        FilterRules::default(),
        &LimitsConfig::default(),
    )
}

/// Builds the swarm with connection-filter rules and rate limits.
pub fn build_with(
    keypair: libp2p::identity::Keypair,
    networks: &[NetworkName],
    limits: &NodeLimits,
    rules: FilterRules,
    rate_limits: &LimitsConfig,
) -> anyhow::Result<Swarm<Behaviour>> {
    anyhow::ensure!(
        networks.len() <= MAX_NETWORKS,
        "a process joins at most {MAX_NETWORKS} networks, {} given",
        networks.len()
    );
    let protocol_limits = Limits::default();
    let limits = limits.clone();
    let networks = networks.to_vec();
    let filter = ConnectionFilter::new(rules, rate_limits);
    let max_streams_per_peer = usize::try_from(rate_limits.max_streams_per_peer).unwrap_or(16);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let rr = |_: ()| {
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_streams_per_protocol)
            };
            let slot = |i: usize| -> Toggle<NetworkKad> {
                Toggle::from(networks.get(i).map(|n| network_kad(local, n, &limits)))
            };
            Behaviour {
                filter,
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(limits.max_connections))
                        .with_max_established_per_peer(Some(limits.max_connections_per_peer))
                        .with_max_pending_incoming(Some(limits.max_pending_incoming)),
                ),
                membership: request_response::Behaviour::with_codec(
                    MembershipCodec::membership(protocol_limits.clone()),
                    [(MEMBERSHIP_PROTOCOL, request_response::ProtocolSupport::Full)],
                    rr(()),
                ),
                join: request_response::Behaviour::with_codec(
                    JoinCodec::join(protocol_limits.clone()),
                    [(JOIN_PROTOCOL, request_response::ProtocolSupport::Full)],
                    rr(()),
                ),
                rpc: Gated::new(request_response::Behaviour::with_codec(
                    RpcCodec::rpc(protocol_limits.clone()),
                    [(RPC_PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(limits.request_timeout)
                        .with_max_concurrent_streams(max_streams_per_peer),
                )),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(format!("cordon/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                kad0: slot(0),
                kad1: slot(1),
                kad2: slot(2),
                kad3: slot(3),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(limits.idle_timeout))
        .build();
    Ok(swarm)
}
