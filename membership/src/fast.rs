//! Verifying a membership under a delegation this verifier has already verified.
//!
//! `Biscuit::from` checks three Ed25519 signatures on every membership: the anchor's over the
//! delegation (block 0), and the seednode's two over the membership block (its block signature
//! and its third-party signature). Every membership of a network chains to one of a handful of
//! delegations, so the first check repeats over the same bytes for every member. biscuit-auth 6
//! has no public call that skips it, so this module re-implements the rest of the chain for the
//! one token shape Cordon issues, with the same Ed25519 crate biscuit uses
//! (`ed25519-dalek` 2, `verify_strict`).
//!
//! It only ever accepts. [`chain`] returns the facts of a token that passes every check
//! the full path makes, or `None` for anything else: an unknown delegation, a bad signature, a
//! block of any other shape, a fact of an unexpected type. The caller then runs the full path,
//! which gives every refusal its reason. `tests/fast_path.rs` and the `fast_path` fuzz target
//! compare every verdict of the two paths over real, corrupted and re-minted tokens.
//!
//! What is cached: a delegation the full path verified inside an accepted membership, keyed by
//! the SHA-256 of the anchor key it was verified with and the exact signed bytes of block 0
//! (its payload, next key, signature version and signature), never by the signature alone, so a
//! genuine signature paired with edited bytes misses. The entry holds what the full path read
//! from block 0 (the delegation's facts and key table), so block 0 is neither verified nor read
//! again. Revocation, expiry and the network's anchors are checked on every verification,
//! outside the cache.
//!
//! What datalog did for block 1 is done here directly, and only where it cannot differ: the
//! block must hold facts alone (no rules, checks, scopes or keys), of Cordon's predicates with
//! their term types, each single-valued fact once; the delegation's block 0 must hold no checks
//! and at most one single-predicate rule; and the facts must stay well inside the verifier's
//! fact limit. The datalog time limit cannot be reproduced (it depends on the machine's load),
//! so a token the full path would have timed out on a starved core can pass here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use biscuit_auth::datalog::SymbolTable;
use biscuit_auth::format::schema;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;
use crate::revocation::RevocationId;
use crate::token::{DelegationFacts, MEMBERSHIP_CONTEXT, MembershipFacts, SERIAL_LEN};
use crate::trust::AccessList;
use crate::verify::VerifierConfig;

/// biscuit's datalog versions a third-party block may carry (3.2 and 3.3).
const BLOCK_VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;
/// The only signature version biscuit accepts on a third-party block.
const THIRD_PARTY_SIGNATURE_VERSION: u32 = 1;
/// The Ed25519 algorithm number in biscuit's `PublicKey`.
const ED25519: i32 = schema::public_key::Algorithm::Ed25519 as i32;

/// A delegation the full path verified, with what it read from block 0.
#[derive(Debug)]
pub(crate) struct KnownDelegation {
    /// What the anchor granted.
    pub(crate) facts: DelegationFacts,
    /// The delegation's revocation id (from block 0's signature).
    pub(crate) revocation_id: RevocationId,
    /// The delegated seednode key: block 1's third-party signer, and block 0's one key.
    signer: PublicKey,
    delegate: VerifyingKey,
    /// Block 0's next key: signs block 1.
    next_key: VerifyingKey,
    /// Block 0's signature, which block 1's signatures cover.
    signature: [u8; 64],
    /// Facts in block 0.
    facts_count: usize,
}

/// A membership the fast path accepted: what the full path reads before its remaining checks.
#[derive(Debug)]
pub(crate) struct Chain {
    pub(crate) root_key_id: u32,
    /// Block 1's signer, the delegated seednode.
    pub(crate) signer: PublicKey,
    pub(crate) delegation: Arc<KnownDelegation>,
    pub(crate) membership: MembershipFacts,
}

/// The cache key of a block 0 verified with `anchor`.
type Key = [u8; 32];

/// Bounded cache of known delegations, oldest evicted first.
#[derive(Debug, Default)]
pub(crate) struct Fast {
    entries: HashMap<Key, Arc<KnownDelegation>>,
    order: VecDeque<Key>,
}

