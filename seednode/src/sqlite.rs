//! The default [`Store`]: one SQLite database file (WAL mode), run on a thread of its own.
//!
//! [`SqliteStore`] owns a dedicated thread holding the one rusqlite connection; each store call
//! is a closure sent to that thread over a bounded channel ([`SQLITE_QUEUE`]) and answered on
//! a oneshot channel. SQLite's blocking work (queries, `fsync`s) therefore never runs on the
//! async runtime, and a caller that floods the store waits for room instead of growing a
//! queue. The thread ends when the store is dropped (after the jobs already queued), and the
//! drop waits for it, so the database is closed when the drop returns.
//!
//! # SQLite specifics (on top of the [`Store`] invariants)
//! - **A partial unique index** enforces one pending request per (network, peer).
//! - **Writes take the write lock up front** (`BEGIN IMMEDIATE`), so two handles on one file
//!   (two stores, or two processes) never deadlock on a lock upgrade; a writer waits up to
//!   5 s for another's lock.
//! - **Nothing committed is lost on SIGKILL or power loss:** `journal_mode=WAL` with
//!   `synchronous=FULL`.
//! - **The database file is private:** created with mode 0600, and an existing file (or its
//!   WAL or shared-memory file) readable by group or others is refused.
//! - **The schema is versioned** (`PRAGMA user_version`, [`SCHEMA_VERSION`]) and marked as a
//!   Cordon store (`PRAGMA application_id`); a newer schema or another application's
//!   database is refused.

use std::fmt;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use cordon_protocol::NetworkName;
use libp2p::PeerId;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::fault::{self, FaultPoint};
use crate::store::{
    Counts, INVITE_PREFIX_BYTES, InviteRow, IssuedTokenId, IssuedTokenRow, JoinRequestRow,
    NewToken, PendingFilter, RequestId, RequestStatus, RevocationSnapshot, Store, StoreError,
    StoreLimits, Submitted, check_new_invite, check_new_token, check_submission,
    empty_revocation_id, hex, invalid,
};

/// Schema version written to `PRAGMA user_version` by this code.
pub const SCHEMA_VERSION: u32 = 2;

/// Store calls queued for the database thread at once; more callers wait for room.
pub const SQLITE_QUEUE: usize = 64;

/// `PRAGMA application_id` marking a Cordon seednode store ("Cord").
pub(crate) const APPLICATION_ID: i32 = 0x436f_7264;

/// How long a write waits for another handle's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Migrations, index `i` upgrades schema version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

/// Version 2: explicit rights are kept with each issued token, so a renewal keeps them. Tokens
/// issued before had none recorded (`[]`).
const SCHEMA_V2: &str = "
ALTER TABLE issued_tokens ADD COLUMN rights TEXT NOT NULL DEFAULT '[]';
";

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
     revocation_id, token, delivered_at, revoked_at, rights";

