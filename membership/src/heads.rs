//! Signed, versioned revocation heads, their entry sets, deltas and snapshots (DESIGN.md
//! section 9).
//!
//! Per (network, signer) a [`SignerLog`] on the signer's side publishes [`SignedHead`]s: what
//! the signer asserts about its revocation set at one version (root over the entries, their
//! count, issue time, when the next head is due). An [`Update`] carries a head plus either the
//! entries added since an earlier version (a delta) or every live entry (a snapshot). A
//! receiver's [`NetworkRevocations`] applies updates from signers the caller has authorized and
//! keeps the union of their sets. Any peer can serve an update: the receiver checks the entries
//! against the signed head, so a relay can withhold an update but never forge or alter one.
//!
//! This module is pure: no I/O, no async, no clock. Time comes in as `now` (unix seconds) and
//! only the signer's [`SignerLog::publish`] uses it; a receiver judges expiry by the head's
//! `issued_at`, so every receiver of one head computes the same set.
//!
//! # Invariants
//! - A [`SignedHead`] exists only with a signature by `head.signer` over
//!   `"cordon-revocation-head/1\0" || cbor(head)` that verifies, `version >= 1` and
//!   `next_update > issued_at`. Its head bytes and envelope are canonical (re-encoding gives the
//!   same bytes), so [`SignedHead::hash`] names one head.
//! - A receiver never goes back: per signer, versions only increase and are never below the
//!   floor set by [`NetworkRevocations::raise_floor`]. Two different heads for one (signer,
//!   version) are equivocation, counted and refused.
//! - After every successful [`NetworkRevocations::apply`], a signer's entry set hashes to the
//!   root and count its head states; on any error nothing changes (except the equivocation
//!   counter, which is the point of that error).
//! - Entry sets hold each id once; entries never get deleted by an update, they only expire:
//!   an entry with `expires_at <= issued_at` of the head is not in that head's set.
//!
//! # The root
//! [`root_of`] splits a set into 256 buckets by the first id byte. A non-empty bucket's hash is
//! `SHA-256("cordon-revocation-bucket/1\0" || id || expires_at as 8 bytes big-endian || ...)`
//! over its entries sorted by (id, expiry); an empty bucket counts as 32 zero bytes. The root is
//! `SHA-256("cordon-revocation-root/1\0" || hash of bucket 0 || ... || hash of bucket 255)`.
//! Entry sets cache their bucket hashes, so a delta rehashes only the buckets it touches (about
//! `len / 256` entries each) plus 8 KiB for the root, and a snapshot could later be fetched and
//! checked bucket by bucket.
//!
//! # Wire and storage formats (CBOR)
//! - [`SignedHead::to_bytes`]: a map `{head: bytes, signature: bytes}` where `head` is the CBOR
//!   map of [`Head`] exactly as signed (`signer`, `prev` and `root` as byte strings), at most
//!   [`MAX_HEAD_BYTES`] in all.
//! - [`Update::to_bytes`]: a map `{head: bytes (a signed head), since: uint, entries: [[bytes
//!   16, uint], ...]}`, about 23 bytes per entry.
//! - [`NetworkRevocations::to_bytes`]: every signer's signed head, entries with the version they
//!   arrived in, floors and equivocation counts. [`NetworkRevocations::from_bytes`] re-verifies
//!   every signature and root, so a tampered file is refused rather than trusted.
//!
//! # Design choices
//! - Repeat versus equivocation compares the signed head bytes, not the signature: two
//!   signatures over one head are the same assertion, not equivocation.
//! - A receiver remembers the version each entry arrived in, so it can serve deltas to peers
//!   that are behind ([`NetworkRevocations::update_for`]) instead of always sending a snapshot.
//! - Deltas never carry deletions; expiry is the only way out of a set, which keeps the set
//!   bounded by (revocation rate x longest token lifetime).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;

