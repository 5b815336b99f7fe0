//! The join client: how a node obtains and keeps its membership of each network.
//!
//! Per network it asks a verified seednode to join (or polls the request it already has),
//! accepts the token the seednode approves or delivers, renews it inside the descriptor's
//! `renewal_margin`, stops asking after an operator's denial, and backs off after failures.
//!
//! [`JoinClient`] is pure: it is handed `now` and the seednodes currently proven for each
//! network, and answers with [`JoinAction`]s; the event loop sends the messages, persists the
//! pending requests and, through [`accept_token`], verifies and stores a token before handing it
//! back with [`JoinClient::adopt`]. Generic over the driver's request id so tests use integers.
//!
//! Invariants:
//! - At most one join message per network is in flight.
//! - A request id is polled at the seednode that issued it while that one is proven; when it
//!   is not (killed, unreachable), at another proven seednode of the network. Seednodes sharing
//!   one store answer for each other's requests; one that does not know the id answers as it
//!   would for any unknown id, and we then file a new request there. A node is never stuck
//!   behind one lost seednode.
//! - A network this process serves as a seednode is never joined.
//! - After `n` consecutive failures the next attempt waits `poll_interval * 2^n`, at most
//!   `max_backoff`; renewals of a still-valid token are asked at most once per `renewal_retry`.
//!   A message lost with its connection is not the seednode's answer: it is asked again after
//!   `poll_interval`, the pace of polling anyway, and does not lengthen the back-off.
//! - When the seednode that issued our token presents another delegation than the one the
//!   token chains to (its anchor was rotated, or its delegation renewed), we renew at that
//!   seednode at once, margin or not: the old anchor may be removed next.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cordon_membership::{PeerId, PublicKey, RevocationId, Verifier};
use cordon_protocol::{DenyReason, JoinMessage, JoinReply, JoinRequest, NetworkName, ReasonCode};

use cordon_host::clock::unix_secs;
use cordon_host::datadir::{DataDir, PendingJoin};

use crate::invite::InviteCode;

/// Timing of the join client.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Base interval between attempts. Default 3 s.
    pub poll_interval: Duration,
    /// Longest wait after repeated failures. Default 60 s.
    pub max_backoff: Duration,
    /// Least time between two renewal requests for a still-valid token. Default 60 s.
    pub renewal_retry: Duration,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(3),
            max_backoff: Duration::from_secs(60),
            renewal_retry: Duration::from_secs(60),
        }
    }
}

/// Our own membership of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnToken {
    /// Standard biscuit bytes.
    pub bytes: Vec<u8>,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it ends.
    pub expires_at: SystemTime,
    /// Roles it grants.
    pub roles: Vec<String>,
    /// The seednode that issued it.
    pub issuer: PeerId,
    /// The delegation it chains to (its revocation id).
    pub delegation: RevocationId,
    /// The trust anchor it chains to.
    pub anchor: PublicKey,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAction {
    /// Send `message` to the seednode `peer` on `/cordon/join/1`, then call
    /// [`JoinClient::sent`] with the request id.
    Send {
        /// The network.
        network: NetworkName,
        /// The seednode.
        peer: PeerId,
        /// The message.
        message: JoinMessage,
    },
    /// Verify and store this token (see [`accept_token`]), then call [`JoinClient::adopt`].
    Accept {
        /// The network.
        network: NetworkName,
        /// The token bytes.
        token: Vec<u8>,
    },
    /// Persist the pending join requests (the full list).
    SavePending(Vec<PendingJoin>),
    /// Our token of this network expired: stop presenting it.
    Expired(NetworkName),
}

/// Where a network's join stands, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinState {
    /// This process is a seednode of the network.
    Seednode,
    /// We hold a valid token.
    Member,
    /// An operator denied our request.
    Denied,
    /// A request waits for approval.
    Pending,
    /// Looking for a seednode or about to ask.
    Joining,
}

impl JoinState {
    /// The status string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seednode => "seednode",
            Self::Member => "member",
            Self::Denied => "denied",
            Self::Pending => "pending",
            Self::Joining => "joining",
        }
    }
}

#[derive(Debug)]
struct Net<R> {
    name: NetworkName,
    renewal_margin: Duration,
    serving: bool,
    token: Option<OwnToken>,
    pending: Option<PendingJoin>,
    in_flight: Option<R>,
    denied: bool,
    last_renewal: Option<SystemTime>,
    failures: u32,
    retry_at: Option<SystemTime>,
    /// Our token's issuer now presents another delegation: renew there, margin or not.
    reissue_from: Option<PeerId>,
}

