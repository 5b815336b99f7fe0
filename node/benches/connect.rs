//! Connection setup benchmark: authenticated Cordon connection vs plain rust-libp2p.
//!
//! DESIGN.md section 8: "Authenticated connection setup (TCP + Noise + Yamux + membership
//! exchange, both sides verified) within 1.3x of plain rust-libp2p TCP + Noise + Yamux +
//! identify on loopback."
//!
//! Three variants, measured in one run, interleaved in blocks to cancel drift:
//! - `baseline`: two plain swarms (TCP with nodelay, Noise, Yamux, identify only). One iteration
//!   is dial -> both sides received the other's identify info.
//! - `cordon cold`: two swarms from `cordon_node::swarm::build` (the real composed behaviour),
//!   each holding a real membership token minted in-process. One iteration is dial -> the
//!   dialer presents its token -> the listener verifies it (uncached), answers, opens its kad
//!   gate and presents its own token -> the dialer verifies it, answers, opens its gate; done
//!   when both sides verified each other and both received identify.
//! - `cordon cached`: the same, verifying with the verdict cache (the reconnect case).
//!
//! The membership handling mirrors `event_loop.rs` (`on_connected`/`present`,
//! `verify_presentation`/`check_presentation`, `on_verified`/`route`), except that verification
//! runs inline on the event-loop task instead of on the blocking worker pool.
//!
//! Disconnecting is not timed. Timing is printed, never asserted. For the Cordon variants the
//! output also breaks the time down: inline verification time (both sides), and when both sides
//! had identify vs when both had verified (the iteration ends at the later of the two).
//!
//! Environment: `BENCH_ITERS` (measured iterations per variant, default 200), `BENCH_WARMUP`
//! (default 10), `BENCH_BLOCK` (block size, default 20), `BENCH_THREADS` (tokio worker threads,
//! default: one per core, as the node binary).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::{
    AccessList, DelegationRequest, Issuer, NetworkTrust, SecretKey, Verifier, VerifierConfig,
    issue_delegation,
};
use cordon_node::NodeLimits;
use cordon_node::swarm::{Behaviour, BehaviourEvent};
use cordon_protocol::{
    MembershipRequest, MembershipResponse, NetworkName, NetworkResult, Outcome, PresentedToken,
    ReasonCode, TokenKind,
};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, noise, tcp, yamux};

/// Longest any phase of one iteration may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Same idle timeout as the node's default, so neither side closes on its own mid-iteration.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_ADDRS_PER_PEER: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PHASE_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no progress within {PHASE_TIMEOUT:?}"),
    }
}

/// Starts listening on loopback and returns the bound address.
async fn listen<B: libp2p::swarm::NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    within("listen", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
}

// ------------------------------------------------------------------------------- baseline

/// Two plain swarms: TCP (nodelay) + Noise + Yamux + identify.
struct Baseline {
    dialer: Swarm<identify::Behaviour>,
    listener: Swarm<identify::Behaviour>,
    addr: Multiaddr,
}

