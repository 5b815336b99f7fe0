//! The control plane, typed: every request an operator's command-line tool (or a test) can send
//! to a running `node` or `seednode`, and every answer.
//!
//! Command names are spelled once, here, as the serde tag of [`Request`]; the control socket
//! (`cordon_host::control`) carries these types as JSON lines and nothing else crosses it. A
//! plain node answers the node requests and refuses the operator requests; a seednode's join
//! service answers those ([`crate::service`]).
//!
//! Answers keep the field names the `--json` output has always had, so scripts keep working.

use std::path::PathBuf;

use cordon_protocol::{NetworkName, RpcResult};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::filter::FilterStatus;
use crate::ratelimit::LimitsConfig;

/// A request to a running daemon. The serde tag `cmd` is the command's one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's status ([`Status`]).
    Status {},
    /// The routing tables ([`PeerEntry`] list), of one network or all.
    Peers {
        /// Only this network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
    },
    /// A remote command to a member ([`RpcResult`]).
    Call {
        /// The member.
        #[serde(with = "peer_text")]
        peer: PeerId,
        /// The network to call in; needed when the peer shares several with us.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
        /// What to call.
        command: CallCommand,
    },
    /// A Kademlia lookup of `peer` through `network`'s members ([`FindResult`]).
    Find {
        /// The network; needed only when this node is in several.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
        /// The key looked up.
        #[serde(with = "peer_text")]
        peer: PeerId,
    },
    /// Re-read the descriptor and the connection-filter file ([`Reloaded`]).
    Reload {},
    /// Apply a signed revocation update (an anchor's, from `seednode anchor
    /// revoke-delegation`) and push it to the network's members ([`Published`]).
    PublishRevocation {
        /// The update's bytes, hex.
        update: String,
    },
    /// Seednode: pending join requests ([`JoinRequestView`] list).
    Pending {
        /// Only this network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
    },
    /// Seednode: approve a pending request and issue its token ([`IssuedTokenView`]).
    Approve {
        /// The request.
        id: u64,
        /// Roles to grant; empty: the service's default roles.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<String>,
        /// Explicit rights on top of the roles.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rights: Vec<String>,
        /// Token lifetime in seconds; `None`: the network's default, capped by the delegation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    /// Seednode: deny a pending request ([`JoinRequestView`]).
    Deny {
        /// The request.
        id: u64,
        /// A note sent to the requesting node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Seednode: deny, in one step, every pending request matching all the criteria given
    /// (none: every pending request) ([`JoinRequestView`] list of those denied).
    DenyPending {
        /// Only this network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
        /// Only requests at least this old, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older_than_secs: Option<u64>,
        /// Only requests with exactly this label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// A note kept with each denial and sent to each node that asks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Seednode: current members ([`IssuedTokenView`] list).
    Members {
        /// Only this network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
    },
    /// Seednode: create an invite code ([`InviteCreated`]).
    Invite {
        /// The network it admits to.
        network: NetworkName,
        /// How many joins it admits; `None`: 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uses: Option<u32>,
        /// How long it is valid, in seconds; `None`: a day.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    /// Seednode: revoke memberships ([`Revoked`]): every unrevoked token of `peer` (on
    /// `network`, or all), or the one token `token_id`; exactly one of the two.
    Revoke {
        /// The member whose tokens to revoke.
        #[serde(
            default,
            with = "opt_peer_text",
            skip_serializing_if = "Option::is_none"
        )]
        peer: Option<PeerId>,
        /// With `peer`: only this network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<NetworkName>,
        /// One issued token, by its id (from `members`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<u64>,
        /// Why (kept in the revocation record).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Request {
    /// Whether a seednode's join service answers this request (not the node itself).
    pub fn is_operator(&self) -> bool {
        matches!(
            self,
            Self::Pending { .. }
                | Self::Approve { .. }
                | Self::Deny { .. }
                | Self::DenyPending { .. }
                | Self::Members { .. }
                | Self::Invite { .. }
                | Self::Revoke { .. }
        )
    }
}

/// A remote command, as an operator names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CallCommand {
    /// Liveness.
    Ping,
    /// Version, networks, uptime.
    Info,
    /// Members of the shared network.
    Peers,
    /// Echo a text.
    Echo {
        /// The text.
        text: String,
    },
    /// Read a record.
    DhtGet {
        /// Its key.
        key: String,
    },
    /// Publish a record signed by this node.
    DhtPut {
        /// Its key.
        key: String,
        /// Its value.
        value: String,
    },
}

impl CallCommand {
    /// Parses the command-line words `COMMAND [ARGS]` (`ping`, `echo TEXT`, `dht_put KEY VALUE`).
    pub fn from_words(command: &str, args: &[String]) -> Result<Self, String> {
        match (command, args) {
            ("ping", []) => Ok(Self::Ping),
            ("info", []) => Ok(Self::Info),
            ("peers", []) => Ok(Self::Peers),
            ("echo", [text]) => Ok(Self::Echo { text: text.clone() }),
            ("dht_get", [key]) => Ok(Self::DhtGet { key: key.clone() }),
            ("dht_put", [key, value]) => Ok(Self::DhtPut {
                key: key.clone(),
                value: value.clone(),
            }),
            (cmd, args) => Err(format!(
                "unknown command or wrong arguments: {cmd} {args:?}; use ping | info | peers | \
                 echo TEXT | dht_get KEY | dht_put KEY VALUE"
            )),
        }
    }
}

/// Every answer, as the daemon produces it. On the socket each travels as its payload alone
/// (the request says which to expect).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    /// To `status`.
    Status(Box<Status>),
    /// To `peers`.
    Peers(Vec<PeerEntry>),
    /// To `call`.
    Called(CallResult),
    /// To `find`.
    Found(FindResult),
    /// To `reload`.
    Reloaded(Reloaded),
    /// To `pending`.
    Pending(Vec<JoinRequestView>),
    /// To `approve`.
    Approved(IssuedTokenView),
    /// To `deny`.
    Denied(JoinRequestView),
    /// To `deny_pending`.
    DeniedPending(Vec<JoinRequestView>),
    /// To `members`.
    Members(Vec<IssuedTokenView>),
    /// To `invite`.
    Invited(InviteCreated),
    /// To `revoke`.
    Revoked(Revoked),
    /// To `publish_revocation`.
    Published(Published),
}

