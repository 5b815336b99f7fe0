//! Serving remote commands: rate limits, authorization against what the caller proved on the
//! connection, execution by the pure [`crate::rpc::Handler`], the audit record, and the
//! Kademlia side of `dht_put` (replicate) and `dht_get` (look up what we do not hold).
//!
//! Only callers that proved a network reach this: the rpc protocol is gated
//! ([`crate::session`]). Replicated records arrive through the gated Kademlia, so their source
//! proved the network too; each is re-verified before it is kept.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::session::ProofKind;
use cordon_protocol::{
    Command, NetworkName, RpcErrorCode, RpcRequest, RpcResponse, RpcResult, SignedRecord,
};
use libp2p::kad::{self, store::RecordStore as _};
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};

use crate::metrics::CommandLabels;
use crate::ratelimit::{KeyedLimiter, LimitsConfig};
use crate::report::Report;
use crate::rpc::{Call, Handler, Local};
use crate::swarm::Behaviour;
use cordon_host::audit::{AuditEvent, AuditKind};

/// The largest encoded record Kademlia carries (value cap, twice for encoding, plus framing).
fn max_encoded_record(limits: &cordon_protocol::Limits) -> usize {
    limits.max_record_value_bytes * 2 + 1024
}

/// Records counted before a Kademlia `dht_get` answers (valid ones for the key asked).
pub const GET_ANSWERS: u32 = 3;

