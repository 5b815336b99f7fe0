//! The shared [`Store`]: one PostgreSQL database that several seednodes of a network use at
//! once (DESIGN.md section 10).
//!
//! [`PostgresStore`] holds a bounded pool of connections (deadpool); every store call takes one
//! connection and runs as one `SERIALIZABLE` transaction. Behaviour is the SQLite back end's
//! ([`crate::sqlite`]) to the row: the same errors, ordering, id and version semantics; the
//! shared suite in [`crate::store`] runs against both.
//!
//! # PostgreSQL specifics (on top of the [`Store`] invariants)
//! - **Races between seednodes are decided by the database.** Every call is one
//!   `SERIALIZABLE` transaction; one that loses a race (SQLSTATE 40001 or 40P01, or the
//!   unique index it raced for) is retried from the start, at most [`MAX_ATTEMPTS`] times.
//!   So an invite is redeemed at most `uses` times, the queue caps hold, and the revocation
//!   version (one row, bumped in the transaction that changes the set) moves by exactly one
//!   per changing call, however many seednodes call at once. A partial unique index keeps
//!   one pending request per (network, peer) even if that logic were ever wrong.
//! - **Ids are `BIGINT GENERATED ALWAYS AS IDENTITY`:** positive and never reused (a rolled
//!   back transaction burns its ids, so ids may have gaps, as they may not in SQLite).
//! - **Text ordering is bytewise** (`COLLATE "C"`), as in SQLite, whatever the database's
//!   locale.
//! - **The schema is versioned** (table `cordon_schema`, [`SCHEMA_VERSION`]) and migrated at
//!   open under a transaction-scoped advisory lock, so seednodes opening a fresh database at
//!   once create it once. A newer schema, and a database that has tables but no
//!   `cordon_schema`, are refused.
//! - **Bounded waits:** a pool of [`PostgresOptions::pool_size`] connections; a caller waits at
//!   most [`PostgresOptions::pool_wait`] for one, connecting takes at most
//!   [`PostgresOptions::connect_timeout`], and the server cancels any statement running longer
//!   than [`PostgresOptions::statement_timeout`]. An unreachable or exhausted database is
//!   [`StoreError::DatabaseUnreachable`], never a hang.
//! - **Passwords never appear on a command line, in logs or in errors:** a URL holding one is
//!   refused; it comes from a private password file, `PGPASSWORD` or PostgreSQL's passfile.
//! - **A server restart is ridden out without restarting the seednode:** while the server is
//!   down every call fails at once with [`StoreError::DatabaseUnreachable`] (nothing is
//!   applied); a pooled connection found dead at `BEGIN` (the server restarted since it was
//!   last used) is discarded, with every other closed one, and the call runs again on a fresh
//!   connection, so the first call after a restart succeeds. A connection lost at or after
//!   `COMMIT` is not retried: whether it committed is unknown, and the caller hears so.
//! - **Other seednodes are woken, not only polled:** a transaction that issues a token or
//!   changes the revocation set also sends a `NOTIFY` on [`NOTIFY_CHANNEL`] (delivered only if
//!   it commits). [`PostgresStore::subscribe`] opens one dedicated `LISTEN` connection (not
//!   from the pool) in a background task that turns them into [`StoreEvent`]s on a bounded
//!   queue ([`PostgresOptions::notify_queue`]; a full queue drops the notification, and
//!   polling remains the fallback) and reconnects with bounded exponential back-off
//!   ([`PostgresOptions::listen_retry_max`]) when the server goes away or stops answering its
//!   liveness check ([`PostgresOptions::listen_heartbeat`]). Payloads are small
//!   (`token ORIGIN PEER`, `revoked ORIGIN`), parsed as hostile input, and a handle ignores
//!   its own (ORIGIN is random per handle).
//! - **TLS when the server offers it** by default; `tls = "verify-full"` with a `ca_file`
//!   authenticates the server too ([`crate::pg_tls`]). A Unix socket never carries TLS.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cordon_protocol::NetworkName;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use crate::fault::{self, FaultPoint};
use crate::notify::{LISTEN_RETRY_MIN, Listener, Notice, random_origin};
use crate::pg_tls::{self, PgTls};
use crate::store::{
    Counts, INVITE_PREFIX_BYTES, InviteRow, IssuedTokenId, IssuedTokenRow, JoinRequestRow,
    NewToken, PendingFilter, RequestId, RequestStatus, RevocationSnapshot, Store, StoreError,
    StoreEvent, StoreLimits, Submitted, check_new_invite, check_new_token, check_submission,
    empty_revocation_id, hex, invalid,
};

/// Schema version recorded in `cordon_schema` by this code.
pub const SCHEMA_VERSION: i32 = 1;

/// Most tries of one store call that keeps losing races to other seednodes.
pub const MAX_ATTEMPTS: u32 = 10;

/// Key of the advisory lock taken while the schema is checked and migrated ("Cord").
const MIGRATION_LOCK: i64 = 0x436f_7264;

/// The `NOTIFY` channel on which store changes other seednodes act on are announced.
pub const NOTIFY_CHANNEL: &str = "cordon_store";

/// Migrations, index `i` upgrades schema version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// Version 1: SQLite's schema version 2, in PostgreSQL types.
const SCHEMA_V1: &str = "
CREATE TABLE cordon_schema (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO cordon_schema (id, version) VALUES (1, 0);

CREATE TABLE meta (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    revocation_version BIGINT  NOT NULL CHECK (revocation_version >= 0)
);
INSERT INTO meta (id, revocation_version) VALUES (1, 0);

CREATE TABLE join_requests (
    id                BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network           TEXT    NOT NULL,
    peer              TEXT    NOT NULL,
    label             TEXT,
    invite_used       BOOLEAN NOT NULL,
    created_at        BIGINT  NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'approved', 'denied')),
    decided_at        BIGINT,
    decided_by_policy TEXT,
    deny_reason       TEXT,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE UNIQUE INDEX join_requests_one_pending
    ON join_requests (network, peer) WHERE status = 'pending';
CREATE INDEX join_requests_by_peer ON join_requests (network, peer, id);
CREATE INDEX join_requests_by_status ON join_requests (status, network);

CREATE TABLE issued_tokens (
    token_id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    BIGINT UNIQUE REFERENCES join_requests (id),
    network       TEXT   NOT NULL,
    peer          TEXT   NOT NULL,
    roles         TEXT   NOT NULL,
    rights        TEXT   NOT NULL DEFAULT '[]',
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revocation_id BYTEA  NOT NULL UNIQUE,
    token         BYTEA  NOT NULL,
    delivered_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX issued_tokens_by_peer ON issued_tokens (peer, network);
CREATE INDEX issued_tokens_live ON issued_tokens (network, peer, expires_at)
    WHERE revoked_at IS NULL;
CREATE INDEX issued_tokens_undelivered ON issued_tokens (peer)
    WHERE delivered_at IS NULL AND revoked_at IS NULL;

CREATE TABLE revocations (
    revocation_id BYTEA  PRIMARY KEY,
    revoked_at    BIGINT NOT NULL,
    reason        TEXT
);

CREATE TABLE invites (
    code_hash  BYTEA  PRIMARY KEY CHECK (length(code_hash) = 32),
    network    TEXT   NOT NULL,
    uses_left  BIGINT NOT NULL CHECK (uses_left >= 0),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX invites_by_network ON invites (network, created_at);
";

const REQUEST_COLS: &str = "id, network, peer, label, invite_used, created_at, status, \
     decided_at, decided_by_policy, deny_reason";

const TOKEN_COLS: &str = "token_id, request_id, network, peer, roles, issued_at, expires_at, \
     revocation_id, token, delivered_at, revoked_at, rights";

/// How often old history is pruned, at most (per store handle).
const PRUNE_EVERY_SECS: u64 = 3600;

/// Where and how to reach the shared database (config section `[seednode.postgres]`).
///
/// Its `Debug` output never shows a password, even one wrongly put in `url`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresOptions {
    /// The database, as a URL (`postgres://USER@HOST:PORT/DB`; a Unix socket directory as
    /// `postgres://USER@/DB?host=/run/postgresql`) or key=value pairs (`host=... user=...
    /// dbname=...`). Must not hold a password. Required; no default.
    pub url: String,
    /// A file holding the password (one line; mode 0600 or stricter). Default: none, then
    /// `PGPASSWORD`, then PostgreSQL's passfile (`PGPASSFILE` or `~/.pgpass`).
    pub password_file: Option<PathBuf>,
    /// Most connections this seednode holds open. Default: 8.
    pub pool_size: usize,
    /// Longest a store call waits for a free connection before failing. Default: 5 s.
    #[serde(with = "cordon_host::config::duration")]
    pub pool_wait: Duration,
    /// Longest opening one connection may take. Default: 5 s.
    #[serde(with = "cordon_host::config::duration")]
    pub connect_timeout: Duration,
    /// Longest one SQL statement may run before the server cancels it. Default: 30 s.
    #[serde(with = "cordon_host::config::duration")]
    pub statement_timeout: Duration,
    /// TLS to the server: `disable`, `prefer` (when the server offers it; the default),
    /// `require`, or `verify-full` (the certificate must chain to `ca_file` and name the url's
    /// host). See [`crate::pg_tls`].
    pub tls: PgTls,
    /// PEM certificates trusted for `tls = "verify-full"`. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Notifications from the other seednodes (a token issued, the revocation set changed)
    /// queued for the join service at most; more are dropped, and the nodes concerned get
    /// their tokens at their next poll instead. Default: 256.
    pub notify_queue: usize,
    /// Longest wait between two attempts to reopen the notification (`LISTEN`) connection
    /// after the server went away; waits start at 100 ms and double. Default: 10 s.
    #[serde(with = "cordon_host::config::duration")]
    pub listen_retry_max: Duration,
    /// How often the notification connection checks that the server still answers
    /// (`SELECT 1`, to be answered within `connect_timeout`, else the connection is reopened),
    /// so a connection the network dropped silently is noticed. Default: 30 s.
    #[serde(with = "cordon_host::config::duration")]
    pub listen_heartbeat: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_file: None,
            pool_size: 8,
            pool_wait: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            tls: PgTls::default(),
            ca_file: None,
            notify_queue: 256,
            listen_retry_max: Duration::from_secs(10),
            listen_heartbeat: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("notify_queue", &self.notify_queue)
            .field("listen_retry_max", &self.listen_retry_max)
            .field("listen_heartbeat", &self.listen_heartbeat)
            .finish()
    }
}

