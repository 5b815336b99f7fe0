//! The membership session machine: which peer proved which network on which connection, with
//! which token, until when; what this process presents to whom; when a connection has had long
//! enough to prove itself.
//!
//! Sans-IO in the manner of quinn-proto: [`Sessions`] owns no socket, no task and no clock. The
//! driver hands it inputs (`handle_*`, [`Sessions::revoke`], [`Sessions::set_membership`]) with
//! the current time, takes the resulting [`Action`]s from [`Sessions::poll_action`], and calls
//! [`Sessions::handle_timeout`] once the instant named by [`Sessions::poll_timeout`] has passed.
//! Token verification itself is CPU work the driver runs elsewhere (a bounded worker pool): the
//! machine asks for it with [`Action::Verify`] and takes the verdicts back with
//! [`Sessions::handle_verdicts`]; [`verify_token`] is what a worker runs.
//!
//! # Invariants
//! - A network's gate on a connection is open exactly while that connection holds an unexpired,
//!   unrevoked proof of the network; the rpc gate is open exactly while it holds any proof.
//! - `strict` holds across everything a peer presented on a connection, not per message: once a
//!   peer has named two networks on a connection, every strict network it proved there is
//!   withdrawn and later presentations of one are refused with `strict_network`.
//! - A peer's routing entry in a network lives from its first proof until the latest expiry it
//!   proved, whether or not it stays connected, and ends early on revocation or a strict
//!   violation. Entries per network are capped ([`SessionConfig::max_routes_per_network`]).
//! - A connection without any proof is closed when its auth deadline passes; a connection whose
//!   last proof ends gets a fresh deadline to present a renewed token.
//! - This process presents a network's membership only to a peer it chose to reach in that
//!   network ([`Sessions::dial_intent`]: dialled for it, or asked for by the operator or the
//!   network's Kademlia) or that proved that network first on the connection, so memberships
//!   do not leak across networks. A seednode presents a network's delegation by the same rule,
//!   and also to a peer that asked for it (`want`: a joining node names the networks it is
//!   joining), so it never tells a stranger which networks it serves. A dialer that holds
//!   neither a membership nor a delegation of a network it dialed for asks for it (`want`).
//! - A verdict computed before a [`Sessions::revoke`] is checked against the revoked ids again
//!   when it arrives, so a verification in flight cannot admit a revoked token.
//!
//! # Design choices
//! - One clock, wall time (`SystemTime`): token expiries are wall-clock by nature, and one time
//!   base keeps tests deterministic. A backwards clock jump only lengthens an auth deadline;
//!   connection limits bound what that can cost.
//! - Deadlines live in one ordered timer set, so [`Sessions::poll_timeout`] and
//!   [`Sessions::handle_timeout`] cost O(log n) per timer, not a scan of every connection.
//! - Generic over the connection id so tests use plain integers; the node uses libp2p's
//!   `ConnectionId`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

use cordon_protocol::{
    MembershipRequest, MembershipResponse, NetworkName, NetworkResult, Outcome, PresentedToken,
    ReasonCode, TokenKind,
};
use libp2p_identity::PeerId;

use crate::keys::PublicKey;
use crate::revocation::RevocationId;
use crate::token::TokenId;
use crate::verify::{RefusalCode, Verifier};

/// Default for [`SessionConfig::auth_timeout`].
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`SessionConfig::max_routes_per_network`]: Kademlia's own table capacity
/// (256 buckets of 20).
pub const DEFAULT_MAX_ROUTES_PER_NETWORK: usize = 5120;
/// Default for [`SessionConfig::max_dial_intents`].
pub const DEFAULT_MAX_DIAL_INTENTS: usize = 4096;

/// Bounds and timeouts of the session machine.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long a connection may stay without any verified proof before it is closed, and how
    /// long a connection whose last proof ended has to present a new one. Default 10 s.
    pub auth_timeout: Duration,
    /// Most peers routed per network; a proven peer beyond it is served but not routed.
    /// Default 5,120.
    pub max_routes_per_network: usize,
    /// Most peers whose dial intent (the networks we dialed them for) is remembered. Intents of
    /// peers without a live connection are dropped first. Default 4,096.
    pub max_dial_intents: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_routes_per_network: DEFAULT_MAX_ROUTES_PER_NETWORK,
            max_dial_intents: DEFAULT_MAX_DIAL_INTENTS,
        }
    }
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// We dialed the peer.
    Dialer,
    /// The peer dialed us.
    Listener,
}

/// Names one inbound presentation while its tokens are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PresentationId(u64);

impl fmt::Display for PresentationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "presentation {}", self.0)
    }
}

/// What a verified token made of its presenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    /// A member of the network (membership token).
    Member,
    /// A seednode of the network (delegation from the network's anchor).
    Seednode,
}

/// A verified membership (or seednode delegation) of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The network proven.
    pub network: NetworkName,
    /// Member or seednode.
    pub kind: ProofKind,
    /// The seednode that issued a membership; `None` for a delegation (the anchor signed it).
    pub issuer: Option<PeerId>,
    /// Digest of the presented token.
    pub token: TokenId,
    /// The token's revocation ids (delegation first).
    pub revocation_ids: Vec<RevocationId>,
    /// Granted roles (empty for a seednode).
    pub roles: Vec<String>,
    /// Explicit rights on top of the roles.
    pub rights: Vec<String>,
    /// When the proof ends.
    pub expires_at: SystemTime,
    /// The issuer's revocation-head version when it issued the token (0 for a delegation or
    /// a legacy token): a head of that issuer older than this is a rollback.
    pub revocation_floor: u64,
    /// The trust anchor the token chains to.
    pub anchor: PublicKey,
}

impl Proof {
    fn revoked_by(&self, ids: &BTreeSet<RevocationId>) -> bool {
        self.revocation_ids.iter().any(|id| ids.contains(id))
    }
}