/// A `dht_get` answered from the network's Kademlia.
#[derive(Debug)]
struct PendingGet {
    channel: ResponseChannel<RpcResponse>,
    network: NetworkName,
    /// The key asked for.
    key: Vec<u8>,
    /// The best valid record so far.
    best: Option<SignedRecord>,
    /// Valid records counted so far.
    answers: u32,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct RpcServer {
    handler: Handler,
    limits: cordon_protocol::Limits,
    per_peer: KeyedLimiter<PeerId>,
    per_command: KeyedLimiter<(PeerId, &'static str)>,
    /// `dht_get`s waiting for a Kademlia lookup.
    pending_gets: HashMap<kad::QueryId, PendingGet>,
    max_pending_gets: usize,
    started: Instant,
}

impl RpcServer {
    /// Drops the records `publisher` stored in `network` (its membership was revoked), here
    /// and in the network's Kademlia store (which holds the copies this node replicated and
    /// answers other members' lookups from). Returns how many were dropped.
    pub fn forget_publisher(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        publisher: &PeerId,
    ) -> usize {
        let keys = self.handler.store().keys_of(network, publisher);
        if let Some(kad) = swarm.behaviour_mut().session.kad(network) {
            for key in &keys {
                kad.store_mut().remove(&kad::RecordKey::new(key));
            }
        }
        self.handler
            .store_mut()
            .remove_publisher(network, publisher)
    }

    /// A server executing with `handler`, limited by `limits`, with at most `max_pending_gets`
    /// lookups waiting at once.
    pub fn new(
        handler: Handler,
        protocol: cordon_protocol::Limits,
        limits: &LimitsConfig,
        max_pending_gets: usize,
        started: Instant,
    ) -> Self {
        let max_keys = limits.max_tracked_keys;
        Self {
            handler,
            limits: protocol,
            per_peer: KeyedLimiter::new(limits.rpc_per_peer, max_keys),
            per_command: KeyedLimiter::new(limits.rpc_per_command, max_keys),
            pending_gets: HashMap::new(),
            max_pending_gets,
            started,
        }
    }

    /// Time since the server started.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Answers an inbound remote command.
    #[allow(clippy::too_many_arguments)]
    pub fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        peer: PeerId,
        connection: ConnectionId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
        now: SystemTime,
        instant: Instant,
    ) {
        let command = request.command.name();
        let network = request.network.clone();
        let replicate = match &request.command {
            Command::DhtPut { record } => Some(record.clone()),
            _ => None,
        };
        let lookup = match &request.command {
            Command::DhtGet { key } => Some(key.clone()),
            _ => None,
        };
        let limited = self.per_peer.check(&peer, instant).is_err()
            || self.per_command.check(&(peer, command), instant).is_err();
        let response = if limited {
            report.metrics().rate_limited.inc();
            RpcResponse::error(RpcErrorCode::RateLimited)
        } else {
            let local_peer = *swarm.local_peer_id();
            let session = &swarm.behaviour().session;
            let sessions = session.sessions();
            let proofs: Vec<_> = sessions.proofs(connection).collect();
            let verified: BTreeSet<NetworkName> = proofs
                .iter()
                .filter(|p| p.kind == ProofKind::Member)
                .map(|p| p.network.clone())
                .collect();
            let (roles, rights) = sessions
                .proof(connection, &network)
                .map(|p| (p.roles.clone(), p.rights.clone()))
                .unwrap_or_default();
            let mut members = sessions.proven_peers(&network, ProofKind::Member);
            if sessions.has_membership(&network) {
                members.insert(local_peer);
            }
            let networks: Vec<NetworkName> = session.networks().cloned().collect();
            let local = Local {
                version: concat!("cordon ", env!("CARGO_PKG_VERSION")),
                networks: &networks,
                uptime: self.uptime(instant),
                members: &members,
            };
            let call = Call {
                caller: peer,
                verified: &verified,
                roles: &roles,
                rights: &rights,
            };
            self.handler.handle(request, &call, &local, now)
        };
        let outcome = match &response {
            RpcResponse::Ok(_) => "ok".to_owned(),
            RpcResponse::Err { code, .. } => code.as_str().to_owned(),
        };
        report
            .metrics()
            .commands
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
                outcome: outcome.clone(),
            })
            .inc();
        let kind = if outcome == "ok" {
            AuditKind::CommandExecuted
        } else {
            AuditKind::CommandDenied
        };
        let mut event = AuditEvent::new(kind)
            .peer(peer)
            .network(&network)
            .command(command);
        if outcome != "ok" {
            event = event.reason(&outcome);
        }
        report.audit(event);
        let session = &mut swarm.behaviour_mut().session;
        match (&response, replicate, lookup) {
            // Stored here: replicate to the members closest to the key.
            (RpcResponse::Ok(RpcResult::Stored), Some(record), _) => {
                if let Ok(value) =
                    cordon_protocol::encode(&record, max_encoded_record(&self.limits))
                    && let Some(kad) = session.kad(&network)
                {
                    let kad_record = kad::Record::new(record.key.clone(), value);
                    let _ = kad.store_mut().put(kad_record.clone());
                    if let Err(e) = kad.put_record(kad_record, kad::Quorum::One) {
                        tracing::debug!(network = %network, error = ?e, "record not replicated");
                    }
                }
            }
            // Not here: ask the network, answer when the lookup ends.
            (RpcResponse::Ok(RpcResult::Record { record: None }), _, Some(key))
                if self.pending_gets.len() < self.max_pending_gets =>
            {
                if let Some(kad) = session.kad(&network) {
                    let id = kad.get_record(kad::RecordKey::new(&key));
                    self.pending_gets.insert(
                        id,
                        PendingGet {
                            channel,
                            network,
                            key,
                            best: None,
                            answers: 0,
                        },
                    );
                    return;
                }
            }
            _ => {}
        }
        let _ = session.rpc().send_response(channel, response);
    }

    /// A member replicated a signed record to us through Kademlia: keep it only if it verifies
    /// (signature, size, ownership, no replay).
    pub fn on_replicated_record(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        network: &NetworkName,
        source: PeerId,
        record: kad::Record,
        now: SystemTime,
    ) {
        let limits = &self.limits;
        let signed = match cordon_protocol::decode::<SignedRecord>(
            &record.value,
            max_encoded_record(limits),
            limits,
        ) {
            Ok(signed) if signed.key == record.key.to_vec() => signed,
            _ => {
                tracing::warn!(peer = %source, network = %network, reason = "malformed", "replicated record refused");
                return;
            }
        };
        // The source proved this network's membership to open the gate; it vouches for the
        // publisher's membership, which we may not be able to check ourselves.
        match self.handler.store_mut().put(signed, network, |_| true, now) {
            Ok(()) => {
                if let Some(kad) = swarm.behaviour_mut().session.kad(network) {
                    let _ = kad.store_mut().put(record);
                }
            }
            Err(code) => {
                tracing::warn!(peer = %source, network = %network, reason = %code, "replicated record refused");
                report.audit(
                    AuditEvent::new(AuditKind::CommandDenied)
                        .peer(source)
                        .network(network)
                        .command("dht_replicate")
                        .reason(code),
                );
            }
        }
    }

    /// A `dht_get` that missed locally, answered from the network's Kademlia. A record counts
    /// only if it is for the key asked (both the Kademlia record's key and the signed one) and
    /// its signature verifies for the network; of those, the highest `seq` (then the newest
    /// timestamp) wins. The lookup ends once [`GET_ANSWERS`] records counted or Kademlia has
    /// nothing more; a hostile member's answers cannot end it early.
    pub fn on_record_lookup(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        id: kad::QueryId,
        result: Result<kad::GetRecordOk, kad::GetRecordError>,
        last: bool,
    ) {
        let Some(pending) = self.pending_gets.get_mut(&id) else {
            return;
        };
        let limits = &self.limits;
        if let Ok(kad::GetRecordOk::FoundRecord(peer_record)) = &result {
            let found = cordon_protocol::decode::<SignedRecord>(
                &peer_record.record.value,
                max_encoded_record(limits),
                limits,
            )
            .ok()
            .filter(|r| {
                peer_record.record.key.as_ref() == pending.key.as_slice()
                    && r.key == pending.key
                    && r.verify(&pending.network).is_ok()
            });
            match found {
                Some(record) => {
                    pending.answers += 1;
                    let newer = pending
                        .best
                        .as_ref()
                        .is_none_or(|b| (record.seq, record.timestamp) > (b.seq, b.timestamp));
                    if newer {
                        pending.best = Some(record);
                    }
                }
                None => {
                    let from = peer_record.peer.map(|p| p.to_string()).unwrap_or_default();
                    tracing::warn!(peer = %from, network = %network, reason = "record_mismatch", "a Kademlia answer is not a valid record for the key asked; ignored");
                }
            }
        }
        let enough = pending.answers >= GET_ANSWERS;
        if !(last || enough || result.is_err()) {
            return;
        }
        let Some(pending) = self.pending_gets.remove(&id) else {
            return;
        };
        let session = &mut swarm.behaviour_mut().session;
        if !last
            && let Some(kad) = session.kad(network)
            && let Some(mut query) = kad.query_mut(&id)
        {
            query.finish();
        }
        let _ = session.rpc().send_response(
            pending.channel,
            RpcResponse::Ok(RpcResult::Record {
                record: pending.best,
            }),
        );
    }
}