/// One store call, run on the database thread.
type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// The SQLite [`Store`]: see the [module documentation](self).
pub struct SqliteStore {
    /// Jobs for the database thread; `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    path: Option<PathBuf>,
    limits: StoreLimits,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if missing) the database at `path`, migrates it to
    /// [`SCHEMA_VERSION`] and starts its thread. Blocks until the database is open; works
    /// inside or outside a tokio runtime.
    ///
    /// Refuses a file, WAL or shared-memory file that group or others can access, a database
    /// of another application, and a newer schema.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<SqliteStore, StoreError> {
        let file = path.to_path_buf();
        Self::start(Some(path.to_path_buf()), limits, move |limits| {
            Engine::open(&file, limits)
        })
    }

    /// Opens a private in-memory store (for tests and dry runs).
    pub fn open_in_memory(limits: StoreLimits) -> Result<SqliteStore, StoreError> {
        Self::start(None, limits, Engine::open_in_memory)
    }

    /// Opens the database on a new thread, which then serves jobs until the store is dropped.
    fn start(
        path: Option<PathBuf>,
        limits: StoreLimits,
        open: impl FnOnce(StoreLimits) -> Result<Engine, StoreError> + Send + 'static,
    ) -> Result<SqliteStore, StoreError> {
        let (jobs, inbox) = mpsc::channel::<Job>(SQLITE_QUEUE);
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let engine_limits = limits.clone();
        let thread = std::thread::Builder::new()
            .name("seednode-sqlite".into())
            .spawn(move || match open(engine_limits) {
                Ok(engine) => {
                    let _ = opened_tx.send(Ok(()));
                    serve(engine, inbox);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(StoreError::Spawn)?;
        let opened = opened.recv().unwrap_or(Err(StoreError::Unavailable));
        if let Err(e) = opened {
            let _ = thread.join();
            return Err(e);
        }
        Ok(SqliteStore {
            jobs: Some(jobs),
            thread: Some(thread),
            path,
            limits,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Runs `job` on the database thread and returns its result. Waits for room when
    /// [`SQLITE_QUEUE`] jobs are queued already.
    async fn call<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine) -> Result<T, StoreError> + Send + 'static,
    {
        let jobs = self.jobs.as_ref().ok_or(StoreError::Unavailable)?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |engine| {
            let _ = reply.send(job(engine));
        });
        jobs.send(job).await.map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the queued jobs ran; waiting for it closes
        // the database before the drop returns (a reopen then sees a closed file).
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the seednode database thread panicked");
        }
    }
}

/// The database thread: runs jobs in order until every sender is gone. A job that panics is
/// logged and its caller sees [`StoreError::Unavailable`]; its transaction was rolled back by
/// the unwinding, so the next job starts clean.
fn serve(mut engine: Engine, mut inbox: mpsc::Receiver<Job>) {
    while let Some(job) = inbox.blocking_recv() {
        if catch_unwind(AssertUnwindSafe(|| job(&mut engine))).is_err() {
            tracing::error!("a seednode database operation panicked; it was not applied");
        }
    }
}

impl Store for SqliteStore {
    fn submit_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> impl Future<Output = Result<Submitted, StoreError>> + Send {
        let (network, peer, label) = (network.clone(), peer.to_base58(), label.map(owned));
        self.call(move |db| db.submit_request(&network, &peer, label.as_deref(), invite_used, now))
    }

    fn submit_with_invite(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> impl Future<Output = Result<Submitted, StoreError>> + Send {
        let (network, peer, label) = (network.clone(), peer.to_base58(), label.map(owned));
        self.call(move |db| {
            db.submit_with_invite(&network, &peer, label.as_deref(), code_hash, now)
        })
    }

    fn request(
        &self,
        id: RequestId,
    ) -> impl Future<Output = Result<Option<JoinRequestRow>, StoreError>> + Send {
        self.call(move |db| db.request(id))
    }

    fn latest_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
    ) -> impl Future<Output = Result<Option<JoinRequestRow>, StoreError>> + Send {
        let (network, peer) = (network.clone(), peer.to_base58());
        self.call(move |db| db.latest_request(&network, &peer))
    }

    fn pending(
        &self,
        network: Option<&NetworkName>,
    ) -> impl Future<Output = Result<Vec<JoinRequestRow>, StoreError>> + Send {
        let network = network.cloned();
        self.call(move |db| db.pending(network.as_ref()))
    }

    fn approve(
        &self,
        id: RequestId,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send {
        let policy = decided_by_policy.map(owned);
        self.call(move |db| db.approve(id, &issued, policy.as_deref(), now))
    }

    fn deny(
        &self,
        id: RequestId,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<JoinRequestRow, StoreError>> + Send {
        let reason = reason.map(owned);
        self.call(move |db| db.deny(id, reason.as_deref(), now))
    }

    fn deny_pending(
        &self,
        filter: PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<JoinRequestRow>, StoreError>> + Send {
        let reason = reason.map(owned);
        self.call(move |db| db.deny_pending(&filter, reason.as_deref(), now))
    }

    fn issue_direct(
        &self,
        issued: NewToken,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send {
        self.call(move |db| db.issue_direct(&issued))
    }

    fn token(
        &self,
        token_id: IssuedTokenId,
    ) -> impl Future<Output = Result<Option<IssuedTokenRow>, StoreError>> + Send {
        self.call(move |db| get_token(&db.conn, token_id))
    }

    fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> impl Future<Output = Result<Option<IssuedTokenRow>, StoreError>> + Send {
        self.call(move |db| db.token_for_request(request_id))
    }

    fn undelivered_for(
        &self,
        peer: &PeerId,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send {
        let peer = peer.to_base58();
        self.call(move |db| db.undelivered_for(&peer))
    }

    fn mark_delivered(
        &self,
        token_id: IssuedTokenId,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send {
        self.call(move |db| db.mark_delivered(token_id, now))
    }

    fn members(
        &self,
        network: Option<&NetworkName>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send {
        let network = network.cloned();
        self.call(move |db| db.members(network.as_ref(), now))
    }

    fn revoke_token(
        &self,
        token_id: IssuedTokenId,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<IssuedTokenRow, StoreError>> + Send {
        let reason = reason.map(owned);
        self.call(move |db| db.revoke_token(token_id, reason.as_deref(), now))
    }

    fn revoke_peer(
        &self,
        peer: &PeerId,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<Vec<IssuedTokenRow>, StoreError>> + Send {
        let (peer, network, reason) = (peer.to_base58(), network.cloned(), reason.map(owned));
        self.call(move |db| db.revoke_peer(&peer, network.as_ref(), reason.as_deref(), now))
    }

    fn revoke_id(
        &self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (revocation_id, reason) = (revocation_id.to_vec(), reason.map(owned));
        self.call(move |db| db.revoke_id(&revocation_id, reason.as_deref(), now))
    }

    fn revocations(&self) -> impl Future<Output = Result<RevocationSnapshot, StoreError>> + Send {
        self.call(|db| db.revocations())
    }

    fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> impl Future<Output = Result<Vec<(Vec<u8>, u64)>, StoreError>> + Send {
        let network = network.clone();
        self.call(move |db| db.revoked_entries(&network, now))
    }

    fn revocation_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.call(|db| read_revocation_version(&db.conn))
    }

    fn create_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<InviteRow, StoreError>> + Send {
        let network = network.clone();
        self.call(move |db| db.create_invite(code_hash, &network, uses, expires_at, now))
    }

    fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let network = network.clone();
        self.call(move |db| db.redeem_invite(code_hash, &network, now))
    }

    fn invites(
        &self,
        network: Option<&NetworkName>,
    ) -> impl Future<Output = Result<Vec<InviteRow>, StoreError>> + Send {
        let network = network.cloned();
        self.call(move |db| db.invites(network.as_ref()))
    }

    fn counts(&self) -> impl Future<Output = Result<Counts, StoreError>> + Send {
        self.call(|db| db.counts())
    }
}

fn owned(text: &str) -> String {
    text.to_owned()
}

// ---- the thread side: one connection, synchronous --------------------------------------------

/// The database thread's state: the connection and the limits it enforces.
struct Engine {
    conn: Connection,
    limits: StoreLimits,
    /// When history was last pruned (unix seconds; 0: not yet).
    last_prune: u64,
}

/// How often old history is pruned, at most.
const PRUNE_EVERY_SECS: u64 = 3600;

impl Engine {
    fn open(path: &Path, limits: StoreLimits) -> Result<Engine, StoreError> {
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
        Self::init(conn, Some(path), limits)
    }

    fn open_in_memory(limits: StoreLimits) -> Result<Engine, StoreError> {
        Self::init(Connection::open_in_memory()?, None, limits)
    }

    fn init(
        mut conn: Connection,
        path: Option<&Path>,
        limits: StoreLimits,
    ) -> Result<Engine, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::WalUnavailable { mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, path)?;
        Ok(Engine {
            conn,
            limits,
            last_prune: 0,
        })
    }

    fn submit_request(
        &mut self,
        network: &NetworkName,
        peer: &str,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let label = check_submission(&self.limits, peer, label)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        expire_pending(&tx, &self.limits, now)?;
        prune_history(&tx, &self.limits, &mut self.last_prune, now)?;
        if let Some(existing) = pending_for(&tx, network, peer)? {
            return Ok(Submitted::Existing(existing));
        }
        check_caps(&tx, &self.limits, network)?;
        let row = insert_request(&tx, network, peer, label, invite_used, now)?;
        tx.commit()?;
        Ok(Submitted::New(row))
    }

    fn submit_with_invite(
        &mut self,
        network: &NetworkName,
        peer: &str,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let label = check_submission(&self.limits, peer, label)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        expire_pending(&tx, &self.limits, now)?;
        prune_history(&tx, &self.limits, &mut self.last_prune, now)?;
        if let Some(existing) = pending_for(&tx, network, peer)? {
            if existing.invite_used {
                return Ok(Submitted::Existing(existing));
            }
            if !redeem(&tx, code_hash, network, now)? {
                return Err(StoreError::InviteRejected {
                    network: network.clone(),
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
                network: network.clone(),
            });
        }
        let row = insert_request(&tx, network, peer, label, true, now)?;
        tx.commit()?;
        Ok(Submitted::New(row))
    }

    fn request(&self, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
        get_request(&self.conn, id)
    }

    fn pending(&self, network: Option<&NetworkName>) -> Result<Vec<JoinRequestRow>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests \
             WHERE status = 'pending' AND (?1 IS NULL OR network = ?1) ORDER BY id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([network.map(NetworkName::as_str)], request_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_request(
        &self,
        network: &NetworkName,
        peer: &str,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests WHERE network = ?1 AND peer = ?2 \
             ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![network.as_str(), peer], request_from_row)
            .optional()?)
    }

    fn approve(
        &mut self,
        id: RequestId,
        issued: &NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(issued)?;
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
        let token_peer = issued.peer.to_base58();
        if request.network != issued.network || request.peer != token_peer {
            return Err(StoreError::Mismatch {
                id,
                request_network: request.network,
                request_peer: request.peer,
                token_network: issued.network.clone(),
                token_peer,
            });
        }
        tx.execute(
            "UPDATE join_requests SET status = 'approved', decided_at = ?2, \
             decided_by_policy = ?3 WHERE id = ?1",
            params![id, now, decided_by_policy],
        )?;
        let row = insert_token(&tx, Some(id), issued)?;
        fault::hit(FaultPoint::ApproveBeforeCommit);
        tx.commit()?;
        fault::hit(FaultPoint::ApproveAfterCommit);
        Ok(row)
    }

    fn deny(
        &mut self,
        id: RequestId,
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

    fn deny_pending(
        &mut self,
        filter: &PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM join_requests WHERE status = 'pending' \
                 AND (?1 IS NULL OR network = ?1) AND (?2 IS NULL OR created_at <= ?2) \
                 AND (?3 IS NULL OR label = ?3) ORDER BY id",
            )?;
            let rows = stmt.query_map(
                params![
                    filter.network.as_ref().map(NetworkName::as_str),
                    filter.created_at_most,
                    filter.label.as_deref()
                ],
                |r| r.get(0),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let mut denied = Vec::with_capacity(ids.len());
        for id in ids {
            tx.execute(
                "UPDATE join_requests SET status = 'denied', decided_at = ?2, deny_reason = ?3 \
                 WHERE id = ?1",
                params![id, now, reason],
            )?;
            if let Some(row) = get_request(&tx, RequestId(id))? {
                denied.push(row);
            }
        }
        tx.commit()?;
        Ok(denied)
    }

    fn issue_direct(&mut self, issued: &NewToken) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(issued)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = insert_token(&tx, None, issued)?;
        tx.commit()?;
        Ok(row)
    }

    fn undelivered_for(&self, peer: &str) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM issued_tokens \
             WHERE peer = ?1 AND delivered_at IS NULL AND revoked_at IS NULL ORDER BY token_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([peer], token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_delivered(
        &mut self,
        token_id: IssuedTokenId,
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

    fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> Result<Option<IssuedTokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM issued_tokens WHERE request_id = ?1");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([request_id], token_from_row)
            .optional()?)
    }

    fn members(
        &self,
        network: Option<&NetworkName>,
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
        let rows = stmt.query_map(
            params![now, network.map(NetworkName::as_str)],
            token_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_token(
        &mut self,
        token_id: IssuedTokenId,
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

    fn revoke_peer(
        &mut self,
        peer: &str,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<IssuedTokenId> = {
            let mut stmt = tx.prepare_cached(
                "SELECT token_id FROM issued_tokens WHERE peer = ?1 \
                 AND (?2 IS NULL OR network = ?2) AND revoked_at IS NULL ORDER BY token_id",
            )?;
            let rows = stmt.query_map(params![peer, network.map(NetworkName::as_str)], |row| {
                row.get(0)
            })?;
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

    fn revoke_id(
        &mut self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        if revocation_id.is_empty() {
            return Err(empty_revocation_id());
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

    fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT revocation_id, expires_at FROM issued_tokens \
             WHERE network = ?1 AND revoked_at IS NOT NULL AND expires_at > ?2 \
             ORDER BY revocation_id",
        )?;
        let rows = stmt.query_map(params![network.as_str(), now], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, u64>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn revocations(&self) -> Result<RevocationSnapshot, StoreError> {
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

    fn create_invite(
        &mut self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<InviteRow, StoreError> {
        check_new_invite(uses, expires_at, now)?;
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
        if let Some(existing) = existing {
            return Err(StoreError::InviteExists {
                network: stored_network(existing, 0)?,
            });
        }
        tx.execute(
            "INSERT INTO invites (code_hash, network, uses_left, expires_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![code_hash, network.as_str(), uses, expires_at, now],
        )?;
        tx.commit()?;
        Ok(InviteRow {
            code_prefix: hex(&code_hash[..INVITE_PREFIX_BYTES]),
            network: network.clone(),
            uses_left: uses,
            expires_at,
            created_at: now,
        })
    }

    fn redeem_invite(
        &mut self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let redeemed = redeem(&tx, code_hash, network, now)?;
        tx.commit()?;
        Ok(redeemed)
    }

    fn invites(&self, network: Option<&NetworkName>) -> Result<Vec<InviteRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT code_hash, network, uses_left, expires_at, created_at FROM invites \
             WHERE (?1 IS NULL OR network = ?1) ORDER BY created_at, network, code_hash",
        )?;
        let rows = stmt.query_map([network.map(NetworkName::as_str)], |row| {
            let hash: Vec<u8> = row.get(0)?;
            Ok(InviteRow {
                code_prefix: hex(&hash[..hash.len().min(INVITE_PREFIX_BYTES)]),
                network: stored_network(row.get(1)?, 1)?,
                uses_left: row.get(2)?,
                expires_at: row.get(3)?,
                created_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn counts(&self) -> Result<Counts, StoreError> {
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

impl ToSql for RequestId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for RequestId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Self)
    }
}

impl ToSql for IssuedTokenId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for IssuedTokenId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Self)
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

/// A stored network name (column `column`): every name written was a valid [`NetworkName`].
fn stored_network(name: String, column: usize) -> rusqlite::Result<NetworkName> {
    NetworkName::new(name)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// Refuses a file that group or others can access in any way.
pub(crate) fn check_private(path: &Path) -> Result<(), StoreError> {
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

/// Denies (policy `expired`) every pending request older than the limits' `pending_ttl`.
fn expire_pending(conn: &Connection, limits: &StoreLimits, now: u64) -> Result<(), StoreError> {
    let cutoff = now.saturating_sub(limits.pending_ttl.as_secs());
    conn.execute(
        "UPDATE join_requests SET status = 'denied', decided_at = ?1, \
         decided_by_policy = 'expired', deny_reason = 'expired' \
         WHERE status = 'pending' AND created_at < ?2",
        params![now, cutoff],
    )?;
    Ok(())
}

/// Deletes history older than the limits' `retention` (see [`StoreLimits::retention`]), at
/// most once per [`PRUNE_EVERY_SECS`]; `last` is when it last ran. Returns the rows deleted.
fn prune_history(
    conn: &Connection,
    limits: &StoreLimits,
    last: &mut u64,
    now: u64,
) -> Result<usize, StoreError> {
    if now < last.saturating_add(PRUNE_EVERY_SECS) {
        return Ok(0);
    }
    *last = now;
    let cutoff = now.saturating_sub(limits.retention.as_secs());
    let tokens = conn.execute(
        "DELETE FROM issued_tokens WHERE expires_at < ?1 AND revoked_at IS NULL",
        [cutoff],
    )?;
    let requests = conn.execute(
        "DELETE FROM join_requests WHERE status != 'pending' AND decided_at < ?1 \
         AND (status = 'approved' OR decided_by_policy IS NOT NULL) \
         AND NOT EXISTS (SELECT 1 FROM issued_tokens t WHERE t.request_id = join_requests.id)",
        [cutoff],
    )?;
    if tokens + requests > 0 {
        tracing::info!(tokens, requests, "pruned history older than the retention");
    }
    Ok(tokens + requests)
}

fn check_caps(
    conn: &Connection,
    limits: &StoreLimits,
    network: &NetworkName,
) -> Result<(), StoreError> {
    let (total, in_network): (usize, usize) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(network = ?1), 0) FROM join_requests \
         WHERE status = 'pending'",
        [network.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if in_network >= limits.max_pending_per_network {
        return Err(StoreError::QueueFull {
            network: network.clone(),
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
    network: &NetworkName,
    peer: &str,
) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM join_requests \
         WHERE network = ?1 AND peer = ?2 AND status = 'pending'"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![network.as_str(), peer], request_from_row)
        .optional()?)
}

fn insert_request(
    conn: &Connection,
    network: &NetworkName,
    peer: &str,
    label: Option<&str>,
    invite_used: bool,
    now: u64,
) -> Result<JoinRequestRow, StoreError> {
    conn.execute(
        "INSERT INTO join_requests (network, peer, label, invite_used, created_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
        params![network.as_str(), peer, label, invite_used, now],
    )?;
    let id = RequestId(conn.last_insert_rowid());
    get_request(conn, id)?.ok_or(StoreError::NotFound { id })
}

fn get_request(conn: &Connection, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!("SELECT {REQUEST_COLS} FROM join_requests WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], request_from_row)
        .optional()?)
}

fn insert_token(
    conn: &Connection,
    request_id: Option<RequestId>,
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
    let rights = serde_json::to_string(&token.rights)
        .map_err(|e| invalid("rights", format!("cannot be encoded: {e}")))?;
    conn.execute(
        "INSERT INTO issued_tokens (request_id, network, peer, roles, issued_at, expires_at, \
         revocation_id, token, rights) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            request_id,
            token.network.as_str(),
            token.peer.to_base58(),
            roles,
            token.issued_at,
            token.expires_at,
            token.revocation_id,
            token.token,
            rights
        ],
    )?;
    let token_id = IssuedTokenId(conn.last_insert_rowid());
    get_token(conn, token_id)?.ok_or(StoreError::TokenNotFound { token_id })
}

fn get_token(
    conn: &Connection,
    token_id: IssuedTokenId,
) -> Result<Option<IssuedTokenRow>, StoreError> {
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
    network: &NetworkName,
    now: u64,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1 \
         WHERE code_hash = ?1 AND network = ?2 AND expires_at > ?3 AND uses_left > 0",
        params![code_hash, network.as_str(), now],
    )?;
    Ok(changed == 1)
}

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<JoinRequestRow> {
    Ok(JoinRequestRow {
        id: row.get(0)?,
        network: stored_network(row.get(1)?, 1)?,
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
    let rights: String = row.get(11)?;
    let rights = serde_json::from_str(&rights)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(11, Type::Text, Box::new(e)))?;
    Ok(IssuedTokenRow {
        token_id: row.get(0)?,
        request_id: row.get(1)?,
        network: stored_network(row.get(2)?, 2)?,
        peer: row.get(3)?,
        roles,
        rights,
        issued_at: row.get(5)?,
        expires_at: row.get(6)?,
        revocation_id: row.get(7)?,
        token: row.get(8)?,
        delivered_at: row.get(9)?,
        revoked_at: row.get(10)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MAX_PEER_BYTES;
    use crate::store::suite::{NOW, Opening, mainnet, new_token, peer};
    use tempfile::TempDir;

    // The back-end-independent suite (store.rs), on database files.
    crate::store::suite::run_store_suite!(|dir: &Path| {
        let path = dir.join("seednode.db");
        async move {
            move |limits| -> Opening<SqliteStore> {
                let path = path.clone();
                Box::pin(async move { SqliteStore::open(&path, limits).unwrap() })
            }
        }
    });

    fn temp_db() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        (dir, path)
    }

    fn open(path: &Path) -> SqliteStore {
        SqliteStore::open(path, StoreLimits::default()).unwrap()
    }

    /// A pragma's value, read on the store's own connection.
    async fn pragma<T: FromSql + Send + 'static>(store: &SqliteStore, name: &'static str) -> T {
        store
            .call(move |db| Ok(db.conn.pragma_query_value(None, name, |row| row.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn open_creates_file_with_mode_0600_and_wal() {
        let (_dir, path) = temp_db();
        let store = open(&path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.path(), Some(path.as_path()));
        let journal: String = pragma(&store, "journal_mode").await;
        assert_eq!(journal, "wal");
        let sync: i64 = pragma(&store, "synchronous").await;
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = pragma(&store, "foreign_keys").await;
        assert_eq!(fk, 1);
        let version: u32 = pragma(&store, "user_version").await;
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn group_readable_db_file_is_refused_with_chmod_hint() {
        let (_dir, path) = temp_db();
        drop(open(&path));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SqliteStore::open(&path, StoreLimits::default()).unwrap_err();
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
        let err = SqliteStore::open(dir.path(), StoreLimits::default()).unwrap_err();
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
        let err = SqliteStore::open(&path, StoreLimits::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_and_keeps_its_tokens() {
        let (_dir, path) = temp_db();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO issued_tokens (network, peer, roles, issued_at, expires_at, \
                 revocation_id, token) VALUES ('mainnet', 'p', '[\"member\"]', 1, 2, x'01', x'02')",
                [],
            )
            .unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let store = open(&path);
        let version: u32 = pragma(&store, "user_version").await;
        assert_eq!(version, 2);
        let row = store.token(IssuedTokenId(1)).await.unwrap().unwrap();
        assert_eq!(row.roles, ["member"]);
        assert!(row.rights.is_empty(), "{row:?}");
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
        let err = SqliteStore::open(&path, StoreLimits::default()).unwrap_err();
        assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}");
    }

    #[test]
    fn history_past_the_retention_is_pruned_but_operator_decisions_stay() {
        let limits = StoreLimits::default();
        let retention = limits.retention.as_secs();
        let mut engine = Engine::open_in_memory(limits).unwrap();
        let net = mainnet();
        // An approved member (token expiring in an hour), a request expired unanswered, an
        // operator denial and a revoked member.
        let approved = submit(&mut engine, &net, 1);
        engine
            .approve(approved, &new_token(&net, &peer(1), 1), Some("open"), NOW)
            .unwrap();
        let denied = submit(&mut engine, &net, 2);
        engine.deny(denied, Some("no"), NOW).unwrap();
        let revoked = submit(&mut engine, &net, 3);
        let token = engine
            .approve(revoked, &new_token(&net, &peer(3), 3), None, NOW)
            .unwrap();
        engine.revoke_token(token.token_id, None, NOW).unwrap();
        engine
            .conn
            .execute(
                "INSERT INTO join_requests (network, peer, invite_used, created_at, status, \
                 decided_at, decided_by_policy, deny_reason) \
                 VALUES ('mainnet', 'x', 0, ?1, 'denied', ?1, 'expired', 'expired')",
                [NOW],
            )
            .unwrap();
        let rows = |e: &Engine| -> (i64, i64) {
            let count = |table: &str| {
                e.conn
                    .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap()
            };
            (count("join_requests"), count("issued_tokens"))
        };
        assert_eq!(rows(&engine), (4, 2));
        // Within the retention nothing goes.
        let mut last = 0;
        let soon = NOW + retention - 1;
        assert_eq!(
            prune_history(&engine.conn, &engine.limits, &mut last, soon).unwrap(),
            0
        );
        // Past it: the expired token, its request and the unanswered request go; the operator's
        // denial and the revoked member stay.
        let later = NOW + 3600 + retention + 1;
        let mut last = 0;
        assert_eq!(
            prune_history(&engine.conn, &engine.limits, &mut last, later).unwrap(),
            3
        );
        assert_eq!(rows(&engine), (2, 1));
        // And it runs at most once an hour.
        engine
            .conn
            .execute(
                "INSERT INTO join_requests (network, peer, invite_used, created_at, status, \
                 decided_at, decided_by_policy, deny_reason) \
                 VALUES ('mainnet', 'y', 0, ?1, 'denied', ?1, 'expired', 'expired')",
                [NOW],
            )
            .unwrap();
        assert_eq!(
            prune_history(&engine.conn, &engine.limits, &mut last, later + 60).unwrap(),
            0
        );
        assert_eq!(
            prune_history(&engine.conn, &engine.limits, &mut last, later + 3600).unwrap(),
            1
        );
    }

    fn submit(engine: &mut Engine, net: &NetworkName, n: u8) -> RequestId {
        match engine
            .submit_request(net, &peer(n).to_string(), None, false, NOW)
            .unwrap()
        {
            Submitted::New(row) => row.id,
            Submitted::Existing(row) => row.id,
        }
    }

    #[test]
    fn hostile_peer_text_is_refused_by_the_engine() {
        // The API takes PeerIds; the engine still refuses raw text that could not be one.
        let mut engine = Engine::open_in_memory(StoreLimits::default()).unwrap();
        let net = mainnet();
        let long = "p".repeat(MAX_PEER_BYTES + 1);
        let err = engine
            .submit_request(&net, &long, None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "peer", .. }),
            "{err:?}"
        );
        let err = engine
            .submit_request(&net, "", None, false, NOW)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { field: "peer", .. }),
            "{err:?}"
        );
        assert_eq!(engine.counts().unwrap().pending, 0);
    }

    #[test]
    fn opens_outside_a_runtime_and_serves_any_runtime() {
        // Opened on a plain thread, used from two runtimes in turn.
        let store = SqliteStore::open_in_memory(StoreLimits::default()).unwrap();
        assert_eq!(store.path(), None);
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                store
                    .submit_request(&mainnet(), &peer(1), None, false, NOW)
                    .await
                    .unwrap();
                assert_eq!(store.counts().await.unwrap().pending, 1);
            });
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn database_work_never_blocks_the_runtime() {
        // One thread runs every task here. A database job that waits (up to 5 s) for the test
        // to release it must not stop a timer: were it run on the runtime's thread, the timer
        // would fire only after the job gave up, and the job would be finished by then.
        let (_dir, path) = temp_db();
        let store = Arc::new(open(&path));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .call(move |db| {
                        let _ = released.recv_timeout(Duration::from_secs(5));
                        db.counts()
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !slow.is_finished(),
            "the runtime stalled while the database worked"
        );
        release.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap().pending, 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_contained() {
        let store = SqliteStore::open_in_memory(StoreLimits::default()).unwrap();
        let err = store
            .call(|_| -> Result<(), StoreError> { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable), "{err:?}");
        assert!(err.to_string().contains("restart the seednode"), "{err}");
        // The thread lives on.
        assert_eq!(store.counts().await.unwrap().pending, 0);
    }

    #[test]
    fn dropping_the_store_closes_the_database() {
        let (_dir, path) = temp_db();
        let store = open(&path);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            store
                .submit_request(&mainnet(), &peer(1), None, false, NOW)
                .await
                .unwrap();
        });
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(
            Path::new(&wal).exists(),
            "WAL mode keeps a -wal file while open"
        );
        drop(store);
        // The last connection's close checkpoints and removes the WAL: the drop waited for it.
        assert!(!Path::new(&wal).exists(), "the connection is still open");
    }
}
