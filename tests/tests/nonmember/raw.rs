//! A "raw client": a bare libp2p swarm speaking Cordon's wire protocols with whatever token the
//! test chooses, and mainnet's Kademlia protocol, with no Cordon node logic behind it.
//!
//! Same transport stack as `node/src/swarm.rs` (TCP + Noise + Yamux), plus
//! `request_response::Behaviour<MembershipCodec>` on `/cordon/membership/2`, a client-mode
//! `kad::Behaviour` on `/cordon/mainnet/kad/1.0.0`, identify (so a member learns a listen
//! address for us: a refusal to route us must be the gate's doing, not a missing address), and
//! `/cordon/join/1` to send join messages (`Deliver` floods) a real node never would.
//!
//! The swarm runs on its own runtime as an actor; the (synchronous) test sends it commands and
//! polls a shared [`State`] the actor keeps up to date.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cordon_membership::SecretKey;
use cordon_node::gate::{GateConfig, Gated};
use cordon_protocol::{
    JOIN_PROTOCOL, JoinCodec, JoinMessage, JoinReply, Limits, MEMBERSHIP_PROTOCOL, MembershipCodec,
    MembershipRequest, MembershipResponse, NetworkName, REVOCATION_PROTOCOL, RPC_PROTOCOL,
    RevocationCodec, RevocationRequest, RevocationResponse, RpcCodec, RpcRequest, RpcResponse,
    kad_protocol,
};
use futures::StreamExt;
use libp2p::kad::store::MemoryStore;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, tcp, yamux};
use tokio::sync::mpsc;

#[derive(NetworkBehaviour)]
pub(crate) struct RawBehaviour {
    membership: request_response::Behaviour<MembershipCodec>,
    /// Opens bare streams on mainnet's Kademlia protocol name to see whether the remote
    /// negotiates it at all (the payload is not Kademlia; only negotiation matters).
    kad_probe: request_response::Behaviour<MembershipCodec>,
    kad: kad::Behaviour<AnswerStore>,
    /// Identify behind a gate that opens once a member accepted our token, as a Cordon member's
    /// does (`/cordon/membership/2`): we ask a member for its identify only once it let us in
    /// and we "verified" it (this client trusts what it is shown), and our request is the
    /// member's signal that it may ask for ours.
    identify: Gated<identify::Behaviour>,
    /// `/cordon/revocations/1`: answers `Sync` with nothing and `Push` with `ack`, and sends
    /// what the test chooses.
    revocations: request_response::Behaviour<RevocationCodec>,
    /// `/cordon/join/1`, outbound only: join messages the test chooses.
    join: request_response::Behaviour<JoinCodec>,
    /// `/cordon/rpc/1`, outbound only: remote commands the test chooses.
    rpc: request_response::Behaviour<RpcCodec>,
}

/// The raw client's Kademlia store: a plain memory store, except that once
/// [`RawClient::answer_every_get_with`] set a record, every GET_VALUE gets that record whatever
/// key it asked for (a hostile member's answer).
pub(crate) struct AnswerStore {
    inner: MemoryStore,
    every_get: Arc<Mutex<Option<kad::Record>>>,
}

impl kad::store::RecordStore for AnswerStore {
    type RecordsIter<'a> = <MemoryStore as kad::store::RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as kad::store::RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &kad::RecordKey) -> Option<std::borrow::Cow<'_, kad::Record>> {
        let forced = self
            .every_get
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match forced {
            Some(record) => Some(std::borrow::Cow::Owned(record)),
            None => self.inner.get(k),
        }
    }

    fn put(&mut self, r: kad::Record) -> kad::store::Result<()> {
        self.inner.put(r)
    }

    fn remove(&mut self, k: &kad::RecordKey) {
        self.inner.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: kad::ProviderRecord) -> kad::store::Result<()> {
        self.inner.add_provider(record)
    }

    fn providers(&self, key: &kad::RecordKey) -> Vec<kad::ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &kad::RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p);
    }
}

/// Counts of a `Deliver` flood's answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinFlood {
    /// Messages handed to the swarm.
    pub(crate) sent: u64,
    /// Answers, by their debug rendering (`Ack`, `Error { code: Policy }`, ...).
    pub(crate) answers: std::collections::BTreeMap<String, u64>,
    /// Requests that failed on the wire (connection closed, refused, timed out).
    pub(crate) failures: u64,
}