/// Why a token did not prove its network: the stable code for logs and the audit (the wire shows
/// [`Rejection::disclosed`]) and the local detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable reason code.
    pub reason: ReasonCode,
    /// Local detail; never sent.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its detail.
    pub fn new(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// The code the presenter is told (DESIGN.md section 4). A token that did not verify as a
    /// real token of the network (undecodable, a signature that fails, an unknown anchor or
    /// network) gets one code, [`ReasonCode::NotMember`], whatever this node's networks are:
    /// a stranger learns nothing about them from a refusal. So does a delegation presented by
    /// anyone but its seednode, because a seednode hands its delegation to whoever asks.
    /// Specific codes (`expired`, `revoked`, `wrong_subject`, `policy`, `strict_network`,
    /// `stale_revocations`) reach only a presenter whose token verified up to that check, who
    /// already holds a real token of the network; transient codes (`rate_limited`,
    /// `internal`) tell it to present again.
    pub fn disclosed(&self, kind: TokenKind) -> ReasonCode {
        match self.reason {
            ReasonCode::Malformed
            | ReasonCode::BadSignature
            | ReasonCode::UnknownNetwork
            | ReasonCode::NotMember => ReasonCode::NotMember,
            ReasonCode::WrongSubject if kind == TokenKind::Delegation => ReasonCode::NotMember,
            reason => reason,
        }
    }
}

/// A verifier refusal code as a wire reason code.
pub fn reason_code(code: RefusalCode) -> ReasonCode {
    match code {
        RefusalCode::Expired => ReasonCode::Expired,
        RefusalCode::Revoked => ReasonCode::Revoked,
        RefusalCode::WrongSubject => ReasonCode::WrongSubject,
        RefusalCode::UnknownNetwork => ReasonCode::UnknownNetwork,
        RefusalCode::BadSignature => ReasonCode::BadSignature,
        RefusalCode::Malformed => ReasonCode::Malformed,
        RefusalCode::Policy => ReasonCode::Policy,
    }
}

fn refused(e: crate::verify::Refusal) -> Rejection {
    Rejection::new(reason_code(e.code()), e.to_string())
}

fn mislabelled(presented: &PresentedToken, actual: &str) -> Rejection {
    Rejection::new(
        ReasonCode::UnknownNetwork,
        format!(
            "token of network {actual:?} presented as {}",
            presented.network
        ),
    )
}

/// The proof a verified membership gives, if it is of the network it was presented as.
fn member_proof(presented: &PresentedToken, v: crate::verify::Verdict) -> Result<Proof, Rejection> {
    if v.network != presented.network.as_str() {
        return Err(mislabelled(presented, &v.network));
    }
    Ok(Proof {
        network: presented.network.clone(),
        kind: ProofKind::Member,
        issuer: Some(v.issuer.peer_id()),
        token: v.token_id,
        revocation_ids: v.revocation_ids,
        roles: v.roles,
        rights: v.rights,
        expires_at: v.expires_at,
        revocation_floor: v.revocation_floor,
        anchor: v.anchor,
    })
}

/// Verifies one presented token for `presenter`, the Noise-authenticated peer: what a
/// verification worker runs for each token of an [`Action::Verify`]. A token that verifies for
/// another network than the one it is labelled with is refused as `unknown_network`.
pub fn verify_token(
    verifier: &Verifier,
    presenter: &PeerId,
    presented: &PresentedToken,
    now: SystemTime,
) -> Result<Proof, Rejection> {
    match presented.kind {
        TokenKind::Membership => {
            let v = verifier
                .verify_membership(&presented.token, presenter, now)
                .map_err(refused)?;
            member_proof(presented, v)
        }
        TokenKind::Delegation => {
            let v = verifier
                .verify_delegation(&presented.token, presenter, now)
                .map_err(refused)?;
            if v.facts.network != presented.network.as_str() {
                return Err(mislabelled(presented, &v.facts.network));
            }
            Ok(Proof {
                network: presented.network.clone(),
                kind: ProofKind::Seednode,
                issuer: None,
                token: v.token_id,
                revocation_ids: vec![v.revocation_id],
                roles: Vec::new(),
                rights: Vec::new(),
                expires_at: v.facts.expires_at,
                revocation_floor: 0,
                anchor: v.anchor,
            })
        }
    }
}

/// What [`verify_token`] would answer, decided without signature checks where that is
/// possible: from the verdict cache (a membership verified before, under the current
/// revocation set and access list), or by a refusal of [`Verifier::precheck`]. `None` when
/// only a full verification can tell; the driver then queues the token for the pool.
pub fn verify_token_cheaply(
    verifier: &Verifier,
    presenter: &PeerId,
    presented: &PresentedToken,
    now: SystemTime,
) -> Option<Result<Proof, Rejection>> {
    let membership = presented.kind == TokenKind::Membership;
    if membership
        && let Some(cached) = verifier.verify_membership_cached(&presented.token, presenter, now)
    {
        return Some(
            cached
                .map_err(refused)
                .and_then(|v| member_proof(presented, v)),
        );
    }
    verifier
        .precheck(&presented.token, membership, presented.network.as_str())
        .err()
        .map(|e| Err(refused(e)))
}

/// A gate the driver opens or closes on one connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gate {
    /// The network's Kademlia.
    Network(NetworkName),
    /// Remote commands: open while the connection proved any network.
    Rpc,
}

/// Why a proof ended before its connection did, or a routing entry left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The membership's validity ended.
    Expired,
    /// One of its revocation ids was revoked.
    Revoked,
    /// The peer presented another network on a connection where it proved a strict network.
    StrictNetwork,
    /// Its token chains to an anchor the network no longer trusts (the operator removed it).
    Untrusted,
}

impl EndReason {
    /// The stable reason string (logs, audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::StrictNetwork => "strict_network",
            Self::Untrusted => "anchor_removed",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the machine asks to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing verified before the auth deadline.
    AuthTimeout,
    /// The peer proved something with a token that is now revoked.
    Revoked,
    /// The peer proved something with a token whose anchor is no longer trusted.
    Untrusted,
}

impl CloseReason {
    /// The stable reason string (logs, audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthTimeout => "auth_timeout",
            Self::Revoked => "revoked",
            Self::Untrusted => "anchor_removed",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One network refused in a presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The network the token was labelled with; `None` when the presentation was undecodable.
    pub network: Option<NetworkName>,
    /// Why.
    pub rejection: Rejection,
}

