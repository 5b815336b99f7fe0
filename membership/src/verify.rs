//! Offline verification of delegation and membership tokens.
//!
//! The order is fixed, cheapest first (DESIGN.md section 3), so that a hostile token is refused
//! before it can cost anything: size cap, parse with the anchor key provider (signatures),
//! exact structure (block count, schema contexts, block 1 signed by the key the authority block
//! names), revocation ids, datalog with explicit limits, subject, network, expiry with skew.
//!
//! A membership under a delegation this verifier already verified skips the anchor's signature
//! and the datalog run (`fast.rs`); it only ever accepts, and anything else takes the full path.
//!
//! A heavy datalog block can only reach the authorizer if the delegated seednode signed it,
//! because structure is checked first: anyone can append a block to a token, but an appended
//! block makes the block count wrong.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use biscuit_auth::{AuthorizerLimits, Biscuit};
use libp2p_identity::PeerId;

use crate::fast::{self, Fast};
use crate::keys::PublicKey;
use crate::revocation::{RevocationId, RevocationSet};
use crate::token::{
    DELEGATION_CONTEXT, DelegationFacts, ExtractError, LEGACY_MEMBERSHIP_CONTEXT, MAX_ROLES,
    MEMBERSHIP_CONTEXT, MembershipFacts, TokenId, extract, valid_role,
};
use crate::trust::{AccessList, NetworkTrust};

/// Limits and tolerances of the verifier.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Largest token accepted, in bytes. Default 4096.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on expiry and issue times. Default 60 s.
    pub clock_skew: Duration,
    /// Datalog: most facts the authorizer may hold. Default 64.
    pub max_facts: u64,
    /// Datalog: most rule-application iterations. Default 8.
    pub max_iterations: u64,
    /// Datalog: longest evaluation. Default 10 ms (checked between iterations only, which is
    /// why structure checks come first).
    pub max_datalog_time: Duration,
    /// Verdicts kept in the cache. Default 4096.
    pub cache_capacity: usize,
    /// Delegations kept verified, so that a new membership under one costs two signature
    /// checks instead of three (see `fast.rs`). Default 64; 0 verifies every token in full.
    pub delegation_cache: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            max_token_bytes: 4096,
            clock_skew: Duration::from_secs(60),
            max_facts: 64,
            max_iterations: 8,
            max_datalog_time: Duration::from_millis(10),
            cache_capacity: 4096,
            delegation_cache: 64,
        }
    }
}

impl VerifierConfig {
    fn limits(&self) -> AuthorizerLimits {
        AuthorizerLimits {
            max_facts: self.max_facts,
            max_iterations: self.max_iterations,
            max_time: self.max_datalog_time,
        }
    }
}

/// The stable reason code of a refusal, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    /// The token or its delegation has expired (or is not yet valid).
    Expired,
    /// A revocation id of the token is revoked.
    Revoked,
    /// The token names another peer than the one presenting it.
    WrongSubject,
    /// The token's network is not accepted here.
    UnknownNetwork,
    /// A signature does not verify or the signer is not trusted.
    BadSignature,
    /// The bytes are not a well-formed Cordon token.
    Malformed,
    /// The token breaks a policy rule (bounds, datalog).
    Policy,
}