use cordon_protocol::{Limits, NetworkName, ProtocolError, Validate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;
use crate::revocation::RevocationId;

/// Length of a revocation entry id in bytes.
pub const ENTRY_ID_LEN: usize = 16;

/// Largest accepted encoding of a [`SignedHead`], in bytes. A real one is about 250 bytes (the
/// network name is at most 63).
pub const MAX_HEAD_BYTES: usize = 1024;

/// Prefix of the message a head signature covers.
const HEAD_DOMAIN: &[u8] = b"cordon-revocation-head/1\0";
/// Prefix of every bucket hash.
const BUCKET_DOMAIN: &[u8] = b"cordon-revocation-bucket/1\0";
/// Prefix of the root hash.
const ROOT_DOMAIN: &[u8] = b"cordon-revocation-root/1\0";
/// Buckets of the root, one per value of the first id byte.
const BUCKETS: usize = 256;
/// Largest CBOR encoding of one update entry with a 16-byte id: array header, byte-string
/// header, 16 bytes, and a u64 of up to 9 bytes.
const MAX_ENTRY_WIRE_BYTES: usize = 1 + 1 + ENTRY_ID_LEN + 9;
/// CBOR framing of an update besides its head and entries: map header, field names, `since`,
/// the entries' array header.
const UPDATE_FRAMING_BYTES: usize = 64;
/// Version of the persisted [`NetworkRevocations`] format.
const STATE_FORMAT: u32 = 1;

/// An entry id in its fixed-size internal form.
type Id = [u8; ENTRY_ID_LEN];

/// Why a head, update or persisted state was refused. Messages never contain a peer's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The input is larger than its cap.
    #[error("{what} exceeds the {max}-byte cap")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// The cap in bytes.
        max: usize,
    },
    /// The input is not the CBOR shape expected.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's (sanitized) reason.
        reason: ProtocolError,
    },
    /// The input decodes, but re-encoding it gives other bytes: a second encoding of one value.
    #[error("{what} is not in canonical CBOR form")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
    },
    /// A head with version 0 (versions start at 1).
    #[error("revocation head has version 0; versions start at 1")]
    InvalidVersion,
    /// The signer's version counter cannot go higher.
    #[error("revocation head version cannot exceed {max}")]
    VersionExhausted {
        /// The highest version.
        max: u64,
    },
    /// `next_update` is not after `issued_at` (or the refresh interval overflows).
    #[error(
        "revocation head promises its next update at {next_update}, which is not after its issue time {issued_at}; use a refresh interval of at least 1 s"
    )]
    InvalidSchedule {
        /// The head's issue time.
        issued_at: u64,
        /// The promised next update.
        next_update: u64,
    },
    /// The signature does not verify against the head's signer.
    #[error("revocation head signature does not verify against its signer {signer}")]
    BadSignature {
        /// The signer the head names.
        signer: PublicKey,
    },
    /// [`SignedHead::sign`] was given a key other than the head's signer.
    #[error("the signing key is not the head's signer {signer}; sign with that key")]
    KeyMismatch {
        /// The signer the head names.
        signer: PublicKey,
    },
    /// The key could not sign.
    #[error("cannot sign the revocation head: {detail}")]
    Signing {
        /// The signer's error.
        detail: String,
    },
    /// The head is for another network.
    #[error("revocation head is for network {got}, expected {expected}")]
    WrongNetwork {
        /// The network we hold revocations for.
        expected: NetworkName,
        /// The network the head names.
        got: NetworkName,
    },
    /// The head is by another signer than the log it is restored into.
    #[error("revocation head is signed by {got}, expected {expected}")]
    WrongSigner {
        /// The log's signer.
        expected: PublicKey,
        /// The head's signer.
        got: PublicKey,
    },
    /// The head is older than the floor a token of this signer carried.
    #[error(
        "revocation head version {version} is below the floor {floor} (a token from this signer was issued at that version); refused as a possible rollback"
    )]
    BelowFloor {
        /// The head's version.
        version: u64,
        /// The lowest acceptable version.
        floor: u64,
    },
    /// The head is older than the one held.
    #[error("revocation head version {got} is older than the version {have} already held; ignored")]
    Stale {
        /// The version held.
        have: u64,
        /// The version offered.
        got: u64,
    },
    /// The very head already held, again: harmless.
    #[error("revocation head version {version} is already held; ignored")]
    Repeat {
        /// The version held and offered.
        version: u64,
    },
    /// Two different heads signed for one (signer, version).
    #[error(
        "signer {signer} signed two different revocation heads for version {version} (equivocation); the one held first is kept"
    )]
    Equivocation {
        /// The equivocating signer.
        signer: PublicKey,
        /// The version signed twice.
        version: u64,
    },
    /// A delta that does not start at the version held.
    #[error(
        "revocation delta starts at version {since} but version {have} is held; ask for a snapshot"
    )]
    Gap {
        /// The version held (0: none).
        have: u64,
        /// The version the delta starts from.
        since: u64,
    },
    /// An update whose `since` is after its own head.
    #[error("revocation update starts at version {since}, after its head's version {version}")]
    InvalidSince {
        /// The update's `since`.
        since: u64,
        /// The head's version.
        version: u64,
    },
    /// The entries do not hash to the head's root and count.
    #[error(
        "the entries for revocation head version {version} do not match its signed root and count; refused"
    )]
    RootMismatch {
        /// The head's version.
        version: u64,
    },
    /// More entries than allowed.
    #[error("{count} revocation entries for one signer; at most {max} allowed")]
    TooManyEntries {
        /// Entries in the update, or in the set it would produce.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An entry id of the wrong length.
    #[error("a revocation entry id is {len} bytes; exactly {ENTRY_ID_LEN} required")]
    EntryIdLength {
        /// The id's length.
        len: usize,
    },
    /// One id twice in one update or restored log.
    #[error("a revocation entry id appears twice in one update")]
    DuplicateEntry,
    /// Persisted state in a format this version does not read.
    #[error(
        "persisted revocation state has format {format}; this version reads format {STATE_FORMAT}; delete it to resync from peers"
    )]
    UnsupportedFormat {
        /// The format found.
        format: u32,
    },
    /// Persisted state that is inconsistent in a way no signature check catches.
    #[error("persisted revocation state is corrupt: {detail}; delete it to resync from peers")]
    Corrupt {
        /// What is wrong.
        detail: &'static str,
    },
}

/// One revoked identity: a 16-byte id ([`ENTRY_ID_LEN`]) and the revoked token's expiry (unix
/// seconds). Once that expiry passes the entry leaves every set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    /// The revocation id; [`ENTRY_ID_LEN`] bytes in every accepted update.
    pub id: RevocationId,
    /// Expiry of the revoked token, unix seconds.
    pub expires_at: u64,
}

/// What a signer asserts about its revocation set for one network at one version.
///
/// In CBOR, `signer`, `prev` and `root` are byte strings; in human-readable formats (JSON)
/// they are `ed25519/<hex>` and hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The network the set is for.
    pub network: NetworkName,
    /// The key that signs this head.
    #[serde(with = "signer_key")]
    pub signer: PublicKey,
    /// At least 1, strictly increasing per (network, signer).
    pub version: u64,
    /// [`SignedHead::hash`] of this signer's previous head; all zero for version 1 or unknown.
    #[serde(with = "bytes32")]
    pub prev: [u8; 32],
    /// [`root_of`] the entries, after dropping those with `expires_at <= issued_at`.
    #[serde(with = "bytes32")]
    pub root: [u8; 32],
    /// Number of entries under `root`.
    pub count: u32,
    /// When the head was signed, unix seconds.
    pub issued_at: u64,
    /// When the signer promises a newer head at the latest (after `issued_at`).
    pub next_update: u64,
}

impl Head {
    /// The checks every head must pass, signed or not.
    fn check(&self) -> Result<(), HeadError> {
        if self.version == 0 {
            return Err(HeadError::InvalidVersion);
        }
        if self.next_update <= self.issued_at {
            return Err(HeadError::InvalidSchedule {
                issued_at: self.issued_at,
                next_update: self.next_update,
            });
        }
        Ok(())
    }
}

/// A [`Head`] with its signer's Ed25519 signature over `"cordon-revocation-head/1\0" ||
/// cbor(head)`. Only [`SignedHead::sign`] and [`SignedHead::from_bytes`] make one, so holding
/// one means the signature verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHead {
    head: Head,
    /// `cbor(head)`, exactly as signed.
    head_bytes: Vec<u8>,
    signature: Vec<u8>,
    /// [`SignedHead::to_bytes`], kept because it is hashed and sent often.
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHead")
            .field("head", &self.head)
            .field("hash", &hex::encode(self.hash()))
            .finish_non_exhaustive()
    }
}

/// The envelope of a signed head.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignedHead {
    #[serde(with = "byte_string")]
    head: Vec<u8>,
    #[serde(with = "byte_string")]
    signature: Vec<u8>,
}

