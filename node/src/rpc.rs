//! The server side of `/cordon/rpc/1`: who may run which command ([`Policy`]), the signed record
//! store behind `dht_put`/`dht_get` ([`RecordStore`]), and the command handlers ([`Handler`]).
//!
//! Pure and sans-IO: nothing here reads a clock, touches a socket or spawns a task. The event
//! loop decodes a request (the codec has already size-capped and validated it), gathers what the
//! node knows about the caller on that connection ([`Call`]) and about itself ([`Local`]), hands
//! both to [`Handler::handle`] with `now`, and sends back the [`RpcResponse`] it returns.
//!
//! # Order of checks for one call
//! 1. The request's network must be one where the caller proved its membership on this very
//!    connection (`not_member` otherwise), so a member of one network can neither run commands
//!    in nor learn about another.
//! 2. Local policy must allow the caller's roles and explicit rights to run the command
//!    (`denied`). The verdict is memoized per role/right set, so this is a hash lookup.
//! 3. Parameters are checked again, strictly (`invalid_params`, `too_large`): the handlers are
//!    public and must not rely on the codec having run.
//! 4. The command runs. Results only ever mention the request's network (and `info` only the
//!    networks the caller proved), so nothing leaks across networks.
//!
//! # Records and ownership
//! A record is stored under `(network, key)`. The first verified publisher of a key owns it:
//! another publisher may not overwrite it (`denied`), even with a higher sequence number. This
//! keeps one member from squatting or clobbering another member's keys without any global
//! naming authority. The owner replaces its record only with a strictly higher `seq` and a
//! timestamp no older than the stored one (`replay` otherwise), so a captured old record cannot
//! be put back. A key is freed when its owner's records are dropped with
//! [`RecordStore::remove_publisher`] (the event loop does this when a membership ends).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::Fact;
use biscuit_auth::macros::fact;
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits};
use cordon_membership::RevocationId;
use cordon_membership::token::{MAX_ROLES, valid_role};
use cordon_protocol::rpc::{check_echo_data, check_record_key};
use cordon_protocol::{
    Command, Limits, NetworkName, ProtocolError, ReplicatedRecord, RpcErrorCode, RpcRequest,
    RpcResponse, RpcResult, SignedRecord, Validate,
};
use libp2p::PeerId;

/// The policy used when the operator provides none. Also the documented example of the format.
pub const DEFAULT_POLICY: &str = r#"// Cordon rpc authorization policy (biscuit datalog).
//
// For every decision the node adds these facts, and nothing else:
//   role("...")     one per role in the caller's verified membership token for the network
//   right("...")    one per explicit right the caller holds (e.g. right("dht_put"))
//   command("...")  the command called: ping, info, peers, echo, dht_put or dht_get
// Policies are tried in order and the first one that matches decides; when none matches, the
// call is denied.

// Members may use every command except storing records.
role_command("member", "ping");
role_command("member", "info");
role_command("member", "peers");
role_command("member", "echo");
role_command("member", "dht_get");

// Operators may run everything.
allow if role("operator");
// An explicit right for a command allows that command.
allow if command($c), right($c);
allow if command($c), role($r), role_command($r, $c);
deny if true;
"#;

/// Most roles, and separately most explicit rights, considered for one call; a caller with more
/// is denied. Same bound as the roles of a membership token.
pub const MAX_GRANTS: usize = MAX_ROLES;

/// Limits of the authorization policy (config section `[authorization]`). Each has a safe
/// default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Largest policy source accepted, in bytes. Default 64 KiB.
    pub max_source_bytes: usize,
    /// Datalog: most facts during one evaluation. Default 1000.
    pub max_facts: u64,
    /// Datalog: most rule-application iterations during one evaluation. Default 32.
    pub max_iterations: u64,
    /// Datalog: longest evaluation of one command for one role set. Default 100 ms: the policy is
    /// the operator's own file (callers supply only bounded role and right names), and facts and
    /// iterations bound it tightly already; the time limit is a backstop that must not turn a
    /// busy machine's slow first evaluation into a spurious denial. A decision that hits a limit
    /// is a denial and is not memoized.
    #[serde(with = "cordon_host::config::duration")]
    pub max_time: Duration,
    /// Distinct (roles, rights) sets whose decisions are memoized; the oldest is forgotten first.
    /// Default 1024.
    pub cache_capacity: usize,
}

impl PolicyConfig {
    /// Checks the limits: a source of 1 KiB to 16 MiB, 10 to 1,000,000 facts, 1 to 1,000
    /// iterations, 1 ms to 10 s, a cache of 1 to 1,000,000 decisions.
    pub fn validate(&self) -> Result<(), cordon_host::config::Invalid> {
        use cordon_host::config::{duration_in_range, in_range};
        in_range("max_source_bytes", self.max_source_bytes, 1024, 16 << 20)?;
        in_range("max_facts", self.max_facts, 10, 1_000_000)?;
        in_range("max_iterations", self.max_iterations, 1, 1000)?;
        duration_in_range(
            "max_time",
            self.max_time,
            Duration::from_millis(1),
            Duration::from_secs(10),
        )?;
        in_range("cache_capacity", self.cache_capacity, 1, 1_000_000)
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_source_bytes: 64 * 1024,
            max_facts: 1000,
            max_iterations: 32,
            max_time: Duration::from_millis(100),
            cache_capacity: 1024,
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read rpc policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source is larger than `PolicyConfig::max_source_bytes`.
    #[error("rpc policy is over the {max}-byte limit; shorten it or raise max_source_bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The source is not valid biscuit datalog.
    #[error("rpc policy is not valid datalog: {detail}")]
    Parse {
        /// The parser's message.
        detail: String,
    },
    /// Evaluating the policy failed (e.g. it needs more facts, iterations or time than allowed).
    #[error("rpc policy cannot be evaluated within its limits: {detail}")]
    Evaluation {
        /// What failed.
        detail: String,
    },
}

/// A call refused by local policy. The reason is local detail for logs and audit; the caller
/// only sees the `denied` code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rpc denied: {reason}")]
#[non_exhaustive]
pub struct Denied {
    /// Why.
    pub reason: String,
}

impl Denied {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Bit `i` set: `Command::NAMES[i]` is allowed.
type CommandMask = u8;

/// Memoized decisions per canonical (roles, rights) key, evicted oldest first.
#[derive(Debug, Default)]
struct DecisionCache {
    decisions: HashMap<String, CommandMask>,
    order: VecDeque<String>,
}

impl DecisionCache {
    fn insert(&mut self, capacity: usize, key: String, mask: CommandMask) {
        if capacity == 0 {
            return;
        }
        if let Entry::Vacant(slot) = self.decisions.entry(key) {
            self.order.push_back(slot.key().clone());
            slot.insert(mask);
        }
        while self.decisions.len() > capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.decisions.remove(&oldest);
        }
    }
}

/// The node-local authorization policy: biscuit datalog mapping roles and explicit rights to
/// commands (see [`DEFAULT_POLICY`] for the format).
///
/// # Cost
/// Datalog runs only on the first call with a given set of roles and rights: it then decides
/// all six commands at once (six evaluations under [`PolicyConfig`]'s limits) and memoizes the
/// result as a bitmask in a bounded cache. Every later call with the same set costs a sort of
/// at most 2 x [`MAX_GRANTS`] short strings, one small allocation and a hash lookup under a
/// mutex: about a microsecond (see the `authorization_cost` test). The cache holds at most
/// `cache_capacity` sets; role sets come from verified tokens and are few in practice.
#[derive(Debug)]
pub struct Policy {
    builder: AuthorizerBuilder,
    limits: AuthorizerLimits,
    cache_capacity: usize,
    cache: Mutex<DecisionCache>,
}

impl Policy {
    /// Parses a policy and checks that it evaluates within `config`'s limits.
    pub fn from_source(source: &str, config: &PolicyConfig) -> Result<Self, PolicyError> {
        if source.len() > config.max_source_bytes {
            return Err(PolicyError::TooLarge {
                max: config.max_source_bytes,
            });
        }
        let limits = AuthorizerLimits {
            max_facts: config.max_facts,
            max_iterations: config.max_iterations,
            max_time: config.max_time,
        };
        let builder = AuthorizerBuilder::new()
            .set_limits(limits.clone())
            .code(source)
            .map_err(|e| PolicyError::Parse {
                detail: e.to_string(),
            })?;
        let policy = Self {
            builder,
            limits,
            cache_capacity: config.cache_capacity,
            cache: Mutex::new(DecisionCache::default()),
        };
        // A policy that cannot even decide for a caller without roles is broken: say so now
        // rather than denying every call at run time.
        policy
            .evaluate(&[], &[])
            .map_err(|detail| PolicyError::Evaluation { detail })?;
        Ok(policy)
    }

