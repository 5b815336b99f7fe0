//! Revocation identity and the revocation set.
//!
//! A revocation id is a 16-byte hash of something the token's holder cannot re-mint
//! (DESIGN.md section 3):
//! - a delegation: its authority block's signature, made with the anchor key;
//! - a membership: the issuing seednode's key and the serial the seednode wrote into the
//!   membership block (`serial(bytes)`), which the seednode's external signature covers. The
//!   block-1 signature is NOT used: it is the holder's chain signature, so re-appending the
//!   same third-party block to the (unsealed) delegation gives a new one.
//! - a legacy membership (schema `cordon-membership/1`, issued before serials existed): its
//!   block-1 signature, the only identity such a token has. A holder can re-mint it, so
//!   revoking one is only certain once it expires; see README "Revocation".
//!
//! Revoking a delegation's id refuses every token its seednode issued; revoking a membership's
//! id refuses one token. The set's version strictly increases on every change, so caches
//! keyed by it never serve a verdict computed before a revocation.

use std::collections::HashSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::keys::PublicKey;

/// Length of a revocation id in bytes.
pub const REVOCATION_ID_LEN: usize = 16;

/// A revocation id: 16 bytes of a domain-separated SHA-256 of a token's unforgeable identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RevocationId(#[serde(with = "hex_bytes")] pub Vec<u8>);

impl RevocationId {
    fn derive(domain: &[u8], parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(domain);
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        Self(digest[..REVOCATION_ID_LEN].to_vec())
    }

    /// The id of a membership issued by `issuer` with `serial`.
    pub fn membership(issuer: &PublicKey, serial: &[u8]) -> Self {
        Self::derive(
            b"cordon/revocation/membership/1\0",
            &[issuer.as_bytes(), serial],
        )
    }

    /// The id of a delegation, from its authority block's signature.
    pub fn delegation(authority_signature: &[u8]) -> Self {
        Self::derive(b"cordon/revocation/delegation/1\0", &[authority_signature])
    }

    /// The id of a legacy (serial-less) membership, from its block-1 signature.
    pub fn legacy_membership(block_signature: &[u8]) -> Self {
        Self::derive(b"cordon/revocation/legacy/1\0", &[block_signature])
    }

    /// Whether this has the length of an id this version derives.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == REVOCATION_ID_LEN
    }
}

impl fmt::Display for RevocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for RevocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RevocationId({self})")
    }
}

impl std::str::FromStr for RevocationId {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s.trim()).map(Self)
    }
}

mod hex_bytes {
    pub(super) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// A versioned set of revoked ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    version: u64,
    ids: HashSet<RevocationId>,
}

impl RevocationSet {
    /// An empty set at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set as published by a seednode at `version`.
    pub fn from_parts(version: u64, ids: impl IntoIterator<Item = RevocationId>) -> Self {
        Self {
            version,
            ids: ids.into_iter().collect(),
        }
    }

    /// Adds an id; bumps the version if it was new. Returns whether it was new.
    pub fn insert(&mut self, id: RevocationId) -> bool {
        let new = self.ids.insert(id);
        if new {
            self.version += 1;
        }
        new
    }

    /// Replaces this set with a newer one; an older or equal version is ignored.
    /// Returns whether the set changed.
    pub fn update(&mut self, newer: RevocationSet) -> bool {
        if newer.version <= self.version {
            return false;
        }
        *self = newer;
        true
    }

    /// Whether an id is revoked.
    pub fn contains(&self, id: &[u8]) -> bool {
        // HashSet<RevocationId> lookups need an owned key; ids are 16 bytes so this is cheap.
        self.ids.contains(&RevocationId(id.to_vec()))
    }

    /// The set's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of revoked ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The revoked ids, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &RevocationId> {
        self.ids.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_bumps_version_only_when_new() {
        let mut set = RevocationSet::new();
        assert!(set.insert(RevocationId(vec![1; 64])));
        assert_eq!(set.version(), 1);
        assert!(!set.insert(RevocationId(vec![1; 64])));
        assert_eq!(set.version(), 1);
        assert!(set.contains(&[1; 64]));
        assert!(!set.contains(&[2; 64]));
    }

    #[test]
    fn update_ignores_older_versions() {
        let mut set = RevocationSet::from_parts(5, [RevocationId(vec![1])]);
        assert!(!set.update(RevocationSet::from_parts(4, [])));
        assert!(set.contains(&[1]));
        assert!(set.update(RevocationSet::from_parts(6, [RevocationId(vec![2])])));
        assert!(set.contains(&[2]) && !set.contains(&[1]));
    }
}
