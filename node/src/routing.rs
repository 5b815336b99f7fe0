//! Finding and keeping peers: our listen addresses, the persisted address book, dialing (with
//! the network it is for, so the right token is presented), bootstrap redials, periodic
//! discovery through each network's Kademlia, and the connections kept open.
//!
//! Who may be *in* a routing table, and with which addresses, is decided by the session
//! behaviour (see [`crate::session`] and [`crate::addresses`]); this module only learns of those
//! decisions (`Routed`, `Unrouted`) to keep the address book.
//!
//! Invariants:
//! - Every dial records the network it is for before it starts.
//! - Discovery backs off: a network's lookup runs every `discovery_interval` while lookups keep
//!   finding peers we neither route nor are connected to, and the interval doubles (up to
//!   `max_discovery_interval`) after each that finds none, so a settled network costs little.
//!   A member new to us brings the interval back to its base only while our table holds no
//!   more than one bucket's worth (`kad_bucket_size`): past that, newcomers announce
//!   themselves, and meeting members our lookups had not met before must not hold discovery
//!   at its base until we have met them all.
//! - A node announces itself: once it is a member of a network (after a start or a join) and
//!   routes a peer of it, it looks itself up rather than waiting for the next discovery tick:
//!   as soon as a peer accepts its membership (the seednode that delivered its token, say),
//!   else within the housekeeping second, and again until such a lookup reached a member. That
//!   lookup dials the members closest to it, which then route it, so other members' lookups
//!   find it moments after its approval. One lookup of a network at a time: in a burst of
//!   approvals every new member's first lookup goes through the seednode.
//! - A node keeps connections: per network and bucket of its table, up to `keep_per_bucket`
//!   members proven on a live connection (those kept before first). Seednodes are left out
//!   (one is kept only while no member is): every member routes its seednode, and a seednode
//!   kept by all of them would fill its `max_connections` and admit no more joiners. Each
//!   kept connection exchanges revocation heads, flagged `keep`, when it is first kept and
//!   then every half `idle_timeout`; that new stream keeps it open on both ends, and the flag
//!   keeps the peer's connection budget ([`crate::budget`]) from closing it, so a member whose
//!   other connections closed still hears revocations at once. A bucket with entries but no
//!   connected one gets a dial at most every half `idle_timeout`.
//! - The address book holds at most `max_address_book` peers and `max_addrs_per_peer`
//!   addresses each; a peer leaves a network's entry when it leaves that network's table for
//!   any reason but expiry, so revoked peers are not redialled at the next start.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::session::{EndReason, ProofKind};
use cordon_protocol::NetworkName;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, kad};

use crate::config::NodeLimits;
use crate::join_client::JoinClient;
use crate::metrics::NetworkLabel;
use crate::report::Report;
use crate::swarm::Behaviour;
use cordon_host::clock::unix_secs;
use cordon_host::datadir::{AddressEntry, DataDir};
use cordon_host::descriptor::bootstrap_peer;

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Routing {
    local: PeerId,
    /// Each local network and its bootstrap addresses.
    networks: Vec<(NetworkName, Vec<Multiaddr>)>,
    listen_addrs: Vec<Multiaddr>,
    book: BTreeMap<PeerId, AddressEntry>,
    dirty: bool,
    max_address_book: usize,
    max_addrs_per_peer: usize,
    discovery: Discovery,
    keep: Keep,
}

/// When each network's next discovery lookup is due.
#[derive(Debug)]
struct Discovery {
    base: Duration,
    max: Duration,
    /// Per network: the current interval and when the next lookup is due.
    due: BTreeMap<NetworkName, (Duration, Instant)>,
    /// Discovery lookups in flight and their network (at most one per network).
    queries: HashMap<kad::QueryId, NetworkName>,
    /// Networks we have not looked ourselves up in since we started or joined them.
    unannounced: BTreeSet<NetworkName>,
    /// Those of `queries` that announce us.
    announcing: HashSet<kad::QueryId>,
    /// Up to this many table entries a network is still forming around us (one bucket).
    forming: usize,
}

/// The connections a node keeps open (see the [module documentation](self)).
#[derive(Debug)]
struct Keep {
    /// Verified connections kept per bucket of each network's table.
    per_bucket: usize,
    /// How often heads are exchanged on a kept connection (half the idle timeout).
    every: Duration,
    /// Per network, the peers kept and when heads were last exchanged with each.
    kept: BTreeMap<NetworkName, HashMap<PeerId, Instant>>,
    /// Per network and bucket, when we last dialed into it because no entry of it was
    /// connected, and how many times we did.
    filled: HashMap<(NetworkName, u32), (Instant, usize)>,
    /// When the choice is made next: every `every`, at most every five seconds.
    next: Option<Instant>,
}

