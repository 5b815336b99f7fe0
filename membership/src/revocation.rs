//! The revocation set: biscuit block signatures that are no longer honoured.
//!
//! Revoking a delegation's id refuses every token its seednode issued; revoking a membership
//! block's id refuses one node. The version strictly increases on every change, so caches
//! keyed by it never serve a verdict computed before a revocation.

use std::collections::HashSet;
use std::fmt;

/// A revocation id: the signature of one token block.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RevocationId(#[serde(with = "hex_bytes")] pub Vec<u8>);

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
        // HashSet<RevocationId> lookups need an owned key; ids are 64 bytes so this is cheap.
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