fn plain_swarm() -> Swarm<identify::Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(SecretKey::generate().libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|key| {
            identify::Behaviour::new(
                identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                    .with_agent_version("baseline/0.1.0".into()),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build()
}

impl Baseline {
    async fn new() -> Self {
        let dialer = plain_swarm();
        let mut listener = plain_swarm();
        let addr = listen(&mut listener).await;
        Self {
            dialer,
            listener,
            addr,
        }
    }

    /// One connection: dial until both sides received identify (timed), then close (untimed).
    async fn iteration(&mut self) -> Duration {
        let Self {
            dialer,
            listener,
            addr,
        } = self;
        let target = *listener.local_peer_id();
        let origin = *dialer.local_peer_id();
        let opts = DialOpts::peer_id(target)
            .addresses(vec![addr.clone()])
            .build();
        let conn = opts.connection_id();
        let start = Instant::now();
        dialer.dial(opts).expect("dial");
        let (mut dialer_id, mut listener_id) = (false, false);
        let mut listener_conn = None;
        let elapsed = within("baseline setup", async {
            loop {
                tokio::select! {
                    ev = dialer.select_next_some() => match ev {
                        SwarmEvent::Behaviour(identify::Event::Received { connection_id, .. })
                            if connection_id == conn => dialer_id = true,
                        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
                        _ => {}
                    },
                    ev = listener.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. }
                            if peer_id == origin => listener_conn = Some(connection_id),
                        SwarmEvent::Behaviour(identify::Event::Received { connection_id, .. })
                            if Some(connection_id) == listener_conn => listener_id = true,
                        SwarmEvent::IncomingConnectionError { error, .. } => panic!("accept: {error}"),
                        _ => {}
                    },
                }
                if dialer_id && listener_id {
                    return start.elapsed();
                }
            }
        })
        .await;
        let _ = dialer.disconnect_peer_id(target);
        let (mut dialer_closed, mut listener_closed) = (false, false);
        within("baseline close", async {
            while !(dialer_closed && listener_closed) {
                tokio::select! {
                    ev = dialer.select_next_some() => {
                        if matches!(ev, SwarmEvent::ConnectionClosed { connection_id, .. } if connection_id == conn) {
                            dialer_closed = true;
                        }
                    }
                    ev = listener.select_next_some() => {
                        if matches!(ev, SwarmEvent::ConnectionClosed { connection_id, .. } if Some(connection_id) == listener_conn) {
                            listener_closed = true;
                        }
                    }
                }
            }
        })
        .await;
        elapsed
    }
}

// ------------------------------------------------------------------------------- cordon

/// What a peer proved on one connection (as `event_loop::Conn`, plus what the bench watches).
#[derive(Debug)]
struct Conn {
    peer: PeerId,
    dialed: Option<Multiaddr>,
    proven: BTreeMap<NetworkName, SystemTime>,
    presented: BTreeSet<NetworkName>,
    identified: bool,
}

/// One Cordon node: the real swarm plus the parts of the event loop the exchange touches.
struct Node {
    swarm: Swarm<Behaviour>,
    verifier: Verifier,
    network: NetworkName,
    strict: bool,
    slot: usize,
    token: Vec<u8>,
    /// Verify without the verdict cache (a never-seen token).
    cold: bool,
    conns: HashMap<ConnectionId, Conn>,
    identify_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    verified: u64,
    /// Time spent in `check_presentation`, for the breakdown line.
    verify_time: Duration,
    /// The bench's own outgoing connection (its failure aborts the run).
    watch: Option<ConnectionId>,
}

/// Result of verifying one presentation (as `event_loop::Verified`).
struct Verified {
    peer: PeerId,
    connection: ConnectionId,
    channel: ResponseChannel<MembershipResponse>,
    results: Vec<NetworkResult>,
    proven: Vec<(NetworkName, SystemTime)>,
    refusals: Vec<(NetworkName, String)>,
}

