//! Rate limits and bans: pure, sans-IO building blocks.
//!
//! Nothing here reads a clock, spawns a task or touches a socket. Every call that depends on
//! time is handed `now: Instant` by its caller (the swarm hooks in [`crate::filter`], the rpc
//! service, the event loop), so the logic is deterministic and tested with a fake clock.
//!
//! - [`TokenBucket`]: a burst of `capacity` tokens refilled continuously at `refill_per_sec`.
//! - [`KeyedLimiter`]: one bucket per key (peer, `(peer, command)`, IP) with a cap on tracked
//!   keys; the least recently used key is forgotten first.
//! - [`BanList`]: counts failures per key in a sliding window and bans a key for a while once it
//!   reaches a threshold; also holds manual bans. Capped like the limiter.
//! - [`LimitsConfig`]: the TOML-configurable numbers, each with a safe documented default.
//!
//! # Invariants
//!
//! - Memory is bounded: a [`KeyedLimiter`] holds at most `max_keys` buckets, a [`BanList`] at most
//!   `max_keys` entries of at most `threshold` timestamps each ([`MAX_BAN_THRESHOLD`]).
//! - A clock that appears to run backwards (a `now` earlier than one seen before) never refills a
//!   bucket and never panics; `Instant` arithmetic that could overflow saturates.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Tolerance for floating-point refill arithmetic: a bucket holding `1 - EPSILON` tokens is
/// treated as holding one, so that waiting exactly [`TokenBucket::retry_after`] always succeeds.
const EPSILON: f64 = 1e-9;

/// Largest accepted [`LimitsConfig::ban_threshold`]: [`BanList`] keeps one timestamp per
/// failure up to the threshold, so this bounds its memory per key.
pub const MAX_BAN_THRESHOLD: u32 = 100;

/// Largest accepted [`LimitsConfig::ban_window`] and [`LimitsConfig::ban_duration`] (one year).
pub const MAX_BAN_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// `now + d`, saturating instead of panicking when the platform's `Instant` cannot represent it.
fn saturating_add(now: Instant, mut d: Duration) -> Instant {
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

/// A rate: a burst of `burst` events, refilled at `per_sec` events per second.
///
/// In TOML: `{ burst = 20, per_sec = 10.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Events allowed back to back after a quiet period (the bucket capacity).
    pub burst: u32,
    /// Sustained events per second (the refill rate).
    pub per_sec: f64,
}

impl Rate {
    /// A rate of `burst` back-to-back events refilled at `per_sec` per second.
    pub const fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst, per_sec }
    }

    fn validate(&self, field: &'static str) -> Result<(), LimitsError> {
        if self.burst == 0 {
            return Err(LimitsError::ZeroBurst { field });
        }
        if !self.per_sec.is_finite() || self.per_sec <= 0.0 {
            return Err(LimitsError::BadRefill {
                field,
                per_sec: self.per_sec,
            });
        }
        Ok(())
    }
}

/// A token bucket: holds up to `capacity` tokens, starts full, and refills continuously at
/// `refill_per_sec` tokens per second. Each allowed event takes one token.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u32,
    refill_per_sec: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. A `refill_per_sec` that is negative, NaN or infinite is taken as `0`
    /// (the bucket never refills); [`LimitsConfig::validate`] rejects such values up front.
    pub fn new(capacity: u32, refill_per_sec: f64, now: Instant) -> Self {
        let refill_per_sec = if refill_per_sec.is_finite() && refill_per_sec > 0.0 {
            refill_per_sec
        } else {
            0.0
        };
        Self {
            capacity,
            refill_per_sec,
            tokens: f64::from(capacity),
            updated: now,
        }
    }

    /// A full bucket for `rate`.
    pub fn with_rate(rate: Rate, now: Instant) -> Self {
        Self::new(rate.burst, rate.per_sec, now)
    }

    /// The capacity (burst).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The refill rate in tokens per second.
    pub fn refill_per_sec(&self) -> f64 {
        self.refill_per_sec
    }

    /// Tokens available at `now` (fractional while refilling).
    pub fn tokens(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * self.refill_per_sec).min(f64::from(self.capacity))
    }

    /// Whether the bucket is full at `now`, i.e. indistinguishable from a fresh one.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens(now) + EPSILON >= f64::from(self.capacity)
    }

    /// Takes one token if one is available at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let tokens = self.tokens(now);
        // Never move `updated` backwards: a stale `now` must not refill twice.
        if now > self.updated {
            self.updated = now;
        }
        if tokens + EPSILON >= 1.0 {
            self.tokens = (tokens - 1.0).max(0.0);
            true
        } else {
            self.tokens = tokens;
            false
        }
    }

    /// How long from `now` until a token is available: zero if one is, [`Duration::MAX`] if the
    /// bucket never refills.
    pub fn retry_after(&self, now: Instant) -> Duration {
        let missing = 1.0 - self.tokens(now);
        if missing <= EPSILON {
            return Duration::ZERO;
        }
        if self.capacity == 0 || self.refill_per_sec <= 0.0 {
            return Duration::MAX;
        }
        // Rounded up to the nanosecond so that waiting exactly this long always succeeds.
        let nanos = (missing / self.refill_per_sec * 1e9).ceil();
        if nanos >= u64::MAX as f64 {
            Duration::MAX
        } else {
            Duration::from_nanos(nanos as u64)
        }
    }
}

