//! The node's data directory (DESIGN.md section 7).
//!
//! ```text
//! <root>/                      mode 0700; refused if group or others can access it
//!   identity.key               the node's Ed25519 identity (mode 0600)
//!   control.sock               the control socket while the daemon runs (see `control`)
//!   tokens/<network>.biscuit   membership token per network, standard biscuit bytes (0600)
//!   join_state.json            join requests waiting for a seednode's decision
//!   address_book.json          known peers and their addresses, for fast rejoin
//!   logs/                      for log files, if the binary writes any
//! ```
//!
//! # Writes are atomic
//! Every file is written as `<name>.tmp` (mode 0600), fsynced, renamed over `<name>`, and then
//! the directory is fsynced: a crash leaves either the old or the new file, never a torn one.
//! There is one writer per file (the node's event loop); concurrent writers of the same file
//! would share the temporary name.
//!
//! # Corrupt state files do not stop the node
//! The join state and the address book are caches of information the node can rebuild (the
//! seednode keeps the join request; peers are rediscovered through bootstrap). If one does not
//! parse, or exceeds its size cap, it is renamed to `<name>.corrupt` (replacing an older one),
//! a warning is logged, and loading returns an empty list. I/O errors such as a permission
//! problem are still returned, since renaming would not fix them. Tokens are not handled this
//! way: an oversized token file is an error for [`DataDir::load_token`] and is skipped (with a
//! warning) by [`DataDir::tokens`].

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cordon_membership::{KeyError, SecretKey, ownership};
use cordon_protocol::NetworkName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::control;

/// Name of the identity key file.
pub const IDENTITY_FILE: &str = "identity.key";
/// Name of the token directory.
pub const TOKENS_DIR: &str = "tokens";
/// Extension of a token file.
pub const TOKEN_EXTENSION: &str = "biscuit";
/// Name of the join state file.
pub const JOIN_STATE_FILE: &str = "join_state.json";
/// Name of the address book file.
pub const ADDRESS_BOOK_FILE: &str = "address_book.json";
/// Name of the log directory.
pub const LOG_DIR: &str = "logs";
/// Largest token file read, in bytes (64 KiB).
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Largest join state file read, in bytes (1 MiB).
pub const MAX_JOIN_STATE_BYTES: u64 = 1024 * 1024;
/// Largest address book file read, in bytes (8 MiB).
pub const MAX_ADDRESS_BOOK_BYTES: u64 = 8 * 1024 * 1024;

/// A data directory whose identity has been loaded or created.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// A join request sent to a seednode and not yet answered with a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    /// The network asked to join.
    pub network: NetworkName,
    /// The seednode's id for the request.
    pub request_id: u64,
    /// The seednode's PeerId, as text.
    pub seednode: String,
    /// When the request was made, seconds since the Unix epoch.
    pub requested_at: u64,
}

/// A known peer, kept for fast rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressEntry {
    /// The peer's PeerId, as text.
    pub peer: String,
    /// Its addresses, as multiaddr text.
    pub addrs: Vec<String>,
    /// Networks it was a verified member of.
    pub networks: Vec<NetworkName>,
    /// When it was last seen, seconds since the Unix epoch.
    pub last_seen: u64,
}

/// Failure to create, open or use a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// `init` found an identity key.
    #[error(
        "the node is already initialised: {} exists; use `node run --data {root}`, or choose another --data directory",
        .root.join(IDENTITY_FILE).display()
    )]
    AlreadyInitialised {
        /// The data directory.
        root: PathBuf,
    },
    /// `open` found no identity key.
    #[error(
        "{root} is not an initialised data directory (no {IDENTITY_FILE}); run `node init --data {root}` first"
    )]
    NotInitialised {
        /// The data directory.
        root: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{path} is not a directory; pass a directory with --data")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Other users can read or enter the directory.
    #[error(
        "{path} has mode {mode:03o}, so other users can access the node's keys and tokens; run `chmod 700 {path}`"
    )]
    InsecurePermissions {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory, or one above it, can be changed by another user.
    #[error("data directory: {0}")]
    Owner(#[from] ownership::Exposure),
    /// The identity key could not be created or loaded (the message names the file and fix).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A token file is larger than [`MAX_TOKEN_BYTES`].
    #[error(
        "token file {path} is larger than {max} bytes; it is not a Cordon token: delete it and join the network again"
    )]
    TokenTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// A file or directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Directory of per-network revocation state.