impl SignedHead {
    /// Signs `head` with `key`, which must be the head's signer. Refuses heads that
    /// [`SignedHead::from_bytes`] would refuse.
    pub fn sign(head: Head, key: &libp2p_identity::Keypair) -> Result<Self, HeadError> {
        head.check()?;
        let matches = key
            .public()
            .try_into_ed25519()
            .is_ok_and(|public| public.to_bytes() == *head.signer.as_bytes());
        if !matches {
            return Err(HeadError::KeyMismatch {
                signer: head.signer,
            });
        }
        let head_bytes = to_cbor(&head);
        let signature =
            key.sign(&signing_message(&head_bytes))
                .map_err(|e| HeadError::Signing {
                    detail: e.to_string(),
                })?;
        let signed = Self::assemble(head, head_bytes, signature);
        if signed.bytes.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge {
                what: "revocation head",
                max: MAX_HEAD_BYTES,
            });
        }
        Ok(signed)
    }

    /// The signed head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The CBOR envelope `{head: cbor(head), signature}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// Parses and verifies a signed head: at most [`MAX_HEAD_BYTES`], exactly one canonical
    /// CBOR item with no unknown fields, `version >= 1`, `next_update > issued_at`, and a
    /// signature that verifies against `head.signer`. Whether that signer may sign for the
    /// network is the caller's question.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadError> {
        const WHAT: &str = "revocation head";
        let wire: WireSignedHead = parse(bytes, MAX_HEAD_BYTES, WHAT)?;
        let head: Head = parse(&wire.head, MAX_HEAD_BYTES, WHAT)?;
        head.check()?;
        let signed = Self::assemble(head, wire.head, wire.signature);
        if to_cbor(&signed.head) != signed.head_bytes || signed.bytes != bytes {
            return Err(HeadError::NonCanonical { what: WHAT });
        }
        signed.verify()?;
        Ok(signed)
    }

    /// SHA-256 of [`SignedHead::to_bytes`]; the next head's `prev`.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    fn assemble(head: Head, head_bytes: Vec<u8>, signature: Vec<u8>) -> Self {
        let wire = WireSignedHead {
            head: head_bytes,
            signature,
        };
        let bytes = to_cbor(&wire);
        Self {
            head,
            head_bytes: wire.head,
            signature: wire.signature,
            bytes,
        }
    }

    fn verify(&self) -> Result<(), HeadError> {
        let bad = || HeadError::BadSignature {
            signer: self.head.signer,
        };
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(self.head.signer.as_bytes())
            .map_err(|_| bad())?;
        if key.verify(&signing_message(&self.head_bytes), &self.signature) {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

fn signing_message(head_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(HEAD_DOMAIN.len() + head_bytes.len());
    message.extend_from_slice(HEAD_DOMAIN);
    message.extend_from_slice(head_bytes);
    message
}

/// The root over a set of entries; see the module documentation for the construction.
///
/// The set is keyed by (id, expiry): a pair given twice counts once. Accepted sets hold each id
/// once with [`ENTRY_ID_LEN`] bytes; ids of other lengths are hashed as given (an empty id
/// falls in bucket 0), but no update carrying them is ever accepted.
pub fn root_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> [u8; 32] {
    let mut buckets: Vec<BTreeSet<(&[u8], u64)>> = vec![BTreeSet::new(); BUCKETS];
    for entry in entries {
        let bucket = usize::from(entry.id.0.first().copied().unwrap_or(0));
        buckets[bucket].insert((entry.id.0.as_slice(), entry.expires_at));
    }
    let hashes: Vec<[u8; 32]> = buckets
        .iter()
        .map(|bucket| bucket_hash(bucket.iter().copied()))
        .collect();
    root_over(hashes.iter())
}

/// Hash of one bucket's entries, given sorted; 32 zero bytes when there are none.
fn bucket_hash<'a>(entries: impl Iterator<Item = (&'a [u8], u64)>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(BUCKET_DOMAIN);
    let mut any = false;
    for (id, expires_at) in entries {
        any = true;
        hasher.update(id);
        hasher.update(expires_at.to_be_bytes());
    }
    if any {
        hasher.finalize().into()
    } else {
        [0; 32]
    }
}

/// The root over the 256 bucket hashes, in bucket order.
fn root_over<'a>(bucket_hashes: impl Iterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(ROOT_DOMAIN);
    for hash in bucket_hashes {
        hasher.update(hash);
    }
    hasher.finalize().into()
}

/// A delta (`since > 0`: the entries added after version `since`) or a snapshot (`since == 0`:
/// every live entry), with the head it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The head the receiver holds after applying this.
    pub head: SignedHead,
    /// The version the delta starts from; 0 for a snapshot.
    pub since: u64,
    /// The entries, in any order.
    pub entries: Vec<Entry>,
}

/// An update on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireUpdate {
    #[serde(with = "byte_string")]
    head: Vec<u8>,
    since: u64,
    entries: Vec<WireEntry>,
}

/// An entry on the wire: `[id, expires_at]`.
#[derive(Serialize, Deserialize)]
struct WireEntry(#[serde(with = "byte_string")] Vec<u8>, u64);

impl Update {
    /// The CBOR encoding `{head, since, entries: [[id, expires_at], ...]}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_cbor(&WireUpdate {
            head: self.head.to_bytes(),
            since: self.since,
            entries: self
                .entries
                .iter()
                .map(|e| WireEntry(e.id.0.clone(), e.expires_at))
                .collect(),
        })
    }

    /// Parses an update strictly: a size cap derived from `max_entries`, exactly one CBOR item
    /// with no unknown fields, at most `max_entries` entries, every id exactly
    /// [`ENTRY_ID_LEN`] bytes and none twice, `since` not after the head's version, and the head
    /// verified as by [`SignedHead::from_bytes`]. Whether the entries match the head is checked
    /// when the update is applied, against the state it applies to.
    pub fn from_bytes(bytes: &[u8], max_entries: usize) -> Result<Self, HeadError> {
        let cap = max_entries
            .saturating_mul(MAX_ENTRY_WIRE_BYTES)
            .saturating_add(MAX_HEAD_BYTES + UPDATE_FRAMING_BYTES);
        let wire: WireUpdate = parse(bytes, cap, "revocation update")?;
        if wire.entries.len() > max_entries {
            return Err(HeadError::TooManyEntries {
                count: wire.entries.len(),
                max: max_entries,
            });
        }
        if let Some(bad) = wire.entries.iter().find(|e| e.0.len() != ENTRY_ID_LEN) {
            return Err(HeadError::EntryIdLength { len: bad.0.len() });
        }
        let head = SignedHead::from_bytes(&wire.head)?;
        let update = Self {
            head,
            since: wire.since,
            entries: wire
                .entries
                .into_iter()
                .map(|WireEntry(id, expires_at)| Entry {
                    id: RevocationId(id),
                    expires_at,
                })
                .collect(),
        };
        update.checked_entries()?;
        Ok(update)
    }

    /// The entries as internal ids, after the checks every update must pass whether it came
    /// from the wire or was built in process.
    fn checked_entries(&self) -> Result<Vec<(Id, u64)>, HeadError> {
        let version = self.head.head().version;
        if self.since > version {
            return Err(HeadError::InvalidSince {
                since: self.since,
                version,
            });
        }
        unique_ids(self.entries.iter().map(|e| (&e.id, e.expires_at)))
    }
}

