//! Persistent, transactional seednode state in SQLite (WAL mode).
//!
//! The store owns the join-request queue, the tokens the seednode issued, the
//! revocation set and invite codes. It holds plain data only (peers are
//! base58 PeerId text, tokens and revocation ids are bytes): no cryptography,
//! no clock, no networking.
//!
//! # Invariants
//! - **One pending request per (network, peer).** A partial unique index
//!   enforces it; resubmitting returns the existing request instead of
//!   adding a row. A peer whose request was decided may submit again.
//! - **Every operation is one transaction.** Approving a request and
//!   inserting its token commit together or not at all, so a crash can never
//!   leave an approved request without a token (or a token without an
//!   approval). Writes take the write lock up front (`BEGIN IMMEDIATE`) so
//!   two handles on one file never deadlock on a lock upgrade.
//! - **Nothing committed is lost on SIGKILL or power loss:** `journal_mode=WAL`
//!   with `synchronous=FULL`.
//! - **The revocation-set version strictly increases,** by exactly one for
//!   every call that adds to the set; calls that change nothing leave it
//!   alone, so verifier caches keyed on it stay warm.
//! - **Times are supplied by callers** (`now`, unix seconds) and never read
//!   from the clock here, so the store is deterministic under test.
//! - **Input from the network is bounded:** the pending queue is capped per
//!   network and in total ([`StoreLimits`]); labels, network names and peer
//!   ids are length-capped and may not contain control characters (they end
//!   up on an operator's terminal).
//! - **Invite codes are never stored,** only the SHA-256 hash the caller
//!   passes in; listings show a short hex prefix of that hash.
//! - **The database file is private:** created with mode 0600, and an
//!   existing file readable by group or others is refused.

use std::fmt;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use serde::{Serialize, Serializer};

/// Schema version written to `PRAGMA user_version` by this code.
pub const SCHEMA_VERSION: u32 = 1;

/// `PRAGMA application_id` marking a Cordon seednode store ("Cord").
const APPLICATION_ID: i32 = 0x436f_7264;

/// How long a write waits for another handle's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted network name, in bytes (a DNS name's maximum).
pub const MAX_NETWORK_BYTES: usize = 253;

/// Longest accepted peer id text, in bytes (base58 PeerIds are about 52).
pub const MAX_PEER_BYTES: usize = 128;

/// Bytes of an invite's code hash shown in listings (as hex).
const INVITE_PREFIX_BYTES: usize = 4;

/// Migrations, index `i` upgrades schema version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    revocation_version INTEGER NOT NULL CHECK (revocation_version >= 0)
);
INSERT INTO meta (id, revocation_version) VALUES (1, 0);

CREATE TABLE join_requests (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    network           TEXT    NOT NULL,
    peer              TEXT    NOT NULL,
    label             TEXT,
    invite_used       INTEGER NOT NULL CHECK (invite_used IN (0, 1)),
    created_at        INTEGER NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'approved', 'denied')),
    decided_at        INTEGER,
    decided_by_policy TEXT,
    deny_reason       TEXT,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE UNIQUE INDEX join_requests_one_pending
    ON join_requests (network, peer) WHERE status = 'pending';
CREATE INDEX join_requests_by_peer ON join_requests (network, peer, id);
CREATE INDEX join_requests_by_status ON join_requests (status, network);

CREATE TABLE issued_tokens (
    token_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    INTEGER UNIQUE REFERENCES join_requests (id),
    network       TEXT    NOT NULL,
    peer          TEXT    NOT NULL,
    roles         TEXT    NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revocation_id BLOB    NOT NULL UNIQUE,
    token         BLOB    NOT NULL,
    delivered_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX issued_tokens_by_peer ON issued_tokens (peer, network);
CREATE INDEX issued_tokens_live ON issued_tokens (network, peer, expires_at)
    WHERE revoked_at IS NULL;
CREATE INDEX issued_tokens_undelivered ON issued_tokens (peer)
    WHERE delivered_at IS NULL AND revoked_at IS NULL;

CREATE TABLE revocations (
    revocation_id BLOB    PRIMARY KEY,
    revoked_at    INTEGER NOT NULL,
    reason        TEXT
);

CREATE TABLE invites (
    code_hash  BLOB    PRIMARY KEY CHECK (length(code_hash) = 32),
    network    TEXT    NOT NULL,
    uses_left  INTEGER NOT NULL CHECK (uses_left >= 0),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX invites_by_network ON invites (network, created_at);
";

const REQUEST_COLS: &str = "id, network, peer, label, invite_used, created_at, status, \
     decided_at, decided_by_policy, deny_reason";

const TOKEN_COLS: &str = "token_id, request_id, network, peer, roles, issued_at, expires_at, \
     revocation_id, token, delivered_at, revoked_at";

/// Bounds on what the network can make the store hold.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Most pending join requests across all networks. Default: 10_000.
    pub max_pending_total: usize,
    /// Most pending join requests for one network. Default: 1_000.
    pub max_pending_per_network: usize,
    /// Longest accepted join-request label, in bytes. Default: 64.
    pub max_label_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_pending_total: 10_000,
            max_pending_per_network: 1_000,
            max_label_bytes: 64,
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
        network: String,
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
        id: i64,
    },
    /// The request was already decided.
    #[error(
        "join request {id} is already {status}; only pending requests can be approved or denied"
    )]
    NotPending {
        /// The request id.
        id: i64,
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
        id: i64,
        /// The request's network.
        request_network: String,
        /// The request's peer.
        request_peer: String,
        /// The token's network.
        token_network: String,
        /// The token's peer.
        token_peer: String,
    },
    /// No issued token has this id.
    #[error("issued token {token_id} does not exist; list tokens with `seednode members`")]
    TokenNotFound {
        /// The token id.
        token_id: i64,
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
        network: String,
    },
    /// The presented invite cannot be redeemed.
    #[error(
        "invite code is unknown, expired, used up, or not for network {network}; ask the operator for a new invite"
    )]
    InviteRejected {
        /// The network the invite was presented for.
        network: String,
    },
    /// SQLite failed.
    #[error("seednode database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

impl ToSql for RequestStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for RequestStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "denied" => Ok(Self::Denied),
            other => Err(FromSqlError::Other(
                format!("unknown join request status {other:?}").into(),
            )),
        }
    }
}