/// One connection as the raw client saw it.
#[derive(Debug, Clone)]
pub(crate) struct ConnRecord {
    pub(crate) id: ConnectionId,
    pub(crate) established: Instant,
    pub(crate) closed: Option<(Instant, String)>,
}

/// What one FIND_NODE (`get_closest_peers`) query produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct FindNode {
    /// The peers the query reports (those that answered).
    pub(crate) result: Vec<PeerId>,
    /// The query's error, if it failed.
    pub(crate) error: Option<String>,
    /// Peers (other than `via`) the query dialed: it can only have learned them from a
    /// FIND_NODE answer.
    pub(crate) dialed: BTreeSet<PeerId>,
    /// The raw client's routing table after the query.
    pub(crate) table: BTreeSet<PeerId>,
    /// How long the query took.
    pub(crate) took: Duration,
}

impl FindNode {
    /// Every peer id this query taught us, other than `via` itself unless it answered.
    pub(crate) fn learned(&self, via: &PeerId) -> BTreeSet<PeerId> {
        let mut all: BTreeSet<PeerId> = self.result.iter().copied().collect();
        all.extend(self.dialed.iter().copied());
        all.extend(self.table.iter().copied().filter(|p| p != via));
        all
    }
}

/// State shared between the actor and the test.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) conns: HashMap<PeerId, Vec<ConnRecord>>,
    pub(crate) dialed: Vec<PeerId>,
    pub(crate) responses: HashMap<u64, Result<MembershipResponse, String>>,
    pub(crate) queries: HashMap<u64, FindNode>,
    /// Kademlia protocol probes: `Err` holds the failure (`UnsupportedProtocols` when the remote
    /// refused to negotiate the protocol).
    pub(crate) probes: HashMap<u64, Result<(), ProbeFailure>>,
    /// Peers that answered one of our presentations with only `Accepted`.
    pub(crate) accepted_by: BTreeSet<PeerId>,
    /// Answers to our revocation requests, by tag.
    pub(crate) revocation_responses: HashMap<u64, Result<RevocationResponse, String>>,
    /// The join-message flood so far.
    pub(crate) join_flood: JoinFlood,
    /// Presentations peers sent us (a seednode's delegations, a member's tokens).
    pub(crate) presented_to_us: Vec<(PeerId, MembershipRequest)>,
    /// The presentation flood so far: answers by outcome (`accepted`, a refusal's reason code,
    /// `failure`).
    pub(crate) present_flood: std::collections::BTreeMap<String, u64>,
    /// Presentations of the flood handed to the swarm.
    pub(crate) present_flood_sent: u64,
    /// Answers to our remote commands, by tag.
    pub(crate) rpc_responses: HashMap<u64, Result<RpcResponse, String>>,
    /// Raw Kademlia PUT_VALUEs: by tag, `Ok` once the peer acknowledged the record.
    pub(crate) puts: HashMap<u64, Result<(), String>>,
    /// Identify answers received: the peer, the listen addresses and the protocols it listed.
    pub(crate) identified: Vec<(PeerId, Vec<Multiaddr>, Vec<String>)>,
    pub(crate) log: Vec<String>,
}

impl State {
    /// Whether a connection to `peer` is open.
    pub(crate) fn connected(&self, peer: &PeerId) -> bool {
        self.conns
            .get(peer)
            .is_some_and(|c| c.iter().any(|r| r.closed.is_none()))
    }
}

/// Why a Kademlia protocol probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeFailure {
    /// The remote refused to negotiate the protocol (the gate is shut).
    Unsupported,
    /// Anything else (e.g. the remote's Kademlia closed the stream on our non-Kademlia bytes):
    /// the protocol was negotiated.
    Other(String),
}

enum Cmd {
    KadProbe(u64, PeerId),
    Dial(Multiaddr),
    Present(u64, PeerId, MembershipRequest),
    FindNode {
        tag: u64,
        via: PeerId,
        addr: Multiaddr,
    },
    AutoPresent(Option<MembershipRequest>),
    /// Switch Kademlia to server mode (answer GET_VALUE and FIND_NODE).
    KadServer,
    Revocation(u64, PeerId, RevocationRequest),
    /// A remote command on `/cordon/rpc/1`.
    Rpc(u64, PeerId, RpcRequest),
    /// Present `request` `count` times, at most `window` unanswered at a time.
    PresentFlood {
        peer: PeerId,
        request: MembershipRequest,
        count: u64,
        window: usize,
    },
    /// A raw Kademlia PUT_VALUE of `record` to `peer` alone.
    PutRecordTo {
        tag: u64,
        peer: PeerId,
        record: kad::Record,
    },
    /// Claim these addresses as our own (identify lists them to whoever asks).
    Claim(Vec<Multiaddr>),
    /// Send `count` copies of a join message, at most `window` unanswered at a time.
    JoinFlood {
        peer: PeerId,
        message: JoinMessage,
        count: u64,
        window: usize,
    },
}