impl Node {
    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
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
                if !self.conns.values().any(|c| c.peer == peer_id) {
                    self.identify_addrs.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } if Some(connection_id) == self.watch => panic!("dial: {error}"),
            SwarmEvent::Behaviour(BehaviourEvent::Membership(event)) => {
                self.on_membership_event(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                connection_id,
                peer_id,
                info,
            })) => {
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(routable)
                    .take(MAX_ADDRS_PER_PEER)
                    .collect();
                self.identify_addrs.insert(peer_id, addrs);
                if let Some(c) = self.conns.get_mut(&connection_id) {
                    c.identified = true;
                }
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
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, endpoint: ConnectedPoint) {
        let dialed = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => Some(address.clone()),
            ConnectedPoint::Listener { .. } => None,
        };
        self.conns.insert(
            connection,
            Conn {
                peer,
                dialed: dialed.clone(),
                proven: BTreeMap::new(),
                presented: BTreeSet::new(),
                identified: false,
            },
        );
        // The dialer presents first, for the network it dialed the peer for.
        if dialed.is_some() {
            let intent = BTreeSet::from([self.network.clone()]);
            self.present(peer, connection, &intent);
        }
    }

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
        if networks.contains(&self.network) && !conn.presented.contains(&self.network) {
            tokens.push(PresentedToken {
                network: self.network.clone(),
                kind: TokenKind::Membership,
                token: self.token.clone(),
            });
            conn.presented.insert(self.network.clone());
        }
        if tokens.is_empty() {
            return;
        }
        self.swarm
            .behaviour_mut()
            .membership
            .send_request(&peer, MembershipRequest { tokens });
    }

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
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                for r in response.results {
                    if let Outcome::Rejected { reason } = r.outcome {
                        panic!("our membership was refused: {reason}");
                    }
                }
            }
            // Failures after the bench closed the connection are expected.
            _ => {}
        }
    }

    /// Verifies inline (the node hands this to its blocking worker pool) and applies the result.
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
        let local_nets = vec![(self.network.clone(), self.strict)];
        let started = Instant::now();
        let done = check_presentation(
            &self.verifier,
            self.cold,
            &local_nets,
            peer,
            connection,
            request,
            channel,
        );
        self.verify_time += started.elapsed();
        self.on_verified(done);
    }

    fn on_verified(&mut self, done: Verified) {
        let Verified {
            peer,
            connection,
            channel,
            results,
            proven,
            refusals,
        } = done;
        if let Some((network, reason)) = refusals.first() {
            panic!("membership of {peer} for {network} refused: {reason}");
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
        for (network, expires_at) in proven {
            self.verified += 1;
            if let Some(conn) = self.conns.get_mut(&connection) {
                conn.proven.insert(network.clone(), expires_at);
            }
            if network == self.network {
                let slot = self.slot;
                if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
                    kad.open(peer, connection).expect("open kad gate");
                }
            }
            self.route(peer, &network);
            accepted.insert(network);
        }
        // Answer a proven dialer with our own token for the networks it proved.
        if !accepted.is_empty() {
            self.present(peer, connection, &accepted);
        }
    }

    /// Puts a proven peer in the network's routing table with every address known for it.
    fn route(&mut self, peer: PeerId, network: &NetworkName) {
        if network != &self.network {
            return;
        }
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
        addrs.truncate(MAX_ADDRS_PER_PEER);
        if addrs.is_empty() {
            return;
        }
        let slot = self.slot;
        if let Some(kad) = self.swarm.behaviour_mut().kad(slot) {
            for a in &addrs {
                kad.inner_mut().add_address(&peer, a.clone());
            }
        }
    }

    /// Whether the connection to `peer` (or `connection`, if given) has received identify, and
    /// whether its membership is verified.
    fn progress(&self, peer: PeerId, connection: Option<ConnectionId>) -> (bool, bool) {
        self.conns
            .iter()
            .find(|(id, c)| c.peer == peer && connection.is_none_or(|want| **id == want))
            .map_or((false, false), |(_, c)| {
                (c.identified, c.proven.contains_key(&self.network))
            })
    }
}

/// As `event_loop::check_presentation`, with the cache bypassed when `cold`.
fn check_presentation(
    verifier: &Verifier,
    cold: bool,
    local_nets: &[(NetworkName, bool)],
    peer: PeerId,
    connection: ConnectionId,
    request: MembershipRequest,
    channel: ResponseChannel<MembershipResponse>,
) -> Verified {
    let now = SystemTime::now();
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
                TokenKind::Membership => {
                    let verdict = if cold {
                        verifier.verify_membership_uncached(&t.token, &peer, now)
                    } else {
                        verifier.verify_membership(&t.token, &peer, now)
                    };
                    match verdict {
                        Ok(v) if v.network == t.network.as_str() => Ok(v.expires_at),
                        Ok(v) => Err((
                            ReasonCode::UnknownNetwork,
                            format!("token is for {}", v.network),
                        )),
                        Err(e) => Err((
                            e.code().as_str().parse().unwrap_or(ReasonCode::Internal),
                            e.to_string(),
                        )),
                    }
                }
                TokenKind::Delegation => {
                    Err((ReasonCode::Policy, "no seednode in this bench".to_string()))
                }
            },
        };
        match outcome {
            Ok(expires_at) => {
                results.push(NetworkResult {
                    network: t.network.clone(),
                    outcome: Outcome::Accepted,
                });
                proven.push((t.network.clone(), expires_at));
            }
            Err((reason, detail)) => {
                results.push(NetworkResult {
                    network: t.network.clone(),
                    outcome: Outcome::Rejected { reason },
                });
                refusals.push((t.network.clone(), format!("{reason}: {detail}")));
            }
        }
    }
    Verified {
        peer,
        connection,
        channel,
        results,
        proven,
        refusals,
    }
}

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