impl PostgresOptions {
    /// Checks the settings without touching the network: a url that parses, names a user and
    /// holds no password; a pool of 1 to 1,024 connections, a pool wait of 10 ms to 10
    /// minutes, a connect timeout of 100 ms to 10 minutes, a statement timeout of 100 ms to an
    /// hour, a notification queue of 1 to 65,536, a `LISTEN` retry wait of 100 ms to 10
    /// minutes and a `LISTEN` heartbeat of 1 s to an hour; a `ca_file` with, and only with,
    /// `tls = "verify-full"`, which like `require` needs a TCP host.
    pub fn validate(&self) -> Result<(), cordon_host::config::Invalid> {
        use cordon_host::config::{Invalid, duration_in_range, in_range};
        let url = self.parse_url()?;
        match (self.tls, &self.ca_file) {
            (PgTls::VerifyFull, None) => {
                return Err(Invalid::new(
                    "ca_file",
                    "is required with tls = \"verify-full\": the PEM certificate(s) the \
                     server's certificate must chain to",
                ));
            }
            (PgTls::VerifyFull, Some(_)) | (_, None) => {}
            (other, Some(_)) => {
                return Err(Invalid::new(
                    "ca_file",
                    format!(
                        "is only used with tls = \"verify-full\" (tls is \"{}\", which does not \
                         check the server's certificate)",
                        other.as_str()
                    ),
                ));
            }
        }
        if matches!(self.tls, PgTls::Require | PgTls::VerifyFull)
            && url.get_hosts().iter().any(|h| !matches!(h, Host::Tcp(_)))
        {
            return Err(Invalid::new(
                "tls",
                format!(
                    "\"{}\" needs a TCP host: PostgreSQL offers no TLS over a Unix socket",
                    self.tls.as_str()
                ),
            ));
        }
        in_range("pool_size", self.pool_size, 1, 1024)?;
        duration_in_range(
            "pool_wait",
            self.pool_wait,
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        duration_in_range(
            "connect_timeout",
            self.connect_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        duration_in_range(
            "statement_timeout",
            self.statement_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        in_range("notify_queue", self.notify_queue, 1, 65_536)?;
        duration_in_range(
            "listen_retry_max",
            self.listen_retry_max,
            LISTEN_RETRY_MIN,
            Duration::from_secs(600),
        )?;
        duration_in_range(
            "listen_heartbeat",
            self.listen_heartbeat,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
    }

    /// The url, parsed and checked (see [`PostgresOptions::validate`]).
    fn parse_url(&self) -> Result<tokio_postgres::Config, cordon_host::config::Invalid> {
        use cordon_host::config::Invalid;
        if self.url.trim().is_empty() {
            return Err(Invalid::new(
                "url",
                "is required, e.g. \"postgres://cordon@db.example:5432/cordon\"",
            ));
        }
        let config: tokio_postgres::Config = self.url.parse().map_err(|e| {
            Invalid::new(
                "url",
                format!(
                    "{} cannot be parsed ({}); write postgres://USER@HOST:PORT/DB",
                    redact_url(&self.url),
                    pg_detail(&e)
                ),
            )
        })?;
        if self.url.to_ascii_lowercase().contains("sslmode") {
            return Err(Invalid::new(
                "url",
                "sets sslmode; set tls (and ca_file) in [seednode.postgres] instead",
            ));
        }
        if config.get_password().is_some() {
            return Err(Invalid::new(
                "url",
                "holds a password, which would show in config files, command lines and \
                 process listings; remove it and put the password in a file named by \
                 password_file (mode 0600), PGPASSWORD or ~/.pgpass",
            ));
        }
        if config.get_user().is_none() {
            return Err(Invalid::new(
                "url",
                format!(
                    "{} names no user; write postgres://USER@HOST:PORT/DB",
                    redact_url(&self.url)
                ),
            ));
        }
        Ok(config)
    }

    /// The TLS connector for [`PostgresOptions::tls`].
    pub(crate) fn tls_connector(
        &self,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        pg_tls::connector(self.tls, self.ca_file.as_deref()).map_err(config_error)
    }

    /// The connection settings: the parsed url with the timeouts and the password from
    /// `password_file`, `PGPASSWORD` or the passfile.
    fn connection_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config = self.parse_url().map_err(|e| config_error(e.to_string()))?;
        let sources = PasswordSources {
            password_file: self.password_file.clone(),
            pgpassword: std::env::var_os("PGPASSWORD").map(|v| v.into_encoded_bytes()),
            pgpassfile: std::env::var_os("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass"))),
        };
        if let Some(password) = sources.password_for(&config)? {
            config.password(password);
        }
        let ms = self.statement_timeout.as_millis();
        config
            .ssl_mode(self.tls.ssl_mode())
            .connect_timeout(self.connect_timeout)
            .application_name("cordon-seednode")
            .options(format!(
                "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
            ));
        Ok(config)
    }
}

/// Where a password may come from, in order (see [`PostgresOptions::password_file`]).
struct PasswordSources {
    password_file: Option<PathBuf>,
    pgpassword: Option<Vec<u8>>,
    pgpassfile: Option<PathBuf>,
}

impl PasswordSources {
    fn password_for(&self, config: &tokio_postgres::Config) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(path) = &self.password_file {
            let text = read_private(path, "password_file")?;
            let password = text.lines().next().unwrap_or_default();
            if password.is_empty() {
                return Err(config_error(format!(
                    "password file {} is empty; write the password on its first line",
                    path.display()
                )));
            }
            return Ok(Some(password.as_bytes().to_vec()));
        }
        if let Some(password) = &self.pgpassword {
            return Ok(Some(password.clone()));
        }
        let Some(path) = &self.pgpassfile else {
            return Ok(None);
        };
        if !path.is_file() {
            return Ok(None);
        }
        let text = read_private(path, "passfile")?;
        let user = config.get_user().unwrap_or_default();
        let db = config.get_dbname().unwrap_or(user);
        let port = config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
            .to_string();
        let hosts: Vec<String> = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => vec![host.clone()],
            Some(Host::Unix(dir)) => vec![dir.display().to_string(), "localhost".to_owned()],
            None => vec!["localhost".to_owned()],
        };
        Ok(hosts
            .iter()
            .find_map(|host| pgpass_lookup(&text, host, &port, db, user))
            .map(String::into_bytes))
    }
}

/// Reads a file that only its owner may access (it holds a password).
fn read_private(path: &Path, what: &str) -> Result<String, StoreError> {
    let unreadable = |e: std::io::Error| {
        config_error(format!(
            "cannot read {what} {}: {e}; check the path",
            path.display()
        ))
    };
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(config_error(format!(
            "{what} {} has mode {mode:o}, so other users can read the password; fix with \
             `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

/// The password of the first passfile line (`host:port:database:user:password`, `*` matching
/// anything, `\:` and `\\` escaping) that matches, as libpq reads `~/.pgpass`.
fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if matches(h, host) && matches(p, port) && matches(d, db) && matches(u, user) {
            return Some(password.clone());
        }
    }
    None
}

/// `url` with any password replaced by `***`, for messages and `Debug`.
fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &url[rest_start..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let mut out = url[..rest_start].to_owned();
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(HIDDEN);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        let mut query = rest[authority_end..].to_owned();
        if let Some(q) = query.find('?') {
            let (path, params) = query.split_at(q + 1);
            let params: Vec<String> = params
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={HIDDEN}"),
                    _ => kv.to_owned(),
                })
                .collect();
            query = format!("{path}{}", params.join("&"));
        }
        out.push_str(&query);
        return out;
    }
    // key=value form: hide the value of `password` (quoted or not).
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find("password") {
        let after = &rest[at + "password".len()..];
        let trimmed = after.trim_start();
        let starts_key = at == 0 || rest[..at].ends_with(char::is_whitespace);
        if !(starts_key && trimmed.starts_with('=')) {
            out.push_str(&rest[..at + "password".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        out.push_str("password=");
        out.push_str(HIDDEN);
        let value = trimmed[1..].trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let mut end = value.len();
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = i + 2;
                        break;
                    }
                    _ => {}
                }
            }
            end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

fn config_error(reason: String) -> StoreError {
    StoreError::PostgresConfig { reason }
}

/// The TLS failure behind a connection error, if that is what it is (a certificate the
/// settings do not accept, say): not a passing outage, so not reported as one.
fn tls_refusal(error: &tokio_postgres::Error) -> Option<String> {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        cause = e.source();
    }
    None
}