impl<R> Net<R> {
    /// Whether we renew our token at `now`: it is inside the renewal margin, or our issuer
    /// presents a new delegation.
    fn renewing(&self, now: SystemTime) -> bool {
        self.reissue_from.is_some()
            || self
                .token
                .as_ref()
                .is_some_and(|t| t.expires_at <= now + self.renewal_margin)
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct JoinClient<R> {
    config: JoinConfig,
    label: String,
    invites: BTreeMap<NetworkName, InviteCode>,
    nets: Vec<Net<R>>,
}

/// One network the client manages.
#[derive(Debug, Clone)]
pub struct JoinNetwork {
    /// Its name.
    pub name: NetworkName,
    /// Renew this long before expiry.
    pub renewal_margin: Duration,
    /// This process is a seednode of it (never joins it).
    pub serving: bool,
}

impl<R: Copy + Eq + std::fmt::Debug> JoinClient<R> {
    /// A client for `networks`, sending `label` with its requests, and a network's invite code
    /// (if any) with its first join request only.
    pub fn new(
        config: JoinConfig,
        networks: impl IntoIterator<Item = JoinNetwork>,
        label: String,
        invites: BTreeMap<NetworkName, InviteCode>,
    ) -> Self {
        Self {
            config,
            label,
            invites,
            nets: networks
                .into_iter()
                .map(|n| Net {
                    name: n.name,
                    renewal_margin: n.renewal_margin,
                    serving: n.serving,
                    token: None,
                    pending: None,
                    in_flight: None,
                    denied: false,
                    last_renewal: None,
                    failures: 0,
                    retry_at: None,
                    reissue_from: None,
                })
                .collect(),
        }
    }

    fn net_mut(&mut self, network: &NetworkName) -> Option<&mut Net<R>> {
        self.nets.iter_mut().find(|n| &n.name == network)
    }

    fn net(&self, network: &NetworkName) -> Option<&Net<R>> {
        self.nets.iter().find(|n| &n.name == network)
    }

    /// A token loaded from disk at start (already verified by the caller).
    pub fn load_token(&mut self, network: &NetworkName, token: OwnToken) {
        if let Some(net) = self.net_mut(network) {
            net.token = Some(token);
        }
    }

    /// A pending request loaded from disk at start; ignored where we hold a token.
    pub fn load_pending(&mut self, join: PendingJoin) {
        if let Some(net) = self.net_mut(&join.network)
            && net.token.is_none()
        {
            net.pending = Some(join);
        }
    }

    /// A seednode of `network` proved itself with the delegation `delegation`. If it issued
    /// our token under another delegation, we renew at it next (see the module docs). Returns
    /// whether that started a renewal.
    pub fn on_seednode(
        &mut self,
        network: &NetworkName,
        peer: PeerId,
        delegation: &RevocationId,
    ) -> bool {
        let Some(net) = self.net_mut(network) else {
            return false;
        };
        let moved = net
            .token
            .as_ref()
            .is_some_and(|t| t.issuer == peer && &t.delegation != delegation);
        if moved && net.reissue_from.is_none() {
            tracing::info!(network = %network, seednode = %peer, "our seednode presents a new delegation; renewing under it");
            net.reissue_from = Some(peer);
            // Not the renewal of an expiring token: ask now.
            net.last_renewal = None;
            net.retry_at = None;
            return true;
        }
        false
    }

    /// Our token of `network` no longer verifies (the operator removed its anchor): forget it
    /// and ask again. Returns whether we held one.
    pub fn drop_token(&mut self, network: &NetworkName) -> bool {
        let Some(net) = self.net_mut(network) else {
            return false;
        };
        net.last_renewal = None;
        net.reissue_from = None;
        net.token.take().is_some()
    }

    /// Changes how long before expiry `network`'s token is renewed (the descriptor changed).
    pub fn set_renewal_margin(&mut self, network: &NetworkName, margin: Duration) {
        if let Some(net) = self.net_mut(network) {
            net.renewal_margin = margin;
        }
    }

    /// Our token of `network`, if we hold one.
    pub fn token(&self, network: &NetworkName) -> Option<&OwnToken> {
        self.net(network)?.token.as_ref()
    }

    /// The pending request of `network`, if any.
    pub fn pending(&self, network: &NetworkName) -> Option<&PendingJoin> {
        self.net(network)?.pending.as_ref()
    }

    /// Where the join of `network` stands at `now`.
    pub fn state(&self, network: &NetworkName, now: SystemTime) -> Option<JoinState> {
        let net = self.net(network)?;
        Some(if net.serving {
            JoinState::Seednode
        } else if net.token.as_ref().is_some_and(|t| t.expires_at > now) {
            JoinState::Member
        } else if net.denied {
            JoinState::Denied
        } else if net.pending.is_some() {
            JoinState::Pending
        } else {
            JoinState::Joining
        })
    }

    /// Whether we need a seednode of `network` at `now`: we do not serve it, and hold no token
    /// or are renewing ours. A member keeps connections to members rather than to seednodes, so
    /// a renewal may find none connected, and the one that issued the token may be gone.
    pub fn needs_seednode(&self, network: &NetworkName, now: SystemTime) -> bool {
        self.net(network)
            .is_some_and(|n| !n.serving && (n.token.is_none() || n.renewing(now)))
    }

    /// Whether a seednode of `network` may deliver a token now: we have none (joining), a
    /// request or poll of ours is in flight, `peer` holds our pending request, or we are
    /// renewing (inside the margin, or under our issuer's new delegation). A member with a
    /// token it is not renewing expects nothing, so a delivery then is refused unverified.
    pub fn expects_delivery(&self, network: &NetworkName, peer: &PeerId, now: SystemTime) -> bool {
        self.net(network).is_some_and(|n| {
            !n.serving
                && !n.denied
                && (n.in_flight.is_some()
                    || n.pending
                        .as_ref()
                        .is_some_and(|p| p.seednode == peer.to_string())
                    || n.token.is_none()
                    || n.renewing(now))
        })
    }

    /// The next messages to send: a join request, a status poll or a renewal for every network
    /// that is due, each to a seednode proven for it (`seednodes`).
    pub fn poll(
        &mut self,
        now: SystemTime,
        seednodes: impl Fn(&NetworkName) -> Vec<PeerId>,
    ) -> Vec<JoinAction> {
        let mut actions = Vec::new();
        for net in &mut self.nets {
            if net.serving || net.denied || net.in_flight.is_some() {
                continue;
            }
            if net.retry_at.is_some_and(|at| now < at) {
                continue;
            }
            let seeds = seednodes(&net.name);
            // Renewing under our issuer's new delegation, if it is here.
            let reissuer = net.reissue_from.filter(|p| seeds.contains(p));
            if let Some(t) = &net.token {
                let valid = t.expires_at > now;
                let due = t.expires_at <= now + net.renewal_margin || reissuer.is_some();
                let recently = net.last_renewal.is_some_and(|at| {
                    now.duration_since(at)
                        .is_ok_and(|d| d < self.config.renewal_retry)
                });
                if valid && (!due || recently) {
                    continue;
                }
            }
            let (peer, message) = match &net.pending {
                // Polled at the seednode that issued the request while it is here; else at
                // another seednode of the network, which shares its store (and answers) or
                // does not know the id (and we ask anew there).
                Some(p) => {
                    let Some(seed) = seeds
                        .iter()
                        .find(|s| s.to_string() == p.seednode)
                        .or(seeds.first())
                    else {
                        continue;
                    };
                    (
                        *seed,
                        JoinMessage::Status {
                            request_id: p.request_id,
                        },
                    )
                }
                None => {
                    let Some(seed) = reissuer.as_ref().or(seeds.first()) else {
                        continue;
                    };
                    // The code goes with a first join only: a renewal is decided by the
                    // token we hold, and a code sent again is one more place it shows.
                    let invite = match &net.token {
                        None => self.invites.get(&net.name).map(|c| c.expose().to_owned()),
                        Some(_) => None,
                    };
                    (
                        *seed,
                        JoinMessage::Request(JoinRequest {
                            network: net.name.clone(),
                            label: self.label.clone(),
                            invite,
                        }),
                    )
                }
            };
            if net.token.as_ref().is_some_and(|t| t.expires_at > now) {
                net.last_renewal = Some(now);
            }
            actions.push(JoinAction::Send {
                network: net.name.clone(),
                peer,
                message,
            });
        }
        actions
    }

    /// The driver sent the message of a [`JoinAction::Send`] for `network` as request `id`.
    pub fn sent(&mut self, network: &NetworkName, id: R) {
        if let Some(net) = self.net_mut(network) {
            net.in_flight = Some(id);
        }
    }

    /// A seednode answered request `id`.
    pub fn handle_reply(
        &mut self,
        id: R,
        peer: PeerId,
        reply: JoinReply,
        now: SystemTime,
    ) -> Vec<JoinAction> {
        let Some(i) = self.nets.iter().position(|n| n.in_flight == Some(id)) else {
            return Vec::new();
        };
        let max_backoff = self.config.max_backoff;
        let poll_interval = self.config.poll_interval;
        let net = &mut self.nets[i];
        net.in_flight = None;
        let network = net.name.clone();
        match reply {
            JoinReply::Pending { request_id } => {
                tracing::info!(network = %network, request_id, seednode = %peer, "join request pending operator approval");
                net.failures = 0;
                net.retry_at = None;
                net.pending = Some(PendingJoin {
                    network,
                    request_id,
                    seednode: peer.to_string(),
                    requested_at: unix_secs(now),
                });
                vec![JoinAction::SavePending(self.pending_list())]
            }
            JoinReply::Approved { token, .. } => vec![JoinAction::Accept { network, token }],
            JoinReply::Denied {
                reason, message, ..
            } => {
                // The operator's note, cut to a line: the seednode chose it.
                let note: String = message.as_deref().unwrap_or("").chars().take(200).collect();
                tracing::warn!(network = %network, reason = %reason, message = %note, "join request denied");
                if reason == DenyReason::DeniedByOperator || reason == DenyReason::InvalidInvite {
                    net.denied = true;
                } else {
                    back_off(net, now, poll_interval, max_backoff);
                }
                net.pending = None;
                vec![JoinAction::SavePending(self.pending_list())]
            }
            JoinReply::Error { code } => {
                tracing::warn!(network = %network, reason = %code, "join request failed");
                back_off(net, now, poll_interval, max_backoff);
                Vec::new()
            }
            JoinReply::Ack => Vec::new(),
        }
    }

    /// Request `id` failed on the wire (timeout, connection closed, protocol refused).
    /// `connection_lost`: its connection closed before an answer came, which says nothing
    /// about the seednode's health (a seednode that keeps closing connections is held back by
    /// its own per-address connection limits, and this retries no faster than polling does).
    pub fn handle_failure(&mut self, id: R, connection_lost: bool, now: SystemTime) {
        let (poll_interval, max_backoff) = (self.config.poll_interval, self.config.max_backoff);
        if let Some(net) = self.nets.iter_mut().find(|n| n.in_flight == Some(id)) {
            net.in_flight = None;
            if connection_lost {
                let renewal = net.token.is_some();
                // A renewal of a still-valid token keeps its own pace (`renewal_retry`).
                if !renewal {
                    net.retry_at = Some(now + poll_interval);
                    return;
                }
            }
            back_off(net, now, poll_interval, max_backoff);
        }
    }

    /// A token for `network` was verified and stored: it is ours now.
    pub fn adopt(&mut self, network: &NetworkName, token: OwnToken) -> Vec<JoinAction> {
        let Some(net) = self.net_mut(network) else {
            return Vec::new();
        };
        net.token = Some(token);
        net.pending = None;
        net.denied = false;
        net.failures = 0;
        net.retry_at = None;
        net.reissue_from = None;
        vec![JoinAction::SavePending(self.pending_list())]
    }

    /// Drops tokens that expired by `now`; the networks then ask again.
    pub fn expire(&mut self, now: SystemTime) -> Vec<JoinAction> {
        let mut out = Vec::new();
        for net in &mut self.nets {
            if net.token.as_ref().is_some_and(|t| t.expires_at <= now) {
                tracing::warn!(network = %net.name, reason = "expired", "our membership expired; requesting a new one");
                net.token = None;
                net.last_renewal = None;
                out.push(JoinAction::Expired(net.name.clone()));
            }
        }
        out
    }

    fn pending_list(&self) -> Vec<PendingJoin> {
        self.nets.iter().filter_map(|n| n.pending.clone()).collect()
    }
}

fn back_off<R>(net: &mut Net<R>, now: SystemTime, base: Duration, max: Duration) {
    net.failures = net.failures.saturating_add(1);
    let factor = 1u32 << net.failures.min(16);
    net.retry_at = Some(now + base.saturating_mul(factor).min(max));
}

/// Verifies a token for ourselves (`local`) and stores it in the data directory: what the driver
/// does with a [`JoinAction::Accept`] or a delivered token before [`JoinClient::adopt`]. A token
/// issued before `current` (the one we hold) is refused: we never roll back.
pub fn accept_token(
    verifier: &Verifier,
    data: &DataDir,
    local: &PeerId,
    network: &NetworkName,
    token: Vec<u8>,
    current: Option<&OwnToken>,
    now: SystemTime,
) -> Result<OwnToken, ReasonCode> {
    let verdict = verifier
        .verify_membership(&token, local, now)
        .map_err(|e| {
            tracing::warn!(network = %network, reason = %e, "refused a token issued to us");
            cordon_membership::session::reason_code(e.code())
        })?;
    if verdict.network != network.as_str() {
        return Err(ReasonCode::UnknownNetwork);
    }
    if let Some(current) = current
        && verdict.issued_at < current.issued_at
        && current.expires_at > now
    {
        tracing::warn!(network = %network, "refused a token issued before the one we hold");
        return Err(ReasonCode::Policy);
    }
    if let Err(e) = data.save_token(network, &token) {
        tracing::error!(network = %network, error = %e, "cannot store the membership token");
        return Err(ReasonCode::Internal);
    }
    Ok(OwnToken::new(token, verdict))
}

impl OwnToken {
    /// Our token `bytes`, as the verifier found it.
    pub fn new(bytes: Vec<u8>, verdict: cordon_membership::Verdict) -> Self {
        Self {
            bytes,
            issued_at: verdict.issued_at,
            expires_at: verdict.expires_at,
            roles: verdict.roles,
            issuer: verdict.issuer.peer_id(),
            anchor: verdict.anchor,
            delegation: verdict
                .revocation_ids
                .into_iter()
                .next()
                .unwrap_or(RevocationId(Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_membership::SecretKey;

    const SECOND: Duration = Duration::from_secs(1);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn mainnet() -> NetworkName {
        "mainnet".parse().unwrap()
    }

    fn seed() -> PeerId {
        SecretKey::from_seed([1; 32]).peer_id()
    }

    fn client(serving: bool) -> JoinClient<u32> {
        JoinClient::new(
            JoinConfig::default(),
            [JoinNetwork {
                name: mainnet(),
                renewal_margin: Duration::from_secs(600),
                serving,
            }],
            "lab".into(),
            BTreeMap::new(),
        )
    }

    fn sends(actions: &[JoinAction]) -> Vec<JoinMessage> {
        actions
            .iter()
            .filter_map(|a| match a {
                JoinAction::Send { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn own(expires_at: SystemTime) -> OwnToken {
        OwnToken {
            bytes: b"t".to_vec(),
            issued_at: expires_at - Duration::from_secs(7200),
            expires_at,
            roles: vec!["member".into()],
            issuer: seed(),
            delegation: RevocationId(vec![1; 16]),
            anchor: SecretKey::from_seed([9; 32]).public(),
        }
    }

    #[test]
    fn a_new_delegation_at_our_issuer_renews_there_at_once() {
        let mut c = client(false);
        let other = SecretKey::from_seed([2; 32]).peer_id();
        let expires = t0() + Duration::from_secs(3600);
        c.adopt(&mainnet(), own(expires));
        // Far outside the margin, and the same delegation or another seednode: nothing.
        assert!(!c.on_seednode(&mainnet(), seed(), &RevocationId(vec![1; 16])));
        assert!(!c.on_seednode(&mainnet(), other, &RevocationId(vec![2; 16])));
        assert!(sends(&c.poll(t0(), |_| vec![other, seed()])).is_empty());
        // Our issuer presents a new delegation: one request, to it, though another comes first.
        assert!(c.on_seednode(&mainnet(), seed(), &RevocationId(vec![2; 16])));
        let actions = c.poll(t0(), |_| vec![other, seed()]);
        assert!(
            matches!(&actions[..], [JoinAction::Send { peer, message: JoinMessage::Request(_), .. }] if *peer == seed()),
            "{actions:?}"
        );
        c.sent(&mainnet(), 1);
        c.handle_failure(1, false, t0());
        // A failure retries after the back-off, still at the issuer, not every poll.
        assert!(sends(&c.poll(t0() + SECOND, |_| vec![other, seed()])).is_empty());
        assert_eq!(
            sends(&c.poll(t0() + 61 * SECOND, |_| vec![other, seed()])).len(),
            1
        );
        c.sent(&mainnet(), 2);
        let mut renewed = own(expires + Duration::from_secs(60));
        renewed.delegation = RevocationId(vec![2; 16]);
        c.adopt(&mainnet(), renewed);
        assert!(sends(&c.poll(t0() + 200 * SECOND, |_| vec![seed()])).is_empty());
        assert!(!c.on_seednode(&mainnet(), seed(), &RevocationId(vec![2; 16])));
    }

    /// Issue 12, item 1: a network's invite goes with its first join request, not to another
    /// network's seednode and not with a renewal.
    #[test]
    fn an_invite_goes_to_its_network_with_the_first_join_only() {
        let testnet: NetworkName = "testnet".parse().unwrap();
        let invites = BTreeMap::from([(mainnet(), InviteCode::new("c0de", 64).unwrap())]);
        let mut c = JoinClient::new(
            JoinConfig::default(),
            [mainnet(), testnet.clone()].map(|name| JoinNetwork {
                name,
                renewal_margin: Duration::from_secs(600),
                serving: false,
            }),
            "lab".into(),
            invites,
        );
        let requests = |actions: Vec<JoinAction>| -> Vec<(NetworkName, Option<String>)> {
            actions
                .into_iter()
                .filter_map(|a| match a {
                    JoinAction::Send {
                        message: JoinMessage::Request(r),
                        ..
                    } => Some((r.network, r.invite)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            requests(c.poll(t0(), |_| vec![seed()])),
            vec![
                (mainnet(), Some("c0de".to_owned())),
                (testnet.clone(), None)
            ]
        );
        c.sent(&mainnet(), 1);
        c.sent(&testnet, 2);
        c.handle_reply(1, seed(), JoinReply::Ack, t0());
        // Member now; at renewal time the request carries no code.
        let expires = t0() + Duration::from_secs(3600);
        c.adopt(&mainnet(), own(expires));
        let renewal = requests(c.poll(expires - Duration::from_secs(60), |_| vec![seed()]));
        assert!(
            renewal.contains(&(mainnet(), None)),
            "no renewal request, or one with the code: {renewal:?}"
        );
    }

    #[test]
    fn deliveries_are_expected_only_while_joining_or_renewing() {
        let mut c = client(false);
        let other = SecretKey::from_seed([2; 32]).peer_id();
        // Joining: any seednode may deliver.
        assert!(c.expects_delivery(&mainnet(), &other, t0()));
        let expires = t0() + Duration::from_secs(3600);
        c.adopt(&mainnet(), own(expires));
        // A member outside its 10-minute margin expects nothing, from anyone.
        assert!(!c.expects_delivery(&mainnet(), &seed(), t0()));
        assert!(!c.expects_delivery(&mainnet(), &other, t0()));
        // Inside the margin it does.
        let inside = expires - Duration::from_secs(300);
        assert!(c.expects_delivery(&mainnet(), &seed(), inside));
        // So it does while renewing under its issuer's new delegation.
        c.on_seednode(&mainnet(), seed(), &RevocationId(vec![2; 16]));
        assert!(c.expects_delivery(&mainnet(), &seed(), t0()));
        // A network we serve never takes deliveries.
        let served = client(true);
        assert!(!served.expects_delivery(&mainnet(), &seed(), t0()));
    }

    #[test]
    fn accept_token_never_rolls_back_to_an_older_token() {
        use cordon_membership::{
            AccessList, DelegationRequest, Issuer, NetworkTrust, VerifierConfig, issue_delegation,
        };
        let dir = tempfile::tempdir().unwrap();
        let (data, identity) = DataDir::init(&dir.path().join("data")).unwrap();
        let local = identity.peer_id();
        let anchor = SecretKey::from_seed([3; 32]);
        let seednode = SecretKey::from_seed([4; 32]);
        let verifier = Verifier::new(
            VerifierConfig::default(),
            AccessList::new([NetworkTrust {
                name: "mainnet".into(),
                anchors: vec![anchor.public()],
                strict: false,
            }])
            .unwrap(),
        );
        let delegation = issue_delegation(
            &anchor,
            &DelegationRequest {
                network: "mainnet".into(),
                seednode: seednode.public(),
                expires_at: t0() + Duration::from_secs(365 * 86_400),
                allowed_roles: vec!["member".into()],
                allowed_rights: Vec::new(),
                max_lifetime: Duration::from_secs(30 * 86_400),
            },
            t0(),
        )
        .unwrap();
        let issuer = Issuer::new(&delegation, &verifier, seednode, t0()).unwrap();
        let day = Duration::from_secs(86_400);
        let roles = ["member".to_owned()];
        let older = issuer.issue(&local, &roles, day, t0()).unwrap().bytes;
        let newer = issuer
            .issue(&local, &roles, day, t0() + SECOND * 60)
            .unwrap()
            .bytes;
        let now = t0() + SECOND * 120;

        let held = accept_token(
            &verifier,
            &data,
            &local,
            &mainnet(),
            newer.clone(),
            None,
            now,
        )
        .unwrap();
        assert_eq!(
            accept_token(
                &verifier,
                &data,
                &local,
                &mainnet(),
                older,
                Some(&held),
                now
            ),
            Err(ReasonCode::Policy)
        );
        // The refused token was not stored: the newer one stays on disk.
        assert_eq!(data.tokens().unwrap(), vec![(mainnet(), newer)]);
    }

    #[test]
    fn a_dropped_token_is_asked_for_again() {
        let mut c = client(false);
        c.adopt(&mainnet(), own(t0() + Duration::from_secs(3600)));
        assert!(sends(&c.poll(t0(), |_| vec![seed()])).is_empty());
        assert!(c.drop_token(&mainnet()));
        assert_eq!(c.state(&mainnet(), t0()), Some(JoinState::Joining));
        assert!(matches!(
            &sends(&c.poll(t0(), |_| vec![seed()]))[..],
            [JoinMessage::Request(_)]
        ));
    }

    #[test]
    fn asks_a_proven_seednode_once_then_polls_the_same_seednode() {
        let mut c = client(false);
        assert!(
            sends(&c.poll(t0(), |_| Vec::new())).is_empty(),
            "no seednode yet"
        );
        let actions = c.poll(t0(), |_| vec![seed()]);
        assert!(matches!(sends(&actions)[..], [JoinMessage::Request(_)]));
        c.sent(&mainnet(), 7);
        assert!(
            sends(&c.poll(t0(), |_| vec![seed()])).is_empty(),
            "two in flight"
        );
        let actions = c.handle_reply(7, seed(), JoinReply::Pending { request_id: 42 }, t0());
        assert!(matches!(&actions[..], [JoinAction::SavePending(p)] if p[0].request_id == 42));
        assert_eq!(c.state(&mainnet(), t0()), Some(JoinState::Pending));
        // The issuer is polled while it is here, whichever seednode comes first.
        let other = SecretKey::from_seed([2; 32]).peer_id();
        let actions = c.poll(t0() + SECOND, |_| vec![other, seed()]);
        assert!(
            matches!(&actions[..], [JoinAction::Send { peer, message: JoinMessage::Status { request_id: 42 }, .. }] if *peer == seed()),
            "{actions:?}"
        );
    }

    /// Issue 14, item 3: a request filed through a seednode that is gone is polled at another
    /// seednode of the network. One sharing the store answers for it; one that does not know
    /// the id says so, and the node files a new request there.
    #[test]
    fn a_request_whose_seednode_is_gone_is_polled_at_another_and_filed_again_if_unknown() {
        let mut c = client(false);
        let other = SecretKey::from_seed([2; 32]).peer_id();
        c.poll(t0(), |_| vec![seed()]);
        c.sent(&mainnet(), 1);
        c.handle_reply(1, seed(), JoinReply::Pending { request_id: 42 }, t0());
        // Only the other seednode is here: it is asked for request 42.
        let actions = c.poll(t0() + SECOND, |_| vec![other]);
        assert!(
            matches!(&actions[..], [JoinAction::Send { peer, message: JoinMessage::Status { request_id: 42 }, .. }] if *peer == other),
            "{actions:?}"
        );
        c.sent(&mainnet(), 2);
        // It shares the store: its answer is the approval.
        let actions = c.handle_reply(
            2,
            other,
            JoinReply::Approved {
                request_id: 42,
                token: b"t".to_vec(),
            },
            t0() + SECOND,
        );
        assert!(
            matches!(&actions[..], [JoinAction::Accept { token, .. }] if token == b"t"),
            "{actions:?}"
        );

        // Another client, whose request the other seednode does not know.
        let mut c = client(false);
        c.poll(t0(), |_| vec![seed()]);
        c.sent(&mainnet(), 1);
        c.handle_reply(1, seed(), JoinReply::Pending { request_id: 42 }, t0());
        c.poll(t0() + SECOND, |_| vec![other]);
        c.sent(&mainnet(), 2);
        let actions = c.handle_reply(
            2,
            other,
            JoinReply::Denied {
                request_id: Some(42),
                reason: DenyReason::Malformed,
                message: Some("this peer has no join request with that id".into()),
            },
            t0() + SECOND,
        );
        assert!(
            matches!(&actions[..], [JoinAction::SavePending(p)] if p.is_empty()),
            "{actions:?}"
        );
        assert_eq!(c.state(&mainnet(), t0() + SECOND), Some(JoinState::Joining));
        // After the back-off, a new request to the seednode that is here.
        let mut now = t0() + SECOND;
        let actions = loop {
            now += SECOND;
            assert!(now < t0() + 120 * SECOND, "never asked again");
            let actions = c.poll(now, |_| vec![other]);
            if !actions.is_empty() {
                break actions;
            }
        };
        assert!(
            matches!(&actions[..], [JoinAction::Send { peer, message: JoinMessage::Request(_), .. }] if *peer == other),
            "{actions:?}"
        );
        c.sent(&mainnet(), 3);
        let actions = c.handle_reply(3, other, JoinReply::Pending { request_id: 7 }, now);
        assert!(
            matches!(&actions[..], [JoinAction::SavePending(p)] if p[0].request_id == 7 && p[0].seednode == other.to_string()),
            "{actions:?}"
        );
    }

    #[test]
    fn an_approved_token_is_accepted_then_renewed_inside_the_margin_at_most_once_a_minute() {
        let mut c = client(false);
        c.poll(t0(), |_| vec![seed()]);
        c.sent(&mainnet(), 1);
        let actions = c.handle_reply(
            1,
            seed(),
            JoinReply::Approved {
                request_id: 1,
                token: b"t".to_vec(),
            },
            t0(),
        );
        assert!(matches!(&actions[..], [JoinAction::Accept { .. }]));
        let expires = t0() + Duration::from_secs(3600);
        c.adopt(&mainnet(), own(expires));
        assert_eq!(c.state(&mainnet(), t0()), Some(JoinState::Member));
        // Outside the 10-minute margin: nothing.
        assert!(sends(&c.poll(t0() + Duration::from_secs(2000), |_| vec![seed()])).is_empty());
        // Inside: one renewal request, then quiet for a minute even if it fails.
        let inside = expires - Duration::from_secs(300);
        assert_eq!(sends(&c.poll(inside, |_| vec![seed()])).len(), 1);
        c.sent(&mainnet(), 2);
        c.handle_failure(2, false, inside);
        assert!(sends(&c.poll(inside + 30 * SECOND, |_| vec![seed()])).is_empty());
        assert_eq!(
            sends(&c.poll(inside + 61 * SECOND, |_| vec![seed()])).len(),
            1
        );
    }

    /// A member needs a seednode again once its renewal is due (it may be connected to none),
    /// and the renewal goes to whichever seednode of the network is here, not only its issuer.
    #[test]
    fn a_member_needs_a_seednode_when_renewal_is_due_and_renews_at_any() {
        let mut c = client(false);
        let expires = t0() + Duration::from_secs(3600);
        c.adopt(&mainnet(), own(expires));
        assert!(!c.needs_seednode(&mainnet(), t0()));
        let inside = expires - Duration::from_secs(300);
        assert!(c.needs_seednode(&mainnet(), inside));
        let other = SecretKey::from_seed([2; 32]).peer_id();
        let actions = c.poll(inside, |_| vec![other]);
        assert!(
            matches!(&actions[..], [JoinAction::Send { peer, message: JoinMessage::Request(_), .. }] if *peer == other),
            "{actions:?}"
        );
        c.adopt(&mainnet(), own(expires + Duration::from_secs(3600)));
        assert!(!c.needs_seednode(&mainnet(), inside));
        assert!(!client(true).needs_seednode(&mainnet(), t0()));
    }

    /// Polls `c` a second at a time from `now` until it asks; returns the seconds waited.
    fn seconds_until_asked(c: &mut JoinClient<u32>, now: &mut SystemTime) -> u64 {
        let mut waited = 0;
        while sends(&c.poll(*now, |_| vec![seed()])).is_empty() {
            *now += SECOND;
            waited += 1;
            assert!(waited < 1000, "never retried");
        }
        waited
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_maximum() {
        let mut c = client(false);
        let mut now = t0();
        let mut waits = Vec::new();
        for id in 0..8 {
            waits.push(seconds_until_asked(&mut c, &mut now));
            c.sent(&mainnet(), id);
            c.handle_failure(id, false, now);
        }
        assert_eq!(waits, vec![0, 6, 12, 24, 48, 60, 60, 60]);
    }

    #[test]
    fn a_request_lost_with_its_connection_is_asked_again_at_the_polling_pace() {
        let mut c = client(false);
        let mut now = t0();
        let mut waits = Vec::new();
        for id in 0..5 {
            waits.push(seconds_until_asked(&mut c, &mut now));
            c.sent(&mainnet(), id);
            // Two real failures, then lost connections: those neither wait longer nor add to
            // the back-off of the next real failure.
            c.handle_failure(id, id >= 2, now);
        }
        assert_eq!(waits, vec![0, 6, 12, 3, 3]);
        assert_eq!(seconds_until_asked(&mut c, &mut now), 3);
        c.sent(&mainnet(), 9);
        c.handle_failure(9, false, now);
        assert_eq!(
            seconds_until_asked(&mut c, &mut now),
            24,
            "the third real failure in a row"
        );
    }

    #[test]
    fn an_operator_denial_stops_the_asking() {
        let mut c = client(false);
        c.poll(t0(), |_| vec![seed()]);
        c.sent(&mainnet(), 1);
        c.handle_reply(
            1,
            seed(),
            JoinReply::Denied {
                request_id: Some(1),
                reason: DenyReason::DeniedByOperator,
                message: None,
            },
            t0(),
        );
        assert_eq!(c.state(&mainnet(), t0()), Some(JoinState::Denied));
        assert!(sends(&c.poll(t0() + Duration::from_secs(3600), |_| vec![seed()])).is_empty());
    }

    #[test]
    fn a_served_network_is_never_joined_and_expiry_asks_again() {
        let mut s = client(true);
        assert!(sends(&s.poll(t0(), |_| vec![seed()])).is_empty());
        assert_eq!(s.state(&mainnet(), t0()), Some(JoinState::Seednode));
        let mut c = client(false);
        c.load_token(&mainnet(), own(t0() + SECOND));
        assert_eq!(
            c.expire(t0() + SECOND),
            vec![JoinAction::Expired(mainnet())]
        );
        assert!(c.needs_seednode(&mainnet(), t0() + SECOND));
        assert!(matches!(
            sends(&c.poll(t0() + SECOND, |_| vec![seed()]))[..],
            [JoinMessage::Request(_)]
        ));
    }
}
