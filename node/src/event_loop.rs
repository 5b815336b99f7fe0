//! The event loop: the one owner of the swarm.
//!
//! It runs the membership exchange on every connection, opens each network's Kademlia gate for a
//! peer only once that peer's membership of the network verified on that connection, drives the
//! join client (a node without a token asks a verified seednode, then polls), hands join
//! requests to the join service when this process is a seednode, and answers the control socket.
//!
//! Token verification runs on a bounded pool of blocking workers; when the pool's queue is full a
//! presentation is refused as `rate_limited` rather than queued without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use cordon_membership::{RefusalCode, SecretKey, Verifier, VerifierConfig};
use cordon_protocol::{
    Command, DenyReason, JoinMessage, JoinReply, JoinRequest, MembershipRequest,
    MembershipResponse, NetworkName, NetworkResult, Outcome, PresentedToken, ReasonCode,
    RpcErrorCode, RpcRequest, RpcResponse, RpcResult, SignedRecord, TokenKind,
};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::kad::store::RecordStore as _;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::audit::{AuditConfig, AuditEvent, AuditKind, AuditLog};
use crate::config::NodeConfig;
use crate::control::{self, ControlLimits};
use crate::datadir::{AddressEntry, DataDir, PendingJoin};
use crate::descriptor::{NetworkEntry, bootstrap_peer};
use crate::filter::{BanTarget, FilterEvent, FilterRules, ip_of};
use crate::metrics::Metrics;
use crate::ratelimit::KeyedLimiter;
use crate::rpc::{Call, Handler, Local, Policy, PolicyConfig, RecordStore, RecordStoreConfig};
use crate::service::{Delivery, JoinService};
use crate::swarm::{Behaviour, BehaviourEvent};

/// `node call`s waiting for their answer at once.
const MAX_CALLS_IN_FLIGHT: usize = 64;

/// Times a `node call` is sent again when the peer does not accept rpc on the connection yet
/// (its gate opens a moment after it verified us), one housekeeping tick apart.
const CALL_ATTEMPTS: u8 = 5;

/// A `node call` waiting for its answer.
#[derive(Debug)]
struct PendingCall {
    reply: tokio::sync::oneshot::Sender<Value>,
    peer: PeerId,
    request: RpcRequest,
    attempts: u8,
}

/// Peers whose dial intent is remembered before stale entries are dropped.
const MAX_DIAL_INTENTS: usize = 4096;

/// Our own membership of one network.
#[derive(Debug, Clone)]
struct OwnToken {
    bytes: Vec<u8>,
    expires_at: SystemTime,
    roles: Vec<String>,
}

/// Per-network state.
#[derive(Debug)]
struct Net {
    name: NetworkName,
    slot: usize,
    entry: NetworkEntry,
    token: Option<OwnToken>,
    /// Networks this process serves as a seednode.
    serving: bool,
    pending_join: Option<PendingJoin>,
    join_in_flight: Option<OutboundRequestId>,
    /// An operator denied our request: stop asking until restart.
    denied: bool,
    /// When we last asked to renew a still-valid token (renewals are retried at most once a
    /// minute).
    last_renewal: Option<Instant>,
}

/// What a peer proved on one connection for one network.
#[derive(Debug, Clone, Copy)]
struct Proven {
    expires_at: SystemTime,
    seednode: bool,
}

/// Roles and explicit rights a peer proved on one connection for one network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Grants {
    roles: Vec<String>,
    rights: Vec<String>,
}

/// Grants per network on one connection (kept beside [`Proven`], which is Copy).
type ProvenRoles = BTreeMap<NetworkName, Grants>;

/// Per-connection state.
#[derive(Debug)]
struct Conn {
    peer: PeerId,
    dialed: Option<Multiaddr>,
    established: Instant,
    proven: BTreeMap<NetworkName, Proven>,
    roles: ProvenRoles,
    presented: BTreeSet<NetworkName>,
    remote: Multiaddr,
}

/// A finished verification, sent back from a worker.
#[derive(Debug)]
struct Verified {
    peer: PeerId,
    connection: ConnectionId,
    channel: ResponseChannel<MembershipResponse>,
    results: Vec<NetworkResult>,
    proven: Vec<(NetworkName, Proven, Grants)>,
    refusals: Vec<(NetworkName, ReasonCode, String)>,
    elapsed: Duration,
}

/// Runs a node (or, with a service, a seednode) until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    identity: SecretKey,
    service: Option<Box<dyn JoinService>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (data, key) = DataDir::open(&config.data_dir)
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    anyhow::ensure!(
        key.public() == identity.public(),
        "the identity handed to run is not the one in {}",
        config.data_dir.display()
    );
    let mut nets = Vec::new();
    for (slot, name) in config.networks.iter().enumerate() {
        let entry = config
            .descriptor
            .network(name)
            .with_context(|| {
                format!(
                    "network {name} is not in the networks file; add a [[network]] entry for it"
                )
            })?
            .clone();
        nets.push(Net {
            name: name.clone(),
            slot,
            entry,
            token: None,
            serving: false,
            pending_join: None,
            join_in_flight: None,
            denied: false,
            last_renewal: None,
        });
    }
    if let Some(service) = &service {
        for d in service.delegations() {
            if let Some(net) = nets.iter_mut().find(|n| n.name == d.network) {
                net.serving = true;
            }
        }
    }
    let access = config
        .descriptor
        .access_list()
        .context("building the access list from the networks file")?;
    let verifier = Arc::new(Verifier::new(VerifierConfig::default(), access));
    let rules = match &config.filter_file {
        Some(path) => FilterRules::load(path)?,
        None => FilterRules::default()
            .with_unlimited_ip("127.0.0.1/32".parse().context("loopback network")?)
            .with_unlimited_ip("::1/128".parse().context("loopback network")?),
    };
    config
        .rate_limits
        .validate()
        .context("invalid rate limits")?;
    let policy = match &config.policy_file {
        Some(path) => Policy::from_file(path, &PolicyConfig::default())?,
        None => Policy::default_policy(&PolicyConfig::default())?,
    };
    let protocol_limits = cordon_protocol::Limits::default();
    let rpc = Handler::new(
        protocol_limits.clone(),
        policy,
        RecordStore::new(RecordStoreConfig::default(), protocol_limits),
    );
    let max_keys = config.rate_limits.max_tracked_keys;
    let rpc_per_peer = KeyedLimiter::new(config.rate_limits.rpc_per_peer, max_keys);
    let rpc_per_command = KeyedLimiter::new(config.rate_limits.rpc_per_command, max_keys);
    let mut swarm = crate::swarm::build_with(
        identity.libp2p_keypair(),
        &config.networks,
        &config.limits,
        rules,
        &config.rate_limits,
    )?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }

    let (control_tx, control_rx) = mpsc::channel(ControlLimits::default().queue);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let socket = data.control_socket();
    let control_task = {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            control::serve(&socket, ControlLimits::default(), control_tx, stopped).await
        })
    };
    let audit = AuditLog::open(&data.audit_log(), AuditConfig::default())
        .context("opening the audit log")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    if let Some(addr) = config.metrics {
        let mut stop_rx = stop_rx.clone();
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        let bound = crate::metrics::serve(addr, Arc::new(registry), stopped)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(addr = %bound, "metrics endpoint listening");
    }
    let workers = config.limits.max_pending_verifications.max(1);
    let (verified_tx, verified_rx) = mpsc::channel(workers);
    let mut event_loop = EventLoop {
        local: identity.peer_id(),
        swarm,
        verifier,
        data,
        config,
        nets,
        conns: HashMap::new(),
        identify_addrs: HashMap::new(),
        intents: HashMap::new(),
        service,
        verified_tx,
        verify_slots: Arc::new(tokio::sync::Semaphore::new(workers)),
        cpu_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        deliveries_in_flight: HashMap::new(),
        listen_addrs: Vec::new(),
        address_book: BTreeMap::new(),
        address_book_dirty: false,
        started: Instant::now(),
        stats: Stats::default(),
        metrics,
        audit,
        rpc,
        rpc_per_peer,
        rpc_per_command,
        calls_in_flight: HashMap::new(),
        calls_to_retry: Vec::new(),
        pending_gets: HashMap::new(),
        keypair: identity.libp2p_keypair(),
        record_seq: 0,
    };
    event_loop.cpu_slots = Arc::new(tokio::sync::Semaphore::new(
        event_loop.config.limits.verify_workers.max(1),
    ));
    event_loop.load_state();
    let result = event_loop.run(control_rx, verified_rx, shutdown).await;
    let _ = stop_tx.send(true);
    event_loop.save_address_book();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), control_task).await {
        tracing::warn!(error = %e, "control socket")
    }
    result
}

