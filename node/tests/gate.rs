//! In-process tests of the gate (`cordon_node::gate`): swarms over the memory transport with
//! Noise and Yamux, a gated Kademlia in server mode, and ungated identify and ping.
//!
//! Roles: A is the server under test (it never opens a gate on its own); B is the querier (it
//! opens its side towards a peer once that peer advertises the gated Kademlia protocol, i.e. once
//! the peer has opened for B); C is a member that A knows about and that opens for everyone on
//! connect. "C reaches B" therefore only happens through A answering B's `FIND_NODE`.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use cordon_node::gate::{GateConfig, GateRefusal, Gated};
use futures::{StreamExt, future};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
    core::{Transport, transport::MemoryTransport, upgrade::Version},
    identify,
    identity::Keypair,
    kad::{
        self, BucketInserts, GetClosestPeersError, Mode, QueryId, QueryResult, store::MemoryStore,
    },
    noise, ping, request_response,
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent},
    yamux,
};

const KAD: StreamProtocol = StreamProtocol::new("/cordon/test/kad/1.0.0");
const WAIT: Duration = Duration::from_secs(15);

#[derive(NetworkBehaviour)]
struct Member {
    kad: Gated<kad::Behaviour<MemoryStore>>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn spawn<B: NetworkBehaviour>(behaviour: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn member(key: &Keypair) -> Member {
    let id = key.public().to_peer_id();
    let mut config = kad::Config::new(KAD);
    config
        .set_kbucket_inserts(BucketInserts::Manual)
        .set_periodic_bootstrap_interval(None);
    let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
    kad.set_mode(Some(Mode::Server));
    Member {
        kad: Gated::new(kad),
        identify: identify::Behaviour::new(identify::Config::new(
            "/cordon/test/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200))),
    }
}

async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on("/memory/0".parse().unwrap()).unwrap();
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

/// When a node opens its gate on a connection by itself.
#[derive(Clone, Copy)]
struct Policy {
    /// On `ConnectionEstablished` (C: "every peer is a verified member").
    open_on_connect: bool,
    /// When the remote's identify info lists the gated protocol, i.e. the remote opened for us
    /// (B: "start querying only after the remote accepted us").
    open_when_remote_serves_kad: bool,
}

const MANUAL: Policy = Policy {
    open_on_connect: false,
    open_when_remote_serves_kad: false,
};

type Event = SwarmEvent<MemberEvent>;

/// Three members and what they did, driven together.
struct Net {
    swarms: Vec<Swarm<Member>>,
    ids: Vec<PeerId>,
    addrs: Vec<Multiaddr>,
    policies: Vec<Policy>,
    /// Per node: `FIND_NODE` requests its Kademlia served.
    find_node_served: Vec<usize>,
    /// Per node: every peer it dialled or connected to.
    contacted: Vec<HashSet<PeerId>>,
    /// Per node: the protocols each remote advertised in its latest identify info.
    advertised: Vec<HashMap<PeerId, Vec<StreamProtocol>>>,
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

impl Net {
    /// A, B and C; A knows C's address; B knows A's address and is connected to A; both sides
    /// have exchanged identify (so later protocol changes are pushed). Returns the connection as
    /// seen by A and by B.
    async fn setup() -> (Self, ConnectionId, ConnectionId) {
        let mut swarms = vec![spawn(member), spawn(member), spawn(member)];
        let mut addrs = Vec::new();
        for swarm in &mut swarms {
            addrs.push(listen(swarm).await);
        }
        let ids: Vec<PeerId> = swarms.iter().map(|s| *s.local_peer_id()).collect();
        let mut net = Net {
            swarms,
            ids,
            addrs,
            policies: vec![
                MANUAL,
                Policy {
                    open_on_connect: false,
                    open_when_remote_serves_kad: true,
                },
                Policy {
                    open_on_connect: true,
                    open_when_remote_serves_kad: false,
                },
            ],
            find_node_served: vec![0; 3],
            contacted: vec![HashSet::new(); 3],
            advertised: vec![HashMap::new(); 3],
        };
        let (c_id, c_addr) = (net.ids[C], net.addrs[C].clone());
        net.kad(A).add_address(&c_id, c_addr);
        let (a_id, a_addr) = (net.ids[A], net.addrs[A].clone());
        net.kad(B).add_address(&a_id, a_addr.clone());
        net.swarms[B].dial(a_addr).unwrap();

        let (mut at_a, mut at_b) = (None, None);
        let (mut a_identified, mut b_identified) = (false, false);
        let (b_id, a_id) = (net.ids[B], net.ids[A]);
        let net_connections = net
            .wait_for("A and B connected and identified", |_, i, event| {
                match event {
                    SwarmEvent::ConnectionEstablished {
                        peer_id,
                        connection_id,
                        ..
                    } => {
                        if i == A && *peer_id == b_id {
                            at_a = Some(*connection_id);
                        }
                        if i == B && *peer_id == a_id {
                            at_b = Some(*connection_id);
                        }
                    }
                    SwarmEvent::Behaviour(MemberEvent::Identify(identify::Event::Received {
                        peer_id,
                        ..
                    })) => {
                        a_identified |= i == A && *peer_id == b_id;
                        b_identified |= i == B && *peer_id == a_id;
                    }
                    _ => {}
                }
                (a_identified && b_identified).then_some(())?;
                Some((at_a?, at_b?))
            })
            .await;
        let (at_a, at_b) = net_connections;
        (net, at_a, at_b)
    }

    fn kad(&mut self, node: usize) -> &mut kad::Behaviour<MemoryStore> {
        self.swarms[node].behaviour_mut().kad.inner_mut()
    }

    fn gate(&mut self, node: usize) -> &mut Gated<kad::Behaviour<MemoryStore>> {
        &mut self.swarms[node].behaviour_mut().kad
    }

    /// The next event of any node, after applying the node's policy and bookkeeping.
    async fn next(&mut self) -> (usize, Event) {
        let (event, node, _) =
            future::select_all(self.swarms.iter_mut().map(|s| s.select_next_some())).await;
        let policy = self.policies[node];
        if let SwarmEvent::Behaviour(MemberEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) = &event
        {
            self.advertised[node].insert(*peer_id, info.protocols.clone());
        }
        match &event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                self.contacted[node].insert(*peer_id);
                if policy.open_on_connect {
                    self.gate(node).open(*peer_id, *connection_id).unwrap();
                }
            }
            SwarmEvent::Dialing {
                peer_id: Some(peer),
                ..
            } => {
                self.contacted[node].insert(*peer);
            }
            SwarmEvent::Behaviour(MemberEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) if policy.open_when_remote_serves_kad && info.protocols.contains(&KAD) => {
                self.gate(node).open(*peer_id, *connection_id).unwrap();
            }
            SwarmEvent::Behaviour(MemberEvent::Kad(kad::Event::InboundRequest {
                request: kad::InboundRequest::FindNode { .. },
            })) => {
                self.find_node_served[node] += 1;
            }
            _ => {}
        }
        (node, event)
    }

    /// Drives all nodes until `done` returns `Some`, or panics after [`WAIT`].
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Self, usize, &Event) -> Option<T>,
    ) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let (node, event) = self.next().await;
                if let Some(value) = done(self, node, &event) {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Drives all nodes for `duration`, ignoring events other than the bookkeeping.
    async fn run_for(&mut self, duration: Duration) {
        let _ = tokio::time::timeout(duration, async {
            loop {
                self.next().await;
            }
        })
        .await;
    }

    /// Waits until B's identify info about A does (`true`) or does not list the gated protocol.
    async fn b_sees_a_serving_kad(&mut self, serving: bool) {
        let a_id = self.ids[A];
        self.wait_for(
            "B's identify info about A to change",
            |_, node, event| match event {
                SwarmEvent::Behaviour(MemberEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                })) if node == B && *peer_id == a_id => {
                    (info.protocols.contains(&KAD) == serving).then_some(())
                }
                _ => None,
            },
        )
        .await
    }

