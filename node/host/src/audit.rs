//! Append-only, hash-chained audit trail of security events (JSON Lines).
//!
//! Both daemons (node and seednode) record security events here: refused connections,
//! verified and refused memberships, executed and denied commands, join decisions, bans and
//! token issuance or revocation. The API is synchronous and meant to be called from the event
//! loop: one append is one small `write` of an already encoded line.
//!
//! # Format
//! One JSON object per line, keys in this order:
//!
//! ```text
//! {"seq":1,"time":1700000000,"prev":"000…000","kind":"membership_refused","peer":"12D3…","reason":"expired"}
//! ```
//!
//! - `seq` counts records from 1 and continues across rotated files;
//! - `time` is seconds since the Unix epoch (0 if the clock is before 1970);
//! - `prev` is the lowercase hex SHA-256 of the exact bytes of the previous record's line
//!   (without its newline); the first record of a fresh log has 64 zeros;
//! - the event fields follow ([`AuditEvent`]); absent fields are omitted.
//!
//! # Invariants
//! - **No secrets**: records carry identifiers only (peer ids, network names, token ids,
//!   request ids, reason codes), never token bytes, keys or invite codes. Every string field is
//!   cut to [`MAX_FIELD_BYTES`], so a line always fits in [`MAX_LINE_BYTES`] and a remote peer
//!   cannot grow the log by sending long strings.
//! - **One writer per file**: the daemon's event loop owns the [`AuditLog`]; two processes
//!   appending to one file would interleave two chains (`verify` would report it).
//! - **Never silently restart a chain**: [`AuditLog::open`] continues the chain from the last
//!   line of the existing file, and refuses to open a file whose last line is not a complete
//!   record. The operator runs `audit verify` ([`verify`]) and decides.
//!
//! # Durability (fsync policy)
//! Each record reaches the kernel with a single `write` of the whole line and its newline (no
//! user-space buffering), so a crashed process loses nothing it appended. `sync_data` runs
//! when a record is appended at least one second ([`SYNC_INTERVAL`]) after the previous sync,
//! on rotation (the old file, and the directory after the renames), and on
//! [`AuditLog::sync`], [`AuditLog::close`] or drop. A power loss can therefore lose at most
//! about one second of records, or leave a torn last line that `open` refuses until the
//! operator has looked at it. A failed write is rolled back (the file is truncated to its
//! previous length) so that the chain is never left with half a record.
//!
//! # Rotation
//! When appending a record would make the file exceed [`AuditConfig::max_bytes`], the file is
//! renamed `audit.log` -> `audit.log.1` (older files shift to `.2`, `.3`, ...; the one that
//! would become `.<keep + 1>` is deleted) and the new file starts with a record of kind `other` and
//! detail `rotated` whose `prev` is the hash of the rotated file's last line, so the chain
//! continues across files. [`verify`] reads the files oldest first and checks those links.
//!
//! # What the chain does and does not prove
//! The chain has no key: it detects edited, deleted, inserted or reordered records and files
//! missing from the middle of the set, but someone who can write the files can recompute the
//! whole chain, and removing records from the end (or the newest files) leaves a valid, shorter
//! chain. To detect those, ship records off the host, or record [`VerifyReport::head`] (or
//! [`AuditLog::head`]) somewhere the attacker cannot write and compare later.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest line accepted when reading a log (64 KiB, without the newline); longer lines are
/// [`BrokenChain::Malformed`].
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest value of a string field of a record (1 KiB); longer values are cut at a character
/// boundary and end with `…`. Bounds each line well below [`MAX_LINE_BYTES`] even when every
/// byte needs a six-byte JSON escape.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Shortest time between two `sync_data` calls made by [`AuditLog::append`] (one second).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// `prev` of the first record of a fresh log: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `detail` of the record that opens a file after rotation.
pub const ROTATED_DETAIL: &str = "rotated";

/// Default [`AuditConfig::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default [`AuditConfig::keep`]: 8 rotated files.
pub const DEFAULT_KEEP: usize = 8;

/// What happened. Serialized in snake_case (`connection_refused`, ...); kinds this version
/// does not know are read back as [`AuditKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A connection was refused (gate, limits, unverified peer).
    ConnectionRefused,
    /// A peer's membership token was verified.
    MembershipVerified,
    /// A peer's membership token was refused (`reason` holds the reason code).
    MembershipRefused,
    /// A remote command was executed.
    CommandExecuted,
    /// A remote command was refused.
    CommandDenied,
    /// A join request was received (seednode) or sent (node).
    JoinRequested,
    /// A join request was approved.
    JoinApproved,
    /// A join request was denied.
    JoinDenied,
    /// A peer was banned.
    BanApplied,
    /// A ban ended.
    BanLifted,
    /// A membership token was issued.
    TokenIssued,
    /// A token was revoked.
    TokenRevoked,
    /// A revocation head was applied, refused as a rollback, or found equivocating
    /// (`reason`: `applied`, `stale`, `equivocation`, `invalid`).
    RevocationHead,
    /// Anything else, including the rotation record (detail `rotated`).
    #[serde(other)]
    Other,
}

