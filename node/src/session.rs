//! The libp2p side of the membership session machine ([`cordon_membership::session`]).
//!
//! [`Behaviour`] owns everything whose access depends on proven membership: the
//! `/cordon/membership/2` exchange, the bounded verification pool, the gated remote-command
//! protocol and one gated Kademlia per network ([`Keyed`]). It feeds connection events,
//! presentations and verdicts to the pure machine and carries out what the machine decides:
//! presenting our tokens, answering presentations, opening and closing gates, putting proven
//! peers into (and taking them out of) their network's routing table, and closing connections.
//! What the rest of the node needs to know (verdicts for the audit, routing changes for the
//! address book, Kademlia and rpc traffic) comes out as [`Event`]s.
//!
//! Invariants (on top of the machine's):
//! - A network's Kademlia, the rpc protocol and identify are reachable on a connection only
//!   through the gates this behaviour opens, and it opens them only on the machine's word: a
//!   peer that proved nothing learns neither our listen addresses nor our protocols.
//! - A peer is inserted into a network's routing table only on the machine's `AddRoute`, with
//!   addresses learned from our own dial or the peer's identify that the network's
//!   [`AddressPolicy`] accepts, and is removed on `RemoveRoute` whether or not it is still
//!   connected.
//! - Signature verification never runs on the swarm's task and never queues without bound: only
//!   what needs no cryptography is decided here (a cached verdict, a token failing the
//!   structural pre-checks); a presentation that finds the pool full, or its source address or
//!   prefix holding its share of it, is refused as `rate_limited`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use cordon_membership::session::{
    Action, CloseReason, EndReason, Endpoint, Gate, PresentationId, Proof, Refused, Rejection,
    SessionConfig, Sessions, verify_token_cheaply,
};
use cordon_membership::{RevocationId, Verifier};
use cordon_protocol::{
    MembershipCodec, MembershipRequest, MembershipResponse, NetworkName, ReasonCode,
    RevocationCodec, RevocationRequest, RevocationResponse, RpcCodec,
};
use libp2p::core::{Endpoint as Role, Multiaddr, transport::PortUse};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
    behaviour::{ConnectionClosed, ConnectionEstablished},
};
use libp2p::{PeerId, core::ConnectedPoint, identify};

use crate::addresses::AddressPolicy;
use crate::gate::Gated;
use crate::keyed::Keyed;
use crate::verify_pool::{Done, Job, VerifyPool};
use cordon_host::clock::Clock;

/// Where an inbound connection comes from, as the verification shares count it: its address
/// (IPv4 address, IPv6 /64) and its prefix (IPv4 /24, IPv6 /48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source {
    address: IpAddr,
    prefix: IpAddr,
}

impl Source {
    fn of(addr: &Multiaddr) -> Option<Self> {
        let ip = crate::filter::ip_of(addr)?;
        Some(Self {
            address: crate::filter::limit_key(ip),
            prefix: crate::filter::prefix_key(ip),
        })
    }
}

/// Longest the behaviour sleeps before looking at the session machine's deadlines again.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

/// A network's Kademlia behind its gate.
pub type NetworkKad = Gated<kad::Behaviour<MemoryStore>>;

/// The gated protocols and the exchange, composed; [`Behaviour`] wraps it.
#[derive(libp2p::swarm::NetworkBehaviour)]
pub struct Protocols {
    /// `/cordon/membership/2`: token presentation on every connection.
    pub exchange: request_response::Behaviour<MembershipCodec>,
    /// `/cordon/rpc/1`: remote commands, closed until the peer proved a network.
    pub rpc: Gated<request_response::Behaviour<RpcCodec>>,
    /// `/cordon/revocations/1`: revocation heads and entries, behind the same gate as rpc
    /// (the handler checks the network per message).
    pub revocations: Gated<request_response::Behaviour<RevocationCodec>>,
    /// `/cordon/<network>/kad/1.0.0`: one per network, each closed until the peer proved it.
    pub kad: Keyed<NetworkName, NetworkKad>,
    /// Identify, behind the same gate as rpc: listen addresses and protocols go only to peers
    /// that proved a network, and theirs feed the routing tables.
    pub identify: Gated<identify::Behaviour>,
}