/// The entries of one bucket to keep connections to: up to `per_bucket` of those proven on a
/// live connection (`verified`), those kept `before` first, then in bucket order.
fn choose_kept<T>(
    entries: &[PeerId],
    verified: &BTreeSet<PeerId>,
    before: &HashMap<PeerId, T>,
    per_bucket: usize,
) -> Vec<PeerId> {
    let live = || entries.iter().filter(|p| verified.contains(p));
    live()
        .filter(|p| before.contains_key(p))
        .chain(live().filter(|p| !before.contains_key(p)))
        .take(per_bucket)
        .copied()
        .collect()
}

impl Discovery {
    /// Starts a lookup of `local` in `network` if we are active there, route at least one peer
    /// and none runs yet; it announces us if we had not announced ourselves there. A network we
    /// are not active in is one to announce ourselves in again once we are.
    fn look_up_self(&mut self, swarm: &mut Swarm<Behaviour>, local: PeerId, network: &NetworkName) {
        let session = &mut swarm.behaviour_mut().session;
        let active = session.sessions().has_membership(network)
            || session.sessions().has_delegation(network);
        if !active {
            self.unannounced.insert(network.clone());
            return;
        }
        let running = self.queries.values().any(|n| n == network);
        let Some(kad) = session.kad(network) else {
            return;
        };
        if running || kad.kbuckets().all(|b| b.num_entries() == 0) {
            return;
        }
        let id = kad.get_closest_peers(local);
        self.queries.insert(id, network.clone());
        if self.unannounced.remove(network) {
            self.announcing.insert(id);
        }
    }
}

impl Routing {
    /// Routing for `networks` (name, bootstrap addresses), with the address book, discovery
    /// and connection bounds of `limits`.
    pub fn new(
        local: PeerId,
        networks: Vec<(NetworkName, Vec<Multiaddr>)>,
        limits: &NodeLimits,
    ) -> Self {
        let unannounced = networks.iter().map(|(n, _)| n.clone()).collect();
        Self {
            local,
            networks,
            listen_addrs: Vec::new(),
            book: BTreeMap::new(),
            dirty: false,
            max_address_book: limits.max_address_book,
            max_addrs_per_peer: limits.max_addrs_per_peer,
            discovery: Discovery {
                base: limits.discovery_interval,
                max: limits.max_discovery_interval.max(limits.discovery_interval),
                due: BTreeMap::new(),
                queries: HashMap::new(),
                unannounced,
                announcing: HashSet::new(),
                forming: limits.kad_bucket_size,
            },
            keep: Keep {
                per_bucket: limits.keep_per_bucket,
                every: limits.idle_timeout / 2,
                kept: BTreeMap::new(),
                filled: HashMap::new(),
                next: None,
            },
        }
    }

