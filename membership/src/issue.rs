//! Issuing delegations (anchor -> seednode) and memberships (seednode -> node).
//!
//! Issuing refuses to exceed what the delegation grants: roles outside `allowed_role`, a
//! lifetime over `max_lifetime`, or an expiry past the delegation's own.

use std::time::{Duration, SystemTime};

use biscuit_auth::Biscuit;
use libp2p_identity::PeerId;

use crate::keys::{PublicKey, SecretKey};
use crate::revocation::RevocationId;
use crate::token::{
    DelegationFacts, MAX_ROLES, MembershipBlock, SERIAL_LEN, TokenId, delegation_builder,
    membership_block, to_seconds, valid_role,
};
use crate::verify::{Refusal, Verifier};

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A role name is not 1-32 characters of `[a-z0-9_-]`.
    #[error("invalid role {0:?}: use 1 to 32 characters of a-z, 0-9, '_' or '-'")]
    InvalidRole(String),
    /// No roles, or too many.
    #[error("a token carries 1 to {MAX_ROLES} roles, {0} given")]
    RoleCount(usize),
    /// The network name is empty or too long.
    #[error("invalid network name {0:?}")]
    InvalidNetwork(String),
    /// The requested role is not in the delegation.
    #[error(
        "role {role:?} is not delegated to this seednode (allowed: {allowed:?}); ask the anchor for a delegation that includes it"
    )]
    RoleNotDelegated {
        /// The role asked for.
        role: String,
        /// The roles the delegation allows.
        allowed: Vec<String>,
    },
    /// The requested right is not in the delegation.
    #[error(
        "right {right:?} is not delegated to this seednode (allowed: {allowed:?}); ask the anchor for a delegation with --rights {right}"
    )]
    RightNotDelegated {
        /// The right asked for.
        right: String,
        /// The rights the delegation allows.
        allowed: Vec<String>,
    },
    /// The requested lifetime is longer than the delegation allows.
    #[error(
        "lifetime {requested_secs}s exceeds the delegated maximum of {max_secs}s; use a shorter --ttl"
    )]
    LifetimeExceeded {
        /// Asked for.
        requested_secs: u64,
        /// Allowed.
        max_secs: u64,
    },
    /// The membership would outlive the delegation.
    #[error(
        "the membership would expire after the delegation does ({delegation_expires_secs}s since epoch); use a shorter --ttl or renew the delegation"
    )]
    OutlivesDelegation {
        /// Delegation expiry.
        delegation_expires_secs: u64,
    },
    /// The expiry is not after the issue time.
    #[error("the expiry must be in the future")]
    ExpiryInPast,
    /// The delegation handed to the issuer does not verify.
    #[error("the delegation does not verify: {0}")]
    Delegation(#[from] Refusal),
    /// biscuit refused to build the token.
    #[error("building the token failed: {0}")]
    Build(#[from] biscuit_auth::error::Token),
    /// The operating system's random number generator failed.
    #[error("cannot draw a token serial from the operating system's random number generator")]
    Randomness,
}

/// What a delegation grants; input to [`issue_delegation`].
#[derive(Debug, Clone)]
pub struct DelegationRequest {
    /// The network.
    pub network: String,
    /// The seednode's public key.
    pub seednode: PublicKey,
    /// When the delegation ends.
    pub expires_at: SystemTime,
    /// Roles the seednode may grant.
    pub allowed_roles: Vec<String>,
    /// Explicit rights (e.g. `dht_put`) the seednode may grant; usually empty.
    pub allowed_rights: Vec<String>,
    /// The longest membership the seednode may issue.
    pub max_lifetime: Duration,
}

/// Signs a delegation with an anchor key. Returns the token bytes.
pub fn issue_delegation(
    anchor: &SecretKey,
    request: &DelegationRequest,
    now: SystemTime,
) -> Result<Vec<u8>, IssueError> {
    check_network(&request.network)?;
    check_roles(&request.allowed_roles)?;
    check_rights(&request.allowed_rights)?;
    if request.expires_at <= now {
        return Err(IssueError::ExpiryInPast);
    }
    let facts = DelegationFacts {
        network: request.network.clone(),
        delegate: *request.seednode.as_bytes(),
        expires_at: request.expires_at,
        max_lifetime: request.max_lifetime,
        allowed_roles: request.allowed_roles.clone(),
        allowed_rights: request.allowed_rights.clone(),
    };
    let token =
        delegation_builder(anchor.public().key_id(), &facts)?.build(&anchor.biscuit_keypair())?;
    Ok(token.to_vec()?)
}

/// A membership token as issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// Standard biscuit bytes.
    pub bytes: Vec<u8>,
    /// Digest of the bytes.
    pub token_id: TokenId,
    /// The membership's revocation id, from the issuer's key and the token's serial (revokes
    /// this token only; the holder cannot re-mint it).
    pub revocation_id: RevocationId,
    /// The member.
    pub subject: PeerId,
    /// Granted roles.
    pub roles: Vec<String>,
    /// Granted explicit rights.
    pub rights: Vec<String>,
    /// Issue time (whole seconds).
    pub issued_at: SystemTime,
    /// Expiry (whole seconds).
    pub expires_at: SystemTime,
}

/// A seednode's issuing capability for one network: its delegation and its key.
#[derive(Debug)]
pub struct Issuer {
    delegation: Biscuit,
    delegation_bytes: Vec<u8>,
    delegation_id: RevocationId,
    facts: DelegationFacts,
    key: SecretKey,
    revocation_floor: std::sync::atomic::AtomicU64,
}

