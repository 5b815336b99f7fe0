//! Aggregation of repeated audit events, so that events a stranger can cause at will (refused
//! connections, refused presentations, stray join requests, denied commands) cannot flush the
//! audit log.
//!
//! Pure and clock-free: [`Aggregator::admit`] is handed each event with `now` and answers
//! whether to write it; [`Aggregator::flush`] is called periodically and returns the summary
//! records of the window that ended.
//!
//! Rules, per window of [`AggregateConfig::window`]:
//! - Events of other kinds (verified memberships, bans, ...) always pass, and so do events
//!   that name no remote party (no peer, no address): an operator's decisions are never
//!   aggregated.
//! - The first event of a source (its peer id, else its address with the port dropped and IPv4
//!   cut to /24, IPv6 to /64) with a given kind, reason and network is written as it is.
//!   Repeats are counted and written once, at the end of the window, as one record with the
//!   same fields and the detail `repeated N more times in Ws`.
//! - At most [`AggregateConfig::max_sources`] sources are tracked per window; events of further
//!   sources are counted per kind and reason only and summarised as
//!   `N events from M more sources in Ws (sources not listed)`; past
//!   [`MAX_OVERFLOW_SOURCES`] distinct sources, `M` reads `at least M`.
//!
//! So a flood from any number of sources writes at most `max_sources` plus a few summary
//! records per window, whatever its rate, and the first record of each of the first sources
//! (the evidence) is kept verbatim.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::audit::{AuditEvent, AuditKind};

/// Aggregation settings (from [`crate::audit::AuditConfig`]: `aggregate_window`,
/// `aggregate_sources`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Length of a window. Default 60 s.
    pub window: Duration,
    /// Sources whose first event of a window is written as is. Default 64.
    pub max_sources: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            max_sources: 64,
        }
    }
}

/// Whether events of `kind` are ones a remote party can cause at will (and are aggregated).
pub fn aggregated(kind: AuditKind) -> bool {
    matches!(
        kind,
        AuditKind::ConnectionRefused
            | AuditKind::MembershipRefused
            | AuditKind::JoinDenied
            | AuditKind::CommandDenied
    )
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: &'static str,
    reason: Option<String>,
    network: Option<String>,
    source: String,
}

