//! The event loop: the one owner of the swarm. It dispatches and does nothing else.
//!
//! Each input (a swarm event, a control request, a timer tick) goes to the module that owns the
//! job: the session behaviour inside the swarm (membership, gates, routing entries),
//! [`Joiner`]/[`JoinServer`] (both sides of joining), [`RpcServer`] and [`Calls`] (remote
//! commands), [`Routing`] (address book, dialing, discovery), [`Budget`] (closing spare
//! connections), [`control_handler`] (the control socket), [`bans`] and [`Report`] (filter
//! actions, log, audit, metrics). Time comes from the injected [`Clock`], read once per input
//! and handed down.

use std::time::{Duration, Instant};

use cordon_membership::session::{EndReason, ProofKind};
use cordon_protocol::{JoinReply, Outcome, ReasonCode, RevocationRequest};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, kad, request_response};
use tokio::sync::{mpsc, oneshot};

use crate::api::{Request, Response};

use crate::bans;
use crate::budget::Budget;
use crate::calls::Calls;
use crate::config::NodeConfig;
use crate::control_handler::{self, StatusContext};
use crate::filter::FilterEvent;
use crate::join::ServerInput;
use crate::join::{self, JoinServer, Joiner};
use crate::reload;
use crate::report::Report;
use crate::revocations::Revocations;
use crate::routing::Routing;
use crate::rpc_server::RpcServer;
use crate::service::ServiceEvent;
use crate::session;
use crate::swarm::{Behaviour, BehaviourEvent};
use cordon_host::audit::{AuditEvent, AuditKind};
use cordon_host::clock::Clock;
use cordon_host::control::ControlRequest;
use cordon_host::datadir::DataDir;

/// How often housekeeping runs (call retries and timeouts, ban expiry, our own expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the address book and the audit log are flushed.
const PERSIST: Duration = Duration::from_secs(30);

