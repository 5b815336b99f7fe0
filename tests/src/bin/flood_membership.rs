//! Load generator for `scripts/flood` (a benchmark, not a test): non-member libp2p clients that
//! send oversized or garbage messages on `/cordon/membership/2`, or floods of unsolicited token
//! `Deliver`s on `/cordon/join/1`, to one loopback target.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Load generator for `scripts/flood`, not a check: `FLOOD_TARGET` (a multiaddr ending in
/// `/p2p/<peer>`, loopback only), `FLOOD_COUNT` clients (default 200, at most 10 000),
/// `FLOOD_CONCURRENCY` at a time (default 16), client `i` starting no earlier than
/// `i / FLOOD_COUNT * FLOOD_SPREAD_SECS` (default 0: all at once), for at most `FLOOD_SECS`
/// (default 60). Each client has a fresh identity, dials the target and sends on `/cordon/membership/2` either an
/// oversized message (256 KiB) or 512 bytes of garbage (alternately), waits at most 5 s for the
/// outcome, and disconnects. With `FLOOD_KIND=deliver` and `FLOOD_TOKEN_FILE` (a token, e.g. the
/// target's own), each client instead sends up to `FLOOD_MESSAGES` (default 500, at most 100 000)
/// `Deliver`s of that token on `/cordon/join/1`, 16 unanswered at a time, until they are answered
/// or the target cuts it off; with `FLOOD_KIND=join`, as many join requests for mainnet (to a
/// node that is not a seednode: stray requests; against a seednode, `join_pending` counts those
/// it queued, answering `Pending`); with `FLOOD_KIND=poll`, as many status polls
/// of a request that is not theirs (`served` counts those the target's join service answered,
/// rather than refusing them `rate_limited` at the door). With `FLOOD_KIND=present`,
/// `FLOOD_DELEGATION_FILE` (a network's delegation, which its seednodes present to whoever asks)
/// and `FLOOD_SEEDNODE_KEY` (that seednode's public key), each client forges a membership whose
/// block claims the seednode's signature (`cordon_tests::forge`: only signature checks refuse
/// it) and presents it up to `FLOOD_MESSAGES` times on `/cordon/membership/2`, 16 unanswered at
/// a time. `FLOOD_SOURCE_IPS=127.0.0.A-127.0.0.B` spreads the join and present clients' source
/// addresses over that loopback range (client `i` dials from address `A + i mod (B - A + 1)`).
/// Prints one JSON summary line.
fn main() {
    let Ok(target) = std::env::var("FLOOD_TARGET") else {
        eprintln!("usage: FLOOD_TARGET=/ip4/127.0.0.1/tcp/PORT/p2p/PEER flood_membership");
        std::process::exit(2);
    };
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let target: Multiaddr = target.parse().expect("FLOOD_TARGET is a multiaddr");
    assert!(
        target
            .iter()
            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback())),
        "the flood only targets 127.0.0.1"
    );
    let count = env("FLOOD_COUNT", 200).min(10_000);
    let concurrency = env("FLOOD_CONCURRENCY", 16).clamp(1, 256);
    let secs = env("FLOOD_SECS", 60).min(3600);
    let spread = Duration::from_secs(env("FLOOD_SPREAD_SECS", 0).min(secs));
    let messages = env("FLOOD_MESSAGES", 500).clamp(1, 100_000);
    let mainnet: cordon_protocol::NetworkName = "mainnet".parse().expect("network name");
    let join = match std::env::var("FLOOD_KIND").as_deref() {
        Ok("deliver") => {
            let file = std::env::var("FLOOD_TOKEN_FILE")
                .expect("FLOOD_KIND=deliver needs FLOOD_TOKEN_FILE");
            let token = std::fs::read(&file).expect("FLOOD_TOKEN_FILE is readable");
            let message = cordon_protocol::JoinMessage::Deliver {
                network: mainnet,
                request_id: 1,
                token,
            };
            Some(("libp2p_join_deliver", message, messages))
        }
        Ok("join") => {
            let message = cordon_protocol::JoinMessage::Request(cordon_protocol::JoinRequest {
                network: mainnet,
                label: "flood".to_owned(),
                invite: None,
            });
            Some(("libp2p_join_request", message, messages))
        }
        Ok("poll") => {
            let message = cordon_protocol::JoinMessage::Status { request_id: 1 };
            Some(("libp2p_join_poll", message, messages))
        }
        Ok("present") => None,
        Ok("garbage") | Err(_) => None,
        Ok(other) => {
            panic!("unknown FLOOD_KIND {other:?}: garbage | deliver | join | poll | present")
        }
    };
    let present = (std::env::var("FLOOD_KIND").as_deref() == Ok("present")).then(|| {
        let delegation = std::fs::read(
            std::env::var("FLOOD_DELEGATION_FILE")
                .expect("FLOOD_KIND=present needs FLOOD_DELEGATION_FILE"),
        )
        .expect("FLOOD_DELEGATION_FILE is readable");
        let seednode: cordon_membership::PublicKey = std::env::var("FLOOD_SEEDNODE_KEY")
            .expect("FLOOD_KIND=present needs FLOOD_SEEDNODE_KEY")
            .parse()
            .expect("FLOOD_SEEDNODE_KEY is a public key (ed25519/<hex>)");
        (delegation, seednode, messages)
    });
    let sources = std::env::var("FLOOD_SOURCE_IPS")
        .ok()
        .map(|range| parse_sources(&range));
    let summary = flood::run(
        target,
        count,
        concurrency,
        spread,
        Duration::from_secs(secs),
        join,
        present,
        sources,
    );
    println!("{summary}");
}

