//! Serving remote commands: rate limits, authorization against what the caller proved on the
//! connection, execution by the pure [`crate::rpc::Handler`], the audit record, and the
//! Kademlia side of `dht_put` (replicate) and `dht_get` (look up what we do not hold).
//!
//! Only callers that proved a network reach this: the rpc protocol is gated
//! ([`crate::session`]). Replicated records arrive through the gated Kademlia, so their source
//! proved the network too; but Kademlia's PUT_VALUE is open to every member whatever the rpc
//! policy says, so a record travels as a [`ReplicatedRecord`] carrying its publisher's
//! membership token, and is kept, served or believed only if that token proves the publisher a
//! member allowed `dht_put` by the local policy ([`Handler::grant`]). Replicated puts are
//! rate-limited per source; records end with their publisher's membership (or the store's
//! `ttl`), go at once when it is revoked, and the publisher republishes its own with its
//! current token, periodically and whenever the token is renewed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::Verifier;
use cordon_membership::session::ProofKind;
use cordon_protocol::{
    Command, NetworkName, ReplicatedRecord, RpcErrorCode, RpcRequest, RpcResponse, RpcResult,
    SignedRecord,
};
use libp2p::kad::{self, store::RecordStore as _};
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};

use crate::metrics::CommandLabels;
use crate::ratelimit::{KeyedLimiter, LimitsConfig};
use crate::report::Report;
use crate::rpc::{Call, Handler, Local, PublisherMembership};
use crate::swarm::Behaviour;
use cordon_host::audit::{AuditEvent, AuditKind};

/// The largest encoded record Kademlia carries.
fn max_encoded_record(limits: &cordon_protocol::Limits) -> usize {
    ReplicatedRecord::max_encoded_bytes(limits)
}

/// Checks record publishers' tokens of `network` with the node's verifier (offline, cached):
/// the token must verify for the publisher as subject, now, and be of `network`.
fn token_checker<'a>(
    verifier: &'a Verifier,
    network: &'a NetworkName,
    now: SystemTime,
) -> impl Fn(&PeerId, &[u8]) -> Option<PublisherMembership> + 'a {
    move |publisher, token| {
        let verdict = verifier.verify_membership(token, publisher, now).ok()?;
        (verdict.network == network.as_str()).then_some(PublisherMembership {
            roles: verdict.roles,
            rights: verdict.rights,
            expires_at: verdict.expires_at,
            revocation_ids: verdict.revocation_ids,
        })
    }
}

/// A Kademlia record for `record` with its publisher's `token`, ending at `expires_at`.
fn kad_record(
    record: &SignedRecord,
    token: &[u8],
    expires_at: SystemTime,
    limits: &cordon_protocol::Limits,
    now: SystemTime,
    instant: Instant,
) -> Option<kad::Record> {
    let replicated = ReplicatedRecord {
        record: record.clone(),
        token: token.to_vec(),
    };
    let value = cordon_protocol::encode(&replicated, max_encoded_record(limits)).ok()?;
    let mut kad_record = kad::Record::new(record.key.clone(), value);
    kad_record.expires = Some(instant + expires_at.duration_since(now).unwrap_or_default());
    Some(kad_record)
}