/// Answer to `publish_revocation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The network.
    pub network: NetworkName,
    /// The signer (PeerId form of its key).
    pub signer: String,
    /// The head version now held for that signer.
    pub version: u64,
}

/// What a remote command answered, for people and scripts: byte payloads as [`Bytes`] (text
/// when printable UTF-8, base64 otherwise, and which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CallResult {
    /// Answer to `ping`.
    Pong,
    /// Answer to `info`.
    Info {
        /// The callee's software version.
        version: String,
        /// Networks the callee serves and the caller may learn of.
        networks: Vec<NetworkName>,
        /// Seconds since the callee started.
        uptime_secs: u64,
    },
    /// Answer to `peers`.
    Peers {
        /// Members of the shared network.
        peers: Vec<String>,
    },
    /// Answer to `echo`.
    Echo {
        /// The payload.
        payload: Bytes,
    },
    /// Answer to `dht_put`: stored.
    Stored,
    /// Answer to `dht_get`.
    Record {
        /// The record, if the key is known.
        record: Option<RecordView>,
    },
}

/// A signed record, as a call shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The publisher's PeerId (empty if its key does not decode).
    pub publisher: String,
    /// The publisher's sequence number.
    pub seq: u64,
    /// When the publisher signed (unix seconds).
    pub timestamp: u64,
}

/// Bytes from a peer as `node call` shows them: as text when they are UTF-8 without control
/// characters (tab and newline allowed), so a peer cannot drive the operator's terminal with
/// escape sequences; as base64 otherwise. `encoding` says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bytes {
    /// `utf8` or `base64`.
    pub encoding: Encoding,
    /// The bytes in that encoding.
    pub data: String,
}

/// How [`Bytes::data`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are this text.
    Utf8,
    /// Standard base64 with padding.
    Base64,
}