/// A join request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinRequestRow {
    /// Request id (never reused).
    pub id: i64,
    /// Network the peer asked to join.
    pub network: String,
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
    pub network: String,
    /// Peer the token names.
    pub peer: String,
    /// Roles the token grants.
    pub roles: Vec<String>,
    /// Issue time (unix seconds).
    pub issued_at: u64,
    /// Expiry (unix seconds); must be after `issued_at`.
    pub expires_at: u64,
    /// The token's revocation id (its membership block signature).
    pub revocation_id: Vec<u8>,
    /// The serialized token.
    pub token: Vec<u8>,
}

/// An issued token as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuedTokenRow {
    /// Token id (never reused).
    pub token_id: i64,
    /// The join request it answers; `None` for tokens issued directly.
    pub request_id: Option<i64>,
    /// Network the token grants.
    pub network: String,
    /// Peer the token names.
    pub peer: String,
    /// Roles the token grants.
    pub roles: Vec<String>,
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
    pub network: String,
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

/// The seednode's persistent state: one SQLite connection.
///
/// Open one `Store` per task or thread that needs it (or share one behind a
/// mutex); several handles on one file see each other's committed data.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
    limits: StoreLimits,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating with mode 0600 if missing) the database at `path` and
    /// migrates it to [`SCHEMA_VERSION`].
    ///
    /// Refuses a file, WAL or shared-memory file that group or others can
    /// access, a database of another application, and a newer schema.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        check_private(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                check_private(&side)?;
            }
        }
        // No SQLITE_OPEN_CREATE: the file exists with the right mode, and if
        // it vanished meanwhile SQLite must not recreate it with umask bits.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::init(conn, Some(path.to_path_buf()), limits)
    }

    /// Opens a private in-memory store (for tests and dry runs).
    pub fn open_in_memory(limits: StoreLimits) -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, None, limits)
    }

    fn init(
        mut conn: Connection,
        path: Option<PathBuf>,
        limits: StoreLimits,
    ) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::WalUnavailable { mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, path.as_deref())?;
        Ok(Store { conn, path, limits })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Queues a join request, or returns the peer's pending one for the
    /// network if it has one (no duplicate row; the label is not updated).
    ///
    /// `invite_used` records that the caller already redeemed an invite; see
    /// [`Store::submit_with_invite`] to redeem and queue in one transaction.
    pub fn submit_request(
        &mut self,
        network: &str,
        peer: &str,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let label = self.check_submission(network, peer, label)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = pending_for(&tx, network, peer)? {
            return Ok(Submitted::Existing(existing));
        }
        check_caps(&tx, &self.limits, network)?;
        let row = insert_request(&tx, network, peer, label, invite_used, now)?;
        tx.commit()?;
        Ok(Submitted::New(row))
    }

    /// Redeems the invite with `code_hash` for `network` and queues the
    /// request marked `invite_used`, in one transaction, so a crash can never
    /// consume an invite without recording the request it admitted.
    ///
    /// If the peer already has a pending request that used an invite, it is
    /// returned and the new invite is left untouched; a pending request
    /// without one is upgraded (the invite is redeemed and the row marked).
    /// The invite is not consumed when the queue is full.
    pub fn submit_with_invite(
        &mut self,
        network: &str,
        peer: &str,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let label = self.check_submission(network, peer, label)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = pending_for(&tx, network, peer)? {
            if existing.invite_used {
                return Ok(Submitted::Existing(existing));
            }
            if !redeem(&tx, code_hash, network, now)? {
                return Err(StoreError::InviteRejected {
                    network: network.to_owned(),
                });
            }
            tx.execute(
                "UPDATE join_requests SET invite_used = 1 WHERE id = ?1",
                [existing.id],
            )?;
            let row =
                get_request(&tx, existing.id)?.ok_or(StoreError::NotFound { id: existing.id })?;
            tx.commit()?;
            return Ok(Submitted::Existing(row));
        }
        check_caps(&tx, &self.limits, network)?;
        if !redeem(&tx, code_hash, network, now)? {
            return Err(StoreError::InviteRejected {
                network: network.to_owned(),
            });
        }
        let row = insert_request(&tx, network, peer, label, true, now)?;
        tx.commit()?;
        Ok(Submitted::New(row))
    }

    fn check_submission<'a>(
        &self,
        network: &str,
        peer: &str,
        label: Option<&'a str>,
    ) -> Result<Option<&'a str>, StoreError> {
        check_text("network", network, MAX_NETWORK_BYTES)?;
        check_text("peer", peer, MAX_PEER_BYTES)?;
        match label {
            None | Some("") => Ok(None),
            Some(label) => {
                check_text("label", label, self.limits.max_label_bytes)?;
                Ok(Some(label))
            }
        }
    }

    /// The join request with this id.
    pub fn request(&self, id: i64) -> Result<Option<JoinRequestRow>, StoreError> {
        get_request(&self.conn, id)
    }

    /// Pending requests, oldest first, for one network or all.
    pub fn pending(&self, network: Option<&str>) -> Result<Vec<JoinRequestRow>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests \
             WHERE status = 'pending' AND (?1 IS NULL OR network = ?1) ORDER BY id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([network], request_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The peer's most recent request for the network, whatever its status.
    pub fn latest_request(
        &self,
        network: &str,
        peer: &str,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests WHERE network = ?1 AND peer = ?2 \
             ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![network, peer], request_from_row)
            .optional()?)
    }

    /// Approves pending request `id` and records `issued` as its undelivered
    /// token, in one transaction.
    ///
    /// `decided_by_policy` names the policy that approved it automatically
    /// (`None` for an operator's decision).
    pub fn approve(
        &mut self,
        id: i64,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(&issued)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let request = get_request(&tx, id)?.ok_or(StoreError::NotFound { id })?;
        if request.status != RequestStatus::Pending {
            return Err(StoreError::NotPending {
                id,
                status: request.status,
            });
        }
        if request.network != issued.network || request.peer != issued.peer {
            return Err(StoreError::Mismatch {
                id,
                request_network: request.network,
                request_peer: request.peer,
                token_network: issued.network,
                token_peer: issued.peer,
            });
        }
        tx.execute(
            "UPDATE join_requests SET status = 'approved', decided_at = ?2, \
             decided_by_policy = ?3 WHERE id = ?1",
            params![id, now, decided_by_policy],
        )?;
        let row = insert_token(&tx, Some(id), &issued)?;
        tx.commit()?;
        Ok(row)
    }

    /// Denies pending request `id`. The peer may submit again afterwards.
    pub fn deny(
        &mut self,
        id: i64,
        reason: Option<&str>,
        now: u64,
    ) -> Result<JoinRequestRow, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let request = get_request(&tx, id)?.ok_or(StoreError::NotFound { id })?;
        if request.status != RequestStatus::Pending {
            return Err(StoreError::NotPending {
                id,
                status: request.status,
            });
        }
        tx.execute(
            "UPDATE join_requests SET status = 'denied', decided_at = ?2, deny_reason = ?3 \
             WHERE id = ?1",
            params![id, now, reason],
        )?;
        let row = get_request(&tx, id)?.ok_or(StoreError::NotFound { id })?;
        tx.commit()?;
        Ok(row)
    }

    /// Records a token issued without a join request (e.g. by an operator
    /// for a known peer), undelivered. Its `issued_at` is the record time.
    pub fn issue_direct(&mut self, issued: NewToken) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(&issued)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = insert_token(&tx, None, &issued)?;
        tx.commit()?;
        Ok(row)
    }

    /// The issued token with this id.
    pub fn token(&self, token_id: i64) -> Result<Option<IssuedTokenRow>, StoreError> {
        get_token(&self.conn, token_id)
    }

    /// Tokens for `peer` that were neither delivered nor revoked, oldest
    /// first. Expired ones are included; callers may skip them.
    pub fn undelivered_for(&self, peer: &str) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM issued_tokens \
             WHERE peer = ?1 AND delivered_at IS NULL AND revoked_at IS NULL ORDER BY token_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([peer], token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that the node received token `token_id`. Idempotent: a second
    /// call keeps the first delivery time.
    pub fn mark_delivered(
        &mut self,
        token_id: i64,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE issued_tokens SET delivered_at = COALESCE(delivered_at, ?2) \
             WHERE token_id = ?1",
            params![token_id, now],
        )?;
        if changed == 0 {
            return Err(StoreError::TokenNotFound { token_id });
        }
        let row = get_token(&tx, token_id)?.ok_or(StoreError::TokenNotFound { token_id })?;
        tx.commit()?;
        Ok(row)
    }

    /// The token issued for join request `request_id`, if it was approved.
    pub fn token_for_request(&self, request_id: i64) -> Result<Option<IssuedTokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM issued_tokens WHERE request_id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([request_id], token_from_row)
            .optional()?)
    }

    /// Current members: for each (network, peer), the newest token that is
    /// neither revoked nor expired at `now` (`now < expires_at`). Sorted by
    /// network, then peer.
    pub fn members(
        &self,
        network: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM ( \
                 SELECT {TOKEN_COLS}, ROW_NUMBER() OVER ( \
                     PARTITION BY network, peer ORDER BY issued_at DESC, token_id DESC) AS newest \
                 FROM issued_tokens \
                 WHERE revoked_at IS NULL AND expires_at > ?1 AND (?2 IS NULL OR network = ?2)) \
             WHERE newest = 1 ORDER BY network, peer"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now, network], token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes one issued token: marks it revoked and adds its revocation id
    /// to the set. Revoking an already revoked token changes nothing.
    pub fn revoke_token(
        &mut self,
        token_id: i64,
        reason: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token = get_token(&tx, token_id)?.ok_or(StoreError::TokenNotFound { token_id })?;
        let marked = tx.execute(
            "UPDATE issued_tokens SET revoked_at = ?2 WHERE token_id = ?1 AND revoked_at IS NULL",
            params![token_id, now],
        )?;
        let added = insert_revocation(&tx, &token.revocation_id, reason, now)?;
        if marked > 0 || added {
            bump_revocation_version(&tx)?;
        }
        let row = get_token(&tx, token_id)?.ok_or(StoreError::TokenNotFound { token_id })?;
        tx.commit()?;
        Ok(row)
    }

    /// Revokes every unrevoked token of `peer` (on one network or all) and
    /// returns them, now marked revoked. The version moves once per call.
    pub fn revoke_peer(
        &mut self,
        peer: &str,
        network: Option<&str>,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT token_id FROM issued_tokens WHERE peer = ?1 \
                 AND (?2 IS NULL OR network = ?2) AND revoked_at IS NULL ORDER BY token_id",
            )?;
            let rows = stmt.query_map(params![peer, network], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut revoked = Vec::with_capacity(ids.len());
        for token_id in ids {
            tx.execute(
                "UPDATE issued_tokens SET revoked_at = ?2 WHERE token_id = ?1",
                params![token_id, now],
            )?;
            let row = get_token(&tx, token_id)?.ok_or(StoreError::TokenNotFound { token_id })?;
            insert_revocation(&tx, &row.revocation_id, reason, now)?;
            revoked.push(row);
        }
        if !revoked.is_empty() {
            bump_revocation_version(&tx)?;
        }
        tx.commit()?;
        Ok(revoked)
    }

    /// Adds a raw revocation id (e.g. a whole delegation's) to the set, and
    /// marks any issued token carrying it revoked. Returns whether anything
    /// changed.
    pub fn revoke_id(
        &mut self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        if revocation_id.is_empty() {
            return Err(invalid("revocation id", "is empty".to_owned()));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let added = insert_revocation(&tx, revocation_id, reason, now)?;
        let marked = tx.execute(
            "UPDATE issued_tokens SET revoked_at = ?2 \
             WHERE revocation_id = ?1 AND revoked_at IS NULL",
            params![revocation_id, now],
        )?;
        let changed = added || marked > 0;
        if changed {
            bump_revocation_version(&tx)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The revocation set and its version, from one consistent snapshot.
    pub fn revocations(&self) -> Result<RevocationSnapshot, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let version = read_revocation_version(&tx)?;
        let ids = {
            let mut stmt =
                tx.prepare_cached("SELECT revocation_id FROM revocations ORDER BY revocation_id")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            rows.collect::<Result<Vec<Vec<u8>>, _>>()?
        };
        tx.commit()?;
        Ok(RevocationSnapshot { version, ids })
    }

    /// The revocation-set version alone (cheap, for cache keys).
    pub fn revocation_version(&self) -> Result<u64, StoreError> {
        read_revocation_version(&self.conn)
    }

    /// Records an invite for `network` by the SHA-256 hash of its code,
    /// redeemable `uses` times while `now < expires_at`.
    pub fn create_invite(
        &mut self,
        code_hash: [u8; 32],
        network: &str,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<InviteRow, StoreError> {
        check_text("network", network, MAX_NETWORK_BYTES)?;
        if uses == 0 {
            return Err(invalid("invite uses", "must be at least 1".to_owned()));
        }
        if expires_at <= now {
            return Err(invalid(
                "invite expiry",
                format!("{expires_at} is not after now ({now})"),
            ));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT network FROM invites WHERE code_hash = ?1",
                [code_hash],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(network) = existing {
            return Err(StoreError::InviteExists { network });
        }
        tx.execute(
            "INSERT INTO invites (code_hash, network, uses_left, expires_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![code_hash, network, uses, expires_at, now],
        )?;
        tx.commit()?;
        Ok(InviteRow {
            code_prefix: hex(&code_hash[..INVITE_PREFIX_BYTES]),
            network: network.to_owned(),
            uses_left: uses,
            expires_at,
            created_at: now,
        })
    }

    /// Uses up one redemption of the invite if it exists for `network`, has
    /// not expired (`now < expires_at`) and has uses left. Returns whether it
    /// was redeemed; a refused invite is left unchanged.
    pub fn redeem_invite(
        &mut self,
        code_hash: [u8; 32],
        network: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let redeemed = redeem(&tx, code_hash, network, now)?;
        tx.commit()?;
        Ok(redeemed)
    }

    /// Invites (including used-up and expired ones), oldest first.
    pub fn invites(&self, network: Option<&str>) -> Result<Vec<InviteRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT code_hash, network, uses_left, expires_at, created_at FROM invites \
             WHERE (?1 IS NULL OR network = ?1) ORDER BY created_at, network, code_hash",
        )?;
        let rows = stmt.query_map([network], |row| {
            let hash: Vec<u8> = row.get(0)?;
            Ok(InviteRow {
                code_prefix: hex(&hash[..hash.len().min(INVITE_PREFIX_BYTES)]),
                network: row.get(1)?,
                uses_left: row.get(2)?,
                expires_at: row.get(3)?,
                created_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Row counts for metrics, from one snapshot.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        Ok(self.conn.query_row(
            "SELECT \
               (SELECT COUNT(*) FROM join_requests WHERE status = 'pending'), \
               (SELECT COUNT(*) FROM join_requests WHERE status = 'approved'), \
               (SELECT COUNT(*) FROM join_requests WHERE status = 'denied'), \
               (SELECT COUNT(*) FROM issued_tokens), \
               (SELECT COUNT(*) FROM issued_tokens WHERE delivered_at IS NOT NULL), \
               (SELECT COUNT(*) FROM issued_tokens WHERE revoked_at IS NOT NULL)",
            [],
            |row| {
                Ok(Counts {
                    pending: row.get(0)?,
                    approved: row.get(1)?,
                    denied: row.get(2)?,
                    issued: row.get(3)?,
                    delivered: row.get(4)?,
                    revoked: row.get(5)?,
                })
            },
        )?)
    }
}

/// Refuses a file that group or others can access in any way.
fn check_private(path: &Path) -> Result<(), StoreError> {
    let meta = std::fs::metadata(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(StoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                ErrorKind::InvalidInput,
                "not a regular file; give the path of the seednode database file",
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: Option<&Path>) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let app_id: i32 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let foreign = || StoreError::ForeignDatabase {
        path: path.map(Path::to_path_buf).unwrap_or_default(),
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(foreign());
    }
    if found == 0 {
        let tables: i64 =
            tx.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))?;
        if tables > 0 {
            return Err(foreign());
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    let start = usize::try_from(found).map_err(|_| StoreError::SchemaTooNew {
        found,
        supported: SCHEMA_VERSION,
    })?;
    for sql in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(sql)?;
    }
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

fn invalid(field: &'static str, reason: String) -> StoreError {
    StoreError::InvalidInput { field, reason }
}

/// Non-empty, at most `max` bytes, no control characters (the text may be
/// shown on an operator's terminal).
fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
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

fn check_new_token(token: &NewToken) -> Result<(), StoreError> {
    check_text("token network", &token.network, MAX_NETWORK_BYTES)?;
    check_text("token peer", &token.peer, MAX_PEER_BYTES)?;
    if token.revocation_id.is_empty() {
        return Err(invalid("revocation id", "is empty".to_owned()));
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

fn check_caps(conn: &Connection, limits: &StoreLimits, network: &str) -> Result<(), StoreError> {
    let (total, in_network): (usize, usize) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(network = ?1), 0) FROM join_requests \
         WHERE status = 'pending'",
        [network],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if in_network >= limits.max_pending_per_network {
        return Err(StoreError::QueueFull {
            network: network.to_owned(),
            limit: limits.max_pending_per_network,
        });
    }
    if total >= limits.max_pending_total {
        return Err(StoreError::QueueFullTotal {
            limit: limits.max_pending_total,
        });
    }
    Ok(())
}

fn pending_for(
    conn: &Connection,
    network: &str,
    peer: &str,
) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM join_requests \
         WHERE network = ?1 AND peer = ?2 AND status = 'pending'"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![network, peer], request_from_row)
        .optional()?)
}

fn insert_request(
    conn: &Connection,
    network: &str,
    peer: &str,
    label: Option<&str>,
    invite_used: bool,
    now: u64,
) -> Result<JoinRequestRow, StoreError> {
    conn.execute(
        "INSERT INTO join_requests (network, peer, label, invite_used, created_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
        params![network, peer, label, invite_used, now],
    )?;
    let id = conn.last_insert_rowid();
    get_request(conn, id)?.ok_or(StoreError::NotFound { id })
}

fn get_request(conn: &Connection, id: i64) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!("SELECT {REQUEST_COLS} FROM join_requests WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], request_from_row)
        .optional()?)
}

fn insert_token(
    conn: &Connection,
    request_id: Option<i64>,
    token: &NewToken,
) -> Result<IssuedTokenRow, StoreError> {
    let known: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM issued_tokens WHERE revocation_id = ?1) \
             OR EXISTS (SELECT 1 FROM revocations WHERE revocation_id = ?1)",
        [&token.revocation_id],
        |row| row.get(0),
    )?;
    if known {
        return Err(StoreError::DuplicateRevocationId {
            revocation_id: hex(&token.revocation_id),
        });
    }
    let roles = serde_json::to_string(&token.roles)
        .map_err(|e| invalid("roles", format!("cannot be encoded: {e}")))?;
    conn.execute(
        "INSERT INTO issued_tokens (request_id, network, peer, roles, issued_at, expires_at, \
         revocation_id, token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            request_id,
            token.network,
            token.peer,
            roles,
            token.issued_at,
            token.expires_at,
            token.revocation_id,
            token.token
        ],
    )?;
    let token_id = conn.last_insert_rowid();
    get_token(conn, token_id)?.ok_or(StoreError::TokenNotFound { token_id })
}

fn get_token(conn: &Connection, token_id: i64) -> Result<Option<IssuedTokenRow>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLS} FROM issued_tokens WHERE token_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([token_id], token_from_row)
        .optional()?)
}

