//! The Cordon token schema: which facts each block carries, and reading them back.
//!
//! Delegation (authority block, signed by the anchor, `root_key_id` set):
//! `network(name)`, `delegate(seednode key bytes)`, `delegation_expires(date)`,
//! `max_lifetime(seconds)`, `allowed_role(role)`..., and the rule
//! `delegated_node($p) <- node($p) trusting <seednode key>`, which puts the delegated key in the
//! authority block's key table so the verifier can check block 1's signer before any datalog runs.
//!
//! Membership (block 1, a third-party block signed by the delegated seednode key):
//! `node(peer id bytes)`, `role(role)`..., `issued(date)`, `expires(date)`, `serial(bytes)` (16
//! random bytes: with the seednode's key, the token's revocation identity) and
//! `revocation_floor(version)` (the seednode's revocation-head version when it issued the token;
//! a verifier never accepts an older head from that seednode). Schema `cordon-membership/1`
//! (before serials) is still read: see `revocation.rs` for what that means for revoking one.
//!
//! Every block carries a context string naming its schema, so a future version is refused as
//! malformed rather than misread.

use std::time::{Duration, SystemTime};

use biscuit_auth::macros::{fact, rule};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, BiscuitBuilder, BlockBuilder};
use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;

/// Context string of a delegation's authority block.
pub(crate) const DELEGATION_CONTEXT: &str = "cordon-delegation/1";
/// Context string of a membership block.
pub(crate) const MEMBERSHIP_CONTEXT: &str = "cordon-membership/2";
/// Context string of a membership block issued before serials (read, never written).
pub(crate) const LEGACY_MEMBERSHIP_CONTEXT: &str = "cordon-membership/1";
/// Length of a membership serial in bytes.
pub const SERIAL_LEN: usize = 16;

/// Longest role name.
pub const MAX_ROLE_LEN: usize = 32;
/// Most roles one delegation or membership may carry.
pub const MAX_ROLES: usize = 16;

/// Identifies a token: the SHA-256 digest of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 32]);

impl TokenId {
    /// Digest of a token's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Whether a role name is acceptable: 1-32 bytes of `[a-z0-9_-]`.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Truncates a time to whole seconds, the resolution of biscuit dates.
pub(crate) fn to_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// What the anchor granted a seednode, read from a delegation's authority block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationFacts {
    /// The network.
    pub network: String,
    /// The seednode key allowed to issue memberships (raw bytes as the anchor signed them).
    pub delegate: [u8; 32],
    /// When the delegation ends.
    pub expires_at: SystemTime,
    /// The longest membership the seednode may issue.
    pub max_lifetime: Duration,
    /// Roles the seednode may grant.
    pub allowed_roles: Vec<String>,
    /// Explicit rights (e.g. `dht_put`) the seednode may grant, on top of roles.
    pub allowed_rights: Vec<String>,
}

/// What a seednode granted a node, read from a membership block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MembershipFacts {
    pub(crate) subject: PeerId,
    pub(crate) roles: Vec<String>,
    pub(crate) rights: Vec<String>,
    pub(crate) issued_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    /// `None` for a legacy membership.
    pub(crate) serial: Option<Vec<u8>>,
    /// The issuer's revocation-head version at issue (0 for a legacy membership).
    pub(crate) revocation_floor: u64,
}

