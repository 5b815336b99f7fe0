//! The access list: which networks this process accepts and which anchor keys root them.

use std::collections::{BTreeMap, HashMap};

use crate::keys::PublicKey;

/// One network this process accepts, with the anchors trusted for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkTrust {
    /// Network name (`mainnet`, `testnet`, an operator's name).
    pub name: String,
    /// Trusted anchor keys; two while an anchor is being rotated.
    pub anchors: Vec<PublicKey>,
    /// Refuse peers that also present tokens of other networks.
    pub strict: bool,
}

/// A set of accepted networks. Anchor key ids (derived from the keys) must be unambiguous.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    networks: BTreeMap<String, NetworkTrust>,
    by_key_id: HashMap<u32, PublicKey>,
}

/// The access list is inconsistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessListError {
    /// A network appears twice.
    #[error("network {0:?} is listed twice; merge its entries")]
    DuplicateNetwork(String),
    /// A network has no anchor.
    #[error("network {0:?} lists no trust anchor; add its anchor public key")]
    NoAnchor(String),
    /// Two different anchor keys derive the same key id.
    #[error("anchor keys {first} and {second} share key id {id}; generate a new anchor key")]
    KeyIdCollision {
        /// The shared id.
        id: u32,
        /// One key.
        first: PublicKey,
        /// The other key.
        second: PublicKey,
    },
}

impl AccessList {
    /// Builds an access list, checking names are unique and key ids unambiguous.
    pub fn new(networks: impl IntoIterator<Item = NetworkTrust>) -> Result<Self, AccessListError> {
        let mut list = Self::default();
        for net in networks {
            if net.anchors.is_empty() {
                return Err(AccessListError::NoAnchor(net.name));
            }
            for key in &net.anchors {
                let id = key.key_id();
                match list.by_key_id.get(&id) {
                    Some(existing) if existing != key => {
                        return Err(AccessListError::KeyIdCollision {
                            id,
                            first: *existing,
                            second: *key,
                        });
                    }
                    _ => {
                        list.by_key_id.insert(id, *key);
                    }
                }
            }
            if list.networks.contains_key(&net.name) {
                return Err(AccessListError::DuplicateNetwork(net.name));
            }
            list.networks.insert(net.name.clone(), net);
        }
        Ok(list)
    }

    /// The entry of a network, if accepted.
    pub fn network(&self, name: &str) -> Option<&NetworkTrust> {
        self.networks.get(name)
    }

    /// All accepted networks, by name.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkTrust> {
        self.networks.values()
    }

    /// The anchor key with this id, in any network.
    pub fn anchor_by_id(&self, id: u32) -> Option<&PublicKey> {
        self.by_key_id.get(&id)
    }
}
