//! `node call` and `find`: remote commands and lookups this node runs for its operator.
//!
//! A call goes to a peer proven on a live connection at once. A peer that is not yet reachable
//! that way is reached first: dialed for the call's network with what that network's Kademlia
//! knows of it, and looked up by PeerId through the same Kademlia (only members answer it; a
//! call's lookup waits for [`CALL_LOOKUP_RESULTS`] answers, not Kademlia's 20), then dialed
//! where the lookup found it (and again every second until it proved the network). The
//! call is sent once the peer proved the network. Otherwise it fails, when [`LOOKUPS`] lookups
//! (each [`LOOK_AGAIN_AFTER`] after the last one ended) ended without anyone knowing the peer,
//! else at the call timeout, with an error that starts with what failed:
//!
//! - `not found:` no member the lookups asked knows the peer. One lookup is not enough to say
//!   so: a member approved a moment ago is known to the members closest to it only once it
//!   announced itself, and a lookup whose dial of the peer lost a race with the peer's own dial
//!   to us ends without it;
//! - `refused:` the peer was reached, but its membership did not verify here, or ours did not
//!   there;
//! - `unreachable:` dialing it failed, or it never proved the network on a connection.
//!
//! Bounds: at most `max_calls` calls waiting, in flight or queued for a retry at once; a call is
//! sent at most [`CALL_ATTEMPTS`] times, all within its timeout: again [`SEND_AGAIN_AFTER`]
//! after the peer refused it because its rpc gate was not open yet (it opens a moment after
//! the peer verified us), and again once the peer proves the network anew when the call's
//! connection closed before the answer.
//!
//! The event loop wakes the calls at [`Calls::next_wake`] for those two retries: a member
//! approved a moment ago is called as soon as it announced itself, not at the next
//! housekeeping second.

use std::collections::HashMap;
use std::fmt::Display;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use cordon_protocol::{Command, NetworkName, RpcRequest, RpcResponse, RpcResult, SignedRecord};
use libp2p::kad;
use libp2p::kad::store::MemoryStore;
use libp2p::request_response::{OutboundFailure, OutboundRequestId};
use libp2p::{PeerId, Swarm};
use tokio::sync::oneshot;

use crate::api::{CallCommand, FindResult, Response};

use crate::routing::Routing;
use crate::swarm::Behaviour;
use cordon_host::clock::unix_secs;

/// Times a call is sent when the peer does not accept rpc on the connection yet.
pub const CALL_ATTEMPTS: u8 = 5;

/// Lookups a call makes for a peer nobody seems to know before it fails as `not found`.
pub const LOOKUPS: u8 = 5;

/// How long after a lookup that found nobody knowing the peer the next one starts: about the
/// time a member approved a moment ago needs to announce itself, so a call made at its approval
/// finds it at the second or third lookup, and a call to an unknown peer fails within about two
/// seconds.
pub const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(300);

/// How many answering members a call's lookup waits for. Kademlia's own lookups wait for the
/// 20 closest (`K_VALUE`), which fills a table; a call needs only its peer, and once any member
/// knows the peer, the closest id to the peer's is its own: the lookup asks it (dialing it,
/// presenting for the call's network) before it ends. A miss ends sooner too, and the next
/// lookup starts [`LOOK_AGAIN_AFTER`] later.
pub const CALL_LOOKUP_RESULTS: usize = 3;

/// How long after the peer refused a call for its gate not being open yet it is sent again.
pub const SEND_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Where a call's answer goes.
type Reply = oneshot::Sender<Result<Response, String>>;

#[derive(Debug)]
struct PendingCall {
    reply: Reply,
    peer: PeerId,
    request: RpcRequest,
    attempts: u8,
    /// When the call fails if its peer has not answered, however often it was sent; brought
    /// forward to now once its lookups show that nobody knows the peer.
    deadline: Instant,
}

/// What kept a peer being reached from proving the network; the error names the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Obstacle {
    /// Dialing it failed.
    Unreachable(String),
    /// It was reached, but a membership did not verify on the connection.
    Refused(String),
}

impl Obstacle {
    /// `unreachable: ...` or `refused: ...`.
    fn describe(&self) -> String {
        match self {
            Self::Unreachable(why) => format!("unreachable: dialing it failed: {why}"),
            Self::Refused(why) => format!("refused: {why}"),
        }
    }
}

