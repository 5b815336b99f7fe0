//! The seam between the node's event loop and a join service (the seednode).
//!
//! A plain node runs without a service: it answers every inbound join request with
//! `not_serving`. The seednode plugs its queue, store and issuers in here. Calls are synchronous
//! and made from the event loop, so implementations keep them short (a SQLite transaction).

use std::time::SystemTime;

use cordon_protocol::{JoinMessage, JoinReply, NetworkName, PresentedToken};
use libp2p::PeerId;

/// A token to push to a connected requester with `JoinMessage::Deliver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The requester.
    pub peer: PeerId,
    /// The token's network.
    pub network: NetworkName,
    /// The join request the token answers.
    pub request_id: u64,
    /// The service's id for this delivery, handed back in [`JoinService::delivered`].
    pub token_id: i64,
    /// Standard biscuit bytes.
    pub token: Vec<u8>,
}

/// What an operator command produced.
#[derive(Debug)]
pub struct ControlOutcome {
    /// The answer for the operator (`{"ok": true, "result": ...}` is built around it).
    pub result: Result<serde_json::Value, String>,
    /// Tokens to push now to requesters that are connected.
    pub deliveries: Vec<Delivery>,
}

/// A join service: queues join requests, decides them, issues and delivers tokens.
pub trait JoinService: Send + 'static {
    /// Delegations to present on every connection (kind `Delegation`), so nodes can check this
    /// peer really is a seednode of those networks before asking to join.
    fn delegations(&self) -> Vec<PresentedToken>;

    /// Answers a `Request` or `Status` join message from `peer` (Noise-authenticated).
    /// `Deliver` never reaches a service.
    fn on_join(&mut self, peer: PeerId, message: JoinMessage, now: SystemTime) -> JoinReply;

    /// Tokens approved for `peer` and not yet delivered; called when it connects.
    fn pending_deliveries(&mut self, peer: PeerId, now: SystemTime) -> Vec<Delivery>;

    /// The peer acknowledged a delivery.
    fn delivered(&mut self, token_id: i64, now: SystemTime);

    /// An operator command from the local control socket (`{"cmd": ...}`), one the node itself
    /// does not handle.
    fn on_control(&mut self, request: serde_json::Value, now: SystemTime) -> ControlOutcome;

    /// Service status for `status` (queue sizes and such).
    fn status(&self) -> serde_json::Value;
}
