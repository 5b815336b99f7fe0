//! Wire types of revocation distribution, [`REVOCATION_PROTOCOL`].
//!
//! Served only to peers that proved the network on the connection (the node gates the
//! protocol like rpc and checks the network per message). Heads and entries are opaque signed
//! bytes here: the membership crate decodes and verifies them, so this crate stays free of
//! cryptography.
//!
//! - `Sync` says which heads the requester holds for a network; the answer carries an update
//!   for every signer the requester is behind on, and the responder's own heads so the
//!   requester can push back what the responder lacks.
//! - `Push` hands a new head and its delta to a peer (the signer's first hop).
//! - `Announce` says which heads the sender holds now; a peer that is behind answers `ack` and
//!   pulls from the sender with `Sync`. Members forward a new head this way, so a duplicate
//!   costs a few dozen bytes rather than the update.
//!
//! [`REVOCATION_PROTOCOL`]: crate::REVOCATION_PROTOCOL

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Limits, NetworkName, ProtocolError, ReasonCode, Validate};

/// Length of a signer key on the wire (Ed25519).
pub const SIGNER_KEY_LEN: usize = 32;

/// Which version of one signer's head a peer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadVersion {
    /// The signer's Ed25519 public key (32 bytes).
    #[serde(with = "crate::byte_string")]
    pub signer: Vec<u8>,
    /// The head version held (0: none).
    pub version: u64,
}

/// A signed head with the entries it adds (delta) or holds (snapshot), and what authorizes
/// its signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUpdate {
    /// The encoded update (signed head and entries).
    #[serde(with = "crate::byte_string")]
    pub update: Vec<u8>,
    /// The signer's delegation for the network; absent when the signer is one of the
    /// network's trust anchors.
    #[serde(
        default,
        with = "optional_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub credential: Option<Vec<u8>>,
}

/// A request on the revocation protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RevocationRequest {
    /// "These are the heads I hold for `network`; send me what I lack."
    Sync {
        /// The network.
        network: NetworkName,
        /// One entry per signer held, at most `Limits::max_revocation_signers`.
        heads: Vec<HeadVersion>,
        /// The sender keeps this connection open (one of the few it keeps per bucket of its
        /// routing table): the receiver should not close it to stay within its connection
        /// budget. Absent (false) on the exchange every new proof starts.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep: bool,
    },
    /// "I now hold these heads for `network`; pull from me if you are behind."
    Announce {
        /// The network.
        network: NetworkName,
        /// At most `Limits::max_revocation_signers`.
        heads: Vec<HeadVersion>,
    },
    /// "Here is a newer head for `network`."
    Push {
        /// The network.
        network: NetworkName,
        /// The head and its entries.
        update: SignedUpdate,
    },
}

/// The answer on the revocation protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RevocationResponse {
    /// Updates the requester lacks, and the heads the responder holds.
    Updates {
        /// At most `Limits::max_revocation_signers`.
        updates: Vec<SignedUpdate>,
        /// At most `Limits::max_revocation_signers`.
        heads: Vec<HeadVersion>,
    },
    /// A push was received (applied, or already known).
    Ack,
    /// Refused (the requester did not prove the network here, or the update is invalid).
    Refused {
        /// Stable reason code.
        reason: ReasonCode,
    },
}

mod optional_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => serializer.serialize_bytes(b),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "crate::byte_string")] Vec<u8>);
        Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|w| w.0))
    }
}

fn check_heads(heads: &[HeadVersion], limits: &Limits) -> Result<(), ProtocolError> {
    if heads.len() > limits.max_revocation_signers {
        return Err(ProtocolError::TooMany {
            field: "revocation heads",
            count: heads.len(),
            max: limits.max_revocation_signers,
        });
    }
    let mut seen = BTreeSet::new();
    for head in heads {
        if head.signer.len() != SIGNER_KEY_LEN {
            return Err(ProtocolError::Malformed {
                detail: format!("a signer key is {SIGNER_KEY_LEN} bytes"),
            });
        }
        if !seen.insert(&head.signer) {
            return Err(ProtocolError::Malformed {
                detail: "a signer is listed twice".to_owned(),
            });
        }
    }
    Ok(())
}

