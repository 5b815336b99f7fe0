//! `seednode store migrate`: copies a seednode's SQLite store into PostgreSQL, so a network
//! that started with one seednode can move to several sharing one database (DESIGN.md
//! section 10) without losing a join request, token, invite or revocation.
//!
//! # What it guarantees
//! - **Everything is copied, ids included:** every join request (status, decision fields,
//!   times, label, invite flag), issued token (bytes, roles, rights, delivered and revoked
//!   times), revocation (id, time, reason), invite (code hash, uses left, expiry) and the
//!   revocation-set version. Ids stay what they were, so ids operators noted, and the ids in
//!   the audit log, still name the same rows.
//! - **New ids never collide with copied ones:** the identity sequences are advanced past the
//!   highest id the SQLite store ever handed out (its `sqlite_sequence`, which also covers
//!   rows pruned since), so ids are never reused.
//! - **All or nothing:** the copy is one PostgreSQL transaction that also checks the target is
//!   empty (under table locks, so a seednode already using the target waits) and that the row
//!   counts match after the copy; on any failure no row is committed (the empty schema, created
//!   first, stays, and a later migration into it is accepted).
//! - **Only an empty target:** a target that holds any request, token, revocation or invite, or
//!   a revocation version above 0, is refused ([`MigrateError::TargetNotEmpty`]); merging two
//!   stores is not supported. The target's schema is created if it has none.
//! - **A consistent source:** the SQLite file is opened read-only and read in one read
//!   transaction (WAL mode gives it a snapshot); it is never written. A seednode still running
//!   on it would keep accepting requests the copy misses, so a migration is refused while the
//!   seednode of the file's data directory answers on its control socket
//!   ([`MigrateError::SourceInUse`]). Stop the seednode, migrate, then start it (and the
//!   others) with `[seednode.postgres]` or `--store`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_protocol::NetworkName;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use tokio_postgres::IsolationLevel;

use crate::postgres::pg_detail;
use crate::store::{PostgresOptions, PostgresStore, StoreError, StoreLimits};

/// How long reading the SQLite file waits for a writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a migration failed. Nothing was written to the target in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The source file is not a Cordon seednode SQLite store.
    #[error("{} is not a Cordon seednode SQLite store ({reason}); pass the seednode's \
             <data>/seednode.db", .path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A seednode is running on the source's data directory.
    #[error(
        "a seednode is running with data directory {} (its control socket {} answers); stop \
         it first, or requests and approvals it takes during the copy would be lost",
        .data_dir.display(), .socket.display()
    )]
    SourceInUse {
        /// The data directory holding the source file.
        data_dir: PathBuf,
        /// The control socket that answered.
        socket: PathBuf,
    },
    /// A source row holds a value the store never writes.
    #[error("{} holds an unreadable row ({reason}); nothing was copied; restore a backup \
             of the SQLite store", .path.display())]
    CorruptSource {
        /// The file.
        path: PathBuf,
        /// Which row and what is wrong.
        reason: String,
    },
    /// The target already holds seednode data.
    #[error(
        "PostgreSQL database {database} already holds seednode data ({found}); nothing was \
         copied; migrate into a new, empty database (`CREATE DATABASE ...`)"
    )]
    TargetNotEmpty {
        /// The database name.
        database: String,
        /// What it holds.
        found: String,
    },
    /// After the copy, a table's row count differs from the source's.
    #[error(
        "after copying, {table} holds {found} rows in PostgreSQL but the SQLite store has \
         {expected}; nothing was committed; report this as a bug"
    )]
    CountMismatch {
        /// The table.
        table: &'static str,
        /// Rows in the source.
        expected: u64,
        /// Rows in the target.
        found: u64,
    },
    /// Reading the SQLite file failed.
    #[error("cannot read the SQLite store {}: {source}", .path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL refused or failed a statement of the copy.
    #[error("copying into PostgreSQL failed ({0}); nothing was committed")]
    Postgres(String),
    /// Opening either store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(pg_detail(&e))
    }
}

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationSummary {
    /// The SQLite file copied from.
    pub source: PathBuf,
    /// The PostgreSQL database copied into.
    pub database: String,
    /// Join requests copied, of any status.
    pub requests: u64,
    /// Of which pending.
    pub pending: u64,
    /// Of which approved.
    pub approved: u64,
    /// Of which denied.
    pub denied: u64,
    /// Issued tokens copied.
    pub tokens: u64,
    /// Of which delivered.
    pub delivered: u64,
    /// Of which revoked.
    pub revoked_tokens: u64,
    /// Revocation ids copied (tokens' and raw ones, e.g. delegations').
    pub revocations: u64,
    /// Invites copied (including used-up and expired ones).
    pub invites: u64,
    /// The revocation-set version, carried over.
    pub revocation_version: u64,
    /// The highest request id the source handed out; new requests get higher ones.
    pub last_request_id: i64,
    /// The highest token id the source handed out; new tokens get higher ones.
    pub last_token_id: i64,
}

