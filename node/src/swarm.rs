//! Swarm assembly: the transport (TCP, or the in-memory transport for in-process tests, both
//! with Noise and Yamux) and the composed behaviour.
//!
//! Composition order matters: the connection filter and connection limits come first so a
//! refused connection never reaches the protocols; [`session::Behaviour`] owns every protocol
//! that needs proven membership (Kademlia per network, rpc, revocations, identify) behind its
//! gates; join and ping are open to every connection.

use std::num::NonZeroUsize;
use std::sync::Arc;

use cordon_membership::Verifier;
use cordon_protocol::{
    JOIN_PROTOCOL, JoinCodec, Limits, MEMBERSHIP_PROTOCOL, MembershipCodec, NetworkName,
    REVOCATION_PROTOCOL, RPC_PROTOCOL, RevocationCodec, RpcCodec, kad_protocol,
};
use libp2p::core::{Transport as _, transport::MemoryTransport, upgrade::Version};
use libp2p::kad::store::MemoryStore;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    PeerId, Swarm, connection_limits, identify, kad, noise, ping, request_response, tcp, yamux,
};

use crate::addresses::AddressPolicy;
use crate::config::{NodeLimits, Transport};
use crate::filter::{ConnectionFilter, FilterRules};
use crate::gate::{GateConfig, Gated};
use crate::keyed::Keyed;
use crate::ratelimit::LimitsConfig;
use crate::session::{self, NetworkKad, Protocols};
use cordon_host::clock::Clock;

/// Identify protocol version string: peers on other overlays are told apart by it.
pub const IDENTIFY_PROTOCOL: &str = "/cordon/id/1";

/// The node's composed behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// IP/PeerId rules, per-IP caps and rates, bans: first, so a refused connection reaches
    /// nothing else (IP rules run before the Noise handshake).
    pub filter: ConnectionFilter,
    /// Connection caps.
    pub limits: connection_limits::Behaviour,
    /// Membership sessions and everything they gate: the membership exchange, rpc, one
    /// Kademlia per network.
    pub session: session::Behaviour,
    /// `/cordon/join/1`: join requests, status polls, token delivery.
    pub join: request_response::Behaviour<JoinCodec>,
    /// Liveness.
    pub ping: ping::Behaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub struct SwarmConfig {
    /// The node's identity.
    pub keypair: libp2p::identity::Keypair,
    /// Local networks and whether each is strict, at most `limits.max_networks`.
    pub networks: Vec<(NetworkName, bool)>,
    /// Limits.
    pub limits: NodeLimits,
    /// Connection-filter rules.
    pub rules: FilterRules,
    /// Rate limits, per-IP caps and ban policy.
    pub rate_limits: LimitsConfig,
    /// The token verifier (its revocation set is shared with the session behaviour).
    pub verifier: Arc<Verifier>,
    /// The time source of the session machine and verification.
    pub clock: Clock,
    /// The transport.
    pub transport: Transport,
    /// Message size bounds of every protocol.
    pub protocol: Limits,
    /// The record store's bounds (Kademlia's store mirrors it).
    pub records: crate::rpc::RecordStoreConfig,
    /// Networks whose descriptor accepts private-range addresses (`private_addresses`).
    pub private_addresses: Vec<NetworkName>,
}