impl Bytes {
    /// Shows `bytes` as text if they are printable UTF-8, base64 otherwise.
    pub fn of(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        match std::str::from_utf8(bytes) {
            Ok(text)
                if !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t') =>
            {
                Self {
                    encoding: Encoding::Utf8,
                    data: text.to_owned(),
                }
            }
            _ => Self {
                encoding: Encoding::Base64,
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    /// One line for people: the text, or `base64:` and the encoding.
    pub fn display(&self) -> String {
        match self.encoding {
            Encoding::Utf8 => self.data.clone(),
            Encoding::Base64 => format!("base64:{}", self.data),
        }
    }
}

impl From<RpcResult> for CallResult {
    fn from(result: RpcResult) -> Self {
        match result {
            RpcResult::Pong => Self::Pong,
            RpcResult::Info {
                version,
                networks,
                uptime_secs,
            } => Self::Info {
                version,
                networks,
                uptime_secs,
            },
            RpcResult::Peers { peers } => Self::Peers { peers },
            RpcResult::Echo { data } => Self::Echo {
                payload: Bytes::of(&data),
            },
            RpcResult::Stored => Self::Stored,
            RpcResult::Record { record } => Self::Record {
                record: record.map(|r| RecordView {
                    key: Bytes::of(&r.key),
                    value: Bytes::of(&r.value),
                    publisher: libp2p::identity::PublicKey::try_decode_protobuf(&r.publisher)
                        .map(|k| k.to_peer_id().to_string())
                        .unwrap_or_default(),
                    seq: r.seq,
                    timestamp: r.timestamp,
                }),
            },
        }
    }
}

/// A daemon's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Our PeerId.
    pub peer_id: String,
    /// Our listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Live connections.
    pub connections: usize,
    /// One entry per network.
    pub networks: Vec<NetworkStatus>,
    /// Membership checks so far.
    pub membership_checks: CheckCounts,
    /// The main limits in force.
    pub limits: StatusLimits,
    /// The join service, on a seednode.
    pub service: Option<ServiceStatus>,
    /// The connection filter.
    pub filter: FilterStatus,
    /// Rate limits, per-IP caps and ban policy in force.
    pub rate_limits: LimitsConfig,
}

/// One network in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The network.
    pub name: NetworkName,
    /// `seednode`, `member`, `denied`, `pending` or `joining`.
    pub state: String,
    /// Its join policy, from the descriptor.
    pub join_policy: Option<String>,
    /// Whether it is strict.
    pub strict: bool,
    /// Roles our token grants.
    pub roles: Vec<String>,
    /// When our token expires (unix seconds).
    pub token_expires_at: Option<u64>,
    /// The trust anchor our token chains to (`ed25519/<hex>`): after an anchor rotation, every
    /// member shows the new one before the old is removed.
    pub token_anchor: Option<String>,
    /// Our pending join request's id.
    pub pending_request: Option<u64>,
    /// Peers in its routing table.
    pub routing_table: usize,
    /// Peers proven on a live connection.
    pub verified_peers: usize,
    /// Revoked ids held for the network (union over its signers).
    pub revoked_ids: usize,
    /// One entry per revocation signer (seednode or anchor) whose head we hold.
    pub revocation_heads: Vec<RevocationHeadView>,
    /// Revocation updates received from peers (pushed or answering our syncs), applied or not.
    pub revocation_updates_received: u64,
    /// Their bytes (signed heads and entries).
    pub revocation_bytes_received: u64,
    /// Head announces received from peers (a peer that applied a new head says so).
    pub revocation_announces_received: u64,
    /// Their encoded bytes.
    pub revocation_announce_bytes_received: u64,
}

/// One signer's revocation head in [`NetworkStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationHeadView {
    /// The signer's PeerId (a seednode's, or the anchor key's).
    pub signer: String,
    /// The head's version.
    pub version: u64,
    /// Seconds since the head was issued.
    pub age_secs: u64,
    /// Connected peers of the network whose last known version of this head is older.
    pub peers_behind: usize,
    /// Two different heads seen for one version of this signer.
    pub equivocations: u64,
    /// When this node applied the head (unix milliseconds); `None` for a head loaded from
    /// the data directory at start.
    pub applied_at_ms: Option<u64>,
}

/// Membership checks in [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCounts {
    /// Networks proven.
    pub verified: u64,
    /// Networks refused.
    pub refused: u64,
    /// Presentations refused because verification was saturated.
    pub rate_limited: u64,
    /// Connections closed for proving nothing in time.
    pub auth_timeouts: u64,
}