/// Refusal of [`KeyedLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited, retry after {retry_after:?}")]
pub struct RateLimited {
    /// When the key will have a token again.
    pub retry_after: Duration,
}

/// One [`TokenBucket`] per key, with a cap on the number of keys tracked.
///
/// # Eviction
///
/// When a new key arrives and `max_keys` are already tracked, the least recently checked key is
/// forgotten (O(log n)). A forgotten key starts again with a full bucket, so an attacker who can
/// make more than `max_keys` distinct keys check in between two uses of one key can reset that
/// key's budget. Size `max_keys` above the number of keys legitimately active within one refill
/// period (e.g. connected peers, or source addresses seen in a minute); keys idle long enough
/// are full anyway and lose nothing when evicted. Checking a key, even one that is refused,
/// counts as a use, so a key that keeps hammering stays tracked and stays limited.
#[derive(Debug, Clone)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    /// Key -> (bucket, stamp of last use in `lru`).
    buckets: HashMap<K, (TokenBucket, u64)>,
    /// Stamp of last use -> key; the first entry is the least recently used key.
    lru: BTreeMap<u64, K>,
    next_stamp: u64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter giving each key `rate`, tracking at most `max_keys` keys (at least one).
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            lru: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    /// The rate each key gets.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether `key` is tracked.
    pub fn contains(&self, key: &K) -> bool {
        self.buckets.contains_key(key)
    }

    /// Takes one token from `key`'s bucket (created full on first use), or says how long to wait.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), RateLimited> {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some((bucket, old)) = self.buckets.get_mut(key) {
            self.lru.remove(old);
            *old = stamp;
            self.lru.insert(stamp, key.clone());
            return if bucket.try_take(now) {
                Ok(())
            } else {
                Err(RateLimited {
                    retry_after: bucket.retry_after(now),
                })
            };
        }
        while self.buckets.len() >= self.max_keys {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.buckets.remove(&oldest);
        }
        let mut bucket = TokenBucket::with_rate(self.rate, now);
        let result = if bucket.try_take(now) {
            Ok(())
        } else {
            Err(RateLimited {
                retry_after: bucket.retry_after(now),
            })
        };
        self.buckets.insert(key.clone(), (bucket, stamp));
        self.lru.insert(stamp, key.clone());
        result
    }

    /// Tokens `key` has at `now` (`burst` for an untracked key).
    pub fn tokens(&self, key: &K, now: Instant) -> f64 {
        self.buckets
            .get(key)
            .map_or(f64::from(self.rate.burst), |(bucket, _)| bucket.tokens(now))
    }

    /// Forgets `key` (e.g. when a peer disconnects); returns whether it was tracked.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.buckets.remove(key) {
            Some((_, stamp)) => {
                self.lru.remove(&stamp);
                true
            }
            None => false,
        }
    }

    /// Forgets every key whose bucket has refilled completely (it would behave exactly like a
    /// new one); returns how many were dropped. Call it now and then to keep the map small.
    pub fn prune_idle(&mut self, now: Instant) -> usize {
        let before = self.buckets.len();
        let lru = &mut self.lru;
        self.buckets.retain(|_, (bucket, stamp)| {
            let keep = !bucket.is_full(now);
            if !keep {
                lru.remove(stamp);
            }
            keep
        });
        before - self.buckets.len()
    }
}

/// The thresholds of a [`BanList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// Failures within `window` that trigger a ban (at least 1, at most [`MAX_BAN_THRESHOLD`]).
    pub threshold: u32,
    /// The sliding window failures are counted in: a failure counts while `now - at < window`.
    pub window: Duration,
    /// How long a triggered ban lasts.
    pub duration: Duration,
    /// Cap on tracked keys (failure records and bans together).
    pub max_keys: usize,
}

/// A ban that was just put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanApplied<K> {
    /// The banned key.
    pub key: K,
    /// The ban lasts while `now < until`.
    pub until: Instant,
}