#[derive(Debug, Default)]
struct Stats {
    verified: u64,
    refused: u64,
    rate_limited: u64,
    auth_timeouts: u64,
}

struct EventLoop {
    local: PeerId,
    swarm: Swarm<Behaviour>,
    verifier: Arc<Verifier>,
    data: DataDir,
    config: NodeConfig,
    nets: Vec<Net>,
    conns: HashMap<ConnectionId, Conn>,
    identify_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Networks we dialed a peer for, so we present only those tokens to it.
    intents: HashMap<PeerId, BTreeSet<NetworkName>>,
    service: Option<Box<dyn JoinService>>,
    verified_tx: mpsc::Sender<Verified>,
    /// Bounds verifications queued or running.
    verify_slots: Arc<tokio::sync::Semaphore>,
    /// Bounds verifications running at once (CPU).
    cpu_slots: Arc<tokio::sync::Semaphore>,
    deliveries_in_flight: HashMap<OutboundRequestId, i64>,
    listen_addrs: Vec<Multiaddr>,
    address_book: BTreeMap<PeerId, AddressEntry>,
    address_book_dirty: bool,
    started: Instant,
    stats: Stats,
    metrics: Metrics,
    audit: AuditLog,
    rpc: Handler,
    rpc_per_peer: KeyedLimiter<PeerId>,
    rpc_per_command: KeyedLimiter<(PeerId, &'static str)>,
    calls_in_flight: HashMap<OutboundRequestId, PendingCall>,
    /// Calls refused because the peer's gate had not opened yet, re-sent on the next tick.
    calls_to_retry: Vec<PendingCall>,
    /// `dht_get`s waiting for a Kademlia lookup, at most [`MAX_CALLS_IN_FLIGHT`].
    pending_gets: HashMap<kad::QueryId, (ResponseChannel<RpcResponse>, NetworkName)>,
    keypair: libp2p::identity::Keypair,
    record_seq: u64,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reason_code(code: RefusalCode) -> ReasonCode {
    code.as_str().parse().unwrap_or(ReasonCode::Internal)
}

impl EventLoop {
    /// Records a security event; a failing audit log is reported but never stops the node.
    fn audit(&mut self, event: AuditEvent) {
        if let Err(e) = self.audit.append(event, SystemTime::now()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    fn net_index(&self, name: &NetworkName) -> Option<usize> {
        self.nets.iter().position(|n| &n.name == name)
    }

    /// Loads our tokens, pending joins and the address book; drops tokens that no longer verify.
    fn load_state(&mut self) {
        let now = SystemTime::now();
        match self.data.tokens() {
            Ok(tokens) => {
                for (network, bytes) in tokens {
                    let Some(i) = self.net_index(&network) else {
                        continue;
                    };
                    match self.verifier.verify_membership(&bytes, &self.local, now) {
                        Ok(v) => {
                            tracing::info!(network = %network, expires_at = unix(v.expires_at), "loaded membership token");
                            self.nets[i].token = Some(OwnToken {
                                bytes,
                                expires_at: v.expires_at,
                                roles: v.roles,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(network = %network, reason = %e.code(), "stored token no longer verifies; requesting a new one");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read stored tokens"),
        }
        match self.data.load_pending_joins() {
            Ok(joins) => {
                for join in joins {
                    if let Some(i) = self.net_index(&join.network)
                        && self.nets[i].token.is_none()
                    {
                        self.nets[i].pending_join = Some(join);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read pending join requests"),
        }
        match self.data.load_address_book() {
            Ok(entries) => {
                for e in entries {
                    if let Ok(peer) = e.peer.parse::<PeerId>() {
                        self.address_book.insert(peer, e);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the address book"),
        }
    }

    async fn run(
        &mut self,
        mut control_rx: mpsc::Receiver<control::ControlRequest>,
        mut verified_rx: mpsc::Receiver<Verified>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut shutdown = Box::pin(shutdown);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut poll = tokio::time::interval(self.config.limits.poll_interval);
        let mut discovery = tokio::time::interval(self.config.limits.discovery_interval);
        let mut persist = tokio::time::interval(Duration::from_secs(30));
        self.dial_known_peers();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some((request, reply)) = control_rx.recv() => {
                    if request.get("cmd").and_then(Value::as_str) == Some("call") {
                        self.start_call(&request, reply);
                    } else {
                        let answer = self.on_control(request);
                        let _ = reply.send(answer);
                    }
                }
                Some(done) = verified_rx.recv() => self.on_verified(done),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = poll.tick() => self.poll_joins_and_bootstrap(),
                _ = discovery.tick() => self.discover(),
                _ = persist.tick() => {
                    self.save_address_book();
                    if let Err(e) = self.audit.sync() {
                        tracing::error!(error = %e, "cannot sync the audit log");
                    }
                }
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
            }
        }
    }

    // ---------------------------------------------------------------- swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let full = address.clone().with(Protocol::P2p(self.local));
                println_listen(&full);
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.conns.remove(&connection_id);
                self.metrics.connection("closed");
                if !self.conns.values().any(|c| c.peer == peer_id) {
                    self.identify_addrs.remove(&peer_id);
                    // Bounded by live connections: the next dial records its intent again.
                    self.intents.remove(&peer_id);
                }
                tracing::debug!(peer = %peer_id, "connection closed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                tracing::debug!(addr = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, endpoint: ConnectedPoint) {
        let dialed = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => Some(address.clone()),
            ConnectedPoint::Listener { .. } => None,
        };
        tracing::debug!(peer = %peer, outbound = dialed.is_some(), "connection established");
        self.metrics.connection("established");
        self.conns.insert(
            connection,
            Conn {
                peer,
                dialed: dialed.clone(),
                established: Instant::now(),
                proven: BTreeMap::new(),
                roles: BTreeMap::new(),
                presented: BTreeSet::new(),
                remote: endpoint.get_remote_address().clone(),
            },
        );
        // The dialer presents first, and only the tokens of the networks it dialed this peer
        // for; a listener presents only after the dialer proved the same network.
        if dialed.is_some() {
            let mut intent = self.intents.get(&peer).cloned().unwrap_or_default();
            // A network's Kademlia dials peers its query learned of from proven members:
            // present that network's token on such a connection.
            for i in 0..self.nets.len() {
                let slot = self.nets[i].slot;
                let by_kad = self
                    .swarm
                    .behaviour_mut()
                    .kad(slot)
                    .is_some_and(|k| k.dialed_by_inner(connection));
                if by_kad {
                    intent.insert(self.nets[i].name.clone());
                }
            }
            if !intent.is_empty() {
                self.intents
                    .entry(peer)
                    .or_default()
                    .extend(intent.iter().cloned());
            }
            self.present(peer, connection, &intent);
        } else if self.service.is_some() {
            self.present(peer, connection, &BTreeSet::new());
        }
        // A seednode pushes approved tokens the peer has not received yet.
        let now = SystemTime::now();
        if let Some(service) = self.service.as_mut() {
            let deliveries = service.pending_deliveries(peer, now);
            for d in deliveries {
                self.deliver(d);
            }
        }
    }

    /// Sends our tokens for `networks` (and, on a seednode, our delegations) to `peer`.
    fn present(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        networks: &BTreeSet<NetworkName>,
    ) {
        let Some(conn) = self.conns.get_mut(&connection) else {
            return;
        };
        let mut tokens = Vec::new();
        let first = conn.presented.is_empty();
        for net in &self.nets {
            if !networks.contains(&net.name) || conn.presented.contains(&net.name) {
                continue;
            }
            if let Some(t) = &net.token {
                tokens.push(PresentedToken {
                    network: net.name.clone(),
                    kind: TokenKind::Membership,
                    token: t.bytes.clone(),
                });
                conn.presented.insert(net.name.clone());
            }
        }
        if first && let Some(service) = &self.service {
            for d in service.delegations() {
                if tokens.iter().all(|t| t.network != d.network) {
                    conn.presented.insert(d.network.clone());
                    tokens.push(d);
                }
            }
        }
        if tokens.is_empty() {
            return;
        }
        self.swarm
            .behaviour_mut()
            .membership
            .send_request(&peer, MembershipRequest { tokens });
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Membership(event) => self.on_membership_event(event),
            BehaviourEvent::Join(event) => self.on_join_event(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(routable)
                    .take(self.config.limits.max_addrs_per_peer)
                    .collect();
                self.identify_addrs.insert(peer_id, addrs);
                // A peer proven before its identify arrived enters the routing tables now.
                let proven: Vec<NetworkName> = self
                    .conns
                    .values()
                    .filter(|c| c.peer == peer_id)
                    .flat_map(|c| c.proven.keys().cloned())
                    .collect();
                for network in proven {
                    self.route(peer_id, &network);
                }
            }
            BehaviourEvent::Rpc(e) => self.on_rpc_event(e),
            BehaviourEvent::Filter(FilterEvent::Refused {
                peer, addr, reason, ..
            }) => {
                self.metrics.connection("filtered");
                tracing::info!(peer = ?peer, %addr, reason = reason.as_str(), "connection refused by the filter");
                let mut event = AuditEvent::new(AuditKind::ConnectionRefused)
                    .addr(&addr)
                    .reason(reason.as_str());
                if let Some(p) = peer {
                    event = event.peer(p);
                }
                self.audit(event);
            }
            BehaviourEvent::Kad0(e) => self.on_kad_event(0, e),
            BehaviourEvent::Kad1(e) => self.on_kad_event(1, e),
            BehaviourEvent::Kad2(e) => self.on_kad_event(2, e),
            BehaviourEvent::Kad3(e) => self.on_kad_event(3, e),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- membership

    fn on_membership_event(
        &mut self,
        event: request_response::Event<MembershipRequest, MembershipResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => self.verify_presentation(peer, connection_id, request, channel),
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                for r in response.results {
                    match r.outcome {
                        Outcome::Accepted => {
                            tracing::debug!(peer = %peer, network = %r.network, "our membership was accepted")
                        }
                        Outcome::Rejected { reason } => {
                            tracing::warn!(peer = %peer, network = %r.network, reason = %reason, "our membership was refused")
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %peer, %error, "membership presentation failed");
            }
            request_response::Event::InboundFailure {
                peer,
                connection_id,
                error,
                ..
            } => {
                tracing::debug!(peer = %peer, %error, "membership request failed");
                // An oversized or undecodable presentation is a failed presentation too.
                if let request_response::InboundFailure::Io(e) = &error {
                    self.stats.refused += 1;
                    self.metrics.check(Some(ReasonCode::Malformed.as_str()));
                    self.audit(
                        AuditEvent::new(AuditKind::MembershipRefused)
                            .peer(peer)
                            .reason(ReasonCode::Malformed)
                            .detail(e.kind().to_string()),
                    );
                    self.record_auth_failure(peer, connection_id);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Verifies a presentation on a bounded worker; refuses at once when the pool is full.
    fn verify_presentation(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: MembershipRequest,
        channel: ResponseChannel<MembershipResponse>,
    ) {
        if !self.conns.contains_key(&connection) {
            return;
        }
        let Ok(permit) = self.verify_slots.clone().try_acquire_owned() else {
            self.stats.rate_limited += 1;
            self.metrics.rate_limited.inc();
            tracing::warn!(peer = %peer, reason = "rate_limited", "verification queue full; refusing presentation");
            let results = request
                .tokens
                .iter()
                .map(|t| NetworkResult {
                    network: t.network.clone(),
                    outcome: Outcome::Rejected {
                        reason: ReasonCode::RateLimited,
                    },
                })
                .collect();
            let _ = self
                .swarm
                .behaviour_mut()
                .membership
                .send_response(channel, MembershipResponse { results });
            return;
        };
        let verifier = self.verifier.clone();
        let cpu = self.cpu_slots.clone();
        let tx = self.verified_tx.clone();
        let local_nets: Vec<(NetworkName, bool)> = self
            .nets
            .iter()
            .map(|n| (n.name.clone(), n.entry.strict))
            .collect();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(_cpu) = cpu.acquire_owned().await else {
                return;
            };
            let done = tokio::task::spawn_blocking(move || {
                check_presentation(&verifier, &local_nets, peer, connection, request, channel)
            })
            .await;
            if let Ok(done) = done {
                let _ = tx.send(done).await;
            }
        });
    }

    fn on_verified(&mut self, done: Verified) {
        let Verified {
            peer,
            connection,
            channel,
            results,
            proven,
            refusals,
            elapsed,
        } = done;
        self.metrics
            .verification_seconds
            .observe(elapsed.as_secs_f64());
        for (network, reason, detail) in &refusals {
            self.stats.refused += 1;
            self.metrics.check(Some(reason.as_str()));
            tracing::warn!(peer = %peer, network = %network, reason = %reason, %detail, "membership refused");
        }
        for (network, reason, _) in &refusals {
            self.audit(
                AuditEvent::new(AuditKind::MembershipRefused)
                    .peer(peer)
                    .network(network)
                    .reason(reason),
            );
        }
        if !refusals.is_empty() {
            self.record_auth_failure(peer, connection);
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .membership
            .send_response(channel, MembershipResponse { results });
        if !self.conns.contains_key(&connection) {
            return;
        }
        let mut accepted = BTreeSet::new();
        for (network, p, roles) in proven {
            self.stats.verified += 1;
            self.metrics.check(None);
            tracing::info!(peer = %peer, network = %network, seednode = p.seednode, "membership verified");
            self.audit(
                AuditEvent::new(AuditKind::MembershipVerified)
                    .peer(peer)
                    .network(&network)
                    .detail(if p.seednode {
                        "seednode delegation"
                    } else {
                        "membership"
                    }),
            );
            if let Some(conn) = self.conns.get_mut(&connection) {
                conn.proven.insert(network.clone(), p);
                conn.roles.insert(network.clone(), roles);
            }
            if let Err(e) = self.swarm.behaviour_mut().rpc.open(peer, connection) {
                tracing::debug!(peer = %peer, error = %e, "rpc gate not opened");
            }
            if let Some(i) = self.net_index(&network) {
                let slot = self.nets[i].slot;
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot)
                    && let Err(e) = kad.open(peer, connection)
                {
                    tracing::debug!(peer = %peer, error = %e, "gate not opened");
                }
            }
            self.route(peer, &network);
            accepted.insert(network);
        }
        // Answer a proven dialer with our own tokens for the networks it proved.
        if !accepted.is_empty() {
            self.intents
                .entry(peer)
                .or_default()
                .extend(accepted.iter().cloned());
            self.present(peer, connection, &accepted);
            self.maybe_join_all();
        }
    }

    /// Counts a failed presentation against the peer and its IP; bans at the threshold.
    fn record_auth_failure(&mut self, peer: PeerId, connection: ConnectionId) {
        let ip = self.conns.get(&connection).and_then(|c| ip_of(&c.remote));
        let now = Instant::now();
        let bans = self
            .swarm
            .behaviour_mut()
            .filter
            .record_auth_failure(peer, ip, now);
        for ban in bans {
            self.metrics.bans.inc();
            let secs = ban.until.saturating_duration_since(now).as_secs();
            let target = ban_target_text(&ban.key);
            tracing::warn!(target = %target, secs, reason = "failed_presentations", "repeated failed membership presentations: ban applied");
            let event = match ban.key {
                BanTarget::Peer(p) => AuditEvent::new(AuditKind::BanApplied).peer(p),
                BanTarget::Ip(ip) => AuditEvent::new(AuditKind::BanApplied).peer(peer).addr(ip),
            };
            self.audit(
                event
                    .reason("failed_presentations")
                    .detail(format!("{secs}s")),
            );
        }
        self.close_refused();
    }

    /// Closes live connections the filter now refuses (new rules, bans).
    fn close_refused(&mut self) {
        let refused = self
            .swarm
            .behaviour_mut()
            .filter
            .refused_connections(Instant::now());
        for r in refused {
            tracing::info!(peer = %r.peer, reason = %r.reason.as_str(), "closing a connection the filter now refuses");
            self.swarm.close_connection(r.connection);
        }
    }

    /// Reloads the filter rules file.
    fn reload_filter(&mut self) -> Result<Value, String> {
        let Some(path) = self.config.filter_file.clone() else {
            return Err("this node runs without --filter FILE; nothing to reload".into());
        };
        let rules = FilterRules::load(&path).map_err(|e| e.to_string())?;
        let refused = self.swarm.behaviour_mut().filter.set_rules(rules);
        let closed = refused.len();
        for r in refused {
            self.swarm.close_connection(r.connection);
        }
        self.audit(AuditEvent::new(AuditKind::Other).detail(format!(
            "filter rules reloaded; {closed} connection(s) closed"
        )));
        Ok(json!({ "reloaded": path, "closed_connections": closed }))
    }

    /// Answers an inbound remote command: rate limits, authorization, execution, audit.
    fn on_rpc_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
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
        let now = Instant::now();
        let limited = self.rpc_per_peer.check(&peer, now).is_err()
            || self.rpc_per_command.check(&(peer, command), now).is_err();
        let response = if limited {
            self.metrics.rate_limited.inc();
            RpcResponse::error(RpcErrorCode::RateLimited)
        } else {
            let (verified, grants) = match self.conns.get(&connection) {
                Some(c) => (
                    c.proven
                        .iter()
                        .filter(|(_, p)| !p.seednode)
                        .map(|(n, _)| n.clone())
                        .collect::<BTreeSet<_>>(),
                    c.roles.get(&network).cloned().unwrap_or_default(),
                ),
                None => (BTreeSet::new(), Grants::default()),
            };
            let mut members: BTreeSet<PeerId> = self
                .conns
                .values()
                .filter(|c| c.proven.get(&network).is_some_and(|p| !p.seednode))
                .map(|c| c.peer)
                .collect();
            let self_member = self
                .net_index(&network)
                .is_some_and(|i| self.nets[i].token.is_some());
            if self_member {
                members.insert(self.local);
            }
            let networks: Vec<NetworkName> = self.nets.iter().map(|n| n.name.clone()).collect();
            let version = concat!("cordon ", env!("CARGO_PKG_VERSION"));
            let local = Local {
                version,
                networks: &networks,
                uptime: self.started.elapsed(),
                members: &members,
            };
            let call = Call {
                caller: peer,
                verified: &verified,
                roles: &grants.roles,
                rights: &grants.rights,
            };
            self.rpc.handle(request, &call, &local, SystemTime::now())
        };
        let outcome = match &response {
            RpcResponse::Ok(_) => "ok".to_owned(),
            RpcResponse::Err { code, .. } => code.as_str().to_owned(),
        };
        self.metrics
            .commands
            .get_or_create(&crate::metrics::CommandLabels {
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
        self.audit(event);
        let slot = self.net_index(&network).map(|i| self.nets[i].slot);
        match (&response, replicate, lookup, slot) {
            // Stored here: replicate to the members closest to the key.
            (RpcResponse::Ok(RpcResult::Stored), Some(record), _, Some(slot)) => {
                let limits = cordon_protocol::Limits::default();
                let max = limits.max_record_value_bytes * 2 + 1024;
                if let Ok(value) = cordon_protocol::encode(&record, max)
                    && let Some(kad) = self.swarm.behaviour_mut().kad(slot)
                {
                    let kad_record = kad::Record::new(record.key.clone(), value);
                    let _ = kad.inner_mut().store_mut().put(kad_record.clone());
                    if let Err(e) = kad.inner_mut().put_record(kad_record, kad::Quorum::One) {
                        tracing::debug!(network = %network, error = ?e, "record not replicated");
                    }
                }
            }
            // Not here: ask the network, answer when the lookup ends.
            (RpcResponse::Ok(RpcResult::Record { record: None }), _, Some(key), Some(slot))
                if self.pending_gets.len() < MAX_CALLS_IN_FLIGHT =>
            {
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                    let id = kad.inner_mut().get_record(kad::RecordKey::new(&key));
                    self.pending_gets.insert(id, (channel, network));
                    return;
                }
            }
            _ => {}
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .inner_mut()
            .send_response(channel, response);
    }

    /// Starts `node call`: sends a remote command and answers the control client later.
    fn start_call(&mut self, request: &Value, reply: tokio::sync::oneshot::Sender<Value>) {
        match self.build_call(request) {
            Ok((peer, rpc)) => {
                if self.calls_in_flight.len() + self.calls_to_retry.len() >= MAX_CALLS_IN_FLIGHT {
                    let _ = reply
                        .send(json!({"ok": false, "error": "too many calls in flight; try again"}));
                    return;
                }
                self.send_call(PendingCall {
                    reply,
                    peer,
                    request: rpc,
                    attempts: 0,
                });
            }
            Err(error) => {
                let _ = reply.send(json!({ "ok": false, "error": error }));
            }
        }
    }

    fn send_call(&mut self, mut call: PendingCall) {
        call.attempts += 1;
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .inner_mut()
            .send_request(&call.peer, call.request.clone());
        self.calls_in_flight.insert(id, call);
    }

    fn build_call(&mut self, request: &Value) -> Result<(PeerId, RpcRequest), String> {
        let peer: PeerId = request["peer"]
            .as_str()
            .ok_or("\"peer\" is required")?
            .parse()
            .map_err(|_| "\"peer\" is not a peer id".to_string())?;
        let shared: Vec<NetworkName> = self
            .conns
            .values()
            .filter(|c| c.peer == peer)
            .flat_map(|c| c.proven.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let network = match request.get("network").and_then(Value::as_str) {
            Some(n) => n
                .parse::<NetworkName>()
                .map_err(|e| format!("invalid network: {e}"))?,
            None => match shared.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(format!(
                        "not connected to {peer} as a verified member; wait for it to appear in `node peers`"
                    ));
                }
                _ => {
                    return Err("the peer shares several networks with us; pass --network".into());
                }
            },
        };
        let args: Vec<&str> = request["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let bytes = |s: &str| s.as_bytes().to_vec();
        let command = match (request["command"].as_str().unwrap_or(""), args.as_slice()) {
            ("ping", []) => Command::Ping,
            ("info", []) => Command::Info,
            ("peers", []) => Command::Peers,
            ("echo", [text]) => Command::Echo { data: bytes(text) },
            ("dht_get", [key]) => Command::DhtGet { key: bytes(key) },
            ("dht_put", [key, value]) => {
                let now = unix(SystemTime::now());
                self.record_seq = self.record_seq.max(now.saturating_mul(1000)) + 1;
                let record = SignedRecord::sign(
                    &self.keypair,
                    &network,
                    bytes(key),
                    bytes(value),
                    self.record_seq,
                    now,
                )
                .map_err(|e| format!("cannot sign the record: {e}"))?;
                Command::DhtPut { record }
            }
            (cmd, args) => {
                return Err(format!(
                    "unknown command or wrong arguments: {cmd} {args:?}; use ping | info | peers | echo TEXT | dht_get KEY | dht_put KEY VALUE"
                ));
            }
        };
        Ok((peer, RpcRequest { network, command }))
    }

    fn on_rpc_event(&mut self, event: request_response::Event<RpcRequest, RpcResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => self.on_rpc_request(peer, connection_id, request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(PendingCall { reply, .. }) = self.calls_in_flight.remove(&request_id) {
                    let answer = match response {
                        RpcResponse::Ok(result) => json!({
                            "ok": true,
                            "result": serde_json::to_value(&result).unwrap_or(Value::Null),
                        }),
                        RpcResponse::Err { code, message } => json!({
                            "ok": false,
                            "error": match message {
                                Some(m) => format!("{code}: {m}"),
                                None => code.to_string(),
                            },
                        }),
                    };
                    let _ = reply.send(answer);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(call) = self.calls_in_flight.remove(&request_id) {
                    // The peer's gate was not open yet, or the connection went away: both pass.
                    let not_yet = matches!(
                        error,
                        request_response::OutboundFailure::UnsupportedProtocols
                            | request_response::OutboundFailure::ConnectionClosed
                            | request_response::OutboundFailure::DialFailure
                    );
                    if not_yet && call.attempts < CALL_ATTEMPTS {
                        self.calls_to_retry.push(call);
                    } else {
                        let _ = call.reply.send(json!({
                            "ok": false,
                            "error": format!("the call failed: {error} (a peer refuses rpc until it has verified our membership)"),
                        }));
                    }
                }
            }
            _ => {}
        }
    }

    /// Puts a proven peer in the network's routing table with every address we know for it.
    fn route(&mut self, peer: PeerId, network: &NetworkName) {
        let Some(i) = self.net_index(network) else {
            return;
        };
        let slot = self.nets[i].slot;
        let mut addrs: Vec<Multiaddr> = self
            .conns
            .values()
            .filter(|c| c.peer == peer)
            .filter_map(|c| c.dialed.clone())
            .map(|a| strip_p2p(&a))
            .collect();
        if let Some(extra) = self.identify_addrs.get(&peer) {
            addrs.extend(extra.iter().cloned());
        }
        addrs.sort();
        addrs.dedup();
        addrs.truncate(self.config.limits.max_addrs_per_peer);
        if addrs.is_empty() {
            return;
        }
        if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
            for a in &addrs {
                kad.inner_mut().add_address(&peer, a.clone());
            }
        }
        let entry = self
            .address_book
            .entry(peer)
            .or_insert_with(|| AddressEntry {
                peer: peer.to_string(),
                addrs: Vec::new(),
                networks: Vec::new(),
                last_seen: 0,
            });
        entry.addrs = addrs.iter().map(ToString::to_string).collect();
        if !entry.networks.contains(network) {
            entry.networks.push(network.clone());
        }
        entry.last_seen = unix(SystemTime::now());
        self.address_book_dirty = true;
    }

    fn on_kad_event(&mut self, slot: usize, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                self.on_replicated_record(slot, source, record);
                return;
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                ..
            } => {
                self.on_record_lookup(slot, id, result);
                return;
            }
            _ => {}
        }
        if let kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(Ok(ok)),
            ..
        } = event
        {
            let Some(network) = self
                .nets
                .iter()
                .find(|n| n.slot == slot)
                .map(|n| n.name.clone())
            else {
                return;
            };
            for info in ok.peers {
                if info.peer_id == self.local || self.swarm.is_connected(&info.peer_id) {
                    continue;
                }
                let addrs: Vec<Multiaddr> = info
                    .addrs
                    .into_iter()
                    .take(self.config.limits.max_addrs_per_peer)
                    .collect();
                if addrs.is_empty() {
                    continue;
                }
                self.dial(info.peer_id, addrs, &network);
            }
        }
    }

    /// A member replicated a signed record to us through Kademlia: keep it only if it verifies
    /// (signature, size, ownership, no replay); only members can reach this (the gate).
    fn on_replicated_record(&mut self, slot: usize, source: PeerId, record: kad::Record) {
        let Some(network) = self
            .nets
            .iter()
            .find(|n| n.slot == slot)
            .map(|n| n.name.clone())
        else {
            return;
        };
        let limits = cordon_protocol::Limits::default();
        let signed = match cordon_protocol::decode::<SignedRecord>(
            &record.value,
            limits.max_record_value_bytes * 2 + 1024,
            &limits,
        ) {
            Ok(signed) if signed.key == record.key.to_vec() => signed,
            _ => {
                tracing::warn!(peer = %source, network = %network, reason = "malformed", "replicated record refused");
                return;
            }
        };
        // The source proved this network's membership to open the gate; it vouches for the
        // publisher's membership, which we may not be able to check ourselves.
        match self
            .rpc
            .store_mut()
            .put(signed, &network, |_| true, SystemTime::now())
        {
            Ok(()) => {
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                    let _ = kad.inner_mut().store_mut().put(record);
                }
            }
            Err(code) => {
                tracing::warn!(peer = %source, network = %network, reason = %code, "replicated record refused");
                self.audit(
                    AuditEvent::new(AuditKind::CommandDenied)
                        .peer(source)
                        .network(&network)
                        .command("dht_replicate")
                        .reason(code),
                );
            }
        }
    }

    /// A `dht_get` that missed locally, answered from the network's Kademlia.
    fn on_record_lookup(
        &mut self,
        slot: usize,
        id: kad::QueryId,
        result: Result<kad::GetRecordOk, kad::GetRecordError>,
    ) {
        let Some((channel, network)) = self.pending_gets.remove(&id) else {
            return;
        };
        let limits = cordon_protocol::Limits::default();
        let found = match result {
            Ok(kad::GetRecordOk::FoundRecord(peer_record)) => {
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot)
                    && let Some(mut query) = kad.inner_mut().query_mut(&id)
                {
                    query.finish();
                }
                cordon_protocol::decode::<SignedRecord>(
                    &peer_record.record.value,
                    limits.max_record_value_bytes * 2 + 1024,
                    &limits,
                )
                .ok()
                .filter(|r| r.verify(&network).is_ok())
            }
            _ => None,
        };
        let _ = self.swarm.behaviour_mut().rpc.inner_mut().send_response(
            channel,
            RpcResponse::Ok(RpcResult::Record { record: found }),
        );
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, network: &NetworkName) {
        if peer == self.local {
            return;
        }
        if self.intents.len() >= MAX_DIAL_INTENTS {
            // Failed dials leave intents behind; keep only those of live connections.
            let live: BTreeSet<PeerId> = self.conns.values().map(|c| c.peer).collect();
            self.intents.retain(|p, _| live.contains(p));
        }
        let intents = self.intents.entry(peer).or_default();
        intents.insert(network.clone());
        if self.swarm.is_connected(&peer) {
            // Already connected: present this network's token on the live connection.
            let conns: Vec<ConnectionId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.peer == peer && c.dialed.is_some())
                .map(|(id, _)| *id)
                .collect();
            let set = BTreeSet::from([network.clone()]);
            for c in conns {
                self.present(peer, c, &set);
            }
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %peer, error = %e, "dial not started");
        }
    }

    // ---------------------------------------------------------------- join

    fn on_join_event(&mut self, event: request_response::Event<JoinMessage, JoinReply>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let reply = self.on_join_request(peer, request);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_response(channel, reply);
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
                if let Some(token_id) = self.deliveries_in_flight.remove(&request_id) {
                    if matches!(response, JoinReply::Ack) {
                        if let Some(s) = self.service.as_mut() {
                            s.delivered(token_id, SystemTime::now());
                        }
                        tracing::info!(peer = %peer, token_id, "token delivered");
                    } else {
                        tracing::warn!(peer = %peer, token_id, ?response, "delivery not acknowledged");
                    }
                    return;
                }
                self.on_join_reply(peer, request_id, response);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.deliveries_in_flight.remove(&request_id);
                for net in &mut self.nets {
                    if net.join_in_flight == Some(request_id) {
                        net.join_in_flight = None;
                    }
                }
                tracing::debug!(peer = %peer, %error, "join request failed");
            }
            _ => {}
        }
    }

    fn on_join_request(&mut self, peer: PeerId, message: JoinMessage) -> JoinReply {
        let now = SystemTime::now();
        match message {
            JoinMessage::Deliver {
                network,
                request_id,
                token,
            } => match self.accept_token(&network, token, Some(peer)) {
                Ok(()) => {
                    tracing::info!(peer = %peer, network = %network, request_id, "membership token delivered");
                    JoinReply::Ack
                }
                Err(code) => JoinReply::Error { code },
            },
            other => {
                let requested = match &other {
                    JoinMessage::Request(r) => Some(r.network.clone()),
                    _ => None,
                };
                let reply = match self.service.as_mut() {
                    Some(service) => service.on_join(peer, other, now),
                    None => JoinReply::Denied {
                        request_id: None,
                        reason: DenyReason::NotServing,
                        message: None,
                    },
                };
                if let Some(network) = requested {
                    let event = match &reply {
                        JoinReply::Pending { request_id } => {
                            AuditEvent::new(AuditKind::JoinRequested).request_id(*request_id)
                        }
                        JoinReply::Approved { request_id, .. } => {
                            AuditEvent::new(AuditKind::JoinApproved)
                                .request_id(*request_id)
                                .detail("by policy")
                        }
                        JoinReply::Denied { reason, .. } => {
                            AuditEvent::new(AuditKind::JoinDenied).reason(reason)
                        }
                        JoinReply::Error { code } => {
                            AuditEvent::new(AuditKind::JoinDenied).reason(code)
                        }
                        JoinReply::Ack => AuditEvent::new(AuditKind::Other),
                    };
                    self.audit(event.peer(peer).network(&network));
                }
                reply
            }
        }
    }

    fn on_join_reply(&mut self, peer: PeerId, request_id: OutboundRequestId, reply: JoinReply) {
        let Some(i) = self
            .nets
            .iter()
            .position(|n| n.join_in_flight == Some(request_id))
        else {
            return;
        };
        self.nets[i].join_in_flight = None;
        let network = self.nets[i].name.clone();
        match reply {
            JoinReply::Pending { request_id } => {
                tracing::info!(network = %network, request_id, seednode = %peer, "join request pending operator approval");
                self.nets[i].pending_join = Some(PendingJoin {
                    network: network.clone(),
                    request_id,
                    seednode: peer.to_string(),
                    requested_at: unix(SystemTime::now()),
                });
                self.save_pending_joins();
            }
            JoinReply::Approved { request_id, token } => {
                match self.accept_token(&network, token, Some(peer)) {
                    Ok(()) => tracing::info!(network = %network, request_id, "join approved"),
                    Err(code) => {
                        tracing::warn!(network = %network, reason = %code, "approved token does not verify")
                    }
                }
            }
            JoinReply::Denied {
                reason, message, ..
            } => {
                tracing::warn!(network = %network, reason = %reason, message = message.as_deref().unwrap_or(""), "join request denied");
                if reason == DenyReason::DeniedByOperator || reason == DenyReason::InvalidInvite {
                    self.nets[i].denied = true;
                }
                self.nets[i].pending_join = None;
                self.save_pending_joins();
            }
            JoinReply::Error { code } => {
                tracing::warn!(network = %network, reason = %code, "join request failed");
            }
            JoinReply::Ack => {}
        }
    }

    /// Verifies a token for ourselves, stores it and presents it to connected peers.
    fn accept_token(
        &mut self,
        network: &NetworkName,
        token: Vec<u8>,
        from: Option<PeerId>,
    ) -> Result<(), ReasonCode> {
        let Some(i) = self.net_index(network) else {
            return Err(ReasonCode::UnknownNetwork);
        };
        let verdict = self
            .verifier
            .verify_membership(&token, &self.local, SystemTime::now())
            .map_err(|e| reason_code(e.code()))?;
        if verdict.network != network.as_str() {
            return Err(ReasonCode::UnknownNetwork);
        }
        if let Err(e) = self.data.save_token(network, &token) {
            tracing::error!(network = %network, error = %e, "cannot store the membership token");
            return Err(ReasonCode::Internal);
        }
        self.nets[i].token = Some(OwnToken {
            bytes: token,
            expires_at: verdict.expires_at,
            roles: verdict.roles,
        });
        self.nets[i].pending_join = None;
        self.nets[i].denied = false;
        self.save_pending_joins();
        // Present the new membership on every live connection we opened for this network.
        let set = BTreeSet::from([network.clone()]);
        let conns: Vec<(ConnectionId, PeerId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.dialed.is_some() || c.proven.contains_key(network) || Some(c.peer) == from
            })
            .map(|(id, c)| (*id, c.peer))
            .collect();
        for (id, peer) in conns {
            self.intents
                .entry(peer)
                .or_default()
                .insert(network.clone());
            // A renewed token is presented again where the old one was.
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.presented.remove(network);
            }
            self.present(peer, id, &set);
        }
        Ok(())
    }

    /// Asks a verified seednode for a token, for every network where we have none.
    fn maybe_join_all(&mut self) {
        for i in 0..self.nets.len() {
            self.maybe_join(i);
        }
    }

    fn maybe_join(&mut self, i: usize) {
        let now = SystemTime::now();
        let net = &self.nets[i];
        if net.serving || net.denied || net.join_in_flight.is_some() {
            return;
        }
        if let Some(t) = &net.token {
            let valid = t.expires_at > now;
            // Renew within the descriptor's margin before expiry, at most once a minute.
            let renew_due = t.expires_at <= now + net.entry.renewal_margin;
            let recently = net
                .last_renewal
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
            if valid && (!renew_due || recently) {
                return;
            }
            if valid {
                self.nets[i].last_renewal = Some(Instant::now());
            }
        }
        let net = &self.nets[i];
        let network = net.name.clone();
        let seednodes: Vec<PeerId> = self
            .conns
            .values()
            .filter(|c| c.proven.get(&network).is_some_and(|p| p.seednode))
            .map(|c| c.peer)
            .collect();
        let pending = net.pending_join.clone();
        let message = match &pending {
            Some(p) => {
                // Request ids belong to the seednode that issued them.
                let Some(seed) = seednodes.iter().find(|s| s.to_string() == p.seednode) else {
                    return;
                };
                let id = self.swarm.behaviour_mut().join.send_request(
                    seed,
                    JoinMessage::Status {
                        request_id: p.request_id,
                    },
                );
                self.nets[i].join_in_flight = Some(id);
                return;
            }
            None => JoinMessage::Request(JoinRequest {
                network: network.clone(),
                label: self.label(),
                invite: self.config.invite.clone(),
            }),
        };
        let Some(seed) = seednodes.first() else {
            return;
        };
        tracing::info!(network = %network, seednode = %seed, "requesting to join");
        let id = self.swarm.behaviour_mut().join.send_request(seed, message);
        self.nets[i].join_in_flight = Some(id);
    }

    fn label(&self) -> String {
        if self.config.label.is_empty() {
            let id = self.local.to_string();
            format!("node-{}", &id[id.len().saturating_sub(6)..])
        } else {
            self.config.label.clone()
        }
    }

    fn deliver(&mut self, d: Delivery) {
        if !self.swarm.is_connected(&d.peer) {
            return;
        }
        let id = self.swarm.behaviour_mut().join.send_request(
            &d.peer,
            JoinMessage::Deliver {
                network: d.network,
                request_id: d.request_id,
                token: d.token,
            },
        );
        self.deliveries_in_flight.insert(id, d.token_id);
    }

    // ---------------------------------------------------------------- timers

    /// Closes connections that did not authenticate in time and drops expired memberships.
    fn housekeeping(&mut self) {
        for call in std::mem::take(&mut self.calls_to_retry) {
            self.send_call(call);
        }
        let lifted = self
            .swarm
            .behaviour_mut()
            .filter
            .lift_expired(Instant::now());
        for target in lifted {
            let text = ban_target_text(&target);
            tracing::info!(target = %text, "ban lifted");
            let event = match target {
                BanTarget::Peer(p) => AuditEvent::new(AuditKind::BanLifted).peer(p),
                BanTarget::Ip(ip) => AuditEvent::new(AuditKind::BanLifted).addr(ip),
            };
            self.audit(event);
        }
        let now = SystemTime::now();
        let timeout = self.config.limits.auth_timeout;
        let mut close = Vec::new();
        let mut expired = Vec::new();
        for (id, conn) in &mut self.conns {
            conn.proven.retain(|network, p| {
                if p.expires_at <= now {
                    expired.push((*id, conn.peer, network.clone()));
                    false
                } else {
                    true
                }
            });
            if conn.proven.is_empty() && conn.established.elapsed() > timeout {
                close.push((*id, conn.peer));
            }
        }
        for (id, peer, network) in expired {
            tracing::info!(peer = %peer, network = %network, reason = "expired", "membership ended");
            if let Some(i) = self.net_index(&network) {
                let slot = self.nets[i].slot;
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                    if let Err(e) = kad.close(peer, id) {
                        tracing::debug!(peer = %peer, error = %e, "gate not closed");
                    }
                    kad.inner_mut().remove_peer(&peer);
                }
            }
        }
        for (id, peer) in close {
            self.stats.auth_timeouts += 1;
            self.metrics.connection("auth_timeout");
            tracing::info!(peer = %peer, reason = "auth_timeout", "closing unauthenticated connection");
            self.audit(
                AuditEvent::new(AuditKind::ConnectionRefused)
                    .peer(peer)
                    .reason("auth_timeout"),
            );
            self.swarm.close_connection(id);
            self.conns.remove(&id);
        }
        for net in &mut self.nets {
            if net.token.as_ref().is_some_and(|t| t.expires_at <= now) {
                tracing::warn!(network = %net.name, reason = "expired", "our membership expired; requesting a new one");
                net.token = None;
            }
        }
    }

    /// Redials bootstrap peers of networks without a verified connection; polls join requests.
    fn poll_joins_and_bootstrap(&mut self) {
        for i in 0..self.nets.len() {
            let name = self.nets[i].name.clone();
            let connected = self.conns.values().any(|c| c.proven.contains_key(&name));
            let need_seed = self.nets[i].token.is_none() && !self.nets[i].serving;
            let has_seed = self
                .conns
                .values()
                .any(|c| c.proven.get(&name).is_some_and(|p| p.seednode));
            if !connected || (need_seed && !has_seed) {
                let boots = self.nets[i].entry.bootstrap.clone();
                for addr in boots {
                    if let Some(peer) = bootstrap_peer(&addr)
                        && peer != self.local
                        && !self.swarm.is_connected(&peer)
                    {
                        self.dial(peer, vec![addr.clone()], &name);
                    }
                }
            }
            self.maybe_join(i);
        }
    }

    fn dial_known_peers(&mut self) {
        let mine: BTreeSet<NetworkName> = self.nets.iter().map(|n| n.name.clone()).collect();
        let entries: Vec<(PeerId, Vec<Multiaddr>, Vec<NetworkName>)> = self
            .address_book
            .iter()
            .map(|(p, e)| {
                (
                    *p,
                    e.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                    e.networks
                        .iter()
                        .filter(|n| mine.contains(*n))
                        .cloned()
                        .collect(),
                )
            })
            .collect();
        for (peer, addrs, networks) in entries {
            for n in networks {
                self.dial(peer, addrs.clone(), &n);
            }
        }
        self.poll_joins_and_bootstrap();
    }

    /// Asks each network's Kademlia for peers close to us; proven members are dialed.
    fn discover(&mut self) {
        let local = self.local;
        for i in 0..self.nets.len() {
            let slot = self.nets[i].slot;
            let member = self.nets[i].token.is_some() || self.nets[i].serving;
            let mut known = 0;
            if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                let kad = kad.inner_mut();
                known = kad.kbuckets().map(|b| b.num_entries()).sum::<usize>();
                if member && known > 0 {
                    kad.get_closest_peers(local);
                }
            }
            self.metrics
                .routing_table
                .get_or_create(&crate::metrics::NetworkLabel {
                    network: self.nets[i].name.to_string(),
                })
                .set(i64::try_from(known).unwrap_or(i64::MAX));
        }
        if let Some(counts) = self.service.as_ref().map(|s| s.status()) {
            let count = |k: &str| counts["counts"][k].as_i64().unwrap_or(0);
            self.metrics.pending_requests.set(count("pending"));
            self.metrics.approved_requests.set(count("approved"));
        }
    }

    fn save_pending_joins(&self) {
        let joins: Vec<PendingJoin> = self
            .nets
            .iter()
            .filter_map(|n| n.pending_join.clone())
            .collect();
        if let Err(e) = self.data.save_pending_joins(&joins) {
            tracing::error!(error = %e, "cannot persist pending join requests");
        }
    }

    fn save_address_book(&mut self) {
        if !self.address_book_dirty {
            return;
        }
        let entries: Vec<AddressEntry> = self.address_book.values().cloned().collect();
        match self
            .data
            .save_address_book(&entries, self.config.limits.max_address_book)
        {
            Ok(()) => self.address_book_dirty = false,
            Err(e) => tracing::warn!(error = %e, "cannot persist the address book"),
        }
        if self.address_book.len() > self.config.limits.max_address_book {
            let mut by_age: Vec<(u64, PeerId)> = self
                .address_book
                .iter()
                .map(|(p, e)| (e.last_seen, *p))
                .collect();
            by_age.sort();
            let excess = self.address_book.len() - self.config.limits.max_address_book;
            for (_, p) in by_age.into_iter().take(excess) {
                self.address_book.remove(&p);
            }
        }
    }

    // ---------------------------------------------------------------- control

    fn on_control(&mut self, request: Value) -> Value {
        let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
        let result = match cmd {
            "status" => Ok(self.status()),
            "reload" => self.reload_filter(),
            "peers" => self.peers(&request),
            _ => match self.service.as_mut() {
                Some(service) => {
                    let operator_action = match cmd {
                        "approve" => Some(AuditKind::JoinApproved),
                        "deny" => Some(AuditKind::JoinDenied),
                        "revoke" => Some(AuditKind::TokenRevoked),
                        _ => None,
                    };
                    let id = request.get("id").and_then(Value::as_u64);
                    let outcome = service.on_control(request.clone(), SystemTime::now());
                    if let (Some(kind), Ok(_)) = (operator_action, &outcome.result) {
                        let mut event = AuditEvent::new(kind).command(cmd).detail("by operator");
                        if let Some(id) = id {
                            event = event.request_id(id);
                        }
                        if let Some(peer) = request.get("peer").and_then(Value::as_str) {
                            event = event.peer(peer);
                        }
                        if let Err(e) = self.audit.append(event, SystemTime::now()) {
                            tracing::error!(error = %e, "cannot write the audit log");
                        }
                    }
                    for d in outcome.deliveries {
                        self.deliver(d);
                    }
                    outcome.result
                }
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

    fn status(&mut self) -> Value {
        let now = SystemTime::now();
        let mut networks = Vec::new();
        for i in 0..self.nets.len() {
            let slot = self.nets[i].slot;
            let routing = self
                .swarm
                .behaviour_mut()
                .kad(slot)
                .map(|k| {
                    k.inner_mut()
                        .kbuckets()
                        .map(|b| b.num_entries())
                        .sum::<usize>()
                })
                .unwrap_or(0);
            let net = &self.nets[i];
            let verified = self
                .conns
                .values()
                .filter(|c| c.proven.contains_key(&net.name))
                .map(|c| c.peer)
                .collect::<BTreeSet<_>>()
                .len();
            let state = if net.serving {
                "seednode"
            } else if net.token.as_ref().is_some_and(|t| t.expires_at > now) {
                "member"
            } else if net.denied {
                "denied"
            } else if net.pending_join.is_some() {
                "pending"
            } else {
                "joining"
            };
            networks.push(json!({
                "name": net.name,
                "state": state,
                "join_policy": net.entry.join.to_string(),
                "strict": net.entry.strict,
                "roles": net.token.as_ref().map(|t| t.roles.clone()).unwrap_or_default(),
                "token_expires_at": net.token.as_ref().map(|t| unix(t.expires_at)),
                "pending_request": net.pending_join.as_ref().map(|p| p.request_id),
                "routing_table": routing,
                "verified_peers": verified,
            }));
        }
        let limits = &self.config.limits;
        json!({
            "peer_id": self.local.to_string(),
            "listen": self.listen_addrs.iter().map(|a| a.clone().with(Protocol::P2p(self.local)).to_string()).collect::<Vec<_>>(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "connections": self.conns.len(),
            "networks": networks,
            "membership_checks": {
                "verified": self.stats.verified,
                "refused": self.stats.refused,
                "rate_limited": self.stats.rate_limited,
                "auth_timeouts": self.stats.auth_timeouts,
            },
            "limits": {
                "auth_timeout_secs": limits.auth_timeout.as_secs(),
                "max_connections": limits.max_connections,
                "max_connections_per_peer": limits.max_connections_per_peer,
                "max_pending_incoming": limits.max_pending_incoming,
                "max_streams_per_protocol": limits.max_streams_per_protocol,
                "max_pending_verifications": limits.max_pending_verifications,
                "max_kad_packet_bytes": limits.max_kad_packet_bytes,
            },
            "service": self.service.as_ref().map(|s| s.status()),
            "filter": serde_json::to_value(self.swarm.behaviour().filter.status()).unwrap_or(Value::Null),
            "rate_limits": serde_json::to_value(&self.config.rate_limits).unwrap_or(Value::Null),
        })
    }

    fn peers(&mut self, request: &Value) -> Result<Value, String> {
        let filter = match request.get("network") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                s.parse::<NetworkName>()
                    .map_err(|e| format!("invalid network: {e}"))?,
            ),
            Some(_) => return Err("\"network\" must be a string".into()),
        };
        if let Some(f) = &filter
            && self.net_index(f).is_none()
        {
            return Err(format!("this node is not in network {f}"));
        }
        let mut out = Vec::new();
        for i in 0..self.nets.len() {
            let name = self.nets[i].name.clone();
            if filter.as_ref().is_some_and(|f| f != &name) {
                continue;
            }
            let slot = self.nets[i].slot;
            let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
            if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                for bucket in kad.inner_mut().kbuckets() {
                    for e in bucket.iter() {
                        peers.push((
                            *e.node.key.preimage(),
                            e.node.value.iter().cloned().collect(),
                        ));
                    }
                }
            }
            for (peer, addrs) in peers {
                let proven = self
                    .conns
                    .values()
                    .filter(|c| c.peer == peer)
                    .find_map(|c| c.proven.get(&name).copied());
                out.push(json!({
                    "network": name,
                    "peer": peer.to_string(),
                    "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "connected": proven.is_some(),
                    "seednode": proven.is_some_and(|p| p.seednode),
                    "expires_at": proven.map(|p| unix(p.expires_at)),
                }));
            }
        }
        Ok(Value::Array(out))
    }
}

/// Verifies every token of a presentation; runs on a blocking worker.
fn check_presentation(
    verifier: &Verifier,
    local_nets: &[(NetworkName, bool)],
    peer: PeerId,
    connection: ConnectionId,
    request: MembershipRequest,
    channel: ResponseChannel<MembershipResponse>,
) -> Verified {
    let started = Instant::now();
    let (results, proven, refusals) =
        evaluate_presentation(verifier, local_nets, peer, &request, SystemTime::now());
    Verified {
        peer,
        connection,
        channel,
        results,
        proven,
        refusals,
        elapsed: started.elapsed(),
    }
}

/// What a presentation proves: one result per presented token, the networks proven, and the
/// refusals with their local detail. Pure apart from the verifier's cache.
#[allow(clippy::type_complexity)]
fn evaluate_presentation(
    verifier: &Verifier,
    local_nets: &[(NetworkName, bool)],
    peer: PeerId,
    request: &MembershipRequest,
    now: SystemTime,
) -> (
    Vec<NetworkResult>,
    Vec<(NetworkName, Proven, Grants)>,
    Vec<(NetworkName, ReasonCode, String)>,
) {
    let presented: BTreeSet<&NetworkName> = request.tokens.iter().map(|t| &t.network).collect();
    let mut results = Vec::new();
    let mut proven = Vec::new();
    let mut refusals = Vec::new();
    for t in &request.tokens {
        let local = local_nets.iter().find(|(n, _)| n == &t.network);
        let outcome = match local {
            None => Err((
                ReasonCode::UnknownNetwork,
                "network not joined here".to_string(),
            )),
            Some((_, true)) if presented.len() > 1 => Err((
                ReasonCode::StrictNetwork,
                "strict network: peer also presented other networks".to_string(),
            )),
            Some(_) => match t.kind {
                TokenKind::Membership => verifier
                    .verify_membership(&t.token, &peer, now)
                    .and_then(|v| {
                        if v.network == t.network.as_str() {
                            Ok((
                                Proven {
                                    expires_at: v.expires_at,
                                    seednode: false,
                                },
                                Grants {
                                    roles: v.roles,
                                    rights: v.rights,
                                },
                            ))
                        } else {
                            Err(cordon_membership::Refusal::UnknownNetwork { network: v.network })
                        }
                    })
                    .map_err(|e| (reason_code(e.code()), e.to_string())),
                TokenKind::Delegation => verifier
                    .verify_delegation(&t.token, &peer, now)
                    .and_then(|v| {
                        if v.facts.network == t.network.as_str() {
                            Ok((
                                Proven {
                                    expires_at: v.facts.expires_at,
                                    seednode: true,
                                },
                                Grants::default(),
                            ))
                        } else {
                            Err(cordon_membership::Refusal::UnknownNetwork {
                                network: v.facts.network,
                            })
                        }
                    })
                    .map_err(|e| (reason_code(e.code()), e.to_string())),
            },
        };
        match outcome {
            Ok((p, roles)) => {
                results.push(NetworkResult {
                    network: t.network.clone(),
                    outcome: Outcome::Accepted,
                });
                proven.push((t.network.clone(), p, roles));
            }
            Err((reason, detail)) => {
                results.push(NetworkResult {
                    network: t.network.clone(),
                    outcome: Outcome::Rejected { reason },
                });
                refusals.push((t.network.clone(), reason, detail));
            }
        }
    }
    (results, proven, refusals)
}

fn ban_target_text(target: &BanTarget) -> String {
    match target {
        BanTarget::Peer(p) => format!("peer {p}"),
        BanTarget::Ip(ip) => format!("ip {ip}"),
    }
}

/// Whether an address is worth giving to others (not unspecified).
fn routable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Prints each listen address on stdout so scripts can pick it up.
fn println_listen(addr: &Multiaddr) {
    println!("listening on {addr}");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cordon_membership::{
        AccessList, DelegationRequest, Issuer, NetworkTrust, SecretKey, issue_delegation,
    };

    use super::*;

    struct Fixture {
        verifier: Verifier,
        tokens: BTreeMap<&'static str, Vec<u8>>,
        peer: PeerId,
        now: SystemTime,
    }

    /// mainnet and testnet, each with an anchor and seednode, and a peer holding both tokens.
    fn fixture() -> Fixture {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let node = SecretKey::from_seed([9; 32]);
        let mut trust = Vec::new();
        let mut delegations = Vec::new();
        for (i, name) in ["mainnet", "testnet"].into_iter().enumerate() {
            let seed = u8::try_from(i).unwrap() * 2 + 1;
            let anchor = SecretKey::from_seed([seed; 32]);
            let seednode = SecretKey::from_seed([seed + 1; 32]);
            let delegation = issue_delegation(
                &anchor,
                &DelegationRequest {
                    network: name.into(),
                    seednode: seednode.public(),
                    expires_at: now + 30 * day,
                    allowed_roles: vec!["member".into()],
                    allowed_rights: Vec::new(),
                    max_lifetime: 7 * day,
                },
                now,
            )
            .unwrap();
            trust.push(NetworkTrust {
                name: name.into(),
                anchors: vec![anchor.public()],
                strict: false,
            });
            delegations.push((name, delegation, seednode));
        }
        let verifier = Verifier::new(Default::default(), AccessList::new(trust).unwrap());
        let mut tokens = BTreeMap::new();
        for (name, delegation, seednode) in delegations {
            let issuer = Issuer::new(&delegation, &verifier, seednode, now).unwrap();
            let token = issuer
                .issue(&node.peer_id(), &["member".to_string()], day, now)
                .unwrap();
            tokens.insert(name, token.bytes);
        }
        Fixture {
            verifier,
            tokens,
            peer: node.peer_id(),
            now,
        }
    }

    fn request(f: &Fixture, networks: &[&'static str]) -> MembershipRequest {
        MembershipRequest {
            tokens: networks
                .iter()
                .map(|n| PresentedToken {
                    network: n.parse().unwrap(),
                    kind: TokenKind::Membership,
                    token: f.tokens[n].clone(),
                })
                .collect(),
        }
    }

    fn outcome(results: &[NetworkResult], network: &str) -> Outcome {
        results
            .iter()
            .find(|r| r.network.as_str() == network)
            .map(|r| r.outcome)
            .unwrap()
    }

    #[test]
    fn strict_network_refuses_a_peer_presenting_other_networks_too() {
        let f = fixture();
        let local = vec![
            ("mainnet".parse().unwrap(), true),
            ("testnet".parse().unwrap(), false),
        ];
        let (results, proven, _) = evaluate_presentation(
            &f.verifier,
            &local,
            f.peer,
            &request(&f, &["mainnet", "testnet"]),
            f.now,
        );
        assert_eq!(
            outcome(&results, "mainnet"),
            Outcome::Rejected {
                reason: ReasonCode::StrictNetwork
            }
        );
        assert_eq!(outcome(&results, "testnet"), Outcome::Accepted);
        assert_eq!(proven.len(), 1);
        assert_eq!(proven[0].0.as_str(), "testnet");

        // The same mainnet token alone is accepted by the strict network.
        let (results, proven, _) = evaluate_presentation(
            &f.verifier,
            &local,
            f.peer,
            &request(&f, &["mainnet"]),
            f.now,
        );
        assert_eq!(outcome(&results, "mainnet"), Outcome::Accepted);
        assert_eq!(proven.len(), 1);
    }

    #[test]
    fn non_strict_network_accepts_multi_network_peers() {
        let f = fixture();
        let local = vec![
            ("mainnet".parse().unwrap(), false),
            ("testnet".parse().unwrap(), false),
        ];
        let (results, proven, refusals) = evaluate_presentation(
            &f.verifier,
            &local,
            f.peer,
            &request(&f, &["mainnet", "testnet"]),
            f.now,
        );
        assert!(
            results.iter().all(|r| r.outcome == Outcome::Accepted),
            "{results:?}"
        );
        assert_eq!(proven.len(), 2);
        assert!(refusals.is_empty());
    }

    #[test]
    fn network_not_joined_here_is_unknown_network_even_if_the_token_verifies() {
        let f = fixture();
        // This node joined only mainnet, although its descriptor also lists testnet.
        let local = vec![("mainnet".parse().unwrap(), false)];
        let (results, proven, _) = evaluate_presentation(
            &f.verifier,
            &local,
            f.peer,
            &request(&f, &["testnet"]),
            f.now,
        );
        assert_eq!(
            outcome(&results, "testnet"),
            Outcome::Rejected {
                reason: ReasonCode::UnknownNetwork
            }
        );
        assert!(proven.is_empty());
    }

    #[test]
    fn token_labelled_with_another_network_is_refused() {
        let f = fixture();
        let local = vec![
            ("mainnet".parse().unwrap(), false),
            ("testnet".parse().unwrap(), false),
        ];
        let mut req = request(&f, &["testnet"]);
        req.tokens[0].network = "mainnet".parse().unwrap();
        let (results, proven, _) = evaluate_presentation(&f.verifier, &local, f.peer, &req, f.now);
        assert_eq!(
            outcome(&results, "mainnet"),
            Outcome::Rejected {
                reason: ReasonCode::UnknownNetwork
            }
        );
        assert!(proven.is_empty());
    }
}
