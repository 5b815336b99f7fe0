//! Answers for the control socket: `status`, `peers`, `reload`, and (on a seednode) the
//! operator commands of the join service. `call` is answered later by [`crate::calls`].

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use cordon_membership::session::ProofKind;
use cordon_protocol::NetworkName;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Swarm};
use serde_json::{Value, json};

use crate::bans;
use crate::config::NodeConfig;
use crate::join::{JoinServer, Joiner};
use crate::report::Report;
use crate::routing::Routing;
use crate::swarm::Behaviour;
use cordon_host::clock::unix_secs;
use cordon_host::descriptor::NetworkEntry;

/// What a control request may read or change.
pub struct Context<'a> {
    /// The swarm.
    pub swarm: &'a mut Swarm<Behaviour>,
    /// The configuration.
    pub config: &'a NodeConfig,
    /// The join client's driver.
    pub joiner: &'a Joiner,
    /// The join service, on a seednode.
    pub server: Option<&'a mut JoinServer>,
    /// Routing and the address book.
    pub routing: &'a Routing,
    /// The report sink.
    pub report: &'a mut Report,
    /// Wall time.
    pub now: SystemTime,
    /// Monotonic time.
    pub instant: Instant,
    /// When the node started.
    pub started: Instant,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Answers one request (anything but `call`) with the `{"ok": ...}` envelope.
pub fn answer(cx: Context<'_>, request: Value) -> Value {
    let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
    let result = match cmd {
        "status" => Ok(status(cx)),
        "reload" => bans::reload(cx.swarm, cx.report, cx.config.filter_file.as_deref()),
        "peers" => peers(cx.swarm, &request),
        _ => match cx.server {
            Some(server) => server.on_control(cx.swarm, cx.report, request, cx.now),
            None => Err(format!(
                "unknown command {cmd:?}; this node answers: status, peers, call, reload"
            )),
        },
    };
    match result {
        Ok(result) => json!({ "ok": true, "result": result }),
        Err(error) => json!({ "ok": false, "error": error }),
    }
}

fn entry<'a>(config: &'a NodeConfig, network: &NetworkName) -> Option<&'a NetworkEntry> {
    config.descriptor.network(network)
}

fn status(cx: Context<'_>) -> Value {
    let Context {
        swarm,
        config,
        joiner,
        server,
        routing,
        report,
        now,
        instant,
        started,
    } = cx;
    let local = *swarm.local_peer_id();
    let mut networks = Vec::new();
    let names: Vec<NetworkName> = swarm.behaviour().session.networks().cloned().collect();
    for name in &names {
        let session = &mut swarm.behaviour_mut().session;
        let verified = session.sessions().verified_peers(name).len();
        let routing_table = session
            .kad(name)
            .map(|k| k.kbuckets().map(|b| b.num_entries()).sum::<usize>())
            .unwrap_or(0);
        let client = joiner.client();
        let token = client.token(name);
        let state = client.state(name, now).map_or("joining", |s| s.as_str());
        let entry = entry(config, name);
        networks.push(json!({
            "name": name,
            "state": state,
            "join_policy": entry.map(|e| e.join.to_string()),
            "strict": entry.is_some_and(|e| e.strict),
            "roles": token.map(|t| t.roles.clone()).unwrap_or_default(),
            "token_expires_at": token.map(|t| unix_secs(t.expires_at)),
            "pending_request": client.pending(name).map(|p| p.request_id),
            "routing_table": routing_table,
            "verified_peers": verified,
        }));
    }
    let limits = &config.limits;
    let sessions = swarm.behaviour().session.sessions();
    let stats = sessions.stats();
    let counters = report.counters();
    json!({
        "peer_id": local.to_string(),
        "listen": routing.listen_addrs().iter().map(|a| a.clone().with(Protocol::P2p(local)).to_string()).collect::<Vec<_>>(),
        "uptime_secs": instant.saturating_duration_since(started).as_secs(),
        "connections": sessions.connections(),
        "networks": networks,
        "membership_checks": {
            "verified": stats.verified,
            "refused": stats.refused,
            "rate_limited": counters.rate_limited,
            "auth_timeouts": stats.auth_timeouts,
        },
        "limits": {
            "auth_timeout_secs": limits.auth_timeout.as_secs(),
            "max_connections": limits.max_connections,
            "max_connections_per_peer": limits.max_connections_per_peer,
            "max_pending_incoming": limits.max_pending_incoming,
            "max_streams_per_protocol": limits.max_streams_per_protocol,
            "max_pending_verifications": limits.max_pending_verifications,
            "max_kad_packet_bytes": limits.max_kad_packet_bytes,
            "max_networks": limits.max_networks,
            "max_routes_per_network": limits.max_routes_per_network,
        },
        "service": server.map(|s| s.service().status()),
        "filter": serde_json::to_value(swarm.behaviour().filter.status()).unwrap_or(Value::Null),
        "rate_limits": serde_json::to_value(&config.rate_limits).unwrap_or(Value::Null),
    })
}

fn peers(swarm: &mut Swarm<Behaviour>, request: &Value) -> Result<Value, String> {
    let filter = match request.get("network") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse::<NetworkName>()
                .map_err(|e| format!("invalid network: {e}"))?,
        ),
        Some(_) => return Err("\"network\" must be a string".into()),
    };
    let names: Vec<NetworkName> = swarm.behaviour().session.networks().cloned().collect();
    if let Some(f) = &filter
        && !names.contains(f)
    {
        return Err(format!("this node is not in network {f}"));
    }
    let mut out = Vec::new();
    for name in names {
        if filter.as_ref().is_some_and(|f| f != &name) {
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
            out.push(json!({
                "network": name,
                "peer": peer.to_string(),
                "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "connected": proven.is_some(),
                "seednode": seednodes.contains(&peer),
                "expires_at": proven.map(|p| unix_secs(p.expires_at)),
            }));
        }
    }
    Ok(Value::Array(out))
}
