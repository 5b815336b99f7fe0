//! In-process tests of the connection filter (`cordon_node::filter`) over real TCP on
//! 127.0.0.1: swarms with Noise, Yamux, a `ConnectionFilter` and ping. One listener is the node
//! under test; dialers connect to it. Every wait is under a timeout.

#![allow(clippy::unwrap_used)]

use std::{
    net::IpAddr,
    task::Poll,
    time::{Duration, Instant},
};

use cordon_node::{
    filter::{BanTarget, ConnectionFilter, FilterEvent, FilterReason, FilterRules, IpNet},
    ratelimit::LimitsConfig,
};
use futures::{StreamExt, future};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, noise, ping,
    swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent, dial_opts::DialOpts},
    tcp, yamux,
};

const WAIT: Duration = Duration::from_secs(15);
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[derive(NetworkBehaviour)]
struct Node {
    filter: ConnectionFilter,
    ping: ping::Behaviour,
}

type Event = SwarmEvent<NodeEvent>;

fn spawn(rules: FilterRules, limits: &LimitsConfig) -> Swarm<Node> {
    let limits = limits.clone();
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(move |_| Node {
            filter: ConnectionFilter::new(rules, &limits),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn spawn_default() -> Swarm<Node> {
    spawn(FilterRules::default(), &LimitsConfig::default())
}

async fn listen(swarm: &mut Swarm<Node>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("timed out waiting for a listen address")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Listener,
    Dialer(usize),
}

/// Drives the listener and all dialers until `done` returns true for an event.
async fn drive(
    listener: &mut Swarm<Node>,
    dialers: &mut [Swarm<Node>],
    what: &str,
    mut done: impl FnMut(Who, &Event) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        loop {
            let (who, event) = future::poll_fn(|cx| {
                if let Poll::Ready(Some(event)) = listener.poll_next_unpin(cx) {
                    return Poll::Ready((Who::Listener, event));
                }
                for (i, dialer) in dialers.iter_mut().enumerate() {
                    if let Poll::Ready(Some(event)) = dialer.poll_next_unpin(cx) {
                        return Poll::Ready((Who::Dialer(i), event));
                    }
                }
                Poll::Pending
            })
            .await;
            if done(who, &event) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

fn refusal(event: &Event) -> Option<(Option<PeerId>, FilterReason)> {
    match event {
        SwarmEvent::Behaviour(NodeEvent::Filter(FilterEvent::Refused { peer, reason, .. })) => {
            Some((*peer, *reason))
        }
        _ => None,
    }
}

/// Dialer `index` dials `addr` and the listener refuses it with `reason` before the handshake:
/// the listener emits the refusal with no peer id, reports a denied incoming connection without
/// a peer id, never establishes, and the dialer's attempt fails.
async fn expect_refused_before_handshake(
    listener: &mut Swarm<Node>,
    dialers: &mut [Swarm<Node>],
    index: usize,
    addr: &Multiaddr,
    reason: FilterReason,
) {
    dialers[index].dial(addr.clone()).unwrap();
    let (mut refused, mut listen_denied, mut dial_failed) = (false, false, false);
    drive(
        listener,
        dialers,
        "refusal before the handshake",
        |who, event| {
            match (who, event) {
                (Who::Listener, SwarmEvent::ConnectionEstablished { .. }) => {
                    panic!("listener established a connection it should refuse")
                }
                (Who::Listener, event) if refusal(event).is_some() => {
                    assert_eq!(refusal(event), Some((None, reason)));
                    refused = true;
                }
                (
                    Who::Listener,
                    SwarmEvent::IncomingConnectionError {
                        peer_id,
                        error: ListenError::Denied { cause },
                        ..
                    },
                ) => {
                    assert_eq!(*peer_id, None, "denied before the peer id was known");
                    assert_eq!(cause.downcast_ref::<FilterReason>(), Some(&reason));
                    listen_denied = true;
                }
                (Who::Dialer(i), SwarmEvent::ConnectionEstablished { .. }) if i == index => {
                    panic!("dialer {i} established a connection that should be refused")
                }
                (Who::Dialer(i), SwarmEvent::OutgoingConnectionError { .. }) if i == index => {
                    dial_failed = true;
                }
                _ => {}
            }
            refused && listen_denied && dial_failed
        },
    )
    .await;
}

/// Dialer `index` dials `addr`; waits until both sides are connected and a ping succeeded.
async fn expect_admitted(
    listener: &mut Swarm<Node>,
    dialers: &mut [Swarm<Node>],
    index: usize,
    addr: &Multiaddr,
) {
    let listener_id = *listener.local_peer_id();
    let dialer_id = *dialers[index].local_peer_id();
    dialers[index].dial(addr.clone()).unwrap();
    let (mut accepted, mut pinged) = (false, false);
    drive(
        listener,
        dialers,
        "an admitted connection and a ping",
        |who, event| {
            if let Some(refused) = refusal(event) {
                panic!("{who:?} refused a connection: {refused:?}");
            }
            match (who, event) {
                (Who::Listener, SwarmEvent::ConnectionEstablished { peer_id, .. })
                    if *peer_id == dialer_id =>
                {
                    accepted = true;
                }
                (
                    Who::Dialer(i),
                    SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
                        peer,
                        result: Ok(_),
                        ..
                    })),
                ) if i == index && *peer == listener_id => {
                    pinged = true;
                }
                (Who::Dialer(i), SwarmEvent::OutgoingConnectionError { error, .. })
                    if i == index =>
                {
                    panic!("dialer {i} failed to connect: {error}")
                }
                _ => {}
            }
            accepted && pinged
        },
    )
    .await;
}

#[tokio::test]
async fn denied_ip_is_refused_before_handshake_and_admitted_after_rule_removal() {
    let rules = FilterRules::default().with_deny_ip("127.0.0.1/32".parse::<IpNet>().unwrap());
    let mut listener = spawn(rules, &LimitsConfig::default());
    let addr = listen(&mut listener).await;
    let mut dialers = vec![spawn_default()];

    expect_refused_before_handshake(
        &mut listener,
        &mut dialers,
        0,
        &addr,
        FilterReason::DeniedIp,
    )
    .await;
    assert_eq!(listener.behaviour().filter.status().tracked_connections, 0);

    let stale = listener
        .behaviour_mut()
        .filter
        .set_rules(FilterRules::default());
    assert!(stale.is_empty());
    expect_admitted(&mut listener, &mut dialers, 0, &addr).await;
    assert_eq!(listener.behaviour().filter.status().tracked_connections, 1);

    // Reinstating the rule reports the live connection so the owner can close it.
    let stale = listener
        .behaviour_mut()
        .filter
        .set_rules(FilterRules::default().with_deny_ip("127.0.0.0/8".parse::<IpNet>().unwrap()));
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].peer, *dialers[0].local_peer_id());
    assert_eq!(stale[0].reason, FilterReason::DeniedIp);
}

