//! What the node does with the connection filter at run time: counting failed presentations
//! toward bans, closing what a new ban or rule refuses, lifting bans that ended, and reloading
//! the rules file. The filter itself ([`crate::filter`]) decides; this module carries it out and
//! reports it.

use std::time::Instant;

use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};

use crate::filter::{BanTarget, FilterRules};
use crate::report::Report;
use crate::swarm::Behaviour;
use cordon_host::audit::{AuditEvent, AuditKind};

fn target_text(target: &BanTarget) -> String {
    match target {
        BanTarget::Peer(p) => format!("peer {p}"),
        BanTarget::Ip(ip) => format!("ip {ip}"),
    }
}

/// Counts a failed presentation against the peer and the connection's IP; bans at the
/// threshold and closes what the ban refuses.
pub fn record_failure(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    peer: PeerId,
    connection: ConnectionId,
    now: Instant,
) {
    let filter = &mut swarm.behaviour_mut().filter;
    let ip = filter.remote_ip(connection);
    let bans = filter.record_auth_failure(peer, ip, now);
    for ban in bans {
        report.metrics().bans.inc();
        let secs = ban.until.saturating_duration_since(now).as_secs();
        let target = target_text(&ban.key);
        tracing::warn!(target = %target, secs, reason = "failed_presentations", "repeated failed membership presentations: ban applied");
        let event = match ban.key {
            BanTarget::Peer(p) => AuditEvent::new(AuditKind::BanApplied).peer(p),
            BanTarget::Ip(ip) => AuditEvent::new(AuditKind::BanApplied).peer(peer).addr(ip),
        };
        report.audit(
            event
                .reason("failed_presentations")
                .detail(format!("{secs}s")),
        );
    }
    close_refused(swarm, now);
}

/// Closes live connections the filter now refuses (new rules, bans).
pub fn close_refused(swarm: &mut Swarm<Behaviour>, now: Instant) {
    let refused = swarm.behaviour_mut().filter.refused_connections(now);
    for r in refused {
        tracing::info!(peer = %r.peer, reason = %r.reason.as_str(), "closing a connection the filter now refuses");
        swarm.close_connection(r.connection);
    }
}

/// Lifts bans that ended by `now` and audits each.
pub fn lift_expired(swarm: &mut Swarm<Behaviour>, report: &mut Report, now: Instant) {
    for target in swarm.behaviour_mut().filter.lift_expired(now) {
        let text = target_text(&target);
        tracing::info!(target = %text, "ban lifted");
        let event = match target {
            BanTarget::Peer(p) => AuditEvent::new(AuditKind::BanLifted).peer(p),
            BanTarget::Ip(ip) => AuditEvent::new(AuditKind::BanLifted).addr(ip),
        };
        report.audit(event);
    }
}

/// Replaces the filter rules (reloaded by the operator) and closes what they now refuse.
/// Returns the connections closed.
pub fn apply_rules(swarm: &mut Swarm<Behaviour>, report: &mut Report, rules: FilterRules) -> usize {
    let refused = swarm.behaviour_mut().filter.set_rules(rules);
    let closed = refused.len();
    for r in refused {
        swarm.close_connection(r.connection);
    }
    report.audit(AuditEvent::new(AuditKind::Other).detail(format!(
        "filter rules reloaded; {closed} connection(s) closed"
    )));
    closed
}