impl RefusalCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::WrongSubject => "wrong_subject",
            Self::UnknownNetwork => "unknown_network",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
            Self::Policy => "policy",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused. Local detail; only [`Refusal::code`] goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Larger than the configured cap.
    #[error("token is {size} bytes, over the {max}-byte cap")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not a biscuit, truncated, or not Cordon's schema.
    #[error("malformed token: {detail}")]
    Malformed {
        /// What was wrong.
        detail: &'static str,
    },
    /// Signed by an anchor key this process does not trust.
    #[error("token is signed by an unknown anchor (key id {key_id:?})")]
    UnknownAnchor {
        /// The token's root key id.
        key_id: Option<u32>,
    },
    /// A block signature does not verify.
    #[error("a token signature does not verify")]
    BadSignature,
    /// The anchor that signed the delegation is not trusted for the network it names.
    #[error("anchor key id {key_id} is not trusted for network {network:?}")]
    AnchorNotForNetwork {
        /// The network named in the token.
        network: String,
        /// The anchor's key id.
        key_id: u32,
    },
    /// Block 1 is not signed by the seednode key the delegation names.
    #[error("membership block is signed by {signer:?}, which the delegation does not name")]
    UnendorsedIssuer {
        /// The signer of block 1, if it was a third-party block.
        signer: Option<PublicKey>,
    },
    /// A block's revocation id is revoked.
    #[error("token is revoked (revocation id {id})")]
    Revoked {
        /// The revoked id.
        id: RevocationId,
    },
    /// Datalog refused the token or hit a limit.
    #[error("token refused by policy: {detail}")]
    Policy {
        /// What failed.
        detail: String,
    },
    /// The token names a different peer than the authenticated one.
    #[error("token names {token_subject}, not the peer presenting it")]
    WrongSubject {
        /// The peer the token names.
        token_subject: PeerId,
    },
    /// The token's network is not in the access list.
    #[error("network {network:?} is not in the access list")]
    UnknownNetwork {
        /// The network named in the token.
        network: String,
    },
    /// The membership has expired.
    #[error("membership expired at {}", humantime_secs(*at))]
    MembershipExpired {
        /// Its expiry.
        at: SystemTime,
    },
    /// The delegation behind the membership has expired.
    #[error("delegation expired at {}", humantime_secs(*at))]
    DelegationExpired {
        /// Its expiry.
        at: SystemTime,
    },
    /// The membership was issued in the future (beyond the skew allowance).
    #[error("membership is not valid before {}", humantime_secs(*at))]
    NotYetValid {
        /// Its issue time.
        at: SystemTime,
    },
}

fn humantime_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Refusal {
    /// The stable reason code.
    pub fn code(&self) -> RefusalCode {
        match self {
            Self::TooLarge { .. } | Self::Malformed { .. } => RefusalCode::Malformed,
            Self::UnknownAnchor { .. }
            | Self::BadSignature
            | Self::AnchorNotForNetwork { .. }
            | Self::UnendorsedIssuer { .. } => RefusalCode::BadSignature,
            Self::Revoked { .. } => RefusalCode::Revoked,
            Self::Policy { .. } => RefusalCode::Policy,
            Self::WrongSubject { .. } => RefusalCode::WrongSubject,
            Self::UnknownNetwork { .. } => RefusalCode::UnknownNetwork,
            Self::MembershipExpired { .. }
            | Self::DelegationExpired { .. }
            | Self::NotYetValid { .. } => RefusalCode::Expired,
        }
    }
}

/// A verified membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The network the membership is for.
    pub network: String,
    /// The member (equal to the authenticated presenter).
    pub subject: PeerId,
    /// The key of the seednode that issued it (its PeerId is `issuer.peer_id()`).
    pub issuer: PublicKey,
    /// Granted roles, sorted.
    pub roles: Vec<String>,
    /// Explicit rights granted on top of the roles (e.g. `dht_put`), sorted.
    pub rights: Vec<String>,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// When it stops being valid: the earlier of the membership and delegation expiries.
    pub expires_at: SystemTime,
    /// Digest of the token bytes.
    pub token_id: TokenId,
    /// Revocation ids: `[delegation, membership]`.
    pub revocation_ids: Vec<RevocationId>,
    /// The issuer's revocation-head version when it issued this token (0 for a legacy token):
    /// heads of that issuer older than this are never accepted by whoever holds the token.
    pub revocation_floor: u64,
    /// The trust anchor the token chains to (it signed the delegation).
    pub anchor: PublicKey,
}

/// A verified delegation, as presented by a seednode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationVerdict {
    /// What the anchor granted.
    pub facts: DelegationFacts,
    /// The seednode's PeerId (derived from the delegated key, equal to the presenter).
    pub seednode: PeerId,
    /// Digest of the token bytes.
    pub token_id: TokenId,
    /// The delegation's revocation id.
    pub revocation_id: RevocationId,
    /// The trust anchor that signed it.
    pub anchor: PublicKey,
}

#[derive(Debug)]
struct CacheEntry {
    verdict: Verdict,
    delegation_expires_at: SystemTime,
    revocation_version: u64,
    /// The access-list generation the verdict was reached under.
    access_epoch: u64,
}

/// A bounded verdict cache keyed by token digest, valid for one revocation-set version.
#[derive(Debug, Default)]
struct VerifyCache {
    entries: HashMap<TokenId, CacheEntry>,
    order: VecDeque<TokenId>,
}