    /// B asks its routing table (only A) for the peers closest to `key` and returns the finished
    /// query's peers and stats.
    async fn b_find_node(&mut self, key: PeerId) -> (Vec<PeerId>, kad::QueryStats) {
        let query = self.kad(B).get_closest_peers(key);
        self.wait_for("B's FIND_NODE query to finish", |_, node, event| {
            query_finished(node, event, query)
        })
        .await
    }
}

fn query_finished(
    node: usize,
    event: &Event,
    query: QueryId,
) -> Option<(Vec<PeerId>, kad::QueryStats)> {
    let SwarmEvent::Behaviour(MemberEvent::Kad(kad::Event::OutboundQueryProgressed {
        id,
        result: QueryResult::GetClosestPeers(result),
        stats,
        step,
    })) = event
    else {
        return None;
    };
    if node != B || *id != query || !step.last {
        return None;
    }
    let peers = match result {
        Ok(ok) => ok.peers.iter().map(|p| p.peer_id).collect(),
        Err(GetClosestPeersError::Timeout { peers, .. }) => {
            peers.iter().map(|p| p.peer_id).collect()
        }
    };
    Some((peers, *stats))
}

#[tokio::test]
async fn unverified_peer_cannot_query_kad() {
    let (mut net, at_a, at_b) = Net::setup().await;
    let (a_id, b_id, c_id) = (net.ids[A], net.ids[B], net.ids[C]);
    // B opens its own side so its request really reaches A; A never opens for B.
    net.gate(B).open(a_id, at_b).unwrap();
    assert!(!net.gate(A).is_open(b_id, at_a));

    let (peers, stats) = net.b_find_node(c_id).await;
    assert!(!peers.contains(&c_id), "C leaked to B: {peers:?}");
    assert!(peers.is_empty(), "unexpected peers: {peers:?}");
    assert!(
        stats.num_failures() >= 1,
        "the request to A was not attempted"
    );
    assert_eq!(stats.num_successes(), 0);

    // Give a late answer (or B's automatic bootstrap) time to go wrong.
    net.run_for(Duration::from_secs(1)).await;
    assert_eq!(net.find_node_served[A], 0, "A served FIND_NODE to B");
    assert!(!net.contacted[B].contains(&c_id), "B learned of C");
}