/// What the driver must do, in order.
// Actions are short-lived queue entries; boxing the proof would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<C> {
    /// Send our tokens to the peer as a request on `/cordon/membership/2`.
    Present {
        /// The peer.
        peer: PeerId,
        /// The connection they are for.
        connection: C,
        /// The tokens.
        request: MembershipRequest,
    },
    /// Verify these tokens (in order) for `peer`, then call [`Sessions::handle_verdicts`].
    Verify {
        /// The presentation they came in.
        id: PresentationId,
        /// The presenter (Noise-authenticated).
        peer: PeerId,
        /// Its connection.
        connection: C,
        /// The tokens to verify.
        tokens: Vec<PresentedToken>,
    },
    /// Answer the presentation (the results, and our own tokens of the networks it proved or
    /// asked for).
    Respond {
        /// The presentation.
        id: PresentationId,
        /// Its connection.
        connection: C,
        /// The answer.
        response: MembershipResponse,
    },
    /// Open a gate on a connection.
    OpenGate {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// Which gate.
        gate: Gate,
    },
    /// Close a gate on a connection.
    CloseGate {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// Which gate.
        gate: Gate,
    },
    /// Put a proven peer into the network's routing table.
    AddRoute {
        /// The peer.
        peer: PeerId,
        /// The network.
        network: NetworkName,
    },
    /// Take a peer out of the network's routing table.
    RemoveRoute {
        /// The peer.
        peer: PeerId,
        /// The network.
        network: NetworkName,
        /// Why.
        reason: EndReason,
    },
    /// Close the connection.
    CloseConnection {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// Why.
        reason: CloseReason,
    },
    /// A network was proven on a connection (audit, metrics; a seednode proof lets a node ask
    /// to join).
    Verified {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// What it proved.
        proof: Proof,
    },
    /// A presentation refused one or more networks; one action per presentation, so a failed
    /// presentation counts once towards bans.
    Refused {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// The refused networks.
        refused: Vec<Refused>,
    },
    /// A proof ended on a live connection.
    Ended {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// The network.
        network: NetworkName,
        /// Why.
        reason: EndReason,
    },
}

/// The networks a peer named on one connection, as far as `strict` needs to know.
#[derive(Debug, Clone, Default)]
struct Named {
    first: Option<NetworkName>,
    several: bool,
}

impl Named {
    fn note(&mut self, network: &NetworkName) {
        match &self.first {
            None => self.first = Some(network.clone()),
            Some(first) if first != network => self.several = true,
            Some(_) => {}
        }
    }
}

#[derive(Debug)]
struct Connection {
    peer: PeerId,
    endpoint: Endpoint,
    /// Set while the connection holds no proof.
    auth_deadline: Option<SystemTime>,
    /// Asked to close; no further actions for it.
    closing: bool,
    named: Named,
    /// Networks whose token we presented here.
    presented: BTreeSet<NetworkName>,
    proofs: BTreeMap<NetworkName, Proof>,
}

#[derive(Debug)]
struct Route {
    expires_at: SystemTime,
    /// The ids of the proof that set `expires_at`.
    revocation_ids: Vec<RevocationId>,
    /// The anchor of that proof.
    anchor: PublicKey,
}

