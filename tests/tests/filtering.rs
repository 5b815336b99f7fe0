//! The connection filter and automatic bans, against real processes on loopback.
//!
//! - PeerId rules (`deny_peers`) refuse a member at connection establishment until the rule is
//!   removed and the filter reloaded (`node reload`).
//! - IP rules (`deny_ips`) refuse an inbound connection before the Noise handshake: a raw TCP
//!   client that speaks the first multistream-select line gets the socket closed without an
//!   answer, and a libp2p client never completes its handshake.
//! - Repeated failed membership presentations ban the presenting PeerId for `ban_duration`.
//!
//! The libp2p side is [`probe::Client`], a bare swarm (TCP + Noise + Yamux + the membership
//! protocol) that reports, for each dial, whether the connection was refused, closed at once,
//! or stayed open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use cordon_protocol::{MembershipRequest, Outcome, PresentedToken, TokenKind};
use cordon_tests::{Net, Node, cli, hold_for, node_status, wait_pending, wait_until};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::Value;

const JOIN: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(60);
const AUDIT: Duration = Duration::from_secs(20);

/// Loopback stays exempt from per-IP caps and rates in every filter file written here (the
/// default without a file), so only the rule under test refuses anything.
const UNLIMITED: &str = "unlimited_ips = [\"127.0.0.1/32\", \"::1/128\"]\n";

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Approves `node`'s pending mainnet request and waits until it is a member.
fn admit(net: &Net, node: &Node) {
    let seed = net.network("mainnet");
    let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
    cordon_tests::approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
}

/// `node reload --data D`; panics unless it succeeds.
fn reload(node: &Node) {
    cli("node", &["reload", "--data", path_str(&node.data)]).success();
}

/// Every record of `<data>/audit.log`.
fn audit(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `node`'s audit trail holds a record matching `pred`; returns it.
fn wait_audit(node: &Node, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until(AUDIT, &format!("{} to audit {what}", node.label), || {
        let records = audit(&node.data);
        records.iter().find(|r| pred(r)).cloned().ok_or_else(|| {
            let kinds: Vec<String> = records
                .iter()
                .map(|r| {
                    format!(
                        "{}({} {})",
                        r["kind"].as_str().unwrap_or("?"),
                        r["peer"].as_str().unwrap_or("-"),
                        r["reason"].as_str().unwrap_or("-")
                    )
                })
                .collect();
            format!("{} records: {kinds:?}", records.len())
        })
    })
}

/// The node's first listen address, with `/p2p/<peer id>`.
fn listen_addr(node: &Node) -> Multiaddr {
    let status = node_status(&node.data);
    let first = status["listen"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{} lists no listen address: {status}", node.label));
    let mut addr: Multiaddr = first.parse().expect("listen address parses");
    if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        addr.push(Protocol::P2p(node.peer_id.parse().expect("peer id")));
    }
    addr
}

fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP listen address")
}

/// What a bare TCP client saw after sending the first multistream-select line.
#[derive(Debug, PartialEq, Eq)]
enum TcpProbe {
    /// The listener answered (it started negotiating: the handshake would run).
    Answered(Vec<u8>),
    /// The socket was closed or reset without a byte: refused before any negotiation.
    Closed,
    /// Nothing either way within the timeout.
    Silent,
}