/// Records this node published, republished with its current token.
#[derive(Debug, Default)]
struct Published {
    records: BTreeMap<NetworkName, BTreeMap<Vec<u8>, SignedRecord>>,
    /// Per network: the token the records were last republished with, and when.
    last: HashMap<NetworkName, (Vec<u8>, Instant)>,
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
    /// Replicated records accepted per source peer.
    per_source: KeyedLimiter<PeerId>,
    published: Published,
    max_published: usize,
    republish_interval: Duration,
    /// The verifier's revocation-set version the stored records were last checked against.
    revocation_version: u64,
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
    /// lookups waiting at once; it remembers at most `records.max_per_publisher` of its own
    /// records per network and republishes them every `records.republish_interval`.
    pub fn new(
        handler: Handler,
        protocol: cordon_protocol::Limits,
        limits: &LimitsConfig,
        records: &crate::rpc::RecordStoreConfig,
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
            per_source: KeyedLimiter::new(limits.replicated_records_per_peer, max_keys),
            published: Published::default(),
            max_published: records.max_per_publisher,
            republish_interval: records.republish_interval,
            revocation_version: 0,
            started,
        }
    }

    /// One of our `dht_put` calls stored `record` in `network`: remember it, to republish it
    /// with our current token (at most `max_per_publisher` per network, like every storer).
    pub fn remember_published(&mut self, network: NetworkName, record: SignedRecord) {
        let records = self.published.records.entry(network).or_default();
        if records.len() < self.max_published || records.contains_key(&record.key) {
            records.insert(record.key.clone(), record);
        }
    }

    /// Housekeeping: drops expired records and, when revocations arrived, records whose
    /// publisher token is revoked (here and from Kademlia's store), and republishes our own
    /// records where our token changed or `republish_interval` passed.
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>, now: SystemTime, instant: Instant) {
        let session = &mut swarm.behaviour_mut().session;
        let mut dropped = self.handler.store_mut().prune(now);
        let verifier = session.verifier().clone();
        let version = verifier.revocation_version();
        if version != self.revocation_version {
            self.revocation_version = version;
            let revoked = self
                .handler
                .store_mut()
                .drop_revoked(|id| verifier.is_revoked(id));
            if !revoked.is_empty() {
                tracing::info!(
                    records = revoked.len(),
                    "dropped the records of revoked publishers"
                );
            }
            dropped.extend(revoked);
        }
        for (network, key) in dropped {
            if let Some(kad) = session.kad(&network) {
                kad.store_mut().remove(&kad::RecordKey::new(&key));
            }
        }
        for (network, records) in &self.published.records {
            let Some(token) = session.sessions().membership(network).map(<[u8]>::to_vec) else {
                continue;
            };
            let due = self.published.last.get(network).is_none_or(|(last, at)| {
                *last != token || instant.duration_since(*at) >= self.republish_interval
            });
            if !due {
                continue;
            }
            self.published
                .last
                .insert(network.clone(), (token.clone(), instant));
            let Some(kad) = session.kad(network) else {
                continue;
            };
            let expires_at = now + self.republish_interval.saturating_mul(2);
            for record in records.values() {
                if let Some(kad_record) =
                    kad_record(record, &token, expires_at, &self.limits, now, instant)
                    && let Err(e) = kad.put_record(kad_record, kad::Quorum::One)
                {
                    tracing::debug!(network = %network, error = ?e, "record not republished");
                }
            }
            tracing::debug!(network = %network, records = records.len(), "own records republished");
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
            Command::DhtPut { record, token } => Some((record.clone(), token.clone())),
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
            let check_token = token_checker(session.verifier(), &network, now);
            let local = Local {
                version: concat!("cordon ", env!("CARGO_PKG_VERSION")),
                networks: &networks,
                uptime: self.uptime(instant),
                members: &members,
                check_token: &check_token,
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
            // Stored here: replicate to the members closest to the key, with the token.
            (RpcResponse::Ok(RpcResult::Stored), Some((record, token)), _) => {
                let expires_at = self
                    .handler
                    .store()
                    .get_live(&network, &record.key, now)
                    .map(|(_, _, at)| at);
                if let Some(expires_at) = expires_at
                    && let Some(kad_record) =
                        kad_record(&record, &token, expires_at, &self.limits, now, instant)
                    && let Some(kad) = session.kad(&network)
                {
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

    /// A member replicated a record to us through Kademlia (PUT_VALUE): keep it only if the
    /// source is within its quota, the record is for the Kademlia key it came under, and its
    /// publisher's token proves a member allowed `dht_put` (then signature, size, ownership and
    /// no replay, as for an rpc `dht_put`). A refusal is audited (aggregated per source).
    #[allow(clippy::too_many_arguments)]
    pub fn on_replicated_record(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        network: &NetworkName,
        source: PeerId,
        record: kad::Record,
        now: SystemTime,
        instant: Instant,
    ) {
        let limits = &self.limits;
        let outcome = if self.per_source.check(&source, instant).is_err() {
            report.metrics().rate_limited.inc();
            Err(RpcErrorCode::RateLimited)
        } else {
            match cordon_protocol::decode::<ReplicatedRecord>(
                &record.value,
                max_encoded_record(limits),
                limits,
            ) {
                Ok(replicated) if replicated.record.key == record.key.to_vec() => {
                    let session = &swarm.behaviour().session;
                    let check_token = token_checker(session.verifier(), network, now);
                    let ReplicatedRecord {
                        record: signed,
                        token,
                    } = replicated;
                    self.handler
                        .store_record(signed, &token, network, &check_token, now)
                }
                _ => Err(RpcErrorCode::InvalidParams),
            }
        };
        match outcome {
            Ok(expires_at) => {
                if let Some(kad) = swarm.behaviour_mut().session.kad(network) {
                    let mut record = record;
                    record.expires =
                        Some(instant + expires_at.duration_since(now).unwrap_or_default());
                    let _ = kad.store_mut().put(record);
                }
            }
            Err(code) => {
                tracing::debug!(peer = %source, network = %network, reason = %code, "replicated record refused");
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
    /// only if it is for the key asked (both the Kademlia record's key and the signed one), its
    /// signature verifies for the network and its token proves the publisher a member allowed
    /// `dht_put` ([`Handler::believe`]); of those, the highest `seq` (then the newest
    /// timestamp) wins. The lookup ends once [`GET_ANSWERS`] records counted or Kademlia has
    /// nothing more; a hostile member's answers cannot end it early.
    pub fn on_record_lookup(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        id: kad::QueryId,
        result: Result<kad::GetRecordOk, kad::GetRecordError>,
        last: bool,
        now: SystemTime,
    ) {
        let Some(pending) = self.pending_gets.get_mut(&id) else {
            return;
        };
        let limits = &self.limits;
        if let Ok(kad::GetRecordOk::FoundRecord(peer_record)) = &result {
            let session = &swarm.behaviour().session;
            let check_token = token_checker(session.verifier(), network, now);
            let found = cordon_protocol::decode::<ReplicatedRecord>(
                &peer_record.record.value,
                max_encoded_record(limits),
                limits,
            )
            .ok()
            .filter(|r| {
                peer_record.record.key.as_ref() == pending.key.as_slice()
                    && self
                        .handler
                        .believe(r, &pending.network, &pending.key, &check_token, now)
            })
            .map(|r| r.record);
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