/// A tokio-postgres error with its cause (its `Display` alone says only "db error").
pub(crate) fn pg_detail(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// The PostgreSQL [`Store`]: see the [module documentation](self).
pub struct PostgresStore {
    pool: Pool,
    /// The pool's connection settings (password included) and TLS, for the `LISTEN`
    /// connection.
    listen_config: Box<tokio_postgres::Config>,
    listen_tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// This handle's random id in notification payloads, so it ignores its own.
    origin: String,
    /// Notifications its subscriptions dropped because their queue was full.
    notifications_dropped: Arc<AtomicU64>,
    options: PostgresOptions,
    limits: StoreLimits,
    /// When this handle last pruned history (unix seconds; 0: not yet).
    last_prune: AtomicU64,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.options)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs `$body` (a future of `Result<T, StoreError>` that uses `$tx: &Tx`) as one
/// `SERIALIZABLE` transaction on a pooled connection, committing when it succeeds and retrying
/// the whole transaction when it lost a race to another transaction. With `faults: (before,
/// after)` (two [`FaultPoint`]s), the fault-injection points just before and just after the
/// commit (see [`crate::fault`]).
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {
        transaction!($store, faults: None::<(FaultPoint, FaultPoint)>, |$tx| $body)
    };
    ($store:expr, faults: $faults:expr, |$tx:ident| $body:expr) => {{
        let faults: Option<(FaultPoint, FaultPoint)> = $faults;
        let store: &PostgresStore = $store;
        let mut attempt: u32 = 1;
        loop {
            // Whether the pooled connection turned out dead before anything ran on it (the
            // server restarted since it was last used): nothing was applied, so run again.
            let mut stale = false;
            let outcome = async {
                let mut client = store.client().await?;
                let error = match client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .await
                {
                    Ok(tx) => {
                        let value: Result<_, StoreError> = {
                            let $tx = &tx;
                            $body.await
                        };
                        let value = value?;
                        if let Some((before, _)) = faults {
                            fault::hit(before);
                        }
                        tx.commit().await?;
                        if let Some((_, after)) = faults {
                            fault::hit(after);
                        }
                        return Ok::<_, StoreError>(value);
                    }
                    Err(e) => e,
                };
                if is_disconnect(&error) {
                    stale = true;
                    store.discard(client);
                }
                Err(error.into())
            }
            .await;
            match outcome {
                Err(e) if attempt < MAX_ATTEMPTS && stale => {
                    tracing::debug!(
                        attempt,
                        reason = %e,
                        "pooled database connection was dead; retrying on another"
                    );
                    attempt += 1;
                }
                Err(e) if attempt < MAX_ATTEMPTS && lost_race(&e) => {
                    tracing::debug!(
                        attempt,
                        "seednode database transaction lost a race; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                    attempt += 1;
                }
                outcome => break outcome.map_err(unreachable_if_disconnected),
            }
        }
    }};
}

impl PostgresStore {
    /// Connects to the database `options` names, creates or migrates its schema to
    /// [`SCHEMA_VERSION`] and returns the store.
    ///
    /// Refuses unusable options (a password in the url, a password file others can read), a
    /// database with a newer schema or with tables that are not a Cordon store; an
    /// unreachable server is [`StoreError::DatabaseUnreachable`].
    pub async fn open(
        options: &PostgresOptions,
        limits: StoreLimits,
    ) -> Result<PostgresStore, StoreError> {
        options
            .validate()
            .map_err(|e| config_error(e.to_string()))?;
        let config = options.connection_config()?;
        let listen_config = Box::new(config.clone());
        let tls = options.tls_connector()?;
        let manager = Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| config_error(format!("cannot build the connection pool: {e}")))?;
        let store = PostgresStore {
            pool,
            listen_config,
            listen_tls: tls,
            origin: random_origin(),
            notifications_dropped: Arc::new(AtomicU64::new(0)),
            options: options.clone(),
            limits,
            last_prune: AtomicU64::new(0),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Notifications from other seednodes that this handle's subscriptions
    /// ([`Store::subscribe`]) dropped because their queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        self.notifications_dropped.load(Ordering::Relaxed)
    }

    /// A pooled connection, or [`StoreError::DatabaseUnreachable`] once
    /// [`PostgresOptions::pool_wait`] passed without one.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let reason = match e {
                PoolError::Timeout(_) => format!(
                    "no connection became free within {} (pool of {}); the database may be \
                     slow or the pool too small (pool_size)",
                    humantime::format_duration(self.options.pool_wait),
                    self.options.pool_size
                ),
                PoolError::Backend(e) => {
                    if let Some(refused) = tls_refusal(&e) {
                        return config_error(format!(
                            "TLS with the server failed ({refused}); check tls and ca_file"
                        ));
                    }
                    format!("cannot connect: {}", pg_detail(&e))
                }
                other => format!("cannot get a connection: {other}"),
            };
            StoreError::DatabaseUnreachable { reason }
        })
    }

    /// Drops a connection found dead, and every other pooled one already closed, so the next
    /// call connects afresh instead of finding them one by one.
    fn discard(&self, client: deadpool_postgres::Object) {
        drop(deadpool_postgres::Object::take(client));
        self.pool.retain(|client, _| !client.is_closed());
    }

    /// Creates or upgrades the schema, under an advisory lock so concurrent opens of one
    /// fresh database apply each migration once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let marked: bool = tx
                .query_one("SELECT to_regclass('cordon_schema') IS NOT NULL", &[])
                .await?
                .try_get(0)?;
            let found: i32 = if marked {
                tx.query_opt("SELECT version FROM cordon_schema WHERE id = 1", &[])
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?
                    .unwrap_or(0)
            } else {
                let tables: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM pg_catalog.pg_tables \
                         WHERE schemaname = current_schema()",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                if tables > 0 {
                    let database: String = tx
                        .query_one("SELECT current_database()", &[])
                        .await?
                        .try_get(0)?;
                    return Err(StoreError::ForeignPostgres { database });
                }
                0
            };
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    supported: SCHEMA_VERSION.unsigned_abs(),
                });
            }
            let start = usize::try_from(found).map_err(|_| StoreError::Corrupt {
                reason: format!("schema version {found} is negative"),
            })?;
            for sql in MIGRATIONS.iter().skip(start) {
                tx.batch_execute(sql).await?;
            }
            if found < SCHEMA_VERSION {
                tx.execute(
                    "UPDATE cordon_schema SET version = $1 WHERE id = 1",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        result.map_err(unreachable_if_disconnected)
    }

    /// Expires old pending requests and, at most hourly, prunes old history: the
    /// housekeeping every submission does first, as in SQLite.
    async fn housekeeping(&self, tx: &Tx<'_>, now: u64) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(self.limits.pending_ttl.as_secs());
        execute(
            tx,
            "UPDATE join_requests SET status = 'denied', decided_at = $1, \
             decided_by_policy = 'expired', deny_reason = 'expired' \
             WHERE status = 'pending' AND created_at < $2",
            &[&int("now", now)?, &int("now", cutoff)?],
        )
        .await?;
        let last = self.last_prune.load(Ordering::Relaxed);
        if now >= last.saturating_add(PRUNE_EVERY_SECS) {
            self.last_prune.store(now, Ordering::Relaxed);
            prune_history(tx, &self.limits, now).await?;
        }
        Ok(())
    }
}

/// Whether `error` means the transaction lost a race and may succeed when run again.
fn lost_race(error: &StoreError) -> bool {
    let StoreError::Postgres(e) = error else {
        return false;
    };
    matches!(
        e.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            | Some(&SqlState::T_R_DEADLOCK_DETECTED)
            | Some(&SqlState::UNIQUE_VIOLATION)
    )
}

/// A lost or failed connection is [`StoreError::DatabaseUnreachable`] (retry later); other
/// errors stay as they are.
fn unreachable_if_disconnected(error: StoreError) -> StoreError {
    match error {
        // A closed connection, or an I/O failure talking to the server (not an SQL error).
        StoreError::Postgres(e) if is_disconnect(&e) => StoreError::DatabaseUnreachable {
            reason: pg_detail(&e),
        },
        other => other,
    }
}

/// Whether `error` means the connection is gone or the server is going away or not yet up
/// (rather than an SQL error): a closed connection, an I/O failure, an administrator or crash
/// shutdown (SQLSTATE 57P01, 57P02), a server still starting (57P03), or any connection
/// exception (class 08).
fn is_disconnect(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => is_io(error),
        Some(code) => {
            matches!(
                code,
                &SqlState::ADMIN_SHUTDOWN
                    | &SqlState::CRASH_SHUTDOWN
                    | &SqlState::CANNOT_CONNECT_NOW
            ) || code.code().starts_with("08")
        }
    }
}

fn is_io(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// A caller's unsigned value as a `BIGINT`.
fn int(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| invalid(field, format!("{value} is too large")))
}

async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

async fn execute(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// Deletes history older than the limits' `retention`, as SQLite's pruning does (see
/// [`StoreLimits::retention`]). Returns the rows deleted.
async fn prune_history(tx: &Tx<'_>, limits: &StoreLimits, now: u64) -> Result<u64, StoreError> {
    let cutoff = int("now", now.saturating_sub(limits.retention.as_secs()))?;
    let tokens = execute(
        tx,
        "DELETE FROM issued_tokens WHERE expires_at < $1 AND revoked_at IS NULL",
        &[&cutoff],
    )
    .await?;
    let requests = execute(
        tx,
        "DELETE FROM join_requests WHERE status <> 'pending' AND decided_at < $1 \
         AND (status = 'approved' OR decided_by_policy IS NOT NULL) \
         AND NOT EXISTS (SELECT 1 FROM issued_tokens t WHERE t.request_id = join_requests.id)",
        &[&cutoff],
    )
    .await?;
    if tokens + requests > 0 {
        tracing::info!(tokens, requests, "pruned history older than the retention");
    }
    Ok(tokens + requests)
}

async fn check_caps(
    tx: &Tx<'_>,
    limits: &StoreLimits,
    network: &NetworkName,
) -> Result<(), StoreError> {
    let row = query_opt(
        tx,
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE network = $1) FROM join_requests \
         WHERE status = 'pending'",
        &[&network.as_str()],
    )
    .await?
    .ok_or_else(|| corrupt("the pending count returned no row"))?;
    let total = non_negative(&row, 0)?;
    let in_network = non_negative(&row, 1)?;
    if in_network >= limits.max_pending_per_network as u64 {
        return Err(StoreError::QueueFull {
            network: network.clone(),
            limit: limits.max_pending_per_network,
        });
    }
    if total >= limits.max_pending_total as u64 {
        return Err(StoreError::QueueFullTotal {
            limit: limits.max_pending_total,
        });
    }
    Ok(())
}

async fn pending_for(
    tx: &Tx<'_>,
    network: &NetworkName,
    peer: &str,
) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM join_requests \
         WHERE network = $1 AND peer = $2 AND status = 'pending'"
    );
    query_opt(tx, &sql, &[&network.as_str(), &peer])
        .await?
        .map(|row| request_from_row(&row))
        .transpose()
}