#[derive(Debug)]
struct Repeat {
    /// The first event (its fields are reused by the summary).
    first: AuditEvent,
    /// Events after the first.
    more: u64,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Aggregator {
    config: AggregateConfig,
    window_start: Option<SystemTime>,
    repeats: BTreeMap<Key, Repeat>,
    sources: HashSet<String>,
    /// Events of sources beyond `max_sources`, per (kind, reason).
    overflow: BTreeMap<(&'static str, Option<String>), Overflow>,
}

/// Events of untracked sources of one kind and reason: their count and distinct sources (the
/// latter capped, like everything here).
#[derive(Debug)]
struct Overflow {
    kind: AuditKind,
    count: u64,
    sources: HashSet<String>,
}

/// Most distinct kind-and-reason pairs counted for untracked sources in one window.
const MAX_OVERFLOW_KEYS: usize = 64;
/// Most distinct untracked sources remembered per kind and reason in one window (their count
/// is then a lower bound): with at most [`MAX_OVERFLOW_KEYS`] pairs this bounds the memory of a
/// window to a few MB whatever the flood.
pub const MAX_OVERFLOW_SOURCES: usize = 4_096;

impl Aggregator {
    /// An aggregator with `config`.
    pub fn new(config: AggregateConfig) -> Self {
        Self {
            config,
            window_start: None,
            repeats: BTreeMap::new(),
            sources: HashSet::new(),
            overflow: BTreeMap::new(),
        }
    }

    /// Whether to write `event` now (at `now`); if not, it is counted for the window's
    /// summary. A window that ended is not flushed here: call [`Aggregator::flush`] first.
    pub fn admit(&mut self, event: &AuditEvent, now: SystemTime) -> bool {
        if !aggregated(event.kind) || (event.peer.is_none() && event.addr.is_none()) {
            return true;
        }
        self.window_start.get_or_insert(now);
        let source = source_of(event);
        let key = Key {
            kind: event.kind.as_str(),
            reason: event.reason.clone(),
            network: event.network.clone(),
            source: source.clone(),
        };
        if let Some(r) = self.repeats.get_mut(&key) {
            r.more = r.more.saturating_add(1);
            return false;
        }
        if self.sources.contains(&source) || self.sources.len() < self.config.max_sources {
            self.sources.insert(source);
            self.repeats.insert(
                key,
                Repeat {
                    first: event.clone(),
                    more: 0,
                },
            );
            return true;
        }
        let slot = (event.kind.as_str(), event.reason.clone());
        if self.overflow.len() < MAX_OVERFLOW_KEYS || self.overflow.contains_key(&slot) {
            let entry = self.overflow.entry(slot).or_insert_with(|| Overflow {
                kind: event.kind,
                count: 0,
                sources: HashSet::new(),
            });
            entry.count = entry.count.saturating_add(1);
            if entry.sources.len() < MAX_OVERFLOW_SOURCES {
                entry.sources.insert(source);
            }
        }
        false
    }

    /// If the window that started with the first aggregated event has ended by `now`, returns
    /// its summary records (repeats, then untracked sources) and starts a new window.
    pub fn flush(&mut self, now: SystemTime) -> Vec<AuditEvent> {
        let Some(start) = self.window_start else {
            return Vec::new();
        };
        if now.duration_since(start).unwrap_or_default() < self.config.window {
            return Vec::new();
        }
        self.drain()
    }

    /// The summaries of the current window whatever its age (at shutdown).
    pub fn drain(&mut self) -> Vec<AuditEvent> {
        let secs = self.config.window.as_secs();
        let mut out = Vec::new();
        for (_, r) in std::mem::take(&mut self.repeats) {
            if r.more > 0 {
                out.push(
                    r.first
                        .detail(format!("repeated {} more times in {secs}s", r.more)),
                );
            }
        }
        for ((_, reason), o) in std::mem::take(&mut self.overflow) {
            let sources = if o.sources.len() >= MAX_OVERFLOW_SOURCES {
                format!("at least {}", o.sources.len())
            } else {
                o.sources.len().to_string()
            };
            let mut event = AuditEvent::new(o.kind).detail(format!(
                "{} events from {sources} more sources in {secs}s (sources not listed)",
                o.count
            ));
            if let Some(reason) = reason {
                event = event.reason(reason);
            }
            out.push(event);
        }
        self.sources.clear();
        self.window_start = None;
        out
    }
}

/// The source an event is counted under: its peer, else its address cut to a prefix.
fn source_of(event: &AuditEvent) -> String {
    if let Some(peer) = &event.peer {
        return peer.clone();
    }
    let Some(addr) = &event.addr else {
        // Not reached: `admit` passes events without a peer or an address.
        return "-".to_owned();
    };
    match ip_in(addr) {
        Some(IpAddr::V4(ip)) => {
            let o = ip.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Some(IpAddr::V6(ip)) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => addr.clone(),
    }
}

/// The IP address in a multiaddr (`/ip4/1.2.3.4/tcp/5`) or socket address text.
fn ip_in(addr: &str) -> Option<IpAddr> {
    let mut parts = addr.split('/');
    while let Some(p) = parts.next() {
        if p == "ip4" || p == "ip6" {
            return parts.next()?.parse().ok();
        }
    }
    addr.parse::<std::net::SocketAddr>()
        .map(|s| s.ip())
        .ok()
        .or_else(|| addr.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn refused(peer: &str) -> AuditEvent {
        AuditEvent::new(AuditKind::MembershipRefused)
            .peer(peer)
            .reason("malformed")
    }

    fn aggregator(max_sources: usize) -> Aggregator {
        Aggregator::new(AggregateConfig {
            window: Duration::from_secs(60),
            max_sources,
        })
    }

    #[test]
    fn events_naming_no_remote_party_always_pass() {
        let mut a = aggregator(1);
        for id in 0..100 {
            let e = AuditEvent::new(AuditKind::JoinDenied)
                .request_id(id)
                .detail("by operator");
            assert!(a.admit(&e, t(0)));
        }
        assert!(a.flush(t(3600)).is_empty());
    }

    #[test]
    fn other_kinds_always_pass() {
        let mut a = aggregator(1);
        for i in 0..100 {
            let e = AuditEvent::new(AuditKind::MembershipVerified).peer(format!("p{i}"));
            assert!(a.admit(&e, t(0)));
        }
        assert!(a.flush(t(3600)).is_empty());
    }

    #[test]
    fn repeats_of_a_source_become_one_summary_at_the_end_of_the_window() {
        let mut a = aggregator(8);
        assert!(a.admit(&refused("x"), t(0)));
        for _ in 0..999 {
            assert!(!a.admit(&refused("x"), t(1)));
        }
        // Another reason from the same source is its own first event.
        let expired = AuditEvent::new(AuditKind::MembershipRefused)
            .peer("x")
            .reason("expired");
        assert!(a.admit(&expired, t(2)));
        assert!(a.flush(t(59)).is_empty(), "the window has not ended");
        let out = a.flush(t(60));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].peer.as_deref(), Some("x"));
        assert_eq!(out[0].reason.as_deref(), Some("malformed"));
        assert_eq!(
            out[0].detail.as_deref(),
            Some("repeated 999 more times in 60s")
        );
        // A new window writes the source's first event again.
        assert!(a.admit(&refused("x"), t(61)));
    }

    #[test]
    fn sources_beyond_the_cap_are_counted_not_listed() {
        let mut a = aggregator(2);
        let written = (0..10_000)
            .filter(|i| a.admit(&refused(&format!("p{i}")), t(0)))
            .count();
        assert_eq!(written, 2);
        let out = a.flush(t(60));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            out[0].detail.as_deref(),
            Some("9998 events from at least 4096 more sources in 60s (sources not listed)")
        );
        assert_eq!(out[0].reason.as_deref(), Some("malformed"));
    }

    #[test]
    fn untracked_sources_below_the_cap_are_counted_exactly() {
        let mut a = aggregator(2);
        for i in 0..102 {
            a.admit(&refused(&format!("p{i}")), t(0));
        }
        assert_eq!(
            a.flush(t(60))[0].detail.as_deref(),
            Some("100 events from 100 more sources in 60s (sources not listed)")
        );
    }

    #[test]
    fn addresses_are_grouped_by_prefix() {
        let mut a = aggregator(8);
        let conn = |addr: &str| {
            AuditEvent::new(AuditKind::ConnectionRefused)
                .addr(addr)
                .reason("denied_ip")
        };
        assert!(a.admit(&conn("/ip4/10.1.2.3/tcp/4001"), t(0)));
        assert!(!a.admit(&conn("/ip4/10.1.2.200/tcp/5"), t(0)));
        assert!(a.admit(&conn("/ip4/10.1.3.1/tcp/5"), t(0)));
        assert!(a.admit(&conn("/ip6/2001:db8:1:2::1/tcp/5"), t(0)));
        assert!(!a.admit(&conn("/ip6/2001:db8:1:2:ffff::9/tcp/5"), t(0)));
        assert!(!a.admit(&conn("10.1.2.9:80"), t(0)));
    }
}