    /// [`DEFAULT_POLICY`] with `config`'s limits.
    pub fn default_policy(config: &PolicyConfig) -> Result<Self, PolicyError> {
        Self::from_source(DEFAULT_POLICY, config)
    }

    /// Reads and parses a policy file (at most `config.max_source_bytes` bytes are read).
    pub fn from_file(path: &Path, config: &PolicyConfig) -> Result<Self, PolicyError> {
        let read_error = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let cap = u64::try_from(config.max_source_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut source = String::new();
        file.take(cap)
            .read_to_string(&mut source)
            .map_err(read_error)?;
        Self::from_source(&source, config)
    }

    /// Whether a caller holding `roles` and explicit `rights` in a network may run `command`
    /// (one of [`Command::NAMES`]) there. Unknown commands, malformed role or right names, and
    /// more than [`MAX_GRANTS`] of either are denied.
    pub fn authorize(
        &self,
        roles: &[String],
        rights: &[String],
        command: &str,
    ) -> Result<(), Denied> {
        let Some(index) = Command::NAMES.iter().position(|&name| name == command) else {
            return Err(Denied::new("unknown command"));
        };
        let key = canonical_key(roles, rights)?;
        let cached = self.with_cache(|cache| cache.decisions.get(&key).copied());
        let mask = match cached {
            Some(mask) => mask,
            None => {
                let mask = self.evaluate(roles, rights).map_err(Denied::new)?;
                self.with_cache(|cache| cache.insert(self.cache_capacity, key, mask));
                mask
            }
        };
        if mask & (1 << index) != 0 {
            Ok(())
        } else {
            Err(Denied::new(format!(
                "policy allows none of roles {roles:?} and rights {rights:?} to call {command}"
            )))
        }
    }

    /// Distinct (roles, rights) sets currently memoized.
    pub fn cached_decisions(&self) -> usize {
        self.with_cache(|cache| cache.decisions.len())
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut DecisionCache) -> T) -> T {
        let mut guard = match self.cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Runs the datalog for every command. `Err` when any evaluation failed for another reason
    /// than the policy's verdict (a limit, an execution error): such a result must not be cached.
    fn evaluate(&self, roles: &[String], rights: &[String]) -> Result<CommandMask, String> {
        let facts = |builder: AuthorizerBuilder| -> Result<AuthorizerBuilder, String> {
            let mut builder = builder;
            let grants = roles
                .iter()
                .map(|r| fact!("role({r})", r = r.as_str()))
                .chain(rights.iter().map(|r| fact!("right({r})", r = r.as_str())));
            for f in grants {
                builder = add_fact(builder, f)?;
            }
            Ok(builder)
        };
        let base = facts(self.builder.clone())?;
        let mut mask: CommandMask = 0;
        for (index, name) in Command::NAMES.iter().enumerate() {
            let builder = add_fact(base.clone(), fact!("command({c})", c = *name))?;
            let mut authorizer = builder
                .build_unauthenticated()
                .map_err(|e| format!("policy evaluation failed: {e}"))?;
            match authorizer.authorize_with_limits(self.limits.clone()) {
                Ok(_) => mask |= 1 << index,
                Err(biscuit_auth::error::Token::FailedLogic(_)) => {}
                Err(e) => return Err(format!("policy evaluation failed: {e}")),
            }
        }
        Ok(mask)
    }
}

fn add_fact(builder: AuthorizerBuilder, fact: Fact) -> Result<AuthorizerBuilder, String> {
    builder
        .fact(fact)
        .map_err(|e| format!("policy evaluation failed: {e}"))
}

/// An unambiguous cache key for a set of roles and rights: names are `[a-z0-9_-]` only, so `,`
/// and `|` cannot occur inside them. Validates counts and names.
fn canonical_key(roles: &[String], rights: &[String]) -> Result<String, Denied> {
    fn sorted<'a>(kind: &str, names: &'a [String]) -> Result<Vec<&'a str>, Denied> {
        if names.len() > MAX_GRANTS {
            return Err(Denied::new(format!(
                "{} {kind}s; at most {MAX_GRANTS} considered",
                names.len()
            )));
        }
        if names.iter().any(|n| !valid_role(n)) {
            return Err(Denied::new(format!(
                "a {kind} name is not 1-32 bytes of [a-z0-9_-]"
            )));
        }
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
    let roles = sorted("role", roles)?;
    let rights = sorted("right", rights)?;
    let mut key = String::with_capacity(64);
    key.push_str(&roles.join(","));
    key.push('|');
    key.push_str(&rights.join(","));
    Ok(key)
}

/// Bounds and tolerances of the record store (config section `[records]`). Each has a safe
/// default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordStoreConfig {
    /// Records held in total, over all networks. Default 10 000.
    pub max_records: usize,
    /// Records one publisher may hold in one network. Default 100.
    pub max_per_publisher: usize,
    /// How far in the future a record's timestamp may be. Default 5 minutes.
    #[serde(with = "cordon_host::config::duration")]
    pub max_future_skew: Duration,
    /// Longest a record is kept after it was stored or last republished; it also ends when its
    /// publisher's membership token expires. Default 24 hours.
    #[serde(with = "cordon_host::config::duration")]
    pub ttl: Duration,
    /// How often a node republishes the records it published, with its current token (it also
    /// republishes at once when its token is renewed). Default 1 hour; at most `ttl`.
    #[serde(with = "cordon_host::config::duration")]
    pub republish_interval: Duration,
}

impl RecordStoreConfig {
    /// Checks the bounds: 1 to 10,000,000 records, at most as many per publisher, a skew of
    /// 1 s to 1 day, a ttl of 1 minute to 30 days, republishing every 10 s up to the ttl.
    pub fn validate(&self) -> Result<(), cordon_host::config::Invalid> {
        use cordon_host::config::{duration_in_range, in_range};
        in_range("max_records", self.max_records, 1, 10_000_000)?;
        in_range(
            "max_per_publisher",
            self.max_per_publisher,
            1,
            self.max_records,
        )?;
        duration_in_range(
            "max_future_skew",
            self.max_future_skew,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        )?;
        duration_in_range(
            "ttl",
            self.ttl,
            Duration::from_secs(60),
            Duration::from_secs(30 * 86_400),
        )?;
        duration_in_range(
            "republish_interval",
            self.republish_interval,
            Duration::from_secs(10),
            self.ttl,
        )
    }
}

impl Default for RecordStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_per_publisher: 100,
            max_future_skew: Duration::from_secs(5 * 60),
            ttl: Duration::from_secs(86_400),
            republish_interval: Duration::from_secs(3600),
        }
    }
}

/// A publisher's membership as its token verified: what [`Handler`] needs to decide whether
/// the publisher may store records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherMembership {
    /// Roles the token grants in the network.
    pub roles: Vec<String>,
    /// Explicit rights the token grants.
    pub rights: Vec<String>,
    /// When the membership ends.
    pub expires_at: SystemTime,
    /// The token's revocation ids: revoking any ends the publisher's records.
    pub revocation_ids: Vec<RevocationId>,
}

/// Verifies a publisher's membership token of the request's network: `Some` if `token` proves
/// `peer` a member there now (signature chain, subject, expiry, revocation). The event loop
/// passes its verifier (offline, cached); tests pass what they need.
pub type CheckToken<'a> = &'a dyn Fn(&PeerId, &[u8]) -> Option<PublisherMembership>;

/// Why a record may be kept: its publisher's token, and when the publisher's membership ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The publisher's membership token, replicated with the record.
    pub token: Vec<u8>,
    /// When the membership (and so the record) ends.
    pub expires_at: SystemTime,
    /// The token's revocation ids.
    pub revocation_ids: Vec<RevocationId>,
}