#[tokio::test]
async fn denied_peer_is_refused_at_establishment_and_admitted_after_rule_removal() {
    let mut dialers = vec![spawn_default()];
    let dialer_id = *dialers[0].local_peer_id();
    let dialer_addr = listen(&mut dialers[0]).await;
    let mut listener = spawn(
        FilterRules::default().with_deny_peer(dialer_id),
        &LimitsConfig::default(),
    );
    let addr = listen(&mut listener).await;

    // Inbound: refused once Noise has authenticated the peer id.
    dialers[0].dial(addr.clone()).unwrap();
    let (mut refused, mut dialer_lost) = (false, false);
    drive(
        &mut listener,
        &mut dialers,
        "refusal at establishment",
        |who, event| {
            match (who, event) {
                (Who::Listener, SwarmEvent::ConnectionEstablished { .. }) => {
                    panic!("listener established a connection with a denied peer")
                }
                (Who::Listener, event) if refusal(event).is_some() => {
                    assert_eq!(
                        refusal(event),
                        Some((Some(dialer_id), FilterReason::DeniedPeer))
                    );
                    refused = true;
                }
                (Who::Dialer(0), SwarmEvent::OutgoingConnectionError { .. })
                | (Who::Dialer(0), SwarmEvent::ConnectionClosed { .. }) => {
                    dialer_lost = true;
                }
                _ => {}
            }
            refused && dialer_lost
        },
    )
    .await;

    // Outbound to the denied peer: refused before dialing.
    let error = listener
        .dial(
            DialOpts::peer_id(dialer_id)
                .addresses(vec![dialer_addr])
                .build(),
        )
        .unwrap_err();
    let DialError::Denied { cause } = error else {
        panic!("expected a denied dial, got {error}");
    };
    assert_eq!(
        cause.downcast_ref::<FilterReason>(),
        Some(&FilterReason::DeniedPeer)
    );
    drive(
        &mut listener,
        &mut dialers,
        "the outbound refusal event",
        |who, event| {
            who == Who::Listener
                && refusal(event) == Some((Some(dialer_id), FilterReason::DeniedPeer))
        },
    )
    .await;

    assert!(
        listener
            .behaviour_mut()
            .filter
            .set_rules(FilterRules::default())
            .is_empty()
    );
    expect_admitted(&mut listener, &mut dialers, 0, &addr).await;
}