#[derive(Debug, Default)]
struct Local {
    strict: bool,
    /// Whether new member proofs are admitted (false while revocations are stale).
    stale: bool,
    membership: Option<Vec<u8>>,
    delegation: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Pending<C> {
    connection: C,
    peer: PeerId,
    /// Labels of every presented token, in order.
    networks: Vec<NetworkName>,
    /// What each presented token claims to be, in order.
    kinds: Vec<TokenKind>,
    /// Results so far; `None` while verifying.
    results: Vec<Option<Outcome>>,
    refused: Vec<Refused>,
    /// Index (into `networks`) of each token sent for verification.
    verifying: Vec<usize>,
    /// The revocation epoch when verification was asked for.
    epoch: u64,
    /// What the answer carries besides the results: `Some` for a presentation the peer sent as
    /// a request (answered with [`Action::Respond`], adding our delegations of these networks
    /// it asked for); `None` for tokens that came in an answer to ours (nothing goes back).
    answer: Option<BTreeSet<NetworkName>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer<C> {
    Auth(C),
    Proof(C, NetworkName),
    Route(NetworkName, PeerId),
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Networks proven.
    pub verified: u64,
    /// Networks refused.
    pub refused: u64,
    /// Connections closed for not proving anything in time.
    pub auth_timeouts: u64,
    /// Proven peers not routed because the network's table was full.
    pub routes_refused: u64,
}

/// The session machine for every connection of one process. See the [module docs](self).
#[derive(Debug)]
pub struct Sessions<C> {
    config: SessionConfig,
    local: BTreeMap<NetworkName, Local>,
    connections: HashMap<C, Connection>,
    routes: BTreeMap<NetworkName, HashMap<PeerId, Route>>,
    /// Networks we dialed each peer for.
    intents: HashMap<PeerId, BTreeSet<NetworkName>>,
    pending: HashMap<PresentationId, Pending<C>>,
    next_presentation: u64,
    /// Bumped by every [`Sessions::revoke`].
    epoch: u64,
    /// Ids revoked at each epoch, kept while a verification started before it is in flight.
    revoked_since: Vec<(u64, BTreeSet<RevocationId>)>,
    /// The anchors each network trusts, once [`Sessions::set_trusted_anchors`] narrowed them
    /// (`None`: whatever the verifier accepts). Checked again when a verification finishes, so
    /// one started under the previous list cannot admit a removed anchor.
    trusted: Option<BTreeMap<NetworkName, BTreeSet<PublicKey>>>,
    timers: BTreeSet<(SystemTime, Timer<C>)>,
    actions: VecDeque<Action<C>>,
    stats: SessionStats,
}

impl<C> Sessions<C>
where
    C: Copy + Eq + Hash + Ord + fmt::Debug,
{
    /// A machine for the given local networks (name, strict).
    pub fn new(
        config: SessionConfig,
        networks: impl IntoIterator<Item = (NetworkName, bool)>,
    ) -> Self {
        Self {
            config,
            local: networks
                .into_iter()
                .map(|(name, strict)| {
                    (
                        name,
                        Local {
                            strict,
                            ..Local::default()
                        },
                    )
                })
                .collect(),
            connections: HashMap::new(),
            routes: BTreeMap::new(),
            intents: HashMap::new(),
            pending: HashMap::new(),
            next_presentation: 0,
            epoch: 0,
            revoked_since: Vec::new(),
            trusted: None,
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// When [`Sessions::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.timers.first().map(|(at, _)| *at)
    }

    // ------------------------------------------------------------------------ local state

    /// Sets (or clears) our membership token of `network` and presents a new one where the
    /// network is shared: on connections we dialed for it and on connections where the peer
    /// proved it. Unknown networks are ignored.
    pub fn set_membership(&mut self, network: &NetworkName, token: Option<Vec<u8>>) {
        let Some(local) = self.local.get_mut(network) else {
            return;
        };
        let present = token.is_some();
        local.membership = token;
        if !present {
            return;
        }
        let targets: Vec<C> = self
            .connections
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter(|(_, c)| {
                c.proofs.contains_key(network)
                    || (c.endpoint == Endpoint::Dialer
                        && self
                            .intents
                            .get(&c.peer)
                            .is_some_and(|i| i.contains(network)))
            })
            .map(|(id, _)| *id)
            .collect();
        let wanted = BTreeSet::from([network.clone()]);
        for id in targets {
            if let Some(c) = self.connections.get_mut(&id) {
                c.presented.remove(network);
            }
            self.present(id, &wanted);
        }
    }

    /// Sets the delegation this process (a seednode) presents for `network`. Presented once on
    /// every connection established afterwards.
    pub fn set_delegation(&mut self, network: &NetworkName, token: Option<Vec<u8>>) {
        if let Some(local) = self.local.get_mut(network) {
            local.delegation = token;
        }
    }

    /// Marks `network`'s revocations stale (no new member is admitted; proofs already held
    /// stay) or fresh again.
    pub fn set_stale(&mut self, network: &NetworkName, stale: bool) {
        if let Some(local) = self.local.get_mut(network) {
            local.stale = stale;
        }
    }

    /// Our membership token of `network`, if we hold one.
    pub fn membership(&self, network: &NetworkName) -> Option<&[u8]> {
        self.local.get(network)?.membership.as_deref()
    }

    /// Whether we hold a membership token of `network`.
    pub fn has_membership(&self, network: &NetworkName) -> bool {
        self.local
            .get(network)
            .is_some_and(|l| l.membership.is_some())
    }

    /// Whether we present a delegation of `network` (this process is one of its seednodes).
    pub fn has_delegation(&self, network: &NetworkName) -> bool {
        self.local
            .get(network)
            .is_some_and(|l| l.delegation.is_some())
    }

    /// Records that we want `peer` for `network` (we are about to dial it, a lookup found it,
    /// or an operator calls it there) and presents the network's membership on live
    /// connections to it that lack it.
    /// Returns `false` when the intent table is full of live peers and nothing was recorded.
    pub fn dial_intent(&mut self, peer: PeerId, network: &NetworkName) -> bool {
        if !self.local.contains_key(network) {
            return false;
        }
        if !self.intents.contains_key(&peer) && self.intents.len() >= self.config.max_dial_intents {
            // Failed dials leave intents behind; keep only those of live connections.
            let live: BTreeSet<PeerId> = self.connections.values().map(|c| c.peer).collect();
            self.intents.retain(|p, _| live.contains(p));
            if self.intents.len() >= self.config.max_dial_intents {
                return false;
            }
        }
        self.intents
            .entry(peer)
            .or_default()
            .insert(network.clone());
        // On every live connection, including one the peer dialled (for another network):
        // reaching this peer in this network is our choice, as if we dialled it for it.
        let live: Vec<C> = self
            .connections
            .iter()
            .filter(|(_, c)| c.peer == peer && !c.closing)
            .map(|(id, _)| *id)
            .collect();
        let wanted = BTreeSet::from([network.clone()]);
        for id in live {
            self.present(id, &wanted);
        }
        true
    }

    // ------------------------------------------------------------------------ connections

    /// A connection was established. `dialed_for` names networks the connection was dialed for
    /// besides the recorded intents (e.g. a network's Kademlia dialed it during a query).
    pub fn handle_established(
        &mut self,
        connection: C,
        peer: PeerId,
        endpoint: Endpoint,
        dialed_for: impl IntoIterator<Item = NetworkName>,
        now: SystemTime,
    ) {
        let deadline = now + self.config.auth_timeout;
        if let Some(old) = self.connections.insert(
            connection,
            Connection {
                peer,
                endpoint,
                auth_deadline: Some(deadline),
                closing: false,
                named: Named::default(),
                presented: BTreeSet::new(),
                proofs: BTreeMap::new(),
            },
        ) {
            // A reused id: forget the old connection's timers.
            self.forget_timers(connection, &old);
        }
        self.timers.insert((deadline, Timer::Auth(connection)));
        let wanted = match endpoint {
            // The dialer presents first, only the networks it dialed this peer for.
            Endpoint::Dialer => {
                let extra: Vec<NetworkName> = dialed_for
                    .into_iter()
                    .filter(|n| self.local.contains_key(n))
                    .collect();
                for network in &extra {
                    self.dial_intent(peer, network);
                }
                self.intents.get(&peer).cloned().unwrap_or_default()
            }
            // A listener presents memberships only once the dialer proved the same network.
            Endpoint::Listener => BTreeSet::new(),
        };
        self.present(connection, &wanted);
    }

    /// A connection closed. Its routing entries stay until they expire.
    pub fn handle_closed(&mut self, connection: C) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        self.forget_timers(connection, &conn);
        self.pending.retain(|_, p| p.connection != connection);
        self.prune_revoked_since();
        if !self.connections.values().any(|c| c.peer == conn.peer) {
            // Bounded by live connections: the next dial records its intent again.
            self.intents.remove(&conn.peer);
        }
    }

    fn forget_timers(&mut self, connection: C, conn: &Connection) {
        if let Some(at) = conn.auth_deadline {
            self.timers.remove(&(at, Timer::Auth(connection)));
        }
        for (network, proof) in &conn.proofs {
            self.timers
                .remove(&(proof.expires_at, Timer::Proof(connection, network.clone())));
        }
    }

    // ------------------------------------------------------------------------ presentations

    /// The peer presented tokens on `connection`. Returns the presentation's id, under which the
    /// answer comes as [`Action::Respond`]; `None` for an unknown or closing connection (drop
    /// the request unanswered).
    pub fn handle_presentation(
        &mut self,
        connection: C,
        request: MembershipRequest,
        now: SystemTime,
    ) -> Option<PresentationId> {
        let conn = self.connections.get_mut(&connection)?;
        if conn.closing {
            return None;
        }
        let peer = conn.peer;
        // A joining peer asks for our delegations of the networks it names; only those.
        let wanted: BTreeSet<NetworkName> = request
            .want
            .iter()
            .filter(|n| self.local.get(*n).is_some_and(|l| l.delegation.is_some()))
            .cloned()
            .collect();
        self.note_named(connection, &request.tokens, now);
        let id = PresentationId(self.next_presentation);
        self.next_presentation += 1;
        let mut pending = Pending::new(connection, peer, &request.tokens, self.epoch);
        pending.answer = Some(wanted);
        let mut tokens = Vec::new();
        for (i, t) in request.tokens.into_iter().enumerate() {
            // A strict network's refusal waits for verification ([`Sessions::admit`]): its
            // code would tell an unverified presenter that this node is in that network.
            if self.local.contains_key(&t.network) {
                pending.verifying.push(i);
                tokens.push(t);
            } else {
                pending.reject(
                    i,
                    Rejection::new(ReasonCode::UnknownNetwork, "network not joined here"),
                );
            }
        }
        self.verify(id, pending, tokens);
        Some(id)
    }

    /// Asks for `tokens` to be verified for `pending` (finishing it at once if none is left).
    fn verify(&mut self, id: PresentationId, pending: Pending<C>, tokens: Vec<PresentedToken>) {
        if tokens.is_empty() {
            self.finish(id, pending);
            return;
        }
        self.actions.push_back(Action::Verify {
            id,
            peer: pending.peer,
            connection: pending.connection,
            tokens,
        });
        self.pending.insert(id, pending);
    }

    /// Notes the networks the peer named on `connection`; once it named two, every strict
    /// network it proved there is withdrawn.
    fn note_named(&mut self, connection: C, tokens: &[PresentedToken], now: SystemTime) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        for t in tokens {
            conn.named.note(&t.network);
        }
        if !conn.named.several {
            return;
        }
        let strict: Vec<NetworkName> = conn
            .proofs
            .keys()
            .filter(|n| self.local.get(*n).is_some_and(|l| l.strict))
            .cloned()
            .collect();
        for network in strict {
            self.withdraw(connection, &network, EndReason::StrictNetwork, now);
        }
    }

    /// The peer answered one of our presentations on `connection`. A network refused for a
    /// transient reason (the peer's verification was saturated, or it failed internally) is
    /// presented again at the next occasion ([`Sessions::dial_intent`], a new token); other
    /// refusals stand.
    ///
    /// The tokens the peer sent with its answer (its own, for networks it accepted from us or
    /// delegations we asked for) are verified like a presentation, except that nothing is
    /// answered: [`Action::Verify`], then the proofs or refusals. A token of a network we did
    /// not present or ask for on this connection is refused unverified (`malformed`): the peer
    /// has no reason to send it. Returns the id the verdicts go under, if anything is verified.
    pub fn handle_answer(
        &mut self,
        connection: C,
        response: MembershipResponse,
        now: SystemTime,
    ) -> Option<PresentationId> {
        let conn = self.connections.get_mut(&connection)?;
        for result in &response.results {
            if matches!(
                result.outcome,
                Outcome::Rejected {
                    reason: ReasonCode::RateLimited | ReasonCode::Internal
                }
            ) {
                conn.presented.remove(&result.network);
            }
        }
        if conn.closing || response.tokens.is_empty() {
            return None;
        }
        let peer = conn.peer;
        self.note_named(connection, &response.tokens, now);
        let id = PresentationId(self.next_presentation);
        self.next_presentation += 1;
        let mut pending = Pending::new(connection, peer, &response.tokens, self.epoch);
        let mut tokens = Vec::new();
        for (i, t) in response.tokens.into_iter().enumerate() {
            let asked = self
                .connections
                .get(&connection)
                .is_some_and(|c| c.presented.contains(&t.network));
            if asked && self.local.contains_key(&t.network) {
                pending.verifying.push(i);
                tokens.push(t);
            } else {
                pending.reject(
                    i,
                    Rejection::new(
                        ReasonCode::Malformed,
                        "an answer carried a token of a network not presented or asked for on \
                         this connection",
                    ),
                );
            }
        }
        let any = !tokens.is_empty();
        self.verify(id, pending, tokens);
        any.then_some(id)
    }

    /// A presentation could not even be decoded (oversized, garbage): a failed presentation.
    pub fn handle_undecodable(&mut self, connection: C, detail: impl Into<String>) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        self.stats.refused += 1;
        self.actions.push_back(Action::Refused {
            peer: conn.peer,
            connection,
            refused: vec![Refused {
                network: None,
                rejection: Rejection::new(ReasonCode::Malformed, detail),
            }],
        });
    }