/// `127.0.0.A-127.0.0.B` as the addresses it spans (loopback only, at most 254).
fn parse_sources(range: &str) -> Vec<std::net::Ipv4Addr> {
    let (from, to) = range
        .split_once('-')
        .expect("FLOOD_SOURCE_IPS is 127.0.0.A-127.0.0.B");
    let from: std::net::Ipv4Addr = from.parse().expect("a source address");
    let to: std::net::Ipv4Addr = to.parse().expect("a source address");
    assert!(
        from.is_loopback() && to.is_loopback() && from <= to,
        "FLOOD_SOURCE_IPS must be an ascending loopback range"
    );
    (u32::from(from)..=u32::from(to))
        .take(254)
        .map(std::net::Ipv4Addr::from)
        .collect()
}

/// Clients that send raw bytes on the membership protocol (see `main`).
mod flood {
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use cordon_protocol::MEMBERSHIP_PROTOCOL;
    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
    use libp2p::multiaddr::Protocol;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};

    /// Sends whatever bytes it is given; reads at most 64 KiB back.
    #[derive(Debug, Clone, Default)]
    struct RawBytes;

    async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    impl request_response::Codec for RawBytes {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read_capped(io).await
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read_capped(io).await
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&req).await?;
            io.close().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            resp: Vec<u8>,
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&resp).await?;
            io.close().await
        }
    }

    #[derive(Debug, Default)]
    struct Counters {
        /// Join messages sent, and those answered `ack` (a `Deliver` accepted: the attack works).
        join_sent: AtomicU64,
        join_acked: AtomicU64,
        /// Join requests a seednode queued (answered `Pending`).
        join_pending: AtomicU64,
        /// Join messages the target's join service answered (not refused `rate_limited` at the
        /// door): what a flood of polls costs the service.
        join_served: AtomicU64,
        /// Forged presentations sent, and those accepted (the attack works).
        presented: AtomicU64,
        presented_accepted: AtomicU64,
        attempted: AtomicU64,
        established: AtomicU64,
        dial_failed: AtomicU64,
        answered: AtomicU64,
        request_failed: AtomicU64,
        closed_by_node: AtomicU64,
        timed_out: AtomicU64,
    }

    fn garbage(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    async fn one(target: Multiaddr, i: u64, c: Arc<Counters>) {
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let Ok(builder) = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
        else {
            return;
        };
        let Ok(builder) = builder.with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawBytes,
                [(MEMBERSHIP_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        });
        let mut swarm = builder
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
            .build();
        let Some(Protocol::P2p(peer)) = target.iter().last() else {
            return;
        };
        if swarm.dial(target).is_err() {
            c.dial_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = if i.is_multiple_of(2) {
            garbage(256 * 1024, i)
        } else {
            garbage(512, i)
        };
        let mut payload = Some(payload);
        let outcome = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        c.established.fetch_add(1, Ordering::Relaxed);
                        if let Some(p) = payload.take() {
                            swarm.behaviour_mut().send_request(&peer, p);
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {
                        c.dial_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        c.closed_by_node.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { .. },
                        ..
                    }) => {
                        c.answered.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                        c.request_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    _ => {}
                }
            }
        })
        .await;
        if outcome.is_err() {
            c.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A swarm of one request-response protocol (outbound only) for `key`, dialing from
    /// `source` when given (`cordon_tests::bound_tcp`), else from 127.0.0.1.
    fn client_swarm<C>(
        key: libp2p::identity::Keypair,
        codec: C,
        protocol: StreamProtocol,
        source: Option<std::net::Ipv4Addr>,
    ) -> Option<libp2p::Swarm<request_response::Behaviour<C>>>
    where
        C: request_response::Codec<Protocol = StreamProtocol> + Clone + Send + 'static,
    {
        let behaviour = move |_: &libp2p::identity::Keypair| {
            request_response::Behaviour::with_codec(
                codec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(5))
                    .with_max_concurrent_streams(64),
            )
        };
        let idle =
            |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(10));
        let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
        match source {
            Some(ip) => builder
                .with_other_transport(|key| cordon_tests::bound_tcp::transport(key, ip))
                .ok()
                .and_then(|b| b.with_behaviour(behaviour).ok())
                .map(|b| b.with_swarm_config(idle).build()),
            None => builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .ok()
                .and_then(|b| b.with_behaviour(behaviour).ok())
                .map(|b| b.with_swarm_config(idle).build()),
        }
    }

    /// One flooding client: dials `target` and sends up to `messages` copies of `request`, 16
    /// unanswered at a time, until all are answered or the target cuts it off (at most 30 s).
    /// Counts each request into `sent` and each answer `accepted` says the attack worked
    /// with into `worked`.
    #[allow(clippy::too_many_arguments)]
    async fn windowed<C>(
        mut swarm: libp2p::Swarm<request_response::Behaviour<C>>,
        target: Multiaddr,
        request: C::Request,
        messages: u64,
        accepted: impl Fn(&C::Response) -> bool,
        sent: &AtomicU64,
        worked: &AtomicU64,
        c: &Counters,
    ) where
        C: request_response::Codec + Send + Clone + 'static,
        C::Request: Clone,
    {
        let Some(Protocol::P2p(peer)) = target.iter().last() else {
            return;
        };
        if swarm.dial(target).is_err() {
            c.dial_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (mut left, mut in_flight) = (messages, 0u64);
        let fill = |swarm: &mut libp2p::Swarm<request_response::Behaviour<C>>,
                    left: &mut u64,
                    in_flight: &mut u64| {
            while *left > 0 && *in_flight < 16 {
                *left -= 1;
                *in_flight += 1;
                swarm.behaviour_mut().send_request(&peer, request.clone());
                sent.fetch_add(1, Ordering::Relaxed);
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        c.established.fetch_add(1, Ordering::Relaxed);
                        fill(&mut swarm, &mut left, &mut in_flight);
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {
                        c.dial_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        c.closed_by_node.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    }) => {
                        in_flight -= 1;
                        c.answered.fetch_add(1, Ordering::Relaxed);
                        if accepted(&response) {
                            worked.fetch_add(1, Ordering::Relaxed);
                        }
                        if left == 0 && in_flight == 0 {
                            return;
                        }
                        fill(&mut swarm, &mut left, &mut in_flight);
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                        in_flight -= 1;
                        c.request_failed.fetch_add(1, Ordering::Relaxed);
                        if left == 0 && in_flight == 0 {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        })
        .await;
        if outcome.is_err() {
            c.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One client of a join-message flood: up to `messages` copies of `message` from a fresh
    /// identity, 16 at a time, until answered or cut off.
    async fn one_join(
        target: Multiaddr,
        message: Arc<cordon_protocol::JoinMessage>,
        messages: u64,
        source: Option<std::net::Ipv4Addr>,
        c: Arc<Counters>,
    ) {
        use cordon_protocol::{JOIN_PROTOCOL, JoinCodec, JoinReply, Limits};
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let key = libp2p::identity::Keypair::generate_ed25519();
        let codec = JoinCodec::join(Limits::default());
        let Some(swarm) = client_swarm(key, codec, JOIN_PROTOCOL, source) else {
            return;
        };
        let message = message.as_ref().clone();
        // A poll "works" when the join service spends an answer on it, a request when it is
        // queued, a delivery when it is acknowledged.
        let poll = matches!(message, cordon_protocol::JoinMessage::Status { .. });
        let request = matches!(message, cordon_protocol::JoinMessage::Request(_));
        let worked = move |r: &JoinReply| {
            if poll {
                !matches!(
                    r,
                    JoinReply::Error {
                        code: cordon_protocol::ReasonCode::RateLimited
                    }
                )
            } else if request {
                matches!(r, JoinReply::Pending { .. })
            } else {
                matches!(r, JoinReply::Ack)
            }
        };
        let counter = if poll {
            &c.join_served
        } else if request {
            &c.join_pending
        } else {
            &c.join_acked
        };
        windowed(
            swarm,
            target,
            message,
            messages,
            worked,
            &c.join_sent,
            counter,
            &c,
        )
        .await;
    }

    /// One client of a presentation flood: a fresh identity with a forged membership (see
    /// `main`), presented up to `messages` times, 16 at a time, until answered or cut off.
    async fn one_present(
        target: Multiaddr,
        forge: Arc<(Vec<u8>, cordon_membership::PublicKey, u64)>,
        source: Option<std::net::Ipv4Addr>,
        c: Arc<Counters>,
    ) {
        use cordon_protocol::{
            Limits, MEMBERSHIP_PROTOCOL, MembershipCodec, MembershipRequest, MembershipResponse,
            Outcome, PresentedToken, TokenKind,
        };
        c.attempted.fetch_add(1, Ordering::Relaxed);
        let key = cordon_membership::SecretKey::generate();
        let (delegation, seednode, messages) = forge.as_ref();
        let token = cordon_tests::forge::membership(delegation, &key, Some(seednode));
        let request = MembershipRequest {
            want: Vec::new(),
            tokens: vec![PresentedToken {
                network: "mainnet".parse().expect("network name"),
                kind: TokenKind::Membership,
                token,
            }],
        };
        let codec = MembershipCodec::membership(Limits::default());
        let Some(swarm) = client_swarm(key.libp2p_keypair(), codec, MEMBERSHIP_PROTOCOL, source)
        else {
            return;
        };
        let accepted =
            |r: &MembershipResponse| r.results.iter().any(|r| r.outcome == Outcome::Accepted);
        windowed(
            swarm,
            target,
            request,
            *messages,
            accepted,
            &c.presented,
            &c.presented_accepted,
            &c,
        )
        .await;
    }

    /// Runs the flood; returns a JSON summary. `join`: the kind, message and count per client
    /// of a join-message flood; `present`: the delegation, seednode key and count per client
    /// of a forged-presentation flood; neither for the membership garbage flood.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        target: Multiaddr,
        count: u64,
        concurrency: u64,
        spread: Duration,
        max: Duration,
        join: Option<(&'static str, cordon_protocol::JoinMessage, u64)>,
        present: Option<(Vec<u8>, cordon_membership::PublicKey, u64)>,
        sources: Option<Vec<std::net::Ipv4Addr>>,
    ) -> serde_json::Value {
        let kind = if present.is_some() {
            "libp2p_forged_presentations"
        } else {
            join.as_ref().map_or("libp2p_membership_garbage", |j| j.0)
        };
        let present = present.map(Arc::new);
        let sources = Arc::new(sources.unwrap_or_default());
        let join = join.map(|(_, message, n)| (Arc::new(message), n));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        runtime.block_on(async {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (target, counters, next) = (target.clone(), counters.clone(), next.clone());
                    let join = join.clone();
                    let present = present.clone();
                    let sources = sources.clone();
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count || started.elapsed() >= max {
                                return;
                            }
                            let at = started + spread.mul_f64(i as f64 / count as f64);
                            tokio::time::sleep_until(at.into()).await;
                            let source = (!sources.is_empty())
                                .then(|| sources[(i as usize) % sources.len()]);
                            if let Some(forge) = &present {
                                one_present(
                                    target.clone(),
                                    forge.clone(),
                                    source,
                                    counters.clone(),
                                )
                                .await;
                                continue;
                            }
                            match &join {
                                Some((token, n)) => {
                                    one_join(
                                        target.clone(),
                                        token.clone(),
                                        *n,
                                        source,
                                        counters.clone(),
                                    )
                                    .await;
                                }
                                None => one(target.clone(), i, counters.clone()).await,
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(2));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &counters;
        serde_json::json!({
            "kind": kind,
            "join_sent": get(&c.join_sent),
            "join_acked": get(&c.join_acked),
            "join_pending": get(&c.join_pending),
            "join_served": get(&c.join_served),
            "presented": get(&c.presented),
            "presented_accepted": get(&c.presented_accepted),
            "attempted": get(&c.attempted),
            "established": get(&c.established),
            "dial_failed": get(&c.dial_failed),
            "answered": get(&c.answered),
            "request_failed": get(&c.request_failed),
            "closed_by_node": get(&c.closed_by_node),
            "timed_out": get(&c.timed_out),
            "secs": started.elapsed().as_secs_f64(),
        })
    }
}
