//! `node reload`: re-reads a running node's descriptor and connection-filter rules.
//!
//! Both files are read and checked before anything changes, so a bad file leaves the node as
//! it was and the operator gets the error. What a reload applies at once:
//!
//! - the **anchors** of every network (the access list): the verifier answers under the new
//!   list, peers whose token chains only to a removed anchor lose their gates and routing
//!   entries and are disconnected, and our own token of a network, if it no longer verifies,
//!   is dropped and asked for again;
//! - `renewal_margin`, `max_revocation_staleness` and `private_addresses` (for addresses
//!   learned from now on; routing entries already made keep theirs);
//! - the filter rules, closing what they now refuse.
//!
//! What needs a restart is named in the answer, never silently ignored: `strict`, `bootstrap`,
//! and the `join` policy and `token_lifetime` a seednode serves with. A descriptor that drops
//! a network this node runs is refused.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::SystemTime;

use cordon_host::audit::{AuditEvent, AuditKind};
use cordon_host::descriptor::{Descriptor, NetworkEntry};
use libp2p::Swarm;

use crate::api::{DescriptorReloaded, Reloaded};
use crate::bans;
use crate::config::NodeConfig;
use crate::filter::FilterRules;
use crate::join::Joiner;
use crate::report::Report;
use crate::swarm::Behaviour;

/// Re-reads the descriptor (if the node was started from a file) and the filter rules (if it
/// runs with `--filter`), then applies them; see the [module documentation](self).
pub(crate) fn reload(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    joiner: &mut Joiner,
    config: &mut NodeConfig,
    now: SystemTime,
) -> Result<Reloaded, String> {
    if config.descriptor_file.is_none() && config.filter_file.is_none() {
        return Err(
            "this node was started without a descriptor file or --filter FILE; \
                    nothing to reload"
                .into(),
        );
    }
    // Read and check everything first: a bad file changes nothing.
    let descriptor = match &config.descriptor_file {
        Some(path) => Some((path.clone(), read_descriptor(path, config)?)),
        None => None,
    };
    let rules = match &config.filter_file {
        Some(path) => Some((
            path.clone(),
            FilterRules::load(path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };

    let descriptor = descriptor.map(|(path, (new, access))| {
        apply_descriptor(swarm, report, joiner, config, path, new, access, now)
    });
    let (filter, closed_connections) = match rules {
        Some((path, rules)) => {
            let closed = bans::apply_rules(swarm, report, rules);
            (Some(path), closed)
        }
        None => (None, 0),
    };
    Ok(Reloaded {
        filter,
        closed_connections,
        descriptor,
    })
}

/// The descriptor at `path` and its access list, if every network this node runs is still in
/// it.
fn read_descriptor(
    path: &std::path::Path,
    config: &NodeConfig,
) -> Result<(Descriptor, cordon_membership::AccessList), String> {
    let new = Descriptor::load(path).map_err(|e| e.to_string())?;
    if let Some(gone) = config.networks.iter().find(|n| new.network(n).is_none()) {
        return Err(format!(
            "descriptor {} no longer lists network {gone}, which this node runs; nothing was \
             changed. Put the network back, or restart the node without it",
            path.display()
        ));
    }
    let access = new
        .access_list()
        .map_err(|e| format!("descriptor {}: {e}", path.display()))?;
    Ok((new, access))
}

#[allow(clippy::too_many_arguments)]
fn apply_descriptor(
    swarm: &mut Swarm<Behaviour>,
    report: &mut Report,
    joiner: &mut Joiner,
    config: &mut NodeConfig,
    path: PathBuf,
    new: Descriptor,
    access: cordon_membership::AccessList,
    now: SystemTime,
) -> DescriptorReloaded {
    let mut out = DescriptorReloaded {
        path,
        ..DescriptorReloaded::default()
    };
    for name in &config.networks {
        let (Some(old), Some(entry)) = (config.descriptor.network(name), new.network(name)) else {
            continue;
        };
        diff(name.as_str(), old, entry, &mut out);
        joiner.set_renewal_margin(name, entry.renewal_margin);
    }
    let private = config
        .networks
        .iter()
        .filter(|n| new.network(n).is_some_and(|e| e.private_addresses))
        .cloned();
    swarm.behaviour_mut().session.set_private_addresses(private);
    out.untrusted_connections = swarm.behaviour_mut().session.set_access(access);
    config.descriptor = new;
    out.memberships_dropped = joiner.recheck(swarm, now);
    let summary = format!(
        "descriptor {} reloaded: anchors added [{}], removed [{}]; {} connection(s) closed for \
         a removed anchor; own memberships dropped [{}]",
        out.path.display(),
        out.anchors_added.join(", "),
        out.anchors_removed.join(", "),
        out.untrusted_connections,
        out.memberships_dropped
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    tracing::info!(
        added = out.anchors_added.len(),
        removed = out.anchors_removed.len(),
        closed = out.untrusted_connections,
        "{summary}"
    );
    report.audit(AuditEvent::new(AuditKind::Other).detail(summary));
    out
}

/// Records how `network`'s entry changed: anchors, and what waits for a restart.
fn diff(network: &str, old: &NetworkEntry, new: &NetworkEntry, out: &mut DescriptorReloaded) {
    let before: BTreeSet<_> = old.anchors.iter().collect();
    let after: BTreeSet<_> = new.anchors.iter().collect();
    out.anchors_added
        .extend(after.difference(&before).map(|k| format!("{network} {k}")));
    out.anchors_removed
        .extend(before.difference(&after).map(|k| format!("{network} {k}")));
    let mut restart = |field: &str| out.needs_restart.push(format!("{network}: {field}"));
    if old.strict != new.strict {
        restart("strict");
    }
    if old.bootstrap != new.bootstrap {
        restart("bootstrap");
    }
    if old.join != new.join {
        restart("join (a seednode's policy)");
    }
    if old.token_lifetime != new.token_lifetime {
        restart("token_lifetime (a seednode's setting)");
    }
}
