//! Trust-anchor tooling: create an anchor key, delegate a network to a seednode.
//!
//! The anchor key may live offline; these commands touch only files. Anchor keys are sealed with
//! a passphrase by default (`cordon_membership::anchor_key`; the passphrase comes from
//! [`crate::passphrase`]); plaintext keys, older ones or `--insecure-plaintext` ones, load too.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use cordon_membership::{
    AnchorKeyFile, DelegationRequest, KdfParams, PublicKey, SecretKey, issue_delegation,
};
use cordon_protocol::NetworkName;

use crate::passphrase::PassphraseSource;

/// File name of the anchor's secret key inside its directory.
pub const ANCHOR_KEY_FILE: &str = "anchor.key";
/// File name of the anchor's public key inside its directory.
pub const ANCHOR_PUB_FILE: &str = "anchor.pub";

/// What `anchor new` created.
#[derive(Debug, serde::Serialize)]
pub struct NewAnchor {
    /// The network the anchor roots.
    pub network: String,
    /// Its public key, `ed25519/<hex>`.
    pub public_key: PublicKey,
    /// The key id carried in every token it signs.
    pub key_id: u32,
    /// The secret key file (0600).
    pub key_file: PathBuf,
    /// Whether the key file is sealed with a passphrase (false only with
    /// `--insecure-plaintext`).
    pub encrypted: bool,
}

/// How a new anchor key is written.
#[derive(Debug)]
pub enum AnchorKeyProtection<'a> {
    /// Sealed with a passphrase from `source`, its key derived with `kdf`
    /// ([`KdfParams::default`] outside tests).
    Passphrase {
        /// Where the passphrase comes from.
        source: &'a PassphraseSource,
        /// Argon2id cost.
        kdf: KdfParams,
    },
    /// The plaintext format (tests and demos only).
    InsecurePlaintext,
}

/// Creates an anchor key in `out` (created 0700 if missing). Refuses to overwrite a key, and
/// does so before asking for a passphrase.
pub fn new_anchor(
    network: &str,
    out: &Path,
    protection: &AnchorKeyProtection<'_>,
) -> anyhow::Result<NewAnchor> {
    let network: NetworkName = network
        .parse()
        .with_context(|| format!("invalid --network {network:?}"))?;
    let key_file = out.join(ANCHOR_KEY_FILE);
    if key_file.exists() {
        return Err(cordon_membership::KeyError::Exists { path: key_file }.into());
    }
    // The passphrase first: a missing source or a mistyped confirmation leaves nothing behind.
    let passphrase = match protection {
        AnchorKeyProtection::Passphrase { source, kdf } => {
            Some((source.new_passphrase(&key_file)?, *kdf))
        }
        AnchorKeyProtection::InsecurePlaintext => None,
    };
    create_private_dir(out)?;
    let key = SecretKey::generate();
    match &passphrase {
        Some((passphrase, kdf)) => key.save_new_encrypted(&key_file, passphrase, *kdf)?,
        None => key.save_new(&key_file)?,
    }
    let encrypted = passphrase.is_some();
    let public_key = key.public();
    // The public key is no secret (it goes into every descriptor), but like everything the
    // anchor writes it is owner-only where it is made: copy it out to distribute it.
    write_new(
        &out.join(ANCHOR_PUB_FILE),
        format!("{public_key}\n").as_bytes(),
        0o600,
    )?;
    Ok(NewAnchor {
        network: network.to_string(),
        public_key,
        key_id: public_key.key_id(),
        key_file,
        encrypted,
    })
}

/// Loads an anchor key of either format, asking `passphrase` only if the file is encrypted.
pub fn load_anchor_key(path: &Path, passphrase: &PassphraseSource) -> anyhow::Result<SecretKey> {
    match AnchorKeyFile::read(path)? {
        AnchorKeyFile::Plaintext(key) => Ok(key),
        AnchorKeyFile::Encrypted(sealed) => {
            let passphrase = passphrase.passphrase_for(path)?;
            Ok(sealed.open(&passphrase)?)
        }
    }
}