fn check_update(update: &SignedUpdate, limits: &Limits) -> Result<(), ProtocolError> {
    if update.update.is_empty() {
        return Err(ProtocolError::Empty { field: "update" });
    }
    if let Some(credential) = &update.credential {
        crate::membership::check_token(None, credential, limits)?;
    }
    Ok(())
}

impl Validate for RevocationRequest {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            Self::Sync { heads, .. } | Self::Announce { heads, .. } => check_heads(heads, limits),
            Self::Push { update, .. } => check_update(update, limits),
        }
    }
}

impl Validate for RevocationResponse {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            Self::Updates { updates, heads } => {
                if updates.len() > limits.max_revocation_signers {
                    return Err(ProtocolError::TooMany {
                        field: "revocation updates",
                        count: updates.len(),
                        max: limits.max_revocation_signers,
                    });
                }
                for update in updates {
                    check_update(update, limits)?;
                }
                check_heads(heads, limits)
            }
            Self::Ack | Self::Refused { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    fn limits() -> Limits {
        Limits::default()
    }

    fn net() -> NetworkName {
        "mainnet".parse().unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let l = limits();
        let messages = [
            RevocationRequest::Sync {
                network: net(),
                heads: vec![HeadVersion {
                    signer: vec![7; 32],
                    version: 3,
                }],
                keep: false,
            },
            RevocationRequest::Sync {
                network: net(),
                heads: Vec::new(),
                keep: true,
            },
            RevocationRequest::Push {
                network: net(),
                update: SignedUpdate {
                    update: vec![1, 2, 3],
                    credential: Some(vec![9; 600]),
                },
            },
            RevocationRequest::Push {
                network: net(),
                update: SignedUpdate {
                    update: vec![1],
                    credential: None,
                },
            },
        ];
        for m in messages {
            let bytes = encode(&m, l.revocation_max_bytes).unwrap();
            assert_eq!(
                decode::<RevocationRequest>(&bytes, l.revocation_max_bytes, &l).unwrap(),
                m
            );
        }
        let response = RevocationResponse::Updates {
            updates: vec![],
            heads: vec![],
        };
        let bytes = encode(&response, l.revocation_max_bytes).unwrap();
        assert_eq!(
            decode::<RevocationResponse>(&bytes, l.revocation_max_bytes, &l).unwrap(),
            response
        );
    }

    #[test]
    fn a_sync_that_keeps_nothing_is_encoded_without_the_keep_flag() {
        let l = limits();
        let sync = |keep| RevocationRequest::Sync {
            network: net(),
            heads: Vec::new(),
            keep,
        };
        let plain = encode(&sync(false), l.revocation_max_bytes).unwrap();
        let kept = encode(&sync(true), l.revocation_max_bytes).unwrap();
        let has_flag = |bytes: &[u8]| bytes.windows(4).any(|w| w == b"keep");
        assert!(!has_flag(&plain), "the flag is left out when false");
        assert!(has_flag(&kept));
        assert!(plain.len() < kept.len());
    }

    #[test]
    fn short_signer_keys_duplicates_and_too_many_heads_are_refused() {
        let l = limits();
        let head = |signer: Vec<u8>| HeadVersion { signer, version: 1 };
        let bad = [
            vec![head(vec![1; 31])],
            vec![head(vec![1; 32]), head(vec![1; 32])],
            (0..=l.max_revocation_signers)
                .map(|i| head(vec![u8::try_from(i).unwrap(); 32]))
                .collect(),
        ];
        for heads in bad {
            let m = RevocationRequest::Sync {
                network: net(),
                heads,
                keep: false,
            };
            assert!(m.validate(&l).is_err(), "{m:?}");
        }
    }

    #[test]
    fn empty_update_and_oversized_credential_are_refused() {
        let l = limits();
        for update in [
            SignedUpdate {
                update: vec![],
                credential: None,
            },
            SignedUpdate {
                update: vec![1],
                credential: Some(vec![0; l.max_token_bytes + 1]),
            },
        ] {
            let m = RevocationRequest::Push {
                network: net(),
                update,
            };
            assert!(m.validate(&l).is_err());
        }
    }
}