const REVOCATIONS_DIR: &str = "revocations";

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    /// Creates the data directory (mode 0700, if missing) and a new identity key in it.
    ///
    /// Refuses a directory that already holds an identity key, or that other users can access.
    pub fn init(root: &Path) -> Result<(Self, SecretKey), DataDirError> {
        match fs::metadata(root) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io_error(root))?;
            }
            Err(e) => return Err(io_error(root)(e)),
        }
        tighten_if_empty(root)?;
        check_private_dir(root)?;
        let dir = Self {
            root: root.to_owned(),
        };
        let key = SecretKey::generate();
        key.save_new(&dir.identity_path()).map_err(|e| match e {
            KeyError::Exists { .. } => DataDirError::AlreadyInitialised {
                root: root.to_owned(),
            },
            other => other.into(),
        })?;
        sync_dir(root)?;
        dir.ensure_tokens_dir()?;
        tracing::info!(root = %root.display(), peer = %key.peer_id(), "data directory initialised");
        Ok((dir, key))
    }

    /// Opens an initialised data directory and loads its identity key.
    ///
    /// Refuses a directory that other users can access, and a key file they can read.
    pub fn open(root: &Path) -> Result<(Self, SecretKey), DataDirError> {
        match fs::metadata(root) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::NotInitialised {
                    root: root.to_owned(),
                });
            }
            Err(e) => return Err(io_error(root)(e)),
        }
        check_private_dir(root)?;
        let dir = Self {
            root: root.to_owned(),
        };
        let key = SecretKey::load(&dir.identity_path()).map_err(|e| match e {
            KeyError::Missing { .. } => DataDirError::NotInitialised {
                root: root.to_owned(),
            },
            other => other.into(),
        })?;
        dir.ensure_tokens_dir()?;
        Ok((dir, key))
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// The control socket's path (see [`control::socket_path`]).
    pub fn control_socket(&self) -> PathBuf {
        control::socket_path(&self.root)
    }

    /// The append-only, hash-chained audit log of security events.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// The audit log of authenticated peers' and operators' records
    /// ([`crate::audit::PEERS_LOG`]).
    pub fn peers_audit_log(&self) -> PathBuf {
        self.root.join(crate::audit::PEERS_LOG)
    }

    /// The directory for log files (not created here).
    pub fn log_dir(&self) -> PathBuf {
        self.root.join(LOG_DIR)
    }

    /// The directory holding one token file per network.
    pub fn tokens_dir(&self) -> PathBuf {
        self.root.join(TOKENS_DIR)
    }

    /// The token file of a network: `tokens/<network>.biscuit`.
    pub fn token_path(&self, network: &NetworkName) -> PathBuf {
        self.tokens_dir()
            .join(format!("{network}.{TOKEN_EXTENSION}"))
    }

    fn ensure_tokens_dir(&self) -> Result<(), DataDirError> {
        let dir = self.tokens_dir();
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::metadata(&dir).map_err(io_error(&dir))?.is_dir() {
                    Ok(())
                } else {
                    Err(DataDirError::NotADirectory { path: dir })
                }
            }
            Err(e) => Err(io_error(&dir)(e)),
        }
    }

    /// The revocation state of a network (signed heads, entries, floors):
    /// `revocations/<network>.json`.
    pub fn revocations_path(&self, network: &NetworkName) -> PathBuf {
        self.root
            .join(REVOCATIONS_DIR)
            .join(format!("{network}.json"))
    }

    /// The stored revocation state of a network, if any; refuses a file over `max` bytes.
    pub fn load_revocations(
        &self,
        network: &NetworkName,
        max: u64,
    ) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.revocations_path(network);
        match read_capped(&path, max) {
            Ok(Capped::Fits(bytes)) => Ok(Some(bytes)),
            Ok(Capped::TooLarge) => Err(DataDirError::Io {
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("larger than {max} bytes"),
                ),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Stores the revocation state of a network, atomically (0600).
    pub fn save_revocations(
        &self,
        network: &NetworkName,
        bytes: &[u8],
    ) -> Result<(), DataDirError> {
        let dir = self.root.join(REVOCATIONS_DIR);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => sync_dir(&self.root)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&dir)(e)),
        }
        write_atomic(&self.revocations_path(network), bytes)
    }

    /// The stored token of a network, if any.
    pub fn load_token(&self, network: &NetworkName) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.token_path(network);
        match read_capped(&path, MAX_TOKEN_BYTES) {
            Ok(Capped::Fits(bytes)) => Ok(Some(bytes)),
            Ok(Capped::TooLarge) => Err(DataDirError::TokenTooLarge {
                path,
                max: MAX_TOKEN_BYTES,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Stores (or replaces) the token of a network, atomically.
    pub fn save_token(&self, network: &NetworkName, token: &[u8]) -> Result<(), DataDirError> {
        let path = self.token_path(network);
        if token.len() as u64 > MAX_TOKEN_BYTES {
            return Err(DataDirError::TokenTooLarge {
                path,
                max: MAX_TOKEN_BYTES,
            });
        }
        self.ensure_tokens_dir()?;
        write_atomic(&path, token)
    }

    /// Deletes the token of a network. Returns whether there was one.
    pub fn remove_token(&self, network: &NetworkName) -> Result<bool, DataDirError> {
        let path = self.token_path(network);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.tokens_dir())?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// All stored tokens, sorted by network.
    ///
    /// Files whose name is not `<valid network name>.biscuit` (temporary files, strays) are
    /// ignored; an oversized token file is skipped with a warning.
    pub fn tokens(&self) -> Result<Vec<(NetworkName, Vec<u8>)>, DataDirError> {
        let dir = self.tokens_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut tokens = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(TOKEN_EXTENSION) {
                continue;
            }
            let Some(network) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| NetworkName::new(stem).ok())
            else {
                tracing::debug!(path = %path.display(), "ignoring a file that is not a token");
                continue;
            };
            if !entry.file_type().map_err(io_error(&path))?.is_file() {
                continue;
            }
            match read_capped(&path, MAX_TOKEN_BYTES) {
                Ok(Capped::Fits(bytes)) => tokens.push((network, bytes)),
                Ok(Capped::TooLarge) => tracing::warn!(
                    path = %path.display(),
                    %network,
                    max = MAX_TOKEN_BYTES,
                    "skipping an oversized token file"
                ),
                // Removed between listing and reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        tokens.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tokens)
    }

    /// The join requests awaiting a decision; empty if none were saved. A corrupt file is
    /// renamed to `join_state.json.corrupt` and yields an empty list (see the module docs).
    pub fn load_pending_joins(&self) -> Result<Vec<PendingJoin>, DataDirError> {
        load_json_list(&self.root.join(JOIN_STATE_FILE), MAX_JOIN_STATE_BYTES)
    }

    /// Replaces the saved join requests, atomically.
    pub fn save_pending_joins(&self, joins: &[PendingJoin]) -> Result<(), DataDirError> {
        save_json(&self.root.join(JOIN_STATE_FILE), &joins)
    }

    /// The saved address book; empty if none. A corrupt file is renamed to
    /// `address_book.json.corrupt` and yields an empty list (see the module docs).
    pub fn load_address_book(&self) -> Result<Vec<AddressEntry>, DataDirError> {
        load_json_list(&self.root.join(ADDRESS_BOOK_FILE), MAX_ADDRESS_BOOK_BYTES)
    }

    /// Replaces the address book, atomically, keeping the `max_entries` most recently seen
    /// entries (most recent first).
    pub fn save_address_book(
        &self,
        entries: &[AddressEntry],
        max_entries: usize,
    ) -> Result<(), DataDirError> {
        let mut kept: Vec<&AddressEntry> = entries.iter().collect();
        kept.sort_by_key(|entry| std::cmp::Reverse(entry.last_seen));
        kept.truncate(max_entries);
        save_json(&self.root.join(ADDRESS_BOOK_FILE), &kept)
    }
}

/// `init` on an empty directory made beforehand (`mkdir`, a temporary directory) makes it
/// private instead of refusing it; a directory with contents is left for the operator to fix,
/// since other files in it may rely on its mode.
fn tighten_if_empty(path: &Path) -> Result<(), DataDirError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if !meta.is_dir() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    let empty = fs::read_dir(path).map_err(io_error(path))?.next().is_none();
    if empty {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_error(path))?;
        tracing::info!(root = %path.display(), "made the empty data directory private (0700)");
    }
    Ok(())
}