#[tokio::test]
async fn opened_peer_can_query_kad() {
    let (mut net, at_a, _) = Net::setup().await;
    let (b_id, c_id) = (net.ids[B], net.ids[C]);
    net.gate(A).open(b_id, at_a).unwrap();
    assert!(net.gate(A).is_open(b_id, at_a));
    // A's gate is open once B hears about it: identify pushes A's new protocol list. B opens
    // its side on that (policy), which is the order the membership exchange will use.
    net.b_sees_a_serving_kad(true).await;

    let (peers, stats) = net.b_find_node(c_id).await;
    assert!(peers.contains(&c_id), "B did not find C: {peers:?}");
    assert!(stats.num_successes() >= 1);
    assert!(net.find_node_served[A] >= 1);
}

#[tokio::test]
async fn ungated_protocols_work_while_closed() {
    let (mut net, at_a, at_b) = Net::setup().await;
    let (a_id, b_id) = (net.ids[A], net.ids[B]);
    // Identify already ran in `setup` with both gates closed; ping must too.
    let (mut a_pinged, mut b_pinged) = (false, false);
    net.wait_for("a successful ping each way", |_, node, event| {
        if let SwarmEvent::Behaviour(MemberEvent::Ping(ping::Event {
            peer,
            result: Ok(_),
            ..
        })) = event
        {
            a_pinged |= node == A && *peer == b_id;
            b_pinged |= node == B && *peer == a_id;
        }
        (a_pinged && b_pinged).then_some(())
    })
    .await;
    assert!(!net.gate(A).is_open(b_id, at_a));
    assert!(!net.gate(B).is_open(a_id, at_b));
}