/// A call waiting until its peer proved the network on a connection.
#[derive(Debug)]
struct Waiting {
    call: PendingCall,
    /// The Kademlia lookup looking for the peer, if one runs.
    lookup: Option<kad::QueryId>,
    /// Lookups started for it so far.
    lookups: u8,
    /// The last lookup ended without anyone knowing it: look again then.
    look_again: Option<Instant>,
    /// Addresses a lookup found for it; redials use them (a routed peer's come from
    /// Kademlia).
    addrs: Vec<libp2p::Multiaddr>,
    /// Why it has not proved the network yet, if we saw why.
    obstacle: Option<Obstacle>,
    /// Set when a lookup ended without anyone knowing it: how many members answered.
    missed: Option<u32>,
}

impl Waiting {
    /// The error of a call whose peer did not prove the network in time.
    fn error(&self, timeout: Duration) -> String {
        let peer = self.call.peer;
        let network = &self.call.request.network;
        match (&self.obstacle, self.missed) {
            (Some(obstacle), _) => format!(
                "{}; {peer} did not prove {network} on a connection",
                obstacle.describe()
            ),
            (None, Some(answered)) => crate::api::not_found(answered, network, &peer),
            (None, None) => format!(
                "unreachable: {peer} did not prove {network} on a connection within {}s; check that it is online",
                timeout.as_secs()
            ),
        }
    }
}