/// Everything the event loop dispatches to.
pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) clock: Clock,
    pub(crate) data: DataDir,
    pub(crate) config: NodeConfig,
    pub(crate) joiner: Joiner,
    pub(crate) server: Option<JoinServer>,
    pub(crate) routing: Routing,
    pub(crate) budget: Budget,
    pub(crate) revocations: Revocations,
    pub(crate) rpc: RpcServer,
    pub(crate) calls: Calls,
    pub(crate) report: Report,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("local", self.swarm.local_peer_id())
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// Loads persisted state and makes the first dials.
    pub(crate) fn start(&mut self) {
        let now = self.clock.now();
        self.routing.load(&self.data);
        self.joiner.load(&mut self.swarm, now);
        self.routing.dial_known_peers(&mut self.swarm);
        self.on_poll();
    }

    /// Runs until `shutdown` resolves, then persists what must survive.
    pub(crate) async fn run(
        mut self,
        mut control: mpsc::Receiver<ControlRequest<Request, Response>>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut poll = tokio::time::interval(self.config.limits.poll_interval);
        let mut discovery = tokio::time::interval(self.config.limits.discovery_interval);
        let mut persist = tokio::time::interval(PERSIST);
        loop {
            // Calls waiting to be sent or looked up again (see `Calls::next_wake`).
            let calls_due = self
                .calls
                .next_wake()
                .map(|at| at.saturating_duration_since(self.clock.instant()));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some((request, reply)) = control.recv() => self.on_control(request, reply),
                input = next_from_service(&mut self.server) => self.on_server_input(input),
                _ = housekeeping.tick() => self.on_housekeeping(),
                _ = poll.tick() => self.on_poll(),
                _ = discovery.tick() => self.on_discovery(),
                _ = persist.tick() => self.on_persist(),
                () = sleep_for(calls_due) => {
                    let instant = self.clock.instant();
                    self.calls.wake(&mut self.swarm, instant);
                }
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
            }
        }
        self.on_persist();
        self.report.close();
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.routing.on_new_listen_addr(address),
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.routing.on_expired_listen_addr(&address);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.report.metrics().connection("established");
                self.budget.on_established(peer_id, self.clock.instant());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                cause,
                num_established,
                ..
            } => {
                self.report.metrics().connection("closed");
                if num_established == 0 {
                    self.budget.on_closed(&peer_id);
                }
                tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => tracing::debug!(addr = %send_back_addr, %error, "incoming connection failed"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    self.calls.on_dial_failure(peer, &error.to_string());
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        let now = self.clock.now();
        match event {
            BehaviourEvent::Session(event) => self.on_session_event(event),
            BehaviourEvent::Join(event) => {
                self.used(&event);
                join::on_event(
                    &mut self.swarm,
                    &mut self.report,
                    &mut self.joiner,
                    self.server.as_mut(),
                    event,
                    now,
                    self.clock.instant(),
                );
            }
            BehaviourEvent::Filter(FilterEvent::Refused {
                peer, addr, reason, ..
            }) => {
                self.report.metrics().connection("filtered");
                let mut event = AuditEvent::new(AuditKind::ConnectionRefused)
                    .addr(&addr)
                    .reason(reason.as_str());
                if let Some(p) = peer {
                    event = event.peer(p);
                }
                // Logged as audited: once per source and window, then summarised.
                if self.report.audit(event) {
                    tracing::info!(peer = ?peer, %addr, reason = reason.as_str(), "connection refused by the filter");
                }
            }
            _ => {}
        }
    }

    fn on_session_event(&mut self, event: session::Event) {
        let now = self.clock.now();
        let instant = self.clock.instant();
        match event {
            session::Event::Verified { peer, proof, .. } => {
                self.budget.on_used(&peer, instant);
                self.report.verified(peer, &proof);
                self.revocations.on_verified(&mut self.swarm, peer, &proof);
                self.calls
                    .on_verified(&mut self.swarm, peer, &proof.network);
                if proof.kind == ProofKind::Seednode {
                    match proof.revocation_ids.first() {
                        Some(delegation) => self.joiner.on_seednode(
                            &mut self.swarm,
                            &proof.network,
                            peer,
                            delegation,
                            now,
                        ),
                        None => self.joiner.poll(&mut self.swarm, now),
                    }
                }
            }
            session::Event::Refused {
                peer,
                connection,
                refused,
            } => {
                self.report.refused(peer, &refused);
                for r in &refused {
                    if let Some(network) = &r.network {
                        self.calls.on_refused(peer, network, r.rejection.reason);
                    }
                }
                // Our own overload is not the peer's failure.
                let failed = refused.iter().any(|r| {
                    !matches!(
                        r.rejection.reason,
                        ReasonCode::RateLimited | ReasonCode::Internal
                    )
                });
                if failed {
                    bans::record_failure(
                        &mut self.swarm,
                        &mut self.report,
                        peer,
                        connection,
                        instant,
                    );
                }
            }
            session::Event::Ended {
                peer,
                network,
                reason,
                ..
            } => {
                self.report.ended(peer, &network, reason);
                if reason == EndReason::Revoked {
                    let dropped = self.rpc.forget_publisher(&mut self.swarm, &network, &peer);
                    if dropped > 0 {
                        tracing::info!(%peer, network = %network, records = dropped, "dropped the records of a revoked member");
                    }
                }
            }
            session::Event::Closed {
                peer,
                connection,
                reason,
            } => self.report.closed(peer, connection, reason),
            session::Event::Routed {
                peer,
                network,
                addrs,
            } => {
                let table = self
                    .swarm
                    .behaviour_mut()
                    .session
                    .kad(&network)
                    .map_or(0, |kad| kad.kbuckets().map(|b| b.num_entries()).sum());
                self.routing
                    .on_routed(peer, &network, &addrs, table, now, instant);
            }
            session::Event::Unrouted {
                peer,
                network,
                reason,
            } => self.routing.on_unrouted(peer, &network, reason),
            session::Event::Answered { peer, response } => {
                // A seednode pushes what it owes a peer once the peer accepted its delegation:
                // the peer takes deliveries only from a seednode proven on the connection.
                // This answer comes when we presented by request (we dialed the peer, or named
                // a network later); a node that dials us verifies our delegation from our own
                // answer and sends nothing back, and gets what it is owed by its next join
                // message, which it sends only to a seednode it verified.
                let accepted = response
                    .results
                    .iter()
                    .any(|r| r.outcome == Outcome::Accepted);
                if accepted && let Some(server) = &mut self.server {
                    server.on_connected(peer);
                }
                // A network we have not announced ourselves in yet (a token just adopted, say)
                // is announced now that a peer opened its gates to us, not at the next
                // housekeeping second: members look a new member up as soon as it is approved.
                if accepted {
                    self.routing.announce(&mut self.swarm);
                }
                for r in response.results {
                    match r.outcome {
                        Outcome::Accepted => {
                            tracing::debug!(%peer, network = %r.network, "our membership was accepted");
                        }
                        Outcome::Rejected { reason } => {
                            self.calls.on_rejected(peer, &r.network, reason);
                            tracing::warn!(%peer, network = %r.network, reason = %reason, "our membership was refused");
                        }
                    }
                }
            }
            session::Event::Identified { .. } => {}
            session::Event::VerificationTime(elapsed) => self
                .report
                .metrics()
                .verification_seconds
                .observe(elapsed.as_secs_f64()),
            session::Event::Kad { network, event } => self.on_kad_event(network, event),
            session::Event::Rpc(event) => {
                self.used(&event);
                self.on_rpc_event(event);
            }
            session::Event::Revocation(event) => {
                self.used(&event);
                if let request_response::Event::Message {
                    peer,
                    connection_id,
                    message:
                        request_response::Message::Request {
                            request: RevocationRequest::Sync { network, keep, .. },
                            ..
                        },
                } = &event
                    && *keep
                    && self
                        .swarm
                        .behaviour()
                        .session
                        .sessions()
                        .proof(*connection_id, network)
                        .is_some()
                {
                    self.budget.on_kept_by_peer(peer, instant);
                }
                self.revocations.on_event(
                    &mut self.swarm,
                    &mut self.report,
                    &self.data,
                    event,
                    now,
                );
            }
        }
    }

    fn on_kad_event(&mut self, network: cordon_protocol::NetworkName, event: kad::Event) {
        let now = self.clock.now();
        let instant = self.clock.instant();
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.rpc.on_replicated_record(
                &mut self.swarm,
                &mut self.report,
                &network,
                source,
                record,
                now,
                instant,
            ),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                step,
                ..
            } => self
                .rpc
                .on_record_lookup(&mut self.swarm, &network, id, result, step.last, now),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                stats,
                ..
            } => {
                let (peers, timed_out) = match result {
                    Ok(ok) => (ok.peers, false),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (peers, true),
                };
                if self.calls.is_lookup(id) {
                    self.calls.on_lookup(
                        &mut self.swarm,
                        &self.routing,
                        &network,
                        id,
                        &peers,
                        &stats,
                        timed_out,
                        instant,
                    );
                }
                self.routing
                    .on_closest_peers(&mut self.swarm, &network, id, peers, instant);
            }
            _ => {}
        }
    }

    fn on_rpc_event(
        &mut self,
        event: request_response::Event<cordon_protocol::RpcRequest, cordon_protocol::RpcResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => self.rpc.on_request(
                &mut self.swarm,
                &mut self.report,
                peer,
                connection_id,
                request,
                channel,
                self.clock.now(),
                self.clock.instant(),
            ),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((network, record)) = self.calls.on_response(request_id, response) {
                    self.rpc.remember_published(network, record);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                let instant = self.clock.instant();
                self.calls
                    .on_failure(&mut self.swarm, request_id, &error, instant);
            }
            _ => {}
        }
    }

    fn on_control(&mut self, request: Request, reply: oneshot::Sender<Result<Response, String>>) {
        let now = self.clock.now();
        let instant = self.clock.instant();
        let answer = match request {
            Request::Call {
                peer,
                network,
                command,
            } => {
                self.calls.start(
                    &mut self.swarm,
                    &self.routing,
                    peer,
                    network,
                    command,
                    reply,
                    now,
                    instant,
                );
                return;
            }
            Request::Find { network, peer } => {
                self.calls
                    .find(&mut self.swarm, network, peer, reply, instant);
                return;
            }
            Request::Status {} => Ok(Response::Status(Box::new(control_handler::status(
                StatusContext {
                    swarm: &mut self.swarm,
                    config: &self.config,
                    joiner: &self.joiner,
                    server: self.server.as_ref(),
                    routing: &self.routing,
                    revocations: &self.revocations,
                    report: &self.report,
                    now,
                    instant,
                    started: self.started,
                },
            )))),
            Request::Peers { network } => {
                control_handler::peers(&mut self.swarm, network.as_ref()).map(Response::Peers)
            }
            Request::PublishRevocation { update } => {
                let Ok(update) = hex::decode(update.trim()) else {
                    let _ = reply.send(Err("the update is not hex".to_owned()));
                    return;
                };
                self.revocations
                    .publish_file(&mut self.swarm, &mut self.report, &self.data, update, now)
                    .map(Response::Published)
            }
            Request::Reload {} => reload::reload(
                &mut self.swarm,
                &mut self.report,
                &mut self.joiner,
                &mut self.config,
                now,
            )
            .map(Response::Reloaded),
            operator => match &mut self.server {
                Some(server) => {
                    server.operator(operator, reply);
                    return;
                }
                None => Err(
                    "this node is not a seednode; it answers status, peers, call, find and reload"
                        .to_owned(),
                ),
            },
        };
        let _ = reply.send(answer);
    }

    fn on_server_input(&mut self, input: ServerInput) {
        match input {
            ServerInput::Reply(channel, connection, reply) => {
                let reply = reply.unwrap_or(JoinReply::Error {
                    code: ReasonCode::Internal,
                });
                if matches!(reply, JoinReply::Pending { .. }) {
                    // A requester waiting for its operator keeps the connection it polls on.
                    self.swarm.behaviour_mut().session.defer_auth(connection);
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_response(channel, reply);
            }
            ServerInput::Event(ServiceEvent::Deliver(delivery)) => {
                if let Some(server) = &mut self.server {
                    server.deliver(&mut self.swarm, delivery);
                }
            }
            ServerInput::Event(ServiceEvent::Audit(event)) => {
                self.report.audit(event);
            }
            ServerInput::Event(ServiceEvent::Revocation { network, update }) => {
                let now = self.clock.now();
                if let Err(e) = self.revocations.publish(
                    &mut self.swarm,
                    &mut self.report,
                    &self.data,
                    &network,
                    update,
                    now,
                ) {
                    tracing::warn!(network = %network, reason = %e, "own revocation head not applied");
                }
            }
        }
    }

    fn on_housekeeping(&mut self) {
        self.report.tick();
        let now = self.clock.now();
        let instant = self.clock.instant();
        self.calls.tick(&mut self.swarm, &self.routing, instant);
        self.routing.announce(&mut self.swarm);
        for (peer, network) in self.routing.keep(&mut self.swarm, instant) {
            self.revocations.sync(&mut self.swarm, peer, &network, true);
        }
        self.spend_budget(instant);
        self.rpc.tick(&mut self.swarm, now, instant);
        let descriptor = &self.config.descriptor;
        self.revocations.check_staleness(
            &mut self.swarm,
            &mut self.report,
            |n| descriptor.network(n).map(|e| e.max_revocation_staleness),
            now,
        );
        bans::lift_expired(&mut self.swarm, &mut self.report, instant);
        self.joiner.expire(&mut self.swarm, now);
    }

    /// Something came over a connection (a request or an answer on a request-response
    /// protocol): the budget spares it for a while.
    fn used<Req, Resp>(&mut self, event: &request_response::Event<Req, Resp>) {
        if let request_response::Event::Message { peer, .. } = event {
            self.budget.on_used(peer, self.clock.instant());
        }
    }

    /// Closes the connections the budget says to (see [`crate::budget`]).
    fn spend_budget(&mut self, instant: Instant) {
        let sessions = self.swarm.behaviour().session.sessions();
        let close = self.budget.to_close(instant, |peer| {
            self.routing.keeps(peer)
                || self.calls.awaits(peer)
                || self.revocations.awaits(peer)
                || sessions.peer_networks(peer).is_empty()
        });
        for peer in close {
            tracing::debug!(%peer, connected = self.budget.len(), "closing a spare connection: over the connection budget");
            self.report.metrics().connection("over_budget");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_poll(&mut self) {
        let now = self.clock.now();
        self.routing
            .redial_bootstrap(&mut self.swarm, self.joiner.client(), now);
        self.joiner.poll(&mut self.swarm, now);
    }

    fn on_discovery(&mut self) {
        let instant = self.clock.instant();
        self.revocations
            .update_metrics(&self.report, self.clock.now());
        self.routing
            .discover(&mut self.swarm, &self.report, instant);
        if let Some(status) = self.server.as_ref().map(JoinServer::status) {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            let metrics = self.report.metrics();
            metrics.pending_requests.set(gauge(status.counts.pending));
            metrics.approved_requests.set(gauge(status.counts.approved));
        }
    }

    fn on_persist(&mut self) {
        self.routing.save(&self.data);
        self.report.sync();
    }
}

/// Sleeps for `delay`, or forever.
async fn sleep_for(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// The next answer or push of the join service; never, on a node without one.
async fn next_from_service(server: &mut Option<JoinServer>) -> ServerInput {
    match server {
        Some(server) => server.next().await,
        None => std::future::pending().await,
    }
}
