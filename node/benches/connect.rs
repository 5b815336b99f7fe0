//! Connection setup benchmark: the node's real composed behaviour against plain rust-libp2p.
//!
//! DESIGN.md section 8: "Authenticated connection setup (TCP + Noise + Yamux + membership
//! exchange, both sides verified) within 1.3x of plain rust-libp2p TCP + Noise + Yamux +
//! identify on loopback."
//!
//! The Cordon variants drive the product: two swarms from [`cordon_node::swarm::build`] (filter,
//! connection limits, the session behaviour with its verification pool, gates and Kademlia,
//! join, identify, ping), each holding a real membership token minted in-process. The bench
//! does only what the daemon's event loop does around a connection: it records the dial intent
//! before dialing. Presentation, verification (on the blocking worker pool), gates, identify
//! (gated: it runs once the peer proved a network) and routing are the product's own.
//!
//! Four variants, measured in one run, interleaved in blocks to cancel drift:
//! - `baseline`: two plain swarms (TCP with nodelay, Noise, Yamux, identify only). One
//!   iteration is dial -> both sides received the other's identify.
//! - `cordon cold`: a pair of product swarms built just before the iteration (untimed) with the
//!   same identities and tokens but new `Verifier`s, so both verdict caches are empty (and both
//!   routing tables: a first contact). One iteration is dial -> the dialer presents its token
//!   -> the listener verifies it and answers with its own (`/cordon/membership/2`) -> the
//!   dialer verifies that; done when both sides emitted `session::Event::Verified` for the
//!   other on this connection and both received identify (`session::Event::Identified`, which
//!   comes only after verification). Both verifications are full ones: neither side has seen
//!   the network's delegation.
//! - `cordon first contact`: as `cold`, but each new verifier has verified another member's
//!   token of the same seednode before (untimed), as any member of a running network has: the
//!   delegation is known, so each side checks the remaining signatures and the membership block
//!   (the known-delegation path).
//! - `cordon cached`: one pair of product swarms kept for the whole run, so each side's
//!   verdict cache already holds the other's token (the reconnect case); same end condition.
//!   Before measuring, the pair makes one untimed connection and then runs for [`SETTLE`], so
//!   the Kademlia bootstrap that a peer's first routing insert schedules happens outside the
//!   measurements.
//!
//! Both sides of every variant listen on loopback (so identify carries a listen address, and a
//! Cordon listener routes its dialer); the bench dials from a fresh local port each time so
//! consecutive connections never reuse a 4-tuple still in TIME_WAIT. Both swarms of a pair are
//! polled from one task. Disconnecting (until both sides saw every connection close) is not
//! timed. Timing is printed, never asserted; every wait panics after [`WAIT_TIMEOUT`].
//!
//! Environment: `BENCH_ITERS` (measured iterations per variant, default 200), `BENCH_WARMUP`
//! (default 10), `BENCH_BLOCK` (block size, default 20), `BENCH_THREADS` (tokio worker threads,
//! default: one per core, as the node binary). `BENCH_ITERS=3 BENCH_WARMUP=1 BENCH_BLOCK=1` is
//! a smoke run of a few seconds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cordon_host::clock::Clock;
use cordon_membership::{
    AccessList, DelegationRequest, Issuer, NetworkTrust, SecretKey, Verifier, VerifierConfig,
    issue_delegation,
};
use cordon_node::NodeLimits;
use cordon_node::config::Transport;
use cordon_node::filter::FilterRules;
use cordon_node::ratelimit::LimitsConfig;
use cordon_node::session;
use cordon_node::swarm::{Behaviour, BehaviourEvent, SwarmConfig};
use cordon_protocol::{NetworkName, Outcome};
use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, noise, tcp, yamux};

/// Longest any wait may take before the bench gives up.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the long-lived Cordon pair runs after its first connection, so Kademlia's automatic
/// bootstrap (500 ms after a peer first enters a small routing table) happens before measuring.
const SETTLE: Duration = Duration::from_secs(1);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {WAIT_TIMEOUT:?}"),
    }
}

/// Starts listening on loopback and returns the bound address.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    within("listen on loopback", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
}

fn idle<B: NetworkBehaviour>(swarm: &Swarm<B>) -> bool {
    swarm.network_info().connection_counters().num_connections() == 0
}