/// Connects to 127.0.0.1:`port`, sends `/multistream/1.0.0`, and reads what comes back.
fn tcp_probe(port: u16) -> TcpProbe {
    const HEADER: &[u8] = b"\x13/multistream/1.0.0\n";
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
    else {
        return TcpProbe::Closed;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(HEADER).is_err() {
        return TcpProbe::Closed;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => TcpProbe::Closed,
        Ok(n) => TcpProbe::Answered(buf[..n].to_vec()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            TcpProbe::Silent
        }
        Err(_) => TcpProbe::Closed,
    }
}

/// A membership presentation of `token` for mainnet.
fn presentation(token: Vec<u8>) -> MembershipRequest {
    MembershipRequest {
        want: Vec::new(),
        tokens: vec![PresentedToken {
            network: "mainnet".parse().unwrap(),
            kind: TokenKind::Membership,
            token,
        }],
    }
}

#[test]
fn denied_peer_is_refused_and_admitted_after_removal() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let seed_id = net.network("mainnet").seed_peer_id.clone();

    // B's identity exists before A starts, so A's filter can name it from the start.
    let (b_data, b_id) = net.init_node("b");
    let filter = dir.path().join("filter-a.toml");
    std::fs::write(&filter, format!("deny_peers = [\"{b_id}\"]\n{UNLIMITED}")).unwrap();
    let a = net.start_node("a", &["mainnet"], &["--filter", path_str(&filter)]);
    admit(&net, &a);
    let b = net.run_node("b", b_data, b_id, &["mainnet"], &[]);
    admit(&net, &b);

    // B is a member in good standing: it routes the seednode, and the seednode tells both
    // about each other. A still never routes B.
    wait_until(CONVERGE, "b to route the seednode", || {
        let peers = b.peers("mainnet");
        if peers.contains(&seed_id) {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    });
    let refused = wait_audit(&a, "connection_refused of B", |r| {
        r["kind"] == "connection_refused" && r["peer"] == b.peer_id.as_str()
    });
    eprintln!("A refused B: {refused}");
    hold_for(Duration::from_secs(8), || {
        let peers = a.peers("mainnet");
        assert!(
            !peers.contains(&b.peer_id),
            "A routes B although its filter denies B: {peers:?}"
        );
    });

    // Remove the rule and reload: A admits and routes B.
    std::fs::write(&filter, format!("deny_peers = []\n{UNLIMITED}")).unwrap();
    reload(&a);
    wait_until(CONVERGE, "A to route B after the rule was removed", || {
        let peers = a.peers("mainnet");
        if peers.contains(&b.peer_id) {
            Ok(())
        } else {
            Err(format!("A routes {peers:?}"))
        }
    });
}

#[test]
fn denied_ip_is_refused_before_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    // IP rules apply to inbound connections only: A's own connection to its seednode is
    // outbound, so A joins normally with loopback denied.
    let filter = dir.path().join("filter-a.toml");
    std::fs::write(
        &filter,
        format!("deny_ips = [\"127.0.0.1/32\"]\n{UNLIMITED}"),
    )
    .unwrap();
    let a = net.start_node("a", &["mainnet"], &["--filter", path_str(&filter)]);
    admit(&net, &a);
    let addr = listen_addr(&a);
    let port = tcp_port(&addr);
    eprintln!(
        "A listens on {addr}; status filter: {}",
        a.status()["filter"]
    );

    // A raw TCP client: the socket is closed without a byte of multistream-select.
    let probe = tcp_probe(port);
    assert_eq!(
        probe,
        TcpProbe::Closed,
        "A did not close a denied IP's socket before negotiating"
    );
    // A libp2p client never completes the Noise handshake.
    let mut client = probe::Client::new();
    let attempt = client.attempt(&addr, None, Duration::from_secs(2));
    eprintln!("libp2p dial while denied: {attempt:?}");
    assert!(
        !attempt.established,
        "a libp2p connection from a denied IP was established: {attempt:?}"
    );
    assert!(
        attempt.error.is_some(),
        "the dial neither failed nor succeeded: {attempt:?}"
    );
    // A kept serving: it is still a member, routing its seednode.
    assert_eq!(a.state("mainnet").as_deref(), Some("member"));

    // Remove the rule and reload: both clients are admitted.
    std::fs::write(&filter, format!("deny_ips = []\n{UNLIMITED}")).unwrap();
    reload(&a);
    let answered = wait_until(
        Duration::from_secs(15),
        "A to answer multistream-select",
        || match tcp_probe(port) {
            TcpProbe::Answered(bytes) => Ok(bytes),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        answered.starts_with(b"\x13/multistream/1.0.0\n"),
        "unexpected answer: {answered:?}"
    );
    let attempt = client.attempt(&addr, None, Duration::from_secs(2));
    eprintln!("libp2p dial after the reload: {attempt:?}");
    assert!(
        attempt.open(),
        "a libp2p client was not admitted after the deny rule was removed: {attempt:?}"
    );
}

/// Issue 12, item 5: what a stranger can cause at will is logged once per source and window
/// (like its audit record), not once per connection: 300 refused connections from a denied
/// address add one log line and one audit record, not 300.
#[test]
fn a_refused_connection_flood_adds_a_bounded_number_of_log_lines() {
    const FLOOD: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let filter = dir.path().join("filter.toml");
    std::fs::write(
        &filter,
        format!("deny_ips = [\"127.0.0.1/32\"]\n{UNLIMITED}"),
    )
    .unwrap();
    let a = net.start_node("a", &["mainnet"], &["--filter", path_str(&filter)]);
    let port = tcp_port(&listen_addr(&a));
    for i in 0..FLOOD {
        assert_eq!(
            tcp_probe(port),
            TcpProbe::Closed,
            "connection {i} was not refused"
        );
    }
    let refused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("connection refused by the filter"))
            .count()
    };
    wait_until(Duration::from_secs(15), "the node to log a refusal", || {
        if refused(&a.daemon.stderr_log()) >= 1 {
            Ok(())
        } else {
            Err("no refusal logged".to_owned())
        }
    });
    // One round trip through the event loop, which handles the refusals before it.
    a.status();
    let lines = refused(&a.daemon.stderr_log());
    let records = audit(&a.data)
        .iter()
        .filter(|r| r["kind"] == "connection_refused")
        .count();
    eprintln!("{FLOOD} refused connections: {lines} log lines, {records} audit records");
    assert!(lines >= 1, "the refusals were not logged at all");
    assert!(
        lines <= 2,
        "{lines} log lines for {FLOOD} refused connections from one address"
    );
    assert!(records <= 2, "{records} audit records");
}