/// Returns whether the id was new to the set.
fn insert_revocation(
    conn: &Connection,
    revocation_id: &[u8],
    reason: Option<&str>,
    now: u64,
) -> Result<bool, StoreError> {
    let added = conn.execute(
        "INSERT OR IGNORE INTO revocations (revocation_id, revoked_at, reason) \
         VALUES (?1, ?2, ?3)",
        params![revocation_id, now, reason],
    )?;
    Ok(added > 0)
}

fn bump_revocation_version(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE meta SET revocation_version = revocation_version + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

fn read_revocation_version(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row(
        "SELECT revocation_version FROM meta WHERE id = 1",
        [],
        |row| row.get(0),
    )?)
}

fn redeem(
    conn: &Connection,
    code_hash: [u8; 32],
    network: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1 \
         WHERE code_hash = ?1 AND network = ?2 AND expires_at > ?3 AND uses_left > 0",
        params![code_hash, network, now],
    )?;
    Ok(changed == 1)
}

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<JoinRequestRow> {
    Ok(JoinRequestRow {
        id: row.get(0)?,
        network: row.get(1)?,
        peer: row.get(2)?,
        label: row.get(3)?,
        invite_used: row.get(4)?,
        created_at: row.get(5)?,
        status: row.get(6)?,
        decided_at: row.get(7)?,
        decided_by_policy: row.get(8)?,
        deny_reason: row.get(9)?,
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<IssuedTokenRow> {
    let roles: String = row.get(4)?;
    let roles = serde_json::from_str(&roles)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e)))?;
    Ok(IssuedTokenRow {
        token_id: row.get(0)?,
        request_id: row.get(1)?,
        network: row.get(2)?,
        peer: row.get(3)?,
        roles,
        issued_at: row.get(5)?,
        expires_at: row.get(6)?,
        revocation_id: row.get(7)?,
        token: row.get(8)?,
        delivered_at: row.get(9)?,
        revoked_at: row.get(10)?,
    })
}

