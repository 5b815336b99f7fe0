//! Answers to the node's own control requests: `status`, `peers`, `reload`. `call` and `find`
//! are answered later by [`crate::calls`]; a seednode's operator requests go to its join
//! service ([`crate::join::JoinServer::operator`]), which answers them itself.

use std::collections::BTreeSet;
use std::time::Instant;

use cordon_host::clock::unix_secs;
use cordon_membership::session::ProofKind;
use cordon_protocol::NetworkName;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Swarm};

use crate::api::{CheckCounts, NetworkStatus, PeerEntry, Status, StatusLimits};
use crate::config::NodeConfig;
use crate::join::{JoinServer, Joiner};
use crate::report::Report;
use crate::routing::Routing;
use crate::swarm::Behaviour;

/// What `status` reads.
pub struct StatusContext<'a> {
    /// The swarm.
    pub swarm: &'a mut Swarm<Behaviour>,
    /// The configuration.
    pub config: &'a NodeConfig,
    /// The join client's driver.
    pub joiner: &'a Joiner,
    /// The join service, on a seednode.
    pub server: Option<&'a JoinServer>,
    /// Routing and the address book.
    pub routing: &'a Routing,
    /// Revocation heads.
    pub revocations: &'a crate::revocations::Revocations,
    /// The report sink (counters).
    pub report: &'a Report,
    /// Wall time.
    pub now: std::time::SystemTime,
    /// Monotonic time.
    pub instant: Instant,
    /// When the node started.
    pub started: Instant,
}

impl std::fmt::Debug for StatusContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusContext").finish_non_exhaustive()
    }
}

/// The node's status.
pub fn status(cx: StatusContext<'_>) -> Status {
    let StatusContext {
        swarm,
        config,
        joiner,
        server,
        routing,
        revocations,
        report,
        now,
        instant,
        started,
    } = cx;
    let local = *swarm.local_peer_id();
    let names: Vec<NetworkName> = swarm.behaviour().session.networks().cloned().collect();
    let mut networks = Vec::new();
    for name in names {
        let session = &mut swarm.behaviour_mut().session;
        let verified_peers = session.sessions().verified_peers(&name).len();
        let routing_table = session
            .kad(&name)
            .map(|k| k.kbuckets().map(|b| b.num_entries()).sum::<usize>())
            .unwrap_or(0);
        let client = joiner.client();
        let token = client.token(&name);
        let entry = config.descriptor.network(&name);
        networks.push(NetworkStatus {
            state: client
                .state(&name, now)
                .map_or("joining", |s| s.as_str())
                .to_owned(),
            join_policy: entry.map(|e| e.join.to_string()),
            strict: entry.is_some_and(|e| e.strict),
            roles: token.map(|t| t.roles.clone()).unwrap_or_default(),
            token_expires_at: token.map(|t| unix_secs(t.expires_at)),
            token_anchor: token.map(|t| t.anchor.to_string()),
            pending_request: client.pending(&name).map(|p| p.request_id),
            routing_table,
            verified_peers,
            revoked_ids: revocations.len(&name),
            revocation_updates_received: revocations.received(&name).0,
            revocation_bytes_received: revocations.received(&name).1,
            revocation_announces_received: revocations.announced(&name).0,
            revocation_announce_bytes_received: revocations.announced(&name).1,
            revocation_heads: revocations.head_views(swarm, &name, now),
            name,
        });
    }
    let limits = &config.limits;
    let sessions = swarm.behaviour().session.sessions();
    let stats = sessions.stats();
    Status {
        peer_id: local.to_string(),
        listen: routing
            .listen_addrs()
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(local)).to_string())
            .collect(),
        uptime_secs: instant.saturating_duration_since(started).as_secs(),
        connections: sessions.connections(),
        networks,
        membership_checks: CheckCounts {
            verified: stats.verified,
            refused: stats.refused,
            rate_limited: report.counters().rate_limited,
            auth_timeouts: stats.auth_timeouts,
        },
        limits: StatusLimits {
            auth_timeout_secs: limits.auth_timeout.as_secs(),
            max_connections: limits.max_connections,
            max_connections_per_peer: limits.max_connections_per_peer,
            connection_budget: limits.connection_budget,
            max_pending_incoming: limits.max_pending_incoming,
            max_streams_per_protocol: limits.max_streams_per_protocol,
            max_pending_verifications: limits.max_pending_verifications,
            max_kad_packet_bytes: limits.max_kad_packet_bytes,
            kad_bucket_size: limits.kad_bucket_size,
            max_networks: limits.max_networks,
            max_routes_per_network: limits.max_routes_per_network,
        },
        service: server.map(JoinServer::status),
        filter: swarm.behaviour().filter.status(),
        rate_limits: config.rate_limits.clone(),
    }
}

/// The routing tables, of `network` or of every network.
pub fn peers(
    swarm: &mut Swarm<Behaviour>,
    network: Option<&NetworkName>,
) -> Result<Vec<PeerEntry>, String> {
    let names: Vec<NetworkName> = swarm.behaviour().session.networks().cloned().collect();
    if let Some(n) = network
        && !names.contains(n)
    {
        return Err(format!("this node is not in network {n}"));
    }
    let mut out = Vec::new();
    for name in names {
        if network.is_some_and(|n| n != &name) {
            continue;
        }
        let session = &mut swarm.behaviour_mut().session;
        let mut table: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        if let Some(kad) = session.kad(&name) {
            for bucket in kad.kbuckets() {
                for e in bucket.iter() {
                    table.push((
                        *e.node.key.preimage(),
                        e.node.value.iter().cloned().collect(),
                    ));
                }
            }
        }
        let sessions = session.sessions();
        let seednodes: BTreeSet<PeerId> = sessions.proven_peers(&name, ProofKind::Seednode);
        for (peer, addrs) in table {
            let proven = sessions.peer_networks(&peer).remove(&name);
            out.push(PeerEntry {
                network: name.clone(),
                peer: peer.to_string(),
                addrs: addrs.iter().map(ToString::to_string).collect(),
                connected: proven.is_some(),
                seednode: seednodes.contains(&peer),
                expires_at: proven.map(|p| unix_secs(p.expires_at)),
            });
        }
    }
    Ok(out)
}