#[tokio::test]
async fn banned_ip_is_refused_until_the_ban_expires() {
    let limits = LimitsConfig {
        ban_threshold: 2,
        ban_duration: Duration::from_secs(1),
        ..LimitsConfig::default()
    };
    let mut listener = spawn(FilterRules::default(), &limits);
    let addr = listen(&mut listener).await;
    let mut dialers = vec![spawn_default()];
    // Failures of some other peer from the same IP ban the IP (and that peer), not the dialer.
    let culprit = PeerId::random();
    let now = Instant::now();
    let filter = &mut listener.behaviour_mut().filter;
    assert!(
        filter
            .record_auth_failure(culprit, Some(LOCALHOST), now)
            .is_empty()
    );
    let bans = filter.record_auth_failure(culprit, Some(LOCALHOST), now);
    let targets: Vec<BanTarget> = bans.iter().map(|b| b.key).collect();
    assert_eq!(
        targets,
        vec![BanTarget::Peer(culprit), BanTarget::Ip(LOCALHOST)]
    );
    let until = bans[1].until;
    assert_eq!(filter.status().active_bans, 2);

    expect_refused_before_handshake(&mut listener, &mut dialers, 0, &addr, FilterReason::Banned)
        .await;
    assert!(
        Instant::now() < until,
        "the refusal must happen while the ban is in force"
    );

    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    let mut lifted = listener.behaviour_mut().filter.lift_expired(Instant::now());
    lifted.sort_by_key(|t| matches!(t, BanTarget::Ip(_)));
    assert_eq!(
        lifted,
        vec![BanTarget::Peer(culprit), BanTarget::Ip(LOCALHOST)]
    );
    expect_admitted(&mut listener, &mut dialers, 0, &addr).await;

    // A manual ban works the same way and reports the live connection.
    let stale = listener
        .behaviour_mut()
        .filter
        .ban_ip(LOCALHOST, Instant::now() + Duration::from_secs(60));
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].reason, FilterReason::Banned);
}

#[tokio::test]
async fn per_ip_connection_cap_refuses_the_extra_connection() {
    const CAP: usize = 2;
    let limits = LimitsConfig {
        connections_per_ip: CAP as u32,
        ..LimitsConfig::default()
    };
    let mut listener = spawn(FilterRules::default(), &limits);
    let listener_id = *listener.local_peer_id();
    let addr = listen(&mut listener).await;
    let mut dialers: Vec<Swarm<Node>> = (0..=CAP).map(|_| spawn_default()).collect();

    for index in 0..CAP {
        expect_admitted(&mut listener, &mut dialers, index, &addr).await;
    }
    let status = listener.behaviour().filter.status();
    assert_eq!(status.tracked_ips.len(), 1);
    assert_eq!(status.tracked_ips[0].ip, "127.0.0.1");
    assert_eq!(status.tracked_ips[0].connections, CAP as u32);

    expect_refused_before_handshake(
        &mut listener,
        &mut dialers,
        CAP,
        &addr,
        FilterReason::IpConnectionCap,
    )
    .await;

    // Once one connection closes, the extra dialer gets in.
    let first = *dialers[0].local_peer_id();
    dialers[0].disconnect_peer_id(listener_id).unwrap();
    drive(
        &mut listener,
        &mut dialers,
        "the first connection closing",
        |who, event| {
            matches!(
                (who, event),
                (Who::Listener, SwarmEvent::ConnectionClosed { peer_id, .. }) if *peer_id == first
            )
        },
    )
    .await;
    expect_admitted(&mut listener, &mut dialers, CAP, &addr).await;
    assert_eq!(
        listener.behaviour().filter.status().tracked_ips[0].connections,
        CAP as u32
    );
}