/// The raw client handle; dropping it stops the swarm.
pub(crate) struct RawClient {
    pub(crate) peer: PeerId,
    state: Arc<Mutex<State>>,
    /// What the Kademlia store answers every GET_VALUE with, once set.
    every_get: Arc<Mutex<Option<kad::Record>>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    next_tag: u64,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn mainnet() -> NetworkName {
    "mainnet".parse().expect("valid network name")
}

impl RawClient {
    /// Starts a raw client with identity `key`, listening on a loopback port.
    pub(crate) fn start(key: &SecretKey) -> Self {
        Self::start_at(key, "127.0.0.1")
    }

    /// Starts a raw client with identity `key` whose connections leave from `ip` (a loopback
    /// address); other than 127.0.0.1 it does not listen.
    pub(crate) fn start_at(key: &SecretKey, ip: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let keypair = key.libp2p_keypair();
        let peer = key.peer_id();
        let every_get = Arc::new(Mutex::new(None));
        let forced = every_get.clone();
        let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
        let source = (ip != std::net::Ipv4Addr::LOCALHOST).then_some(ip);
        let swarm = runtime.block_on(async move { build(keypair, forced, source) });
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(actor(swarm, rx, state.clone()));
        let client = Self {
            peer,
            state,
            every_get,
            cmds: tx,
            next_tag: 0,
            runtime: Some(runtime),
        };
        if source.is_none() {
            client.wait("the raw client to listen", Duration::from_secs(10), |s| {
                (!s.listen.is_empty()).then_some(())
            });
        }
        client
    }

    /// Locks the shared state.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls the state every 50 ms until `check` returns `Some`; `None` after `timeout`.
    pub(crate) fn poll<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(&self.state()) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`poll`](Self::poll) but panics (with the client's event log) on timeout.
    pub(crate) fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut(&State) -> Option<T>,
    ) -> T {
        match self.poll(timeout, check) {
            Some(v) => v,
            None => panic!(
                "raw client: timed out after {timeout:?} waiting for {what}\nraw client log:\n{}",
                self.state().log.join("\n")
            ),
        }
    }

    fn send(&self, cmd: Cmd) {
        self.cmds.send(cmd).expect("raw client actor is running");
    }

    /// Claims `addrs` as ours, besides our real listen address: identify lists them to whoever
    /// asks. Call before connecting.
    pub(crate) fn claim(&self, addrs: Vec<Multiaddr>) {
        self.send(Cmd::Claim(addrs));
    }

    /// Dials `addr` (ending in `/p2p/<peer>`) and waits for the connection; returns when it was
    /// established.
    pub(crate) fn connect(&self, addr: &str, peer: &PeerId) -> Instant {
        let addr: Multiaddr = addr.parse().expect("multiaddr");
        self.send(Cmd::Dial(addr));
        self.wait(
            &format!("a connection to {peer}"),
            Duration::from_secs(20),
            |s| {
                s.conns
                    .get(peer)?
                    .iter()
                    .find(|r| r.closed.is_none())
                    .map(|r| r.established)
            },
        )
    }

    /// Presents `request` to `peer` and waits for its answer (or failure).
    pub(crate) fn present(
        &mut self,
        peer: &PeerId,
        request: MembershipRequest,
    ) -> Result<MembershipResponse, String> {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.send(Cmd::Present(tag, *peer, request));
        self.wait("a membership response", Duration::from_secs(30), |s| {
            s.responses.get(&tag).cloned()
        })
    }

    /// Adds `via` at `addr` to our mainnet Kademlia table and runs a FIND_NODE for a random key
    /// through it; waits for the query to finish (it has its own 20 s timeout).
    pub(crate) fn find_node(&mut self, via: &PeerId, addr: &str) -> FindNode {
        self.next_tag += 1;
        let tag = self.next_tag;
        let addr: Multiaddr = addr.parse().expect("multiaddr");
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        self.send(Cmd::FindNode {
            tag,
            via: *via,
            addr,
        });
        self.wait(
            "the FIND_NODE query to finish",
            Duration::from_secs(45),
            |s| s.queries.get(&tag).cloned(),
        )
    }

