//! Both sides of `/cordon/join/1`.
//!
//! - [`Joiner`] drives the pure [`JoinClient`]: it sends what the client asks, persists pending
//!   requests, and verifies and stores tokens (approved or delivered) before the client and the
//!   session behaviour adopt them.
//! - [`JoinServer`] plugs a seednode's join service (a separate task, [`ServiceHandle`]) into
//!   the protocol: it hands join requests and status polls to the service and sends its answers
//!   back, pushes approved tokens to connected requesters and reports their acknowledgement.
//!   It never waits for the service: a saturated service gets `rate_limited` answers.
//!
//! [`on_event`] routes the protocol's events between the two.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::SystemTime;

use cordon_membership::ProofKind;
use cordon_protocol::{DenyReason, JoinMessage, JoinReply, NetworkName, ReasonCode};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{Request, Response, ServiceStatus};
use crate::filter::{limit_key, prefix_key};
use crate::join_client::{JoinAction, JoinClient, OwnToken, accept_token};
use crate::ratelimit::{KeyedLimiter, LimitsConfig};
use crate::report::Report;
use crate::service::{Delivery, ServiceEvent, ServiceHandle, ServiceRequest};
use crate::swarm::Behaviour;
use cordon_host::audit::{AuditEvent, AuditKind};
use cordon_host::datadir::DataDir;

/// The node side: see the [module documentation](self).
#[derive(Debug)]
pub struct Joiner {
    client: JoinClient<OutboundRequestId>,
    data: DataDir,
    local: PeerId,
}

impl Joiner {
    /// Drives `client`, storing tokens and pending requests in `data`.
    pub fn new(client: JoinClient<OutboundRequestId>, data: DataDir, local: PeerId) -> Self {
        Self {
            client,
            data,
            local,
        }
    }

    /// The client's state.
    pub fn client(&self) -> &JoinClient<OutboundRequestId> {
        &self.client
    }