/// Closes every connection of both swarms and runs them until neither has one, established or
/// pending (including any a behaviour dials meanwhile, such as Kademlia's bootstrap).
async fn disconnect<B: NetworkBehaviour>(what: &str, a: &mut Swarm<B>, b: &mut Swarm<B>) {
    within(what, async {
        while !(idle(a) && idle(b)) {
            for swarm in [&mut *a, &mut *b] {
                let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
                for p in peers {
                    let _ = swarm.disconnect_peer_id(p);
                }
            }
            tokio::select! {
                _ = a.select_next_some() => {}
                _ = b.select_next_some() => {}
            }
        }
    })
    .await;
}

/// The dial both variants use: known address, fresh local port.
fn dial_opts(peer: PeerId, addr: &Multiaddr) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(vec![addr.clone()])
        .allocate_new_port()
        .build()
}

/// One timed connection.
#[derive(Debug, Clone, Copy, Default)]
struct Setup {
    /// Dial until the iteration's end condition held.
    total: Duration,
    /// Dial until both sides had identify.
    identified: Duration,
    /// Dial until both sides had verified the other (Cordon only).
    verified: Duration,
    /// Dial until the listener had verified the dialer (Cordon only).
    listener_verified: Duration,
    /// Verification job time reported by both sides' pools (Cordon only).
    verify_jobs: Duration,
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
        .with_swarm_config(|c| c.with_idle_connection_timeout(NodeLimits::default().idle_timeout))
        .build()
}

impl Baseline {
    async fn new() -> Self {
        let mut dialer = plain_swarm();
        let mut listener = plain_swarm();
        listen(&mut dialer).await;
        let addr = listen(&mut listener).await;
        Self {
            dialer,
            listener,
            addr,
        }
    }

    /// One connection: dial until both sides received identify (timed), then close (untimed).
    async fn iteration(&mut self) -> Setup {
        let Self {
            dialer,
            listener,
            addr,
        } = self;
        let target = *listener.local_peer_id();
        let origin = *dialer.local_peer_id();
        let opts = dial_opts(target, addr);
        let conn = opts.connection_id();
        let mut listener_conn = None;
        let (mut dialer_id, mut listener_id) = (None, None);
        let deadline = tokio::time::sleep(WAIT_TIMEOUT);
        tokio::pin!(deadline);
        let start = Instant::now();
        dialer.dial(opts).expect("dial");
        while dialer_id.is_none() || listener_id.is_none() {
            tokio::select! {
                ev = dialer.select_next_some() => match ev {
                    SwarmEvent::Behaviour(identify::Event::Received { connection_id, .. })
                        if connection_id == conn => dialer_id = Some(start.elapsed()),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("baseline dial failed: {error}")
                    }
                    _ => {}
                },
                ev = listener.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. }
                        if peer_id == origin && listener_conn.is_none() => {
                        listener_conn = Some(connection_id);
                    }
                    SwarmEvent::Behaviour(identify::Event::Received { connection_id, .. })
                        if Some(connection_id) == listener_conn => {
                        listener_id = Some(start.elapsed());
                    }
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        panic!("baseline accept failed: {error}")
                    }
                    _ => {}
                },
                () = &mut deadline => panic!(
                    "baseline setup not done within {WAIT_TIMEOUT:?}: dialer identified: {}, \
                     listener connected: {}, listener identified: {}",
                    dialer_id.is_some(),
                    listener_conn.is_some(),
                    listener_id.is_some()
                ),
            }
        }
        let both = dialer_id.max(listener_id).unwrap_or_default();
        disconnect("baseline disconnect", dialer, listener).await;
        Setup {
            total: both,
            identified: both,
            ..Setup::default()
        }
    }
}

// ------------------------------------------------------------------------------- cordon

/// A node identity with its membership token.
struct Member {
    key: SecretKey,
    token: Vec<u8>,
}

/// One network (an anchor and one seednode) and the two members the bench connects.
struct Fixture {
    network: NetworkName,
    anchor: SecretKey,
    dialer: Member,
    listener: Member,
    /// A third member of the same seednode, whose token warms a first-contact verifier.
    other: Member,
}