/// Converts ids to their internal form, refusing wrong lengths and repeats.
fn unique_ids<'a>(
    entries: impl Iterator<Item = (&'a RevocationId, u64)>,
) -> Result<Vec<(Id, u64)>, HeadError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (id, expires_at) in entries {
        let id = id_of(id)?;
        if !seen.insert(id) {
            return Err(HeadError::DuplicateEntry);
        }
        out.push((id, expires_at));
    }
    Ok(out)
}

fn id_of(id: &RevocationId) -> Result<Id, HeadError> {
    Id::try_from(id.0.as_slice()).map_err(|_| HeadError::EntryIdLength { len: id.0.len() })
}

fn entry_of(id: &Id, expires_at: u64) -> Entry {
    Entry {
        id: RevocationId(id.to_vec()),
        expires_at,
    }
}

/// One entry of an [`EntrySet`]: its expiry and a version tag (on the signer, the version that
/// added it; on a receiver, the version of the update it arrived in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    expires_at: u64,
    tag: u64,
}

/// One of the 256 buckets of an [`EntrySet`], with its hash kept current.
#[derive(Debug, Clone, Default)]
struct Bucket {
    entries: BTreeMap<Id, Slot>,
    /// [`bucket_hash`] of `entries`; all zero when empty.
    hash: [u8; 32],
}

impl Bucket {
    fn rehash(&mut self) {
        self.hash = bucket_hash(
            self.entries
                .iter()
                .map(|(id, slot)| (id.as_slice(), slot.expires_at)),
        );
    }
}

/// A set of entries with cached bucket hashes and indexes by expiry and by tag.
///
/// Changes go through a [`Plan`] computed without touching the set (so a refused update leaves
/// it unchanged) and then committed; a plan copies and rehashes only the buckets it touches.
#[derive(Clone)]
struct EntrySet {
    buckets: Vec<Bucket>,
    by_expiry: BTreeSet<(u64, Id)>,
    by_tag: BTreeSet<(u64, Id)>,
    len: usize,
    root: [u8; 32],
}

impl fmt::Debug for EntrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntrySet")
            .field("len", &self.len)
            .field("root", &hex::encode(self.root))
            .finish_non_exhaustive()
    }
}

/// New contents for some buckets of an [`EntrySet`], and the root and size they give.
struct Plan {
    buckets: Vec<(usize, Bucket)>,
    root: [u8; 32],
    len: usize,
}

/// Ids that left or joined a set in one commit.
struct Diff {
    removed: Vec<Id>,
    added: Vec<Id>,
}

impl EntrySet {
    fn new() -> Self {
        let buckets = vec![Bucket::default(); BUCKETS];
        let root = root_over(buckets.iter().map(|b| &b.hash));
        Self {
            buckets,
            by_expiry: BTreeSet::new(),
            by_tag: BTreeSet::new(),
            len: 0,
            root,
        }
    }

    fn bucket_of(id: &Id) -> usize {
        usize::from(id[0])
    }

    fn contains(&self, id: &Id) -> bool {
        self.buckets[Self::bucket_of(id)].entries.contains_key(id)
    }

    fn iter(&self) -> impl Iterator<Item = (&Id, &Slot)> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Ids with `expires_at <= at`.
    fn expired(&self, at: u64) -> Vec<Id> {
        self.by_expiry
            .range(..=(at, [u8::MAX; ENTRY_ID_LEN]))
            .map(|(_, id)| *id)
            .collect()
    }

    /// Entries tagged with a version after `version`.
    fn tagged_after(&self, version: u64) -> impl Iterator<Item = Entry> + '_ {
        self.by_tag
            .range((
                Bound::Excluded((version, [u8::MAX; ENTRY_ID_LEN])),
                Bound::Unbounded,
            ))
            .filter_map(|(_, id)| {
                let slot = self.buckets[Self::bucket_of(id)].entries.get(id)?;
                Some(entry_of(id, slot.expires_at))
            })
    }

    /// Removes `removals`, then adds each of `additions` whose id is not present.
    fn plan_delta(&self, removals: &[Id], additions: impl IntoIterator<Item = (Id, Slot)>) -> Plan {
        let mut touched: BTreeMap<usize, Bucket> = BTreeMap::new();
        for id in removals {
            let index = Self::bucket_of(id);
            touched
                .entry(index)
                .or_insert_with(|| self.buckets[index].clone())
                .entries
                .remove(id);
        }
        for (id, slot) in additions {
            let index = Self::bucket_of(&id);
            touched
                .entry(index)
                .or_insert_with(|| self.buckets[index].clone())
                .entries
                .entry(id)
                .or_insert(slot);
        }
        self.finish(touched.into_iter().collect())
    }

    /// Replaces the whole set with `entries` (ids already unique).
    fn plan_replace(&self, entries: impl IntoIterator<Item = (Id, Slot)>) -> Plan {
        let mut fresh = vec![Bucket::default(); BUCKETS];
        for (id, slot) in entries {
            fresh[Self::bucket_of(&id)].entries.insert(id, slot);
        }
        self.finish(fresh.into_iter().enumerate().collect())
    }

    fn finish(&self, mut touched: Vec<(usize, Bucket)>) -> Plan {
        let mut len = self.len;
        for (index, bucket) in &mut touched {
            bucket.rehash();
            len = len - self.buckets[*index].entries.len() + bucket.entries.len();
        }
        let mut hashes: Vec<&[u8; 32]> = self.buckets.iter().map(|b| &b.hash).collect();
        for (index, bucket) in &touched {
            hashes[*index] = &bucket.hash;
        }
        let root = root_over(hashes.into_iter());
        Plan {
            buckets: touched,
            root,
            len,
        }
    }

    fn commit(&mut self, plan: Plan) -> Diff {
        let mut diff = Diff {
            removed: Vec::new(),
            added: Vec::new(),
        };
        // A plan over every bucket (a snapshot) rebuilds the indexes in bulk, which is several
        // times faster than thousands of single inserts.
        let rebuild = plan.buckets.len() == BUCKETS;
        for (index, new) in plan.buckets {
            let old = std::mem::replace(&mut self.buckets[index], new);
            let new = &self.buckets[index].entries;
            for (id, slot) in &old.entries {
                match new.get(id) {
                    Some(now) if now == slot => continue,
                    Some(_) => {}
                    None => diff.removed.push(*id),
                }
                if !rebuild {
                    self.by_expiry.remove(&(slot.expires_at, *id));
                    self.by_tag.remove(&(slot.tag, *id));
                }
            }
            for (id, slot) in new {
                match old.entries.get(id) {
                    Some(before) if before == slot => continue,
                    Some(_) => {}
                    None => diff.added.push(*id),
                }
                if !rebuild {
                    self.by_expiry.insert((slot.expires_at, *id));
                    self.by_tag.insert((slot.tag, *id));
                }
            }
        }
        if rebuild {
            self.by_expiry = self.iter().map(|(id, s)| (s.expires_at, *id)).collect();
            self.by_tag = self.iter().map(|(id, s)| (s.tag, *id)).collect();
        }
        self.len = plan.len;
        self.root = plan.root;
        diff
    }
}