#[tokio::test]
async fn closing_again_refuses_new_streams() {
    let (mut net, at_a, _) = Net::setup().await;
    let (b_id, c_id) = (net.ids[B], net.ids[C]);
    net.gate(A).open(b_id, at_a).unwrap();
    net.b_sees_a_serving_kad(true).await;
    let (peers, _) = net.b_find_node(c_id).await;
    assert!(
        peers.contains(&c_id),
        "B did not find C while open: {peers:?}"
    );

    net.gate(A).close(b_id, at_a).unwrap();
    assert!(!net.gate(A).is_open(b_id, at_a));
    net.b_sees_a_serving_kad(false).await;
    let served = net.find_node_served[A];

    // A fresh key, so nothing B learned earlier can answer it; B's routing table holds only A.
    let (peers, stats) = net.b_find_node(PeerId::random()).await;
    assert!(peers.is_empty(), "A answered after close: {peers:?}");
    assert!(
        stats.num_failures() >= 1,
        "the request to A was not attempted"
    );
    assert_eq!(stats.num_successes(), 0);
    assert_eq!(
        net.find_node_served[A], served,
        "A served FIND_NODE after close"
    );
}

#[tokio::test]
async fn inner_protocol_not_advertised_while_closed() {
    let (mut net, at_a, _) = Net::setup().await;
    let (a_id, b_id) = (net.ids[A], net.ids[B]);
    let ping_protocol = StreamProtocol::new("/ipfs/ping/1.0.0");

    // `setup` waited for identify: what A told B while closed lists ping but not the gated kad.
    let before = net.advertised[B][&a_id].clone();
    assert!(before.contains(&ping_protocol), "{before:?}");
    assert!(
        !before.contains(&KAD),
        "kad advertised while closed: {before:?}"
    );

    // Opening changes A's protocol set on that connection, and identify pushes it to B.
    net.gate(A).open(b_id, at_a).unwrap();
    net.b_sees_a_serving_kad(true).await;
    assert!(net.advertised[B][&a_id].contains(&KAD));

    // Closing withdraws it again.
    net.gate(A).close(b_id, at_a).unwrap();
    net.b_sees_a_serving_kad(false).await;
    assert!(!net.advertised[B][&a_id].contains(&KAD));
}

/// A gated request-response protocol (with ping, so connections stay up).
#[derive(NetworkBehaviour)]
struct Rpc {
    rpc: Gated<request_response::cbor::Behaviour<String, String>>,
    ping: ping::Behaviour,
}

fn rpc(config: GateConfig) -> impl Fn(&Keypair) -> Rpc {
    move |_| {
        let protocols = [(
            StreamProtocol::new("/cordon/test/rpc/1"),
            request_response::ProtocolSupport::Full,
        )];
        Rpc {
            rpc: Gated::with_config(
                request_response::cbor::Behaviour::new(
                    protocols,
                    request_response::Config::default(),
                ),
                config.clone(),
            ),
            ping: ping::Behaviour::default(),
        }
    }
}