/// Refuses a directory that group or others can access at all.
fn check_private_dir(path: &Path) -> Result<(), DataDirError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    ownership::check_owner(path, &meta)?;
    ownership::check_parents(path)?;
    Ok(())
}

enum Capped {
    Fits(Vec<u8>),
    TooLarge,
}

/// Reads a file of at most `max` bytes without reading more than `max + 1`.
fn read_capped(path: &Path, max: u64) -> io::Result<Capped> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        Ok(Capped::TooLarge)
    } else {
        Ok(Capped::Fits(bytes))
    }
}

/// Writes `<path>.tmp` (0600), fsyncs it, renames it over `path` and fsyncs the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` applies only when the file is created; a leftover temporary file keeps its own.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(DataDirError::Io {
            path: path.to_owned(),
            source,
        });
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn save_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), DataDirError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| DataDirError::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Loads a JSON list, quarantining a corrupt or oversized file (see the module docs).
fn load_json_list<T: DeserializeOwned>(path: &Path, max: u64) -> Result<Vec<T>, DataDirError> {
    let problem = match read_capped(path, max) {
        Ok(Capped::Fits(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(list) => return Ok(list),
            Err(e) => format!("does not parse ({e})"),
        },
        Ok(Capped::TooLarge) => format!("is larger than {max} bytes"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut quarantine = path.as_os_str().to_owned();
    quarantine.push(".corrupt");
    let quarantine = PathBuf::from(quarantine);
    fs::rename(path, &quarantine).map_err(io_error(path))?;
    tracing::warn!(
        path = %path.display(),
        moved_to = %quarantine.display(),
        reason = %problem,
        "state file is corrupt; moved it aside and starting from empty"
    );
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        (tmp, root)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn init_then_open_same_identity() {
        let (_tmp, root) = fresh();
        let (dir, key) = DataDir::init(&root).unwrap();
        assert_eq!(dir.root(), root);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.identity_path()), 0o600);
        assert_eq!(mode(&dir.tokens_dir()), 0o700);
        let (opened, loaded) = DataDir::open(&root).unwrap();
        assert_eq!(loaded.peer_id(), key.peer_id());
        assert_eq!(opened.control_socket(), root.join("control.sock"));
        assert_eq!(opened.log_dir(), root.join("logs"));
    }

    #[test]
    fn init_makes_an_existing_empty_dir_private() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (_, key) = DataDir::init(tmp.path()).unwrap();
        assert_eq!(mode(tmp.path()), 0o700);
        let (_, loaded) = DataDir::open(tmp.path()).unwrap();
        assert_eq!(loaded.peer_id(), key.peer_id());
    }

    #[test]
    fn init_twice_refused() {
        let (_tmp, root) = fresh();
        let (_, key) = DataDir::init(&root).unwrap();
        let err = DataDir::init(&root).unwrap_err();
        assert!(
            matches!(err, DataDirError::AlreadyInitialised { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("already initialised"), "{err}");
        // The first identity is intact.
        assert_eq!(DataDir::open(&root).unwrap().1.peer_id(), key.peer_id());
    }

    #[test]
    fn open_without_identity_says_init() {
        let (tmp, root) = fresh();
        let err = DataDir::open(&root).unwrap_err();
        assert!(err.to_string().contains("node init --data"), "{err}");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::NotInitialised { .. }), "{err}");
        assert!(err.to_string().contains("node init --data"), "{err}");
    }

    #[test]
    fn open_refuses_accessible_dir_and_key() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        for bad in [0o750, 0o705, 0o755, 0o770] {
            fs::set_permissions(&root, fs::Permissions::from_mode(bad)).unwrap();
            let err = DataDir::open(&root).unwrap_err();
            assert!(
                matches!(err, DataDirError::InsecurePermissions { mode, .. } if mode == bad),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 700"), "{err}");
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.identity_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = DataDir::open(&root).unwrap_err();
        assert!(
            matches!(err, DataDirError::Key(KeyError::Permissions { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn init_refuses_accessible_dir_with_contents() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), b"x").unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let err = DataDir::init(tmp.path()).unwrap_err();
        assert!(
            matches!(err, DataDirError::InsecurePermissions { .. }),
            "{err}"
        );
        assert!(!tmp.path().join(IDENTITY_FILE).exists());
    }

    #[test]
    fn token_round_trip_is_atomic() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        let main = net("mainnet");
        assert_eq!(dir.load_token(&main).unwrap(), None);
        dir.save_token(&main, b"first").unwrap();
        dir.save_token(&main, b"second").unwrap();
        assert_eq!(
            dir.load_token(&main).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(mode(&dir.token_path(&main)), 0o600);
        assert_eq!(names_in(&dir.tokens_dir()), vec!["mainnet.biscuit"]);
        dir.save_token(&net("lab.example.org"), b"lab").unwrap();
        let all = dir.tokens().unwrap();
        assert_eq!(
            all,
            vec![
                (net("lab.example.org"), b"lab".to_vec()),
                (net("mainnet"), b"second".to_vec()),
            ]
        );
        assert!(dir.remove_token(&main).unwrap());
        assert!(!dir.remove_token(&main).unwrap());
        assert_eq!(dir.load_token(&main).unwrap(), None);
        assert!(
            !names_in(&dir.tokens_dir())
                .iter()
                .any(|n| n.ends_with(".tmp"))
        );
    }

    #[test]
    fn leftover_tmp_does_not_leak_mode_or_content() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        let main = net("mainnet");
        let tmp = dir.tokens_dir().join("mainnet.biscuit.tmp");
        fs::write(&tmp, b"torn write from a crash").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(dir.tokens().unwrap(), vec![]);
        dir.save_token(&main, b"token").unwrap();
        assert_eq!(mode(&dir.token_path(&main)), 0o600);
        assert_eq!(
            dir.load_token(&main).unwrap().as_deref(),
            Some(&b"token"[..])
        );
        assert!(!tmp.exists());
    }

    #[test]
    fn invalid_token_file_names_ignored() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        let tokens = dir.tokens_dir();
        for name in [
            "Main.biscuit",
            "-bad.biscuit",
            "a..b.biscuit",
            "mainnet.txt",
            "mainnet",
            ".biscuit",
            "mainnet.biscuit.tmp",
        ] {
            fs::write(tokens.join(name), b"x").unwrap();
        }
        fs::create_dir(tokens.join("dir.biscuit")).unwrap();
        dir.save_token(&net("testnet"), b"ok").unwrap();
        assert_eq!(
            dir.tokens().unwrap(),
            vec![(net("testnet"), b"ok".to_vec())]
        );
    }

    #[test]
    fn token_size_capped() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        let big = vec![7u8; MAX_TOKEN_BYTES as usize + 1];
        assert!(matches!(
            dir.save_token(&net("mainnet"), &big),
            Err(DataDirError::TokenTooLarge { .. })
        ));
        fs::write(dir.token_path(&net("mainnet")), &big).unwrap();
        assert!(matches!(
            dir.load_token(&net("mainnet")),
            Err(DataDirError::TokenTooLarge { .. })
        ));
        dir.save_token(&net("testnet"), b"ok").unwrap();
        assert_eq!(
            dir.tokens().unwrap(),
            vec![(net("testnet"), b"ok".to_vec())]
        );
        let exact = vec![1u8; MAX_TOKEN_BYTES as usize];
        dir.save_token(&net("mainnet"), &exact).unwrap();
        assert_eq!(dir.load_token(&net("mainnet")).unwrap(), Some(exact));
    }

    #[test]
    fn pending_joins_round_trip() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        assert!(dir.load_pending_joins().unwrap().is_empty());
        let joins = vec![PendingJoin {
            network: net("mainnet"),
            request_id: 3,
            seednode: "12D3KooWEFzmyDfejmdVXekGzt2tawonudS9X82rc9njwp6RMNgq".to_owned(),
            requested_at: 1_700_000_000,
        }];
        dir.save_pending_joins(&joins).unwrap();
        assert_eq!(dir.load_pending_joins().unwrap(), joins);
        assert_eq!(mode(&root.join(JOIN_STATE_FILE)), 0o600);
        dir.save_pending_joins(&[]).unwrap();
        assert!(dir.load_pending_joins().unwrap().is_empty());
        assert!(!names_in(&root).iter().any(|n| n.ends_with(".tmp")));
    }

    #[test]
    fn corrupt_state_files_are_moved_aside() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        fs::write(root.join(ADDRESS_BOOK_FILE), b"{ not json").unwrap();
        assert!(dir.load_address_book().unwrap().is_empty());
        assert!(!root.join(ADDRESS_BOOK_FILE).exists());
        assert_eq!(
            fs::read(root.join("address_book.json.corrupt")).unwrap(),
            b"{ not json"
        );
        // Wrong shape (an invalid network name) counts as corrupt too.
        fs::write(
            root.join(JOIN_STATE_FILE),
            br#"[{"network":"Bad Name","request_id":1,"seednode":"x","requested_at":0}]"#,
        )
        .unwrap();
        assert!(dir.load_pending_joins().unwrap().is_empty());
        assert!(root.join("join_state.json.corrupt").exists());
        // Saving works again afterwards.
        let entry = AddressEntry {
            peer: "p".to_owned(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".to_owned()],
            networks: vec![net("mainnet")],
            last_seen: 5,
        };
        dir.save_address_book(std::slice::from_ref(&entry), 10)
            .unwrap();
        assert_eq!(dir.load_address_book().unwrap(), vec![entry]);
    }

    #[test]
    fn address_book_keeps_the_newest() {
        let (_tmp, root) = fresh();
        let (dir, _) = DataDir::init(&root).unwrap();
        let entries: Vec<AddressEntry> = [30, 10, 50, 20, 40]
            .into_iter()
            .map(|last_seen| AddressEntry {
                peer: format!("peer{last_seen}"),
                addrs: vec![],
                networks: vec![net("mainnet")],
                last_seen,
            })
            .collect();
        dir.save_address_book(&entries, 3).unwrap();
        let kept: Vec<u64> = dir
            .load_address_book()
            .unwrap()
            .iter()
            .map(|e| e.last_seen)
            .collect();
        assert_eq!(kept, vec![50, 40, 30]);
        assert_eq!(mode(&root.join(ADDRESS_BOOK_FILE)), 0o600);
        dir.save_address_book(&entries, 0).unwrap();
        assert!(dir.load_address_book().unwrap().is_empty());
    }
}