/// The limits shown in [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLimits {
    /// Seconds a connection may stay unauthenticated.
    pub auth_timeout_secs: u64,
    /// Established connections.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Connected peers aimed at.
    pub connection_budget: usize,
    /// Incoming connections in the handshake.
    pub max_pending_incoming: u32,
    /// Streams per request-response protocol and connection.
    pub max_streams_per_protocol: usize,
    /// Verifications queued or running.
    pub max_pending_verifications: usize,
    /// Largest Kademlia message.
    pub max_kad_packet_bytes: usize,
    /// Entries per Kademlia bucket.
    pub kad_bucket_size: usize,
    /// Networks per process.
    pub max_networks: usize,
    /// Routing entries per network.
    pub max_routes_per_network: usize,
}

/// One routing-table entry (`peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The network.
    pub network: NetworkName,
    /// The peer.
    pub peer: String,
    /// Its addresses in the table.
    pub addrs: Vec<String>,
    /// Whether it proved the network on a live connection.
    pub connected: bool,
    /// Whether it proved a seednode delegation.
    pub seednode: bool,
    /// When its proof ends (unix seconds), if connected.
    pub expires_at: Option<u64>,
}

/// Answer to `find`: one Kademlia lookup of a peer through a network's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindResult {
    /// The network whose members were asked.
    pub network: NetworkName,
    /// The peer looked up.
    pub peer: String,
    /// Whether the peer itself answered the lookup as a member of the network.
    pub found: bool,
    /// Where the lookup found it.
    pub addrs: Vec<String>,
    /// Whether it was in this node's routing table when the lookup started.
    pub in_table: bool,
    /// Hops from this node to the peer, at least: 1 when it was in our table, otherwise 2 (a
    /// member we asked, or one it named, named the peer). libp2p-kad does not say which member
    /// named which, so longer paths show as 2.
    pub min_hops: u32,
    /// Members the lookup asked, those that answered, and those that did not.
    pub asked: u32,
    /// See `asked`.
    pub answered: u32,
    /// See `asked`.
    pub failed: u32,
    /// How long the lookup took, in milliseconds.
    pub elapsed_ms: u64,
    /// The members closest to the peer that answered, closest first.
    pub closest: Vec<String>,
    /// Why the peer did not answer, when we saw why: `refused: ...` (reached, but a membership
    /// did not verify on the connection) or `unreachable: ...` (dialing it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Whether the lookup ran out of time (`kad_query_timeout`) before it settled.
    #[serde(default)]
    pub timed_out: bool,
}

impl FindResult {
    /// Why the lookup did not find the peer, led by `not found:` or `refused:` / `unreachable:`
    /// when the peer was reached or dialed.
    pub fn failure(&self) -> String {
        match &self.problem {
            Some(problem) => format!(
                "{problem}; {} did not answer the lookup in {}",
                self.peer, self.network
            ),
            None if self.timed_out => format!(
                "unreachable: the lookup in {} timed out with {} of {} members answering, none with {}",
                self.network, self.answered, self.asked, self.peer
            ),
            None => not_found(self.answered, &self.network, &self.peer),
        }
    }
}

/// The error of a lookup that no member answered with the peer.
pub fn not_found(answered: u32, network: &NetworkName, peer: &impl std::fmt::Display) -> String {
    format!(
        "not found: none of the {answered} members of {network} the lookup reached knows {peer}"
    )
}

/// Answer to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The filter rules file re-read, if the node runs with one.
    pub filter: Option<PathBuf>,
    /// Connections the new filter rules closed.
    pub closed_connections: usize,
    /// What re-reading the descriptor changed, if the node was started from a file.
    pub descriptor: Option<DescriptorReloaded>,
}