impl std::fmt::Debug for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protocols")
            .field("kad", &self.kad)
            .finish_non_exhaustive()
    }
}

/// Bounds of the behaviour besides the machine's own.
#[derive(Debug, Clone)]
pub struct Config {
    /// The session machine's bounds and timeouts.
    pub session: SessionConfig,
    /// Verifications queued or running at once; more are refused as `rate_limited`.
    pub max_pending_verifications: usize,
    /// Of those, most from one inbound source address (IPv4 address, IPv6 /64).
    pub verifications_per_address: usize,
    /// Of those, most from one inbound source prefix (IPv4 /24, IPv6 /48).
    pub verifications_per_prefix: usize,
    /// Verification threads.
    pub verify_workers: usize,
    /// Addresses kept per peer for its routing entry.
    pub max_addrs_per_peer: usize,
    /// Which addresses may enter each network's table.
    pub addresses: AddressPolicy,
}

/// What the rest of the node learns from the behaviour.
#[derive(Debug)]
pub enum Event {
    /// A peer proved a network on a connection.
    Verified {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What it proved.
        proof: Proof,
    },
    /// A presentation refused one or more networks (one event per presentation).
    Refused {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What was refused and why.
        refused: Vec<Refused>,
    },
    /// A proof ended on a live connection.
    Ended {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The network.
        network: NetworkName,
        /// Why.
        reason: EndReason,
    },
    /// The behaviour closed a connection.
    Closed {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Why.
        reason: CloseReason,
    },
    /// A peer entered a network's routing table with these addresses.
    Routed {
        /// The peer.
        peer: PeerId,
        /// The network.
        network: NetworkName,
        /// Its addresses as inserted.
        addrs: Vec<Multiaddr>,
    },
    /// A peer left a network's routing table.
    Unrouted {
        /// The peer.
        peer: PeerId,
        /// The network.
        network: NetworkName,
        /// Why.
        reason: EndReason,
    },
    /// A peer answered our presentation.
    Answered {
        /// The peer.
        peer: PeerId,
        /// Its verdicts on our tokens.
        response: MembershipResponse,
    },
    /// A verification job finished, taking this long.
    VerificationTime(Duration),
    /// A network's Kademlia reported something.
    Kad {
        /// The network.
        network: NetworkName,
        /// The event.
        event: kad::Event,
    },
    /// A verified peer's identify arrived on a connection (its addresses are in use).
    Identified {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
    /// Remote-command traffic.
    Rpc(request_response::Event<cordon_protocol::RpcRequest, cordon_protocol::RpcResponse>),
    /// Revocation traffic.
    Revocation(request_response::Event<RevocationRequest, RevocationResponse>),
}

/// See the [module documentation](self).
pub struct Behaviour {
    protocols: Protocols,
    sessions: Sessions<ConnectionId>,
    pool: VerifyPool,
    clock: Clock,
    max_addrs_per_peer: usize,
    addresses: AddressPolicy,
    /// Peers whose claimed addresses were all refused, told once per connection lifetime.
    unaddressable: std::collections::HashSet<PeerId>,
    /// Answer channels of presentations being verified.
    channels: HashMap<PresentationId, (ConnectionId, ResponseChannel<MembershipResponse>)>,
    /// Answers decided and not sent yet: they go out only once the gate commands decided with
    /// them have reached their connections (see [`Behaviour::poll`]).
    answers: Vec<(ResponseChannel<MembershipResponse>, MembershipResponse)>,
    /// Addresses of connected peers: where we dialed them and what their identify listed.
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Inbound connections' source address and prefix keys (see [`Source`]).
    sources: HashMap<ConnectionId, Source>,
    /// Verification jobs in the pool per source address and per source prefix, and each job's
    /// source.
    verifying_per_address: HashMap<IpAddr, usize>,
    verifying_per_prefix: HashMap<IpAddr, usize>,
    job_sources: HashMap<PresentationId, Source>,
    verifications_per_address: usize,
    verifications_per_prefix: usize,
    events: VecDeque<Event>,
    to_swarm: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    timer: Option<(SystemTime, Pin<Box<tokio::time::Sleep>>)>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("connections", &self.sessions.connections())
            .field("verifying", &self.sessions.verifying())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Wraps the protocols. `networks` are the local networks with their `strict` flag.
    pub fn new(
        protocols: Protocols,
        networks: impl IntoIterator<Item = (NetworkName, bool)>,
        verifier: Arc<Verifier>,
        clock: Clock,
        config: Config,
    ) -> Self {
        Self {
            protocols,
            sessions: Sessions::new(config.session, networks),
            pool: VerifyPool::new(
                verifier,
                clock.clone(),
                config.max_pending_verifications,
                config.verify_workers,
            ),
            clock,
            max_addrs_per_peer: config.max_addrs_per_peer,
            addresses: config.addresses,
            unaddressable: std::collections::HashSet::new(),
            channels: HashMap::new(),
            answers: Vec::new(),
            addrs: HashMap::new(),
            sources: HashMap::new(),
            verifying_per_address: HashMap::new(),
            verifying_per_prefix: HashMap::new(),
            job_sources: HashMap::new(),
            verifications_per_address: config.verifications_per_address,
            verifications_per_prefix: config.verifications_per_prefix,
            events: VecDeque::new(),
            to_swarm: VecDeque::new(),
            timer: None,
            waker: None,
        }
    }

