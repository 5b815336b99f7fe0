//! Anchor key files encrypted at rest with a passphrase.
//!
//! An anchor key signs every delegation of its network, so its file is sealed by default: a key
//! derived from the operator's passphrase with Argon2id (memory-hard, RFC 9106) seals the 32-byte
//! Ed25519 seed with XChaCha20-Poly1305. Both come from RustCrypto (`argon2`,
//! `chacha20poly1305`); nothing here is hand-rolled beyond the text framing.
//!
//! The file is text, so an operator can tell it from a plaintext key at a glance:
//!
//! ```text
//! cordon-anchor-key/1 encrypted argon2id v=19 m=65536 t=3 p=1
//! salt <16 bytes, hex>
//! nonce <24 bytes, hex>
//! sealed <32-byte seed sealed with its 16-byte tag, hex>
//! ```
//!
//! Invariants:
//! - The header line and the salt line are the AEAD's associated data, so changing the stated
//!   parameters, the salt or the ciphertext makes opening fail; every failure to open is one
//!   error, [`KeyError::WrongPassphrase`], which names the file and nothing else.
//! - Salt and nonce are fresh from the operating system's CSPRNG for every file written.
//! - Parameters read from a file are bounded ([`KdfParams::MAX_M_KIB`] and friends), so a
//!   crafted file cannot make the reader allocate without limit.
//! - The passphrase, the derived key, the Argon2 working memory and the seed are zeroized when
//!   dropped; none of them has a `Debug` or `Display` that shows it.
//! - Only the exact text this module writes parses (one canonical rendering), so there is one
//!   file for one sealed key.
//! - The plaintext `ed25519-private/<hex>` format still loads ([`AnchorKeyFile::Plaintext`]):
//!   keys written before encryption, and `seednode anchor new --insecure-plaintext` for tests.

use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::keys::{KeyError, SecretKey, read_key_file, write_new_key_file};

/// First token of an encrypted anchor key file, and its format version.
pub const ENCRYPTED_MAGIC: &str = "cordon-anchor-key/1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const SEED_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A passphrase. Zeroized on drop; `Debug` never shows it.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps passphrase bytes (taken by value so the only copy is the zeroized one).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Whether the passphrase is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two passphrases are equal (confirming a new one typed twice).
    pub fn matches(&self, other: &Passphrase) -> bool {
        // Both were typed by the same operator a moment ago: timing reveals nothing to anyone.
        *self.0 == *other.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Argon2id cost parameters, stored in every encrypted file so they can be raised later without
/// breaking old files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl Default for KdfParams {
    /// m = 64 MiB, t = 3, p = 1: about a quarter of a second per guess on one core of a 2020s
    /// server, and 64 MiB per guess for anyone brute-forcing a stolen file.
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// The largest memory cost a file may ask for (1 GiB), in KiB.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// The largest number of passes a file may ask for.
    pub const MAX_T: u32 = 64;
    /// The largest parallelism a file may ask for.
    pub const MAX_P: u32 = 16;

    /// Cheap parameters (m = 1 MiB, t = 1) that make tests fast. Never for a real anchor: they
    /// let a stolen file be brute-forced hundreds of times faster than [`KdfParams::default`].
    pub fn insecure_for_tests() -> Self {
        Self {
            m_kib: 1024,
            t: 1,
            p: 1,
        }
    }

    /// Memory cost in KiB.
    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }

    /// Number of passes.
    pub fn t(&self) -> u32 {
        self.t
    }

    /// Degree of parallelism (lanes).
    pub fn p(&self) -> u32 {
        self.p
    }

    /// Why these parameters are refused, if they are.
    fn refusal(&self) -> Option<&'static str> {
        if self.p == 0 || self.p > Self::MAX_P {
            return Some("p must be 1 to 16");
        }
        if self.t == 0 || self.t > Self::MAX_T {
            return Some("t must be 1 to 64");
        }
        if self.m_kib > Self::MAX_M_KIB {
            return Some("m may be at most 1 GiB");
        }
        if self.m_kib < 8 * self.p {
            return Some("m must be at least 8 KiB per lane");
        }
        None
    }

    fn header(&self) -> String {
        format!(
            "{ENCRYPTED_MAGIC} encrypted argon2id v=19 m={} t={} p={}",
            self.m_kib, self.t, self.p
        )
    }

    /// Derives the 32-byte sealing key from a passphrase and salt.
    fn derive(
        &self,
        passphrase: &Passphrase,
        salt: &[u8; SALT_LEN],
        path: &Path,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let refused = |reason: String| KeyError::KdfParams {
            path: path.to_owned(),
            params: format!("m={} t={} p={}", self.m_kib, self.t, self.p),
            reason,
        };
        if let Some(reason) = self.refusal() {
            return Err(refused(reason.to_owned()));
        }
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| refused(e.to_string()))?;
        // The working memory holds values derived from the passphrase: zeroized on drop.
        let mut memory = Zeroizing::new(vec![argon2::Block::default(); params.block_count()]);
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into_with_memory(&passphrase.0, salt, &mut key[..], &mut memory[..])
            .map_err(|e| refused(e.to_string()))?;
        Ok(key)
    }
}