impl fmt::Display for MigrationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "copied {} into PostgreSQL database {}:",
            self.source.display(),
            self.database
        )?;
        writeln!(
            f,
            "  join requests: {} ({} pending, {} approved, {} denied)",
            self.requests, self.pending, self.approved, self.denied
        )?;
        writeln!(
            f,
            "  issued tokens: {} ({} delivered, {} revoked)",
            self.tokens, self.delivered, self.revoked_tokens
        )?;
        writeln!(
            f,
            "  revocations:   {} (revocation version {})",
            self.revocations, self.revocation_version
        )?;
        writeln!(f, "  invites:       {}", self.invites)?;
        write!(
            f,
            "new request ids start after {}, new token ids after {}; start the seednodes \
             with [seednode.postgres] (or --store) on this database",
            self.last_request_id, self.last_token_id
        )
    }
}

/// Copies the SQLite store at `from` into the empty PostgreSQL database `to` (creating its
/// schema), in one transaction; see the [module documentation](self) for the guarantees.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: &PostgresOptions,
) -> Result<MigrationSummary, MigrateError> {
    let path = from.to_path_buf();
    let source = tokio::task::spawn_blocking(move || read_sqlite(&path))
        .await
        .map_err(|_| MigrateError::Store(StoreError::Unavailable))??;
    let store = PostgresStore::open(to, StoreLimits::default()).await?;
    let mut client = store.client().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    // Seednodes already using the target wait until the copy commits or rolls back.
    tx.batch_execute(
        "LOCK TABLE meta, join_requests, issued_tokens, revocations, invites IN EXCLUSIVE MODE",
    )
    .await?;
    let database: String = tx
        .query_one("SELECT current_database()", &[])
        .await?
        .try_get(0)?;
    let held = table_counts(&tx).await?;
    if held.iter().any(|(_, n)| *n > 0) {
        let found = held
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MigrateError::TargetNotEmpty { database, found });
    }

    let insert = tx
        .prepare(
            "INSERT INTO join_requests (id, network, peer, label, invite_used, created_at, \
             status, decided_at, decided_by_policy, deny_reason) OVERRIDING SYSTEM VALUE \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    for r in &source.requests {
        tx.execute(
            &insert,
            &[
                &r.id,
                &r.network,
                &r.peer,
                &r.label,
                &r.invite_used,
                &r.created_at,
                &r.status,
                &r.decided_at,
                &r.decided_by_policy,
                &r.deny_reason,
            ],
        )
        .await?;
    }
    let insert = tx
        .prepare(
            "INSERT INTO issued_tokens (token_id, request_id, network, peer, roles, rights, \
             issued_at, expires_at, revocation_id, token, delivered_at, revoked_at) \
             OVERRIDING SYSTEM VALUE \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    for t in &source.tokens {
        tx.execute(
            &insert,
            &[
                &t.token_id,
                &t.request_id,
                &t.network,
                &t.peer,
                &t.roles,
                &t.rights,
                &t.issued_at,
                &t.expires_at,
                &t.revocation_id,
                &t.token,
                &t.delivered_at,
                &t.revoked_at,
            ],
        )
        .await?;
    }
    let insert = tx
        .prepare("INSERT INTO revocations (revocation_id, revoked_at, reason) VALUES ($1, $2, $3)")
        .await?;
    for r in &source.revocations {
        tx.execute(&insert, &[&r.revocation_id, &r.revoked_at, &r.reason])
            .await?;
    }
    let insert = tx
        .prepare(
            "INSERT INTO invites (code_hash, network, uses_left, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for i in &source.invites {
        tx.execute(
            &insert,
            &[
                &i.code_hash,
                &i.network,
                &i.uses_left,
                &i.expires_at,
                &i.created_at,
            ],
        )
        .await?;
    }
    tx.execute(
        "UPDATE meta SET revocation_version = $1 WHERE id = 1",
        &[&source.revocation_version],
    )
    .await?;
    // The next id handed out is one past the highest ever used (1 when none was).
    for (table, column, last) in [
        ("join_requests", "id", source.last_request_id),
        ("issued_tokens", "token_id", source.last_token_id),
    ] {
        tx.execute(
            "SELECT setval(pg_get_serial_sequence($1, $2), GREATEST($3::BIGINT, 1), $3 > 0)",
            &[&table, &column, &last],
        )
        .await?;
    }

    let copied = table_counts(&tx).await?;
    let expected = [
        ("join_requests", len(source.requests.len())),
        ("issued_tokens", len(source.tokens.len())),
        ("revocations", len(source.revocations.len())),
        ("invites", len(source.invites.len())),
        (
            "meta (revocation version)",
            u64::try_from(source.revocation_version).unwrap_or(0),
        ),
    ];
    for ((table, expected), (_, found)) in expected.into_iter().zip(copied) {
        if expected != found {
            return Err(MigrateError::CountMismatch {
                table,
                expected,
                found,
            });
        }
    }
    tx.commit().await?;

    let status_count = |status: &str| {
        len(source
            .requests
            .iter()
            .filter(|r| r.status == status)
            .count())
    };
    Ok(MigrationSummary {
        source: from.to_path_buf(),
        database,
        requests: len(source.requests.len()),
        pending: status_count("pending"),
        approved: status_count("approved"),
        denied: status_count("denied"),
        tokens: len(source.tokens.len()),
        delivered: len(source
            .tokens
            .iter()
            .filter(|t| t.delivered_at.is_some())
            .count()),
        revoked_tokens: len(source
            .tokens
            .iter()
            .filter(|t| t.revoked_at.is_some())
            .count()),
        revocations: len(source.revocations.len()),
        invites: len(source.invites.len()),
        revocation_version: u64::try_from(source.revocation_version).unwrap_or(0),
        last_request_id: source.last_request_id,
        last_token_id: source.last_token_id,
    })
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Rows of each table and the revocation version, in the order the copy checks them.
async fn table_counts(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<[(&'static str, u64); 5], MigrateError> {
    let row = tx
        .query_one(
            "SELECT (SELECT COUNT(*) FROM join_requests), (SELECT COUNT(*) FROM issued_tokens), \
             (SELECT COUNT(*) FROM revocations), (SELECT COUNT(*) FROM invites), \
             (SELECT COALESCE(MAX(revocation_version), 0) FROM meta)",
            &[],
        )
        .await?;
    let get = |i: usize| -> Result<u64, MigrateError> {
        let n: i64 = row.try_get(i)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok([
        ("join requests", get(0)?),
        ("issued tokens", get(1)?),
        ("revocations", get(2)?),
        ("invites", get(3)?),
        ("revocation version", get(4)?),
    ])
}

/// A join request row, as both databases store it.
struct RequestRecord {
    id: i64,
    network: String,
    peer: String,
    label: Option<String>,
    invite_used: bool,
    created_at: i64,
    status: String,
    decided_at: Option<i64>,
    decided_by_policy: Option<String>,
    deny_reason: Option<String>,
}

/// An issued-token row, as both databases store it.
struct TokenRecord {
    token_id: i64,
    request_id: Option<i64>,
    network: String,
    peer: String,
    roles: String,
    rights: String,
    issued_at: i64,
    expires_at: i64,
    revocation_id: Vec<u8>,
    token: Vec<u8>,
    delivered_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// A revocation row.
struct RevocationRecord {
    revocation_id: Vec<u8>,
    revoked_at: i64,
    reason: Option<String>,
}

/// An invite row.
struct InviteRecord {
    code_hash: Vec<u8>,
    network: String,
    uses_left: i64,
    expires_at: i64,
    created_at: i64,
}

/// Everything in an SQLite store, read in one snapshot.
struct SqliteSnapshot {
    requests: Vec<RequestRecord>,
    tokens: Vec<TokenRecord>,
    revocations: Vec<RevocationRecord>,
    invites: Vec<InviteRecord>,
    revocation_version: i64,
    last_request_id: i64,
    last_token_id: i64,
}

/// Refuses when the seednode of `path`'s data directory answers on its control socket.
fn refuse_if_running(path: &Path) -> Result<(), MigrateError> {
    let data_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let socket = cordon_host::control::socket_path(&data_dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(MigrateError::SourceInUse { data_dir, socket });
    }
    Ok(())
}

/// Reads the whole SQLite store at `path`, read-only, in one read transaction.
fn read_sqlite(path: &Path) -> Result<SqliteSnapshot, MigrateError> {
    refuse_if_running(path)?;
    crate::sqlite::check_private(path)?;
    let sql = |source| MigrateError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sql)?;
    let not_a_store = |reason: String| MigrateError::NotAStore {
        path: path.to_path_buf(),
        reason,
    };
    let tx = conn.transaction().map_err(sql)?;
    let app_id: i32 = tx
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(|e| not_a_store(e.to_string()))?;
    let version: u32 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if app_id != crate::sqlite::APPLICATION_ID || version == 0 {
        return Err(not_a_store(
            "it lacks the seednode's application id and schema version".to_owned(),
        ));
    }
    if version > crate::sqlite::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: crate::sqlite::SCHEMA_VERSION,
        }
        .into());
    }
    // Schema version 1 kept no rights: its tokens had none.
    let rights = if version >= 2 { "rights" } else { "'[]'" };
    let corrupt = |reason: String| MigrateError::CorruptSource {
        path: path.to_path_buf(),
        reason,
    };

    let mut requests = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT id, network, peer, label, invite_used, created_at, status, decided_at, \
                 decided_by_policy, deny_reason FROM join_requests ORDER BY id",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let record = RequestRecord {
                id: row.get(0).map_err(sql)?,
                network: row.get(1).map_err(sql)?,
                peer: row.get(2).map_err(sql)?,
                label: row.get(3).map_err(sql)?,
                invite_used: row.get(4).map_err(sql)?,
                created_at: row.get(5).map_err(sql)?,
                status: row.get(6).map_err(sql)?,
                decided_at: row.get(7).map_err(sql)?,
                decided_by_policy: row.get(8).map_err(sql)?,
                deny_reason: row.get(9).map_err(sql)?,
            };
            check_network(&record.network)
                .map_err(|e| corrupt(format!("join request {}: {e}", record.id)))?;
            requests.push(record);
        }
    }
    let mut tokens = Vec::new();
    {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT token_id, request_id, network, peer, roles, {rights}, issued_at, \
                 expires_at, revocation_id, token, delivered_at, revoked_at \
                 FROM issued_tokens ORDER BY token_id"
            ))
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let record = TokenRecord {
                token_id: row.get(0).map_err(sql)?,
                request_id: row.get(1).map_err(sql)?,
                network: row.get(2).map_err(sql)?,
                peer: row.get(3).map_err(sql)?,
                roles: row.get(4).map_err(sql)?,
                rights: row.get(5).map_err(sql)?,
                issued_at: row.get(6).map_err(sql)?,
                expires_at: row.get(7).map_err(sql)?,
                revocation_id: row.get(8).map_err(sql)?,
                token: row.get(9).map_err(sql)?,
                delivered_at: row.get(10).map_err(sql)?,
                revoked_at: row.get(11).map_err(sql)?,
            };
            let id = record.token_id;
            check_network(&record.network)
                .map_err(|e| corrupt(format!("issued token {id}: {e}")))?;
            for list in [&record.roles, &record.rights] {
                serde_json::from_str::<Vec<String>>(list).map_err(|e| {
                    corrupt(format!("issued token {id}: roles or rights {list:?}: {e}"))
                })?;
            }
            tokens.push(record);
        }
    }
    let mut revocations = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT revocation_id, revoked_at, reason FROM revocations \
                 ORDER BY revocation_id",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            revocations.push(RevocationRecord {
                revocation_id: row.get(0).map_err(sql)?,
                revoked_at: row.get(1).map_err(sql)?,
                reason: row.get(2).map_err(sql)?,
            });
        }
    }
    let mut invites = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT code_hash, network, uses_left, expires_at, created_at FROM invites \
                 ORDER BY created_at, code_hash",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let record = InviteRecord {
                code_hash: row.get(0).map_err(sql)?,
                network: row.get(1).map_err(sql)?,
                uses_left: row.get(2).map_err(sql)?,
                expires_at: row.get(3).map_err(sql)?,
                created_at: row.get(4).map_err(sql)?,
            };
            check_network(&record.network)
                .map_err(|e| corrupt(format!("an invite of {}: {e}", record.network)))?;
            invites.push(record);
        }
    }
    let revocation_version: i64 = tx
        .query_row(
            "SELECT revocation_version FROM meta WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .map_err(sql)?;
    // AUTOINCREMENT remembers the highest id ever handed out, even of rows pruned since.
    let sequence = |table: &str| -> Result<i64, MigrateError> {
        let used: Option<i64> = tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                [table],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql)?;
        Ok(used.unwrap_or(0))
    };
    let last_request_id = sequence("join_requests")?.max(requests.last().map_or(0, |r| r.id));
    let last_token_id = sequence("issued_tokens")?.max(tokens.last().map_or(0, |t| t.token_id));
    drop(tx);
    Ok(SqliteSnapshot {
        requests,
        tokens,
        revocations,
        invites,
        revocation_version,
        last_request_id,
        last_token_id,
    })
}