impl VerifyCache {
    fn get(&self, id: &TokenId, revocation_version: u64, access_epoch: u64) -> Option<&CacheEntry> {
        self.entries.get(id).filter(|e| {
            e.revocation_version == revocation_version && e.access_epoch == access_epoch
        })
    }

    fn insert(&mut self, capacity: usize, id: TokenId, entry: CacheEntry) {
        if capacity == 0 {
            return;
        }
        if self.entries.insert(id, entry).is_none() {
            self.order.push_back(id);
        }
        while self.entries.len() > capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

/// The offline verifier: an access list, a revocation set and a verdict cache.
///
/// Sans-IO: callers pass `now`. Verification takes `&self` (the cache is behind a mutex, the
/// revocation set and the access list behind read-write locks) so one verifier can serve a
/// pool of workers while its owner revokes, or swaps the access list, through a shared
/// reference. Each verification reads one snapshot of the access list; a verdict reached under
/// an older access list is never served from the cache.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    access: RwLock<Arc<AccessList>>,
    /// Bumped by every [`Verifier::set_access`]; cached verdicts carry the value they saw.
    access_epoch: AtomicU64,
    revocations: RwLock<RevocationSet>,
    cache: Mutex<VerifyCache>,
    /// Delegations verified inside an accepted membership.
    known: Mutex<Fast>,
    /// Memberships verified through a known delegation.
    known_hits: AtomicU64,
}

/// What the full path (or the fast path) read from a membership, before the checks on it.
struct Facts {
    root_key_id: Option<u32>,
    /// Block 1's signer, endorsed by block 0.
    signer: PublicKey,
    /// Checked against the revocation set already.
    delegation_id: RevocationId,
    delegation: DelegationFacts,
    membership: MembershipFacts,
    /// A legacy membership's revocation id (from its block-1 signature).
    legacy_id: Option<RevocationId>,
}

impl Verifier {
    /// A verifier for an access list, with nothing revoked.
    pub fn new(config: VerifierConfig, access: AccessList) -> Self {
        Self {
            config,
            access: RwLock::new(Arc::new(access)),
            access_epoch: AtomicU64::new(0),
            revocations: RwLock::new(RevocationSet::new()),
            cache: Mutex::new(VerifyCache::default()),
            known: Mutex::new(Fast::default()),
            known_hits: AtomicU64::new(0),
        }
    }