/// Why the facts of a token could not be read.
#[derive(Debug)]
pub(crate) enum ExtractError {
    /// Datalog refused or hit a limit.
    Datalog(biscuit_auth::error::Token),
    /// A fact is missing, repeated or of the wrong shape.
    Shape(&'static str),
}

impl From<biscuit_auth::error::Token> for ExtractError {
    fn from(e: biscuit_auth::error::Token) -> Self {
        Self::Datalog(e)
    }
}

/// Builds a delegation's authority block.
pub(crate) fn delegation_builder(
    anchor_key_id: u32,
    facts: &DelegationFacts,
) -> Result<BiscuitBuilder, biscuit_auth::error::Token> {
    let seednode = PublicKey::from_bytes(&facts.delegate)
        .ok_or(biscuit_auth::error::Token::InternalError)?
        .to_biscuit();
    let mut builder = Biscuit::builder()
        .root_key_id(anchor_key_id)
        .context(DELEGATION_CONTEXT.to_owned())
        .fact(fact!("network({network})", network = facts.network.clone()))?
        .fact(fact!("delegate({key})", key = facts.delegate.to_vec()))?
        .fact(fact!(
            "delegation_expires({at})",
            at = to_seconds(facts.expires_at)
        ))?
        .fact(fact!(
            "max_lifetime({secs})",
            secs = i64::try_from(facts.max_lifetime.as_secs()).unwrap_or(i64::MAX)
        ))?
        .rule(rule!(
            "delegated_node($p) <- node($p) trusting {seednode}",
            seednode = seednode
        ))?;
    for role in &facts.allowed_roles {
        builder = builder.fact(fact!("allowed_role({role})", role = role.clone()))?;
    }
    for right in &facts.allowed_rights {
        builder = builder.fact(fact!("allowed_right({right})", right = right.clone()))?;
    }
    Ok(builder)
}

/// What a membership block says.
pub(crate) struct MembershipBlock<'a> {
    pub(crate) subject: &'a PeerId,
    pub(crate) roles: &'a [String],
    pub(crate) rights: &'a [String],
    pub(crate) issued_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    pub(crate) serial: [u8; SERIAL_LEN],
    pub(crate) revocation_floor: u64,
}

/// Builds a membership block.
pub(crate) fn membership_block(
    m: &MembershipBlock<'_>,
) -> Result<BlockBuilder, biscuit_auth::error::Token> {
    let MembershipBlock {
        subject,
        roles,
        rights,
        issued_at,
        expires_at,
        ..
    } = *m;
    let floor = i64::try_from(m.revocation_floor).unwrap_or(i64::MAX);
    let mut block = BlockBuilder::new()
        .context(MEMBERSHIP_CONTEXT.to_owned())
        .fact(fact!("node({peer})", peer = subject.to_bytes()))?
        .fact(fact!("issued({at})", at = to_seconds(issued_at)))?
        .fact(fact!("expires({at})", at = to_seconds(expires_at)))?
        .fact(fact!("serial({s})", s = m.serial.to_vec()))?
        .fact(fact!("revocation_floor({v})", v = floor))?;
    for role in roles {
        block = block.fact(fact!("role({role})", role = role.clone()))?;
    }
    for right in rights {
        block = block.fact(fact!("right({right})", right = right.clone()))?;
    }
    Ok(block)
}