/// A network with an anchor and one seednode, minting real tokens in-process.
struct Network {
    name: NetworkName,
    anchor: SecretKey,
    issuer: Issuer,
}

impl Network {
    fn new(name: &str) -> Self {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let anchor = SecretKey::generate();
        let seednode = SecretKey::generate();
        let delegation = issue_delegation(
            &anchor,
            &DelegationRequest {
                network: name.into(),
                seednode: seednode.public(),
                expires_at: now + 30 * day,
                allowed_roles: vec!["member".into(), "operator".into()],
                allowed_rights: Vec::new(),
                max_lifetime: 7 * day,
            },
            now,
        )
        .expect("delegation");
        let name = NetworkName::new(name).expect("network name");
        let issuer =
            Issuer::new(&delegation, &verifier_for(&name, &anchor), seednode, now).expect("issuer");
        Self {
            name,
            anchor,
            issuer,
        }
    }

    fn verifier(&self) -> Verifier {
        verifier_for(&self.name, &self.anchor)
    }

    fn member(&self, node: &PeerId) -> Vec<u8> {
        self.issuer
            .issue(
                node,
                &["member".to_string()],
                Duration::from_secs(86_400),
                SystemTime::now(),
            )
            .expect("issue")
            .bytes
    }

    fn node(&self) -> Node {
        let key = SecretKey::generate();
        let token = self.member(&key.peer_id());
        let swarm = cordon_node::swarm::build(
            key.libp2p_keypair(),
            std::slice::from_ref(&self.name),
            &NodeLimits::default(),
        )
        .expect("swarm");
        Node {
            swarm,
            verifier: self.verifier(),
            network: self.name.clone(),
            strict: false,
            slot: 0,
            token,
            cold: true,
            conns: HashMap::new(),
            identify_addrs: HashMap::new(),
            verified: 0,
            verify_time: Duration::ZERO,
            watch: None,
        }
    }
}

/// A verifier whose access list trusts `anchor` for `name`.
fn verifier_for(name: &NetworkName, anchor: &SecretKey) -> Verifier {
    Verifier::new(
        VerifierConfig::default(),
        AccessList::new([NetworkTrust {
            name: name.as_str().into(),
            anchors: vec![anchor.public()],
            strict: false,
        }])
        .expect("access list"),
    )
}

/// Two Cordon nodes of one network; the dialer connects to the listener.
struct Cordon {
    dialer: Node,
    listener: Node,
    addr: Multiaddr,
    token_bytes: usize,
    /// Time both sides spent verifying in the last iteration.
    last_verify: Duration,
    /// When, in the last iteration, both sides had identify, and both had verified.
    last_identified: Duration,
    last_verified: Duration,
}

impl Cordon {
    async fn new() -> Self {
        let net = Network::new("mainnet");
        let dialer = net.node();
        let mut listener = net.node();
        let addr = listen(&mut listener.swarm).await;
        let token_bytes = dialer.token.len();
        Self {
            dialer,
            listener,
            addr,
            token_bytes,
            last_verify: Duration::ZERO,
            last_identified: Duration::ZERO,
            last_verified: Duration::ZERO,
        }
    }