/// The signer's side (a seednode, or the anchor offline): every live entry with the version
/// that added it, the entries waiting for the next head, and the last signed head.
#[derive(Debug, Clone)]
pub struct SignerLog {
    network: NetworkName,
    signer: PublicKey,
    /// Exactly the entries of the last head (tag: the version that added each).
    published: EntrySet,
    /// Added since the last head; they join at the next [`SignerLog::publish`].
    pending: BTreeMap<Id, u64>,
    last: Option<SignedHead>,
}

impl SignerLog {
    /// An empty log that has never published.
    pub fn new(network: NetworkName, signer: PublicKey) -> Self {
        Self {
            network,
            signer,
            published: EntrySet::new(),
            pending: BTreeMap::new(),
            last: None,
        }
    }

    /// Restores a log from entries with the version that added each, and the last signed head
    /// (None if never published).
    ///
    /// Entries tagged at or below the head's version must be exactly the head's set (those
    /// expired at its `issued_at` are skipped, so a store may keep them), or this is
    /// [`HeadError::RootMismatch`]; later ones (all of them without a head) wait for the next
    /// publish. Refuses a head for another network or signer, bad ids and repeated ids.
    pub fn restore(
        network: NetworkName,
        signer: PublicKey,
        entries: impl IntoIterator<Item = (Entry, u64)>,
        last: Option<SignedHead>,
    ) -> Result<Self, HeadError> {
        let (version, issued_at) = match &last {
            Some(signed) => {
                let head = signed.head();
                if head.network != network {
                    return Err(HeadError::WrongNetwork {
                        expected: network,
                        got: head.network.clone(),
                    });
                }
                if head.signer != signer {
                    return Err(HeadError::WrongSigner {
                        expected: signer,
                        got: head.signer,
                    });
                }
                (head.version, head.issued_at)
            }
            None => (0, 0),
        };
        let mut seen = HashSet::new();
        let mut published = Vec::new();
        let mut pending = BTreeMap::new();
        for (entry, tag) in entries {
            let id = id_of(&entry.id)?;
            if !seen.insert(id) {
                return Err(HeadError::DuplicateEntry);
            }
            if last.is_some() && tag <= version {
                if entry.expires_at > issued_at {
                    let slot = Slot {
                        expires_at: entry.expires_at,
                        tag,
                    };
                    published.push((id, slot));
                }
            } else {
                pending.insert(id, entry.expires_at);
            }
        }
        let mut set = EntrySet::new();
        let plan = set.plan_replace(published);
        if let Some(signed) = &last {
            let head = signed.head();
            if plan.root != head.root || plan.len != head.count as usize {
                return Err(HeadError::RootMismatch {
                    version: head.version,
                });
            }
        }
        set.commit(plan);
        Ok(Self {
            network,
            signer,
            published: set,
            pending,
            last,
        })
    }

    /// Adds entries not yet present, to be published at the next version; returns how many
    /// were new. Entries already expired at `now` are ignored, and so are ids that are not
    /// [`ENTRY_ID_LEN`] bytes (no receiver would accept them), with a warning.
    pub fn add(&mut self, entries: impl IntoIterator<Item = Entry>, now: u64) -> usize {
        let mut added = 0;
        for entry in entries {
            let Ok(id) = id_of(&entry.id) else {
                tracing::warn!(
                    network = %self.network,
                    len = entry.id.0.len(),
                    "revocation entry id has the wrong length; not published"
                );
                continue;
            };
            if entry.expires_at <= now || self.published.contains(&id) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.pending.entry(id) {
                slot.insert(entry.expires_at);
                added += 1;
            }
        }
        added
    }

    /// Signs the next head: version `max(last version + 1, min_version)`, issued at `max(now,
    /// last issued_at)`, without the entries expired by then, `prev` the last head's hash,
    /// `next_update = issued_at + refresh` (`refresh` at least 1 s). On error nothing changes.
    pub fn publish(
        &mut self,
        key: &libp2p_identity::Keypair,
        now: u64,
        refresh: u64,
        min_version: u64,
    ) -> Result<SignedHead, HeadError> {
        let last = self.last.as_ref().map(SignedHead::head);
        let version = last
            .map_or(0, |h| h.version)
            .checked_add(1)
            .ok_or(HeadError::VersionExhausted { max: u64::MAX })?
            .max(min_version);
        let issued_at = now.max(last.map_or(0, |h| h.issued_at));
        let next_update = issued_at.saturating_add(refresh);
        let prev = self.last.as_ref().map_or([0; 32], SignedHead::hash);
        let expired = self.published.expired(issued_at);
        let additions = self
            .pending
            .iter()
            .filter(|&(_, &expires_at)| expires_at > issued_at)
            .map(|(id, &expires_at)| {
                let slot = Slot {
                    expires_at,
                    tag: version,
                };
                (*id, slot)
            });
        let plan = self.published.plan_delta(&expired, additions);
        let count = u32::try_from(plan.len).map_err(|_| HeadError::TooManyEntries {
            count: plan.len,
            max: u32::MAX as usize,
        })?;
        let head = Head {
            network: self.network.clone(),
            signer: self.signer,
            version,
            prev,
            root: plan.root,
            count,
            issued_at,
            next_update,
        };
        let signed = SignedHead::sign(head, key)?;
        self.published.commit(plan);
        self.pending.clear();
        self.last = Some(signed.clone());
        Ok(signed)
    }