    /// The session machine (read-only: every change goes through this behaviour).
    pub fn sessions(&self) -> &Sessions<ConnectionId> {
        &self.sessions
    }

    /// The verifier shared with the pool.
    pub fn verifier(&self) -> &Arc<Verifier> {
        self.pool.verifier()
    }

    /// The Kademlia of `network`.
    pub fn kad(&mut self, network: &NetworkName) -> Option<&mut kad::Behaviour<MemoryStore>> {
        self.protocols.kad.get_mut(network).map(Gated::inner_mut)
    }

    /// The networks with a Kademlia, in configuration order.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkName> {
        self.protocols.kad.iter().map(|(n, _)| n)
    }

    /// The remote-command protocol (send requests and responses through it).
    pub fn rpc(&mut self) -> &mut request_response::Behaviour<cordon_protocol::RpcCodec> {
        self.protocols.rpc.inner_mut()
    }

    /// The revocation protocol (send requests and responses through it).
    pub fn revocations(&mut self) -> &mut request_response::Behaviour<RevocationCodec> {
        self.protocols.revocations.inner_mut()
    }

    /// Sets (or clears) our membership of `network`; a new token is presented where the
    /// network is shared.
    pub fn set_membership(&mut self, network: &NetworkName, token: Option<Vec<u8>>) {
        self.sessions.set_membership(network, token);
        self.apply();
    }

    /// Marks `network`'s revocations stale (no new members admitted) or fresh.
    pub fn set_stale(&mut self, network: &NetworkName, stale: bool) {
        self.sessions.set_stale(network, stale);
    }

    /// Sets the delegation this seednode presents for `network`.
    pub fn set_delegation(&mut self, network: &NetworkName, token: Option<Vec<u8>>) {
        self.sessions.set_delegation(network, token);
    }

    /// Records that `peer` is wanted for `network` (about to be dialed, or found by a lookup);
    /// our token is presented to it on outbound connections.
    pub fn dial_intent(&mut self, peer: PeerId, network: &NetworkName) -> bool {
        let recorded = self.sessions.dial_intent(peer, network);
        self.apply();
        recorded
    }

    /// Revokes `ids`: the verifier refuses them from now on, and every connection and routing
    /// entry that proved something with them ends. Returns the connections closed.
    pub fn revoke(&mut self, ids: &std::collections::BTreeSet<RevocationId>) -> usize {
        self.pool.verifier().revoke(ids.iter().cloned());
        let closed = self.sessions.revoke(ids, self.clock.now());
        self.apply();
        closed
    }