async fn insert_request(
    tx: &Tx<'_>,
    network: &NetworkName,
    peer: &str,
    label: Option<&str>,
    invite_used: bool,
    now: u64,
) -> Result<JoinRequestRow, StoreError> {
    let sql = format!(
        "INSERT INTO join_requests (network, peer, label, invite_used, created_at, status) \
         VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING {REQUEST_COLS}"
    );
    let rows = query(
        tx,
        &sql,
        &[
            &network.as_str(),
            &peer,
            &label,
            &invite_used,
            &int("now", now)?,
        ],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("an insert returned no row"))?;
    request_from_row(row)
}

async fn get_request(tx: &Tx<'_>, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
    let sql = format!("SELECT {REQUEST_COLS} FROM join_requests WHERE id = $1");
    query_opt(tx, &sql, &[&id.0])
        .await?
        .map(|row| request_from_row(&row))
        .transpose()
}

/// Records an issued, undelivered token and announces it to the other seednodes (on commit).
async fn insert_token(
    tx: &Tx<'_>,
    origin: &str,
    request_id: Option<RequestId>,
    token: &NewToken,
) -> Result<IssuedTokenRow, StoreError> {
    let known = query_opt(
        tx,
        "SELECT EXISTS (SELECT 1 FROM issued_tokens WHERE revocation_id = $1) \
             OR EXISTS (SELECT 1 FROM revocations WHERE revocation_id = $1)",
        &[&token.revocation_id],
    )
    .await?
    .map(|row| row.try_get::<_, bool>(0))
    .transpose()?
    .unwrap_or(false);
    if known {
        return Err(StoreError::DuplicateRevocationId {
            revocation_id: hex(&token.revocation_id),
        });
    }
    let roles = serde_json::to_string(&token.roles)
        .map_err(|e| invalid("roles", format!("cannot be encoded: {e}")))?;
    let rights = serde_json::to_string(&token.rights)
        .map_err(|e| invalid("rights", format!("cannot be encoded: {e}")))?;
    let sql = format!(
        "INSERT INTO issued_tokens (request_id, network, peer, roles, issued_at, expires_at, \
         revocation_id, token, rights) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING {TOKEN_COLS}"
    );
    let rows = query(
        tx,
        &sql,
        &[
            &request_id.map(|id| id.0),
            &token.network.as_str(),
            &token.peer.to_base58(),
            &roles,
            &int("issued_at", token.issued_at)?,
            &int("expires_at", token.expires_at)?,
            &token.revocation_id,
            &token.token,
            &rights,
        ],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("an insert returned no row"))?;
    let row = token_from_row(row)?;
    notify(
        tx,
        &Notice::TokenIssued { peer: token.peer }.payload(origin),
    )
    .await?;
    Ok(row)
}

async fn get_token(
    tx: &Tx<'_>,
    token_id: IssuedTokenId,
) -> Result<Option<IssuedTokenRow>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLS} FROM issued_tokens WHERE token_id = $1");
    query_opt(tx, &sql, &[&token_id.0])
        .await?
        .map(|row| token_from_row(&row))
        .transpose()
}

/// Returns whether the id was new to the set.
async fn insert_revocation(
    tx: &Tx<'_>,
    revocation_id: &[u8],
    reason: Option<&str>,
    now: u64,
) -> Result<bool, StoreError> {
    let added = execute(
        tx,
        "INSERT INTO revocations (revocation_id, revoked_at, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (revocation_id) DO NOTHING",
        &[&revocation_id, &int("now", now)?, &reason],
    )
    .await?;
    Ok(added > 0)
}

/// Moves the revocation version on by one and announces the change to the other seednodes
/// (on commit).
async fn bump_revocation_version(tx: &Tx<'_>, origin: &str) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE meta SET revocation_version = revocation_version + 1 WHERE id = 1",
        &[],
    )
    .await?;
    notify(tx, &Notice::RevocationsChanged.payload(origin)).await
}

/// Queues a notification on [`NOTIFY_CHANNEL`]; PostgreSQL sends it when (and only if) the
/// transaction commits.
async fn notify(tx: &Tx<'_>, payload: &str) -> Result<(), StoreError> {
    execute(tx, "SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &payload]).await?;
    Ok(())
}

async fn read_revocation_version(tx: &Tx<'_>) -> Result<u64, StoreError> {
    let row = query_opt(tx, "SELECT revocation_version FROM meta WHERE id = 1", &[])
        .await?
        .ok_or_else(|| corrupt("the revocation version row is missing"))?;
    non_negative(&row, 0)
}

async fn redeem(
    tx: &Tx<'_>,
    code_hash: [u8; 32],
    network: &NetworkName,
    now: u64,
) -> Result<bool, StoreError> {
    let changed = execute(
        tx,
        "UPDATE invites SET uses_left = uses_left - 1 \
         WHERE code_hash = $1 AND network = $2 AND expires_at > $3 AND uses_left > 0",
        &[&code_hash.as_slice(), &network.as_str(), &int("now", now)?],
    )
    .await?;
    Ok(changed == 1)
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        reason: reason.into(),
    }
}

/// A non-negative `BIGINT` column (a time, a count or a version) as `u64`.
fn non_negative(row: &Row, column: usize) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| corrupt(format!("column {column} holds {value}")))
}

fn opt_time(row: &Row, column: usize) -> Result<Option<u64>, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u64::try_from(v).map_err(|_| corrupt(format!("column {column} holds {v}"))))
        .transpose()
}

fn stored_network(row: &Row, column: usize) -> Result<NetworkName, StoreError> {
    let name: String = row.try_get(column)?;
    NetworkName::new(name).map_err(|e| corrupt(format!("network name: {e}")))
}

fn stored_status(row: &Row, column: usize) -> Result<RequestStatus, StoreError> {
    let status: &str = row.try_get(column)?;
    match status {
        "pending" => Ok(RequestStatus::Pending),
        "approved" => Ok(RequestStatus::Approved),
        "denied" => Ok(RequestStatus::Denied),
        other => Err(corrupt(format!("unknown join request status {other:?}"))),
    }
}