#[test]
fn repeated_bad_presentations_ban_the_peer_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    std::fs::write(
        &limits,
        "ban_threshold = 3\nban_window = \"60s\"\nban_duration = \"3s\"\n",
    )
    .unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = net.start_node("a", &["mainnet"], &["--limits", path_str(&limits)]);
    admit(&net, &a);
    let addr = listen_addr(&a);

    let mut client = probe::Client::new();
    let peer = client.peer.to_string();
    eprintln!("raw client {peer} dials A at {addr}");
    // Three presentations of a token that is not a biscuit, each on a new connection.
    for i in 1..=3 {
        // A's limit is one connection per peer: a new connection that overtakes the close of
        // the previous one is denied before it carries anything. Try again; a denied
        // connection presented nothing and counts toward no ban.
        let mut tries = 0;
        let attempt = loop {
            tries += 1;
            let attempt = client.attempt(
                &addr,
                Some(presentation(vec![0xde, 0xad, 0xbe, 0xef, i])),
                Duration::ZERO,
            );
            eprintln!("bad presentation {i}, try {tries}: {attempt:?}");
            let overtaken = i < 3
                && attempt.closed.is_some()
                && attempt.response.as_ref().is_none_or(|r| r.is_err());
            if !overtaken || tries == 5 {
                break attempt;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(attempt.established, "attempt {i} was refused: {attempt:?}");
        let response = match attempt.response.clone() {
            Some(Ok(response)) => response,
            // The presentation that reaches the threshold may lose its answer: the ban closes
            // the connection at once.
            Some(Err(e)) if i == 3 && attempt.closed.is_some() => {
                eprintln!("presentation {i}: connection closed by the ban ({e})");
                continue;
            }
            other => panic!("no answer to presentation {i}: {other:?} ({attempt:?})"),
        };
        assert!(
            !response.results.is_empty()
                && response
                    .results
                    .iter()
                    .all(|r| matches!(r.outcome, Outcome::Rejected { .. })),
            "presentation {i} was not rejected: {response:?}"
        );
    }
    let banned_at = Instant::now();
    let ban = wait_audit(&a, "ban_applied for the raw client", |r| {
        r["kind"] == "ban_applied" && r["peer"] == peer.as_str()
    });
    eprintln!("ban: {ban}");

    // The fourth connection from the same PeerId is refused at establishment.
    let attempt = client.attempt(&addr, None, Duration::from_secs(1));
    eprintln!("fourth connection: {attempt:?}");
    assert!(
        banned_at.elapsed() < Duration::from_millis(2500),
        "the ban check came too late to be meaningful ({:?})",
        banned_at.elapsed()
    );
    assert!(
        !attempt.open(),
        "a banned peer's connection stayed open: {attempt:?}"
    );

    // After the ban expires (3 s) it can connect again.
    let attempt = wait_until(
        Duration::from_secs(20),
        "the raw client to connect again after the ban",
        || {
            let attempt = client.attempt(&addr, None, Duration::from_secs(1));
            if attempt.open() {
                Ok(attempt)
            } else {
                std::thread::sleep(Duration::from_millis(350));
                Err(format!("{attempt:?}"))
            }
        },
    );
    let after = banned_at.elapsed();
    eprintln!("admitted again {after:.1?} after the ban: {attempt:?}");
    assert!(
        after >= Duration::from_millis(2500),
        "admitted {after:?} after the ban, before its 3 s duration"
    );
    wait_audit(&a, "ban_lifted for the raw client", |r| {
        // The lifted ban's target may sit in `peer` or (as `peer <id>`) in another field.
        r["kind"] == "ban_lifted" && r.to_string().contains(peer.as_str())
    });
}

/// A bare libp2p client: TCP + Noise + Yamux and `/cordon/membership/2`, nothing else. Each
/// [`Client::attempt`] makes a new connection, optionally presents, watches it, then closes it.
mod probe {
    use std::time::{Duration, Instant};

    use cordon_protocol::{
        Limits, MEMBERSHIP_PROTOCOL, MembershipCodec, MembershipRequest, MembershipResponse,
    };
    use futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};

    #[derive(NetworkBehaviour)]
    pub(crate) struct Behaviour {
        membership: request_response::Behaviour<MembershipCodec>,
    }

    /// What one dial produced.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Attempt {
        /// The connection was established (handshake done on our side).
        pub(crate) established: bool,
        /// The dial failed (e.g. the remote closed the socket during the handshake).
        pub(crate) error: Option<String>,
        /// When and why the remote closed an established connection within the hold time.
        pub(crate) closed: Option<(Duration, String)>,
        /// The answer to our presentation, if we presented.
        pub(crate) response: Option<Result<MembershipResponse, String>>,
    }

    impl Attempt {
        /// Established and still open when we stopped watching.
        pub(crate) fn open(&self) -> bool {
            self.established && self.closed.is_none()
        }
    }

    pub(crate) struct Client {
        pub(crate) peer: PeerId,
        swarm: Swarm<Behaviour>,
        runtime: tokio::runtime::Runtime,
    }

    impl Client {
        pub(crate) fn new() -> Self {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let peer = keypair.public().to_peer_id();
            let swarm = runtime.block_on(async {
                libp2p::SwarmBuilder::with_existing_identity(keypair)
                    .with_tokio()
                    .with_tcp(
                        tcp::Config::default().nodelay(true),
                        noise::Config::new,
                        yamux::Config::default,
                    )
                    .expect("tcp transport")
                    .with_behaviour(|_| Behaviour {
                        membership: request_response::Behaviour::with_codec(
                            MembershipCodec::membership(Limits::default()),
                            [(MEMBERSHIP_PROTOCOL, ProtocolSupport::Full)],
                            request_response::Config::default()
                                .with_request_timeout(Duration::from_secs(10)),
                        ),
                    })
                    .expect("behaviour")
                    .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                    .build()
            });
            Self {
                peer,
                swarm,
                runtime,
            }
        }

        /// Dials `addr` (ending in `/p2p/<peer>`) on a new connection, presents `request` if
        /// given and waits for its answer, then watches the connection for `hold`; closes it.
        pub(crate) fn attempt(
            &mut self,
            addr: &Multiaddr,
            request: Option<MembershipRequest>,
            hold: Duration,
        ) -> Attempt {
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
                panic!("{addr} does not end in /p2p/<peer>");
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            let swarm = &mut self.swarm;
            self.runtime.block_on(async move {
                let mut out = Attempt::default();
                if let Err(e) = swarm.dial(opts) {
                    out.error = Some(format!("dial: {e}"));
                    return out;
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                let mut established_at: Option<Instant> = None;
                let mut pending = None;
                let mut request = request;
                loop {
                    // Watch until the hold time after establishment is over (and any answer
                    // to our presentation is in), or until the overall deadline.
                    let wake = match established_at {
                        Some(at) if pending.is_none() => {
                            tokio::time::Instant::from_std(at + hold).min(deadline)
                        }
                        _ => deadline,
                    };
                    let Ok(event) = tokio::time::timeout_at(wake, swarm.select_next_some()).await
                    else {
                        if established_at.is_none() {
                            out.error = Some("no outcome within 20 s".into());
                            return out;
                        }
                        if pending.is_some() {
                            out.response = Some(Err("no answer within 20 s".into()));
                        }
                        break;
                    };
                    match event {
                        SwarmEvent::ConnectionEstablished { connection_id, .. }
                            if connection_id == id =>
                        {
                            out.established = true;
                            established_at = Some(Instant::now());
                            if let Some(req) = request.take() {
                                pending =
                                    Some(swarm.behaviour_mut().membership.send_request(&peer, req));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError {
                            connection_id,
                            error,
                            ..
                        } if connection_id == id => {
                            out.error = Some(error.to_string());
                            return out;
                        }
                        SwarmEvent::ConnectionClosed {
                            connection_id,
                            cause,
                            ..
                        } if connection_id == id => {
                            let after = established_at.map(|t| t.elapsed()).unwrap_or_default();
                            out.closed = Some((
                                after,
                                cause.map_or_else(|| "closed".to_owned(), |c| c.to_string()),
                            ));
                            if pending.is_some() && out.response.is_none() {
                                out.response = Some(Err("connection closed".into()));
                            }
                            return out;
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Membership(event)) => match event {
                            request_response::Event::Message {
                                message:
                                    request_response::Message::Response {
                                        request_id,
                                        response,
                                    },
                                ..
                            } if Some(request_id) == pending => {
                                out.response = Some(Ok(response));
                                pending = None;
                            }
                            request_response::Event::OutboundFailure {
                                request_id, error, ..
                            } if Some(request_id) == pending => {
                                out.response = Some(Err(error.to_string()));
                                pending = None;
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                }
                // Close our side and wait (bounded) for the swarm to forget the connection.
                if swarm.close_connection(id) {
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        loop {
                            if let SwarmEvent::ConnectionClosed { connection_id, .. } =
                                swarm.select_next_some().await
                                && connection_id == id
                            {
                                return;
                            }
                        }
                    })
                    .await;
                }
                out
            })
        }
    }
}