/// What `reload` changed from the descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DescriptorReloaded {
    /// The file re-read.
    pub path: PathBuf,
    /// Anchors now trusted that were not (`network ed25519/<hex>`), for the networks run.
    pub anchors_added: Vec<String>,
    /// Anchors no longer trusted (`network ed25519/<hex>`), for the networks run.
    pub anchors_removed: Vec<String>,
    /// Connections closed because the peer's token chains to a removed anchor.
    pub untrusted_connections: usize,
    /// Networks whose own membership no longer verifies: a new one is being requested.
    pub memberships_dropped: Vec<NetworkName>,
    /// Changed settings that take effect only at the next start (`network: field`).
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    /// What `node reload` prints.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if let Some(d) = &self.descriptor {
            let _ = writeln!(out, "descriptor reloaded from {}", d.path.display());
            for a in &d.anchors_added {
                let _ = writeln!(out, "  anchor added:   {a}");
            }
            for a in &d.anchors_removed {
                let _ = writeln!(out, "  anchor removed: {a}");
            }
            if d.anchors_added.is_empty() && d.anchors_removed.is_empty() {
                let _ = writeln!(out, "  anchors unchanged");
            }
            let _ = writeln!(
                out,
                "  {} connection(s) closed: the peer's token chains to a removed anchor",
                d.untrusted_connections
            );
            for n in &d.memberships_dropped {
                let _ = writeln!(
                    out,
                    "  our {n} membership chains to a removed anchor: dropped, asking a seednode \
                     for a new one"
                );
            }
            for r in &d.needs_restart {
                let _ = writeln!(out, "  changed, applies at the next start: {r}");
            }
        }
        if let Some(path) = &self.filter {
            let _ = writeln!(
                out,
                "filter rules reloaded from {}; {} connection(s) closed",
                path.display(),
                self.closed_connections
            );
        }
        out
    }
}

/// A seednode join service's status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The networks served.
    pub networks: Vec<ServedNetwork>,
    /// Row counts of the store.
    pub counts: StoreCounts,
    /// The revocation set's version.
    pub revocation_version: Option<u64>,
}

/// One served network in [`ServiceStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedNetwork {
    /// The network.
    pub name: NetworkName,
    /// Its join policy.
    pub join: String,
    /// Lifetime of the tokens issued (seconds).
    pub token_lifetime_secs: u64,
    /// Roles the delegation allows.
    pub allowed_roles: Vec<String>,
    /// Longest token the delegation allows (seconds).
    pub max_lifetime_secs: u64,
    /// When the delegation expires (unix seconds).
    pub delegation_expires_at: u64,
}

/// Store row counts in [`ServiceStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoreCounts {
    /// Pending join requests.
    pub pending: u64,
    /// Approved join requests.
    pub approved: u64,
    /// Denied join requests.
    pub denied: u64,
    /// Issued tokens.
    pub issued: u64,
    /// Issued tokens the node acknowledged.
    pub delivered: u64,
    /// Issued tokens revoked.
    pub revoked: u64,
}

/// A join request as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequestView {
    /// Request id.
    pub id: u64,
    /// The network asked for.
    pub network: NetworkName,
    /// The requesting peer.
    pub peer: String,
    /// The node's label (control characters removed).
    pub label: Option<String>,
    /// Whether an invite was redeemed for it.
    pub invite_used: bool,
    /// When it arrived (unix seconds).
    pub created_at: u64,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// When it was decided (unix seconds).
    pub decided_at: Option<u64>,
    /// The policy that decided it automatically, if any.
    pub decided_by_policy: Option<String>,
    /// The operator's reason for a denial.
    pub deny_reason: Option<String>,
}

/// An issued token as shown to operators (never its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedTokenView {
    /// Token id.
    pub token_id: u64,
    /// The request it answers; `None` for tokens issued directly.
    pub request_id: Option<u64>,
    /// The network.
    pub network: NetworkName,
    /// The member.
    pub peer: String,
    /// Roles granted.
    pub roles: Vec<String>,
    /// Explicit rights granted on top of the roles (kept by renewals).
    #[serde(default)]
    pub rights: Vec<String>,
    /// Issue time (unix seconds).
    pub issued_at: u64,
    /// Expiry (unix seconds).
    pub expires_at: u64,
    /// Revocation id, hex.
    pub revocation_id: String,
    /// When the node acknowledged it (unix seconds).
    pub delivered_at: Option<u64>,
    /// When it was revoked (unix seconds).
    pub revoked_at: Option<u64>,
    /// Whether it chains to the delegation the seednode holds now (`false` after an anchor
    /// rotation until the member renews; `None` if the seednode cannot tell).
    #[serde(default)]
    pub current_delegation: Option<bool>,
    /// Whether this seednode issued it (`false` for a token another seednode sharing its
    /// store issued; `None` if the seednode cannot tell).
    #[serde(default)]
    pub issued_here: Option<bool>,
}