#[tokio::test]
async fn outbound_requests_are_held_until_open_and_overflow_fails() {
    let held_one = || rpc(GateConfig::default().with_max_held_outbound(1));
    let mut server = spawn(held_one());
    let mut client = spawn(held_one());
    let server_addr = listen(&mut server).await;
    let server_id = *server.local_peer_id();
    client.dial(server_addr).unwrap();

    tokio::time::timeout(WAIT, async {
        let (mut at_server, mut at_client) = (None, None);
        let mut first = None;
        let mut second = None;
        loop {
            let (node, event) = tokio::select! {
                e = server.select_next_some() => (0, e),
                e = client.select_next_some() => (1, e),
            };
            match event {
                SwarmEvent::ConnectionEstablished { connection_id, .. } if node == 0 => {
                    // The server has verified the client.
                    at_server = Some(connection_id);
                    server
                        .behaviour_mut()
                        .rpc
                        .open(*client.local_peer_id(), connection_id)
                        .unwrap();
                }
                SwarmEvent::ConnectionEstablished { connection_id, .. } if node == 1 => {
                    at_client = Some(connection_id);
                    // Two requests while the client's own gate is closed: capacity 1, so the
                    // first is failed and the second is held.
                    let rpc = &mut client.behaviour_mut().rpc;
                    first = Some(rpc.inner_mut().send_request(&server_id, "one".into()));
                    second = Some(rpc.inner_mut().send_request(&server_id, "two".into()));
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    },
                )) => {
                    assert_eq!(Some(request_id), first, "wrong request failed: {error}");
                    let request_response::OutboundFailure::Io(io) = &error else {
                        panic!("unexpected failure: {error:?}");
                    };
                    let refusal = io
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<GateRefusal>())
                        .unwrap();
                    assert_eq!(*refusal, GateRefusal::QueueFull { capacity: 1 });
                    // The second request is still held; opening releases it.
                    let conn = at_client.unwrap();
                    client.behaviour_mut().rpc.open(server_id, conn).unwrap();
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    assert_eq!(request, "two");
                    assert!(at_server.is_some());
                    server
                        .behaviour_mut()
                        .rpc
                        .inner_mut()
                        .send_response(channel, format!("re: {request}"))
                        .unwrap();
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                })) => {
                    assert_eq!(Some(request_id), second);
                    assert_eq!(response, "re: two");
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("timed out waiting for the held request to be answered");
}

/// With `with_outbound_release`, opening lets inbound streams in but keeps outbound requests
/// held until the owner releases them too (identify asks a peer only once the peer let us in).
#[tokio::test]
async fn with_outbound_release_requests_wait_for_the_release() {
    let released = || rpc(GateConfig::default().with_outbound_release());
    let mut server = spawn(released());
    let mut client = spawn(released());
    let server_addr = listen(&mut server).await;
    let server_id = *server.local_peer_id();
    let client_id = *client.local_peer_id();
    client.dial(server_addr).unwrap();

    let mut at_client = None;
    let mut opened_at = None;
    let mut released = false;
    tokio::time::timeout(WAIT, async {
        loop {
            // Half a second after opening without a release, nothing has reached the server:
            // release now.
            let wait_release = async {
                match opened_at {
                    Some(at) if !released => tokio::time::sleep_until(at).await,
                    _ => future::pending().await,
                }
            };
            let (node, event) = tokio::select! {
                e = server.select_next_some() => (0, e),
                e = client.select_next_some() => (1, e),
                () = wait_release => {
                    released = true;
                    client.behaviour_mut().rpc.release(server_id, at_client.unwrap()).unwrap();
                    continue;
                }
            };
            match event {
                SwarmEvent::ConnectionEstablished { connection_id, .. } if node == 0 => {
                    server
                        .behaviour_mut()
                        .rpc
                        .open(client_id, connection_id)
                        .unwrap();
                }
                SwarmEvent::ConnectionEstablished { connection_id, .. } if node == 1 => {
                    at_client = Some(connection_id);
                    let rpc = &mut client.behaviour_mut().rpc;
                    rpc.inner_mut().send_request(&server_id, "held".into());
                    rpc.open(server_id, connection_id).unwrap();
                    opened_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    assert!(released, "the request left before the release");
                    assert_eq!(request, "held");
                    server
                        .behaviour_mut()
                        .rpc
                        .inner_mut()
                        .send_response(channel, "ok".into())
                        .unwrap();
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                })) => {
                    assert_eq!(response, "ok");
                    return;
                }
                SwarmEvent::Behaviour(RpcEvent::Rpc(
                    request_response::Event::OutboundFailure { error, .. },
                )) => panic!("the held request failed: {error}"),
                _ => {}
            }
        }
    })
    .await
    .expect("timed out waiting for the released request to be answered");
}