impl AuditKind {
    /// The snake_case name used on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::MembershipVerified => "membership_verified",
            Self::MembershipRefused => "membership_refused",
            Self::CommandExecuted => "command_executed",
            Self::CommandDenied => "command_denied",
            Self::JoinRequested => "join_requested",
            Self::JoinApproved => "join_approved",
            Self::JoinDenied => "join_denied",
            Self::BanApplied => "ban_applied",
            Self::BanLifted => "ban_lifted",
            Self::TokenIssued => "token_issued",
            Self::TokenRevoked => "token_revoked",
            Self::RevocationHead => "revocation_head",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A security event, built with [`AuditEvent::new`] and the setters:
///
/// ```
/// use cordon_host::audit::{AuditEvent, AuditKind};
/// let event = AuditEvent::new(AuditKind::MembershipRefused)
///     .peer("12D3KooWExample")
///     .network("mainnet")
///     .reason("expired");
/// assert_eq!(event.reason.as_deref(), Some("expired"));
/// ```
///
/// Fields hold identifiers and reason codes only: never token bytes, keys or invite codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// The remote peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The network name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// A stable reason code (`expired`, `revoked`, `wrong_subject`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The remote command name (not its arguments if they may hold secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The join request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// The token id (hex digest of the token bytes, never the bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The remote address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Free text for people; no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` with no fields set.
    pub fn new(kind: AuditKind) -> Self {
        Self {
            kind,
            peer: None,
            network: None,
            reason: None,
            command: None,
            request_id: None,
            token_id: None,
            addr: None,
            detail: None,
        }
    }

    /// Sets the peer id (anything displayable, such as a `PeerId`).
    pub fn peer(mut self, peer: impl fmt::Display) -> Self {
        self.peer = Some(peer.to_string());
        self
    }

    /// Sets the network name.
    pub fn network(mut self, network: impl fmt::Display) -> Self {
        self.network = Some(network.to_string());
        self
    }

    /// Sets the reason code.
    pub fn reason(mut self, reason: impl fmt::Display) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// Sets the command name.
    pub fn command(mut self, command: impl fmt::Display) -> Self {
        self.command = Some(command.to_string());
        self
    }

    /// Sets the join request id.
    pub fn request_id(mut self, request_id: u64) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// Sets the token id (e.g. a `TokenId`, which displays as hex; never the token bytes).
    pub fn token_id(mut self, token_id: impl fmt::Display) -> Self {
        self.token_id = Some(token_id.to_string());
        self
    }

    /// Sets the remote address (e.g. a `Multiaddr`).
    pub fn addr(mut self, addr: impl fmt::Display) -> Self {
        self.addr = Some(addr.to_string());
        self
    }

    /// Sets the free-text detail.
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// The event with every string field cut to [`MAX_FIELD_BYTES`].
    fn bounded(mut self) -> Self {
        for field in [
            &mut self.peer,
            &mut self.network,
            &mut self.reason,
            &mut self.command,
            &mut self.token_id,
            &mut self.addr,
            &mut self.detail,
        ]
        .into_iter()
        .flatten()
        {
            truncate_field(field);
        }
        self
    }
}

fn truncate_field(value: &mut String) {
    if value.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut end = MAX_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    value.push('…');
}