    /// How many memberships were read through a delegation already known (skipping its
    /// signature check), whether or not a later check then refused them.
    pub fn known_delegation_hits(&self) -> u64 {
        self.known_hits.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The access list (a snapshot: a later [`Verifier::set_access`] does not change it).
    pub fn access(&self) -> Arc<AccessList> {
        match self.access.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the access list (an operator reloaded the descriptor) and drops every cached
    /// verdict: from now on every verification, cached or not, answers under the new list.
    pub fn set_access(&self, access: AccessList) {
        {
            let mut current = match self.access.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *current = Arc::new(access);
            // Under the write lock: a verification that read the old list also read the old
            // epoch, so its verdict is cached as stale.
            self.access_epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.with_cache(VerifyCache::clear);
        self.with_known(Fast::clear);
    }

    /// One consistent view of the access list and its epoch.
    fn access_snapshot(&self) -> (Arc<AccessList>, u64) {
        let guard = match self.access.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        (guard.clone(), self.access_epoch.load(Ordering::SeqCst))
    }

    /// A copy of the revocation set.
    pub fn revocations(&self) -> RevocationSet {
        self.read_revocations(Clone::clone)
    }

    /// The revocation set's version (cached verdicts are valid for one version).
    pub fn revocation_version(&self) -> u64 {
        self.read_revocations(RevocationSet::version)
    }

    /// Revokes `ids`; returns how many were new. Cached verdicts are invalidated by the new
    /// version, and every later verification refuses tokens carrying one of them.
    pub fn revoke(&self, ids: impl IntoIterator<Item = RevocationId>) -> usize {
        let mut set = match self.revocations.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        ids.into_iter().filter(|id| set.insert(id.clone())).count()
    }

    /// Replaces the revocation set with a newer version; an older or equal one is ignored.
    /// Returns whether it changed.
    pub fn update_revocations(&self, newer: RevocationSet) -> bool {
        let mut set = match self.revocations.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.update(newer)
    }

    fn read_revocations<T>(&self, f: impl FnOnce(&RevocationSet) -> T) -> T {
        let set = match self.revocations.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&set)
    }

    fn with_known<T>(&self, f: impl FnOnce(&mut Fast) -> T) -> T {
        let mut guard = match self.known.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut VerifyCache) -> T) -> T {
        let mut guard = match self.cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Verifies a membership token presented by `presenter` (the Noise-authenticated PeerId),
    /// using the cache.
    pub fn verify_membership(
        &self,
        token: &[u8],
        presenter: &PeerId,
        now: SystemTime,
    ) -> Result<Verdict, Refusal> {
        self.check_size(token)?;
        let id = TokenId::of(token);
        let version = self.revocation_version();
        let (access, epoch) = self.access_snapshot();
        let cached = self.with_cache(|c| {
            c.get(&id, version, epoch)
                .map(|e| (e.verdict.clone(), e.delegation_expires_at))
        });
        if let Some((verdict, delegation_expires_at)) = cached {
            self.check_time_bound(&access, &verdict, delegation_expires_at, presenter, now)?;
            return Ok(verdict);
        }
        let (verdict, delegation_expires_at) =
            self.verify_membership_cold(&access, token, id, now)?;
        self.check_time_bound(&access, &verdict, delegation_expires_at, presenter, now)?;
        self.with_cache(|c| {
            c.insert(
                self.config.cache_capacity,
                id,
                CacheEntry {
                    verdict: verdict.clone(),
                    delegation_expires_at,
                    revocation_version: version,
                    access_epoch: epoch,
                },
            )
        });
        Ok(verdict)
    }

    /// The verdict on a membership token if the cache holds it: what
    /// [`Verifier::verify_membership`] would answer, without any cryptography. `None` when the
    /// token was not verified under the current revocation set and access list (a cold
    /// verification is needed).
    pub fn verify_membership_cached(
        &self,
        token: &[u8],
        presenter: &PeerId,
        now: SystemTime,
    ) -> Option<Result<Verdict, Refusal>> {
        if let Err(e) = self.check_size(token) {
            return Some(Err(e));
        }
        let id = TokenId::of(token);
        let version = self.revocation_version();
        let (access, epoch) = self.access_snapshot();
        let (verdict, delegation_expires_at) = self.with_cache(|c| {
            c.get(&id, version, epoch)
                .map(|e| (e.verdict.clone(), e.delegation_expires_at))
        })?;
        Some(
            self.check_time_bound(&access, &verdict, delegation_expires_at, presenter, now)
                .map(|()| verdict),
        )
    }

    /// Checks, without any signature verification, what a token presented as `network` must
    /// show to be worth verifying: its size, that it parses as a biscuit with the block count
    /// of its kind (two for a membership, one for a delegation), that its root key id names an
    /// anchor trusted for `network`, and, for a membership, that its membership block claims
    /// the signature of the seednode its delegation names. A token failing here would fail
    /// verification; one passing may still fail it. Costs a parse, no Ed25519.
    ///
    /// Every refusal here is one of a token that did not verify, which the wire shows as one
    /// code. The subject is left to verification: a real token presented by another peer is
    /// refused `wrong_subject`, which only a verified token may be told.
    pub fn precheck(&self, token: &[u8], membership: bool, network: &str) -> Result<(), Refusal> {
        self.check_size(token)?;
        let unverified =
            biscuit_auth::UnverifiedBiscuit::from(token).map_err(|_| Refusal::Malformed {
                detail: "not a valid biscuit",
            })?;
        let blocks = if membership { 2 } else { 1 };
        if unverified.block_count() != blocks {
            return Err(Refusal::Malformed {
                detail: if membership {
                    "a membership token has exactly two blocks"
                } else {
                    "a delegation has exactly one block"
                },
            });
        }
        let access = self.access();
        let key_id = unverified.root_key_id();
        let Some(anchor) = key_id.and_then(|id| access.anchor_by_id(id)) else {
            return Err(Refusal::UnknownAnchor { key_id });
        };
        let trusted = |t: &NetworkTrust| t.anchors.contains(anchor);
        if !access.network(network).is_some_and(trusted) {
            // Verification would find the token is another network's (or no network's).
            let actual = access
                .networks()
                .find(|t| trusted(t))
                .map(|t| t.name.clone());
            return Err(Refusal::UnknownNetwork {
                network: actual.unwrap_or_else(|| network.to_owned()),
            });
        }
        if membership {
            // Block 1 must be signed by the seednode the delegation names (its `delegate`
            // fact); the signature itself is checked by verification.
            let delegate = unverified.print_block_source(0).ok().and_then(|source| {
                let (_, rest) = source.split_once("delegate(hex:")?;
                decode_hex(rest.split_once(')')?.0)
            });
            let signer = unverified.external_public_keys().get(1).cloned().flatten();
            let endorsed = matches!(
                (&delegate, &signer),
                (Some(d), Some(k)) if k.to_bytes().as_slice() == d.as_slice()
            );
            if !endorsed {
                return Err(Refusal::UnendorsedIssuer {
                    signer: signer.as_ref().and_then(PublicKey::from_biscuit),
                });
            }
        }
        Ok(())
    }

    /// Verifies a membership token without consulting or filling the cache.
    pub fn verify_membership_uncached(
        &self,
        token: &[u8],
        presenter: &PeerId,
        now: SystemTime,
    ) -> Result<Verdict, Refusal> {
        self.check_size(token)?;
        let access = self.access();
        let (verdict, delegation_expires_at) =
            self.verify_membership_cold(&access, token, TokenId::of(token), now)?;
        self.check_time_bound(&access, &verdict, delegation_expires_at, presenter, now)?;
        Ok(verdict)
    }

    fn check_size(&self, token: &[u8]) -> Result<(), Refusal> {
        if token.len() > self.config.max_token_bytes {
            return Err(Refusal::TooLarge {
                size: token.len(),
                max: self.config.max_token_bytes,
            });
        }
        Ok(())
    }

    /// Everything that does not depend on the presenter or the clock, except the
    /// not-yet-valid check that needs `now` and is cheap.
    fn verify_membership_cold(
        &self,
        access: &AccessList,
        token: &[u8],
        id: TokenId,
        now: SystemTime,
    ) -> Result<(Verdict, SystemTime), Refusal> {
        let known = |key: &_| self.with_known(|k| k.get(key));
        if let Some(chain) = fast::chain(known, access, token, &self.config) {
            self.known_hits.fetch_add(1, Ordering::Relaxed);
            // What the full path checks between reading block 0 and reading block 1.
            let delegation_id = self.check_revocation(chain.delegation.revocation_id.clone())?;
            let facts = Facts {
                root_key_id: Some(chain.root_key_id),
                signer: chain.signer,
                delegation_id,
                delegation: chain.delegation.facts.clone(),
                membership: chain.membership,
                legacy_id: None,
            };
            return self.check_facts(access, facts, id, now);
        }
        let biscuit = parse(access, token)?;
        // Structure: exactly the delegation and one membership block.
        if biscuit.block_count() != 2 {
            return Err(Refusal::Malformed {
                detail: "a membership token has exactly two blocks",
            });
        }
        let legacy = match check_contexts(&biscuit, &[DELEGATION_CONTEXT, MEMBERSHIP_CONTEXT]) {
            Ok(()) => false,
            Err(e) => {
                check_contexts(&biscuit, &[DELEGATION_CONTEXT, LEGACY_MEMBERSHIP_CONTEXT])
                    .map_err(|_| e)?;
                true
            }
        };
        let signer_key = match biscuit.block_external_key(1) {
            Ok(Some(key)) => key,
            Ok(None) => return Err(Refusal::UnendorsedIssuer { signer: None }),
            Err(_) => {
                return Err(Refusal::Malformed {
                    detail: "missing membership block",
                });
            }
        };
        let Some(signer) = PublicKey::from_biscuit(&signer_key) else {
            return Err(Refusal::UnendorsedIssuer { signer: None });
        };
        // The authority block's key table holds exactly the delegated key (see token.rs).
        let endorsed = biscuit
            .block_public_keys(0)
            .map(|keys| keys.current_offset() == 1 && keys.get(&signer_key).is_some())
            .unwrap_or(false);
        if !endorsed {
            return Err(Refusal::UnendorsedIssuer {
                signer: Some(signer),
            });
        }
        if matches!(biscuit.block_public_keys(1), Ok(keys) if keys.current_offset() != 0) {
            return Err(Refusal::Malformed {
                detail: "membership block references public keys",
            });
        }
        // The delegation's id is known before datalog runs; the membership's serial is a fact,
        // read by the same query as the rest of block 1 (the block is the delegated seednode's,
        // so datalog here runs only on what a trusted issuer signed).
        let delegation_id = self.check_revocation(delegation_revocation_id(&biscuit)?)?;
        let (delegation, membership) =
            extract(&biscuit, Some(&signer_key), legacy, self.config.limits())
                .map_err(policy_refusal)?;
        let membership = membership.ok_or(Refusal::Malformed {
            detail: "membership facts",
        })?;
        let legacy_id = match membership.serial {
            Some(_) => None,
            None => Some(RevocationId::legacy_membership(&block_signature(
                &biscuit, 1,
            )?)),
        };
        let facts = Facts {
            root_key_id: biscuit.root_key_id(),
            signer,
            delegation_id: delegation_id.clone(),
            delegation,
            membership,
            legacy_id,
        };
        let delegation = facts.delegation.clone();
        let verified = self.check_facts(access, facts, id, now)?;
        // Accepted: the next membership under this delegation can skip block 0.
        self.with_known(|k| {
            k.learn(
                self.config.delegation_cache,
                access,
                token,
                &delegation,
                &signer,
                delegation_id,
            )
        });
        Ok(verified)
    }

    /// The checks after both blocks are read, in the full path's order.
    fn check_facts(
        &self,
        access: &AccessList,
        facts: Facts,
        id: TokenId,
        now: SystemTime,
    ) -> Result<(Verdict, SystemTime), Refusal> {
        let Facts {
            root_key_id,
            signer,
            delegation_id,
            delegation,
            membership,
            legacy_id,
        } = facts;
        let membership_id = match (&membership.serial, legacy_id) {
            (Some(serial), _) => RevocationId::membership(&signer, serial),
            (None, Some(legacy)) => legacy,
            (None, None) => {
                return Err(Refusal::Malformed {
                    detail: "missing block",
                });
            }
        };
        let membership_id = self.check_revocation(membership_id)?;
        let revocation_ids = vec![delegation_id, membership_id];
        if delegation.delegate != *signer.as_bytes() {
            return Err(Refusal::UnendorsedIssuer {
                signer: Some(signer),
            });
        }
        let anchor = check_anchor_for_network(access, root_key_id, &delegation.network)?;
        check_roles(&membership.roles, &delegation.allowed_roles)?;
        check_rights(&membership.rights, &delegation.allowed_rights)?;
        let lifetime = membership
            .expires_at
            .duration_since(membership.issued_at)
            .map_err(|_| Refusal::Policy {
                detail: "membership expires before it is issued".into(),
            })?;
        if lifetime > delegation.max_lifetime {
            return Err(Refusal::Policy {
                detail: format!(
                    "membership lifetime {}s exceeds the delegated maximum {}s",
                    lifetime.as_secs(),
                    delegation.max_lifetime.as_secs()
                ),
            });
        }
        if membership.issued_at > now + self.config.clock_skew {
            return Err(Refusal::NotYetValid {
                at: membership.issued_at,
            });
        }
        let verdict = Verdict {
            network: delegation.network,
            subject: membership.subject,
            issuer: signer,
            roles: membership.roles,
            rights: membership.rights,
            issued_at: membership.issued_at,
            expires_at: membership.expires_at.min(delegation.expires_at),
            token_id: id,
            revocation_ids,
            revocation_floor: membership.revocation_floor,
            anchor,
        };
        Ok((verdict, delegation.expires_at))
    }

    /// Subject, network and expiry: the checks that depend on who presents the token and when.
    fn check_time_bound(
        &self,
        access: &AccessList,
        verdict: &Verdict,
        delegation_expires_at: SystemTime,
        presenter: &PeerId,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        if &verdict.subject != presenter {
            return Err(Refusal::WrongSubject {
                token_subject: verdict.subject,
            });
        }
        if access.network(&verdict.network).is_none() {
            return Err(Refusal::UnknownNetwork {
                network: verdict.network.clone(),
            });
        }
        let skewed = now.checked_sub(self.config.clock_skew).unwrap_or(now);
        if delegation_expires_at < skewed {
            return Err(Refusal::DelegationExpired {
                at: delegation_expires_at,
            });
        }
        if verdict.expires_at < skewed {
            return Err(Refusal::MembershipExpired {
                at: verdict.expires_at,
            });
        }
        Ok(())
    }

    /// Verifies a delegation presented by a seednode (`presenter` must be the delegated key).
    pub fn verify_delegation(
        &self,
        token: &[u8],
        presenter: &PeerId,
        now: SystemTime,
    ) -> Result<DelegationVerdict, Refusal> {
        self.check_size(token)?;
        let access = self.access();
        let biscuit = parse(&access, token)?;
        if biscuit.block_count() != 1 {
            return Err(Refusal::Malformed {
                detail: "a delegation has exactly one block",
            });
        }
        check_contexts(&biscuit, &[DELEGATION_CONTEXT])?;
        let (facts, _) =
            extract(&biscuit, None, false, self.config.limits()).map_err(policy_refusal)?;
        let anchor = check_anchor_for_network(&access, biscuit.root_key_id(), &facts.network)?;
        let seednode = PublicKey::from_bytes(&facts.delegate)
            .ok_or(Refusal::Malformed {
                detail: "delegate key is not an Ed25519 point",
            })?
            .peer_id();
        // Who presents it is checked first: a delegation is public, so what follows (revoked,
        // expired) is for its own seednode only.
        if &seednode != presenter {
            return Err(Refusal::WrongSubject {
                token_subject: seednode,
            });
        }
        let revocation_id = self.check_revocation(delegation_revocation_id(&biscuit)?)?;
        if access.network(&facts.network).is_none() {
            return Err(Refusal::UnknownNetwork {
                network: facts.network,
            });
        }
        let skewed = now.checked_sub(self.config.clock_skew).unwrap_or(now);
        if facts.expires_at < skewed {
            return Err(Refusal::DelegationExpired {
                at: facts.expires_at,
            });
        }
        Ok(DelegationVerdict {
            facts,
            seednode,
            token_id: TokenId::of(token),
            revocation_id,
            anchor,
        })
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &RevocationId) -> bool {
        self.read_revocations(|set| set.contains(&id.0))
    }

    fn check_revocation(&self, id: RevocationId) -> Result<RevocationId, Refusal> {
        if self.read_revocations(|set| set.contains(&id.0)) {
            return Err(Refusal::Revoked { id });
        }
        Ok(id)
    }
}

/// Lower-case hex to bytes; `None` for an odd length or a non-hex digit.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.len() > 256 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses `token`, checking every signature with the anchor keys `access` trusts.
fn parse(access: &AccessList, token: &[u8]) -> Result<Biscuit, Refusal> {
    let asked = std::cell::Cell::new(None);
    let provider = |id: Option<u32>| {
        asked.set(id);
        id.and_then(|id| access.anchor_by_id(id))
            .map(PublicKey::to_biscuit)
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    };
    Biscuit::from(token, provider).map_err(|e| {
        use biscuit_auth::error::{Format, Token};
        match e {
            Token::Format(Format::UnknownPublicKey) => Refusal::UnknownAnchor {
                key_id: asked.get(),
            },
            Token::Format(
                Format::Signature(_)
                | Format::SealedSignature
                | Format::InvalidSignatureSize(_)
                | Format::SignatureDeserializationError(_)
                | Format::BlockSignatureDeserializationError(_),
            ) => Refusal::BadSignature,
            _ => Refusal::Malformed {
                detail: "not a valid biscuit",
            },
        }
    })
}

/// The anchor key that signed a token's root (named by its root key id), if the access list trusts it for `network`.
fn check_anchor_for_network(
    access: &AccessList,
    root_key_id: Option<u32>,
    network: &str,
) -> Result<PublicKey, Refusal> {
    let key_id = root_key_id.ok_or(Refusal::Malformed {
        detail: "no root key id",
    })?;
    let Some(net) = access.network(network) else {
        return Err(Refusal::UnknownNetwork {
            network: network.to_owned(),
        });
    };
    net.anchors
        .iter()
        .find(|k| k.key_id() == key_id)
        .copied()
        .ok_or(Refusal::AnchorNotForNetwork {
            network: network.to_owned(),
            key_id,
        })
}

/// The signature of block `index` (0 is the authority block).
fn block_signature(biscuit: &Biscuit, index: usize) -> Result<Vec<u8>, Refusal> {
    biscuit
        .revocation_identifiers()
        .into_iter()
        .nth(index)
        .ok_or(Refusal::Malformed {
            detail: "missing block",
        })
}

/// A delegation's revocation id, from its authority block's signature (made by the anchor).
fn delegation_revocation_id(biscuit: &Biscuit) -> Result<RevocationId, Refusal> {
    Ok(RevocationId::delegation(&block_signature(biscuit, 0)?))
}

/// Reads a delegation signed by `anchor` (offline, for the anchor's own tooling): its facts and
/// revocation id. Checks the signature and schema, not expiry or revocation.
pub fn read_delegation(
    token: &[u8],
    anchor: &PublicKey,
) -> Result<(DelegationFacts, RevocationId), Refusal> {
    let biscuit = Biscuit::from(token, anchor.to_biscuit()).map_err(|_| Refusal::BadSignature)?;
    if biscuit.block_count() != 1 {
        return Err(Refusal::Malformed {
            detail: "a delegation has exactly one block",
        });
    }
    check_contexts(&biscuit, &[DELEGATION_CONTEXT])?;
    let id = delegation_revocation_id(&biscuit)?;
    let (facts, _) = extract(&biscuit, None, false, VerifierConfig::default().limits())
        .map_err(policy_refusal)?;
    Ok((facts, id))
}

/// The revocation id of a delegation token (for the anchor's CLI and the seednode).
pub fn delegation_id_of(biscuit: &Biscuit) -> Option<RevocationId> {
    delegation_revocation_id(biscuit).ok()
}

/// The revocation id of the delegation a token (membership or delegation) chains to, read
/// without checking any signature: for a seednode comparing tokens it issued itself, from its
/// own store, with the delegation it holds now. Never use it on a token from the network.
pub fn delegation_id_unverified(token: &[u8]) -> Option<RevocationId> {
    let biscuit = biscuit_auth::UnverifiedBiscuit::from(token).ok()?;
    let first = biscuit.revocation_identifiers().into_iter().next()?;
    Some(RevocationId::delegation(&first))
}

/// The key that signed a membership's block (its issuing seednode's key bytes), read without
/// checking any signature: for a seednode telling the tokens it issued from those another
/// seednode sharing its store issued. Never use it on a token from the network.
pub fn issuer_key_unverified(token: &[u8]) -> Option<Vec<u8>> {
    let biscuit = biscuit_auth::UnverifiedBiscuit::from(token).ok()?;
    let key = biscuit
        .external_public_keys()
        .into_iter()
        .nth(1)
        .flatten()?;
    Some(key.to_bytes().to_vec())
}

fn check_contexts(biscuit: &Biscuit, expected: &[&str]) -> Result<(), Refusal> {
    let contexts = biscuit.context();
    let matches = contexts.len() == expected.len()
        && contexts
            .iter()
            .zip(expected)
            .all(|(got, want)| got.as_deref() == Some(*want));
    if matches {
        Ok(())
    } else {
        Err(Refusal::Malformed {
            detail: "unknown token schema",
        })
    }
}

fn check_roles(roles: &[String], allowed: &[String]) -> Result<(), Refusal> {
    if roles.is_empty() || roles.len() > MAX_ROLES {
        return Err(Refusal::Policy {
            detail: format!("a membership carries 1 to {MAX_ROLES} roles"),
        });
    }
    for role in roles {
        if !valid_role(role) || !allowed.contains(role) {
            return Err(Refusal::Policy {
                detail: format!("role {role:?} is not delegated"),
            });
        }
    }
    Ok(())
}

fn check_rights(rights: &[String], allowed: &[String]) -> Result<(), Refusal> {
    if rights.len() > MAX_ROLES {
        return Err(Refusal::Policy {
            detail: format!("a membership carries at most {MAX_ROLES} rights"),
        });
    }
    for right in rights {
        if !valid_role(right) || !allowed.contains(right) {
            return Err(Refusal::Policy {
                detail: format!("right {right:?} is not delegated"),
            });
        }
    }
    Ok(())
}

fn policy_refusal(e: ExtractError) -> Refusal {
    match e {
        ExtractError::Datalog(e) => Refusal::Policy {
            detail: e.to_string(),
        },
        ExtractError::Shape(what) => Refusal::Malformed { detail: what },
    }
}