    /// `connection`'s peer has a join request pending with our join service: see
    /// [`Sessions::defer_auth`].
    pub fn defer_auth(&mut self, connection: ConnectionId) {
        self.sessions.defer_auth(connection, self.clock.now());
        self.apply();
    }

    /// Replaces the access list (the descriptor was reloaded): the verifier answers under the
    /// new list from now on, and every connection and routing entry whose token chains to an
    /// anchor no longer trusted for its network ends. Returns the connections closed.
    pub fn set_access(&mut self, access: cordon_membership::AccessList) -> usize {
        // Names in an access list built from a descriptor are valid network names.
        let anchors = access
            .networks()
            .filter_map(|n| {
                let name = NetworkName::new(&n.name).ok()?;
                Some((name, n.anchors.iter().copied().collect()))
            })
            .collect();
        self.pool.verifier().set_access(access);
        let closed = self.sessions.set_trusted_anchors(anchors, self.clock.now());
        self.apply();
        closed
    }

    /// Listen addresses a peer announced (identify), already filtered. Routes the peer where
    /// it is proven but could not be inserted for want of an address.
    fn set_listen_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if !self.addrs.contains_key(&peer) {
            // Not connected (any more): nothing to route with these.
            return;
        }
        let known = self.addrs.entry(peer).or_default();
        let before = known.len();
        for a in addrs {
            if known.len() >= self.max_addrs_per_peer {
                break;
            }
            if !known.contains(&a) {
                known.push(a);
            }
        }
        if known.len() == before {
            // Identify repeats itself (pushes); nothing new to route with.
            return;
        }
        for network in self.sessions.routed_networks(&peer) {
            self.insert_route(peer, &network);
        }
    }

    /// Verifies a presentation's tokens. What can be decided without signature checks is
    /// decided at once, on this thread: a membership verified before (a cached verdict; members
    /// reconnecting never wait behind strangers), or a token that fails the structural
    /// pre-checks. The rest goes to the pool, within the presenter's share of it: an inbound
    /// source address or prefix already holding its share is refused `rate_limited`, as is any
    /// presentation when the pool is full.
    fn verify(
        &mut self,
        id: PresentationId,
        peer: PeerId,
        connection: ConnectionId,
        tokens: Vec<cordon_protocol::PresentedToken>,
    ) {
        let now = self.clock.now();
        let verifier = self.pool.verifier().clone();
        let known: Vec<Option<Result<Proof, Rejection>>> = tokens
            .iter()
            .map(|t| verify_token_cheaply(&verifier, &peer, t, now))
            .collect();
        if known.iter().all(Option::is_some) {
            self.sessions
                .handle_verdicts(id, known.into_iter().flatten().collect(), now);
            return;
        }
        let source = self.sources.get(&connection).copied();
        let over_share = source.is_some_and(|s| {
            self.verifying_per_address
                .get(&s.address)
                .copied()
                .unwrap_or(0)
                >= self.verifications_per_address
                || self
                    .verifying_per_prefix
                    .get(&s.prefix)
                    .copied()
                    .unwrap_or(0)
                    >= self.verifications_per_prefix
        });
        let job = Job {
            id,
            peer,
            tokens,
            known,
        };
        let submitted = if over_share {
            Err(Box::new(job))
        } else {
            self.pool.submit(job)
        };
        match submitted {
            Ok(()) => {
                if let Some(s) = source {
                    *self.verifying_per_address.entry(s.address).or_insert(0) += 1;
                    *self.verifying_per_prefix.entry(s.prefix).or_insert(0) += 1;
                    self.job_sources.insert(id, s);
                }
            }
            Err(job) => {
                let why = if over_share {
                    "this source's share of the verification queue is taken"
                } else {
                    "verification queue full"
                };
                // Logged (once per source and window) and audited as the refusal it becomes.
                tracing::debug!(%peer, reason = "rate_limited", detail = why, "refusing presentation");
                let verdicts = job
                    .known
                    .into_iter()
                    .map(|k| k.unwrap_or_else(|| Err(Rejection::new(ReasonCode::RateLimited, why))))
                    .collect();
                self.sessions.handle_verdicts(job.id, verdicts, now);
            }
        }
    }

    /// Carries out the machine's actions.
    fn apply(&mut self) {
        let mut any = false;
        while let Some(action) = self.sessions.poll_action() {
            any = true;
            match action {
                Action::Present { peer, request, .. } => {
                    self.protocols.exchange.send_request(&peer, request);
                }
                Action::Verify {
                    id,
                    peer,
                    connection,
                    tokens,
                } => self.verify(id, peer, connection, tokens),
                Action::Respond { id, response, .. } => {
                    if let Some((_, channel)) = self.channels.remove(&id) {
                        self.answers.push((channel, response));
                    }
                }
                Action::OpenGate {
                    peer,
                    connection,
                    gate,
                } => self.set_gate(peer, connection, &gate, true),
                Action::CloseGate {
                    peer,
                    connection,
                    gate,
                } => self.set_gate(peer, connection, &gate, false),
                Action::AddRoute { peer, network } => self.insert_route(peer, &network),
                Action::RemoveRoute {
                    peer,
                    network,
                    reason,
                } => {
                    if let Some(kad) = self.kad(&network) {
                        kad.remove_peer(&peer);
                    }
                    self.events.push_back(Event::Unrouted {
                        peer,
                        network,
                        reason,
                    });
                }
                Action::CloseConnection {
                    peer,
                    connection,
                    reason,
                } => {
                    self.to_swarm.push_back(ToSwarm::CloseConnection {
                        peer_id: peer,
                        connection: CloseConnection::One(connection),
                    });
                    self.events.push_back(Event::Closed {
                        peer,
                        connection,
                        reason,
                    });
                }
                Action::Verified {
                    peer,
                    connection,
                    proof,
                } => self.events.push_back(Event::Verified {
                    peer,
                    connection,
                    proof,
                }),
                Action::Refused {
                    peer,
                    connection,
                    refused,
                } => self.events.push_back(Event::Refused {
                    peer,
                    connection,
                    refused,
                }),
                Action::Ended {
                    peer,
                    connection,
                    network,
                    reason,
                } => self.events.push_back(Event::Ended {
                    peer,
                    connection,
                    network,
                    reason,
                }),
            }
        }
        if any && let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn set_gate(&mut self, peer: PeerId, connection: ConnectionId, gate: &Gate, open: bool) {
        let result = match gate {
            Gate::Rpc => {
                let p = &mut self.protocols;
                let (rpc, revocations, identify) =
                    (&mut p.rpc, &mut p.revocations, &mut p.identify);
                if open {
                    rpc.open(peer, connection)
                        .and_then(|()| revocations.open(peer, connection))
                        .and_then(|()| identify.open(peer, connection))
                } else {
                    rpc.close(peer, connection)
                        .and_then(|()| revocations.close(peer, connection))
                        .and_then(|()| identify.close(peer, connection))
                }
            }
            Gate::Network(network) => match self.protocols.kad.get_mut(network) {
                Some(kad) if open => kad.open(peer, connection),
                Some(kad) => kad.close(peer, connection),
                None => return,
            },
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, open, "gate unchanged");
        }
    }

    /// Inserts a routed peer with every address we know for it that `network` accepts.
    fn insert_route(&mut self, peer: PeerId, network: &NetworkName) {
        let addrs: Vec<Multiaddr> = self
            .addrs
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|a| self.addresses.accepts(a, network))
            .cloned()
            .collect();
        if addrs.is_empty() {
            // Listener side before identify: routed once its listen addresses arrive (never,
            // if the network accepts none of them).
            return;
        }
        if let Some(kad) = self.kad(network) {
            for a in &addrs {
                kad.add_address(&peer, a.clone());
            }
        }
        self.events.push_back(Event::Routed {
            peer,
            network: network.clone(),
            addrs,
        });
    }

    fn on_protocols_event(&mut self, event: ProtocolsEvent) {
        match event {
            ProtocolsEvent::Exchange(request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            }) => self.on_presentation(peer, connection_id, request, channel),
            ProtocolsEvent::Exchange(request_response::Event::Message {
                peer,
                connection_id,
                message: request_response::Message::Response { response, .. },
            }) => {
                // The peer accepted us, so its identify gate is open (an answer leaves only
                // once its gate commands reached the connection): our identify request may go
                // once our own gate is open, that is once we verified the peer's token (it
                // came with this answer). Sent earlier it would be refused, and identify asks
                // again only after minutes.
                if response
                    .results
                    .iter()
                    .any(|r| r.outcome == cordon_protocol::Outcome::Accepted)
                {
                    let _ = self.protocols.identify.release(peer, connection_id);
                }
                self.events.push_back(Event::Answered {
                    peer,
                    response: response.clone(),
                });
                let now = self.clock.now();
                if let Some(id) = self.sessions.handle_answer(connection_id, response, now) {
                    tracing::trace!(%peer, %id, "verifying the tokens of an answer");
                }
                self.apply();
            }
            ProtocolsEvent::Exchange(request_response::Event::InboundFailure {
                peer,
                connection_id,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "membership request failed");
                // An oversized or undecodable presentation is a failed presentation too.
                if let request_response::InboundFailure::Io(e) = &error {
                    self.sessions
                        .handle_undecodable(connection_id, e.kind().to_string());
                    self.apply();
                }
            }
            ProtocolsEvent::Exchange(request_response::Event::OutboundFailure {
                peer,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "membership presentation failed");
            }
            ProtocolsEvent::Exchange(request_response::Event::ResponseSent { .. }) => {}
            ProtocolsEvent::Rpc(event) => self.events.push_back(Event::Rpc(event)),
            ProtocolsEvent::Revocations(event) => {
                self.events.push_back(Event::Revocation(event));
            }
            ProtocolsEvent::Kad((network, event)) => {
                self.events.push_back(Event::Kad { network, event });
            }
            ProtocolsEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            }) => self.on_identify(peer_id, connection_id, info.listen_addrs),
            // The peer asked for our identify, which its gate lets out only once open: it
            // verified us, so ours is answered too. This is how the side that answered a
            // presentation (and so is never told it was accepted) learns it may ask.
            ProtocolsEvent::Identify(identify::Event::Sent {
                peer_id,
                connection_id,
            }) => {
                let _ = self.protocols.identify.release(peer_id, connection_id);
            }
            ProtocolsEvent::Identify(_) => {}
        }
    }

    /// A verified peer's identify: the addresses it claims that some network here accepts.
    fn on_identify(&mut self, peer: PeerId, connection: ConnectionId, claimed: Vec<Multiaddr>) {
        let count = claimed.len();
        let accepted: Vec<Multiaddr> = claimed
            .into_iter()
            .map(|a| without_peer_id(&a))
            .filter(|a| self.addresses.accepts_any(a))
            .take(self.max_addrs_per_peer)
            .collect();
        if accepted.is_empty() && count > 0 && self.unaddressable.insert(peer) {
            tracing::info!(
                %peer,
                claimed = count,
                reason = "addresses_refused",
                "a verified peer claims no address this node's networks accept (private ranges \
                 need private_addresses = true in the descriptor); it is not routed"
            );
        }
        self.set_listen_addrs(peer, accepted);
        self.events
            .push_back(Event::Identified { peer, connection });
    }

    /// Replaces which networks accept private-range addresses (a reloaded descriptor).
    pub fn set_private_addresses(&mut self, networks: impl IntoIterator<Item = NetworkName>) {
        self.addresses.set_private(networks);
    }

    fn on_presentation(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: MembershipRequest,
        channel: ResponseChannel<MembershipResponse>,
    ) {
        let now = self.clock.now();
        match self.sessions.handle_presentation(connection, request, now) {
            Some(id) => {
                self.channels.insert(id, (connection, channel));
            }
            None => tracing::debug!(%peer, "presentation on a closing connection dropped"),
        }
        self.apply();
    }

    fn on_done(&mut self, done: Done) {
        if let Some(s) = self.job_sources.remove(&done.id) {
            release(&mut self.verifying_per_address, &s.address);
            release(&mut self.verifying_per_prefix, &s.prefix);
        }
        self.events.push_back(Event::VerificationTime(done.elapsed));
        self.sessions
            .handle_verdicts(done.id, done.verdicts, self.clock.now());
        self.apply();
    }

    /// Re-arms the timer for the machine's next deadline.
    fn arm_timer(&mut self) {
        let next = self.sessions.poll_timeout();
        match (next, &self.timer) {
            (None, _) => self.timer = None,
            (Some(at), Some((armed, _))) if *armed == at => {}
            (Some(at), _) => {
                // Capped, so a wall-clock jump (or a test moving the clock) is noticed within
                // a second rather than when a stale sleep ends.
                let wait = at
                    .duration_since(self.clock.now())
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_TIMER_SLEEP);
                self.timer = Some((at, Box::pin(tokio::time::sleep(wait))));
            }
        }
    }
}