#[derive(Debug)]
struct StoredRecord {
    record: SignedRecord,
    publisher: PeerId,
    token: Vec<u8>,
    expires_at: SystemTime,
    revocation_ids: Vec<RevocationId>,
}

#[derive(Debug, Default)]
struct NetworkRecords {
    records: HashMap<Vec<u8>, StoredRecord>,
    per_publisher: HashMap<PeerId, usize>,
}

fn release(per_publisher: &mut HashMap<PeerId, usize>, publisher: &PeerId) {
    if let Entry::Occupied(mut count) = per_publisher.entry(*publisher) {
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
        }
    }
}

/// Signed records per network, bounded in total and per publisher.
///
/// See the module documentation for the ownership and freshness rules.
#[derive(Debug)]
pub struct RecordStore {
    config: RecordStoreConfig,
    limits: Limits,
    networks: HashMap<NetworkName, NetworkRecords>,
    total: usize,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The wire code for a parameter that failed validation.
fn params_code(err: &ProtocolError) -> RpcErrorCode {
    match err {
        ProtocolError::TooLong { .. } | ProtocolError::TooLarge { .. } => RpcErrorCode::TooLarge,
        _ => RpcErrorCode::InvalidParams,
    }
}

impl RecordStore {
    /// An empty store; records are size-checked against `limits`.
    pub fn new(config: RecordStoreConfig, limits: Limits) -> Self {
        Self {
            config,
            limits,
            networks: HashMap::new(),
            total: 0,
        }
    }

    /// Records held, over all networks.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Stores `record` in `network`, or says why not. Checks, in order: sizes (`too_large`,
    /// `invalid_params`), timestamp at most `max_future_skew` ahead of `now` (`invalid_params`),
    /// signature for `network` (`bad_signature`), publisher allowed to store by `grant`
    /// (`not_member_signer`), key owned by another publisher (`denied`), not newer than the
    /// stored version (`replay`), capacity (`rate_limited`, after dropping expired records).
    /// The record is kept until the grant's membership ends or `ttl` passes, whichever is
    /// first; returns when that is.
    pub fn put(
        &mut self,
        record: SignedRecord,
        network: &NetworkName,
        grant: impl Fn(&PeerId) -> Option<Grant>,
        now: SystemTime,
    ) -> Result<SystemTime, RpcErrorCode> {
        record.validate(&self.limits).map_err(|e| params_code(&e))?;
        let horizon = unix_secs(now).saturating_add(self.config.max_future_skew.as_secs());
        if record.timestamp > horizon {
            return Err(RpcErrorCode::InvalidParams);
        }
        let publisher = record
            .verify(network)
            .map_err(|_| RpcErrorCode::BadSignature)?;
        let Some(grant) = grant(&publisher).filter(|g| g.expires_at > now) else {
            return Err(RpcErrorCode::NotMemberSigner);
        };
        let expires_at = grant.expires_at.min(now + self.config.ttl);
        let max_per_publisher = self.config.max_per_publisher;
        if let Some(net) = self.networks.get_mut(network)
            && let Some(stored) = net.records.get_mut(&record.key)
        {
            let taken_over = stored.publisher != publisher;
            if taken_over && stored.expires_at > now {
                return Err(RpcErrorCode::Denied);
            }
            // The same record again is a republication (with a renewed token, say); an older
            // version of the owner's record is a replay even once the stored one expired.
            let republished = record == stored.record;
            if !taken_over
                && !republished
                && (record.seq <= stored.record.seq || record.timestamp < stored.record.timestamp)
            {
                return Err(RpcErrorCode::Replay);
            }
            if taken_over
                && net.per_publisher.get(&publisher).copied().unwrap_or(0) >= max_per_publisher
            {
                return Err(RpcErrorCode::RateLimited);
            }
            let previous = std::mem::replace(
                stored,
                StoredRecord {
                    record,
                    publisher,
                    token: grant.token,
                    expires_at,
                    revocation_ids: grant.revocation_ids,
                },
            );
            if taken_over {
                // The previous owner's record had expired: the key was free again.
                release(&mut net.per_publisher, &previous.publisher);
                *net.per_publisher.entry(publisher).or_insert(0) += 1;
            }
            return Ok(expires_at);
        }
        if self.total >= self.config.max_records {
            self.prune(now);
        }
        // A new key. Capacity is checked before any map entry is made, so refusals leave
        // nothing behind.
        let owned = self
            .networks
            .get(network)
            .and_then(|net| net.per_publisher.get(&publisher))
            .copied()
            .unwrap_or(0);
        if owned >= self.config.max_per_publisher || self.total >= self.config.max_records {
            return Err(RpcErrorCode::RateLimited);
        }
        let net = self.networks.entry(network.clone()).or_default();
        *net.per_publisher.entry(publisher).or_insert(0) += 1;
        net.records.insert(
            record.key.clone(),
            StoredRecord {
                record,
                publisher,
                token: grant.token,
                expires_at,
                revocation_ids: grant.revocation_ids,
            },
        );
        self.total += 1;
        Ok(expires_at)
    }

    /// Drops every record whose time is up (its ttl passed or its publisher's membership
    /// ended); returns their networks and keys.
    pub fn prune(&mut self, now: SystemTime) -> Vec<(NetworkName, Vec<u8>)> {
        self.drop_where(|stored| stored.expires_at <= now)
    }

    /// Drops every record whose publisher token has a revoked id; returns their networks and
    /// keys.
    pub fn drop_revoked(
        &mut self,
        is_revoked: impl Fn(&RevocationId) -> bool,
    ) -> Vec<(NetworkName, Vec<u8>)> {
        self.drop_where(|stored| stored.revocation_ids.iter().any(&is_revoked))
    }

    fn drop_where(
        &mut self,
        condemned: impl Fn(&StoredRecord) -> bool,
    ) -> Vec<(NetworkName, Vec<u8>)> {
        let mut dropped = Vec::new();
        for (network, net) in &mut self.networks {
            let per_publisher = &mut net.per_publisher;
            net.records.retain(|key, stored| {
                let live = !condemned(stored);
                if !live {
                    release(per_publisher, &stored.publisher);
                    dropped.push((network.clone(), key.clone()));
                }
                live
            });
        }
        self.networks.retain(|_, net| !net.records.is_empty());
        self.total -= dropped.len();
        dropped
    }

    /// The live record under `key` in `network`, with its publisher's token and when it ends.
    pub fn get_live(
        &self,
        network: &NetworkName,
        key: &[u8],
        now: SystemTime,
    ) -> Option<(&SignedRecord, &[u8], SystemTime)> {
        self.networks
            .get(network)?
            .records
            .get(key)
            .filter(|stored| stored.expires_at > now)
            .map(|stored| (&stored.record, stored.token.as_slice(), stored.expires_at))
    }

    /// The record stored under `key` in `network`, live or not (see [`Self::get_live`]).
    pub fn get(&self, network: &NetworkName, key: &[u8]) -> Option<&SignedRecord> {
        self.networks
            .get(network)?
            .records
            .get(key)
            .map(|stored| &stored.record)
    }

    /// The keys of the records `publisher` owns in `network`.
    pub fn keys_of(&self, network: &NetworkName, publisher: &PeerId) -> Vec<Vec<u8>> {
        self.networks.get(network).map_or_else(Vec::new, |net| {
            net.records
                .iter()
                .filter(|(_, stored)| stored.publisher == *publisher)
                .map(|(key, _)| key.clone())
                .collect()
        })
    }

    /// Drops every record `publisher` owns in `network` (its membership ended or was revoked),
    /// freeing its keys. Returns how many were dropped.
    pub fn remove_publisher(&mut self, network: &NetworkName, publisher: &PeerId) -> usize {
        let Some(net) = self.networks.get_mut(network) else {
            return 0;
        };
        if net.per_publisher.remove(publisher).is_none() {
            return 0;
        }
        let before = net.records.len();
        net.records
            .retain(|_, stored| stored.publisher != *publisher);
        let removed = before - net.records.len();
        self.total -= removed;
        if net.records.is_empty() {
            self.networks.remove(network);
        }
        removed
    }