/// Answer to `invite`: the code is shown once, here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    /// The code to give to the node's operator.
    pub code: String,
    /// The network it admits to.
    pub network: NetworkName,
    /// Joins it admits.
    pub uses: u32,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// The short hash prefix listings show for it.
    pub code_prefix: String,
}

/// Answer to `revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The tokens revoked now.
    pub revoked: Vec<IssuedTokenView>,
    /// The revocation set's version after.
    pub revocation_version: u64,
}

/// PeerIds travel as base58 text.
mod peer_text {
    use libp2p::PeerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&peer.to_base58())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            let shown: String = text.chars().take(60).collect();
            serde::de::Error::custom(format!(
                "invalid \"peer\" {shown:?}: not a base58 peer id (12D3KooW...)"
            ))
        })
    }
}

/// Optional PeerIds travel as base58 text.
mod opt_peer_text {
    use libp2p::PeerId;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(peer: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
        match peer {
            Some(p) => super::peer_text::serialize(p, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerId>, D::Error> {
        super::peer_text::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        cordon_membership::SecretKey::from_seed([1; 32]).peer_id()
    }

    /// Issue 12, item 7: bytes are text only when they are printable UTF-8.
    #[test]
    fn bytes_show_as_text_only_when_printable_utf8() {
        let text = Bytes::of("héllo\n\tworld".as_bytes());
        assert_eq!(text.encoding, Encoding::Utf8);
        assert_eq!(text.display(), "héllo\n\tworld");
        for raw in [&b"\xff\xfe\x00"[..], b"\x1b[2Jcleared", b"bell\x07", b""] {
            let shown = Bytes::of(raw);
            if raw.is_empty() {
                assert_eq!(shown.encoding, Encoding::Utf8);
                continue;
            }
            assert_eq!(shown.encoding, Encoding::Base64, "{raw:?}");
            use base64::Engine as _;
            let back = base64::engine::general_purpose::STANDARD
                .decode(&shown.data)
                .unwrap();
            assert_eq!(back, raw);
            assert!(shown.display().starts_with("base64:"));
        }
        let json = serde_json::to_value(CallResult::Echo {
            payload: Bytes::of(b"\xff"),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"echo": {"payload": {"encoding": "base64", "data": "/w=="}}})
        );
    }

    #[test]
    fn requests_round_trip_with_one_name_each() {
        let requests = vec![
            Request::Status {},
            Request::Peers {
                network: Some("mainnet".parse().unwrap()),
            },
            Request::Call {
                peer: peer(),
                network: None,
                command: CallCommand::Echo { text: "hi".into() },
            },
            Request::Approve {
                id: 3,
                roles: vec!["operator".into()],
                rights: Vec::new(),
                ttl_secs: Some(60),
            },
            Request::Revoke {
                peer: Some(peer()),
                network: None,
                token_id: None,
                reason: Some("lost laptop".into()),
            },
            Request::Revoke {
                peer: None,
                network: None,
                token_id: Some(7),
                reason: None,
            },
        ];
        for r in requests {
            let text = serde_json::to_string(&r).unwrap();
            let back: Request = serde_json::from_str(&text).unwrap();
            assert_eq!(back, r, "{text}");
        }
        let text = serde_json::to_string(&Request::Status {}).unwrap();
        assert_eq!(text, r#"{"cmd":"status"}"#);
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"shutdown"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"approve"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"cmd":"call","peer":"nope","command":"ping"}"#)
                .is_err()
        );
    }

    #[test]
    fn call_words_parse_into_commands() {
        assert_eq!(CallCommand::from_words("ping", &[]), Ok(CallCommand::Ping));
        assert_eq!(
            CallCommand::from_words("dht_put", &["k".into(), "v".into()]),
            Ok(CallCommand::DhtPut {
                key: "k".into(),
                value: "v".into()
            })
        );
        assert!(CallCommand::from_words("ping", &["x".into()]).is_err());
        assert!(CallCommand::from_words("rm", &[]).is_err());
    }
}