    /// The last signed head.
    pub fn head(&self) -> Option<&SignedHead> {
        self.last.as_ref()
    }

    /// The last published version; 0 before the first publish.
    pub fn version(&self) -> u64 {
        self.last.as_ref().map_or(0, |h| h.head().version)
    }

    /// The update that brings a receiver holding version `have` to the current head: a delta
    /// with the entries added after `have` when `0 < have <= version`, else a snapshot
    /// (`since = 0`). None before the first publish.
    pub fn update_since(&self, have: u64) -> Option<Update> {
        let head = self.last.clone()?;
        let version = head.head().version;
        let (since, entries) = if have > 0 && have <= version {
            (have, self.published.tagged_after(have).collect())
        } else {
            let all = self
                .published
                .iter()
                .map(|(id, slot)| entry_of(id, slot.expires_at))
                .collect();
            (0, all)
        };
        Some(Update {
            head,
            since,
            entries,
        })
    }

    /// Entries held: those of the last head and those waiting for the next.
    pub fn len(&self) -> usize {
        self.published.len + self.pending.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry held with the version that added it; entries waiting for the next head carry
    /// `version() + 1` (the next publish may use a higher version, see `min_version`). Entries
    /// are returned by value: the log keeps ids in a compact fixed-size form.
    pub fn entries(&self) -> impl Iterator<Item = (Entry, u64)> + '_ {
        let next = self.version().saturating_add(1);
        let published = self
            .published
            .iter()
            .map(|(id, slot)| (entry_of(id, slot.expires_at), slot.tag));
        let pending = self
            .pending
            .iter()
            .map(move |(id, &expires_at)| (entry_of(id, expires_at), next));
        published.chain(pending)
    }
}

/// What a receiver knows about one signer's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadSummary {
    /// The signer.
    pub signer: PublicKey,
    /// The head's version.
    pub version: u64,
    /// The head's root.
    pub root: [u8; 32],
    /// The head's issue time.
    pub issued_at: u64,
}

/// The outcome of a successful [`NetworkRevocations::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version now held for the signer.
    pub version: u64,
    /// Ids new to the union of all signers (sorted): the ones to enforce now.
    pub added: Vec<RevocationId>,
    /// Whether the update was a snapshot.
    pub snapshot: bool,
}

/// A receiver's view of one signer.
#[derive(Debug, Clone)]
struct SignerState {
    head: SignedHead,
    /// Entries tagged with the version of the update they arrived in.
    set: EntrySet,
    /// The version of the last snapshot applied: every entry tagged above it arrived in a delta.
    base: u64,
}

/// A receiver's view of one network: the union of the entries of every signer it accepted.
///
/// [`NetworkRevocations::contains`] is a hash lookup; applying a delta costs in proportion to
/// the delta (plus the buckets it touches), not to the set.
#[derive(Debug, Clone)]
pub struct NetworkRevocations {
    network: NetworkName,
    signers: BTreeMap<PublicKey, SignerState>,
    /// Lowest acceptable version per signer; kept when a signer is removed.
    floors: BTreeMap<PublicKey, u64>,
    /// Equivocations seen per signer.
    equivocators: BTreeMap<PublicKey, u64>,
    equivocations: u64,
    /// How many signers hold each id.
    union: HashMap<RevocationId, u32>,
}

/// Persisted [`NetworkRevocations`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredState {
    format: u32,
    network: NetworkName,
    signers: Vec<StoredSigner>,
    floors: Vec<StoredCount>,
    equivocators: Vec<StoredCount>,
    equivocations: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSigner {
    #[serde(with = "byte_string")]
    head: Vec<u8>,
    base: u64,
    entries: Vec<StoredEntry>,
}