    /// Drops every record of `network` (the node left it). Returns how many were dropped.
    pub fn remove_network(&mut self, network: &NetworkName) -> usize {
        let removed = self
            .networks
            .remove(network)
            .map_or(0, |net| net.records.len());
        self.total -= removed;
        removed
    }
}

/// What the event loop knows about the caller of one rpc, on the connection that carried it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The Noise-authenticated caller.
    pub caller: PeerId,
    /// Networks whose membership the caller proved on this connection (verified, not expired).
    pub verified: &'a BTreeSet<NetworkName>,
    /// The caller's roles in the request's network, from its verified token (empty if the
    /// caller is not verified there).
    pub roles: &'a [String],
    /// Explicit rights the caller holds in the request's network (e.g. `dht_put`).
    pub rights: &'a [String],
}

/// What the event loop knows about this node, for one rpc.
#[derive(Clone, Copy)]
pub struct Local<'a> {
    /// This node's software version, e.g. `cordon 0.1.0`: 1 to 64 bytes of printable text.
    pub version: &'a str,
    /// Networks this node serves. `info` reports only those the caller also proved.
    pub networks: &'a [NetworkName],
    /// Time since this node started.
    pub uptime: Duration,
    /// Peers verified as members of the request's network (on any live connection), and this
    /// node itself if it is a member. `peers` lists them (minus the caller).
    pub members: &'a BTreeSet<PeerId>,
    /// Verifies a record publisher's membership token (`dht_put`).
    pub check_token: CheckToken<'a>,
}

impl std::fmt::Debug for Local<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("version", &self.version)
            .field("networks", &self.networks)
            .field("uptime", &self.uptime)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Answers rpc calls: authorizes, validates and runs them. Owns the policy and the record
/// store; one per node, owned by the event loop.
#[derive(Debug)]
pub struct Handler {
    limits: Limits,
    policy: Policy,
    store: RecordStore,
}

fn grant(
    policy: &Policy,
    publisher: &PeerId,
    token: &[u8],
    check_token: CheckToken<'_>,
) -> Option<Grant> {
    if token.is_empty() {
        return None;
    }
    let membership = check_token(publisher, token)?;
    policy
        .authorize(&membership.roles, &membership.rights, "dht_put")
        .ok()?;
    Some(Grant {
        token: token.to_vec(),
        expires_at: membership.expires_at,
        revocation_ids: membership.revocation_ids,
    })
}

fn ok(result: RpcResult) -> RpcResponse {
    RpcResponse::Ok(result)
}

fn err(code: RpcErrorCode) -> RpcResponse {
    RpcResponse::error(code)
}

impl Handler {
    /// A handler checking calls against `policy` and storing records in `store`; parameters
    /// and results are bounded by `limits` (use the same limits as the rpc codec).
    pub fn new(limits: Limits, policy: Policy, store: RecordStore) -> Self {
        Self {
            limits,
            policy,
            store,
        }
    }

    /// The authorization policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The record store.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// The record store, e.g. to drop a revoked publisher's records or store our own.
    pub fn store_mut(&mut self) -> &mut RecordStore {
        &mut self.store
    }

    /// Handles one call end to end: membership of the request's network, policy, parameters,
    /// then the command. Never panics; every refusal is an error response with a stable code.
    pub fn handle(
        &mut self,
        request: RpcRequest,
        call: &Call<'_>,
        local: &Local<'_>,
        now: SystemTime,
    ) -> RpcResponse {
        let RpcRequest { network, command } = request;
        if !call.verified.contains(&network) {
            return err(RpcErrorCode::NotMember);
        }
        if self
            .policy
            .authorize(call.roles, call.rights, command.name())
            .is_err()
        {
            return err(RpcErrorCode::Denied);
        }
        match command {
            Command::Ping => self.ping(),
            Command::Info => self.info(local.version, local.networks, call.verified, local.uptime),
            Command::Peers => self.peers(&call.caller, local.members),
            Command::Echo { data } => self.echo(data),
            Command::DhtPut { record, token } => {
                self.dht_put(record, &token, &network, local.check_token, now)
            }
            Command::DhtGet { key } => self.dht_get(&network, &key, now),
        }
    }

    /// `ping`: always `pong`.
    pub fn ping(&self) -> RpcResponse {
        ok(RpcResult::Pong)
    }