#[derive(Debug, Clone)]
struct BanEntry {
    /// Failures within the window, oldest first; at most `threshold` long.
    failures: VecDeque<Instant>,
    /// Set while banned (and after expiry until [`BanList::lift_expired`] reports it).
    banned_until: Option<Instant>,
    /// Last failure or ban, for eviction.
    last_seen: Instant,
}

impl BanEntry {
    fn new(now: Instant) -> Self {
        Self {
            failures: VecDeque::new(),
            banned_until: None,
            last_seen: now,
        }
    }

    fn forget_old(&mut self, now: Instant, window: Duration) {
        while let Some(&at) = self.failures.front() {
            if now.saturating_duration_since(at) >= window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }

    /// Neither banned (not even expired-but-unreported) nor holding a failure inside the window.
    fn is_stale(&self, now: Instant, window: Duration) -> bool {
        self.banned_until.is_none()
            && self
                .failures
                .back()
                .is_none_or(|&at| now.saturating_duration_since(at) >= window)
    }
}

/// Failure counting and bans per key.
///
/// After [`BanPolicy::threshold`] failures within [`BanPolicy::window`], a key is banned until
/// `now + duration`. A ban is in force while `now < until`; expired bans stay listed (and
/// [`BanList::is_banned`] ignores them) until [`BanList::lift_expired`] reports and removes them,
/// so the owner can audit each lift exactly once.
///
/// # Cap and eviction
///
/// At most [`BanPolicy::max_keys`] keys are tracked. When a new key needs an entry and the list is
/// full, entries with neither a ban nor a failure inside the window are dropped first; if that
/// frees nothing, the unbanned key with the oldest failure goes, and only if every entry is a
/// ban, the ban that ends first (an expired one before any active one, unreported).
#[derive(Debug, Clone)]
pub struct BanList<K> {
    policy: BanPolicy,
    entries: HashMap<K, BanEntry>,
}

impl<K: Hash + Eq + Clone> BanList<K> {
    /// An empty list. `threshold` is clamped into `1..=MAX_BAN_THRESHOLD` and `max_keys` to at
    /// least one.
    pub fn new(policy: BanPolicy) -> Self {
        Self {
            policy: BanPolicy {
                threshold: policy.threshold.clamp(1, MAX_BAN_THRESHOLD),
                max_keys: policy.max_keys.max(1),
                ..policy
            },
            entries: HashMap::new(),
        }
    }

    /// The policy in force (after clamping).
    pub fn policy(&self) -> BanPolicy {
        self.policy
    }

    /// Keys tracked (failure records and bans).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records one failure of `key` at `now`; bans it if that makes `threshold` failures within
    /// the window. A key that is already banned is not banned again (its ban is not extended).
    pub fn record_failure(&mut self, key: &K, now: Instant) -> Option<BanApplied<K>> {
        if self.is_banned(key, now).is_some() {
            return None;
        }
        let policy = self.policy;
        let entry = self.entry(key, now);
        entry.last_seen = now;
        entry.forget_old(now, policy.window);
        entry.failures.push_back(now);
        if entry.failures.len() < policy.threshold as usize {
            return None;
        }
        entry.failures.clear();
        let until = saturating_add(now, policy.duration);
        entry.banned_until = Some(until);
        Some(BanApplied {
            key: key.clone(),
            until,
        })
    }

    /// Bans `key` until `until`, replacing any ban it had (so this can also shorten a ban).
    pub fn ban(&mut self, key: &K, until: Instant, now: Instant) -> BanApplied<K> {
        let entry = self.entry(key, now);
        entry.last_seen = now;
        entry.failures.clear();
        entry.banned_until = Some(until);
        BanApplied {
            key: key.clone(),
            until,
        }
    }

    /// The end of `key`'s ban if it is banned at `now`.
    pub fn is_banned(&self, key: &K, now: Instant) -> Option<Instant> {
        self.entries
            .get(key)
            .and_then(|entry| entry.banned_until)
            .filter(|until| now < *until)
    }

    /// Failures of `key` counted within the window at `now`.
    pub fn failures(&self, key: &K, now: Instant) -> usize {
        self.entries.get(key).map_or(0, |entry| {
            entry
                .failures
                .iter()
                .filter(|&&at| now.saturating_duration_since(at) < self.policy.window)
                .count()
        })
    }

    /// Removes every ban that has ended by `now` and returns the keys (to audit `ban_lifted`);
    /// also drops failure records that have aged out of the window.
    pub fn lift_expired(&mut self, now: Instant) -> Vec<K> {
        let window = self.policy.window;
        let mut lifted = Vec::new();
        self.entries.retain(|key, entry| {
            if entry.banned_until.is_some_and(|until| until <= now) {
                entry.banned_until = None;
                lifted.push(key.clone());
            }
            !entry.is_stale(now, window)
        });
        lifted
    }