impl Find {
    fn result(
        &self,
        peers: &[kad::PeerInfo],
        stats: &kad::QueryStats,
        instant: Instant,
    ) -> FindResult {
        let target = peers.iter().find(|p| p.peer_id == self.peer);
        FindResult {
            network: self.network.clone(),
            peer: self.peer.to_string(),
            found: target.is_some(),
            addrs: target
                .map(|t| t.addrs.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            in_table: self.in_table,
            min_hops: if self.in_table { 1 } else { 2 },
            asked: stats.num_requests(),
            answered: stats.num_successes(),
            failed: stats.num_failures(),
            elapsed_ms: u64::try_from(instant.saturating_duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            closest: peers.iter().map(|p| p.peer_id.to_string()).collect(),
            problem: self.obstacle.as_ref().map(Obstacle::describe),
            timed_out: false,
        }
    }
}

/// A running `find`.
#[derive(Debug)]
struct Find {
    reply: Reply,
    network: NetworkName,
    peer: PeerId,
    started: Instant,
    in_table: bool,
    obstacle: Option<Obstacle>,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Calls {
    keypair: libp2p::identity::Keypair,
    max_calls: usize,
    timeout: Duration,
    in_flight: HashMap<OutboundRequestId, PendingCall>,
    /// Calls to send again, and when.
    retry: Vec<(Instant, PendingCall)>,
    waiting: Vec<Waiting>,
    /// `find` requests: Kademlia lookups answered with what they found.
    finds: HashMap<kad::QueryId, Find>,
    record_seq: u64,
}

/// Starts a call's lookup of `peer` (see [`CALL_LOOKUP_RESULTS`]).
fn look_up(kad: &mut kad::Behaviour<MemoryStore>, peer: PeerId) -> kad::QueryId {
    let results = NonZeroUsize::new(CALL_LOOKUP_RESULTS).unwrap_or(NonZeroUsize::MIN);
    kad.get_n_closest_peers(peer, results)
}

fn failure(error: impl std::fmt::Display) -> Result<Response, String> {
    Err(error.to_string())
}

impl Calls {
    /// A call client signing `dht_put` records with `keypair`; at most `max_calls` at once,
    /// each reaching its peer within `timeout`.
    pub fn new(keypair: libp2p::identity::Keypair, max_calls: usize, timeout: Duration) -> Self {
        Self {
            keypair,
            max_calls,
            timeout,
            in_flight: HashMap::new(),
            retry: Vec::new(),
            waiting: Vec::new(),
            finds: HashMap::new(),
            record_seq: 0,
        }
    }

    fn len(&self) -> usize {
        self.in_flight.len() + self.retry.len() + self.waiting.len() + self.finds.len()
    }

    /// Whether a call waits on `peer`: in flight, to be sent again, or waiting for it to prove
    /// the network.
    pub fn awaits(&self, peer: &PeerId) -> bool {
        self.in_flight.values().any(|c| c.peer == *peer)
            || self.retry.iter().any(|(_, c)| c.peer == *peer)
            || self.waiting.iter().any(|w| w.call.peer == *peer)
    }

    /// Starts a `find`: a lookup of `peer` through `network`'s Kademlia, answered with where
    /// it found the peer and how.
    pub fn find(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: Option<NetworkName>,
        peer: PeerId,
        reply: Reply,
        instant: Instant,
    ) {
        if self.len() >= self.max_calls {
            let _ = reply.send(failure("too many calls in flight; try again"));
            return;
        }
        let network = match network {
            Some(n) => n,
            None => {
                let mine: Vec<&NetworkName> = swarm.behaviour().session.networks().collect();
                match mine.as_slice() {
                    [only] => (*only).clone(),
                    _ => {
                        let _ =
                            reply.send(failure("this node is in several networks; pass --network"));
                        return;
                    }
                }
            }
        };
        let network = &network;
        let Some(kad) = swarm.behaviour_mut().session.kad(network) else {
            let _ = reply.send(failure(format!("this node is not in network {network}")));
            return;
        };
        let in_table = kad
            .kbucket(peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == &peer));
        let id = kad.get_closest_peers(peer);
        self.finds.insert(
            id,
            Find {
                reply,
                network: network.clone(),
                peer,
                started: instant,
                in_table,
                obstacle: None,
            },
        );
    }

    /// Starts `node call`: `command` to `peer`, in `network` or the one network it shares
    /// with us.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        routing: &Routing,
        peer: PeerId,
        network: Option<NetworkName>,
        command: CallCommand,
        reply: Reply,
        now: SystemTime,
        instant: Instant,
    ) {
        if self.len() >= self.max_calls {
            let _ = reply.send(failure("too many calls in flight; try again"));
            return;
        }
        let rpc = match self.build(swarm, peer, network, command, now) {
            Ok(rpc) => rpc,
            Err(e) => {
                let _ = reply.send(failure(e));
                return;
            }
        };
        let call = PendingCall {
            reply,
            peer,
            request: rpc,
            attempts: 0,
            deadline: instant + self.timeout,
        };
        let network = call.request.network.clone();
        let sessions = swarm.behaviour().session.sessions();
        if !sessions.connections_proving(&peer, &network).is_empty() {
            self.send(swarm, call);
            return;
        }
        // Not proven on a live connection yet: reach it first. Dial it now with what Kademlia
        // knows (a routed peer), and look it up too: a routing entry can outlive the addresses
        // it was inserted with, and the lookup finds where the peer is now.
        routing.dial(swarm, peer, Vec::new(), &network);
        let lookup = swarm.behaviour_mut().session.kad(&network).map(|kad| {
            tracing::debug!(%peer, network = %network, "looking the peer up");
            look_up(kad, peer)
        });
        self.waiting.push(Waiting {
            call,
            lookup,
            lookups: 1,
            look_again: None,
            addrs: Vec::new(),
            obstacle: None,
            missed: None,
        });
    }

    fn build(
        &mut self,
        swarm: &Swarm<Behaviour>,
        peer: PeerId,
        network: Option<NetworkName>,
        command: CallCommand,
        now: SystemTime,
    ) -> Result<RpcRequest, String> {
        let sessions = swarm.behaviour().session.sessions();
        let network = match network {
            Some(n) => n,
            None => {
                let shared: Vec<NetworkName> = sessions.peer_networks(&peer).into_keys().collect();
                let candidates = if shared.is_empty() {
                    sessions.routed_networks(&peer)
                } else {
                    shared
                };
                let mine: Vec<NetworkName> = swarm
                    .behaviour()
                    .session
                    .networks()
                    .filter(|n| sessions.has_membership(n) || sessions.has_delegation(n))
                    .cloned()
                    .collect();
                match (candidates.as_slice(), mine.as_slice()) {
                    ([one], _) => one.clone(),
                    ([], [only]) => only.clone(),
                    ([], _) => {
                        return Err(format!(
                            "{peer} is not a verified member we know of in any network; pass --network to look it up"
                        ));
                    }
                    _ => {
                        return Err(
                            "the peer shares several networks with us; pass --network".into()
                        );
                    }
                }
            }
        };
        if !sessions.has_membership(&network) && !sessions.has_delegation(&network) {
            return Err(format!("this node is not a member of network {network}"));
        }
        let bytes = |s: &str| s.as_bytes().to_vec();
        let command = match command {
            CallCommand::Ping => Command::Ping,
            CallCommand::Info => Command::Info,
            CallCommand::Peers => Command::Peers,
            CallCommand::Echo { text } => Command::Echo { data: bytes(&text) },
            CallCommand::DhtGet { key } => Command::DhtGet { key: bytes(&key) },
            CallCommand::DhtPut { key, value } => {
                let secs = unix_secs(now);
                self.record_seq = self.record_seq.max(secs.saturating_mul(1000)) + 1;
                let record = SignedRecord::sign(
                    &self.keypair,
                    &network,
                    bytes(&key),
                    bytes(&value),
                    self.record_seq,
                    secs,
                )
                .map_err(|e| format!("cannot sign the record: {e}"))?;
                // Storers keep (and replicate) the record only with our token proving us a
                // member allowed `dht_put`.
                let token = sessions.membership(&network).unwrap_or_default().to_vec();
                Command::DhtPut { record, token }
            }
        };
        Ok(RpcRequest { network, command })
    }

    fn send(&mut self, swarm: &mut Swarm<Behaviour>, mut call: PendingCall) {
        call.attempts += 1;
        let id = swarm
            .behaviour_mut()
            .session
            .rpc()
            .send_request(&call.peer, call.request.clone());
        self.in_flight.insert(id, call);
    }

    /// `peer` proved `network` on a connection: send the calls waiting for it.
    pub fn on_verified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        network: &NetworkName,
    ) {
        let (ready, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.call.peer == peer && &w.call.request.network == network);
        self.waiting = rest;
        for w in ready {
            tracing::debug!(%peer, network = %network, lookups = w.lookups, "the called peer proved the network; calling");
            self.send(swarm, w.call);
        }
    }

