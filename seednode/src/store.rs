//! The seednode's persistent state behind one boundary: the [`Store`] trait.
//!
//! The store owns the join-request queue, the tokens the seednode issued, the revocation set
//! and invite codes. It holds plain data only (peers are base58 PeerId text in rows, tokens and
//! revocation ids are bytes): no cryptography, no clock, no networking. The join service
//! ([`crate::service`]) calls it through the async [`Store`] trait, one method per operation,
//! so a back end is swapped without touching the service: [`SqliteStore`] (the default, one
//! embedded database file) runs SQLite on a thread of its own; [`PostgresStore`] (one
//! PostgreSQL database shared by several seednodes of a network) runs each call as one
//! serializable transaction on a pooled connection.
//!
//! # Invariants every back end keeps
//! - **One pending request per (network, peer).** Resubmitting returns the existing request
//!   instead of adding one. A peer whose request was decided may submit again.
//! - **Every operation is one transaction.** Approving a request and recording its token
//!   commit together or not at all, so a crash can never leave an approved request without a
//!   token (or a token without an approval). Redeeming an invite and recording the request it
//!   admitted commit together, so a code is used up at most once across every seednode
//!   sharing the store.
//! - **Nothing committed is lost** on SIGKILL or power loss.
//! - **The revocation-set version strictly increases,** by exactly one for every call that adds
//!   to the set; calls that change nothing leave it alone, so verifier caches keyed on it stay
//!   warm.
//! - **Times are supplied by callers** (`now`, unix seconds) and never read from the clock
//!   here, so a store is deterministic under test.
//! - **Input from the network is bounded:** the pending queue is capped per network and in
//!   total ([`StoreLimits`]); labels are length-capped and may not contain control characters
//!   (they end up on an operator's terminal). Network names are [`NetworkName`]s and peers are
//!   [`PeerId`]s, valid by construction.
//! - **Invite codes are never stored,** only the SHA-256 hash the caller passes in; listings
//!   show a short hex prefix of that hash.
//! - **Ids are positive and never reused** ([`RequestId`], [`IssuedTokenId`]).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use cordon_protocol::NetworkName;
use libp2p::PeerId;
use serde::{Serialize, Serializer};

pub use crate::postgres::{PostgresOptions, PostgresStore};
pub use crate::sqlite::SqliteStore;

/// Bytes of an invite's code hash shown in listings (as hex).
pub(crate) const INVITE_PREFIX_BYTES: usize = 4;

/// A join request's id: positive, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(pub i64);

/// An issued token's id: positive, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IssuedTokenId(pub i64);

macro_rules! wire_id {
    ($id:ident) => {
        impl $id {
            /// The id as the wire and the control plane carry it (`u64`).
            pub fn wire(self) -> u64 {
                // Store ids are positive, so they always fit.
                u64::try_from(self.0).unwrap_or(0)
            }

            /// The id a wire `u64` names, if it can name one at all.
            pub fn from_wire(id: u64) -> Option<Self> {
                i64::try_from(id).ok().map(Self)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

wire_id!(RequestId);
wire_id!(IssuedTokenId);

/// Which pending requests a bulk denial selects; every criterion given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingFilter {
    /// Only this network.
    pub network: Option<NetworkName>,
    /// Only requests made at or before this time (unix seconds).
    pub created_at_most: Option<u64>,
    /// Only requests whose label is exactly this.
    pub label: Option<String>,
}

/// Bounds on what the network can make the store hold (config section `[seednode.store]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreLimits {
    /// Most pending join requests across all networks. Default: 10_000.
    pub max_pending_total: usize,
    /// Most pending join requests for one network. Default: 1_000.
    pub max_pending_per_network: usize,
    /// Longest accepted join-request label, in bytes. Default: 64.
    pub max_label_bytes: usize,
    /// How long a join request may wait for a decision. Older pending requests are denied
    /// (policy `expired`) when the next request arrives, so requests nobody decides (a flood
    /// from throwaway identities) cannot hold the queue for ever; their peers may ask again.
    /// Default: 7 days.
    #[serde(with = "cordon_host::config::duration")]
    pub pending_ttl: std::time::Duration,
    /// How long history is kept: issued tokens that expired longer ago than this (unless
    /// revoked), and requests decided longer ago by a policy (`open`, `invite`, `expired`) or
    /// approved with such a token, are deleted (at most once an hour, when a request arrives).
    /// Operator denials and revoked tokens are kept: they are decisions a returning peer must
    /// meet again. So under `open`, where every fresh identity adds rows, the store holds what
    /// the per-source join quotas let in over a token's lifetime plus this. Default: 30 days.
    #[serde(with = "cordon_host::config::duration")]
    pub retention: std::time::Duration,
}

impl StoreLimits {
    /// Checks the bounds: 1 to 10,000,000 pending requests, at most as many per network, a
    /// label of 1 to 1,024 bytes, a pending ttl of 1 s to a year, a retention of 1 hour to ten
    /// years.
    pub fn validate(&self) -> Result<(), cordon_host::config::Invalid> {
        use cordon_host::config::in_range;
        in_range("max_pending_total", self.max_pending_total, 1, 10_000_000)?;
        in_range(
            "max_pending_per_network",
            self.max_pending_per_network,
            1,
            self.max_pending_total,
        )?;
        in_range("max_label_bytes", self.max_label_bytes, 1, 1024)?;
        cordon_host::config::duration_in_range(
            "pending_ttl",
            self.pending_ttl,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(365 * 86_400),
        )?;
        cordon_host::config::duration_in_range(
            "retention",
            self.retention,
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(10 * 365 * 86_400),
        )
    }
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_pending_total: 10_000,
            max_pending_per_network: 1_000,
            max_label_bytes: 64,
            pending_ttl: std::time::Duration::from_secs(7 * 86_400),
            retention: std::time::Duration::from_secs(30 * 86_400),
        }
    }
}