/// One line of the log, as written and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, continuing across rotated files.
    pub seq: u64,
    /// Seconds since the Unix epoch when the record was appended.
    pub time: u64,
    /// Hex SHA-256 of the previous line's bytes, or [`GENESIS_PREV`].
    pub prev: String,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Rotation settings of an [`AuditLog`] (config section `[audit]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Largest size of the current file before it is rotated, in bytes. Default 64 MiB
    /// ([`DEFAULT_MAX_BYTES`]). A record is never split: a file holding at least one record
    /// is rotated before a record that would push it past this size.
    pub max_bytes: u64,
    /// How many rotated files (`audit.log.1` ... `audit.log.<keep>`) are kept; older ones are
    /// deleted on rotation. Default 8 ([`DEFAULT_KEEP`]). With 0, the chain still continues
    /// across files, but the link to a deleted file cannot be checked.
    pub keep: usize,
    /// Window over which events a remote party can cause at will (refused connections and
    /// presentations, stray join requests, denied commands) are aggregated: a source's first
    /// such event per window is written, its repeats become one summary record (see
    /// [`crate::aggregate`]). Default 60 s.
    #[serde(with = "crate::config::duration")]
    pub aggregate_window: Duration,
    /// Sources listed individually per window; events of further sources are only counted.
    /// Default 64.
    pub aggregate_sources: usize,
}

impl AuditConfig {
    /// Checks the settings: files of 4 KiB to 4 GiB, at most 1,000 rotated files kept.
    pub fn validate(&self) -> Result<(), crate::config::Invalid> {
        crate::config::in_range("max_bytes", self.max_bytes, 4096, 4 << 30)?;
        crate::config::in_range("keep", self.keep, 0, 1000)?;
        crate::config::duration_in_range(
            "aggregate_window",
            self.aggregate_window,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        crate::config::in_range("aggregate_sources", self.aggregate_sources, 1, 100_000)
    }

    /// The aggregation settings.
    pub fn aggregate(&self) -> crate::aggregate::AggregateConfig {
        crate::aggregate::AggregateConfig {
            window: self.aggregate_window,
            max_sources: self.aggregate_sources,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            aggregate_window: Duration::from_secs(60),
            aggregate_sources: 64,
        }
    }
}

/// How the chain is broken at the line an [`AuditError::Broken`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum BrokenChain {
    /// The named record was changed after it was written (the next record's `prev` does not
    /// match its hash; it is also possible that the next record's `prev` was changed).
    #[error(
        "this record was changed after it was written (or the `prev` field of the record after it was)"
    )]
    Edited,
    /// Records are missing before the named line (its `seq` skips ahead).
    #[error("records are missing before this line (lines or a whole rotated file were deleted)")]
    Removed,
    /// The named record is out of order (its `seq` is lower than expected, or a skipped `seq`
    /// appears later in the file).
    #[error("this record is out of order (lines were moved, or a record was copied)")]
    Reordered,
    /// The named line is not a complete audit record.
    #[error(
        "this line is not a complete audit record (not JSON, missing fields, a bad `prev`, longer than 64 KiB, or no trailing newline)"
    )]
    Malformed,
}

/// Failure to open, append to or verify an audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log file could not be opened or created.
    #[error(
        "cannot open audit log {path}: {source}; check that its directory exists and that the daemon's user can write to it"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The log path is a symlink, directory or other non-regular file.
    #[error(
        "audit log {path} is not a regular file; point the audit log setting at a regular file"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Other users can read or write the log: its records may not be trusted, and they name
    /// every peer and network this daemon dealt with.
    #[error(
        "audit log {path} has mode {mode:03o}, so other users can read or rewrite it; run `chmod 600 {path}` and then `audit verify`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The log belongs to another user, who could rewrite it.
    #[error("audit log: {0}")]
    Owner(#[from] cordon_membership::ownership::Exposure),
    /// The last line of an existing log is not a complete record, so the chain cannot be
    /// continued. Nothing was written.
    #[error(
        "cannot continue audit log {path}: its last line is not a valid audit record ({problem}); run `audit verify` to find the damage, keep the file as evidence, and move it aside (e.g. to {path}.damaged) to start a new file"
    )]
    UnreadableTail {
        /// The file.
        path: PathBuf,
        /// What is wrong with the last line.
        problem: String,
    },
    /// A record could not be read.
    #[error("cannot read audit log {path}: {source}; check that the file exists and is readable")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record could not be written; it was not recorded.
    #[error(
        "cannot write audit log {path}: {source}; the event was not recorded: check free disk space and permissions"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Rotating the log failed; the event was not recorded.
    #[error(
        "cannot rotate audit log {path}: {source}; the event was not recorded: check free disk space and that the directory is writable, then restart the daemon"
    )]
    Rotate {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An earlier write or rotation failed half-way and could not be undone; the log refuses
    /// further records so that it does not extend a damaged chain.
    #[error(
        "audit log {path} is unusable after an earlier failed write; run `audit verify` and restart the daemon"
    )]
    Poisoned {
        /// The file.
        path: PathBuf,
    },
    /// An encoded record is longer than [`MAX_LINE_BYTES`] (cannot happen with the field caps;
    /// it would be a bug).
    #[error("audit record of {len} bytes exceeds the {max}-byte line limit; shorten its fields")]
    RecordTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record could not be encoded as JSON (a bug).
    #[error("cannot encode audit record: {source}")]
    Encode {
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The chain is broken: the log was tampered with or damaged.
    #[error(
        "audit log {file} line {line}: {problem}; the log was tampered with or damaged: keep the files as evidence and compare with an off-host copy"
    )]
    Broken {
        /// The file holding the line.
        file: PathBuf,
        /// The line number in that file, from 1.
        line: usize,
        /// What is wrong.
        problem: BrokenChain,
    },
}

/// Result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records checked, over all files.
    pub records: u64,
    /// Files checked (rotated files and the current one).
    pub files: usize,
    /// Hex SHA-256 of the last record's line: record it off the host to detect later
    /// truncation or a recomputed chain. `None` when the files hold no record.
    pub head: Option<String>,
}

/// An open audit log, appending records to a hash chain. See the module documentation.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    config: AuditConfig,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// `seq` of the next record.
    next_seq: u64,
    /// SHA-256 of the last record's line, or zeros for a fresh log.
    prev: [u8; 32],
    /// When `sync_data` last ran (the `now` given to `append`).
    last_sync: Option<SystemTime>,
    /// Whether records were written since the last `sync_data`.
    unsynced: bool,
    /// Set when a failed write could not be rolled back.
    poisoned: bool,
}

impl AuditLog {
    /// Opens the log at `path`, continuing its chain, or creates it (mode 0600; the parent
    /// directory must exist).
    ///
    /// An existing file must be a regular file that neither group nor others can access, and its last
    /// line must be a complete record: otherwise the operator is told to run `audit verify`
    /// and no new chain is started. A missing or empty file continues the chain of
    /// `<path>.1` if that exists (after a crash during rotation), else starts a fresh chain.
    pub fn open(path: &Path, config: AuditConfig) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let file = match fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.file_type().is_file() {
                    return Err(AuditError::NotAFile {
                        path: path.to_owned(),
                    });
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(AuditError::InsecurePermissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
                cordon_membership::ownership::check_owner(path, &meta)?;
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(open_error)?
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let file = create_log_file(path).map_err(open_error)?;
                sync_parent(path).map_err(open_error)?;
                file
            }
            Err(err) => return Err(open_error(err)),
        };
        let size = file.metadata().map_err(open_error)?.len();
        let mut log = Self {
            path: path.to_owned(),
            config,
            file,
            size,
            next_seq: 1,
            prev: [0; 32],
            last_sync: None,
            unsynced: false,
            poisoned: false,
        };
        if size > 0 {
            let (seq, hash) = last_record(&log.file, size, path)?;
            log.continue_after(seq, hash, path)?;
        } else {
            let rotated = rotated_path(path, 1);
            match fs::symlink_metadata(&rotated) {
                Ok(_) => {
                    // The daemon stopped between renaming the old file and writing the
                    // rotation record: link to the rotated file's last line.
                    let old = File::open(&rotated).map_err(|source| AuditError::Open {
                        path: rotated.clone(),
                        source,
                    })?;
                    let old_size = old
                        .metadata()
                        .map_err(|source| AuditError::Open {
                            path: rotated.clone(),
                            source,
                        })?
                        .len();
                    let (seq, hash) = last_record(&old, old_size, &rotated)?;
                    log.continue_after(seq, hash, &rotated)?;
                    let link = log.encode(&rotation_event(), SystemTime::now())?;
                    log.write_line(&link)?;
                    log.sync()?;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AuditError::Open {
                        path: rotated,
                        source,
                    });
                }
            }
        }
        tracing::debug!(path = %log.path.display(), next_seq = log.next_seq, "audit log open");
        Ok(log)
    }

    /// Appends `event` as the next record, stamped with `now`. Rotates first if the record
    /// would push the file past [`AuditConfig::max_bytes`]. Runs `sync_data` if the last sync
    /// is at least [`SYNC_INTERVAL`] older than `now` (or `now` is earlier than it).
    ///
    /// String fields longer than [`MAX_FIELD_BYTES`] are cut. On error the event is not
    /// recorded and the file is left as it was.
    pub fn append(&mut self, event: AuditEvent, now: SystemTime) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        let event = event.bounded();
        let mut line = self.encode(&event, now)?;
        let needed = line.len() as u64 + 1;
        if self.size > 0 && self.size.saturating_add(needed) > self.config.max_bytes {
            self.rotate(now)?;
            line = self.encode(&event, now)?;
        }
        self.write_line(&line)?;
        let due = match self.last_sync {
            None => true,
            // A clock that stepped back also syncs, so a bad clock cannot defer syncing.
            Some(last) => match now.duration_since(last) {
                Ok(elapsed) => elapsed >= SYNC_INTERVAL,
                Err(_) => true,
            },
        };
        if due {
            self.sync_data()?;
            self.last_sync = Some(now);
        }
        Ok(())
    }

    /// Runs `sync_data` now if records were written since the last sync. Call it from a timer
    /// to bound the loss window when events are rare.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        if self.unsynced {
            self.sync_data()?;
        }
        Ok(())
    }

    /// Syncs and closes the log.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.sync()
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `seq` the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hex SHA-256 of the last record's line (the `prev` of the next record); 64 zeros for a
    /// fresh log.
    pub fn head(&self) -> String {
        hex::encode(self.prev)
    }

    fn continue_after(&mut self, seq: u64, hash: [u8; 32], file: &Path) -> Result<(), AuditError> {
        self.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| AuditError::UnreadableTail {
                path: file.to_owned(),
                problem: "its `seq` is at the maximum value".to_owned(),
            })?;
        self.prev = hash;
        Ok(())
    }

    fn encode(&self, event: &AuditEvent, now: SystemTime) -> Result<Vec<u8>, AuditError> {
        let record = AuditRecord {
            seq: self.next_seq,
            time: now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            prev: hex::encode(self.prev),
            event: event.clone(),
        };
        let line = serde_json::to_vec(&record).map_err(|source| AuditError::Encode { source })?;
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditError::RecordTooLarge {
                len: line.len(),
                max: MAX_LINE_BYTES,
            });
        }
        Ok(line)
    }

    /// Writes one line with a single `write` and advances the chain; rolls a failed write back.
    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        if let Err(source) = self.file.write_all(&buf) {
            // A partial line would break the chain for every later record.
            if self.file.set_len(self.size).is_err() {
                self.poisoned = true;
            }
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.size += buf.len() as u64;
        self.next_seq += 1;
        self.prev = Sha256::digest(line).into();
        self.unsynced = true;
        Ok(())
    }

    fn sync_data(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.unsynced = false;
        Ok(())
    }

    /// Moves the current file to `.1` (shifting older files) and starts a new file with the
    /// rotation record.
    fn rotate(&mut self, now: SystemTime) -> Result<(), AuditError> {
        let rotate_error = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Rotate { path, source }
        };
        self.file.sync_data().map_err(rotate_error(&self.path))?;
        let keep = self.config.keep;
        // Files numbered `keep` and above: the oldest kept one makes room, older ones may be
        // left over from a larger `keep`.
        let existing = rotated_files(&self.path).map_err(rotate_error(&self.path))?;
        for (index, file) in existing.iter().rev() {
            if *index >= keep {
                remove_if_exists(file).map_err(rotate_error(file))?;
            }
        }
        for (index, file) in existing.iter().rev() {
            if *index < keep {
                let to = rotated_path(&self.path, index + 1);
                fs::rename(file, &to).map_err(rotate_error(file))?;
            }
        }
        if keep == 0 {
            fs::remove_file(&self.path).map_err(rotate_error(&self.path))?;
        } else {
            fs::rename(&self.path, rotated_path(&self.path, 1))
                .map_err(rotate_error(&self.path))?;
        }
        // The open file is no longer the current one: until the new file exists, a failure
        // leaves the log unusable until it is reopened (which links to `.1`).
        self.poisoned = true;
        self.file = create_log_file(&self.path).map_err(rotate_error(&self.path))?;
        sync_parent(&self.path).map_err(rotate_error(&self.path))?;
        self.size = 0;
        self.poisoned = false;
        let link = self.encode(&rotation_event(), now)?;
        self.write_line(&link)?;
        tracing::info!(path = %self.path.display(), seq = self.next_seq - 1, "audit log rotated");
        Ok(())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.unsynced
            && let Err(err) = self.file.sync_data()
        {
            tracing::warn!(path = %self.path.display(), %err, "audit log sync on close failed");
        }
    }
}

fn rotation_event() -> AuditEvent {
    AuditEvent::new(AuditKind::Other).detail(ROTATED_DETAIL)
}

fn create_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a created or renamed directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// `<path>.<index>`.
fn rotated_path(path: &Path, index: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// The rotated files of `path` (`<path>.<n>`, n >= 1), sorted by index (newest first).
fn rotated_files(path: &Path) -> io::Result<Vec<(usize, PathBuf)>> {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut files = Vec::new();
    for entry in fs::read_dir(parent_dir(path))? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let Some(index) = entry_name
            .to_str()
            .and_then(|entry_name| entry_name.strip_prefix(&prefix))
            .filter(|digits| {
                !digits.is_empty()
                    && !digits.starts_with('0')
                    && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|digits| digits.parse::<usize>().ok())
        else {
            continue;
        };
        files.push((index, rotated_path(path, index)));
    }
    files.sort_unstable_by_key(|(index, _)| *index);
    Ok(files)
}

/// Parses one line (without its newline) as a record, checking the `prev` format.
fn parse_record(line: &[u8]) -> Result<AuditRecord, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("it is longer than {MAX_LINE_BYTES} bytes"));
    }
    let record: AuditRecord =
        serde_json::from_slice(line).map_err(|err| format!("it is not a record: {err}"))?;
    if record.prev.len() != 64
        || !record
            .prev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("its `prev` is not 64 lowercase hex digits".to_owned());
    }
    Ok(record)
}

/// `seq` and line hash of the last record of a non-empty file.
fn last_record(file: &File, size: u64, path: &Path) -> Result<(u64, [u8; 32]), AuditError> {
    let tail_error = |problem: String| AuditError::UnreadableTail {
        path: path.to_owned(),
        problem,
    };
    // The last line, its newline and the newline before it.
    let window = size.min(MAX_LINE_BYTES as u64 + 2);
    let start = size - window;
    let mut buf = vec![0; window as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.pop() != Some(b'\n') {
        return Err(tail_error(
            "it has no trailing newline, so it was cut short, probably by a crash".to_owned(),
        ));
    }
    let line = match buf.iter().rposition(|&b| b == b'\n') {
        Some(newline) => &buf[newline + 1..],
        None if start == 0 => &buf[..],
        None => {
            return Err(tail_error(format!(
                "it is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
    };
    let record = parse_record(line).map_err(tail_error)?;
    Ok((record.seq, Sha256::digest(line).into()))
}

/// How a line read by [`read_line_capped`] ended.
enum LineEnd {
    /// A complete line, in the buffer without its newline.
    Complete,
    /// The last line of the file has no newline.
    Unterminated,
    /// The line is longer than [`MAX_LINE_BYTES`]; the rest of it was skipped.
    TooLong,
}

/// Reads the next line into `buf` (without its newline), never buffering more than
/// [`MAX_LINE_BYTES`] + 1 bytes. `None` at the end of the file.
fn read_line_capped<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<LineEnd>> {
    buf.clear();
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(if buf.len() > MAX_LINE_BYTES {
            LineEnd::TooLong
        } else {
            LineEnd::Complete
        }));
    }
    if buf.len() <= MAX_LINE_BYTES {
        return Ok(Some(LineEnd::Unterminated));
    }
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        if let Some(newline) = available.iter().position(|&b| b == b'\n') {
            reader.consume(newline + 1);
            break;
        }
        let len = available.len();
        reader.consume(len);
    }
    Ok(Some(LineEnd::TooLong))
}

/// Whether a later line of `reader` holds a record whose `seq` is in `range`.
fn later_seq_in<R: BufRead>(reader: &mut R, range: std::ops::Range<u64>) -> io::Result<bool> {
    let mut buf = Vec::new();
    while let Some(end) = read_line_capped(reader, &mut buf)? {
        if matches!(end, LineEnd::TooLong) {
            continue;
        }
        if let Ok(record) = parse_record(&buf)
            && range.contains(&record.seq)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The last record seen while verifying.
struct Previous {
    seq: u64,
    hash: [u8; 32],
    file: PathBuf,
    line: usize,
}

/// Verifies the chain of the log at `path` and its rotated files, oldest first
/// (`<path>.K` ... `<path>.1`, then `<path>`), including the links between files.
///
/// The first record of the oldest file must open a fresh chain (`seq` 1, `prev` of 64 zeros)
/// or be a rotation record (older files were deleted by rotation); anything else means the
/// head of the log was removed. Memory use is bounded by [`MAX_LINE_BYTES`]. Truncation of
/// the newest records is not detectable here: compare [`VerifyReport::head`] with a copy kept
/// elsewhere.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let read_error = |file: &Path| {
        let file = file.to_owned();
        move |source| AuditError::Read { path: file, source }
    };
    let mut files: Vec<PathBuf> = rotated_files(path)
        .map_err(read_error(path))?
        .into_iter()
        .rev()
        .map(|(_, file)| file)
        .collect();
    let current_exists = match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(err) if err.kind() == io::ErrorKind::NotFound && !files.is_empty() => false,
        Err(err) => return Err(read_error(path)(err)),
    };
    if current_exists {
        files.push(path.to_owned());
    }

    let mut previous: Option<Previous> = None;
    let mut records = 0u64;
    let mut buf = Vec::new();
    for file in &files {
        let mut reader = BufReader::new(File::open(file).map_err(read_error(file))?);
        let mut line = 0usize;
        while let Some(end) = read_line_capped(&mut reader, &mut buf).map_err(read_error(file))? {
            line += 1;
            let broken = |problem| AuditError::Broken {
                file: file.clone(),
                line,
                problem,
            };
            if !matches!(end, LineEnd::Complete) {
                return Err(broken(BrokenChain::Malformed));
            }
            let record = parse_record(&buf).map_err(|_| broken(BrokenChain::Malformed))?;
            match &previous {
                None => {
                    let fresh = record.seq == 1 && record.prev == GENESIS_PREV;
                    let rotated = record.event.kind == AuditKind::Other
                        && record.event.detail.as_deref() == Some(ROTATED_DETAIL);
                    if !fresh && !rotated {
                        return Err(broken(BrokenChain::Removed));
                    }
                }
                Some(prev) => {
                    let expected = prev.seq.saturating_add(1);
                    if record.seq > expected {
                        let moved = later_seq_in(&mut reader, expected..record.seq)
                            .map_err(read_error(file))?;
                        return Err(broken(if moved {
                            BrokenChain::Reordered
                        } else {
                            BrokenChain::Removed
                        }));
                    }
                    if record.seq < expected {
                        return Err(broken(BrokenChain::Reordered));
                    }
                    if record.prev != hex::encode(prev.hash) {
                        return Err(AuditError::Broken {
                            file: prev.file.clone(),
                            line: prev.line,
                            problem: BrokenChain::Edited,
                        });
                    }
                }
            }
            records += 1;
            previous = Some(Previous {
                seq: record.seq,
                hash: Sha256::digest(&buf).into(),
                file: file.clone(),
                line,
            });
        }
    }
    Ok(VerifyReport {
        records,
        files: files.len(),
        head: previous.map(|prev| hex::encode(prev.hash)),
    })
}

/// The second audit log of a data directory, beside `audit.log`: a copy of every record about
/// authenticated peers and operator decisions ([`kept_for_peers`]), in a hash chain and
/// rotation of its own. Nothing a stranger can cause is written there, so no flood of refused
/// connections, presentations or join requests can rotate those records away.
pub const PEERS_LOG: &str = "audit-peers.log";

/// Whether records of `kind` also go to [`PEERS_LOG`]: they are about a peer that proved a
/// membership (verified, its commands, its revocation heads) or record a decision that
/// admitted or removed a member (approval, issue, revocation). What strangers can cause
/// (refused connections and presentations, join requests and refusals, bans) does not.
pub fn kept_for_peers(kind: AuditKind) -> bool {
    matches!(
        kind,
        AuditKind::MembershipVerified
            | AuditKind::CommandExecuted
            | AuditKind::CommandDenied
            | AuditKind::JoinApproved
            | AuditKind::TokenIssued
            | AuditKind::TokenRevoked
            | AuditKind::RevocationHead
    )
}

/// Verifies the audit logs of a data directory (`audit.log` and, when it exists,
/// [`PEERS_LOG`]) and returns the line an operator reads; the error names the file, the line
/// and what is wrong with it.
pub fn verify_data_dir(data_dir: &Path) -> Result<String, AuditError> {
    let line = |name: &str, report: &VerifyReport| {
        format!(
            "{name} ok: {} records in {} file(s); head {}",
            report.records,
            report.files,
            report.head.as_deref().unwrap_or("(empty)")
        )
    };
    let main = verify(&data_dir.join("audit.log"))?;
    let mut text = line("audit log", &main);
    let peers = data_dir.join(PEERS_LOG);
    if fs::symlink_metadata(&peers).is_ok() {
        text.push('\n');
        text.push_str(&line(PEERS_LOG, &verify(&peers)?));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn event(i: u64) -> AuditEvent {
        AuditEvent::new(AuditKind::MembershipRefused)
            .peer(format!("peer-{i}"))
            .network("mainnet")
            .reason("expired")
    }

    /// A log in a temp dir with `n` records.
    fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        for i in 1..=n {
            log.append(event(i), at(T0 + i)).unwrap();
        }
        log.close().unwrap();
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    fn broken(result: Result<VerifyReport, AuditError>) -> (PathBuf, usize, BrokenChain) {
        match result {
            Err(AuditError::Broken {
                file,
                line,
                problem,
            }) => (file, line, problem),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn append_then_verify() {
        let (_dir, path) = log_with(5);
        let report = verify(&path).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!(report.files, 1);

        let lines = lines(&path);
        let first: AuditRecord = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.time, T0 + 1);
        assert_eq!(first.prev, GENESIS_PREV);
        assert_eq!(first.event, event(1));
        let second: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            second.prev,
            hex::encode(Sha256::digest(lines[0].as_bytes()))
        );
        assert!(lines[0].starts_with(r#"{"seq":1,"time":1700000001,"prev":"000"#));
        assert!(lines[0].contains(r#""kind":"membership_refused""#));
        assert_eq!(
            report.head,
            Some(hex::encode(Sha256::digest(lines[4].as_bytes())))
        );
    }

    #[test]
    fn reopen_continues_chain() {
        let (_dir, path) = log_with(3);
        let last = lines(&path)[2].clone();
        let mut log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        assert_eq!(log.next_seq(), 4);
        assert_eq!(log.head(), hex::encode(Sha256::digest(last.as_bytes())));
        log.append(event(4), at(T0 + 4)).unwrap();
        drop(log);
        let fourth: AuditRecord = serde_json::from_str(&lines(&path)[3]).unwrap();
        assert_eq!(fourth.seq, 4);
        assert_eq!(fourth.prev, hex::encode(Sha256::digest(last.as_bytes())));
        assert_eq!(verify(&path).unwrap().records, 4);
    }

    #[test]
    fn edited_middle_line_is_named() {
        let (_dir, path) = log_with(5);
        let mut lines = lines(&path);
        lines[2] = lines[2].replace("peer-3", "peer-X");
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 3, BrokenChain::Edited)
        );
    }

    #[test]
    fn removed_line_names_the_line_after_the_gap() {
        let (_dir, path) = log_with(5);
        let mut lines = lines(&path);
        lines.remove(2);
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 3, BrokenChain::Removed)
        );
    }

    #[test]
    fn swapped_lines_are_reordered() {
        let (_dir, path) = log_with(5);
        let mut lines = lines(&path);
        lines.swap(1, 2);
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 2, BrokenChain::Reordered)
        );
    }

    #[test]
    fn replayed_line_is_reordered() {
        let (_dir, path) = log_with(4);
        let mut lines = lines(&path);
        let copy = lines[1].clone();
        lines.insert(3, copy);
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 4, BrokenChain::Reordered)
        );
    }

    #[test]
    fn garbage_line_is_malformed() {
        let (_dir, path) = log_with(5);
        let mut lines = lines(&path);
        lines[2] = "this is not json".to_owned();
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 3, BrokenChain::Malformed)
        );
    }

    #[test]
    fn overlong_line_is_malformed() {
        let (_dir, path) = log_with(3);
        let mut lines = lines(&path);
        lines.insert(1, "x".repeat(MAX_LINE_BYTES + 10));
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 2, BrokenChain::Malformed)
        );
    }

    #[test]
    fn removed_head_is_detected() {
        let (_dir, path) = log_with(3);
        let mut lines = lines(&path);
        lines.remove(0);
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 1, BrokenChain::Removed)
        );
    }

    #[test]
    fn refuses_to_continue_a_damaged_tail() {
        let (_dir, path) = log_with(3);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":4,\"ti\n");
        fs::write(&path, &text).unwrap();
        let err = AuditLog::open(&path, AuditConfig::default()).unwrap_err();
        assert!(matches!(err, AuditError::UnreadableTail { .. }), "{err:?}");
        assert!(err.to_string().contains("audit verify"), "{err}");

        // A torn final line without a newline is refused too, and nothing is written.
        text.truncate(text.len() - 1);
        fs::write(&path, &text).unwrap();
        let err = AuditLog::open(&path, AuditConfig::default()).unwrap_err();
        assert!(matches!(err, AuditError::UnreadableTail { .. }), "{err:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 4, BrokenChain::Malformed)
        );
    }

    fn small_config() -> AuditConfig {
        AuditConfig {
            max_bytes: 1024,
            keep: 3,
            ..AuditConfig::default()
        }
    }

    /// Appends until the log has been rotated `rotations` times; returns records appended.
    fn fill(path: &Path, config: AuditConfig, rotations: usize) -> u64 {
        let mut log = AuditLog::open(path, config).unwrap();
        let mut appended = 0;
        while !rotated_path(path, rotations).exists() {
            assert!(appended < 1000, "no rotation after {appended} records");
            appended += 1;
            log.append(event(appended), at(T0 + appended)).unwrap();
        }
        // A couple more so the new file holds a record after the rotation link.
        for _ in 0..2 {
            appended += 1;
            log.append(event(appended), at(T0 + appended)).unwrap();
        }
        log.close().unwrap();
        appended
    }

    #[test]
    fn rotation_keeps_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let appended = fill(&path, small_config(), 2);
        assert!(fs::metadata(&path).unwrap().len() <= 1024);
        let report = verify(&path).unwrap();
        assert_eq!(report.files, 3);
        // Every event plus one rotation record per rotation.
        assert_eq!(report.records, appended + 2);

        let first_new: AuditRecord = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert_eq!(first_new.event.kind, AuditKind::Other);
        assert_eq!(first_new.event.detail.as_deref(), Some(ROTATED_DETAIL));
        let old = lines(&rotated_path(&path, 1));
        let old_last = old.last().unwrap();
        assert_eq!(
            first_new.prev,
            hex::encode(Sha256::digest(old_last.as_bytes()))
        );
        let old_last: AuditRecord = serde_json::from_str(old_last).unwrap();
        assert_eq!(first_new.seq, old_last.seq + 1);
    }

    #[test]
    fn rotation_drops_files_beyond_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, small_config()).unwrap();
        // About five records per 1 KiB file: many more rotations than `keep`.
        for i in 1..=60 {
            log.append(event(i), at(T0 + i)).unwrap();
        }
        drop(log);
        assert!(rotated_path(&path, 3).exists());
        assert!(!rotated_path(&path, 4).exists());
        assert_eq!(verify(&path).unwrap().files, 4);

        // With a smaller `keep`, the next rotation also deletes the leftovers.
        let config = AuditConfig {
            max_bytes: 1024,
            keep: 1,
            ..AuditConfig::default()
        };
        let mut log = AuditLog::open(&path, config).unwrap();
        for i in 61..=70 {
            log.append(event(i), at(T0 + i)).unwrap();
        }
        drop(log);
        assert!(rotated_path(&path, 1).exists());
        assert!(!rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        let report = verify(&path).unwrap();
        assert_eq!(report.files, 2);
    }

    #[test]
    fn tampered_first_line_after_rotation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fill(&path, small_config(), 1);
        let mut lines = lines(&path);
        lines[0] = lines[0].replace(ROTATED_DETAIL, "rotateX");
        write_lines(&path, &lines);
        assert_eq!(
            broken(verify(&path)),
            (path.clone(), 1, BrokenChain::Edited)
        );
    }

    #[test]
    fn tampered_last_line_of_rotated_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fill(&path, small_config(), 2);
        let rotated = rotated_path(&path, 1);
        let mut lines = lines(&rotated);
        let last = lines.len() - 1;
        lines[last] = lines[last].replace("mainnet", "testnet");
        write_lines(&rotated, &lines);
        assert_eq!(
            broken(verify(&path)),
            (rotated.clone(), last + 1, BrokenChain::Edited)
        );
    }

    #[test]
    fn missing_rotated_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fill(&path, small_config(), 3);
        fs::remove_file(rotated_path(&path, 2)).unwrap();
        assert_eq!(
            broken(verify(&path)),
            (rotated_path(&path, 1), 1, BrokenChain::Removed)
        );
    }

    #[test]
    fn reopen_after_interrupted_rotation_links_to_rotated_file() {
        let (_dir, path) = log_with(3);
        let last = lines(&path)[2].clone();
        fs::rename(&path, rotated_path(&path, 1)).unwrap();
        let mut log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        log.append(event(4), at(T0 + 4)).unwrap();
        drop(log);
        let first: AuditRecord = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert_eq!(first.seq, 4);
        assert_eq!(first.prev, hex::encode(Sha256::digest(last.as_bytes())));
        let report = verify(&path).unwrap();
        assert_eq!((report.records, report.files), (5, 2));
    }

    #[test]
    fn created_with_mode_0600_and_refuses_one_others_can_read_or_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        drop(AuditLog::open(&path, AuditConfig::default()).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        for mode in [0o666, 0o644, 0o640] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = AuditLog::open(&path, AuditConfig::default()).unwrap_err();
            assert!(
                matches!(err, AuditError::InsecurePermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_parent_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("audit.log");
        let err = AuditLog::open(&path, AuditConfig::default()).unwrap_err();
        assert!(matches!(err, AuditError::Open { .. }), "{err:?}");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "").unwrap();
        let path = dir.path().join("audit.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = AuditLog::open(&path, AuditConfig::default()).unwrap_err();
        assert!(matches!(err, AuditError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn record_holds_only_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        let token_id = hex::encode([7u8; 32]);
        let issued = AuditEvent::new(AuditKind::TokenIssued)
            .peer("12D3KooWExample")
            .network("mainnet")
            .token_id(&token_id)
            .request_id(42);
        log.append(issued, at(T0)).unwrap();
        drop(log);
        let line = &lines(&path)[0];
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "kind",
                "network",
                "peer",
                "prev",
                "request_id",
                "seq",
                "time",
                "token_id"
            ]
        );
        assert_eq!(value["token_id"], token_id);
        assert_eq!(value["kind"], "token_issued");
        assert!(!line.contains("token\":"), "{line}");
    }

    #[test]
    fn long_fields_are_cut_and_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        let control = "\u{1}".repeat(10 * MAX_FIELD_BYTES);
        let long = AuditEvent::new(AuditKind::Other)
            .peer(&control)
            .network(&control)
            .reason(&control)
            .command(&control)
            .token_id(&control)
            .addr(&control)
            .detail("é".repeat(MAX_FIELD_BYTES));
        log.append(long, at(T0)).unwrap();
        drop(log);
        let record: AuditRecord = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert!(record.event.peer.unwrap().len() <= MAX_FIELD_BYTES + '…'.len_utf8());
        assert!(record.event.detail.unwrap().ends_with('…'));
        verify(&path).unwrap();
    }

    #[test]
    fn unknown_kind_reads_as_other() {
        let record: AuditRecord = serde_json::from_str(&format!(
            r#"{{"seq":1,"time":0,"prev":"{GENESIS_PREV}","kind":"future_kind"}}"#
        ))
        .unwrap();
        assert_eq!(record.event.kind, AuditKind::Other);
    }
}