    /// Loads stored tokens (those that still verify) and pending requests; presents the tokens
    /// from now on.
    pub fn load(&mut self, swarm: &mut Swarm<Behaviour>, now: SystemTime) {
        match self.data.tokens() {
            Ok(tokens) => {
                for (network, bytes) in tokens {
                    let session = &mut swarm.behaviour_mut().session;
                    if !session.networks().any(|n| n == &network) {
                        continue;
                    }
                    match session
                        .verifier()
                        .verify_membership(&bytes, &self.local, now)
                    {
                        Ok(v) => {
                            tracing::info!(network = %network, expires_at = cordon_host::clock::unix_secs(v.expires_at), "loaded membership token");
                            session.set_membership(&network, Some(bytes.clone()));
                            self.client.load_token(&network, OwnToken::new(bytes, v));
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
            Ok(joins) => joins.into_iter().for_each(|j| self.client.load_pending(j)),
            Err(e) => tracing::warn!(error = %e, "cannot read pending join requests"),
        }
    }

    /// Changes how long before expiry `network`'s token is renewed.
    pub fn set_renewal_margin(&mut self, network: &NetworkName, margin: std::time::Duration) {
        self.client.set_renewal_margin(network, margin);
    }

    /// A seednode proved `network` with the delegation `delegation`: if it issued our token
    /// under another one, renew there now.
    pub fn on_seednode(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        peer: PeerId,
        delegation: &cordon_membership::RevocationId,
        now: SystemTime,
    ) {
        self.client.on_seednode(network, peer, delegation);
        self.poll(swarm, now);
    }

    /// The access list changed: checks our own tokens again. One that no longer verifies (its
    /// anchor was removed) is dropped, no longer presented, and its network asks again.
    /// Returns the networks whose token was dropped.
    pub fn recheck(&mut self, swarm: &mut Swarm<Behaviour>, now: SystemTime) -> Vec<NetworkName> {
        let networks: Vec<NetworkName> = swarm.behaviour().session.networks().cloned().collect();
        let mut dropped = Vec::new();
        for network in networks {
            let Some(token) = self.client.token(&network) else {
                continue;
            };
            let verdict = swarm.behaviour().session.verifier().verify_membership(
                &token.bytes,
                &self.local,
                now,
            );
            if let Err(e) = verdict
                && e.code() != cordon_membership::RefusalCode::Expired
            {
                tracing::warn!(network = %network, reason = %e.code(), detail = %e, "our membership no longer verifies under the new descriptor; requesting a new one");
                self.client.drop_token(&network);
                swarm.behaviour_mut().session.set_membership(&network, None);
                dropped.push(network);
            }
        }
        self.poll(swarm, now);
        dropped
    }

    /// Sends the join requests, polls and renewals that are due.
    pub fn poll(&mut self, swarm: &mut Swarm<Behaviour>, now: SystemTime) {
        let actions = {
            let sessions = swarm.behaviour().session.sessions();
            self.client.poll(now, |network| {
                sessions
                    .proven_peers(network, cordon_membership::ProofKind::Seednode)
                    .into_iter()
                    .collect()
            })
        };
        self.run(swarm, actions, now);
    }

    /// Drops our expired tokens; their networks ask again.
    pub fn expire(&mut self, swarm: &mut Swarm<Behaviour>, now: SystemTime) {
        let actions = self.client.expire(now);
        self.run(swarm, actions, now);
    }

    fn run(&mut self, swarm: &mut Swarm<Behaviour>, actions: Vec<JoinAction>, now: SystemTime) {
        for action in actions {
            match action {
                JoinAction::Send {
                    network,
                    peer,
                    message,
                } => {
                    if matches!(message, JoinMessage::Request(_)) {
                        tracing::info!(network = %network, seednode = %peer, "requesting to join");
                    }
                    let id = swarm.behaviour_mut().join.send_request(&peer, message);
                    self.client.sent(&network, id);
                }
                JoinAction::Accept { network, token } => {
                    match self.accept(swarm, &network, token, now) {
                        Ok(()) => tracing::info!(network = %network, "join approved"),
                        Err(code) => {
                            tracing::warn!(network = %network, reason = %code, "approved token does not verify")
                        }
                    }
                }
                JoinAction::SavePending(joins) => {
                    if let Err(e) = self.data.save_pending_joins(&joins) {
                        tracing::error!(error = %e, "cannot persist pending join requests");
                    }
                }
                JoinAction::Expired(network) => {
                    swarm.behaviour_mut().session.set_membership(&network, None);
                }
            }
        }
    }

    /// Verifies and stores a token for `network`, then adopts and presents it.
    fn accept(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        token: Vec<u8>,
        now: SystemTime,
    ) -> Result<(), ReasonCode> {
        if !swarm.behaviour().session.networks().any(|n| n == network) {
            return Err(ReasonCode::UnknownNetwork);
        }
        let own = accept_token(
            swarm.behaviour().session.verifier(),
            &self.data,
            &self.local,
            network,
            token,
            self.client.token(network),
            now,
        )?;
        let bytes = own.bytes.clone();
        let actions = self.client.adopt(network, own);
        self.run(swarm, actions, now);
        swarm
            .behaviour_mut()
            .session
            .set_membership(network, Some(bytes));
        Ok(())
    }

    /// A peer pushed a token on `connection`. Accepted only from a peer proven as a seednode of
    /// `network` on that connection while we expect one (see
    /// [`JoinClient::expects_delivery`]); anything else is refused before any verification and
    /// counts toward the sender's ban, as does a delivered token that does not verify. The
    /// token we already hold is acknowledged (from a proven seednode, expected or not) without
    /// being stored again.
    #[allow(clippy::too_many_arguments)]
    pub fn on_deliver(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        peer: PeerId,
        connection: ConnectionId,
        network: &NetworkName,
        request_id: u64,
        token: Vec<u8>,
        now: SystemTime,
        instant: std::time::Instant,
    ) -> JoinReply {
        let from_seednode = swarm
            .behaviour()
            .session
            .sessions()
            .proof(connection, network)
            .is_some_and(|p| p.kind == ProofKind::Seednode);
        // The token we already hold (it came with a poll's answer, say, and the push crossed it)
        // is acknowledged below, so the seednode stops pushing it; refusing it would also count
        // toward banning our own seednode.
        let held = self.client.token(network).is_some_and(|t| t.bytes == token);
        let refusal = if !from_seednode {
            Some("the sender is not proven as a seednode of the network on this connection")
        } else if !held && !self.client.expects_delivery(network, &peer, now) {
            Some("no join or renewal of the network is pending")
        } else {
            None
        };
        if let Some(detail) = refusal {
            tracing::debug!(%peer, network = %network, reason = "unsolicited_delivery", detail, "token delivery refused");
            refused_delivery(swarm, report, peer, connection, network, detail, instant);
            return JoinReply::Error {
                code: ReasonCode::Policy,
            };
        }
        if held {
            return JoinReply::Ack;
        }
        match self.accept(swarm, network, token, now) {
            Ok(()) => {
                tracing::info!(%peer, network = %network, request_id, "membership token delivered");
                JoinReply::Ack
            }
            Err(code) => {
                tracing::warn!(%peer, network = %network, reason = %code, "delivered token refused");
                refused_delivery(
                    swarm,
                    report,
                    peer,
                    connection,
                    network,
                    "the delivered token does not verify",
                    instant,
                );
                JoinReply::Error { code }
            }
        }
    }

    /// A seednode answered one of our requests.
    pub fn on_reply(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        id: OutboundRequestId,
        peer: PeerId,
        reply: JoinReply,
        now: SystemTime,
    ) {
        let actions = self.client.handle_reply(id, peer, reply, now);
        self.run(swarm, actions, now);
    }

    /// One of our requests failed on the wire.
    pub fn on_failure(
        &mut self,
        id: OutboundRequestId,
        error: &request_response::OutboundFailure,
        now: SystemTime,
    ) {
        let lost = matches!(error, request_response::OutboundFailure::ConnectionClosed);
        self.client.handle_failure(id, lost, now);
    }
}

/// A join reply on its way back from the service, with the channel it answers on.
type PendingReply = Pin<
    Box<dyn Future<Output = (ResponseChannel<JoinReply>, ConnectionId, Option<JoinReply>)> + Send>,
>;

/// What the join server hands the event loop.
#[derive(Debug)]
pub enum ServerInput {
    /// The service answered a join message that came on a connection (`None`: it dropped the
    /// request).
    Reply(ResponseChannel<JoinReply>, ConnectionId, Option<JoinReply>),
    /// The service pushed something.
    Event(ServiceEvent),
}

/// The seednode side: see the [module documentation](self).
pub struct JoinServer {
    requests: mpsc::Sender<ServiceRequest>,
    operator: mpsc::Sender<ServiceRequest>,
    events: mpsc::Receiver<ServiceEvent>,
    status: watch::Receiver<ServiceStatus>,
    /// Join messages the service is answering, at most `max_pending`.
    replies: FuturesUnordered<PendingReply>,
    max_pending: usize,
    /// Deliveries pushed and not yet acknowledged, by request.
    in_flight: HashMap<OutboundRequestId, u64>,
    /// Join requests taken per source address and per source prefix.
    per_ip: KeyedLimiter<IpAddr>,
    per_prefix: KeyedLimiter<IpAddr>,
    /// Status polls answered per source address and per source prefix.
    polls_per_ip: KeyedLimiter<IpAddr>,
    polls_per_prefix: KeyedLimiter<IpAddr>,
}

impl std::fmt::Debug for JoinServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinServer")
            .field("replies_pending", &self.replies.len())
            .field("deliveries_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl JoinServer {
    /// Serves the service behind `handle`, with at most `max_pending` join messages awaiting
    /// its answer (more are refused as `rate_limited`), and join requests and status polls
    /// limited per source as `limits` say.
    pub fn new(handle: ServiceHandle, max_pending: usize, limits: &LimitsConfig) -> Self {
        Self {
            requests: handle.requests,
            operator: handle.operator,
            events: handle.events,
            status: handle.status,
            replies: FuturesUnordered::new(),
            max_pending: max_pending.max(1),
            in_flight: HashMap::new(),
            per_ip: KeyedLimiter::new(limits.join_requests_per_ip, limits.max_tracked_keys),
            per_prefix: KeyedLimiter::new(limits.join_requests_per_prefix, limits.max_tracked_keys),
            polls_per_ip: KeyedLimiter::new(limits.join_polls_per_ip, limits.max_tracked_keys),
            polls_per_prefix: KeyedLimiter::new(
                limits.join_polls_per_prefix,
                limits.max_tracked_keys,
            ),
        }
    }

    /// Whether a join request (or, with `poll`, a status poll) from `connection` is within its
    /// source's quotas (per address and per prefix; `unlimited_ips` and connections without an
    /// IP are not limited).
    fn within_quota(
        &mut self,
        swarm: &Swarm<Behaviour>,
        connection: ConnectionId,
        poll: bool,
        instant: std::time::Instant,
    ) -> bool {
        let filter = &swarm.behaviour().filter;
        let Some(ip) = filter.remote_ip(connection) else {
            return true;
        };
        if filter.rules().is_unlimited(ip) {
            return true;
        }
        let (per_ip, per_prefix) = if poll {
            (&mut self.polls_per_ip, &mut self.polls_per_prefix)
        } else {
            (&mut self.per_ip, &mut self.per_prefix)
        };
        // Both are charged, so a prefix's quota counts every address in it.
        let address = per_ip.check(&limit_key(ip), instant).is_ok();
        let prefix = per_prefix.check(&prefix_key(ip), instant).is_ok();
        address && prefix
    }

    /// The service's latest published status.
    pub fn status(&self) -> ServiceStatus {
        self.status.borrow().clone()
    }

    /// A join request or status poll from `peer`: handed to the service, answered when it
    /// answers, or refused at once when the service is saturated. A join request or status poll
    /// past its source's quota is refused `rate_limited`, audited, and counts toward the
    /// source's ban (which ends a flood within `ban_threshold` refusals per identity).
    #[allow(clippy::too_many_arguments)]
    pub fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        peer: PeerId,
        connection: ConnectionId,
        message: JoinMessage,
        channel: ResponseChannel<JoinReply>,
        instant: std::time::Instant,
    ) {
        let quota = match &message {
            JoinMessage::Request(request) => Some((false, Some(&request.network))),
            JoinMessage::Status { .. } => Some((true, None)),
            JoinMessage::Deliver { .. } => None,
        };
        if let Some((poll, network)) = quota
            && !self.within_quota(swarm, connection, poll, instant)
        {
            report.metrics().rate_limited.inc();
            let mut event = AuditEvent::new(AuditKind::JoinDenied)
                .reason("rate_limited")
                .peer(peer)
                .detail(if poll {
                    "over the source's join status poll quota"
                } else {
                    "over the source's join request quota"
                });
            if let Some(network) = network {
                event = event.network(network);
            }
            report.audit(event);
            refuse(swarm, channel);
            crate::bans::record_failure(swarm, report, peer, connection, instant);
            return;
        }
        if self.replies.len() >= self.max_pending {
            saturated(
                report,
                peer,
                "join service saturated; refusing a join message",
            );
            refuse(swarm, channel);
            return;
        }
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send(ServiceRequest::Join {
            peer,
            message,
            reply,
        }) {
            Ok(()) => {
                self.replies.push(Box::pin(
                    async move { (channel, connection, answer.await.ok()) },
                ))
            }
            Err(_) => {
                saturated(
                    report,
                    peer,
                    "join service queue full; refusing a join message",
                );
                refuse(swarm, channel);
            }
        }
    }

    /// `peer` accepted our delegation on a connection: the service pushes what it owes it.
    pub fn on_connected(&mut self, peer: PeerId) {
        if self
            .requests
            .try_send(ServiceRequest::Connected { peer })
            .is_err()
        {
            // Not lost: undelivered tokens are pushed again at the next connection.
            tracing::debug!(%peer, "join service busy; deliveries wait for the next connection");
        }
    }

    /// An operator request for the service; it answers the operator directly.
    pub fn operator(&mut self, request: Request, reply: oneshot::Sender<Result<Response, String>>) {
        if let Err(e) = self
            .operator
            .try_send(ServiceRequest::Operator { request, reply })
        {
            let busy = "the join service is busy; try again".to_owned();
            if let ServiceRequest::Operator { reply, .. } = e.into_inner() {
                let _ = reply.send(Err(busy));
            }
        }
    }

    /// Pushes a token to its requester, if connected.
    pub fn deliver(&mut self, swarm: &mut Swarm<Behaviour>, d: Delivery) {
        if !swarm.is_connected(&d.peer) {
            return;
        }
        let id = swarm.behaviour_mut().join.send_request(
            &d.peer,
            JoinMessage::Deliver {
                network: d.network,
                request_id: d.request_id,
                token: d.token,
            },
        );
        self.in_flight.insert(id, d.token_id);
    }

    /// A requester answered a delivery; `false` when `id` was not a delivery.
    pub fn on_response(
        &mut self,
        id: OutboundRequestId,
        peer: PeerId,
        response: &JoinReply,
    ) -> bool {
        let Some(token_id) = self.in_flight.remove(&id) else {
            return false;
        };
        if matches!(response, JoinReply::Ack) {
            tracing::info!(%peer, token_id, "token delivered");
            if self
                .requests
                .try_send(ServiceRequest::Delivered { token_id })
                .is_err()
            {
                tracing::debug!(
                    token_id,
                    "join service busy; the receipt is recorded at the next delivery"
                );
            }
        } else {
            tracing::warn!(%peer, token_id, response = %summary(response), "delivery not acknowledged");
        }
        true
    }

    /// A delivery failed on the wire; it is pushed again at the next connection.
    pub fn on_failure(&mut self, id: OutboundRequestId) {
        self.in_flight.remove(&id);
    }

    /// The next answer or push from the service.
    pub async fn next(&mut self) -> ServerInput {
        tokio::select! {
            Some((channel, connection, reply)) = self.replies.next(), if !self.replies.is_empty() => {
                ServerInput::Reply(channel, connection, reply)
            }
            Some(event) = self.events.recv() => ServerInput::Event(event),
            else => std::future::pending().await,
        }
    }
}

/// Audits a join message refused because the service is saturated; logged once per source and
/// window like the audit record.
fn saturated(report: &mut Report, peer: PeerId, why: &'static str) {
    let event = AuditEvent::new(AuditKind::JoinDenied)
        .reason("rate_limited")
        .peer(peer)
        .detail(why);
    if report.audit(event) {
        tracing::warn!(%peer, reason = "rate_limited", "{why}");
    }
}

/// A peer's join reply in one short line: its kind and codes and the sizes of what it carries
/// (a token, an operator note), never the bytes themselves.
fn summary(reply: &JoinReply) -> String {
    match reply {
        JoinReply::Pending { request_id } => format!("pending (request {request_id})"),
        JoinReply::Approved { request_id, token } => {
            format!(
                "approved (request {request_id}, a {}-byte token)",
                token.len()
            )
        }
        JoinReply::Denied {
            reason, message, ..
        } => match message {
            Some(note) => format!("denied {reason} (a {}-byte note)", note.len()),
            None => format!("denied {reason}"),
        },
        JoinReply::Ack => "ack".to_owned(),
        JoinReply::Error { code } => format!("error {code}"),
    }
}

fn refuse(swarm: &mut Swarm<Behaviour>, channel: ResponseChannel<JoinReply>) {
    let _ = swarm.behaviour_mut().join.send_response(
        channel,
        JoinReply::Error {
            code: ReasonCode::RateLimited,
        },
    );
}

/// Audits a refused token delivery and counts it toward the sender's ban.
fn refused_delivery(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    peer: PeerId,
    connection: ConnectionId,
    network: &NetworkName,
    detail: &str,
    instant: std::time::Instant,
) {
    report.audit(
        AuditEvent::new(AuditKind::MembershipRefused)
            .peer(peer)
            .network(network)
            .reason("unsolicited_delivery")
            .detail(detail),
    );
    crate::bans::record_failure(swarm, report, peer, connection, instant);
}

/// Routes a `/cordon/join/1` event to the joiner or the join server.
pub fn on_event(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    joiner: &mut Joiner,
    server: Option<&mut JoinServer>,
    event: request_response::Event<JoinMessage, JoinReply>,
    now: SystemTime,
    instant: std::time::Instant,
) {
    match event {
        request_response::Event::Message {
            peer,
            connection_id,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
        } => match (request, server) {
            (
                JoinMessage::Deliver {
                    network,
                    request_id,
                    token,
                },
                _,
            ) => {
                let reply = joiner.on_deliver(
                    swarm,
                    report,
                    peer,
                    connection_id,
                    &network,
                    request_id,
                    token,
                    now,
                    instant,
                );
                let _ = swarm.behaviour_mut().join.send_response(channel, reply);
            }
            (other, Some(server)) => {
                server.on_request(swarm, report, peer, connection_id, other, channel, instant)
            }
            (other, None) => {
                let reason = DenyReason::NotServing;
                if let JoinMessage::Request(r) = &other {
                    report.audit(
                        AuditEvent::new(AuditKind::JoinDenied)
                            .reason(reason)
                            .peer(peer)
                            .network(&r.network),
                    );
                }
                let reply = JoinReply::Denied {
                    request_id: None,
                    reason,
                    message: None,
                };
                let _ = swarm.behaviour_mut().join.send_response(channel, reply);
            }
        },
        request_response::Event::Message {
            peer,
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            let delivery = server.is_some_and(|s| s.on_response(request_id, peer, &response));
            if !delivery {
                joiner.on_reply(swarm, request_id, peer, response, now);
            }
        }
        request_response::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(s) = server {
                s.on_failure(request_id);
            }
            joiner.on_failure(request_id, &error, now);
            tracing::debug!(%peer, %error, "join request failed");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use cordon_protocol::DenyReason;

    use super::*;

    /// Found by `scripts/scale`: 500 pending nodes polling kept the service's queue full, and
    /// every `seednode approve` was refused as busy. The operator has a queue of its own.
    #[test]
    fn a_queue_full_of_join_messages_does_not_refuse_the_operator() {
        let (requests, mut inbox) = mpsc::channel(1);
        let (operator, mut operator_inbox) = mpsc::channel(1);
        let (_events_tx, events) = mpsc::channel(1);
        let (_status_tx, status) = watch::channel(ServiceStatus::default());
        requests
            .try_send(ServiceRequest::Connected {
                peer: PeerId::random(),
            })
            .unwrap();
        let mut server = JoinServer::new(
            ServiceHandle {
                delegations: Vec::new(),
                requests,
                operator,
                events,
                status,
            },
            16,
            &LimitsConfig::default(),
        );
        let (reply, mut answer) = oneshot::channel();
        server.operator(Request::Pending { network: None }, reply);
        assert!(
            answer.try_recv().is_err(),
            "the operator's request was not refused"
        );
        assert!(matches!(
            operator_inbox.try_recv(),
            Ok(ServiceRequest::Operator {
                request: Request::Pending { network: None },
                ..
            })
        ));
        assert!(matches!(
            inbox.try_recv(),
            Ok(ServiceRequest::Connected { .. })
        ));
    }

    /// Issue 12, item 5: a peer's reply is logged as a short summary, never its contents.
    #[test]
    fn a_reply_is_summarised_without_its_contents() {
        let note = "x".repeat(8 * 1024);
        let line = summary(&JoinReply::Denied {
            request_id: Some(3),
            reason: DenyReason::DeniedByOperator,
            message: Some(note),
        });
        assert!(line.len() < 80, "{line}");
        assert!(line.contains("8192-byte note"), "{line}");
        let line = summary(&JoinReply::Approved {
            request_id: 4,
            token: vec![0xab; 2000],
        });
        assert!(
            line.contains("2000-byte token") && !line.contains("ab"),
            "{line}"
        );
    }
}