/// Runs the token's own checks under tight limits with an allow-all policy, then reads its facts.
///
/// `issuer` is block 1's signer when the token is a membership: block-1 facts are read only
/// through that key (`trusting`), and the caller requires the authority block's `delegate` fact
/// to name it. Two queries read everything, one per block, because each query costs a pass
/// over the world.
///
/// `legacy` reads a `cordon-membership/1` block (no serial, no floor).
pub(crate) fn extract(
    token: &Biscuit,
    issuer: Option<&biscuit_auth::PublicKey>,
    legacy: bool,
    limits: AuthorizerLimits,
) -> Result<(DelegationFacts, Option<MembershipFacts>), ExtractError> {
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(limits.clone())
        .policy(biscuit_auth::macros::policy!("allow if true"))?
        .build(token)?;
    authorizer.authorize_with_limits(limits.clone())?;

    let head: Vec<(String, Vec<u8>, SystemTime, i64, String)> = authorizer.query_with_limits(
        rule!("data($n, $k, $e, $m, $r) <- network($n), delegate($k), delegation_expires($e), max_lifetime($m), allowed_role($r)"),
        limits.clone(),
    )?;
    let (first, allowed_roles) = single_with_roles(head, |(n, k, e, m, r)| ((n, k, e, m), r))
        .ok_or(ExtractError::Shape("delegation facts"))?;
    let (network, delegate, expires_at, max_lifetime) = first;
    let delegate: [u8; 32] = delegate
        .try_into()
        .map_err(|_| ExtractError::Shape("delegate key"))?;
    let max_lifetime = u64::try_from(max_lifetime)
        .map(Duration::from_secs)
        .map_err(|_| ExtractError::Shape("max_lifetime"))?;
    let allowed_rights: Vec<(String,)> =
        authorizer.query_with_limits(rule!("data($r) <- allowed_right($r)"), limits.clone())?;
    let delegation = DelegationFacts {
        network,
        delegate,
        expires_at,
        max_lifetime,
        allowed_roles,
        allowed_rights: sorted(allowed_rights),
    };

    let Some(issuer) = issuer else {
        return Ok((delegation, None));
    };
    let key = *issuer;
    // One query per block: each costs a pass over the world.
    type Body = (Vec<u8>, SystemTime, SystemTime, Vec<u8>, i64);
    let (body, roles): (Body, Vec<String>) = if legacy {
        let rows: Vec<(Vec<u8>, SystemTime, SystemTime, String)> = authorizer.query_with_limits(
            rule!(
                "data($p, $i, $e, $r) <- node($p), issued($i), expires($e), role($r) trusting {key}",
                key = key
            ),
            limits.clone(),
        )?;
        single_with_roles(rows, |(p, i, e, r)| ((p, i, e, Vec::new(), 0), r))
    } else {
        type Row = (Vec<u8>, SystemTime, SystemTime, Vec<u8>, i64, String);
        let rows: Vec<Row> = authorizer
            .query_with_limits(
                rule!(
                    "data($p, $i, $e, $s, $f, $r) <- node($p), issued($i), expires($e), \
                     serial($s), revocation_floor($f), role($r) trusting {key}",
                    key = key
                ),
                limits.clone(),
            )?;
        single_with_roles(rows, |(p, i, e, s, f, r)| ((p, i, e, s, f), r))
    }
    .ok_or(ExtractError::Shape("membership facts"))?;
    let rights: Vec<(String,)> = authorizer.query_with_limits(
        rule!("data($r) <- right($r) trusting {key}", key = key),
        limits,
    )?;
    let (subject, issued_at, expires_at, serial, floor) = body;
    let subject = PeerId::from_bytes(&subject).map_err(|_| ExtractError::Shape("node id"))?;
    let (serial, revocation_floor) = if legacy {
        (None, 0)
    } else {
        if serial.len() != SERIAL_LEN {
            return Err(ExtractError::Shape("serial"));
        }
        let floor = u64::try_from(floor).map_err(|_| ExtractError::Shape("revocation_floor"))?;
        (Some(serial), floor)
    };
    Ok((
        delegation,
        Some(MembershipFacts {
            subject,
            roles,
            rights: sorted(rights),
            issued_at,
            expires_at,
            serial,
            revocation_floor,
        }),
    ))
}

/// Splits query rows into their single-valued part, which must be the same in every row, and
/// the sorted, deduplicated role column. `None` when there are no rows or the single-valued
/// part differs (a repeated `network`, `node`, ... fact).
fn single_with_roles<R, S: PartialEq>(
    rows: Vec<R>,
    split: impl Fn(R) -> (S, String),
) -> Option<(S, Vec<String>)> {
    let mut first: Option<S> = None;
    let mut roles = Vec::with_capacity(rows.len());
    for row in rows {
        let (single, role) = split(row);
        match &first {
            Some(f) if *f != single => return None,
            Some(_) => {}
            None => first = Some(single),
        }
        roles.push(role);
    }
    roles.sort();
    roles.dedup();
    first.map(|f| (f, roles))
}

fn sorted(rows: Vec<(String,)>) -> Vec<String> {
    let mut out: Vec<String> = rows.into_iter().map(|(r,)| r).collect();
    out.sort();
    out.dedup();
    out
}