fn check_network(name: &str) -> Result<(), String> {
    NetworkName::new(name.to_owned())
        .map(drop)
        .map_err(|e| format!("network name {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_testing::fresh_database;
    use crate::store::suite::{NOW, mainnet, new_token, peer, testnet};
    use crate::store::{InviteRow, IssuedTokenId, RequestId, SqliteStore, Store, Submitted};

    /// An SQLite store with every kind of row: pending, approved (delivered and not), denied
    /// and invite-admitted requests, a direct token, revoked tokens, a raw revocation id,
    /// invites used partly, fully and not at all, on two networks.
    async fn populated_sqlite(path: &Path) {
        let store = SqliteStore::open(path, StoreLimits::default()).unwrap();
        let (main, test) = (mainnet(), testnet());
        let new = |s: Submitted| match s {
            Submitted::New(row) => row,
            other => panic!("expected a new request, got {other:?}"),
        };
        // 1: pending with a label.
        new(store
            .submit_request(&main, &peer(1), Some("laptop"), false, NOW)
            .await
            .unwrap());
        // 2: approved, delivered.
        let r2 = new(store
            .submit_request(&main, &peer(2), None, false, NOW + 1)
            .await
            .unwrap());
        let mut t2 = new_token(&main, &peer(2), 2);
        t2.rights = vec!["dht_put".to_owned()];
        let t2 = store.approve(r2.id, t2, None, NOW + 2).await.unwrap();
        store.mark_delivered(t2.token_id, NOW + 3).await.unwrap();
        // 3: denied with a reason.
        let r3 = new(store
            .submit_request(&main, &peer(3), Some("spam"), false, NOW + 4)
            .await
            .unwrap());
        store.deny(r3.id, Some("unknown"), NOW + 5).await.unwrap();
        // Invites: one of three uses redeemed, one used up, one unused on another network.
        store
            .create_invite([7; 32], &main, 3, NOW + 600, NOW + 6)
            .await
            .unwrap();
        store
            .create_invite([8; 32], &main, 1, NOW + 600, NOW + 6)
            .await
            .unwrap();
        store
            .create_invite([9; 32], &test, 2, NOW + 900, NOW + 7)
            .await
            .unwrap();
        // 4: admitted by an invite, approved by policy, token undelivered.
        let r4 = new(store
            .submit_with_invite(&main, &peer(4), None, [7; 32], NOW + 8)
            .await
            .unwrap());
        store
            .approve(
                r4.id,
                new_token(&main, &peer(4), 4),
                Some("invite"),
                NOW + 8,
            )
            .await
            .unwrap();
        let refused = store
            .submit_with_invite(&test, &peer(5), None, [8; 32], NOW + 9)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::InviteRejected { .. }),
            "{refused:?}"
        );
        assert!(store.redeem_invite([8; 32], &main, NOW + 9).await.unwrap());
        // 5: approved, then its token revoked.
        let r5 = new(store
            .submit_request(&test, &peer(5), None, false, NOW + 10)
            .await
            .unwrap());
        let t5 = store
            .approve(r5.id, new_token(&test, &peer(5), 5), None, NOW + 11)
            .await
            .unwrap();
        store
            .revoke_token(t5.token_id, Some("left"), NOW + 12)
            .await
            .unwrap();
        // Direct tokens of one peer on two networks; the testnet one revoked with its peer.
        store
            .issue_direct(new_token(&main, &peer(6), 6))
            .await
            .unwrap();
        store
            .issue_direct(new_token(&test, &peer(6), 16))
            .await
            .unwrap();
        store
            .revoke_peer(&peer(6), Some(&test), None, NOW + 13)
            .await
            .unwrap();
        // A raw revocation id (a delegation's).
        assert!(
            store
                .revoke_id(&[0xde; 64], Some("delegation"), NOW + 14)
                .await
                .unwrap()
        );
        // Peer 1 of testnet: pending too, so two networks have a queue.
        new(store
            .submit_request(&test, &peer(1), None, false, NOW + 15)
            .await
            .unwrap());
    }

    /// Every read the [`Store`] trait offers, over every row: equal stores answer equally.
    async fn everything<S: Store>(store: &S) -> String {
        let mut out = Vec::new();
        let nets = [None, Some(mainnet()), Some(testnet())];
        for net in &nets {
            out.push(format!(
                "pending {net:?}: {:?}",
                store.pending(net.as_ref()).await
            ));
            out.push(format!(
                "invites {net:?}: {:?}",
                store.invites(net.as_ref()).await
            ));
            for now in [NOW, NOW + 20, NOW + 3600] {
                out.push(format!(
                    "members {net:?} {now}: {:?}",
                    store.members(net.as_ref(), now).await
                ));
            }
        }
        for net in [mainnet(), testnet()] {
            for now in [NOW, NOW + 3600] {
                out.push(format!(
                    "revoked_entries {net} {now}: {:?}",
                    store.revoked_entries(&net, now).await
                ));
            }
            for p in 1..=7 {
                out.push(format!(
                    "latest_request {net} {p}: {:?}",
                    store.latest_request(&net, &peer(p)).await
                ));
            }
        }
        for p in 1..=7 {
            out.push(format!(
                "undelivered_for {p}: {:?}",
                store.undelivered_for(&peer(p)).await
            ));
        }
        for id in 1..=10 {
            out.push(format!(
                "request {id}: {:?}",
                store.request(RequestId(id)).await
            ));
            out.push(format!(
                "token_for_request {id}: {:?}",
                store.token_for_request(RequestId(id)).await
            ));
            out.push(format!(
                "token {id}: {:?}",
                store.token(IssuedTokenId(id)).await
            ));
        }
        out.push(format!("revocations: {:?}", store.revocations().await));
        out.push(format!(
            "revocation_version: {:?}",
            store.revocation_version().await
        ));
        out.push(format!("counts: {:?}", store.counts().await));
        out.join("\n")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_migrated_store_answers_every_read_as_the_sqlite_store_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        populated_sqlite(&path).await;
        let sqlite = SqliteStore::open(&path, StoreLimits::default()).unwrap();
        let before = everything(&sqlite).await;
        let counts = sqlite.counts().await.unwrap();
        assert_eq!(counts.pending, 2, "{before}");
        assert_eq!((counts.issued, counts.delivered, counts.revoked), (5, 1, 2));
        let invites: Vec<InviteRow> = sqlite.invites(None).await.unwrap();
        assert_eq!(
            invites.iter().map(|i| i.uses_left).collect::<Vec<_>>(),
            [2, 0, 2],
            "partly used, used up, unused"
        );
        assert_eq!(sqlite.revocations().await.unwrap().ids.len(), 3);
        drop(sqlite);

        let options = fresh_database().await;
        let summary = sqlite_to_postgres(&path, &options).await.unwrap();
        assert_eq!(
            (
                summary.requests,
                summary.pending,
                summary.approved,
                summary.denied
            ),
            (6, 2, 3, 1)
        );
        assert_eq!(
            (summary.tokens, summary.delivered, summary.revoked_tokens),
            (5, 1, 2)
        );
        assert_eq!((summary.revocations, summary.invites), (3, 3));
        assert_eq!(summary.revocation_version, 3);
        assert_eq!((summary.last_request_id, summary.last_token_id), (6, 5));

        let postgres = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap();
        let after = everything(&postgres).await;
        for (b, a) in before.lines().zip(after.lines()) {
            assert_eq!(b, a);
        }
        assert_eq!(before, after);

        // The source was only read.
        let sqlite = SqliteStore::open(&path, StoreLimits::default()).unwrap();
        assert_eq!(everything(&sqlite).await, before);

        // New rows get ids past every copied one, and the copied invites still work.
        let Submitted::New(row) = postgres
            .submit_with_invite(&mainnet(), &peer(9), None, [7; 32], NOW + 30)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        assert_eq!(row.id, RequestId(7));
        assert_eq!(postgres.invites(None).await.unwrap()[0].uses_left, 1);
        let token = postgres
            .issue_direct(new_token(&mainnet(), &peer(9), 9))
            .await
            .unwrap();
        assert_eq!(token.token_id, IssuedTokenId(6));
        assert!(
            !postgres
                .redeem_invite([8; 32], &mainnet(), NOW + 30)
                .await
                .unwrap(),
            "a used-up invite stays used up"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_continue_after_rows_the_sqlite_store_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        populated_sqlite(&path).await;
        // The newest rows are gone (as pruning deletes them), but their ids were handed out.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM join_requests WHERE id = 6; \
             DELETE FROM issued_tokens WHERE token_id = 5;",
        )
        .unwrap();
        drop(conn);
        let options = fresh_database().await;
        let summary = sqlite_to_postgres(&path, &options).await.unwrap();
        assert_eq!((summary.requests, summary.tokens), (5, 4));
        assert_eq!((summary.last_request_id, summary.last_token_id), (6, 5));
        let postgres = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap();
        let Submitted::New(row) = postgres
            .submit_request(&mainnet(), &peer(9), None, false, NOW + 30)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        assert_eq!(row.id, RequestId(7), "request id 6 is never reused");
        let token = postgres
            .issue_direct(new_token(&mainnet(), &peer(9), 9))
            .await
            .unwrap();
        assert_eq!(
            token.token_id,
            IssuedTokenId(6),
            "token id 5 is never reused"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_holding_data_is_refused_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        populated_sqlite(&path).await;
        let options = fresh_database().await;
        let target = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap();
        target
            .create_invite([1; 32], &mainnet(), 1, NOW + 60, NOW)
            .await
            .unwrap();
        let err = sqlite_to_postgres(&path, &options).await.unwrap_err();
        assert!(
            matches!(&err, MigrateError::TargetNotEmpty { found, .. } if found == "invites: 1"),
            "{err:?}"
        );
        assert!(err.to_string().contains("empty database"), "{err}");
        let counts = target.counts().await.unwrap();
        assert_eq!((counts.pending, counts.issued), (0, 0));
        assert_eq!(target.invites(None).await.unwrap().len(), 1);

        // A second migration into a database already migrated into is refused as well.
        let options = fresh_database().await;
        sqlite_to_postgres(&path, &options).await.unwrap();
        let err = sqlite_to_postgres(&path, &options).await.unwrap_err();
        assert!(
            matches!(err, MigrateError::TargetNotEmpty { .. }),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_whose_seednode_is_running_or_that_is_no_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seednode.db");
        populated_sqlite(&path).await;
        let options = fresh_database().await;
        let listener =
            std::os::unix::net::UnixListener::bind(cordon_host::control::socket_path(dir.path()))
                .unwrap();
        let err = sqlite_to_postgres(&path, &options).await.unwrap_err();
        assert!(matches!(err, MigrateError::SourceInUse { .. }), "{err:?}");
        drop(listener);

        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        drop(conn);
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let err = sqlite_to_postgres(&other, &options).await.unwrap_err();
        assert!(matches!(err, MigrateError::NotAStore { .. }), "{err:?}");
        // Neither attempt wrote anything: the target still takes a migration.
        sqlite_to_postgres(&path, &options).await.unwrap();
    }
}