/// Why a store operation failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be created or inspected.
    #[error("cannot access seednode database {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database file (or its WAL/shared-memory file) is group or world accessible.
    #[error(
        "seednode database {} has mode {mode:o}, so other users can access it; \
         fix with `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Permissions {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is an SQLite database that this code did not create.
    #[error(
        "{} is an SQLite database but not a Cordon seednode store; \
         point the seednode at its own data directory",
        .path.display()
    )]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
    },
    /// The database was written by a newer seednode.
    #[error(
        "seednode database schema version {found} is newer than this seednode supports \
         ({supported}); run the newer seednode or restore a backup"
    )]
    SchemaTooNew {
        /// Version found in the file.
        found: u32,
        /// Newest version this code understands.
        supported: u32,
    },
    /// SQLite refused to switch to write-ahead logging.
    #[error(
        "could not switch the seednode database to WAL journaling (SQLite kept \
         journal_mode={mode}); keep the data directory on a local filesystem"
    )]
    WalUnavailable {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The pending queue of one network is at its cap.
    #[error(
        "join queue for network {network} is full ({limit} pending requests); approve or \
         deny pending requests (`seednode pending`) or raise max_pending_per_network"
    )]
    QueueFull {
        /// The network.
        network: NetworkName,
        /// The cap that was hit.
        limit: usize,
    },
    /// The pending queue across all networks is at its cap.
    #[error(
        "join queue is full ({limit} pending requests across all networks); approve or \
         deny pending requests (`seednode pending`) or raise max_pending_total"
    )]
    QueueFullTotal {
        /// The cap that was hit.
        limit: usize,
    },
    /// An argument is malformed or out of bounds.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No join request has this id.
    #[error("join request {id} does not exist; list requests with `seednode pending`")]
    NotFound {
        /// The request id.
        id: RequestId,
    },
    /// The request was already decided.
    #[error(
        "join request {id} is already {status}; only pending requests can be approved or denied"
    )]
    NotPending {
        /// The request id.
        id: RequestId,
        /// Its current status.
        status: RequestStatus,
    },
    /// The token to issue names another network or peer than the request.
    #[error(
        "join request {id} is from peer {request_peer} for network {request_network}, but \
         the token is for peer {token_peer} on network {token_network}; issue the token \
         for the requesting peer and network"
    )]
    Mismatch {
        /// The request id.
        id: RequestId,
        /// The request's network.
        request_network: NetworkName,
        /// The request's peer.
        request_peer: String,
        /// The token's network.
        token_network: NetworkName,
        /// The token's peer.
        token_peer: String,
    },
    /// No issued token has this id.
    #[error("issued token {token_id} does not exist; list tokens with `seednode members`")]
    TokenNotFound {
        /// The token id.
        token_id: IssuedTokenId,
    },
    /// A token with this revocation id was already issued or revoked.
    #[error(
        "revocation id {revocation_id} is already known to this seednode; every token \
         must be freshly signed"
    )]
    DuplicateRevocationId {
        /// The revocation id, hex.
        revocation_id: String,
    },
    /// An invite with this code hash exists already.
    #[error(
        "an invite with this code already exists for network {network}; generate a new random code"
    )]
    InviteExists {
        /// The network of the existing invite.
        network: NetworkName,
    },
    /// The presented invite cannot be redeemed.
    #[error(
        "invite code is unknown, expired, used up, or not for network {network}; ask the operator for a new invite"
    )]
    InviteRejected {
        /// The network the invite was presented for.
        network: NetworkName,
    },
    /// The store's worker could not be started.
    #[error("cannot start the seednode database's thread: {0}; check the process's thread limit")]
    Spawn(#[source] std::io::Error),
    /// The store's worker stopped (it panicked or the store is shutting down).
    #[error(
        "the seednode database stopped answering (its worker ended; see the log) and the \
         operation was not applied; restart the seednode"
    )]
    Unavailable,
    /// SQLite failed.
    #[error("seednode database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL database could not be reached: a connection could not be made, was lost,
    /// or none became free in the pool in time.
    #[error(
        "the seednode's PostgreSQL database is unreachable ({reason}); the operation was not \
         applied; check that the server is running and reachable, then retry"
    )]
    DatabaseUnreachable {
        /// What failed (never includes a password).
        reason: String,
    },
    /// The PostgreSQL settings are unusable.
    #[error("invalid PostgreSQL settings for the seednode store: {reason}")]
    PostgresConfig {
        /// What is wrong and how to fix it (never includes a password).
        reason: String,
    },
    /// The PostgreSQL database has tables but no Cordon schema marker.
    #[error(
        "PostgreSQL database {database} has tables but is not a Cordon seednode store; \
         give the seednodes a database of their own (`CREATE DATABASE cordon_seednode`)"
    )]
    ForeignPostgres {
        /// The database name.
        database: String,
    },
    /// A stored row cannot be read back (a value out of range or of an unknown kind).
    #[error("seednode database holds an unreadable row ({reason}); restore a backup")]
    Corrupt {
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL refused or failed an operation.
    #[error("seednode database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Where a join request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved; a token was issued.
    Approved,
    /// Denied.
    Denied,
}

impl RequestStatus {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A join request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinRequestRow {
    /// Request id (never reused).
    pub id: RequestId,
    /// Network the peer asked to join.
    pub network: NetworkName,
    /// Requesting peer (base58 PeerId).
    pub peer: String,
    /// Free-text label the node sent, bounded and free of control characters.
    pub label: Option<String>,
    /// Whether an invite was redeemed for this request.
    pub invite_used: bool,
    /// When the request arrived (unix seconds).
    pub created_at: u64,
    /// Where it stands.
    pub status: RequestStatus,
    /// When it was approved or denied (unix seconds).
    pub decided_at: Option<u64>,
    /// The policy that decided it automatically, if any (e.g. `invite`, `open`).
    pub decided_by_policy: Option<String>,
    /// The operator's reason for a denial.
    pub deny_reason: Option<String>,
}

/// Outcome of submitting a join request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "request", rename_all = "lowercase")]
pub enum Submitted {
    /// A new pending request was queued.
    New(JoinRequestRow),
    /// The peer already had a pending request for the network; here it is.
    Existing(JoinRequestRow),
}

impl Submitted {
    /// The request, new or existing.
    pub fn row(&self) -> &JoinRequestRow {
        match self {
            Self::New(row) | Self::Existing(row) => row,
        }
    }
}

/// A token to record as issued.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    /// Network the token grants.
    pub network: NetworkName,
    /// Peer the token names.
    pub peer: PeerId,
    /// Roles the token grants.
    pub roles: Vec<String>,
    /// Explicit rights the token grants on top of its roles (kept so a renewal keeps them).
    pub rights: Vec<String>,
    /// Issue time (unix seconds).
    pub issued_at: u64,
    /// Expiry (unix seconds); must be after `issued_at`.
    pub expires_at: u64,
    /// The token's revocation id (its serial-derived id; the block-1 signature for tokens
    /// issued before serials).
    pub revocation_id: Vec<u8>,
    /// The serialized token.
    pub token: Vec<u8>,
}

/// An issued token as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuedTokenRow {
    /// Token id (never reused).
    pub token_id: IssuedTokenId,
    /// The join request it answers; `None` for tokens issued directly.
    pub request_id: Option<RequestId>,
    /// Network the token grants.
    pub network: NetworkName,
    /// Peer the token names (base58 PeerId).
    pub peer: String,
    /// Roles the token grants.
    pub roles: Vec<String>,
    /// Explicit rights the token grants on top of its roles.
    pub rights: Vec<String>,
    /// Issue time (unix seconds).
    pub issued_at: u64,
    /// Expiry (unix seconds); the token is valid while `now < expires_at`.
    pub expires_at: u64,
    /// Revocation id (hex in JSON).
    #[serde(serialize_with = "serialize_hex")]
    pub revocation_id: Vec<u8>,
    /// The serialized token (hex in JSON).
    #[serde(serialize_with = "serialize_hex")]
    pub token: Vec<u8>,
    /// When the node acknowledged receipt (unix seconds).
    pub delivered_at: Option<u64>,
    /// When it was revoked (unix seconds).
    pub revoked_at: Option<u64>,
}