/// An anchor key file as read from disk: sealed with a passphrase, or the plaintext format.
#[derive(Debug)]
pub enum AnchorKeyFile {
    /// A plaintext `ed25519-private/<hex>` file (written before encryption existed, or with
    /// `--insecure-plaintext`).
    Plaintext(SecretKey),
    /// An encrypted `cordon-anchor-key/1` file; [`EncryptedAnchorKey::open`] needs the
    /// passphrase.
    Encrypted(EncryptedAnchorKey),
}

impl AnchorKeyFile {
    /// Reads an anchor key file of either format, refusing a missing, group/world-readable or
    /// malformed one. Asks for nothing: opening an encrypted key is a second step.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        if is_encrypted(&text) {
            return EncryptedAnchorKey::parse(&text, path).map(Self::Encrypted);
        }
        SecretKey::parse_file_text(&text)
            .map(Self::Plaintext)
            .ok_or_else(|| KeyError::Garbage {
                path: path.to_owned(),
            })
    }
}

/// Whether key-file text is in the encrypted format (by its first token).
pub(crate) fn is_encrypted(text: &[u8]) -> bool {
    text.starts_with(ENCRYPTED_MAGIC.as_bytes())
}

/// A sealed anchor key as read from its file. Holds no secret: only the public parameters, salt,
/// nonce and ciphertext.
#[derive(Clone)]
pub struct EncryptedAnchorKey {
    path: PathBuf,
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEED_LEN],
    tag: [u8; TAG_LEN],
}

