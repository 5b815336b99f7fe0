//! Revocation distribution on every node (DESIGN.md section 9).
//!
//! Each network's revocations are the union of signed, versioned heads from its signers: the
//! seednodes delegated for it (authorized by their delegation, which travels with each update)
//! and its trust anchors (authorized by the descriptor). This module keeps that state per
//! network ([`NetworkRevocations`], persisted in the data directory), and moves it between
//! proven members on `/cordon/revocations/1`:
//! - **pull**: when a peer proves a network on a connection, we send it `Sync` with the heads
//!   we hold; it answers with every update we lack and its own heads, and we push back what it
//!   lacks. A node that was offline during a revocation learns it on its first connection.
//! - **push**: a head this process signed or was handed goes at once, with its delta, to every
//!   peer proven for the network on a live connection; a peer that applies a new head
//!   announces its new version to its own peers, and a peer that is behind pulls from the
//!   announcer (at most one pull per signer in flight). A duplicate costs an announce of a few
//!   dozen bytes, not the update.
//!
//! Enforcement: every id new to the union goes into the verifier (later presentations are
//! refused as `revoked`) and into the session machine, which closes the gates and connections
//! of peers that proved something with it and takes them out of the routing tables.
//!
//! Invariants:
//! - Nothing is served to, or accepted from, a peer that has not proven the network on the
//!   connection the message came on.
//! - A head is applied only if its signer is authorized for the network and its signature,
//!   root and count check out; an older head (or one below a floor a token carried) never
//!   replaces a newer one, and two different heads for one (signer, version) are audited as
//!   equivocation.
//! - State is written atomically before the change is pushed on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use cordon_host::audit::{AuditEvent, AuditKind};
use cordon_host::datadir::DataDir;
use cordon_membership::heads::{HeadError, NetworkRevocations, Update};
use cordon_membership::session::{Proof, ProofKind};
use cordon_membership::{PublicKey, RevocationId, Verifier};
use cordon_protocol::{
    HeadVersion, NetworkName, ReasonCode, RevocationRequest, RevocationResponse, SignedUpdate,
};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};
use serde::{Deserialize, Serialize};

use crate::api::{Published, RevocationHeadView};
use crate::report::Report;
use crate::swarm::Behaviour;

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Shortest time between two rounds of `Sync` sent because a network's heads are stale, in
/// seconds.
const STALE_SYNC_INTERVAL: u64 = 10;

/// Bounds of revocation state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RevocationLimits {
    /// Most live entries per signer of a network.
    pub(crate) max_entries_per_signer: usize,
    /// Largest persisted state file per network, in bytes.
    pub(crate) max_state_bytes: u64,
    /// Revocation requests in flight at once (more are not sent: the next connection or
    /// announce repeats them), and peers whose head versions are remembered for `status`.
    pub(crate) max_requests: usize,
}

/// One network's view and the credentials of its seednode signers.
#[derive(Debug)]
struct NetState {
    set: NetworkRevocations,
    /// Delegation of each seednode signer, sent with its updates so receivers can check it.
    credentials: BTreeMap<PublicKey, Vec<u8>>,
}

/// The file format of `revocations/<network>.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// [`NetworkRevocations::to_bytes`], hex.
    state: String,
    /// `(signer key hex, delegation hex)`.
    credentials: Vec<(String, String)>,
}