/// `[id, expires_at, tag]`.
#[derive(Serialize, Deserialize)]
struct StoredEntry(#[serde(with = "byte_string")] Vec<u8>, u64, u64);

/// `[signer, number]`.
#[derive(Serialize, Deserialize)]
struct StoredCount(#[serde(with = "signer_key")] PublicKey, u64);

impl NetworkRevocations {
    /// An empty view of `network`.
    pub fn new(network: NetworkName) -> Self {
        Self {
            network,
            signers: BTreeMap::new(),
            floors: BTreeMap::new(),
            equivocators: BTreeMap::new(),
            equivocations: 0,
            union: HashMap::new(),
        }
    }

    /// The network.
    pub fn network(&self) -> &NetworkName {
        &self.network
    }

    /// Applies an update from a signer the caller has already authorized for this network (the
    /// delegation or anchor check is not done here).
    ///
    /// Refuses, leaving the state unchanged: another network ([`HeadError::WrongNetwork`]); a
    /// version below the signer's floor ([`HeadError::BelowFloor`]) or below the one held
    /// ([`HeadError::Stale`]); the head already held ([`HeadError::Repeat`], harmless); another
    /// head for the version held ([`HeadError::Equivocation`], counted); a delta that does not
    /// start at the version held ([`HeadError::Gap`]: ask for a snapshot); bad or repeated ids;
    /// a resulting set over `max_entries_per_signer` ([`HeadError::TooManyEntries`]) or not
    /// matching the head's root and count ([`HeadError::RootMismatch`]).
    ///
    /// Entries with `expires_at <= head.issued_at` are dropped (from the update and from the
    /// set held). A snapshot replaces the signer's entries.
    pub fn apply(
        &mut self,
        update: &Update,
        max_entries_per_signer: usize,
    ) -> Result<Applied, HeadError> {
        let head = update.head.head();
        if head.network != self.network {
            return Err(HeadError::WrongNetwork {
                expected: self.network.clone(),
                got: head.network.clone(),
            });
        }
        let signer = head.signer;
        let got = head.version;
        let floor = self.floors.get(&signer).copied().unwrap_or(0);
        if got < floor {
            return Err(HeadError::BelowFloor {
                version: got,
                floor,
            });
        }
        let current = self.signers.get(&signer);
        let have = current.map_or(0, |s| s.head.head().version);
        if got < have {
            return Err(HeadError::Stale { have, got });
        }
        if let Some(state) = current.filter(|_| got == have) {
            if state.head.head_bytes == update.head.head_bytes {
                return Err(HeadError::Repeat { version: got });
            }
            self.equivocations += 1;
            *self.equivocators.entry(signer).or_default() += 1;
            tracing::warn!(
                network = %self.network,
                signer = %signer,
                version = got,
                "two different revocation heads signed for one version (equivocation)"
            );
            return Err(HeadError::Equivocation {
                signer,
                version: got,
            });
        }
        let entries = update.checked_entries()?;
        let snapshot = update.since == 0;
        if !snapshot && update.since != have {
            return Err(HeadError::Gap {
                have,
                since: update.since,
            });
        }
        let issued_at = head.issued_at;
        let live = entries
            .into_iter()
            .filter(|&(_, expires_at)| expires_at > issued_at)
            .map(|(id, expires_at)| {
                (
                    id,
                    Slot {
                        expires_at,
                        tag: got,
                    },
                )
            });
        let empty;
        let set = match current {
            Some(state) => &state.set,
            None => {
                empty = EntrySet::new();
                &empty
            }
        };
        let plan = if snapshot {
            set.plan_replace(live)
        } else {
            set.plan_delta(&set.expired(issued_at), live)
        };
        if plan.len > max_entries_per_signer {
            return Err(HeadError::TooManyEntries {
                count: plan.len,
                max: max_entries_per_signer,
            });
        }
        if plan.root != head.root || plan.len != head.count as usize {
            return Err(HeadError::RootMismatch { version: got });
        }

        let state = self.signers.entry(signer).or_insert_with(|| SignerState {
            head: update.head.clone(),
            set: EntrySet::new(),
            base: got,
        });
        let diff = state.set.commit(plan);
        state.head = update.head.clone();
        if snapshot {
            state.base = got;
        }
        for id in diff.removed {
            release(&mut self.union, &id);
        }
        let mut added = Vec::new();
        for id in diff.added {
            let holders = self.union.entry(RevocationId(id.to_vec())).or_insert(0);
            *holders += 1;
            if *holders == 1 {
                added.push(RevocationId(id.to_vec()));
            }
        }
        added.sort();
        Ok(Applied {
            version: got,
            added,
            snapshot,
        })
    }

    /// Raises the lowest acceptable version for `signer` (a token it issued carried this
    /// version as a floor); lower heads are refused from then on. A head held below the floor
    /// stays until a head at or above it arrives.
    pub fn raise_floor(&mut self, signer: PublicKey, version: u64) {
        let floor = self.floors.entry(signer).or_insert(0);
        *floor = (*floor).max(version);
    }

    /// Whether `id` is in any signer's set.
    pub fn contains(&self, id: &RevocationId) -> bool {
        self.union.contains_key(id)
    }

    /// The union of every signer's set, each id once, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &RevocationId> {
        self.union.keys()
    }

    /// The size of the union.
    pub fn len(&self) -> usize {
        self.union.len()
    }

    /// Whether the union is empty.
    pub fn is_empty(&self) -> bool {
        self.union.is_empty()
    }

    /// Every signer's head, by signer.
    pub fn summaries(&self) -> Vec<HeadSummary> {
        self.signers
            .iter()
            .map(|(signer, state)| {
                let head = state.head.head();
                HeadSummary {
                    signer: *signer,
                    version: head.version,
                    root: head.root,
                    issued_at: head.issued_at,
                }
            })
            .collect()
    }

    /// The head held for `signer`.
    pub fn head(&self, signer: &PublicKey) -> Option<&SignedHead> {
        self.signers.get(signer).map(|s| &s.head)
    }

    /// The version held for `signer`; 0 if unknown.
    pub fn version_of(&self, signer: &PublicKey) -> u64 {
        self.head(signer).map_or(0, |h| h.head().version)
    }

    /// The update a peer holding version `have` of `signer` needs from us; we can serve it
    /// because the peer checks it against the signed head.
    ///
    /// None if we hold nothing from `signer` or the peer is not behind (`have >=` our version).
    /// A delta when we know which entries arrived after `have` (every entry arrived with the
    /// version of its update, and `have` is not before our last snapshot); otherwise a snapshot.
    pub fn update_for(&self, signer: &PublicKey, have: u64) -> Option<Update> {
        let state = self.signers.get(signer)?;
        let version = state.head.head().version;
        if have >= version {
            return None;
        }
        let (since, entries) = if have > 0 && have >= state.base {
            (have, state.set.tagged_after(have).collect())
        } else {
            let all = state
                .set
                .iter()
                .map(|(id, slot)| entry_of(id, slot.expires_at))
                .collect();
            (0, all)
        };
        Some(Update {
            head: state.head.clone(),
            since,
            entries,
        })
    }

    /// The newest `issued_at` over all signers' heads.
    pub fn newest_issued_at(&self) -> Option<u64> {
        self.signers.values().map(|s| s.head.head().issued_at).max()
    }

    /// Equivocations seen, over all signers.
    pub fn equivocations(&self) -> u64 {
        self.equivocations
    }

    /// Equivocations seen from `signer`.
    pub fn equivocations_of(&self, signer: &PublicKey) -> u64 {
        self.equivocators.get(signer).copied().unwrap_or(0)
    }

    /// Drops a signer's head and entries (its delegation was revoked or it is no longer
    /// trusted); returns whether it was present. Its floor is raised to the version held, so
    /// if it is trusted again an older head of it is still refused.
    pub fn remove_signer(&mut self, signer: &PublicKey) -> bool {
        let Some(state) = self.signers.remove(signer) else {
            return false;
        };
        self.raise_floor(*signer, state.head.head().version);
        for (id, _) in state.set.iter() {
            release(&mut self.union, id);
        }
        true
    }

    /// Every signer's signed head and entries (with the version each arrived in), the floors
    /// and the equivocation counts, as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        let signers = self
            .signers
            .values()
            .map(|state| StoredSigner {
                head: state.head.to_bytes(),
                base: state.base,
                entries: state
                    .set
                    .iter()
                    .map(|(id, slot)| StoredEntry(id.to_vec(), slot.expires_at, slot.tag))
                    .collect(),
            })
            .collect();
        let counts =
            |map: &BTreeMap<PublicKey, u64>| map.iter().map(|(k, v)| StoredCount(*k, *v)).collect();
        to_cbor(&StoredState {
            format: STATE_FORMAT,
            network: self.network.clone(),
            signers,
            floors: counts(&self.floors),
            equivocators: counts(&self.equivocators),
            equivocations: self.equivocations,
        })
    }

    /// Restores what [`NetworkRevocations::to_bytes`] wrote, re-verifying every head's
    /// signature and every signer's root and count; refuses state for another network and
    /// signers over `max_entries_per_signer`.
    pub fn from_bytes(
        network: &NetworkName,
        bytes: &[u8],
        max_entries_per_signer: usize,
    ) -> Result<Self, HeadError> {
        // Our own file: no cap beyond what the entries limit implies.
        let stored: StoredState = parse(bytes, usize::MAX, "persisted revocation state")?;
        if stored.format != STATE_FORMAT {
            return Err(HeadError::UnsupportedFormat {
                format: stored.format,
            });
        }
        if stored.network != *network {
            return Err(HeadError::WrongNetwork {
                expected: network.clone(),
                got: stored.network,
            });
        }
        let mut out = Self::new(network.clone());
        for signer in stored.signers {
            let head = SignedHead::from_bytes(&signer.head)?;
            let (version, key) = (head.head().version, head.head().signer);
            if head.head().network != *network {
                return Err(HeadError::WrongNetwork {
                    expected: network.clone(),
                    got: head.head().network.clone(),
                });
            }
            if signer.entries.len() > max_entries_per_signer {
                return Err(HeadError::TooManyEntries {
                    count: signer.entries.len(),
                    max: max_entries_per_signer,
                });
            }
            let corrupt_version = HeadError::Corrupt {
                detail: "a version is after the head's version",
            };
            if signer.base > version {
                return Err(corrupt_version);
            }
            let mut seen = HashSet::with_capacity(signer.entries.len());
            let mut slots = Vec::with_capacity(signer.entries.len());
            for StoredEntry(id, expires_at, tag) in &signer.entries {
                let id = Id::try_from(id.as_slice())
                    .map_err(|_| HeadError::EntryIdLength { len: id.len() })?;
                if !seen.insert(id) {
                    return Err(HeadError::DuplicateEntry);
                }
                if *tag > version {
                    return Err(corrupt_version);
                }
                let slot = Slot {
                    expires_at: *expires_at,
                    tag: *tag,
                };
                slots.push((id, slot));
            }
            let mut set = EntrySet::new();
            let plan = set.plan_replace(slots);
            if plan.root != head.head().root || plan.len != head.head().count as usize {
                return Err(HeadError::RootMismatch { version });
            }
            set.commit(plan);
            if out.signers.contains_key(&key) {
                return Err(HeadError::Corrupt {
                    detail: "a signer appears twice",
                });
            }
            for (id, _) in set.iter() {
                *out.union.entry(RevocationId(id.to_vec())).or_insert(0) += 1;
            }
            out.signers.insert(
                key,
                SignerState {
                    head,
                    set,
                    base: signer.base,
                },
            );
        }
        for StoredCount(signer, floor) in stored.floors {
            out.raise_floor(signer, floor);
        }
        for StoredCount(signer, count) in stored.equivocators {
            *out.equivocators.entry(signer).or_default() += count;
        }
        out.equivocations = stored.equivocations;
        Ok(out)
    }
}