/// Arguments of `anchor delegate`.
#[derive(Debug)]
pub struct Delegate<'a> {
    /// The anchor's secret key file.
    pub anchor_key: &'a Path,
    /// Where its passphrase comes from, if it is encrypted.
    pub passphrase: &'a PassphraseSource,
    /// The seednode's public key.
    pub seednode: PublicKey,
    /// The network.
    pub network: &'a str,
    /// How long the delegation lasts.
    pub ttl: Duration,
    /// Roles the seednode may grant.
    pub roles: Vec<String>,
    /// Explicit rights the seednode may grant on top of roles (e.g. `dht_put`).
    pub rights: Vec<String>,
    /// Longest membership the seednode may issue.
    pub max_lifetime: Duration,
    /// Where to write the token (and `<out>.b64`).
    pub out: &'a Path,
}

/// What `anchor delegate` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Delegated {
    /// The token file (biscuit bytes).
    pub token_file: PathBuf,
    /// The base64 form.
    pub base64_file: PathBuf,
    /// The delegation's revocation id (revoking it revokes every token the seednode issued).
    pub revocation_id: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The anchor's key id.
    pub anchor_key_id: u32,
}

/// Signs a delegation and writes it as biscuit bytes plus a base64 file.
pub fn delegate(args: &Delegate<'_>, now: SystemTime) -> anyhow::Result<Delegated> {
    let network: NetworkName = args
        .network
        .parse()
        .with_context(|| format!("invalid --network {:?}", args.network))?;
    if args.roles.is_empty() {
        bail!("--roles must name at least one role, e.g. --roles member,operator");
    }
    let anchor = load_anchor_key(args.anchor_key, args.passphrase)?;
    let expires_at = now + args.ttl;
    let token = issue_delegation(
        &anchor,
        &DelegationRequest {
            network: network.to_string(),
            seednode: args.seednode,
            expires_at,
            allowed_roles: args.roles.clone(),
            allowed_rights: args.rights.clone(),
            max_lifetime: args.max_lifetime,
        },
        now,
    )?;
    let biscuit = biscuit_auth::Biscuit::from(&token, anchor.public().to_biscuit())
        .context("re-reading the delegation just signed")?;
    let revocation_id = cordon_membership::verify::delegation_id_of(&biscuit)
        .map(|id| id.to_string())
        .unwrap_or_default();
    let b64 = biscuit.to_base64().context("encoding base64")?;
    let base64_file = append_extension(args.out, "b64");
    write_replace(args.out, &token)?;
    write_replace(&base64_file, format!("{b64}\n").as_bytes())?;
    Ok(Delegated {
        token_file: args.out.to_owned(),
        base64_file,
        revocation_id,
        expires_at: expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        anchor_key_id: anchor.public().key_id(),
    })
}

/// Reads a token file holding either raw biscuit bytes or their base64 form.
pub fn read_token_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        fs::metadata(path).with_context(|| format!("cannot read token file {}", path.display()))?;
    if meta.len() > 64 * 1024 {
        bail!(
            "token file {} is {} bytes, far larger than any token",
            path.display(),
            meta.len()
        );
    }
    let bytes =
        fs::read(path).with_context(|| format!("cannot read token file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    {
        use base64::Engine;
        if let Ok(decoded) = base64::engine::general_purpose::URL_SAFE.decode(text) {
            return Ok(decoded);
        }
    }
    Ok(bytes)
}