fn hex(bytes: &[u8]) -> String {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    const NET: &str = "mainnet";
    const PEER: &str = "12D3KooWPeerA";
    const NOW: u64 = 1_700_000_000;

    fn temp_db() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        (dir, path)
    }

    fn open(path: &Path) -> Store {
        Store::open(path, StoreLimits::default()).unwrap()
    }

    fn new_token(network: &str, peer: &str, rev: u8) -> NewToken {
        NewToken {
            network: network.to_owned(),
            peer: peer.to_owned(),
            roles: vec!["member".to_owned()],
            issued_at: NOW,
            expires_at: NOW + 3600,
            revocation_id: vec![rev; 64],
            token: vec![0xb1, rev],
        }
    }

    fn submit_new(store: &mut Store, network: &str, peer: &str) -> JoinRequestRow {
        match store
            .submit_request(network, peer, Some("laptop"), false, NOW)
            .unwrap()
        {
            Submitted::New(row) => row,
            other => panic!("expected a new request, got {other:?}"),
        }
    }

    #[test]
    fn open_creates_file_with_mode_0600_and_wal() {
        let (_dir, path) = temp_db();
        let store = open(&path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let journal: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = store
            .conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let version: u32 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn group_readable_db_file_is_refused_with_chmod_hint() {
        let (_dir, path) = temp_db();
        drop(open(&path));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Store::open(&path, StoreLimits::default()).unwrap_err();
        match &err {
            StoreError::Permissions { path: p, mode } => {
                assert_eq!(p, &path);
                assert_eq!(*mode, 0o640);
            }
            other => panic!("expected Permissions, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn directory_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(dir.path(), StoreLimits::default()).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_dir, path) = temp_db();
        drop(open(&path));
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Store::open(&path, StoreLimits::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
    }

    #[test]
    fn foreign_sqlite_database_is_refused() {
        let (_dir, path) = temp_db();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE other (x INTEGER)")
                .unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Store::open(&path, StoreLimits::default()).unwrap_err();
        assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}");
    }

    #[test]
    fn request_lifecycle_pending_then_approved() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let request = submit_new(&mut store, NET, PEER);
        assert_eq!(request.status, RequestStatus::Pending);
        assert_eq!(request.label.as_deref(), Some("laptop"));
        assert_eq!(request.created_at, NOW);
        assert_eq!(store.pending(None).unwrap(), vec![request.clone()]);
        assert_eq!(store.pending(Some(NET)).unwrap(), vec![request.clone()]);
        assert!(store.pending(Some("testnet")).unwrap().is_empty());
        assert_eq!(store.request(request.id).unwrap(), Some(request.clone()));
        assert_eq!(store.request(request.id + 100).unwrap(), None);

        let issued = store
            .approve(request.id, new_token(NET, PEER, 1), Some("invite"), NOW + 5)
            .unwrap();
        assert_eq!(issued.request_id, Some(request.id));
        assert_eq!(issued.roles, vec!["member".to_owned()]);
        assert_eq!(issued.delivered_at, None);
        assert_eq!(issued.revoked_at, None);

        let approved = store.request(request.id).unwrap().unwrap();
        assert_eq!(approved.status, RequestStatus::Approved);
        assert_eq!(approved.decided_at, Some(NOW + 5));
        assert_eq!(approved.decided_by_policy.as_deref(), Some("invite"));
        assert!(store.pending(None).unwrap().is_empty());
        assert_eq!(
            store.token_for_request(request.id).unwrap(),
            Some(issued.clone())
        );
        assert_eq!(store.latest_request(NET, PEER).unwrap(), Some(approved));
        assert_eq!(store.members(Some(NET), NOW + 10).unwrap(), vec![issued]);
        assert_eq!(
            store.counts().unwrap(),
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

    #[test]
    fn resubmission_returns_existing_pending_request_without_new_row() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let first = submit_new(&mut store, NET, PEER);
        let again = store
            .submit_request(NET, PEER, Some("other label"), false, NOW + 60)
            .unwrap();
        assert_eq!(again, Submitted::Existing(first.clone()));
        assert_eq!(store.pending(None).unwrap().len(), 1);
        // The same peer on another network is a separate request.
        let other = submit_new(&mut store, "testnet", PEER);
        assert_ne!(other.id, first.id);
        assert_eq!(store.counts().unwrap().pending, 2);
    }

    #[test]
    fn denied_peer_may_submit_again_as_new_row() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let first = submit_new(&mut store, NET, PEER);
        let denied = store.deny(first.id, Some("unknown host"), NOW + 1).unwrap();
        assert_eq!(denied.status, RequestStatus::Denied);
        assert_eq!(denied.deny_reason.as_deref(), Some("unknown host"));
        assert_eq!(denied.decided_at, Some(NOW + 1));
        let second = submit_new(&mut store, NET, PEER);
        assert!(second.id > first.id);
        assert_eq!(store.latest_request(NET, PEER).unwrap(), Some(second));
        assert_eq!(store.counts().unwrap().denied, 1);
    }

    #[test]
    fn queue_caps_refuse_per_network_and_total() {
        let (_dir, path) = temp_db();
        let limits = StoreLimits {
            max_pending_total: 3,
            max_pending_per_network: 2,
            max_label_bytes: 64,
        };
        let mut store = Store::open(&path, limits).unwrap();
        submit_new(&mut store, NET, "p1");
        submit_new(&mut store, NET, "p2");
        let err = store
            .submit_request(NET, "p3", None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::QueueFull { network, limit: 2 } if network == NET),
            "{err:?}"
        );
        // A peer already queued still gets its request back at the cap.
        assert!(matches!(
            store.submit_request(NET, "p1", None, false, NOW).unwrap(),
            Submitted::Existing(_)
        ));
        submit_new(&mut store, "testnet", "p4");
        let err = store
            .submit_request("labnet", "p5", None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::QueueFullTotal { limit: 3 }),
            "{err:?}"
        );
        assert_eq!(store.counts().unwrap().pending, 3);
        // Deciding a request frees a slot.
        let p1 = store.latest_request(NET, "p1").unwrap().unwrap();
        store.deny(p1.id, None, NOW).unwrap();
        submit_new(&mut store, NET, "p3");
    }

    #[test]
    fn hostile_labels_and_names_are_refused() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let long = "x".repeat(65);
        let err = store
            .submit_request(NET, PEER, Some(&long), false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "label", .. }),
            "{err:?}"
        );
        let err = store
            .submit_request(NET, PEER, Some("\x1b[31mhi"), false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "label", .. }),
            "{err:?}"
        );
        let err = store
            .submit_request("", PEER, None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidInput {
                    field: "network",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store
            .submit_request(NET, &"p".repeat(MAX_PEER_BYTES + 1), None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "peer", .. }),
            "{err:?}"
        );
        assert_eq!(store.counts().unwrap().pending, 0);
        // Exactly at the limit is fine.
        store
            .submit_request(NET, PEER, Some(&"x".repeat(64)), false, NOW)
            .unwrap();
    }

    #[test]
    fn approve_or_deny_of_non_pending_is_refused() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let approved = submit_new(&mut store, NET, PEER);
        store
            .approve(approved.id, new_token(NET, PEER, 1), None, NOW)
            .unwrap();
        let err = store
            .approve(approved.id, new_token(NET, PEER, 2), None, NOW)
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
        let err = store.deny(approved.id, None, NOW).unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Approved,
                ..
            }
        ));

        let denied = submit_new(&mut store, NET, "peerB");
        store.deny(denied.id, None, NOW).unwrap();
        let err = store
            .approve(denied.id, new_token(NET, "peerB", 3), None, NOW)
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Denied,
                ..
            }
        ));
        let err = store.deny(denied.id, None, NOW).unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotPending {
                status: RequestStatus::Denied,
                ..
            }
        ));

        let err = store
            .approve(999, new_token(NET, PEER, 4), None, NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { id: 999 }), "{err:?}");
        let err = store.deny(999, None, NOW).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { id: 999 }), "{err:?}");
        // Only the first approval issued a token.
        assert_eq!(store.counts().unwrap().issued, 1);
    }

    #[test]
    fn approve_refuses_token_for_other_peer_or_network_and_changes_nothing() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let request = submit_new(&mut store, NET, PEER);
        let err = store
            .approve(request.id, new_token(NET, "intruder", 1), None, NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err:?}");
        let err = store
            .approve(request.id, new_token("testnet", PEER, 1), None, NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err:?}");
        assert_eq!(store.request(request.id).unwrap(), Some(request));
        assert_eq!(store.counts().unwrap().issued, 0);
    }

    #[test]
    fn duplicate_revocation_id_rolls_back_the_approval() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let a = submit_new(&mut store, NET, PEER);
        let b = submit_new(&mut store, NET, "peerB");
        store
            .approve(a.id, new_token(NET, PEER, 7), None, NOW)
            .unwrap();
        let err = store
            .approve(b.id, new_token(NET, "peerB", 7), None, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DuplicateRevocationId { .. }),
            "{err:?}"
        );
        // The transaction rolled back: b is still pending, no second token.
        assert_eq!(
            store.request(b.id).unwrap().unwrap().status,
            RequestStatus::Pending
        );
        assert_eq!(store.counts().unwrap().issued, 1);
    }

    #[test]
    fn undelivered_until_marked_delivered_idempotently() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let request = submit_new(&mut store, NET, PEER);
        let issued = store
            .approve(request.id, new_token(NET, PEER, 1), None, NOW)
            .unwrap();
        let direct = store.issue_direct(new_token("testnet", PEER, 2)).unwrap();
        assert_eq!(direct.request_id, None);
        assert_eq!(
            store.undelivered_for(PEER).unwrap(),
            vec![issued.clone(), direct.clone()]
        );
        assert!(store.undelivered_for("someone-else").unwrap().is_empty());

        let delivered = store.mark_delivered(issued.token_id, NOW + 10).unwrap();
        assert_eq!(delivered.delivered_at, Some(NOW + 10));
        let again = store.mark_delivered(issued.token_id, NOW + 20).unwrap();
        assert_eq!(
            again.delivered_at,
            Some(NOW + 10),
            "first delivery time is kept"
        );
        assert_eq!(store.undelivered_for(PEER).unwrap(), vec![direct]);
        assert_eq!(store.counts().unwrap().delivered, 1);

        let err = store.mark_delivered(999, NOW).unwrap_err();
        assert!(
            matches!(err, StoreError::TokenNotFound { token_id: 999 }),
            "{err:?}"
        );
    }

    #[test]
    fn revoked_tokens_are_not_delivered() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let issued = store.issue_direct(new_token(NET, PEER, 1)).unwrap();
        store
            .revoke_token(issued.token_id, Some("lost laptop"), NOW)
            .unwrap();
        assert!(store.undelivered_for(PEER).unwrap().is_empty());
    }

    #[test]
    fn data_survives_close_and_reopen() {
        let (_dir, path) = temp_db();
        let (pending_id, token_id) = {
            let mut store = open(&path);
            let pending = submit_new(&mut store, NET, "waiting");
            let approved = submit_new(&mut store, NET, PEER);
            let token = store
                .approve(approved.id, new_token(NET, PEER, 1), None, NOW)
                .unwrap();
            store
                .revoke_id(&[0xde; 64], Some("old delegation"), NOW)
                .unwrap();
            store
                .create_invite([9; 32], NET, 1, NOW + 600, NOW)
                .unwrap();
            (pending.id, token.token_id)
        };
        let mut store = open(&path);
        let pending = store.pending(None).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, pending_id);
        let undelivered = store.undelivered_for(PEER).unwrap();
        assert_eq!(undelivered.len(), 1);
        assert_eq!(undelivered[0].token_id, token_id);
        assert_eq!(store.revocations().unwrap().version, 1);
        assert!(store.redeem_invite([9; 32], NET, NOW + 1).unwrap());
        // Ids keep increasing after a restart.
        let next = submit_new(&mut store, NET, "late");
        assert!(next.id > pending_id);
    }

    #[test]
    fn second_handle_on_same_file_sees_committed_data() {
        let (_dir, path) = temp_db();
        let mut writer = open(&path);
        let mut other = open(&path);
        let request = submit_new(&mut writer, NET, PEER);
        assert_eq!(other.request(request.id).unwrap(), Some(request.clone()));
        // The other handle can decide it; the first sees the decision.
        let token = other
            .approve(request.id, new_token(NET, PEER, 1), None, NOW)
            .unwrap();
        assert_eq!(writer.undelivered_for(PEER).unwrap(), vec![token]);
        // The one-pending invariant holds across handles.
        assert!(matches!(
            other
                .submit_request(NET, "peerB", None, false, NOW)
                .unwrap(),
            Submitted::New(_)
        ));
        assert!(matches!(
            writer
                .submit_request(NET, "peerB", None, false, NOW)
                .unwrap(),
            Submitted::Existing(_)
        ));
    }

    #[test]
    fn revocation_bumps_version_and_appears_in_snapshot() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        assert_eq!(
            store.revocations().unwrap(),
            RevocationSnapshot {
                version: 0,
                ids: vec![]
            }
        );

        let t1 = store.issue_direct(new_token(NET, PEER, 1)).unwrap();
        let revoked = store
            .revoke_token(t1.token_id, Some("compromised"), NOW + 1)
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(NOW + 1));
        assert_eq!(
            store.revocations().unwrap(),
            RevocationSnapshot {
                version: 1,
                ids: vec![vec![1; 64]]
            }
        );
        // Revoking again changes nothing, so the version stays.
        store.revoke_token(t1.token_id, None, NOW + 2).unwrap();
        assert_eq!(store.revocation_version().unwrap(), 1);

        // Two tokens of one peer: one bump for the whole call.
        store.issue_direct(new_token(NET, PEER, 2)).unwrap();
        store.issue_direct(new_token("testnet", PEER, 3)).unwrap();
        store.issue_direct(new_token(NET, "peerB", 4)).unwrap();
        let revoked = store
            .revoke_peer(PEER, None, Some("left"), NOW + 3)
            .unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(revoked.iter().all(|t| t.revoked_at == Some(NOW + 3)));
        let snapshot = store.revocations().unwrap();
        assert_eq!(snapshot.version, 2);
        assert_eq!(snapshot.ids, vec![vec![1; 64], vec![2; 64], vec![3; 64]]);
        assert!(store.revoke_peer(PEER, None, None, NOW).unwrap().is_empty());
        assert_eq!(store.revocation_version().unwrap(), 2);

        // A raw id (e.g. a delegation's) is added once.
        assert!(
            store
                .revoke_id(&[0xaa; 64], Some("delegation"), NOW)
                .unwrap()
        );
        assert!(!store.revoke_id(&[0xaa; 64], None, NOW).unwrap());
        assert_eq!(store.revocation_version().unwrap(), 3);
        // A raw id matching an issued token revokes that token too.
        assert!(store.revoke_id(&[4; 64], None, NOW + 4).unwrap());
        assert_eq!(store.revocation_version().unwrap(), 4);
        assert!(store.members(None, NOW + 5).unwrap().is_empty());
        assert_eq!(store.counts().unwrap().revoked, 4);

        let err = store.revoke_token(999, None, NOW).unwrap_err();
        assert!(
            matches!(err, StoreError::TokenNotFound { token_id: 999 }),
            "{err:?}"
        );
        // A revoked id can never be issued again.
        let err = store
            .issue_direct(new_token(NET, "peerC", 0xaa))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DuplicateRevocationId { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn revoke_peer_limited_to_one_network() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        store.issue_direct(new_token(NET, PEER, 1)).unwrap();
        let test = store.issue_direct(new_token("testnet", PEER, 2)).unwrap();
        let revoked = store.revoke_peer(PEER, Some(NET), None, NOW).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].network, NET);
        assert_eq!(store.members(None, NOW + 1).unwrap(), vec![test]);
    }

    #[test]
    fn members_are_newest_unexpired_unrevoked_per_network_and_peer() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let old = store.issue_direct(new_token(NET, PEER, 1)).unwrap();
        let mut renewed = new_token(NET, PEER, 2);
        renewed.issued_at = NOW + 100;
        renewed.expires_at = NOW + 7200;
        let renewed = store.issue_direct(renewed).unwrap();
        let mut short = new_token(NET, "peerB", 3);
        short.expires_at = NOW + 10;
        let short = store.issue_direct(short).unwrap();
        let test = store.issue_direct(new_token("testnet", PEER, 4)).unwrap();

        assert_eq!(
            store.members(None, NOW + 5).unwrap(),
            vec![renewed.clone(), short.clone(), test.clone()]
        );
        assert_eq!(
            store.members(Some(NET), NOW + 5).unwrap(),
            vec![renewed.clone(), short]
        );
        // Expiry is exclusive: at expires_at the token is no longer valid.
        assert_eq!(
            store.members(Some(NET), NOW + 10).unwrap(),
            vec![renewed.clone()]
        );
        // Revoking the newest falls back to the older valid token.
        store.revoke_token(renewed.token_id, None, NOW).unwrap();
        assert_eq!(store.members(Some(NET), NOW + 20).unwrap(), vec![old]);
        assert!(store.members(Some(NET), NOW + 3600).unwrap().is_empty());
    }

    #[test]
    fn invites_are_single_use_by_default() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let hash = [1u8; 32];
        let invite = store.create_invite(hash, NET, 1, NOW + 600, NOW).unwrap();
        assert_eq!(invite.code_prefix, "01010101");
        assert!(store.redeem_invite(hash, NET, NOW + 1).unwrap());
        assert!(!store.redeem_invite(hash, NET, NOW + 2).unwrap());
        let listed = store.invites(Some(NET)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uses_left, 0);
        assert!(!listed[0].is_usable(NOW + 2));
    }

    #[test]
    fn multi_use_invite_counts_down() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        store
            .create_invite([2; 32], NET, 2, NOW + 600, NOW)
            .unwrap();
        assert!(store.redeem_invite([2; 32], NET, NOW).unwrap());
        assert!(store.redeem_invite([2; 32], NET, NOW).unwrap());
        assert!(!store.redeem_invite([2; 32], NET, NOW).unwrap());
    }

    #[test]
    fn expired_invite_is_refused() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        store
            .create_invite([3; 32], NET, 1, NOW + 600, NOW)
            .unwrap();
        assert!(!store.redeem_invite([3; 32], NET, NOW + 600).unwrap());
        assert!(!store.redeem_invite([3; 32], NET, NOW + 601).unwrap());
        assert_eq!(
            store.invites(None).unwrap()[0].uses_left,
            1,
            "refusal leaves it unchanged"
        );
        let err = store.create_invite([4; 32], NET, 1, NOW, NOW).unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }

    #[test]
    fn wrong_network_or_unknown_invite_is_refused() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        store
            .create_invite([5; 32], NET, 1, NOW + 600, NOW)
            .unwrap();
        assert!(!store.redeem_invite([5; 32], "testnet", NOW).unwrap());
        assert!(!store.redeem_invite([6; 32], NET, NOW).unwrap());
        assert!(store.redeem_invite([5; 32], NET, NOW).unwrap());
        let err = store
            .create_invite([5; 32], "testnet", 1, NOW + 600, NOW)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InviteExists { network } if network == NET),
            "{err:?}"
        );
        assert_eq!(store.invites(Some("testnet")).unwrap(), vec![]);
    }

    #[test]
    fn submit_with_invite_redeems_and_queues_atomically() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        store
            .create_invite([7; 32], NET, 1, NOW + 600, NOW)
            .unwrap();
        let err = store
            .submit_with_invite(NET, PEER, None, [8; 32], NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::InviteRejected { .. }), "{err:?}");
        assert_eq!(
            store.counts().unwrap().pending,
            0,
            "a refused invite queues nothing"
        );

        let Submitted::New(row) = store
            .submit_with_invite(NET, PEER, None, [7; 32], NOW)
            .unwrap()
        else {
            panic!("expected a new request");
        };
        assert!(row.invite_used);
        assert_eq!(store.invites(None).unwrap()[0].uses_left, 0);
        // Resubmitting with the (now used) invite returns the same request.
        assert_eq!(
            store
                .submit_with_invite(NET, PEER, None, [7; 32], NOW)
                .unwrap(),
            Submitted::Existing(row)
        );
    }

    #[test]
    fn submit_with_invite_upgrades_existing_pending_request() {
        let (_dir, path) = temp_db();
        let mut store = open(&path);
        let plain = submit_new(&mut store, NET, PEER);
        assert!(!plain.invite_used);
        store
            .create_invite([7; 32], NET, 1, NOW + 600, NOW)
            .unwrap();
        let upgraded = store
            .submit_with_invite(NET, PEER, None, [7; 32], NOW)
            .unwrap();
        let Submitted::Existing(row) = upgraded else {
            panic!("expected the existing request");
        };
        assert_eq!(row.id, plain.id);
        assert!(row.invite_used);
        assert_eq!(store.counts().unwrap().pending, 1);
    }

    #[test]
    fn rows_serialize_to_json_with_hex_bytes() {
        let mut store = Store::open_in_memory(StoreLimits::default()).unwrap();
        let token = store.issue_direct(new_token(NET, PEER, 0xab)).unwrap();
        let json = serde_json::to_value(&token).unwrap();
        assert_eq!(json["revocation_id"], serde_json::json!("ab".repeat(64)));
        assert_eq!(json["token"], serde_json::json!("b1ab"));
        let request = submit_new(&mut store, NET, PEER);
        let json = serde_json::to_value(Submitted::New(request)).unwrap();
        assert_eq!(json["outcome"], "new");
        assert_eq!(json["request"]["status"], "pending");
    }
}