/// What accepting an update did.
#[derive(Debug)]
enum Accepted {
    /// A newer head: these ids are new to the union.
    Applied {
        signer: PublicKey,
        version: u64,
        added: Vec<RevocationId>,
    },
    /// Already held (a repeat or an older head): nothing to do or forward.
    Known,
    /// A delta that does not start where we are: ask the sender for a snapshot.
    NeedSnapshot,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Revocations {
    networks: BTreeMap<NetworkName, NetState>,
    limits: RevocationLimits,
    outbound: HashMap<OutboundRequestId, (PeerId, NetworkName)>,
    /// Head versions peers told us they hold, for `status` (bounded by `max_requests`).
    known: HashMap<(PeerId, NetworkName), BTreeMap<Vec<u8>, u64>>,
    /// Networks whose revocations are stale.
    stale: BTreeSet<NetworkName>,
    /// Pulls in flight after an announce: the version asked for, per (network, signer).
    /// Bounded by networks times signers; cleared when a pull answers or fails.
    pulling: HashMap<(NetworkName, PublicKey), u64>,
    /// Per network: updates received from peers and their bytes.
    received: HashMap<NetworkName, (u64, u64)>,
    /// Per network: announces received from peers and their encoded bytes.
    announces: HashMap<NetworkName, (u64, u64)>,
    /// When we last asked peers for newer heads because of staleness (unix seconds).
    last_stale_sync: Option<u64>,
    /// When this process applied each signer's current head, per network (unix
    /// milliseconds), for `status`. Bounded by networks times signers.
    applied_at: HashMap<(NetworkName, PublicKey), u64>,
}

impl Revocations {
    /// Loads each network's state from the data directory and revokes every id it holds in
    /// `verifier`. A state file that does not load is reported and set aside; the network
    /// starts empty and resynchronises from its peers.
    pub(crate) fn load(
        data: &DataDir,
        networks: impl IntoIterator<Item = NetworkName>,
        verifier: &Verifier,
        limits: RevocationLimits,
        report: &mut Report,
    ) -> Self {
        let mut out = BTreeMap::new();
        for network in networks {
            let state = match load_one(data, &network, limits) {
                Ok(Some(state)) => state,
                Ok(None) => NetState {
                    set: NetworkRevocations::new(network.clone()),
                    credentials: BTreeMap::new(),
                },
                Err(e) => {
                    tracing::warn!(network = %network, error = %e, "revocation state does not load; starting empty and resynchronising from peers");
                    report.audit(
                        AuditEvent::new(AuditKind::RevocationHead)
                            .network(&network)
                            .reason("invalid")
                            .detail(format!("persisted state refused: {e}")),
                    );
                    NetState {
                        set: NetworkRevocations::new(network.clone()),
                        credentials: BTreeMap::new(),
                    }
                }
            };
            verifier.revoke(state.set.ids().cloned());
            out.insert(network, state);
        }
        Self {
            networks: out,
            limits,
            outbound: HashMap::new(),
            known: HashMap::new(),
            stale: BTreeSet::new(),
            pulling: HashMap::new(),
            received: HashMap::new(),
            announces: HashMap::new(),
            last_stale_sync: None,
            applied_at: HashMap::new(),
        }
    }

    /// Every signer's head of `network`, for `status`.
    pub(crate) fn head_views(
        &self,
        swarm: &Swarm<Behaviour>,
        network: &NetworkName,
        now: SystemTime,
    ) -> Vec<RevocationHeadView> {
        let Some(state) = self.networks.get(network) else {
            return Vec::new();
        };
        let now_secs = unix_secs(now);
        let connected = swarm.behaviour().session.sessions().verified_peers(network);
        state
            .set
            .summaries()
            .into_iter()
            .map(|s| {
                let key = s.signer.as_bytes().to_vec();
                let peers_behind = connected
                    .iter()
                    .filter(|p| {
                        self.known
                            .get(&((*p).to_owned(), network.clone()))
                            .and_then(|heads| heads.get(&key))
                            .is_some_and(|v| *v < s.version)
                    })
                    .count();
                RevocationHeadView {
                    signer: s.signer.peer_id().to_string(),
                    version: s.version,
                    age_secs: now_secs.saturating_sub(s.issued_at),
                    peers_behind,
                    equivocations: state.set.equivocations_of(&s.signer),
                    applied_at_ms: self.applied_at.get(&(network.clone(), s.signer)).copied(),
                }
            })
            .collect()
    }