impl fmt::Debug for EncryptedAnchorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedAnchorKey")
            .field("path", &self.path)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl EncryptedAnchorKey {
    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Argon2id parameters the file states.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    /// Seals `key` under `passphrase` with fresh salt and nonce. `path` is only named in errors.
    pub fn seal(
        key: &SecretKey,
        passphrase: &Passphrase,
        params: KdfParams,
        path: &Path,
    ) -> Result<Self, KeyError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        for buf in [&mut salt[..], &mut nonce[..]] {
            getrandom::getrandom(buf).map_err(|e| KeyError::Random {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        }
        let sealing_key = params.derive(passphrase, &salt, path)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&sealing_key[..]));
        let mut buffer = Zeroizing::new(*key.seed());
        let aad = associated_data(&params, &salt);
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad.as_bytes(), &mut buffer[..])
            // Encryption fails only for messages longer than the cipher allows; 32 bytes is not.
            .map_err(|_| KeyError::Io {
                path: path.to_owned(),
                source: std::io::Error::other("XChaCha20-Poly1305 refused to seal 32 bytes"),
            })?;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(&tag);
        Ok(Self {
            path: path.to_owned(),
            params,
            salt,
            nonce,
            sealed: *buffer,
            tag: tag_bytes,
        })
    }

    /// Opens the sealed key with `passphrase`. Any failure (wrong passphrase, an altered
    /// parameter, salt, nonce or ciphertext) is [`KeyError::WrongPassphrase`].
    pub fn open(&self, passphrase: &Passphrase) -> Result<SecretKey, KeyError> {
        let sealing_key = self.params.derive(passphrase, &self.salt, &self.path)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&sealing_key[..]));
        let mut buffer = Zeroizing::new(self.sealed);
        let aad = associated_data(&self.params, &self.salt);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&self.nonce),
                aad.as_bytes(),
                &mut buffer[..],
                Tag::from_slice(&self.tag),
            )
            .map_err(|_| KeyError::WrongPassphrase {
                path: self.path.clone(),
            })?;
        Ok(SecretKey::from_seed(*buffer))
    }

    /// The file text (no secret in it, but written 0600 like every key file).
    pub fn to_file_text(&self) -> String {
        format!(
            "{}nonce {}\nsealed {}{}\n",
            associated_data(&self.params, &self.salt),
            hex::encode(self.nonce),
            hex::encode(self.sealed),
            hex::encode(self.tag),
        )
    }

    fn parse(text: &[u8], path: &Path) -> Result<Self, KeyError> {
        let garbage = || KeyError::Garbage {
            path: path.to_owned(),
        };
        let text = std::str::from_utf8(text).map_err(|_| garbage())?;
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(garbage)?;
        let params = parse_header(header).ok_or_else(garbage)?;
        let salt: [u8; SALT_LEN] = hex_field(lines.next(), "salt ").ok_or_else(garbage)?;
        let nonce: [u8; NONCE_LEN] = hex_field(lines.next(), "nonce ").ok_or_else(garbage)?;
        let sealed: [u8; SEED_LEN + TAG_LEN] =
            hex_field(lines.next(), "sealed ").ok_or_else(garbage)?;
        let mut key = Self {
            path: path.to_owned(),
            params,
            salt,
            nonce,
            sealed: [0u8; SEED_LEN],
            tag: [0u8; TAG_LEN],
        };
        key.sealed.copy_from_slice(&sealed[..SEED_LEN]);
        key.tag.copy_from_slice(&sealed[SEED_LEN..]);
        // One canonical text per key: anything else (extra lines, `+3`, upper-case hex) is not a
        // file this module wrote.
        if key.to_file_text() != text {
            return Err(garbage());
        }
        if let Some(reason) = params.refusal() {
            return Err(KeyError::KdfParams {
                path: path.to_owned(),
                params: format!("m={} t={} p={}", params.m_kib, params.t, params.p),
                reason: reason.to_owned(),
            });
        }
        Ok(key)
    }
}

