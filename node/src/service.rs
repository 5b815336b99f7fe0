//! The seam between a node and a join service (the seednode), as messages.
//!
//! A plain node runs without a service and answers every inbound join request with
//! `not_serving`. A seednode runs its service as its own task and hands the node a
//! [`ServiceHandle`]: the node forwards join messages, connections, delivery receipts and
//! operator requests over a bounded channel, and receives answers on oneshot channels and
//! pushes (tokens to deliver, audit records) on another bounded channel. Nothing the service
//! does (database writes, fsyncs) runs on the node's event loop, and the node never waits for
//! the service: a full channel is refused at once (`rate_limited` to the peer, "busy" to the
//! operator), and the service's status is read from the latest value it published.

use cordon_host::audit::AuditEvent;
use cordon_protocol::{JoinMessage, JoinReply, NetworkName, PresentedToken};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{Request, Response, ServiceStatus};

/// A token to push to a connected requester with `JoinMessage::Deliver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The requester.
    pub peer: PeerId,
    /// The token's network.
    pub network: NetworkName,
    /// The join request the token answers.
    pub request_id: u64,
    /// The service's id for this token, handed back in [`ServiceRequest::Delivered`].
    pub token_id: u64,
    /// Standard biscuit bytes.
    pub token: Vec<u8>,
}

/// What the node asks of the service.
#[derive(Debug)]
pub enum ServiceRequest {
    /// A `Request` or `Status` join message from `peer` (Noise-authenticated). `Deliver` never
    /// reaches a service.
    Join {
        /// The peer.
        peer: PeerId,
        /// The message.
        message: JoinMessage,
        /// Where the answer goes.
        reply: oneshot::Sender<JoinReply>,
    },
    /// `peer` connected: push it the tokens approved for it and not delivered yet.
    Connected {
        /// The peer.
        peer: PeerId,
    },
    /// The peer acknowledged the delivery of a token.
    Delivered {
        /// The token.
        token_id: u64,
    },
    /// An operator request ([`Request::is_operator`]).
    Operator {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Response, String>>,
    },
}

/// What the service pushes to the node.
#[derive(Debug)]
pub enum ServiceEvent {
    /// Push this token to its requester if connected.
    Deliver(Delivery),
    /// Append this record to the node's audit log.
    Audit(AuditEvent),
    /// A new revocation head the service signed: apply it, enforce it, push it to the
    /// network's members.
    Revocation {
        /// The network.
        network: NetworkName,
        /// The head, its entries and the service's delegation.
        update: cordon_protocol::SignedUpdate,
    },
}

/// A running join service, as the node sees it.
#[derive(Debug)]
pub struct ServiceHandle {
    /// Delegations to present on every connection (kind `Delegation`), so nodes can check this
    /// peer really is a seednode of those networks before asking to join.
    pub delegations: Vec<PresentedToken>,
    /// Requests from the network to the service (bounded): join messages, connections.
    pub requests: mpsc::Sender<ServiceRequest>,
    /// Operator requests to the service (bounded), served before the network's: a queue full
    /// of join messages never keeps the operator from `pending` or `approve`.
    pub operator: mpsc::Sender<ServiceRequest>,
    /// Pushes from the service (bounded).
    pub events: mpsc::Receiver<ServiceEvent>,
    /// The service's latest published status.
    pub status: watch::Receiver<ServiceStatus>,
}