    /// A lookup of `network`'s Kademlia finished: answer a `find`, dial the peers calls wait
    /// for.
    #[allow(clippy::too_many_arguments)]
    pub fn on_lookup(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        routing: &Routing,
        network: &NetworkName,
        id: kad::QueryId,
        peers: &[kad::PeerInfo],
        stats: &kad::QueryStats,
        timed_out: bool,
        instant: Instant,
    ) {
        if let Some(find) = self.finds.remove(&id) {
            let mut result = find.result(peers, stats, instant);
            result.timed_out = timed_out;
            let _ = find.reply.send(Ok(Response::Found(result)));
        }
        for w in self.waiting.iter_mut().filter(|w| w.lookup == Some(id)) {
            w.lookup = None;
            let found = peers.iter().find(|p| p.peer_id == w.call.peer);
            tracing::debug!(
                peer = %w.call.peer,
                network = %network,
                found = found.is_some(),
                lookups = w.lookups,
                asked = stats.num_requests(),
                ms = stats.duration().map_or(0, |d| d.as_millis()),
                "a lookup for a call ended"
            );
            match found {
                Some(info) => {
                    w.addrs = info.addrs.clone();
                    routing.dial(swarm, info.peer_id, info.addrs.clone(), network);
                }
                None if w.obstacle.is_some()
                    || swarm.is_connected(&w.call.peer)
                    || swarm
                        .behaviour()
                        .session
                        .sessions()
                        .is_routed(network, &w.call.peer) => {}
                None if timed_out => {
                    // Members too slow to answer are no proof that nobody knows it: ask again
                    // while the call has time.
                    w.lookup = swarm
                        .behaviour_mut()
                        .session
                        .kad(network)
                        .map(|kad| look_up(kad, w.call.peer));
                }
                None if w.lookups < LOOKUPS => w.look_again = Some(instant + LOOK_AGAIN_AFTER),
                None => {
                    // Nobody knows it: fail now rather than at the deadline.
                    w.call.deadline = instant.min(w.call.deadline);
                    w.missed = Some(stats.num_successes());
                }
            }
        }
    }

    /// Dialing `peer` failed.
    pub fn on_dial_failure(&mut self, peer: PeerId, error: &str) {
        self.note(peer, None, Obstacle::Unreachable(error.to_owned()));
    }