impl Issuer {
    /// Checks the delegation verifies for this seednode key, then keeps it for issuing.
    pub fn new(
        delegation: &[u8],
        verifier: &Verifier,
        key: SecretKey,
        now: SystemTime,
    ) -> Result<Self, IssueError> {
        let verdict = verifier.verify_delegation(delegation, &key.peer_id(), now)?;
        let anchor = verifier
            .access()
            .network(&verdict.facts.network)
            .map(|n| n.anchors.clone())
            .unwrap_or_default();
        let provider = |id: Option<u32>| {
            anchor
                .iter()
                .find(|k| Some(k.key_id()) == id)
                .map(PublicKey::to_biscuit)
                .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
        };
        let parsed = Biscuit::from(delegation, provider)?;
        Ok(Self {
            delegation: parsed,
            delegation_bytes: delegation.to_vec(),
            delegation_id: verdict.revocation_id,
            facts: verdict.facts,
            key,
            revocation_floor: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The network this issuer serves.
    pub fn network(&self) -> &str {
        &self.facts.network
    }

    /// What the delegation grants.
    pub fn facts(&self) -> &DelegationFacts {
        &self.facts
    }

    /// Sets the revocation-head version written into tokens issued from now on: whoever holds
    /// one never accepts an older head from this seednode. Never lowered.
    pub fn set_revocation_floor(&self, version: u64) {
        self.revocation_floor
            .fetch_max(version, std::sync::atomic::Ordering::Relaxed);
    }

    /// The revocation-head version written into issued tokens.
    pub fn revocation_floor(&self) -> u64 {
        self.revocation_floor
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The delegation's revocation id: every token this issuer issues chains to it.
    pub fn delegation_id(&self) -> &RevocationId {
        &self.delegation_id
    }

    /// The delegation's bytes (presented to nodes so they can check this seednode).
    pub fn delegation_bytes(&self) -> &[u8] {
        &self.delegation_bytes
    }

    /// Issues a membership for `subject` with `roles`, valid for `lifetime` from `now`.
    pub fn issue(
        &self,
        subject: &PeerId,
        roles: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<IssuedToken, IssueError> {
        self.issue_with_rights(subject, roles, &[], lifetime, now)
    }

    /// Issues a membership with explicit rights on top of its roles; each right must be one
    /// the delegation allows.
    pub fn issue_with_rights(
        &self,
        subject: &PeerId,
        roles: &[String],
        rights: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<IssuedToken, IssueError> {
        check_roles(roles)?;
        check_rights(rights)?;
        for right in rights {
            if !self.facts.allowed_rights.contains(right) {
                return Err(IssueError::RightNotDelegated {
                    right: right.clone(),
                    allowed: self.facts.allowed_rights.clone(),
                });
            }
        }
        for role in roles {
            if !self.facts.allowed_roles.contains(role) {
                return Err(IssueError::RoleNotDelegated {
                    role: role.clone(),
                    allowed: self.facts.allowed_roles.clone(),
                });
            }
        }
        if lifetime > self.facts.max_lifetime {
            return Err(IssueError::LifetimeExceeded {
                requested_secs: lifetime.as_secs(),
                max_secs: self.facts.max_lifetime.as_secs(),
            });
        }
        if lifetime.is_zero() {
            return Err(IssueError::ExpiryInPast);
        }
        let issued_at = to_seconds(now);
        let expires_at = issued_at + Duration::from_secs(lifetime.as_secs());
        if expires_at > self.facts.expires_at {
            return Err(IssueError::OutlivesDelegation {
                delegation_expires_secs: secs(self.facts.expires_at),
            });
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let mut rights = rights.to_vec();
        rights.sort();
        rights.dedup();
        let mut serial = [0u8; SERIAL_LEN];
        getrandom::getrandom(&mut serial).map_err(|_| IssueError::Randomness)?;
        let block = membership_block(&MembershipBlock {
            subject,
            roles: &roles,
            rights: &rights,
            issued_at,
            expires_at,
            serial,
            revocation_floor: self.revocation_floor(),
        })?;
        let request = self.delegation.third_party_request()?;
        let signed = request.create_block(&self.key.biscuit_private(), block)?;
        let token = self
            .delegation
            .append_third_party(self.key.public().to_biscuit(), signed)?;
        let bytes = token.to_vec()?;
        let revocation_id = RevocationId::membership(&self.key.public(), &serial);
        Ok(IssuedToken {
            token_id: TokenId::of(&bytes),
            bytes,
            revocation_id,
            subject: *subject,
            roles,
            rights,
            issued_at,
            expires_at,
        })
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_roles(roles: &[String]) -> Result<(), IssueError> {
    if roles.is_empty() || roles.len() > MAX_ROLES {
        return Err(IssueError::RoleCount(roles.len()));
    }
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(IssueError::InvalidRole(bad.clone()));
    }
    Ok(())
}

fn check_rights(rights: &[String]) -> Result<(), IssueError> {
    if rights.len() > MAX_ROLES {
        return Err(IssueError::RoleCount(rights.len()));
    }
    if let Some(bad) = rights.iter().find(|r| !valid_role(r)) {
        return Err(IssueError::InvalidRole(bad.clone()));
    }
    Ok(())
}

fn check_network(name: &str) -> Result<(), IssueError> {
    if name.is_empty() || name.len() > 63 {
        return Err(IssueError::InvalidNetwork(name.to_owned()));
    }
    Ok(())
}
