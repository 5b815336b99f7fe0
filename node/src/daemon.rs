//! Start-up: turns a [`NodeConfig`] into a running node.
//!
//! [`Node::start`] opens the data directory, builds the verifier, the swarm and every module the
//! event loop dispatches to, binds the listeners, and serves the control socket and metrics;
//! [`Node::run`] then runs the event loop until the shutdown future resolves. [`run`] does both,
//! which is all the binaries call. A [`NodeHandle`] talks to a started node the way the control
//! socket does, so in-process tests need no socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cordon_membership::{SecretKey, Verifier};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{Request, Response};
use crate::budget::Budget;
use crate::calls::Calls;
use crate::config::NodeConfig;
use crate::event_loop::EventLoop;
use crate::filter::FilterRules;
use crate::join::{JoinServer, Joiner};
use crate::join_client::{JoinClient, JoinConfig, JoinNetwork};
use crate::metrics::Metrics;
use crate::report::Report;
use crate::revocations::{RevocationLimits, Revocations};
use crate::routing::Routing;
use crate::rpc::{Handler, Policy, RecordStore};
use crate::rpc_server::RpcServer;
use crate::service::ServiceHandle;
use crate::swarm::{self, SwarmConfig};
use cordon_host::audit::AuditLog;
use cordon_host::control::{self, ControlRequest};
use cordon_host::datadir::DataDir;

/// A started node, not yet running its event loop.
#[derive(Debug)]
pub struct Node {
    event_loop: EventLoop,
    control_rx: mpsc::Receiver<ControlRequest<Request, Response>>,
    stop_tx: watch::Sender<bool>,
    control_task: Option<tokio::task::JoinHandle<Result<(), control::ControlError>>>,
}

/// Sends control requests to a started node (what the control socket forwards).
#[derive(Debug, Clone)]
pub struct NodeHandle {
    peer: PeerId,
    requests: mpsc::Sender<ControlRequest<Request, Response>>,
}

impl NodeHandle {
    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Sends `request` and waits for the answer; `Err` holds the message an operator would
    /// see.
    pub async fn request(&self, request: Request) -> Result<Response, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((request, tx))
            .await
            .map_err(|_| "the node has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the node stopped before answering".to_owned())?
    }
}