fn append_extension(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Creates a directory (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (does it already exist?)", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a file atomically: a temporary sibling, fsync, rename.
pub fn write_replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = append_extension(path, "tmp");
    let _ = fs::remove_file(&tmp);
    // Delegations and revocations are no secret, but nobody else needs to read them where
    // they are made: owner-only, like everything else an anchor writes.
    write_new(&tmp, bytes, 0o600)?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Arguments of `anchor revoke-delegation`.
#[derive(Debug)]
pub struct RevokeDelegation<'a> {
    /// The anchor's secret key file.
    pub anchor_key: &'a Path,
    /// Where its passphrase comes from, if it is encrypted.
    pub passphrase: &'a PassphraseSource,
    /// The delegation to revoke (biscuit bytes, as `anchor delegate` wrote it).
    pub delegation: &'a Path,
    /// Where to write the signed revocation (a snapshot of the anchor's revocation head).
    pub out: &'a Path,
    /// The anchor's revocation state for the network (its last signed snapshot); default
    /// `revocations-<network>.update` beside the anchor key.
    pub state: Option<&'a Path>,
}

/// What `anchor revoke-delegation` wrote.
#[derive(Debug, serde::Serialize)]
pub struct RevokedDelegation {
    /// The network.
    pub network: String,
    /// The seednode whose delegation is revoked.
    pub seednode: String,
    /// The delegation's revocation id.
    pub revocation_id: String,
    /// The anchor's head version now.
    pub version: u64,
    /// Delegations the anchor has revoked and that have not expired.
    pub entries: u32,
    /// The file to publish (`seednode publish-revocation`).
    pub out: PathBuf,
    /// The anchor's state file (keep it with the anchor key).
    pub state: PathBuf,
}

/// Adds a delegation to the anchor's signed revocation set for its network and writes the
/// new head as a snapshot to `out` (0600). The anchor's previous snapshot, read from the state
/// file, carries the earlier revocations and the version, so versions only go up.
pub fn revoke_delegation(
    args: &RevokeDelegation<'_>,
    now: SystemTime,
) -> anyhow::Result<RevokedDelegation> {
    use cordon_membership::heads::{Entry, SignerLog, Update};
    let anchor = load_anchor_key(args.anchor_key, args.passphrase)?;
    let token = fs::read(args.delegation)
        .with_context(|| format!("reading delegation {}", args.delegation.display()))?;
    let (facts, id) = cordon_membership::verify::read_delegation(&token, &anchor.public())
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a delegation signed by this anchor ({e}); pass the file \
                 `seednode anchor delegate` wrote with this --anchor-key",
                args.delegation.display()
            )
        })?;
    let network: NetworkName = facts
        .network
        .parse()
        .with_context(|| format!("invalid network in delegation: {:?}", facts.network))?;
    let state = match args.state {
        Some(p) => p.to_owned(),
        None => args
            .anchor_key
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("revocations-{network}.update")),
    };
    let mut log = match fs::read(&state) {
        Ok(bytes) => {
            let previous = Update::from_bytes(&bytes, usize::MAX).with_context(|| {
                format!(
                    "the anchor's revocation state {} is invalid",
                    state.display()
                )
            })?;
            let version = previous.head.head().version;
            SignerLog::restore(
                network.clone(),
                anchor.public(),
                previous.entries.iter().cloned().map(|e| (e, version)),
                Some(previous.head.clone()),
            )
            .with_context(|| {
                format!(
                    "restoring the anchor's revocations from {}",
                    state.display()
                )
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            SignerLog::new(network.clone(), anchor.public())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
    };
    let now_secs = unix(now);
    let expires_at = unix(facts.expires_at);
    if expires_at <= now_secs {
        bail!("the delegation expired at {expires_at} (unix seconds); it needs no revocation");
    }
    log.add(
        [Entry {
            id: id.clone(),
            expires_at,
        }],
        now_secs,
    );
    // An anchor is offline: its head promises nothing sooner than a year.
    let head = log.publish(&anchor.libp2p_keypair(), now_secs, 365 * 86_400, 1)?;
    let update = log
        .update_since(0)
        .context("the anchor's revocation log has no head")?;
    let bytes = update.to_bytes();
    write_replace(&state, &bytes)?;
    write_replace(args.out, &bytes)?;
    let seednode = PublicKey::from_bytes(&facts.delegate)
        .map(|k| k.peer_id().to_string())
        .unwrap_or_default();
    Ok(RevokedDelegation {
        network: network.to_string(),
        seednode,
        revocation_id: id.to_string(),
        version: head.head().version,
        entries: head.head().count,
        out: args.out.to_owned(),
        state,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