impl Fast {
    /// Forgets every delegation (the access list changed).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// The known delegation with this cache key, if any.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<KnownDelegation>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, capacity: usize, key: Key, entry: KnownDelegation) {
        if capacity == 0 {
            return;
        }
        if self.entries.insert(key, Arc::new(entry)).is_none() {
            self.order.push_back(key);
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

    /// Records the delegation of `token`, a membership the full path has just accepted with
    /// `facts` read from its block 0 and `signer` as block 1's endorsed signer. Does nothing
    /// when block 0 is outside the shape [`chain`] can stand in for.
    pub(crate) fn learn(
        &mut self,
        capacity: usize,
        access: &AccessList,
        token: &[u8],
        facts: &DelegationFacts,
        signer: &PublicKey,
        revocation_id: RevocationId,
    ) {
        if capacity == 0 {
            return;
        }
        let Some((key, token)) = decode(access, token) else {
            return;
        };
        let Ok(block0) = schema::Block::decode(token.authority.block.as_slice()) else {
            return;
        };
        let simple_rules = block0.rules.len() <= 1
            && block0
                .rules
                .iter()
                .all(|r| r.body.len() == 1 && r.expressions.is_empty());
        if !block0.checks.is_empty()
            || !simple_rules
            || token.authority.next_key.algorithm != ED25519
        {
            return;
        }
        let (Some(next_key), Ok(signature), Some(delegate)) = (
            verifying_key(&token.authority.next_key.key),
            <[u8; 64]>::try_from(token.authority.signature.as_slice()),
            verifying_key(signer.as_bytes()),
        ) else {
            return;
        };
        self.insert(
            capacity,
            key,
            KnownDelegation {
                facts: facts.clone(),
                revocation_id,
                signer: *signer,
                delegate,
                next_key,
                signature,
                facts_count: block0.facts.len(),
            },
        );
    }
}

/// The facts of `token` if it is a membership of Cordon's shape under a known delegation
/// and every signature on it verifies; `None` sends the caller to the full path.
///
/// `known` looks a block-0 key up in the cache; the signatures are checked after it returns, so
/// a shared cache is locked only for the lookup.
pub(crate) fn chain(
    known: impl FnOnce(&Key) -> Option<Arc<KnownDelegation>>,
    access: &AccessList,
    token: &[u8],
    config: &VerifierConfig,
) -> Option<Chain> {
    // Block 0's rule needs one iteration to derive and one to find nothing new.
    if config.delegation_cache == 0 || config.max_iterations < 3 {
        return None;
    }
    let (key, token) = decode(access, token)?;
    let known = known(&key)?;
    let root_key_id = token.root_key_id?;
    let [block] = token.blocks.as_slice() else {
        return None;
    };
    if block.version != Some(THIRD_PARTY_SIGNATURE_VERSION) {
        return None;
    }
    let external = block.external_signature.as_ref()?;
    if external.public_key.algorithm != ED25519
        || external.public_key.key != known.delegate.as_bytes()
        || block.next_key.algorithm != ED25519
    {
        return None;
    }
    // The proof: the token carries the secret of block 1's next key (Cordon never seals).
    let schema::proof::Content::NextSecret(secret) = token.proof.content.as_ref()? else {
        return None;
    };
    let secret: [u8; 32] = secret.as_slice().try_into().ok()?;
    if SigningKey::from_bytes(&secret).verifying_key().as_bytes() != block.next_key.key.as_slice() {
        return None;
    }
    let membership = read_membership(&block.block, known.facts_count, config.max_facts)?;
    let block_signature = Signature::from_slice(&block.signature).ok()?;
    let external_signature = Signature::from_slice(&external.signature).ok()?;
    let signed = block_payload(
        &block.block,
        &block.next_key.key,
        &known.signature,
        &external.signature,
    );
    known
        .next_key
        .verify_strict(&signed, &block_signature)
        .ok()?;
    let signed = external_payload(&block.block, &known.signature);
    known
        .delegate
        .verify_strict(&signed, &external_signature)
        .ok()?;
    Some(Chain {
        root_key_id,
        signer: known.signer,
        delegation: known,
        membership,
    })
}

/// Decodes `token` and the cache key of its block 0 under the anchor its root key id names.
fn decode(access: &AccessList, token: &[u8]) -> Option<(Key, schema::Biscuit)> {
    let token = schema::Biscuit::decode(token).ok()?;
    let id = token.root_key_id?;
    let anchor = access.anchor_by_id(id)?;
    let a = &token.authority;
    if a.external_signature.is_some() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"cordon/known-delegation/1\0");
    h.update(anchor.as_bytes());
    h.update(id.to_le_bytes());
    h.update(a.version.unwrap_or(0).to_le_bytes());
    for field in [a.block.as_slice(), &a.next_key.key, &a.signature] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.update(a.next_key.algorithm.to_le_bytes());
    Some((h.finalize().into(), token))
}

fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes.try_into().ok()?).ok()
}

/// What block 1's signature covers (biscuit's signature version 1, with a third-party
/// signature and the previous block's signature).
fn block_payload(block: &[u8], next_key: &[u8], previous: &[u8], external: &[u8]) -> Vec<u8> {
    let mut p =
        Vec::with_capacity(block.len() + next_key.len() + previous.len() + external.len() + 80);
    p.extend_from_slice(b"\0BLOCK\0\0VERSION\0");
    p.extend_from_slice(&THIRD_PARTY_SIGNATURE_VERSION.to_le_bytes());
    p.extend_from_slice(b"\0PAYLOAD\0");
    p.extend_from_slice(block);
    p.extend_from_slice(b"\0ALGORITHM\0");
    p.extend_from_slice(&ED25519.to_le_bytes());
    p.extend_from_slice(b"\0NEXTKEY\0");
    p.extend_from_slice(next_key);
    p.extend_from_slice(b"\0PREVSIG\0");
    p.extend_from_slice(previous);
    p.extend_from_slice(b"\0EXTERNALSIG\0");
    p.extend_from_slice(external);
    p
}

/// What block 1's third-party signature covers.
fn external_payload(block: &[u8], previous: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(block.len() + previous.len() + 48);
    p.extend_from_slice(b"\0EXTERNAL\0\0VERSION\0");
    p.extend_from_slice(&THIRD_PARTY_SIGNATURE_VERSION.to_le_bytes());
    p.extend_from_slice(b"\0PAYLOAD\0");
    p.extend_from_slice(block);
    p.extend_from_slice(b"\0PREVSIG\0");
    p.extend_from_slice(previous);
    p
}

/// Reads a `cordon-membership/2` block of facts alone, as the full path's queries would.
fn read_membership(bytes: &[u8], block0_facts: usize, max_facts: u64) -> Option<MembershipFacts> {
    let block = schema::Block::decode(bytes).ok()?;
    if !BLOCK_VERSIONS.contains(&block.version?)
        || block.context.as_deref() != Some(MEMBERSHIP_CONTEXT)
        || !block.rules.is_empty()
        || !block.checks.is_empty()
        || !block.scope.is_empty()
        || !block.public_keys.is_empty()
    {
        return None;
    }
    // Block 0's one rule derives at most one fact per fact it reads: the world holds at most
    // twice the facts of both blocks. Near the limit, the full path decides.
    let world = 2 * (block0_facts as u64 + block.facts.len() as u64);
    if world >= max_facts {
        return None;
    }
    let symbols = SymbolTable::from_symbols_and_public_keys(block.symbols, Vec::new()).ok()?;
    let mut subject = None;
    let mut issued = None;
    let mut expires = None;
    let mut serial = None;
    let mut floor = None;
    let mut roles = Vec::new();
    let mut rights = Vec::new();
    for fact in &block.facts {
        let name = symbols.get_symbol(fact.predicate.name)?;
        let [term] = fact.predicate.terms.as_slice() else {
            return None;
        };
        use schema::term::Content;
        match (name, term.content.as_ref()?) {
            ("node", Content::Bytes(b)) => once(&mut subject, b.clone())?,
            ("issued", Content::Date(d)) => once(&mut issued, *d)?,
            ("expires", Content::Date(d)) => once(&mut expires, *d)?,
            ("serial", Content::Bytes(b)) => once(&mut serial, b.clone())?,
            ("revocation_floor", Content::Integer(i)) => once(&mut floor, *i)?,
            ("role", Content::String(s)) => roles.push(symbols.get_symbol(*s)?.to_owned()),
            ("right", Content::String(s)) => rights.push(symbols.get_symbol(*s)?.to_owned()),
            _ => return None,
        }
    }
    let serial = serial?;
    if serial.len() != SERIAL_LEN || roles.is_empty() {
        return None;
    }
    roles.sort();
    roles.dedup();
    rights.sort();
    rights.dedup();
    Some(MembershipFacts {
        subject: PeerId::from_bytes(&subject?).ok()?,
        roles,
        rights,
        issued_at: date(issued?)?,
        expires_at: date(expires?)?,
        serial: Some(serial),
        revocation_floor: u64::try_from(floor?).ok()?,
    })
}

/// Sets a single-valued fact; a second fact of the same predicate is the full path's to judge.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn date(seconds: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}