impl Fixture {
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
                allowed_roles: vec!["member".into()],
                allowed_rights: Vec::new(),
                max_lifetime: 7 * day,
            },
            now,
        )
        .expect("delegation");
        let network = NetworkName::new(name).expect("network name");
        let issuer = Issuer::new(&delegation, &verifier_for(&network, &anchor), seednode, now)
            .expect("issuer");
        let member = || {
            let key = SecretKey::generate();
            let token = issuer
                .issue(&key.peer_id(), &["member".to_string()], day, now)
                .expect("membership")
                .bytes;
            Member { key, token }
        };
        let dialer = member();
        let listener = member();
        let other = member();
        Self {
            network,
            anchor,
            dialer,
            listener,
            other,
        }
    }

    /// A product swarm for `member` with a new verifier (empty verdict cache), holding its
    /// token. With `issuer_known`, the verifier has verified another member's token of the same
    /// seednode first, so it knows the delegation and no verdict of the peer's token.
    fn node(&self, member: &Member, issuer_known: bool) -> Swarm<Behaviour> {
        let verifier = verifier_for(&self.network, &self.anchor);
        if issuer_known {
            verifier
                .verify_membership(
                    &self.other.token,
                    &self.other.key.peer_id(),
                    SystemTime::now(),
                )
                .expect("the third member's token verifies");
        }
        let mut swarm = cordon_node::swarm::build(SwarmConfig {
            keypair: member.key.libp2p_keypair(),
            networks: vec![(self.network.clone(), false)],
            limits: NodeLimits::default(),
            rules: FilterRules::default()
                .with_unlimited_ip("127.0.0.1/32".parse().expect("loopback net")),
            rate_limits: LimitsConfig::default(),
            verifier: Arc::new(verifier),
            clock: Clock::system(),
            transport: Transport::Tcp,
            protocol: cordon_protocol::Limits::default(),
            records: cordon_node::rpc::RecordStoreConfig::default(),
            private_addresses: vec![self.network.clone()],
        })
        .expect("swarm::build");
        swarm
            .behaviour_mut()
            .session
            .set_membership(&self.network, Some(member.token.clone()));
        swarm
    }

    /// Two fresh product swarms, both listening.
    async fn pair(&self, issuer_known: bool) -> Pair {
        let mut dialer = self.node(&self.dialer, issuer_known);
        let mut listener = self.node(&self.listener, issuer_known);
        listen(&mut dialer).await;
        let addr = listen(&mut listener).await;
        Pair {
            dialer,
            listener,
            addr,
            network: self.network.clone(),
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

/// What one side of a Cordon connection has done so far.
#[derive(Debug)]
struct Side {
    role: &'static str,
    /// The peer at the other end.
    remote: PeerId,
    /// The connection being measured (the dialer knows it before dialing).
    conn: Option<ConnectionId>,
    /// Whether a failed dial or accept means the measurement is broken (it does while timing).
    measuring: bool,
    verified: Option<Instant>,
    identified: Option<Instant>,
    verify_jobs: Duration,
}

impl Side {
    fn new(role: &'static str, remote: PeerId, conn: Option<ConnectionId>) -> Self {
        Self {
            role,
            remote,
            conn,
            measuring: true,
            verified: None,
            identified: None,
            verify_jobs: Duration::ZERO,
        }
    }

    fn done(&self) -> bool {
        self.verified.is_some() && self.identified.is_some()
    }
}

/// The bench's bookkeeping for `side` (the session behaviour handles identify itself), and a
/// panic on anything that means the measurement is wrong.
fn on_event(network: &NetworkName, side: &mut Side, event: SwarmEvent<BehaviourEvent>) {
    let role = side.role;
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            ..
        } if peer_id == side.remote && side.conn.is_none() => side.conn = Some(connection_id),
        SwarmEvent::ConnectionClosed {
            connection_id,
            cause,
            ..
        } if side.measuring && Some(connection_id) == side.conn => {
            panic!("{role}: connection closed during setup: {cause:?}")
        }
        SwarmEvent::OutgoingConnectionError { error, .. } if side.measuring => {
            panic!("{role}: dial failed: {error}")
        }
        SwarmEvent::IncomingConnectionError { error, .. } if side.measuring => {
            panic!("{role}: accept failed: {error}")
        }
        // Not timed, but shown: the daemon would only log these.
        SwarmEvent::OutgoingConnectionError { error, .. } => {
            eprintln!("{role}: a dial failed: {error:?}")
        }
        SwarmEvent::IncomingConnectionError { error, .. } => {
            eprintln!("{role}: an accept failed: {error}")
        }
        SwarmEvent::Behaviour(BehaviourEvent::Session(session::Event::Identified {
            connection,
            ..
        })) if Some(connection) == side.conn => side.identified = Some(Instant::now()),
        SwarmEvent::Behaviour(BehaviourEvent::Session(event)) => match event {
            session::Event::Verified {
                peer,
                connection,
                proof,
            } if Some(connection) == side.conn => {
                assert_eq!(peer, side.remote, "{role}: verified an unexpected peer");
                assert_eq!(&proof.network, network, "{role}: verified another network");
                side.verified = Some(Instant::now());
            }
            session::Event::VerificationTime(d) => side.verify_jobs += d,
            session::Event::Refused { peer, refused, .. } => {
                panic!("{role}: refused {peer}'s presentation: {refused:?}")
            }
            session::Event::Closed {
                connection, reason, ..
            } if side.measuring && Some(connection) == side.conn => {
                panic!("{role}: session closed the connection: {}", reason.as_str())
            }
            session::Event::Answered { peer, response } => {
                for r in response.results {
                    if let Outcome::Rejected { reason } = r.outcome {
                        panic!(
                            "{role}: {peer} rejected our membership of {}: {reason}",
                            r.network
                        )
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Two product swarms of one network; the dialer connects to the listener.
struct Pair {
    dialer: Swarm<Behaviour>,
    listener: Swarm<Behaviour>,
    addr: Multiaddr,
    network: NetworkName,
}

impl Pair {
    /// One connection: dial until both sides verified each other and both received identify
    /// (timed), then close (untimed).
    async fn iteration(&mut self) -> Setup {
        let Self {
            dialer,
            listener,
            addr,
            network,
        } = self;
        let target = *listener.local_peer_id();
        let origin = *dialer.local_peer_id();
        let opts = dial_opts(target, addr);
        let mut d = Side::new("dialer", target, Some(opts.connection_id()));
        let mut l = Side::new("listener", origin, None);
        let deadline = tokio::time::sleep(WAIT_TIMEOUT);
        tokio::pin!(deadline);
        let start = Instant::now();
        // As `routing::dial`: record why we dial, so the new connection carries our token.
        assert!(
            dialer.behaviour_mut().session.dial_intent(target, network),
            "dial intent refused"
        );
        dialer.dial(opts).expect("dial");
        while !(d.done() && l.done()) {
            tokio::select! {
                ev = dialer.select_next_some() => on_event(network, &mut d, ev),
                ev = listener.select_next_some() => on_event(network, &mut l, ev),
                () = &mut deadline => panic!(
                    "cordon setup not done within {WAIT_TIMEOUT:?}:\n  {d:?}\n  {l:?}"
                ),
            }
        }
        let since = |a: Option<Instant>, b: Option<Instant>| {
            a.max(b).map(|t| t - start).unwrap_or_default()
        };
        let setup = Setup {
            total: since(d.verified.max(d.identified), l.verified.max(l.identified)),
            identified: since(d.identified, l.identified),
            verified: since(d.verified, l.verified),
            listener_verified: since(l.verified, None),
            verify_jobs: d.verify_jobs + l.verify_jobs,
        };
        disconnect("cordon disconnect", dialer, listener).await;
        setup
    }

    /// Runs both swarms for [`SETTLE`] as the daemon would, then closes everything.
    async fn settle(&mut self) {
        let Self {
            dialer,
            listener,
            network,
            ..
        } = self;
        let mut d = Side::new("dialer (settling)", *listener.local_peer_id(), None);
        let mut l = Side::new("listener (settling)", *dialer.local_peer_id(), None);
        d.measuring = false;
        l.measuring = false;
        let deadline = tokio::time::sleep(SETTLE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = dialer.select_next_some() => on_event(network, &mut d, ev),
                ev = listener.select_next_some() => on_event(network, &mut l, ev),
                () = &mut deadline => break,
            }
        }
        disconnect("cordon disconnect after settling", dialer, listener).await;
    }
}

/// The Cordon side of the bench: the long-lived pair and what rebuilds the cold one.
struct Cordon {
    fixture: Fixture,
    cached: Pair,
}

impl Cordon {
    /// Builds the long-lived pair and makes one connection with it (untimed), so each side's
    /// verdict cache holds the other's token and each routing table the other peer; then lets
    /// the Kademlia bootstrap that the first routing insert schedules happen now rather than
    /// inside a measurement.
    async fn new() -> Self {
        let fixture = Fixture::new("mainnet");
        let mut cached = fixture.pair(false).await;
        cached.iteration().await;
        cached.settle().await;
        Self { fixture, cached }
    }

    async fn cold(&mut self, issuer_known: bool) -> Setup {
        let mut pair = self.fixture.pair(issuer_known).await;
        pair.iteration().await
    }

    async fn cached(&mut self) -> Setup {
        self.cached.iteration().await
    }
}

// ------------------------------------------------------------------------------- driver

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Baseline,
    CordonCold,
    CordonFirstContact,
    CordonCached,
}

const VARIANTS: [Variant; 4] = [
    Variant::Baseline,
    Variant::CordonCold,
    Variant::CordonFirstContact,
    Variant::CordonCached,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline: tcp+noise+yamux+identify",
            Variant::CordonCold => "cordon cold (new verifiers)",
            Variant::CordonFirstContact => "cordon first contact (issuer known)",
            Variant::CordonCached => "cordon cached (reconnect)",
        }
    }
}

async fn run_one(baseline: &mut Baseline, cordon: &mut Cordon, v: Variant) -> Setup {
    match v {
        Variant::Baseline => baseline.iteration().await,
        Variant::CordonCold => cordon.cold(false).await,
        Variant::CordonFirstContact => cordon.cold(true).await,
        Variant::CordonCached => cordon.cached().await,
    }
}

/// p10, median and p90 in microseconds (nearest rank; the median of an even count averages).
struct Stats {
    p10: f64,
    median: f64,
    p90: f64,
}

fn stats(samples: impl Iterator<Item = Duration>) -> Stats {
    let mut us: Vec<f64> = samples.map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    if n == 0 {
        return Stats {
            p10: f64::NAN,
            median: f64::NAN,
            p90: f64::NAN,
        };
    }
    let rank = |p: usize| us[(n * p).div_ceil(100).clamp(1, n) - 1];
    let median = if n.is_multiple_of(2) {
        (us[n / 2 - 1] + us[n / 2]) / 2.0
    } else {
        us[n / 2]
    };
    Stats {
        p10: rank(10),
        median,
        p90: rank(90),
    }
}

async fn bench(iters: usize, warmup: usize, block: usize, threads: usize) {
    let mut baseline = Baseline::new().await;
    let mut cordon = Cordon::new().await;
    for v in VARIANTS {
        for _ in 0..warmup {
            run_one(&mut baseline, &mut cordon, v).await;
        }
    }
    let mut samples: [Vec<Setup>; 4] = Default::default();
    let mut round = 0;
    while samples.iter().any(|s| s.len() < iters) {
        // Rotate the order each round so no variant always follows the same one.
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let n = block.min(iters - samples[i].len());
            for _ in 0..n {
                let setup = run_one(&mut baseline, &mut cordon, VARIANTS[i]).await;
                samples[i].push(setup);
            }
        }
        round += 1;
    }

    println!(
        "connection setup on loopback: {iters} iterations per variant after {warmup} warm-up, \
         interleaved in blocks of {block}; {threads} tokio worker threads; membership token {} \
         bytes",
        cordon.fixture.dialer.token.len()
    );
    println!(
        "cordon: two cordon_node::swarm::build swarms (the product behaviour); done when both \
         emitted session::Event::Verified for the other and both received identify"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10}",
        "variant", "p10 us", "median us", "p90 us"
    );
    let totals: Vec<Stats> = samples
        .iter()
        .map(|s| stats(s.iter().map(|x| x.total)))
        .collect();
    for (v, s) in VARIANTS.iter().zip(&totals) {
        println!(
            "{:<36} {:>10.1} {:>10.1} {:>10.1}",
            v.label(),
            s.p10,
            s.median,
            s.p90
        );
    }
    for (v, s) in VARIANTS.iter().zip(&samples).skip(1) {
        println!(
            "  {}: both identified at {:.1} us; listener verified the dialer at {:.1} us, both \
             verified at {:.1} us; verification jobs (both sides) {:.1} us (medians)",
            v.label(),
            stats(s.iter().map(|x| x.identified)).median,
            stats(s.iter().map(|x| x.listener_verified)).median,
            stats(s.iter().map(|x| x.verified)).median,
            stats(s.iter().map(|x| x.verify_jobs)).median
        );
    }
    let base = totals[0].median;
    println!(
        "ratios to the baseline (medians; design target <= 1.3x): both verified (DESIGN's \
         measure) / both verified and identified"
    );
    for (v, s) in VARIANTS.iter().zip(&samples).skip(1) {
        let verified = stats(s.iter().map(|x| x.verified)).median;
        let total = stats(s.iter().map(|x| x.total)).median;
        println!(
            "  {:<36} {:.2}x / {:.2}x",
            v.label(),
            verified / base,
            total / base
        );
    }
}

fn main() {
    let iters = env_usize("BENCH_ITERS", 200).max(1);
    let warmup = env_usize("BENCH_WARMUP", 10);
    let block = env_usize("BENCH_BLOCK", 20).max(1);
    let threads = env_usize(
        "BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
    .max(1);
    // Multi-threaded, as the node: the session behaviour verifies on tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    runtime.block_on(bench(iters, warmup, block, threads));
    println!("bench took {:.1} s", started.elapsed().as_secs_f64());
}