/// Drops one holder of `id` from the union.
fn release(union: &mut HashMap<RevocationId, u32>, id: &Id) {
    let key = RevocationId(id.to_vec());
    if let Some(holders) = union.get_mut(&key) {
        *holders -= 1;
        if *holders == 0 {
            union.remove(&key);
        }
    }
}

/// CBOR of one of this module's types.
fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    // Writing to a Vec cannot fail, these types' Serialize impls never fail, and there is no cap.
    #[allow(clippy::expect_used)]
    let bytes = cordon_protocol::encode(value, usize::MAX).expect("CBOR encoding into a Vec");
    bytes
}

/// Strict CBOR decoding: the protocol codec's size cap, single-item and trailing-byte checks,
/// with our own errors.
fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<T, HeadError> {
    cordon_protocol::decode::<Strict<T>>(bytes, max, &Limits::default())
        .map(|strict| strict.0)
        .map_err(|reason| match reason {
            ProtocolError::TooLarge { max } => HeadError::TooLarge { what, max },
            reason => HeadError::Malformed { what, reason },
        })
}

/// Lets [`cordon_protocol::decode`] parse this module's types, which validate themselves after
/// decoding with errors of their own.
#[derive(Deserialize)]
#[serde(transparent)]
struct Strict<T>(T);

impl<T> Validate for Strict<T> {
    fn validate(&self, _limits: &Limits) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// `Vec<u8>` as a CBOR byte string (serde's default would be an array of integers); only byte
/// strings are accepted.
mod byte_string {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    pub(super) struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }
    }
}

/// `[u8; 32]` as a 32-byte CBOR byte string, or hex in human-readable formats.
mod bytes32 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let bytes = if d.is_human_readable() {
            let text = String::deserialize(d)?;
            hex::decode(text).map_err(|_| D::Error::custom("expected 64 hex digits"))?
        } else {
            d.deserialize_byte_buf(super::byte_string::BytesVisitor)?
        };
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| D::Error::invalid_length(len, &"32 bytes"))
    }
}

/// A signer's [`PublicKey`] as a 32-byte CBOR byte string (the key's own serde form,
/// `ed25519/<hex>`, in human-readable formats).
mod signer_key {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::keys::PublicKey;

    pub(super) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            key.serialize(s)
        } else {
            super::bytes32::serialize(key.as_bytes(), s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        if d.is_human_readable() {
            PublicKey::deserialize(d)
        } else {
            let bytes = super::bytes32::deserialize(d)?;
            PublicKey::from_bytes(&bytes)
                .ok_or_else(|| D::Error::custom("signer is not a valid Ed25519 public key"))
        }
    }
}

#[cfg(test)]
mod tests;