fn network_kad(
    local: PeerId,
    network: &NetworkName,
    limits: &NodeLimits,
    protocol: &Limits,
    records: &crate::rpc::RecordStoreConfig,
) -> NetworkKad {
    let mut cfg = kad::Config::new(kad_protocol(network));
    cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
    cfg.set_max_packet_size(limits.max_kad_packet_bytes);
    cfg.set_periodic_bootstrap_interval(None);
    // Records arriving by PUT_VALUE are handed to the event loop, which keeps only those that
    // verify (signature, ownership, no replay); kad stores nothing by itself.
    cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
    cfg.set_query_timeout(limits.kad_query_timeout);
    if let Some(k) = NonZeroUsize::new(limits.kad_bucket_size) {
        cfg.set_kbucket_size(k);
    }
    if let Some(alpha) = NonZeroUsize::new(limits.kad_parallelism) {
        cfg.set_parallelism(alpha);
    }
    if let Some(k) = NonZeroUsize::new(20) {
        cfg.set_replication_factor(k);
    }
    // Records end with their publisher's membership or the store's ttl; a publisher republishes
    // its own with its current token (the event loop does, not kad, whose copy would carry the
    // token it was first put with). Kad still re-replicates what it holds, hourly, to the
    // members now closest to each key.
    cfg.set_record_ttl(Some(records.ttl));
    cfg.set_publication_interval(None);
    let store = MemoryStore::with_config(
        local,
        kad::store::MemoryStoreConfig {
            max_records: records.max_records,
            max_value_bytes: cordon_protocol::ReplicatedRecord::max_encoded_bytes(protocol),
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(local, store, cfg);
    // Serve queries from verified peers even before any external address is confirmed
    // (loopback and private deployments); the gate decides who may ask.
    kad.set_mode(Some(kad::Mode::Server));
    Gated::new(kad)
}

fn behaviour(key: &libp2p::identity::Keypair, config: SwarmConfig) -> Behaviour {
    let SwarmConfig {
        networks,
        limits,
        rules,
        rate_limits,
        verifier,
        clock,
        protocol,
        records,
        transport,
        private_addresses,
        ..
    } = config;
    let local = key.public().to_peer_id();
    let protocol_limits = protocol;
    let rr = || {
        request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_streams_per_protocol)
    };
    let max_streams_per_peer = usize::try_from(rate_limits.max_streams_per_peer).unwrap_or(16);
    let protocols = Protocols {
        exchange: request_response::Behaviour::with_codec(
            MembershipCodec::membership(protocol_limits.clone()),
            [(MEMBERSHIP_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr(),
        ),
        rpc: Gated::new(request_response::Behaviour::with_codec(
            RpcCodec::rpc(protocol_limits.clone()),
            [(RPC_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(limits.request_timeout)
                .with_max_concurrent_streams(max_streams_per_peer),
        )),
        revocations: Gated::new(request_response::Behaviour::with_codec(
            RevocationCodec::revocations(protocol_limits.clone()),
            [(REVOCATION_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(limits.request_timeout)
                .with_max_concurrent_streams(max_streams_per_peer),
        )),
        kad: Keyed::new(networks.iter().map(|(n, _)| {
            (
                n.clone(),
                network_kad(local, n, &limits, &protocol_limits, &records),
            )
        })),
        // Served once the peer proved a network; asked of the peer once it accepted us too.
        identify: Gated::with_config(
            identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("cordon/{}", env!("CARGO_PKG_VERSION"))),
            ),
            GateConfig::default().with_outbound_release(),
        ),
    };
    let session = session::Behaviour::new(
        protocols,
        networks,
        verifier,
        clock,
        session::Config {
            session: limits.session(),
            max_pending_verifications: limits.max_pending_verifications,
            verifications_per_address: limits.verifications_per_address,
            verifications_per_prefix: limits.verifications_per_prefix,
            verify_workers: limits.verify_workers,
            max_addrs_per_peer: limits.max_addrs_per_peer,
            addresses: AddressPolicy::new(transport == Transport::Memory, private_addresses),
        },
    );
    Behaviour {
        filter: ConnectionFilter::new(rules, &rate_limits),
        limits: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(limits.max_connections))
                .with_max_established_per_peer(Some(limits.max_connections_per_peer))
                .with_max_pending_incoming(Some(limits.max_pending_incoming)),
        ),
        session,
        join: request_response::Behaviour::with_codec(
            JoinCodec::join(protocol_limits),
            [(JOIN_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr(),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(limits.ping_interval)),
    }
}

/// Builds the swarm. Must run inside a tokio runtime.
pub fn build(config: SwarmConfig) -> anyhow::Result<Swarm<Behaviour>> {
    anyhow::ensure!(
        config.networks.len() <= config.limits.max_networks,
        "a process joins at most {} networks (max_networks), {} given",
        config.limits.max_networks,
        config.networks.len()
    );
    let idle = config.limits.idle_timeout;
    let keypair = config.keypair.clone();
    let swarm = match config.transport {
        Transport::Tcp => libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|key| behaviour(key, config))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()),
                )
            })?
            .with_behaviour(|key| behaviour(key, config))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}