    /// Refreshes the per-network revocation gauges.
    pub(crate) fn update_metrics(&self, report: &Report, now: SystemTime) {
        let now_secs = unix_secs(now);
        for (network, state) in &self.networks {
            let label = crate::metrics::NetworkLabel {
                network: network.to_string(),
            };
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            report
                .metrics()
                .revoked_ids
                .get_or_create(&label)
                .set(gauge(state.set.len() as u64));
            if let Some(newest) = state.set.newest_issued_at() {
                report
                    .metrics()
                    .revocation_head_age
                    .get_or_create(&label)
                    .set(gauge(now_secs.saturating_sub(newest)));
            }
        }
    }

    /// Marks each network stale or fresh in the session machine: stale when its newest head
    /// is older than the descriptor's `max_revocation_staleness` and this process does not
    /// sign heads for it. While stale, asks its connected peers for newer heads (at most every
    /// `STALE_SYNC_INTERVAL`).
    pub(crate) fn check_staleness(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        max_staleness: impl Fn(&NetworkName) -> Option<std::time::Duration>,
        now: SystemTime,
    ) {
        let now_secs = unix_secs(now);
        let networks: Vec<NetworkName> = self.networks.keys().cloned().collect();
        for network in networks {
            let Some(state) = self.networks.get(&network) else {
                continue;
            };
            let signer_here = swarm
                .behaviour()
                .session
                .sessions()
                .has_delegation(&network);
            let limit = max_staleness(&network).map_or(u64::MAX, |d| d.as_secs());
            let stale = !signer_here
                && state
                    .set
                    .newest_issued_at()
                    .is_some_and(|at| now_secs.saturating_sub(at) > limit);
            let was = self.stale.contains(&network);
            if stale != was {
                if stale {
                    tracing::warn!(network = %network, max_staleness_secs = limit, "revocation heads are stale: admitting no new members until a newer head arrives");
                    report.audit(
                        AuditEvent::new(AuditKind::RevocationHead)
                            .network(&network)
                            .reason("stale")
                            .detail(format!(
                                "newest head older than max_revocation_staleness ({limit}s)"
                            )),
                    );
                    self.stale.insert(network.clone());
                } else {
                    tracing::info!(network = %network, "revocation heads are fresh again");
                    self.stale.remove(&network);
                }
                swarm.behaviour_mut().session.set_stale(&network, stale);
            }
            if stale
                && self
                    .last_stale_sync
                    .is_none_or(|t| now_secs >= t + STALE_SYNC_INTERVAL)
            {
                self.last_stale_sync = Some(now_secs);
                let heads = heads_of(&state.set);
                let peers = swarm
                    .behaviour()
                    .session
                    .sessions()
                    .verified_peers(&network);
                for peer in peers {
                    let request = RevocationRequest::Sync {
                        network: network.clone(),
                        heads: heads.clone(),
                        keep: false,
                    };
                    self.send(swarm, peer, &network, request);
                }
            }
        }
    }

    /// Remembers which head versions `peer` holds for `network` (from its `Sync` or answer).
    fn note_heads(&mut self, peer: PeerId, network: &NetworkName, heads: &[HeadVersion]) {
        if self.known.len() >= self.limits.max_requests
            && !self.known.contains_key(&(peer, network.clone()))
        {
            // Bounded: forget everything; it is refilled by the next syncs.
            self.known.clear();
        }
        self.known.insert(
            (peer, network.clone()),
            heads
                .iter()
                .map(|h| (h.signer.clone(), h.version))
                .collect(),
        );
    }

    /// Updates received from peers for `network`, and their bytes.
    pub(crate) fn received(&self, network: &NetworkName) -> (u64, u64) {
        self.received.get(network).copied().unwrap_or_default()
    }

    /// Announces received from peers for `network`, and their encoded bytes.
    pub(crate) fn announced(&self, network: &NetworkName) -> (u64, u64) {
        self.announces.get(network).copied().unwrap_or_default()
    }

