//! Where security events go: the tracing log, the audit log and the metrics, in one place.
//!
//! Every module that observes something worth recording calls one method here, so each event is
//! worded once: the same reason code reaches the log line (`reason` field), the audit record and
//! the metric label. A failing audit log is reported and never stops the node. Events a remote
//! party can cause at will are aggregated per source and window before they reach the audit
//! log ([`cordon_host::aggregate`]), so a flood cannot rotate the evidence away; their log lines
//! follow the same decision (the first of a source per window, then one summary line), so a
//! flood cannot fill the log either.

use cordon_membership::session::{CloseReason, EndReason, Proof, ProofKind, Refused};
use cordon_protocol::{NetworkName, ReasonCode};
use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

use crate::metrics::Metrics;
use cordon_host::aggregate::{AggregateConfig, Aggregator};
use cordon_host::audit::{AuditEvent, AuditKind, AuditLog, kept_for_peers};
use cordon_host::clock::Clock;

/// Counters shown by `status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Presentations refused because the verification queue was full.
    pub rate_limited: u64,
}

/// The log, audit and metrics sink. See the [module documentation](self).
#[derive(Debug)]
pub struct Report {
    audit: AuditLog,
    /// The authenticated peers' log (`cordon_host::audit::PEERS_LOG`).
    peers: AuditLog,
    aggregator: Aggregator,
    metrics: Metrics,
    clock: Clock,
    counters: Counters,
}

impl Report {
    /// Reports into `audit` (aggregating per `aggregate`), records about authenticated peers
    /// also into `peers`, and into `metrics`, timestamping with `clock`.
    pub fn new(
        audit: AuditLog,
        peers: AuditLog,
        aggregate: AggregateConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Self {
        Self {
            audit,
            peers,
            aggregator: Aggregator::new(aggregate),
            metrics,
            clock,
            counters: Counters::default(),
        }
    }

    /// Appends an audit record, unless it repeats a source's event of this window (then it is
    /// counted into the window's summary). Returns whether it was written: a caller logs an
    /// event a stranger can cause only then.
    pub fn audit(&mut self, event: AuditEvent) -> bool {
        let now = self.clock.now();
        self.flush_aggregated(now);
        let admitted = self.aggregator.admit(&event, now);
        if admitted {
            self.append(event);
        }
        admitted
    }

    /// Writes the summaries of an aggregation window that ended (called periodically).
    pub fn tick(&mut self) {
        let now = self.clock.now();
        self.flush_aggregated(now);
    }

    fn flush_aggregated(&mut self, now: std::time::SystemTime) {
        for summary in self.aggregator.flush(now) {
            log_summary(&summary);
            self.append(summary);
        }
    }

    fn append(&mut self, event: AuditEvent) {
        let now = self.clock.now();
        if kept_for_peers(event.kind)
            && let Err(e) = self.peers.append(event.clone(), now)
        {
            tracing::error!(error = %e, "cannot write the peers' audit log");
        }
        if let Err(e) = self.audit.append(event, now) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Writes what the current aggregation window counted so far, then syncs (at shutdown).
    pub fn close(&mut self) {
        for summary in self.aggregator.drain() {
            log_summary(&summary);
            self.append(summary);
        }
        self.sync();
    }

    /// Flushes the audit log to disk.
    pub fn sync(&mut self) {
        if let Err(e) = self.audit.sync() {
            tracing::error!(error = %e, "cannot sync the audit log");
        }
        if let Err(e) = self.peers.sync() {
            tracing::error!(error = %e, "cannot sync the peers' audit log");
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A peer proved a network.
    pub fn verified(&mut self, peer: PeerId, proof: &Proof) {
        let seednode = proof.kind == ProofKind::Seednode;
        self.metrics.check(None);
        tracing::info!(%peer, network = %proof.network, seednode, token_id = %proof.token, "membership verified");
        self.audit(
            AuditEvent::new(AuditKind::MembershipVerified)
                .peer(peer)
                .network(&proof.network)
                .token_id(proof.token)
                .detail(if seednode {
                    "seednode delegation"
                } else {
                    "membership"
                }),
        );
    }

    /// A presentation refused these networks.
    pub fn refused(&mut self, peer: PeerId, refused: &[Refused]) {
        for r in refused {
            let reason = r.rejection.reason;
            if reason == ReasonCode::RateLimited {
                self.counters.rate_limited += 1;
                self.metrics.rate_limited.inc();
            }
            self.metrics.check(Some(reason.as_str()));
            let network = r
                .network
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let mut event = AuditEvent::new(AuditKind::MembershipRefused)
                .peer(peer)
                .reason(reason);
            if let Some(n) = &r.network {
                event = event.network(n);
            } else {
                event = event.detail(&r.rejection.detail);
            }
            if self.audit(event) {
                tracing::warn!(%peer, network = %network, reason = %reason, detail = %r.rejection.detail, "membership refused");
            }
        }
    }

    /// A proof ended on a live connection.
    pub fn ended(&mut self, peer: PeerId, network: &NetworkName, reason: EndReason) {
        tracing::info!(%peer, network = %network, reason = %reason, "membership ended on a connection");
        // A strict violation, revocation or removed anchor is a refusal of what the peer
        // proved before.
        let kind = match reason {
            EndReason::Expired => AuditKind::Other,
            EndReason::Revoked | EndReason::StrictNetwork | EndReason::Untrusted => {
                AuditKind::MembershipRefused
            }
        };
        self.audit(
            AuditEvent::new(kind)
                .peer(peer)
                .network(network)
                .reason(reason)
                .detail("membership ended on a live connection"),
        );
    }

    /// The session closed a connection.
    pub fn closed(&mut self, peer: PeerId, connection: ConnectionId, reason: CloseReason) {
        self.metrics.connection(reason.as_str());
        let event = AuditEvent::new(AuditKind::ConnectionRefused)
            .peer(peer)
            .reason(reason);
        if self.audit(event) {
            tracing::info!(%peer, %connection, reason = %reason, "closing connection");
        }
    }
}

/// One line for an aggregation summary: what was counted instead of logged one by one.
fn log_summary(summary: &AuditEvent) {
    let field = |f: &Option<String>| f.as_deref().unwrap_or("").to_owned();
    tracing::info!(
        kind = summary.kind.as_str(),
        peer = field(&summary.peer),
        addr = field(&summary.addr),
        network = field(&summary.network),
        reason = field(&summary.reason),
        detail = field(&summary.detail),
        "repeated events, logged and audited once per source and window"
    );
}