impl SecretKey {
    /// Writes the key sealed under `passphrase` to a new file with mode 0600. Refuses to
    /// overwrite an existing file. [`KdfParams::default`] is the strength to use.
    pub fn save_new_encrypted(
        &self,
        path: &Path,
        passphrase: &Passphrase,
        params: KdfParams,
    ) -> Result<(), KeyError> {
        if path.exists() {
            // Checked first so an existing key costs no key derivation; `create_new` below
            // still refuses a file that appears in between.
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
        let sealed = EncryptedAnchorKey::seal(self, passphrase, params, path)?;
        write_new_key_file(path, sealed.to_file_text().as_bytes())
    }
}

/// What the AEAD authenticates besides the seed: the header line and the salt line.
fn associated_data(params: &KdfParams, salt: &[u8; SALT_LEN]) -> String {
    format!("{}\nsalt {}\n", params.header(), hex::encode(salt))
}

fn parse_header(line: &str) -> Option<KdfParams> {
    let rest = line.strip_prefix(ENCRYPTED_MAGIC)?;
    let rest = rest.strip_prefix(" encrypted argon2id v=19 ")?;
    let mut fields = rest.split(' ');
    let mut number =
        |name: &str| -> Option<u32> { fields.next()?.strip_prefix(name)?.parse().ok() };
    let m_kib = number("m=")?;
    let t = number("t=")?;
    let p = number("p=")?;
    if fields.next().is_some() {
        return None;
    }
    Some(KdfParams { m_kib, t, p })
}

fn hex_field<const N: usize>(line: Option<&str>, prefix: &str) -> Option<[u8; N]> {
    let digits = line?.strip_prefix(prefix)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.as_bytes().to_vec())
    }

    /// A sealed key in a temporary directory, with cheap parameters.
    fn sealed_file(seed: [u8; 32], passphrase: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.key");
        SecretKey::from_seed(seed)
            .save_new_encrypted(&path, &pass(passphrase), KdfParams::insecure_for_tests())
            .unwrap();
        (dir, path)
    }

    fn open(path: &Path, passphrase: &str) -> Result<SecretKey, KeyError> {
        match AnchorKeyFile::read(path)? {
            AnchorKeyFile::Encrypted(sealed) => sealed.open(&pass(passphrase)),
            AnchorKeyFile::Plaintext(_) => panic!("expected an encrypted file"),
        }
    }

    /// Rewrites one line of a key file (keeping mode 0600).
    fn edit_line(path: &Path, index: usize, f: impl FnOnce(&str) -> String) {
        let text = fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[index] = f(&lines[index]);
        fs::write(path, format!("{}\n", lines.join("\n"))).unwrap();
    }

    /// Flips the last hex digit of a line.
    fn flip_last_digit(line: &str) -> String {
        let (head, last) = line.split_at(line.len() - 1);
        format!("{head}{}", if last == "0" { "1" } else { "0" })
    }

    #[test]
    fn round_trip_with_the_right_passphrase() {
        let (_dir, path) = sealed_file([3u8; 32], "correct horse");
        let key = open(&path, "correct horse").unwrap();
        assert_eq!(key.public(), SecretKey::from_seed([3u8; 32]).public());
    }

    #[test]
    fn file_is_0600_text_that_names_its_format_and_hides_the_seed() {
        let seed = [0x5au8; 32];
        let (_dir, path) = sealed_file(seed, "pw");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("cordon-anchor-key/1 encrypted argon2id v=19 m=1024 t=1 p=1\nsalt "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            !text.contains(&hex::encode(seed)),
            "seed in the clear: {text}"
        );
        assert!(!text.contains("ed25519-private/"), "{text}");
    }

    #[test]
    fn default_parameters_are_strong_and_stated_in_the_file() {
        let params = KdfParams::default();
        assert_eq!((params.m_kib(), params.t(), params.p()), (65536, 3, 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.key");
        let key = SecretKey::from_seed([8u8; 32]);
        key.save_new_encrypted(&path, &pass("pw"), params).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("cordon-anchor-key/1 encrypted argon2id v=19 m=65536 t=3 p=1\n"));
        let AnchorKeyFile::Encrypted(sealed) = AnchorKeyFile::read(&path).unwrap() else {
            panic!("expected an encrypted file");
        };
        assert_eq!(sealed.params(), params);
        assert_eq!(sealed.open(&pass("pw")).unwrap().public(), key.public());
    }

    #[test]
    fn two_files_of_one_key_differ_in_salt_and_nonce() {
        let (_a, first) = sealed_file([1u8; 32], "pw");
        let (_b, second) = sealed_file([1u8; 32], "pw");
        let first = fs::read_to_string(first).unwrap();
        let second = fs::read_to_string(second).unwrap();
        for line in 1..4 {
            assert_ne!(first.lines().nth(line), second.lines().nth(line));
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_with_a_clear_error() {
        let (_dir, path) = sealed_file([4u8; 32], "right one");
        let err = open(&path, "wrong one").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "wrong passphrase for anchor key {} (or the file is corrupt)",
                path.display()
            )
        );
        // An empty passphrase is just another wrong one.
        let err = open(&path, "").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn errors_never_show_the_seed_or_the_passphrase() {
        let seed = [0xc7u8; 32];
        let (_dir, path) = sealed_file(seed, "hunter2-secret");
        let err = open(&path, "typo-hunter3-secret").unwrap_err();
        let sealed = match AnchorKeyFile::read(&path).unwrap() {
            AnchorKeyFile::Encrypted(sealed) => sealed,
            AnchorKeyFile::Plaintext(_) => panic!("expected an encrypted file"),
        };
        let key = sealed.open(&pass("hunter2-secret")).unwrap();
        for shown in [
            err.to_string(),
            format!("{err:?}"),
            format!("{sealed:?}"),
            format!("{key:?}"),
            format!("{:?}", pass("hunter2-secret")),
        ] {
            assert!(!shown.contains(&hex::encode(seed)), "seed shown: {shown}");
            assert!(!shown.contains("hunter"), "passphrase shown: {shown}");
        }
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 3, flip_last_digit);
        let err = open(&path, "pw").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn tampered_salt_is_refused() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 1, flip_last_digit);
        let err = open(&path, "pw").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 2, flip_last_digit);
        let err = open(&path, "pw").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn tampered_params_are_refused() {
        // A valid but different cost: another key is derived and the header is authenticated.
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 0, |l| l.replace("t=1", "t=2"));
        let err = open(&path, "pw").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");

        // An absurd cost is refused before any memory is allocated.
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 0, |l| l.replace("m=1024", "m=4000000000"));
        let err = AnchorKeyFile::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::KdfParams { .. }), "{err}");
        assert!(err.to_string().contains("m=4000000000"), "{err}");

        // A non-canonical rendering of the same numbers is not a file we wrote.
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        edit_line(&path, 0, |l| l.replace("t=1", "t=+1"));
        let err = AnchorKeyFile::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::Garbage { .. }), "{err}");
    }

    #[test]
    fn truncated_or_extended_file_is_garbage() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        let text = fs::read_to_string(&path).unwrap();
        let truncated: Vec<&str> = text.lines().take(3).collect();
        fs::write(&path, truncated.join("\n")).unwrap();
        let err = AnchorKeyFile::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::Garbage { .. }), "{err}");
        assert!(err.to_string().contains("cordon-anchor-key/1"), "{err}");
        fs::write(&path, format!("{text}extra\n")).unwrap();
        let err = AnchorKeyFile::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::Garbage { .. }), "{err}");
    }

    #[test]
    fn plaintext_anchor_key_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.key");
        let key = SecretKey::from_seed([6u8; 32]);
        key.save_new(&path).unwrap();
        let AnchorKeyFile::Plaintext(loaded) = AnchorKeyFile::read(&path).unwrap() else {
            panic!("expected a plaintext file");
        };
        assert_eq!(loaded.public(), key.public());
    }

    #[test]
    fn group_readable_encrypted_key_is_refused_with_the_fix() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = AnchorKeyFile::read(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn plaintext_loader_refuses_an_encrypted_key_by_name() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Encrypted { .. }), "{err}");
        assert!(err.to_string().contains("passphrase"), "{err}");
    }

    #[test]
    fn refuses_to_overwrite_an_existing_key() {
        let (_dir, path) = sealed_file([5u8; 32], "pw");
        let before = fs::read(&path).unwrap();
        let err = SecretKey::from_seed([9u8; 32])
            .save_new_encrypted(&path, &pass("pw"), KdfParams::insecure_for_tests())
            .unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "cordon-anchor-key/1[ -~\n]{0,300}") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k");
            let _ = EncryptedAnchorKey::parse(text.as_bytes(), &path);
        }
    }
}