/// The revocation set and its version, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevocationSnapshot {
    /// Strictly increases whenever the set grows.
    pub version: u64,
    /// Revoked ids, sorted bytewise (hex in JSON).
    #[serde(serialize_with = "serialize_hex_list")]
    pub ids: Vec<Vec<u8>>,
}

/// An invite as listed (the code hash is shown only as a prefix).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InviteRow {
    /// First bytes of the code hash, hex; enough to tell invites apart.
    pub code_prefix: String,
    /// Network the invite admits to.
    pub network: NetworkName,
    /// Redemptions left.
    pub uses_left: u32,
    /// Expiry (unix seconds); usable while `now < expires_at`.
    pub expires_at: u64,
    /// Creation time (unix seconds).
    pub created_at: u64,
}

impl InviteRow {
    /// Whether the invite could still be redeemed at `now`.
    pub fn is_usable(&self, now: u64) -> bool {
        self.uses_left > 0 && now < self.expires_at
    }
}

/// Row counts for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
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

/// The seednode's persistent state, as the join service uses it: one method per operation,
/// each one transaction (see the [module documentation](self) for the invariants every
/// implementation keeps).
///
/// Methods return futures that are `Send`, so the service can run as a tokio task; an
/// implementation must never block the runtime that polls them (do blocking I/O on a thread
/// of its own, as [`SqliteStore`] does, or use an async driver).
pub trait Store: Send + Sync + 'static {
    /// Queues a join request, or returns the peer's pending one for the network if it has one
    /// (no duplicate; the label is not updated).
    ///
    /// `invite_used` records that the caller already redeemed an invite; see
    /// [`Store::submit_with_invite`] to redeem and queue in one transaction.
    fn submit_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> impl Future<Output = Result<Submitted, StoreError>> + Send;

    /// Redeems the invite with `code_hash` for `network` and queues the request marked
    /// `invite_used`, in one transaction, so a crash can never consume an invite without
    /// recording the request it admitted.
    ///
    /// If the peer already has a pending request that used an invite, it is returned and the
    /// new invite is left untouched; a pending request without one is upgraded (the invite is
    /// redeemed and the request marked). The invite is not consumed when the queue is full.
    /// A code that cannot be redeemed is [`StoreError::InviteRejected`] and queues nothing.
    fn submit_with_invite(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> impl Future<Output = Result<Submitted, StoreError>> + Send;

    /// The join request with this id.
    fn request(
        &self,
        id: RequestId,
    ) -> impl Future<Output = Result<Option<JoinRequestRow>, StoreError>> + Send;

    /// The peer's most recent request for the network, whatever its status.
    fn latest_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
    ) -> impl Future<Output = Result<Option<JoinRequestRow>, StoreError>> + Send;

    /// Pending requests, oldest first, for one network or all.
    fn pending(
        &self,
        network: Option<&NetworkName>,
    ) -> impl Future<Output = Result<Vec<JoinRequestRow>, StoreError>> + Send;

    /// Approves pending request `id` and records `issued` as its undelivered token, in one
    /// transaction. The token must name the request's peer and network.
    ///
    /// `decided_by_policy` names the policy that approved it automatically (`None` for an
    /// operator's decision).
    fn approve(
        &self,
        id: RequestId,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send;

    /// Denies pending request `id`. The peer may submit again afterwards.
    fn deny(
        &self,
        id: RequestId,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<JoinRequestRow, StoreError>> + Send;

    /// Denies, in one transaction, every pending request that `filter` selects; returns them
    /// as denied.
    fn deny_pending(
        &self,
        filter: PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<JoinRequestRow>, StoreError>> + Send;

    /// Records a token issued without a join request (e.g. by an operator for a known peer),
    /// undelivered.
    fn issue_direct(
        &self,
        issued: NewToken,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send;

    /// The issued token with this id.
    fn token(
        &self,
        token_id: IssuedTokenId,
    ) -> impl Future<Output = Result<Option<IssuedTokenRow>, StoreError>> + Send;

    /// The token issued for join request `request_id`, if it was approved.
    fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> impl Future<Output = Result<Option<IssuedTokenRow>, StoreError>> + Send;

    /// Tokens for `peer` that were neither delivered nor revoked, oldest first. Expired ones
    /// are included; callers may skip them.
    fn undelivered_for(
        &self,
        peer: &PeerId,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send;

    /// Records that the node received token `token_id`. Idempotent: a second call keeps the
    /// first delivery time.
    fn mark_delivered(
        &self,
        token_id: IssuedTokenId,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send;

    /// Current members: for each (network, peer), the newest token that is neither revoked nor
    /// expired at `now` (`now < expires_at`). Sorted by network, then peer.
    fn members(
        &self,
        network: Option<&NetworkName>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send;

    /// Revokes one issued token: marks it revoked and adds its revocation id to the set.
    /// Revoking an already revoked token changes nothing.
    fn revoke_token(
        &self,
        token_id: IssuedTokenId,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send;

    /// Revokes every unrevoked token of `peer` (on one network or all) and returns them, now
    /// marked revoked. The version moves once per call.
    fn revoke_peer(
        &self,
        peer: &PeerId,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send;

    /// Adds a raw revocation id (e.g. a whole delegation's) to the set, and marks any issued
    /// token carrying it revoked. Returns whether anything changed.
    fn revoke_id(
        &self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The revocation set and its version, from one consistent snapshot.
    fn revocations(&self) -> impl Future<Output = Result<RevocationSnapshot, StoreError>> + Send;

    /// The revoked, unexpired tokens of `network` as `(revocation id, expires_at)`: the
    /// entries of this seednode's revocation head for the network.
    fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> impl Future<Output = Result<Vec<(Vec<u8>, u64)>, StoreError>> + Send;

    /// The revocation-set version alone (cheap, for cache keys).
    fn revocation_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records an invite for `network` by the SHA-256 hash of its code, redeemable `uses`
    /// times while `now < expires_at`.
    fn create_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<InviteRow, StoreError>> + Send;

    /// Uses up one redemption of the invite if it exists for `network`, has not expired
    /// (`now < expires_at`) and has uses left. Returns whether it was redeemed; a refused
    /// invite is left unchanged.
    fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Invites (including used-up and expired ones), oldest first.
    fn invites(
        &self,
        network: Option<&NetworkName>,
    ) -> impl Future<Output = Result<Vec<InviteRow>, StoreError>> + Send;

    /// Row counts for metrics, from one snapshot.
    fn counts(&self) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// Whether other seednodes may change this store behind this handle's back (one database
    /// shared by several seednodes), so what was read from it goes stale without any call
    /// through this handle. Default: `false`.
    fn is_shared(&self) -> bool {
        false
    }

    /// Starts announcing what other seednodes sharing the store change (see [`StoreEvent`])
    /// on a bounded queue, or `None` when nobody else can change it (the default). Each call
    /// starts its own subscription, which ends when its receiver is dropped. Events are only
    /// a wake-up: some may be dropped (a full queue, a lost connection), so a caller still
    /// polls; none is announced for a change made through this handle.
    fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// A change another seednode made to a shared store ([`Store::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A token for `peer` was issued and is not yet delivered: push it if `peer` is connected.
    TokenIssued {
        /// The token's subject.
        peer: PeerId,
    },
    /// The revocation set changed: publish a new revocation head.
    RevocationsChanged,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn serialize_hex<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex(bytes))
}

fn serialize_hex_list<S: Serializer>(ids: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(ids.iter().map(|id| hex(id)))
}

// ---- checks every back end makes before touching its database ------------------------------

/// Longest accepted peer id text, in bytes (base58 PeerIds are about 52). The API takes
/// [`PeerId`]s, so this only guards the rows against a future caller passing raw text.
pub(crate) const MAX_PEER_BYTES: usize = 128;

pub(crate) fn invalid(field: &'static str, reason: String) -> StoreError {
    StoreError::InvalidInput { field, reason }
}

pub(crate) fn empty_revocation_id() -> StoreError {
    invalid("revocation id", "is empty".to_owned())
}

/// Non-empty, at most `max` bytes, no control characters (the text may be
/// shown on an operator's terminal).
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(invalid(field, "is empty".to_owned()));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("is {} bytes; the limit is {max}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters".to_owned()));
    }
    Ok(())
}

/// Checks a submission's peer text and label; an empty label is no label.
pub(crate) fn check_submission<'a>(
    limits: &StoreLimits,
    peer: &str,
    label: Option<&'a str>,
) -> Result<Option<&'a str>, StoreError> {
    check_text("peer", peer, MAX_PEER_BYTES)?;
    match label {
        None | Some("") => Ok(None),
        Some(label) => {
            check_text("label", label, limits.max_label_bytes)?;
            Ok(Some(label))
        }
    }
}

pub(crate) fn check_new_token(token: &NewToken) -> Result<(), StoreError> {
    if token.revocation_id.is_empty() {
        return Err(empty_revocation_id());
    }
    if token.token.is_empty() {
        return Err(invalid("token", "is empty".to_owned()));
    }
    if token.expires_at <= token.issued_at {
        return Err(invalid(
            "token expiry",
            format!(
                "expires_at {} is not after issued_at {}",
                token.expires_at, token.issued_at
            ),
        ));
    }
    Ok(())
}

/// An invite needs at least one use and an expiry after `now`.
pub(crate) fn check_new_invite(uses: u32, expires_at: u64, now: u64) -> Result<(), StoreError> {
    if uses == 0 {
        return Err(invalid("invite uses", "must be at least 1".to_owned()));
    }
    if expires_at <= now {
        return Err(invalid(
            "invite expiry",
            format!("{expires_at} is not after now ({now})"),
        ));
    }
    Ok(())
}

/// The store test suite, written against the [`Store`] trait so every back end runs the same
/// cases. Each case takes `open`, which opens a handle on one database: empty at the first
/// call, the same database at every later call (a second seednode, or a restart).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod suite {
    use super::*;
    use cordon_membership::SecretKey;

    pub(crate) const NOW: u64 = 1_700_000_000;

    /// A store being opened: what a case's `open` returns, so a back end whose open is async
    /// (a database server) can run the suite as well as one whose open blocks briefly.
    pub(crate) type Opening<S> = std::pin::Pin<Box<dyn Future<Output = S> + Send>>;

    pub(crate) fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    pub(crate) fn mainnet() -> NetworkName {
        net("mainnet")
    }

    pub(crate) fn testnet() -> NetworkName {
        net("testnet")
    }

    /// A peer per seed byte (the suite's `PEER` is `peer(1)`).
    pub(crate) fn peer(n: u8) -> PeerId {
        SecretKey::from_seed([n; 32]).peer_id()
    }

    pub(crate) fn new_token(network: &NetworkName, peer: &PeerId, rev: u8) -> NewToken {
        NewToken {
            network: network.clone(),
            peer: *peer,
            roles: vec!["member".to_owned()],
            rights: Vec::new(),
            issued_at: NOW,
            expires_at: NOW + 3600,
            revocation_id: vec![rev; 64],
            token: vec![0xb1, rev],
        }
    }

    pub(crate) async fn submit_new<S: Store>(
        store: &S,
        network: &NetworkName,
        peer: &PeerId,
    ) -> JoinRequestRow {
        match store
            .submit_request(network, peer, Some("laptop"), false, NOW)
            .await
            .unwrap()
        {
            Submitted::New(row) => row,
            other => panic!("expected a new request, got {other:?}"),
        }
    }

    pub(crate) async fn request_lifecycle_pending_then_approved<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let request = submit_new(&store, &net, &p).await;
        assert_eq!(request.status, RequestStatus::Pending);
        assert_eq!(request.label.as_deref(), Some("laptop"));
        assert_eq!(request.created_at, NOW);
        assert_eq!(request.peer, p.to_base58());
        assert_eq!(store.pending(None).await.unwrap(), vec![request.clone()]);
        assert_eq!(
            store.pending(Some(&net)).await.unwrap(),
            vec![request.clone()]
        );
        assert!(store.pending(Some(&testnet())).await.unwrap().is_empty());
        assert_eq!(
            store.request(request.id).await.unwrap(),
            Some(request.clone())
        );
        assert_eq!(
            store.request(RequestId(request.id.0 + 100)).await.unwrap(),
            None
        );

        let issued = store
            .approve(request.id, new_token(&net, &p, 1), Some("invite"), NOW + 5)
            .await
            .unwrap();
        assert_eq!(issued.request_id, Some(request.id));
        assert_eq!(issued.roles, vec!["member".to_owned()]);
        assert_eq!(issued.delivered_at, None);
        assert_eq!(issued.revoked_at, None);

        let approved = store.request(request.id).await.unwrap().unwrap();
        assert_eq!(approved.status, RequestStatus::Approved);
        assert_eq!(approved.decided_at, Some(NOW + 5));
        assert_eq!(approved.decided_by_policy.as_deref(), Some("invite"));
        assert!(store.pending(None).await.unwrap().is_empty());
        assert_eq!(
            store.token_for_request(request.id).await.unwrap(),
            Some(issued.clone())
        );
        assert_eq!(
            store.token(issued.token_id).await.unwrap(),
            Some(issued.clone())
        );
        assert_eq!(
            store.latest_request(&net, &p).await.unwrap(),
            Some(approved)
        );
        assert_eq!(
            store.members(Some(&net), NOW + 10).await.unwrap(),
            vec![issued]
        );
        assert_eq!(
            store.counts().await.unwrap(),
            Counts {
                pending: 0,
                approved: 1,
                denied: 0,
                issued: 1,
                delivered: 0,
                revoked: 0
            }
        );
    }

    pub(crate) async fn resubmission_returns_existing_pending_request_without_new_row<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let first = submit_new(&store, &net, &p).await;
        let again = store
            .submit_request(&net, &p, Some("other label"), false, NOW + 60)
            .await
            .unwrap();
        assert_eq!(again, Submitted::Existing(first.clone()));
        assert_eq!(store.pending(None).await.unwrap().len(), 1);
        // The same peer on another network is a separate request.
        let other = submit_new(&store, &testnet(), &p).await;
        assert_ne!(other.id, first.id);
        assert_eq!(store.counts().await.unwrap().pending, 2);
    }

    pub(crate) async fn denied_peer_may_submit_again_as_new_row<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let first = submit_new(&store, &net, &p).await;
        let denied = store
            .deny(first.id, Some("unknown host"), NOW + 1)
            .await
            .unwrap();
        assert_eq!(denied.status, RequestStatus::Denied);
        assert_eq!(denied.deny_reason.as_deref(), Some("unknown host"));
        assert_eq!(denied.decided_at, Some(NOW + 1));
        let second = submit_new(&store, &net, &p).await;
        assert!(second.id > first.id);
        assert_eq!(store.latest_request(&net, &p).await.unwrap(), Some(second));
        assert_eq!(store.counts().await.unwrap().denied, 1);
    }

    pub(crate) async fn queue_caps_refuse_per_network_and_total<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let limits = StoreLimits {
            max_pending_total: 3,
            max_pending_per_network: 2,
            max_label_bytes: 64,
            ..StoreLimits::default()
        };
        let store = open(limits).await;
        let net = mainnet();
        submit_new(&store, &net, &peer(1)).await;
        submit_new(&store, &net, &peer(2)).await;
        let err = store
            .submit_request(&net, &peer(3), None, false, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::QueueFull { network, limit: 2 } if network == &net),
            "{err:?}"
        );
        // A peer already queued still gets its request back at the cap.
        assert!(matches!(
            store
                .submit_request(&net, &peer(1), None, false, NOW)
                .await
                .unwrap(),
            Submitted::Existing(_)
        ));
        submit_new(&store, &testnet(), &peer(4)).await;
        let err = store
            .submit_request(&self::net("labnet"), &peer(5), None, false, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::QueueFullTotal { limit: 3 }),
            "{err:?}"
        );
        assert_eq!(store.counts().await.unwrap().pending, 3);
        // Deciding a request frees a slot.
        let p1 = store.latest_request(&net, &peer(1)).await.unwrap().unwrap();
        store.deny(p1.id, None, NOW).await.unwrap();
        submit_new(&store, &net, &peer(3)).await;
    }

    pub(crate) async fn hostile_labels_are_refused<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let long = "x".repeat(65);
        let err = store
            .submit_request(&net, &p, Some(&long), false, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "label", .. }),
            "{err:?}"
        );
        let err = store
            .submit_request(&net, &p, Some("\x1b[31mhi"), false, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "label", .. }),
            "{err:?}"
        );
        // An empty or over-long network name cannot even reach a store: the API takes a
        // NetworkName, which refuses both (the store used to check them itself).
        assert!("".parse::<NetworkName>().is_err());
        assert!("n".repeat(64).parse::<NetworkName>().is_err());
        assert_eq!(store.counts().await.unwrap().pending, 0);
        // Exactly at the limit is fine.
        store
            .submit_request(&net, &p, Some(&"x".repeat(64)), false, NOW)
            .await
            .unwrap();
    }

    pub(crate) async fn bulk_denial_selects_by_network_age_and_label_in_one_step<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let testnet: NetworkName = "testnet".parse().unwrap();
        let submit = |network: &NetworkName, n: u8, label: &'static str, at: u64| {
            let network = network.clone();
            let store = &store;
            async move {
                match store
                    .submit_request(&network, &peer(n), Some(label), false, at)
                    .await
                    .unwrap()
                {
                    Submitted::New(row) => row,
                    other => panic!("{other:?}"),
                }
            }
        };
        let old_spam = submit(&mainnet(), 1, "flood", NOW - 7200).await;
        let new_spam = submit(&mainnet(), 2, "flood", NOW).await;
        let old_real = submit(&mainnet(), 3, "laptop", NOW - 7200).await;
        let test_spam = submit(&testnet, 4, "flood", NOW - 7200).await;
        let approved = submit(&mainnet(), 5, "flood", NOW - 7200).await;
        store
            .approve(approved.id, new_token(&mainnet(), &peer(5), 1), None, NOW)
            .await
            .unwrap();

        // Label and network: both mainnet "flood" requests, nothing else.
        let by_label = PendingFilter {
            network: Some(mainnet()),
            label: Some("flood".to_owned()),
            ..PendingFilter::default()
        };
        let denied = store
            .deny_pending(by_label, Some("spam"), NOW)
            .await
            .unwrap();
        let ids: Vec<_> = denied.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![old_spam.id, new_spam.id]);
        assert!(
            denied
                .iter()
                .all(|r| r.status == RequestStatus::Denied
                    && r.deny_reason.as_deref() == Some("spam"))
        );
        // Age, any network: the old legitimate one and testnet's; the approved one stays.
        let by_age = PendingFilter {
            created_at_most: Some(NOW - 3600),
            ..PendingFilter::default()
        };
        let ids: Vec<_> = store
            .deny_pending(by_age, None, NOW)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![old_real.id, test_spam.id]);
        assert!(store.pending(None).await.unwrap().is_empty());
        assert_eq!(
            store.request(approved.id).await.unwrap().unwrap().status,
            RequestStatus::Approved
        );
        // Nothing left to deny: an empty answer, not an error.
        let all = PendingFilter::default();
        assert!(store.deny_pending(all, None, NOW).await.unwrap().is_empty());
    }

    pub(crate) async fn expired_pending_requests_free_the_queue_at_the_next_request<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits {
            max_pending_per_network: 2,
            pending_ttl: std::time::Duration::from_secs(3600),
            ..StoreLimits::default()
        })
        .await;
        let net = mainnet();
        let submit = |n: u8, at: u64| {
            let (store, net) = (&store, net.clone());
            async move { store.submit_request(&net, &peer(n), None, false, at).await }
        };
        let first = submit(1, NOW).await.unwrap();
        submit(2, NOW + 10).await.unwrap();
        // Full until the first request is older than the TTL.
        assert!(matches!(
            submit(3, NOW + 3600).await,
            Err(StoreError::QueueFull { .. })
        ));
        let third = match submit(3, NOW + 3601).await.unwrap() {
            Submitted::New(row) => row,
            other => panic!("{other:?}"),
        };
        let first = match first {
            Submitted::New(row) => store.request(row.id).await.unwrap().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first.status, RequestStatus::Denied);
        assert_eq!(first.decided_by_policy.as_deref(), Some("expired"));
        let pending: Vec<_> = store
            .pending(None)
            .await
            .unwrap()
            .iter()
            .map(|r| r.peer.clone())
            .collect();
        assert_eq!(pending, vec![peer(2).to_base58(), peer(3).to_base58()]);
        assert_eq!(third.peer, peer(3).to_base58());
        // The expired peer asks again later (peer 2's request has expired by then too): a new
        // request, decided like any other.
        match submit(1, NOW + 3700).await.unwrap() {
            Submitted::New(row) => assert_ne!(row.id, first.id),
            other => panic!("{other:?}"),
        }
    }

    pub(crate) async fn approve_or_deny_of_non_pending_is_refused<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let approved = submit_new(&store, &net, &p).await;
        store
            .approve(approved.id, new_token(&net, &p, 1), None, NOW)
            .await
            .unwrap();
        let err = store
            .approve(approved.id, new_token(&net, &p, 2), None, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotPending {
                    status: RequestStatus::Approved,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store.deny(approved.id, None, NOW).await.unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Approved,
                ..
            }
        ));

        let denied = submit_new(&store, &net, &peer(2)).await;
        store.deny(denied.id, None, NOW).await.unwrap();
        let err = store
            .approve(denied.id, new_token(&net, &peer(2), 3), None, NOW)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Denied,
                ..
            }
        ));
        let err = store.deny(denied.id, None, NOW).await.unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Denied,
                ..
            }
        ));

        let err = store
            .approve(RequestId(999), new_token(&net, &p, 4), None, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { id: RequestId(999) }),
            "{err:?}"
        );
        let err = store.deny(RequestId(999), None, NOW).await.unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { id: RequestId(999) }),
            "{err:?}"
        );
        // Only the first approval issued a token.
        assert_eq!(store.counts().await.unwrap().issued, 1);
    }

    pub(crate) async fn approve_refuses_token_for_other_peer_or_network_and_changes_nothing<
        S: Store,
    >(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let request = submit_new(&store, &net, &p).await;
        let intruder = peer(66);
        let err = store
            .approve(request.id, new_token(&net, &intruder, 1), None, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err:?}");
        let err = store
            .approve(request.id, new_token(&testnet(), &p, 1), None, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err:?}");
        assert_eq!(store.request(request.id).await.unwrap(), Some(request));
        assert_eq!(store.counts().await.unwrap().issued, 0);
    }

    pub(crate) async fn duplicate_revocation_id_rolls_back_the_approval<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let net = mainnet();
        let a = submit_new(&store, &net, &peer(1)).await;
        let b = submit_new(&store, &net, &peer(2)).await;
        store
            .approve(a.id, new_token(&net, &peer(1), 7), None, NOW)
            .await
            .unwrap();
        let err = store
            .approve(b.id, new_token(&net, &peer(2), 7), None, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DuplicateRevocationId { .. }),
            "{err:?}"
        );
        // The transaction rolled back: b is still pending, no second token.
        assert_eq!(
            store.request(b.id).await.unwrap().unwrap().status,
            RequestStatus::Pending
        );
        assert_eq!(store.counts().await.unwrap().issued, 1);
    }

    pub(crate) async fn undelivered_until_marked_delivered_idempotently<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let request = submit_new(&store, &net, &p).await;
        let issued = store
            .approve(request.id, new_token(&net, &p, 1), None, NOW)
            .await
            .unwrap();
        let direct = store
            .issue_direct(new_token(&testnet(), &p, 2))
            .await
            .unwrap();
        assert_eq!(direct.request_id, None);
        assert_eq!(
            store.undelivered_for(&p).await.unwrap(),
            vec![issued.clone(), direct.clone()]
        );
        assert!(store.undelivered_for(&peer(9)).await.unwrap().is_empty());

        let delivered = store
            .mark_delivered(issued.token_id, NOW + 10)
            .await
            .unwrap();
        assert_eq!(delivered.delivered_at, Some(NOW + 10));
        let again = store
            .mark_delivered(issued.token_id, NOW + 20)
            .await
            .unwrap();
        assert_eq!(
            again.delivered_at,
            Some(NOW + 10),
            "first delivery time is kept"
        );
        assert_eq!(store.undelivered_for(&p).await.unwrap(), vec![direct]);
        assert_eq!(store.counts().await.unwrap().delivered, 1);

        let err = store
            .mark_delivered(IssuedTokenId(999), NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TokenNotFound {
                    token_id: IssuedTokenId(999)
                }
            ),
            "{err:?}"
        );
    }

    pub(crate) async fn revoked_tokens_are_not_delivered<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let p = peer(1);
        let issued = store
            .issue_direct(new_token(&mainnet(), &p, 1))
            .await
            .unwrap();
        store
            .revoke_token(issued.token_id, Some("lost laptop"), NOW)
            .await
            .unwrap();
        assert!(store.undelivered_for(&p).await.unwrap().is_empty());
    }

    pub(crate) async fn data_survives_close_and_reopen<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let net = mainnet();
        let (pending_id, token_id) = {
            let store = open(StoreLimits::default()).await;
            let pending = submit_new(&store, &net, &peer(2)).await;
            let approved = submit_new(&store, &net, &peer(1)).await;
            let token = store
                .approve(approved.id, new_token(&net, &peer(1), 1), None, NOW)
                .await
                .unwrap();
            store
                .revoke_id(&[0xde; 64], Some("old delegation"), NOW)
                .await
                .unwrap();
            store
                .create_invite([9; 32], &net, 1, NOW + 600, NOW)
                .await
                .unwrap();
            (pending.id, token.token_id)
        };
        let store = open(StoreLimits::default()).await;
        let pending = store.pending(None).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, pending_id);
        let undelivered = store.undelivered_for(&peer(1)).await.unwrap();
        assert_eq!(undelivered.len(), 1);
        assert_eq!(undelivered[0].token_id, token_id);
        assert_eq!(store.revocations().await.unwrap().version, 1);
        assert!(store.redeem_invite([9; 32], &net, NOW + 1).await.unwrap());
        // Ids keep increasing after a restart.
        let next = submit_new(&store, &net, &peer(3)).await;
        assert!(next.id > pending_id);
    }

    pub(crate) async fn second_handle_on_same_store_sees_committed_data<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let (net, p) = (mainnet(), peer(1));
        let writer = open(StoreLimits::default()).await;
        let other = open(StoreLimits::default()).await;
        let request = submit_new(&writer, &net, &p).await;
        assert_eq!(
            other.request(request.id).await.unwrap(),
            Some(request.clone())
        );
        // The other handle can decide it; the first sees the decision.
        let token = other
            .approve(request.id, new_token(&net, &p, 1), None, NOW)
            .await
            .unwrap();
        assert_eq!(writer.undelivered_for(&p).await.unwrap(), vec![token]);
        // The one-pending invariant holds across handles.
        assert!(matches!(
            other
                .submit_request(&net, &peer(2), None, false, NOW)
                .await
                .unwrap(),
            Submitted::New(_)
        ));
        assert!(matches!(
            writer
                .submit_request(&net, &peer(2), None, false, NOW)
                .await
                .unwrap(),
            Submitted::Existing(_)
        ));
    }

    pub(crate) async fn revocation_bumps_version_and_appears_in_snapshot<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, test, p) = (mainnet(), testnet(), peer(1));
        assert_eq!(
            store.revocations().await.unwrap(),
            RevocationSnapshot {
                version: 0,
                ids: vec![]
            }
        );

        let t1 = store.issue_direct(new_token(&net, &p, 1)).await.unwrap();
        let revoked = store
            .revoke_token(t1.token_id, Some("compromised"), NOW + 1)
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(NOW + 1));
        assert_eq!(
            store.revocations().await.unwrap(),
            RevocationSnapshot {
                version: 1,
                ids: vec![vec![1; 64]]
            }
        );
        // Revoking again changes nothing, so the version stays.
        store
            .revoke_token(t1.token_id, None, NOW + 2)
            .await
            .unwrap();
        assert_eq!(store.revocation_version().await.unwrap(), 1);

        // Two tokens of one peer: one bump for the whole call.
        store.issue_direct(new_token(&net, &p, 2)).await.unwrap();
        store.issue_direct(new_token(&test, &p, 3)).await.unwrap();
        store
            .issue_direct(new_token(&net, &peer(2), 4))
            .await
            .unwrap();
        let revoked = store
            .revoke_peer(&p, None, Some("left"), NOW + 3)
            .await
            .unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(revoked.iter().all(|t| t.revoked_at == Some(NOW + 3)));
        let snapshot = store.revocations().await.unwrap();
        assert_eq!(snapshot.version, 2);
        assert_eq!(snapshot.ids, vec![vec![1; 64], vec![2; 64], vec![3; 64]]);
        assert!(
            store
                .revoke_peer(&p, None, None, NOW)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.revocation_version().await.unwrap(), 2);

        // A raw id (e.g. a delegation's) is added once.
        assert!(
            store
                .revoke_id(&[0xaa; 64], Some("delegation"), NOW)
                .await
                .unwrap()
        );
        assert!(!store.revoke_id(&[0xaa; 64], None, NOW).await.unwrap());
        assert_eq!(store.revocation_version().await.unwrap(), 3);
        // A raw id matching an issued token revokes that token too.
        assert!(store.revoke_id(&[4; 64], None, NOW + 4).await.unwrap());
        assert_eq!(store.revocation_version().await.unwrap(), 4);
        assert!(store.members(None, NOW + 5).await.unwrap().is_empty());
        assert_eq!(store.counts().await.unwrap().revoked, 4);

        let err = store
            .revoke_token(IssuedTokenId(999), None, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TokenNotFound {
                    token_id: IssuedTokenId(999)
                }
            ),
            "{err:?}"
        );
        // A revoked id can never be issued again.
        let err = store
            .issue_direct(new_token(&net, &peer(3), 0xaa))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DuplicateRevocationId { .. }),
            "{err:?}"
        );
    }

    pub(crate) async fn revoked_entries_are_the_unexpired_revoked_tokens_of_one_network<
        S: Store,
    >(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p, q) = (mainnet(), peer(1), peer(2));
        let kept = store.issue_direct(new_token(&net, &p, 1)).await.unwrap();
        store.issue_direct(new_token(&net, &q, 2)).await.unwrap();
        store
            .issue_direct(new_token(&testnet(), &p, 3))
            .await
            .unwrap();
        assert!(store.revoked_entries(&net, 0).await.unwrap().is_empty());
        store.revoke_peer(&p, None, None, NOW).await.unwrap();
        let entries = store.revoked_entries(&net, NOW).await.unwrap();
        assert_eq!(entries, vec![(kept.revocation_id.clone(), kept.expires_at)]);
        // Past its expiry the entry is no longer needed.
        assert!(
            store
                .revoked_entries(&net, kept.expires_at)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn rights_are_stored_with_the_token<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let mut token = new_token(&mainnet(), &peer(1), 1);
        token.rights = vec!["dht_put".to_owned()];
        let row = store.issue_direct(token).await.unwrap();
        assert_eq!(row.rights, ["dht_put"]);
        let read = store.token(row.token_id).await.unwrap().unwrap();
        assert_eq!(read.rights, ["dht_put"]);
    }

    pub(crate) async fn revoke_peer_limited_to_one_network<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        store.issue_direct(new_token(&net, &p, 1)).await.unwrap();
        let test = store
            .issue_direct(new_token(&testnet(), &p, 2))
            .await
            .unwrap();
        let revoked = store.revoke_peer(&p, Some(&net), None, NOW).await.unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].network, net);
        assert_eq!(store.members(None, NOW + 1).await.unwrap(), vec![test]);
    }

    pub(crate) async fn members_are_newest_unexpired_unrevoked_per_network_and_peer<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        // Peers sort by their base58 text; name the two so the expected order is known.
        let (first, second) = if p.to_base58() < peer(2).to_base58() {
            (p, peer(2))
        } else {
            (peer(2), p)
        };
        let old = store.issue_direct(new_token(&net, &p, 1)).await.unwrap();
        let mut renewed = new_token(&net, &p, 2);
        renewed.issued_at = NOW + 100;
        renewed.expires_at = NOW + 7200;
        let renewed = store.issue_direct(renewed).await.unwrap();
        let mut short = new_token(&net, &peer(2), 3);
        short.expires_at = NOW + 10;
        let short = store.issue_direct(short).await.unwrap();
        let test = store
            .issue_direct(new_token(&testnet(), &p, 4))
            .await
            .unwrap();
        let in_order = |a: &IssuedTokenRow, b: &IssuedTokenRow| {
            if a.peer == first.to_base58() {
                vec![a.clone(), b.clone()]
            } else {
                assert_eq!(a.peer, second.to_base58());
                vec![b.clone(), a.clone()]
            }
        };

        let mut all = in_order(&renewed, &short);
        all.push(test.clone());
        assert_eq!(store.members(None, NOW + 5).await.unwrap(), all);
        assert_eq!(
            store.members(Some(&net), NOW + 5).await.unwrap(),
            in_order(&renewed, &short)
        );
        // Expiry is exclusive: at expires_at the token is no longer valid.
        assert_eq!(
            store.members(Some(&net), NOW + 10).await.unwrap(),
            vec![renewed.clone()]
        );
        // Revoking the newest falls back to the older valid token.
        store
            .revoke_token(renewed.token_id, None, NOW)
            .await
            .unwrap();
        assert_eq!(
            store.members(Some(&net), NOW + 20).await.unwrap(),
            vec![old]
        );
        assert!(
            store
                .members(Some(&net), NOW + 3600)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn invites_are_single_use_by_default<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let net = mainnet();
        let hash = [1u8; 32];
        let invite = store
            .create_invite(hash, &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        assert_eq!(invite.code_prefix, "01010101");
        assert!(store.redeem_invite(hash, &net, NOW + 1).await.unwrap());
        assert!(!store.redeem_invite(hash, &net, NOW + 2).await.unwrap());
        let listed = store.invites(Some(&net)).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uses_left, 0);
        assert!(!listed[0].is_usable(NOW + 2));
    }

    pub(crate) async fn multi_use_invite_counts_down<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let net = mainnet();
        store
            .create_invite([2; 32], &net, 2, NOW + 600, NOW)
            .await
            .unwrap();
        assert!(store.redeem_invite([2; 32], &net, NOW).await.unwrap());
        assert!(store.redeem_invite([2; 32], &net, NOW).await.unwrap());
        assert!(!store.redeem_invite([2; 32], &net, NOW).await.unwrap());
    }

    pub(crate) async fn expired_invite_is_refused<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let net = mainnet();
        store
            .create_invite([3; 32], &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        assert!(!store.redeem_invite([3; 32], &net, NOW + 600).await.unwrap());
        assert!(!store.redeem_invite([3; 32], &net, NOW + 601).await.unwrap());
        assert_eq!(
            store.invites(None).await.unwrap()[0].uses_left,
            1,
            "refusal leaves it unchanged"
        );
        let err = store
            .create_invite([4; 32], &net, 1, NOW, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }

    pub(crate) async fn wrong_network_or_unknown_invite_is_refused<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, test) = (mainnet(), testnet());
        store
            .create_invite([5; 32], &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        assert!(!store.redeem_invite([5; 32], &test, NOW).await.unwrap());
        assert!(!store.redeem_invite([6; 32], &net, NOW).await.unwrap());
        assert!(store.redeem_invite([5; 32], &net, NOW).await.unwrap());
        let err = store
            .create_invite([5; 32], &test, 1, NOW + 600, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InviteExists { network } if network == &net),
            "{err:?}"
        );
        assert_eq!(store.invites(Some(&test)).await.unwrap(), vec![]);
    }

    pub(crate) async fn submit_with_invite_redeems_and_queues_atomically<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        store
            .create_invite([7; 32], &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        let err = store
            .submit_with_invite(&net, &p, None, [8; 32], NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InviteRejected { .. }), "{err:?}");
        assert_eq!(
            store.counts().await.unwrap().pending,
            0,
            "a refused invite queues nothing"
        );

        let Submitted::New(row) = store
            .submit_with_invite(&net, &p, None, [7; 32], NOW)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        assert!(row.invite_used);
        assert_eq!(store.invites(None).await.unwrap()[0].uses_left, 0);
        // Resubmitting with the (now used) invite returns the same request.
        assert_eq!(
            store
                .submit_with_invite(&net, &p, None, [7; 32], NOW)
                .await
                .unwrap(),
            Submitted::Existing(row)
        );
    }

    pub(crate) async fn submit_with_invite_upgrades_existing_pending_request<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let plain = submit_new(&store, &net, &p).await;
        assert!(!plain.invite_used);
        store
            .create_invite([7; 32], &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        let upgraded = store
            .submit_with_invite(&net, &p, None, [7; 32], NOW)
            .await
            .unwrap();
        let Submitted::Existing(row) = upgraded else {
            panic!("expected the existing request");
        };
        assert_eq!(row.id, plain.id);
        assert!(row.invite_used);
        assert_eq!(store.counts().await.unwrap().pending, 1);
    }

    pub(crate) async fn one_invite_admits_one_of_two_racing_handles<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let net = mainnet();
        let a = open(StoreLimits::default()).await;
        let b = open(StoreLimits::default()).await;
        a.create_invite([11; 32], &net, 1, NOW + 600, NOW)
            .await
            .unwrap();
        let (pa, pb) = (peer(1), peer(2));
        let (ra, rb) = tokio::join!(
            a.submit_with_invite(&net, &pa, None, [11; 32], NOW),
            b.submit_with_invite(&net, &pb, None, [11; 32], NOW),
        );
        let admitted = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 1, "{ra:?} {rb:?}");
        let refused = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(refused, Err(StoreError::InviteRejected { .. })),
            "{refused:?}"
        );
        assert_eq!(a.counts().await.unwrap().pending, 1);
    }

    pub(crate) async fn rows_serialize_to_json_with_hex_bytes<S: Store>(
        open: impl Fn(StoreLimits) -> Opening<S>,
    ) {
        let store = open(StoreLimits::default()).await;
        let (net, p) = (mainnet(), peer(1));
        let token = store.issue_direct(new_token(&net, &p, 0xab)).await.unwrap();
        let json = serde_json::to_value(&token).unwrap();
        assert_eq!(json["revocation_id"], serde_json::json!("ab".repeat(64)));
        assert_eq!(json["token"], serde_json::json!("b1ab"));
        assert_eq!(json["network"], serde_json::json!("mainnet"));
        assert_eq!(json["token_id"], serde_json::json!(token.token_id.0));
        let request = submit_new(&store, &net, &p).await;
        let json = serde_json::to_value(Submitted::New(request)).unwrap();
        assert_eq!(json["outcome"], "new");
        assert_eq!(json["request"]["status"], "pending");
    }

    /// Instantiates every case of the suite as a `#[tokio::test]` for one back end.
    /// `$open` is an expression of type `fn(&Path) -> impl Future<Output = O>` where
    /// `O: Fn(StoreLimits) -> Opening<S>`: handed a fresh temporary directory for the test, it
    /// prepares an empty database (a file there, or a fresh database on a server) and returns
    /// the opener of handles on it.
    macro_rules! run_store_suite {
        ($open:expr) => {
            crate::store::suite::run_store_suite!(@cases $open;
                request_lifecycle_pending_then_approved,
                resubmission_returns_existing_pending_request_without_new_row,
                denied_peer_may_submit_again_as_new_row,
                queue_caps_refuse_per_network_and_total,
                hostile_labels_are_refused,
                approve_or_deny_of_non_pending_is_refused,
                bulk_denial_selects_by_network_age_and_label_in_one_step,
                expired_pending_requests_free_the_queue_at_the_next_request,
                approve_refuses_token_for_other_peer_or_network_and_changes_nothing,
                duplicate_revocation_id_rolls_back_the_approval,
                undelivered_until_marked_delivered_idempotently,
                revoked_tokens_are_not_delivered,
                data_survives_close_and_reopen,
                second_handle_on_same_store_sees_committed_data,
                revocation_bumps_version_and_appears_in_snapshot,
                revoke_peer_limited_to_one_network,
                rights_are_stored_with_the_token,
                revoked_entries_are_the_unexpired_revoked_tokens_of_one_network,
                members_are_newest_unexpired_unrevoked_per_network_and_peer,
                invites_are_single_use_by_default,
                multi_use_invite_counts_down,
                expired_invite_is_refused,
                wrong_network_or_unknown_invite_is_refused,
                submit_with_invite_redeems_and_queues_atomically,
                submit_with_invite_upgrades_existing_pending_request,
                one_invite_admits_one_of_two_racing_handles,
                rows_serialize_to_json_with_hex_bytes,
            );
        };
        (@cases $open:expr; $($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let prepare = $open;
                    let open = prepare(dir.path()).await;
                    crate::store::suite::$case(open).await;
                }
            )*
        };
    }
    pub(crate) use run_store_suite;
}