    /// Loads the persisted address book.
    pub fn load(&mut self, data: &DataDir) {
        match data.load_address_book() {
            Ok(entries) => {
                for e in entries {
                    if let Ok(peer) = e.peer.parse::<PeerId>() {
                        self.book.insert(peer, e);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the address book"),
        }
    }

    /// Persists the address book if it changed, then trims it to its bound.
    pub fn save(&mut self, data: &DataDir) {
        if !self.dirty {
            return;
        }
        let entries: Vec<AddressEntry> = self.book.values().cloned().collect();
        match data.save_address_book(&entries, self.max_address_book) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(error = %e, "cannot persist the address book"),
        }
        if self.book.len() > self.max_address_book {
            let mut by_age: Vec<(u64, PeerId)> =
                self.book.iter().map(|(p, e)| (e.last_seen, *p)).collect();
            by_age.sort();
            let excess = self.book.len() - self.max_address_book;
            for (_, p) in by_age.into_iter().take(excess) {
                self.book.remove(&p);
            }
        }
    }

    /// The address book (status, tests).
    pub fn address_book(&self) -> &BTreeMap<PeerId, AddressEntry> {
        &self.book
    }

    /// Our listen addresses.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// A new listen address; printed on stdout so scripts can pick it up.
    pub fn on_new_listen_addr(&mut self, address: Multiaddr) {
        tracing::info!(%address, "listening");
        println!(
            "listening on {}",
            address.clone().with(Protocol::P2p(self.local))
        );
        self.listen_addrs.push(address);
    }

    /// A listen address went away.
    pub fn on_expired_listen_addr(&mut self, address: &Multiaddr) {
        self.listen_addrs.retain(|a| a != address);
    }

    /// The session put `peer` into `network`'s table (of `table` entries now) with `addrs`. A
    /// member new to us while the table holds no more than one bucket's worth means the network
    /// is still forming around us: discovery of that network returns to its base interval (a
    /// node that joined an almost empty network would otherwise wait out its backoff while the
    /// others arrive). Past that, newcomers announce themselves and discovery keeps backing off;
    /// otherwise every lookup's new contacts would keep discovery at its base interval until a
    /// node had met every member.
    pub fn on_routed(
        &mut self,
        peer: PeerId,
        network: &NetworkName,
        addrs: &[Multiaddr],
        table: usize,
        now: SystemTime,
        instant: Instant,
    ) {
        let known = self
            .book
            .get(&peer)
            .is_some_and(|e| e.networks.contains(network));
        if !known
            && table <= self.discovery.forming
            && let Some(due) = self.discovery.due.get_mut(network)
        {
            due.0 = self.discovery.base;
            due.1 = due.1.min(instant + self.discovery.base);
        }
        let entry = self.book.entry(peer).or_insert_with(|| AddressEntry {
            peer: peer.to_string(),
            addrs: Vec::new(),
            networks: Vec::new(),
            last_seen: 0,
        });
        entry.addrs = addrs
            .iter()
            .take(self.max_addrs_per_peer)
            .map(ToString::to_string)
            .collect();
        if !entry.networks.contains(network) {
            entry.networks.push(network.clone());
        }
        entry.last_seen = unix_secs(now);
        self.dirty = true;
    }

    /// The session took `peer` out of `network`'s table.
    pub fn on_unrouted(&mut self, peer: PeerId, network: &NetworkName, reason: EndReason) {
        if reason == EndReason::Expired {
            // It may renew; a later dial finds out.
            return;
        }
        if let Some(entry) = self.book.get_mut(&peer) {
            entry.networks.retain(|n| n != network);
            if entry.networks.is_empty() {
                self.book.remove(&peer);
            }
            self.dirty = true;
        }
    }

    /// Dials `peer` for `network` (or presents on an existing outbound connection).
    pub fn dial(
        &self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        network: &NetworkName,
    ) {
        if peer == self.local {
            return;
        }
        if !swarm.behaviour_mut().session.dial_intent(peer, network) {
            tracing::debug!(%peer, "dial intent table full; not dialing");
            return;
        }
        if swarm.is_connected(&peer) {
            return;
        }
        // Kademlia adds what it knows of the peer to the addresses given (none for a peer found
        // only in a routing table).
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial not started");
        }
    }

    /// Dials every address-book peer for the networks it was a member of.
    pub fn dial_known_peers(&self, swarm: &mut Swarm<Behaviour>) {
        let mine: BTreeSet<&NetworkName> = self.networks.iter().map(|(n, _)| n).collect();
        for (peer, entry) in &self.book {
            let addrs: Vec<Multiaddr> = entry.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            for n in entry.networks.iter().filter(|n| mine.contains(n)) {
                self.dial(swarm, *peer, addrs.clone(), n);
            }
        }
    }

    /// Redials the bootstrap peers of networks without a verified connection, or without a
    /// verified seednode while we still need one (to join or to renew).
    pub fn redial_bootstrap<R: Copy + Eq + std::fmt::Debug>(
        &self,
        swarm: &mut Swarm<Behaviour>,
        join: &JoinClient<R>,
        now: std::time::SystemTime,
    ) {
        for (network, bootstrap) in &self.networks {
            let sessions = swarm.behaviour().session.sessions();
            let connected = !sessions.verified_peers(network).is_empty();
            let has_seed = !sessions
                .proven_peers(network, ProofKind::Seednode)
                .is_empty();
            if connected && (has_seed || !join.needs_seednode(network, now)) {
                continue;
            }
            for addr in bootstrap {
                if let Some(peer) = bootstrap_peer(addr)
                    && peer != self.local
                    && !swarm.is_connected(&peer)
                {
                    self.dial(swarm, peer, vec![addr.clone()], network);
                }
            }
        }
    }

    /// Asks each network's Kademlia whose lookup is due for peers close to us (those found are
    /// dialed when the lookup answers) and updates the routing-table gauges.
    pub fn discover(&mut self, swarm: &mut Swarm<Behaviour>, report: &Report, now: Instant) {
        for (network, _) in &self.networks {
            let Some(kad) = swarm.behaviour_mut().session.kad(network) else {
                continue;
            };
            let known = kad.kbuckets().map(|b| b.num_entries()).sum::<usize>();
            report
                .metrics()
                .routing_table
                .get_or_create(&NetworkLabel {
                    network: network.to_string(),
                })
                .set(i64::try_from(known).unwrap_or(i64::MAX));
            let (_, due) = *self
                .discovery
                .due
                .entry(network.clone())
                .or_insert((self.discovery.base, now));
            if now >= due {
                self.discovery.look_up_self(swarm, self.local, network);
            }
        }
    }

    /// Chooses the connections to keep in each network: per bucket of its table, up to
    /// `keep_per_bucket` entries proven on a live connection, those kept before first. Returns
    /// the kept (peer, network) pairs due for an exchange of revocation heads, which keeps
    /// their connections open on both ends; every other connection closes once idle. A bucket
    /// none of whose entries is connected gets one dial per half idle timeout, so the kept
    /// connections reach every part of the table. Called once a housekeeping second; chooses
    /// every `idle_timeout / 2`, at most every five seconds.
    pub fn keep(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
    ) -> Vec<(PeerId, NetworkName)> {
        if self.keep.next.is_some_and(|next| now < next) {
            return Vec::new();
        }
        self.keep.next = Some(now + self.keep.every.min(Duration::from_secs(5)));
        let mut due = Vec::new();
        let mut fill = Vec::new();
        for (network, _) in &self.networks {
            let session = &mut swarm.behaviour_mut().session;
            let verified = session.sessions().verified_peers(network);
            let seednodes = session
                .sessions()
                .proven_peers(network, ProofKind::Seednode);
            let before = self.keep.kept.remove(network).unwrap_or_default();
            let mut kept = HashMap::new();
            let Some(kad) = session.kad(network) else {
                continue;
            };
            // Seednodes are in every member's table: were they kept like members, a seednode
            // would hold a connection from every member and admit no joiner past
            // `max_connections`. They are kept only while no member is.
            let (mut seeds_live, mut chosen_all) = (Vec::new(), Vec::new());
            for bucket in kad.kbuckets() {
                let Some(index) = bucket.range().0.ilog2() else {
                    continue;
                };
                let (seeds, entries): (Vec<PeerId>, Vec<PeerId>) = bucket
                    .iter()
                    .map(|e| *e.node.key.preimage())
                    .partition(|p| seednodes.contains(p));
                seeds_live.extend(seeds.into_iter().filter(|p| verified.contains(p)));
                let chosen = choose_kept(&entries, &verified, &before, self.keep.per_bucket);
                if chosen.is_empty() && self.keep.per_bucket > 0 && !entries.is_empty() {
                    // Each attempt dials the next entry, so one unreachable entry does not
                    // leave the bucket without a connection.
                    let key = (network.clone(), index);
                    let (tried, attempts) = self.keep.filled.get(&key).copied().unzip();
                    if tried.is_none_or(|t| now.saturating_duration_since(t) >= self.keep.every) {
                        let attempt = attempts.unwrap_or(0);
                        self.keep.filled.insert(key, (now, attempt.wrapping_add(1)));
                        fill.push((entries[attempt % entries.len()], network.clone()));
                    }
                }
                chosen_all.extend(chosen);
            }
            if chosen_all.is_empty() && self.keep.per_bucket > 0 {
                chosen_all = choose_kept(&seeds_live, &verified, &before, 1);
            }
            for peer in chosen_all {
                // A peer kept anew hears so at once: its budget then spares the connection.
                let last = before.get(&peer).copied().unwrap_or_else(|| {
                    due.push((peer, network.clone()));
                    now
                });
                kept.insert(peer, last);
            }
            for (peer, last) in &mut kept {
                if now.saturating_duration_since(*last) >= self.keep.every {
                    *last = now;
                    due.push((*peer, network.clone()));
                }
            }
            self.keep.kept.insert(network.clone(), kept);
        }
        for (peer, network) in fill {
            self.dial(swarm, peer, Vec::new(), &network);
        }
        due
    }

    /// Whether we keep our connection to `peer` in some network.
    pub fn keeps(&self, peer: &PeerId) -> bool {
        self.keep.kept.values().any(|kept| kept.contains_key(peer))
    }

    /// Looks ourselves up now in each network we route a peer of and have not announced
    /// ourselves in since we started or joined it (see the [module documentation](self)).
    /// Called once a housekeeping second, and whenever a peer accepted our membership.
    pub fn announce(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self.discovery.unannounced.is_empty() {
            return;
        }
        for network in self.discovery.unannounced.clone() {
            self.discovery.look_up_self(swarm, self.local, &network);
        }
    }

    /// A Kademlia query `id` of `network` found these peers: dial those we are not connected
    /// to and do not route yet (an announcement dials those we route too: they are the ones
    /// that should route us). A discovery lookup that found none of those backs discovery off.
    /// Peers we route need no connection: the connection budget closes spare ones, and
    /// counting them as new would hold discovery at its base interval for good.
    pub fn on_closest_peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        network: &NetworkName,
        id: kad::QueryId,
        peers: Vec<kad::PeerInfo>,
        now: Instant,
    ) {
        let reached = peers.len();
        let announcing = self.discovery.announcing.contains(&id);
        let mut new = 0;
        for info in peers {
            if info.peer_id == self.local || swarm.is_connected(&info.peer_id) {
                continue;
            }
            let routed = swarm
                .behaviour()
                .session
                .sessions()
                .is_routed(network, &info.peer_id);
            if routed && !announcing {
                continue;
            }
            new += usize::from(!routed);
            let addrs: Vec<Multiaddr> = info
                .addrs
                .into_iter()
                .take(self.max_addrs_per_peer)
                .collect();
            if addrs.is_empty() {
                continue;
            }
            self.dial(swarm, info.peer_id, addrs, network);
        }
        if self.discovery.announcing.remove(&id) && reached == 0 {
            // Nobody answered (a gate not open yet, say): announce again at the next chance.
            self.discovery.unannounced.insert(network.clone());
        }
        if self.discovery.queries.remove(&id).is_some() {
            let (base, max) = (self.discovery.base, self.discovery.max);
            let entry = self
                .discovery
                .due
                .entry(network.clone())
                .or_insert((base, now));
            entry.0 = if new > 0 {
                base
            } else {
                (entry.0 * 2).min(max)
            };
            entry.1 = now + entry.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn a_new_member_restarts_discovery_only_while_the_table_is_forming() {
        let network: NetworkName = "mainnet".parse().unwrap();
        let limits = NodeLimits::default();
        let mut routing = Routing::new(PeerId::random(), vec![(network.clone(), vec![])], &limits);
        let t = Instant::now();
        let backed_off = (Duration::from_secs(40), t + Duration::from_secs(40));
        let forming = limits.kad_bucket_size;
        let now = SystemTime::UNIX_EPOCH;
        // A bucket's worth of entries or more: a newcomer leaves the backoff alone.
        routing.discovery.due.insert(network.clone(), backed_off);
        routing.on_routed(PeerId::random(), &network, &[], forming + 1, now, t);
        assert_eq!(routing.discovery.due[&network], backed_off);
        // Fewer: discovery returns to its base interval.
        routing.on_routed(PeerId::random(), &network, &[], forming, now, t);
        let base = limits.discovery_interval;
        assert_eq!(routing.discovery.due[&network], (base, t + base));
    }

    #[test]
    fn kept_entries_are_live_ones_and_stay_kept_while_live() {
        let p = peers(5);
        let verified: BTreeSet<PeerId> = [p[1], p[2], p[3], p[4]].into();
        // Nothing kept before: the first live entries in bucket order.
        let none: HashMap<PeerId, ()> = HashMap::new();
        assert_eq!(choose_kept(&p, &verified, &none, 2), vec![p[1], p[2]]);
        // Kept before and still live: kept again, ahead of earlier entries.
        let before: HashMap<PeerId, ()> = [(p[4], ()), (p[0], ())].into();
        assert_eq!(choose_kept(&p, &verified, &before, 2), vec![p[4], p[1]]);
        // p[0] was kept but is not live any more: never chosen.
        assert!(!choose_kept(&p, &verified, &before, 5).contains(&p[0]));
        assert_eq!(choose_kept(&p, &verified, &before, 5).len(), 4);
        // Zero keeps nothing; nothing live keeps nothing.
        assert!(choose_kept(&p, &verified, &before, 0).is_empty());
        assert!(choose_kept(&p, &BTreeSet::new(), &before, 2).is_empty());
    }
}