    /// Opens a stream on `/cordon/mainnet/kad/1.0.0` to `peer` and reports how it went.
    pub(crate) fn probe_kad(&mut self, peer: &PeerId) -> Result<(), ProbeFailure> {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.send(Cmd::KadProbe(tag, *peer));
        self.wait(
            "the Kademlia protocol probe",
            Duration::from_secs(30),
            |s| s.probes.get(&tag).cloned(),
        )
    }

    /// Sends a revocation request to `peer` and waits for its answer (or failure).
    pub(crate) fn revocation(
        &mut self,
        peer: &PeerId,
        request: RevocationRequest,
    ) -> Result<RevocationResponse, String> {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.send(Cmd::Revocation(tag, *peer, request));
        self.wait("a revocation response", Duration::from_secs(30), |s| {
            s.revocation_responses.get(&tag).cloned()
        })
    }

    /// Starts sending `count` copies of `message` to `peer` on `/cordon/join/1`, at most
    /// `window` unanswered at a time; [`State::join_flood`] counts the answers.
    pub(crate) fn join_flood(
        &self,
        peer: &PeerId,
        message: JoinMessage,
        count: u64,
        window: usize,
    ) {
        self.send(Cmd::JoinFlood {
            peer: *peer,
            message,
            count,
            window,
        });
    }

    /// Sends `request` to `peer` on `/cordon/rpc/1` and waits for its answer (or failure).
    pub(crate) fn rpc(
        &mut self,
        peer: &PeerId,
        request: RpcRequest,
    ) -> Result<RpcResponse, String> {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.send(Cmd::Rpc(tag, *peer, request));
        self.wait("an rpc response", Duration::from_secs(30), |s| {
            s.rpc_responses.get(&tag).cloned()
        })
    }

    /// Starts presenting `request` to `peer` `count` times, at most `window` unanswered at a
    /// time; [`State::present_flood`] counts the answers.
    pub(crate) fn present_flood(
        &self,
        peer: &PeerId,
        request: MembershipRequest,
        count: u64,
        window: usize,
    ) {
        self.send(Cmd::PresentFlood {
            peer: *peer,
            request,
            count,
            window,
        });
    }

    /// Pushes `record` to `peer` by a raw Kademlia PUT_VALUE, as any member's Kademlia can,
    /// whatever the rpc policy says; waits until the peer acknowledged it (or the put failed).
    pub(crate) fn put_record_to(
        &mut self,
        peer: &PeerId,
        record: kad::Record,
    ) -> Result<(), String> {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.send(Cmd::PutRecordTo {
            tag,
            peer: *peer,
            record,
        });
        self.wait("a PUT_VALUE to finish", Duration::from_secs(30), |s| {
            s.puts.get(&tag).cloned()
        })
    }

    /// From now on answers every GET_VALUE with `record`, whatever key it asks for, and serves
    /// Kademlia (server mode) so members query us: a hostile member.
    pub(crate) fn answer_every_get_with(&self, record: kad::Record) {
        *self.every_get.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
        self.send(Cmd::KadServer);
    }

    /// Presents `request` on every new connection from now on (the control case, so peers
    /// learned through FIND_NODE let us query them too).
    pub(crate) fn auto_present(&self, request: Option<MembershipRequest>) {
        self.send(Cmd::AutoPresent(request));
    }

    /// A handle on the shared state, to print the log from a panic handler.
    pub(crate) fn shared(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }
}

/// A presentation without the token bytes.
fn summary(request: &MembershipRequest) -> String {
    let tokens: Vec<String> = request
        .tokens
        .iter()
        .map(|t| format!("{}/{} ({} bytes)", t.network, t.kind, t.token.len()))
        .collect();
    format!("[{}]", tokens.join(", "))
}