    /// Removes `key`'s ban and failure record; returns whether it had a ban (even an expired,
    /// unreported one).
    pub fn unban(&mut self, key: &K) -> bool {
        self.entries
            .remove(key)
            .is_some_and(|entry| entry.banned_until.is_some())
    }

    /// Every ban with its end, including ended ones not yet reported by
    /// [`BanList::lift_expired`]; compare with `now` to tell them apart.
    pub fn bans(&self) -> impl Iterator<Item = (&K, Instant)> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| entry.banned_until.map(|until| (key, until)))
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut BanEntry {
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        self.entries
            .entry(key.clone())
            .or_insert_with(|| BanEntry::new(now))
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.policy.max_keys {
            return;
        }
        let window = self.policy.window;
        self.entries.retain(|_, entry| !entry.is_stale(now, window));
        while self.entries.len() >= self.policy.max_keys {
            // Unbanned entries first (oldest activity), then bans (earliest end).
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| match entry.banned_until {
                    None => (0, entry.last_seen),
                    Some(until) => (1, until),
                })
                .map(|(key, _)| key.clone());
            match victim {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }
}

/// Rate limits, caps and ban thresholds, from the node's TOML configuration.
///
/// Every field has a safe default (below); a partial table keeps the defaults of the fields it
/// leaves out. Durations are humantime strings (`"60s"`, `"10m"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Remote commands per peer, all commands together. Default burst 20, 10 per second.
    pub rpc_per_peer: Rate,
    /// Remote commands per `(peer, command)`. Default burst 10, 5 per second.
    pub rpc_per_command: Rate,
    /// Records a peer may replicate to us through Kademlia (PUT_VALUE). Default burst 200,
    /// 20 per second: enough for a publisher republishing its 100 records at once, far below
    /// what would fill the record store.
    pub replicated_records_per_peer: Rate,
    /// Join requests a seednode takes per source IP (per /64 for IPv6); past it a request is
    /// refused `rate_limited` and counts toward the IP's ban. Status polls have their own
    /// quotas, and `unlimited_ips` are exempt. Default burst 16, one per 10 seconds.
    pub join_requests_per_ip: Rate,
    /// Join requests a seednode takes per source prefix (IPv4 /24, IPv6 /48), likewise.
    /// Default burst 64, one per 2 seconds.
    pub join_requests_per_prefix: Rate,
    /// Join status polls a seednode answers per source IP (per /64 for IPv6); past it a poll is
    /// refused `rate_limited` and counts toward the IP's ban, like a join request. A pending
    /// node polls every `poll_interval` (3 s), so the default, burst 32 at 4 per second, serves
    /// a dozen pending nodes behind one address.
    pub join_polls_per_ip: Rate,
    /// Join status polls per source prefix (IPv4 /24, IPv6 /48), likewise. Default burst 128,
    /// 16 per second.
    pub join_polls_per_prefix: Rate,
    /// Concurrent inbound streams per peer. Default 16.
    pub max_streams_per_peer: u32,
    /// Established inbound connections per source IP (per /64 for IPv6). Default 8.
    pub connections_per_ip: u32,
    /// New inbound connections per source IP (per /64 for IPv6), checked before the handshake.
    /// Default burst 10, 2 per second.
    pub connection_rate_per_ip: Rate,
    /// Failures (e.g. failed membership presentations) within `ban_window` that ban a peer or an
    /// IP. Default 5; at most [`MAX_BAN_THRESHOLD`].
    pub ban_threshold: u32,
    /// Sliding window for `ban_threshold`. Default 60 s.
    #[serde(with = "cordon_host::config::duration")]
    pub ban_window: Duration,
    /// How long an automatic ban lasts. Default 10 min.
    #[serde(with = "cordon_host::config::duration")]
    pub ban_duration: Duration,
    /// Cap on keys tracked by each limiter and ban list (peers, IPs, `(peer, command)` pairs),
    /// and on connections tracked by the filter. Default 10 000.
    pub max_tracked_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rpc_per_peer: Rate::new(20, 10.0),
            rpc_per_command: Rate::new(10, 5.0),
            replicated_records_per_peer: Rate::new(200, 20.0),
            join_requests_per_ip: Rate::new(16, 0.1),
            join_requests_per_prefix: Rate::new(64, 0.5),
            join_polls_per_ip: Rate::new(32, 4.0),
            join_polls_per_prefix: Rate::new(128, 16.0),
            max_streams_per_peer: 16,
            connections_per_ip: 8,
            connection_rate_per_ip: Rate::new(10, 2.0),
            ban_threshold: 5,
            ban_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(10 * 60),
            max_tracked_keys: 10_000,
        }
    }
}