fn release(counts: &mut HashMap<IpAddr, usize>, key: &IpAddr) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Strips a trailing `/p2p/<peer>` so the address can go into a routing table.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Protocols>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.protocols
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.protocols.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Role,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.protocols.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Role,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.protocols.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.protocols.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                let (role, dialed) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => {
                        (Endpoint::Dialer, Some(without_peer_id(address)))
                    }
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        if let Some(source) = Source::of(send_back_addr) {
                            self.sources.insert(connection_id, source);
                        }
                        (Endpoint::Listener, None)
                    }
                };
                let known = self.addrs.entry(peer_id).or_default();
                if let Some(a) = dialed
                    && !known.contains(&a)
                    && known.len() < self.max_addrs_per_peer
                    && self.addresses.accepts_any(&a)
                {
                    known.push(a);
                }
                // A network's Kademlia that dialed this connection wants that network's token.
                let dialed_for: Vec<NetworkName> = self
                    .protocols
                    .kad
                    .iter()
                    .filter(|(_, kad)| kad.dialed_by_inner(connection_id))
                    .map(|(n, _)| n.clone())
                    .collect();
                self.sessions.handle_established(
                    connection_id,
                    peer_id,
                    role,
                    dialed_for,
                    self.clock.now(),
                );
                self.apply();
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => {
                self.sessions.handle_closed(connection_id);
                self.sources.remove(&connection_id);
                self.channels.retain(|_, (c, _)| *c != connection_id);
                self.answers.retain(|(channel, _)| channel.is_open());
                if remaining_established == 0 {
                    self.addrs.remove(&peer_id);
                    self.unaddressable.remove(&peer_id);
                }
                self.apply();
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.protocols
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        loop {
            if let Some(out) = self.to_swarm.pop_front() {
                return Poll::Ready(out);
            }
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            if let Poll::Ready(Some(done)) = self.pool.poll_done(cx) {
                self.on_done(done);
                continue;
            }
            if let Some((_, sleep)) = &mut self.timer
                && sleep.as_mut().poll(cx).is_ready()
            {
                self.timer = None;
                self.sessions.handle_timeout(self.clock.now());
                self.apply();
                self.arm_timer();
                continue;
            }
            match self.protocols.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_protocols_event(event);
                    self.arm_timer();
                    continue;
                }
                Poll::Ready(other) => {
                    #[allow(clippy::unreachable)]
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent is matched above")),
                    );
                }
                Poll::Pending => {}
            }
            // Every gate command is with the swarm now, which hands each to its connection
            // before polling us again; a request-response answer, though, goes straight to the
            // connection. Sending answers only now makes a connection apply "open" before it
            // writes "accepted", so a peer may use a gated protocol as soon as it reads it.
            for (channel, response) in self.answers.drain(..) {
                let _ = self.protocols.exchange.send_response(channel, response);
            }
            self.arm_timer();
            if let Some((_, sleep)) = &mut self.timer
                && sleep.as_mut().poll(cx).is_ready()
            {
                continue;
            }
            return Poll::Pending;
        }
    }
}