    /// We refused `peer`'s membership of `network`, for `reason`.
    pub fn on_refused(&mut self, peer: PeerId, network: &NetworkName, reason: impl Display) {
        let why = format!("its membership of {network} did not verify here ({reason})");
        self.note(peer, Some(network), Obstacle::Refused(why));
    }

    /// `peer` refused our membership of `network`, for `reason`.
    pub fn on_rejected(&mut self, peer: PeerId, network: &NetworkName, reason: impl Display) {
        let why = format!("it refused our membership of {network} ({reason})");
        self.note(peer, Some(network), Obstacle::Refused(why));
    }

    fn note(&mut self, peer: PeerId, network: Option<&NetworkName>, obstacle: Obstacle) {
        let concerns = |p: &PeerId, n: &NetworkName| *p == peer && network.is_none_or(|x| x == n);
        for w in &mut self.waiting {
            if concerns(&w.call.peer, &w.call.request.network) {
                w.obstacle = Some(obstacle.clone());
            }
        }
        for f in self.finds.values_mut() {
            if concerns(&f.peer, &f.network) {
                f.obstacle = Some(obstacle.clone());
            }
        }
    }

    /// Whether `id` is one of our lookups.
    pub fn is_lookup(&self, id: kad::QueryId) -> bool {
        self.finds.contains_key(&id) || self.waiting.iter().any(|w| w.lookup == Some(id))
    }

    /// The peer answered a call. Returns the network and record of a `dht_put` it stored (we
    /// republish our records).
    pub fn on_response(
        &mut self,
        id: OutboundRequestId,
        response: RpcResponse,
    ) -> Option<(NetworkName, SignedRecord)> {
        let call = self.in_flight.remove(&id)?;
        let stored = match (&call.request.command, &response) {
            (Command::DhtPut { record, .. }, RpcResponse::Ok(RpcResult::Stored)) => {
                Some((call.request.network.clone(), record.clone()))
            }
            _ => None,
        };
        let answer = match response {
            RpcResponse::Ok(result) => Ok(Response::Called(result.into())),
            RpcResponse::Err { code, message } => failure(match message {
                Some(m) => format!("{code}: {m}"),
                None => code.to_string(),
            }),
        };
        let _ = call.reply.send(answer);
        stored
    }

    /// A call failed on the wire. Refused because the peer's gate was not open yet: sent again
    /// shortly. Lost with its connection (or its dial): sent again at once on another
    /// connection where the peer proves the network, else the peer is reached again first, as
    /// for a new call, and it is sent once the peer proves the network (two peers that dial
    /// each other at once can lose a connection each; the call is not lost with it). Both at
    /// most [`CALL_ATTEMPTS`] times and within the call's timeout.
    pub fn on_failure(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        id: OutboundRequestId,
        error: &OutboundFailure,
        instant: Instant,
    ) {
        let Some(call) = self.in_flight.remove(&id) else {
            return;
        };
        let again = call.attempts < CALL_ATTEMPTS && instant < call.deadline;
        match error {
            OutboundFailure::UnsupportedProtocols if again => {
                tracing::debug!(peer = %call.peer, %error, "the call was not taken; sending it again");
                self.retry.push((instant + SEND_AGAIN_AFTER, call));
            }
            OutboundFailure::ConnectionClosed | OutboundFailure::DialFailure if again => {
                let network = &call.request.network;
                let sessions = swarm.behaviour().session.sessions();
                if !sessions.connections_proving(&call.peer, network).is_empty() {
                    tracing::debug!(peer = %call.peer, %error, "the call's connection went away; sending it on another");
                    self.send(swarm, call);
                    return;
                }
                tracing::debug!(peer = %call.peer, %error, "the call's connection went away; reaching the peer again");
                self.waiting.push(Waiting {
                    call,
                    lookup: None,
                    lookups: 1,
                    look_again: None,
                    addrs: Vec::new(),
                    obstacle: None,
                    missed: None,
                });
            }
            _ => {
                let _ = call.reply.send(failure(format!(
                    "the call failed: {error} (a peer refuses rpc until it has verified our membership)"
                )));
            }
        }
    }

    /// When [`Calls::wake`] has something to do: the earliest call to send again or lookup to
    /// start again.
    pub fn next_wake(&self) -> Option<Instant> {
        let sends = self.retry.iter().map(|(at, _)| *at);
        let lookups = self.waiting.iter().filter_map(|w| w.look_again);
        sends.chain(lookups).min()
    }

