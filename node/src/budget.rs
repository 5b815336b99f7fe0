//! The connection budget: how many connections a node aims to hold, whatever the size of its
//! networks.
//!
//! Every connection costs memory on both ends (its Noise and Yamux state, a handler per
//! protocol and network), and a node meets many peers it has no further use for: the members
//! its lookups dial, the callers of one command, the burst of a network forming. Left alone,
//! those connections close only after `idle_timeout` without a stream, so the number a node
//! holds, and its memory, grows with the network. The budget (`[limits] connection_budget`)
//! bounds that: once a node holds more connections than the budget, the housekeeping second
//! closes the least recently used of those it can spare, down to the budget.
//!
//! A connection is spared (never closed for the budget) while:
//! - it is younger than the grace (`request_timeout`), or something came over it within the
//!   grace (a request or an answer on the rpc, revocation or join protocol, or a proof), or a
//!   request or call of ours waits on the peer;
//! - its peer has not proven a network on it: connections that are still proving, and a
//!   seednode's pending joiners, are bounded by `auth_timeout` and the join limits instead;
//! - we keep it (one of `keep_per_bucket` per bucket of a table, see [`crate::routing`]), or
//!   the peer said it keeps it (its heads exchange carried `keep`) within `idle_timeout`.
//!
//! So the budget is a target, not a cap: the spared connections may exceed it, and
//! `max_connections` remains the hard limit. Closing a spared connection would cost more than
//! its memory: kept connections carry revocations at once, and the peer would dial again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Budget {
    budget: usize,
    /// A connection this young, or used this recently, is spared.
    grace: Duration,
    /// How long a peer's keep signal spares its connection.
    kept_for: Duration,
    peers: HashMap<PeerId, Use>,
}

/// What the budget knows of one connected peer.
#[derive(Debug, Clone, Copy)]
struct Use {
    /// When its current connection was established.
    since: Instant,
    /// When something last came over it.
    used: Instant,
    /// When the peer last said it keeps the connection.
    kept: Option<Instant>,
}

impl Budget {
    /// A budget of `budget` connections; connections younger or used more recently than
    /// `grace` are spared, and so are those the peer said it keeps within `kept_for`.
    pub fn new(budget: usize, grace: Duration, kept_for: Duration) -> Self {
        Self {
            budget,
            grace,
            kept_for,
            peers: HashMap::new(),
        }
    }

    /// A connection to `peer` was established.
    pub fn on_established(&mut self, peer: PeerId, instant: Instant) {
        self.peers.insert(
            peer,
            Use {
                since: instant,
                used: instant,
                kept: None,
            },
        );
    }

    /// The last connection to `peer` closed.
    pub fn on_closed(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Something came over the connection to `peer`.
    pub fn on_used(&mut self, peer: &PeerId, instant: Instant) {
        if let Some(u) = self.peers.get_mut(peer) {
            u.used = u.used.max(instant);
        }
    }

    /// `peer` said it keeps its connection to us.
    pub fn on_kept_by_peer(&mut self, peer: &PeerId, instant: Instant) {
        if let Some(u) = self.peers.get_mut(peer) {
            u.kept = Some(instant);
            u.used = u.used.max(instant);
        }
    }

    /// Connected peers the budget knows of.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peers whose connections to close now to come back within the budget: the least
    /// recently used of those not spared, as many as the budget is exceeded by (fewer if not
    /// enough can be spared). `spared` names those spared for reasons the budget does not see
    /// itself: kept by us, not proven, or awaited by a request of ours.
    pub fn to_close(&self, instant: Instant, spared: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let Some(excess) = self.peers.len().checked_sub(self.budget).filter(|e| *e > 0) else {
            return Vec::new();
        };
        let since = |t: Instant| instant.saturating_duration_since(t);
        let mut idle: Vec<(Instant, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, u)| since(u.since) >= self.grace && since(u.used) >= self.grace)
            .filter(|(_, u)| u.kept.is_none_or(|k| since(k) >= self.kept_for))
            .filter(|(p, _)| !spared(p))
            .map(|(p, u)| (u.used, *p))
            .collect();
        idle.sort();
        idle.into_iter().take(excess).map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    const KEPT_FOR: Duration = Duration::from_secs(120);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nothing_closes_within_the_budget() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, GRACE, KEPT_FOR);
        for _ in 0..3 {
            b.on_established(PeerId::random(), t0);
        }
        assert!(b.to_close(t0 + secs(600), |_| false).is_empty());
    }

    #[test]
    fn past_the_budget_the_least_recently_used_close_first() {
        let t0 = Instant::now();
        let mut b = Budget::new(2, GRACE, KEPT_FOR);
        let p: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for peer in &p {
            b.on_established(*peer, t0);
        }
        // Used at t0+4, +3, +2, +1 and +0 s: p[4] is the least recently used.
        for (i, peer) in p.iter().enumerate() {
            b.on_used(peer, t0 + secs(4 - i as u64));
        }
        let closed = b.to_close(t0 + secs(60), |_| false);
        assert_eq!(closed, vec![p[4], p[3], p[2]]);
    }

    #[test]
    fn young_recently_used_kept_and_spared_connections_are_not_closed() {
        let t0 = Instant::now();
        let now = t0 + secs(100);
        let mut b = Budget::new(0, GRACE, KEPT_FOR);
        let [young, used, kept, spared, idle] = [(); 5].map(|()| PeerId::random());
        b.on_established(young, now - secs(9));
        for p in [used, kept, spared, idle] {
            b.on_established(p, t0);
        }
        b.on_used(&used, now - secs(9));
        b.on_kept_by_peer(&kept, now - secs(119));
        assert_eq!(b.to_close(now, |p| *p == spared), vec![idle]);
        // The peer's keep signal lapses after `kept_for`; the grace after its last use.
        assert_eq!(b.to_close(now + secs(1), |p| *p == spared).len(), 4);
    }

    #[test]
    fn a_closed_peer_is_forgotten_and_a_reconnect_starts_afresh() {
        let t0 = Instant::now();
        let mut b = Budget::new(0, GRACE, KEPT_FOR);
        let p = PeerId::random();
        b.on_established(p, t0);
        b.on_kept_by_peer(&p, t0);
        b.on_closed(&p);
        assert!(b.is_empty());
        b.on_used(&p, t0 + secs(50));
        assert!(b.is_empty(), "use of an unknown peer adds nothing");
        b.on_established(p, t0 + secs(200));
        assert!(b.to_close(t0 + secs(205), |_| false).is_empty());
        assert_eq!(b.to_close(t0 + secs(210), |_| false), vec![p]);
    }
}