impl Node {
    /// Builds and starts everything `config` describes (listeners bound, first dials made).
    /// Must run inside a tokio runtime.
    pub async fn start(
        config: NodeConfig,
        identity: SecretKey,
        service: Option<ServiceHandle>,
    ) -> anyhow::Result<(Self, NodeHandle)> {
        let (data, key) = DataDir::open(&config.data_dir)
            .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
        anyhow::ensure!(
            key.public() == identity.public(),
            "the identity handed to run is not the one in {}",
            config.data_dir.display()
        );
        let local = identity.peer_id();
        let clock = config.clock.clone();
        let mut networks = Vec::new();
        let mut joins = Vec::new();
        let mut bootstrap = Vec::new();
        let delegations = service
            .as_ref()
            .map(|s| s.delegations.clone())
            .unwrap_or_default();
        for name in &config.networks {
            let entry = config.descriptor.network(name).with_context(|| {
                format!(
                    "network {name} is not in the networks file; add a [[network]] entry for it"
                )
            })?;
            networks.push((name.clone(), entry.strict));
            joins.push(JoinNetwork {
                name: name.clone(),
                renewal_margin: entry.renewal_margin,
                serving: delegations.iter().any(|d| &d.network == name),
            });
            bootstrap.push((name.clone(), entry.bootstrap.clone()));
        }
        let access = config
            .descriptor
            .access_list()
            .context("building the access list from the networks file")?;
        let verifier = Arc::new(Verifier::new(config.verifier.clone(), access));
        let rules = match &config.filter_file {
            Some(path) => FilterRules::load(path)?,
            None => FilterRules::default()
                .with_unlimited_ip("127.0.0.1/32".parse().context("loopback network")?)
                .with_unlimited_ip("::1/128".parse().context("loopback network")?),
        };
        config
            .rate_limits
            .validate()
            .context("invalid rate limits")?;
        let policy = match &config.policy_file {
            Some(path) => Policy::from_file(path, &config.authorization)?,
            None => Policy::default_policy(&config.authorization)?,
        };
        let protocol_limits = config.protocol.clone();
        let handler = Handler::new(
            protocol_limits.clone(),
            policy,
            RecordStore::new(config.records.clone(), protocol_limits),
        );
        let network_names: Vec<_> = networks.iter().map(|(n, _)| n.clone()).collect();
        let mut swarm = swarm::build(SwarmConfig {
            keypair: identity.libp2p_keypair(),
            networks,
            limits: config.limits.clone(),
            rules,
            rate_limits: config.rate_limits.clone(),
            verifier: verifier.clone(),
            clock: clock.clone(),
            transport: config.transport,
            protocol: config.protocol.clone(),
            records: config.records.clone(),
            private_addresses: config
                .networks
                .iter()
                .filter(|n| {
                    config
                        .descriptor
                        .network(n)
                        .is_some_and(|e| e.private_addresses)
                })
                .cloned()
                .collect(),
        })?;
        for d in &delegations {
            swarm
                .behaviour_mut()
                .session
                .set_delegation(&d.network, Some(d.token.clone()));
        }
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("cannot listen on {addr}"))?;
        }

        let control_limits = config.control.clone();
        let (control_tx, control_rx) = control_limits.channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let control_task = if config.control_socket {
            let socket = data.control_socket();
            let tx = control_tx.clone();
            let stop = stopped(stop_rx.clone());
            Some(tokio::spawn(async move {
                control::serve::<Request, Response>(&socket, control_limits, tx, stop).await
            }))
        } else {
            None
        };
        let audit = AuditLog::open(&data.audit_log(), config.audit.clone())
            .context("opening the audit log")?;
        let peers_audit = AuditLog::open(&data.peers_audit_log(), config.audit.clone())
            .context("opening the peers' audit log")?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        if let Some(addr) = config.metrics {
            let bound = crate::metrics::serve(
                addr,
                Arc::new(registry),
                config.metrics_server.clone(),
                stopped(stop_rx),
            )
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!(addr = %bound, "metrics endpoint listening");
        }
        let label = if config.label.is_empty() {
            let id = local.to_string();
            format!("node-{}", &id[id.len().saturating_sub(6)..])
        } else {
            config.label.clone()
        };
        let joiner = Joiner::new(
            JoinClient::new(
                JoinConfig {
                    poll_interval: config.limits.poll_interval,
                    max_backoff: config.limits.max_join_backoff,
                    ..JoinConfig::default()
                },
                joins,
                label,
                config.invites.clone(),
            ),
            data.clone(),
            local,
        );
        let started = clock.instant();
        let mut report = Report::new(
            audit,
            peers_audit,
            config.audit.aggregate(),
            metrics,
            clock.clone(),
        );
        let revocations = Revocations::load(
            &data,
            network_names,
            &verifier,
            RevocationLimits {
                max_entries_per_signer: config.limits.max_revocations_per_signer,
                max_state_bytes: state_file_cap(config.limits.max_revocations_per_signer),
                max_requests: config.limits.max_revocation_requests,
            },
            &mut report,
        );
        let mut event_loop = EventLoop {
            revocations,
            routing: Routing::new(local, bootstrap, &config.limits),
            budget: Budget::new(
                config.limits.connection_budget,
                config.limits.request_timeout,
                config.limits.idle_timeout,
            ),
            rpc: RpcServer::new(
                handler,
                config.protocol.clone(),
                &config.rate_limits,
                &config.records,
                config.limits.max_calls_in_flight,
                started,
            ),
            calls: Calls::new(
                identity.libp2p_keypair(),
                config.limits.max_calls_in_flight,
                config.limits.call_timeout,
            ),
            report,
            server: service
                .map(|s| JoinServer::new(s, config.limits.max_pending_joins, &config.rate_limits)),
            swarm,
            clock,
            data,
            config,
            joiner,
            started,
        };
        event_loop.start();
        Ok((
            Self {
                event_loop,
                control_rx,
                stop_tx,
                control_task,
            },
            NodeHandle {
                peer: local,
                requests: control_tx,
            },
        ))
    }

    /// Runs the event loop until `shutdown` resolves, then stops the control socket and metrics.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            event_loop,
            control_rx,
            stop_tx,
            control_task,
        } = self;
        event_loop.run(control_rx, shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(task) = control_task
            && let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), task).await
        {
            tracing::warn!(error = %e, "control socket");
        }
        Ok(())
    }
}

/// Largest revocation state file for `entries` per signer: hex of about 40 bytes an entry per
/// signer (at most 16 signers), plus room for heads and credentials.
fn state_file_cap(entries: usize) -> u64 {
    (entries as u64)
        .saturating_mul(2 * 40 * 16)
        .saturating_add(1024 * 1024)
}

/// Runs a node until `shutdown` resolves, with the identity in its data directory.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (_, identity) = DataDir::open(&config.data_dir)
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    run_with(config, identity, None, shutdown).await
}

/// Runs a node with `identity` (and, with a service, a seednode) until `shutdown` resolves.
pub async fn run_with(
    config: NodeConfig,
    identity: SecretKey,
    service: Option<ServiceHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (node, _handle) = Node::start(config, identity, service).await?;
    node.run(shutdown).await
}
