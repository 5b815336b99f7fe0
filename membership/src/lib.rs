//! Cordon membership: trust anchors, delegation, membership tokens and their offline
//! verification.
//!
//! This crate owns the cryptographic heart of Cordon and the membership session machine built on
//! it ([`session`]): no sockets, no async runtime, no clock (every time-dependent call takes
//! `now`). The node's libp2p adapter drives it.
//!
//! Invariants:
//! - Keys are Ed25519 only (biscuit's P-256 path accepts malleated signatures, which would give a
//!   revoked token a fresh revocation id). Key files are 0600 and never printed; anchor key files
//!   are sealed with a passphrase by default ([`anchor_key`]).
//! - A membership token is a delegation (anchor-signed authority block) plus exactly one
//!   third-party block signed by the key the delegation names. Nothing else verifies.
//! - Verification runs cheapest check first and touches datalog only after size, signature,
//!   structure and revocation checks pass, so an attacker-appended heavy block never runs.
//! - A cached verdict is reused only for the same token bytes and revocation-set version, and the
//!   presenter and expiry checks run again on every use.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anchor_key;
mod fast;
pub mod heads;
pub mod issue;
pub mod keys;
pub mod ownership;
pub mod revocation;
pub mod session;
pub mod token;
pub mod trust;
pub mod verify;

pub use anchor_key::{AnchorKeyFile, EncryptedAnchorKey, KdfParams, Passphrase};
pub use issue::{DelegationRequest, IssueError, IssuedToken, Issuer, issue_delegation};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use libp2p_identity::PeerId;
pub use revocation::{REVOCATION_ID_LEN, RevocationId, RevocationSet};
pub use session::{Action, Proof, ProofKind, SessionConfig, Sessions};
pub use token::{DelegationFacts, TokenId};
pub use trust::{AccessList, AccessListError, NetworkTrust};
pub use verify::{DelegationVerdict, Refusal, RefusalCode, Verdict, Verifier, VerifierConfig};