    /// The verdicts of an [`Action::Verify`], one per token in order. Verdicts of an unknown
    /// presentation are ignored.
    pub fn handle_verdicts(
        &mut self,
        id: PresentationId,
        verdicts: Vec<Result<Proof, Rejection>>,
        now: SystemTime,
    ) {
        let Some(mut pending) = self.pending.remove(&id) else {
            return;
        };
        if self
            .connections
            .get(&pending.connection)
            .is_none_or(|c| c.closing)
        {
            // Nobody to answer, and not the peer's failure.
            self.prune_revoked_since();
            return;
        }
        let verifying = std::mem::take(&mut pending.verifying);
        let mut verdicts = verdicts.into_iter();
        for i in verifying {
            let verdict = verdicts.next().unwrap_or_else(|| {
                Err(Rejection::new(ReasonCode::Internal, "no verdict for token"))
            });
            match self.admit(&pending, i, verdict, now) {
                Ok(()) => pending.results[i] = Some(Outcome::Accepted),
                Err(r) => pending.reject(i, r),
            }
        }
        self.prune_revoked_since();
        self.finish(id, pending);
    }

    /// Decides one verified token; on success the proof is in place.
    fn admit(
        &mut self,
        pending: &Pending<C>,
        index: usize,
        verdict: Result<Proof, Rejection>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        let proof = verdict?;
        let network = &pending.networks[index];
        if &proof.network != network {
            return Err(Rejection::new(
                ReasonCode::Internal,
                "verdict for another network than presented",
            ));
        }
        if self
            .revoked_since
            .iter()
            .filter(|(epoch, _)| *epoch > pending.epoch)
            .any(|(_, ids)| proof.revoked_by(ids))
        {
            return Err(Rejection::new(
                ReasonCode::Revoked,
                "revoked while its verification was in flight",
            ));
        }
        if !self.trusts(&proof.network, &proof.anchor) {
            return Err(Rejection::new(
                ReasonCode::BadSignature,
                "its anchor was removed from the descriptor while it was verified",
            ));
        }
        if proof.expires_at <= now {
            return Err(Rejection::new(ReasonCode::Expired, "expired on arrival"));
        }
        let Some(conn) = self.connections.get(&pending.connection) else {
            return Err(Rejection::new(ReasonCode::Internal, "connection closed"));
        };
        // A node whose revocations are stale admits no new members (seednodes still: syncing
        // with them is how it catches up).
        let already = conn.proofs.contains_key(network);
        if proof.kind == ProofKind::Member
            && !already
            && self.local.get(network).is_some_and(|l| l.stale)
        {
            return Err(Rejection::new(
                ReasonCode::StaleRevocations,
                "this node's revocation heads for the network are stale; it admits no new \
                 members until it syncs",
            ));
        }
        // Re-checked: the peer may have named another network since it presented this one.
        if conn.named.several && self.local.get(network).is_some_and(|l| l.strict) {
            return Err(Rejection::new(
                ReasonCode::StrictNetwork,
                "strict network: the peer presented other networks on this connection",
            ));
        }
        self.accept(pending.connection, proof);
        Ok(())
    }

