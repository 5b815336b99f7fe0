//! Ed25519 keys for anchors, seednodes and nodes: generation, 0600 key files, and the
//! `ed25519/<hex>` public-key form shared with biscuit.
//!
//! A secret key never appears in a `Debug` output, a log line or an error message: errors name
//! the file and the fix, never the bytes.
//!
//! The files here are plaintext (`ed25519-private/<hex>`, mode 0600): daemons start unattended,
//! so their identity keys cannot wait for a passphrase. Anchor keys are encrypted at rest by
//! default; [`crate::anchor_key`] reads and writes that format (and this plaintext one).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use biscuit_auth::builder::Algorithm;
use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};

/// Text prefix of a secret key file.
const SECRET_PREFIX: &str = "ed25519-private/";
/// Text prefix of a public key, the biscuit convention.
const PUBLIC_PREFIX: &str = "ed25519/";

/// Failure to create, load or parse a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file does not exist.
    #[error(
        "key file {path} does not exist; create it first (`node init` / `seednode init` / `seednode anchor new`)"
    )]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// Refusing to overwrite a key file that already exists.
    #[error(
        "key file {path} already exists; refusing to overwrite a key (move it away first if you really mean to replace it)"
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The key file can be read by other users.
    #[error(
        "key file {path} has mode {mode:03o} and is readable by other users; run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user, who could swap the key.
    #[error("key file: {0}")]
    Owner(#[from] crate::ownership::Exposure),
    /// The key file does not hold an Ed25519 secret key in Cordon's format.
    #[error(
        "key file {path} is not a Cordon key file (expected one line `ed25519-private/<64 hex digits>`, or for an anchor key an encrypted `cordon-anchor-key/1` file); restore it from backup or create a new key"
    )]
    Garbage {
        /// The file.
        path: PathBuf,
    },
    /// The key file is an encrypted anchor key, read where only plaintext keys are accepted.
    #[error(
        "key file {path} is an encrypted anchor key; only `seednode anchor` commands can open it (with --passphrase-file, CORDON_ANCHOR_PASSPHRASE or a prompt); a daemon identity key must be a plaintext 0600 file"
    )]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase does not open the encrypted anchor key (or the file was altered).
    #[error("wrong passphrase for anchor key {path} (or the file is corrupt)")]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// The encrypted key file names key-derivation parameters this build refuses.
    #[error(
        "anchor key file {path} asks for Argon2id parameters {params} ({reason}); the file is corrupt or was not written by `seednode anchor new`"
    )]
    KdfParams {
        /// The file.
        path: PathBuf,
        /// The parameters as the file states them (public).
        params: String,
        /// Why they are refused.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot get random bytes from the operating system for {path}: {detail}")]
    Random {
        /// The file being written.
        path: PathBuf,
        /// The generator's error.
        detail: String,
    },
    /// An I/O error other than a missing file.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A public key string did not parse.
    #[error("invalid public key {input:?}: expected `ed25519/<64 hex digits>`")]
    PublicKey {
        /// The offending input (public material only).
        input: String,
    },
}

/// An Ed25519 secret key (32-byte seed). Never printed.
#[derive(Clone)]
pub struct SecretKey {
    seed: zeroize::Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let keypair = biscuit_auth::KeyPair::new_with_algorithm(Algorithm::Ed25519);
        let bytes = keypair.private().to_bytes();
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        Self { seed }
    }

    /// Builds a key from a 32-byte seed (tests and deterministic fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed: zeroize::Zeroizing::new(seed),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let kp = self.biscuit_keypair();
        let bytes = kp.public().to_bytes();
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        PublicKey(out)
    }

    /// This key as a biscuit key pair (for signing tokens).
    pub fn biscuit_keypair(&self) -> biscuit_auth::KeyPair {
        biscuit_auth::KeyPair::from(&self.biscuit_private())
    }

    /// This key as a biscuit private key.
    pub fn biscuit_private(&self) -> biscuit_auth::PrivateKey {
        // A 32-byte seed is always a valid Ed25519 secret key.
        #[allow(clippy::expect_used)]
        biscuit_auth::PrivateKey::from_bytes(&self.seed[..], Algorithm::Ed25519)
            .expect("32-byte Ed25519 seed")
    }

    /// This key as a libp2p identity key pair (same key, so the PeerId matches).
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = *self.seed;
        // A 32-byte seed is always a valid Ed25519 secret key.
        #[allow(clippy::expect_used)]
        let kp = libp2p_identity::Keypair::ed25519_from_bytes(&mut seed).expect("32-byte seed");
        kp
    }

    /// The PeerId of this key.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Writes the key to a new file with mode 0600. Refuses to overwrite an existing file.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        let text = zeroize::Zeroizing::new(self.plaintext_file_text());
        write_new_key_file(path, text.as_bytes())
    }

    /// Loads a plaintext key file, refusing files that other users can read and encrypted
    /// anchor keys (those open through [`crate::anchor_key::AnchorKeyFile`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        if crate::anchor_key::is_encrypted(&text) {
            return Err(KeyError::Encrypted {
                path: path.to_owned(),
            });
        }
        Self::parse_file_text(&text).ok_or_else(|| KeyError::Garbage {
            path: path.to_owned(),
        })
    }

    /// The plaintext file form, `ed25519-private/<hex>\n`. The caller zeroizes it.
    fn plaintext_file_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex::encode(&self.seed[..]))
    }

    /// The 32-byte seed, for sealing it (crate-internal; never printed).
    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub(crate) fn parse_file_text(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?.trim();
        let hex_part = text.strip_prefix(SECRET_PREFIX)?;
        if hex_part.len() != 64 {
            return None;
        }
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, &mut seed[..]).ok()?;
        Some(Self { seed })
    }
}