    fn count_received(&mut self, network: &NetworkName, update: &SignedUpdate) {
        if self.networks.contains_key(network) {
            let entry = self.received.entry(network.clone()).or_default();
            entry.0 += 1;
            entry.1 +=
                (update.update.len() + update.credential.as_ref().map_or(0, Vec::len)) as u64;
        }
    }

    /// Whether a request of ours to `peer` waits for its answer.
    pub(crate) fn awaits(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|(p, _)| p == peer)
    }

    /// Number of revoked ids held for `network`.
    pub(crate) fn len(&self, network: &NetworkName) -> usize {
        self.networks.get(network).map_or(0, |s| s.set.len())
    }

    /// A peer proved `proof.network` on a connection: raise the issuer's floor from its token
    /// and ask the peer for what we lack.
    pub(crate) fn on_verified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        proof: &Proof,
    ) {
        let Some(state) = self.networks.get_mut(&proof.network) else {
            return;
        };
        if proof.kind == ProofKind::Member
            && proof.revocation_floor > 0
            && let Some(issuer) = proof.issuer.as_ref().and_then(PublicKey::from_peer_id)
        {
            state.set.raise_floor(issuer, proof.revocation_floor);
        }
        self.sync(swarm, peer, &proof.network, false);
    }

    /// Exchanges heads with `peer`, proven for `network` on a live connection: it answers with
    /// what we lack and we push back what it lacks. Besides on proof, routing asks for this on
    /// the connections it keeps (`keep`), when it starts keeping one and then periodically,
    /// which heals a lost push and keeps those connections open on both ends: a new stream
    /// restarts the idle timer, and the flag keeps the peer from closing the connection for its
    /// connection budget.
    pub(crate) fn sync(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        network: &NetworkName,
        keep: bool,
    ) {
        let Some(state) = self.networks.get(network) else {
            return;
        };
        let request = RevocationRequest::Sync {
            network: network.clone(),
            heads: heads_of(&state.set),
            keep,
        };
        self.send(swarm, peer, network, request);
    }

    fn send(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        network: &NetworkName,
        request: RevocationRequest,
    ) {
        if self.outbound.len() >= self.limits.max_requests {
            tracing::debug!(%peer, network = %network, "revocation request not sent: too many in flight");
            return;
        }
        let id = swarm
            .behaviour_mut()
            .session
            .revocations()
            .send_request(&peer, request);
        self.outbound.insert(id, (peer, network.clone()));
    }

    /// A head this process produced or was handed by its operator (a seednode's own update,
    /// an anchor's delegation revocation): apply it, enforce it and push it to every proven
    /// peer of the network.
    pub(crate) fn publish(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        data: &DataDir,
        network: &NetworkName,
        update: SignedUpdate,
        now: SystemTime,
    ) -> Result<u64, String> {
        let verifier = swarm.behaviour().session.verifier().clone();
        match self.accept(data, network, &update, &verifier, now)? {
            Accepted::Applied {
                signer,
                version,
                added,
            } => {
                self.enforce(
                    swarm, report, network, &signer, version, &added, "local", now,
                );
                self.push(swarm, network, &update, None);
                Ok(version)
            }
            Accepted::Known => Err("this head is not newer than the one held".to_owned()),
            Accepted::NeedSnapshot => Err(
                "this update is a delta from a version not held here; publish a snapshot"
                    .to_owned(),
            ),
        }
    }

    /// An operator hands us a signed update (an anchor's revocation file): apply it as our own
    /// and push it. Its signer must be an anchor of its network (a seednode's update needs its
    /// delegation, which travels only on the wire).
    pub(crate) fn publish_file(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        data: &DataDir,
        bytes: Vec<u8>,
        now: SystemTime,
    ) -> Result<Published, String> {
        let update = Update::from_bytes(&bytes, self.limits.max_entries_per_signer)
            .map_err(|e| format!("not a revocation update: {e}"))?;
        let head = update.head.head();
        let network = head.network.clone();
        let signer = head.signer;
        if !self.networks.contains_key(&network) {
            return Err(format!(
                "the revocation is for network {network}, which this process does not serve"
            ));
        }
        let version = self.publish(
            swarm,
            report,
            data,
            &network,
            SignedUpdate {
                update: bytes,
                credential: None,
            },
            now,
        )?;
        Ok(Published {
            network,
            signer: signer.peer_id().to_string(),
            version,
        })
    }

    /// Revocation traffic from the swarm.
    pub(crate) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        data: &DataDir,
        event: request_response::Event<RevocationRequest, RevocationResponse>,
        now: SystemTime,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => {
                let response =
                    self.on_request(swarm, report, data, peer, connection_id, request, now);
                let _ = swarm
                    .behaviour_mut()
                    .session
                    .revocations()
                    .send_response(channel, response);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, network)) = self.outbound.remove(&request_id) else {
                    return;
                };
                self.on_response(swarm, report, data, peer, &network, response, now);
                self.pulls_done(&network);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, network)) = self.outbound.remove(&request_id) {
                    self.pulls_done(&network);
                }
                tracing::debug!(%peer, %error, "revocation request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "revocation request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        data: &DataDir,
        peer: PeerId,
        connection: ConnectionId,
        request: RevocationRequest,
        now: SystemTime,
    ) -> RevocationResponse {
        let network = match &request {
            RevocationRequest::Sync { network, .. }
            | RevocationRequest::Announce { network, .. }
            | RevocationRequest::Push { network, .. } => network.clone(),
        };
        let proven = swarm
            .behaviour()
            .session
            .sessions()
            .proof(connection, &network)
            .is_some();
        if !proven || !self.networks.contains_key(&network) {
            tracing::debug!(%peer, network = %network, "revocation request for a network the peer did not prove here");
            return RevocationResponse::Refused {
                reason: ReasonCode::UnknownNetwork,
            };
        }
        match request {
            RevocationRequest::Sync { heads, .. } => {
                let answer = self.updates_for(&network, &heads);
                // After this answer the peer holds at least what we hold.
                if let RevocationResponse::Updates { heads: ours, .. } = &answer {
                    let mut merged: BTreeMap<Vec<u8>, u64> = heads
                        .iter()
                        .map(|h| (h.signer.clone(), h.version))
                        .collect();
                    for h in ours {
                        let v = merged.entry(h.signer.clone()).or_insert(0);
                        *v = (*v).max(h.version);
                    }
                    let merged: Vec<HeadVersion> = merged
                        .into_iter()
                        .map(|(signer, version)| HeadVersion { signer, version })
                        .collect();
                    self.note_heads(peer, &network, &merged);
                }
                answer
            }
            RevocationRequest::Announce { heads, .. } => {
                let size = cordon_protocol::encode(
                    &RevocationRequest::Announce {
                        network: network.clone(),
                        heads: heads.clone(),
                    },
                    usize::MAX,
                )
                .map_or(0, |b| b.len() as u64);
                let entry = self.announces.entry(network.clone()).or_default();
                entry.0 += 1;
                entry.1 += size;
                self.on_announce(swarm, peer, &network, &heads);
                RevocationResponse::Ack
            }
            RevocationRequest::Push { update, .. } => {
                self.count_received(&network, &update);
                let verifier = swarm.behaviour().session.verifier().clone();
                match self.accept(data, &network, &update, &verifier, now) {
                    Ok(Accepted::Applied {
                        signer,
                        version,
                        added,
                    }) => {
                        self.enforce(
                            swarm, report, &network, &signer, version, &added, "push", now,
                        );
                        self.announce(swarm, &network, Some(peer));
                        RevocationResponse::Ack
                    }
                    Ok(Accepted::Known) => RevocationResponse::Ack,
                    Ok(Accepted::NeedSnapshot) => {
                        let request = RevocationRequest::Sync {
                            network: network.clone(),
                            keep: false,
                            heads: self
                                .networks
                                .get(&network)
                                .map(|s| heads_of(&s.set))
                                .unwrap_or_default(),
                        };
                        self.send(swarm, peer, &network, request);
                        RevocationResponse::Ack
                    }
                    Err(detail) => {
                        refused_update(report, peer, &network, &detail);
                        RevocationResponse::Refused {
                            reason: ReasonCode::Malformed,
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        data: &DataDir,
        peer: PeerId,
        network: &NetworkName,
        response: RevocationResponse,
        now: SystemTime,
    ) {
        let RevocationResponse::Updates { updates, heads } = response else {
            return;
        };
        self.note_heads(peer, network, &heads);
        let verifier = swarm.behaviour().session.verifier().clone();
        for update in updates {
            self.count_received(network, &update);
            match self.accept(data, network, &update, &verifier, now) {
                Ok(Accepted::Applied {
                    signer,
                    version,
                    added,
                }) => {
                    self.enforce(
                        swarm, report, network, &signer, version, &added, "sync", now,
                    );
                    self.announce(swarm, network, Some(peer));
                }
                Ok(Accepted::Known | Accepted::NeedSnapshot) => {}
                Err(detail) => refused_update(report, peer, network, &detail),
            }
        }
        // Push back what the peer lacks.
        let Some(state) = self.networks.get(network) else {
            return;
        };
        let theirs: BTreeMap<Vec<u8>, u64> =
            heads.into_iter().map(|h| (h.signer, h.version)).collect();
        let mut pushes = Vec::new();
        for summary in state.set.summaries() {
            let have = theirs
                .get(summary.signer.as_bytes().as_slice())
                .copied()
                .unwrap_or(0);
            if have < summary.version
                && let Some(update) = state.set.update_for(&summary.signer, have)
            {
                pushes.push(SignedUpdate {
                    update: update.to_bytes(),
                    credential: state.credentials.get(&summary.signer).cloned(),
                });
            }
        }
        for update in pushes {
            self.send(
                swarm,
                peer,
                network,
                RevocationRequest::Push {
                    network: network.clone(),
                    update,
                },
            );
        }
    }

    /// The answer to a `Sync`: what the peer lacks, and our heads.
    fn updates_for(&self, network: &NetworkName, theirs: &[HeadVersion]) -> RevocationResponse {
        let Some(state) = self.networks.get(network) else {
            return RevocationResponse::Refused {
                reason: ReasonCode::UnknownNetwork,
            };
        };
        let theirs: BTreeMap<&[u8], u64> = theirs
            .iter()
            .map(|h| (h.signer.as_slice(), h.version))
            .collect();
        let updates = state
            .set
            .summaries()
            .into_iter()
            .filter_map(|s| {
                let have = theirs
                    .get(s.signer.as_bytes().as_slice())
                    .copied()
                    .unwrap_or(0);
                let update = state.set.update_for(&s.signer, have)?;
                Some(SignedUpdate {
                    update: update.to_bytes(),
                    credential: state.credentials.get(&s.signer).cloned(),
                })
            })
            .collect();
        RevocationResponse::Updates {
            updates,
            heads: heads_of(&state.set),
        }
    }

    /// Checks the signer is authorized for the network, then applies and persists.
    fn accept(
        &mut self,
        data: &DataDir,
        network: &NetworkName,
        signed: &SignedUpdate,
        verifier: &Verifier,
        now: SystemTime,
    ) -> Result<Accepted, String> {
        let limits = self.limits;
        let Some(state) = self.networks.get_mut(network) else {
            return Err(format!("network {network} is not one of this node's"));
        };
        let update = Update::from_bytes(&signed.update, limits.max_entries_per_signer)
            .map_err(|e| e.to_string())?;
        let signer = update.head.head().signer;
        let is_anchor = verifier
            .access()
            .network(network.as_str())
            .is_some_and(|n| n.anchors.contains(&signer));
        let credential = if is_anchor {
            None
        } else {
            let Some(credential) = &signed.credential else {
                return Err(format!(
                    "signer {signer} is not an anchor of {network} and sent no delegation"
                ));
            };
            let verdict = verifier
                .verify_delegation(credential, &signer.peer_id(), now)
                .map_err(|e| format!("signer {signer}'s delegation is refused: {e}"))?;
            if verdict.facts.network != network.as_str() {
                return Err(format!(
                    "signer {signer}'s delegation is for network {:?}",
                    verdict.facts.network
                ));
            }
            Some(credential.clone())
        };
        match state.set.apply(&update, limits.max_entries_per_signer) {
            Ok(applied) => {
                if let Some(credential) = credential {
                    state.credentials.insert(signer, credential);
                }
                if let Err(e) = save_one(data, state) {
                    // Enforced in memory all the same; the next change retries the write.
                    tracing::error!(network = %network, error = %e, "cannot persist revocation state");
                }
                Ok(Accepted::Applied {
                    signer,
                    version: applied.version,
                    added: applied.added,
                })
            }
            Err(HeadError::Repeat { .. }) => Ok(Accepted::Known),
            Err(e @ HeadError::Stale { .. }) => {
                tracing::info!(network = %network, signer = %signer, reason = %e, "older revocation head ignored");
                Ok(Accepted::Known)
            }
            Err(HeadError::Gap { .. }) => Ok(Accepted::NeedSnapshot),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `via` says how the head arrived: `local` (signed or published here), `push`, `sync`.
    #[allow(clippy::too_many_arguments)]
    fn enforce(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        network: &NetworkName,
        signer: &PublicKey,
        version: u64,
        added: &[RevocationId],
        via: &str,
        now: SystemTime,
    ) {
        let at_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.applied_at.insert((network.clone(), *signer), at_ms);
        let ids: BTreeSet<RevocationId> = added.iter().cloned().collect();
        let closed = if ids.is_empty() {
            0
        } else {
            swarm.behaviour_mut().session.revoke(&ids)
        };
        tracing::info!(network = %network, signer = %signer, version, added = ids.len(), closed, via, "revocation head applied");
        report.metrics().revocation_heads.inc();
        report.audit(
            AuditEvent::new(AuditKind::RevocationHead)
                .network(network)
                .reason("applied")
                .detail(format!(
                    "via {via}: signer {} version {version}: {} new id(s), {closed} connection(s) closed",
                    signer.peer_id(),
                    ids.len()
                )),
        );
    }

    /// A peer holds these heads: pull from it what we lack, unless a pull of that signer at
    /// that version or later is already in flight.
    fn on_announce(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        network: &NetworkName,
        heads: &[HeadVersion],
    ) {
        self.note_heads(peer, network, heads);
        let Some(state) = self.networks.get(network) else {
            return;
        };
        let mut behind = false;
        for h in heads {
            let Some(signer) = PublicKey::from_bytes(&h.signer) else {
                continue;
            };
            if state.set.version_of(&signer) >= h.version {
                continue;
            }
            let key = (network.clone(), signer);
            if self.pulling.get(&key).is_some_and(|v| *v >= h.version) {
                continue;
            }
            self.pulling.insert(key, h.version);
            behind = true;
        }
        if behind {
            let request = RevocationRequest::Sync {
                network: network.clone(),
                heads: heads_of(&state.set),
                keep: false,
            };
            self.send(swarm, peer, network, request);
        }
    }

    /// Forgets the pulls of `network` that the versions now held satisfy (a failed or useless
    /// pull is retried on the next announce).
    fn pulls_done(&mut self, network: &NetworkName) {
        let Some(state) = self.networks.get(network) else {
            return;
        };
        self.pulling
            .retain(|(n, signer), v| n != network || state.set.version_of(signer) < *v);
        // A pull that answered without reaching its version is not retried until another
        // announce; drop entries whose request is no longer in flight for this network.
        let in_flight = self.outbound.values().any(|(_, n)| n == network);
        if !in_flight {
            self.pulling.retain(|(n, _), _| n != network);
        }
    }

    /// Tells every peer proven for `network` but `except` which heads we hold now.
    fn announce(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        except: Option<PeerId>,
    ) {
        let Some(state) = self.networks.get(network) else {
            return;
        };
        let heads = heads_of(&state.set);
        let peers = swarm.behaviour().session.sessions().verified_peers(network);
        for peer in peers {
            if Some(peer) == except {
                continue;
            }
            self.send(
                swarm,
                peer,
                network,
                RevocationRequest::Announce {
                    network: network.clone(),
                    heads: heads.clone(),
                },
            );
        }
    }

    /// Sends `update` to every peer proven for `network` on a live connection but `except`.
    fn push(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        update: &SignedUpdate,
        except: Option<PeerId>,
    ) {
        let peers = swarm.behaviour().session.sessions().verified_peers(network);
        for peer in peers {
            if Some(peer) == except {
                continue;
            }
            self.send(
                swarm,
                peer,
                network,
                RevocationRequest::Push {
                    network: network.clone(),
                    update: update.clone(),
                },
            );
        }
    }
}

/// The version of `signer`'s head held in the data directory for `network` (0 if none or
/// unreadable): a seednode signs its first head after a restart above it.
pub fn held_version(data: &DataDir, network: &NetworkName, signer: &PublicKey) -> u64 {
    // Our own file, read once at start: generous caps.
    let limits = RevocationLimits {
        max_entries_per_signer: usize::MAX,
        max_state_bytes: 1 << 30,
        max_requests: 0,
    };
    match load_one(data, network, limits) {
        Ok(Some(state)) => state.set.version_of(signer),
        _ => 0,
    }
}

fn heads_of(set: &NetworkRevocations) -> Vec<HeadVersion> {
    set.summaries()
        .into_iter()
        .map(|s| HeadVersion {
            signer: s.signer.as_bytes().to_vec(),
            version: s.version,
        })
        .collect()
}

fn refused_update(report: &mut Report, peer: PeerId, network: &NetworkName, detail: &str) {
    tracing::warn!(%peer, network = %network, reason = %detail, "revocation update refused");
    let reason = if detail.contains("equivocat") {
        "equivocation"
    } else {
        "invalid"
    };
    if reason == "equivocation" {
        report.metrics().revocation_equivocations.inc();
    }
    report.audit(
        AuditEvent::new(AuditKind::RevocationHead)
            .peer(peer)
            .network(network)
            .reason(reason)
            .detail(detail),
    );
}

fn load_one(
    data: &DataDir,
    network: &NetworkName,
    limits: RevocationLimits,
) -> Result<Option<NetState>, String> {
    let Some(bytes) = data
        .load_revocations(network, limits.max_state_bytes)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let state = hex::decode(&stored.state).map_err(|e| e.to_string())?;
    let set = NetworkRevocations::from_bytes(network, &state, limits.max_entries_per_signer)
        .map_err(|e| e.to_string())?;
    let mut credentials = BTreeMap::new();
    for (key, credential) in stored.credentials {
        let key = hex::decode(key)
            .ok()
            .and_then(|k| PublicKey::from_bytes(&k))
            .ok_or("a credential's signer key is not an Ed25519 key")?;
        credentials.insert(key, hex::decode(credential).map_err(|e| e.to_string())?);
    }
    Ok(Some(NetState { set, credentials }))
}

fn save_one(data: &DataDir, state: &NetState) -> Result<(), String> {
    let stored = Stored {
        state: hex::encode(state.set.to_bytes()),
        credentials: state
            .credentials
            .iter()
            .map(|(k, c)| (hex::encode(k.as_bytes()), hex::encode(c)))
            .collect(),
    };
    let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
    data.save_revocations(state.set.network(), &bytes)
        .map_err(|e| e.to_string())
}