    fn finish(&mut self, id: PresentationId, pending: Pending<C>) {
        if !pending.refused.is_empty() {
            self.stats.refused += pending.refused.len() as u64;
            self.actions.push_back(Action::Refused {
                peer: pending.peer,
                connection: pending.connection,
                refused: pending.refused,
            });
        }
        let Some(mut wanted) = pending.answer else {
            return;
        };
        let results: Vec<NetworkResult> = pending
            .networks
            .into_iter()
            .zip(pending.results)
            .map(|(network, outcome)| NetworkResult {
                network,
                outcome: outcome.unwrap_or(Outcome::Rejected {
                    reason: ReasonCode::Internal,
                }),
            })
            .collect();
        // Our own token of each network the peer just proved, so it proves us in the same
        // round trip; never one it did not prove (memberships do not leak across networks).
        wanted.extend(
            results
                .iter()
                .filter(|r| r.outcome == Outcome::Accepted)
                .map(|r| r.network.clone()),
        );
        let tokens = self.own_tokens(pending.connection, &wanted);
        self.actions.push_back(Action::Respond {
            id,
            connection: pending.connection,
            response: MembershipResponse { results, tokens },
        });
    }

    /// Our token (membership, else delegation) of each network of `wanted` that we hold one of,
    /// noted as presented on `connection`.
    fn own_tokens(&mut self, connection: C, wanted: &BTreeSet<NetworkName>) -> Vec<PresentedToken> {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return Vec::new();
        };
        let mut tokens = Vec::new();
        for network in wanted {
            let Some(local) = self.local.get(network) else {
                continue;
            };
            let (kind, token) = match (&local.membership, &local.delegation) {
                (Some(token), _) => (TokenKind::Membership, token),
                (None, Some(token)) => (TokenKind::Delegation, token),
                (None, None) => continue,
            };
            tokens.push(PresentedToken {
                network: network.clone(),
                kind,
                token: token.clone(),
            });
            conn.presented.insert(network.clone());
        }
        tokens
    }

    fn accept(&mut self, connection: C, proof: Proof) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let peer = conn.peer;
        let network = proof.network.clone();
        let first = conn.proofs.is_empty();
        let expires_at = proof.expires_at;
        let ids = proof.revocation_ids.clone();
        let anchor = proof.anchor;
        let previous = conn.proofs.insert(network.clone(), proof.clone());
        if first && let Some(at) = conn.auth_deadline.take() {
            self.timers.remove(&(at, Timer::Auth(connection)));
        }
        match &previous {
            Some(old) => {
                self.timers
                    .remove(&(old.expires_at, Timer::Proof(connection, network.clone())));
            }
            None => self.actions.push_back(Action::OpenGate {
                peer,
                connection,
                gate: Gate::Network(network.clone()),
            }),
        }
        if first {
            self.actions.push_back(Action::OpenGate {
                peer,
                connection,
                gate: Gate::Rpc,
            });
        }
        self.timers
            .insert((expires_at, Timer::Proof(connection, network.clone())));
        self.stats.verified += 1;
        self.actions.push_back(Action::Verified {
            peer,
            connection,
            proof,
        });
        self.route(peer, &network, expires_at, ids, anchor);
        // A peer that proved a network is one we share it with: a renewed token of ours goes
        // to it too. Our current token goes back in the answer ([`Sessions::finish`]).
        if self.intents.contains_key(&peer) || self.intents.len() < self.config.max_dial_intents {
            self.intents.entry(peer).or_default().insert(network);
        }
    }

    fn route(
        &mut self,
        peer: PeerId,
        network: &NetworkName,
        expires_at: SystemTime,
        revocation_ids: Vec<RevocationId>,
        anchor: PublicKey,
    ) {
        let table = self.routes.entry(network.clone()).or_default();
        let full = table.len() >= self.config.max_routes_per_network;
        match table.get_mut(&peer) {
            Some(route) => {
                // A token under a new anchor replaces the entry even if it ends sooner: the
                // old anchor is about to be removed.
                if expires_at > route.expires_at || anchor != route.anchor {
                    self.timers
                        .remove(&(route.expires_at, Timer::Route(network.clone(), peer)));
                    route.expires_at = expires_at;
                    route.revocation_ids = revocation_ids;
                    route.anchor = anchor;
                    self.timers
                        .insert((expires_at, Timer::Route(network.clone(), peer)));
                }
            }
            None if full => {
                self.stats.routes_refused += 1;
            }
            None => {
                table.insert(
                    peer,
                    Route {
                        expires_at,
                        revocation_ids,
                        anchor,
                    },
                );
                self.timers
                    .insert((expires_at, Timer::Route(network.clone(), peer)));
                self.actions.push_back(Action::AddRoute {
                    peer,
                    network: network.clone(),
                });
            }
        }
    }

    fn unroute(&mut self, peer: PeerId, network: &NetworkName, reason: EndReason) {
        let Some(table) = self.routes.get_mut(network) else {
            return;
        };
        if let Some(route) = table.remove(&peer) {
            self.timers
                .remove(&(route.expires_at, Timer::Route(network.clone(), peer)));
            self.actions.push_back(Action::RemoveRoute {
                peer,
                network: network.clone(),
                reason,
            });
        }
    }

    /// Ends a proof on a live connection: its gate closes, and for anything but expiry the
    /// peer leaves the network's routing table.
    fn withdraw(
        &mut self,
        connection: C,
        network: &NetworkName,
        reason: EndReason,
        now: SystemTime,
    ) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let Some(proof) = conn.proofs.remove(network) else {
            return;
        };
        let peer = conn.peer;
        let emptied = conn.proofs.is_empty();
        self.timers
            .remove(&(proof.expires_at, Timer::Proof(connection, network.clone())));
        self.actions.push_back(Action::CloseGate {
            peer,
            connection,
            gate: Gate::Network(network.clone()),
        });
        if emptied {
            self.actions.push_back(Action::CloseGate {
                peer,
                connection,
                gate: Gate::Rpc,
            });
            if !conn.closing {
                // Time to present a renewed token, then the connection goes.
                let deadline = now + self.config.auth_timeout;
                conn.auth_deadline = Some(deadline);
                self.timers.insert((deadline, Timer::Auth(connection)));
            }
        }
        self.actions.push_back(Action::Ended {
            peer,
            connection,
            network: network.clone(),
            reason,
        });
        if reason != EndReason::Expired {
            self.unroute(peer, network, reason);
        }
    }

    /// Sends our token for each network of `wanted` not yet presented here: our membership,
    /// else (on a seednode) our delegation; a dialer holding neither asks for the peer's
    /// delegation of that network instead.
    fn present(&mut self, connection: C, wanted: &BTreeSet<NetworkName>) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        if conn.closing {
            return;
        }
        let peer = conn.peer;
        let mut held = BTreeSet::new();
        let mut want = Vec::new();
        for network in wanted {
            if conn.presented.contains(network) {
                continue;
            }
            let Some(local) = self.local.get(network) else {
                continue;
            };
            if local.membership.is_some() || local.delegation.is_some() {
                held.insert(network.clone());
            } else if conn.endpoint == Endpoint::Dialer {
                want.push(network.clone());
                conn.presented.insert(network.clone());
            }
        }
        let tokens = self.own_tokens(connection, &held);
        if !tokens.is_empty() || !want.is_empty() {
            self.actions.push_back(Action::Present {
                peer,
                connection,
                request: MembershipRequest { want, tokens },
            });
        }
    }

    /// The peer of `connection`, which has proven nothing on it, is waiting there for an
    /// operator's decision on its join request (a seednode's join service just answered it
    /// `pending`): its authentication deadline starts again from `now`. A pending node that
    /// keeps polling thus keeps its connection, and a token approved meanwhile goes out on it
    /// at once; one that stops polling is closed `auth_timeout` after its last answer. Does
    /// nothing on a connection where the peer proved something or that is closing.
    pub fn defer_auth(&mut self, connection: C, now: SystemTime) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        if conn.closing || !conn.proofs.is_empty() {
            return;
        }
        if let Some(at) = conn.auth_deadline {
            self.timers.remove(&(at, Timer::Auth(connection)));
        }
        let deadline = now + self.config.auth_timeout;
        conn.auth_deadline = Some(deadline);
        self.timers.insert((deadline, Timer::Auth(connection)));
    }

    // ------------------------------------------------------------------------ time

    /// Handles every deadline at or before `now`: auth timeouts close connections, expired
    /// proofs close their gates, expired routing entries leave the table.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Auth(connection) => {
                    let Some(conn) = self.connections.get_mut(&connection) else {
                        continue;
                    };
                    conn.auth_deadline = None;
                    if conn.proofs.is_empty() && !conn.closing {
                        conn.closing = true;
                        self.stats.auth_timeouts += 1;
                        self.actions.push_back(Action::CloseConnection {
                            peer: conn.peer,
                            connection,
                            reason: CloseReason::AuthTimeout,
                        });
                    }
                }
                Timer::Proof(connection, network) => {
                    self.withdraw(connection, &network, EndReason::Expired, now);
                }
                Timer::Route(network, peer) => {
                    if let Some(table) = self.routes.get_mut(&network)
                        && table.remove(&peer).is_some()
                    {
                        self.actions.push_back(Action::RemoveRoute {
                            peer,
                            network,
                            reason: EndReason::Expired,
                        });
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------ revocation

    /// Revokes every proof and routing entry carrying one of `ids`: their gates close, they
    /// leave the routing tables, and each connection that proved anything with a revoked token
    /// is closed. Verifications in flight are checked against `ids` when they finish. Returns
    /// the number of connections asked to close.
    pub fn revoke(&mut self, ids: &BTreeSet<RevocationId>, now: SystemTime) -> usize {
        if ids.is_empty() {
            return 0;
        }
        self.epoch += 1;
        if !self.pending.is_empty() {
            self.revoked_since.push((self.epoch, ids.clone()));
        }
        self.end_where(
            |_, ids_of, _| ids_of.iter().any(|id| ids.contains(id)),
            EndReason::Revoked,
            CloseReason::Revoked,
            now,
        )
    }

    /// Narrows the anchors each network trusts to `anchors` (the operator reloaded the
    /// descriptor): every proof and routing entry whose token chains to an anchor no longer
    /// listed for its network ends as [`EndReason::Untrusted`], each connection that proved
    /// anything with one is closed, and verifications in flight are checked against the new
    /// list when they finish. Returns the number of connections asked to close.
    pub fn set_trusted_anchors(
        &mut self,
        anchors: BTreeMap<NetworkName, BTreeSet<PublicKey>>,
        now: SystemTime,
    ) -> usize {
        self.trusted = Some(anchors);
        let trusted = self.trusted.clone().unwrap_or_default();
        self.end_where(
            |network, _, anchor| !trusted.get(network).is_some_and(|a| a.contains(anchor)),
            EndReason::Untrusted,
            CloseReason::Untrusted,
            now,
        )
    }

    fn trusts(&self, network: &NetworkName, anchor: &PublicKey) -> bool {
        self.trusted
            .as_ref()
            .is_none_or(|t| t.get(network).is_some_and(|a| a.contains(anchor)))
    }

    /// Ends every proof and routing entry `hit` selects (by network, revocation ids and
    /// anchor): their gates close, they leave the routing tables, and each connection that
    /// proved anything with one is closed.
    fn end_where(
        &mut self,
        hit: impl Fn(&NetworkName, &[RevocationId], &PublicKey) -> bool,
        reason: EndReason,
        close: CloseReason,
        now: SystemTime,
    ) -> usize {
        let mut closing: Vec<(C, Vec<NetworkName>)> = self
            .connections
            .iter()
            .filter(|(_, c)| !c.closing)
            .map(|(id, c)| {
                let networks = c
                    .proofs
                    .iter()
                    .filter(|(n, p)| hit(n, &p.revocation_ids, &p.anchor))
                    .map(|(n, _)| n.clone())
                    .collect::<Vec<_>>();
                (*id, networks)
            })
            .filter(|(_, networks)| !networks.is_empty())
            .collect();
        closing.sort_by_key(|(id, _)| *id);
        for (connection, networks) in &closing {
            for network in networks {
                self.withdraw(*connection, network, reason, now);
            }
            if let Some(conn) = self.connections.get_mut(connection) {
                conn.closing = true;
                if let Some(at) = conn.auth_deadline.take() {
                    self.timers.remove(&(at, Timer::Auth(*connection)));
                }
                self.actions.push_back(Action::CloseConnection {
                    peer: conn.peer,
                    connection: *connection,
                    reason: close,
                });
            }
        }
        // Routing entries of peers proven earlier, connected or not.
        let stale: Vec<(NetworkName, PeerId)> = self
            .routes
            .iter()
            .flat_map(|(network, table)| {
                table
                    .iter()
                    .filter(|(_, r)| hit(network, &r.revocation_ids, &r.anchor))
                    .map(|(peer, _)| (network.clone(), *peer))
            })
            .collect();
        for (network, peer) in stale {
            self.unroute(peer, &network, reason);
        }
        closing.len()
    }

    fn prune_revoked_since(&mut self) {
        match self.pending.values().map(|p| p.epoch).min() {
            None => self.revoked_since.clear(),
            Some(oldest) => self.revoked_since.retain(|(epoch, _)| *epoch > oldest),
        }
    }

    // ------------------------------------------------------------------------ queries

    /// The peer of a live connection.
    pub fn peer_of(&self, connection: C) -> Option<PeerId> {
        self.connections.get(&connection).map(|c| c.peer)
    }

    /// The proof of `network` on `connection`, if it holds one.
    pub fn proof(&self, connection: C, network: &NetworkName) -> Option<&Proof> {
        self.connections.get(&connection)?.proofs.get(network)
    }

    /// Every proof held on `connection`.
    pub fn proofs(&self, connection: C) -> impl Iterator<Item = &Proof> {
        self.connections
            .get(&connection)
            .into_iter()
            .flat_map(|c| c.proofs.values())
    }

    /// Networks `peer` proved on any live connection, with the proof kind (a member proof wins
    /// over a seednode proof).
    pub fn peer_networks(&self, peer: &PeerId) -> BTreeMap<NetworkName, &Proof> {
        let mut out: BTreeMap<NetworkName, &Proof> = BTreeMap::new();
        for c in self.connections.values().filter(|c| &c.peer == peer) {
            for (network, proof) in &c.proofs {
                let entry = out.entry(network.clone()).or_insert(proof);
                if proof.kind == ProofKind::Member {
                    *entry = proof;
                }
            }
        }
        out
    }

    /// Connections to `peer` on which it proved `network`.
    pub fn connections_proving(&self, peer: &PeerId, network: &NetworkName) -> Vec<C> {
        let mut out: Vec<C> = self
            .connections
            .iter()
            .filter(|(_, c)| &c.peer == peer && c.proofs.contains_key(network))
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        out
    }

    /// Peers proven as `kind` of `network` on a live connection.
    pub fn proven_peers(&self, network: &NetworkName, kind: ProofKind) -> BTreeSet<PeerId> {
        self.connections
            .values()
            .filter(|c| c.proofs.get(network).is_some_and(|p| p.kind == kind))
            .map(|c| c.peer)
            .collect()
    }

    /// Peers proven (either kind) of `network` on a live connection.
    pub fn verified_peers(&self, network: &NetworkName) -> BTreeSet<PeerId> {
        self.connections
            .values()
            .filter(|c| c.proofs.contains_key(network))
            .map(|c| c.peer)
            .collect()
    }

    /// Whether `peer` holds a routing entry in `network`.
    pub fn is_routed(&self, network: &NetworkName, peer: &PeerId) -> bool {
        self.routes
            .get(network)
            .is_some_and(|t| t.contains_key(peer))
    }

    /// Networks where `peer` holds a routing entry.
    pub fn routed_networks(&self, peer: &PeerId) -> Vec<NetworkName> {
        self.routes
            .iter()
            .filter(|(_, t)| t.contains_key(peer))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Number of routing entries in `network`.
    pub fn routes(&self, network: &NetworkName) -> usize {
        self.routes.get(network).map_or(0, HashMap::len)
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Presentations whose verification is in flight.
    pub fn verifying(&self) -> usize {
        self.pending.len()
    }

    /// Whether we recorded an intent to reach `peer` for `network`.
    pub fn has_intent(&self, peer: &PeerId, network: &NetworkName) -> bool {
        self.intents.get(peer).is_some_and(|i| i.contains(network))
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }
}

impl<C> Pending<C> {
    fn new(connection: C, peer: PeerId, tokens: &[PresentedToken], epoch: u64) -> Self {
        Self {
            connection,
            peer,
            networks: tokens.iter().map(|t| t.network.clone()).collect(),
            kinds: tokens.iter().map(|t| t.kind).collect(),
            results: vec![None; tokens.len()],
            refused: Vec::new(),
            verifying: Vec::new(),
            epoch,
            answer: None,
        }
    }

    fn reject(&mut self, index: usize, rejection: Rejection) {
        self.results[index] = Some(Outcome::Rejected {
            reason: rejection.disclosed(self.kinds[index]),
        });
        self.refused.push(Refused {
            network: Some(self.networks[index].clone()),
            rejection,
        });
    }
}

#[cfg(test)]
mod tests;