/// A [`LimitsConfig`] value that would disable a limit or overflow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A rate's burst is zero, which would refuse everything.
    #[error("limits.{field}.burst must be at least 1")]
    ZeroBurst {
        /// The field.
        field: &'static str,
    },
    /// A rate's refill is not a positive finite number.
    #[error("limits.{field}.per_sec must be a positive number, got {per_sec}")]
    BadRefill {
        /// The field.
        field: &'static str,
        /// The value given.
        per_sec: f64,
    },
    /// A count is outside its accepted range.
    #[error("limits.{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A duration is zero or longer than [`MAX_BAN_DURATION`].
    #[error("limits.{field} must be between 1s and 365days, got {}", humantime::format_duration(*value))]
    BadDuration {
        /// The field.
        field: &'static str,
        /// The value given.
        value: Duration,
    },
}

impl LimitsConfig {
    /// Reads and validates a limits file (TOML; every key optional, defaults otherwise).
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read limits file {}: {e}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| format!("invalid limits file {}: {}", path.display(), e.message()))?;
        config
            .validate()
            .map_err(|e| format!("invalid limits file {}: {e}", path.display()))?;
        Ok(config)
    }

    /// Checks that no value disables a limit or overflows.
    pub fn validate(&self) -> Result<(), LimitsError> {
        self.rpc_per_peer.validate("rpc_per_peer")?;
        self.rpc_per_command.validate("rpc_per_command")?;
        self.replicated_records_per_peer
            .validate("replicated_records_per_peer")?;
        self.join_requests_per_ip.validate("join_requests_per_ip")?;
        self.join_requests_per_prefix
            .validate("join_requests_per_prefix")?;
        self.join_polls_per_ip.validate("join_polls_per_ip")?;
        self.join_polls_per_prefix
            .validate("join_polls_per_prefix")?;
        self.connection_rate_per_ip
            .validate("connection_rate_per_ip")?;
        let range = |field, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(LimitsError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        range(
            "max_streams_per_peer",
            self.max_streams_per_peer.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "connections_per_ip",
            self.connections_per_ip.into(),
            1,
            u32::MAX.into(),
        )?;
        range(
            "ban_threshold",
            self.ban_threshold.into(),
            1,
            MAX_BAN_THRESHOLD.into(),
        )?;
        range(
            "max_tracked_keys",
            u64::try_from(self.max_tracked_keys).unwrap_or(u64::MAX),
            1,
            10_000_000,
        )?;
        for (field, value) in [
            ("ban_window", self.ban_window),
            ("ban_duration", self.ban_duration),
        ] {
            if value.is_zero() || value > MAX_BAN_DURATION {
                return Err(LimitsError::BadDuration { field, value });
            }
        }
        Ok(())
    }

    /// The [`BanPolicy`] for peers and IPs.
    pub fn ban_policy(&self) -> BanPolicy {
        BanPolicy {
            threshold: self.ban_threshold,
            window: self.ban_window,
            duration: self.ban_duration,
            max_keys: self.max_tracked_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    // --- TokenBucket ---

    #[test]
    fn bucket_empties_at_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(20, 10.0, t0);
        assert_eq!(bucket.tokens(t0), 20.0);
        for i in 0..20 {
            assert!(bucket.try_take(t0), "token {i} of the burst");
        }
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
        assert_eq!(bucket.retry_after(t0), 100 * MS);
    }

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 5.0, t0);
        while bucket.try_take(t0) {}
        // 5 per second: one token every 200 ms, not before.
        assert!(!bucket.try_take(t0 + 199 * MS));
        assert!(bucket.try_take(t0 + 200 * MS));
        assert!(!bucket.try_take(t0 + 200 * MS));
        // One second later: five more, then empty.
        let t1 = t0 + 1200 * MS;
        for _ in 0..5 {
            assert!(bucket.try_take(t1));
        }
        assert!(!bucket.try_take(t1));
        // Over 100 simulated seconds at most burst + rate * time tokens are granted.
        let mut granted = 0u32;
        let mut t = t1;
        for _ in 0..10_000 {
            t += 10 * MS;
            if bucket.try_take(t) {
                granted += 1;
            }
        }
        assert_eq!(granted, 500);
    }

    #[test]
    fn bucket_never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 1.0, t0);
        assert!(bucket.try_take(t0));
        let later = t0 + 3600 * SEC;
        assert_eq!(bucket.tokens(later), 3.0);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert!(bucket.try_take(later));
        }
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn bucket_retry_after_is_exact() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2, 3.0, t0);
        assert_eq!(bucket.retry_after(t0), Duration::ZERO);
        assert!(bucket.try_take(t0) && bucket.try_take(t0));
        let wait = bucket.retry_after(t0);
        assert!(wait > 330 * MS && wait < 340 * MS, "{wait:?}");
        assert!(!bucket.try_take(t0 + wait - MS));
        assert!(bucket.try_take(t0 + wait));
    }

    #[test]
    fn bucket_ignores_clock_going_backwards() {
        let t0 = Instant::now() + 10 * SEC;
        let mut bucket = TokenBucket::new(1, 1.0, t0);
        assert!(bucket.try_take(t0));
        let earlier = t0 - 5 * SEC;
        assert!(!bucket.try_take(earlier));
        assert!(!bucket.try_take(t0 + 500 * MS));
        assert!(bucket.try_take(t0 + SEC));
    }

    #[test]
    fn bucket_degenerate_rates() {
        let t0 = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut bucket = TokenBucket::new(1, rate, t0);
            assert!(bucket.try_take(t0));
            assert!(!bucket.try_take(t0 + 1000 * SEC));
            assert_eq!(bucket.retry_after(t0), Duration::MAX);
        }
        let mut empty = TokenBucket::new(0, 10.0, t0);
        assert!(!empty.try_take(t0 + SEC));
        assert_eq!(empty.retry_after(t0), Duration::MAX);
    }

    // --- KeyedLimiter ---

    #[test]
    fn limiter_buckets_are_per_key() {
        let t0 = Instant::now();
        let mut limiter = KeyedLimiter::new(Rate::new(2, 1.0), 10);
        assert!(limiter.check(&"a", t0).is_ok());
        assert!(limiter.check(&"a", t0).is_ok());
        let refused = limiter.check(&"a", t0).unwrap_err();
        assert_eq!(refused.retry_after, SEC);
        assert!(limiter.check(&"b", t0).is_ok());
        assert!(limiter.check(&"a", t0 + SEC).is_ok());
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn limiter_eviction_keeps_cap_and_drops_least_recently_used() {
        let t0 = Instant::now();
        let mut limiter = KeyedLimiter::new(Rate::new(1, 0.001), 3);
        for key in 0..3 {
            assert!(limiter.check(&key, t0).is_ok());
        }
        // Touch 0 so that 1 becomes the least recently used.
        assert!(limiter.check(&0, t0).is_err());
        assert!(limiter.check(&3, t0).is_ok());
        assert_eq!(limiter.len(), 3);
        assert!(!limiter.contains(&1));
        assert!(limiter.contains(&0) && limiter.contains(&2) && limiter.contains(&3));
        // Still limited: 0 kept its empty bucket.
        assert!(limiter.check(&0, t0).is_err());
        // A flood of new keys never grows the map past the cap.
        for key in 100..10_000 {
            let _ = limiter.check(&key, t0);
            assert!(limiter.len() <= 3);
        }
        assert_eq!(limiter.lru.len(), limiter.buckets.len());
    }

    #[test]
    fn limiter_prune_and_remove() {
        let t0 = Instant::now();
        let mut limiter = KeyedLimiter::new(Rate::new(2, 1.0), 10);
        limiter.check(&"idle", t0).unwrap();
        limiter.check(&"busy", t0 + 2 * SEC).unwrap();
        assert_eq!(limiter.prune_idle(t0 + 2 * SEC), 1);
        assert!(!limiter.contains(&"idle") && limiter.contains(&"busy"));
        assert!(limiter.remove(&"busy"));
        assert!(!limiter.remove(&"busy"));
        assert!(limiter.is_empty() && limiter.lru.is_empty());
        assert_eq!(limiter.tokens(&"busy", t0), 2.0);
    }

    #[test]
    fn limiter_zero_cap_is_one() {
        let t0 = Instant::now();
        let mut limiter = KeyedLimiter::new(Rate::new(1, 1.0), 0);
        assert!(limiter.check(&1, t0).is_ok());
        assert!(limiter.check(&1, t0).is_err());
        assert_eq!(limiter.len(), 1);
    }

    // --- BanList ---

    fn policy(max_keys: usize) -> BanPolicy {
        BanPolicy {
            threshold: 5,
            window: 60 * SEC,
            duration: 600 * SEC,
            max_keys,
        }
    }

    #[test]
    fn ban_after_threshold_within_window() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(100));
        for i in 0..4 {
            assert_eq!(bans.record_failure(&"p", t0 + i * 10 * SEC), None);
        }
        assert_eq!(bans.failures(&"p", t0 + 40 * SEC), 4);
        let t = t0 + 59 * SEC;
        let applied = bans.record_failure(&"p", t).unwrap();
        assert_eq!(
            applied,
            BanApplied {
                key: "p",
                until: t + 600 * SEC
            }
        );
        assert_eq!(bans.is_banned(&"p", t), Some(t + 600 * SEC));
        assert_eq!(bans.is_banned(&"other", t), None);
        // Failures while banned neither extend nor re-apply the ban.
        assert_eq!(bans.record_failure(&"p", t + SEC), None);
        assert_eq!(bans.is_banned(&"p", t + SEC), Some(t + 600 * SEC));
    }

    #[test]
    fn no_ban_when_failures_spread_beyond_window() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(100));
        // One failure every 20 s: never more than 3 within any 60 s window.
        for i in 0..50 {
            assert_eq!(bans.record_failure(&"p", t0 + i * 20 * SEC), None);
        }
        assert!(bans.failures(&"p", t0 + 49 * 20 * SEC) <= 3);
        // A failure exactly `window` old no longer counts.
        let mut bans = BanList::new(policy(100));
        for i in 0..4 {
            bans.record_failure(&"q", t0 + i * SEC);
        }
        assert_eq!(bans.record_failure(&"q", t0 + 60 * SEC), None);
        assert!(bans.record_failure(&"q", t0 + 60 * SEC).is_some());
    }

    #[test]
    fn ban_expires_and_is_lifted_once() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(100));
        let until = bans.ban(&"ip", t0 + 10 * SEC, t0).until;
        assert_eq!(bans.is_banned(&"ip", t0 + 9 * SEC), Some(until));
        assert_eq!(bans.lift_expired(t0 + 9 * SEC), Vec::<&str>::new());
        // Expired but not yet lifted: not in force, still listed.
        assert_eq!(bans.is_banned(&"ip", until), None);
        assert_eq!(bans.bans().count(), 1);
        assert_eq!(bans.lift_expired(until), vec!["ip"]);
        assert_eq!(bans.lift_expired(until), Vec::<&str>::new());
        assert_eq!(bans.bans().count(), 0);
        assert!(bans.is_empty());
        // The failure count starts afresh after a ban.
        assert_eq!(bans.failures(&"ip", until), 0);
    }

    #[test]
    fn unban_removes_ban_and_failures() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(100));
        for _ in 0..5 {
            bans.record_failure(&"p", t0);
        }
        assert!(bans.is_banned(&"p", t0).is_some());
        assert!(bans.unban(&"p"));
        assert!(!bans.unban(&"p"));
        assert_eq!(bans.is_banned(&"p", t0), None);
        // Four failures after the unban do not ban: the count restarted.
        for _ in 0..4 {
            assert_eq!(bans.record_failure(&"p", t0), None);
        }
        // Unbanning a key with failures but no ban reports false and clears the failures.
        assert!(!bans.unban(&"p"));
        assert_eq!(bans.failures(&"p", t0), 0);
    }

    #[test]
    fn manual_ban_replaces_and_can_shorten() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(100));
        bans.ban(&1, t0 + 100 * SEC, t0);
        bans.ban(&1, t0 + 5 * SEC, t0);
        assert_eq!(bans.is_banned(&1, t0), Some(t0 + 5 * SEC));
        let listed: Vec<_> = bans.bans().map(|(k, until)| (*k, until)).collect();
        assert_eq!(listed, vec![(1, t0 + 5 * SEC)]);
    }

    #[test]
    fn ban_list_cap_prefers_evicting_stale_then_unbanned() {
        let t0 = Instant::now();
        let mut bans = BanList::new(policy(3));
        bans.ban(&"banned", t0 + 1000 * SEC, t0);
        bans.record_failure(&"old", t0);
        bans.record_failure(&"recent", t0 + 50 * SEC);
        // "old" aged out of the window: it goes first.
        bans.record_failure(&"new1", t0 + 61 * SEC);
        assert_eq!(bans.len(), 3);
        assert_eq!(bans.failures(&"old", t0 + 61 * SEC), 0);
        assert_eq!(bans.failures(&"recent", t0 + 61 * SEC), 1);
        // Nothing stale: the unbanned key with the oldest activity ("recent") goes, not the ban.
        bans.record_failure(&"new2", t0 + 62 * SEC);
        assert_eq!(bans.len(), 3);
        assert_eq!(bans.failures(&"recent", t0 + 62 * SEC), 0);
        assert!(bans.is_banned(&"banned", t0 + 62 * SEC).is_some());
        // A flood of keys keeps the cap and the ban survives it as long as unbanned keys remain.
        for i in 0..1000 {
            let key: &'static str = format!("k{i}").leak();
            bans.record_failure(&key, t0 + 63 * SEC);
            assert!(bans.len() <= 3);
        }
        assert!(bans.is_banned(&"banned", t0 + 63 * SEC).is_some());
    }

    #[test]
    fn ban_list_full_of_bans_evicts_earliest_ending() {
        let t0 = Instant::now();
        let mut bans = BanList::new(BanPolicy {
            threshold: 1,
            ..policy(2)
        });
        bans.ban(&1, t0 + 10 * SEC, t0);
        bans.ban(&2, t0 + 20 * SEC, t0);
        assert!(bans.record_failure(&3, t0).is_some());
        assert_eq!(bans.len(), 2);
        assert_eq!(bans.is_banned(&1, t0), None);
        assert!(bans.is_banned(&2, t0).is_some() && bans.is_banned(&3, t0).is_some());
    }

    #[test]
    fn huge_ban_duration_saturates() {
        let t0 = Instant::now();
        let mut bans = BanList::new(BanPolicy {
            threshold: 1,
            duration: Duration::MAX,
            ..policy(2)
        });
        let applied = bans.record_failure(&1, t0).unwrap();
        assert!(applied.until > t0 + 365 * 24 * 3600 * SEC);
    }

    // --- LimitsConfig ---

    #[test]
    fn config_defaults_are_documented_values() {
        let c = LimitsConfig::default();
        assert_eq!(c.rpc_per_peer, Rate::new(20, 10.0));
        assert_eq!(c.rpc_per_command, Rate::new(10, 5.0));
        assert_eq!(c.max_streams_per_peer, 16);
        assert_eq!(c.connections_per_ip, 8);
        assert_eq!(c.connection_rate_per_ip, Rate::new(10, 2.0));
        assert_eq!(c.ban_threshold, 5);
        assert_eq!(c.ban_window, 60 * SEC);
        assert_eq!(c.ban_duration, 600 * SEC);
        assert_eq!(c.max_tracked_keys, 10_000);
        c.validate().unwrap();
    }

    #[test]
    fn config_toml_partial_and_round_trip() {
        let c: LimitsConfig = toml::from_str(
            r#"
            connections_per_ip = 2
            ban_window = "30s"
            ban_duration = "1h 30m"
            rpc_per_peer = { burst = 5, per_sec = 0.5 }
            "#,
        )
        .unwrap();
        assert_eq!(c.connections_per_ip, 2);
        assert_eq!(c.ban_window, 30 * SEC);
        assert_eq!(c.ban_duration, 5400 * SEC);
        assert_eq!(c.rpc_per_peer, Rate::new(5, 0.5));
        assert_eq!(c.rpc_per_command, LimitsConfig::default().rpc_per_command);
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<LimitsConfig>(&text).unwrap(), c);
    }

    #[test]
    fn config_rejects_unknown_and_bad_values() {
        let err = toml::from_str::<LimitsConfig>("conections_per_ip = 2").unwrap_err();
        assert!(err.to_string().contains("conections_per_ip"), "{err}");
        let err = toml::from_str::<LimitsConfig>(r#"ban_window = "soon""#).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let err =
            toml::from_str::<LimitsConfig>("rpc_per_peer = { burst = 1, rate = 2.0 }").unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");

        let bad = |f: fn(&mut LimitsConfig)| {
            let mut c = LimitsConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.rpc_per_peer.burst = 0),
            LimitsError::ZeroBurst {
                field: "rpc_per_peer"
            }
        ));
        assert!(matches!(
            bad(|c| c.connection_rate_per_ip.per_sec = f64::NAN),
            LimitsError::BadRefill { .. }
        ));
        assert!(matches!(
            bad(|c| c.ban_threshold = 0),
            LimitsError::OutOfRange {
                field: "ban_threshold",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.ban_threshold = MAX_BAN_THRESHOLD + 1),
            LimitsError::OutOfRange { .. }
        ));
        assert!(matches!(
            bad(|c| c.connections_per_ip = 0),
            LimitsError::OutOfRange { .. }
        ));
        assert!(matches!(
            bad(|c| c.max_tracked_keys = 0),
            LimitsError::OutOfRange { .. }
        ));
        let err = bad(|c| c.ban_duration = Duration::ZERO);
        assert!(err.to_string().contains("ban_duration"), "{err}");
        assert!(matches!(
            bad(|c| c.ban_window = MAX_BAN_DURATION + SEC),
            LimitsError::BadDuration { .. }
        ));
    }
}