fn behaviour(
    key: &libp2p::identity::Keypair,
    every_get: Arc<Mutex<Option<kad::Record>>>,
) -> RawBehaviour {
    let local = key.public().to_peer_id();
    let mut cfg = kad::Config::new(kad_protocol(&mainnet()));
    cfg.set_query_timeout(Duration::from_secs(20));
    cfg.set_periodic_bootstrap_interval(None);
    let store = AnswerStore {
        inner: MemoryStore::new(local),
        every_get,
    };
    let mut kad = kad::Behaviour::with_config(local, store, cfg);
    kad.set_mode(Some(kad::Mode::Client));
    RawBehaviour {
        membership: request_response::Behaviour::with_codec(
            MembershipCodec::membership(Limits::default()),
            [(MEMBERSHIP_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
        ),
        kad_probe: request_response::Behaviour::with_codec(
            MembershipCodec::membership(Limits::default()),
            [(
                kad_protocol(&mainnet()),
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        ),
        kad,
        identify: Gated::with_config(
            identify::Behaviour::new(identify::Config::new("/cordon/id/1".into(), key.public())),
            GateConfig::default().with_outbound_release(),
        ),
        revocations: request_response::Behaviour::with_codec(
            RevocationCodec::revocations(Limits::default()),
            [(REVOCATION_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
        ),
        join: request_response::Behaviour::with_codec(
            JoinCodec::join(Limits::default()),
            [(JOIN_PROTOCOL, request_response::ProtocolSupport::Outbound)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(256),
        ),
        rpc: request_response::Behaviour::with_codec(
            RpcCodec::rpc(Limits::default()),
            [(RPC_PROTOCOL, request_response::ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
        ),
    }
}

/// The client's swarm: listening on a loopback port of 127.0.0.1, or, with `source`, dialing
/// from that address and not listening (see `cordon_tests::bound_tcp`).
fn build(
    keypair: libp2p::identity::Keypair,
    every_get: Arc<Mutex<Option<kad::Record>>>,
    source: Option<std::net::Ipv4Addr>,
) -> Swarm<RawBehaviour> {
    // The raw client never closes a connection itself: any close is the remote's doing.
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(300));
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    match source {
        Some(ip) => builder
            .with_other_transport(|key| cordon_tests::bound_tcp::transport(key, ip))
            .expect("bound transport")
            .with_behaviour(|key| behaviour(key, every_get))
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
        None => {
            let mut swarm = builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp transport")
                .with_behaviour(|key| behaviour(key, every_get))
                .expect("behaviour")
                .with_swarm_config(idle)
                .build();
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
                .expect("listen");
            swarm
        }
    }
}

struct Actor {
    swarm: Swarm<RawBehaviour>,
    state: Arc<Mutex<State>>,
    requests: HashMap<OutboundRequestId, u64>,
    revocation_requests: HashMap<OutboundRequestId, u64>,
    probes: HashMap<OutboundRequestId, u64>,
    queries: HashMap<kad::QueryId, (u64, PeerId, Instant, usize)>,
    rpc_requests: HashMap<OutboundRequestId, u64>,
    puts: HashMap<kad::QueryId, u64>,
    auto_present: Option<MembershipRequest>,
    started: Instant,
    /// The flood in progress: target, message, messages left to send, window.
    flood: Option<(PeerId, JoinMessage, u64, usize)>,
    flood_in_flight: usize,
    /// The presentation flood in progress, like `flood`, and its requests in flight.
    present_flood: Option<(PeerId, MembershipRequest, u64, usize)>,
    present_flood_ids: std::collections::HashSet<OutboundRequestId>,
}

async fn actor(
    swarm: Swarm<RawBehaviour>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    state: Arc<Mutex<State>>,
) {
    let mut a = Actor {
        swarm,
        state,
        requests: HashMap::new(),
        revocation_requests: HashMap::new(),
        probes: HashMap::new(),
        queries: HashMap::new(),
        rpc_requests: HashMap::new(),
        puts: HashMap::new(),
        auto_present: None,
        started: Instant::now(),
        flood: None,
        flood_in_flight: 0,
        present_flood: None,
        present_flood_ids: std::collections::HashSet::new(),
    };
    loop {
        tokio::select! {
            event = a.swarm.select_next_some() => a.on_event(event),
            cmd = rx.recv() => match cmd {
                Some(cmd) => a.on_cmd(cmd),
                None => return,
            },
        }
    }
}

impl Actor {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, line: String) {
        let line = format!("[{:>7.3}s] {line}", self.started.elapsed().as_secs_f64());
        self.state().log.push(line);
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Dial(addr) => {
                self.log(format!("dial {addr}"));
                // From a fresh port: reusing the listening port collides (EADDRINUSE) with a
                // connection the member may be opening to that port at the same moment.
                let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                    .address(addr)
                    .allocate_new_port()
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    self.log(format!("dial failed to start: {e}"));
                }
            }
            Cmd::Present(tag, peer, request) => {
                self.log(format!("present to {peer}: {}", summary(&request)));
                let id = self
                    .swarm
                    .behaviour_mut()
                    .membership
                    .send_request(&peer, request);
                self.requests.insert(id, tag);
            }
            Cmd::FindNode { tag, via, addr } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let _ = kad.add_address(&via, addr);
                let target = PeerId::random();
                let id = kad.get_closest_peers(target);
                let dialed_before = self.state().dialed.len();
                self.queries
                    .insert(id, (tag, via, Instant::now(), dialed_before));
                self.log(format!("FIND_NODE {target} via {via}"));
            }
            Cmd::AutoPresent(request) => self.auto_present = request,
            Cmd::Claim(addrs) => {
                for a in addrs {
                    self.swarm.add_external_address(a);
                }
            }
            Cmd::KadServer => {
                self.log("kademlia in server mode".to_owned());
                self.swarm
                    .behaviour_mut()
                    .kad
                    .set_mode(Some(kad::Mode::Server));
            }
            Cmd::JoinFlood {
                peer,
                message,
                count,
                window,
            } => {
                self.log(format!("join flood to {peer}: {count} messages"));
                self.flood = Some((peer, message, count, window.max(1)));
                self.pump_flood();
            }
            Cmd::Revocation(tag, peer, request) => {
                self.log(format!("revocation request to {peer}"));
                let id = self
                    .swarm
                    .behaviour_mut()
                    .revocations
                    .send_request(&peer, request);
                self.revocation_requests.insert(id, tag);
            }
            Cmd::PresentFlood {
                peer,
                request,
                count,
                window,
            } => {
                self.log(format!(
                    "presentation flood to {peer}: {count} presentations"
                ));
                self.present_flood = Some((peer, request, count, window.max(1)));
                self.pump_present_flood();
            }
            Cmd::Rpc(tag, peer, request) => {
                self.log(format!("rpc {} to {peer}", request.command.name()));
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
                self.rpc_requests.insert(id, tag);
            }
            Cmd::PutRecordTo { tag, peer, record } => {
                self.log(format!(
                    "PUT_VALUE of {} bytes to {peer}",
                    record.value.len()
                ));
                let id = self.swarm.behaviour_mut().kad.put_record_to(
                    record,
                    std::iter::once(peer),
                    kad::Quorum::One,
                );
                self.puts.insert(id, tag);
            }
            Cmd::KadProbe(tag, peer) => {
                self.log(format!("kad protocol probe to {peer}"));
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad_probe
                    .send_request(&peer, MembershipRequest::default());
                self.probes.insert(id, tag);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<RawBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.log(format!("listening on {address}"));
                self.state().listen.push(address);
            }
            SwarmEvent::Dialing {
                peer_id: Some(peer),
                ..
            } => {
                self.log(format!("dialing {peer}"));
                self.state().dialed.push(peer);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.log(format!(
                    "connection {connection_id} established with {peer_id} ({})",
                    endpoint.get_remote_address()
                ));
                self.state()
                    .conns
                    .entry(peer_id)
                    .or_default()
                    .push(ConnRecord {
                        id: connection_id,
                        established: Instant::now(),
                        closed: None,
                    });
                // Both ends present: also on a connection a member dialed to us (when both
                // sides dial at once, ours may fail with the address in use and theirs is the
                // only connection).
                if let Some(request) = self.auto_present.clone() {
                    self.log(format!("auto-present to {peer_id}"));
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .membership
                        .send_request(&peer_id, request);
                    self.requests.insert(id, 0);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                let cause =
                    cause.map_or_else(|| "closed by remote or idle".to_owned(), |e| e.to_string());
                self.log(format!(
                    "connection {connection_id} with {peer_id} closed: {cause}"
                ));
                let mut state = self.state();
                if let Some(records) = state.conns.get_mut(&peer_id) {
                    for r in records.iter_mut().filter(|r| r.id == connection_id) {
                        r.closed = Some((Instant::now(), cause.clone()));
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.log(format!(
                    "outgoing connection to {peer_id:?} failed: {error}"
                ));
            }
            SwarmEvent::Behaviour(RawBehaviourEvent::Membership(e)) => self.on_membership(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::KadProbe(e)) => self.on_probe(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::Revocations(e)) => self.on_revocation(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::Join(e)) => self.on_join(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::Rpc(e)) => self.on_rpc(e),
            SwarmEvent::Behaviour(RawBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let protocols: Vec<String> =
                    info.protocols.iter().map(ToString::to_string).collect();
                self.log(format!("identify from {peer_id}: protocols {protocols:?}"));
                self.state()
                    .identified
                    .push((peer_id, info.listen_addrs, protocols));
            }
            other => self.log(format!("event {other:?}")),
        }
    }

    /// Keeps the flood's window full while messages are left.
    fn pump_flood(&mut self) {
        let Some((peer, message, left, window)) = &mut self.flood else {
            return;
        };
        let (peer, window) = (*peer, *window);
        while *left > 0 && self.flood_in_flight < window {
            *left -= 1;
            self.flood_in_flight += 1;
            let message = message.clone();
            let _ = self.swarm.behaviour_mut().join.send_request(&peer, message);
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join_flood
                .sent += 1;
        }
        if *left == 0 {
            self.flood = None;
        }
    }

    /// Keeps the presentation flood's window full while presentations are left.
    fn pump_present_flood(&mut self) {
        let Some((peer, request, left, window)) = &mut self.present_flood else {
            return;
        };
        let (peer, window) = (*peer, *window);
        while *left > 0 && self.present_flood_ids.len() < window {
            *left -= 1;
            let id = self
                .swarm
                .behaviour_mut()
                .membership
                .send_request(&peer, request.clone());
            self.present_flood_ids.insert(id);
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .present_flood_sent += 1;
        }
        if *left == 0 {
            self.present_flood = None;
        }
    }

    /// Counts an answer (or failure) of the presentation flood; `false` if `id` is not one.
    fn on_present_flood(&mut self, id: OutboundRequestId, outcome: String) -> bool {
        if !self.present_flood_ids.remove(&id) {
            return false;
        }
        *self.state().present_flood.entry(outcome).or_default() += 1;
        self.pump_present_flood();
        true
    }

    fn on_join(&mut self, event: request_response::Event<JoinMessage, JoinReply>) {
        match event {
            request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                self.flood_in_flight = self.flood_in_flight.saturating_sub(1);
                let key = match &response {
                    JoinReply::Error { code } => format!("error:{code}"),
                    other => format!("{other:?}").chars().take(24).collect(),
                };
                *self.state().join_flood.answers.entry(key).or_default() += 1;
            }
            request_response::Event::OutboundFailure { .. } => {
                self.flood_in_flight = self.flood_in_flight.saturating_sub(1);
                self.state().join_flood.failures += 1;
            }
            _ => return,
        }
        self.pump_flood();
    }

    fn on_revocation(
        &mut self,
        event: request_response::Event<RevocationRequest, RevocationResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let answer = match request {
                    RevocationRequest::Sync { .. } => RevocationResponse::Updates {
                        updates: Vec::new(),
                        heads: Vec::new(),
                    },
                    RevocationRequest::Push { .. } | RevocationRequest::Announce { .. } => {
                        RevocationResponse::Ack
                    }
                };
                self.log(format!("revocation request from {peer} answered"));
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .revocations
                    .send_response(channel, answer);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tag) = self.revocation_requests.remove(&request_id) {
                    self.state().revocation_responses.insert(tag, Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(tag) = self.revocation_requests.remove(&request_id) {
                    self.state()
                        .revocation_responses
                        .insert(tag, Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    fn on_membership(
        &mut self,
        event: request_response::Event<MembershipRequest, MembershipResponse>,
    ) {
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } if self.present_flood_ids.contains(&request_id) => {
                let outcome = match response.results.first().map(|r| &r.outcome) {
                    Some(cordon_protocol::Outcome::Accepted) => "accepted".to_owned(),
                    Some(cordon_protocol::Outcome::Rejected { reason }) => reason.to_string(),
                    None => "empty".to_owned(),
                };
                self.on_present_flood(request_id, outcome);
            }
            request_response::Event::OutboundFailure { request_id, .. }
                if self.present_flood_ids.contains(&request_id) =>
            {
                self.on_present_flood(request_id, "failure".to_owned());
            }
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
            } => {
                self.log(format!("membership response from {peer}: {response:?}"));
                if response
                    .results
                    .iter()
                    .any(|r| r.outcome == cordon_protocol::Outcome::Accepted)
                {
                    let identify = &mut self.swarm.behaviour_mut().identify;
                    let _ = identify.open(peer, connection_id);
                    let _ = identify.release(peer, connection_id);
                }
                if !response.tokens.is_empty() {
                    // A member or seednode shows its own tokens in its answer.
                    let shown = MembershipRequest {
                        want: Vec::new(),
                        tokens: response.tokens.clone(),
                    };
                    self.state().presented_to_us.push((peer, shown));
                }
                let accepted = !response.results.is_empty()
                    && response
                        .results
                        .iter()
                        .all(|r| r.outcome == cordon_protocol::Outcome::Accepted);
                if accepted {
                    self.state().accepted_by.insert(peer);
                }
                if let Some(tag) = self.requests.remove(&request_id) {
                    self.state().responses.insert(tag, Ok(response));
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // A member presents to us by request only when it wants us in a network after
                // the first exchange (its answers carry its tokens otherwise). We accept what it
                // presents, as a member does: a Cordon node asks for our identify (our listen
                // addresses, which it routes us with) only once we accepted it.
                self.log(format!(
                    "membership request from {peer}: {}",
                    summary(&request)
                ));
                let results = request
                    .tokens
                    .iter()
                    .map(|t| cordon_protocol::NetworkResult {
                        network: t.network.clone(),
                        outcome: cordon_protocol::Outcome::Accepted,
                    })
                    .collect();
                let _ = self.swarm.behaviour_mut().membership.send_response(
                    channel,
                    MembershipResponse {
                        results,
                        tokens: Vec::new(),
                    },
                );
                self.state().presented_to_us.push((peer, request));
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.log(format!("membership request to {peer} failed: {error}"));
                if let Some(tag) = self.requests.remove(&request_id) {
                    self.state().responses.insert(tag, Err(error.to_string()));
                }
            }
            other => self.log(format!("membership event {other:?}")),
        }
    }

    fn on_probe(&mut self, event: request_response::Event<MembershipRequest, MembershipResponse>) {
        let (request_id, outcome) = match event {
            request_response::Event::OutboundFailure {
                request_id,
                error: request_response::OutboundFailure::UnsupportedProtocols,
                ..
            } => (request_id, Err(ProbeFailure::Unsupported)),
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => (request_id, Err(ProbeFailure::Other(error.to_string()))),
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => (request_id, Ok(())),
            other => {
                self.log(format!("kad probe event {other:?}"));
                return;
            }
        };
        self.log(format!("kad protocol probe: {outcome:?}"));
        if let Some(tag) = self.probes.remove(&request_id) {
            self.state().probes.insert(tag, outcome);
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<RpcRequest, RpcResponse>) {
        let (request_id, outcome) = match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => (request_id, Ok(response)),
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => (request_id, Err(error.to_string())),
            other => {
                self.log(format!("rpc event {other:?}"));
                return;
            }
        };
        self.log(format!("rpc answer: {outcome:?}"));
        if let Some(tag) = self.rpc_requests.remove(&request_id) {
            self.state().rpc_responses.insert(tag, outcome);
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::PutRecord(result),
                ..
            } => {
                self.log(format!("PUT_VALUE result: {result:?}"));
                if let Some(tag) = self.puts.remove(&id) {
                    let outcome = result.map(|_| ()).map_err(|e| e.to_string());
                    self.state().puts.insert(tag, outcome);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            } => {
                self.log(format!(
                    "FIND_NODE step {} (last: {}): {result:?}",
                    step.count, step.last
                ));
                if !step.last {
                    return;
                }
                let Some((tag, via, started, dialed_before)) = self.queries.remove(&id) else {
                    return;
                };
                let (result, error) = match result {
                    Ok(ok) => (ok.peers.into_iter().map(|p| p.peer_id).collect(), None),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (
                        peers.into_iter().map(|p| p.peer_id).collect(),
                        Some("timeout".to_owned()),
                    ),
                };
                let mut table = BTreeSet::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for e in bucket.iter() {
                        table.insert(*e.node.key.preimage());
                    }
                }
                let mut state = self.state();
                let dialed = state.dialed[dialed_before..]
                    .iter()
                    .copied()
                    .filter(|p| p != &via)
                    .collect();
                state.queries.insert(
                    tag,
                    FindNode {
                        result,
                        error,
                        dialed,
                        table,
                        took: started.elapsed(),
                    },
                );
            }
            other => self.log(format!("kad {other:?}")),
        }
    }
}