    /// Sends again the calls refused for a gate not yet open and starts again the lookups that
    /// found nobody knowing their peer, those that are due at `instant`.
    pub fn wake(&mut self, swarm: &mut Swarm<Behaviour>, instant: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(at, _)| *at <= instant);
        self.retry = later;
        for (_, call) in due {
            self.send(swarm, call);
        }
        for w in &mut self.waiting {
            if w.look_again.is_some_and(|at| at <= instant) {
                w.look_again = None;
                let network = &w.call.request.network;
                w.lookup = swarm
                    .behaviour_mut()
                    .session
                    .kad(network)
                    .map(|kad| look_up(kad, w.call.peer));
                w.lookups += 1;
            }
        }
    }

    /// Once a second: dials again the peers of waiting calls that are not connected (a dial can
    /// fail, e.g. when both sides dial each other at once), and fails calls whose peer did not
    /// become reachable in time.
    pub fn tick(&mut self, swarm: &mut Swarm<Behaviour>, routing: &Routing, instant: Instant) {
        self.wake(swarm, instant);
        for w in &mut self.waiting {
            // Also on a live connection: presenting again is how a presentation the peer
            // refused for overload is retried.
            routing.dial(swarm, w.call.peer, w.addrs.clone(), &w.call.request.network);
        }
        let (late, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.call.deadline <= instant);
        self.waiting = rest;
        for w in late {
            let error = w.error(self.timeout);
            let _ = w.call.reply.send(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(obstacle: Option<Obstacle>, missed: Option<u32>) -> Waiting {
        let (reply, _) = oneshot::channel();
        Waiting {
            call: PendingCall {
                reply,
                peer: PeerId::random(),
                request: RpcRequest {
                    network: "mainnet".parse().unwrap(),
                    command: Command::Ping,
                },
                attempts: 0,
                deadline: Instant::now(),
            },
            lookup: None,
            lookups: 1,
            look_again: None,
            addrs: Vec::new(),
            obstacle,
            missed,
        }
    }

    #[test]
    fn a_failed_call_names_what_failed() {
        let timeout = Duration::from_secs(20);
        let refused = Obstacle::Refused("it refused our membership of mainnet (expired)".into());
        let unreachable = Obstacle::Unreachable("connection refused".into());
        let cases = [
            (
                waiting(None, Some(7)),
                "not found: none of the 7 members of mainnet",
            ),
            (
                waiting(Some(refused.clone()), Some(7)),
                "refused: it refused our membership",
            ),
            (
                waiting(Some(unreachable), None),
                "unreachable: dialing it failed: connection refused",
            ),
            (waiting(None, None), "unreachable: "),
        ];
        for (w, expected) in cases {
            let error = w.error(timeout);
            assert!(
                error.starts_with(expected),
                "{error:?} starts with {expected:?}"
            );
            assert!(
                error.contains(&w.call.peer.to_string()),
                "{error:?} names the peer"
            );
        }
        // The last case is the deadline's: it says how long the call waited.
        assert!(waiting(None, None).error(timeout).contains("within 20s"));
    }

    #[test]
    fn the_calls_wake_for_the_earliest_retry_and_only_while_one_is_due() {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let mut calls = Calls::new(keypair, 8, Duration::from_secs(20));
        let t0 = Instant::now();
        assert_eq!(calls.next_wake(), None, "nothing to retry: no wake-up");
        // A call still waiting for its lookup needs no wake-up either.
        calls.waiting.push(waiting(None, None));
        assert_eq!(calls.next_wake(), None);
        let mut missed = waiting(None, None);
        missed.look_again = Some(t0 + LOOK_AGAIN_AFTER);
        calls.waiting.push(missed);
        assert_eq!(calls.next_wake(), Some(t0 + LOOK_AGAIN_AFTER));
        let refused = waiting(None, None).call;
        calls.retry.push((t0 + SEND_AGAIN_AFTER, refused));
        assert_eq!(
            calls.next_wake(),
            Some(t0 + SEND_AGAIN_AFTER.min(LOOK_AGAIN_AFTER)),
            "the earlier of a resend and a lookup"
        );
    }
}