    /// `info`: version, the networks served here that the caller also proved (`shared`), and
    /// uptime in whole seconds. A version that is not valid text is an `internal` error (a local
    /// bug, not the caller's).
    pub fn info(
        &self,
        version: &str,
        networks: &[NetworkName],
        shared: &BTreeSet<NetworkName>,
        uptime: Duration,
    ) -> RpcResponse {
        let networks: Vec<NetworkName> = networks
            .iter()
            .filter(|n| shared.contains(*n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(self.limits.rpc_max_networks)
            .cloned()
            .collect();
        let result = RpcResult::Info {
            version: version.to_owned(),
            networks,
            uptime_secs: uptime.as_secs(),
        };
        if result.validate(&self.limits).is_err() {
            return err(RpcErrorCode::Internal);
        }
        ok(result)
    }

    /// `peers`: the members of the request's network, without the caller, sorted, at most
    /// `Limits::rpc_max_peers`.
    pub fn peers(&self, caller: &PeerId, members: &BTreeSet<PeerId>) -> RpcResponse {
        let peers = members
            .iter()
            .filter(|p| *p != caller)
            .take(self.limits.rpc_max_peers)
            .map(|p| p.to_base58())
            .collect();
        ok(RpcResult::Peers { peers })
    }

    /// `echo`: the payload back, if it is at most `Limits::max_echo_bytes` (`too_large`).
    pub fn echo(&self, data: Vec<u8>) -> RpcResponse {
        match check_echo_data(&data, &self.limits) {
            Ok(()) => ok(RpcResult::Echo { data }),
            Err(e) => err(params_code(&e)),
        }
    }

    /// `dht_put`: stores the record in `network` if `token` proves its publisher a member there
    /// whom the policy allows `dht_put` (see [`Handler::store_record`]).
    pub fn dht_put(
        &mut self,
        record: SignedRecord,
        token: &[u8],
        network: &NetworkName,
        check_token: CheckToken<'_>,
        now: SystemTime,
    ) -> RpcResponse {
        match self.store_record(record, token, network, check_token, now) {
            Ok(_) => ok(RpcResult::Stored),
            Err(code) => err(code),
        }
    }

    /// Whether `token` proves `publisher` a member of the network (through `check_token`) whom
    /// the local policy allows `dht_put`: the same rule for a record put by rpc, pushed by
    /// Kademlia replication, or found by a lookup.
    pub fn grant(
        &self,
        publisher: &PeerId,
        token: &[u8],
        check_token: CheckToken<'_>,
    ) -> Option<Grant> {
        grant(&self.policy, publisher, token, check_token)
    }

    /// Stores `record` in `network` if `token` proves its publisher a member allowed `dht_put`
    /// ([`Handler::grant`]); every other check is [`RecordStore::put`]'s. Returns when the
    /// record ends.
    pub fn store_record(
        &mut self,
        record: SignedRecord,
        token: &[u8],
        network: &NetworkName,
        check_token: CheckToken<'_>,
        now: SystemTime,
    ) -> Result<SystemTime, RpcErrorCode> {
        if token.len() > self.limits.max_token_bytes {
            return Err(RpcErrorCode::TooLarge);
        }
        let policy = &self.policy;
        self.store.put(
            record,
            network,
            |publisher| grant(policy, publisher, token, check_token),
            now,
        )
    }

    /// Whether a record found in `network`'s Kademlia is to be believed for `key`: it is for
    /// that key, its signature verifies, and its token proves the publisher a member allowed
    /// `dht_put`.
    pub fn believe(
        &self,
        found: &ReplicatedRecord,
        network: &NetworkName,
        key: &[u8],
        check_token: CheckToken<'_>,
        now: SystemTime,
    ) -> bool {
        found.validate(&self.limits).is_ok()
            && found.record.key == key
            && found
                .record
                .verify(network)
                .ok()
                .and_then(|publisher| self.grant(&publisher, &found.token, check_token))
                .is_some_and(|g| g.expires_at > now)
    }

    /// `dht_get`: the record under `key` in `network`, or `record: None`. An empty key is
    /// `invalid_params`, an overlong one `too_large`.
    pub fn dht_get(&self, network: &NetworkName, key: &[u8], now: SystemTime) -> RpcResponse {
        if let Err(e) = check_record_key(key, &self.limits) {
            return err(params_code(&e));
        }
        ok(RpcResult::Record {
            record: self
                .store
                .get_live(network, key, now)
                .map(|(record, _, _)| record.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use libp2p::identity::Keypair;

    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy() -> Policy {
        Policy::default_policy(&PolicyConfig::default()).unwrap()
    }

    fn store() -> RecordStore {
        RecordStore::new(RecordStoreConfig::default(), Limits::default())
    }

    fn handler() -> Handler {
        Handler::new(Limits::default(), policy(), store())
    }

    fn sign(kp: &Keypair, network: &str, key: &[u8], seq: u64, ts: u64) -> SignedRecord {
        SignedRecord::sign(kp, &net(network), key.to_vec(), b"value".to_vec(), seq, ts).unwrap()
    }

    /// A grant lasting beyond every test's clock.
    fn forever() -> Grant {
        Grant {
            token: b"token".to_vec(),
            expires_at: at(T0 + 86_400 * 365),
            revocation_ids: Vec::new(),
        }
    }

    fn member_of(kp: &Keypair) -> impl Fn(&PeerId) -> Option<Grant> + use<> {
        let peer = kp.public().to_peer_id();
        move |p: &PeerId| (*p == peer).then(forever)
    }

    /// A stand-in token naming its subject and its rights: `<peer>|<right>,<right>`.
    fn fake_token(kp: &Keypair, rights: &[&str]) -> Vec<u8> {
        format!("{}|{}", kp.public().to_peer_id(), rights.join(",")).into_bytes()
    }

    /// Checks [`fake_token`]s: a member with the rights it names, until a year after `T0`.
    fn check_fake(peer: &PeerId, token: &[u8]) -> Option<PublisherMembership> {
        let text = std::str::from_utf8(token).ok()?;
        let (subject, rights) = text.split_once('|')?;
        (subject == peer.to_string()).then(|| PublisherMembership {
            roles: vec!["member".to_owned()],
            rights: rights
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            expires_at: at(T0 + 86_400 * 365),
            revocation_ids: Vec::new(),
        })
    }

    // ---- policy ----

    #[test]
    fn default_policy_member_rights() {
        let policy = policy();
        let member = strings(&["member"]);
        for command in ["ping", "info", "peers", "echo", "dht_get"] {
            assert_eq!(policy.authorize(&member, &[], command), Ok(()), "{command}");
        }
        let denied = policy.authorize(&member, &[], "dht_put").unwrap_err();
        assert!(denied.reason.contains("dht_put"), "{denied}");
    }

    #[test]
    fn default_policy_operator_may_do_everything() {
        let policy = policy();
        for roles in [strings(&["operator"]), strings(&["member", "operator"])] {
            for command in Command::NAMES {
                assert_eq!(policy.authorize(&roles, &[], command), Ok(()), "{command}");
            }
        }
    }

    #[test]
    fn explicit_right_allows_only_its_command() {
        let policy = policy();
        let member = strings(&["member"]);
        let put = strings(&["dht_put"]);
        assert_eq!(policy.authorize(&member, &put, "dht_put"), Ok(()));
        // A right alone, without any role, allows its command and nothing else.
        assert_eq!(policy.authorize(&[], &put, "dht_put"), Ok(()));
        assert!(policy.authorize(&[], &put, "ping").is_err());
    }

    #[test]
    fn no_role_unknown_role_and_unknown_command_are_denied() {
        let policy = policy();
        for command in Command::NAMES {
            assert!(policy.authorize(&[], &[], command).is_err());
            assert!(
                policy
                    .authorize(&strings(&["guest"]), &[], command)
                    .is_err()
            );
        }
        let operator = strings(&["operator"]);
        assert!(policy.authorize(&operator, &[], "shutdown").is_err());
        assert!(policy.authorize(&operator, &[], "").is_err());
    }

    #[test]
    fn malformed_or_too_many_grants_are_denied() {
        let policy = policy();
        // Names that could confuse the cache key or the datalog are refused, not escaped.
        for bad in [
            "operator,member",
            "a|b",
            "Operator",
            "",
            "op\"); allow if true; //",
        ] {
            assert!(
                policy.authorize(&strings(&[bad]), &[], "ping").is_err(),
                "{bad:?}"
            );
            assert!(
                policy
                    .authorize(&strings(&["member"]), &strings(&[bad]), "ping")
                    .is_err(),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("r{i}")).collect();
        let mut with_member = many.clone();
        with_member[0] = "member".to_owned();
        assert!(policy.authorize(&with_member, &[], "ping").is_err());
        assert!(
            policy
                .authorize(&strings(&["member"]), &many, "ping")
                .is_err()
        );
    }

    #[test]
    fn decisions_are_memoized_per_set_and_bounded() {
        let config = PolicyConfig {
            cache_capacity: 2,
            ..PolicyConfig::default()
        };
        let policy = Policy::default_policy(&config).unwrap();
        assert_eq!(policy.cached_decisions(), 0);
        let member = strings(&["member"]);
        policy.authorize(&member, &[], "ping").unwrap();
        // Order and repetition do not make a new set.
        policy
            .authorize(&strings(&["operator", "member"]), &[], "ping")
            .unwrap();
        policy
            .authorize(&strings(&["member", "operator", "member"]), &[], "ping")
            .unwrap();
        assert_eq!(policy.cached_decisions(), 2);
        // Roles and rights with the same name are different sets.
        assert!(
            policy
                .authorize(&[], &strings(&["member"]), "ping")
                .is_err()
        );
        assert_eq!(policy.cached_decisions(), 2, "bounded by cache_capacity");
        // Evicted sets are evaluated again, with the same answer.
        assert_eq!(policy.authorize(&member, &[], "ping"), Ok(()));
        assert!(policy.authorize(&member, &[], "dht_put").is_err());
    }

    #[test]
    fn custom_policy_file_and_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpc-policy.datalog");
        std::fs::write(
            &path,
            "allow if role(\"monitor\"), command(\"ping\");\ndeny if true;\n",
        )
        .unwrap();
        let config = PolicyConfig::default();
        let policy = Policy::from_file(&path, &config).unwrap();
        let monitor = strings(&["monitor"]);
        assert_eq!(policy.authorize(&monitor, &[], "ping"), Ok(()));
        assert!(policy.authorize(&monitor, &[], "info").is_err());
        assert!(
            policy
                .authorize(&strings(&["operator"]), &[], "ping")
                .is_err()
        );

        assert!(matches!(
            Policy::from_source("allow if role(", &config),
            Err(PolicyError::Parse { .. })
        ));
        let small = PolicyConfig {
            max_source_bytes: 10,
            ..PolicyConfig::default()
        };
        assert!(matches!(
            Policy::default_policy(&small),
            Err(PolicyError::TooLarge { max: 10 })
        ));
        // A policy that needs more facts than allowed is refused at load time.
        let digits: String = (0..20).map(|i| format!("d({i});\n")).collect();
        let heavy = format!("{digits}p($a, $b, $c) <- d($a), d($b), d($c);\nallow if true;\n");
        let err = Policy::from_source(&heavy, &config).unwrap_err();
        assert!(matches!(err, PolicyError::Evaluation { .. }), "{err:?}");
        assert!(matches!(
            Policy::from_file(&dir.path().join("missing"), &config),
            Err(PolicyError::Read { .. })
        ));
    }

    #[test]
    fn policy_is_send_and_sync() {
        fn assert_traits<T: Send + Sync>() {}
        assert_traits::<Policy>();
        assert_traits::<Handler>();
    }

    /// Prints the cost of one authorization; no timed assertion (machines differ).
    #[test]
    fn authorization_cost() {
        let policy = policy();
        let roles = strings(&["member"]);
        let rights = strings(&["dht_put"]);

        let cold = Instant::now();
        policy.authorize(&roles, &rights, "ping").unwrap();
        let cold = cold.elapsed();

        const N: u32 = 100_000;
        let start = Instant::now();
        for i in 0..N {
            let command = Command::NAMES[(i as usize) % Command::NAMES.len()];
            std::hint::black_box(policy.authorize(
                std::hint::black_box(&roles),
                std::hint::black_box(&rights),
                command,
            ))
            .unwrap();
        }
        let warm = start.elapsed() / N;
        println!(
            "rpc authorization: first call for a role set {cold:?} (datalog, six commands), \
             memoized {warm:?} per call"
        );
    }

    // ---- record store ----

    #[test]
    fn stores_and_updates_a_members_record() {
        let alice = Keypair::generate_ed25519();
        let mut store = store();
        let acme = net("acme");
        store
            .put(
                sign(&alice, "acme", b"k", 1, T0),
                &acme,
                member_of(&alice),
                at(T0),
            )
            .unwrap();
        assert_eq!(store.get(&acme, b"k").unwrap().seq, 1);
        store
            .put(
                sign(&alice, "acme", b"k", 2, T0 + 1),
                &acme,
                member_of(&alice),
                at(T0),
            )
            .unwrap();
        assert_eq!(store.get(&acme, b"k").unwrap().seq, 2);
        assert_eq!(store.len(), 1);
        // Same timestamp with a higher seq is a valid update.
        store
            .put(
                sign(&alice, "acme", b"k", 3, T0 + 1),
                &acme,
                member_of(&alice),
                at(T0),
            )
            .unwrap();
        assert!(store.get(&net("other"), b"k").is_none());
    }

    #[test]
    fn forged_record_is_bad_signature() {
        let alice = Keypair::generate_ed25519();
        let mallory = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        // Alice's signature over other data, with the value swapped.
        let mut forged = sign(&alice, "acme", b"k", 1, T0);
        forged.value = b"evil".to_vec();
        assert_eq!(
            store.put(forged, &acme, member_of(&alice), at(T0)),
            Err(RpcErrorCode::BadSignature)
        );
        // Mallory's signature presented under Alice's key.
        let mut stolen = sign(&mallory, "acme", b"k", 1, T0);
        stolen.publisher = alice.public().encode_protobuf();
        assert_eq!(
            store.put(stolen, &acme, member_of(&alice), at(T0)),
            Err(RpcErrorCode::BadSignature)
        );
        // A record signed for another network.
        assert_eq!(
            store.put(
                sign(&alice, "other", b"k", 1, T0),
                &acme,
                member_of(&alice),
                at(T0)
            ),
            Err(RpcErrorCode::BadSignature)
        );
        // Garbage publisher key.
        let mut garbage = sign(&alice, "acme", b"k", 1, T0);
        garbage.publisher = vec![0xff; 36];
        assert_eq!(
            store.put(garbage, &acme, |_: &PeerId| Some(forever()), at(T0)),
            Err(RpcErrorCode::BadSignature)
        );
        assert!(store.is_empty());
    }

    #[test]
    fn replayed_record_is_replay() {
        let alice = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        let first = sign(&alice, "acme", b"k", 5, T0);
        store
            .put(first.clone(), &acme, member_of(&alice), at(T0))
            .unwrap();
        // The very same record again is a republication: it stays, with the newer grant's
        // token and end (Kademlia re-replicates, the publisher republishes after a renewal).
        let renewed = |_: &PeerId| {
            Some(Grant {
                token: b"renewed".to_vec(),
                expires_at: at(T0 + 50),
                revocation_ids: Vec::new(),
            })
        };
        assert_eq!(store.put(first, &acme, renewed, at(T0)), Ok(at(T0 + 50)));
        assert_eq!(
            store
                .get_live(&acme, b"k", at(T0))
                .map(|(_, token, _)| token),
            Some(&b"renewed"[..])
        );
        // A lower sequence number, even with a newer timestamp.
        assert_eq!(
            store.put(
                sign(&alice, "acme", b"k", 4, T0 + 10),
                &acme,
                member_of(&alice),
                at(T0)
            ),
            Err(RpcErrorCode::Replay)
        );
        // A higher sequence number with an older timestamp.
        assert_eq!(
            store.put(
                sign(&alice, "acme", b"k", 6, T0 - 1),
                &acme,
                member_of(&alice),
                at(T0)
            ),
            Err(RpcErrorCode::Replay)
        );
        assert_eq!(store.get(&acme, b"k").unwrap().seq, 5);
    }

    #[test]
    fn foreign_signed_record_is_not_member_signer() {
        let alice = Keypair::generate_ed25519();
        let outsider = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        assert_eq!(
            store.put(
                sign(&outsider, "acme", b"k", 1, T0),
                &acme,
                member_of(&alice),
                at(T0)
            ),
            Err(RpcErrorCode::NotMemberSigner)
        );
        assert!(store.is_empty());
    }

    #[test]
    fn another_publisher_cannot_overwrite_a_key() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let acme = net("acme");
        let both = |p: &PeerId| {
            (*p == alice.public().to_peer_id() || *p == bob.public().to_peer_id()).then(forever)
        };
        let mut store = store();
        store
            .put(sign(&alice, "acme", b"k", 1, T0), &acme, both, at(T0))
            .unwrap();
        assert_eq!(
            store.put(sign(&bob, "acme", b"k", 99, T0 + 1), &acme, both, at(T0)),
            Err(RpcErrorCode::Denied)
        );
        // The same key in another network is a different record.
        let other = net("other");
        store
            .put(sign(&bob, "other", b"k", 1, T0), &other, both, at(T0))
            .unwrap();
        // Once Alice's records are dropped the key is free.
        assert_eq!(
            store.remove_publisher(&acme, &alice.public().to_peer_id()),
            1
        );
        store
            .put(sign(&bob, "acme", b"k", 1, T0), &acme, both, at(T0))
            .unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.remove_network(&other), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn future_timestamps_and_bad_sizes_are_invalid() {
        let alice = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        let now = at(T0);
        assert_eq!(
            store.put(
                sign(&alice, "acme", b"k", 1, T0 + 301),
                &acme,
                member_of(&alice),
                now
            ),
            Err(RpcErrorCode::InvalidParams)
        );
        store
            .put(
                sign(&alice, "acme", b"k", 1, T0 + 300),
                &acme,
                member_of(&alice),
                now,
            )
            .unwrap();
        let big = SignedRecord::sign(&alice, &acme, b"big".to_vec(), vec![0; 4097], 1, T0).unwrap();
        assert_eq!(
            store.put(big, &acme, member_of(&alice), now),
            Err(RpcErrorCode::TooLarge)
        );
        let mut short_sig = sign(&alice, "acme", b"s", 1, T0);
        short_sig.signature.truncate(10);
        assert_eq!(
            store.put(short_sig, &acme, member_of(&alice), now),
            Err(RpcErrorCode::InvalidParams)
        );
    }

    #[test]
    fn store_bounds() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let acme = net("acme");
        let anyone = |_: &PeerId| Some(forever());
        let mut store = RecordStore::new(
            RecordStoreConfig {
                max_records: 5,
                max_per_publisher: 3,
                ..RecordStoreConfig::default()
            },
            Limits::default(),
        );
        for i in 0..3u8 {
            store
                .put(sign(&alice, "acme", &[i], 1, T0), &acme, anyone, at(T0))
                .unwrap();
        }
        assert_eq!(
            store.put(sign(&alice, "acme", &[9], 1, T0), &acme, anyone, at(T0)),
            Err(RpcErrorCode::RateLimited),
            "per-publisher cap"
        );
        // Updating an existing key is not a new record.
        store
            .put(sign(&alice, "acme", &[0], 2, T0), &acme, anyone, at(T0))
            .unwrap();
        // The per-publisher cap is per network.
        store
            .put(
                sign(&alice, "other", &[0], 1, T0),
                &net("other"),
                anyone,
                at(T0),
            )
            .unwrap();
        store
            .put(sign(&bob, "acme", &[10], 1, T0), &acme, anyone, at(T0))
            .unwrap();
        assert_eq!(store.len(), 5);
        assert_eq!(
            store.put(sign(&bob, "acme", &[11], 1, T0), &acme, anyone, at(T0)),
            Err(RpcErrorCode::RateLimited),
            "total cap"
        );
        assert_eq!(store.len(), 5);
        assert_eq!(
            store.remove_publisher(&acme, &alice.public().to_peer_id()),
            3
        );
        assert_eq!(
            store.remove_publisher(&acme, &alice.public().to_peer_id()),
            0
        );
        store
            .put(sign(&bob, "acme", &[11], 1, T0), &acme, anyone, at(T0))
            .unwrap();
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn records_end_with_their_publishers_membership_or_the_ttl() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        let until = |secs: u64| {
            move |_: &PeerId| {
                Some(Grant {
                    token: b"t".to_vec(),
                    expires_at: at(T0 + secs),
                    revocation_ids: Vec::new(),
                })
            }
        };
        // Alice's membership ends in 60 s: so does her record.
        let ends = store
            .put(sign(&alice, "acme", b"k", 1, T0), &acme, until(60), at(T0))
            .unwrap();
        assert_eq!(ends, at(T0 + 60));
        assert!(store.get_live(&acme, b"k", at(T0 + 59)).is_some());
        assert!(store.get_live(&acme, b"k", at(T0 + 60)).is_none());
        // Expired, her record still refuses an older version of itself.
        assert_eq!(
            store.put(
                sign(&alice, "acme", b"k", 0, T0),
                &acme,
                until(1000),
                at(T0 + 61)
            ),
            Err(RpcErrorCode::Replay)
        );
        // A grant already over is no grant.
        assert_eq!(
            store.put(
                sign(&bob, "acme", b"j", 1, T0),
                &acme,
                until(60),
                at(T0 + 61)
            ),
            Err(RpcErrorCode::NotMemberSigner)
        );
        // Once Alice's record expired, Bob may take the key over.
        store
            .put(
                sign(&bob, "acme", b"k", 1, T0),
                &acme,
                until(1000),
                at(T0 + 61),
            )
            .unwrap();
        assert_eq!(store.keys_of(&acme, &alice.public().to_peer_id()).len(), 0);
        assert_eq!(store.keys_of(&acme, &bob.public().to_peer_id()).len(), 1);
        // The ttl caps a long membership, and pruning drops what is over.
        let far = at(T0 + 61) + store.config.ttl;
        let ends = store
            .put(
                sign(&bob, "acme", b"long", 1, T0),
                &acme,
                until(u64::from(u32::MAX)),
                at(T0 + 61),
            )
            .unwrap();
        assert_eq!(ends, far);
        assert_eq!(store.len(), 2);
        let dropped = store.prune(at(T0 + 1000));
        assert_eq!(dropped, vec![(acme.clone(), b"k".to_vec())]);
        assert_eq!(store.len(), 1);
        assert!(store.prune(far).len() == 1 && store.is_empty());
    }

    #[test]
    fn a_revoked_publishers_records_are_dropped() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = store();
        let with_id = |id: u8| {
            move |_: &PeerId| {
                Some(Grant {
                    revocation_ids: vec![RevocationId(vec![id; 32])],
                    ..forever()
                })
            }
        };
        store
            .put(sign(&alice, "acme", b"a", 1, T0), &acme, with_id(1), at(T0))
            .unwrap();
        store
            .put(sign(&bob, "acme", b"b", 1, T0), &acme, with_id(2), at(T0))
            .unwrap();
        let dropped = store.drop_revoked(|id| id.0 == vec![1; 32]);
        assert_eq!(dropped, vec![(acme.clone(), b"a".to_vec())]);
        assert!(store.get(&acme, b"a").is_none() && store.get(&acme, b"b").is_some());
        // Alice's key is free again.
        assert!(
            store
                .keys_of(&acme, &alice.public().to_peer_id())
                .is_empty()
        );
    }

    #[test]
    fn a_full_store_makes_room_by_dropping_expired_records() {
        let alice = Keypair::generate_ed25519();
        let acme = net("acme");
        let mut store = RecordStore::new(
            RecordStoreConfig {
                max_records: 2,
                max_per_publisher: 2,
                ..RecordStoreConfig::default()
            },
            Limits::default(),
        );
        let until = |secs: u64| {
            move |_: &PeerId| {
                Some(Grant {
                    token: b"t".to_vec(),
                    expires_at: at(T0 + secs),
                    revocation_ids: Vec::new(),
                })
            }
        };
        for key in [b"a", b"b"] {
            store
                .put(sign(&alice, "acme", key, 1, T0), &acme, until(10), at(T0))
                .unwrap();
        }
        assert_eq!(
            store.put(sign(&alice, "acme", b"c", 1, T0), &acme, until(10), at(T0)),
            Err(RpcErrorCode::RateLimited)
        );
        store
            .put(
                sign(&alice, "acme", b"c", 1, T0),
                &acme,
                until(100),
                at(T0 + 10),
            )
            .unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_found_record_is_believed_only_with_a_token_allowing_dht_put() {
        let handler = handler();
        let acme = net("acme");
        let alice = Keypair::generate_ed25519();
        let mallory = Keypair::generate_ed25519();
        let found = |kp: &Keypair, key: &[u8], token: Vec<u8>| ReplicatedRecord {
            record: sign(kp, "acme", key, 1, T0),
            token,
        };
        let good = found(&alice, b"k", fake_token(&alice, &["dht_put"]));
        assert!(handler.believe(&good, &acme, b"k", &check_fake, at(T0)));
        // Another key's record, a token without the right, someone else's token, no token, the
        // wrong network.
        assert!(!handler.believe(&good, &acme, b"other", &check_fake, at(T0)));
        let plain = found(&mallory, b"k", fake_token(&mallory, &[]));
        assert!(!handler.believe(&plain, &acme, b"k", &check_fake, at(T0)));
        let borrowed = found(&mallory, b"k", fake_token(&alice, &["dht_put"]));
        assert!(!handler.believe(&borrowed, &acme, b"k", &check_fake, at(T0)));
        let bare = found(&alice, b"k", Vec::new());
        assert!(!handler.believe(&bare, &acme, b"k", &check_fake, at(T0)));
        assert!(!handler.believe(&good, &net("other"), b"k", &check_fake, at(T0)));
        // Past the membership's end.
        assert!(!handler.believe(&good, &acme, b"k", &check_fake, at(T0 + 86_400 * 366)));
    }

    // ---- handler ----

    struct Fixture {
        caller: Keypair,
        other: Keypair,
        verified: BTreeSet<NetworkName>,
        networks: Vec<NetworkName>,
        members: BTreeSet<PeerId>,
    }

    impl Fixture {
        fn new() -> Self {
            let caller = Keypair::generate_ed25519();
            let other = Keypair::generate_ed25519();
            let members = [caller.public().to_peer_id(), other.public().to_peer_id()]
                .into_iter()
                .collect();
            Self {
                caller,
                other,
                verified: [net("acme")].into_iter().collect(),
                networks: vec![net("acme"), net("secret")],
                members,
            }
        }

        fn call<'a>(&'a self, roles: &'a [String], rights: &'a [String]) -> Call<'a> {
            Call {
                caller: self.caller.public().to_peer_id(),
                verified: &self.verified,
                roles,
                rights,
            }
        }

        fn local(&self) -> Local<'_> {
            Local {
                version: "cordon 0.1.0",
                networks: &self.networks,
                uptime: Duration::from_millis(90_500),
                members: &self.members,
                check_token: &check_fake,
            }
        }
    }

    fn request(network: &str, command: Command) -> RpcRequest {
        RpcRequest {
            network: net(network),
            command,
        }
    }

    fn code(response: &RpcResponse) -> Option<RpcErrorCode> {
        match response {
            RpcResponse::Err { code, .. } => Some(*code),
            RpcResponse::Ok(_) => None,
        }
    }

    #[test]
    fn handles_every_member_command() {
        let fx = Fixture::new();
        let mut handler = handler();
        let member = strings(&["member"]);
        let call = fx.call(&member, &[]);
        let local = fx.local();
        let mut run = |command| handler.handle(request("acme", command), &call, &local, at(T0));

        assert_eq!(run(Command::Ping), RpcResponse::Ok(RpcResult::Pong));
        assert_eq!(
            run(Command::Info),
            RpcResponse::Ok(RpcResult::Info {
                version: "cordon 0.1.0".to_owned(),
                networks: vec![net("acme")],
                uptime_secs: 90,
            }),
            "info names only networks the caller proved"
        );
        assert_eq!(
            run(Command::Peers),
            RpcResponse::Ok(RpcResult::Peers {
                peers: vec![fx.other.public().to_peer_id().to_base58()],
            }),
            "peers lists the network's members without the caller"
        );
        assert_eq!(
            run(Command::Echo {
                data: vec![1, 2, 3]
            }),
            RpcResponse::Ok(RpcResult::Echo {
                data: vec![1, 2, 3]
            })
        );
        assert_eq!(
            run(Command::DhtGet { key: b"k".to_vec() }),
            RpcResponse::Ok(RpcResult::Record { record: None })
        );
        // Members may not store records under the default policy.
        let record = sign(&fx.caller, "acme", b"k", 1, T0);
        assert_eq!(
            code(&run(Command::DhtPut {
                record,
                token: fake_token(&fx.caller, &["dht_put"])
            })),
            Some(RpcErrorCode::Denied)
        );
    }

    #[test]
    fn put_then_get_with_the_right() {
        let fx = Fixture::new();
        let mut handler = handler();
        let member = strings(&["member"]);
        let put = strings(&["dht_put"]);
        let call = fx.call(&member, &put);
        let local = fx.local();
        let record = sign(&fx.caller, "acme", b"k", 1, T0);
        let token = fake_token(&fx.caller, &["dht_put"]);
        let put_request = |record: &SignedRecord, token: &[u8]| {
            request(
                "acme",
                Command::DhtPut {
                    record: record.clone(),
                    token: token.to_vec(),
                },
            )
        };
        // Without its token, or with a token that does not allow `dht_put`, the publisher's
        // record is refused even though the caller may call `dht_put`.
        for token in [Vec::new(), fake_token(&fx.caller, &[])] {
            assert_eq!(
                code(&handler.handle(put_request(&record, &token), &call, &local, at(T0))),
                Some(RpcErrorCode::NotMemberSigner)
            );
        }
        assert_eq!(
            handler.handle(put_request(&record, &token), &call, &local, at(T0)),
            RpcResponse::Ok(RpcResult::Stored)
        );
        assert_eq!(
            handler.handle(
                request("acme", Command::DhtGet { key: b"k".to_vec() }),
                &call,
                &local,
                at(T0)
            ),
            RpcResponse::Ok(RpcResult::Record {
                record: Some(record.clone())
            })
        );
        // The same record again is a republication; an older one is a replay.
        assert_eq!(
            handler.handle(put_request(&record, &token), &call, &local, at(T0)),
            RpcResponse::Ok(RpcResult::Stored)
        );
        let older = sign(&fx.caller, "acme", b"k", 1, T0 - 1);
        assert_eq!(
            code(&handler.handle(put_request(&older, &token), &call, &local, at(T0))),
            Some(RpcErrorCode::Replay)
        );
        // A record by a non-member, relayed by a member with its own token.
        let outsider = Keypair::generate_ed25519();
        let foreign = sign(&outsider, "acme", b"x", 1, T0);
        assert_eq!(
            code(&handler.handle(put_request(&foreign, &token), &call, &local, at(T0))),
            Some(RpcErrorCode::NotMemberSigner)
        );
        assert_eq!(handler.store().len(), 1);
    }

    #[test]
    fn calls_in_unproven_networks_are_not_member() {
        let fx = Fixture::new();
        let mut handler = handler();
        let operator = strings(&["operator"]);
        let call = fx.call(&operator, &[]);
        let local = fx.local();
        // The node serves "secret" but the caller did not prove it on this connection.
        for network in ["secret", "unknown"] {
            for command in [Command::Ping, Command::Peers, Command::Info] {
                let response = handler.handle(request(network, command), &call, &local, at(T0));
                assert_eq!(code(&response), Some(RpcErrorCode::NotMember));
            }
        }
        // No roles at all (e.g. a caller verified elsewhere): denied.
        let call = fx.call(&[], &[]);
        let response = handler.handle(request("acme", Command::Ping), &call, &local, at(T0));
        assert_eq!(code(&response), Some(RpcErrorCode::Denied));
    }

    #[test]
    fn parameters_are_checked_by_every_helper() {
        let fx = Fixture::new();
        let mut handler = handler();
        let acme = net("acme");

        // echo
        assert!(code(&handler.echo(vec![0; 1024])).is_none());
        assert!(code(&handler.echo(Vec::new())).is_none());
        assert_eq!(
            code(&handler.echo(vec![0; 1025])),
            Some(RpcErrorCode::TooLarge)
        );

        // dht_get
        assert_eq!(
            code(&handler.dht_get(&acme, &[], at(T0))),
            Some(RpcErrorCode::InvalidParams)
        );
        assert_eq!(
            code(&handler.dht_get(&acme, &[0; 129], at(T0))),
            Some(RpcErrorCode::TooLarge)
        );
        assert!(code(&handler.dht_get(&acme, &[0; 128], at(T0))).is_none());

        // dht_put
        let mut bad = sign(&fx.caller, "acme", b"k", 1, T0);
        bad.key = Vec::new();
        assert_eq!(
            code(&handler.dht_put(
                bad,
                &fake_token(&fx.caller, &["dht_put"]),
                &acme,
                &check_fake,
                at(T0)
            )),
            Some(RpcErrorCode::InvalidParams)
        );
        let mut bad = sign(&fx.caller, "acme", b"k", 1, T0);
        bad.key = vec![0; 129];
        assert_eq!(
            code(&handler.dht_put(
                bad,
                &fake_token(&fx.caller, &["dht_put"]),
                &acme,
                &check_fake,
                at(T0)
            )),
            Some(RpcErrorCode::TooLarge)
        );

        // info: a broken local version is a local error, never sent as-is.
        let verified = fx.verified.clone();
        for version in ["", "v\n1", &"v".repeat(65)] {
            assert_eq!(
                code(&handler.info(version, &fx.networks, &verified, Duration::ZERO)),
                Some(RpcErrorCode::Internal),
                "{version:?}"
            );
        }
        // info and peers are truncated to the wire limits.
        let many: Vec<NetworkName> = (0..40).map(|i| net(&format!("n{i:02}"))).collect();
        let all: BTreeSet<NetworkName> = many.iter().cloned().collect();
        let RpcResponse::Ok(RpcResult::Info { networks, .. }) =
            handler.info("v", &many, &all, Duration::ZERO)
        else {
            panic!("info failed")
        };
        assert_eq!(networks.len(), Limits::default().rpc_max_networks);
        let crowd: BTreeSet<PeerId> = (0..300).map(|_| PeerId::random()).collect();
        let RpcResponse::Ok(RpcResult::Peers { peers }) =
            handler.peers(&fx.caller.public().to_peer_id(), &crowd)
        else {
            panic!("peers failed")
        };
        assert_eq!(peers.len(), Limits::default().rpc_max_peers);

        // ping takes no parameters.
        assert_eq!(handler.ping(), RpcResponse::Ok(RpcResult::Pong));
    }

    #[test]
    fn every_response_passes_wire_validation() {
        let fx = Fixture::new();
        let mut handler = handler();
        let operator = strings(&["operator"]);
        let call = fx.call(&operator, &[]);
        let local = fx.local();
        let limits = Limits::default();
        let commands = [
            Command::Ping,
            Command::Info,
            Command::Peers,
            Command::Echo {
                data: vec![7; 1024],
            },
            Command::DhtPut {
                record: sign(&fx.caller, "acme", b"k", 1, T0),
                token: fake_token(&fx.caller, &["dht_put"]),
            },
            Command::DhtGet { key: b"k".to_vec() },
        ];
        for command in commands {
            let response = handler.handle(request("acme", command), &call, &local, at(T0));
            assert!(code(&response).is_none(), "{response:?}");
            assert_eq!(response.validate(&limits), Ok(()));
            cordon_protocol::encode(&response, limits.rpc_max_response_bytes).unwrap();
        }
    }
}
