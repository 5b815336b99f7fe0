//! Both sides of `/cordon/join/1`.
//!
//! - [`Joiner`] drives the pure [`JoinClient`]: it sends what the client asks, persists pending
//!   requests, and verifies and stores tokens (approved or delivered) before the client and the
//!   session behaviour adopt them.
//! - [`JoinServer`] plugs a [`JoinService`] (the seednode) into the protocol: it answers join
//!   requests and status polls, pushes approved tokens to connected requesters and records
//!   their acknowledgement.
//!
//! [`on_event`] routes the protocol's events between the two.

use std::collections::HashMap;
use std::time::SystemTime;

use cordon_protocol::{DenyReason, JoinMessage, JoinReply, NetworkName, ReasonCode};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{PeerId, Swarm};
use serde_json::Value;

use crate::join_client::{JoinAction, JoinClient, OwnToken, accept_token};
use crate::report::Report;
use crate::service::{Delivery, JoinService};
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
                            self.client.load_token(
                                &network,
                                OwnToken {
                                    bytes,
                                    expires_at: v.expires_at,
                                    roles: v.roles,
                                },
                            );
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

    /// A seednode pushed a token.
    pub fn on_deliver(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        network: &NetworkName,
        request_id: u64,
        token: Vec<u8>,
        now: SystemTime,
    ) -> JoinReply {
        match self.accept(swarm, network, token, now) {
            Ok(()) => {
                tracing::info!(%peer, network = %network, request_id, "membership token delivered");
                JoinReply::Ack
            }
            Err(code) => JoinReply::Error { code },
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
    pub fn on_failure(&mut self, id: OutboundRequestId, now: SystemTime) {
        self.client.handle_failure(id, now);
    }
}

/// The seednode side: see the [module documentation](self).
pub struct JoinServer {
    service: Box<dyn JoinService>,
    /// Deliveries pushed and not yet acknowledged, by request.
    in_flight: HashMap<OutboundRequestId, i64>,
}

impl std::fmt::Debug for JoinServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinServer")
            .field("deliveries_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl JoinServer {
    /// Serves `service`.
    pub fn new(service: Box<dyn JoinService>) -> Self {
        Self {
            service,
            in_flight: HashMap::new(),
        }
    }

    /// The service.
    pub fn service(&self) -> &dyn JoinService {
        self.service.as_ref()
    }

    /// A join request or status poll from `peer`.
    pub fn on_request(
        &mut self,
        report: &mut Report,
        peer: PeerId,
        message: JoinMessage,
        now: SystemTime,
    ) -> JoinReply {
        let requested = match &message {
            JoinMessage::Request(r) => Some(r.network.clone()),
            _ => None,
        };
        let reply = self.service.on_join(peer, message, now);
        if let Some(network) = requested {
            report.audit(audit_of(&reply).peer(peer).network(&network));
        }
        reply
    }

    /// `peer` connected: push the tokens approved for it and not delivered yet.
    pub fn on_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, now: SystemTime) {
        for d in self.service.pending_deliveries(peer, now) {
            self.deliver(swarm, d);
        }
    }

    fn deliver(&mut self, swarm: &mut Swarm<Behaviour>, d: Delivery) {
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
        now: SystemTime,
    ) -> bool {
        let Some(token_id) = self.in_flight.remove(&id) else {
            return false;
        };
        if matches!(response, JoinReply::Ack) {
            self.service.delivered(token_id, now);
            tracing::info!(%peer, token_id, "token delivered");
        } else {
            tracing::warn!(%peer, token_id, ?response, "delivery not acknowledged");
        }
        true
    }

    /// A delivery failed on the wire; it is pushed again at the next connection.
    pub fn on_failure(&mut self, id: OutboundRequestId) {
        self.in_flight.remove(&id);
    }

    /// An operator command for the service; pushes what it approved to connected requesters
    /// and audits operator decisions.
    pub fn on_control(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        report: &mut Report,
        request: Value,
        now: SystemTime,
    ) -> Result<Value, String> {
        let cmd = request
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let operator_action = match cmd.as_str() {
            "approve" => Some(AuditKind::JoinApproved),
            "deny" => Some(AuditKind::JoinDenied),
            "revoke" => Some(AuditKind::TokenRevoked),
            _ => None,
        };
        let id = request.get("id").and_then(Value::as_u64);
        let peer = request
            .get("peer")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let outcome = self.service.on_control(request, now);
        if let (Some(kind), Ok(_)) = (operator_action, &outcome.result) {
            let mut event = AuditEvent::new(kind).command(&cmd).detail("by operator");
            if let Some(id) = id {
                event = event.request_id(id);
            }
            if let Some(peer) = peer {
                event = event.peer(peer);
            }
            report.audit(event);
        }
        for d in outcome.deliveries {
            self.deliver(swarm, d);
        }
        outcome.result
    }
}

fn audit_of(reply: &JoinReply) -> AuditEvent {
    match reply {
        JoinReply::Pending { request_id } => {
            AuditEvent::new(AuditKind::JoinRequested).request_id(*request_id)
        }
        JoinReply::Approved { request_id, .. } => AuditEvent::new(AuditKind::JoinApproved)
            .request_id(*request_id)
            .detail("by policy"),
        JoinReply::Denied { reason, .. } => AuditEvent::new(AuditKind::JoinDenied).reason(reason),
        JoinReply::Error { code } => AuditEvent::new(AuditKind::JoinDenied).reason(code),
        JoinReply::Ack => AuditEvent::new(AuditKind::Other),
    }
}

/// Routes a `/cordon/join/1` event to the joiner or the join server.
pub fn on_event(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    joiner: &mut Joiner,
    server: Option<&mut JoinServer>,
    event: request_response::Event<JoinMessage, JoinReply>,
    now: SystemTime,
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
            let reply = match (request, server) {
                (
                    JoinMessage::Deliver {
                        network,
                        request_id,
                        token,
                    },
                    _,
                ) => joiner.on_deliver(swarm, peer, &network, request_id, token, now),
                (other, Some(server)) => server.on_request(report, peer, other, now),
                (other, None) => {
                    let reply = JoinReply::Denied {
                        request_id: None,
                        reason: DenyReason::NotServing,
                        message: None,
                    };
                    if let JoinMessage::Request(r) = &other {
                        report.audit(audit_of(&reply).peer(peer).network(&r.network));
                    }
                    reply
                }
            };
            let _ = swarm.behaviour_mut().join.send_response(channel, reply);
        }
        request_response::Event::Message {
            peer,
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            let delivery = server.is_some_and(|s| s.on_response(request_id, peer, &response, now));
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
            joiner.on_failure(request_id, now);
            tracing::debug!(%peer, %error, "join request failed");
        }
        _ => {}
    }
}