fn stored_list(row: &Row, column: usize) -> Result<Vec<String>, StoreError> {
    let text: &str = row.try_get(column)?;
    serde_json::from_str(text).map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn request_from_row(row: &Row) -> Result<JoinRequestRow, StoreError> {
    Ok(JoinRequestRow {
        id: RequestId(row.try_get(0)?),
        network: stored_network(row, 1)?,
        peer: row.try_get(2)?,
        label: row.try_get(3)?,
        invite_used: row.try_get(4)?,
        created_at: non_negative(row, 5)?,
        status: stored_status(row, 6)?,
        decided_at: opt_time(row, 7)?,
        decided_by_policy: row.try_get(8)?,
        deny_reason: row.try_get(9)?,
    })
}

fn token_from_row(row: &Row) -> Result<IssuedTokenRow, StoreError> {
    let request_id: Option<i64> = row.try_get(1)?;
    Ok(IssuedTokenRow {
        token_id: IssuedTokenId(row.try_get(0)?),
        request_id: request_id.map(RequestId),
        network: stored_network(row, 2)?,
        peer: row.try_get(3)?,
        roles: stored_list(row, 4)?,
        rights: stored_list(row, 11)?,
        issued_at: non_negative(row, 5)?,
        expires_at: non_negative(row, 6)?,
        revocation_id: row.try_get(7)?,
        token: row.try_get(8)?,
        delivered_at: opt_time(row, 9)?,
        revoked_at: opt_time(row, 10)?,
    })
}

fn requests(rows: &[Row]) -> Result<Vec<JoinRequestRow>, StoreError> {
    rows.iter().map(request_from_row).collect()
}

fn tokens(rows: &[Row]) -> Result<Vec<IssuedTokenRow>, StoreError> {
    rows.iter().map(token_from_row).collect()
}

impl Store for PostgresStore {
    /// Always: the database is there to be shared by the network's seednodes.
    fn is_shared(&self) -> bool {
        true
    }

    /// Opens a dedicated `LISTEN` connection (not from the pool) in a background task that
    /// feeds the returned queue of [`PostgresOptions::notify_queue`] events, reconnecting
    /// with back-off, until the receiver is dropped. Events this handle caused are skipped.
    /// Must be called inside a tokio runtime.
    fn subscribe(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        let (queue, events) = mpsc::channel(self.options.notify_queue);
        let listener = Listener {
            config: (*self.listen_config).clone(),
            tls: self.listen_tls.clone(),
            origin: self.origin.clone(),
            retry_max: self.options.listen_retry_max,
            connect_timeout: self.options.connect_timeout,
            heartbeat: self.options.listen_heartbeat,
            dropped: Arc::clone(&self.notifications_dropped),
        };
        tokio::spawn(crate::notify::listen(listener, queue));
        Some(events)
    }

    async fn submit_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let peer = peer.to_base58();
        let label = check_submission(&self.limits, &peer, label)?;
        transaction!(self, |tx| async {
            self.housekeeping(tx, now).await?;
            if let Some(existing) = pending_for(tx, network, &peer).await? {
                return Ok(Submitted::Existing(existing));
            }
            check_caps(tx, &self.limits, network).await?;
            let row = insert_request(tx, network, &peer, label, invite_used, now).await?;
            Ok(Submitted::New(row))
        })
    }

    async fn submit_with_invite(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> Result<Submitted, StoreError> {
        let peer = peer.to_base58();
        let label = check_submission(&self.limits, &peer, label)?;
        let rejected = || StoreError::InviteRejected {
            network: network.clone(),
        };
        transaction!(self, |tx| async {
            self.housekeeping(tx, now).await?;
            if let Some(existing) = pending_for(tx, network, &peer).await? {
                if existing.invite_used {
                    return Ok(Submitted::Existing(existing));
                }
                if !redeem(tx, code_hash, network, now).await? {
                    return Err(rejected());
                }
                execute(
                    tx,
                    "UPDATE join_requests SET invite_used = TRUE WHERE id = $1",
                    &[&existing.id.0],
                )
                .await?;
                let row = get_request(tx, existing.id)
                    .await?
                    .ok_or(StoreError::NotFound { id: existing.id })?;
                return Ok(Submitted::Existing(row));
            }
            check_caps(tx, &self.limits, network).await?;
            if !redeem(tx, code_hash, network, now).await? {
                return Err(rejected());
            }
            let row = insert_request(tx, network, &peer, label, true, now).await?;
            Ok(Submitted::New(row))
        })
    }

    async fn request(&self, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
        transaction!(self, |tx| get_request(tx, id))
    }

    async fn latest_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        let peer = peer.to_base58();
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests WHERE network = $1 AND peer = $2 \
             ORDER BY id DESC LIMIT 1"
        );
        transaction!(self, |tx| async {
            query_opt(tx, &sql, &[&network.as_str(), &peer])
                .await?
                .map(|row| request_from_row(&row))
                .transpose()
        })
    }

    async fn pending(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        let network = network.map(NetworkName::as_str);
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM join_requests \
             WHERE status = 'pending' AND ($1::TEXT IS NULL OR network = $1) ORDER BY id"
        );
        transaction!(self, |tx| async {
            requests(&query(tx, &sql, &[&network]).await?)
        })
    }

    async fn approve(
        &self,
        id: RequestId,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(&issued)?;
        let now_int = int("now", now)?;
        let faults = (
            FaultPoint::ApproveBeforeCommit,
            FaultPoint::ApproveAfterCommit,
        );
        transaction!(self, faults: Some(faults), |tx| async {
            let request = get_request(tx, id)
                .await?
                .ok_or(StoreError::NotFound { id })?;
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
            execute(
                tx,
                "UPDATE join_requests SET status = 'approved', decided_at = $2, \
                 decided_by_policy = $3 WHERE id = $1",
                &[&id.0, &now_int, &decided_by_policy],
            )
            .await?;
            insert_token(tx, &self.origin, Some(id), &issued).await
        })
    }

    async fn deny(
        &self,
        id: RequestId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<JoinRequestRow, StoreError> {
        let now_int = int("now", now)?;
        transaction!(self, |tx| async {
            let request = get_request(tx, id)
                .await?
                .ok_or(StoreError::NotFound { id })?;
            if request.status != RequestStatus::Pending {
                return Err(StoreError::NotPending {
                    id,
                    status: request.status,
                });
            }
            let sql = format!(
                "UPDATE join_requests SET status = 'denied', decided_at = $2, deny_reason = $3 \
                 WHERE id = $1 RETURNING {REQUEST_COLS}"
            );
            let rows = query(tx, &sql, &[&id.0, &now_int, &reason]).await?;
            let row = rows.first().ok_or(StoreError::NotFound { id })?;
            request_from_row(row)
        })
    }

    async fn deny_pending(
        &self,
        filter: PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        let now_int = int("now", now)?;
        let network = filter.network.as_ref().map(NetworkName::as_str);
        // A bound past every BIGINT selects everything, as SQLite's comparison would.
        let created_at_most = filter
            .created_at_most
            .map(|at| i64::try_from(at).unwrap_or(i64::MAX));
        let label = filter.label.as_deref();
        let sql = format!(
            "UPDATE join_requests SET status = 'denied', decided_at = $4, deny_reason = $5 \
             WHERE status = 'pending' AND ($1::TEXT IS NULL OR network = $1) \
             AND ($2::BIGINT IS NULL OR created_at <= $2) AND ($3::TEXT IS NULL OR label = $3) \
             RETURNING {REQUEST_COLS}"
        );
        transaction!(self, |tx| async {
            let mut denied = requests(
                &query(
                    tx,
                    &sql,
                    &[&network, &created_at_most, &label, &now_int, &reason],
                )
                .await?,
            )?;
            denied.sort_by_key(|row| row.id);
            Ok(denied)
        })
    }

    async fn issue_direct(&self, issued: NewToken) -> Result<IssuedTokenRow, StoreError> {
        check_new_token(&issued)?;
        transaction!(self, |tx| insert_token(tx, &self.origin, None, &issued))
    }

    async fn token(&self, token_id: IssuedTokenId) -> Result<Option<IssuedTokenRow>, StoreError> {
        transaction!(self, |tx| get_token(tx, token_id))
    }

    async fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> Result<Option<IssuedTokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM issued_tokens WHERE request_id = $1");
        transaction!(self, |tx| async {
            query_opt(tx, &sql, &[&request_id.0])
                .await?
                .map(|row| token_from_row(&row))
                .transpose()
        })
    }

    async fn undelivered_for(&self, peer: &PeerId) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let peer = peer.to_base58();
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM issued_tokens \
             WHERE peer = $1 AND delivered_at IS NULL AND revoked_at IS NULL ORDER BY token_id"
        );
        transaction!(self, |tx| async {
            tokens(&query(tx, &sql, &[&peer]).await?)
        })
    }

    async fn mark_delivered(
        &self,
        token_id: IssuedTokenId,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        let now_int = int("now", now)?;
        let sql = format!(
            "UPDATE issued_tokens SET delivered_at = COALESCE(delivered_at, $2) \
             WHERE token_id = $1 RETURNING {TOKEN_COLS}"
        );
        transaction!(self, |tx| async {
            let rows = query(tx, &sql, &[&token_id.0, &now_int]).await?;
            let row = rows.first().ok_or(StoreError::TokenNotFound { token_id })?;
            token_from_row(row)
        })
    }

    async fn members(
        &self,
        network: Option<&NetworkName>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        // A time past every BIGINT leaves no token unexpired.
        let now_int = i64::try_from(now).unwrap_or(i64::MAX);
        let network = network.map(NetworkName::as_str);
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM ( \
                 SELECT {TOKEN_COLS}, ROW_NUMBER() OVER ( \
                     PARTITION BY network, peer ORDER BY issued_at DESC, token_id DESC) AS newest \
                 FROM issued_tokens \
                 WHERE revoked_at IS NULL AND expires_at > $1 \
                 AND ($2::TEXT IS NULL OR network = $2)) AS live \
             WHERE newest = 1 ORDER BY network COLLATE \"C\", peer COLLATE \"C\""
        );
        transaction!(self, |tx| async {
            tokens(&query(tx, &sql, &[&now_int, &network]).await?)
        })
    }

    async fn revoke_token(
        &self,
        token_id: IssuedTokenId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        let now_int = int("now", now)?;
        transaction!(self, |tx| async {
            let token = get_token(tx, token_id)
                .await?
                .ok_or(StoreError::TokenNotFound { token_id })?;
            let marked = execute(
                tx,
                "UPDATE issued_tokens SET revoked_at = $2 \
                 WHERE token_id = $1 AND revoked_at IS NULL",
                &[&token_id.0, &now_int],
            )
            .await?;
            let added = insert_revocation(tx, &token.revocation_id, reason, now).await?;
            if marked > 0 || added {
                bump_revocation_version(tx, &self.origin).await?;
            }
            get_token(tx, token_id)
                .await?
                .ok_or(StoreError::TokenNotFound { token_id })
        })
    }

    async fn revoke_peer(
        &self,
        peer: &PeerId,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        let peer = peer.to_base58();
        let now_int = int("now", now)?;
        let network = network.map(NetworkName::as_str);
        let sql = format!(
            "UPDATE issued_tokens SET revoked_at = $3 WHERE peer = $1 \
             AND ($2::TEXT IS NULL OR network = $2) AND revoked_at IS NULL \
             RETURNING {TOKEN_COLS}"
        );
        transaction!(self, |tx| async {
            let mut revoked = tokens(&query(tx, &sql, &[&peer, &network, &now_int]).await?)?;
            revoked.sort_by_key(|row| row.token_id);
            for row in &revoked {
                insert_revocation(tx, &row.revocation_id, reason, now).await?;
            }
            if !revoked.is_empty() {
                bump_revocation_version(tx, &self.origin).await?;
            }
            Ok(revoked)
        })
    }

    async fn revoke_id(
        &self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        if revocation_id.is_empty() {
            return Err(empty_revocation_id());
        }
        let now_int = int("now", now)?;
        transaction!(self, |tx| async {
            let added = insert_revocation(tx, revocation_id, reason, now).await?;
            let marked = execute(
                tx,
                "UPDATE issued_tokens SET revoked_at = $2 \
                 WHERE revocation_id = $1 AND revoked_at IS NULL",
                &[&revocation_id, &now_int],
            )
            .await?;
            let changed = added || marked > 0;
            if changed {
                bump_revocation_version(tx, &self.origin).await?;
            }
            Ok(changed)
        })
    }

    async fn revocations(&self) -> Result<RevocationSnapshot, StoreError> {
        transaction!(self, |tx| async {
            let version = read_revocation_version(tx).await?;
            let ids = query(
                tx,
                "SELECT revocation_id FROM revocations ORDER BY revocation_id",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
            Ok(RevocationSnapshot { version, ids })
        })
    }

    async fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let now_int = i64::try_from(now).unwrap_or(i64::MAX);
        transaction!(self, |tx| async {
            query(
                tx,
                "SELECT revocation_id, expires_at FROM issued_tokens \
                 WHERE network = $1 AND revoked_at IS NOT NULL AND expires_at > $2 \
                 ORDER BY revocation_id",
                &[&network.as_str(), &now_int],
            )
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, non_negative(row, 1)?)))
            .collect()
        })
    }

    async fn revocation_version(&self) -> Result<u64, StoreError> {
        transaction!(self, |tx| read_revocation_version(tx))
    }

    async fn create_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<InviteRow, StoreError> {
        check_new_invite(uses, expires_at, now)?;
        let (expires, created) = (int("invite expiry", expires_at)?, int("now", now)?);
        transaction!(self, |tx| async {
            let existing = query_opt(
                tx,
                "SELECT network FROM invites WHERE code_hash = $1",
                &[&code_hash.as_slice()],
            )
            .await?;
            if let Some(existing) = existing {
                return Err(StoreError::InviteExists {
                    network: stored_network(&existing, 0)?,
                });
            }
            execute(
                tx,
                "INSERT INTO invites (code_hash, network, uses_left, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &code_hash.as_slice(),
                    &network.as_str(),
                    &i64::from(uses),
                    &expires,
                    &created,
                ],
            )
            .await?;
            Ok(InviteRow {
                code_prefix: hex(&code_hash[..INVITE_PREFIX_BYTES]),
                network: network.clone(),
                uses_left: uses,
                expires_at,
                created_at: now,
            })
        })
    }

    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> Result<bool, StoreError> {
        transaction!(self, |tx| redeem(tx, code_hash, network, now))
    }

    async fn invites(&self, network: Option<&NetworkName>) -> Result<Vec<InviteRow>, StoreError> {
        let network = network.map(NetworkName::as_str);
        transaction!(self, |tx| async {
            query(
                tx,
                "SELECT code_hash, network, uses_left, expires_at, created_at FROM invites \
                 WHERE ($1::TEXT IS NULL OR network = $1) \
                 ORDER BY created_at, network COLLATE \"C\", code_hash",
                &[&network],
            )
            .await?
            .iter()
            .map(|row| {
                let hash: Vec<u8> = row.try_get(0)?;
                let uses_left = non_negative(row, 2)?;
                Ok(InviteRow {
                    code_prefix: hex(&hash[..hash.len().min(INVITE_PREFIX_BYTES)]),
                    network: stored_network(row, 1)?,
                    uses_left: u32::try_from(uses_left)
                        .map_err(|_| corrupt(format!("invite uses_left {uses_left}")))?,
                    expires_at: non_negative(row, 3)?,
                    created_at: non_negative(row, 4)?,
                })
            })
            .collect()
        })
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        transaction!(self, |tx| async {
            let row = query_opt(
                tx,
                "SELECT \
                   (SELECT COUNT(*) FROM join_requests WHERE status = 'pending'), \
                   (SELECT COUNT(*) FROM join_requests WHERE status = 'approved'), \
                   (SELECT COUNT(*) FROM join_requests WHERE status = 'denied'), \
                   (SELECT COUNT(*) FROM issued_tokens), \
                   (SELECT COUNT(*) FROM issued_tokens WHERE delivered_at IS NOT NULL), \
                   (SELECT COUNT(*) FROM issued_tokens WHERE revoked_at IS NOT NULL)",
                &[],
            )
            .await?
            .ok_or_else(|| corrupt("the counts returned no row"))?;
            Ok(Counts {
                pending: non_negative(&row, 0)?,
                approved: non_negative(&row, 1)?,
                denied: non_negative(&row, 2)?,
                issued: non_negative(&row, 3)?,
                delivered: non_negative(&row, 4)?,
                revoked: non_negative(&row, 5)?,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pg_testing::{admin, create_database, fresh_database, server};
    use crate::store::suite::{NOW, Opening, mainnet, new_token, peer};

    // The back-end-independent suite (store.rs), each case on a fresh database.
    crate::store::suite::run_store_suite!(|_dir: &Path| async {
        let options = fresh_database().await;
        move |limits| -> Opening<PostgresStore> {
            let options = options.clone();
            Box::pin(async move { PostgresStore::open(&options, limits).await.unwrap() })
        }
    });

    /// Races per concurrency test: each must come out right every time.
    const RACES: u8 = 20;

    async fn open(options: &PostgresOptions) -> PostgresStore {
        PostgresStore::open(options, StoreLimits::default())
            .await
            .unwrap()
    }

    /// A superuser connection to the database `options` names.
    async fn raw(options: &PostgresOptions) -> tokio_postgres::Client {
        let database = options.url.rsplit('/').next().unwrap().to_owned();
        admin(server(), &database).await
    }

    #[tokio::test]
    async fn open_creates_the_versioned_schema_and_reopens_it() {
        let options = fresh_database().await;
        drop(open(&options).await);
        let store = open(&options).await;
        let version: i32 = raw(&options)
            .await
            .query_one("SELECT version FROM cordon_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.revocation_version().await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_of_a_fresh_database_create_the_schema_once() {
        let options = fresh_database().await;
        let (a, b) = tokio::join!(
            PostgresStore::open(&options, StoreLimits::default()),
            PostgresStore::open(&options, StoreLimits::default()),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        a.submit_request(&mainnet(), &peer(1), None, false, NOW)
            .await
            .unwrap();
        assert_eq!(b.counts().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let options = fresh_database().await;
        drop(open(&options).await);
        raw(&options)
            .await
            .execute(
                "UPDATE cordon_schema SET version = $1",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .unwrap();
        let err = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, supported }
                if found == SCHEMA_VERSION.unsigned_abs() + 1
                    && supported == SCHEMA_VERSION.unsigned_abs()),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn foreign_database_is_refused() {
        let options = fresh_database().await;
        raw(&options)
            .await
            .batch_execute("CREATE TABLE other (x INTEGER)")
            .await
            .unwrap();
        let err = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap_err();
        match &err {
            StoreError::ForeignPostgres { database } => {
                assert!(options.url.ends_with(database.as_str()), "{database}");
            }
            other => panic!("expected ForeignPostgres, got {other:?}"),
        }
        assert!(err.to_string().contains("CREATE DATABASE"), "{err}");
        // Nothing of ours was created in it.
        let tables: i64 = raw(&options)
            .await
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 1);
    }

    #[tokio::test]
    async fn two_stores_on_one_database_see_each_others_commits() {
        let options = fresh_database().await;
        let (a, b) = (open(&options).await, open(&options).await);
        let net = mainnet();
        let Submitted::New(request) = a
            .submit_request(&net, &peer(1), None, false, NOW)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        assert_eq!(b.pending(None).await.unwrap(), vec![request.clone()]);
        let token = b
            .approve(request.id, new_token(&net, &peer(1), 1), None, NOW)
            .await
            .unwrap();
        assert_eq!(a.token_for_request(request.id).await.unwrap(), Some(token));
        assert!(a.revoke_id(&[9; 64], None, NOW).await.unwrap());
        assert_eq!(b.revocation_version().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_single_use_invite_admits_exactly_one_of_two_racing_stores() {
        let options = fresh_database().await;
        let (a, b) = (open(&options).await, open(&options).await);
        let net = mainnet();
        for race in 0..RACES {
            let code = [race; 32];
            a.create_invite(code, &net, 1, NOW + 600, NOW)
                .await
                .unwrap();
            let (pa, pb) = (peer(2 * race + 1), peer(2 * race + 2));
            let (ra, rb) = tokio::join!(
                a.submit_with_invite(&net, &pa, None, code, NOW),
                b.submit_with_invite(&net, &pb, None, code, NOW),
            );
            let admitted = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            assert_eq!(admitted, 1, "race {race}: {ra:?} {rb:?}");
            let refused = if ra.is_ok() { rb } else { ra };
            assert!(
                matches!(refused, Err(StoreError::InviteRejected { .. })),
                "race {race}: {refused:?}"
            );
            assert_eq!(
                a.counts().await.unwrap().pending,
                u64::from(race) + 1,
                "race {race}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_submissions_of_one_peer_leave_one_pending_request() {
        let options = fresh_database().await;
        let (a, b) = (open(&options).await, open(&options).await);
        let net = mainnet();
        for race in 0..RACES {
            let p = peer(race + 1);
            let (ra, rb) = tokio::join!(
                a.submit_request(&net, &p, None, false, NOW),
                b.submit_request(&net, &p, None, false, NOW),
            );
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ra.row().id, rb.row().id, "race {race}");
            let new = [&ra, &rb]
                .iter()
                .filter(|s| matches!(s, Submitted::New(_)))
                .count();
            assert_eq!(new, 1, "race {race}: {ra:?} {rb:?}");
            assert_eq!(a.pending(None).await.unwrap().len(), usize::from(race) + 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_cap_holds_under_racing_stores() {
        let options = fresh_database().await;
        let limits = StoreLimits {
            max_pending_per_network: 1,
            ..StoreLimits::default()
        };
        let a = PostgresStore::open(&options, limits.clone()).await.unwrap();
        let b = PostgresStore::open(&options, limits).await.unwrap();
        let (p1, p2) = (peer(1), peer(2));
        for race in 0..RACES {
            let net: NetworkName = format!("net{race}").parse().unwrap();
            let (ra, rb) = tokio::join!(
                a.submit_request(&net, &p1, None, false, NOW),
                b.submit_request(&net, &p2, None, false, NOW),
            );
            let queued = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            assert_eq!(queued, 1, "race {race}: {ra:?} {rb:?}");
            let refused = if ra.is_ok() { rb } else { ra };
            assert!(
                matches!(refused, Err(StoreError::QueueFull { limit: 1, .. })),
                "race {race}: {refused:?}"
            );
            assert_eq!(a.pending(Some(&net)).await.unwrap().len(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_revocations_bump_the_version_by_one_each() {
        let options = fresh_database().await;
        let (a, b) = (
            Arc::new(open(&options).await),
            Arc::new(open(&options).await),
        );
        let net = mainnet();
        let mut tokens = Vec::new();
        for n in 0..2 * RACES {
            let token = a
                .issue_direct(new_token(&net, &peer(n + 1), n))
                .await
                .unwrap();
            tokens.push(token.token_id);
        }
        for (race, pair) in tokens.chunks(2).enumerate() {
            let before = a.revocation_version().await.unwrap();
            let (ra, rb) = tokio::join!(
                a.revoke_token(pair[0], None, NOW),
                b.revoke_token(pair[1], None, NOW),
            );
            ra.unwrap();
            rb.unwrap();
            assert_eq!(
                b.revocation_version().await.unwrap(),
                before + 2,
                "race {race}"
            );
            // Both revoking one more id at once: one bump each, and one that changes nothing
            // (the same id twice) does not move it.
            let id = [200 + u8::try_from(race).unwrap(); 64];
            let (ra, rb) = tokio::join!(a.revoke_id(&id, None, NOW), b.revoke_id(&id, None, NOW));
            let changed = [ra.unwrap(), rb.unwrap()].iter().filter(|c| **c).count();
            assert_eq!(changed, 1, "race {race}");
            assert_eq!(a.revocation_version().await.unwrap(), before + 3);
        }
        let snapshot = a.revocations().await.unwrap();
        assert_eq!(snapshot.version, 3 * u64::from(RACES));
        assert_eq!(snapshot.ids.len(), 3 * usize::from(RACES));
    }

    /// How long a test waits for a notification or a listener.
    const NOTIFY_WAIT: Duration = Duration::from_secs(20);

    /// Waits until `count` sessions on the database `options` names are listening for store
    /// notifications (a notification sent before a LISTEN is in place is not delivered).
    async fn wait_listening(options: &PostgresOptions, count: i64) {
        wait_listening_on(server(), options, count).await;
    }

    /// [`wait_listening`] on `server`.
    async fn wait_listening_on(
        server: &crate::pg_testing::TestServer,
        options: &PostgresOptions,
        count: i64,
    ) {
        let database = options.url.rsplit('/').next().unwrap();
        let db = admin(server, database).await;
        let deadline = tokio::time::Instant::now() + NOTIFY_WAIT;
        loop {
            let listening: i64 = db
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query = $1",
                    &[&format!("LISTEN {NOTIFY_CHANNEL}")],
                )
                .await
                .unwrap()
                .get(0);
            if listening == count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{listening} listeners, not {count}, after {NOTIFY_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn next_event(events: &mut mpsc::Receiver<StoreEvent>) -> StoreEvent {
        tokio::time::timeout(NOTIFY_WAIT, events.recv())
            .await
            .expect("no store notification came")
            .expect("the subscription ended")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_and_revocations_through_one_handle_wake_the_others_subscription() {
        let options = fresh_database().await;
        let (a, b) = (open(&options).await, open(&options).await);
        let mut a_events = a.subscribe().unwrap();
        let mut b_events = b.subscribe().unwrap();
        wait_listening(&options, 2).await;
        let net = mainnet();

        // Approved through B: A hears which peer to push to.
        let Submitted::New(request) = a
            .submit_request(&net, &peer(1), None, false, NOW)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        b.approve(request.id, new_token(&net, &peer(1), 1), None, NOW)
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut a_events).await,
            StoreEvent::TokenIssued { peer: peer(1) }
        );
        // A rolled-back issue announces nothing: a token for the wrong peer is refused.
        let Submitted::New(second) = a
            .submit_request(&net, &peer(2), None, false, NOW)
            .await
            .unwrap()
        else {
            panic!("expected a new request");
        };
        let refused = a
            .approve(second.id, new_token(&net, &peer(3), 2), None, NOW)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Mismatch { .. })),
            "{refused:?}"
        );
        // Hostile payloads on the channel are dropped without ending the subscription.
        raw(&options)
            .await
            .batch_execute(&format!(
                "NOTIFY {NOTIFY_CHANNEL}, 'token 0123456789abcdef not-a-peer'; \
                 NOTIFY {NOTIFY_CHANNEL}, '{}'",
                "x".repeat(4000)
            ))
            .await
            .unwrap();
        // Issued directly through A: B hears it, and it is the first thing B hears (not its
        // own approval, nor the refused one, nor the garbage).
        a.issue_direct(new_token(&net, &peer(4), 4)).await.unwrap();
        assert_eq!(
            next_event(&mut b_events).await,
            StoreEvent::TokenIssued { peer: peer(4) }
        );
        // Revoked through B: A hears it next (not its own direct issue).
        assert!(b.revoke_id(&[9; 16], None, NOW).await.unwrap());
        assert_eq!(
            next_event(&mut a_events).await,
            StoreEvent::RevocationsChanged
        );
        // A revocation that changes nothing announces nothing: A's next event is B's next
        // real change.
        assert!(!b.revoke_id(&[9; 16], None, NOW).await.unwrap());
        b.issue_direct(new_token(&net, &peer(5), 5)).await.unwrap();
        assert_eq!(
            next_event(&mut a_events).await,
            StoreEvent::TokenIssued { peer: peer(5) }
        );
        assert!(a_events.try_recv().is_err() && b_events.try_recv().is_err());
        assert_eq!(a.notifications_dropped() + b.notifications_dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_notification_queue_drops_and_counts_without_blocking() {
        let options = fresh_database().await;
        let a = PostgresStore::open(
            &PostgresOptions {
                notify_queue: 1,
                ..options.clone()
            },
            StoreLimits::default(),
        )
        .await
        .unwrap();
        let b = open(&options).await;
        let mut events = a.subscribe().unwrap();
        wait_listening(&options, 1).await;
        let net = mainnet();
        for n in 1..=3 {
            b.issue_direct(new_token(&net, &peer(n), n)).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + NOTIFY_WAIT;
        while a.notifications_dropped() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "nothing dropped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            next_event(&mut events).await,
            StoreEvent::TokenIssued { peer: peer(1) }
        );
        // The connection kept going: the next notification arrives.
        b.issue_direct(new_token(&net, &peer(4), 4)).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            StoreEvent::TokenIssued { peer: peer(4) }
        );
        assert_eq!(a.notifications_dropped(), 2);
    }

    /// A TCP proxy to the test server whose [`Freezer::freeze`] makes every connection open
    /// through it go silent without closing (a network dropping packets), while new
    /// connections still pass.
    struct Freezer {
        port: u16,
        epoch: Arc<AtomicU64>,
    }

    impl Freezer {
        async fn start() -> Freezer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let epoch = Arc::new(AtomicU64::new(0));
            let upstream = server().port;
            let shared = Arc::clone(&epoch);
            tokio::spawn(async move {
                while let Ok((down, _)) = listener.accept().await {
                    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        continue;
                    };
                    let born = shared.load(Ordering::SeqCst);
                    let (down_read, down_write) = down.into_split();
                    let (up_read, up_write) = up.into_split();
                    for (from, to) in [(down_read, up_write), (up_read, down_write)] {
                        let epoch = Arc::clone(&shared);
                        tokio::spawn(pump(from, to, epoch, born));
                    }
                }
            });
            Freezer { port, epoch }
        }

        fn freeze(&self) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Copies `from` to `to` until either ends, or holds both open, silent, once the proxy
    /// froze the connections born before now.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        epoch: Arc<AtomicU64>,
        born: u64,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(n) = from.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            if epoch.load(Ordering::SeqCst) != born {
                // Frozen: swallow everything, close nothing.
                let _hold = (from, to);
                std::future::pending::<()>().await;
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silently_dropped_listen_connection_is_noticed_and_reopened() {
        let direct = fresh_database().await;
        let proxy = Freezer::start().await;
        let proxied = PostgresOptions {
            url: direct.url.replacen(
                &format!(":{}/", server().port),
                &format!(":{}/", proxy.port),
                1,
            ),
            listen_heartbeat: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            listen_retry_max: Duration::from_millis(500),
            ..direct.clone()
        };
        assert_ne!(proxied.url, direct.url);
        let a = open(&proxied).await;
        let b = open(&direct).await;
        let mut events = a.subscribe().unwrap();
        wait_listening(&direct, 1).await;

        // The network goes silent: what B announces now is lost on the way...
        proxy.freeze();
        let net = mainnet();
        b.issue_direct(new_token(&net, &peer(1), 1)).await.unwrap();
        // ...but A's liveness check fails within heartbeat + connect_timeout, and A listens
        // again on a new connection (the server still counts the frozen one).
        wait_listening(&direct, 2).await;
        b.issue_direct(new_token(&net, &peer(2), 2)).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            StoreEvent::TokenIssued { peer: peer(2) }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_server_is_reconnected_to_by_the_pool_and_the_listener() {
        let server = crate::pg_testing::private_server();
        let options = PostgresOptions {
            listen_retry_max: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            ..crate::pg_testing::fresh_database_on(&server).await
        };
        let (a, b) = (open(&options).await, open(&options).await);
        let mut events = a.subscribe().unwrap();
        let net = mainnet();
        b.submit_request(&net, &peer(1), None, false, NOW)
            .await
            .unwrap();
        assert_eq!(a.counts().await.unwrap().pending, 1);

        tokio::task::block_in_place(|| server.stop());
        // Down: a clear, temporary error, fast; nothing hangs.
        let err = tokio::time::timeout(NOTIFY_WAIT, a.pending(None))
            .await
            .expect("a call to a stopped server must not hang")
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DatabaseUnreachable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("retry"), "{err}");
        let err = b
            .issue_direct(new_token(&net, &peer(2), 2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DatabaseUnreachable { .. }),
            "{err:?}"
        );

        tokio::task::block_in_place(|| server.start());
        // Up again: the first call through each handle works (its pooled connections, dead
        // since the restart, are replaced, not reported), without reopening the store; nothing
        // committed was lost; and A's listener is back.
        let request = a.pending(None).await.unwrap().pop().unwrap();
        assert_eq!(request.peer, peer(1).to_base58());
        wait_listening_on(&server, &options, 1).await;
        b.approve(request.id, new_token(&net, &peer(1), 1), None, NOW)
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut events).await,
            StoreEvent::TokenIssued { peer: peer(1) }
        );
        let counts = a.counts().await.unwrap();
        assert_eq!((counts.pending, counts.issued), (0, 1), "{counts:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exhausted_pool_fails_clearly_within_its_wait() {
        let options = PostgresOptions {
            pool_size: 1,
            pool_wait: Duration::from_millis(300),
            ..fresh_database().await
        };
        let store = open(&options).await;
        let held = store.pool.get().await.unwrap();
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), store.counts())
            .await
            .expect("an exhausted pool must not hang")
            .unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(&err, StoreError::DatabaseUnreachable { reason } if reason.contains("pool")),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("unreachable"), "{message}");
        assert!(message.contains("retry"), "{message}");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        drop(held);
        assert_eq!(store.counts().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        let options = PostgresOptions {
            url: format!(
                "postgres://postgres@127.0.0.1:{}/nothing",
                crate::pg_testing::unused_port()
            ),
            connect_timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        };
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            PostgresStore::open(&options, StoreLimits::default()),
        )
        .await
        .expect("connecting must time out")
        .unwrap_err();
        assert!(
            matches!(err, StoreError::DatabaseUnreachable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("retry"), "{err}");
    }

    #[tokio::test]
    async fn the_password_file_authenticates_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, password: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, format!("{password}\n")).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            file
        };
        let base = crate::pg_testing::fresh_password_database().await;

        // The right password: the role authenticates (SCRAM over TCP) and the store works.
        let good = PostgresOptions {
            password_file: Some(write("good", crate::pg_testing::PASSWORD)),
            ..base.clone()
        };
        let store = open(&good).await;
        store
            .submit_request(&mainnet(), &peer(1), None, false, NOW)
            .await
            .unwrap();
        assert!(!format!("{store:?}").contains(crate::pg_testing::PASSWORD));

        // A wrong one: the server refuses, and no message shows it. (A password file takes
        // precedence over PGPASSWORD and ~/.pgpass, so this does not depend on the
        // environment.)
        let wrong = "wrong-pw-do-not-show";
        let options = PostgresOptions {
            password_file: Some(write("wrong", wrong)),
            ..base.clone()
        };
        let err = PostgresStore::open(&options, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::DatabaseUnreachable { reason }
                if reason.contains("password authentication failed")),
            "{err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}"), format!("{options:?}")] {
            assert!(!shown.contains(wrong), "{shown}");
        }

        // An unreachable server: the error does not show the password either.
        let unreachable = PostgresOptions {
            url: format!(
                "postgres://postgres@127.0.0.1:{}/nothing",
                crate::pg_testing::unused_port()
            ),
            ..good
        };
        let err = PostgresStore::open(&unreachable, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DatabaseUnreachable { .. }),
            "{err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(crate::pg_testing::PASSWORD), "{shown}");
        }
    }

    #[tokio::test]
    async fn unix_socket_url_reaches_the_server() {
        let name = create_database().await;
        let server = server();
        let options = PostgresOptions {
            url: format!(
                "postgres://postgres@/{name}?host={}&port={}",
                server.socket_dir.display(),
                server.port
            ),
            ..PostgresOptions::default()
        };
        let store = open(&options).await;
        assert_eq!(store.counts().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn a_password_in_the_url_is_refused_and_never_shown() {
        for url in [
            "postgres://cordon:hunter2secret@db.example:5432/cordon",
            "postgres://cordon@db.example/cordon?password=hunter2secret",
            "host=db.example user=cordon password=hunter2secret dbname=cordon",
            "host=db.example user=cordon password = 'hunter2 secret' dbname=cordon",
        ] {
            let options = PostgresOptions {
                url: url.to_owned(),
                ..PostgresOptions::default()
            };
            let debug = format!("{options:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            let err = PostgresStore::open(&options, StoreLimits::default())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::PostgresConfig { reason } if reason.contains("password_file")),
                "{url}: {err:?}"
            );
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
            }
        }
    }

    #[test]
    fn a_password_from_a_file_is_used_but_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let options = PostgresOptions {
            url: "postgres://cordon@db.example/cordon".to_owned(),
            password_file: Some(file.clone()),
            ..PostgresOptions::default()
        };
        let config = options.connection_config().unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret-pw"[..]));
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{options:?}").contains("s3cret"));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = options.connection_config().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn passfile_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other.example:5432:*:cordon:wrong\n\
                    db.example:5432:cordon:cordon:pa\\:ss\\\\word\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "db.example", "5432", "cordon", "cordon").as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            pgpass_lookup(text, "db.example", "6543", "cordon", "cordon").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c\n", "a", "b", "c", "d"), None);

        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, text).unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config: tokio_postgres::Config =
            "postgres://cordon@db.example:5432/cordon".parse().unwrap();
        let sources = |pgpassword: Option<&str>| PasswordSources {
            password_file: None,
            pgpassword: pgpassword.map(|p| p.as_bytes().to_vec()),
            pgpassfile: Some(pgpass.clone()),
        };
        assert_eq!(
            sources(None).password_for(&config).unwrap(),
            Some(b"pa:ss\\word".to_vec())
        );
        // PGPASSWORD comes before the passfile.
        assert_eq!(
            sources(Some("env")).password_for(&config).unwrap(),
            Some(b"env".to_vec())
        );
    }

    #[test]
    fn options_validate_their_bounds() {
        let good = PostgresOptions {
            url: "postgres://cordon@db.example/cordon".to_owned(),
            ..PostgresOptions::default()
        };
        good.validate().unwrap();
        assert!(
            PostgresOptions::default().validate().is_err(),
            "url is required"
        );
        for bad in [
            PostgresOptions {
                pool_size: 0,
                ..good.clone()
            },
            PostgresOptions {
                pool_wait: Duration::ZERO,
                ..good.clone()
            },
            PostgresOptions {
                statement_timeout: Duration::from_secs(7200),
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let parsed: PostgresOptions = serde_json::from_str(
            r#"{"url": "postgres://cordon@db.example/cordon", "pool_size": 4, "pool_wait": "2s"}"#,
        )
        .unwrap();
        assert_eq!(parsed.pool_size, 4);
        assert_eq!(parsed.pool_wait, Duration::from_secs(2));
        assert!(
            serde_json::from_str::<PostgresOptions>(r#"{"url": "x", "password": "p"}"#).is_err(),
            "unknown keys (a password) are refused"
        );
    }

    /// Whether the connection a store hands out is encrypted, as the server sees it.
    async fn encrypted(store: &PostgresStore) -> bool {
        store
            .client()
            .await
            .unwrap()
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn connections_use_tls_when_the_server_offers_it_unless_disabled() {
        let options = fresh_database().await;
        assert_eq!(options.tls, PgTls::Prefer, "the default");
        assert!(encrypted(&open(&options).await).await, "prefer");
        let required = PostgresOptions {
            tls: PgTls::Require,
            ..options.clone()
        };
        assert!(encrypted(&open(&required).await).await, "require");
        let disabled = PostgresOptions {
            tls: PgTls::Disable,
            ..options.clone()
        };
        assert!(!encrypted(&open(&disabled).await).await, "disable");
    }

    #[tokio::test]
    async fn verify_full_connects_to_a_server_its_ca_vouches_for_and_refuses_another() {
        let options = fresh_database().await;
        let verified = PostgresOptions {
            tls: PgTls::VerifyFull,
            ca_file: Some(server().ca_file.clone()),
            ..options.clone()
        };
        assert!(encrypted(&open(&verified).await).await);
        // By name too: the certificate names localhost.
        let by_name = PostgresOptions {
            url: verified.url.replace("127.0.0.1", "localhost"),
            ..verified.clone()
        };
        assert!(encrypted(&open(&by_name).await).await);

        let dir = tempfile::tempdir().unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        std::fs::write(&other_ca, crate::pg_testing::untrusted_ca_pem()).unwrap();
        let untrusted = PostgresOptions {
            ca_file: Some(other_ca),
            connect_timeout: Duration::from_secs(2),
            ..verified.clone()
        };
        let err = PostgresStore::open(&untrusted, StoreLimits::default())
            .await
            .expect_err("a server the CA did not vouch for is refused");
        let shown = err.to_string();
        assert!(
            matches!(err, StoreError::PostgresConfig { .. }) && shown.contains("UnknownIssuer"),
            "{shown}"
        );
        // The right server under a name its certificate does not hold.
        let database = options.url.rsplit('/').next().unwrap();
        let misnamed = PostgresOptions {
            url: format!(
                "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname={database}",
                server().port
            ),
            connect_timeout: Duration::from_secs(2),
            ..verified.clone()
        };
        let err = PostgresStore::open(&misnamed, StoreLimits::default())
            .await
            .expect_err("a certificate for another name is refused");
        assert!(
            matches!(err, StoreError::PostgresConfig { .. })
                && err
                    .to_string()
                    .contains("not valid for name \"db.invalid\""),
            "{err}"
        );
    }

    #[test]
    fn tls_options_are_checked_before_connecting() {
        let good = PostgresOptions {
            url: "postgres://cordon@db.example/cordon".to_owned(),
            ..PostgresOptions::default()
        };
        let invalid = |options: PostgresOptions| options.validate().unwrap_err().to_string();
        let e = invalid(PostgresOptions {
            tls: PgTls::VerifyFull,
            ..good.clone()
        });
        assert!(e.contains("ca_file") && e.contains("required"), "{e}");
        let e = invalid(PostgresOptions {
            ca_file: Some("ca.pem".into()),
            ..good.clone()
        });
        assert!(e.contains("only used with"), "{e}");
        let e = invalid(PostgresOptions {
            url: "postgres://cordon@db.example/cordon?sslmode=disable".to_owned(),
            ..good.clone()
        });
        assert!(e.contains("sslmode"), "{e}");
        for tls in [PgTls::Require, PgTls::VerifyFull] {
            let e = invalid(PostgresOptions {
                url: "postgres://cordon@/cordon?host=/run/postgresql".to_owned(),
                tls,
                ca_file: (tls == PgTls::VerifyFull).then(|| "ca.pem".into()),
                ..good.clone()
            });
            assert!(e.contains("Unix socket"), "{e}");
        }
        PostgresOptions {
            tls: PgTls::VerifyFull,
            ca_file: Some("ca.pem".into()),
            ..good.clone()
        }
        .validate()
        .unwrap();
        let parsed: PostgresOptions = serde_json::from_str(
            r#"{"url": "postgres://cordon@db.example/cordon", "tls": "verify-full", "ca_file": "ca.pem"}"#,
        )
        .unwrap();
        assert_eq!(parsed.tls, PgTls::VerifyFull);
    }
}