/// Largest key file read (either format is a few hundred bytes).
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Creates `path` with mode 0600 (never overwriting) and writes `bytes`, synced.
pub(crate) fn write_new_key_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => io(e),
        })?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Reads a key file, refusing a missing, oversized or group/world-readable one.
pub(crate) fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeyError::Missing {
            path: path.to_owned(),
        },
        _ => KeyError::Io {
            path: path.to_owned(),
            source: e,
        },
    })?;
    if !meta.is_file() {
        return Err(KeyError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    crate::ownership::check_owner(path, &meta)?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::Garbage {
            path: path.to_owned(),
        });
    }
    Ok(zeroize::Zeroizing::new(fs::read(path).map_err(
        |source| KeyError::Io {
            path: path.to_owned(),
            source,
        },
    )?))
}

/// An Ed25519 public key. Prints and parses as `ed25519/<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Builds a key from its 32 raw bytes, checking it is a valid curve point.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        libp2p_identity::ed25519::PublicKey::try_from_bytes(bytes).ok()?;
        let mut out = [0u8; 32];
        out.copy_from_slice(bytes);
        Some(Self(out))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// This key as a biscuit public key.
    pub fn to_biscuit(&self) -> biscuit_auth::PublicKey {
        // Constructed only from validated bytes.
        #[allow(clippy::expect_used)]
        biscuit_auth::PublicKey::from_bytes(&self.0, Algorithm::Ed25519).expect("valid key")
    }

    /// Converts a biscuit public key, if it is Ed25519.
    ///
    /// biscuit keys are valid points by construction, so this copies the bytes without the
    /// point decompression `from_bytes` does (a measurable share of verification time).
    pub fn from_biscuit(key: &biscuit_auth::PublicKey) -> Option<Self> {
        match key.algorithm() {
            biscuit_auth::format::schema::public_key::Algorithm::Ed25519 => {
                let bytes: [u8; 32] = key.to_bytes().try_into().ok()?;
                Some(Self(bytes))
            }
            _ => None,
        }
    }

    /// The libp2p PeerId of this key.
    pub fn peer_id(&self) -> PeerId {
        // Constructed only from validated bytes.
        #[allow(clippy::expect_used)]
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0).expect("valid key");
        libp2p_identity::PublicKey::from(key).to_peer_id()
    }

    /// Recovers the Ed25519 key a PeerId embeds (Ed25519 PeerIds inline their key).
    pub fn from_peer_id(peer: &PeerId) -> Option<Self> {
        let multihash = peer.as_ref();
        // Identity multihash (code 0) of the protobuf-encoded public key.
        if multihash.code() != 0 {
            return None;
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
        let ed = key.try_into_ed25519().ok()?;
        Self::from_bytes(&ed.to_bytes())
    }

    /// The anchor key id derived from this key: the first four bytes of SHA-256(key), big endian.
    ///
    /// Deriving the id keeps anchor files self-describing; two anchors colliding on an id is
    /// refused when the access list is built.
    pub fn key_id(&self) -> u32 {
        let digest = Sha256::digest(self.0);
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::PublicKey {
            input: s.chars().take(80).collect(),
        };
        let hex_part = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(err)?;
        if hex_part.len() != 64 {
            return Err(err());
        }
        let bytes = hex::decode(hex_part).map_err(|_| err())?;
        Self::from_bytes(&bytes).ok_or_else(err)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let key = SecretKey::generate();
        key.save_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SecretKey::load(&path).unwrap();
        assert_eq!(loaded.public(), key.public());
        assert_eq!(loaded.peer_id(), key.libp2p_keypair().public().to_peer_id());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        SecretKey::generate().save_new(&path).unwrap();
        let err = SecretKey::generate().save_new(&path).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    }

    #[test]
    fn missing_file_names_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.key");
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("nope.key") && msg.contains("init"), "{msg}");
    }

    #[test]
    fn group_readable_file_refused_with_chmod_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        SecretKey::generate().save_new(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn garbage_refused_without_echoing_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let secret_looking = format!("{SECRET_PREFIX}{}", "ab".repeat(31));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(secret_looking.as_bytes())
            .unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Garbage { .. }));
        assert!(!err.to_string().contains("abab"));
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        // A directory in place of the key file cannot be read as one.
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }), "{err}");
        assert!(err.to_string().contains("sub"), "{err}");
    }

    #[test]
    fn debug_never_prints_secret() {
        let key = SecretKey::from_seed([7u8; 32]);
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&hex::encode([7u8; 32])), "{dbg}");
    }

    #[test]
    fn public_key_text_round_trip_and_peer_id() {
        let key = SecretKey::from_seed([1u8; 32]);
        let public = key.public();
        let text = public.to_string();
        assert!(text.starts_with("ed25519/"));
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
        assert_eq!(public.to_biscuit().print(), text);
        assert_eq!(PublicKey::from_peer_id(&public.peer_id()), Some(public));
        assert!("ed25519/zz".parse::<PublicKey>().is_err());
        assert!("p256/00".parse::<PublicKey>().is_err());
    }
}