    /// One connection: dial until both sides verified each other and received identify
    /// (timed), then close (untimed).
    async fn iteration(&mut self, cold: bool) -> Duration {
        let Self {
            dialer,
            listener,
            addr,
            ..
        } = self;
        dialer.cold = cold;
        listener.cold = cold;
        let target = *listener.swarm.local_peer_id();
        let origin = *dialer.swarm.local_peer_id();
        let opts = DialOpts::peer_id(target)
            .addresses(vec![addr.clone()])
            .build();
        let conn = opts.connection_id();
        dialer.watch = Some(conn);
        let before = (dialer.verified, listener.verified);
        let verify_before = dialer.verify_time + listener.verify_time;
        let start = Instant::now();
        dialer.swarm.dial(opts).expect("dial");
        let (mut identified, mut verified) = (None, None);
        let elapsed = within("cordon setup", async {
            loop {
                tokio::select! {
                    ev = dialer.swarm.select_next_some() => dialer.on_event(ev),
                    ev = listener.swarm.select_next_some() => listener.on_event(ev),
                }
                let (d_id, d_ok) = dialer.progress(target, Some(conn));
                let (l_id, l_ok) = listener.progress(origin, None);
                if identified.is_none() && d_id && l_id {
                    identified = Some(start.elapsed());
                }
                if verified.is_none() && d_ok && l_ok {
                    verified = Some(start.elapsed());
                }
                if let (Some(a), Some(b)) = (identified, verified) {
                    return a.max(b);
                }
            }
        })
        .await;
        assert_eq!(
            (dialer.verified, listener.verified),
            (before.0 + 1, before.1 + 1),
            "each side verifies exactly one token per connection"
        );
        self.last_verify = dialer.verify_time + listener.verify_time - verify_before;
        self.last_identified = identified.unwrap_or_default();
        self.last_verified = verified.unwrap_or_default();
        let _ = dialer.swarm.disconnect_peer_id(target);
        drain(dialer, listener).await;
        elapsed
    }
}

fn idle(node: &Node) -> bool {
    node.swarm
        .network_info()
        .connection_counters()
        .num_connections()
        == 0
}

/// Runs both nodes until neither has a connection, established or pending, closing any that
/// come up (for instance one dialed by Kademlia's automatic bootstrap).
async fn drain(dialer: &mut Node, listener: &mut Node) {
    within("cordon close", async {
        while !(idle(dialer) && idle(listener)) {
            for node in [&mut *dialer, &mut *listener] {
                let peers: Vec<PeerId> = node.swarm.connected_peers().copied().collect();
                for p in peers {
                    let _ = node.swarm.disconnect_peer_id(p);
                }
            }
            tokio::select! {
                ev = dialer.swarm.select_next_some() => dialer.on_event(ev),
                ev = listener.swarm.select_next_some() => listener.on_event(ev),
            }
        }
    })
    .await;
    dialer.watch = None;
}

impl Cordon {
    /// One connection, then one second of running both nodes, then closing everything.
    ///
    /// The first verified connection puts each peer in the other's Kademlia routing table, and
    /// an insert into a small table schedules kad's automatic bootstrap 500 ms later (it is not
    /// disabled by `set_periodic_bootstrap_interval(None)`), which redials the peer. Letting
    /// that happen here keeps it out of the measurements: afterwards each side already knows
    /// the other, as for a reconnect to a known member.
    async fn prime(&mut self) {
        self.iteration(true).await;
        let Self {
            dialer, listener, ..
        } = self;
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = dialer.swarm.select_next_some() => dialer.on_event(ev),
                ev = listener.swarm.select_next_some() => listener.on_event(ev),
                () = &mut deadline => break,
            }
        }
        drain(dialer, listener).await;
    }
}

// ------------------------------------------------------------------------------- driver

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Baseline,
    CordonCold,
    CordonCached,
}

const VARIANTS: [Variant; 3] = [
    Variant::Baseline,
    Variant::CordonCold,
    Variant::CordonCached,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline: tcp+noise+yamux+identify",
            Variant::CordonCold => "cordon, cold verification",
            Variant::CordonCached => "cordon, cached verification",
        }
    }
}

async fn run_one(baseline: &mut Baseline, cordon: &mut Cordon, v: Variant) -> Duration {
    match v {
        Variant::Baseline => baseline.iteration().await,
        Variant::CordonCold => cordon.iteration(true).await,
        Variant::CordonCached => cordon.iteration(false).await,
    }
}

struct Stats {
    median: f64,
    p90: f64,
    per_sec: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let median = if n.is_multiple_of(2) {
        (us[n / 2 - 1] + us[n / 2]) / 2.0
    } else {
        us[n / 2]
    };
    let p90 = us[(n * 9).div_ceil(10).saturating_sub(1)];
    let total: f64 = us.iter().sum();
    Stats {
        median,
        p90,
        per_sec: n as f64 / (total / 1e6),
    }
}

async fn bench(iters: usize, warmup: usize, block: usize) {
    let mut baseline = Baseline::new().await;
    let mut cordon = Cordon::new().await;
    cordon.prime().await;
    for v in VARIANTS {
        for _ in 0..warmup {
            run_one(&mut baseline, &mut cordon, v).await;
        }
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let mut verify: [Vec<Duration>; 3] = Default::default();
    let mut identified: [Vec<Duration>; 3] = Default::default();
    let mut verified: [Vec<Duration>; 3] = Default::default();
    let mut round = 0;
    while samples.iter().any(|s| s.len() < iters) {
        // Rotate the order each round so no variant always follows the same one.
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let n = block.min(iters - samples[i].len());
            for _ in 0..n {
                let d = run_one(&mut baseline, &mut cordon, VARIANTS[i]).await;
                samples[i].push(d);
                if VARIANTS[i] != Variant::Baseline {
                    verify[i].push(cordon.last_verify);
                    identified[i].push(cordon.last_identified);
                    verified[i].push(cordon.last_verified);
                }
            }
        }
        round += 1;
    }

    println!(
        "connection setup on loopback: {iters} iterations per variant after {warmup} warm-up, \
         interleaved in blocks of {block}; membership token {} bytes",
        cordon.token_bytes
    );
    println!(
        "cordon: real swarm::build behaviour, both sides verify a real token and receive identify; \
         verification runs inline on the event-loop task (the node runs it on a blocking worker pool); \
         one priming connection first so each side's Kademlia already knows the other"
    );
    println!(
        "{:<36} {:>11} {:>11} {:>13}",
        "variant", "median us", "p90 us", "conn/s (mean)"
    );
    let all: Vec<Stats> = samples.iter().map(|s| stats(s)).collect();
    for (v, s) in VARIANTS.iter().zip(&all) {
        println!(
            "{:<36} {:>11.1} {:>11.1} {:>13.0}",
            v.label(),
            s.median,
            s.p90,
            s.per_sec
        );
    }
    println!(
        "  of which inline token verification, both sides (median): cold {:.1} us, cached {:.1} us",
        stats(&verify[1]).median,
        stats(&verify[2]).median
    );
    for i in 1..3 {
        println!(
            "  {}: both identified at {:.1} us, both verified at {:.1} us (medians)",
            VARIANTS[i].label(),
            stats(&identified[i]).median,
            stats(&verified[i]).median
        );
    }
    let base = all[0].median;
    println!(
        "ratio cordon_cold/baseline (median):   {:.2}x (target: <= 1.3x)",
        all[1].median / base
    );
    println!(
        "ratio cordon_cached/baseline (median): {:.2}x (target: <= 1.3x)",
        all[2].median / base
    );
}

fn main() {
    let iters = env_usize("BENCH_ITERS", 200).max(1);
    let warmup = env_usize("BENCH_WARMUP", 10);
    let block = env_usize("BENCH_BLOCK", 20).max(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(threads);
    }
    let runtime = builder.build().expect("tokio runtime");
    runtime.block_on(bench(iters, warmup, block));
}
